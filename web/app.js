// The sluice dashboard. It reads the daemon's public JSON API (docs/api.md) every few seconds
// and renders it; the only writes are the task actions, which send the API token the user typed
// (kept in sessionStorage for this tab, never in the page or in localStorage).
//
// Rules this file keeps:
// - Text from the API goes into the page through textContent only (el() below), never as HTML:
//   task names, errors and payloads are user data.
// - Nothing that looks like a secret is shown: payloads go through redact() first.
// - A refresh never steals keyboard focus or scroll position: tables are only rebuilt when their
//   data changed, and the focused row's control is focused again afterwards.
'use strict';

(() => {
  const REFRESH_MS = 5000;
  const TOKEN_KEY = 'sluice.api_token';
  const CYCLE_CHART_LIMIT = 60;
  const CYCLE_PAGE = 20;
  const RUN_PAGE = 20;
  const ATTENTION_LIMIT = 100;

  // ---- small helpers ----------------------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);

  // Builds an element; children are nodes or strings (always inserted as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function setText(id, text, value) {
    const e = document.getElementById(id);
    if (!e) return;
    e.textContent = text;
    if (value !== undefined) e.dataset.value = String(value);
  }

  const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const fmtInt = (n) => (n === null || n === undefined ? '–' : intFormat.format(n));

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1) return `${ms.toFixed(2)} ms`;
    if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
    return fmtSeconds(ms / 1000);
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return '–';
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    const units = [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
    const parts = [];
    let rest = Math.floor(s);
    for (const [name, size] of units) {
      const n = Math.floor(rest / size);
      rest -= n * size;
      if (n > 0 || parts.length > 0) parts.push(`${n} ${name}`);
      if (parts.length === 2) break;
    }
    if (parts.length === 2 && parts[1].startsWith('0 ')) parts.pop();
    return parts.join(' ');
  }

  // The API's timestamps carry up to nanoseconds; Date wants at most milliseconds.
  function parseTime(iso) {
    if (!iso) return null;
    const t = Date.parse(iso.replace(/(\.\d{3})\d+/, '$1'));
    return isNaN(t) ? null : t;
  }

  const pad = (n) => String(n).padStart(2, '0');
  function fmtClock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtAbsolute(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(ms)}`;
  }
  function fmtRelative(ms) {
    const delta = (ms - Date.now()) / 1000;
    const text = fmtSeconds(Math.abs(delta));
    if (Math.abs(delta) < 1) return 'now';
    return delta < 0 ? `${text} ago` : `in ${text}`;
  }
  // A <time> element: relative text, absolute local time on hover, ISO for machines.
  function timeEl(iso, { relative = true } = {}) {
    const ms = parseTime(iso);
    if (ms === null) return el('span', { class: 'muted', text: '–' });
    return el('time', { datetime: iso, title: fmtAbsolute(ms) }, relative ? fmtRelative(ms) : fmtAbsolute(ms));
  }

  // A task created without a schedule is "once at the epoch": due at once.
  function scheduleText(s) {
    if (s.kind === 'once' && /^1970-01-01T00:00:00/.test(s.at)) return 'once, right away';
    return s.text || s.kind;
  }

  const stateBadge = (s) => el('span', { class: `badge state-${s}` }, s);

  function truncate(text, n) {
    if (!text) return '';
    return text.length > n ? `${text.slice(0, n - 1)}…` : text;
  }

  // ---- secrets: never on the page -----------------------------------------------------------

  const SECRET_KEY = /pass|secret|token|auth|cookie|credential|api[-_]?key|private|conninfo|dsn|signature|session/i;
  const SAFE_HEADERS = new Set(['accept', 'content-type', 'user-agent', 'accept-encoding', 'accept-language', 'content-language']);
  const HIDDEN = '•••• (hidden)';

  function redactString(s) {
    return s
      // scheme://user:password@host -> scheme://user:••••@host
      .replace(/([a-z][a-z0-9+.-]*:\/\/[^/\s:@]*):[^@\s/]*@/gi, '$1:••••@')
      // query strings may carry tokens (?token=..., &sig=...): keep the names only
      .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s?#]*\?)([^\s#]*)/gi,
        (_, base, query) => base + query.split('&').map((p) => p.split('=')[0] + (p.includes('=') ? '=••••' : '')).join('&'))
      // libpq keyword/value conninfo: password=...
      .replace(/(password\s*=\s*)('[^']*'|\S+)/gi, '$1••••');
  }

  // A copy of a task's payload without anything that may be a secret: values under secret-like
  // keys, every environment value, every header value except a few harmless ones, and
  // credentials or query strings inside URLs.
  function redact(value, key = '', parentKey = '') {
    if (SECRET_KEY.test(key)) return HIDDEN;
    if (parentKey === 'env') return HIDDEN;
    if (parentKey === 'headers' && !SAFE_HEADERS.has(key.toLowerCase())) return HIDDEN;
    if (typeof value === 'string') return redactString(value);
    if (Array.isArray(value)) return value.map((v) => redact(v, '', key));
    if (value && typeof value === 'object') {
      const out = {};
      for (const [k, v] of Object.entries(value)) out[k] = redact(v, k, key.toLowerCase());
      return out;
    }
    return value;
  }

  // ---- API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Relative URLs, so the page also works behind a reverse proxy under a path prefix.
  async function api(path, { method = 'GET', token } = {}) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path.replace(/^\//, ''), { method, headers, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new ApiError(0, 'network', 'cannot reach the daemon');
    }
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    if (!res.ok && !(path === '/ready' && res.status === 503)) {
      const err = body && body.error ? body.error : { code: String(res.status), message: res.statusText };
      throw new ApiError(res.status, err.code, err.message);
    }
    return body;
  }

  // ---- state --------------------------------------------------------------------------------

  const view = {
    health: null,
    ready: null,
    scheduler: null,
    pools: null,
    history: [],          // samples, oldest first
    historyMeta: null,    // interval_ms, capacity
    cycles: [],           // newest first, for the chart
    cyclePage: { cursors: [null], index: 0, next: null },
    taskPage: { cursors: [null], index: 0, next: null },
    taskFilter: { type: '', state: '', name: '', limit: 25 },
    detail: { id: null, task: null, runCursors: [null], runIndex: 0, runNext: null },
    attention: [],
    rendered: new Map(),  // table id -> JSON of the rows last rendered
    lastError: null,
  };

  // ---- charts -------------------------------------------------------------------------------

  const charts = {};
  const palette = ['#2f7ed8', '#e4572e', '#17a673', '#f3a712', '#8e5ea2', '#29b6c6', '#c0507a', '#7a8b99'];

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function timeAxis() {
    return {
      type: 'linear',
      ticks: { maxTicksLimit: 6, callback: (v) => fmtClock(v), color: cssVar('--muted') },
      grid: { color: cssVar('--grid') },
    };
  }

  function baseOptions(extra) {
    return Object.assign({
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'nearest', axis: 'x', intersect: false },
      plugins: {
        legend: { labels: { color: cssVar('--fg'), boxWidth: 12 } },
        tooltip: { callbacks: {} },
      },
    }, extra);
  }

  function initCharts() {
    if (typeof Chart === 'undefined') {
      showBanner('Chart.js did not load; charts are unavailable (the tables still work).');
      return;
    }
    const yAxis = (title) => ({
      beginAtZero: true,
      ticks: { precision: 0, color: cssVar('--muted') },
      grid: { color: cssVar('--grid') },
      title: { display: !!title, text: title, color: cssVar('--muted') },
    });
    const timeTitle = (items) => (items.length ? fmtAbsolute(items[0].parsed.x) : '');

    charts.pool = new Chart($('#pool-chart'), {
      type: 'line',
      data: { datasets: [
        { label: 'in use', borderColor: palette[0], backgroundColor: 'rgba(47,126,216,0.25)', fill: 'origin', data: [], pointRadius: 0, borderWidth: 2 },
        { label: 'open', borderColor: palette[2], data: [], pointRadius: 0, borderWidth: 1.5 },
        { label: 'waiting', borderColor: palette[1], data: [], pointRadius: 0, borderWidth: 1.5 },
        { label: 'max (size + overflow)', borderColor: palette[3], borderDash: [6, 4], data: [], pointRadius: 0, borderWidth: 2, stepped: true },
      ] },
      options: baseOptions({
        scales: { x: timeAxis(), y: yAxis('connections') },
        plugins: { legend: { labels: { color: cssVar('--fg'), boxWidth: 12 } }, tooltip: { callbacks: { title: timeTitle } } },
      }),
    });

    charts.server = new Chart($('#server-chart'), {
      type: 'line',
      data: { datasets: [] },
      options: baseOptions({
        scales: { x: timeAxis(), y: Object.assign(yAxis('connections'), { stacked: true }) },
        plugins: { legend: { labels: { color: cssVar('--fg'), boxWidth: 12 } }, tooltip: { callbacks: { title: timeTitle } } },
      }),
    });

    charts.cycles = new Chart($('#cycle-chart'), {
      type: 'bar',
      data: { labels: [], datasets: [
        { label: 'claimed', backgroundColor: palette[0], data: [], yAxisID: 'y' },
        { label: 'succeeded', backgroundColor: palette[2], data: [], yAxisID: 'y' },
        { label: 'failed', backgroundColor: palette[1], data: [], yAxisID: 'y' },
        { type: 'line', label: 'duration (ms)', borderColor: palette[4], backgroundColor: palette[4], data: [], yAxisID: 'ms', pointRadius: 2, borderWidth: 1.5 },
      ] },
      options: baseOptions({
        scales: {
          x: { ticks: { color: cssVar('--muted'), maxTicksLimit: 12 }, grid: { display: false } },
          y: yAxis('tasks'),
          ms: { position: 'right', beginAtZero: true, ticks: { color: cssVar('--muted') }, grid: { drawOnChartArea: false }, title: { display: true, text: 'ms', color: cssVar('--muted') } },
        },
        plugins: {
          legend: { labels: { color: cssVar('--fg'), boxWidth: 12 } },
          tooltip: { callbacks: { title: (items) => (items.length ? `cycle #${items[0].label}` : '') } },
        },
      }),
    });
  }

  // ---- rendering: overview ------------------------------------------------------------------

  function totals() {
    const t = (view.scheduler && view.scheduler.stats && view.scheduler.stats.totals) || {};
    const get = (k) => t[k] || 0;
    let executed = 0;
    for (const [k, v] of Object.entries(t)) if (k.startsWith('runs_')) executed += v;
    return {
      cycles: get('cycles'),
      found: get('claimed'),
      executed,
      succeeded: get('runs_succeeded'),
      failed: get('runs_failed') + get('runs_timed_out'),
      failedOnly: get('runs_failed'),
      timedOut: get('runs_timed_out'),
      rescued: get('runs_rescued'),
      fenced: get('runs_fenced'),
    };
  }

  // running, draining, stopped from the scheduler; "degraded" when it runs but /ready fails.
  function schedulerStatus() {
    if (!view.scheduler) return { text: 'unreachable', cls: 'bad', reasons: [view.lastError || 'no answer'] };
    const state = view.scheduler.node.state;
    const reasons = [];
    if (view.ready && view.ready.status !== 'ready') {
      for (const [name, c] of Object.entries(view.ready.checks || {})) {
        if (c && c.ok === false) reasons.push(`${name}: ${c.reason || 'failing'}`);
      }
    }
    if (state === 'running' && reasons.length) return { text: 'degraded', cls: 'warn', reasons };
    const cls = state === 'running' ? 'ok' : state === 'draining' ? 'warn' : 'bad';
    return { text: state, cls, reasons };
  }

  function renderOverview() {
    const s = view.scheduler;
    const status = schedulerStatus();
    setText('v-status', status.text, status.text);
    $('#card-status').className = `card status-${status.cls}`;
    setText('v-status-sub', status.reasons.length ? status.reasons.join('; ') :
      (s && s.node.last_cycle_age_s !== null && s.node.last_cycle_age_s !== undefined
        ? `last cycle ${fmtSeconds(s.node.last_cycle_age_s)} ago` : ''));
    if (view.health) {
      setText('v-uptime', fmtSeconds(view.health.uptime_s), Math.floor(view.health.uptime_s));
      setText('v-version', `version ${view.health.version}`);
      setText('node-label', `node ${view.health.node_id}`);
    }
    if (!s) return;
    const alive = s.nodes.filter((n) => n.alive).length;
    setText('v-nodes', `${alive} alive`, alive);
    $('#v-nodes').title = `${s.nodes.length} registered`;
    setText('v-leader', s.leader || 'none', s.leader || '');
    const t = totals();
    setText('v-cycles', fmtInt(t.cycles), t.cycles);
    setText('v-found', fmtInt(t.found), t.found);
    setText('v-executed', fmtInt(t.executed), t.executed);
    setText('v-executed-sub', `${fmtInt(t.succeeded)} succeeded`);
    setText('v-failed', fmtInt(t.failed), t.failed);
    setText('v-failed-sub', `${fmtInt(t.failedOnly)} failed · ${fmtInt(t.timedOut)} timed out · ${fmtInt(t.rescued)} rescued`);
    $('#v-failed').closest('.card').classList.toggle('status-warn', t.failed > 0);
    setText('v-poll', fmtMs(s.node.current_poll_ms), s.node.current_poll_ms);
    setText('v-poll-sub', `${s.node.workers} workers, ${s.node.running} running`);

    const rows = s.queues.map((q) => {
      const b = q.by_state || {};
      const n = (k) => b[k] || 0;
      return { type: q.type, depth: n('scheduled') + n('available') + n('retryable'), available: n('available'),
        scheduled: n('scheduled'), retryable: n('retryable'), running: n('running'), paused: n('paused'), failed: n('failed'), lag: q.lag_s };
    });
    renderRows('queues', rows, (r) => el('tr', { dataset: { key: r.type } },
      el('th', { scope: 'row' }, r.type),
      ...['depth', 'available', 'scheduled', 'retryable', 'running', 'paused', 'failed'].map((k) =>
        el('td', { class: `num${k === 'failed' && r.failed > 0 ? ' bad-text' : ''}` }, fmtInt(r[k]))),
      el('td', { class: `num${r.lag > 60 ? ' warn-text' : ''}` }, r.lag > 0 ? fmtSeconds(r.lag) : '0')),
    'No task types yet.', 9);

    // Flow limits: use against each limit, counted across the fleet.
    const used = (n, max) => (max === null || max === undefined ? '–' : `${fmtInt(n)} / ${fmtInt(max)}`);
    // A limit per key: its row (all keys together), then one row per key in use, whose counts
    // are what the limit holds (each key against the same limit).
    const flowRows = (s.flow || []).flatMap((f) => [{ type: f.type, key: f.key, running: f.running, max_running: f.max_running,
      started: f.started_in_window, rate: f.rate, period: f.rate_period_ms },
    ...(f.by_key || []).map((k) => ({ type: f.type, value: k.key, running: k.running, max_running: f.max_running,
      started: k.started_in_window, rate: f.rate, period: f.rate_period_ms }))]);
    renderRows('flow', flowRows, (r) => el('tr', { dataset: { key: r.value === undefined ? r.type : `${r.type}\n${r.value}` },
      class: r.value === undefined ? undefined : 'flow-key' },
      r.value === undefined ? el('th', { scope: 'row' }, r.type) : el('td', { class: 'muted small' }, r.type),
      r.value === undefined ? el('td', {}, r.key ? el('code', {}, r.key) : '–')
        : el('td', {}, '= ', el('code', {}, r.value === '' ? '(none)' : r.value)),
      el('td', { class: `num${!r.key && r.max_running !== null && r.running >= r.max_running ? ' warn-text' : ''}`, dataset: { role: 'running' } },
        used(r.running, r.max_running)),
      el('td', { class: `num${!r.key && r.rate !== null && r.started >= r.rate ? ' warn-text' : ''}`, dataset: { role: 'rate' } },
        used(r.started, r.rate)),
      el('td', { class: 'num' }, r.period === null || r.period === undefined ? '–' : fmtMs(r.period))),
    'No flow limit set.', 5);

    // Task types for the filters.
    const types = new Set(s.queues.map((q) => q.type));
    const list = $('#type-list');
    const key = [...types].sort().join('\n');
    if (list.dataset.key !== key) {
      list.dataset.key = key;
      list.replaceChildren(...[...types].sort().map((t) => el('option', { value: t })));
      const sel = $('#cycle-type');
      const current = sel.value;
      sel.replaceChildren(el('option', { value: '' }, 'all types'), ...[...types].sort().map((t) => el('option', { value: t }, t)));
      sel.value = types.has(current) ? current : '';
    }
  }

  // Rebuilds a table body only when its rows changed, keeping the focused control focused.
  function renderRows(tableId, rows, makeRow, emptyText, columns) {
    const json = JSON.stringify(rows);
    if (view.rendered.get(tableId) === json) return;
    view.rendered.set(tableId, json);
    const tbody = $(`#${tableId} tbody`);
    const active = document.activeElement;
    let focusKey = null;
    let focusRole = null;
    if (active && tbody.contains(active)) {
      const tr = active.closest('tr');
      focusKey = tr && tr.dataset.key;
      focusRole = active.dataset.role || null;
    }
    const trs = rows.map(makeRow);
    if (!trs.length && emptyText) trs.push(el('tr', {}, el('td', { colspan: columns, class: 'muted empty' }, emptyText)));
    tbody.replaceChildren(...trs);
    if (focusKey !== null) {
      const tr = [...tbody.rows].find((r) => r.dataset.key === focusKey);
      const target = tr && (focusRole ? tr.querySelector(`[data-role="${focusRole}"]`) : null);
      if (target) target.focus({ preventScroll: true });
    }
  }

  // ---- rendering: attention -----------------------------------------------------------------

  function renderAttention() {
    const items = [];
    const s = view.scheduler;
    const status = schedulerStatus();
    if (status.cls !== 'ok') {
      items.push({ key: 'sched', level: 'bad', text: `Scheduler ${status.text}${status.reasons.length ? `: ${status.reasons.join('; ')}` : ''}` });
    }
    if (s && s.node.last_error) items.push({ key: 'cycle-error', level: 'bad', text: `Last check cycle failed: ${s.node.last_error}` });
    if (s) {
      for (const n of s.nodes) {
        if (!n.alive && n.state !== 'stopped') items.push({ key: `node-${n.id}`, level: 'warn', text: `Node ${n.id} missed its heartbeat (state ${n.state}); its running tasks are rescued by the leader.` });
      }
    }
    for (const p of (view.pools && view.pools.pools) || []) {
      if (p.saturated) items.push({ key: `sat-${p.name}`, level: 'bad', text: `Pool ${p.name} is saturated: the server refuses new connections (${p.server_refusals} refusals).` });
      else if (p.waiting > 0) items.push({ key: `wait-${p.name}`, level: 'warn', text: `Pool ${p.name}: ${p.waiting} borrowers waiting, ${p.checked_out} of ${p.max} in use.` });
      if (p.last_connect_error) items.push({ key: `conn-${p.name}`, level: 'warn', text: `Pool ${p.name}: last connect failed: ${p.last_connect_error}` });
    }
    for (const t of view.attention) {
      const why = t.state === 'failed' ? 'failed' : t.state === 'paused' ? `paused after ${t.consecutive_failures} failures` : `retrying (attempt ${t.attempt} of ${t.max_attempts})`;
      items.push({ key: `task-${t.id}`, level: t.state === 'retryable' ? 'warn' : 'bad', task: t, text: why });
    }
    const pill = $('#attention-count');
    pill.hidden = items.length === 0;
    pill.textContent = String(items.length);
    pill.className = `pill ${items.some((i) => i.level === 'bad') ? 'bad' : 'warn'}`;
    $('#attention-empty').hidden = items.length > 0;

    const json = JSON.stringify(items);
    if (view.rendered.get('attention') === json) return;
    view.rendered.set('attention', json);
    const list = $('#attention-list');
    const activeKey = list.contains(document.activeElement) ? document.activeElement.closest('li').dataset.key : null;
    list.replaceChildren(...items.map((i) => {
      const li = el('li', { class: `level-${i.level}`, dataset: { key: i.key } });
      if (i.task) {
        li.append(el('button', { type: 'button', class: 'link', onclick: () => openTask(i.task.id) },
          `#${i.task.id} ${i.task.name || '(unnamed)'}`), ' ', stateBadge(i.task.state), ' ', el('span', {}, `${i.task.type}, ${i.text}`));
        if (i.task.last_error) li.append(el('div', { class: 'error-text' }, truncate(i.task.last_error, 300)));
      } else {
        li.append(el('span', {}, i.text));
      }
      return li;
    }));
    if (activeKey) {
      const b = list.querySelector(`li[data-key="${CSS.escape(activeKey)}"] button`);
      if (b) b.focus({ preventScroll: true });
    }
  }

  // ---- rendering: pools ---------------------------------------------------------------------

  function renderPools() {
    const pools = (view.pools && view.pools.pools) || [];
    renderRows('pool-table', pools, (p) => {
      const state = p.closed ? ['closed', 'bad'] : p.saturated ? ['saturated', 'bad'] : p.waiting > 0 ? ['exhausted', 'warn'] : ['ok', 'ok'];
      return el('tr', { dataset: { key: p.name } },
        el('th', { scope: 'row' }, p.name, p.lane ? el('span', { class: 'muted small' }, ' (scheduler lane)') : null),
        el('td', { class: 'num' }, fmtInt(p.size)),
        el('td', { class: 'num' }, fmtInt(p.checked_out)),
        el('td', { class: 'num' }, fmtInt(p.checked_in)),
        el('td', { class: 'num' }, fmtInt(p.overflow)),
        el('td', { class: `num${p.waiting > 0 ? ' warn-text' : ''}` }, fmtInt(p.waiting)),
        el('td', { class: 'num' }, fmtInt(p.max)),
        el('td', { class: 'num' }, fmtInt(p.peak_checked_out)),
        el('td', { class: `num${p.timeouts > 0 ? ' warn-text' : ''}` }, fmtInt(p.timeouts)),
        el('td', { class: `num${p.server_refusals > 0 ? ' warn-text' : ''}` }, fmtInt(p.server_refusals)),
        el('td', { class: 'num' }, fmtMs(p.wait_p99_ms)),
        el('td', {}, el('span', { class: `badge ${state[1]}`, title: p.last_connect_error || undefined }, state[0])));
    }, 'No pools.', 12);

    const sel = $('#pool-select');
    const names = pools.map((p) => p.name);
    if (sel.dataset.key !== names.join('\n')) {
      sel.dataset.key = names.join('\n');
      const current = sel.value;
      sel.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
      // Default to the first pool that is not the lane: the one task handlers use.
      const preferred = pools.find((p) => !p.lane);
      sel.value = names.includes(current) ? current : (preferred ? preferred.name : names[0] || '');
    }
    renderHistory();
    renderServer();
  }

  function renderHistory() {
    const samples = view.history;
    const meta = view.historyMeta;
    if (meta) {
      const span = samples.length >= 2 ? (parseTime(samples[samples.length - 1].at) - parseTime(samples[0].at)) / 1000 : 0;
      setText('history-note', `Sampled every ${fmtMs(meta.interval_ms)} by the daemon, last ${fmtSeconds(meta.capacity * meta.interval_ms / 1000)} kept in memory; ${samples.length} samples shown (${fmtSeconds(span)}). A restart starts a new history.`);
    }
    if (!charts.pool) return;
    const name = $('#pool-select').value;
    const points = (field) => samples.map((s) => {
      const p = s.pools.find((q) => q.name === name);
      return { x: parseTime(s.at), y: p ? p[field] : null };
    });
    const ds = charts.pool.data.datasets;
    ds[0].data = points('checked_out');
    ds[1].data = points('open');
    ds[2].data = points('waiting');
    ds[3].data = points('max');
    charts.pool.update('none');

    // Server: stacked connections per application_name and the server's max_connections.
    const apps = new Set();
    for (const s of samples) if (s.server) for (const a of Object.keys(s.server.connections)) apps.add(a);
    const sorted = [...apps].sort();
    const datasets = sorted.map((a, i) => ({
      label: a, stack: 'sluice', fill: i === 0 ? 'origin' : '-1',
      borderColor: palette[i % palette.length], backgroundColor: `${palette[i % palette.length]}55`,
      pointRadius: 0, borderWidth: 1.5,
      data: samples.map((s) => ({ x: parseTime(s.at), y: s.server ? (s.server.connections[a] || 0) : null })),
    }));
    if ($('#show-max') === null || $('#show-max').checked) {
      datasets.push({
        label: 'max_connections', stack: 'limit', borderColor: palette[1], borderDash: [6, 4], fill: false,
        pointRadius: 0, borderWidth: 2, stepped: true,
        data: samples.map((s) => ({ x: parseTime(s.at), y: s.server ? s.server.max_connections : null })),
      });
    }
    charts.server.data.datasets = datasets;
    charts.server.update('none');
  }

  function renderServer() {
    const last = view.history.length ? view.history[view.history.length - 1] : null;
    const server = last && last.server;
    const rows = server ? Object.entries(server.connections).sort((a, b) => a[0].localeCompare(b[0])) : [];
    renderRows('server-table', rows, ([name, n]) => el('tr', { dataset: { key: name } },
      el('th', { scope: 'row' }, el('code', {}, name)), el('td', { class: 'num' }, fmtInt(n))),
    last && !server ? `Server not reachable at the last sample: ${last.error || 'unknown error'}` : 'No sample yet.', 2);
    const foot = $('#server-table tfoot');
    if (server) {
      const total = rows.reduce((sum, [, n]) => sum + n, 0);
      const pct = server.max_connections ? Math.round(100 * total / server.max_connections) : 0;
      foot.replaceChildren(
        el('tr', {}, el('th', { scope: 'row' }, 'all of sluice (every node)'), el('td', { class: 'num' }, fmtInt(total))),
        el('tr', {}, el('th', { scope: 'row' }, el('code', {}, 'max_connections')), el('td', { class: 'num' }, `${fmtInt(server.max_connections)} (${pct} % used by sluice)`)));
    } else {
      foot.replaceChildren();
    }

    const s = view.scheduler;
    const self = s ? s.node.node_id : null;
    // This node's own connections: its pools' open connections (the LISTEN connection, one more,
    // is not a pool's). Other nodes only report their budget; their connections are in the
    // server-wide table above under their application names.
    const ownOpen = ((view.pools && view.pools.pools) || []).reduce((sum, p) => sum + p.open, 0);
    // Server-side connections per node, when application names carry the node id as one of
    // their '/'-separated parts (database.application_name_prefix = "sluice/<node id>"); with
    // the default prefix, shared by every node, only the server-wide total above is known.
    const onServer = (id) => {
      if (!server) return null;
      let n = null;
      for (const [name, count] of Object.entries(server.connections)) {
        if (name.split('/').includes(id)) n = (n || 0) + count;
      }
      return n;
    };
    const nodes = s ? s.nodes : [];
    renderRows('node-table', nodes.map((n) => Object.assign({}, n, {
      self: n.id === self, own: n.id === self ? ownOpen : null, server: onServer(n.id), leader: s.leader === n.id,
    })), (n) =>
      el('tr', { dataset: { key: n.id } },
        el('th', { scope: 'row' }, n.id, n.self ? el('span', { class: 'muted small' }, ' (this node)') : null, n.leader ? el('span', { class: 'badge ok small' }, 'leader') : null,
          el('div', { class: 'muted small' }, `${n.host} pid ${n.pid} · v${n.version}`)),
        el('td', {}, el('span', { class: `badge ${n.alive ? 'ok' : 'bad'}` }, n.alive ? n.state : `${n.state}, expired`)),
        el('td', { class: 'num', title: n.self ? 'open connections of this node\'s pools' : 'only the node itself knows; see the server table' }, n.own === null ? '–' : fmtInt(n.own)),
        el('td', { class: 'num', title: n.server === null ? 'application names do not carry node ids; see the server table' : 'pg_stat_activity rows whose application_name names this node' }, n.server === null ? '–' : fmtInt(n.server)),
        el('td', { class: 'num' }, n.connection_budget ? fmtInt(n.connection_budget) : '–'),
        el('td', {}, timeEl(n.heartbeat_at))),
    'No node registered.', 6);
  }

  // ---- rendering: cycles --------------------------------------------------------------------

  function cycleCounts(c, type) {
    if (!type) return c;
    const b = (c.by_type || {})[type] || {};
    return { claimed: b.claimed || 0, succeeded: b.succeeded || 0, failed: b.failed || 0 };
  }

  function renderCycleChart() {
    if (!charts.cycles) return;
    const type = $('#cycle-type').value;
    const cycles = [...view.cycles].reverse();
    charts.cycles.data.labels = cycles.map((c) => String(c.id));
    const ds = charts.cycles.data.datasets;
    ds[0].data = cycles.map((c) => cycleCounts(c, type).claimed);
    ds[1].data = cycles.map((c) => cycleCounts(c, type).succeeded);
    ds[2].data = cycles.map((c) => cycleCounts(c, type).failed);
    ds[3].data = cycles.map((c) => c.duration_ms);
    charts.cycles.update('none');
  }

  function byTypeText(byType) {
    return Object.entries(byType || {})
      .filter(([, v]) => Object.values(v).some((n) => n > 0))
      .map(([t, v]) => `${t}: ${Object.entries(v).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(', ')}`)
      .join('; ');
  }

  function renderCycleTable(items) {
    renderRows('cycle-table', items, (c) => el('tr', { dataset: { key: String(c.id) }, class: c.error ? 'row-bad' : undefined },
      el('td', { class: 'num' }, c.id),
      el('td', {}, timeEl(c.started_at, { relative: false })),
      el('td', {}, c.node),
      el('td', { class: 'num' }, fmtMs(c.duration_ms)),
      el('td', { class: 'num' }, fmtInt(c.claimed)),
      el('td', { class: 'num' }, fmtInt(c.succeeded)),
      el('td', { class: `num${c.failed > 0 ? ' bad-text' : ''}` }, fmtInt(c.failed)),
      el('td', { class: 'num' }, fmtInt(c.skipped)),
      el('td', { class: 'num' }, fmtInt(c.rescued)),
      el('td', { class: 'num' }, fmtInt(c.fenced)),
      el('td', { class: 'small' }, byTypeText(c.by_type)),
      el('td', { class: 'error-text small' }, c.error ? truncate(c.error, 200) : '')),
    'No check cycle recorded yet.', 12);
  }

  function renderPager(id, page) {
    const root = document.getElementById(id);
    $('[data-page="first"]', root).disabled = page.index === 0;
    $('[data-page="prev"]', root).disabled = page.index === 0;
    $('[data-page="next"]', root).disabled = page.next === null || page.next === undefined;
    $('[data-page="label"]', root).textContent = `page ${page.index + 1}`;
  }

  // ---- rendering: tasks ---------------------------------------------------------------------

  function taskRow(t) {
    const name = t.name || `(unnamed #${t.id})`;
    return el('tr', { dataset: { key: String(t.id), taskId: String(t.id) }, class: t.state === 'failed' ? 'row-bad' : undefined },
      el('td', { class: 'num' }, t.id),
      el('td', {}, el('button', { type: 'button', class: 'link', dataset: { role: 'open' }, 'aria-label': `Open task ${t.id} ${name}`, onclick: () => openTask(t.id) }, name)),
      el('td', {}, t.type),
      el('td', {}, stateBadge(t.state)),
      el('td', { class: 'small' }, el('code', {}, scheduleText(t.schedule))),
      el('td', {}, timeEl(t.next_run_at)),
      el('td', {}, timeEl(t.last_run_at)),
      el('td', { class: 'num' }, fmtInt(t.runs)),
      el('td', { class: `num${t.consecutive_failures > 0 ? ' bad-text' : ''}` }, fmtInt(t.consecutive_failures)),
      el('td', { class: 'error-text small', title: t.last_error || undefined }, truncate(t.last_error, 80)));
  }

  function taskQuery(before) {
    const f = view.taskFilter;
    const q = new URLSearchParams();
    if (f.type) q.set('type', f.type);
    if (f.state) q.set('state', f.state);
    if (f.name) q.set('name', f.name);
    q.set('limit', String(f.limit));
    if (before) q.set('before', String(before));
    return `/api/v1/tasks?${q}`;
  }

  // ---- task detail and actions --------------------------------------------------------------

  const ACTIONS = {
    pause: ['scheduled', 'available', 'retryable'],
    resume: ['paused'],
    cancel: ['scheduled', 'available', 'retryable', 'paused', 'failed'],
    'run-now': ['scheduled', 'available', 'retryable', 'paused', 'failed', 'succeeded'],
  };

  async function openTask(id) {
    const d = view.detail;
    d.id = id;
    d.runCursors = [null];
    d.runIndex = 0;
    d.task = null;
    // Nothing of the previously opened task may linger (its buttons least of all).
    view.rendered.delete('run-table');
    view.rendered.delete('detail');
    setMessage('');
    $('#task-title').textContent = `Task #${id}`;
    for (const b of document.querySelectorAll('#task-dialog [data-action]')) b.disabled = true;
    $('#task-fields').replaceChildren();
    $('#task-payload').textContent = '';
    $('#task-graph').hidden = true;
    $('#task-upstream').replaceChildren();
    $('#task-downstream').replaceChildren();
    $('#run-table tbody').replaceChildren();
    const dialog = $('#task-dialog');
    if (!dialog.open) dialog.showModal();
    await loadDetail();
  }

  async function loadDetail() {
    const d = view.detail;
    if (d.id === null) return;
    const id = d.id;
    try {
      const before = d.runCursors[d.runIndex];
      const task = await api(`/api/v1/tasks/${id}`);
      const runs = await api(`/api/v1/tasks/${id}/runs?limit=${RUN_PAGE}${before ? `&before=${before}` : ''}`);
      if (d.id !== id) return;
      d.task = task;
      d.runNext = runs.next;
      renderDetail(task, runs.runs);
    } catch (e) {
      if (d.id === id) setMessage(e.message, 'error');
    }
  }

  function renderDetail(t, runs) {
    // Unchanged since the last refresh: leave the dialog alone (text selections survive).
    renderPager('run-pager', { index: view.detail.runIndex, next: view.detail.runNext });
    const json = JSON.stringify([t, runs, view.detail.runIndex]);
    if (view.rendered.get('detail') === json) return;
    view.rendered.set('detail', json);
    $('#task-title').textContent = `Task #${t.id}: ${t.name || '(unnamed)'}`;
    for (const b of document.querySelectorAll('#task-dialog [data-action]')) {
      b.disabled = !ACTIONS[b.dataset.action].includes(t.state);
    }
    const sched = t.schedule;
    const fields = [
      ['State', stateBadge(t.state)],
      ['Type', t.type],
      ['Unique key', t.unique_key ? el('code', {}, t.unique_key) : '–'],
      ['Schedule', el('code', {}, scheduleText(sched)), sched.kind === 'cron' ? ` (${sched.tz})` : ''],
      ['Next run', timeEl(t.next_run_at), t.next_run_at ? el('span', { class: 'muted' }, ` · ${fmtAbsolute(parseTime(t.next_run_at))}`) : ''],
      ['Last run', timeEl(t.last_run_at)],
      ['Last success', timeEl(t.last_success_at)],
      ['Attempt', `${t.attempt} of ${t.max_attempts}`],
      ['Failures in a row', String(t.consecutive_failures), t.pause_after_failures ? ` (pauses after ${t.pause_after_failures})` : ''],
      ['Runs', fmtInt(t.runs)],
      ['Priority', String(t.priority)],
      ['Timeout', fmtMs(t.timeout_ms)],
      ['Retry backoff', `${fmtMs(t.backoff_base_ms)} … ${fmtMs(t.backoff_cap_ms)}`],
      ['Misfires', `${t.misfire_policy}, grace ${fmtSeconds(t.misfire_grace_s)}${t.misfire_policy === 'catch_up' ? `, at most ${t.catch_up_limit}` : ''}`],
      ['Claimed by', t.claimed_by || '–', t.lease_until ? el('span', { class: 'muted' }, ' until ', timeEl(t.lease_until)) : ''],
      ['Created', timeEl(t.created_at, { relative: false })],
      ['Updated', timeEl(t.updated_at)],
    ];
    const dl = $('#task-fields');
    dl.replaceChildren(...fields.flatMap(([k, ...v]) => [el('dt', {}, k), el('dd', {}, ...v)]));
    if (t.last_error) dl.append(el('dt', {}, 'Last error'), el('dd', { class: 'error-text' }, t.last_error));
    $('#task-payload').textContent = JSON.stringify(redact(t.payload), null, 2);
    renderDeps(t);

    renderRows('run-table', runs, (r) => el('tr', { dataset: { key: String(r.id) }, class: r.outcome === 'succeeded' ? undefined : 'row-bad' },
      el('td', { class: 'num' }, r.id),
      el('td', { class: 'num' }, r.attempt),
      el('td', {}, timeEl(r.started_at, { relative: false })),
      el('td', { class: 'num' }, fmtMs(r.duration_ms)),
      el('td', {}, el('span', { class: `badge ${r.outcome === 'succeeded' ? 'ok' : 'bad'}` }, r.outcome)),
      el('td', { class: 'small nowrap' }, r.node),
      el('td', { class: 'small' }, r.error ? el('div', { class: 'error-text' }, truncate(r.error, 300)) : '',
        r.detail !== null && r.detail !== undefined ? el('div', {}, el('code', {}, truncate(JSON.stringify(redact(r.detail)), 200))) : '')),
    'No run yet.', 7);
  }

  // The tasks this one runs after and the tasks that run after it, each opening its own detail.
  function renderDeps(t) {
    const up = t.upstream || [];
    const down = t.downstream || [];
    $('#task-graph').hidden = !up.length && !down.length;
    const items = (list) => (list.length ? list.map((d) => el('li', { dataset: { taskId: String(d.id) } },
      el('button', { type: 'button', class: 'link', 'aria-label': `Open task ${d.id} ${d.name || '(unnamed)'}`, onclick: () => openTask(d.id) },
        `#${d.id} ${d.name || '(unnamed)'}`), ' ', stateBadge(d.state), ' ', el('span', { class: 'muted small' }, d.type)))
      : [el('li', { class: 'muted' }, 'none')]);
    $('#task-upstream').replaceChildren(...items(up));
    $('#task-downstream').replaceChildren(...items(down));
  }

  function setMessage(text, kind) {
    const m = $('#task-message');
    m.textContent = text;
    m.className = `message${kind ? ` ${kind}` : ''}`;
  }

  // The token lives in sessionStorage: gone when the tab closes, never sent anywhere but this
  // daemon's API, never written into the page.
  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null;
    }
  }
  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      // Storage disabled: the token is asked for again next time.
    }
    $('#forget-token').hidden = !token;
  }

  function askToken(error) {
    const dialog = $('#token-dialog');
    const input = $('#token-input');
    const form = $('#token-form');
    input.value = '';
    $('#token-error').textContent = error || '';
    return new Promise((resolve) => {
      const done = (value) => {
        form.removeEventListener('submit', onSubmit);
        $('#token-cancel').removeEventListener('click', onCancel);
        dialog.removeEventListener('cancel', onCancel);
        input.value = '';
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const v = input.value.trim();
        if (v) done(v);
      };
      const onCancel = (ev) => {
        ev.preventDefault();
        done(null);
      };
      form.addEventListener('submit', onSubmit);
      $('#token-cancel').addEventListener('click', onCancel);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      input.focus();
    });
  }

  async function runAction(action) {
    const d = view.detail;
    const t = d.task;
    if (!t) return;
    if (action === 'cancel' && !window.confirm(`Cancel task #${t.id} for good?`)) return;
    let token = storedToken();
    let error = null;
    for (let tries = 0; tries < 3; tries++) {
      if (!token) {
        token = await askToken(error);
        if (!token) {
          setMessage('No token given; nothing changed.');
          return;
        }
      }
      try {
        setMessage(`${action}…`);
        const updated = await api(`/api/v1/tasks/${t.id}/${action}`, { method: 'POST', token });
        storeToken(token);
        setMessage(`Done: task is now ${updated.state}.`, 'ok');
        await refresh();
        await loadDetail();
        return;
      } catch (e) {
        if (e.status === 401) {
          storeToken(null);
          token = null;
          error = 'The daemon refused that token. Try again.';
          continue;
        }
        if (e.status === 403) {
          setMessage('The daemon has no API token configured (http.token): its API is read-only.', 'error');
        } else {
          setMessage(e.message, 'error');
        }
        return;
      }
    }
    setMessage('Token refused three times; nothing changed.', 'error');
  }

  // ---- loading ------------------------------------------------------------------------------

  function showBanner(text) {
    const b = $('#banner');
    b.hidden = !text;
    b.textContent = text || '';
  }

  async function loadHistory() {
    const last = view.history.length ? view.history[view.history.length - 1].at : null;
    const h = await api(`/api/v1/pools/history${last ? `?since=${encodeURIComponent(last)}` : ''}`);
    view.historyMeta = { interval_ms: h.interval_ms, capacity: h.capacity };
    view.history = view.history.concat(h.samples);
    if (view.history.length > h.capacity) view.history = view.history.slice(view.history.length - h.capacity);
  }

  async function loadCycles() {
    const page = view.cyclePage;
    const before = page.cursors[page.index];
    const chart = await api(`/api/v1/cycles?limit=${CYCLE_CHART_LIMIT}`);
    const table = before ? await api(`/api/v1/cycles?limit=${CYCLE_PAGE}&before=${before}`) : null;
    view.cycles = chart.cycles;
    const items = table ? table.cycles : chart.cycles.slice(0, CYCLE_PAGE);
    page.next = table ? table.next : (chart.cycles.length > CYCLE_PAGE ? chart.cycles[CYCLE_PAGE - 1].id : chart.next);
    renderCycleChart();
    renderCycleTable(items);
    renderPager('cycle-pager', page);
  }

  async function loadTasks() {
    const page = view.taskPage;
    const res = await api(taskQuery(page.cursors[page.index]));
    page.next = res.next;
    renderRows('task-table', res.tasks, taskRow, 'No task matches.', 10);
    renderPager('task-pager', page);
  }

  async function loadAttention() {
    const failed = await api(`/api/v1/tasks?state=failed&limit=${ATTENTION_LIMIT}`);
    const paused = await api(`/api/v1/tasks?state=paused&limit=${ATTENTION_LIMIT}`);
    const retrying = await api(`/api/v1/tasks?state=retryable&limit=${ATTENTION_LIMIT}`);
    view.attention = failed.tasks
      .concat(paused.tasks.filter((t) => t.consecutive_failures > 0))
      .concat(retrying.tasks);
  }

  let inFlight = null;
  let timer = null;

  // One refresh of everything; concurrent callers share it. Resolves when the page shows it.
  function refresh() {
    if (inFlight) return inFlight;
    inFlight = (async () => {
      const errors = [];
      const part = async (name, fn) => {
        try {
          await fn();
        } catch (e) {
          errors.push(`${name}: ${e.message}`);
        }
      };
      // Every request that reads the database borrows a connection of the scheduler's small
      // lane pool. They go one after the other, so a page never holds more than one, and
      // /ready goes first, alone: otherwise it would see the page's own requests waiting for
      // the lane and report the pool exhausted.
      await part('readiness', async () => { view.ready = await api('/ready'); });
      await Promise.all([  // from memory
        part('health', async () => { view.health = await api('/health'); }),
        part('pools', async () => { view.pools = await api('/api/v1/pools'); }),
        part('pool history', loadHistory),
      ]);
      await part('scheduler', async () => { view.scheduler = await api('/api/v1/scheduler'); });
      await part('attention', loadAttention);
      view.lastError = errors.length ? errors[0] : null;
      if (errors.length && errors.some((e) => e.startsWith('scheduler'))) view.scheduler = null;
      renderOverview();
      renderPools();
      renderAttention();
      await part('cycles', loadCycles);
      await part('tasks', loadTasks);
      if ($('#task-dialog').open) await loadDetail();
      showBanner(errors.length ? `Some data could not be loaded: ${errors.join('; ')}` : '');
      $('#updated').textContent = `updated ${fmtClock(Date.now())}`;
      document.body.dataset.loaded = String((Number(document.body.dataset.loaded) || 0) + 1);
    })().finally(() => {
      inFlight = null;
    });
    return inFlight;
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!$('#auto-refresh').checked || document.hidden) return;
    timer = setTimeout(async () => {
      await refresh();
      schedule();
    }, REFRESH_MS);
  }

  // ---- wiring -------------------------------------------------------------------------------

  function pager(id, page, reload) {
    const root = document.getElementById(id);
    root.addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-page]');
      if (!b || b.disabled) return;
      if (b.dataset.page === 'first') page.index = 0;
      else if (b.dataset.page === 'prev') page.index = Math.max(0, page.index - 1);
      else if (b.dataset.page === 'next' && page.next) {
        page.cursors[page.index + 1] = page.next;
        page.cursors.length = page.index + 2;
        page.index += 1;
      }
      reload().catch((e) => showBanner(e.message));
    });
  }

  function wire() {
    $('#refresh-now').addEventListener('click', () => refresh());
    $('#auto-refresh').addEventListener('change', schedule);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) refresh().then(schedule);
      else schedule();
    });
    $('#forget-token').addEventListener('click', () => storeToken(null));
    $('#forget-token').hidden = !storedToken();

    $('#pool-select').addEventListener('change', renderHistory);
    $('#cycle-type').addEventListener('change', renderCycleChart);
    const maxToggle = el('label', { class: 'inline' }, el('input', { type: 'checkbox', id: 'show-max', checked: true, onchange: renderHistory }), ' show max_connections');
    $('#server-chart').closest('figure').querySelector('figcaption').append(maxToggle);

    const form = $('#task-filter');
    const applyFilter = () => {
      const data = new FormData(form);
      view.taskFilter = {
        type: String(data.get('type') || '').trim(),
        state: String(data.get('state') || ''),
        name: String(data.get('name') || '').trim(),
        limit: Number(data.get('limit')) || 25,
      };
      view.taskPage.cursors = [null];
      view.taskPage.index = 0;
      view.rendered.delete('task-table');
      loadTasks().catch((e) => showBanner(`tasks: ${e.message}`));
    };
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      applyFilter();
    });
    form.addEventListener('reset', () => setTimeout(applyFilter, 0));
    form.querySelector('select[name="state"]').addEventListener('change', applyFilter);
    form.querySelector('select[name="limit"]').addEventListener('change', applyFilter);

    pager('cycle-pager', view.cyclePage, loadCycles);
    pager('task-pager', view.taskPage, loadTasks);
    const runPage = {
      get index() { return view.detail.runIndex; },
      set index(v) { view.detail.runIndex = v; },
      get cursors() { return view.detail.runCursors; },
      get next() { return view.detail.runNext; },
    };
    pager('run-pager', runPage, loadDetail);

    const dialog = $('#task-dialog');
    dialog.addEventListener('click', (ev) => {
      if (ev.target.closest('[data-close]')) dialog.close();
      const b = ev.target.closest('button[data-action]');
      if (b && !b.disabled) runAction(b.dataset.action);
    });
    dialog.addEventListener('close', () => {
      // The close event arrives a task after the dialog closed: if another task was opened in
      // between (a quick Escape then click), the dialog is open again and this is not its close.
      if (dialog.open) return;
      const id = view.detail.id;
      view.detail.id = null;
      view.detail.task = null;
      // Back to where the dialog was opened from, for keyboard users.
      const opener = document.querySelector(`#task-table tr[data-key="${id}"] button`);
      if (opener) opener.focus();
    });
  }

  function start() {
    wire();
    initCharts();
    refresh().then(schedule);
  }

  // For tests and for the curious: refresh on demand, read the charts.
  window.sluiceDashboard = { refresh, charts, redact };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
