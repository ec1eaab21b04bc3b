//! The host: the clock everything takes time from, disk facts, and the
//! metrics every module reports into (with the host's own). Calls nothing
//! else in perch.

pub mod clock;
pub mod disk;
pub mod host;
pub mod metrics;

pub use clock::{Clock, ManualClock, SystemClock};
