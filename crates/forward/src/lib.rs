//! Store and forward: feeds samples and MQTT messages to systems that already
//! scale (a Prometheus-compatible remote-write receiver, an upstream MQTT
//! broker, a Kafka cluster), durably, through outages. Owns the per-target
//! queues (sled trees `forward.<name>` in the one database), the targets
//! added at runtime (tree `forward_targets`), one writer thread and one
//! sender task per target, priorities between them, and their status. It may
//! call `config`, `system`, `storage` (its public read API and the
//! [`AppendObserver`] hook), `search` (the message history, to replay MQTT
//! targets), `query` (selector parsing) and `ingest` (MQTT topic matching);
//! the server hands it samples (storage's append hook) and messages (the
//! collector's `MessageSink`), http reads its status and changes targets
//! through its methods; nothing reaches inside.
//!
//! Path of an item: the hook (on the appending thread or the collector
//! thread) encodes what matches a target and hands it to that target's
//! bounded in-memory channel; only when a burst outruns the local disk does
//! it wait for room (at most 2 s, then the item is dropped and counted) —
//! never for the target. The target's writer thread appends what arrived to its queue
//! in one sled batch. The sender task reads a batch from the front, sends it
//! and removes it only when the target acknowledged it (HTTP 2xx, MQTT PUBACK
//! or PUBCOMP): delivery is at-least-once, and after a restart sending
//! resumes at the first unacknowledged item. Failures are retried with capped
//! exponential backoff and jitter; a target refusing a batch as invalid
//! (HTTP 4xx other than 429) has it dropped and counted as `rejected`.
//! Each target has its own queue, thread and task: a dead target only fills
//! its own queue, up to `queue_max_bytes`, where `overflow` decides.

pub mod bench;
mod item;
mod kafka;
mod mqtt;
mod queue;
mod remote_write;
mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use thiserror::Error;
use tracing::Instrument;

use base::metrics::{MetricPoint, MetricSource};
use base::Clock;
use config::{ForwardConfig, ForwardKind};
use store::{AppendObserver, Appended, Matcher, Storage};

pub use kafka::TopicTemplate;
pub use remote_write::encode_write_request;

/// Checks what only forwarding understands in a target: its Kafka topic
/// template. The keys of the issues are relative to the target.
fn check_target(c: &ForwardConfig, issues: &mut config::Issues) {
    if c.kind == ForwardKind::Kafka {
        if let Err(e) = TopicTemplate::parse(&c.topic) {
            issues.add("topic", e);
        }
    }
}

/// A target's shape (the config crate's checks) and meaning, all problems
/// at once.
pub fn validate_target(c: &ForwardConfig) -> Result<(), config::Issues> {
    let mut issues = c.validate().err().unwrap_or_default();
    check_target(c, &mut issues);
    issues.into_result()
}

/// The `[[forward]]` targets of a configuration (a [`config::Check`]).
pub fn check_config(config: &config::Config, issues: &mut config::Issues) {
    for (i, c) in config.forward.iter().enumerate() {
        let mut mine = config::Issues::default();
        check_target(c, &mut mine);
        issues.extend_under(&format!("forward[{i}]"), mine);
    }
}

/// Items waiting in memory for a target's writer thread, at most.
const CHANNEL_ITEMS: usize = 65_536;
/// How long a hook waits for room in a full hand-over before dropping.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// Items the writer thread appends to the queue in one sled batch, at most.
const WRITE_BATCH: usize = 4096;
/// A lower-priority target sends at least one batch this often.
const MAX_HOLD: Duration = Duration::from_secs(60);
/// Bytes read from a queue for one send, at most.
const SEND_BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("damaged forwarding queue: {0}")]
    Corrupt(String),
    #[error("no forwarding target {0:?}")]
    NoTarget(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Storage(#[from] store::StorageError),
    #[error("{0}")]
    Setup(String),
    #[error("invalid forwarding target: {0}")]
    Invalid(String),
    #[error("a forwarding target named {0:?} exists")]
    Exists(String),
    #[error("{0:?} comes from the config file; change it there")]
    FromConfig(String),
}

impl base::HasKind for ForwardError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            ForwardError::NoTarget(_) => K::NotFound,
            ForwardError::Exists(_) | ForwardError::FromConfig(_) => K::Conflict,
            ForwardError::Invalid(_) => K::InvalidArgument,
            ForwardError::Db(_)
            | ForwardError::Corrupt(_)
            | ForwardError::Unsupported(_)
            | ForwardError::Storage(_)
            | ForwardError::Setup(_) => K::Internal,
        }
    }
}

