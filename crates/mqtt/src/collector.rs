//! The collector: every message the broker accepts is handed here, in
//! process, before it is routed. It updates the explorer, turns the payload
//! into samples (`ingest::mqtt_payload` with the configured rules) and hands
//! them to storage in batches.
//!
//! Nothing is dropped on the way: the hand-over channel is bounded and a full
//! channel makes the publishing connection wait (and, through TCP, the
//! publisher), rather than a ring buffer quietly rotating. Storage appends are
//! in memory; when storage is overloaded the collector waits and retries.
//! Only if storage refuses writes (disk full) are samples dropped, counted
//! and reported; the broker keeps relaying meanwhile.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::explorer::{Explorer, Inbound};
use ingest::mqtt_payload::{parse_message, PayloadFormat};
use ingest::rules::Rules;
use store::{SeriesSamples, Storage, StorageError};

/// Samples collected before a batch goes to storage regardless.
const BATCH_SAMPLES: usize = 20_000;

#[derive(Default)]
pub struct CollectorCounters {
    pub messages: AtomicU64,
    pub samples: AtomicU64,
    pub unparsed: AtomicU64,
    pub sentinels_dropped: AtomicU64,
    pub samples_rejected: AtomicU64,
    pub samples_lost: AtomicU64,
    /// Milliseconds from a message's arrival to its samples being stored,
    /// for the last batch.
    pub lag_ms: AtomicI64,
}

pub type InboundSender = mpsc::Sender<Vec<Inbound>>;

/// Something else that wants every message the broker accepts (the search
/// index). Called on the collector thread: it must hand the message on and
/// return at once, never wait.
pub trait MessageSink: Send + Sync {
    fn accept(&self, msg: &Arc<Inbound>);
}

pub struct Collector {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Starts the collector thread; it ends when every sender is dropped,
    /// after storing what it holds.
    pub fn start(
        explorer: Arc<Explorer>,
        storage: Arc<Storage>,
        rules: Rules,
        counters: Arc<CollectorCounters>,
        sinks: Vec<Arc<dyn MessageSink>>,
    ) -> (Collector, InboundSender) {
        let (tx, rx) = mpsc::channel(1024);
        let thread = std::thread::Builder::new()
            .name("perch-collector".into())
            .spawn(move || run(rx, &explorer, &storage, &rules, &counters, &sinks))
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
    samples: usize,
    oldest_ms: Option<i64>,
}

fn run(
    mut rx: mpsc::Receiver<Vec<Inbound>>,
    explorer: &Explorer,
    storage: &Storage,
    rules: &Rules,
    counters: &CollectorCounters,
    sinks: &[Arc<dyn MessageSink>],
) {
    let mut pending = Pending {
        series: Vec::new(),
        samples: 0,
        oldest_ms: None,
    };
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
                    store(storage, &mut pending, counters);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        // No more senders, or the empty batch `Broker::stop` sends.
        let Some(batch) = batch.filter(|b| !b.is_empty()) else {
            store(storage, &mut pending, counters);
            return;
        };
        for msg in batch {
            counters.messages.fetch_add(1, Ordering::Relaxed);
            let parsed = parse_message(&msg.topic, &msg.payload, msg.time_ms, rules);
            match parsed.format {
                // An empty payload clears a retained message: not a payload
                // in an unknown format.
                PayloadFormat::Unparsed if !msg.payload.is_empty() => {
                    counters.unparsed.fetch_add(1, Ordering::Relaxed);
                }
                PayloadFormat::Unparsed => {}
                _ => {
                    let n: usize = parsed.series.iter().map(|s| s.samples.len()).sum();
                    if n > 0 {
                        pending.samples += n;
                        pending.oldest_ms.get_or_insert(msg.time_ms);
                        pending.series.extend(parsed.series);
                    }
                }
            }
            counters
                .sentinels_dropped
                .fetch_add(parsed.dropped_sentinels as u64, Ordering::Relaxed);
            let msg = Arc::new(msg);
            for sink in sinks {
                sink.accept(&msg);
            }
            explorer.record(msg);
        }
        if pending.samples >= BATCH_SAMPLES {
            store(storage, &mut pending, counters);
        }
    }
}

fn store(storage: &Storage, pending: &mut Pending, counters: &CollectorCounters) {
    if pending.series.is_empty() {
        return;
    }
    let series = std::mem::take(&mut pending.series);
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
                break;
            }
            Err(StorageError::Overloaded { .. }) if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                counters
                    .samples_lost
                    .fetch_add(samples as u64, Ordering::Relaxed);
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
