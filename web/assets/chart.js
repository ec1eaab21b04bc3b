// uPlot, loaded on first use from /assets/vendor/ (scripts/vendor-web puts
// it there), wrapped for perch: theme colours, resize, drag-to-zoom, units
// on the y axes (values scaled and written with their unit: 1.2 kW, 350 ms,
// 4.1 MiB), a tooltip at the cursor with every series' value at that time
// (a tap on a phone), legends people can read (Grafana's `{{label}}`
// templates, or the metric name with only the labels that differ between
// the series), and a legend table with min / max / last that toggles series.

import { h, fmtNum, fmtUnit, fmtBytes, seriesName } from './lib.js';

let loading = null;
export function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  loading = loading || new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = '/assets/vendor/uPlot.iife.min.js';
    s.onload = () => resolve(window.uPlot);
    s.onerror = () => { loading = null; reject(new Error('cannot load uPlot')); };
    document.head.append(s);
  });
  return loading;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function palette() {
  return cssVar('--series').split(',').map(s => s.trim()).filter(Boolean);
}

// ---- units ----

/** Unit names as Prometheus' metadata or people write them → the symbol shown. */
const UNIT_ALIASES = {
  celsius: '°C', degc: '°C', '°c': '°C', fahrenheit: '°F', degf: '°F', '°f': '°F', kelvin: 'K',
  percent: '%', pct: '%', percentage: '%',
  watts: 'W', watt: 'W', w: 'W', kilowatts: 'kW', kw: 'kW',
  volts: 'V', volt: 'V', v: 'V', amperes: 'A', ampere: 'A', amps: 'A', a: 'A',
  hertz: 'Hz', hz: 'Hz', joules: 'J', wh: 'Wh', watthours: 'Wh', kwh: 'kWh', kilowatthours: 'kWh',
  seconds: 's', second: 's', sec: 's', s: 's', milliseconds: 'ms', ms: 'ms',
  bytes: 'bytes', byte: 'bytes', b: 'bytes',
  lux: 'lx', lx: 'lx', hectopascals: 'hPa', hpa: 'hPa', pascals: 'Pa', pa: 'Pa',
  meters: 'm', metres: 'm', dbm: 'dBm', ratio: 'ratio',
};

/** Units offered in the unit fields (any text is allowed). */
export const COMMON_UNITS = ['°C', '°F', '%', 'ratio', 'W', 'kW', 'Wh', 'kWh', 'V', 'A', 'Hz', 'hPa', 'lx', 'dBm', 'ppm', 'µg/m³', 'mm', 'm/s', 's', 'ms', 'bytes'];

/** A unit as shown: aliases resolved, blank → null. */
export function normUnit(unit) {
  if (unit === null || unit === undefined) return null;
  const u = String(unit).trim();
  if (!u) return null;
  return UNIT_ALIASES[u.toLowerCase()] || u;
}

/**
 * A unit read off a Prometheus-style metric name's suffix
 * (`perch_host_memory_used_bytes` → bytes, `…_seconds` → s,
 * `…_usage_ratio` → ratio, `…_celsius` → °C), or null.
 */
export function unitFromName(name) {
  const m = /_(bytes|seconds|celsius|ratio|percent|volts|watts|amperes|hertz|joules|lux)(_total)?$/.exec(name || '');
  if (!m) return /_bits_per_second$/.test(name || '') ? 'bit/s' : null;
  return normUnit(m[1]);
}

const SI = new Set(['W', 'Wh', 'V', 'A', 'VA', 'var', 'Hz', 'J', 'bit/s', 'Pa']);
const SMALL_SI = new Set(['W', 'V', 'A']);

function fmtDuration(v) {
  const a = Math.abs(v);
  if (a === 0) return '0 s';
  if (a < 1) return `${fmtNum(v * 1000)} ms`;
  if (a < 60) return `${fmtNum(v)} s`;
  if (a < 3600) return `${fmtNum(v / 60)} min`;
  if (a < 86400) return `${fmtNum(v / 3600)} h`;
  return `${fmtNum(v / 86400)} d`;
}

/**
 * A value with its unit, scaled where the unit allows: `21.5 °C`, `48 %`,
 * `1.25 kW`, `350 ms`, `4.1 MiB`, a ratio as a percentage. `fmt` formats
 * the number of units without a scale of their own.
 */
