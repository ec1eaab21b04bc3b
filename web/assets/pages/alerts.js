// Alerts: the pending and firing alerts (/api/v1/alerts) with their labels,
// summary and how long they have been active, and every rule group
// (/api/v1/rules) with each rule's state, health (its last error), query
// (a link to Metrics) and last evaluation — refreshed every 10 s.
// docs/alerts.md says where the rules come from and how they notify.

import { api, h, every, fmtAgo, fmtTime, showError } from '../lib.js';

const REFRESH_MS = 10000;

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

function ruleRow(r) {
  const kind = r.type === 'alerting' ? `alert${r.duration ? `, for ${r.duration} s` : ''}` : 'recording rule';
  return h('tr', { dataset: { rule: r.name } },
    h('td', null, h('b', null, r.name), h('div', { class: 'muted small' }, kind)),
    h('td', { dataset: { label: 'state' } }, r.type === 'alerting' ? badge(r.state) : ''),
    h('td', { dataset: { label: 'health' } },
      h('span', { class: r.health === 'err' ? 'bad' : r.health === 'ok' ? 'good' : 'muted' }, r.health),
      r.lastError ? h('div', { class: 'bad small' }, r.lastError) : null),
    h('td', { class: 'query', dataset: { label: 'query' } }, graphLink(r.query)));
}

function groupSection(g) {
  const evaluated = g.lastEvaluation && !g.lastEvaluation.startsWith('0001')
    ? [' · evaluated ', since(g.lastEvaluation)] : [];
  return h('section', { class: 'card rule-group', dataset: { group: g.name } },
    h('h3', null, g.name, ' ', h('span', { class: 'muted small' }, `${g.file} · every ${g.interval} s`, ...evaluated)),
    h('table', { class: 'rules' },
      h('thead', null, h('tr', null,
        h('th', null, 'rule'), h('th', null, 'state'), h('th', null, 'health'), h('th', null, 'query'))),
      h('tbody', null, g.rules.map(ruleRow))));
}

export default async function (view, ctx) {
  const errorBox = h('div');
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading…');
  const activeBody = h('tbody');
  const activeBox = h('div', { class: 'card', hidden: true },
    h('table', { class: 'alerts' },
      h('thead', null, h('tr', null,
        h('th', null, 'state'), h('th', null, 'alert'), h('th', null, 'labels'),
        h('th', null, 'summary'), h('th', null, 'active since'), h('th', { class: 'num' }, 'value'))),
      activeBody));
  const rulesBox = h('div');
  view.replaceChildren(
    h('h1', null, 'Alerts'),
    summary, errorBox, activeBox,
    h('h2', null, 'Rules'),
    h('p', { class: 'muted' }, 'perch evaluates Prometheus rule files ([alerts] rule_files) and its built-in rules; see docs/alerts.md.'),
    rulesBox);

  async function refresh() {
    let alerts, groups;
    try {
      [alerts, groups] = await Promise.all([
        api('/api/v1/alerts', { signal: ctx.signal }),
        api('/api/v1/rules', { signal: ctx.signal }),
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
      h('td', { class: 'num', dataset: { label: 'value' } }, a.value))));

    const rules = groups.groups || [];
    rulesBox.replaceChildren(...(rules.length
      ? rules.map(groupSection)
      : [h('p', { class: 'muted' }, 'No rules: add rule files under [alerts] rule_files.')]));
  }
  ctx.cleanup(every(REFRESH_MS, refresh));
}
