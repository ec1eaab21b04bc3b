//! What each target is doing: the counters its hook, writer and sender
//! share, the status `GET /api/v1/forward` shows, and the same as the
//! `perch_forward_*` series on `/metrics` (stored and forwarded like any
//! self-metric, so a central system can alert on a lagging site).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use base::metrics::{MetricPoint, MetricSource};
use config::ForwardKind;

use super::Forwarder;
use crate::definitions::redact;
use crate::target::Target;

/// Counters and state of one target, shared by its hook, writer and sender.
#[derive(Default)]
pub(crate) struct Counters {
    connected: AtomicBool,
    /// Samples or messages acknowledged by the target.
    pub(crate) sent: AtomicU64,
    /// Failed attempts (connection, timeout, HTTP errors).
    errors: AtomicU64,
    /// Items the target refused as invalid and that were given up.
    rejected: AtomicU64,
    /// Items lost because the in-memory hand-over was full.
    pub(crate) busy_dropped: AtomicU64,
    /// Sent per second over the last few seconds (f64 bits).
    pub(crate) rate: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let msg = e.to_string();
        tracing::warn!(error = %msg, "forwarding failed; will retry");
        *self.last_error.lock() = Some(msg);
    }
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

impl Target {
    pub(crate) fn error(&self, e: impl std::fmt::Display) {
        self.lane.counters.error(e);
    }

    pub(crate) fn count_rejected(&self, items: u64) {
        self.lane
            .counters
            .rejected
            .fetch_add(items, Ordering::Relaxed);
    }

    /// Logs only changes: a target that stays down says so once.
    pub(crate) fn set_connected(&self, up: bool) {
        if self.lane.counters.connected.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("connected");
            } else {
                tracing::info!("disconnected");
            }
        }
    }

    fn status(&self) -> TargetStatus {
        let (c, q) = (&self.lane.counters, &self.lane.queue);
        let now = self.clock.now_ms();
        TargetStatus {
            name: self.config.name.clone(),
            kind: self.config.kind,
            url: match self.config.kind {
                ForwardKind::Kafka => self.config.brokers.join(","),
                _ => redact(&self.config.url),
            },
            priority: self.config.priority,
            held_by_priority: self.seat.is_held(),
            connected: c.connected.load(Ordering::Relaxed),
            queue_bytes: q.bytes.load(Ordering::Relaxed),
            queue_items: q.items.load(Ordering::Relaxed),
            queue_max_bytes: self.config.queue_max_bytes.0,
            oldest_age_seconds: q
                .oldest_ms()
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
            sent_total: c.sent.load(Ordering::Relaxed),
            sent_per_second: f64::from_bits(c.rate.load(Ordering::Relaxed)),
            errors_total: c.errors.load(Ordering::Relaxed),
            rejected_total: c.rejected.load(Ordering::Relaxed),
            dropped_total: q.dropped.load(Ordering::Relaxed)
                + c.busy_dropped.load(Ordering::Relaxed),
            last_error: c.last_error.lock().clone(),
        }
    }
}

impl Forwarder {
    pub fn status(&self) -> Vec<TargetStatus> {
        self.targets().iter().map(|t| t.status()).collect()
    }
}

impl MetricSource for Forwarder {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        for s in self.status() {
            out.extend(points(&s).map(|p| p.with_label("target", s.name.as_str())));
        }
    }
}

/// One target's status as metric points, its label left to add.
fn points(s: &TargetStatus) -> [MetricPoint; 8] {
    [
        MetricPoint::gauge(
            "perch_forward_up",
            "1 when the forwarding target answered the last attempt",
            if s.connected { 1.0 } else { 0.0 },
        ),
        MetricPoint::gauge(
            "perch_forward_queue_bytes",
            "Bytes waiting in the target's durable queue",
            s.queue_bytes as f64,
        ),
        MetricPoint::gauge(
            "perch_forward_queue_items",
            "Items waiting in the target's durable queue",
            s.queue_items as f64,
        ),
        MetricPoint::gauge(
            "perch_forward_oldest_age_seconds",
            "Age of the oldest item waiting for the target",
            s.oldest_age_seconds,
        ),
        MetricPoint::counter(
            "perch_forward_sent_total",
            "Samples or messages the target acknowledged",
            s.sent_total as f64,
        ),
        MetricPoint::counter(
            "perch_forward_errors_total",
            "Failed attempts to send to the target",
            s.errors_total as f64,
        ),
        MetricPoint::counter(
            "perch_forward_rejected_total",
            "Queue items the target refused as invalid and that were given up",
            s.rejected_total as f64,
        ),
        MetricPoint::counter(
            "perch_forward_dropped_total",
            "Queue items dropped because the queue was full (the overflow policy)",
            s.dropped_total as f64,
        ),
    ]
}