/// Counters and state of one target, shared by its hook, writer and sender.
#[derive(Default)]
pub(crate) struct Counters {
    connected: AtomicBool,
    /// Samples or messages acknowledged by the target.
    sent: AtomicU64,
    /// Failed attempts (connection, timeout, HTTP errors).
    errors: AtomicU64,
    /// Items the target refused as invalid and that were given up.
    rejected: AtomicU64,
    /// Items lost because the in-memory hand-over was full.
    busy_dropped: AtomicU64,
    /// Sent per second over the last few seconds (f64 bits).
    rate: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// One target as defined now. What outlives a change of the definition —
/// the queue, the hand-over to the writer thread, the writer and the
/// counters — is shared (`Arc`) with the target's next definition, so the
/// hooks never lose a thing while a target is edited.
impl Counters {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let msg = e.to_string();
        tracing::warn!(error = %msg, "forwarding failed; will retry");
        *self.last_error.lock() = Some(msg);
    }
}

pub(crate) struct Target {
    config: ForwardConfig,
    queue: Arc<queue::Queue>,
    /// remote_write: a series is forwarded when it matches one set; none: all.
    selectors: Vec<Vec<Matcher>>,
    counters: Arc<Counters>,
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    clock: Arc<dyn Clock>,
    board: Arc<PriorityBoard>,
    /// This target's flag on the board: it has more than a batch queued
    /// and its last attempt went through.
    catching_up: Arc<AtomicBool>,
    /// Waiting for a target of higher priority.
    held: AtomicBool,
    from_config: bool,
    /// Stops this target's sender.
    stop: tokio::sync::watch::Sender<bool>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Target {
    /// Hands an item to the writer thread. When the hand-over is full (a
    /// burst faster than the local disk), waits up to `HANDOVER_WAIT` for
    /// room — the writer never waits on the target, so this is backpressure
    /// from the disk only, like the collector's own channel — then drops and
    /// counts it.
    fn offer(&self, item: Vec<u8>) {
        let Some(tx) = self.tx.lock().clone() else {
            return;
        };
        let mut item = item;
        let deadline = std::time::Instant::now() + HANDOVER_WAIT;
        loop {
            match tx.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    if std::time::Instant::now() >= deadline {
                        self.counters.busy_dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn matches(&self, labels: &store::Labels) -> bool {
        self.selectors.is_empty()
            || self
                .selectors
                .iter()
                .any(|set| set.iter().all(|m| m.matches_labels(labels)))
    }

    fn error(&self, e: impl std::fmt::Display) {
        self.counters.error(e);
    }

    fn set_connected(&self, up: bool) {
        if self.counters.connected.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("connected");
            } else {
                tracing::info!("disconnected");
            }
        }
    }

    fn status(&self) -> TargetStatus {
        let c = &self.counters;
        let now = self.clock.now_ms();
        TargetStatus {
            name: self.config.name.clone(),
            kind: self.config.kind,
            url: match self.config.kind {
                ForwardKind::Kafka => self.config.brokers.join(","),
                _ => redact(&self.config.url),
            },
            priority: self.config.priority,
            held_by_priority: self.held.load(Ordering::Relaxed),
            connected: c.connected.load(Ordering::Relaxed),
            queue_bytes: self.queue.bytes.load(Ordering::Relaxed),
            queue_items: self.queue.items.load(Ordering::Relaxed),
            queue_max_bytes: self.config.queue_max_bytes.0,
            oldest_age_seconds: self
                .queue
                .oldest_ms()
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
            sent_total: c.sent.load(Ordering::Relaxed),
            sent_per_second: f64::from_bits(c.rate.load(Ordering::Relaxed)),
            errors_total: c.errors.load(Ordering::Relaxed),
            rejected_total: c.rejected.load(Ordering::Relaxed),
            dropped_total: self.queue.dropped.load(Ordering::Relaxed)
                + c.busy_dropped.load(Ordering::Relaxed),
            last_error: c.last_error.lock().clone(),
        }
    }

    /// What this target hands on to its next definition.
    fn lane(&self) -> Lane {
        Lane {
            queue: self.queue.clone(),
            counters: self.counters.clone(),
            tx: self.tx.clone(),
            writer: self.writer.clone(),
        }
    }

    fn set_catching_up(&self, yes: bool) {
        self.catching_up.store(yes, Ordering::Relaxed);
    }

    /// Waits while a target of higher priority catches up; false when
    /// perch stops.
    async fn wait_for_priority(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        if !self.board.held_back(self.config.priority) {
            return true;
        }
        self.held.store(true, Ordering::Relaxed);
        tracing::debug!("held back by a target of higher priority");
        let mut go_on = true;
        // A higher target that never stops catching up (input above its
        // bandwidth) must not starve this one: one batch per MAX_HOLD.
        let until = tokio::time::Instant::now() + MAX_HOLD;
        while self.board.held_back(self.config.priority) && tokio::time::Instant::now() < until {
            if !pause(Duration::from_millis(50), stop).await {
                go_on = false;
                break;
            }
        }
        self.held.store(false, Ordering::Relaxed);
        go_on
    }

    /// Waits until items arrive, `max` passes or perch stops.
    async fn idle(&self, max: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            _ = self.queue.notify.notified() => {}
            _ = tokio::time::sleep(max) => {}
            _ = base::stopping(stop) => {}
        }
    }
}

/// The URL without its password (user name kept).
fn without_password(url: &str) -> String {
    replace_password(url, None)
}

/// The URL with its password, if it has one, replaced by `by`.
fn replace_password(url: &str, by: Option<&str>) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(by);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn url_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some())
}