export function fmtValue(v, unit, fmt = fmtNum) {
  if (v === null || v === undefined || Number.isNaN(v) || !Number.isFinite(v)) return fmt(v);
  const u = normUnit(unit);
  if (!u) return fmt(v);
  if (u === 'bytes') return fmtBytes(v);
  if (u === 's') return fmtDuration(v);
  if (u === 'ms') return fmtDuration(v / 1000);
  if (u === 'ratio') return `${fmtNum(v * 100)} %`;
  if (SI.has(u)) {
    const a = Math.abs(v);
    if (a >= 1e9) return `${fmtNum(v / 1e9)} G${u}`;
    if (a >= 1e6) return `${fmtNum(v / 1e6)} M${u}`;
    if (a >= 1e3) return `${fmtNum(v / 1e3)} k${u}`;
    if (a > 0 && a < 1 && SMALL_SI.has(u)) return `${fmtNum(v * 1e3)} m${u}`;
  }
  return fmtUnit(v, u, fmt);
}

// ---- legends ----

/** Grafana's and Prometheus' legend template: `{{device}} {{ topic }}`. */
export function legendText(template, metric) {
  return String(template).replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, (_, k) => (metric && metric[k] !== undefined ? metric[k] : ''));
}

/**
 * Readable names for series shown together. entries: [{metric, qi}];
 * queries: the query texts; legends: a template per query ('' for the
 * default). The default is the metric name with only the labels whose
 * values differ between the series (a series without a name — an
 * expression's — goes by its query instead, or by those labels).
 */
export function legendLabels(entries, queries = [], legends = []) {
  const keys = new Set();
  for (const e of entries) for (const k of Object.keys(e.metric || {})) if (k !== '__name__') keys.add(k);
  const varying = [...keys].sort().filter(k => new Set(entries.map(e => (e.metric || {})[k] ?? '\u0000')).size > 1);
  const severalQueries = new Set(entries.map(e => e.qi)).size > 1;
  return entries.map(e => {
    const metric = e.metric || {};
    const template = (legends[e.qi] || '').trim();
    if (template) {
      const text = legendText(template, metric).trim();
      if (text) return text;
    }
    const parts = varying.filter(k => k in metric).map(k => `${k}="${String(metric[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`);
    const labels = parts.length ? `{${parts.join(', ')}}` : '';
    const query = queries[e.qi] || '';
    const base = metric.__name__ || (severalQueries || !labels ? query : '');
    return (base + labels) || seriesName(metric);
  });
}

/**
 * Prometheus matrices (one per query) → uPlot's aligned data, each series
 * with a readable `label` (see legendLabels), its full name as `title`, its
 * `metric` and the index of its query `qi`. Non-finite values become gaps.
 */
export function alignMatrices(results, queries = [], { legends = [] } = {}) {
  const times = new Set();
  const series = [];
  for (const [qi, result] of results.entries()) {
    for (const r of result) {
      const m = new Map();
      for (const [t, v] of r.values) {
        const n = Number(v);
        m.set(t, Number.isFinite(n) ? n : null);
        times.add(t);
      }
      series.push({ metric: r.metric || {}, qi, points: m });
    }
  }
  const labels = legendLabels(series, queries, legends);
  const xs = [...times].sort((a, b) => a - b);
  return {
    xs,
    series: series.map((s, i) => {
      const full = seriesName(s.metric);
      return {
        label: labels[i],
        title: full === '{}' ? (queries[s.qi] || full) : full,
        metric: s.metric,
        qi: s.qi,
        values: xs.map(t => (s.points.has(t) ? s.points.get(t) : null)),
      };
    }),
  };
}

/**
 * A series name with line-break opportunities after `{`, `,` and `/`, so a
 * long one wraps between its labels, not inside a word.
 */
