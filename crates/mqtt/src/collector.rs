//! The collector: every message the broker accepts is handed here, in
//! process, before it is routed. It reads the message by the device
//! conventions (`ingest::conventions`, the configured rules first), tells
//! the device registry what it said, records in the explorer how it was
//! read, and hands the samples to storage in batches.
//!
//! Nothing is dropped on the way: the hand-over channel is bounded and a full
//! channel makes the publishing connection wait (and, through TCP, the
//! publisher), rather than a ring buffer quietly rotating. Storage appends are
//! in memory; when storage is overloaded the collector waits and retries.
//! Only if storage refuses writes (disk full) are samples dropped, counted
//! and reported; the broker keeps relaying meanwhile.
//!
//! Nothing is silent either: every message counts under one outcome of
//! `perch_ingest_messages_total`, and what could not be made sense of (a time
//! that did not parse, an unusable discovery config, a template perch does
//! not evaluate) is logged as a warning once per topic and kind, which the
//! dashboard's recent problems show.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base::problems::ProblemKind;
use bytes::Bytes;
use devices::Registry;
use ingest::conventions::{Family, Interpreter, NoticeKind, Reading};
use ingest::mqtt_payload::PayloadFormat;
use tokio::sync::mpsc;

use super::arrivals::Arrivals;
use super::explorer::{Explorer, Inbound, Outcome, ReadSummary};
use store::{SeriesSamples, Storage, StorageError};

/// Samples collected before a batch goes to storage regardless. Small
/// enough that a batch is still in the CPU's cache when storage reads it
/// (keys, labels) and when it is dropped: at 20 000, once the collector fell
/// behind, batches grew to the limit, every append missed the cache, and
/// the collector stayed behind — `perch bench mqtt` lost a third of its
/// throughput (docs/mqtt.md, Benchmark).
const BATCH_SAMPLES: usize = 2_000;
/// A notice logged is cut to this many bytes.
const NOTICE_BYTES: usize = 512;
/// (topic, kind) pairs already reported, at most; past it, new ones are
/// reported too but no longer remembered.
const NOTICES_REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct CollectorCounters {
    pub messages: AtomicU64,
    /// Messages by outcome: some samples stored, none to store, an unknown
    /// format, or every sample refused by storage.
    pub messages_stored: AtomicU64,
    pub messages_no_samples: AtomicU64,
    pub unparsed: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub samples: AtomicU64,
    pub sentinels_dropped: AtomicU64,
    pub samples_rejected: AtomicU64,
    pub samples_lost: AtomicU64,
    /// Notices reported (a time, discovery config or template not used).
    pub notices: AtomicU64,
    /// Milliseconds from a message's arrival to its samples being stored,
    /// for the last batch.
    pub lag_ms: AtomicI64,
}

pub type InboundSender = mpsc::Sender<Vec<Inbound>>;

/// Who sent a client's messages: the user it signed in as (none:
/// anonymous) and its address, for the problems its messages cause.
#[derive(Debug, Default)]
pub struct Origin {
    pub user: Option<String>,
    pub ip: Option<std::net::IpAddr>,
}

/// Something else that wants every message the broker accepts (the search
/// index). Called on the collector thread: it must hand the message on and
/// return at once, never wait.
pub trait MessageSink: Send + Sync {
    fn accept(&self, msg: &Arc<Inbound>);
}

/// What the collector works with.
pub struct CollectorParts {
    pub explorer: Arc<Explorer>,
    pub storage: Arc<Storage>,
    pub interpreter: Interpreter,
    pub devices: Arc<Registry>,
    pub counters: Arc<CollectorCounters>,
    pub arrivals: Arc<Arrivals>,
    pub sinks: Vec<Arc<dyn MessageSink>>,
    /// The retained messages restored at start, learnt from (discovery
    /// configs, device lists, availability) before the first new message.
    pub retained: Vec<(String, Bytes)>,
}

