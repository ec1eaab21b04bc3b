//! The host: the clock everything takes time from, and disk facts. Later also
//! self-metrics and service-manager notifications. Calls nothing else in perch.

pub mod clock;
pub mod disk;
pub mod host;
pub mod metrics;

pub use clock::{Clock, ManualClock, SystemClock};
