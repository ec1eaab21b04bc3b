//! PromQL: parsing (the `promql-parser` crate, behind size and depth checks
//! so hostile input cannot exhaust the stack or the CPU), evaluation with
//! Prometheus' semantics, and the instant / range query entry points the
//! HTTP API calls.
//!
//! Semantics follow Prometheus 3: range selectors, the lookback window and
//! subquery ranges are left-open (`(t - range, t]`); a stored value with the
//! staleness-marker bits ends a series for lookback. See `docs/query.md` for
//! every known difference from Prometheus.

pub mod aggregate;
pub mod binary;
pub mod eval;
pub mod functions;
pub mod numeric;
pub mod range_functions;
pub mod rollup;
pub mod value;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use promql_parser::parser::value::ValueType;
use promql_parser::parser::Expr;

pub use eval::{EvalOptions, EvalStats, Evaluator};
pub use value::{Grid, QueryValue};

use super::QueryError;
use config::QueryConfig;
use store::Storage;

/// The input limits every query language shares (`base::limits`): query
/// text length, nesting depth (evaluation recurses once per level) and
/// operators (the parser needs time quadratic in long operator chains).
pub use base::limits::{MAX_DEPTH, MAX_ITEMS as MAX_OPERATORS, MAX_QUERY_BYTES};

fn depth(e: &Expr, limit: usize) -> usize {
    if limit == 0 {
        return 1;
    }
    let l = limit - 1;
    1 + match e {
        Expr::Aggregate(a) => depth(&a.expr, l).max(a.param.as_ref().map_or(0, |p| depth(p, l))),
        Expr::Unary(u) => depth(&u.expr, l),
        Expr::Binary(b) => depth(&b.lhs, l).max(depth(&b.rhs, l)),
        Expr::Paren(p) => depth(&p.expr, l),
        Expr::Subquery(s) => depth(&s.expr, l),
        Expr::Call(c) => c.args.args.iter().map(|a| depth(a, l)).max().unwrap_or(0),
        _ => 0,
    }
}

