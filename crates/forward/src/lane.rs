//! A target's lane, what outlives changes of its definition: the durable
//! queue, the counters, and the bounded hand-over from the hooks to the
//! writer thread that appends to the queue. The hooks run on the appending
//! and collector threads, so the hand-over waits only for the local disk,
//! never for the target.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use base::Clock;
use config::ForwardConfig;

use super::ForwardError;
use crate::queue::Queue;
use crate::status::Counters;

/// Items waiting in memory for a target's writer thread, at most.
const CHANNEL_ITEMS: usize = 65_536;
/// How long a hook waits for room in a full hand-over before dropping.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// Items appended to a queue in one sled batch, at most.
pub(crate) const WRITE_BATCH: usize = 4096;

/// Cloning shares the lane: a target's next definition takes it over.
#[derive(Clone)]
pub(crate) struct Lane {
    pub(crate) queue: Arc<Queue>,
    pub(crate) counters: Arc<Counters>,
    /// None once closed: what the hooks offer then is let go.
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Lane {
    /// Opens the queue of target `c` and starts its writer thread.
    pub(crate) fn open(
        trees: &store::Trees,
        c: &ForwardConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Lane, ForwardError> {
        let queue = Arc::new(Queue::open(
            trees,
            &c.name,
            c.queue_max_bytes.0,
            c.overflow,
        )?);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_ITEMS);
        let (q, cs) = (queue.clone(), counters.clone());
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

    /// Hands an item to the writer thread. When the hand-over is full (a
    /// burst faster than the local disk), waits up to `HANDOVER_WAIT` for
    /// room — the writer never waits on the target, so this is backpressure
    /// from the disk only, like the collector's own channel — then drops and
    /// counts it.
    pub(crate) fn offer(&self, item: Vec<u8>) {
        let Some(tx) = self.tx.lock().clone() else {
            return;
        };
        let mut item = item;
        let deadline = Instant::now() + HANDOVER_WAIT;
        loop {
            match tx.try_send(item) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        self.counters.busy_dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Lets the writer thread store what was handed over, and ends it.
    pub(crate) fn close(&self) {
        self.tx.lock().take();
        let writer = self.writer.lock().take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// The writer thread: appends what the hooks hand over, as much as has
/// arrived in one sled batch, until the lane closes.
fn write_loop(queue: &Queue, counters: &Counters, clock: &dyn Clock, rx: Receiver<Vec<u8>>) {
    while let Ok(first) = rx.recv() {
        let batch = with_what_waits(first, &rx);
        if let Err(e) = queue.push(&batch, clock.now_ms()) {
            counters
                .busy_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            counters.error(format!("cannot queue: {e}"));
        }
    }
}

/// `first` and the items already waiting behind it, up to `WRITE_BATCH`.
fn with_what_waits(first: Vec<u8>, rx: &Receiver<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut batch = vec![first];
    while batch.len() < WRITE_BATCH {
        match rx.try_recv() {
            Ok(x) => batch.push(x),
            Err(_) => break,
        }
    }
    batch
}
