//! One camera: a single RTSP session (retina), reconnected with capped
//! exponential backoff forever, whose frames are remuxed once into fMP4
//! fragments and fanned out to every viewer, the HLS segmenter and the
//! snapshot taker.
//!
//! Fan-out is a broadcast channel: a viewer that falls behind loses frames
//! and resumes at the next keyframe; the camera and the other viewers never
//! wait for it. The current GOP is kept so a new viewer gets a picture at once.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoFrame, VideoParametersCodec};
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, watch};

use super::fmp4;
use super::hls::Hls;
use base::Clock;
use config::{CameraConfig, CameraTransport};

/// The longest a connected camera may stay silent before the session is
/// restarted.
const NO_FRAMES_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Frames a viewer may be behind before it skips to the next keyframe.
const LIVE_BUFFER: usize = 128;

/// What is known about the stream, replaced when the camera changes it.
#[derive(Debug)]
pub struct StreamInfo {
    /// Increments with every change of parameters.
    pub generation: u64,
    /// RFC 6381 codec string, e.g. `avc1.64001F`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub timescale: u32,
    pub init_segment: Bytes,
    /// For decoding snapshots: the H.264 SPS and PPS (H.265 is relayed only).
    pub h264: Option<(Bytes, Bytes)>,
}

impl StreamInfo {
    pub fn mime(&self) -> String {
        format!("video/mp4; codecs=\"{}\"", self.codec)
    }
}

/// One frame as an fMP4 fragment, built once for every viewer.
#[derive(Debug)]
pub struct Fragment {
    pub generation: u64,
    pub keyframe: bool,
    pub bytes: Bytes,
}

#[derive(Clone, Debug)]
pub enum LiveEvent {
    Stream(Arc<StreamInfo>),
    Fragment(Arc<Fragment>),
}

/// A keyframe for a snapshot.
#[derive(Clone)]
pub struct KeyFrame {
    pub info: Arc<StreamInfo>,
    /// Length-prefixed NAL units.
    pub data: Bytes,
    pub time_ms: i64,
    pub received: Instant,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Connecting,
    Online,
    Offline,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub status: State,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: f64,
    pub bitrate_bps: f64,
    pub last_frame_ms: Option<i64>,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub viewers: usize,
    pub snapshot_error: Option<String>,
}

/// Frames and bytes in the last measuring period, for fps and bitrate.
struct Rate {
    since: Instant,
    frames: u64,
    bytes: u64,
}

pub struct Camera {
    pub config: CameraConfig,
    clock: Arc<dyn Clock>,
    status: Mutex<Status>,
    live: broadcast::Sender<LiveEvent>,
    gop: Mutex<Gop>,
    pub hls: Mutex<Hls>,
    last_keyframe: Mutex<Option<KeyFrame>>,
    keyframe_waiters: Mutex<Vec<oneshot::Sender<KeyFrame>>>,
    rate: Mutex<Rate>,
    pub viewers: AtomicUsize,
    pub frames_total: AtomicU64,
    pub bytes_total: AtomicU64,
    sequence: AtomicU32,
}

/// The stream's parameters and the fragments since its last keyframe, so a
/// new viewer starts with a picture at once.
type Gop = (Option<Arc<StreamInfo>>, Vec<Arc<Fragment>>);

/// A live viewer's starting point: what to send first, then the receiver.
pub struct LiveStart {
    pub info: Option<Arc<StreamInfo>>,
    pub gop: Vec<Arc<Fragment>>,
    pub events: broadcast::Receiver<LiveEvent>,
}