/// Removes a password from a URL before it is shown.
fn redact(url: &str) -> String {
    replace_password(url, Some("xxxxx"))
}

/// What `GET /api/v1/forward` shows for each target.
#[derive(Clone, Debug, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub kind: ForwardKind,
    pub url: String,
    pub priority: u8,
    /// Waiting while a target of higher priority catches up.
    pub held_by_priority: bool,
    pub connected: bool,
    pub queue_bytes: u64,
    pub queue_items: u64,
    pub queue_max_bytes: u64,
    pub oldest_age_seconds: f64,
    pub sent_total: u64,
    pub sent_per_second: f64,
    pub errors_total: u64,
    pub rejected_total: u64,
    pub dropped_total: u64,
    pub last_error: Option<String>,
}

/// What a replay queued.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ReplayReport {
    pub series: usize,
    pub samples: u64,
    /// MQTT targets: messages of the search index (samples targets: None).
    #[serde(default)]
    pub messages: Option<u64>,
    pub items_queued: u64,
}

/// What one attempt at sending a batch came to.
pub(crate) enum Outcome {
    /// Acknowledged; `bytes` went over the wire (for `max_bandwidth`).
    Sent { bytes: usize },
    /// The target will never take this batch (invalid, too large, too old).
    Refused(String),
    /// Worth trying again later (unreachable, overloaded, unauthorized).
    Retry(String),
}

/// Where a samples target sends a batch.
pub(crate) trait SamplesSink: Send {
    fn send(
        &mut self,
        series: &[item::Samples],
    ) -> impl std::future::Future<Output = Outcome> + Send;
}

/// The sender loop of the targets fed samples (remote_write, kafka): reads
/// up to `batch_max` samples from the front of the queue, merged per series,
/// hands them to `send` and settles the outcome — commit on `Sent` and
/// `Refused` (counted), back off on `Retry` — until perch stops.
pub(crate) async fn send_samples(
    t: &Target,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut sink: impl SamplesSink,
) {
    let c = &t.config;
    let mut backoff = Backoff::new(c.max_backoff.0);
    let mut pace = Pace::new(t);
    while !*stop.borrow() {
        pace.update_rate(t);
        if !t.wait_for_priority(&mut stop).await {
            break;
        }
        let batch = match t.queue.peek(c.batch_max, SEND_BATCH_BYTES) {
            Ok(b) => b,
            Err(e) => {
                t.error(e);
                pause(Duration::from_secs(5), &mut stop).await;
                continue;
            }
        };
        // Items carry many samples each: keep a send near batch_max samples.
        let mut take = 0;
        let mut samples = 0usize;
        for e in &batch {
            take += 1;
            samples += item::count_samples(e.payload()).unwrap_or(0) as usize;
            if samples >= c.batch_max {
                break;
            }
        }
        let full = samples >= c.batch_max || take == c.batch_max;
        let batch = &batch[..take];
        let Some(last) = batch.last().map(|e| e.seq) else {
            t.set_catching_up(false);
            t.idle(Duration::from_secs(1), &mut stop).await;
            continue;
        };
        let series = match item::merge_samples(batch) {
            Ok(s) => s,
            Err(e) => {
                // A damaged item can never be sent: skip past it.
                t.error(e);
                t.counters
                    .rejected
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let _ = t.queue.commit(last);
                continue;
            }
        };
        // Stopping abandons a send in flight: it is resent next start.
        let outcome = tokio::select! {
            o = sink.send(&series) => o,
            _ = base::stopping(&mut stop) => break,
        };
        match outcome {
            Outcome::Sent { bytes } => {
                if let Err(e) = t.queue.commit(last) {
                    t.error(e);
                }
                t.counters.sent.fetch_add(samples as u64, Ordering::Relaxed);
                t.set_connected(true);
                t.set_catching_up(full);
                backoff.reset();
                let wait = pace.delay_for(bytes);
                if !wait.is_zero() && !pause(wait, &mut stop).await {
                    break;
                }
            }
            Outcome::Refused(e) => {
                t.set_connected(true);
                t.counters
                    .rejected
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                t.error(format!("the target refused {samples} samples: {e}"));
                if let Err(e) = t.queue.commit(last) {
                    t.error(e);
                }
            }
            Outcome::Retry(e) => {
                t.set_connected(false);
                t.set_catching_up(false);
                t.error(e);
                if !pause(backoff.step(), &mut stop).await {
                    break;
                }
            }
        }
    }
    t.set_catching_up(false);
}

