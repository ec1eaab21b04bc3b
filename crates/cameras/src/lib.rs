//! Cameras: one RTSP session per camera (retina), relayed without
//! transcoding to browsers (fMP4 over WebSocket for Media Source Extensions)
//! and to HLS players, and JPEG snapshots on a cron schedule with retention.
//! Owns the sled trees `cameras` (definitions added through the API) and
//! `snapshots`, and `snapshots/` in the data directory. Uses `base`,
//! `config`, and its trees from `store`.

pub mod bench;
pub mod camera;
mod fmp4;
mod hls;
mod snapshot;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use base::Clock;
use config::CameraConfig;

pub use camera::{Camera, LiveEvent, LiveStart, State, Status, StreamInfo};
pub use snapshot::{SnapshotError, SnapshotMeta};

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("no camera named {0:?}")]
    NotFound(String),
    #[error("a camera named {0:?} exists already")]
    Exists(String),
    #[error("camera {0:?} is defined in the config file; change it there")]
    FromConfig(String),
    #[error("invalid camera: {0}")]
    Invalid(InvalidCamera),
    #[error("no keyframe from camera {0:?} within 10 s (is it online?)")]
    NoKeyframe(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("scheduler: {0}")]
    Scheduler(#[source] JobSchedulerError),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
}

impl base::HasKind for CameraError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            CameraError::NotFound(_) => K::NotFound,
            CameraError::Exists(_) | CameraError::FromConfig(_) => K::Conflict,
            CameraError::Invalid(_) => K::InvalidArgument,
            CameraError::NoKeyframe(_) => K::Unavailable,
            CameraError::Snapshot(_) | CameraError::Scheduler(_) | CameraError::Db(_) => {
                K::Internal
            }
        }
    }
}

/// Why a camera's definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCamera {
    /// What the configuration's own checks found.
    #[error(transparent)]
    Settings(#[from] config::Issues),
    #[error("snapshot_schedule {schedule:?}: {source}")]
    Schedule {
        schedule: String,
        source: JobSchedulerError,
    },
}

