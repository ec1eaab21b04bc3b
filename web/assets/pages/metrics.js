// Metrics: a series browser, PromQL panels charted with uPlot, time ranges
// (presets, relative or absolute custom ranges typed as in Grafana, drag to
// zoom, zoom out), auto-refresh, and dashboards saved on the server
// (/api/v1/dashboards). The URL carries what is shown:
//   /graph?q=QUERY&q=QUERY&range=1h               (ad hoc; a preset)
//   /graph?q=QUERY&legend={{device}}&unit=°C&from=now-10m&to=now
//   /graph?dashboard=NAME&from=1714557600000&to=1714561200000
//   …&refresh=off | &refresh=30                    (auto-refresh; absent: auto)
// (/graph as in Prometheus' UI: /metrics is perch's own scrape endpoint.)
// `legend` and `unit` are given per query, in the order of the `q`s.
// Each query may have a legend template (`{{device}} {{topic}}`, as in
// Grafana) and a unit; without them a series is named by its metric and
// the labels that differ between the shown series, and its unit comes from
// /api/v1/metadata (what the devices say) or its name (`…_bytes`).
// Firing alerts (/api/v1/alerts/history) shade the charts where they fired:
// those of the charted devices and those of no device.

import { api, h, field, notify, showError, isAdmin, seriesName, metricUnits, copyText } from '../lib.js';
import { chart, alignMatrices, legendLabels, fmtValue, normUnit, unitFromName, breakable, COMMON_UNITS } from '../chart.js';

const PRESETS = [
  ['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['30m', 'Last 30 minutes'], ['1h', 'Last 1 hour'],
  ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'],
];
const PRESET_KEYS = PRESETS.map(([k]) => k);
const REFRESH = [['auto', 'Auto'], ['0', 'Off'], ['5', '5 s'], ['10', '10 s'], ['30', '30 s'], ['60', '1 min'], ['300', '5 min'], ['900', '15 min']];
const KINDS = ['line', 'stat', 'camera'];
const DEFAULT_RANGE = { from: 'now-1h', to: 'now' };
/** Series perch keeps about itself, listed apart from the user's. */
const OWN = /^perch_/;

const UNIT_MS = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3, y: 365 * 86400e3 };

function newPanel(queries = ['']) {
  return { title: '', kind: 'line', queries, legends: queries.map(() => ''), units: queries.map(() => ''), camera: '' };
}

/** A stored time: seconds (older or hand-written documents) become ms. */
function normTime(t, fallback) {
  if (t === undefined || t === null || t === '') return fallback;
  const s = String(t).trim();
  if (/^\d+(\.\d+)?$/.test(s)) {
    const n = Number(s);
    return String(Math.round(n < 1e11 ? n * 1000 : n));
  }
  return s;
}

function startOf(d, unit, end) {
  const x = new Date(d);
  switch (unit) {
    case 'y': x.setMonth(0, 1); x.setHours(0, 0, 0, 0); if (end) x.setFullYear(x.getFullYear() + 1); break;
    case 'M': x.setDate(1); x.setHours(0, 0, 0, 0); if (end) x.setMonth(x.getMonth() + 1); break;
    case 'w': x.setDate(x.getDate() - ((x.getDay() + 6) % 7)); x.setHours(0, 0, 0, 0); if (end) x.setDate(x.getDate() + 7); break;
    case 'd': x.setHours(0, 0, 0, 0); if (end) x.setDate(x.getDate() + 1); break;
    case 'h': x.setMinutes(0, 0, 0); if (end) x.setHours(x.getHours() + 1); break;
    case 'm': x.setSeconds(0, 0); if (end) x.setMinutes(x.getMinutes() + 1); break;
    case 's': x.setMilliseconds(0); if (end) x.setSeconds(x.getSeconds() + 1); break;
    default: break;
  }
  return end ? x.getTime() - 1 : x.getTime();
}

/**
 * A time as Grafana takes it: `now`, `now-10m`, `now-1d/d` (rounded to the
 * day: its start for a range's start, its end for a range's end), epoch ms
 * (or s), or a date (`2024-05-01 10:00`) → epoch ms.
 */
export function resolveExpr(text, now = Date.now(), isEnd = false) {
  const t = String(text ?? '').trim();
  const m = /^now((?:\s*[+-]\s*\d+\s*(?:ms|s|m|h|d|w|M|y))*)\s*(?:\/\s*([smhdwMy]))?$/.exec(t);
  if (m) {
    const d = new Date(now);
    for (const [, sign, n, unit] of m[1].matchAll(/([+-])\s*(\d+)\s*(ms|s|m|h|d|w|M|y)/g)) {
      const k = (sign === '-' ? -1 : 1) * Number(n);
      if (unit === 'M') d.setMonth(d.getMonth() + k);
      else if (unit === 'y') d.setFullYear(d.getFullYear() + k);
      else d.setTime(d.getTime() + k * UNIT_MS[unit]);
    }
    return m[2] ? startOf(d, m[2], isEnd) : d.getTime();
  }
  if (/^\d+(\.\d+)?$/.test(t)) { const n = Number(t); return n < 1e11 ? n * 1000 : n; }
  const parsed = Date.parse(t.replace(/^(\d{4}-\d\d-\d\d) (\d)/, '$1T$2'));
  if (!Number.isNaN(parsed)) return parsed;
  throw new Error(`not a time: ${JSON.stringify(t)} (try now-10m, now, or 2024-05-01 10:00)`);
}