/// Which targets are catching up, by priority: lower priorities wait for
/// higher ones (1 is the highest) that have a backlog and are reachable, as
/// Greengrass' stream manager exports higher-priority streams first.
#[derive(Default)]
pub(crate) struct PriorityBoard {
    catching_up: Mutex<Vec<(u8, Arc<AtomicBool>)>>,
}

impl PriorityBoard {
    fn join(&self, priority: u8, initially: bool) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(initially));
        self.catching_up.lock().push((priority, flag.clone()));
        flag
    }

    fn leave(&self, flag: &Arc<AtomicBool>) {
        self.catching_up
            .lock()
            .retain(|(_, f)| !Arc::ptr_eq(f, flag));
    }

    /// Whether a target of higher priority than `priority` is catching up.
    fn held_back(&self, priority: u8) -> bool {
        self.catching_up
            .lock()
            .iter()
            .any(|(p, f)| *p < priority && f.load(Ordering::Relaxed))
    }
}

/// Capped exponential backoff with ±50% jitter, from 0.5 s.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);

    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next wait, and doubles the one after.
    pub(crate) fn step(&mut self) -> Duration {
        use rand::Rng;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
            .min(self.max)
    }
}

/// Sleeps `d` unless perch stops first; false when stopping.
pub(crate) async fn pause(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = base::stopping(stop) => false,
    }
}

/// Keeps `sent_per_second` current and paces to `max_bandwidth`.
pub(crate) struct Pace {
    since: std::time::Instant,
    sent_at_start: u64,
    bits_per_s: Option<u64>,
}

impl Pace {
    fn new(t: &Target) -> Pace {
        Pace {
            since: std::time::Instant::now(),
            sent_at_start: t.counters.sent.load(Ordering::Relaxed),
            bits_per_s: t.config.max_bandwidth.map(|b| b.0),
        }
    }

    fn update_rate(&mut self, t: &Target) {
        let el = self.since.elapsed();
        if el >= Duration::from_secs(2) {
            let sent = t.counters.sent.load(Ordering::Relaxed);
            let rate = (sent - self.sent_at_start) as f64 / el.as_secs_f64();
            t.counters.rate.store(rate.to_bits(), Ordering::Relaxed);
            self.since = std::time::Instant::now();
            self.sent_at_start = sent;
        }
    }

    /// After sending `bytes`: how long to wait to stay within the bandwidth.
    fn delay_for(&self, bytes: usize) -> Duration {
        match self.bits_per_s {
            Some(b) => Duration::from_secs_f64(bytes as f64 * 8.0 / b as f64),
            None => Duration::ZERO,
        }
    }
}

/// Every forwarding target, their threads and tasks. Targets come from the
/// config file (read-only here) and from the API (kept in the sled tree
/// `forward_targets`, started and stopped at runtime).
pub struct Forwarder {
    trees: store::Trees,
    definitions: sled::Tree,
    clock: Arc<dyn Clock>,
    board: Arc<PriorityBoard>,
    /// Read on every append and message: swapped whole when targets change.
    targets: parking_lot::RwLock<Arc<Vec<Arc<Target>>>>,
    /// Serializes creating, changing and deleting targets.
    changes: tokio::sync::Mutex<()>,
    /// Set once senders run: targets added later start theirs at once.
    runtime: Mutex<Option<tokio::runtime::Handle>>,
}

/// A target's definition as the API shows it: the password withheld.
#[derive(Clone, Debug, Serialize)]
pub struct TargetDefinition {
    #[serde(flatten)]
    pub config: ForwardConfig,
    pub has_password: bool,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
}

