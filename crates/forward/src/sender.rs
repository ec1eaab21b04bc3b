//! The sender task of a target: starting and stopping it, and the loop of
//! the targets fed samples — a batch from the front of the queue, sent,
//! removed only once acknowledged, retried with capped exponential backoff
//! and jitter, paced to `max_bandwidth`. The MQTT bridge has a loop of its
//! own (`mqtt`) over the same pieces.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use config::ForwardKind;

use crate::item;
use crate::queue::Entry;
use crate::target::Target;
use crate::{kafka, mqtt, remote_write};

/// Bytes read from a queue for one send, at most.
pub(crate) const SEND_BATCH_BYTES: usize = 8 << 20;

/// A target's sender task, and the signal that stops it.
pub(crate) struct SenderSlot {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SenderSlot {
    pub(crate) fn new() -> SenderSlot {
        SenderSlot {
            stop: watch::channel(false).0,
            task: Mutex::new(None),
        }
    }

    pub(crate) fn ask_to_stop(&self) {
        let _ = self.stop.send(true);
    }

    pub(crate) async fn ended(&self) {
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Spawns the target's sender task on `rt`.
pub(crate) fn start(t: &Arc<Target>, rt: &tokio::runtime::Handle) {
    let span = tracing::info_span!("forward", target = %t.config.name, kind = ?t.config.kind);
    let stop = t.sender.stop.subscribe();
    let tc = t.clone();
    let run: Pin<Box<dyn Future<Output = ()> + Send>> = match t.config.kind {
        ForwardKind::RemoteWrite => Box::pin(remote_write::run(tc, stop)),
        ForwardKind::Mqtt => Box::pin(mqtt::run(tc, stop)),
        ForwardKind::Kafka => Box::pin(kafka::run(tc, stop)),
    };
    let clear = t.seat.clear_on_drop();
    let task = rt.spawn(
        async move {
            let _clear = clear;
            run.await
        }
        .instrument(span),
    );
    *t.sender.task.lock() = Some(task);
}

impl Target {
    /// Stops the sender (what is in flight is resent by the next one) and
    /// takes the target off the priority board.
    pub(crate) async fn halt_sender(&self) {
        self.sender.ask_to_stop();
        self.sender.ended().await;
        self.seat.leave();
    }

    /// Waits until items arrive, `max` passes or perch stops.
    async fn idle(&self, max: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = self.lane.queue.notify.notified() => {}
            _ = tokio::time::sleep(max) => {}
            _ = base::stopping(stop) => {}
        }
    }
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
    fn send(&mut self, series: &[item::Samples]) -> impl Future<Output = Outcome> + Send;
}

/// The front of the queue cut to about `batch_max` samples.
struct Cut<'a> {
    entries: &'a [Entry],
    /// The sequence number of the last entry: what a commit removes up to.
    last: u64,
    samples: usize,
    /// A full batch: more may be waiting behind it.
    full: bool,
}

/// Items carry many samples each: keeps a send near `batch_max` samples.
/// None when the queue is empty.
fn cut(entries: &[Entry], batch_max: usize) -> Option<Cut<'_>> {
    let mut take = 0;
    let mut samples = 0usize;
    for e in entries {
        take += 1;
        samples += item::count_samples(e.payload()).unwrap_or(0) as usize;
        if samples >= batch_max {
            break;
        }
    }
    let entries = &entries[..take];
    Some(Cut {
        last: entries.last()?.seq,
        entries,
        samples,
        full: samples >= batch_max || take == batch_max,
    })
}

