// Devices: every device perch has heard of (/api/v1/devices, every 10 s)
// with its status, battery, signal and last values with units — one PromQL
// instant query per refresh for the rows shown — filtered by text and
// status (?q=, ?status=). /devices/<id> (each segment of the id encoded, its
// slashes kept): the device's facts, its topics (links to the Explorer), a
// link to Search, and a chart per metric from one range query.

import {
  api, h, field, every, fmtNum, fmtUnit, fmtAgo, fmtTime, fmtInterval, showError,
  escapeLabel, regexQuote, deviceHref, deviceStatusText, parseDuration, seriesName,
} from '../lib.js';
import { chart } from '../chart.js';

const REFRESH_MS = 10000;
const CHART_REFRESH_MS = 30000;
/** Rows shown before "Show all". */
const ROWS = 100;
/** Values shown per row before "+N more". */
const CHIPS = 8;
/** Charts drawn before "Show all charts". */
const CHARTS = 24;
const RANGES = ['1h', '6h', '24h', '7d', '30d'];

export default async function (view, ctx) {
  if (ctx.params.length) return devicePage(view, ctx, ctx.params.join('/'));
  return listPage(view, ctx);
}

function statusBadge(d) {
  const word = d.online ? 'online' : 'offline';
  return h('span', { class: `badge ${word}`, title: `${word}: ${deviceStatusText(d)}` }, word);
}

function signalText(s) {
  if (!s) return '';
  if (s.kind === 'rssi') return `${fmtNum(s.value)} dBm`;
  if (s.kind === 'linkquality') return `${fmtNum(s.value)} LQI`;
  return `${fmtNum(s.value)} %`;
}

const SIGNAL_TITLE = { rssi: 'Received signal strength (dBm)', linkquality: 'Zigbee link quality (0–255)', percent: 'Wi-Fi quality (%)' };

function batteryEl(b) {
  if (b === null || b === undefined) return '';
  const cls = b <= 15 ? 'bad' : b <= 30 ? 'warn' : '';
  return h('span', { class: cls, title: b <= 30 ? 'Battery low' : null }, fmtUnit(b, '%'));
}

function matchesText(d, words) {
  const hay = [d.id, d.name, d.manufacturer, d.model, d.family].filter(Boolean).join('\n').toLowerCase();
  return words.every(w => hay.includes(w));
}

/** Labels that tell a metric's series of one device apart (not its name or device). */
function extraLabels(metric) {
  const { __name__: _n, device: _d, topic: _t, ...rest } = metric || {};
  return rest;
}

// ---------------------------------------------------------------- the list