impl Forwarder {
    /// Opens every target's queue (in the store's trees) — the config file's and those
    /// added through the API — and starts its writer thread. Senders start
    /// with [`Forwarder::start_senders`].
    pub fn open(
        configs: &[ForwardConfig],
        trees: &store::Trees,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Forwarder>, ForwardError> {
        let f = Arc::new(Forwarder {
            trees: trees.clone(),
            definitions: trees.open(store::Tree::ForwardTargets)?,
            clock,
            board: Arc::new(PriorityBoard::default()),
            targets: parking_lot::RwLock::new(Arc::new(Vec::new())),
            changes: tokio::sync::Mutex::new(()),
            runtime: Mutex::new(None),
        });
        let mut targets: Vec<Arc<Target>> = Vec::new();
        for c in configs {
            targets.push(f.launch(c.clone(), true)?);
        }
        for kv in f.definitions.iter() {
            let (_, v) = kv?;
            match serde_json::from_slice::<ForwardConfig>(&v) {
                Ok(c) if targets.iter().any(|t| t.config.name == c.name) => tracing::warn!(
                    target = c.name,
                    "forwarding target in the database shadowed by the config file"
                ),
                Ok(c) => match validate_target(&c) {
                    Ok(()) => targets.push(f.launch(c, false)?),
                    Err(why) => {
                        tracing::error!(target = c.name, "stored forwarding target skipped: {why}")
                    }
                },
                Err(e) => tracing::error!(error = %e, "unreadable forwarding target skipped"),
            }
        }
        *f.targets.write() = Arc::new(targets);
        Ok(f)
    }

    fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.read().clone()
    }

    fn find(&self, name: &str) -> Result<Arc<Target>, ForwardError> {
        self.targets()
            .iter()
            .find(|t| t.config.name == name)
            .cloned()
            .ok_or_else(|| ForwardError::NoTarget(name.to_string()))
    }

    /// A target of definition `c` over a queue and writer of its own.
    fn launch(&self, c: ForwardConfig, from_config: bool) -> Result<Arc<Target>, ForwardError> {
        let lane = self.open_lane(&c)?;
        self.attach(c, lane, from_config)
    }

