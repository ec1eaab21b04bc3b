//! Query: selectors, PromQL and InfluxQL over the store. Reads from
//! `storage` only; `http` calls it. (PromQL evaluation arrives with the query
//! issue; for now selectors and API parameter parsing.)

pub mod params;
pub mod selector;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum QueryError {
    /// The request is malformed (Prometheus' `bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be executed (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
    /// The query ran out of time (`timeout`, HTTP 503).
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}
