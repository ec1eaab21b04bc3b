// Settings (admins only): users, API tokens, cameras, forwarding targets,
// storage settings (read-only), memory and disk writes by component,
// backup download, and how to restore.

import { api, h, field, notify, showError, isAdmin, notAllowed, fmtTime, fmtAgo, fmtBytes, fmtNum, every, copyText } from '../lib.js';

const ROLES = ['admin', 'viewer', 'device'];

export default async function (view, ctx) {
  if (!isAdmin()) { notAllowed(view); return; }
  view.append(h('h1', null, 'Settings'),
    h('nav', { class: 'row', 'aria-label': 'Settings sections' },
      ['Users', 'API tokens', 'Cameras', 'Forwarding', 'Storage', 'Footprint', 'Backup'].map(s => h('a', { href: '#' + slug(s), onclick: e => {
        e.preventDefault(); document.getElementById(slug(s))?.scrollIntoView();
      } }, s))));
  const sections = [users(ctx), tokens(ctx), cameras(ctx), forwarding(ctx), storage(ctx), footprint(ctx), backup(ctx)];
  view.append(...sections);
  // A link to a section (the Cameras page's "Add an RTSP camera").
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
}

function slug(s) { return 'settings-' + s.toLowerCase().replace(/\W+/g, '-'); }

function section(title, ...children) {
  return h('section', { class: 'card', id: slug(title), 'aria-labelledby': slug(title) + '-h' },
    h('h2', { id: slug(title) + '-h' }, title), ...children);
}

