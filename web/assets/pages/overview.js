// Overview: host health from perch's self-metrics (PromQL instant queries),
// firing alerts (only when there are any; /api/v1/alerts), the cameras'
// latest snapshots, offline devices (only when there are any),
// recent problems (failed sign-ins, refusals, unreadable payloads; from
// /api/v1/problems) and recent warnings and errors. Until perch holds data
// of its own (series beyond its self-metrics), it leads to Connect a device.

import { api, h, instant, every, fmtNum, fmtBytes, fmtTime, fmtAgo, showError, deviceHref, deviceStatusText, isAdmin } from '../lib.js';

/** Offline devices listed before "and N more". */
const OFFLINE_SHOWN = 8;
/** Recent problems listed at most (the server keeps up to 200). */
const PROBLEMS_SHOWN = 50;

const Q = {
  cpu: 'perch_host_cpu_usage_ratio',
  memUsed: 'perch_host_memory_used_bytes',
  memTotal: 'perch_host_memory_total_bytes',
  diskUsed: 'perch_host_disk_used_bytes',
  diskTotal: 'perch_host_disk_total_bytes',
  temp: 'max(perch_host_cpu_temperature_celsius)',
  msgs: 'sum(rate(perch_mqtt_messages_received_total[1m]))',
  samples: 'sum(rate(perch_ingest_samples_total[1m]))',
  storeUsed: 'perch_storage_disk_usage_bytes',
  storeBudget: 'perch_storage_disk_budget_bytes',
};

function tile(id, title) {
  const value = h('div', { class: 'value', id: `ov-${id}` }, '…');
  const sub = h('div', { class: 'sub' });
  const meter = h('meter', { min: 0, max: 1, low: 0.7, high: 0.9, optimum: 0, value: 0, hidden: true, 'aria-label': title });
  return { el: h('section', { class: 'card stat', 'aria-labelledby': `ov-${id}-t` }, h('h2', { id: `ov-${id}-t` }, title), value, meter, sub), value, sub, meter };
}