const isRelative = t => /^now/.test(String(t).trim());
/** A range that ends now moves with the clock. */
const isLive = range => /^now\s*(\/\s*[smhdwMy])?$/.test(String(range.to).trim());

/** 7200000 → "2h" (the largest unit that divides it). */
function durText(ms) {
  for (const u of ['d', 'h', 'm', 's']) if (ms >= UNIT_MS[u] && ms % UNIT_MS[u] === 0) return `${ms / UNIT_MS[u]}${u}`;
  return `${Math.max(1, Math.round(ms / 1000))}s`;
}

/** 2024-05-01 10:00:00, local time. */
function localText(ms) {
  const d = new Date(ms);
  const p = n => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The auto-refresh interval of a live range: 10 s up to 1 h, 30 s up to a day, then 1 min. */
function autoRefresh(spanMs) {
  if (spanMs <= 3600e3) return 10;
  if (spanMs <= 86400e3) return 30;
  return 60;
}

function secondsText(s) {
  return s >= 60 && s % 60 === 0 ? `${s / 60} min` : `${s} s`;
}

/**
 * The unit of an expression's series, which have no name: the one unit of
 * the metrics it reads, unless a function or an operator changes it.
 */
function queryUnit(q, units) {
  const text = String(q).replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""').replace(/\{[^}]*\}/g, '').replace(/\[[^\]]*\]/g, '');
  if (/\b(rate|irate|increase|delta|idelta|deriv|count|count_over_time|changes|resets|predict_linear|absent|absent_over_time|histogram_quantile|timestamp|stddev|stdvar|count_values|group)\s*\(/.test(text)) return null;
  if (/[*/^%]|\b(and|or|unless)\b/.test(text.replace(/\bby\s*\([^)]*\)|\bwithout\s*\([^)]*\)/g, ''))) return null;
  const found = new Set();
  for (const name of text.match(/[A-Za-z_:][A-Za-z0-9_:]*/g) || []) {
    const u = units.get(name) || unitFromName(name);
    if (u) found.add(normUnit(u));
  }
  return found.size === 1 ? [...found][0] : null;
}

/**
 * The alerts' pending and firing spans over a range; none when the rules
 * are not running. Never rejects: it is asked beside the chart's queries.
 */
async function alertEpisodes(start, end) {
  // The panels of a dashboard refresh together: one request serves them.
  const key = `${start}-${end}`;
  if (!episodesAsked.has(key)) {
    // Not aborted with the panel that asked first: the others share it.
    episodesAsked.set(key, api(`/api/v1/alerts/history?start=${start / 1000}&end=${end / 1000}`).catch(() => []));
    setTimeout(() => episodesAsked.delete(key), 5000);
  }
  return episodesAsked.get(key);
}
const episodesAsked = new Map();

/** Firing alerts as chart bands: those of the charted devices, and those of no device. */
function alertBands(episodes, series) {
  const devices = new Set(series.map(s => s.metric && s.metric.device).filter(Boolean));
  return (episodes || [])
    .filter(e => e.state === 'firing' && (!devices.size || !e.labels.device || devices.has(e.labels.device)))
    .map(e => ({
      from: e.startMs / 1000, to: e.endMs / 1000, state: e.state, open: e.open,
      label: [e.labels.alertname].concat(Object.entries(e.labels).filter(([k]) => k !== 'alertname').map(([k, v]) => `${k}=${v}`)).join(' '),
    }));
}

