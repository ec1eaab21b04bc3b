// Shared by every page: the session, the one fetch helper (CSRF header,
// errors, 401 → sign-in), a tiny element builder and formatting.

/** Filled from GET /api/v1/auth/state by app.js. */
export const session = { onboarding: false, user: null, csrf: null };

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

const UNSAFE = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

export function goLogin() {
  const here = location.pathname + location.search;
  if (location.pathname === '/login' || location.pathname === '/onboarding') return;
  location.assign('/login?next=' + encodeURIComponent(here));
}

/**
 * fetch for perch's API. JSON bodies are encoded; unsafe methods carry
 * X-CSRF-Token; `{"status":"success","data":…}` envelopes are unwrapped.
 * Throws ApiError with the server's `error` text. `raw: true` returns the
 * Response of a successful request untouched (for streams and blobs).
 */
export async function api(path, { method = 'GET', body, headers = {}, raw = false, signal } = {}) {
  const h = { ...headers };
  if (UNSAFE.has(method) && session.csrf) h['X-CSRF-Token'] = session.csrf;
  let payload = body;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Blob)) {
    h['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, { method, headers: h, body: payload, credentials: 'same-origin', signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'cannot reach perch: ' + e.message);
  }
  if (r.status === 401 && !path.startsWith('/api/v1/auth/')) {
    goLogin();
    throw new ApiError(401, 'signed out: sign in again');
  }
  if (raw && r.ok) return r;
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!r.ok) {
    let msg = (data && data.error) || (text.trim().length < 200 && !/^\s*</.test(text) && text.trim()) || `HTTP ${r.status} ${r.statusText}`.trim();
    if (r.status === 403) msg = 'Not allowed: ' + msg;
    if (r.status === 429 && !(data && data.error)) {
      const after = r.headers.get('Retry-After');
      msg = 'Too many attempts' + (after ? `; try again in ${after} s` : '');
    }
    throw new ApiError(r.status, msg, data);
  }
  if (data && typeof data === 'object' && data.status === 'success' && 'data' in data) return data.data;
  return data;
}

/** h('div', {class: 'x', onclick}, child, 'text', [more]) → element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') el.value = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

let fieldId = 0;
/**
 * A labelled field: <div class="field"><label for=…>Text</label><control></div>.
 * The label is not wrapped around the control, so the control's value does
 * not become part of its accessible name.
 */
export function field(text, control, attrs = {}) {
  if (!control.id) control.id = 'f' + (++fieldId);
  const cls = 'field' + (attrs.class ? ' ' + attrs.class : '');
  return h('div', { ...attrs, class: cls }, h('label', { for: control.id }, text), control);
}

let toastId = 0;
/** A message in the live region; errors stay until dismissed. */
export function notify(message, kind = 'ok') {
  const box = document.getElementById('toasts');
  const id = 'toast-' + (++toastId);
  const n = h('div', { class: 'notice ' + kind, id, role: kind === 'error' ? 'alert' : null },
    message, ' ',
    h('button', { type: 'button', 'aria-label': 'Dismiss', onclick: () => n.remove() }, '×'));
  box.append(n);
  if (kind !== 'error') setTimeout(() => n.remove(), 4000);
  else setTimeout(() => n.remove(), 15000);
}

/** Shows an error inside `el` (replacing its content). */
export function showError(el, e) {
  el.replaceChildren(h('div', { class: 'notice error', role: 'alert' }, e.message || String(e)));
}

export function escapeLabel(v) {
  return String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Prometheus metric object → `name{a="b"}`. */
export function seriesName(metric) {
  const { __name__: name = '', ...rest } = metric || {};
  const labels = Object.entries(rest).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(', ');
  return labels ? `${name}{${labels}}` : (name || '{}');
}

export function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return 'n/a';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e12 || a < 1e-3)) return v.toExponential(2);
  return v.toLocaleString(undefined, { maximumFractionDigits: a < 1 ? 4 : a < 100 ? 2 : 1 });
}

/** A number with its unit, if any: `21.5 °C`, `48 %`. */
export function fmtUnit(v, unit, fmt = fmtNum) {
  const text = fmt(v);
  return unit && v !== null && v !== undefined && !Number.isNaN(v) ? `${text} ${unit}` : text;
}

