// Explorer: the broker's topic tree with last values and rates
// (/api/v1/topics, every 3 s), a topic's recent messages
// (/api/v1/messages?topic=), a live tail over server-sent events
// (/api/v1/live?topic=FILTER), and a publish form (POST /api/v1/publish).
// Each message says how perch read it (its `read`: family, format, series
// and samples stored, or why none). /explorer?topic=T opens with T chosen.
// A topic whose messages were stored as series links to their chart
// (/graph?q={topic="T"}). Long topics and payloads end in an ellipsis or
// wrap between words, never mid-word; nothing is wider than a phone.

import { api, h, field, every, fmtNum, fmtTime, showError, isAdmin, escapeLabel } from '../lib.js';

const TAIL_MAX = 200;
const RECENT = 20;

/** How perch read a message, in one short line (nothing if not known). */
function readLine(read) {
  if (!read) return null;
  const how = [read.family, read.format].filter(Boolean).join(' · ');
  let what;
  if (read.outcome === 'stored') {
    what = `${read.series} series, ${read.samples} sample${read.samples === 1 ? '' : 's'} stored`;
    if (read.note) what += ` (${read.note})`;
  } else if (read.outcome === 'unparsed') {
    what = `not read${read.note ? ': ' + read.note : ''}`;
  } else {
    what = `no samples${read.note ? ': ' + read.note : ''}`;
  }
  return h('div', { class: `read ${read.outcome || ''}`, title: 'How perch read this message' }, `${how} → ${what}`);
}

/** A chart of the series a topic's messages stored: `/graph?q=…`. */
function chartHref(topic, series, lastMs) {
  const names = [...new Set(series.map(s => s.__name__).filter(Boolean))];
  const sel = `{topic="${escapeLabel(topic)}"}`;
  const q = names.length === 1 ? names[0] + sel : sel;
  const age = Date.now() - (lastMs || Date.now());
  const range = age < 50 * 60e3 ? '1h' : age < 23 * 3600e3 ? '24h' : age < 6 * 86400e3 ? '7d' : '30d';
  return '/graph?' + new URLSearchParams({ q, range });
}

function preview(last) {
  if (!last) return '';
  const p = last.encoding === 'base64' ? `(binary, ${last.bytes} B)` : last.payload;
  return p.length > 80 ? p.slice(0, 80) + '…' : p;
}