export default async function (view, ctx) {
  const admin = isAdmin();
  let dash = { name: '', range: { ...DEFAULT_RANGE }, refresh: 'auto', panels: [newPanel()] };
  let savedName = '';   // the dashboard the page shows, if saved
  let dirty = false;
  let cameras = [];
  let refreshTimer = null;
  let lastRun = 0;
  const panelViews = [];  // {panel, el, destroy}
  // Units by metric name, asked once per visit (a failure means no units).
  const unitsOf = metricUnits();

  // ---- URL → state ----
  const q = ctx.query;
  const rangeFromUrl = () => {
    const r = q.get('range');
    if (r && /^\d+(ms|s|m|h|d|w|y)$/.test(r)) return { from: 'now-' + r, to: 'now' };
    if (q.get('from')) return { from: normTime(q.get('from')), to: normTime(q.get('to'), 'now') };
    return null;
  };
  if (q.get('dashboard')) {
    try {
      const d = await api('/api/v1/dashboards/' + encodeURIComponent(q.get('dashboard')), { signal: ctx.signal });
      dash = normalise(d, q.get('dashboard'));
      savedName = dash.name;
    } catch (e) {
      if (e.name === 'AbortError') return;
      notify(`Dashboard ${q.get('dashboard')}: ${e.message}`, 'error');
    }
  } else if (q.getAll('q').length) {
    const queries = q.getAll('q');
    const p = newPanel(queries);
    p.legends = queries.map((_, i) => q.getAll('legend')[i] || '');
    p.units = queries.map((_, i) => q.getAll('unit')[i] || '');
    dash.panels = [p];
  }
  dash.range = rangeFromUrl() || dash.range;
  if (q.get('refresh')) dash.refresh = parseRefresh(q.get('refresh'));

  // ---- toolbar ----
  const dashSelect = h('select', { id: 'dash-select' });
  const nameInput = h('input', { id: 'dash-name', value: dash.name, placeholder: 'e.g. greenhouse', size: 14 });
  const saveButton = h('button', { type: 'button', class: 'primary', onclick: save }, 'Save dashboard');
  const deleteButton = h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete dashboard');
  const rangeSelect = h('select', { id: 'range' },
    PRESETS.map(([v, t]) => h('option', { value: v }, t)), h('option', { value: 'custom' }, 'Custom range'));
  const fromInput = h('input', { id: 'range-from', size: 19, spellcheck: 'false', autocomplete: 'off', placeholder: 'now-10m' });
  const toInput = h('input', { id: 'range-to', size: 19, spellcheck: 'false', autocomplete: 'off', placeholder: 'now' });
  const customBox = h('form', { class: 'row range-custom', onsubmit: e => { e.preventDefault(); applyCustom(); } },
    field('From', fromInput), field('To', toInput),
    h('button', { type: 'submit' }, 'Apply range'));
  const refreshSelect = h('select', { id: 'refresh' }, REFRESH.map(([s, t]) => h('option', { value: s }, t)));
  const refreshState = h('span', { class: 'muted small', id: 'refresh-state', 'aria-live': 'polite' });

  dashSelect.addEventListener('change', async () => {
    const name = dashSelect.value;
    if (!name) { dash = { ...dash, name: '', panels: [newPanel()] }; savedName = ''; dirty = false; nameInput.value = ''; renderPanels(); return; }
    try {
      const d = await api('/api/v1/dashboards/' + encodeURIComponent(name), { signal: ctx.signal });
      dash = normalise(d, name);
      savedName = name; dirty = false; nameInput.value = name;
      showRange(); showRefresh();
      renderPanels();
      scheduleRefresh();
    } catch (e) { notify(e.message, 'error'); }
  });
  rangeSelect.addEventListener('change', () => {
    if (rangeSelect.value === 'custom') {
      customBox.hidden = false;
      showCustom();
      fromInput.focus();
      fromInput.select();
      return;
    }
    setRange({ from: 'now-' + rangeSelect.value, to: 'now' });
  });
  refreshSelect.addEventListener('change', () => {
    dash.refresh = parseRefresh(refreshSelect.value);
    syncUrl();
    scheduleRefresh();
  });

  function parseRefresh(v) {
    if (v === undefined || v === null || v === '' || v === 'auto') return 'auto';
    if (v === 'off' || v === 'false') return 0;
    const n = Number(v);
    return Number.isFinite(n) && n >= 0 ? Math.max(n === 0 ? 0 : 1, Math.round(n)) : 'auto';
  }

  function applyCustom() {
    const from = fromInput.value.trim() || 'now-1h', to = toInput.value.trim() || 'now';
    let a, b;
    try {
      const now = Date.now();
      a = resolveExpr(from, now, false); b = resolveExpr(to, now, true);
    } catch (e) { notify(e.message, 'error'); return; }
    if (a >= b) { notify('Give a start before the end.', 'error'); return; }
    // Relative times stay as typed (the range keeps moving); dates become ms.
    setRange({ from: isRelative(from) ? from.replace(/\s+/g, '') : String(a), to: isRelative(to) ? to.replace(/\s+/g, '') : String(b) });
  }

  function showCustom() {
    const now = Date.now();
    const show = (t, end) => {
      if (isRelative(t)) return t;
      try { return localText(resolveExpr(t, now, end)); } catch { return t; }
    };
    fromInput.value = show(dash.range.from, false);
    toInput.value = show(dash.range.to, true);
  }

  function presetOf(range) {
    const m = /^now-(\w+)$/.exec(range.from);
    return m && range.to === 'now' && PRESET_KEYS.includes(m[1]) ? m[1] : null;
  }

  function showRange() {
    const preset = presetOf(dash.range);
    rangeSelect.value = preset || 'custom';
    customBox.hidden = !!preset;
    if (!preset) showCustom();
  }

  function spanMs() {
    try {
      const now = Date.now();
      return resolveExpr(dash.range.to, now, true) - resolveExpr(dash.range.from, now, false);
    } catch { return 3600e3; }
  }

  function setRange(range) {
    // A view setting, as in Grafana: a saved dashboard's link keeps its name.
    dash.range = range;
    showRange();
    syncUrl();
    scheduleRefresh();
    refreshAll();
  }

  /** Doubles the range around its middle (a live range stays live). */
  function zoomOut() {
    const now = Date.now();
    let a, b;
    try { a = resolveExpr(dash.range.from, now); b = resolveExpr(dash.range.to, now, true); } catch { return; }
    const span = b - a;
    if (isLive(dash.range)) setRange({ from: 'now-' + durText(Math.round(span * 2 / 1000) * 1000), to: 'now' });
    else {
      const to = Math.min(b + span / 2, now);
      setRange({ from: String(Math.round(to - span * 2)), to: String(Math.round(to)) });
    }
  }

  const toolbar = h('div', { class: 'card row toolbar' },
    field('Dashboard', dashSelect),
    admin ? field('Dashboard name', nameInput) : null,
    admin ? saveButton : null,
    admin ? deleteButton : null,
    h('span', { class: 'grow' }),
    field('Time range', rangeSelect),
    customBox,
    h('button', { type: 'button', onclick: zoomOut, title: 'Show twice the time range' }, 'Zoom out'),
    h('div', { class: 'field' }, h('label', { for: 'refresh' }, 'Auto-refresh'), h('span', { class: 'row center refresh-box' }, refreshSelect, refreshState)),
    h('button', { type: 'button', onclick: () => refreshAll() }, 'Refresh'),
    h('button', { type: 'button', onclick: copyLink }, 'Copy link'));

  // ---- series browser ----
  const findInput = h('input', { id: 'series-find', type: 'search', placeholder: 'name, label or value, e.g. kitchen', autocomplete: 'off', spellcheck: 'false' });
  const nameList = h('ul', { 'aria-label': 'Metric names', class: 'names' });
  const ownList = h('ul', { 'aria-label': 'perch metrics', class: 'names' });
  const ownCount = h('span');
  const ownBox = h('details', { class: 'own' }, h('summary', null, 'perch itself ', ownCount), ownList);
  const foundBox = h('div', { class: 'found', 'aria-live': 'polite' });
  const labelBox = h('div');
  let allNames = [];
  let namesLoaded = false;
  const browser = h('aside', { class: 'card browser' },
    h('h2', null, 'Series'),
    field('Find series', findInput),
    labelBox,
    foundBox,
    nameList,
    ownBox);

  const connectHint = () => h('span', null, 'No series yet. ', h('a', { href: '/connect' }, 'Connect a device'), ' to see its readings here.');

  let findTimer = null, findAbort = null;
  findInput.addEventListener('input', () => {
    renderNames();
    clearTimeout(findTimer);
    findTimer = setTimeout(findSeries, 250);
  });
  findInput.addEventListener('keydown', e => {
    if (e.key !== 'Enter' || !findInput.value.trim()) return;
    e.preventDefault();
    const v = findInput.value.trim();
    if (allNames.includes(v)) pickMetric(v);
    else if (/[{}()[\]]/.test(v)) addQuery(v);
    else foundBox.querySelector('button')?.focus();
  });

  /** Series whose name, label names or label values hold every typed word. */
  async function findSeries() {
    const text = findInput.value.trim();
    if (findAbort) findAbort.abort();
    if (!text) { foundBox.replaceChildren(); return; }
    const ac = new AbortController();
    findAbort = ac;
    ctx.signal.addEventListener('abort', () => ac.abort(), { once: true });
    try {
      const d = await api('/api/v1/series/search?limit=100&q=' + encodeURIComponent(text), { signal: ac.signal });
      if (ac !== findAbort) return;
      const item = s => h('li', null, h('button', {
        type: 'button', class: 'mono', title: 'Add this series to the chart', onclick: () => addQuery(seriesName(s)),
      }, breakable(seriesName(s))));
      const mine = d.series.filter(s => !OWN.test(s.__name__ || ''));
      const own = d.series.filter(s => OWN.test(s.__name__ || ''));
      foundBox.replaceChildren(
        h('h3', null, `Series matching “${text}”`, d.total > d.series.length ? h('span', { class: 'muted small' }, ` (first ${d.series.length} of ${d.total})`) : null),
        mine.length ? h('ul', { 'aria-label': 'Matching series', class: 'names' }, mine.map(item))
          : h('p', { class: 'muted small' }, own.length ? 'None of your series match.' : 'No series match.'),
        own.length ? h('details', { class: 'own' }, h('summary', null, `perch itself (${own.length})`),
          h('ul', { 'aria-label': 'Matching perch series', class: 'names' }, own.map(item))) : null);
    } catch (e) {
      if (e.name !== 'AbortError') showError(foundBox, e);
    }
  }

  function renderNames() {
    const words = findInput.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const names = allNames.filter(n => words.every(w => n.toLowerCase().includes(w)));
    const button = n => h('li', null, h('button', { type: 'button', class: 'mono', onclick: () => pickMetric(n) }, n));
    const mine = names.filter(n => !OWN.test(n)).slice(0, 300);
    const own = names.filter(n => OWN.test(n)).slice(0, 300);
    const anyMine = allNames.some(n => !OWN.test(n));
    nameList.replaceChildren(...mine.map(button));
    // (Typed words that name no metric may still be a label's value: the
    // matching series show above.)
    if (!mine.length && !(words.length && anyMine)) nameList.append(h('li', { class: 'muted' }, !namesLoaded ? 'Loading…' : connectHint()));
    ownList.replaceChildren(...own.map(button));
    ownCount.textContent = `(${own.length})`;
    ownBox.hidden = !own.length;
    // Asked for by name: perch's own metrics show too.
    if (words.length && own.length && words.some(w => 'perch'.startsWith(w) || w.startsWith('perch'))) ownBox.open = true;
  }

  async function pickMetric(name) {
    labelBox.replaceChildren(h('p', { class: 'muted' }, 'Loading labels…'));
    try {
      const start = Math.floor((Date.now() - 86400e3) / 1000);
      const series = await api(`/api/v1/series?match[]=${encodeURIComponent(name)}&start=${start}&limit=500`, { signal: ctx.signal });
      const labels = new Map();
      for (const s of series) for (const [k, v] of Object.entries(s)) {
        if (k === '__name__') continue;
        if (!labels.has(k)) labels.set(k, new Set());
        labels.get(k).add(v);
      }
      const selects = [...labels].sort().map(([k, vs]) => {
        const sel = h('select', { dataset: { label: k } }, h('option', { value: '' }, 'any'),
          [...vs].sort().map(v => h('option', { value: v }, v)));
        return field(k, sel);
      });
      const selector = () => {
        const parts = [...labelBox.querySelectorAll('select[data-label]')]
          .filter(s => s.value).map(s => `${s.dataset.label}="${s.value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`);
        return parts.length ? `${name}{${parts.join(',')}}` : name;
      };
      labelBox.replaceChildren(h('h3', { class: 'mono' }, name),
        selects.length ? h('div', { class: 'row' }, selects) : h('p', { class: 'muted' }, 'No labels.'),
        h('p', { class: 'row' },
          h('button', { type: 'button', class: 'primary', onclick: () => addQuery(selector()) }, 'Add to chart'),
          h('button', { type: 'button', onclick: () => addQuery(`rate(${selector()}[5m])`) }, 'Add rate')));
    } catch (e) {
      if (e.name !== 'AbortError') showError(labelBox, e);
    }
  }

  /** Adds a query to the first line panel (filling an empty query box first). */
  function addQuery(query) {
    let p = dash.panels.find(p => p.kind === 'line');
    if (!p) { p = newPanel([]); dash.panels.unshift(p); }
    const empty = p.queries.findIndex(x => !x.trim());
    if (empty >= 0) p.queries[empty] = query;
    else { p.queries.push(query); p.legends.push(''); p.units.push(''); }
    markDirty();
    renderPanels();
  }

  // ---- panels ----
  const panelsBox = h('div', { class: 'panels' });
  const addPanelButton = h('button', { type: 'button', onclick: () => { dash.panels.push(newPanel()); markDirty(); renderPanels(); } }, 'Add panel');
  const unitChoices = h('datalist', { id: 'unit-choices' }, COMMON_UNITS.map(u => h('option', { value: u })));

  function renderPanels() {
    for (const pv of panelViews) pv.destroy();
    panelViews.length = 0;
    panelsBox.replaceChildren();
    dash.panels.forEach((panel, i) => {
      const pv = panelView(panel, i);
      panelViews.push(pv);
      panelsBox.append(pv.el);
    });
    refreshAll();
  }

  /** The unit of a series of query `qi`: the query's own, else what perch knows. */
  function unitFor(panel, qi, metric, units) {
    const own = normUnit(panel.units[qi]);
    if (own) return own;
    const name = metric && metric.__name__;
    if (name) return normUnit(units.get(name)) || unitFromName(name);
    return queryUnit(panel.queries[qi] || '', units);
  }

  function panelView(panel, index) {
    let editing = panel.queries.every(q => !q.trim()) && panel.kind !== 'camera';
    let destroyChart = () => {};
    let shownChart = null; // the chart on screen, whose cursor a refresh keeps
    const body = h('div', { class: 'panel-body' });
    const editor = h('div', { class: 'editor' });
    const titleText = () => panel.title || (panel.kind === 'camera' ? panel.camera || 'Camera' : panel.queries.filter(Boolean).join(', ') || `Panel ${index + 1}`);
    const heading = h('h3', null, titleText());
    const editButton = h('button', { type: 'button', 'aria-expanded': String(editing) }, editing ? 'Done' : 'Edit');
    const el = h('section', { class: 'card panel', 'aria-label': `Panel ${index + 1}` },
      h('div', { class: 'panel-head' }, heading, editButton,
        h('button', { type: 'button', class: 'danger', 'aria-label': `Remove panel ${index + 1}`, onclick: () => {
          dash.panels.splice(index, 1); markDirty(); renderPanels();
        } }, 'Remove')),
      editor, body);

    editButton.addEventListener('click', () => {
      editing = !editing;
      editButton.textContent = editing ? 'Done' : 'Edit';
      editButton.setAttribute('aria-expanded', String(editing));
      renderEditor();
      if (!editing) run();
    });

    function renderEditor() {
      editor.hidden = !editing;
      if (!editing) { editor.replaceChildren(); return; }
      const n = index + 1;
      const title = h('input', { value: panel.title, placeholder: 'automatic' });
      title.addEventListener('input', () => { panel.title = title.value; heading.textContent = titleText(); markDirty(); });
      const kind = h('select', null, KINDS.map(k => h('option', { value: k, selected: k === panel.kind }, k)));
      kind.addEventListener('change', () => { panel.kind = kind.value; markDirty(); renderEditor(); run(); });
      const rows = panel.kind === 'camera' ? [] : panel.queries.map((qtext, qi) => {
        const ta = h('textarea', { rows: 1, class: 'promql', value: qtext, spellcheck: 'false', placeholder: 'PromQL, e.g. rate(perch_mqtt_messages_received_total[1m])' });
        ta.addEventListener('input', () => { panel.queries[qi] = ta.value; markDirty(); });
        ta.addEventListener('keydown', e => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); run(); } });
        const legend = h('input', { value: panel.legends[qi] || '', placeholder: 'auto, or {{device}} {{topic}}', spellcheck: 'false', size: 22 });
        legend.addEventListener('input', () => { panel.legends[qi] = legend.value; markDirty(); });
        legend.addEventListener('keydown', e => { if (e.key === 'Enter') { e.preventDefault(); run(); } });
        const unit = h('input', { value: panel.units[qi] || '', placeholder: 'auto', list: 'unit-choices', spellcheck: 'false', size: 7 });
        unit.addEventListener('input', () => { panel.units[qi] = unit.value; markDirty(); });
        unit.addEventListener('keydown', e => { if (e.key === 'Enter') { e.preventDefault(); run(); } });
        unit.addEventListener('change', () => run());
        return h('div', { class: 'query-row' },
          field(`Query ${qi + 1} (panel ${n})`, ta, { class: 'query-text' }),
          field(`Legend (query ${qi + 1}, panel ${n})`, legend, { class: 'query-legend' }),
          field(`Unit (query ${qi + 1}, panel ${n})`, unit, { class: 'query-unit' }),
          h('button', { type: 'button', 'aria-label': `Remove query ${qi + 1}`, onclick: () => {
            for (const a of [panel.queries, panel.legends, panel.units]) a.splice(qi, 1);
            if (!panel.queries.length) { panel.queries.push(''); panel.legends.push(''); panel.units.push(''); }
            markDirty(); renderEditor(); run();
          } }, '−'));
      });
      let cam = null;
      if (panel.kind === 'camera') {
        cam = h('select', null, h('option', { value: '' }, 'choose…'),
          cameras.map(c => h('option', { value: c.name, selected: c.name === panel.camera }, c.name)));
        cam.addEventListener('change', () => { panel.camera = cam.value; heading.textContent = titleText(); markDirty(); run(); });
      }
      editor.replaceChildren(
        h('div', { class: 'row' }, field(`Title (panel ${n})`, title), field(`Kind (panel ${n})`, kind),
          cam ? field(`Camera (panel ${n})`, cam) : null),
        ...rows,
        panel.kind === 'camera' ? '' : h('p', { class: 'muted small' },
          'Legend: text with labels in double braces, e.g. ', h('code', null, '{{device}} {{topic}}'),
          '; empty shows the metric and the labels that differ. Unit: e.g. °C, %, W (empty: the unit the devices report).'),
        panel.kind === 'camera' ? '' : h('div', { class: 'row' },
          h('button', { type: 'button', onclick: () => {
            panel.queries.push(''); panel.legends.push(''); panel.units.push('');
            renderEditor(); editor.querySelector('.query-row:last-of-type textarea')?.focus();
          } }, 'Add query'),
          h('button', { type: 'button', class: 'primary', onclick: run }, 'Run')));
    }

    let inFlight = null;
    async function run() {
      heading.textContent = titleText();
      syncUrl();
      if (inFlight) inFlight.abort();
      const ac = new AbortController();
      inFlight = ac;
      ctx.signal.addEventListener('abort', () => ac.abort(), { once: true });
      const now = Date.now();
      let start, end;
      try {
        start = resolveExpr(dash.range.from, now, false); end = resolveExpr(dash.range.to, now, true);
      } catch (e) { showError(body, e); inFlight = null; return; }
      try {
        if (panel.kind === 'camera') {
          destroyChart(); destroyChart = () => {};
          if (!panel.camera) { body.replaceChildren(h('p', { class: 'muted' }, 'Choose a camera (Edit).')); return; }
          const src = `/api/v1/cameras/${encodeURIComponent(panel.camera)}/latest.jpg?t=${now}`;
          const img = body.querySelector('img');
          if (img) { img.src = src; return; }
          body.replaceChildren(h('a', { href: `/cameras/${encodeURIComponent(panel.camera)}` },
            h('img', { class: 'thumb', src, alt: `Latest snapshot of ${panel.camera}` })));
          return;
        }
        const picked = panel.queries.map((s, qi) => ({ text: s.trim(), qi })).filter(x => x.text);
        const queries = picked.map(x => x.text);
        const legends = picked.map(x => panel.legends[x.qi] || '');
        if (!queries.length) {
          destroyChart(); destroyChart = () => {};
          body.replaceChildren(h('p', { class: 'muted' }, 'Add a PromQL query, or pick a series on the left.'));
          return;
        }
        if (panel.kind === 'stat') {
          const at = isLive(dash.range) ? '' : `&time=${end / 1000}`;
          const results = await Promise.all(queries.map(qq =>
            api(`/api/v1/query?query=${encodeURIComponent(qq)}${at}`, { signal: ac.signal })));
          const units = await unitsOf;
          const rows = [];
          results.forEach((d, i) => {
            if (d.resultType === 'scalar') rows.push({ metric: {}, qi: i, value: Number(d.result[1]) });
            else if (d.resultType === 'vector') for (const r of d.result) rows.push({ metric: r.metric, qi: i, value: Number(r.value[1]) });
          });
          const labels = legendLabels(rows, queries, legends);
          destroyChart(); destroyChart = () => {};
          body.replaceChildren(h('div', { class: 'stat-values' }, rows.length ? rows.map((r, i) => h('div', { class: 'stat' },
            h('div', { class: 'value last', dataset: { value: r.value } }, fmtValue(r.value, unitFor(panel, picked[r.qi].qi, r.metric, units))),
            h('div', { class: 'sub', title: seriesName(r.metric) }, breakable(labels[i])))) : h('p', { class: 'muted' }, 'No data')));
          return;
        }
        const width = body.clientWidth || 600;
        const step = Math.max(1, Math.ceil((end - start) / 1000 / Math.max(100, Math.min(width / 2, 600))));
        const episodes = alertEpisodes(start, end);
        const results = await Promise.all(queries.map(qq =>
          api(`/api/v1/query_range?query=${encodeURIComponent(qq)}&start=${start / 1000}&end=${end / 1000}&step=${step}`, { signal: ac.signal })
            .then(d => (d.resultType === 'matrix' ? d.result : []))));
        const data = alignMatrices(results, queries, { legends });
        const units = await unitsOf;
        for (const s of data.series) s.unit = unitFor(panel, picked[s.qi].qi, s.metric, units);
        const cursor = shownChart ? shownChart.cursor() : null;
        destroyChart();
        if (!data.series.length) { destroyChart = () => {}; body.replaceChildren(h('p', { class: 'muted' }, 'No data in this range.')); return; }
        const box = h('div');
        body.replaceChildren(box);
        const bands = alertBands(await episodes, data.series);
        const c = await chart(box, {
          xs: data.xs, series: data.series, height: 260, xRange: [start / 1000, end / 1000], cursor, bands,
          onSelect: (from, to) => setRange({ from: String(Math.round(from)), to: String(Math.round(to)) }),
        });
        if (ac.signal.aborted) { c.destroy(); return; }
        shownChart = c;
        destroyChart = () => { c.destroy(); if (shownChart === c) shownChart = null; };
      } catch (e) {
        if (e.name === 'AbortError') return;
        destroyChart(); destroyChart = () => {};
        showError(body, e);
      } finally {
        if (inFlight === ac) inFlight = null;
      }
    }

    renderEditor();
    return { el, run, busy: () => inFlight !== null, destroy: () => { if (inFlight) inFlight.abort(); destroyChart(); } };
  }

  /** Runs every panel; a timer tick skips while a panel still waits for its last answer. */
  function refreshAll(fromTimer = false) {
    if (fromTimer && panelViews.some(pv => pv.busy())) return;
    lastRun = Date.now();
    for (const pv of panelViews) pv.run();
  }

  /** Seconds between refreshes now (0: none): only a range that ends now moves. */
  function refreshSeconds() {
    if (!isLive(dash.range)) return 0;
    return dash.refresh === 'auto' ? autoRefresh(spanMs()) : dash.refresh;
  }

  function showRefresh() {
    const value = dash.refresh === 'auto' ? 'auto' : String(dash.refresh);
    if (![...refreshSelect.options].some(o => o.value === value)) refreshSelect.append(h('option', { value }, secondsText(dash.refresh)));
    refreshSelect.value = value;
    refreshSelect.options[0].textContent = `Auto (${secondsText(autoRefresh(spanMs()))})`;
    const s = refreshSeconds();
    refreshState.textContent = !isLive(dash.range) ? (dash.refresh === 0 ? '' : 'paused: the range does not end now')
      : s === 0 ? '' : document.hidden ? 'paused while the tab is hidden' : `every ${secondsText(s)}`;
    refreshState.dataset.seconds = String(s);
  }

  function scheduleRefresh() {
    clearInterval(refreshTimer);
    refreshTimer = null;
    showRefresh();
    const s = refreshSeconds();
    if (s >= 1 && !document.hidden) refreshTimer = setInterval(() => refreshAll(true), s * 1000);
  }
  // A hidden tab asks nothing; back in view, it catches up at once.
  const onVisibility = () => {
    if (document.hidden) { clearInterval(refreshTimer); refreshTimer = null; showRefresh(); return; }
    const s = refreshSeconds();
    if (s >= 1 && Date.now() - lastRun >= s * 1000) refreshAll(true);
    scheduleRefresh();
  };
  document.addEventListener('visibilitychange', onVisibility);
  ctx.cleanup(() => {
    clearInterval(refreshTimer);
    clearTimeout(findTimer);
    document.removeEventListener('visibilitychange', onVisibility);
    for (const pv of panelViews) pv.destroy();
  });

  // ---- dashboards ----
  function markDirty() { dirty = true; syncUrl(); }

  function urlFor() {
    const p = new URLSearchParams();
    if (savedName && !dirty) p.set('dashboard', savedName);
    else {
      const line = dash.panels.find(x => x.kind === 'line') || dash.panels[0];
      const picked = line ? line.queries.map((qq, i) => ({ qq: qq.trim(), i })).filter(x => x.qq) : [];
      for (const x of picked) p.append('q', x.qq);
      if (picked.some(x => (line.legends[x.i] || '').trim())) for (const x of picked) p.append('legend', line.legends[x.i] || '');
      if (picked.some(x => (line.units[x.i] || '').trim())) for (const x of picked) p.append('unit', (line.units[x.i] || '').trim());
    }
    const preset = presetOf(dash.range);
    if (preset) p.set('range', preset);
    else { p.set('from', dash.range.from); p.set('to', dash.range.to); }
    if (dash.refresh !== 'auto') p.set('refresh', dash.refresh === 0 ? 'off' : String(dash.refresh));
    return '/graph?' + p.toString();
  }

  function syncUrl() {
    const u = urlFor();
    if (location.pathname === '/graph' && location.pathname + location.search !== u) history.replaceState(null, '', u);
  }

  async function copyLink() {
    const link = location.origin + urlFor();
    if (await copyText(link)) notify('Link copied.');
    else window.prompt('Link to this view:', link);
  }

  async function loadList(selected) {
    try {
      const list = await api('/api/v1/dashboards', { signal: ctx.signal });
      dashSelect.replaceChildren(h('option', { value: '' }, '(unsaved)'),
        ...list.sort((a, b) => a.name.localeCompare(b.name)).map(d => h('option', { value: d.name }, d.name)));
      dashSelect.value = selected || '';
    } catch (e) {
      if (e.name !== 'AbortError') dashSelect.replaceChildren(h('option', { value: '' }, `(cannot list: ${e.message})`));
    }
  }

  async function save() {
    const name = nameInput.value.trim();
    if (!name) { notify('Give the dashboard a name.', 'error'); nameInput.focus(); return; }
    // A relative range is saved as such ({from: "now-6h", to: "now"}): the
    // dashboard opens on the last six hours, whenever it is opened.
    const body = {
      version: 2, name, range: { ...dash.range }, refresh: dash.refresh,
      panels: dash.panels.map(p => ({ title: p.title, kind: p.kind, queries: p.queries, legends: p.legends, units: p.units, camera: p.camera })),
    };
    try {
      await api('/api/v1/dashboards/' + encodeURIComponent(name), { method: 'PUT', body });
      dash.name = name; savedName = name; dirty = false;
      await loadList(name);
      syncUrl();
      notify(`Dashboard ${name} saved.`);
    } catch (e) { notify(e.message, 'error'); }
  }

  async function remove() {
    const name = dashSelect.value;
    if (!name) { notify('Choose a saved dashboard to delete.', 'error'); return; }
    if (!window.confirm(`Delete the dashboard ${name}?`)) return;
    try {
      await api('/api/v1/dashboards/' + encodeURIComponent(name), { method: 'DELETE' });
      savedName = ''; dash.name = ''; nameInput.value = ''; dirty = true;
      await loadList('');
      syncUrl();
      notify(`Dashboard ${name} deleted.`);
    } catch (e) { notify(e.message, 'error'); }
  }

  // ---- assemble ----
  view.append(h('h1', null, 'Metrics'), toolbar,
    h('div', { class: 'metrics' }, browser, h('div', { class: 'panels-col' }, panelsBox, addPanelButton)), unitChoices);
  showRange();
  renderNames();
  renderPanels();
  scheduleRefresh();
  loadList(savedName);
  api('/api/v1/cameras', { signal: ctx.signal }).then(c => { cameras = c || []; }).catch(() => {});
  api('/api/v1/label/__name__/values', { signal: ctx.signal })
    .then(names => { allNames = names; namesLoaded = true; renderNames(); })
    .catch(e => { if (e.name !== 'AbortError') showError(nameList, e); });
}