export default async function (view, ctx) {
  const t = {
    cpu: tile('cpu', 'CPU'), mem: tile('mem', 'Memory'), disk: tile('disk', 'Disk'),
    temp: tile('temp', 'Temperature'), msgs: tile('msgs', 'MQTT messages/s'),
    samples: tile('samples', 'Samples/s'), store: tile('store', 'Storage'),
  };
  const health = h('div', { class: 'grid' }, Object.values(t).map(x => x.el));
  const healthError = h('div');
  const camGrid = h('div', { class: 'grid wide' });
  const events = h('div', { class: 'scroll' });
  const problems = h('div', { class: 'scroll', id: 'ov-problems' });
  const empty = h('section', { id: 'ov-empty', class: 'card ov-empty', hidden: true, 'aria-labelledby': 'ov-empty-t' },
    h('h2', { id: 'ov-empty-t' }, 'No data yet'),
    h('p', null, 'Nothing has sent perch a reading yet. Point a device (Tasmota, Shelly, ESPHome, zigbee2mqtt, Telegraf…) at perch\'s MQTT broker and its readings show up here.'),
    h('p', null, h('a', { class: 'button', href: '/connect' }, 'Connect a device')));
  const firingList = h('ul', { class: 'offline-list' });
  const firing = h('section', { id: 'ov-firing', hidden: true, 'aria-labelledby': 'ov-firing-t' },
    h('h2', { id: 'ov-firing-t' }, h('a', { href: '/alerts' }, 'Firing alerts')), h('div', { class: 'card' }, firingList));
  const offlineList = h('ul', { class: 'offline-list' });
  const offline = h('section', { id: 'ov-offline', hidden: true, 'aria-labelledby': 'ov-offline-t' },
    h('h2', { id: 'ov-offline-t' }, 'Offline devices'), h('div', { class: 'card' }, offlineList));
  view.append(h('h1', null, 'Overview'), empty, firing, healthError, health,
    h('h2', null, 'Cameras'), camGrid,
    offline,
    // Admins only: the user names people tried say which accounts exist.
    ...(isAdmin() ? [h('h2', { id: 'ov-problems-t' }, 'Recent problems'), problems] : []),
    h('h2', null, 'Recent warnings and errors'), events);

  const ratio = (tl, used, total, fmt) => {
    if (used === undefined || total === undefined || !total) {
      tl.value.textContent = used === undefined ? 'n/a' : fmt(used);
      tl.meter.hidden = true;
      tl.sub.textContent = total === 0 ? 'no budget set' : '';
      return;
    }
    tl.value.textContent = `${Math.round((used / total) * 100)} %`;
    tl.meter.hidden = false;
    tl.meter.value = Math.min(used / total, 1);
    tl.sub.textContent = `${fmt(used)} of ${fmt(total)}`;
  };

  async function health_() {
    const names = Object.keys(Q);
    const results = await Promise.allSettled(names.map(n => instant(Q[n], ctx.signal)));
    if (ctx.signal.aborted) return;
    const v = {};
    let firstError = null;
    names.forEach((n, i) => {
      const r = results[i];
      if (r.status === 'fulfilled') { if (r.value.length) v[n] = r.value[0].value; }
      else if (!firstError) firstError = r.reason;
    });
    if (firstError && firstError.name !== 'AbortError') showError(healthError, firstError);
    else healthError.replaceChildren();
    t.cpu.value.textContent = v.cpu === undefined ? 'n/a' : `${fmtNum(v.cpu * 100)} %`;
    t.cpu.meter.hidden = v.cpu === undefined;
    t.cpu.meter.value = v.cpu || 0;
    ratio(t.mem, v.memUsed, v.memTotal, fmtBytes);
    ratio(t.disk, v.diskUsed, v.diskTotal, fmtBytes);
    t.temp.value.textContent = v.temp === undefined ? 'n/a' : `${fmtNum(v.temp)} °C`;
    t.temp.sub.textContent = v.temp === undefined ? 'no sensor' : '';
    t.msgs.value.textContent = v.msgs === undefined ? 'n/a' : fmtNum(v.msgs);
    t.samples.value.textContent = v.samples === undefined ? 'n/a' : fmtNum(v.samples);
    ratio(t.store, v.storeUsed, v.storeBudget, fmtBytes);
    if (v.storeBudget) t.store.sub.textContent += ' (disk budget)';
  }

  async function cameras() {
    let list;
    try { list = await api('/api/v1/cameras', { signal: ctx.signal }); }
    catch (e) { if (e.name !== 'AbortError') camGrid.replaceChildren(h('p', { class: 'muted' }, `Cameras: ${e.message}`)); return; }
    if (!list.length) { camGrid.replaceChildren(h('p', { class: 'muted' }, 'No cameras. Add one in Settings.')); return; }
    const now = Date.now();
    camGrid.replaceChildren(...list.map(c => {
      const href = `/cameras/${encodeURIComponent(c.name)}`;
      return h('section', { class: 'card' },
        h('div', { class: 'panel-head' }, h('h3', null, h('a', { href }, c.name)),
          h('span', { class: `badge ${c.status}` }, c.status)),
        c.latest_snapshot
          ? h('a', { href, 'aria-label': `Open ${c.name}` }, h('img', { class: 'thumb', alt: `Latest snapshot of ${c.name}`, src: `/api/v1/cameras/${encodeURIComponent(c.name)}/latest.jpg?t=${now}` }))
          : h('p', { class: 'muted' }, 'No snapshot yet.'),
        c.last_error && c.status !== 'online' ? h('p', { class: 'bad' }, c.last_error) : null);
    }));
  }

  async function events_() {
    let list;
    try { list = await api('/api/v1/events', { signal: ctx.signal }); }
    catch (e) { if (e.name !== 'AbortError') showError(events, e); return; }
    if (!list || !list.length) { events.replaceChildren(h('p', { class: 'muted' }, 'Nothing to report.')); return; }
    events.replaceChildren(h('table', null,
      h('thead', null, h('tr', null, h('th', null, 'time'), h('th', null, 'level'), h('th', null, 'where'), h('th', null, 'message'))),
      h('tbody', null, list.slice(0, 50).map(e => h('tr', null,
        h('td', null, fmtTime(e.time_ms)),
        h('td', { class: e.level === 'ERROR' ? 'bad' : 'warn' }, e.level),
        h('td', { class: 'mono' }, e.target),
        h('td', null, e.message))))));
  }

  // Identical problems come counted in one row, the last seen first.
  async function problems_() {
    let list;
    try { list = await api('/api/v1/problems', { signal: ctx.signal }); }
    catch (e) { if (e.name !== 'AbortError') showError(problems, e); return; }
    if (!list || !list.length) {
      problems.replaceChildren(h('p', { class: 'muted' }, 'No failed sign-ins, refused publishes or writes, or unreadable payloads.'));
      return;
    }
    problems.replaceChildren(h('table', { class: 'problems', 'aria-labelledby': 'ov-problems-t' },
      h('thead', null, h('tr', null,
        h('th', null, 'problem'), h('th', null, 'who'), h('th', null, 'where'), h('th', null, 'why'),
        h('th', { class: 'num' }, 'count'), h('th', null, 'last seen'))),
      h('tbody', null, list.slice(0, PROBLEMS_SHOWN).map(p => h('tr', { 'data-kind': p.kind },
        h('td', { 'data-label': 'problem' }, h('span', { class: `badge problem ${p.kind}` }, p.what)),
        h('td', { class: 'mono who', 'data-label': 'who' }, p.who),
        h('td', { class: 'mono', 'data-label': 'where' }, p.where || '—'),
        h('td', { 'data-label': 'why' }, p.why),
        h('td', { class: 'num', 'data-label': 'count' }, String(p.count)),
        h('td', { class: 'when', 'data-label': 'last seen', title: `first ${fmtTime(p.first_ms)}, last ${fmtTime(p.last_ms)}` }, fmtAgo(p.last_ms)))))),
    ...(list.length > PROBLEMS_SHOWN ? [h('p', { class: 'muted' }, `and ${list.length - PROBLEMS_SHOWN} more (GET /api/v1/problems)`)] : []));
  }

  // "No data yet" until the store holds a metric other than perch's own
  // self-metrics (metric names of all time: the index answers); checked no
  // more once it does.
  let hasData = false;
  async function empty_() {
    if (hasData) return;
    let names;
    try { names = await api('/api/v1/label/__name__/values', { signal: ctx.signal }); }
    catch (e) { if (e.name !== 'AbortError') empty.hidden = true; return; }
    hasData = (names || []).some(n => !n.startsWith('perch_'));
    empty.hidden = hasData;
  }

  // Nothing at all while every device is online, or there are none (or the
  // registry does not run).
  async function offline_() {
    let list;
    try { list = await api('/api/v1/devices?status=offline', { signal: ctx.signal }); }
    catch (e) { if (e.name !== 'AbortError') { offline.hidden = true; console.warn('devices:', e.message); } return; }
    offline.hidden = !list.length;
    if (!list.length) { offlineList.replaceChildren(); return; }
    offlineList.replaceChildren(...list.slice(0, OFFLINE_SHOWN).map(d => h('li', null,
      h('span', { class: 'badge offline' }, 'offline'), ' ',
      h('a', { href: deviceHref(d.id) }, d.name && d.name !== d.id ? d.name : d.id), ' ',
      h('span', { class: 'muted' }, `last seen ${fmtAgo(d.last_seen_ms)} · ${deviceStatusText(d)}`))),
    ...(list.length > OFFLINE_SHOWN ? [h('li', null, h('a', { href: '/devices?status=offline' }, `All ${list.length} offline devices`))] : []));
  }

  async function firing_() {
    let list;
    try { list = (await api('/api/v1/alerts', { signal: ctx.signal })).alerts || []; }
    catch (e) { if (e.name !== 'AbortError') { firing.hidden = true; console.warn('alerts:', e.message); } return; }
    list = list.filter(a => a.state === 'firing');
    firing.hidden = !list.length;
    firingList.replaceChildren(...list.slice(0, OFFLINE_SHOWN).map(a => h('li', { dataset: { alert: a.labels.alertname } },
      h('span', { class: 'badge alert-firing' }, 'firing'), ' ',
      h('b', null, a.labels.alertname), ' ',
      h('span', null, a.annotations.summary || ''), ' ',
      h('span', { class: 'muted' }, `started ${fmtAgo(Date.parse(a.activeAt))}`))),
    ...(list.length > OFFLINE_SHOWN ? [h('li', null, h('a', { href: '/alerts' }, `All ${list.length} firing alerts`))] : []));
  }

  ctx.cleanup(every(5000, health_));
  ctx.cleanup(every(10000, firing_));
  ctx.cleanup(every(10000, offline_));
  ctx.cleanup(every(15000, cameras));
  ctx.cleanup(every(10000, events_));
  if (isAdmin()) ctx.cleanup(every(10000, problems_));
  ctx.cleanup(every(10000, empty_));
}