export default async function (view, ctx) {
  // ---- topic tree ----
  const wanted = (ctx.query.get('topic') || '').trim();
  const filterInput = h('input', { id: 'tree-filter', value: wanted || '#', spellcheck: 'false' });
  const treeBox = h('ul', { class: 'tree', 'aria-label': 'Topics' });
  const treeStatus = h('p', { class: 'muted' });
  const detail = h('div', { 'aria-live': 'polite' });
  const open = new Set();
  let root = null;
  let selected = null;
  let pendingSelect = wanted || null;
  if (wanted) {
    // Its ancestors open, so that it shows in the tree.
    const levels = wanted.split('/');
    for (let i = 1; i < levels.length; i++) open.add(levels.slice(0, i).join('/'));
  }

  function nodeEl(node) {
    const label = [
      h('span', { class: 'name' }, node.name || '(empty)'),
      node.last ? h('span', { class: 'val' }, preview(node.last)) : null,
      h('span', { class: 'rate' }, `${fmtNum(node.rate_per_sec)}/s · ${node.messages}`),
      node.retained ? h('span', { class: 'rate' }, 'retained') : null,
    ];
    if (!node.children.length) {
      return h('li', null, h('button', {
        type: 'button', class: 'leaf', dataset: { topic: node.topic }, title: node.topic,
        'aria-pressed': String(selected === node.topic),
        onclick: () => select(node),
      }, label));
    }
    const d = h('details', { open: open.has(node.topic), title: node.topic },
      h('summary', null, label, node.last ? h('button', { type: 'button', class: 'rate', onclick: e => { e.preventDefault(); select(node); } }, 'show') : null));
    const kids = h('ul');
    if (open.has(node.topic)) kids.append(...node.children.map(nodeEl));
    d.append(kids);
    d.addEventListener('toggle', () => {
      if (d.open) { open.add(node.topic); if (!kids.childElementCount) kids.append(...node.children.map(nodeEl)); }
      else open.delete(node.topic);
    });
    return h('li', null, d);
  }

  function findNode(n, topic) {
    if (n.topic === topic) return n;
    for (const c of n.children) {
      if (topic === c.topic || topic.startsWith(c.topic + '/')) {
        const f = findNode(c, topic);
        if (f) return f;
      }
    }
    return null;
  }

  let recentAbort = null;
  async function loadRecent(topic, box) {
    if (recentAbort) recentAbort.abort();
    const ac = new AbortController();
    recentAbort = ac;
    ctx.signal.addEventListener('abort', () => ac.abort(), { once: true });
    try {
      const list = await api(`/api/v1/messages?limit=${RECENT}&topic=` + encodeURIComponent(topic), { signal: ac.signal });
      box.replaceChildren(list.length
        ? h('ul', { class: 'messages', 'aria-label': `Recent messages on ${topic}` }, list.map(m => h('li', null,
          h('div', { class: 'muted small' }, fmtTime(m.time_ms), ` · ${m.client_id}${m.retain ? ' · retained' : ''}`),
          h('pre', null, m.encoding === 'base64' ? `(binary, ${m.bytes} B)` : (m.payload.length > 500 ? m.payload.slice(0, 500) + '…' : m.payload)),
          readLine(m.read))))
        : h('p', { class: 'muted' }, 'No recent messages kept for this topic.'));
    } catch (e) {
      if (e.name !== 'AbortError') showError(box, e);
    }
  }

  function select(node) {
    selected = node.topic;
    const u = '/explorer?topic=' + encodeURIComponent(node.topic);
    if (location.pathname === '/explorer' && location.pathname + location.search !== u) history.replaceState(null, '', u);
    for (const b of treeBox.querySelectorAll('button.leaf')) b.setAttribute('aria-pressed', String(b.dataset.topic === node.topic));
    const l = node.last;
    const recent = h('div', null, h('p', { class: 'muted' }, 'Loading recent messages…'));
    const chartLink = h('span', { class: 'chart-link' });
    detail.replaceChildren(h('h3', { class: 'mono topic' }, node.topic),
      l ? h('dl', { class: 'kv' },
        h('dt', null, 'time'), h('dd', null, fmtTime(l.time_ms)),
        h('dt', null, 'client'), h('dd', { class: 'mono' }, l.client_id),
        h('dt', null, 'qos / retain'), h('dd', null, `${l.qos} / ${l.retain}`),
        h('dt', null, 'size'), h('dd', null, `${l.bytes} B${l.truncated ? ' (truncated)' : ''} ${l.encoding === 'base64' ? 'base64' : ''}`),
        h('dt', null, 'payload'), h('dd', null, h('pre', null, l.payload)),
        l.read ? [h('dt', null, 'read as'), h('dd', null, readLine(l.read))] : null) : h('p', { class: 'muted' }, 'No message on this topic itself.'),
      h('p', { class: 'row' },
        chartLink,
        h('button', { type: 'button', onclick: () => { tailInput.value = node.children.length ? `${node.topic}/#` : node.topic; startTail(); } }, 'Tail this topic'),
        pubTopic ? h('button', { type: 'button', onclick: () => { pubTopic.value = node.topic; pubPayload.focus(); } }, 'Publish to it') : null),
      ...(l ? [h('h4', null, 'Recent messages'), recent] : []));
    if (l) { loadRecent(node.topic, recent); findSeries(node.topic, l.time_ms, chartLink); }
  }

  /** The link to the chart of the series the topic's messages stored, if any. */
  let seriesAbort = null;
  async function findSeries(topic, lastMs, box) {
    if (seriesAbort) seriesAbort.abort();
    const ac = new AbortController();
    seriesAbort = ac;
    ctx.signal.addEventListener('abort', () => ac.abort(), { once: true });
    try {
      const sel = `{topic="${escapeLabel(topic)}"}`;
      const series = await api(`/api/v1/series?limit=200&match[]=${encodeURIComponent(sel)}`, { signal: ac.signal });
      if (!series.length) return;
      box.replaceChildren(h('a', { class: 'button primary', href: chartHref(topic, series, lastMs), title: `Chart the series stored from ${topic}` },
        `Chart its series (${series.length}${series.length >= 200 ? '+' : ''})`));
    } catch (e) {
      if (e.name !== 'AbortError') console.warn('series of', topic, e.message);
    }
  }

  async function loadTree() {
    const filter = filterInput.value.trim() || '#';
    try {
      root = await api('/api/v1/topics?filter=' + encodeURIComponent(filter), { signal: ctx.signal });
    } catch (e) {
      if (e.name !== 'AbortError') showError(treeStatus, e);
      return;
    }
    const top = root.topic === '' && !root.last ? root.children : [root];
    if (top.length) treeStatus.textContent = `${root.messages} messages, ${fmtNum(root.rate_per_sec)}/s`;
    else if (filter === '#') treeStatus.replaceChildren('No topics yet. ', h('a', { href: '/connect' }, 'Connect a device'), ' and its messages show here.');
    else treeStatus.textContent = `No topics match ${filter}.`;
    // Keep the tree still while someone is moving through it with the keyboard.
    if (!treeBox.contains(document.activeElement)) treeBox.replaceChildren(...top.map(nodeEl));
    if (pendingSelect) {
      const node = findNode(root, pendingSelect);
      if (node) { pendingSelect = null; select(node); }
      else if (!top.length) detail.replaceChildren(h('p', { class: 'muted' }, `No messages on ${wanted} yet. `, h('a', { href: '/connect' }, 'Connect a device'), '.'));
    }
  }

  const treeForm = h('form', { class: 'row', onsubmit: e => { e.preventDefault(); loadTree(); } },
    field('Topic filter', filterInput, { class: 'grow' }), h('button', { type: 'submit' }, 'Apply'));

  // ---- live tail ----
  const tailInput = h('input', { id: 'tail-filter', value: wanted || '#', spellcheck: 'false' });
  const pauseButton = h('button', { type: 'button', 'aria-pressed': 'false' }, 'Pause');
  const tailBody = h('tbody');
  const tailStatus = h('p', { class: 'muted', 'aria-live': 'polite' });
  let source = null, paused = false, pending = [], flushTimer = null, received = 0, lagged = 0;

  function flush() {
    flushTimer = null;
    if (paused || !pending.length) return;
    const rows = pending.splice(0).slice(-TAIL_MAX).reverse().map(m => h('tr', null,
      h('td', { class: 'time' }, new Date(m.time_ms).toLocaleTimeString()),
      h('td', { class: 'mono topic', title: m.topic }, m.topic),
      h('td', { class: 'payload' }, h('div', { class: 'mono' }, m.encoding === 'base64' ? `(binary, ${m.bytes} B)` : (m.payload.length > 300 ? m.payload.slice(0, 300) + '…' : m.payload)),
        readLine(m.read))));
    tailBody.prepend(...rows);
    while (tailBody.childElementCount > TAIL_MAX) tailBody.lastElementChild.remove();
    tailStatus.textContent = `${received} received${lagged ? `, ${lagged} missed (too fast to show)` : ''}`;
  }

  function startTail() {
    if (source) source.close();
    received = 0; lagged = 0; pending = [];
    tailBody.replaceChildren();
    const filter = tailInput.value.trim() || '#';
    source = new EventSource('/api/v1/live?topic=' + encodeURIComponent(filter));
    tailStatus.textContent = `Listening on ${filter}… (messages show here as they arrive)`;
    source.addEventListener('message', e => {
      received++;
      try { pending.push(JSON.parse(e.data)); } catch { return; }
      if (pending.length > TAIL_MAX) pending.splice(0, pending.length - TAIL_MAX);
      if (!flushTimer) flushTimer = setTimeout(flush, 250);
    });
    source.addEventListener('lagged', e => { lagged += Number(e.data) || 0; });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) tailStatus.textContent = 'The live feed closed (bad filter or signed out?).';
      else tailStatus.textContent = 'Reconnecting…';
    });
  }
  pauseButton.addEventListener('click', () => {
    paused = !paused;
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    pauseButton.setAttribute('aria-pressed', String(paused));
    if (!paused) flush();
  });
  ctx.cleanup(() => { if (source) source.close(); clearTimeout(flushTimer); if (recentAbort) recentAbort.abort(); if (seriesAbort) seriesAbort.abort(); });

  const tailForm = h('form', { class: 'row', onsubmit: e => { e.preventDefault(); startTail(); } },
    field('Live filter', tailInput, { class: 'grow' }), h('button', { type: 'submit' }, 'Apply'), pauseButton,
    h('button', { type: 'button', onclick: () => tailBody.replaceChildren() }, 'Clear'));

  // ---- publish (admins; viewers may not publish) ----
  let pubTopic = null, pubPayload = null, publishCard = null;
  if (isAdmin()) {
    pubTopic = h('input', { id: 'pub-topic', required: true, spellcheck: 'false', placeholder: 'home/lamp/set' });
    pubPayload = h('textarea', { id: 'pub-payload', rows: 3, spellcheck: 'false' });
    const qos = h('select', { id: 'pub-qos' }, [0, 1, 2].map(q => h('option', { value: q }, String(q))));
    const retain = h('input', { type: 'checkbox', id: 'pub-retain' });
    const result = h('div', { 'aria-live': 'polite' });
    publishCard = h('section', { class: 'card' }, h('h2', null, 'Publish'),
      h('form', { class: 'stack', onsubmit: async e => {
        e.preventDefault();
        try {
          await api('/api/v1/publish', { method: 'POST', body: { topic: pubTopic.value.trim(), payload: pubPayload.value, qos: Number(qos.value), retain: retain.checked } });
          result.replaceChildren(h('p', { class: 'notice ok' }, `Published to ${pubTopic.value.trim()}.`));
        } catch (err) { showError(result, err); }
      } },
      field('Topic', pubTopic), field('Payload', pubPayload),
      h('div', { class: 'row center' }, field('QoS', qos), h('label', { class: 'inline' }, retain, 'Retain'),
        h('button', { type: 'submit', class: 'primary' }, 'Publish')),
      result));
  }

  view.append(h('h1', null, 'Explorer'),
    h('div', { class: 'explorer' },
      h('div', null,
        h('section', { class: 'card' }, h('h2', null, 'Topics'), treeForm, treeStatus, treeBox),
        h('section', { class: 'card' }, h('h2', null, 'Selected topic'), detail)),
      h('div', null,
        h('section', { class: 'card' }, h('h2', null, 'Live messages'), tailForm, tailStatus,
          h('div', { class: 'tail' }, h('table', null,
            h('thead', null, h('tr', null, h('th', { class: 'time' }, 'time'), h('th', { class: 'topic' }, 'topic'), h('th', null, 'payload'))), tailBody))),
        publishCard)));
  if (!detail.childElementCount) detail.append(h('p', { class: 'muted' }, wanted ? `Looking for ${wanted}…` : 'Choose a topic in the tree.'));
  startTail();
  ctx.cleanup(every(3000, loadTree));
}
