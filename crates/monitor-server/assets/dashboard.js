/*
 * monitor dashboard: one card per host that reports `host.health`, live over `GET /ws`,
 * and the server's figures from `GET /api/status`. Plain JavaScript, no framework, no
 * build step, nothing fetched from elsewhere; served by the admin listener (`GET /`).
 * See docs/dashboard.md.
 *
 * Every report field is untrusted: text goes in with `textContent`, names in attributes
 * with `setAttribute`, never parsed as markup; a report that is not a well-formed
 * health report is ignored (and counted in the footer).
 *
 * DOM hooks (stable: crates/monitor-cli/tests/cli/dashboard.rs relies on them):
 *   #hosts                           the host cards, in display order (trouble first, then by name)
 *   article.host[data-host=NAME]     one per host; NAME is the report's "host"
 *     data-stale="true|false"        no report for STALE_INTERVALS of its interval (class "stale" too)
 *     data-trouble="true|false"      stale, CPU >= CPU_ALERT_PERCENT or fullest disk >= DISK_ALERT_PERCENT
 *     data-reports=N                 reports received for the host since the page loaded
 *     data-ts=N                      the "ts" of its latest report (unix seconds, as sent)
 *     [data-field=host|state|cpu|mem|load|disk|uptime|age]   the value cells (text)
 *     svg[data-chart=cpu|mem]        the charts, last 15 minutes (less while the history is
 *                                    shorter, as the caption says); data-points=N points drawn
 *   #conn[data-state=connecting|connected|reconnecting|token|refused]   the connection state (text says it)
 *   #server dd[data-stat=NAME]       figures from /api/status
 *   #token-form                      shown when the server wants a token
 *   #summary                         "N hosts, M stale, K in trouble"
 */
'use strict';

