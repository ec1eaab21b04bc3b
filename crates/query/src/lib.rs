//! Query: API parameters, the PromQL engine (`promql`) and the read-only
//! InfluxQL subset (`influxql`), over the store. Uses `base` (selectors,
//! labels), `config` and reads from `store`; `http` calls it. Queries run on their own threads with a
//! large stack and a bounded number at once (see [`run`]).

pub mod bench;
pub mod influxql;
pub mod params;
pub mod promql;

use std::sync::OnceLock;

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
    #[error("query timed out in expression evaluation (query.timeout = {0:?})")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Storage(#[from] store::StorageError),
}

impl base::HasKind for QueryError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            QueryError::BadData(_) => K::InvalidArgument,
            QueryError::Execution(_) => K::Unprocessable,
            QueryError::Timeout(_) => K::DeadlineExceeded,
            QueryError::Storage(e) => e.kind(),
        }
    }
}

impl From<base::limits::LimitError> for QueryError {
    fn from(e: base::limits::LimitError) -> QueryError {
        QueryError::BadData(e.to_string())
    }
}

impl From<base::selector::SelectorError> for QueryError {
    fn from(e: base::selector::SelectorError) -> QueryError {
        QueryError::BadData(e.0)
    }
}

/// The query engine's part of the memory report: the samples and points
/// the PromQL queries running now hold, at 16 bytes each (a timestamp and
/// a value). Register it with the server's metrics registry.
pub struct QueryMemory;

impl base::metrics::MetricSource for QueryMemory {
    fn collect(&self, out: &mut Vec<base::metrics::MetricPoint>) {
        out.push(base::footprint::memory(
            "query",
            promql::eval::held_samples() * 16,
        ));
    }
}

/// Stack of a query thread: evaluation recurses once per level of the
/// expression (at most `promql::MAX_DEPTH`), and dropping a parsed tree
/// recurses too.
const QUERY_STACK_BYTES: usize = 64 << 20;

/// Queries evaluated at once; the others wait. Each may hold up to
/// `query.max_samples` samples, so this also bounds memory.
fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores.clamp(2, 8))
    })
}

/// Runs `f` on a query thread (never on the async workers), turning a panic
/// into an error instead of a crash.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let _permit = slots()
        .acquire()
        .await
        .map_err(|_| QueryError::Execution("the query engine is shutting down".into()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("perch-query".into())
        .stack_size(QUERY_STACK_BYTES)
        .spawn(move || {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
                    Err(QueryError::Execution(
                        "internal error while evaluating the query (see the log)".into(),
                    ))
                });
            let _ = tx.send(r);
        })
        .map_err(|e| QueryError::Execution(format!("cannot start a query thread: {e}")))?;
    rx.await
        .map_err(|_| QueryError::Execution("the query thread stopped unexpectedly".into()))?
}
