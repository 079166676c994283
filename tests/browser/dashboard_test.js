#!/usr/bin/env node
// Browser test of the dashboard (issue 6): starts a real `sluice serve` on a fresh schema with a
// few tasks, opens the page in headless Chromium (through the DevTools protocol, tests/browser/
// cdp.js) and checks what a user would: the page loads without console errors, the cards show
// the numbers of /api/v1/scheduler, the pool chart is drawn, the layout fits a phone, pausing a
// task from the page (with the keyboard, typing the API token when asked) changes its state in
// the database, and no secret ends up in the page. Screenshots are saved as artifacts.
//
//   node tests/browser/dashboard_test.js --sluice build/release/sluice --artifacts DIR
//        [--chromium /usr/bin/chromium] [--copy-screenshot docs/img/dashboard.png]
//
// The database comes from the usual PG* variables / DATABASE_URL (scripts/test sets them).
// Without Chromium the test fails and says so; it never passes without a browser.
'use strict';

const assert = require('assert');
const { spawn, spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Browser } = require('./cdp');

// ---- arguments ----------------------------------------------------------------------------

function parseArgs(argv) {
  const out = { chromium: process.env.SLUICE_CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (!['sluice', 'artifacts', 'chromium', 'copy-screenshot'].includes(key) || value === undefined) {
      throw new Error(`usage: dashboard_test.js --sluice PATH --artifacts DIR [--chromium PATH] [--copy-screenshot PATH] (bad argument ${argv[i]})`);
    }
    out[key] = value;
    i++;
  }
  if (!out.sluice || !out.artifacts) throw new Error('--sluice and --artifacts are required');
  return out;
}

const args = parseArgs(process.argv.slice(2));
fs.mkdirSync(args.artifacts, { recursive: true });
const artifact = (name) => path.join(args.artifacts, name);