/// The sender loop of the targets fed samples (remote_write, kafka): reads
/// up to `batch_max` samples from the front of the queue, merged per series,
/// hands them to `sink` and settles the outcome until perch stops.
pub(crate) async fn send_samples(
    t: &Target,
    mut stop: watch::Receiver<bool>,
    mut sink: impl SamplesSink,
) {
    let c = &t.config;
    let mut backoff = Backoff::new(c.max_backoff.0);
    let mut pace = Pace::new(t);
    while !*stop.borrow() {
        pace.update_rate(t);
        if !t.seat.wait_turn(&mut stop).await {
            break;
        }
        let entries = match t.lane.queue.peek(c.batch_max, SEND_BATCH_BYTES) {
            Ok(b) => b,
            Err(e) => {
                t.error(e);
                pause(Duration::from_secs(5), &mut stop).await;
                continue;
            }
        };
        let Some(batch) = cut(&entries, c.batch_max) else {
            t.seat.set_catching_up(false);
            t.idle(Duration::from_secs(1), &mut stop).await;
            continue;
        };
        let series = match item::merge_samples(batch.entries) {
            Ok(s) => s,
            Err(e) => {
                skip_damaged(t, &batch, e);
                continue;
            }
        };
        // Stopping abandons a send in flight: it is resent next start.
        let outcome = tokio::select! {
            o = sink.send(&series) => o,
            _ = base::stopping(&mut stop) => break,
        };
        if let Some(wait) = settle(t, &batch, outcome, &mut backoff, &pace) {
            if !pause(wait, &mut stop).await {
                break;
            }
        }
    }
    t.seat.set_catching_up(false);
}

/// A damaged item can never be sent: skips past it.
fn skip_damaged(t: &Target, batch: &Cut<'_>, e: crate::ForwardError) {
    t.error(e);
    t.count_rejected(batch.entries.len() as u64);
    let _ = t.lane.queue.commit(batch.last);
}

/// Commits or keeps the batch by what its send came to; returns how long to
/// wait before the next one, if at all.
fn settle(
    t: &Target,
    batch: &Cut<'_>,
    outcome: Outcome,
    backoff: &mut Backoff,
    pace: &Pace,
) -> Option<Duration> {
    match outcome {
        Outcome::Sent { bytes } => {
            commit(t, batch.last);
            t.lane
                .counters
                .sent
                .fetch_add(batch.samples as u64, Ordering::Relaxed);
            t.set_connected(true);
            t.seat.set_catching_up(batch.full);
            backoff.reset();
            Some(pace.delay_for(bytes)).filter(|wait| !wait.is_zero())
        }
        Outcome::Refused(e) => {
            t.set_connected(true);
            t.count_rejected(batch.entries.len() as u64);
            t.error(format!("the target refused {} samples: {e}", batch.samples));
            commit(t, batch.last);
            None
        }
        Outcome::Retry(e) => {
            t.set_connected(false);
            t.seat.set_catching_up(false);
            t.error(e);
            Some(backoff.step())
        }
    }
}

fn commit(t: &Target, last: u64) {
    if let Err(e) = t.lane.queue.commit(last) {
        t.error(e);
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
pub(crate) async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = base::stopping(stop) => false,
    }
}

/// Keeps `sent_per_second` current and paces to `max_bandwidth`.
pub(crate) struct Pace {
    since: Instant,
    sent_at_start: u64,
    bits_per_s: Option<u64>,
}

impl Pace {
    pub(crate) fn new(t: &Target) -> Pace {
        Pace {
            since: Instant::now(),
            sent_at_start: t.lane.counters.sent.load(Ordering::Relaxed),
            bits_per_s: t.config.max_bandwidth.map(|b| b.0),
        }
    }

    pub(crate) fn update_rate(&mut self, t: &Target) {
        let el = self.since.elapsed();
        if el >= Duration::from_secs(2) {
            let counters = &t.lane.counters;
            let sent = counters.sent.load(Ordering::Relaxed);
            let rate = (sent - self.sent_at_start) as f64 / el.as_secs_f64();
            counters.rate.store(rate.to_bits(), Ordering::Relaxed);
            self.since = Instant::now();
            self.sent_at_start = sent;
        }
    }

    /// After sending `bytes`: how long to wait to stay within the bandwidth.
    pub(crate) fn delay_for(&self, bytes: usize) -> Duration {
        match self.bits_per_s {
            Some(b) => Duration::from_secs_f64(bytes as f64 * 8.0 / b as f64),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(3));
        for expected_ms in [500u64, 1000, 2000, 3000, 3000] {
            let d = b.step();
            let (lo, hi) = (expected_ms / 2, expected_ms * 3 / 2);
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi.min(3000)),
                "{d:?} for {expected_ms} ms"
            );
        }
        b.reset();
        assert!(b.step() < Duration::from_millis(750));
    }
}