export function breakable(text) {
  return String(text).split(/(?<=[{,/])/).flatMap((part, i) => (i ? [h('wbr'), part] : [part]));
}

function stats(values) {
  let min = null, max = null, last = null;
  for (const v of values) {
    if (v === null) continue;
    if (min === null || v < min) min = v;
    if (max === null || v > max) max = v;
    last = v;
  }
  return { min, max, last };
}

/**
 * Which y axis each series goes on, by unit: one axis when all series share
 * a unit (or none has one), a left and a right one for two units; with more
 * than two, one axis without a unit (the legend still says each series').
 * → {axes: [unit|null, …] (1 or 2), of: [axis index per series]}
 */
export function unitAxes(units) {
  const distinct = [...new Set(units.map(u => u || null))];
  if (distinct.length === 2) return { axes: distinct, of: units.map(u => distinct.indexOf(u || null)) };
  return { axes: [distinct.length === 1 ? distinct[0] : null], of: units.map(() => 0) };
}

/** The widest tick label's width in px, for the axis' size. */
function axisSize(values) {
  const longest = Math.max(3, ...(values || []).map(v => String(v ?? '').length));
  return Math.min(110, Math.ceil(longest * 7.2) + 18);
}

/**
 * A line (or bar) chart in `container` with a legend table after it.
 * opts: {xs (seconds), series: [{label, title, values, unit}], xRange: [from, to] (seconds), height, bars,
 *        legend (false: none), onSelect(fromMs, toMs), yFormat, unit (for series without one),
 *        spanGaps (join the points across gaps: sparse sensors), tooltip (false: none),
 *        cursor ({left, top}: where the cursor starts, e.g. the last chart's on a refresh),
 *        bands ([{from, to (seconds), state ('firing' | 'pending'), label, open}]: spans shaded
 *        behind the series — alerts — and listed under the chart),
 *        thresholds ([{value, label}]: dashed lines on the left axis, kept in range)}
 * A unit is written above its y axis, on its ticks, after the legend's and
 * the tooltip's values. Returns {destroy(), cursor()} (cursor(): where the
 * cursor is over the plot, or null).
 */
/** "10:02–10:15" (with the dates when the span is not today's). */
function spanText(from, to) {
  const a = new Date(from * 1000), b = new Date(to * 1000);
  const today = new Date().toDateString();
  const fmt = d => (d.toDateString() === today ? d.toLocaleTimeString() : d.toLocaleString());
  return to - from < 1 ? fmt(a) : `${fmt(a)}–${fmt(b)}`;
}

export async function chart(container, opts) {
  const uPlot = await loadUPlot();
  const colours = palette();
  const plotBox = h('div', { class: 'chart' });
  const tip = opts.tooltip === false ? null : h('div', { class: 'chart-tip', hidden: true });
  const legend = opts.legend === false ? null : h('table', { class: 'legend' });
  const units = opts.series.map(s => normUnit(s.unit || opts.unit) || null);
  const yAxes = unitAxes(units);
  const shownUnit = u => (u === 'ratio' ? '%' : u === 'bytes' ? 'bytes' : u);
  // The units as text over the axes (uPlot draws on a canvas, which neither
  // a screen reader nor a test can read).
  const unitRow = yAxes.axes.some(Boolean)
    ? h('div', { class: 'axis-units' },
      h('span', { class: 'axis-unit', title: 'Unit of the left axis' }, shownUnit(yAxes.axes[0]) || ''),
      yAxes.axes[1] ? h('span', { class: 'axis-unit right', title: 'Unit of the right axis' }, shownUnit(yAxes.axes[1])) : null)
    : null;
  const bands = opts.bands || [];
  const thresholds = opts.thresholds || [];
  // The shaded spans as text too: the canvas says nothing to a screen
  // reader or a test.
  const bandList = bands.length
    ? h('ul', { class: 'chart-bands' }, bands.map(b => h('li', { class: `band-${b.state}`, dataset: { from: b.from, to: b.to, state: b.state } },
      h('span', { class: 'swatch', 'aria-hidden': 'true' }), `${b.label} · ${b.state} ${b.open ? `since ${spanText(b.from, b.from)}` : spanText(b.from, b.to)}`)))
    : null;
  // A wide legend scrolls in its own box, never the page.
  container.replaceChildren(unitRow || '', plotBox, bandList || '', legend ? h('div', { class: 'legend-box' }, legend) : '');
  let u = null;
  const shown = opts.series.map(() => true);
  const fmtOf = i => v => fmtValue(v, units[i], opts.yFormat || fmtNum);
  const tickFmt = unit => (_, ticks) => ticks.map(v => (opts.yFormat && !unit ? opts.yFormat(v) : fmtValue(v, unit, opts.yFormat || fmtNum)));
  const span = opts.xRange ? opts.xRange[1] - opts.xRange[0] : (opts.xs.at(-1) - opts.xs[0]) || 0;

  // A tap pins the tooltip until the next touch elsewhere: a phone has no
  // pointer to hover with (and may report the pointer leaving after a tap).
  let pinned = false;
  const unpin = e => {
    if (!pinned || (u && u.over.contains(e.target))) return;
    pinned = false;
    if (tip) tip.hidden = true;
  };
  document.addEventListener('touchstart', unpin, { passive: true });

  function showTip(uu) {
    if (!tip) return;
    const idx = uu.cursor.idx;
    if (idx === null || idx === undefined || uu.cursor.left < 0) { if (!pinned) tip.hidden = true; return; }
    const t = uu.data[0][idx];
    const when = new Date(t * 1000);
    const rows = [];
    opts.series.forEach((s, i) => {
      if (!shown[i]) return;
      const v = s.values[idx];
      rows.push(h('tr', null,
        h('td', { class: 'tip-name', title: s.title || s.label },
          h('span', { class: 'swatch', style: { background: colours[i % colours.length] }, 'aria-hidden': 'true' }), breakable(s.label)),
        h('td', { class: 'num', dataset: { value: v ?? '' } }, v === null || v === undefined ? '—' : fmtOf(i)(v))));
    });
    const max = 25;
    tip.replaceChildren(
      h('div', { class: 'tip-time' }, span > 86400 ? when.toLocaleString() : when.toLocaleTimeString()),
      h('table', null, h('tbody', null, rows.slice(0, max))),
      rows.length > max ? h('div', { class: 'muted' }, `and ${rows.length - max} more`) : '');
    tip.hidden = false;
    const box = plotBox.getBoundingClientRect(), over = uu.over.getBoundingClientRect();
    const x0 = over.left - box.left + uu.cursor.left, y0 = over.top - box.top + uu.cursor.top;
    const tw = tip.offsetWidth, th = tip.offsetHeight, bw = plotBox.clientWidth;
    let x = x0 + 14;
    if (x + tw > bw) x = x0 - tw - 14;
    x = Math.max(0, Math.min(x, bw - tw));
    const y = Math.max(0, Math.min(y0 + 14, plotBox.clientHeight - th));
    tip.style.left = `${Math.round(x)}px`;
    tip.style.top = `${Math.round(y)}px`;
  }

  const build = () => {
    if (u) u.destroy();
    const fg = cssVar('--muted'), grid = cssVar('--line');
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const width = Math.max(plotBox.clientWidth || container.clientWidth || 300, 200);
    const series = [{}].concat(opts.series.map((s, i) => ({
      label: s.label,
      scale: yAxes.of[i] ? 'y2' : 'y',
      show: shown[i],
      stroke: colours[i % colours.length],
      fill: opts.bars ? colours[i % colours.length] + '99' : undefined,
      width: 1.5,
      spanGaps: !!opts.spanGaps,
      paths: opts.bars ? uPlot.paths.bars({ size: [0.9, 40], align: 1 }) : undefined,
      value: (_, v) => fmtOf(i)(v),
      ...(opts.bars ? { points: { show: false } } : {}),
    })));
    u = new uPlot({
      width,
      height: opts.height || 240,
      series,
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: false } },
      select: { show: true },
      // The whole requested range, not just where there is data.
      scales: {
        x: { time: true, ...(opts.xRange ? { range: () => opts.xRange } : {}) },
        // A threshold is always in view, however far the data is from it.
        ...(thresholds.length ? { y: { range: (_, lo, hi) => {
          const vs = thresholds.map(t => t.value).concat([lo, hi].filter(Number.isFinite));
          return uPlot.rangeNum(Math.min(...vs), Math.max(...vs), 0.1, true);
        } } } : {}),
      },
      axes: [
        { ...axis },
        { ...axis, scale: 'y', size: (_, values) => axisSize(values), values: tickFmt(yAxes.axes[0]) },
      ].concat(yAxes.axes.length > 1 ? [{
        ...axis, scale: 'y2', side: 1, size: (_, values) => axisSize(values), grid: { show: false },
        values: tickFmt(yAxes.axes[1]),
      }] : []),
      hooks: {
        setSelect: [uu => {
          if (!opts.onSelect || uu.select.width < 3) return;
          const from = uu.posToVal(uu.select.left, 'x') * 1000;
          const to = uu.posToVal(uu.select.left + uu.select.width, 'x') * 1000;
          uu.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          opts.onSelect(from, to);
        }],
        setCursor: [showTip],
        drawClear: [uu => {
          if (!bands.length) return;
          const ctx = uu.ctx;
          ctx.save();
          for (const b of bands) {
            const x0 = uu.valToPos(b.from, 'x', true);
            // A span seen at one evaluation still shows.
            const x1 = Math.max(uu.valToPos(b.to, 'x', true), x0 + 2 * devicePixelRatio);
            const left = Math.max(x0, uu.bbox.left), right = Math.min(x1, uu.bbox.left + uu.bbox.width);
            if (right <= left) continue;
            ctx.fillStyle = b.state === 'firing' ? 'rgba(220, 38, 38, 0.16)' : 'rgba(217, 119, 6, 0.14)';
            ctx.fillRect(left, uu.bbox.top, right - left, uu.bbox.height);
          }
          ctx.restore();
        }],
        draw: [uu => {
          if (!thresholds.length) return;
          const ctx = uu.ctx;
          ctx.save();
          ctx.strokeStyle = 'rgb(220, 38, 38)';
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          for (const t of thresholds) {
            const y = uu.valToPos(t.value, 'y', true);
            ctx.beginPath();
            ctx.moveTo(uu.bbox.left, y);
            ctx.lineTo(uu.bbox.left + uu.bbox.width, y);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    }, [opts.xs, ...opts.series.map(s => s.values)], plotBox);
    if (tip) {
      plotBox.append(tip);
      // A finger on the chart moves the cursor (a tap shows the values there).
      const touch = e => {
        const t = e.touches && e.touches[0];
        if (!t || !u) return;
        const r = u.over.getBoundingClientRect();
        pinned = true;
        u.setCursor({ left: t.clientX - r.left, top: t.clientY - r.top });
      };
      u.over.addEventListener('touchstart', touch, { passive: true });
      u.over.addEventListener('touchmove', touch, { passive: true });
    }
  };

  const renderLegend = () => {
    if (!legend) return;
    legend.replaceChildren(h('thead', null, h('tr', null,
      h('th', null, 'series'), h('th', { class: 'num min' }, 'min'), h('th', { class: 'num max' }, 'max'), h('th', { class: 'num last' }, 'last'))));
    const body = h('tbody');
    opts.series.forEach((s, i) => {
      const st = stats(s.values);
      const colour = colours[i % colours.length];
      const fmt = fmtOf(i);
      body.append(h('tr', { class: shown[i] ? '' : 'off' },
        h('td', null, h('button', {
          type: 'button', 'aria-pressed': String(shown[i]), title: s.title && s.title !== s.label ? `${s.title} (show or hide)` : 'Show or hide this series',
          onclick: () => { shown[i] = !shown[i]; u.setSeries(i + 1, { show: shown[i] }); renderLegend(); },
        }, h('span', { class: 'swatch', style: { background: colour }, 'aria-hidden': 'true' }), breakable(s.label))),
        h('td', { class: 'num min', dataset: { value: st.min ?? '' } }, fmt(st.min)),
        h('td', { class: 'num max', dataset: { value: st.max ?? '' } }, fmt(st.max)),
        h('td', { class: 'num last', dataset: { value: st.last ?? '' } }, fmt(st.last))));
    });
    legend.append(body);
  };

  build();
  renderLegend();
  if (opts.cursor && u) u.setCursor(opts.cursor);
  let lastWidth = plotBox.clientWidth;
  const ro = new ResizeObserver(() => {
    const w = plotBox.clientWidth;
    if (u && w > 0 && Math.abs(w - lastWidth) > 2) { lastWidth = w; u.setSize({ width: w, height: opts.height || 240 }); }
  });
  ro.observe(plotBox);
  const onTheme = () => build();
  window.addEventListener('perch-theme', onTheme);
  return {
    cursor: () => (u && u.cursor.left >= 0 && u.cursor.idx !== null && u.cursor.idx !== undefined ? { left: u.cursor.left, top: u.cursor.top } : null),
    destroy() {
      ro.disconnect();
      document.removeEventListener('touchstart', unpin);
      window.removeEventListener('perch-theme', onTheme);
      if (u) u.destroy();
      u = null;
    },
  };
}
