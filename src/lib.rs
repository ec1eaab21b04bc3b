//! perch: a self-hosted IoT appliance in one process. See `docs/ARCHITECTURE.md`.

pub mod accounts;
pub mod bench;
pub mod cameras;
pub mod cli;
pub mod config;
pub mod dashboards;
pub mod forward;
pub mod http;
pub mod ingest;
pub mod mqtt;
pub mod query;
pub mod search;
pub mod server;
pub mod storage;
pub mod system;
