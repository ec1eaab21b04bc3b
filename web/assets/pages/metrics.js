// Metrics: a series browser, PromQL panels charted with uPlot, time ranges
// (presets, custom, drag to zoom), auto-refresh, and dashboards saved on the
// server (/api/v1/dashboards). The URL carries what is shown:
//   /graph?q=QUERY&q=QUERY&from=now-1h&to=now     (ad hoc)
//   /graph?dashboard=NAME&from=…&to=…             (a saved dashboard)
// (/graph as in Prometheus' UI: /metrics is perch's own scrape endpoint.)
// `range=6h` is short for from=now-6h&to=now.
// Series of a metric with a unit (/api/v1/metadata) show it on the axis and
// in the legend.

import { api, h, field, notify, showError, isAdmin, resolveTime, parseDuration, seriesName, fmtUnit, metricUnits } from '../lib.js';
import { chart, alignMatrices } from '../chart.js';

const PRESETS = ['15m', '1h', '6h', '24h', '7d', '30d'];
const REFRESH = [[0, 'Off'], [1, '1 s'], [5, '5 s'], [15, '15 s'], [60, '1 min']];
const KINDS = ['line', 'stat', 'camera'];

function newPanel(queries = ['']) {
  return { title: '', kind: 'line', queries, camera: '' };
}

function toLocalInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export default async function (view, ctx) {
  const admin = isAdmin();
  let dash = { name: '', range: { from: 'now-1h', to: 'now' }, refresh: 0, panels: [newPanel()] };
  let savedName = '';   // the dashboard the page shows, if saved
  let dirty = false;
  let cameras = [];
  let refreshTimer = null;
  const panelViews = [];  // {panel, el, destroy}
  // Units by metric name, asked once per visit (a failure means no units).
  const unitsOf = metricUnits();
  const nameOf = metric => (metric && metric.__name__) || null;

  // ---- URL → state ----
  const q = ctx.query;
  const rangeFromUrl = () => {
    if (q.get('range') && parseDuration(q.get('range')) !== null) return { from: 'now-' + q.get('range'), to: 'now' };
    if (q.get('from')) return { from: q.get('from'), to: q.get('to') || 'now' };
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
    dash.panels = [newPanel(q.getAll('q'))];
  }
  dash.range = rangeFromUrl() || dash.range;
  if (q.get('refresh')) dash.refresh = Math.max(0, Number(q.get('refresh')) || 0);

  // ---- toolbar ----
  const dashSelect = h('select', { id: 'dash-select' });
  const nameInput = h('input', { id: 'dash-name', value: dash.name, placeholder: 'e.g. greenhouse', size: 14 });
  const saveButton = h('button', { type: 'button', class: 'primary', onclick: save }, 'Save dashboard');
  const deleteButton = h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete dashboard');
  const rangeSelect = h('select', { id: 'range' },
    PRESETS.map(p => h('option', { value: p }, `Last ${p}`)), h('option', { value: 'custom' }, 'Custom'));
  const fromInput = h('input', { type: 'datetime-local', id: 'range-from' });
  const toInput = h('input', { type: 'datetime-local', id: 'range-to' });
  const customBox = h('span', { class: 'row' },
    field('From', fromInput), field('To', toInput),
    h('button', { type: 'button', onclick: applyCustom }, 'Apply range'));
  const refreshSelect = h('select', { id: 'refresh' }, REFRESH.map(([s, t]) => h('option', { value: s }, t)));

  dashSelect.addEventListener('change', async () => {
    const name = dashSelect.value;
    if (!name) { dash = { ...dash, name: '', panels: [newPanel()] }; savedName = ''; dirty = false; nameInput.value = ''; renderPanels(); return; }
    try {
      const d = await api('/api/v1/dashboards/' + encodeURIComponent(name), { signal: ctx.signal });
      dash = normalise(d, name);
      savedName = name; dirty = false; nameInput.value = name;
      showRange(); refreshSelect.value = String(dash.refresh); scheduleRefresh();
      renderPanels();
    } catch (e) { notify(e.message, 'error'); }
  });
  rangeSelect.addEventListener('change', () => {
    if (rangeSelect.value === 'custom') {
      customBox.hidden = false;
      const now = Date.now();
      fromInput.value = toLocalInput(resolveTime(dash.range.from, now));
      toInput.value = toLocalInput(resolveTime(dash.range.to, now));
      fromInput.focus();
      return;
    }
    setRange({ from: 'now-' + rangeSelect.value, to: 'now' });
  });
  refreshSelect.addEventListener('change', () => {
    dash.refresh = Number(refreshSelect.value); markDirty(); scheduleRefresh();
  });

  function applyCustom() {
    const from = Date.parse(fromInput.value), to = Date.parse(toInput.value);
    if (Number.isNaN(from) || Number.isNaN(to) || from >= to) { notify('Give a start before the end.', 'error'); return; }
    setRange({ from: String(from), to: String(to) });
  }

  function showRange() {
    const m = /^now-(.+)$/.exec(dash.range.from);
    const preset = m && dash.range.to === 'now' && PRESETS.includes(m[1]) ? m[1] : 'custom';
    rangeSelect.value = preset;
    customBox.hidden = preset !== 'custom';
    if (preset === 'custom') {
      const now = Date.now();
      try {
        fromInput.value = toLocalInput(resolveTime(dash.range.from, now));
        toInput.value = toLocalInput(resolveTime(dash.range.to, now));
      } catch { /* shown as typed */ }
    }
  }

  function setRange(range) {
    dash.range = range;
    markDirty();
    showRange();
    scheduleRefresh();
    refreshAll();
  }

  const toolbar = h('div', { class: 'card row' },
    field('Dashboard', dashSelect),
    admin ? field('Dashboard name', nameInput) : null,
    admin ? saveButton : null,
    admin ? deleteButton : null,
    h('span', { class: 'grow' }),
    field('Time range', rangeSelect),
    customBox,
    field('Auto-refresh', refreshSelect),
    h('button', { type: 'button', onclick: () => refreshAll() }, 'Refresh'),
    h('button', { type: 'button', onclick: copyLink }, 'Copy link'));

  // ---- series browser ----
  const findInput = h('input', { id: 'series-find', type: 'search', placeholder: 'name or label', list: 'series-suggest', autocomplete: 'off' });
  const suggest = h('datalist', { id: 'series-suggest' });
  const nameList = h('ul', { 'aria-label': 'Metric names' });
  const labelBox = h('div');
  let allNames = [];
  const browser = h('aside', { class: 'card browser' },
    h('h2', null, 'Series'),
    field('Find series', findInput), suggest,
    labelBox,
    nameList);

  let findTimer = null;
  findInput.addEventListener('input', () => {
    renderNames();
    clearTimeout(findTimer);
    findTimer = setTimeout(async () => {
      const text = findInput.value.trim();
      if (!text) { suggest.replaceChildren(); return; }
      try {
        const d = await api('/api/v1/series/search?limit=20&q=' + encodeURIComponent(text), { signal: ctx.signal });
        suggest.replaceChildren(...d.series.map(s => h('option', { value: seriesName(s) })));
      } catch (e) { if (e.name !== 'AbortError') console.warn(e); }
    }, 250);
  });
  findInput.addEventListener('keydown', e => {
    // Enter on a full selector (picked from the suggestions) adds it.
    if (e.key === 'Enter' && findInput.value.trim()) {
      e.preventDefault();
      const v = findInput.value.trim();
      if (allNames.includes(v)) pickMetric(v);
      else addQuery(v);
    }
  });

  function renderNames() {
    const words = findInput.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const names = allNames.filter(n => words.every(w => n.toLowerCase().includes(w))).slice(0, 300);
    nameList.replaceChildren(...names.map(n => h('li', null,
      h('button', { type: 'button', class: 'mono', onclick: () => pickMetric(n) }, n))));
    if (!names.length) nameList.append(h('li', { class: 'muted' }, allNames.length ? 'No match' : 'No series yet'));
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
    if (empty >= 0) p.queries[empty] = query; else p.queries.push(query);
    markDirty();
    renderPanels();
  }

  // ---- panels ----
  const panelsBox = h('div', { class: 'panels' });
  const addPanelButton = h('button', { type: 'button', onclick: () => { dash.panels.push(newPanel()); markDirty(); renderPanels(); } }, 'Add panel');

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

  function panelView(panel, index) {
    let editing = panel.queries.every(q => !q.trim()) && panel.kind !== 'camera';
    let destroyChart = () => {};
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
        return h('div', { class: 'query-row' },
          field(`Query ${qi + 1} (panel ${n})`, ta, { class: 'grow' }),
          h('button', { type: 'button', 'aria-label': `Remove query ${qi + 1}`, onclick: () => {
            panel.queries.splice(qi, 1); if (!panel.queries.length) panel.queries.push('');
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
        panel.kind === 'camera' ? '' : h('div', { class: 'row' },
          h('button', { type: 'button', onclick: () => { panel.queries.push(''); renderEditor(); editor.querySelector('.query-row:last-of-type textarea')?.focus(); } }, 'Add query'),
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
        start = resolveTime(dash.range.from, now); end = resolveTime(dash.range.to, now);
      } catch (e) { showError(body, e); return; }
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
        const queries = panel.queries.map(s => s.trim()).filter(Boolean);
        if (!queries.length) { destroyChart(); destroyChart = () => {}; body.replaceChildren(h('p', { class: 'muted' }, 'Add a PromQL query, or pick a series on the left.')); return; }
        if (panel.kind === 'stat') {
          const at = dash.range.to === 'now' ? '' : `&time=${end / 1000}`;
          const results = await Promise.all(queries.map(qq =>
            api(`/api/v1/query?query=${encodeURIComponent(qq)}${at}`, { signal: ac.signal })));
          const units = await unitsOf;
          const rows = [];
          for (const d of results) {
            if (d.resultType === 'scalar') rows.push({ metric: {}, value: Number(d.result[1]) });
            else if (d.resultType === 'vector') for (const r of d.result) rows.push({ metric: r.metric, value: Number(r.value[1]) });
          }
          destroyChart(); destroyChart = () => {};
          body.replaceChildren(h('div', { class: 'stat-values' }, rows.length ? rows.map(r => h('div', { class: 'stat' },
            h('div', { class: 'value last', dataset: { value: r.value } }, fmtUnit(r.value, units.get(nameOf(r.metric)))),
            h('div', { class: 'sub mono' }, seriesName(r.metric)))) : h('p', { class: 'muted' }, 'No data')));
          return;
        }
        const width = body.clientWidth || 600;
        const step = Math.max(1, Math.ceil((end - start) / 1000 / Math.max(100, Math.min(width / 2, 600))));
        const results = await Promise.all(queries.map(qq =>
          api(`/api/v1/query_range?query=${encodeURIComponent(qq)}&start=${start / 1000}&end=${end / 1000}&step=${step}`, { signal: ac.signal })
            .then(d => (d.resultType === 'matrix' ? d.result : []))));
        const data = alignMatrices(results, queries);
        const units = await unitsOf;
        for (const s of data.series) s.unit = units.get(nameOf(s.metric)) || null;
        destroyChart();
        if (!data.series.length) { destroyChart = () => {}; body.replaceChildren(h('p', { class: 'muted' }, 'No data in this range.')); return; }
        const box = h('div');
        body.replaceChildren(box);
        const c = await chart(box, {
          xs: data.xs, series: data.series, height: 260, xRange: [start / 1000, end / 1000],
          onSelect: (from, to) => setRange({ from: String(Math.round(from)), to: String(Math.round(to)) }),
        });
        destroyChart = () => c.destroy();
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
    for (const pv of panelViews) pv.run();
  }

  function scheduleRefresh() {
    clearInterval(refreshTimer);
    refreshTimer = null;
    // Only a range that ends now moves; never faster than once a second.
    if (dash.refresh >= 1 && dash.range.to === 'now') {
      refreshTimer = setInterval(() => { if (!document.hidden) refreshAll(true); }, dash.refresh * 1000);
    }
  }
  ctx.cleanup(() => { clearInterval(refreshTimer); for (const pv of panelViews) pv.destroy(); });

  // ---- dashboards ----
  function markDirty() { dirty = true; syncUrl(); }

  function urlFor() {
    const p = new URLSearchParams();
    if (savedName && !dirty) p.set('dashboard', savedName);
    else {
      const line = dash.panels.find(x => x.kind === 'line') || dash.panels[0];
      for (const qq of (line ? line.queries : [])) if (qq.trim()) p.append('q', qq.trim());
    }
    const m = /^now-(.+)$/.exec(dash.range.from);
    if (m && dash.range.to === 'now') p.set('range', m[1]);
    else { p.set('from', dash.range.from); p.set('to', dash.range.to); }
    if (dash.refresh) p.set('refresh', dash.refresh);
    return '/graph?' + p.toString();
  }

  function syncUrl() {
    const u = urlFor();
    if (location.pathname === '/graph' && location.pathname + location.search !== u) history.replaceState(null, '', u);
  }

  async function copyLink() {
    const link = location.origin + urlFor();
    try { await navigator.clipboard.writeText(link); notify('Link copied.'); }
    catch { window.prompt('Link to this view:', link); }
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
    const body = { name, range: dash.range, refresh: dash.refresh, panels: dash.panels };
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
    h('div', { class: 'metrics' }, browser, h('div', null, panelsBox, addPanelButton)));
  showRange();
  refreshSelect.value = String(REFRESH.some(([s]) => s === dash.refresh) ? dash.refresh : 0);
  dash.refresh = Number(refreshSelect.value);
  renderPanels();
  scheduleRefresh();
  loadList(savedName);
  api('/api/v1/cameras', { signal: ctx.signal }).then(c => { cameras = c || []; }).catch(() => {});
  api('/api/v1/label/__name__/values', { signal: ctx.signal })
    .then(names => { allNames = names; renderNames(); })
    .catch(e => { if (e.name !== 'AbortError') showError(nameList, e); });
}

function normalise(d, name) {
  const panels = Array.isArray(d && d.panels) ? d.panels.map(p => ({
    title: String(p.title || ''),
    kind: KINDS.includes(p.kind) ? p.kind : 'line',
    queries: Array.isArray(p.queries) && p.queries.length ? p.queries.map(String) : [''],
    camera: String(p.camera || ''),
  })) : [newPanel()];
  return {
    name: (d && d.name) || name,
    range: d && d.range && d.range.from ? { from: String(d.range.from), to: String(d.range.to || 'now') } : { from: 'now-1h', to: 'now' },
    refresh: Number(d && d.refresh) || 0,
    panels: panels.length ? panels : [newPanel()],
  };
}