/// A comparison of an expression with a number, as an alert rule's
/// threshold is written (`temp > 30`, `(30 < temp)`): the expression, the
/// operator with the expression on its left, and the number — what a
/// chart draws as a series and a line. `None` for anything else
/// (`bool` comparisons return 0 or 1 rather than filter).
pub fn threshold(e: &Expr) -> Option<(String, String, f64)> {
    use promql_parser::parser::token::{T_GTE, T_GTR, T_LSS, T_LTE};
    match e {
        Expr::Paren(p) => threshold(&p.expr),
        Expr::Binary(b)
            if b.op.is_comparison_operator()
                && !b.modifier.as_ref().is_some_and(|m| m.return_bool) =>
        {
            let number = |e: &Expr| match e {
                Expr::NumberLiteral(n) => Some(n.val),
                _ => None,
            };
            match (number(&b.lhs), number(&b.rhs)) {
                (None, Some(v)) => Some((b.lhs.to_string(), b.op.to_string(), v)),
                (Some(v), None) => {
                    let flipped = match b.op.id() {
                        T_GTR => "<",
                        T_LSS => ">",
                        T_GTE => "<=",
                        T_LTE => ">=",
                        _ => return Some((b.rhs.to_string(), b.op.to_string(), v)),
                    };
                    Some((b.rhs.to_string(), flipped.to_string(), v))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Parses a query, refusing what would be too costly to parse or evaluate.
pub fn parse(q: &str) -> Result<Expr, QueryError> {
    base::limits::check_promql("query", q)?;
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(q))
        .map_err(|_| QueryError::BadData("the query could not be parsed".into()))?;
    let expr =
        parsed.map_err(|e| QueryError::BadData(format!("invalid parameter \"query\": {e}")))?;
    // Chains of operators nest too, without brackets.
    if depth(&expr, MAX_DEPTH + 1) > MAX_DEPTH {
        return Err(base::limits::LimitError::TooDeep {
            what: "query",
            limit: MAX_DEPTH,
            at: None,
        }
        .into());
    }
    Ok(expr)
}

/// `11000` → `11,000`, as Prometheus writes its limit.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Per-request settings.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Shorter than `query.timeout` if the request asks for it.
    pub timeout: Option<Duration>,
    /// Evaluate without the rollup fast path (for comparisons and tests).
    pub no_rollups: bool,
}

/// A query's answer and what it cost.
#[derive(Debug)]
pub struct QueryOutput {
    pub value: QueryValue,
    pub stats: EvalStats,
    pub elapsed: Duration,
}

/// The PromQL engine over one store.
#[derive(Clone)]
pub struct Engine {
    storage: Arc<Storage>,
    config: QueryConfig,
}

impl Engine {
    pub fn new(storage: Arc<Storage>, config: &QueryConfig) -> Engine {
        Engine {
            storage,
            config: config.clone(),
        }
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    fn options(&self, o: &QueryOptions) -> EvalOptions {
        let cfg_timeout = self.config.timeout.0;
        EvalOptions {
            lookback_ms: self
                .config
                .lookback_delta
                .0
                .as_millis()
                .min(i64::MAX as u128) as i64,
            max_samples: self.config.max_samples,
            max_series: self.config.max_series,
            timeout: o.timeout.map_or(cfg_timeout, |t| t.min(cfg_timeout)),
            default_subquery_step_ms: 60_000,
            use_rollups: !o.no_rollups,
        }
    }

    /// Evaluates `q` at time `t` (ms).
    pub fn instant(&self, q: &str, t: i64, o: &QueryOptions) -> Result<QueryOutput, QueryError> {
        let span = tracing::info_span!("query", kind = "instant", query = q, time = t);
        let _g = span.enter();
        let began = Instant::now();
        let expr = parse(q)?;
        let mut ev = Evaluator::new(&self.storage, self.options(o), t, t);
        let grid = Grid {
            start: t,
            end: t,
            step: 1,
        };
        let val = ev.eval(&expr, grid)?;
        let value = match val {
            value::Val::Scalar(v) => QueryValue::Scalar(t, v.first().copied().unwrap_or(f64::NAN)),
            value::Val::String(s) => QueryValue::String(t, s),
            value::Val::Vector(series) => QueryValue::Vector(
                series
                    .into_iter()
                    .filter_map(|s| s.values.first().map(|&v| (s.labels, t, v)))
                    .collect(),
            ),
            value::Val::Range(r) => {
                let end = r.refs.first().copied().unwrap_or(t);
                let start = end.saturating_sub(r.range_ms);
                QueryValue::Matrix(
                    r.series
                        .into_iter()
                        .filter_map(|s| {
                            let pts: Vec<(i64, f64)> =
                                s.ts.iter()
                                    .zip(&s.values)
                                    .filter(|(&ts, _)| ts > start && ts <= end)
                                    .map(|(&ts, &v)| (ts, v))
                                    .collect();
                            (!pts.is_empty()).then_some((s.labels, pts))
                        })
                        .collect(),
                )
            }
        };
        let elapsed = began.elapsed();
        tracing::debug!(?elapsed, stats = ?ev.stats, "query done");
        Ok(QueryOutput {
            value,
            stats: std::mem::take(&mut ev.stats),
            elapsed,
        })
    }

    /// Evaluates `q` at `start`, `start + step`, … up to `end` (ms).
    pub fn range(
        &self,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
        o: &QueryOptions,
    ) -> Result<QueryOutput, QueryError> {
        let span = tracing::info_span!("query", kind = "range", query = q, start, end, step);
        let _g = span.enter();
        let began = Instant::now();
        if step <= 0 {
            return Err(QueryError::BadData(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(QueryError::BadData(
                "invalid parameter \"end\": end timestamp must not be before start time".into(),
            ));
        }
        let points = (end - start) / step;
        if points > self.config.max_points_per_series as i64 {
            return Err(QueryError::BadData(format!(
                "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                thousands(self.config.max_points_per_series)
            )));
        }
        let expr = parse(q)?;
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            t => {
                let name = match t {
                    ValueType::Matrix => "range vector",
                    _ => "string",
                };
                return Err(QueryError::BadData(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let grid = Grid {
            start,
            end: start + points * step,
            step,
        };
        let mut ev = Evaluator::new(&self.storage, self.options(o), start, end);
        let val = ev.eval(&expr, grid)?;
        let value = match val {
            value::Val::Scalar(v) => QueryValue::Matrix(vec![(
                Arc::new(store::Labels::empty()),
                v.into_iter()
                    .enumerate()
                    .map(|(i, v)| (grid.time(i), v))
                    .collect(),
            )]),
            value::Val::Vector(mut series) => {
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
                QueryValue::Matrix(
                    series
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            let pts = s
                                .steps
                                .iter()
                                .zip(&s.values)
                                .map(|(&i, &v)| (grid.time(i as usize), v))
                                .collect();
                            (s.labels, pts)
                        })
                        .collect(),
                )
            }
            other => {
                return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                other.type_name()
            )))
            }
        };
        let elapsed = began.elapsed();
        tracing::debug!(?elapsed, stats = ?ev.stats, "query done");
        Ok(QueryOutput {
            value,
            stats: std::mem::take(&mut ev.stats),
            elapsed,
        })
    }
}