// ---- users ----
function users(ctx) {
  const table = h('div', { class: 'scroll' });
  const msg = h('div', { 'aria-live': 'polite' });
  const name = h('input', { id: 'user-name', required: true, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
  const role = h('select', { id: 'user-role' }, ROLES.map(r => h('option', { value: r, selected: r === 'viewer' }, r)));
  const password = h('input', { id: 'user-password', type: 'password', required: true, minLength: 8, autocomplete: 'new-password' });
  const topics = h('textarea', { id: 'user-topics', rows: 2, spellcheck: 'false', placeholder: 'sensors/kitchen/#' });
  const topicsField = field('Topics (one MQTT filter per line; a device may publish and subscribe only there)', topics, { class: 'grow' });
  const showTopics = () => { topicsField.hidden = role.value !== 'device'; };
  role.addEventListener('change', showTopics);
  showTopics();

  async function load() {
    try {
      const list = await api('/api/v1/users', { signal: ctx.signal });
      table.replaceChildren(h('table', null,
        h('thead', null, h('tr', null, ['name', 'role', 'topics', 'created', ''].map(t => h('th', null, t)))),
        h('tbody', null, list.map(u => h('tr', null,
          h('td', null, u.name), h('td', null, u.role),
          h('td', { class: 'mono' }, (u.topics || []).join(' ') || (u.role === 'device' ? 'none' : '—')),
          h('td', null, fmtTime(u.created_ms)),
          h('td', null, h('button', { type: 'button', class: 'danger', 'aria-label': `Delete user ${u.name}`, onclick: async () => {
            if (!window.confirm(`Delete the user ${u.name}?`)) return;
            try { await api('/api/v1/users/' + encodeURIComponent(u.name), { method: 'DELETE' }); notify(`User ${u.name} deleted.`); load(); }
            catch (e) { showError(msg, e); }
          } }, 'Delete')))))));
    } catch (e) { if (e.name !== 'AbortError') showError(table, e); }
  }

  const form = h('form', { class: 'row', onsubmit: async e => {
    e.preventDefault();
    const body = {
      name: name.value.trim(), role: role.value, password: password.value,
      topics: role.value === 'device' ? topics.value.split(/\n+/).map(s => s.trim()).filter(Boolean) : [],
    };
    try {
      await api('/api/v1/users', { method: 'POST', body });
      msg.replaceChildren(h('p', { class: 'notice ok' }, `User ${body.name} (${body.role}) added.`));
      name.value = ''; password.value = ''; topics.value = '';
      load();
    } catch (err) { showError(msg, err); }
  } },
  field('Name', name), field('Role', role), field('Password', password), topicsField,
  h('button', { type: 'submit', class: 'primary' }, 'Add user'));
  load();
  return section('Users', table, h('h3', null, 'Add a user'), form, msg);
}

// ---- API tokens ----
function tokens(ctx) {
  const table = h('div', { class: 'scroll' });
  const msg = h('div', { 'aria-live': 'polite' });
  const name = h('input', { id: 'token-name', required: true, autocomplete: 'off', placeholder: 'e.g. grafana' });
  const role = h('select', { id: 'token-role' }, ROLES.map(r => h('option', { value: r, selected: r === 'viewer' }, r)));

  async function load() {
    try {
      const list = await api('/api/v1/tokens', { signal: ctx.signal });
      table.replaceChildren(list.length ? h('table', null,
        h('thead', null, h('tr', null, ['name', 'role', 'created', 'by', 'last used', ''].map(t => h('th', null, t)))),
        h('tbody', null, list.map(t => h('tr', null,
          h('td', null, t.name), h('td', null, t.role), h('td', null, fmtTime(t.created_ms)), h('td', null, t.created_by || '—'),
          h('td', null, fmtAgo(t.last_used_ms)),
          h('td', null, h('button', { type: 'button', class: 'danger', 'aria-label': `Delete token ${t.name}`, onclick: async () => {
            if (!window.confirm(`Delete the token ${t.name}? Programs using it stop working.`)) return;
            try { await api('/api/v1/tokens/' + encodeURIComponent(t.id), { method: 'DELETE' }); notify(`Token ${t.name} deleted.`); load(); }
            catch (e) { showError(msg, e); }
          } }, 'Delete')))))) : h('p', { class: 'muted' }, 'No tokens.'));
    } catch (e) { if (e.name !== 'AbortError') showError(table, e); }
  }

  const form = h('form', { class: 'row', onsubmit: async e => {
    e.preventDefault();
    try {
      const t = await api('/api/v1/tokens', { method: 'POST', body: { name: name.value.trim(), role: role.value } });
      const secret = h('output', { class: 'secret', id: 'token-secret' }, t.token);
      msg.replaceChildren(h('div', { class: 'notice ok', role: 'status' },
        h('p', null, `Token ${t.name} (${t.role}) created. Copy it now: it is shown only this once.`),
        h('p', null, secret, ' ', h('button', { type: 'button', onclick: async () => {
          if (await copyText(t.token)) notify('Token copied.');
          else window.getSelection().selectAllChildren(secret);
        } }, 'Copy')),
        h('p', { class: 'muted' }, 'Use it as ', h('code', null, 'Authorization: Bearer …'), '.')));
      name.value = '';
      load();
    } catch (err) { showError(msg, err); }
  } },
  field('Token name', name), field('Role', role), h('button', { type: 'submit', class: 'primary' }, 'Create token'));
  load();
  return section('API tokens', table, h('h3', null, 'Create a token'), form, msg);
}

// ---- cameras ----
function cameras(ctx) {
  const table = h('div', { class: 'scroll' });
  const msg = h('div', { 'aria-live': 'polite' });
  const testBox = h('div', { 'aria-live': 'polite' });
  const f = {
    name: h('input', { id: 'cam-name', required: true, pattern: '[A-Za-z0-9_\\-]{1,64}', spellcheck: 'false', placeholder: 'yard' }),
    url: h('input', { id: 'cam-url', required: true, type: 'url', spellcheck: 'false', placeholder: 'rtsp://192.168.1.40:554/stream1', size: 36 }),
    username: h('input', { id: 'cam-username', autocomplete: 'off' }),
    password: h('input', { id: 'cam-password', type: 'password', autocomplete: 'new-password' }),
    transport: h('select', { id: 'cam-transport' }, h('option', { value: 'tcp' }, 'tcp'), h('option', { value: 'udp' }, 'udp')),
    snapshot_schedule: h('input', { id: 'cam-schedule', placeholder: '0 */5 * * * *', spellcheck: 'false' }),
    snapshot_retention: h('input', { id: 'cam-retention', placeholder: '30d' }),
    snapshot_max_bytes: h('input', { id: 'cam-max-bytes', placeholder: '2GiB' }),
  };
  let editing = null;
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add camera');
  const cancel = h('button', { type: 'button', hidden: true }, 'Cancel edit');
  const heading = h('h3', null, 'Add a camera');

  function edit(c) {
    editing = c ? c.name : null;
    heading.textContent = c ? `Edit ${c.name}` : 'Add a camera';
    submit.textContent = c ? 'Save camera' : 'Add camera';
    cancel.hidden = !c;
    f.name.disabled = !!c;
    f.name.value = c ? c.name : '';
    f.url.value = c ? c.url : '';
    f.username.value = (c && c.username) || '';
    f.password.value = '';
    f.password.placeholder = c && c.has_password ? 'unchanged' : '';
    f.transport.value = (c && c.transport) || 'tcp';
    f.snapshot_schedule.value = (c && c.snapshot_schedule) || '';
    f.snapshot_retention.value = c ? String(c.snapshot_retention ?? '') : '';
    f.snapshot_max_bytes.value = c ? String(c.snapshot_max_bytes ?? '') : '';
    if (c) f.url.focus();
  }
  cancel.addEventListener('click', () => edit(null));

  async function test(c) {
    testBox.replaceChildren(h('p', { class: 'muted' }, `Testing ${c.name}: waiting for a keyframe…`));
    const base = `/api/v1/cameras/${encodeURIComponent(c.name)}`;
    try {
      const s = await api(`${base}/snapshot`, { method: 'POST' });
      testBox.replaceChildren(h('div', { class: 'notice ok' }, `${c.name} works: snapshot ${s.width}×${s.height} at ${fmtTime(s.id)}.`),
        h('img', { class: 'thumb', style: { maxWidth: '420px' }, src: `${base}/snapshots/${s.id}.jpg`, alt: `Test snapshot of ${c.name}` }));
    } catch (e) {
      let status = '';
      try { const cur = await api(base); status = ` Status: ${cur.status}${cur.last_error ? ` (${cur.last_error})` : ''}.`; } catch { /* shown below */ }
      testBox.replaceChildren(h('div', { class: 'notice error', role: 'alert' }, `${c.name}: ${e.message}.${status}`));
    }
    loadSoon();
  }

  // A camera's status moves on in the background after it is added or
  // tested (connecting → streaming): the table follows for a while, without
  // re-rendering under the user's hands forever.
  let soon = [];
  function loadSoon() {
    for (const t of soon) clearTimeout(t);
    load();
    soon = [2000, 5000, 10000, 20000].map(ms => setTimeout(load, ms));
  }
  ctx.cleanup(() => { for (const t of soon) clearTimeout(t); });

  async function load() {
    try {
      const list = await api('/api/v1/cameras', { signal: ctx.signal });
      table.replaceChildren(list.length ? h('table', null,
        h('thead', null, h('tr', null, ['name', 'URL', 'status', 'snapshots', ''].map(t => h('th', null, t)))),
        h('tbody', null, list.map(c => h('tr', null,
          h('td', null, h('a', { href: `/cameras/${encodeURIComponent(c.name)}` }, c.name)),
          h('td', { class: 'mono' }, c.url),
          h('td', null, h('span', { class: `badge ${c.status}` }, c.status), c.last_error ? h('div', { class: 'bad' }, c.last_error) : null),
          h('td', null, `${c.snapshot_schedule || 'on demand'} · ${fmtBytes(c.snapshot_bytes)}`),
          h('td', { class: 'row' },
            h('button', { type: 'button', 'aria-label': `Test camera ${c.name}`, onclick: () => test(c) }, 'Test'),
            c.source === 'config' ? h('span', { class: 'muted' }, 'config file') : [
              h('button', { type: 'button', 'aria-label': `Edit camera ${c.name}`, onclick: () => edit(c) }, 'Edit'),
              h('button', { type: 'button', class: 'danger', 'aria-label': `Delete camera ${c.name}`, onclick: async () => {
                if (!window.confirm(`Delete the camera ${c.name} and its snapshots?`)) return;
                try { await api(`/api/v1/cameras/${encodeURIComponent(c.name)}`, { method: 'DELETE' }); notify(`Camera ${c.name} deleted.`); if (editing === c.name) edit(null); load(); }
                catch (e) { showError(msg, e); }
              } }, 'Delete')])))))
        : h('p', { class: 'muted' }, 'No cameras.'));
    } catch (e) { if (e.name !== 'AbortError') showError(table, e); }
  }

  const form = h('form', { class: 'row', onsubmit: async e => {
    e.preventDefault();
    const body = { url: f.url.value.trim(), transport: f.transport.value };
    if (!editing) body.name = f.name.value.trim();
    for (const k of ['username', 'password', 'snapshot_schedule', 'snapshot_retention', 'snapshot_max_bytes']) {
      const v = k === 'password' ? f[k].value : f[k].value.trim();
      if (v) body[k] = v;
    }
    try {
      const path = editing ? `/api/v1/cameras/${encodeURIComponent(editing)}` : '/api/v1/cameras';
      const c = await api(path, { method: editing ? 'PUT' : 'POST', body });
      msg.replaceChildren(h('p', { class: 'notice ok' }, `Camera ${c.name} ${editing ? 'saved' : 'added'}; it connects in the background (Test shows whether it works).`));
      edit(null);
      loadSoon();
    } catch (err) { showError(msg, err); }
  } },
  field('Name', f.name), field('RTSP URL', f.url, { class: 'grow' }), field('Camera username', f.username), field('Camera password', f.password),
  field('Transport', f.transport), field('Snapshot schedule (cron, with seconds)', f.snapshot_schedule),
  field('Keep snapshots for', f.snapshot_retention), field('Snapshot space', f.snapshot_max_bytes),
  submit, cancel);
  load();
  return section('Cameras', table, testBox, heading, form, msg);
}

// ---- forwarding: status of every target; targets added here are kept in
// the database (those of the config file are shown read-only) ----
const KIND_FIELDS = {
  remote_write: ['url', 'match', 'username', 'password'],
  mqtt: ['url', 'topics', 'remote_prefix', 'qos', 'username', 'password'],
  kafka: ['brokers', 'topic', 'format', 'tls', 'match', 'username', 'password'],
};

function forwarding(ctx) {
  const box = h('div', { class: 'scroll' }, h('p', { class: 'muted' }, 'Loading…'));
  const defs = h('div', { class: 'scroll' });
  const msg = h('div', { 'aria-live': 'polite' });
  const opt = (v, label = v) => h('option', { value: v }, label);
  const f = {
    name: h('input', { id: 'fwd-name', required: true, pattern: '[A-Za-z0-9_\\-]{1,64}', spellcheck: 'false', placeholder: 'central-vm' }),
    kind: h('select', { id: 'fwd-kind' }, opt('remote_write', 'Prometheus remote write'), opt('mqtt', 'MQTT bridge'), opt('kafka', 'Kafka')),
    url: h('input', { id: 'fwd-url', spellcheck: 'false', size: 36, placeholder: 'https://vm.example/api/v1/write' }),
    brokers: h('input', { id: 'fwd-brokers', spellcheck: 'false', placeholder: 'kafka-1:9092, kafka-2:9092' }),
    topic: h('input', { id: 'fwd-topic', spellcheck: 'false', placeholder: '{site}_{index}_{type}' }),
    format: h('select', { id: 'fwd-format' }, opt('json'), opt('influx-line'), opt('opentsdb-json')),
    tls: h('input', { id: 'fwd-tls', type: 'checkbox' }),
    match: h('textarea', { id: 'fwd-match', rows: 2, spellcheck: 'false', placeholder: '{__name__=~"env_.*"}' }),
    topics: h('input', { id: 'fwd-topics', spellcheck: 'false', placeholder: 'sensors/#' }),
    remote_prefix: h('input', { id: 'fwd-prefix', spellcheck: 'false', placeholder: 'site/{hostname}/' }),
    qos: h('select', { id: 'fwd-qos' }, opt('1'), opt('0'), opt('2')),
    username: h('input', { id: 'fwd-username', autocomplete: 'off' }),
    password: h('input', { id: 'fwd-password', type: 'password', autocomplete: 'new-password' }),
    queue_max_bytes: h('input', { id: 'fwd-queue', placeholder: '256MiB' }),
    overflow: h('select', { id: 'fwd-overflow' }, opt('drop_oldest', 'drop the oldest'), opt('reject_new', 'reject new data')),
    priority: h('input', { id: 'fwd-priority', type: 'number', min: 0, max: 255, placeholder: '1' }),
    max_bandwidth: h('input', { id: 'fwd-bandwidth', placeholder: '1Mbit' }),
  };
  const labels = {
    name: 'Name', kind: 'Kind', url: 'URL', brokers: 'Brokers (host:port, comma-separated)', topic: 'Kafka topic template',
    format: 'Record format', tls: 'TLS', match: 'Series selectors (one per line; empty: all)', topics: 'MQTT topic filters (comma-separated)',
    remote_prefix: 'Upstream topic prefix', qos: 'QoS upstream', username: 'Username', password: 'Password',
    queue_max_bytes: 'Queue cap on disk', overflow: 'When the queue is full', priority: 'Priority (1 = first)', max_bandwidth: 'Bandwidth limit',
  };
  const fields = Object.fromEntries(Object.entries(f).map(([k, c]) =>
    [k, field(labels[k], c, k === 'match' || k === 'url' ? { class: 'grow' } : {})]));
  const showKind = () => {
    const own = KIND_FIELDS[f.kind.value];
    for (const k of ['url', 'brokers', 'topic', 'format', 'tls', 'match', 'topics', 'remote_prefix', 'qos', 'username', 'password']) {
      fields[k].hidden = !own.includes(k);
    }
  };
  f.kind.addEventListener('change', showKind);
  let editing = null;
  // The definition being edited: fields the form does not show are sent
  // back as they were.
  let editingDef = null;
  const heading = h('h3', null, 'Add a forwarding target');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add target');
  const cancel = h('button', { type: 'button', hidden: true }, 'Cancel edit');
  const list = v => (v || []).join(', ');

  function edit(t) {
    editing = t ? t.name : null;
    editingDef = t;
    heading.textContent = t ? `Edit ${t.name}` : 'Add a forwarding target';
    submit.textContent = t ? 'Save target' : 'Add target';
    cancel.hidden = !t;
    f.name.disabled = f.kind.disabled = !!t;
    f.name.value = t ? t.name : '';
    f.kind.value = t ? t.kind : 'remote_write';
    f.url.value = (t && t.url) || '';
    f.brokers.value = t ? list(t.brokers) : '';
    f.topic.value = t && t.kind === 'kafka' ? t.topic : '';
    f.format.value = (t && t.format) || 'json';
    f.tls.checked = !!(t && t.tls);
    f.match.value = t ? (t.match || []).join('\n') : '';
    f.topics.value = t && t.kind === 'mqtt' ? list(t.topics) : '';
    f.remote_prefix.value = (t && t.remote_prefix) || '';
    f.qos.value = String(t ? t.qos : 1);
    f.username.value = (t && t.username) || '';
    f.password.value = '';
    f.password.placeholder = t && t.has_password ? 'unchanged' : '';
    f.queue_max_bytes.value = t ? t.queue_max_bytes : '';
    f.overflow.value = (t && t.overflow) || 'drop_oldest';
    f.priority.value = t ? String(t.priority) : '';
    f.max_bandwidth.value = (t && t.max_bandwidth) || '';
    showKind();
    if (t) f.url.focus();
  }
  cancel.addEventListener('click', () => edit(null));

  async function loadDefs() {
    try {
      const all = await api('/api/v1/forward/targets', { signal: ctx.signal });
      defs.replaceChildren(all.length ? h('table', { id: 'forward-definitions' },
        h('thead', null, h('tr', null, ['target', 'kind', 'sends to', 'what', 'priority', ''].map(t => h('th', null, t)))),
        h('tbody', null, all.map(t => h('tr', null,
          h('td', null, t.name), h('td', null, t.kind),
          h('td', { class: 'mono' }, t.kind === 'kafka' ? `${list(t.brokers)} → ${t.topic}` : t.url),
          h('td', { class: 'mono' }, t.kind === 'mqtt' ? list(t.topics) : (t.match || []).join(' ') || 'all series'),
          h('td', null, String(t.priority)),
          h('td', { class: 'row' }, t.source === 'config' ? h('span', { class: 'muted' }, 'config file') : [
            h('button', { type: 'button', 'aria-label': `Edit target ${t.name}`, onclick: () => edit(t) }, 'Edit'),
            h('button', { type: 'button', class: 'danger', 'aria-label': `Delete target ${t.name}`, onclick: async () => {
              if (!window.confirm(`Delete the target ${t.name}? What its queue holds is discarded.`)) return;
              try { await api(`/api/v1/forward/targets/${encodeURIComponent(t.name)}`, { method: 'DELETE' }); notify(`Target ${t.name} deleted.`); if (editing === t.name) edit(null); loadDefs(); }
              catch (e) { showError(msg, e); }
            } }, 'Delete')])))))
        : h('p', { class: 'muted' }, 'No forwarding targets yet.'));
    } catch (e) { if (e.name !== 'AbortError') showError(defs, e); }
  }

  const form = h('form', { class: 'row', id: 'forward-form', onsubmit: async e => {
    e.preventDefault();
    const kind = f.kind.value;
    const own = KIND_FIELDS[kind];
    const body = editingDef ? { ...editingDef } : { name: f.name.value.trim(), kind };
    delete body.has_password;
    delete body.source;
    const split = v => v.split(',').map(s => s.trim()).filter(Boolean);
    // An empty field means the default: the key is left out.
    const set = (k, v) => { if (v === '' || v === undefined) delete body[k]; else body[k] = v; };
    if (own.includes('url')) body.url = f.url.value.trim();
    if (own.includes('brokers')) body.brokers = split(f.brokers.value);
    if (own.includes('topic')) set('topic', f.topic.value.trim());
    if (own.includes('format')) body.format = f.format.value;
    if (own.includes('tls')) body.tls = f.tls.checked;
    if (own.includes('match')) body.match = f.match.value.split(/\n+/).map(s => s.trim()).filter(Boolean);
    if (own.includes('topics')) set('topics', f.topics.value.trim() ? split(f.topics.value) : '');
    if (own.includes('remote_prefix')) body.remote_prefix = f.remote_prefix.value.trim();
    if (own.includes('qos')) body.qos = Number(f.qos.value);
    set('username', f.username.value.trim());
    set('password', f.password.value);
    for (const k of ['queue_max_bytes', 'max_bandwidth']) set(k, f[k].value.trim());
    body.overflow = f.overflow.value;
    set('priority', f.priority.value === '' ? '' : Number(f.priority.value));
    try {
      await api(editing ? `/api/v1/forward/targets/${encodeURIComponent(editing)}` : '/api/v1/forward/targets',
        { method: editing ? 'PUT' : 'POST', body });
      msg.replaceChildren(h('p', { class: 'notice ok' }, `Target ${body.name} ${editing ? 'saved' : 'added'}; its status shows above within seconds.`));
      edit(null);
      loadDefs();
    } catch (err) { showError(msg, err); }
  } },
  ...Object.values(fields), submit, cancel);
  edit(null);
  loadDefs();

  ctx.cleanup(every(5000, async () => {
    const list = await api('/api/v1/forward', { signal: ctx.signal });
    box.replaceChildren(list.length ? h('table', { id: 'forward-targets' },
      h('thead', null, h('tr', null, ['target', 'kind', 'state', 'queue', 'oldest', 'sent/s', 'sent', 'errors', 'dropped', 'last error']
        .map(t => h('th', null, t)))),
      h('tbody', null, list.map(t => h('tr', null,
        h('td', null, t.name), h('td', null, t.kind),
        h('td', null, h('span', { class: 'badge ' + (t.connected ? 'online' : 'offline') }, t.connected ? 'connected' : 'disconnected'),
          t.held_by_priority ? h('div', { class: 'muted' }, 'waiting for a higher priority') : null),
        h('td', null, `${fmtBytes(t.queue_bytes)} of ${fmtBytes(t.queue_max_bytes)} (${t.queue_items} items)`),
        h('td', null, t.queue_items ? `${fmtNum(t.oldest_age_seconds)} s` : '—'),
        h('td', null, fmtNum(t.sent_per_second)), h('td', null, String(t.sent_total)),
        h('td', null, String(t.errors_total + t.rejected_total)), h('td', null, String(t.dropped_total)),
        h('td', { class: 'mono' }, t.last_error || '—'))))) :
      h('p', { class: 'muted' }, 'No forwarding targets.'));
  }));
  return section('Forwarding',
    h('p', null, 'Store and forward to central systems (docs/forward.md): each target has its own durable queue; delivery is at-least-once, through outages and restarts.'),
    box, h('h3', null, 'Targets'), defs, heading, form, msg);
}

// ---- storage (read-only) ----
function storage(ctx) {
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  api('/api/v1/settings', { signal: ctx.signal }).then(s => {
    const groups = Object.entries(s || {}).map(([group, values]) => h('div', null,
      h('h3', null, group),
      values && typeof values === 'object' ? h('dl', { class: 'kv' }, Object.entries(values).flatMap(([k, v]) =>
        [h('dt', null, k), h('dd', { class: 'mono' }, typeof v === 'object' ? JSON.stringify(v) : String(v))]))
        : h('p', { class: 'mono' }, String(values))));
    box.replaceChildren(h('div', { class: 'grid wide' }, groups),
      h('p', { class: 'muted' }, 'Change these in perch\'s config file and restart (docs/configuration.md).'));
  }).catch(e => { if (e.name !== 'AbortError') showError(box, e); });
  return section('Storage', h('p', null, 'Retention, disk budget and the other settings in force.'), box);
}

// ---- footprint: memory and disk writes by component ----
const MEMORY_PARTS = {
  code: 'program code and read-only data in memory (the kernel can drop and reread it)',
  allocator: 'the allocator: freed memory not yet returned, its bookkeeping, thread stacks',
  unattributed: 'heap no component reports: sled\'s page cache, connections, request buffers',
  store_head: 'samples not yet written out as blocks',
  store_wal_buffer: 'write-ahead log records waiting for the next sync',
  store_series_index: 'series labels and the index selectors are answered from',
  store_block_index: 'where the blocks of recently read time windows lie in their files',
  search_queue: 'MQTT messages waiting to be indexed',
  mqtt_history: 'the explorer\'s recent messages (mqtt.history_bytes)',
  mqtt_topics: 'the explorer\'s topic table',
  cameras: 'video held for viewers, HLS and snapshots',
  query: 'samples held by the queries running now',
};
const WRITE_PARTS = {
  wal: 'write-ahead log (every accepted sample, synced each flush_interval)',
  storage: 'checkpoints, compaction, rollups, retention, block index files',
  sled: 'the database (series, time windows, accounts, queues)',
  search: 'full-text index of MQTT messages',
  snapshots: 'camera snapshots',
  forward: 'forwarding queues',
  other: 'everything else (logs, backups, other threads)',
};

function footprint(ctx) {
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  // A row: the component, what it is (under its name, so that a phone's
  // width is left to the figures), then the figures.
  const table = (head, rows) => h('div', { class: 'scroll' }, h('table', { class: 'footprint' },
    h('thead', null, h('tr', null, head.map((c, i) => h('th', { scope: 'col', class: i ? 'num' : null }, c)))),
    h('tbody', null, rows.map(([name, what, ...figures]) => h('tr', null,
      h('th', { scope: 'row' }, h('span', { class: 'mono' }, name), what ? h('div', { class: 'muted small' }, what) : ''),
      figures.map(c => h('td', { class: 'num' }, c)))))));
  ctx.cleanup(every(10000, async () => {
    try {
      const f = await api('/api/v1/status/footprint', { signal: ctx.signal });
      const hours = f.uptime_seconds / 3600;
      const perHour = b => hours > 0.01 ? fmtBytes(b / hours) : '—';
      const perSample = b => f.samples_appended ? fmtNum(b / f.samples_appended) : '—';
      const written = f.written.reduce((a, p) => a + p.bytes, 0);
      const share = f.samples_appended ? ` (${fmtNum(100 * f.self_samples / f.samples_appended)} %)` : '';
      box.replaceChildren(
        h('p', null, `Resident memory ${fmtBytes(f.resident_bytes)}`,
          f.allocated_bytes != null ? `, of which perch's heap ${fmtBytes(f.allocated_bytes)}.` : '.'),
        table(['Memory', 'Bytes'], f.memory.map(p => [p.component, MEMORY_PARTS[p.component], fmtBytes(p.bytes)])),
        f.limits.length ? h('p', { class: 'muted' }, 'Bounds: ', f.limits.map(p => `${p.component} ${fmtBytes(p.bytes)}`).join(', '), '.') : '',
        h('h3', null, 'Disk writes since perch started'),
        table(['Component', 'Written', 'Per hour', 'Bytes / sample'],
          f.written.map(p => [p.component, WRITE_PARTS[p.component], fmtBytes(p.bytes), perHour(p.bytes), perSample(p.bytes)])
            .concat([['all', 'what wears an SD card out', fmtBytes(written), perHour(written), perSample(written)]])),
        h('p', { class: 'muted' }, 'The store\'s files by purpose, before the filesystem: ',
          f.store_written.map(p => `${p.component} ${fmtBytes(p.bytes)}`).join(', '),
          `. ${f.samples_appended} samples stored, ${f.self_samples} of them perch's own metrics${share}.`));
    } catch (e) { if (e.name !== 'AbortError') showError(box, e); }
  }));
  return section('Footprint',
    h('p', null, 'What perch costs this machine, by component: memory now, and bytes written to disk since it started (docs/performance.md).'),
    box);
}

// ---- backup ----
function backup(ctx) {
  const progress = h('progress', { id: 'backup-progress', max: 1, value: 0, hidden: true, 'aria-label': 'Backup download' });
  const status = h('div', { class: 'muted', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', class: 'primary' }, 'Download backup');
  let ac = null;
  ctx.cleanup(() => ac && ac.abort());
  button.addEventListener('click', async () => {
    button.disabled = true;
    ac = new AbortController();
    status.textContent = 'Starting…';
    try {
      const r = await api('/api/v1/backup', { raw: true, signal: ac.signal });
      const total = Number(r.headers.get('Content-Length')) || 0;
      progress.hidden = false;
      if (total) progress.max = total; else progress.removeAttribute('value');
      const reader = r.body.getReader();
      const chunks = [];
      let got = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        got += value.length;
        if (total) progress.value = got;
        status.textContent = `${fmtBytes(got)}${total ? ` of ${fmtBytes(total)}` : ''}`;
      }
      const blob = new Blob(chunks, { type: 'application/x-tar' });
      const disposition = r.headers.get('Content-Disposition') || '';
      const m = /filename="?([^";]+)"?/.exec(disposition);
      const name = m ? m[1] : `perch-backup-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-')}.tar`;
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      progress.max = 1; progress.value = 1;
      status.textContent = `Saved ${name} (${fmtBytes(got)}).`;
    } catch (e) {
      if (e.name !== 'AbortError') { status.textContent = ''; showError(status, e); }
    } finally {
      button.disabled = false;
    }
  });
  return section('Backup',
    h('p', null, 'A consistent copy of the data directory (series, users, tokens, cameras, dashboards, snapshots) as one tar file, taken while perch runs.'),
    h('p', { class: 'row center' }, button, progress), status,
    h('h3', null, 'Restore'),
    h('p', null, 'There is no upload here: a restore replaces everything, so it runs on the box while perch is stopped, into a new, empty directory that then takes the old one\'s place:'),
    h('pre', { class: 'card' }, [
      'sudo systemctl stop perch',
      'sudo perch restore perch-backup-….tar --data-dir /var/lib/perch.new',
      'sudo perch check --data-dir /var/lib/perch.new',
      'sudo mv /var/lib/perch /var/lib/perch.old',
      'sudo mv /var/lib/perch.new /var/lib/perch',
      'sudo chown -R perch:perch /var/lib/perch',
      'sudo systemctl start perch',
    ].join('\n')),
    h('p', { class: 'muted' }, 'In general: ', h('code', null, 'perch restore FILE --data-dir DIR'), ' while perch is stopped. The search index is not in the backup; it starts empty.'));
}
