//! The bottom of perch: what every other crate may use and nothing else
//! provides. The injectable clock, human units, the error kinds every
//! crate's errors map to, the metrics registry (with the host's own
//! metrics, its name and LAN addresses), disk facts, the process's footprint by component (memory, disk
//! writes), the recent warnings
//! and errors, the recent problems (failed sign-ins, refusals, unreadable
//! payloads), and the shared model — labels and matchers, series
//! selectors, MQTT topic filters and metric-name sanitizing. Depends on no other perch crate.

pub mod clock;
pub mod disk;
pub mod error;
pub mod events;
pub mod footprint;
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
    /// The measurement and field the series was written as, when the
    /// payload named them (line protocol, Telegraf's JSON).
    pub origin: Option<std::sync::Arc<MeasurementField>>,
}

impl SeriesSamples {
    /// Samples of a series whose payload named no measurement.
    pub fn new(labels: Labels, samples: Vec<(i64, f64)>) -> SeriesSamples {
        SeriesSamples {
            labels,
            samples,
            origin: None,
        }
    }
}

/// A line-protocol measurement and one of its fields, as written. The
/// series' metric name (`<measurement>_<field>`, sanitized) cannot say where
/// one ends and the other begins: `room_aaa` with field `temp` and `room`
/// with field `aaa_temp` are both `room_aaa_temp`. InfluxQL answers with these.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeasurementField {
    pub measurement: String,
    pub field: String,
}

/// Completes once shutdown was signalled on `rx`.
pub async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
