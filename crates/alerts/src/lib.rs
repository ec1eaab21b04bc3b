//! Alerting and recording rules with Prometheus' semantics: rule files
//! (`rulefile`, read from YAML with every problem's line and column),
//! alert label and annotation templates (`template`, Go's text/template
//! as Prometheus uses it), evaluation of rule groups and the state of their
//! alerts (`eval`), and promtool's rule unit tests (`unittest`, for `perch
//! rules test`). `history` reads what alerts did over a time range from the
//! `ALERTS` series and previews a rule over past data.
//!
//! `manager` runs the groups inside `perch serve` and keeps their alerts
//! in the store's `alerts` tree across restarts.
//!
//! Uses `base` (labels, the clock), `config`, `store` (rule results are
//! written as series; the alerts tree; the unit tests' scratch store) and
//! `query` (rules are PromQL, evaluated on its query threads); the binary
//! and `http` use it. `notify` queues and delivers notifications (MQTT
//! through a publisher the binary passes in, webhooks with reqwest).

pub mod anomaly;
pub mod bench;
pub mod eval;
pub mod history;
pub mod manager;
pub mod notify;
pub mod rulefile;
pub mod silence;
pub mod smtp;
pub mod template;
pub mod unittest;
pub mod yaml;

pub use eval::{Alert, AlertState, Group, Health, Querier, Rule, Sink};
pub use manager::{AlertsError, Manager};
pub use rulefile::{RuleFile, RuleFileError};
