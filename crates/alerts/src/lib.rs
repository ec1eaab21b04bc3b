//! Alerting and recording rules with Prometheus' semantics: rule files
//! (`rulefile`, read from YAML with every problem's line and column),
//! alert label and annotation templates (`template`, Go's text/template
//! as Prometheus uses it), evaluation of rule groups and the state of their
//! alerts (`eval`), and promtool's rule unit tests (`unittest`, for `perch
//! rules test`).
//!
//! Uses `base` (labels, the clock), `config`, `store` (rule results are
//! written as series; the unit tests' scratch store) and `query` (rules
//! are PromQL); the binary and `http` use it. Notification delivery is not
//! here.

pub mod eval;
pub mod rulefile;
pub mod template;
pub mod unittest;
pub mod yaml;

pub use eval::{Alert, AlertState, Group, Health, Querier, Rule, Sink};
pub use rulefile::{RuleFile, RuleFileError};
