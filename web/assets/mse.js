// A camera's live view in a <video>: Media Source Extensions fed from
// /api/v1/cameras/{name}/live (WebSocket: a JSON text message describing the
// stream, the init segment, then one fMP4 fragment per frame; a new text
// message + init segment when the stream changes). The same scheme as
// tests/fixtures/mse_live.html, plus reconnecting, trimming the buffer and
// staying at the live edge. Without MSE (iPhone Safari) it falls back to
// the camera's HLS playlist, which Safari plays natively.

const MAX_BUFFER_S = 30;
const BEHIND_S = 3;

/** Starts playing; returns stop(). onStatus(text) reports problems. */
export function playLive(video, name, onStatus = () => {}) {
  video.muted = true;
  video.playsInline = true;
  const MS = window.MediaSource || window.ManagedMediaSource;
  const base = `/api/v1/cameras/${encodeURIComponent(name)}`;
  if (!MS) {
    if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = `${base}/hls/index.m3u8`;
      video.play().catch(() => {});
      return () => { video.removeAttribute('src'); video.load(); };
    }
    onStatus('This browser cannot play live video (no Media Source Extensions).');
    return () => {};
  }

  let stopped = false, ws = null, retry = 1000, retryTimer = null;
  let mediaSource = null, buffer = null, queue = [], started = false, objectUrl = null;

  function resetMedia() {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    mediaSource = new MS();
    buffer = null; queue = []; started = false;
    objectUrl = URL.createObjectURL(mediaSource);
    if (window.ManagedMediaSource && MS === window.ManagedMediaSource) video.disableRemotePlayback = true;
    video.src = objectUrl;
    return new Promise(resolve => mediaSource.addEventListener('sourceopen', resolve, { once: true }));
  }

  function pump() {
    if (!buffer || buffer.updating || stopped || mediaSource.readyState !== 'open') return;
    try {
      const b = buffer.buffered;
      if (b.length) {
        const end = b.end(b.length - 1);
        // A live stream starts at the camera's time, not at 0.
        if (!started) {
          started = true;
          video.currentTime = b.start(0);
          video.play().catch(e => onStatus('Press play: ' + e.message));
        } else if (end - video.currentTime > BEHIND_S && !video.paused) {
          video.currentTime = end - 0.5;   // fell behind (background tab): jump to now
        }
        if (end - b.start(0) > MAX_BUFFER_S && video.currentTime - b.start(0) > 10) {
          buffer.remove(b.start(0), video.currentTime - 5);
          return;
        }
      }
      if (queue.length) buffer.appendBuffer(queue.shift());
    } catch (e) {
      // A full buffer or a decoder that gave up: start over from the next
      // stream description rather than throw from an event handler.
      queue = [];
      onStatus(e.name === 'QuotaExceededError' ? 'Video buffer full; skipping ahead.' : `Video: ${e.message}`);
      if (e.name !== 'QuotaExceededError' && ws) ws.close();
    }
  }

  let opening = null;
  async function onMessage(e) {
    if (typeof e.data === 'string') {
      let info;
      try { info = JSON.parse(e.data); } catch { return; }
      if (!info.mime) return;
      if (!MS.isTypeSupported(info.mime)) { onStatus(`This browser cannot play ${info.mime}.`); return; }
      // A (new) stream: a fresh MediaSource, so the new init segment applies.
      opening = resetMedia().then(() => {
        buffer = mediaSource.addSourceBuffer(info.mime);
        buffer.mode = 'segments';
        buffer.addEventListener('updateend', pump);
        buffer.addEventListener('error', () => onStatus('Video decoding failed.'));
        onStatus('');
        pump();
      }).catch(err => { buffer = null; onStatus(`Video: ${err.message}`); });
      return;
    }
    if (opening) await opening;
    if (!buffer) return;
    queue.push(e.data);
    if (queue.length > 300) queue.splice(0, queue.length - 300);
    pump();
  }

  function connect() {
    if (stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    ws = new WebSocket(`${proto}//${location.host}${base}/live`);
    ws.binaryType = 'arraybuffer';
    // Messages are handled in order: a fragment must not overtake its stream's start.
    let chain = Promise.resolve();
    ws.onmessage = e => { chain = chain.then(() => onMessage(e)).catch(err => onStatus(err.message)); };
    ws.onopen = () => { retry = 1000; };
    ws.onclose = () => {
      if (stopped) return;
      onStatus('Live view disconnected; reconnecting…');
      retryTimer = setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  const onVideoError = () => onStatus('Video error: ' + (video.error && video.error.message));
  video.addEventListener('error', onVideoError);
  connect();

  return function stop() {
    stopped = true;
    clearTimeout(retryTimer);
    video.removeEventListener('error', onVideoError);
    if (ws) {
      // Closing a socket still connecting makes the browser log an error.
      if (ws.readyState === WebSocket.CONNECTING) { ws.onmessage = null; ws.onopen = () => ws.close(); }
      else ws.close();
    }
    video.removeAttribute('src');
    video.load();
    if (objectUrl) URL.revokeObjectURL(objectUrl);
  };
}