impl Camera {
    pub fn new(config: CameraConfig, clock: Arc<dyn Clock>) -> Arc<Camera> {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Arc::new(Camera {
            config,
            clock,
            status: Mutex::new(Status::default()),
            live,
            gop: Mutex::new((None, Vec::new())),
            hls: Mutex::new(Hls::new()),
            last_keyframe: Mutex::new(None),
            keyframe_waiters: Mutex::new(Vec::new()),
            rate: Mutex::new(Rate {
                since: Instant::now(),
                frames: 0,
                bytes: 0,
            }),
            viewers: AtomicUsize::new(0),
            frames_total: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            sequence: AtomicU32::new(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.lock().clone();
        s.viewers = self.viewers.load(Ordering::Relaxed);
        // A camera that stopped sending has no current rate.
        if s.last_frame_ms
            .is_some_and(|t| self.clock.now_ms() - t > 5_000)
        {
            s.fps = 0.0;
            s.bitrate_bps = 0.0;
        }
        s
    }

    pub fn set_snapshot_error(&self, e: Option<String>) {
        self.status.lock().snapshot_error = e;
    }

    /// Subscribes a viewer: the stream description, the current GOP, then
    /// everything after it.
    pub fn watch(&self) -> LiveStart {
        let gop = self.gop.lock();
        LiveStart {
            info: gop.0.clone(),
            gop: gop.1.clone(),
            events: self.live.subscribe(),
        }
    }

    /// Heap bytes the camera holds for its viewers and snapshots: the
    /// fragments since the last keyframe (which the live ring shares), the
    /// HLS segments and the last keyframe.
    pub fn buffered_bytes(&self) -> usize {
        let gop: usize = self.gop.lock().1.iter().map(|f| f.bytes.len()).sum();
        let keyframe = self
            .last_keyframe
            .lock()
            .as_ref()
            .map_or(0, |k| k.data.len());
        gop + self.hls.lock().buffered_bytes() + keyframe
    }

    /// The next keyframe, or the last one if it is recent: what a snapshot
    /// is taken from. `None` if the camera sends none within `wait`.
    pub async fn keyframe(&self, fresh_within: Duration, wait: Duration) -> Option<KeyFrame> {
        let rx = {
            if let Some(k) = self.last_keyframe.lock().as_ref() {
                if k.received.elapsed() <= fresh_within {
                    return Some(k.clone());
                }
            }
            let (tx, rx) = oneshot::channel();
            self.keyframe_waiters.lock().push(tx);
            rx
        };
        tokio::time::timeout(wait, rx)
            .await
            .ok()
            .and_then(Result::ok)
    }

    fn set_state(&self, state: State, error: Option<String>) {
        let mut s = self.status.lock();
        s.status = state;
        if let Some(e) = error {
            s.last_error = Some(e);
        }
    }

    /// Runs the camera until `stop`: connect, relay, reconnect.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.set_state(State::Connecting, None);
            let started = Instant::now();
            let result = tokio::select! {
                r = self.session() => r,
                _ = base::stopping(&mut stop) => return,
            };
            let reason = match result {
                Ok(()) => "the camera ended the stream".to_string(),
                Err(e) => self.redact(e.to_string()),
            };
            tracing::warn!(camera = self.name(), error = %reason, retry_in = ?backoff, "camera offline");
            self.set_state(State::Offline, Some(reason));
            self.status.lock().reconnects += 1;
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = base::stopping(&mut stop) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Error texts go to the API and the log: never with the password,
    /// whether configured or written into the URL.
    fn redact(&self, mut text: String) -> String {
        let mut secrets: Vec<String> = self.config.password.iter().cloned().collect();
        if let Ok(u) = url::Url::parse(&self.config.url) {
            secrets.extend(u.password().map(str::to_string));
        }
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    async fn session(&self) -> Result<(), SessionError> {
        let cfg = &self.config;
        let url = url::Url::parse(&cfg.url).map_err(SessionError::Url)?;
        let creds = cfg.username.as_ref().map(|u| retina::client::Credentials {
            username: u.clone(),
            password: cfg.password.clone().unwrap_or_default(),
        });
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("perch/{}", env!("CARGO_PKG_VERSION")));
        let mut session = tokio::time::timeout(CONNECT_TIMEOUT, Session::describe(url, options))
            .await
            .map_err(|_| SessionError::NoAnswer {
                request: "DESCRIBE",
            })?
            .map_err(SessionError::Describe)?;
        let stream = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
            .ok_or_else(|| {
                let found: Vec<String> = session
                    .streams()
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect();
                SessionError::NoVideoStream {
                    offered: found.join(", "),
                }
            })?;
        let transport = match cfg.transport {
            CameraTransport::Tcp => Transport::Tcp(Default::default()),
            CameraTransport::Udp => Transport::Udp(Default::default()),
        };
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            session.setup(
                stream,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::MP4),
            ),
        )
        .await
        .map_err(|_| SessionError::NoAnswer { request: "SETUP" })?
        .map_err(SessionError::Setup)?;
        let playing = tokio::time::timeout(CONNECT_TIMEOUT, session.play(PlayOptions::default()))
            .await
            .map_err(|_| SessionError::NoAnswer { request: "PLAY" })?
            .map_err(SessionError::Play)?;
        let mut demuxed = playing.demuxed().map_err(SessionError::Stream)?;
        tracing::info!(camera = self.name(), "camera connected");
        let mut remux = Remux::default();
        loop {
            let item = tokio::time::timeout(NO_FRAMES_TIMEOUT, demuxed.next())
                .await
                .map_err(|_| SessionError::NoVideo)?;
            let frame = match item {
                None => return Ok(()),
                Some(Err(e)) => return Err(SessionError::Stream(e)),
                Some(Ok(CodecItem::VideoFrame(f))) => f,
                Some(Ok(_)) => continue,
            };
            if frame.has_new_parameters() || remux.info.is_none() {
                let params = demuxed.streams()[stream].parameters();
                if let Some(ParametersRef::Video(p)) = params {
                    self.new_stream(&mut remux, p);
                }
            }
            if remux.info.is_none() {
                continue; // nothing decodable before the parameters are known
            }
            self.on_frame(&mut remux, frame);
        }
    }

    fn new_stream(&self, remux: &mut Remux, p: &retina::codec::VideoParameters) {
        let Ok(entry) = p.mp4_sample_entry().build() else {
            self.set_state(
                State::Online,
                Some("cannot describe this stream in MP4".into()),
            );
            return;
        };
        // A frame still held belongs to the old parameters: send it first.
        if let Some(held) = remux.held.take() {
            self.emit(remux, held, 3000);
        }
        let (width, height) = p.pixel_dimensions();
        let timescale = 90_000;
        let generation = remux.info.as_ref().map_or(1, |i| i.generation + 1);
        let h264 = match p.codec_params() {
            VideoParametersCodec::H264 { sps, pps } => Some((sps.clone(), pps.clone())),
            _ => None,
        };
        let info = Arc::new(StreamInfo {
            generation,
            codec: p.rfc6381_codec().to_string(),
            width,
            height,
            timescale,
            init_segment: Bytes::from(fmp4::init_segment(&entry, width, height, timescale)),
            h264,
        });
        tracing::info!(camera = self.name(), codec = %info.codec, width, height, "stream parameters");
        {
            let mut s = self.status.lock();
            s.codec = Some(info.codec.clone());
            s.width = Some(width);
            s.height = Some(height);
        }
        *self.gop.lock() = (Some(info.clone()), Vec::new());
        self.hls.lock().new_stream(info.clone());
        let _ = self.live.send(LiveEvent::Stream(info.clone()));
        remux.info = Some(info);
    }

    /// Holds each frame until the next arrives, which gives its duration.
    fn on_frame(&self, remux: &mut Remux, frame: VideoFrame) {
        let pts = frame.timestamp().elapsed().max(0) as u64;
        let keyframe = frame.is_random_access_point();
        let next = Held {
            pts,
            keyframe,
            data: Bytes::from(frame.into_data()),
        };
        if let Some(held) = remux.held.replace(next) {
            let duration = pts.saturating_sub(held.pts).clamp(1, 10 * 90_000) as u32;
            self.emit(remux, held, duration);
        }
    }

    fn emit(&self, remux: &mut Remux, frame: Held, duration: u32) {
        let Some(info) = remux.info.clone() else {
            return;
        };
        // Decode times must increase even if the camera's do not.
        let dts = frame.pts.max(remux.next_dts);
        remux.next_dts = dts + duration as u64;
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let sample = fmp4::Sample {
            duration,
            keyframe: frame.keyframe,
            data: &frame.data,
        };
        let fragment = Arc::new(Fragment {
            generation: info.generation,
            keyframe: frame.keyframe,
            bytes: Bytes::from(fmp4::fragment(seq, dts, std::slice::from_ref(&sample))),
        });
        {
            let mut gop = self.gop.lock();
            if frame.keyframe {
                gop.1.clear();
            }
            // A GOP that never ends (no keyframes) must not grow forever.
            if gop.1.len() < 600 {
                gop.1.push(fragment.clone());
            }
        }
        self.hls.lock().push(
            Instant::now(),
            dts,
            duration,
            frame.keyframe,
            &frame.data,
            &info,
        );
        let _ = self.live.send(LiveEvent::Fragment(fragment));
        let now = self.clock.now_ms();
        if frame.keyframe {
            let kf = KeyFrame {
                info: info.clone(),
                data: frame.data.clone(),
                time_ms: now,
                received: Instant::now(),
            };
            for w in self.keyframe_waiters.lock().drain(..) {
                let _ = w.send(kf.clone());
            }
            *self.last_keyframe.lock() = Some(kf);
        }
        self.frames_total.fetch_add(1, Ordering::Relaxed);
        self.bytes_total
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        let mut rate = self.rate.lock();
        rate.frames += 1;
        rate.bytes += frame.data.len() as u64;
        let secs = rate.since.elapsed().as_secs_f64();
        let mut s = self.status.lock();
        s.last_frame_ms = Some(now);
        if s.status != State::Online {
            s.status = State::Online;
            s.last_error = None;
        }
        if secs >= 2.0 {
            s.fps = rate.frames as f64 / secs;
            s.bitrate_bps = rate.bytes as f64 * 8.0 / secs;
            *rate = Rate {
                since: Instant::now(),
                frames: 0,
                bytes: 0,
            };
        }
    }
}

struct Held {
    pts: u64,
    keyframe: bool,
    data: Bytes,
}

#[derive(Default)]
struct Remux {
    info: Option<Arc<StreamInfo>>,
    held: Option<Held>,
    next_dts: u64,
}

/// Why a session with the camera ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid URL: {0}")]
    Url(url::ParseError),
    #[error("no answer to {request} within {} s", CONNECT_TIMEOUT.as_secs())]
    NoAnswer { request: &'static str },
    #[error("{}", describe_error(.0))]
    Describe(retina::Error),
    /// `offered` lists the camera's streams as `media/encoding`.
    #[error("no H.264 or H.265 video stream (the camera offers: {offered})")]
    NoVideoStream { offered: String },
    #[error("SETUP failed: {0}")]
    Setup(retina::Error),
    #[error("PLAY failed: {0}")]
    Play(retina::Error),
    /// The stream could not start or broke off while playing.
    #[error("{0}")]
    Stream(retina::Error),
    #[error("no video for {} s", NO_FRAMES_TIMEOUT.as_secs())]
    NoVideo,
}

/// Says why DESCRIBE failed in words a user can act on.
fn describe_error(e: &retina::Error) -> String {
    let text = e.to_string();
    if text.contains("401") || text.to_lowercase().contains("unauthorized") {
        format!("the camera refused the credentials (401 Unauthorized); check username and password ({text})")
    } else if text.to_lowercase().contains("connection refused") {
        format!("nothing listens at that address ({text})")
    } else {
        format!("DESCRIBE failed: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_named_in_seconds() {
        let e = SessionError::NoAnswer { request: "SETUP" };
        assert_eq!(e.to_string(), "no answer to SETUP within 15 s");
        assert_eq!(SessionError::NoVideo.to_string(), "no video for 20 s");
    }
}