async function listPage(view, ctx) {
  const q = ctx.query;
  const search = h('input', { type: 'search', id: 'devices-q', value: q.get('q') || '', placeholder: 'name, id, model, maker', spellcheck: 'false', autocomplete: 'off' });
  const status = h('select', { id: 'devices-status' },
    h('option', { value: 'all' }, 'All'), h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'));
  status.value = ['online', 'offline'].includes(q.get('status')) ? q.get('status') : 'all';
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading…');
  const errorBox = h('div');
  const body = h('tbody');
  const table = h('table', { class: 'devices' },
    h('thead', null, h('tr', null,
      h('th', null, 'status'), h('th', null, 'device'), h('th', null, 'family'), h('th', null, 'model'),
      h('th', null, 'last seen'), h('th', { class: 'num' }, 'battery'), h('th', { class: 'num' }, 'signal'),
      h('th', null, 'last values'))),
    body);
  const showAll = h('button', { type: 'button', hidden: true, onclick: () => { limit = Infinity; render(); loadValues(); } });
  const box = h('div', { class: 'card devices-box', hidden: true }, table, showAll);

  let devices = null;       // the registry's answer
  let values = new Map();   // device id → [{metric, value}]
  let valuesFor = new Set(); // ids the values were asked for
  let limit = ROWS;
  let valuesTimer = null;

  const visible = () => {
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    return (devices || []).filter(d =>
      (status.value === 'all' || d.online === (status.value === 'online')) && matchesText(d, words));
  };

  function syncUrl() {
    const p = new URLSearchParams();
    if (search.value.trim()) p.set('q', search.value.trim());
    if (status.value !== 'all') p.set('status', status.value);
    const u = '/devices' + (p.toString() ? '?' + p : '');
    if (location.pathname === '/devices' && location.pathname + location.search !== u) history.replaceState(null, '', u);
  }

  function valueChips(d) {
    const rows = values.get(d.id);
    if (!rows) return valuesFor.has(d.id) ? h('span', { class: 'muted' }, 'none in the last hour') : h('span', { class: 'muted' }, '…');
    if (!rows.length) return h('span', { class: 'muted' }, 'none in the last hour');
    const chips = rows.slice(0, CHIPS).map(r => {
      const name = r.metric.__name__ || seriesName(r.metric);
      const extra = Object.entries(extraLabels(r.metric)).map(([k, v]) => `${k}=${v}`).join(' ');
      const unit = (d.metrics || {})[r.metric.__name__] || null;
      return h('span', { class: 'chip', title: seriesName(r.metric), dataset: { metric: name, value: r.value, unit: unit || '' } },
        h('span', { class: 'chip-name' }, extra ? `${name} (${extra})` : name), ' ',
        h('b', null, fmtUnit(r.value, unit)));
    });
    if (rows.length > CHIPS) chips.push(h('a', { href: deviceHref(d.id), class: 'chip more' }, `+${rows.length - CHIPS} more`));
    return h('span', { class: 'chips' }, chips);
  }

  function row(d) {
    const named = d.name && d.name !== d.id;
    return h('tr', { dataset: { device: d.id } },
      h('td', { class: 'status' }, statusBadge(d)),
      h('td', { class: 'dev' },
        h('a', { href: deviceHref(d.id) }, named ? d.name : d.id),
        named ? h('div', { class: 'muted mono small' }, d.id) : null),
      h('td', { class: 'family', dataset: { label: 'family' } }, d.family || ''),
      h('td', { class: 'model', dataset: { label: 'model' } }, d.model || '',
        d.manufacturer ? h('div', { class: 'muted small' }, d.manufacturer) : null),
      h('td', { class: 'seen', dataset: { label: 'seen' } }, h('time', { datetime: new Date(d.last_seen_ms).toISOString(), title: fmtTime(d.last_seen_ms) }, fmtAgo(d.last_seen_ms))),
      h('td', { class: 'num battery', dataset: { label: 'battery' } }, batteryEl(d.battery)),
      h('td', { class: 'num signal', dataset: { label: 'signal' }, title: d.signal ? SIGNAL_TITLE[d.signal.kind] : null }, signalText(d.signal)),
      h('td', { class: 'values' }, valueChips(d)));
  }

  function render() {
    if (!devices) return;
    const shown = visible();
    const rows = shown.slice(0, limit);
    const online = devices.filter(d => d.online).length;
    summary.textContent = devices.length
      ? `${devices.length} device${devices.length === 1 ? '' : 's'}, ${online} online` +
        (shown.length !== devices.length ? `; ${shown.length} shown` : '')
      : '';
    box.hidden = !rows.length;
    showAll.hidden = shown.length <= rows.length;
    showAll.textContent = `Show all ${shown.length}`;
    // Keep the table still while someone is moving through it with the keyboard.
    if (!table.contains(document.activeElement)) body.replaceChildren(...rows.map(row));
    if (!devices.length) {
      errorBox.replaceChildren(h('p', { class: 'muted' }, 'No devices yet. A device appears here once perch reads a message of a known firmware (Tasmota, Shelly, zigbee2mqtt, ESPHome, Home Assistant discovery, …) or a series with a ', h('code', null, 'device'), ' label. ', h('a', { href: '/connect', class: 'connect-link' }, 'Connect a device'), '.'));
    } else if (!rows.length) {
      errorBox.replaceChildren(h('p', { class: 'muted' }, 'No device matches.'));
    } else if (!errorBox.querySelector('[role="alert"]')) {
      errorBox.replaceChildren();
    }
  }

  /** Last values of the rows shown: one instant query. */
  async function loadValues() {
    clearTimeout(valuesTimer);
    if (!devices || !devices.length) return;
    const rows = visible().slice(0, limit);
    if (!rows.length) return;
    const selector = rows.length === devices.length
      ? 'device!=""'
      : `device=~"${rows.map(d => regexQuote(d.id)).join('|')}"`;
    const query = `last_over_time({${selector},__name__!~"perch_.*"}[1h])`;
    const d = await api('/api/v1/query', { method: 'POST', body: new URLSearchParams({ query }).toString(),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, signal: ctx.signal });
    const next = new Map();
    for (const r of d.resultType === 'vector' ? d.result : []) {
      const id = r.metric.device;
      if (!next.has(id)) next.set(id, []);
      next.get(id).push({ metric: r.metric, value: Number(r.value[1]) });
    }
    const byDevice = new Map(devices.map(x => [x.id, x]));
    for (const [id, list] of next) {
      // In the order the device lists its metrics.
      const order = Object.keys((byDevice.get(id) || {}).metrics || {});
      list.sort((a, b) => {
        const ia = order.indexOf(a.metric.__name__), ib = order.indexOf(b.metric.__name__);
        return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || seriesName(a.metric).localeCompare(seriesName(b.metric));
      });
    }
    values = next;
    valuesFor = new Set(rows.map(x => x.id));
    render();
  }

  async function refresh() {
    try {
      devices = await api('/api/v1/devices', { signal: ctx.signal });
      errorBox.replaceChildren();
    } catch (e) {
      if (e.name === 'AbortError') return;
      showError(errorBox, e);
      summary.textContent = '';
      return;
    }
    render();
    try { await loadValues(); } catch (e) { if (e.name !== 'AbortError') showError(errorBox, new Error('Last values: ' + e.message)); }
  }

  // A changed filter shows at once; the values of rows not asked for yet follow.
  const onFilter = () => {
    limit = ROWS;
    syncUrl();
    render();
    clearTimeout(valuesTimer);
    if (visible().slice(0, limit).some(d => !valuesFor.has(d.id))) {
      valuesTimer = setTimeout(() => loadValues().catch(e => { if (e.name !== 'AbortError') console.warn(e); }), 400);
    }
  };
  search.addEventListener('input', onFilter);
  status.addEventListener('change', onFilter);
  ctx.cleanup(() => clearTimeout(valuesTimer));

  view.append(h('h1', null, 'Devices'),
    h('form', { class: 'card row', role: 'search', onsubmit: e => e.preventDefault() },
      field('Search devices', search, { class: 'grow' }), field('Status', status)),
    summary, errorBox,
    box);
  ctx.cleanup(every(REFRESH_MS, refresh));
}

// ---------------------------------------------------------------- one device

async function devicePage(view, ctx, id) {
  const q = ctx.query;
  let range = q.get('from') && q.get('to')
    ? { from: Number(q.get('from')), to: Number(q.get('to')) }
    : { preset: RANGES.includes(q.get('range')) ? q.get('range') : '6h' };

  const title = h('h1', null, id);
  const badge = h('span');
  const statusLine = h('p', { class: 'muted', 'aria-live': 'polite' });
  const facts = h('dl', { class: 'kv' });
  const topics = h('ul', { class: 'links' });
  const errorBox = h('div');
  const rangeSelect = h('select', { id: 'device-range' },
    RANGES.map(r => h('option', { value: r }, `Last ${r}`)), h('option', { value: 'zoomed' }, 'Zoomed'));
  const chartsBox = h('div', { class: 'grid wide charts' });
  const chartsNote = h('p', { class: 'muted', 'aria-live': 'polite' });
  const moreCharts = h('button', { type: 'button', hidden: true, onclick: () => { chartLimit = Infinity; drawCharts(); } });
  let device = null;
  let destroyers = [];
  let chartLimit = CHARTS;
  let chartAbort = null;

  const showRange = () => { rangeSelect.value = range.preset || 'zoomed'; };
  rangeSelect.addEventListener('change', () => {
    if (rangeSelect.value === 'zoomed') return;
    range = { preset: rangeSelect.value };
    syncUrl();
    drawCharts();
  });

  function syncUrl() {
    const p = new URLSearchParams();
    if (range.preset) p.set('range', range.preset);
    else { p.set('from', Math.round(range.from)); p.set('to', Math.round(range.to)); }
    const u = deviceHref(id) + '?' + p;
    if (location.pathname + location.search !== u) history.replaceState(null, '', u);
  }

  function renderFacts(d) {
    const named = d.name && d.name !== d.id;
    title.textContent = named ? d.name : d.id;
    document.title = `${title.textContent} · Devices · perch`;
    badge.replaceChildren(statusBadge(d));
    statusLine.textContent = `${d.online ? 'Online' : 'Offline'}: ${deviceStatusText(d)}; last seen ${fmtAgo(d.last_seen_ms)}.`;
    const kv = (k, v, cls) => (v === undefined || v === null || v === '' ? [] : [h('dt', null, k), h('dd', { class: cls }, v)]);
    facts.replaceChildren(
      ...kv('id', d.id, 'mono'),
      ...kv('name', named ? d.name : null),
      ...kv('family', d.family),
      ...kv('manufacturer', d.manufacturer),
      ...kv('model', d.model),
      ...kv('firmware', d.firmware),
      ...kv('battery', d.battery !== undefined && d.battery !== null ? batteryEl(d.battery) : null),
      ...kv('signal', d.signal ? `${signalText(d.signal)} (${d.signal.kind})` : null),
      ...kv('last seen', `${fmtAgo(d.last_seen_ms)} (${fmtTime(d.last_seen_ms)})`),
      ...kv('first seen', fmtTime(d.first_seen_ms)),
      ...kv('usual interval', d.interval_ms ? fmtInterval(d.interval_ms) : null),
      ...kv('messages', fmtNum(d.messages)),
      ...kv('series', Object.keys(d.metrics || {}).length ? Object.entries(d.metrics).map(([m, u]) => (u ? `${m} (${u})` : m)).join(', ') : null));
    const searchQ = `"${d.id.replace(/"/g, ' ')}"`;
    // Links stay put while one has the keyboard focus.
    if (topics.contains(document.activeElement)) return;
    topics.replaceChildren(
      ...(d.topics || []).map(t => h('li', null, h('a', { href: '/explorer?topic=' + encodeURIComponent(t), class: 'mono', title: `Open ${t} in the Explorer` }, t))),
      h('li', null, h('a', { href: '/search?q=' + encodeURIComponent(searchQ) }, `Search messages for ${searchQ}`)));
  }

  async function loadDevice() {
    try {
      const d = await api('/api/v1/devices/' + id.split('/').map(encodeURIComponent).join('/'), { signal: ctx.signal });
      errorBox.replaceChildren();
      const first = !device;
      device = d;
      renderFacts(d);
      if (first) drawCharts();
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 404) {
        statusLine.textContent = '';
        errorBox.replaceChildren(h('p', { class: 'notice error', role: 'alert' }, `No device ${id}. `,
          h('a', { href: '/devices' }, 'All devices'), '.'));
      } else showError(errorBox, e);
    }
  }

  /** Which series of a metric is which: the labels that differ between them. */
  function labelsOf(name, group) {
    if (group.length === 1) return [name];
    const keys = new Set(group.flatMap(r => Object.keys(r.metric)));
    const differ = [...keys].filter(k => k !== '__name__' && k !== 'device' && new Set(group.map(r => r.metric[k])).size > 1);
    return group.map(r => differ.map(k => `${k}="${escapeLabel(r.metric[k] ?? '')}"`).join(', ') || name);
  }

  async function drawCharts(fromTimer = false) {
    if (!device) return;
    if (chartAbort) chartAbort.abort();
    const ac = new AbortController();
    chartAbort = ac;
    ctx.signal.addEventListener('abort', () => ac.abort(), { once: true });
    const end = range.preset ? Date.now() : range.to;
    const span = range.preset ? parseDuration(range.preset) : range.to - range.from;
    const step = Math.max(1, Math.ceil(span / 1000 / 300));
    // Evaluated at end, end - step, …: the last point is now, not up to a
    // step before it.
    const start = end - Math.floor(span / 1000 / step) * step * 1000;
    const query = `{device="${escapeLabel(id)}"}`;
    let result;
    try {
      const d = await api(`/api/v1/query_range?query=${encodeURIComponent(query)}&start=${start / 1000}&end=${end / 1000}&step=${step}`, { signal: ac.signal });
      result = d.resultType === 'matrix' ? d.result : [];
    } catch (e) {
      if (e.name !== 'AbortError') showError(chartsNote, e);
      return;
    }
    if (ac !== chartAbort) return;
    // A refresh waits while someone is on a chart's link with the keyboard.
    if (fromTimer && chartsBox.contains(document.activeElement)) return;
    // One chart per metric: the device's own, in its order, then the rest
    // (perch_device_up: 1 online, 0 offline).
    const groups = new Map();
    for (const r of result) {
      const name = r.metric.__name__ || '';
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(r);
    }
    const own = Object.keys(device.metrics || {});
    const names = [...groups.keys()].sort((a, b) => {
      const ia = own.indexOf(a), ib = own.indexOf(b);
      return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || a.localeCompare(b);
    });
    const shown = names.slice(0, chartLimit);
    for (const destroy of destroyers) destroy();
    destroyers = [];
    chartsNote.textContent = names.length ? '' : 'No samples in this range.';
    moreCharts.hidden = shown.length === names.length;
    moreCharts.textContent = `Show all ${names.length} charts`;
    const sections = shown.map(name => {
      const unit = (device.metrics || {})[name] || null;
      const group = groups.get(name);
      const labels = labelsOf(name, group);
      const times = new Set();
      for (const r of group) for (const [t] of r.values) times.add(t);
      const xs = [...times].sort((a, b) => a - b);
      const series = group.map((r, i) => {
        const m = new Map(r.values.map(([t, v]) => [t, Number.isFinite(Number(v)) ? Number(v) : null]));
        return { label: labels[i], unit, values: xs.map(t => (m.has(t) ? m.get(t) : null)) };
      });
      const box = h('div');
      const section = h('section', { class: 'card panel', 'aria-label': `Chart of ${name}`, dataset: { metric: name } },
        h('div', { class: 'panel-head' }, h('h3', { class: 'mono' }, name, unit ? h('span', { class: 'muted' }, ` (${unit})`) : null),
          h('a', { href: '/graph?' + new URLSearchParams({ q: `${name}{device="${escapeLabel(id)}"}`, range: range.preset || '6h' }), title: `Open ${name} in Metrics` }, 'Open in Metrics')),
        name === 'perch_device_up' ? h('p', { class: 'muted small' }, '1 while online, 0 while offline') : null,
        box);
      return { section, box, xs, series };
    });
    chartsBox.replaceChildren(...sections.map(s => s.section));
    for (const s of sections) {
      try {
        const c = await chart(s.box, {
          xs: s.xs, series: s.series, height: 200, xRange: [start / 1000, end / 1000], spanGaps: true,
          onSelect: (from, to) => { range = { from, to }; showRange(); syncUrl(); drawCharts(); },
        });
        if (ac !== chartAbort || ctx.signal.aborted) { c.destroy(); return; }
        destroyers.push(() => c.destroy());
      } catch (e) {
        showError(s.box, e);
      }
    }
  }

  ctx.cleanup(() => { if (chartAbort) chartAbort.abort(); for (const destroy of destroyers) destroy(); });
  showRange();
  view.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/devices' }, 'Devices'), ' / '),
    h('div', { class: 'panel-head title' }, title, badge),
    statusLine, errorBox,
    h('div', { class: 'device-top' },
      h('section', { class: 'card' }, h('h2', null, 'About'), facts),
      h('section', { class: 'card' }, h('h2', null, 'Topics and messages'), topics)),
    h('div', { class: 'row center' }, h('h2', { class: 'grow' }, 'Charts'), field('Time range', rangeSelect)),
    chartsNote, chartsBox, moreCharts);
  ctx.cleanup(every(REFRESH_MS, loadDevice));
  // Charts of a range that ends now move along; a zoomed range stays.
  let lastCharts = Date.now();
  ctx.cleanup(every(5000, () => {
    if (!range.preset || document.hidden || Date.now() - lastCharts < CHART_REFRESH_MS) return;
    lastCharts = Date.now();
    return drawCharts(true);
  }));
}