    /// Opens a target's queue and starts its writer thread.
    fn open_lane(&self, c: &ForwardConfig) -> Result<Lane, ForwardError> {
        let queue = Arc::new(queue::Queue::open(
            &self.trees,
            &c.name,
            c.queue_max_bytes.0,
            c.overflow,
        )?);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_ITEMS);
        let (q, cs, clock) = (queue.clone(), counters.clone(), self.clock.clone());
        let writer = std::thread::Builder::new()
            .name(format!("perch-fwd-{}", c.name))
            .spawn(move || write_loop(&q, &cs, &*clock, rx))
            .map_err(|e| ForwardError::Setup(format!("cannot start a thread: {e}")))?;
        Ok(Lane {
            queue,
            counters,
            tx: Arc::new(Mutex::new(Some(tx))),
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// A target of definition `c` over `lane`; starts its sender when
    /// senders run.
    fn attach(
        &self,
        c: ForwardConfig,
        lane: Lane,
        from_config: bool,
    ) -> Result<Arc<Target>, ForwardError> {
        let mut selectors = Vec::new();
        for s in &c.selectors {
            match base::selector::parse_selector(s) {
                Ok(sets) => selectors.extend(sets),
                Err(e) => {
                    close_lane(&lane);
                    return Err(ForwardError::Setup(format!("{}: {e}", c.name)));
                }
            }
        }
        // A backlog from the last run counts until the first attempt tells
        // whether the target is reachable.
        let catching_up = self
            .board
            .join(c.priority, lane.queue.items.load(Ordering::Relaxed) > 0);
        let t = Arc::new(Target {
            config: c,
            queue: lane.queue,
            selectors,
            counters: lane.counters,
            tx: lane.tx,
            writer: lane.writer,
            clock: self.clock.clone(),
            board: self.board.clone(),
            catching_up,
            held: AtomicBool::new(false),
            from_config,
            stop: tokio::sync::watch::channel(false).0,
            sender: Mutex::new(None),
        });
        if let Some(rt) = self.runtime.lock().clone() {
            start_sender(&t, &rt);
        }
        Ok(t)
    }

    /// Starts one sender task per target on the current runtime.
    pub fn start_senders(&self) {
        let rt = tokio::runtime::Handle::current();
        *self.runtime.lock() = Some(rt.clone());
        for t in self.targets().iter() {
            start_sender(t, &rt);
        }
    }

    pub fn status(&self) -> Vec<TargetStatus> {
        self.targets().iter().map(|t| t.status()).collect()
    }

    /// Every target's definition, passwords withheld.
    pub fn definitions(&self) -> Vec<TargetDefinition> {
        self.targets()
            .iter()
            .map(|t| {
                let mut config = t.config.clone();
                let has_password = config.password.take().is_some() || url_password(&config.url);
                config.url = without_password(&config.url);
                TargetDefinition {
                    config,
                    has_password,
                    source: if t.from_config { "config" } else { "api" },
                }
            })
            .collect()
    }

    /// Adds a target through the API; it is kept in the database. A queue
    /// left behind under that name (by a target since removed from the
    /// config file) is discarded first.
    pub async fn create(&self, config: ForwardConfig) -> Result<(), ForwardError> {
        check_api_definition(&config)?;
        let _one = self.changes.lock().await;
        if self.find(&config.name).is_ok() {
            return Err(ForwardError::Exists(config.name));
        }
        let t = tokio::task::block_in_place(|| -> Result<_, ForwardError> {
            self.trees.drop_forward_queue(&config.name)?;
            self.store(&config)?;
            self.launch(config, false)
        })?;
        tracing::info!(target = %t.config.name, "forwarding target added");
        self.swap(|v| v.push(t));
        Ok(())
    }

    /// Changes a target added through the API. Its queue, writer and
    /// counters carry on (nothing arriving meanwhile is lost); only its
    /// sender restarts. The kind cannot change. A password left out is kept
    /// while the destination stays the same.
    pub async fn update(&self, mut config: ForwardConfig) -> Result<(), ForwardError> {
        let _one = self.changes.lock().await;
        let old = self.find(&config.name)?;
        if old.from_config {
            return Err(ForwardError::FromConfig(config.name));
        }
        if config.kind != old.config.kind {
            return Err(ForwardError::Invalid(
                "kind: cannot change; delete the target and add it again".into(),
            ));
        }
        // The definitions shown leave the URL's password out: given back
        // that way, the URL keeps it.
        if config.url != old.config.url && config.url == without_password(&old.config.url) {
            config.url = old.config.url.clone();
        }
        let same_place = config.url == old.config.url
            && config.brokers == old.config.brokers
            && config.username == old.config.username;
        if config.password.is_none() && old.config.password.is_some() {
            if !same_place {
                return Err(ForwardError::Invalid(
                    "password: give it again, the destination or user changed".into(),
                ));
            }
            config.password = old.config.password.clone();
        }
        check_api_definition(&config)?;
        self.halt_sender(&old).await;
        let changed = tokio::task::block_in_place(|| -> Result<_, ForwardError> {
            self.store(&config)?;
            old.queue
                .set_limits(config.queue_max_bytes.0, config.overflow);
            self.attach(config, old.lane(), false)
        });
        let t = match changed {
            Ok(t) => t,
            Err(e) => {
                // The old definition goes back to work over the same lane.
                old.queue
                    .set_limits(old.config.queue_max_bytes.0, old.config.overflow);
                let back = self.attach(old.config.clone(), old.lane(), false)?;
                self.replace(&old, back);
                return Err(e);
            }
        };
        tracing::info!(target = %t.config.name, "forwarding target changed");
        self.replace(&old, t);
        Ok(())
    }

    /// Deletes a target added through the API, and what its queue held.
    pub async fn delete(&self, name: &str) -> Result<(), ForwardError> {
        let _one = self.changes.lock().await;
        let old = self.find(name)?;
        if old.from_config {
            return Err(ForwardError::FromConfig(name.to_string()));
        }
        self.swap(|v| v.retain(|t| !Arc::ptr_eq(t, &old)));
        self.halt_sender(&old).await;
        let t2 = old.clone();
        let _ = tokio::task::spawn_blocking(move || close_lane(&t2.lane())).await;
        tokio::task::block_in_place(|| -> Result<(), ForwardError> {
            self.definitions.remove(name.as_bytes())?;
            self.trees.drop_forward_queue(name)?;
            self.definitions.flush()?;
            Ok(())
        })?;
        tracing::info!(target = name, "forwarding target deleted with its queue");
        Ok(())
    }

    fn store(&self, c: &ForwardConfig) -> Result<(), ForwardError> {
        let json = serde_json::to_vec(c).map_err(|e| ForwardError::Setup(e.to_string()))?;
        self.definitions.insert(c.name.as_bytes(), json)?;
        self.definitions.flush()?;
        Ok(())
    }

    fn swap(&self, change: impl FnOnce(&mut Vec<Arc<Target>>)) {
        let mut w = self.targets.write();
        let mut v = (**w).clone();
        change(&mut v);
        *w = Arc::new(v);
    }

    /// Puts `new` where `old` is in the list the hooks read.
    fn replace(&self, old: &Arc<Target>, new: Arc<Target>) {
        self.swap(|v| {
            for slot in v.iter_mut() {
                if Arc::ptr_eq(slot, old) {
                    *slot = new.clone();
                }
            }
        });
    }

    /// Stops a target's sender (what is in flight is resent by the next
    /// one) and takes it off the priority board.
    async fn halt_sender(&self, t: &Arc<Target>) {
        let _ = t.stop.send(true);
        let sender = t.sender.lock().take();
        if let Some(s) = sender {
            let _ = s.await;
        }
        self.board.leave(&t.catching_up);
    }

    /// Queues stored history of `[since_ms, now]` for a target again
    /// (`perch forward replay`): the samples matching a samples target's
    /// selectors, or the messages of the search index whose topics match an
    /// MQTT target's filters. Runs on the calling (blocking) thread.
    pub fn replay(
        &self,
        name: &str,
        storage: &Storage,
        history: Option<&search::Search>,
        since_ms: i64,
    ) -> Result<ReplayReport, ForwardError> {
        // Not while the target is being changed or deleted.
        let _one = self.changes.blocking_lock();
        let t = self.find(name)?;
        if t.config.kind == ForwardKind::Mqtt {
            let Some(history) = history else {
                return Err(ForwardError::Unsupported(format!(
                    "{name} is an mqtt target: it replays the message history of the search index, which is disabled"
                )));
            };
            return replay_messages(&t, history, since_ms, storage.now_ms());
        }
        let end = storage.now_ms();
        let sets = if t.selectors.is_empty() {
            base::selector::parse_selector(r#"{__name__=~".+"}"#)
                .map_err(|e| ForwardError::Setup(e.to_string()))?
        } else {
            t.selectors.clone()
        };
        let mut ids = Vec::new();
        for set in &sets {
            for (id, _) in storage.select(set, since_ms, end) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut report = ReplayReport::default();
        // A few series at a time keeps memory bounded.
        for chunk in ids.chunks(64) {
            let data = storage.read(chunk, since_ms, end, 50_000_000)?;
            let mut items = Vec::new();
            for s in data {
                report.series += 1;
                let pairs: Vec<(i64, f64)> =
                    s.ts.iter().copied().zip(s.values.iter().copied()).collect();
                for part in pairs.chunks(t.config.batch_max.max(1)) {
                    let mut w = item::SamplesWriter::default();
                    w.add(
                        s.labels.len(),
                        s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                        part.iter().copied(),
                    );
                    report.samples += w.samples();
                    items.extend(w.finish());
                }
            }
            report.items_queued += t.queue.push(&items, t.clock.now_ms())? as u64;
        }
        tracing::info!(
            target = name,
            series = report.series,
            samples = report.samples,
            "replay queued"
        );
        Ok(report)
    }

    /// Stops the senders (what is in flight is resent next start) and lets
    /// the writer threads store what the hooks handed over.
    pub async fn stop(&self) {
        let _one = self.changes.lock().await;
        let targets = self.targets();
        for t in targets.iter() {
            let _ = t.stop.send(true);
        }
        for t in targets.iter() {
            let sender = t.sender.lock().take();
            if let Some(s) = sender {
                let _ = s.await;
            }
        }
        let _ =
            tokio::task::spawn_blocking(move || targets.iter().for_each(|t| close_lane(&t.lane())))
                .await;
    }

    /// Stops the writer threads of a forwarder whose senders never ran
    /// (an offline replay).
    pub fn close_queues(&self) {
        self.targets().iter().for_each(|t| close_lane(&t.lane()));
    }
}

/// Queues the stored messages of `[since_ms, end]` whose topics match the
/// target's filters, oldest first.
fn replay_messages(
    t: &Target,
    history: &search::Search,
    since_ms: i64,
    end: i64,
) -> Result<ReplayReport, ForwardError> {
    // What arrived in the last seconds may not be committed yet.
    history
        .flush()
        .map_err(|e| ForwardError::Setup(format!("search index: {e}")))?;
    let mut report = ReplayReport::default();
    let mut messages = 0u64;
    let mut items = Vec::new();
    let mut failed = None;
    let mut visit = |m: search::StoredMessage| {
        if !t
            .config
            .topics
            .iter()
            .any(|f| base::topic::topic_matches(f, &m.topic))
        {
            return true;
        }
        messages += 1;
        items.push(item::encode_message(
            &m.topic,
            m.qos,
            m.retain,
            m.time_ms,
            m.payload.as_bytes(),
        ));
        if items.len() >= WRITE_BATCH {
            match t.queue.push(&items, t.clock.now_ms()) {
                Ok(n) => report.items_queued += n as u64,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
            items.clear();
        }
        true
    };
    history
        .history(since_ms, end, &mut visit)
        .map_err(|e| ForwardError::Setup(format!("search index: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    report.items_queued += t.queue.push(&items, t.clock.now_ms())? as u64;
    report.messages = Some(messages);
    tracing::info!(
        target = %t.config.name,
        messages,
        "replay queued"
    );
    Ok(report)
}

/// Clears a target's catching-up flag however its sender ends (returned
/// early, stopped, panicked): a sender that is gone holds nobody back.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn start_sender(t: &Arc<Target>, rt: &tokio::runtime::Handle) {
    let span = tracing::info_span!("forward", target = %t.config.name, kind = ?t.config.kind);
    let stop = t.stop.subscribe();
    let tc = t.clone();
    let run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match t.config.kind {
        ForwardKind::RemoteWrite => Box::pin(remote_write::run(tc, stop)),
        ForwardKind::Mqtt => Box::pin(mqtt::run(tc, stop)),
        ForwardKind::Kafka => Box::pin(kafka::run(tc, stop)),
    };
    let clear = ClearOnDrop(t.catching_up.clone());
    let task = rt.spawn(
        async move {
            let _clear = clear;
            run.await
        }
        .instrument(span),
    );
    *t.sender.lock() = Some(task);
}

/// What outlives a change of a target's definition (see [`Target`]).
struct Lane {
    queue: Arc<queue::Queue>,
    counters: Arc<Counters>,
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Lets the writer thread store what was handed over, and ends it.
fn close_lane(lane: &Lane) {
    lane.tx.lock().take();
    let writer = lane.writer.lock().take();
    if let Some(w) = writer {
        let _ = w.join();
    }
}

/// Fields the API does not take: they name files on the box, whose
/// contents would be sent to a destination the API chose.
fn check_api_definition(c: &ForwardConfig) -> Result<(), ForwardError> {
    if c.bearer_token_file.is_some() || c.ca_file.is_some() {
        return Err(ForwardError::Invalid(
            "bearer_token_file and ca_file name files on the box: set them in the config file"
                .into(),
        ));
    }
    validate_target(c).map_err(|why| ForwardError::Invalid(why.to_string()))
}

fn write_loop(
    queue: &queue::Queue,
    counters: &Counters,
    clock: &dyn Clock,
    rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        if let Err(e) = queue.push(&batch, clock.now_ms()) {
            counters
                .busy_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            counters.error(format!("cannot queue: {e}"));
        }
    }
}

impl AppendObserver for Forwarder {
    fn appended(&self, a: &Appended<'_>) {
        for t in self.targets().iter() {
            if !t.config.kind.takes_samples() {
                continue;
            }
            // One item per append: one hand-over and one queue entry for
            // the whole batch, not one per series.
            let mut w = item::SamplesWriter::default();
            for (labels, samples) in a.series() {
                if t.matches(labels) {
                    w.add(
                        labels.len(),
                        labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                        samples,
                    );
                }
            }
            if let Some(item) = w.finish() {
                t.offer(item);
            }
        }
    }
}

impl Forwarder {
    /// Hands an MQTT message to the targets whose topic filters match.
    pub fn offer_message(&self, topic: &str, payload: &[u8], qos: u8, retain: bool, time_ms: i64) {
        for t in self.targets().iter() {
            if t.config.kind == ForwardKind::Mqtt
                && t.config
                    .topics
                    .iter()
                    .any(|f| base::topic::topic_matches(f, topic))
            {
                t.offer(item::encode_message(topic, qos, retain, time_ms, payload));
            }
        }
    }
}

impl MetricSource for Forwarder {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        for s in self.status() {
            let n = s.name.as_str();
            out.push(
                MetricPoint::gauge(
                    "perch_forward_up",
                    "1 when the forwarding target answered the last attempt",
                    if s.connected { 1.0 } else { 0.0 },
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::gauge(
                    "perch_forward_queue_bytes",
                    "Bytes waiting in the target's durable queue",
                    s.queue_bytes as f64,
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::gauge(
                    "perch_forward_queue_items",
                    "Items waiting in the target's durable queue",
                    s.queue_items as f64,
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::gauge(
                    "perch_forward_oldest_age_seconds",
                    "Age of the oldest item waiting for the target",
                    s.oldest_age_seconds,
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::counter(
                    "perch_forward_sent_total",
                    "Samples or messages the target acknowledged",
                    s.sent_total as f64,
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::counter(
                    "perch_forward_errors_total",
                    "Failed attempts to send to the target",
                    s.errors_total as f64,
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::counter(
                    "perch_forward_rejected_total",
                    "Queue items the target refused as invalid and that were given up",
                    s.rejected_total as f64,
                )
                .with_label("target", n),
            );
            out.push(
                MetricPoint::counter(
                    "perch_forward_dropped_total",
                    "Queue items dropped because the queue was full (the overflow policy)",
                    s.dropped_total as f64,
                )
                .with_label("target", n),
            );
        }
    }
}
