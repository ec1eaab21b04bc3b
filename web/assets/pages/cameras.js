// Cameras: a wall of live views (/cameras) and one camera's page
// (/cameras/NAME): live view, status, on-demand snapshot, and a timeline to
// scrub through a day's snapshots.

import { api, h, field, every, fmtNum, fmtBytes, fmtTime, fmtAgo, showError, isAdmin } from '../lib.js';
import { playLive } from '../mse.js';

function liveBox(c, ctx) {
  const video = h('video', { muted: true, autoplay: true, playsinline: true, 'aria-label': `Live view of ${c.name}` });
  const overlay = h('div', { class: 'overlay' });
  const box = h('div', { class: 'video-box' }, video, overlay);
  const stop = playLive(video, c.name, text => { overlay.textContent = text; });
  ctx.cleanup(stop);
  return box;
}

export default async function (view, ctx) {
  if (ctx.params.length) return cameraPage(view, ctx, ctx.params[0]);

  view.append(h('h1', null, 'Cameras'));
  const wall = h('div', { class: 'grid wide' });
  view.append(wall);
  let list;
  try { list = await api('/api/v1/cameras', { signal: ctx.signal }); }
  catch (e) { if (e.name !== 'AbortError') showError(wall, e); return; }
  if (!list.length) {
    wall.append(h('p', { class: 'muted' }, 'No cameras yet. ',
      isAdmin() ? h('a', { href: '/settings#settings-cameras' }, 'Add an RTSP camera in Settings') : 'An admin adds them in Settings',
      '; MQTT devices are connected on ', h('a', { href: '/connect' }, 'Connect a device'), '.'));
    return;
  }
  const badges = new Map();
  for (const c of list) {
    const badge = h('span', { class: `badge ${c.status}` }, c.status);
    badges.set(c.name, badge);
    const href = `/cameras/${encodeURIComponent(c.name)}`;
    wall.append(h('section', { class: 'card' },
      h('div', { class: 'panel-head' }, h('h2', { style: { margin: 0, flex: 1 } }, h('a', { href }, c.name)), badge),
      liveBox(c, ctx)));
  }
  // Status only (cheap); the video keeps playing.
  ctx.cleanup(every(10000, async () => {
    const l = await api('/api/v1/cameras', { signal: ctx.signal });
    for (const c of l) {
      const b = badges.get(c.name);
      if (b) { b.className = `badge ${c.status}`; b.textContent = c.status; b.title = c.last_error || ''; }
    }
  }));
}