pub struct Collector {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Starts the collector thread; it ends when every sender is dropped,
    /// after storing what it holds.
    pub fn start(parts: CollectorParts) -> (Collector, InboundSender) {
        let (tx, rx) = mpsc::channel(1024);
        let thread = std::thread::Builder::new()
            .name("perch-collector".into())
            .spawn(move || run(rx, parts))
            .expect("spawn collector");
        (
            Collector {
                thread: Some(thread),
            },
            tx,
        )
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Pending {
    series: Vec<SeriesSamples>,
    /// Per message with samples, where its series end in `series`.
    message_ends: Vec<usize>,
    samples: usize,
    oldest_ms: Option<i64>,
}

fn run(mut rx: mpsc::Receiver<Vec<Inbound>>, mut parts: CollectorParts) {
    let mut notices = Notices::default();
    let now = parts.storage.now_ms();
    for (topic, payload) in std::mem::take(&mut parts.retained) {
        let reading = parts.interpreter.learn(&topic, &payload, now);
        parts.devices.learn(&reading);
    }
    let mut pending = Pending {
        series: Vec::new(),
        message_ends: Vec::new(),
        samples: 0,
        oldest_ms: None,
    };
    let counters = &*parts.counters;
    loop {
        // Block when idle; otherwise take what is there and store as soon as
        // the queue is momentarily empty, so latency stays low and batches
        // grow under load.
        let batch = if pending.series.is_empty() {
            rx.blocking_recv()
        } else {
            match rx.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::error::TryRecvError::Empty) => {
                    store(&parts.storage, &mut pending, counters);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        // No more senders, or the empty batch `Broker::stop` sends.
        let Some(batch) = batch.filter(|b| !b.is_empty()) else {
            store(&parts.storage, &mut pending, counters);
            return;
        };
        for mut msg in batch {
            counters.messages.fetch_add(1, Ordering::Relaxed);
            let reading = parts
                .interpreter
                .read(&msg.topic, &msg.payload, msg.time_ms);
            parts.devices.observe(&msg.topic, &reading, msg.time_ms);
            notices.report(&msg.topic, &reading, counters);
            let read = summary(&reading, msg.payload.is_empty());
            if let Some(user) = msg.origin.as_ref().and_then(|o| o.user.as_deref()) {
                parts.arrivals.message(user, &msg, &reading.series, &read);
            }
            counters
                .sentinels_dropped
                .fetch_add(reading.dropped_sentinels as u64, Ordering::Relaxed);
            match read.outcome {
                Outcome::Stored => {
                    pending.samples += read.samples as usize;
                    pending.oldest_ms.get_or_insert(msg.time_ms);
                    pending.series.extend(reading.series);
                    pending.message_ends.push(pending.series.len());
                }
                Outcome::Unparsed => {
                    counters.unparsed.fetch_add(1, Ordering::Relaxed);
                    report_unreadable(&msg, &read, parts.storage.now_ms());
                }
                Outcome::NoSamples => {
                    counters.messages_no_samples.fetch_add(1, Ordering::Relaxed);
                }
            }
            msg.read = Some(read);
            let msg = Arc::new(msg);
            for sink in &parts.sinks {
                sink.accept(&msg);
            }
            parts.explorer.record(msg);
        }
        if pending.samples >= BATCH_SAMPLES {
            store(&parts.storage, &mut pending, counters);
        }
    }
}

/// A payload no format could read, for the Overview's recent problems;
/// not an availability word (`online`, `offline`) a device sends on a topic
/// of its own, which is not a failure.
fn report_unreadable(msg: &Inbound, read: &ReadSummary, now_ms: i64) {
    let text = std::str::from_utf8(&msg.payload).unwrap_or("");
    if ingest::conventions::values::state_word(text).is_some() {
        return;
    }
    let who = match &msg.origin {
        Some(o) => o.user.as_deref().unwrap_or("anonymous"),
        None => &msg.client_id,
    };
    let why = read.note.as_deref().unwrap_or("no format could read it");
    let problem = base::problems::Problem::new(ProblemKind::UnreadablePayload, who, why)
        .with_address(msg.origin.as_ref().and_then(|o| o.ip))
        .with_client_id(&msg.client_id)
        .with_topic(&msg.topic);
    base::problems::record(problem, now_ms);
}

/// How a message was read, for the explorer.
fn summary(r: &Reading, empty: bool) -> ReadSummary {
    let samples = r.samples();
    let outcome = if samples > 0 {
        Outcome::Stored
    } else if r.format == PayloadFormat::Unparsed && !empty {
        // An empty payload clears a retained message: not a payload in an
        // unknown format.
        Outcome::Unparsed
    } else {
        Outcome::NoSamples
    };
    let note = r
        .notices
        .first()
        .map(|n| n.message.as_str())
        .or_else(|| r.errors.first().map(String::as_str))
        .or(match (samples, r.format) {
            (0, PayloadFormat::Ignored) if r.family == Family::Generic => {
                Some("ignored by a rule (ignore = true)")
            }
            (0, PayloadFormat::Ignored) => Some("a command to the device, not a reading"),
            (0, _) if empty => Some("empty payload"),
            _ => None,
        })
        .map(Box::from);
    ReadSummary {
        family: r.family,
        format: r.format,
        series: u32::try_from(r.series.len()).unwrap_or(u32::MAX),
        samples: u32::try_from(samples).unwrap_or(u32::MAX),
        outcome,
        note,
    }
}

/// Reports each (topic, kind) of notice once, as a warning the dashboard's
/// recent problems show.
#[derive(Default)]
struct Notices {
    reported: HashSet<(String, NoticeKind)>,
}

impl Notices {
    fn report(&mut self, topic: &str, r: &Reading, counters: &CollectorCounters) {
        for n in &r.notices {
            let key = (topic.to_string(), n.kind);
            if self.reported.contains(&key) {
                continue;
            }
            counters.notices.fetch_add(1, Ordering::Relaxed);
            // Notices quote payloads; a log line stays readable.
            let mut message = n.message.as_str();
            if message.len() > NOTICE_BYTES {
                let mut end = NOTICE_BYTES;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message = &message[..end];
            }
            tracing::warn!(
                topic,
                family = r.family.as_str(),
                kind = n.kind.as_str(),
                "{message}"
            );
            if self.reported.len() < NOTICES_REMEMBERED {
                self.reported.insert(key);
            }
        }
    }
}

fn store(storage: &Storage, pending: &mut Pending, counters: &CollectorCounters) {
    if pending.series.is_empty() {
        return;
    }
    let series = std::mem::take(&mut pending.series);
    let ends = std::mem::take(&mut pending.message_ends);
    let samples = std::mem::take(&mut pending.samples);
    let oldest = pending.oldest_ms.take();
    let started = Instant::now();
    loop {
        match storage.append(&series) {
            Ok(r) => {
                counters
                    .samples
                    .fetch_add(r.samples as u64, Ordering::Relaxed);
                let rejected = samples.saturating_sub(r.samples);
                if rejected > 0 {
                    counters
                        .samples_rejected
                        .fetch_add(rejected as u64, Ordering::Relaxed);
                    if let Some((_, e)) = r.rejected.first() {
                        tracing::debug!(error = %e, rejected, "samples from MQTT refused");
                    }
                }
                let mut refused: Vec<usize> = r.rejected.iter().map(|(i, _)| *i).collect();
                refused.sort_unstable();
                refused.dedup();
                count_messages(&ends, &refused, counters);
                break;
            }
            Err(StorageError::Overloaded { .. }) if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                counters
                    .samples_lost
                    .fetch_add(samples as u64, Ordering::Relaxed);
                counters
                    .messages_rejected
                    .fetch_add(ends.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, samples, "samples from MQTT could not be stored");
                break;
            }
        }
    }
    if let Some(t) = oldest {
        counters
            .lag_ms
            .store(storage.now_ms().saturating_sub(t), Ordering::Relaxed);
    }
}

/// Counts each message of a stored batch as stored, or as rejected when
/// storage refused every one of its series (`refused`: series indices,
/// sorted, once each).
fn count_messages(ends: &[usize], refused: &[usize], counters: &CollectorCounters) {
    let mut refused = refused.iter().copied().peekable();
    let mut start = 0;
    for &end in ends {
        let mut refused_here = 0;
        while let Some(&i) = refused.peek() {
            if i >= end {
                break;
            }
            refused_here += usize::from(i >= start);
            refused.next();
        }
        let counter = if refused_here == end - start {
            &counters.messages_rejected
        } else {
            &counters.messages_stored
        };
        counter.fetch_add(1, Ordering::Relaxed);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_count_as_rejected_only_when_every_series_was() {
        let counters = CollectorCounters::default();
        // Three messages: series 0..2, 2..3, 3..5; all of the second and one
        // of the third refused.
        count_messages(&[2, 3, 5], &[2, 4], &counters);
        assert_eq!(counters.messages_stored.load(Ordering::Relaxed), 2);
        assert_eq!(counters.messages_rejected.load(Ordering::Relaxed), 1);
    }
}
