//! perch: a self-hosted IoT appliance in one process. See `docs/ARCHITECTURE.md`.

pub mod config;
pub mod storage;
pub mod system;