(function () {
  /** A host is stale after this many of its intervals without a report. */
  const STALE_INTERVALS = 3;
  /** The interval assumed for a report without a usable `interval_secs`, seconds. */
  const DEFAULT_INTERVAL_SECS = 10;
  /** `interval_secs` is clamped to this range, seconds. */
  const MIN_INTERVAL_SECS = 0.1;
  const MAX_INTERVAL_SECS = 86400;
  /** CPU use at or over this is trouble, percent. */
  const CPU_ALERT_PERCENT = 90;
  /** A disk this full or fuller is trouble, percent used. */
  const DISK_ALERT_PERCENT = 90;
  /** How much history the charts keep and show, milliseconds. */
  const HISTORY_MS = 15 * 60 * 1000;
  /** The shortest span a chart shows: until a host has this much history, its points
   * do not stretch over the whole width. */
  const MIN_CHART_SPAN_MS = 60 * 1000;
  /** Reports closer together than this share one chart point (the latest values win). */
  const MIN_POINT_GAP_MS = 1000;
  /** Hosts kept at most; past this the one heard from least recently is dropped. */
  const MAX_HOSTS = 1000;
  /** The longest host name accepted, characters. */
  const MAX_HOST_NAME = 255;
  /** Disks looked at per report, and the longest mount point shown. */
  const MAX_DISKS = 256;
  const MAX_MOUNT_SHOWN = 48;
  /** Reconnection backoff: doubles from the first to the cap, milliseconds. */
  const BACKOFF_FIRST_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  /** How often /api/status is read, milliseconds. */
  const STATUS_EVERY_MS = 5000;
  /** Charts slide (old points drop out) every this many one-second ticks. */
  const CHART_SLIDE_TICKS = 5;
  /** The subscribe body's `code`, and the topic the page wants. */
  const SUBSCRIBER_CODE = 'dashboard';
  const HEALTH_CODE = 'host.health';
  /** Where the token is kept for this tab's session. */
  const TOKEN_KEY = 'monitor.dashboard.token';
  const CHART_W = 300;
  const CHART_H = 60;

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $('conn'),
    hosts: $('hosts'),
    summary: $('summary'),
    template: $('host-template'),
    tokenForm: $('token-form'),
    tokenInput: $('token-input'),
    tokenLabel: $('token-label'),
    statusError: $('status-error'),
    ignored: $('ignored'),
    stats: {},
  };
  for (const dd of document.querySelectorAll('#server [data-stat]')) {
    ui.stats[dd.dataset.stat] = dd;
  }

  /** name → host state; insertion order is irrelevant (display order is computed). */
  const hosts = new Map();
  let ignoredReports = 0;
  let droppedHosts = 0;
  let orderDirty = false;
  let orderTimer = null;

  // ---- the token -------------------------------------------------------------------

  let memoryToken = null; // when sessionStorage is unavailable
  function getToken() {
    try {
      const t = window.sessionStorage.getItem(TOKEN_KEY);
      if (t) return t;
    } catch (_) { /* storage disabled */ }
    return memoryToken;
  }
  function setToken(t) {
    memoryToken = t;
    try {
      if (t) window.sessionStorage.setItem(TOKEN_KEY, t);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: kept in memory */ }
  }

  let waitingForToken = false;
  /** Shows the token form (once), with why; stops reconnecting until a token is given. */
  function askToken(why) {
    if (waitingForToken) return; // already asking (the WebSocket and /api/status both tell)
    const had = getToken();
    if (had) setToken(null);
    waitingForToken = true;
    clearReconnect();
    ui.tokenLabel.textContent = had
      ? 'The server refused the token (' + why + '). Token:'
      : 'This server requires a token (' + why + '). Token:';
    ui.tokenForm.hidden = false;
    setConn('token', 'token needed');
    if (ws) {
      const old = ws;
      ws = null;
      old.close();
    }
    if (document.activeElement !== ui.tokenInput) ui.tokenInput.focus();
  }
  ui.tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = ui.tokenInput.value.trim();
    if (!t) return;
    setToken(t);
    ui.tokenInput.value = '';
    ui.tokenForm.hidden = true;
    waitingForToken = false;
    attempt = 0;
    connect();
    refreshStatus();
  });

  // ---- the WebSocket ---------------------------------------------------------------

  let ws = null;
  let acked = false;
  let attempt = 0;
  let reconnectAt = 0;
  let reconnectTimer = null;
  let countdownTimer = null;

  function setConn(state, text) {
    ui.conn.dataset.state = state;
    ui.conn.textContent = text;
  }

  function clearReconnect() {
    if (reconnectTimer !== null) clearTimeout(reconnectTimer);
    if (countdownTimer !== null) clearInterval(countdownTimer);
    reconnectTimer = null;
    countdownTimer = null;
  }

  function wsUrl() {
    const scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
    return scheme + window.location.host + '/ws';
  }

  function connect() {
    clearReconnect();
    if (waitingForToken) return;
    setConn('connecting', attempt > 0 ? 'connecting (attempt ' + (attempt + 1) + ')…' : 'connecting…');
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (_) {
      scheduleReconnect('cannot open a WebSocket');
      return;
    }
    ws = sock;
    acked = false;
    sock.addEventListener('open', () => {
      if (sock !== ws) return;
      const body = { code: SUBSCRIBER_CODE, topics: [HEALTH_CODE] };
      const t = getToken();
      if (t) body.token = t;
      sock.send(JSON.stringify(body));
    });
    sock.addEventListener('message', (ev) => {
      if (sock !== ws || typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        if (acked) countIgnored();
        return;
      }
      if (acked) ingest(msg);
      else onAck(msg);
    });
    sock.addEventListener('close', (ev) => {
      if (sock !== ws) return;
      ws = null;
      acked = false;
      if (waitingForToken) return;
      scheduleReconnect(ev.reason || (ev.code === 1006 ? 'connection lost' : 'closed'));
    });
    // An error is always followed by a close, handled above.
  }

  function onAck(msg) {
    if (msg !== null && typeof msg === 'object' && msg.errCode === 0) {
      acked = true;
      attempt = 0;
      setConn('connected', 'connected');
      return;
    }
    const why = msg !== null && typeof msg === 'object' && typeof msg.msg === 'string'
      ? msg.msg.slice(0, 200)
      : 'refused';
    if (/unauthori[sz]ed|forbidden/i.test(why)) {
      askToken(why);
    } else {
      // The server closes after a refusal; the close schedules the retry.
      setConn('refused', 'refused: ' + why);
    }
  }

  function scheduleReconnect(why) {
    clearReconnect();
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, attempt));
    attempt = Math.min(attempt + 1, 30);
    reconnectAt = Date.now() + delay;
    const show = () => {
      const secs = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
      setConn('reconnecting', why.slice(0, 120) + ': reconnecting in ' + secs + 's…');
    };
    show();
    countdownTimer = setInterval(show, 1000);
    reconnectTimer = setTimeout(connect, delay);
  }

  // ---- reports ---------------------------------------------------------------------

  const finite = (v) => typeof v === 'number' && Number.isFinite(v);
  const nonNegative = (v) => finite(v) && v >= 0;
  const clampPercent = (v) => Math.min(100, Math.max(0, v));

  /** The fields the page uses, checked; `null` for a malformed report. */
  function parseHealth(r) {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) return null;
    if (r.code !== HEALTH_CODE) return null;
    const name = r.host;
    if (typeof name !== 'string' || name.length === 0 || name.length > MAX_HOST_NAME) return null;
    if (!finite(r.cpu_percent) || !nonNegative(r.mem_used) || !nonNegative(r.mem_total)) return null;
    const h = {
      name: name,
      cpu: clampPercent(r.cpu_percent),
      memUsed: r.mem_used,
      memTotal: r.mem_total,
      memPct: r.mem_total > 0 ? clampPercent((r.mem_used / r.mem_total) * 100) : null,
      load: null,
      disk: null,
      uptime: nonNegative(r.uptime_secs) ? r.uptime_secs : null,
      ts: nonNegative(r.ts) ? r.ts : null,
      intervalMs: DEFAULT_INTERVAL_SECS * 1000,
    };
    if (finite(r.interval_secs) && r.interval_secs > 0) {
      h.intervalMs = Math.min(MAX_INTERVAL_SECS, Math.max(MIN_INTERVAL_SECS, r.interval_secs)) * 1000;
    }
    if (Array.isArray(r.load) && r.load.length >= 3 && r.load.slice(0, 3).every(nonNegative)) {
      h.load = r.load.slice(0, 3);
    }
    if (Array.isArray(r.disks)) {
      for (const d of r.disks.slice(0, MAX_DISKS)) {
        if (d === null || typeof d !== 'object') continue;
        if (!nonNegative(d.total) || d.total === 0 || !nonNegative(d.available)) continue;
        const pct = clampPercent(((d.total - d.available) / d.total) * 100);
        if (h.disk === null || pct > h.disk.pct) {
          h.disk = { pct: pct, mount: typeof d.mount === 'string' ? d.mount : '?' };
        }
      }
    }
    return h;
  }

  function countIgnored() {
    ignoredReports += 1;
    renderFooter();
  }

  function ingest(report) {
    const h = parseHealth(report);
    if (h === null) {
      countIgnored();
      return;
    }
    const now = Date.now();
    let host = hosts.get(h.name);
    if (host === undefined) {
      if (hosts.size >= MAX_HOSTS) evictOldest();
      host = newHost(h.name);
      hosts.set(h.name, host);
      orderDirty = true;
    }
    host.last = h;
    host.lastSeen = now;
    host.reports += 1;
    const points = host.points;
    const prev = points.length > 0 ? points[points.length - 1] : null;
    if (prev !== null && now - prev.t < MIN_POINT_GAP_MS) {
      prev.cpu = h.cpu;
      prev.mem = h.memPct;
    } else {
      points.push({ t: now, cpu: h.cpu, mem: h.memPct });
    }
    prune(host, now);
    renderHost(host, now);
    renderCharts(host, now);
    scheduleOrder();
  }

  function newHost(name) {
    const el = ui.template.content.firstElementChild.cloneNode(true);
    el.setAttribute('data-host', name);
    const fields = {};
    for (const f of el.querySelectorAll('[data-field]')) fields[f.dataset.field] = f;
    fields.host.textContent = name;
    fields.host.title = name;
    const charts = {};
    for (const c of el.querySelectorAll('[data-chart]')) {
      const figure = c.closest('figure');
      const caption = figure ? figure.querySelector('figcaption') : null;
      charts[c.dataset.chart] = {
        svg: c,
        line: c.querySelector('polyline'),
        area: c.querySelector('polygon'),
        caption: caption,
        label: caption ? caption.dataset.label || '' : '',
      };
    }
    ui.hosts.appendChild(el);
    return {
      name: name, el: el, fields: fields, charts: charts,
      last: null, lastSeen: 0, reports: 0, points: [],
      stale: false, trouble: false,
    };
  }

  function evictOldest() {
    let oldest = null;
    for (const host of hosts.values()) {
      if (oldest === null || host.lastSeen < oldest.lastSeen) oldest = host;
    }
    if (oldest === null) return;
    oldest.el.remove();
    hosts.delete(oldest.name);
    droppedHosts += 1;
    renderFooter();
  }

  function prune(host, now) {
    const from = now - HISTORY_MS;
    let drop = 0;
    while (drop < host.points.length && host.points[drop].t < from) drop += 1;
    if (drop > 0) host.points.splice(0, drop);
  }

  // ---- rendering -------------------------------------------------------------------

  const UNITS = [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]];
  /** "23.5 GiB". */
  function total(n) {
    const [unit, size] = UNITS.find(([, size]) => n >= size) || UNITS[UNITS.length - 1];
    return (n / size).toFixed(n / size >= 100 ? 0 : 1) + ' ' + unit;
  }
  /** "1.4/23.5 GiB": both figures in the unit of `total`. */
  function usedOfTotal(used, total) {
    const [unit, size] = UNITS.find(([, size]) => total >= size) || UNITS[UNITS.length - 1];
    const digits = total / size >= 100 ? 0 : 1;
    return (used / size).toFixed(digits) + '/' + (total / size).toFixed(digits) + ' ' + unit;
  }
  function duration(secs) {
    secs = Math.floor(secs);
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = secs % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return s === 0 ? m + 'm' : m + 'm ' + s + 's';
    return s + 's';
  }
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  /** The host's figures, state and trouble; `true` when its place in the order may change. */
  function renderHost(host, now) {
    const h = host.last;
    const f = host.fields;
    if (h === null) return false;
    setText(f.cpu, h.cpu.toFixed(1) + ' %');
    f.cpu.classList.toggle('alert', h.cpu >= CPU_ALERT_PERCENT);
    setText(f.mem, (h.memPct === null ? '' : h.memPct.toFixed(0) + ' % of ') +
      total(h.memTotal));
    f.mem.title = usedOfTotal(h.memUsed, h.memTotal) + ' (' + h.memUsed + ' of ' + h.memTotal + ' bytes)';
    setText(f.load, h.load === null ? '–' : h.load.map((v) => v.toFixed(2)).join(' '));
    if (h.disk === null) {
      setText(f.disk, '–');
      f.disk.classList.remove('alert');
    } else {
      const mount = h.disk.mount.length > MAX_MOUNT_SHOWN
        ? h.disk.mount.slice(0, MAX_MOUNT_SHOWN - 1) + '…'
        : h.disk.mount;
      setText(f.disk, h.disk.pct.toFixed(0) + ' % ' + mount);
      f.disk.classList.toggle('alert', h.disk.pct >= DISK_ALERT_PERCENT);
    }
    setText(f.uptime, h.uptime === null ? '–' : duration(h.uptime));
    host.el.setAttribute('data-reports', String(host.reports));
    host.el.setAttribute('data-ts', h.ts === null ? '' : String(h.ts));
    return renderState(host, now);
  }

  /** The age and the stale/trouble state; `true` when the trouble state changed. */
  function renderState(host, now) {
    const h = host.last;
    if (h === null) return false;
    const age = Math.max(0, now - host.lastSeen);
    setText(host.fields.age, duration(age / 1000) + ' ago');
    const stale = age > STALE_INTERVALS * h.intervalMs;
    const hot = h.cpu >= CPU_ALERT_PERCENT;
    const full = h.disk !== null && h.disk.pct >= DISK_ALERT_PERCENT;
    const trouble = stale || hot || full;
    const label = stale ? 'stale'
      : hot ? 'CPU ≥ ' + CPU_ALERT_PERCENT + ' %'
      : full ? 'disk ≥ ' + DISK_ALERT_PERCENT + ' %'
      : 'ok';
    setText(host.fields.state, label);
    if (stale !== host.stale) {
      host.stale = stale;
      host.el.classList.toggle('stale', stale);
    }
    host.el.setAttribute('data-stale', String(stale));
    host.el.setAttribute('data-trouble', String(trouble));
    const changed = trouble !== host.trouble;
    host.trouble = trouble;
    if (changed) orderDirty = true;
    return changed;
  }

  /** The charts, over the last 15 minutes, or less (at least MIN_CHART_SPAN_MS) while the
   * host's history is shorter; the caption says which. */
  function renderCharts(host, now) {
    const oldest = host.points.length > 0 ? host.points[0].t : now;
    const span = Math.min(HISTORY_MS, Math.max(MIN_CHART_SPAN_MS, now - oldest));
    const from = now - span;
    const spanText = span >= HISTORY_MS ? '15 min' : duration(Math.ceil(span / 1000));
    for (const key of ['cpu', 'mem']) {
      const chart = host.charts[key];
      if (chart === undefined) continue;
      if (chart.caption) setText(chart.caption, chart.label + ', last ' + spanText);
      const coords = [];
      for (const p of host.points) {
        const v = p[key];
        if (v === null || p.t < from) continue;
        const x = ((p.t - from) / span) * CHART_W;
        const y = CHART_H - (v / 100) * CHART_H;
        coords.push(x.toFixed(1) + ',' + y.toFixed(1));
      }
      // One point draws nothing: make it a short dash.
      const drawn = coords.length === 1
        ? [(CHART_W - 3).toFixed(1) + ',' + coords[0].split(',')[1], coords[0]]
        : coords;
      chart.line.setAttribute('points', drawn.join(' '));
      // The area under the line, down to the axis.
      const area = drawn.length === 0 ? [] : drawn.concat([
        drawn[drawn.length - 1].split(',')[0] + ',' + CHART_H,
        drawn[0].split(',')[0] + ',' + CHART_H,
      ]);
      if (chart.area) chart.area.setAttribute('points', area.join(' '));
      chart.svg.setAttribute('data-points', String(coords.length));
    }
  }

  function compareHosts(a, b) {
    if (a.trouble !== b.trouble) return a.trouble ? -1 : 1;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  }

  function scheduleOrder() {
    if (orderTimer !== null) return;
    orderTimer = setTimeout(() => {
      orderTimer = null;
      applyOrder();
    }, 50);
  }

  function applyOrder() {
    if (orderDirty) {
      orderDirty = false;
      const sorted = Array.from(hosts.values()).sort(compareHosts);
      const current = ui.hosts.children;
      let same = current.length === sorted.length;
      for (let i = 0; same && i < sorted.length; i += 1) same = current[i] === sorted[i].el;
      if (!same) {
        const frag = document.createDocumentFragment();
        for (const host of sorted) frag.appendChild(host.el);
        ui.hosts.appendChild(frag);
      }
    }
    renderSummary();
  }

  function renderSummary() {
    let stale = 0;
    let trouble = 0;
    for (const host of hosts.values()) {
      if (host.stale) stale += 1;
      if (host.trouble) trouble += 1;
    }
    if (hosts.size === 0) {
      setText(ui.summary, 'waiting for ' + HEALTH_CODE + ' reports…');
      return;
    }
    setText(ui.summary, hosts.size + (hosts.size === 1 ? ' host' : ' hosts') + ', ' +
      stale + ' stale, ' + trouble + ' in trouble');
  }

  function renderFooter() {
    const parts = [];
    if (ignoredReports > 0) parts.push(ignoredReports + ' malformed reports ignored');
    if (droppedHosts > 0) parts.push(droppedHosts + ' hosts dropped (at most ' + MAX_HOSTS + ' kept)');
    setText(ui.ignored, parts.join('; '));
  }

  let ticks = 0;
  function tick() {
    const now = Date.now();
    ticks += 1;
    const slide = ticks % CHART_SLIDE_TICKS === 0;
    for (const host of hosts.values()) {
      renderState(host, now);
      if (slide) {
        prune(host, now);
        renderCharts(host, now);
      }
    }
    applyOrder();
  }

  // ---- /api/status -----------------------------------------------------------------

  const num = (v) => (nonNegative(v) ? v : null);
  function showStat(name, value, alarm) {
    const dd = ui.stats[name];
    if (dd === undefined) return;
    setText(dd, value === null ? '–' : String(value));
    dd.classList.toggle('nonzero', Boolean(alarm) && value !== null && value > 0);
  }
  function showStatusError(text) {
    ui.statusError.hidden = text === '';
    setText(ui.statusError, text);
  }

  let statusTimer = null;
  async function refreshStatus() {
    if (statusTimer !== null) clearTimeout(statusTimer);
    statusTimer = setTimeout(refreshStatus, STATUS_EVERY_MS);
    if (waitingForToken) return;
    const headers = {};
    const t = getToken();
    if (t) headers.Authorization = 'Bearer ' + t;
    let body;
    try {
      const r = await fetch('/api/status', { headers: headers, cache: 'no-store' });
      if (r.status === 401) {
        askToken('unauthorized');
        return;
      }
      if (!r.ok) {
        showStatusError('server status: HTTP ' + r.status);
        return;
      }
      body = await r.json();
    } catch (_) {
      showStatusError('server status: unreachable');
      return;
    }
    // The reply envelope, or the bare object.
    if (body !== null && typeof body === 'object' && 'errCode' in body) body = body.data;
    if (body === null || typeof body !== 'object') {
      showStatusError('server status: unexpected answer');
      return;
    }
    showStatusError('');
    const conns = body.connections !== null && typeof body.connections === 'object' ? body.connections : {};
    const counters = body.counters !== null && typeof body.counters === 'object' ? body.counters : {};
    let reporters = null;
    for (const [role, n] of Object.entries(conns)) {
      if (role.includes('reporter') && nonNegative(n)) reporters = (reporters || 0) + n;
    }
    showStat('open', num(conns.open));
    showStat('reporters', reporters === null && 'open' in conns ? 0 : reporters);
    showStat('subscribers', num(body.subscribers));
    showStat('reports', num(counters.reports));
    showStat('pushes_dropped', num(counters.pushes_dropped), true);
    showStat('slow_consumers_disconnected', num(counters.slow_consumers_disconnected), true);
    showStat('connections_refused', num(counters.connections_refused), true);
  }

  // ---- start -----------------------------------------------------------------------

  connect();
  refreshStatus();
  setInterval(tick, 1000);
})();
