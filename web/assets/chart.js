// uPlot, loaded on first use from /assets/vendor/ (scripts/vendor-web puts
// it there), wrapped for perch: theme colours, resize, drag-to-zoom, units
// on the y axes, and a legend table with min / max / last that toggles
// series.

import { h, fmtNum, fmtUnit, seriesName } from './lib.js';

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

/**
 * Prometheus matrices (one per query) → uPlot's aligned data and labels.
 * Non-finite values become gaps.
 */
export function alignMatrices(results, queries = []) {
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
      // An expression's result has no name: say which query it came from.
      const name = seriesName(r.metric);
      const label = r.metric && r.metric.__name__ ? name : name === '{}' ? (queries[qi] || name) : `${queries[qi] || ''} ${name}`.trim();
      series.push({ label, metric: r.metric || {}, points: m });
    }
  }
  const xs = [...times].sort((a, b) => a - b);
  return {
    xs,
    series: series.map(s => ({ label: s.label, metric: s.metric, values: xs.map(t => (s.points.has(t) ? s.points.get(t) : null)) })),
  };
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

/**
 * A line (or bar) chart in `container` with a legend table after it.
 * opts: {xs (seconds), series: [{label, values, unit}], xRange: [from, to] (seconds), height, bars,
 *        legend (false: none), onSelect(fromMs, toMs), yFormat, unit (for series without one),
 *        spanGaps (join the points across gaps: sparse sensors)}
 * A unit is written above its y axis and after the legend's values.
 * Returns {destroy()}.
 */
export async function chart(container, opts) {
  const uPlot = await loadUPlot();
  const colours = palette();
  const plotBox = h('div', { class: 'chart' });
  const legend = opts.legend === false ? null : h('table', { class: 'legend' });
  const units = opts.series.map(s => s.unit || opts.unit || null);
  const yAxes = unitAxes(units);
  // The units as text over the axes (uPlot draws on a canvas, which neither
  // a screen reader nor a test can read).
  const unitRow = yAxes.axes.some(Boolean)
    ? h('div', { class: 'axis-units' },
      h('span', { class: 'axis-unit', title: 'Unit of the left axis' }, yAxes.axes[0] || ''),
      yAxes.axes[1] ? h('span', { class: 'axis-unit right', title: 'Unit of the right axis' }, yAxes.axes[1]) : null)
    : null;
  container.replaceChildren(unitRow || '', plotBox, legend || '');
  let u = null;
  const shown = opts.series.map(() => true);

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
      value: (_, v) => fmtUnit(v, units[i]),
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
      scales: { x: { time: true, ...(opts.xRange ? { range: () => opts.xRange } : {}) } },
      axes: [
        { ...axis },
        { ...axis, scale: 'y', size: 60, values: (_, ticks) => ticks.map(v => (opts.yFormat || fmtNum)(v)) },
      ].concat(yAxes.axes.length > 1 ? [{
        ...axis, scale: 'y2', side: 1, size: 60, grid: { show: false },
        values: (_, ticks) => ticks.map(v => (opts.yFormat || fmtNum)(v)),
      }] : []),
      hooks: {
        setSelect: [uu => {
          if (!opts.onSelect || uu.select.width < 3) return;
          const from = uu.posToVal(uu.select.left, 'x') * 1000;
          const to = uu.posToVal(uu.select.left + uu.select.width, 'x') * 1000;
          uu.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          opts.onSelect(from, to);
        }],
      },
    }, [opts.xs, ...opts.series.map(s => s.values)], plotBox);
  };

  const renderLegend = () => {
    if (!legend) return;
    legend.replaceChildren(h('thead', null, h('tr', null,
      h('th', null, 'series'), h('th', { class: 'num' }, 'min'), h('th', { class: 'num' }, 'max'), h('th', { class: 'num' }, 'last'))));
    const body = h('tbody');
    opts.series.forEach((s, i) => {
      const st = stats(s.values);
      const colour = colours[i % colours.length];
      const fmt = v => fmtUnit(v, units[i], opts.yFormat || fmtNum);
      body.append(h('tr', { class: shown[i] ? '' : 'off' },
        h('td', null, h('button', {
          type: 'button', 'aria-pressed': String(shown[i]), title: 'Show or hide this series',
          onclick: () => { shown[i] = !shown[i]; u.setSeries(i + 1, { show: shown[i] }); renderLegend(); },
        }, h('span', { class: 'swatch', style: { background: colour }, 'aria-hidden': 'true' }), s.label)),
        h('td', { class: 'num min', dataset: { value: st.min ?? '' } }, fmt(st.min)),
        h('td', { class: 'num max', dataset: { value: st.max ?? '' } }, fmt(st.max)),
        h('td', { class: 'num last', dataset: { value: st.last ?? '' } }, fmt(st.last))));
    });
    legend.append(body);
  };

  build();
  renderLegend();
  let lastWidth = plotBox.clientWidth;
  const ro = new ResizeObserver(() => {
    const w = plotBox.clientWidth;
    if (u && w > 0 && Math.abs(w - lastWidth) > 2) { lastWidth = w; u.setSize({ width: w, height: opts.height || 240 }); }
  });
  ro.observe(plotBox);
  const onTheme = () => build();
  window.addEventListener('perch-theme', onTheme);
  return {
    destroy() {
      ro.disconnect();
      window.removeEventListener('perch-theme', onTheme);
      if (u) u.destroy();
      u = null;
    },
  };
}
