//! The host: the clock everything takes time from, disk facts, and the
//! metrics every module reports into (with the host's own). Calls nothing
//! else in perch.

pub mod clock;
pub mod disk;
pub mod events;
pub mod host;
pub mod metrics;
pub mod service;

pub use clock::{Clock, ManualClock, SystemClock};

/// Completes once shutdown was signalled on `rx`.
pub async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
