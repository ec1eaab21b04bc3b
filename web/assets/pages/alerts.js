// Alerts: the pending and firing alerts (/api/v1/alerts) with their labels,
// summary and how long they have been active — admins can silence one for
// 2 hours (POST /api/v1/silences, all its labels as matchers) — the
// silences (/api/v1/silences; admins expire them), and every rule group
// (/api/v1/rules) with each rule's state, health (its last error), query
// (a link to Metrics) and last evaluation — refreshed every 10 s. The
// history (/api/v1/alerts/history): when each alert was pending and firing
// over the last day or week. A rule editor: an alerting rule previewed
// over the last 24 h (POST /api/v1/rules/preview) — the expression (or
// the side compared with a number) charted with its threshold, and where
// the rule would have been pending and firing shaded — then saved, by
// admins, as a rule file (PUT /api/v1/rules/files/NAME.yml).
// docs/alerts.md says where the rules come from and how they notify.

import { api, h, field, every, fmtAgo, fmtNum, fmtTime, fmtInterval, showError, isAdmin, notify } from '../lib.js';
import { chart, alignMatrices } from '../chart.js';

const REFRESH_MS = 10000;
const SILENCE_MS = 2 * 3600 * 1000;

function badge(state) {
  return h('span', { class: `badge alert-${state}` }, state);
}