/**
 * A stored dashboard → the page's shape. Older documents still open: a
 * range of fixed timestamps (ms or s, numbers or strings, or dates), a
 * range given as a duration ("6h"), panels without legends or units, and
 * `refresh: 0` from before auto-refresh (it means the default, auto).
 */
function normalise(d, name) {
  const panels = Array.isArray(d && d.panels) ? d.panels.map(p => {
    const queries = Array.isArray(p.queries) && p.queries.length ? p.queries.map(String) : [''];
    const arr = a => queries.map((_, i) => (Array.isArray(a) && a[i] !== undefined && a[i] !== null ? String(a[i]) : ''));
    return {
      title: String(p.title || ''),
      kind: KINDS.includes(p.kind) ? p.kind : 'line',
      queries,
      legends: arr(p.legends),
      units: arr(p.units),
      camera: String(p.camera || ''),
    };
  }) : [newPanel()];
  let range = { ...DEFAULT_RANGE };
  const r = d && d.range;
  if (typeof r === 'string' && /^\d+(ms|s|m|h|d|w|y)$/.test(r.trim())) range = { from: 'now-' + r.trim(), to: 'now' };
  else if (r && typeof r === 'object' && r.from !== undefined && r.from !== null && r.from !== '') {
    range = { from: normTime(r.from, DEFAULT_RANGE.from), to: normTime(r.to, 'now') };
  }
  let refresh = 'auto';
  const rf = d && d.refresh;
  if (rf === 'auto' || rf === undefined || rf === null) refresh = 'auto';
  else if (Number(rf) > 0) refresh = Math.round(Number(rf));
  else if (Number(rf) === 0 && Number(d.version) >= 2) refresh = 0;
  return {
    name: (d && d.name) || name,
    range,
    refresh,
    panels: panels.length ? panels : [newPanel()],
  };
}