let step = 0;
function ok(what) {
  step++;
  console.log(`ok ${step} - ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `probe` until it returns a truthy value or the deadline passes (there is no event to
// wait on for most of these: a row in the database, a sample in the daemon's history).
async function waitFor(what, probe, timeoutMs = 30000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

// ---- database -----------------------------------------------------------------------------

function psql(sql) {
  const argv = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql];
  if (process.env.DATABASE_URL) argv.push(process.env.DATABASE_URL);
  const r = spawnSync('psql', argv, { encoding: 'utf8' });
  if (r.error) throw new Error(`psql: ${r.error.message} (is postgresql-client installed?)`);
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

// ---- the daemon ---------------------------------------------------------------------------

const schema = `browser_${process.pid}_${crypto.randomBytes(3).toString('hex')}`;
const token = crypto.randomBytes(20).toString('hex');
let daemon = null;
let browser = null;
let base = null;

// Killed from outside (ctest's timeout, Ctrl-C): take the daemon and the browser along.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (daemon) daemon.kill('SIGKILL');
    if (browser) browser.proc.kill('SIGKILL');
    console.error(`not ok - stopped by ${signal}`);
    process.exit(1);
  });
}

async function startDaemon() {
  const config = artifact('sluice.toml');
  const portFile = artifact('port');
  fs.rmSync(portFile, { force: true });
  fs.writeFileSync(config, [
    '# Written by tests/browser/dashboard_test.js; the API token comes from SLUICE_API_TOKEN.',
    '[pools.default]', 'size = 2', 'max_overflow = 1', '',
    '[scheduler]', `schema = "${schema}"`, 'node_id = "browser-test"', 'poll_interval = "200ms"',
    'idle_poll_max = "2s"', 'stop_grace = "2s"', '',
    // The test's own API calls share the lane with the page, the scheduler and the history
    // sampler; headroom keeps /ready from seeing a momentary queue as an exhausted pool.
    '[scheduler.lane]', 'size = 2', 'max_overflow = 4', '',
    '[http]', 'address = "127.0.0.1"', 'port = 0', 'sample_interval = "300ms"', 'history = "10m"', '',
    // HTTP tasks may call loopback only when allowed; the test's webhooks point at 127.0.0.1.
    '[http_tasks]', 'allow_networks = ["127.0.0.1/32"]', '',
    // Flow limits high enough never to bind: the page shows their use against them.
    '[flow.noop]', 'rate = 50', 'rate_period = "1h"', '',
    '[flow.sql]', 'max_running = 4', 'rate = 100', 'rate_period = "1h"', 'key = "pool"', '',
  ].join('\n'));
  const log = fs.openSync(artifact('sluice-serve.log'), 'w');
  daemon = spawn(args.sluice, ['serve', '--config', config, '--migrate', '--port-file', portFile], {
    stdio: ['ignore', log, log],
    env: Object.assign({}, process.env, { SLUICE_API_TOKEN: token }),
  });
  fs.closeSync(log);
  let exited = null;
  daemon.on('exit', (code, signal) => { exited = { code, signal }; });
  const port = await waitFor('sluice serve to write its port file', () => {
    if (exited) throw new Error(`sluice serve exited (${JSON.stringify(exited)}); log:\n${tail('sluice-serve.log')}`);
    const text = fs.existsSync(portFile) ? fs.readFileSync(portFile, 'utf8').trim() : '';
    return /^\d+$/.test(text) ? Number(text) : null;
  });
  base = `http://127.0.0.1:${port}`;
}

async function stopDaemon() {
  if (!daemon || daemon.exitCode !== null || daemon.signalCode !== null) return;
  const exited = new Promise((r) => daemon.once('exit', r));
  daemon.kill('SIGTERM');
  const timer = setTimeout(() => daemon.kill('SIGKILL'), 15000);
  await exited;
  clearTimeout(timer);
}

function tail(name, lines = 40) {
  try {
    return fs.readFileSync(artifact(name), 'utf8').split('\n').slice(-lines).join('\n');
  } catch (e) {
    return '(none)';
  }
}

async function api(p, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok && !(p === '/ready' && res.status === 503)) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

// The static side of the dashboard, over plain HTTP: every asset from the binary with its
// content type, a 304 for a matching ETag, the API's JSON 404 for anything else, and no
// reference to anything outside the daemon.
async function checkAssets() {
  const types = {
    '/': 'text/html; charset=utf-8',
    '/app.js': 'text/javascript; charset=utf-8',
    '/style.css': 'text/css; charset=utf-8',
    '/chart.min.js': 'text/javascript; charset=utf-8',
    '/favicon.svg': 'image/svg+xml',
  };
  for (const [p, type] of Object.entries(types)) {
    const res = await fetch(base + p);
    const body = await res.text();
    assert.strictEqual(res.status, 200, `GET ${p}`);
    assert.strictEqual(res.headers.get('content-type'), type, `content type of ${p}`);
    assert.strictEqual(res.headers.get('cache-control'), 'no-cache', `Cache-Control of ${p}`);
    assert.ok(body.length > 0, `${p} has a body`);
    const etag = res.headers.get('etag');
    assert.match(etag || '', /^"[0-9a-f]{20}"$/, `ETag of ${p}`);
    const again = await fetch(base + p, { headers: { 'If-None-Match': etag } });
    assert.strictEqual(again.status, 304, `GET ${p} with If-None-Match`);
    if (p === '/') {
      assert.ok(!/(src|href)=["']?(https?:)?\/\//i.test(body), 'index.html loads nothing from elsewhere');
      assert.match(res.headers.get('content-security-policy') || '', /default-src 'none'/, 'the page has a CSP');
    }
  }
  const missing = await fetch(`${base}/no-such-file.js`);
  assert.strictEqual(missing.status, 404);
  assert.strictEqual((await missing.json()).error.code, 'not_found');
}

// Secrets in a payload that the page must never show.
const payloadSecrets = ['hunter2-secret-header', 'url-password-42', 'query-token-77', 'env-secret-99'];

async function createTasks() {
  const specs = [
    { type: 'noop', name: 'ping-once' },
    { type: 'sql', name: 'nightly-report', payload: { pool: 'default', sql: 'SELECT 1' }, schedule: 'cron:0 3 * * *@Europe/Berlin' },
    { type: 'sql', name: 'broken-report', payload: { pool: 'default', sql: 'SELECT 1/0' }, max_attempts: 1 },
    // Holds a connection of the default pool for a while, so the pool chart has something in use.
    { type: 'sql', name: 'slow-report', payload: { pool: 'default', sql: 'SELECT pg_sleep(2)' } },
    { type: 'noop', name: 'hourly-ping', schedule: 'every:1h' },
    {
      type: 'http', name: 'partner-webhook', schedule: { kind: 'once', at: '2099-01-01T00:00:00Z' },
      payload: {
        url: `https://hook-user:${payloadSecrets[1]}@example.invalid/hook?token=${payloadSecrets[2]}`,
        method: 'POST',
        headers: { Authorization: `Bearer ${payloadSecrets[0]}`, 'Content-Type': 'application/json' },
        body: '{"event": "nightly"}',
      },
    },
  ];
  const ids = {};
  for (const s of specs) ids[s.name] = (await api('/api/v1/tasks', { method: 'POST', body: s })).id;
  // A graph whose root waits until 2099, so the tasks after it stay blocked while the page looks.
  const graph = await api('/api/v1/graphs', {
    method: 'POST',
    body: { tasks: [
      { ref: 'root', type: 'noop', name: 'graph-root', schedule: { kind: 'once', at: '2099-01-01T00:00:00Z' } },
      { ref: 'child', type: 'noop', name: 'graph-child', after: ['root'] },
      { ref: 'join', type: 'noop', name: 'graph-join', after: ['root', 'child'] },
    ] },
  });
  for (const [ref, id] of Object.entries(graph.tasks)) ids[`graph-${ref}`] = id;
  await waitFor('ping-once to succeed, broken-report to fail and slow-report to finish', async () => {
    const [a, b, c] = await Promise.all(['ping-once', 'broken-report', 'slow-report'].map((n) => api(`/api/v1/tasks/${ids[n]}`)));
    return a.state === 'succeeded' && b.state === 'failed' && c.state === 'succeeded';
  });
  return ids;
}

// ---- what the cards must show, from the API (docs/dashboard.md defines each) ------------------

function expectedCards(s, ready) {
  const t = s.stats.totals;
  const get = (k) => t[k] || 0;
  let executed = 0;
  for (const [k, v] of Object.entries(t)) if (k.startsWith('runs_')) executed += v;
  let status = s.node.state;
  if (status === 'running' && ready.status !== 'ready') status = 'degraded';
  return {
    status,
    nodes: String(s.nodes.filter((n) => n.alive).length),
    leader: s.leader || '',
    cycles: String(get('cycles')),
    found: String(get('claimed')),
    executed: String(executed),
    failed: String(get('runs_failed') + get('runs_timed_out')),
    poll: String(s.node.current_poll_ms),
  };
}

const readCardsJs = `window.sluiceDashboard.refresh().then(() => {
  const card = (id) => { const e = document.getElementById(id); return { value: e.dataset.value, text: e.textContent }; };
  return { status: card('v-status'), nodes: card('v-nodes'), leader: card('v-leader'), cycles: card('v-cycles'),
           found: card('v-found'), executed: card('v-executed'), failed: card('v-failed'), poll: card('v-poll') };
})`;

// ---- the test -----------------------------------------------------------------------------

async function pressKey(page, key) {
  const keys = {
    Enter: { code: 'Enter', windowsVirtualKeyCode: 13, text: '\r' },
    Escape: { code: 'Escape', windowsVirtualKeyCode: 27 },
  };
  const k = keys[key];
  await page.send('Input.dispatchKeyEvent', Object.assign({ type: 'keyDown', key }, k));
  await page.send('Input.dispatchKeyEvent', { type: 'keyUp', key, code: k.code, windowsVirtualKeyCode: k.windowsVirtualKeyCode });
}

async function screenshot(page, name, fullPage) {
  const shot = await page.send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: fullPage });
  const file = artifact(name);
  fs.writeFileSync(file, Buffer.from(shot.data, 'base64'));
  return file;
}

async function run() {
  // Before anything else, so a machine without Chromium fails at once and says why.
  try {
    fs.accessSync(args.chromium, fs.constants.X_OK);
  } catch (e) {
    throw new Error(`Chromium not found or not executable at ${args.chromium}: install the Debian package ` +
      '"chromium" (scripts/bootstrap does) or set SLUICE_CHROMIUM to its path. The browser test cannot run without it.');
  }
  await startDaemon();
  ok(`sluice serve started on ${base} (schema ${schema})`);
  await checkAssets();
  ok('dashboard assets served embedded, with content types, ETag revalidation and a 404 for the rest');
  const ids = await createTasks();
  ok(`created ${Object.keys(ids).length} tasks; one succeeded, one failed`);

  browser = await Browser.launch({ executable: args.chromium, args: ['--window-size=1280,900'], stderrLog: artifact('chromium-stderr.log') });
  try {
    ok(`started ${browser.version}`);
    const page = await browser.newPage();
    const problems = [];
    page.on('Runtime.consoleAPICalled', (e) => {
      if (e.type === 'error' || e.type === 'assert') problems.push(`console.${e.type}: ${e.args.map((a) => a.value ?? a.description).join(' ')}`);
    });
    page.on('Runtime.exceptionThrown', (e) => problems.push(`exception: ${e.exceptionDetails.exception ? e.exceptionDetails.exception.description : e.exceptionDetails.text}`));
    page.on('Log.entryAdded', (e) => {
      if (e.entry.level === 'error') problems.push(`${e.entry.source}: ${e.entry.text}${e.entry.url ? ` (${e.entry.url})` : ''}`);
    });
    await Promise.all([page.send('Runtime.enable'), page.send('Log.enable'), page.send('Page.enable')]);
    await page.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });

    const loaded = page.once('Page.loadEventFired');
    await page.send('Page.navigate', { url: `${base}/` });
    await loaded;
    await waitFor('the first refresh to render', () => page.evaluate('Number(document.body.dataset.loaded || 0) >= 1'));
    assert.strictEqual(await page.evaluate('typeof Chart'), 'function', 'Chart.js is loaded from the daemon');
    assert.deepStrictEqual(problems, [], 'no console errors while loading');
    ok('page loaded with no console errors');

    // Cards: compare with the API read just before and just after the page's own refresh; when
    // both agree the counters did not move in between, so the page must show exactly those.
    const { before, cards } = await waitFor('a quiet moment to compare the cards with /api/v1/scheduler', async () => {
      const first = expectedCards(await api('/api/v1/scheduler'), await api('/ready'));
      const shown = await page.evaluate(readCardsJs);
      const second = expectedCards(await api('/api/v1/scheduler'), await api('/ready'));
      return JSON.stringify(first) === JSON.stringify(second) ? { before: first, cards: shown } : null;
    }, 30000, 200);
    for (const [k, want] of Object.entries(before)) {
      assert.strictEqual(cards[k].value, want, `card ${k} shows the API's value`);
    }
    for (const k of ['cycles', 'found', 'executed', 'failed']) {
      assert.strictEqual(cards[k].text.replace(/\D/g, ''), before[k], `card ${k} displays ${before[k]}`);
    }
    assert.strictEqual(cards.status.text, 'running');
    assert.ok(Number(before.executed) >= 3 && Number(before.failed) >= 1, `the runs were counted: ${JSON.stringify(before)}`);
    ok('cards show the numbers of /api/v1/scheduler');

    // It refreshes by itself, in place: the same document, a later refresh count.
    const loadedBefore = await page.evaluate(`window.refreshMarker = 'same page'; Number(document.body.dataset.loaded)`);
    await waitFor('an automatic refresh', () => page.evaluate(`Number(document.body.dataset.loaded) > ${loadedBefore}`), 15000, 250);
    assert.strictEqual(await page.evaluate('window.refreshMarker'), 'same page', 'refreshed without reloading the page');
    ok('refreshes itself without reloading');

    // The pool chart: several samples plotted, and the lines really drawn inside the plot area
    // (the legend also uses the series' colours, so only the chart area counts).
    await waitFor('three pool-history samples on the chart', () => page.evaluate(
      `window.sluiceDashboard.refresh().then(() => window.sluiceDashboard.charts.pool.data.datasets[0].data.length >= 3)`));
    const drawn = await page.evaluate(`(() => {
      const chart = window.sluiceDashboard.charts.pool;
      const a = chart.chartArea;
      const ctx = chart.canvas.getContext('2d');
      const ratio = chart.currentDevicePixelRatio;
      const x0 = Math.floor(a.left * ratio), y0 = Math.floor(a.top * ratio);
      const w = Math.ceil((a.right - a.left) * ratio), h = Math.ceil((a.bottom - a.top) * ratio) + 2;
      const px = ctx.getImageData(x0, y0, w, h).data;
      const near = (i, [r, g, b]) => Math.abs(px[i] - r) < 40 && Math.abs(px[i + 1] - g) < 40 && Math.abs(px[i + 2] - b) < 40 && px[i + 3] > 200;
      let inUse = 0, max = 0;
      for (let i = 0; i < px.length; i += 4) {
        if (near(i, [47, 126, 216])) inUse++;
        if (near(i, [243, 167, 18])) max++;
      }
      const ds = chart.data.datasets;
      return { inUse, max, points: ds[0].data.length, maxValue: ds[3].data[ds[3].data.length - 1].y,
               server: window.sluiceDashboard.charts.server.data.datasets.map((d) => d.label) };
    })()`);
    assert.ok(drawn.points >= 3, `pool chart has samples: ${JSON.stringify(drawn)}`);
    assert.strictEqual(drawn.maxValue, 3, 'the max line is the default pool\'s size + max_overflow');
    assert.ok(drawn.inUse > 50 && drawn.max > 50, `in-use and max lines are drawn in the plot area: ${JSON.stringify(drawn)}`);
    assert.ok(drawn.server.includes('max_connections'), `server chart plots max_connections: ${JSON.stringify(drawn.server)}`);
    ok(`pool chart drawn (${drawn.points} samples, ${drawn.inUse} in-use and ${drawn.max} max pixels)`);

    // Flow limits: each limited type with its use against its limits, as /api/v1/scheduler
    // has them (read before and after the page's refresh, so they did not move in between).
    const readFlowJs = `window.sluiceDashboard.refresh().then(() => [...document.querySelectorAll('#flow tbody tr')].map((tr) => ({
      type: tr.dataset.key, key: tr.cells[1].textContent, running: tr.querySelector('[data-role="running"]').textContent,
      rate: tr.querySelector('[data-role="rate"]').textContent })))`;
    const expectedFlow = (s) => s.flow.flatMap((f) => [{
      type: f.type, key: f.key || '–',
      running: f.max_running === null ? '–' : `${f.running} / ${f.max_running}`,
      rate: f.rate === null ? '–' : `${f.started_in_window} / ${f.rate}`,
    }, ...(f.by_key || []).map((k) => ({
      type: `${f.type}\n${k.key}`, key: `= ${k.key}`,
      running: f.max_running === null ? '–' : `${k.running} / ${f.max_running}`,
      rate: f.rate === null ? '–' : `${k.started_in_window} / ${f.rate}`,
    }))]);
    const flow = await waitFor('a quiet moment to compare the flow table with /api/v1/scheduler', async () => {
      const first = expectedFlow(await api('/api/v1/scheduler'));
      const shown = await page.evaluate(readFlowJs);
      const second = expectedFlow(await api('/api/v1/scheduler'));
      return JSON.stringify(first) === JSON.stringify(second) ? { want: first, shown } : null;
    }, 30000, 200);
    assert.deepStrictEqual(flow.shown, flow.want, 'the flow table shows the API\'s usage');
    assert.deepStrictEqual(flow.want.map((f) => [f.type, f.key]), [['noop', '–'], ['sql', 'pool'], ['sql\ndefault', '= default']],
      'both limits are listed, and the one key the sql tasks used');
    assert.match(flow.want[0].rate, /^[1-9]\d* \/ 50$/, 'the noop starts are counted against the rate');
    assert.match(flow.want[1].running, /^\d+ \/ 4$/);
    assert.strictEqual(flow.want[2].rate, flow.want[1].rate.replace(/ .*/, '') + ' / 100', 'every sql start was under the key "default"');
    ok(`flow limits shown against their use: ${JSON.stringify(flow.shown)}`);

    // Attention: the failed task is listed.
    const attention = await page.evaluate(`document.getElementById('attention-list').textContent`);
    assert.ok(attention.includes('broken-report'), `the failed task needs attention: ${attention}`);
    ok('the failed task is listed under "Needs attention"');

    await page.evaluate('window.scrollTo(0, 0)');
    const desktop = await screenshot(page, 'dashboard.png', true);
    ok(`screenshot saved: ${desktop}`);

    // Phone: nothing wider than the screen (tables scroll inside their own boxes).
    await page.send('Emulation.setDeviceMetricsOverride', { width: 390, height: 844, deviceScaleFactor: 2, mobile: true });
    // A mobile browser widens the layout viewport (innerWidth) to fit content that overflows.
    // The charts shrink their canvases a frame or two after the resize, so give the layout a
    // moment to settle before judging it.
    const readWidths = `({ page: document.documentElement.scrollWidth, layout: window.innerWidth,
      viewport: document.documentElement.clientWidth })`;
    const fits = (w) => w.viewport === 390 && w.page <= 390 && w.layout === 390;
    await waitFor('the phone layout to fit', async () => fits(await page.evaluate(readWidths)), 5000).catch(() => {});
    const widths = await page.evaluate(readWidths);
    assert.ok(fits(widths), `no horizontal scrolling on a phone: ${JSON.stringify(widths)}`);
    ok(`phone layout fits (${widths.page} px of ${widths.viewport})`);
    await screenshot(page, 'dashboard-phone.png', false);
    await page.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });

    // Pause a task with the keyboard: Enter on its name opens the detail, Enter on Pause asks
    // for the token, typing it and Enter sends the request.
    const id = ids['nightly-report'];
    assert.strictEqual(psql(`SELECT state FROM ${schema}.tasks WHERE id = ${id}`), 'scheduled');
    await page.evaluate(`document.querySelector('#task-table tr[data-key="${id}"] button[data-role="open"]').focus()`);
    await pressKey(page, 'Enter');
    await waitFor('the task detail', () => page.evaluate(`(() => {
      const d = document.getElementById('task-dialog');
      const b = d.querySelector('[data-action="pause"]');
      return d.open && document.getElementById('task-title').textContent.includes('nightly-report') && !b.disabled;
    })()`));
    assert.ok(await page.evaluate(`document.getElementById('task-dialog').textContent.includes('SELECT 1')`), 'the detail shows the payload');
    await page.evaluate(`document.querySelector('#task-dialog [data-action="pause"]').focus()`);
    await pressKey(page, 'Enter');
    await waitFor('the token prompt', () => page.evaluate(`document.getElementById('token-dialog').open && document.activeElement.id === 'token-input'`));
    await page.send('Input.insertText', { text: token });
    await pressKey(page, 'Enter');
    const message = await waitFor('the pause to be confirmed', () => page.evaluate(`(() => {
      const t = document.getElementById('task-message').textContent;
      return t.startsWith('Done') || t.includes('error') || t.includes('refused') ? t : null;
    })()`), 10000);
    assert.strictEqual(message, 'Done: task is now paused.');
    assert.strictEqual(psql(`SELECT state FROM ${schema}.tasks WHERE id = ${id}`), 'paused', 'the database has the task paused');
    ok('pausing from the page (keyboard only) paused the task in the database');

    // The token: kept in sessionStorage only, and nowhere in the page.
    const storage = await page.evaluate(`({ session: sessionStorage.getItem('sluice.api_token'), local: localStorage.length,
      input: document.getElementById('token-input').value })`);
    assert.strictEqual(storage.session, token, 'the token is kept for the tab');
    assert.strictEqual(storage.local, 0, 'nothing in localStorage');
    assert.strictEqual(storage.input, '', 'the token field is emptied');

    await pressKey(page, 'Escape');
    await waitFor('the dialog to close and focus to return to the task', () => page.evaluate(`!document.getElementById('task-dialog').open &&
      document.activeElement && document.activeElement.closest('tr') && document.activeElement.closest('tr').dataset.key === '${id}'`));
    ok('Escape closes the detail and focus returns to the task');

    // A second action needs no second prompt: resume reuses the session's token.
    await page.evaluate(`document.querySelector('#task-table tr[data-key="${id}"] button[data-role="open"]').click()`);
    await waitFor('the detail of the paused task', () => page.evaluate(`document.getElementById('task-dialog').open &&
      !document.querySelector('#task-dialog [data-action="resume"]').disabled`));
    await page.evaluate(`document.querySelector('#task-dialog [data-action="resume"]').click()`);
    const resumed = await waitFor('the resume to be answered', () => page.evaluate(`(() => {
      const t = document.getElementById('task-message').textContent;
      return t && !t.endsWith('…') ? t : null;
    })()`), 10000);
    assert.strictEqual(resumed, 'Done: task is now scheduled.');
    assert.strictEqual(await page.evaluate(`document.getElementById('token-dialog').open`), false, 'no second token prompt');
    assert.strictEqual(psql(`SELECT state FROM ${schema}.tasks WHERE id = ${id}`), 'scheduled');
    await pressKey(page, 'Escape');
    ok('resume reused the session token without asking again');

    // No secret anywhere in the page, including a task payload that carries some.
    await page.evaluate(`document.querySelector('#task-table tr[data-key="${ids['partner-webhook']}"] button[data-role="open"]').click()`);
    const payloadText = await waitFor('the webhook payload', () => page.evaluate(`(() => {
      const t = document.getElementById('task-payload').textContent;
      return document.getElementById('task-title').textContent.includes('partner-webhook') && t ? t : null;
    })()`));
    assert.ok(payloadText.includes('example.invalid/hook') && payloadText.includes('hidden'), `payload shown, redacted: ${payloadText}`);
    const pageText = await page.evaluate(`document.documentElement.outerHTML + [...document.querySelectorAll('input')].map((i) => i.value).join(' ')`);
    for (const secret of [token, ...payloadSecrets]) {
      assert.ok(!pageText.includes(secret), `the page does not contain the secret ${secret.slice(0, 6)}…`);
    }
    await pressKey(page, 'Escape');
    ok('no token or payload secret on the page');

    // A task in a graph: its detail lists the tasks it runs after and those after it, with
    // their states, and each opens its own detail.
    await page.evaluate(`document.querySelector('#task-table tr[data-key="${ids['graph-child']}"] button[data-role="open"]').click()`);
    const readDepsJs = `(() => {
      const items = (id) => [...document.querySelectorAll('#' + id + ' li[data-task-id]')].map((li) => ({
        id: Number(li.dataset.taskId), text: li.querySelector('button').textContent, state: li.querySelector('.badge').textContent }));
      return { title: document.getElementById('task-title').textContent, hidden: document.getElementById('task-graph').hidden,
               up: items('task-upstream'), down: items('task-downstream') };
    })()`;
    const deps = await waitFor('the graph-child detail', async () => {
      const d = await page.evaluate(readDepsJs);
      return d.title.includes('graph-child') && !d.hidden ? d : null;
    });
    assert.deepStrictEqual(deps.up, [{ id: ids['graph-root'], text: `#${ids['graph-root']} graph-root`, state: 'scheduled' }]);
    assert.deepStrictEqual(deps.down, [{ id: ids['graph-join'], text: `#${ids['graph-join']} graph-join`, state: 'blocked' }]);
    assert.strictEqual(psql(`SELECT state FROM ${schema}.tasks WHERE id = ${ids['graph-child']}`), 'blocked');
    await page.evaluate(`document.querySelector('#task-downstream li[data-task-id="${ids['graph-join']}"] button').click()`);
    const join = await waitFor('the graph-join detail', async () => {
      const d = await page.evaluate(readDepsJs);
      return d.title.includes('graph-join') && !d.hidden ? d : null;
    });
    assert.deepStrictEqual(join.up.map((u) => [u.id, u.state]), [[ids['graph-root'], 'scheduled'], [ids['graph-child'], 'blocked']]);
    assert.deepStrictEqual(join.down, []);
    await page.evaluate(`document.querySelector('#task-table tr[data-key="${ids['ping-once']}"] button[data-role="open"]').click()`);
    await waitFor('a task outside any graph to hide the dependencies', async () => {
      const d = await page.evaluate(readDepsJs);
      return d.title.includes('ping-once') && d.hidden;
    });
    await pressKey(page, 'Escape');
    ok('a task\'s detail shows its upstream and downstream tasks, and they open their own detail');

    await page.evaluate('window.sluiceDashboard.refresh()');
    assert.deepStrictEqual(problems, [], 'no console errors during the whole test');
    ok('no console errors during the whole test');

    if (args['copy-screenshot']) {
      fs.mkdirSync(path.dirname(args['copy-screenshot']), { recursive: true });
      fs.copyFileSync(desktop, args['copy-screenshot']);
      ok(`screenshot copied to ${args['copy-screenshot']}`);
    }
  } finally {
    await browser.close();
  }
}

(async () => {
  let failed = false;
  try {
    await run();
  } catch (e) {
    failed = true;
    console.error(`not ok - ${e.stack || e.message}`);
    console.error(`--- sluice serve log (tail) ---\n${tail('sluice-serve.log')}`);
    console.error(`artifacts: ${args.artifacts}`);
  }
  try {
    await stopDaemon();
    psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } catch (e) {
    console.error(`cleanup: ${e.message}`);
  }
  console.log(failed ? 'FAILED' : `PASSED (${step} checks)`);
  process.exit(failed ? 1 : 0);
})();