function labelChips(labels, skip = []) {
  return h('span', { class: 'chips' }, Object.entries(labels || {})
    .filter(([k]) => !skip.includes(k))
    .map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`)));
}

function since(iso) {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms) || ms <= 0) return '';
  return h('time', { datetime: iso, title: fmtTime(ms) }, fmtAgo(ms));
}

function graphLink(query) {
  return h('a', { href: '/graph?' + new URLSearchParams({ q: query, range: '6h' }), title: 'Chart this query in Metrics' },
    h('code', null, query));
}

function ruleRow(r, edit) {
  const kind = r.type === 'alerting' ? `alert${r.duration ? `, for ${r.duration} s` : ''}` : 'recording rule';
  return h('tr', { dataset: { rule: r.name } },
    h('td', null, h('b', null, r.name), h('div', { class: 'muted small' }, kind),
      r.type === 'alerting' ? h('button', { type: 'button', class: 'small', onclick: () => edit(r) }, 'Preview') : null),
    h('td', { dataset: { label: 'state' } }, r.type === 'alerting' ? badge(r.state) : ''),
    h('td', { dataset: { label: 'health' } },
      h('span', { class: r.health === 'err' ? 'bad' : r.health === 'ok' ? 'good' : 'muted' }, r.health),
      r.lastError ? h('div', { class: 'bad small' }, r.lastError) : null),
    h('td', { class: 'query', dataset: { label: 'query' } }, graphLink(r.query)));
}

function groupSection(g, edit) {
  const evaluated = g.lastEvaluation && !g.lastEvaluation.startsWith('0001')
    ? [' · evaluated ', since(g.lastEvaluation)] : [];
  return h('section', { class: 'card rule-group', dataset: { group: g.name } },
    h('h3', null, g.name, ' ', h('span', { class: 'muted small' }, `${g.file} · every ${g.interval} s`, ...evaluated)),
    h('table', { class: 'rules' },
      h('thead', null, h('tr', null,
        h('th', null, 'rule'), h('th', null, 'state'), h('th', null, 'health'), h('th', null, 'query'))),
      h('tbody', null, g.rules.map(r => ruleRow(r, edit)))));
}

/** "FreezerWarm device=freezer" */
function alertText(labels) {
  return [labels.alertname || ''].concat(Object.entries(labels).filter(([k]) => k !== 'alertname').map(([k, v]) => `${k}=${v}`)).join(' ');
}

/** A rule file of one group with one alerting rule (JSON strings are YAML's double-quoted scalars). */
function ruleFile(r) {
  const q = JSON.stringify;
  return [
    'groups:',
    `  - name: ${q(r.name)}`,
    '    rules:',
    `      - alert: ${q(r.name)}`,
    `        expr: ${q(r.expr)}`,
    r.for ? `        for: ${q(r.for)}` : null,
    r.keepFiringFor ? `        keep_firing_for: ${q(r.keepFiringFor)}` : null,
    '        labels:',
    `          severity: ${q(r.severity)}`,
    r.summary ? '        annotations:' : null,
    r.summary ? `          summary: ${q(r.summary)}` : null,
  ].filter(l => l !== null).join('\n') + '\n';
}

const HISTORY_RANGES = { '24 h': 86400e3, '7 d': 7 * 86400e3 };
const PREVIEW_MS = 86400e3;

/** The rule editor: preview over the last 24 h, then save (admins). */
function ruleEditor(ctx) {
  const name = h('input', { type: 'text', required: true, pattern: '[A-Za-z_][A-Za-z0-9_]*', placeholder: 'FreezerWarm', autocomplete: 'off' });
  const expr = h('textarea', { rows: 2, required: true, spellcheck: 'false', placeholder: 'env_temp{device="freezer"} > -12' });
  const forInput = h('input', { type: 'text', value: '5m', size: 6, placeholder: '5m' });
  const severity = h('select', null, ['warning', 'critical', 'page', 'info'].map(v => h('option', { value: v }, v)));
  const summary = h('input', { type: 'text', placeholder: '{{ $labels.device }} at {{ $value }} °C' });
  const out = h('div', { class: 'rule-preview', 'aria-live': 'polite' });
  const errorBox = h('div');
  let shown = null;
  let inFlight = null;
  // The rule loaded from the list, if any: saving it under its own name
  // would evaluate it twice (its file and the new one).
  let loaded = null;
  let keepFiringFor = '';

  function values() {
    return { name: name.value.trim(), expr: expr.value.trim(), for: forInput.value.trim(), keepFiringFor, severity: severity.value, summary: summary.value.trim() };
  }

  async function preview() {
    const r = values();
    errorBox.replaceChildren();
    if (!r.expr) { showError(errorBox, new Error('An expression is needed.')); return; }
    if (inFlight) inFlight.abort();
    const ac = new AbortController();
    inFlight = ac;
    out.replaceChildren(h('p', { class: 'muted' }, 'Evaluating over the last 24 h…'));
    const end = Date.now(), start = end - PREVIEW_MS;
    try {
      const p = await api('/api/v1/rules/preview', { method: 'POST', signal: ac.signal, body: {
        expr: r.expr, for: r.for || undefined, keep_firing_for: keepFiringFor || undefined,
        start: String(start / 1000), end: String(end / 1000) } });
      const plotted = p.plot || r.expr;
      const step = Math.max(60, Math.round(PREVIEW_MS / 1000 / 600));
      const m = await api(`/api/v1/query_range?query=${encodeURIComponent(plotted)}&start=${start / 1000}&end=${end / 1000}&step=${step}`, { signal: ac.signal });
      const data = alignMatrices([m.resultType === 'matrix' ? m.result : []], [plotted]);
      const firing = p.episodes.filter(e => e.state === 'firing');
      const said = firing.length
        ? `Over the last 24 h it would have fired ${firing.length} time${firing.length === 1 ? '' : 's'}, for ${fmtInterval(firing.reduce((t, e) => t + e.endMs - e.startMs + p.stepMs, 0))} in all.`
        : `Over the last 24 h it would not have fired${p.episodes.length ? ` (pending ${p.episodes.length} time${p.episodes.length === 1 ? '' : 's'})` : ''}.`;
      const box = h('div');
      out.replaceChildren(
        h('p', { class: 'preview-summary', dataset: { firing: firing.length } }, said,
          p.threshold ? h('span', { class: 'muted' }, ` Charted: ${plotted}; threshold ${p.threshold.op} ${fmtNum(p.threshold.value)}.`) : null,
          p.truncatedAtMs ? h('span', { class: 'bad' }, ` Stopped early at ${fmtTime(p.truncatedAtMs)}: the rule is slow to evaluate.`) : null,
          h('span', { class: 'muted' }, ` ${p.evaluations} evaluations, one every ${fmtInterval(p.stepMs)}.`)),
        box);
      if (shown) shown.destroy();
      shown = null;
      if (!data.series.length) { box.replaceChildren(h('p', { class: 'muted' }, 'The expression returned no data over the last 24 h.')); return; }
      shown = await chart(box, {
        xs: data.xs, series: data.series, height: 220, xRange: [start / 1000, end / 1000], spanGaps: true,
        thresholds: p.threshold ? [{ value: p.threshold.value }] : [],
        bands: p.episodes.map(e => ({ from: e.startMs / 1000, to: e.endMs / 1000, state: e.state, open: e.open, label: alertText({ alertname: r.name || 'rule', ...e.labels }) })),
      });
    } catch (e) {
      if (e.name === 'AbortError') return;
      out.replaceChildren();
      showError(errorBox, e);
    } finally {
      if (inFlight === ac) inFlight = null;
    }
  }

  async function save() {
    const r = values();
    errorBox.replaceChildren();
    if (!name.checkValidity() || !r.name) { showError(errorBox, new Error('The name is letters, digits and _, not starting with a digit.')); return; }
    if (!r.expr) { showError(errorBox, new Error('An expression is needed.')); return; }
    if (loaded && loaded.name === r.name) {
      showError(errorBox, new Error(`${r.name} is a rule of ${loaded.file}; saved again it would run twice. Give it a new name, or change it in ${loaded.file}.`));
      return;
    }
    try {
      const files = await api('/api/v1/rules/files');
      if ((files || []).includes(`${r.name}.yml`) && !window.confirm(`Replace the rule file ${r.name}.yml?`)) return;
      await api(`/api/v1/rules/files/${encodeURIComponent(r.name)}.yml`, { method: 'PUT', body: ruleFile(r), headers: { 'Content-Type': 'application/yaml' } });
      notify(`Rule ${r.name} saved (rule file ${r.name}.yml)`);
      ctx.refresh();
    } catch (e) { showError(errorBox, e); }
  }

  const el = h('section', { class: 'card rule-editor', 'aria-labelledby': 'rule-editor-t' },
    h('h2', { id: 'rule-editor-t' }, 'Alert rule'),
    h('p', { class: 'muted' }, 'Write a PromQL condition; the preview shows where it would have fired over the last 24 h.'),
    h('form', { onsubmit: e => { e.preventDefault(); preview(); } },
      h('div', { class: 'row wrap' }, field('Name', name), field('For', forInput), field('Severity', severity)),
      field('Expression', expr, { class: 'wide' }),
      field('Summary', summary, { class: 'wide' }),
      h('div', { class: 'row' },
        h('button', { type: 'submit', class: 'primary' }, 'Preview'),
        isAdmin() ? h('button', { type: 'button', onclick: save }, 'Save as rule file') : null)),
    errorBox, out);

  return {
    el,
    /** Fills the editor with an existing rule and previews it. */
    edit(rule, file) {
      loaded = { name: rule.name, file };
      keepFiringFor = rule.keepFiringFor ? `${rule.keepFiringFor}s` : '';
      name.value = rule.name;
      expr.value = rule.query;
      forInput.value = rule.duration ? `${rule.duration}s` : '';
      if (rule.labels && rule.labels.severity) severity.value = rule.labels.severity;
      summary.value = (rule.annotations && rule.annotations.summary) || '';
      el.scrollIntoView({ block: 'start' });
      preview();
    },
    destroy() { if (inFlight) inFlight.abort(); if (shown) shown.destroy(); },
  };
}

export default async function (view, ctx) {
  const errorBox = h('div');
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading…');
  const activeBody = h('tbody');
  const activeBox = h('div', { class: 'card', hidden: true },
    h('table', { class: 'alerts' },
      h('thead', null, h('tr', null,
        h('th', null, 'state'), h('th', null, 'alert'), h('th', null, 'labels'),
        h('th', null, 'summary'), h('th', null, 'active since'), h('th', { class: 'num' }, 'value'),
        isAdmin() ? h('th', null, h('span', { class: 'visually-hidden' }, 'actions')) : null)),
      activeBody));
  const rulesBox = h('div');
  const silenceBody = h('tbody');
  const silenceBox = h('section', { class: 'card', hidden: true, 'aria-labelledby': 'silences-t' },
    h('h2', { id: 'silences-t' }, 'Silences'),
    h('p', { class: 'muted' }, 'Silenced alerts still fire and show here; they are not notified.'),
    h('table', { class: 'alerts silences' },
      h('thead', null, h('tr', null, h('th', null, 'matches'), h('th', null, 'until'), h('th', null, 'by'), h('th', null, 'comment'),
        isAdmin() ? h('th', null, h('span', { class: 'visually-hidden' }, 'actions')) : null)),
      silenceBody));

  async function silence(a) {
    const matchers = Object.entries(a.labels).map(([name, value]) => ({ name, value, isRegex: false, isEqual: true }));
    try {
      await api('/api/v1/silences', { method: 'POST', body: {
        matchers, endsAt: new Date(Date.now() + SILENCE_MS).toISOString(),
        createdBy: 'web UI', comment: `silenced from the Alerts page` } });
      notify(`${a.labels.alertname} silenced for 2 hours`);
      refresh();
    } catch (e) { showError(errorBox, e); }
  }

  async function expire(s) {
    try {
      await api(`/api/v1/silences/${encodeURIComponent(s.id)}`, { method: 'DELETE' });
      notify('Silence expired');
      refresh();
    } catch (e) { showError(errorBox, e); }
  }
  const editor = ruleEditor({ refresh: () => refresh() });
  ctx.cleanup(() => editor.destroy());
  const historyRange = h('select', { onchange: () => refreshHistory() },
    Object.keys(HISTORY_RANGES).map(k => h('option', { value: k }, `last ${k}`)));
  const historyBody = h('div');
  const historyBox = h('section', { class: 'card', 'aria-labelledby': 'history-t' },
    h('h2', { id: 'history-t' }, 'History'),
    field('Show', historyRange, { class: 'inline' }),
    historyBody);

  async function refreshHistory() {
    const end = Date.now(), start = end - HISTORY_RANGES[historyRange.value];
    let episodes;
    try {
      episodes = await api(`/api/v1/alerts/history?start=${start / 1000}&end=${end / 1000}`, { signal: ctx.signal });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      showError(historyBody, e);
      return;
    }
    const list = episodes.slice().sort((a, b) => b.startMs - a.startMs);
    historyBody.replaceChildren(list.length
      ? h('table', { class: 'alerts history' },
        h('thead', null, h('tr', null, h('th', null, 'state'), h('th', null, 'alert'), h('th', null, 'labels'),
          h('th', null, 'from'), h('th', null, 'until'), h('th', { class: 'num' }, 'for'))),
        h('tbody', null, list.map(e => h('tr', { dataset: { historyAlert: e.labels.alertname, state: e.state } },
          h('td', null, badge(e.state)),
          h('td', null, h('b', null, e.labels.alertname)),
          h('td', { dataset: { label: 'labels' } }, labelChips(e.labels, ['alertname'])),
          h('td', { dataset: { label: 'from' } }, fmtTime(e.startMs)),
          h('td', { dataset: { label: 'until' } }, e.open ? 'still' : fmtTime(e.endMs)),
          h('td', { class: 'num', dataset: { label: 'for' } }, fmtInterval(e.endMs - e.startMs))))))
      : h('p', { class: 'muted' }, `No alert was pending or firing in the last ${historyRange.value}.`));
  }

  view.replaceChildren(
    h('h1', null, 'Alerts'),
    summary, errorBox, activeBox, silenceBox, historyBox, editor.el,
    h('h2', null, 'Rules'),
    h('p', { class: 'muted' }, 'perch evaluates Prometheus rule files ([alerts] rule_files) and its built-in rules; see docs/alerts.md.'),
    rulesBox);

  async function refresh() {
    let alerts, groups, silences;
    try {
      [alerts, groups, silences] = await Promise.all([
        api('/api/v1/alerts', { signal: ctx.signal }),
        api('/api/v1/rules', { signal: ctx.signal }),
        api('/api/v1/silences', { signal: ctx.signal }),
      ]);
      errorBox.replaceChildren();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      showError(errorBox, e);
      return;
    }
    const list = (alerts.alerts || []).slice().sort((a, b) =>
      (a.state === b.state ? 0 : a.state === 'firing' ? -1 : 1) || a.activeAt.localeCompare(b.activeAt));
    const firing = list.filter(a => a.state === 'firing').length;
    summary.textContent = list.length
      ? `${firing} firing, ${list.length - firing} pending`
      : 'Nothing is firing or pending.';
    activeBox.hidden = !list.length;
    activeBody.replaceChildren(...list.map(a => h('tr', { dataset: { alert: a.labels.alertname, state: a.state } },
      h('td', null, badge(a.state)),
      h('td', null, h('b', null, a.labels.alertname)),
      h('td', { dataset: { label: 'labels' } }, labelChips(a.labels, ['alertname'])),
      h('td', { dataset: { label: 'summary' } }, a.annotations.summary || a.annotations.description || ''),
      h('td', { dataset: { label: 'active since' } }, since(a.activeAt)),
      h('td', { class: 'num', dataset: { label: 'value' }, title: a.value }, fmtNum(parseFloat(a.value))),
      isAdmin() ? h('td', null, h('button', { type: 'button', onclick: () => silence(a) }, 'Silence 2 h')) : null)));
    const active = (silences || []).filter(s => s.status.state !== 'expired');
    silenceBox.hidden = !active.length;
    silenceBody.replaceChildren(...active.map(s => h('tr', { dataset: { silence: s.id } },
      h('td', null, h('span', { class: 'chips' }, s.matchers.map(m =>
        h('span', { class: 'chip' }, `${m.name}${m.isEqual === false ? '!' : ''}${m.isRegex ? '=~' : '='}${m.value}`)))),
      h('td', { dataset: { label: 'until' } }, h('time', { datetime: s.endsAt, title: s.endsAt }, fmtTime(Date.parse(s.endsAt)))),
      h('td', { dataset: { label: 'by' } }, s.createdBy || ''),
      h('td', { dataset: { label: 'comment' } }, s.comment || ''),
      isAdmin() ? h('td', null, h('button', { type: 'button', onclick: () => expire(s) }, 'Expire')) : null)));

    const rules = groups.groups || [];
    rulesBox.replaceChildren(...(rules.length
      ? rules.map(g => groupSection(g, r => editor.edit(r, g.file)))
      : [h('p', { class: 'muted' }, 'No rules: add rule files under [alerts] rule_files.')]));
  }
  ctx.cleanup(every(REFRESH_MS, refresh));
  ctx.cleanup(every(60000, refreshHistory));
}
