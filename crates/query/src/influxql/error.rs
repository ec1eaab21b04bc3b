//! Why an InfluxQL statement fails, or the `epoch` parameter is refused.
//! A statement's error goes into its own result as text, as InfluxDB does,
//! so the messages are part of the API.

use std::time::Duration;

use thiserror::Error;

use super::parse::Expr;
use super::select::FUNCTIONS;
use crate::QueryError;

#[derive(Debug, Error)]
pub enum InfluxError {
    #[error("invalid regular expression /{pattern}/: {source}")]
    InvalidRegex {
        pattern: String,
        source: regex::Error,
    },
    /// The pattern built from a measurement name does not compile (too long).
    #[error(transparent)]
    MeasurementPattern(regex::Error),
    #[error("measurement {measurement} has {count} series, more than query.max_series ({limit})")]
    TooManySeries {
        measurement: String,
        count: usize,
        limit: usize,
    },
    #[error("time conditions combined with OR are not supported; combine them with AND")]
    TimeInOr,
    #[error("cannot compare time with {0:?}")]
    NotATime(Expr),
    #[error("operator {0} cannot compare time")]
    TimeOperator(&'static str),
    #[error("mixing aggregate and non-aggregate queries is not supported")]
    MixedAggregate,
    #[error("GROUP BY requires at least one aggregate function")]
    GroupByWithoutAggregate,
    #[error("function {0}() is not supported: use one of {list}", list = FUNCTIONS.join(", "))]
    UnsupportedFunction(String),
    #[error("{0}() takes one field name")]
    FunctionArguments(String),
    #[error("unsupported expression in SELECT: {0:?}")]
    UnsupportedExpression(Expr),
    #[error("fill(linear) is not supported; use null, none, previous or a number")]
    FillLinear,
    #[error("GROUP BY time({every_ms}ms) over this range makes {buckets} buckets, more than {limit} (query.max_points_per_series); use a larger interval or a shorter range")]
    TooManyBuckets {
        every_ms: i64,
        buckets: i64,
        limit: usize,
    },
    #[error("query would read more than {limit} samples (query.max_samples); add a time range such as WHERE time > now() - 1h")]
    TooManySamples { limit: usize },
    #[error(transparent)]
    Storage(store::StorageError),
    /// `query.timeout`, worded as PromQL words it.
    #[error("{}", QueryError::Timeout(*.0))]
    Timeout(Duration),
}

impl From<store::StorageError> for InfluxError {
    fn from(e: store::StorageError) -> InfluxError {
        match e {
            store::StorageError::TooManySamples { limit } => InfluxError::TooManySamples { limit },
            e => InfluxError::Storage(e),
        }
    }
}

impl base::HasKind for InfluxError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            InfluxError::InvalidRegex { .. }
            | InfluxError::MeasurementPattern(_)
            | InfluxError::TimeInOr
            | InfluxError::NotATime(_)
            | InfluxError::TimeOperator(_)
            | InfluxError::MixedAggregate
            | InfluxError::GroupByWithoutAggregate
            | InfluxError::UnsupportedFunction(_)
            | InfluxError::FunctionArguments(_)
            | InfluxError::UnsupportedExpression(_)
            | InfluxError::FillLinear => K::InvalidArgument,
            InfluxError::TooManySeries { .. }
            | InfluxError::TooManyBuckets { .. }
            | InfluxError::TooManySamples { .. } => K::Unprocessable,
            InfluxError::Storage(e) => e.kind(),
            InfluxError::Timeout(_) => K::DeadlineExceeded,
        }
    }
}

/// An `epoch` parameter that names no unit.
#[derive(Debug, Error)]
#[error("invalid epoch {0:?}: use h, m, s, ms, u or ns")]
pub struct InvalidEpoch(pub String);

/// A query that does not parse; answered as a whole (HTTP 400), where a
/// statement's own failure goes into its result.
#[derive(Debug, Error)]
#[error("error parsing query: {0}")]
pub struct UnparsableQuery(#[from] pub super::parse::ParseError);

impl base::HasKind for UnparsableQuery {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

impl base::HasKind for InvalidEpoch {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}