async function cameraPage(view, ctx, name) {
  const base = `/api/v1/cameras/${encodeURIComponent(name)}`;
  view.append(h('p', null, h('a', { href: '/cameras' }, '← All cameras')), h('h1', null, name));
  let cam;
  try { cam = await api(base, { signal: ctx.signal }); }
  catch (e) { if (e.name !== 'AbortError') view.append(h('div', { class: 'notice error', role: 'alert' }, e.message)); return; }

  const statusBox = h('dl', { class: 'kv' });
  const renderStatus = c => {
    const rows = [
      ['status', h('span', { class: `badge ${c.status}` }, c.status)],
      ['video', c.codec ? `${c.codec} ${c.width}×${c.height}` : '—'],
      ['frame rate', `${fmtNum(c.fps)} fps`],
      ['bitrate', `${fmtNum(c.bitrate_bps / 1000)} kbit/s`],
      ['last frame', c.last_frame_ms ? fmtAgo(c.last_frame_ms) : 'never'],
      ['reconnects', String(c.reconnects)],
      ['viewers', String(c.viewers)],
      ['snapshots', `${fmtBytes(c.snapshot_bytes)} · schedule ${c.snapshot_schedule || 'none'} · kept ${c.snapshot_retention}`],
      ['source', c.source === 'config' ? 'config file' : 'added in Settings'],
    ];
    if (c.last_error) rows.push(['last error', h('span', { class: 'bad' }, c.last_error)]);
    if (c.snapshot_error) rows.push(['snapshot error', h('span', { class: 'bad' }, c.snapshot_error)]);
    statusBox.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
  };
  renderStatus(cam);

  // ---- snapshot timeline ----
  const today = new Date();
  const dayInput = h('input', { type: 'date', id: 'snap-day', value: localDate(today) });
  const slider = h('input', { type: 'range', id: 'snap-slider', min: 0, max: 0, value: 0, step: 1 });
  const img = h('img', { class: 'thumb', alt: '' });
  const caption = h('p', { class: 'muted', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', 'aria-label': 'Previous snapshot' }, '◀');
  const next = h('button', { type: 'button', 'aria-label': 'Next snapshot' }, '▶');
  let snaps = [];
  let followLatest = true;

  const show = i => {
    if (!snaps.length) { img.hidden = true; caption.textContent = 'No snapshots on this day.'; return; }
    i = Math.max(0, Math.min(snaps.length - 1, i));
    slider.value = i;
    const s = snaps[i];
    img.hidden = false;
    img.src = `${base}/snapshots/${s.id}.jpg`;
    img.alt = `Snapshot of ${name} at ${fmtTime(s.id)}`;
    caption.textContent = `${fmtTime(s.id)} · ${s.width}×${s.height} · ${fmtBytes(s.bytes)} · ${s.trigger} (${i + 1} of ${snaps.length})`;
    followLatest = i === snaps.length - 1 && dayInput.value === localDate(new Date());
  };
  slider.addEventListener('input', () => show(Number(slider.value)));
  prev.addEventListener('click', () => show(Number(slider.value) - 1));
  next.addEventListener('click', () => show(Number(slider.value) + 1));

  async function loadDay(keepLatest) {
    const [y, m, d] = dayInput.value.split('-').map(Number);
    if (!y) return;
    const start = new Date(y, m - 1, d).getTime();
    const end = new Date(y, m - 1, d + 1).getTime() - 1;
    try {
      const list = await api(`${base}/snapshots?start=${start / 1000}&end=${end / 1000}&limit=10000`, { signal: ctx.signal });
      snaps = list.sort((a, b) => a.id - b.id);
      slider.max = Math.max(0, snaps.length - 1);
      slider.disabled = snaps.length < 2;
      show(keepLatest || !snaps.length ? snaps.length - 1 : Math.min(Number(slider.value), snaps.length - 1));
    } catch (e) {
      if (e.name !== 'AbortError') caption.textContent = e.message;
    }
  }
  dayInput.addEventListener('change', () => loadDay(true));

  const takeResult = h('div', { 'aria-live': 'polite' });
  const takeButton = h('button', { type: 'button', class: 'primary' }, 'Take snapshot');
  takeButton.addEventListener('click', async () => {
    takeButton.disabled = true;
    takeResult.replaceChildren(h('p', { class: 'muted' }, 'Waiting for a keyframe…'));
    try {
      const s = await api(`${base}/snapshot`, { method: 'POST' });
      takeResult.replaceChildren(h('p', { class: 'notice ok' }, `Snapshot taken at ${fmtTime(s.id)}.`));
      dayInput.value = localDate(new Date());
      await loadDay(true);
    } catch (e) { showError(takeResult, e); }
    finally { takeButton.disabled = false; }
  });

  view.append(h('div', { class: 'grid wide' },
    h('section', { class: 'card' }, h('h2', null, 'Live'), liveBox(cam, ctx)),
    h('section', { class: 'card' }, h('h2', null, 'Status'), statusBox,
      h('p', { class: 'row' }, takeButton), takeResult)),
    h('section', { class: 'card timeline' }, h('h2', null, 'Snapshots'),
      h('div', { class: 'row center' }, field('Day', dayInput), prev, field('Snapshot', slider, { class: 'grow' }), next),
      caption, img));

  await loadDay(true);
  ctx.cleanup(every(5000, async () => {
    renderStatus(await api(base, { signal: ctx.signal }));
  }));
  // New scheduled snapshots appear while the newest is shown.
  const t = setInterval(() => { if (followLatest && !document.hidden) loadDay(true); }, 30000);
  ctx.cleanup(() => clearInterval(t));
}

function localDate(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}
