// A minimal Chrome DevTools Protocol client for tests: starts headless Chromium with
// --remote-debugging-pipe (the protocol over file descriptors 3 and 4, one JSON message per
// NUL-terminated chunk), so it needs nothing but Node itself: no WebSocket library, no npm.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

class Session {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.id = sessionId;
  }

  send(method, params = {}) {
    return this.browser.send(method, params, this.id);
  }

  // Evaluates an expression in the page (awaiting a promise it returns) and gives its value;
  // an exception in the page becomes an Error here.
  async evaluate(expression) {
    const r = await this.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`in page: ${(d.exception && d.exception.description) || d.text}`);
    }
    return r.result.value;
  }

  on(method, fn) {
    this.browser.listeners.push({ method, sessionId: this.id, fn });
  }

  // Resolves with the event's params the next time `method` fires in this session.
  once(method, timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${method}`)), timeoutMs);
      const entry = {
        method,
        sessionId: this.id,
        fn: (params) => {
          clearTimeout(timer);
          this.browser.listeners = this.browser.listeners.filter((l) => l !== entry);
          resolve(params);
        },
      };
      this.browser.listeners.push(entry);
    });
  }
}

class Browser {
  // Starts Chromium; throws with a clear message when the executable is missing.
  static async launch({ executable, args = [], stderrLog }) {
    try {
      fs.accessSync(executable, fs.constants.X_OK);
    } catch (e) {
      throw new Error(`Chromium not found or not executable at ${executable}: install the Debian package ` +
        '"chromium" (scripts/bootstrap does) or set SLUICE_CHROMIUM to its path');
    }
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-chromium-'));
    const proc = spawn(executable, [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--no-default-browser-check', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
      '--remote-debugging-pipe', `--user-data-dir=${profile}`, ...args, 'about:blank',
    ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    const b = new Browser(proc, profile, stderrLog);
    await b.send('Browser.getVersion').then((v) => { b.version = v.product; });
    return b;
  }

  constructor(proc, profile, stderrLog) {
    this.proc = proc;
    this.profile = profile;
    this.nextId = 0;
    this.pending = new Map();
    this.listeners = [];
    this.exited = false;
    proc.stderr.on('data', (d) => {
      if (stderrLog) fs.appendFileSync(stderrLog, d);
    });
    this.out = proc.stdio[3];
    const input = proc.stdio[4];
    let buf = Buffer.alloc(0);
    input.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let end;
      while ((end = buf.indexOf(0)) >= 0) {
        const msg = JSON.parse(buf.subarray(0, end).toString('utf8'));
        buf = buf.subarray(end + 1);
        this.dispatch(msg);
      }
    });
    proc.on('exit', (code, signal) => {
      this.exited = true;
      const err = new Error(`Chromium exited (code ${code}, signal ${signal})`);
      for (const { reject } of this.pending.values()) reject(err);
      this.pending.clear();
    });
    proc.on('error', (e) => {
      this.exited = true;
      for (const { reject } of this.pending.values()) reject(e);
      this.pending.clear();
    });
  }

  dispatch(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result);
      return;
    }
    for (const l of [...this.listeners]) {
      if (l.method === msg.method && (l.sessionId || undefined) === (msg.sessionId || undefined)) l.fn(msg.params);
    }
  }

  send(method, params = {}, sessionId) {
    if (this.exited) return Promise.reject(new Error(`Chromium is not running (${method})`));
    const id = ++this.nextId;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.out.write(`${JSON.stringify(msg)}\0`);
    });
  }

  // A new tab, attached in flat mode so its commands go over the same pipe.
  async newPage() {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    return new Session(this, sessionId);
  }

  // Closes the browser (waiting at most a few seconds, then killing it) and removes its profile.
  async close() {
    if (!this.exited) {
      const exited = new Promise((resolve) => this.proc.once('exit', resolve));
      this.send('Browser.close').catch(() => {});
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.profile, { recursive: true, force: true });
  }
}

module.exports = { Browser };
