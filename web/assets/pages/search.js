// Search: full-text search over the MQTT history (/api/v1/search), with
// the matches over time as a bar chart (/api/v1/search/histogram) above the
// hits; drag across the bars to narrow the time range. The URL carries
// q, range (or from/to in ms) and sort. With nothing indexed yet, the page
// says so and links to /connect.

import { api, h, field, fmtTime, showError, parseDuration } from '../lib.js';
import { chart } from '../chart.js';

const RANGES = ['1h', '24h', '7d', '30d', '365d'];
const PAGE = 50;

export default async function (view, ctx) {
  const q = ctx.query;
  const qInput = h('input', { type: 'search', id: 'search-q', value: q.get('q') || '', placeholder: 'e.g. temperature AND topic:kitchen', spellcheck: 'false' });
  const rangeSelect = h('select', { id: 'search-range' }, RANGES.map(r => h('option', { value: r }, `Last ${r}`)), h('option', { value: 'custom' }, 'Zoomed'));
  const sortSelect = h('select', { id: 'search-sort' }, h('option', { value: 'time' }, 'Newest first'), h('option', { value: 'relevance' }, 'Best match'));
  let custom = q.get('from') && q.get('to') ? { from: Number(q.get('from')), to: Number(q.get('to')) } : null;
  rangeSelect.value = custom ? 'custom' : (RANGES.includes(q.get('range')) ? q.get('range') : '24h');
  sortSelect.value = q.get('sort') === 'relevance' ? 'relevance' : 'time';

  const histBox = h('div', { class: 'card hist', 'aria-label': 'Matches over time' });
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' });
  const hits = h('div', { class: 'hits' });
  const more = h('button', { type: 'button', hidden: true }, 'More results');
  let destroyChart = () => {};
  let offset = 0;
  let ac = null;
  ctx.cleanup(() => { destroyChart(); if (ac) ac.abort(); });

  const range = () => {
    if (rangeSelect.value === 'custom' && custom) return custom;
    const to = Date.now();
    return { from: to - parseDuration(rangeSelect.value), to };
  };

  function syncUrl() {
    const p = new URLSearchParams();
    if (qInput.value.trim()) p.set('q', qInput.value.trim());
    if (rangeSelect.value === 'custom' && custom) { p.set('from', Math.round(custom.from)); p.set('to', Math.round(custom.to)); }
    else p.set('range', rangeSelect.value);
    if (sortSelect.value !== 'time') p.set('sort', sortSelect.value);
    const u = '/search?' + p;
    if (location.pathname === '/search' && location.pathname + location.search !== u) history.replaceState(null, '', u);
  }

  function hitEl(hit) {
    const body = h('div', { class: 'mono' });
    // The server HTML-escapes the payload and marks matches with <b>…</b>.
    body.innerHTML = hit.highlight || escapeHtml(hit.payload);
    return h('article', { class: 'hit' },
      h('div', { class: 'meta' }, fmtTime(hit.time), ' · ', h('strong', { class: 'mono' }, hit.topic),
        ` · ${hit.client_id} · QoS ${hit.qos}${hit.retained ? ' · retained' : ''}`),
      body);
  }

  async function run(append = false) {
    if (ac) ac.abort();
    ac = new AbortController();
    const signal = ac.signal;
    ctx.signal.addEventListener('abort', () => ac && ac.abort(), { once: true });
    syncUrl();
    const { from, to } = range();
    const text = qInput.value.trim();
    const params = `q=${encodeURIComponent(text)}&start=${from / 1000}&end=${to / 1000}`;
    if (!append) offset = 0;
    try {
      const [res, hist] = await Promise.all([
        api(`/api/v1/search?${params}&limit=${PAGE}&offset=${offset}&sort=${sortSelect.value}`, { signal }),
        append ? null : api(`/api/v1/search/histogram?${params}`, { signal }),
      ]);
      if (!append) {
        hits.replaceChildren();
        destroyChart();
        destroyChart = () => {};
        if (hist && hist.buckets.length) {
          const c = await chart(histBox, {
            xs: hist.buckets.map(b => b[0] / 1000),
            series: [{ label: 'messages', values: hist.buckets.map(b => b[1]) }],
            bars: true, height: 140, legend: false, xRange: [from / 1000, to / 1000],
            yFormat: v => (v === null ? '' : String(Math.round(v))),
            onSelect: (f, t) => { custom = { from: f, to: t }; rangeSelect.value = 'custom'; run(); },
          });
          destroyChart = () => c.destroy();
        } else histBox.replaceChildren(h('p', { class: 'muted' }, 'No matches in this range.'));
      }
      hits.append(...res.hits.map(hitEl));
      if (!append && !res.hits.length) hits.append(await emptyState(text, signal));
      offset += res.hits.length;
      summary.textContent = `${res.total} match${res.total === 1 ? '' : 'es'} from ${fmtTime(from)} to ${fmtTime(to)}` +
        (res.total > offset ? `; showing ${offset}` : '');
      more.hidden = offset >= res.total || !res.hits.length;
    } catch (e) {
      if (e.name === 'AbortError') return;
      summary.textContent = '';
      showError(hits, e);
    }
  }

  const form = h('form', { class: 'card row', role: 'search', onsubmit: e => { e.preventDefault(); run(); } },
    field('Search', qInput, { class: 'grow' }), field('Time range', rangeSelect), field('Order', sortSelect),
    h('button', { type: 'submit', class: 'primary' }, 'Search'));
  rangeSelect.addEventListener('change', () => { if (rangeSelect.value !== 'custom') custom = null; run(); });
  sortSelect.addEventListener('change', () => run());
  more.addEventListener('click', () => run(true));

  view.append(h('h1', null, 'Search'), form,
    h('p', { class: 'muted' }, 'All words must match, in topics or payloads. Also: ', h('code', null, '"low battery"'), ', ',
      h('code', null, 'topic:garage'), ', ', h('code', null, 'field:battery'), ', ', h('code', null, 'client_id:cam-1'), ', OR, NOT, ', h('code', null, '*'), ' for everything.'),
    histBox, summary, hits, more);
  qInput.focus();
  run();
}

let indexed = null; // documents in the index, asked once per visit
/** What to say when nothing matched: no messages at all, or no match. */
async function emptyState(text, signal) {
  if (indexed === null) {
    try { indexed = (await api('/api/v1/search/status', { signal })).documents; } catch (e) { if (e.name === 'AbortError') throw e; indexed = -1; }
  }
  if (indexed === 0) {
    indexed = null; // ask again next time: messages may have come
    return h('p', { class: 'notice empty' }, 'No messages yet. ', h('a', { href: '/connect' }, 'Connect a device'),
      ': what it publishes (topics and text payloads) becomes searchable here.');
  }
  return h('p', { class: 'muted empty' }, text && text !== '*'
    ? 'No message matches in this range. Try fewer words, OR, or a longer time range.'
    : 'No messages in this range. Try a longer time range.');
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
