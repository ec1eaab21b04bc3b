//! The bottom of perch: what every other crate may use and nothing else
//! provides. The injectable clock, human units, the error kinds every
//! crate's errors map to, the metrics registry (with the host's own
//! metrics, its name and LAN addresses), disk facts, the recent warnings
//! and errors, the recent problems (failed sign-ins, refusals, unreadable
//! payloads), and the shared model — labels and matchers, series
//! selectors, MQTT topic filters and metric-name sanitizing. Depends on no other perch crate.

pub mod clock;
pub mod disk;
pub mod error;
pub mod events;
pub mod host;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod problems;
pub mod selector;
pub mod topic;
pub mod units;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorKind, HasKind};
pub use labels::{Label, LabelLimits, Labels, MatchOp, Matcher, METRIC_NAME};

/// Samples for one series, as ingest hands them over to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Completes once shutdown was signalled on `rx`.
pub async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