export function fmtBytes(b) {
  if (b === null || b === undefined || Number.isNaN(b)) return 'n/a';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i && b < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtTime(ms) {
  if (!ms && ms !== 0) return '—';
  return new Date(ms).toLocaleString();
}

export function fmtAgo(ms) {
  if (!ms) return 'never';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "15m" | "1h" | "7d" … → milliseconds (null if not a duration). */
export function parseDuration(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$/.exec(String(s).trim());
  if (!m) return null;
  const unit = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3, y: 365 * 86400e3 }[m[2]];
  return Number(m[1]) * unit;
}

/** "now", "now-1h", epoch ms, or an ISO date → epoch ms. */
export function resolveTime(t, now = Date.now()) {
  if (t === undefined || t === null || t === '' || t === 'now') return now;
  const s = String(t);
  const rel = /^now-(.+)$/.exec(s);
  if (rel) {
    const d = parseDuration(rel[1]);
    if (d !== null) return now - d;
  }
  if (/^\d+$/.test(s)) return Number(s);
  const parsed = Date.parse(s);
  if (!Number.isNaN(parsed)) return parsed;
  throw new Error(`not a time: ${s}`);
}

/** Instant PromQL query → [{metric, value}] (scalars as one unlabelled row). */
export async function instant(query, signal) {
  const d = await api('/api/v1/query?query=' + encodeURIComponent(query), { signal });
  if (d.resultType === 'vector') return d.result.map(r => ({ metric: r.metric, value: Number(r.value[1]) }));
  if (d.resultType === 'scalar') return [{ metric: {}, value: Number(d.result[1]) }];
  if (d.resultType === 'matrix') return d.result.map(r => ({ metric: r.metric, value: Number(r.values.at(-1)?.[1]) }));
  return [];
}

let unitsCache = null; // {at, promise}
/**
 * Metric name → its unit, from `/api/v1/metadata` (units the devices and
 * `[devices] units` state). A metric whose devices disagree has none here.
 * Fetched at most once a minute and shared by the pages; never throws
 * (no units is a fine answer).
 */
export function metricUnits() {
  if (unitsCache && Date.now() - unitsCache.at < 60000) return unitsCache.promise;
  const promise = api('/api/v1/metadata')
    .then(d => {
      const m = new Map();
      for (const [name, entries] of Object.entries(d || {})) {
        const units = [...new Set((entries || []).map(e => e.unit).filter(Boolean))];
        if (units.length === 1) m.set(name, units[0]);
      }
      return m;
    })
    .catch(e => { console.warn('metadata:', e.message); unitsCache = null; return new Map(); });
  unitsCache = { at: Date.now(), promise };
  return promise;
}

/** A device's page: each segment of its id encoded, the slashes kept. */
export function deviceHref(id) {
  return '/devices/' + String(id).split('/').map(encodeURIComponent).join('/');
}

/** Text matched literally inside a PromQL regex string (`=~"…"`). */
export function regexQuote(s) {
  return escapeLabel(String(s).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
}

/** Why a device is online or offline, in words (its `status_reason`). */
export function deviceStatusText(d) {
  if (d.status_reason === 'reported') return d.online ? 'it says it is online' : 'it says it is offline (last will or availability)';
  if (d.status_reason === 'silent') return `silent longer than its usual interval${d.interval_ms ? ` (${fmtInterval(d.interval_ms)})` : ''} allows`;
  if (d.status_reason === 'active') return 'sends as usual';
  return d.status_reason || '';
}

/** 90000 → "1.5 min". */
export function fmtInterval(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 60e3) return `${fmtNum(ms / 1e3)} s`;
  if (ms < 3600e3) return `${fmtNum(ms / 60e3)} min`;
  if (ms < 86400e3) return `${fmtNum(ms / 3600e3)} h`;
  return `${fmtNum(ms / 86400e3)} d`;
}

/** Runs `fn` now and then every `ms` (≥ 1 s), never overlapping; returns stop(). */
export function every(ms, fn) {
  let stopped = false, timer = null;
  const tick = async () => {
    try { await fn(); } catch (e) { if (e.name !== 'AbortError') console.warn(e); }
    if (!stopped) timer = setTimeout(tick, Math.max(ms, 1000));
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

export function isAdmin() {
  return session.user && session.user.role === 'admin';
}

export function notAllowed(main) {
  main.replaceChildren(
    h('h1', null, 'Not allowed'),
    h('p', { class: 'notice error', role: 'alert' }, 'Not allowed: this page is for admins.'));
}

/** Copies `text` to the clipboard: the Clipboard API where the page may
 * use it (https, localhost), else the old execCommand way (plain http on
 * a LAN address). Returns whether it worked. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const t = h('textarea', { style: { position: 'fixed', opacity: '0' }, 'aria-hidden': 'true' }, text);
    document.body.append(t);
    t.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    t.remove();
    return ok;
  }
}
