//! perch's integration tests, in one test binary: one module per capability,
//! each driving the real `perch` binary (or, for `metrics`, the crates it is
//! built from). One binary links the dependency graph once, where one per
//! file linked it once per file.
//!
//! `cargo test --test it` runs them all, `cargo test --test it mqtt::` one
//! capability, `cargo test --test it mqtt::qos2_and_last_will` one test.
//! They run in parallel in this one process: a test keeps its state (data
//! directory, ports, peers) to itself and leaves the process's alone.
//! `common` is the shared harness.

mod common;

mod accounts;
mod alerts;
mod appliance;
mod architecture;
mod cameras;
mod dashboard;
mod devices;
mod disk_full;
mod durability;
mod faults;
mod forward;
mod grafana_api;
mod home_assistant;
mod hostile_network;
mod hostile_queries;
mod influx_clients;
mod influxql;
mod metrics;
mod mqtt;
mod newcomer;
mod paho;
mod problems;
mod promql_bad_input;
mod promql_compat;
mod readme;
mod search;
mod storage_api;
