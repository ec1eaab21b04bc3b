// Alerts: the pending and firing alerts (/api/v1/alerts) with their labels,
// summary and how long they have been active — admins can silence one for
// 2 hours (POST /api/v1/silences, all its labels as matchers) — the
// silences (/api/v1/silences; admins expire them), and every rule group
// (/api/v1/rules) with each rule's state, health (its last error), query
// (a link to Metrics) and last evaluation — refreshed every 10 s.
// docs/alerts.md says where the rules come from and how they notify.

import { api, h, every, fmtAgo, fmtNum, fmtTime, showError, isAdmin, notify } from '../lib.js';

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
  view.replaceChildren(
    h('h1', null, 'Alerts'),
    summary, errorBox, activeBox, silenceBox,
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
      ? rules.map(groupSection)
      : [h('p', { class: 'muted' }, 'No rules: add rule files under [alerts] rule_files.')]));
  }
  ctx.cleanup(every(REFRESH_MS, refresh));
}