impl base::HasKind for InvalidCamera {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// A camera as the API shows it: its settings without the password, where it
/// is defined, and its status.
#[derive(Debug, Serialize)]
pub struct CameraView {
    pub name: String,
    pub url: String,
    pub username: Option<String>,
    pub has_password: bool,
    pub transport: config::CameraTransport,
    pub snapshot_schedule: Option<String>,
    pub snapshot_retention: config::Duration,
    pub snapshot_max_bytes: config::ByteSize,
    pub snapshot_quality: u8,
    pub snapshot_max_width: u32,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
    #[serde(flatten)]
    pub status: Status,
    pub snapshot_bytes: u64,
    pub latest_snapshot: Option<SnapshotMeta>,
}

struct Running {
    camera: Arc<Camera>,
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    job: Option<uuid::Uuid>,
    from_config: bool,
}

pub struct Cameras {
    clock: Arc<dyn Clock>,
    running: Mutex<BTreeMap<String, Running>>,
    definitions: sled::Tree,
    snapshots: snapshot::SnapshotStore,
    scheduler: JobScheduler,
    me: Weak<Cameras>,
    pub snapshots_taken: AtomicU64,
    pub snapshot_failures: AtomicU64,
    /// Milliseconds from the last scheduled tick to its file being written.
    pub last_snapshot_latency_ms: AtomicU64,
}

impl Cameras {
    /// Starts every camera of the config file and of the database.
    pub async fn start(
        configured: &[CameraConfig],
        trees: &store::Trees,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Cameras>, CameraError> {
        let scheduler = JobScheduler::new().await.map_err(CameraError::Scheduler)?;
        let cameras = Arc::new_cyclic(|me| Cameras {
            clock,
            running: Mutex::new(BTreeMap::new()),
            definitions: trees.open(store::Tree::Cameras).expect("sled tree"),
            snapshots: snapshot::SnapshotStore::open(data_dir, trees).expect("snapshot store"),
            scheduler,
            me: me.clone(),
            snapshots_taken: AtomicU64::new(0),
            snapshot_failures: AtomicU64::new(0),
            last_snapshot_latency_ms: AtomicU64::new(0),
        });
        for c in configured {
            cameras.launch(c.clone(), true).await?;
        }
        for item in cameras.definitions.iter() {
            let (_, v) = item?;
            match serde_json::from_slice::<CameraConfig>(&v) {
                Ok(c) if !cameras.running.lock().contains_key(&c.name) => {
                    cameras.launch(c, false).await?
                }
                Ok(c) => tracing::warn!(
                    camera = c.name,
                    "camera in the database shadowed by the config file"
                ),
                Err(e) => tracing::error!(error = %e, "unreadable camera definition skipped"),
            }
        }
        cameras
            .scheduler
            .start()
            .await
            .map_err(CameraError::Scheduler)?;
        // Retention also runs without new snapshots arriving.
        let weak = Arc::downgrade(&cameras);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { return };
                c.enforce_retention_all();
            }
        });
        Ok(cameras)
    }

    async fn launch(&self, mut config: CameraConfig, from_config: bool) -> Result<(), CameraError> {
        // The config file and definitions stored before this was done may
        // still carry credentials in the URL, which retina refuses.
        move_url_credentials(&mut config)?;
        config
            .validate()
            .map_err(|issues| CameraError::Invalid(issues.into()))?;
        let camera = Camera::new(config.clone(), self.clock.clone());
        let (stop, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("camera", camera = %config.name);
        let task = tokio::spawn(tracing::Instrument::instrument(
            camera.clone().run(stop_rx),
            span,
        ));
        let job = match &config.snapshot_schedule {
            Some(schedule) => Some(self.schedule(&config.name, schedule).await?),
            None => None,
        };
        self.running.lock().insert(
            config.name.clone(),
            Running {
                camera,
                task,
                stop,
                job,
                from_config,
            },
        );
        Ok(())
    }

    async fn schedule(&self, name: &str, schedule: &str) -> Result<uuid::Uuid, CameraError> {
        let weak = self.me.clone();
        let name = name.to_string();
        let job = Job::new_async_tz(schedule, chrono::Local, move |_, _| {
            let (weak, name) = (weak.clone(), name.clone());
            Box::pin(async move {
                let tick = Instant::now();
                if let Some(cams) = weak.upgrade() {
                    match cams.snapshot(&name, "schedule").await {
                        Ok(_) => cams
                            .last_snapshot_latency_ms
                            .store(tick.elapsed().as_millis() as u64, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(camera = name, error = %e, "scheduled snapshot failed")
                        }
                    }
                }
            })
        })
        .map_err(|source| {
            CameraError::Invalid(InvalidCamera::Schedule {
                schedule: schedule.to_string(),
                source,
            })
        })?;
        self.scheduler
            .add(job)
            .await
            .map_err(CameraError::Scheduler)
    }

    async fn halt(&self, name: &str) -> Option<Running> {
        let running = self.running.lock().remove(name)?;
        let _ = running.stop.send(true);
        if let Some(job) = running.job {
            let _ = self.scheduler.remove(&job).await;
        }
        Some(running)
    }

    pub fn camera(&self, name: &str) -> Result<Arc<Camera>, CameraError> {
        self.running
            .lock()
            .get(name)
            .map(|r| r.camera.clone())
            .ok_or_else(|| CameraError::NotFound(name.to_string()))
    }

    fn view(&self, r: &Running) -> CameraView {
        let c = &r.camera.config;
        CameraView {
            name: c.name.clone(),
            url: redact_url(&c.url),
            username: c.username.clone(),
            has_password: c.password.is_some(),
            transport: c.transport,
            snapshot_schedule: c.snapshot_schedule.clone(),
            snapshot_retention: c.snapshot_retention,
            snapshot_max_bytes: c.snapshot_max_bytes,
            snapshot_quality: c.snapshot_quality,
            snapshot_max_width: c.snapshot_max_width,
            source: if r.from_config { "config" } else { "api" },
            status: r.camera.status(),
            snapshot_bytes: self.snapshots.bytes(&c.name),
            latest_snapshot: self.snapshots.latest(&c.name),
        }
    }

    pub fn list(&self) -> Vec<CameraView> {
        self.running.lock().values().map(|r| self.view(r)).collect()
    }

    pub fn get(&self, name: &str) -> Result<CameraView, CameraError> {
        let running = self.running.lock();
        let r = running
            .get(name)
            .ok_or_else(|| CameraError::NotFound(name.to_string()))?;
        Ok(self.view(r))
    }

    /// Adds a camera through the API; it is kept in the database.
    /// Credentials in the URL (`rtsp://user:pass@host/…`) become its
    /// username and password.
    pub async fn create(&self, mut config: CameraConfig) -> Result<CameraView, CameraError> {
        move_url_credentials(&mut config)?;
        config
            .validate()
            .map_err(|issues| CameraError::Invalid(issues.into()))?;
        if self.running.lock().contains_key(&config.name) {
            return Err(CameraError::Exists(config.name));
        }
        self.definitions.insert(
            config.name.as_bytes(),
            serde_json::to_vec(&config).expect("serializable"),
        )?;
        self.definitions.flush()?;
        let name = config.name.clone();
        self.launch(config, false).await?;
        self.get(&name)
    }

    /// Replaces an API camera's settings. A password left out keeps the old
    /// one, since the API never returns it.
    pub async fn update(
        &self,
        name: &str,
        mut config: CameraConfig,
    ) -> Result<CameraView, CameraError> {
        let old = {
            let running = self.running.lock();
            let r = running
                .get(name)
                .ok_or_else(|| CameraError::NotFound(name.to_string()))?;
            if r.from_config {
                return Err(CameraError::FromConfig(name.to_string()));
            }
            r.camera.config.clone()
        };
        config.name = name.to_string();
        move_url_credentials(&mut config)?;
        if config.password.is_none() && config.username == old.username {
            config.password = old.password;
        }
        config
            .validate()
            .map_err(|issues| CameraError::Invalid(issues.into()))?;
        self.definitions.insert(
            name.as_bytes(),
            serde_json::to_vec(&config).expect("serializable"),
        )?;
        self.definitions.flush()?;
        self.halt(name).await;
        self.launch(config, false).await?;
        self.get(name)
    }

    /// Removes an API camera and its snapshots.
    pub async fn delete(&self, name: &str) -> Result<(), CameraError> {
        match self.running.lock().get(name) {
            None => return Err(CameraError::NotFound(name.to_string())),
            Some(r) if r.from_config => return Err(CameraError::FromConfig(name.to_string())),
            Some(_) => {}
        }
        self.halt(name).await;
        self.definitions.remove(name.as_bytes())?;
        self.definitions.flush()?;
        self.snapshots.remove_camera(name)?;
        Ok(())
    }

    /// Takes a snapshot now from the next keyframe (or one under half a
    /// second old).
    pub async fn snapshot(&self, name: &str, trigger: &str) -> Result<SnapshotMeta, CameraError> {
        let camera = self.camera(name)?;
        let result = self.take_snapshot(&camera, trigger).await;
        match &result {
            Ok(_) => {
                self.snapshots_taken.fetch_add(1, Ordering::Relaxed);
                camera.set_snapshot_error(None);
            }
            Err(e) => {
                self.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                camera.set_snapshot_error(Some(e.to_string()));
            }
        }
        result
    }

    async fn take_snapshot(
        &self,
        camera: &Arc<Camera>,
        trigger: &str,
    ) -> Result<SnapshotMeta, CameraError> {
        let name = camera.name().to_string();
        let kf = camera
            .keyframe(Duration::from_millis(500), Duration::from_secs(10))
            .await
            .ok_or_else(|| CameraError::NoKeyframe(name.clone()))?;
        let (quality, max_width) = (
            camera.config.snapshot_quality,
            camera.config.snapshot_max_width,
        );
        let (jpeg, w, h) = tokio::task::spawn_blocking(move || {
            snapshot::keyframe_to_jpeg(&kf, quality, max_width)
        })
        .await
        .map_err(|e| CameraError::Snapshot(SnapshotError::Decode(e.to_string())))??;
        let mut id = self.clock.now_ms();
        if let Some(latest) = self.snapshots.latest(&name) {
            id = id.max(latest.id + 1);
        }
        let meta = self.snapshots.save(&name, id, &jpeg, w, h, trigger)?;
        let cfg = &camera.config;
        let min_id = self.clock.now_ms() - cfg.snapshot_retention.as_millis_i64();
        self.snapshots
            .enforce(&name, min_id, cfg.snapshot_max_bytes.0)?;
        Ok(meta)
    }

    fn enforce_retention_all(&self) {
        let now = self.clock.now_ms();
        let cameras: Vec<Arc<Camera>> = self
            .running
            .lock()
            .values()
            .map(|r| r.camera.clone())
            .collect();
        for c in cameras {
            let cfg = &c.config;
            if let Err(e) = self.snapshots.enforce(
                &cfg.name,
                now - cfg.snapshot_retention.as_millis_i64(),
                cfg.snapshot_max_bytes.0,
            ) {
                c.set_snapshot_error(Some(format!("retention: {e}")));
            }
        }
    }

    pub fn snapshots(
        &self,
        name: &str,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<SnapshotMeta>, CameraError> {
        self.camera(name)?;
        Ok(self.snapshots.list(name, start, end, limit))
    }

    pub fn snapshot_file(
        &self,
        name: &str,
        id: Option<i64>,
    ) -> Result<Option<std::path::PathBuf>, CameraError> {
        self.camera(name)?;
        let id = match id {
            Some(id) => id,
            None => match self.snapshots.latest(name) {
                Some(m) => m.id,
                None => return Ok(None),
            },
        };
        Ok(self.snapshots.file(name, id))
    }

    /// The camera's live HLS playlist. Segments are made only while
    /// players ask for it (`hls::WANTED_FOR`): the first request after a
    /// pause waits, up to [`HLS_FIRST_WAIT`], for the first segment.
    pub async fn hls_playlist(&self, name: &str) -> Result<Option<String>, CameraError> {
        let camera = self.camera(name)?;
        let deadline = Instant::now() + HLS_FIRST_WAIT;
        loop {
            let playlist = {
                let mut hls = camera.hls.lock();
                hls.want(Instant::now());
                hls.playlist()
            };
            if playlist.is_some()
                || Instant::now() >= deadline
                || camera.status().status != State::Online
            {
                return Ok(playlist);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn hls_init(
        &self,
        name: &str,
        generation: Option<u64>,
    ) -> Result<Option<Bytes>, CameraError> {
        Ok(self.camera(name)?.hls.lock().init(generation))
    }

    pub fn hls_segment(&self, name: &str, sequence: u64) -> Result<Option<Bytes>, CameraError> {
        Ok(self.camera(name)?.hls.lock().segment(sequence))
    }

    /// Stops every camera (on shutdown).
    pub async fn stop(&self) {
        let names: Vec<String> = self.running.lock().keys().cloned().collect();
        let mut tasks = Vec::new();
        for n in names {
            if let Some(r) = self.halt(&n).await {
                tasks.push(r.task);
            }
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let mut sched = self.scheduler.clone();
        let _ = sched.shutdown().await;
    }
}

/// Moves credentials written into the URL (`rtsp://user:pass@host/…`, a
/// form cameras' manuals give) into `username` and `password`,
/// percent-decoded, and keeps the URL without them: RTSP clients (retina
/// among them) take credentials apart from the URL, and the API must not
/// show the password back. Refused when they contradict the `username` or
/// `password` given alongside.
pub fn move_url_credentials(config: &mut CameraConfig) -> Result<(), CameraError> {
    let Ok(mut u) = url::Url::parse(&config.url) else {
        // Not a URL: validation says so.
        return Ok(());
    };
    if u.username().is_empty() && u.password().is_none() {
        return Ok(());
    }
    let invalid = |msg: String| {
        let mut issues = config::Issues::default();
        issues.add("url", msg);
        CameraError::Invalid(InvalidCamera::Settings(issues))
    };
    let user = percent_decode(u.username()).ok_or_else(|| {
        invalid("the user name in the URL is not valid percent-encoded UTF-8".into())
    })?;
    let password = match u.password() {
        Some(p) => Some(percent_decode(p).ok_or_else(|| {
            invalid("the password in the URL is not valid percent-encoded UTF-8".into())
        })?),
        None => None,
    };
    if let Some(given) = &config.username {
        if *given != user {
            return Err(invalid(format!(
                "the URL names user {user:?} but username is {given:?}: give the credentials once, in username and password"
            )));
        }
    }
    if let (Some(given), Some(p)) = (&config.password, &password) {
        if given != p {
            return Err(invalid(
                "the URL carries a password different from password: give the credentials once, in username and password".into(),
            ));
        }
    }
    config.username = Some(user);
    if password.is_some() {
        config.password = password;
    }
    let _ = u.set_username("");
    let _ = u.set_password(None);
    config.url = u.to_string();
    Ok(())
}

/// `%XX` escapes decoded; `None` if they do not make UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL without credentials someone may have put in it.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// How long the first HLS request after a pause waits for a segment: a
/// keyframe to start it, two seconds of video, the keyframe that ends it —
/// up to twice the keyframe interval, which some cameras' "smart" codec
/// modes stretch to 10 s or more.
pub const HLS_FIRST_WAIT: Duration = Duration::from_secs(30);

impl base::metrics::MetricSource for Cameras {
    fn collect(&self, out: &mut Vec<base::metrics::MetricPoint>) {
        use base::metrics::MetricPoint as P;
        let mut buffered = 0;
        for r in self.running.lock().values() {
            buffered += r.camera.buffered_bytes();
            let s = r.camera.status();
            let name = r.camera.name().to_string();
            let up = if s.status == State::Online { 1.0 } else { 0.0 };
            out.push(
                P::gauge("perch_camera_up", "1 while the camera streams.", up)
                    .with_label("camera", &name),
            );
            out.push(
                P::gauge("perch_camera_fps", "Frames per second received.", s.fps)
                    .with_label("camera", &name),
            );
            out.push(
                P::gauge(
                    "perch_camera_bitrate_bits_per_second",
                    "Video bitrate received.",
                    s.bitrate_bps,
                )
                .with_label("camera", &name),
            );
            out.push(
                P::counter(
                    "perch_camera_reconnects_total",
                    "Times the camera's session was lost.",
                    s.reconnects as f64,
                )
                .with_label("camera", &name),
            );
            out.push(
                P::gauge(
                    "perch_camera_viewers",
                    "Live viewers of the camera.",
                    s.viewers as f64,
                )
                .with_label("camera", &name),
            );
        }
        out.push(base::footprint::memory("cameras", buffered));
        out.push(P::counter(
            "perch_camera_snapshots_total",
            "Snapshots taken.",
            self.snapshots_taken.load(Ordering::Relaxed) as f64,
        ));
        out.push(P::counter(
            "perch_camera_snapshot_failures_total",
            "Snapshots that could not be taken.",
            self.snapshot_failures.load(Ordering::Relaxed) as f64,
        ));
        out.push(P::gauge(
            "perch_camera_snapshot_latency_seconds",
            "Time from the last scheduled tick to its file written.",
            self.last_snapshot_latency_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(url: &str) -> CameraConfig {
        serde_json::from_value(serde_json::json!({"name": "door", "url": url})).unwrap()
    }

    #[test]
    fn credentials_in_the_url_move_to_username_and_password() {
        let mut c = camera("rtsp://viewer:s3cret%40pw%3A1@192.168.1.40:554/stream1");
        move_url_credentials(&mut c).unwrap();
        assert_eq!(c.url, "rtsp://192.168.1.40:554/stream1");
        assert_eq!(c.username.as_deref(), Some("viewer"));
        assert_eq!(c.password.as_deref(), Some("s3cret@pw:1"));
        // A URL without them is left alone; the same ones again agree.
        let before = c.clone();
        move_url_credentials(&mut c).unwrap();
        assert_eq!(c, before);
        let mut c = camera("rtsp://viewer:s3cret%40pw%3A1@192.168.1.40/stream1");
        c.username = Some("viewer".into());
        move_url_credentials(&mut c).unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret@pw:1"));
        // A user alone keeps a password given apart.
        let mut c = camera("rtsp://admin@cam/live");
        c.password = Some("pw".into());
        move_url_credentials(&mut c).unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("admin"), Some("pw"))
        );
        assert_eq!(c.url, "rtsp://cam/live");
    }

    #[test]
    fn contradicting_credentials_are_refused_without_showing_the_password() {
        let mut c = camera("rtsp://viewer:one@cam/live");
        c.username = Some("other".into());
        let e = move_url_credentials(&mut c).unwrap_err().to_string();
        assert!(e.contains("url") && e.contains("username"), "{e}");
        let mut c = camera("rtsp://viewer:one@cam/live");
        c.password = Some("two".into());
        let e = move_url_credentials(&mut c).unwrap_err().to_string();
        assert!(!e.contains("one") && !e.contains("two"), "{e}");
    }
}
