//! Store and forward: feeds samples and MQTT messages to systems that already
//! scale (a Prometheus-compatible remote-write receiver, an upstream MQTT
//! broker, a Kafka cluster), durably, through outages. Owns the per-target
//! queues (sled trees `forward.<name>` in the one database), the targets
//! added at runtime (tree `forward_targets`), one writer thread and one
//! sender task per target, priorities between them, and their status. It
//! uses `base` (selectors, topic filters), `config`, `store` (its trees,
//! its public read API and the [`AppendObserver`](store::AppendObserver)
//! hook) and `search` (the message history, to replay MQTT targets); the
//! server hands it samples (the store's append hook) and messages (the
//! collector's `MessageSink`), http reads its status and changes targets
//! through its methods; nothing reaches inside.
//!
//! Path of an item: the hook (on the appending thread or the collector
//! thread) encodes what matches a target and hands it to that target's
//! bounded in-memory channel; only when a burst outruns the local disk does
//! it wait for room (at most 2 s, then the item is dropped and counted) —
//! never for the target. The target's writer thread appends what arrived to
//! its queue in one sled batch. The sender task reads a batch from the
//! front, sends it and removes it only when the target acknowledged it (HTTP
//! 2xx, MQTT PUBACK or PUBCOMP): delivery is at-least-once, and after a
//! restart sending resumes at the first unacknowledged item. Failures are
//! retried with capped exponential backoff and jitter; a target refusing a
//! batch as invalid (HTTP 4xx other than 429) has it dropped and counted as
//! `rejected`. Each target has its own queue, thread and task: a dead target
//! only fills its own queue, up to `queue_max_bytes`, where `overflow`
//! decides.
//!
//! This file holds the [`Forwarder`] and its list of targets; each concern
//! has a module: `definitions` (targets as the API and the config file see
//! them), `target` (one running target), `lane` (queue, hand-over, writer
//! thread), `hooks` (what goes to which target), `sender` (the send loop),
//! `priority`, `status`, `replay`, and one module per kind of target.

pub mod bench;
mod definitions;
mod hooks;
mod item;
mod kafka;
mod lane;
mod mqtt;
mod priority;
mod queue;
mod remote_write;
mod replay;
mod sender;
mod status;
mod target;
pub mod tls;

use std::sync::Arc;

use parking_lot::Mutex;
use thiserror::Error;

use base::Clock;
use config::ForwardConfig;

pub use definitions::{check_config, validate_target, TargetDefinition};
pub use kafka::{TopicTemplate, TopicTemplateError};
pub use remote_write::encode_write_request;
pub use replay::ReplayReport;
pub use status::TargetStatus;

use priority::PriorityBoard;
use target::Target;

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("damaged forwarding queue: {0}")]
    Corrupt(String),
    #[error("no forwarding target {0:?}")]
    NoTarget(String),
    /// Asked of a target what its kind cannot do (e.g. a replay it has no
    /// history for).
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
            ForwardError::Invalid(_) | ForwardError::Unsupported(_) => K::InvalidArgument,
            ForwardError::Db(_)
            | ForwardError::Corrupt(_)
            | ForwardError::Storage(_)
            | ForwardError::Setup(_) => K::Internal,
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

impl Forwarder {
    /// Opens every target's queue (in the store's trees) — the config file's
    /// and those added through the API — and starts its writer thread.
    /// Senders start with [`Forwarder::start_senders`].
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
        let mut targets = Vec::new();
        for c in configs {
            targets.push(f.launch(c.clone(), true)?);
        }
        for c in definitions::stored(&f.definitions, configs)? {
            targets.push(f.launch(c, false)?);
        }
        *f.targets.write() = Arc::new(targets);
        Ok(f)
    }

    /// Starts one sender task per target on the current runtime.
    pub fn start_senders(&self) {
        let rt = tokio::runtime::Handle::current();
        *self.runtime.lock() = Some(rt.clone());
        for t in self.targets().iter() {
            sender::start(t, &rt);
        }
    }

    /// Stops the senders (what is in flight is resent next start) and lets
    /// the writer threads store what the hooks handed over.
    pub async fn stop(&self) {
        let _one = self.changes.lock().await;
        let targets = self.targets();
        // All asked first, so they wind down side by side.
        for t in targets.iter() {
            t.sender.ask_to_stop();
        }
        for t in targets.iter() {
            t.sender.ended().await;
        }
        let _ =
            tokio::task::spawn_blocking(move || targets.iter().for_each(|t| t.lane.close())).await;
    }

    /// Stops the writer threads of a forwarder whose senders never ran
    /// (an offline replay).
    pub fn close_queues(&self) {
        self.targets().iter().for_each(|t| t.lane.close());
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

    /// Changes the list the hooks read without making them wait: they keep
    /// the list they hold until their next read.
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
}
