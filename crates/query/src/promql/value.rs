//! Values the evaluator passes between nodes, and the results it hands back.
//!
//! A node is evaluated once over a whole grid of steps (an instant query is a
//! grid of one step), so an instant vector is a list of series, each with the
//! steps at which it has a value; a range vector (the argument of `rate` and
//! friends) keeps its raw samples and is windowed per step by the function.

use std::sync::Arc;

use base::labels::{Label, METRIC_NAME};
use store::Labels;

/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a
/// series for the lookback of instant selectors and is dropped from ranges.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The evaluation times of a node: `start`, `start + step`, … `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub start: i64,
    pub end: i64,
    /// Always > 0 (an instant query uses 1).
    pub step: i64,
}

impl Grid {
    /// Steps in the grid (at least one).
    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.time(i))
    }
}

/// One series of an instant vector over a grid: the step indexes at which it
/// has a value, ascending, and those values.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Arc<Labels>,
    pub steps: Vec<u32>,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(labels: Arc<Labels>) -> Series {
        Series {
            labels,
            steps: Vec::new(),
            values: Vec::new(),
        }
    }

    pub fn with_capacity(labels: Arc<Labels>, n: usize) -> Series {
        Series {
            labels,
            steps: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, step: u32, v: f64) {
        self.steps.push(step);
        self.values.push(v);
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Raw samples of one series feeding a range function, stale markers removed.
#[derive(Clone, Debug)]
pub struct RangeSeries {
    pub labels: Arc<Labels>,
    pub ts: Vec<i64>,
    pub values: Vec<f64>,
}

/// A range vector argument: samples plus, per step of the grid, the end of
/// the window `(ref - range, ref]` (the evaluation time moved by offset or @).
#[derive(Debug)]
pub struct RangeArg {
    pub series: Vec<RangeSeries>,
    pub range_ms: i64,
    /// Window end per step, non-decreasing.
    pub refs: Vec<i64>,
}

impl RangeArg {
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.ts.len()).sum()
    }
}

/// What a node evaluates to.
#[derive(Debug)]
pub enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    Range(RangeArg),
    String(String),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Vector(_) => "vector",
            Val::Range(_) => "matrix",
            Val::String(_) => "string",
        }
    }

    /// Points held, for the sample budget.
    pub fn points(&self) -> usize {
        match self {
            Val::Scalar(v) => v.len(),
            Val::Vector(s) => s.iter().map(Series::len).sum(),
            Val::Range(r) => r.points(),
            Val::String(_) => 0,
        }
    }
}

/// (time, value) pairs of one series.
pub type Points = Vec<(i64, f64)>;

/// A query's answer, in the shapes of the Prometheus HTTP API.
#[derive(Debug)]
pub enum QueryValue {
    /// `[t, v]`
    Scalar(i64, f64),
    String(i64, String),
    /// Instant vector: labels, t, v — in evaluation order.
    Vector(Vec<(Arc<Labels>, i64, f64)>),
    /// Range result or range vector: labels, points; sorted by labels for
    /// range queries.
    Matrix(Vec<(Arc<Labels>, Points)>),
}

impl QueryValue {
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryValue::Scalar(..) => "scalar",
            QueryValue::String(..) => "string",
            QueryValue::Vector(_) => "vector",
            QueryValue::Matrix(_) => "matrix",
        }
    }
}

/// Labels without the metric name, sharing the original when it has none.
pub fn drop_name(l: &Arc<Labels>) -> Arc<Labels> {
    if l.get(METRIC_NAME).is_none() {
        l.clone()
    } else {
        Arc::new(l.without(METRIC_NAME))
    }
}

/// Builds labels from a list already known to be sorted by name and free of
/// empty values.
pub fn labels_from_sorted(v: Vec<Label>) -> Labels {
    Labels::from_pairs(v.into_iter().map(|l| (l.name, l.value)))
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the
/// shortest decimal that round-trips, never with an exponent. Prometheus
/// uses it for `count_values` labels.
pub fn format_go_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust's Display is the shortest round-trip form without exponent.
        let s = format!("{v}");
        if s == "-0" {
            "-0".into()
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_f_formats_like_go() {
        assert_eq!(format_go_f(21.5), "21.5");
        assert_eq!(format_go_f(1e22), "10000000000000000000000");
        assert_eq!(format_go_f(f64::NAN), "NaN");
        assert_eq!(format_go_f(f64::NEG_INFINITY), "-Inf");
    }
}
