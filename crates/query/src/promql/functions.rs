//! PromQL functions, with Prometheus' numerics: `rate`/`increase`/`delta`
//! extrapolation, counter resets, Kahan-compensated sums, linear regression,
//! classic-bucket `histogram_quantile`, and which functions keep the metric
//! name (`last_over_time`, `label_*`, `sort*`) and which drop it.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, Timelike};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr};

use super::eval::{check_unique_labels, merge_same_labels, Evaluator};
use super::value::{drop_name, Grid, RangeArg, Series, Val};
use crate::QueryError;
use base::labels::{compile_anchored, is_valid_label_name, METRIC_NAME};
use store::Labels;

/// Evaluates a function call over the grid.
pub fn call(ev: &mut Evaluator, c: &Call, grid: Grid) -> Result<Val, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| -> Result<&Expr, QueryError> {
        args.get(i)
            .copied()
            .ok_or_else(|| QueryError::BadData(format!("missing argument {} of {name}()", i + 1)))
    };
    let n = grid.len();
    match name {
        // Range vector → instant vector.
        "rate" | "increase" | "delta" | "irate" | "idelta" | "deriv" | "resets" | "changes"
        | "avg_over_time" | "min_over_time" | "max_over_time" | "sum_over_time"
        | "count_over_time" | "last_over_time" | "stddev_over_time" | "stdvar_over_time"
        | "present_over_time" => {
            let a = unwrap_parens(arg(0)?);
            if let Expr::MatrixSelector(ms) = a {
                let range_ms = ms.range.as_millis() as i64;
                if let Some(out) = ev.try_rollup(name, &ms.vs, range_ms, grid)? {
                    return Ok(Val::Vector(out));
                }
            }
            let r = ev.eval_range(a, grid)?;
            range_function(ev, name, r, None, grid).map(Val::Vector)
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(0)?, grid)?;
            let r = ev.eval_range(arg(1)?, grid)?;
            let out = range_function(ev, name, r, Some(&q), grid);
            ev.release(q.len());
            out.map(Val::Vector)
        }
        "predict_linear" => {
            let r = ev.eval_range(arg(0)?, grid)?;
            let d = ev.eval_scalar(arg(1)?, grid)?;
            let out = range_function(ev, name, r, Some(&d), grid);
            ev.release(d.len());
            out.map(Val::Vector)
        }
        "absent_over_time" => {
            let r = ev.eval_range(arg(0)?, grid)?;
            let labels = absent_labels(arg(0)?);
            let mut present = vec![false; n];
            for s in &r.series {
                super::functions::for_each_window(&s.ts, &r.refs, r.range_ms, |i, lo, hi| {
                    if lo < hi {
                        present[i] = true;
                    }
                });
            }
            ev.release(r.points());
            Ok(Val::Vector(absent_series(labels, &present, ev)?))
        }
        "absent" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let mut present = vec![false; n];
            for s in &v {
                for &i in &s.steps {
                    present[i as usize] = true;
                }
            }
            ev.release(points(&v));
            let labels = absent_labels(arg(0)?);
            Ok(Val::Vector(absent_series(labels, &present, ev)?))
        }
        // Instant vector → instant vector, per sample.
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "deg"
        | "rad" | "acos" | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh"
        | "sin" | "sinh" | "tan" | "tanh" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v: f64| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "deg" => f64::to_degrees,
                "rad" => f64::to_radians,
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                _ => f64::tanh,
            };
            let v = ev.eval_vector(arg(0)?, grid)?;
            map_values(v, |_, x| Some(f(x)))
        }
        "round" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let to = match args.get(1) {
                Some(e) => ev.eval_scalar(e, grid)?,
                None => vec![1.0; n],
            };
            map_values(v, |i, x| {
                // Prometheus rounds half up via the inverse, for exactness
                // with fractional targets like 0.1.
                let inv = 1.0 / to[i];
                Some((x * inv + 0.5).floor() / inv)
            })
        }
        "clamp" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let lo = ev.eval_scalar(arg(1)?, grid)?;
            let hi = ev.eval_scalar(arg(2)?, grid)?;
            map_values(v, |i, x| {
                // An empty interval returns nothing, like Prometheus.
                if hi[i] < lo[i] {
                    None
                } else {
                    Some(go_max(lo[i], go_min(hi[i], x)))
                }
            })
        }
        "clamp_min" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let lo = ev.eval_scalar(arg(1)?, grid)?;
            map_values(v, |i, x| Some(go_max(lo[i], x)))
        }
        "clamp_max" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let hi = ev.eval_scalar(arg(1)?, grid)?;
            map_values(v, |i, x| Some(go_min(hi[i], x)))
        }
        "timestamp" => {
            let a = unwrap_parens(arg(0)?);
            let v = if let Expr::VectorSelector(vs) = a {
                ev.vector_selector(vs, grid, true)?
            } else {
                let mut v = ev.eval_vector(a, grid)?;
                for s in &mut v {
                    for (k, &i) in s.steps.iter().enumerate() {
                        s.values[k] = grid.time(i as usize) as f64 / 1000.0;
                    }
                }
                v
            };
            map_values(v, |_, x| Some(x))
        }
        "hour" | "minute" | "month" | "year" | "day_of_month" | "day_of_week" | "day_of_year"
        | "days_in_month" => {
            let f = date_function(name);
            match args.first() {
                None => {
                    let mut s = Series::with_capacity(Arc::new(Labels::empty()), n);
                    for (i, t) in grid.times().enumerate() {
                        s.push(i as u32, f(t.div_euclid(1000) as f64));
                    }
                    ev.hold(n)?;
                    Ok(Val::Vector(vec![s]))
                }
                Some(e) => {
                    let v = ev.eval_vector(e, grid)?;
                    map_values(v, |_, x| Some(f(x)))
                }
            }
        }
        "time" => {
            ev.hold(n)?;
            Ok(Val::Scalar(
                grid.times().map(|t| t as f64 / 1000.0).collect(),
            ))
        }
        "pi" => {
            ev.hold(n)?;
            Ok(Val::Scalar(vec![std::f64::consts::PI; n]))
        }
        "vector" => {
            let s = ev.eval_scalar(arg(0)?, grid)?;
            let mut out = Series::with_capacity(Arc::new(Labels::empty()), n);
            for (i, v) in s.into_iter().enumerate() {
                out.push(i as u32, v);
            }
            Ok(Val::Vector(vec![out]))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let mut count = vec![0u32; n];
            let mut value = vec![f64::NAN; n];
            for s in &v {
                for (k, &i) in s.steps.iter().enumerate() {
                    count[i as usize] += 1;
                    value[i as usize] = s.values[k];
                }
            }
            ev.release(points(&v));
            ev.hold(n)?;
            Ok(Val::Scalar(
                (0..n)
                    .map(|i| if count[i] == 1 { value[i] } else { f64::NAN })
                    .collect(),
            ))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(0)?, grid)?;
            // Order only means something for an instant query.
            if n == 1 {
                let desc = name == "sort_desc";
                v.sort_by(|a, b| {
                    let (x, y) = (a.values[0], b.values[0]);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
            }
            Ok(Val::Vector(v))
        }
        "label_replace" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let dst = string_arg(arg(1)?)?;
            let repl = string_arg(arg(2)?)?;
            let src = string_arg(arg(3)?)?;
            let re_s = string_arg(arg(4)?)?;
            let re = compile_anchored(&re_s).map_err(|e| {
                QueryError::BadData(format!(
                    "invalid regular expression in label_replace(): {}",
                    e.reason
                ))
            })?;
            if !is_valid_label_name(&dst) {
                return Err(QueryError::BadData(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut s in v {
                let value = s.labels.get(&src).unwrap_or("");
                if let Some(caps) = re.captures(value) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    let mut l = (*s.labels).clone();
                    l.set(&dst, &res);
                    s.labels = Arc::new(l);
                }
                out.push(s);
            }
            merge_same_labels(out).map(Val::Vector)
        }
        "label_join" => {
            let v = ev.eval_vector(arg(0)?, grid)?;
            let dst = string_arg(arg(1)?)?;
            let sep = string_arg(arg(2)?)?;
            let mut srcs = Vec::new();
            for a in args.iter().skip(3) {
                let s = string_arg(a)?;
                if !is_valid_label_name(&s) && s != METRIC_NAME {
                    return Err(QueryError::BadData(format!(
                        "invalid source label name in label_join(): {s}"
                    )));
                }
                srcs.push(s);
            }
            if !is_valid_label_name(&dst) {
                return Err(QueryError::BadData(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut s in v {
                let joined = srcs
                    .iter()
                    .map(|n| s.labels.get(n).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(&sep);
                let mut l = (*s.labels).clone();
                l.set(&dst, &joined);
                s.labels = Arc::new(l);
                out.push(s);
            }
            merge_same_labels(out).map(Val::Vector)
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(0)?, grid)?;
            let v = ev.eval_vector(arg(1)?, grid)?;
            let out = histogram_quantile(&q, &v, n);
            ev.release(points(&v));
            let out = out?;
            ev.hold(points(&out))?;
            Ok(Val::Vector(out))
        }
        other => Err(QueryError::BadData(format!(
            "function {other}() is not supported by perch"
        ))),
    }
}

fn points(v: &[Series]) -> usize {
    v.iter().map(Series::len).sum()
}

pub fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn string_arg(e: &Expr) -> Result<String, QueryError> {
    match unwrap_parens(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => Err(QueryError::BadData("expected a string literal".into())),
    }
}

/// Applies `f(step, value)` to every point; drops the metric name like every
/// per-sample function of Prometheus does.
fn map_values(v: Vec<Series>, f: impl Fn(usize, f64) -> Option<f64>) -> Result<Val, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    for s in v {
        let mut o = Series::with_capacity(drop_name(&s.labels), s.len());
        for (k, &i) in s.steps.iter().enumerate() {
            if let Some(x) = f(i as usize, s.values[k]) {
                o.push(i, x);
            }
        }
        if !o.is_empty() {
            out.push(o);
        }
    }
    merge_same_labels(out).map(Val::Vector)
}

/// Go's `math.Max`: NaN wins unless the other side is +Inf.
pub fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN wins unless the other side is -Inf.
pub fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

fn date_function(name: &str) -> fn(f64) -> f64 {
    fn at(v: f64) -> Option<chrono::NaiveDateTime> {
        if !v.is_finite() {
            return None;
        }
        // Go converts with int64(v): truncation toward zero.
        chrono::DateTime::from_timestamp(v.trunc() as i64, 0).map(|d| d.naive_utc())
    }
    fn days_in_month(y: i32, m: u32) -> f64 {
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        match (
            NaiveDate::from_ymd_opt(y, m, 1),
            NaiveDate::from_ymd_opt(ny, nm, 1),
        ) {
            (Some(a), Some(b)) => (b - a).num_days() as f64,
            _ => f64::NAN,
        }
    }
    match name {
        "hour" => |v| at(v).map_or(f64::NAN, |d| d.hour() as f64),
        "minute" => |v| at(v).map_or(f64::NAN, |d| d.minute() as f64),
        "month" => |v| at(v).map_or(f64::NAN, |d| d.month() as f64),
        "year" => |v| at(v).map_or(f64::NAN, |d| d.year() as f64),
        "day_of_month" => |v| at(v).map_or(f64::NAN, |d| d.day() as f64),
        "day_of_week" => |v| at(v).map_or(f64::NAN, |d| d.weekday().num_days_from_sunday() as f64),
        "day_of_year" => |v| at(v).map_or(f64::NAN, |d| d.ordinal() as f64),
        _ => |v| at(v).map_or(f64::NAN, |d| days_in_month(d.year(), d.month())),
    }
}

/// Labels `absent()` gives its answer: the equality matchers of a plain
/// selector (a label matched twice, or otherwise, is left out).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut l = Labels::empty();
    let mut drop: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && l.get(&m.name).is_none() {
            l.set(&m.name, &m.value);
        } else {
            drop.push(&m.name);
        }
    }
    for d in drop {
        l.set(d, "");
    }
    l
}

fn absent_series(
    labels: Labels,
    present: &[bool],
    ev: &mut Evaluator,
) -> Result<Vec<Series>, QueryError> {
    let mut s = Series::new(Arc::new(labels));
    for (i, &p) in present.iter().enumerate() {
        if !p {
            s.push(i as u32, 1.0);
        }
    }
    ev.hold(s.len())?;
    Ok(if s.is_empty() { Vec::new() } else { vec![s] })
}

/// Calls `f(step, lo, hi)` with the sample index range `[lo, hi)` of each
/// step's window `(ref - range, ref]`; `refs` must be non-decreasing.
pub fn for_each_window(
    ts: &[i64],
    refs: &[i64],
    range: i64,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (mut lo, mut hi) = (0usize, 0usize);
    for (i, &r) in refs.iter().enumerate() {
        let start = r.saturating_sub(range);
        while hi < ts.len() && ts[hi] <= r {
            hi += 1;
        }
        while lo < hi && ts[lo] <= start {
            lo += 1;
        }
        f(i, lo, hi);
    }
}

/// The range functions, resolved once so the per-window loop does not
/// compare names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Present,
    Stddev,
    Stdvar,
    Quantile,
}

impl RangeFn {
    fn from_name(name: &str) -> Option<RangeFn> {
        Some(match name {
            "rate" => RangeFn::Rate,
            "increase" => RangeFn::Increase,
            "delta" => RangeFn::Delta,
            "irate" => RangeFn::Irate,
            "idelta" => RangeFn::Idelta,
            "deriv" => RangeFn::Deriv,
            "predict_linear" => RangeFn::PredictLinear,
            "resets" => RangeFn::Resets,
            "changes" => RangeFn::Changes,
            "avg_over_time" => RangeFn::Avg,
            "min_over_time" => RangeFn::Min,
            "max_over_time" => RangeFn::Max,
            "sum_over_time" => RangeFn::Sum,
            "count_over_time" => RangeFn::Count,
            "last_over_time" => RangeFn::Last,
            "present_over_time" => RangeFn::Present,
            "stddev_over_time" => RangeFn::Stddev,
            "stdvar_over_time" => RangeFn::Stdvar,
            "quantile_over_time" => RangeFn::Quantile,
            _ => return None,
        })
    }
}

/// Evaluates a function of a range vector per series and step.
fn range_function(
    ev: &mut Evaluator,
    name: &str,
    r: RangeArg,
    param: Option<&[f64]>,
    grid: Grid,
) -> Result<Vec<Series>, QueryError> {
    let Some(func) = RangeFn::from_name(name) else {
        return Err(QueryError::BadData(format!(
            "function {name}() is not supported by perch"
        )));
    };
    let keep_name = func == RangeFn::Last;
    let range = r.range_ms;
    let mut out = Vec::with_capacity(r.series.len());
    let mut held = 0;
    // Per sample: how many counter resets happened up to it, so windows
    // without any skip the loop that adds them back.
    let mut resets_before: Vec<u32> = Vec::new();
    for s in &r.series {
        ev.check_deadline()?;
        let labels = if keep_name {
            s.labels.clone()
        } else {
            drop_name(&s.labels)
        };
        let mut o = Series::with_capacity(labels, r.refs.len());
        let (ts, vs) = (&s.ts[..], &s.values[..]);
        if matches!(func, RangeFn::Rate | RangeFn::Increase) {
            resets_before.clear();
            let mut n = 0u32;
            for (i, v) in vs.iter().enumerate() {
                if i > 0 && *v < vs[i - 1] {
                    n += 1;
                }
                resets_before.push(n);
            }
        }
        if matches!(func, RangeFn::Min | RangeFn::Max) {
            sliding_extreme(ts, vs, &r.refs, range, func == RangeFn::Max, &mut o);
            if !o.is_empty() {
                held += o.len();
                out.push(o);
            }
            continue;
        }
        for_each_window(ts, &r.refs, range, |i, lo, hi| {
            if lo >= hi {
                return;
            }
            let (t, v) = (&ts[lo..hi], &vs[lo..hi]);
            let reference = r.refs[i];
            let start = reference - range;
            let value = match func {
                RangeFn::Rate | RangeFn::Increase => {
                    let counter = resets_before[hi - 1] != resets_before[lo];
                    extrapolated_rate(
                        t,
                        v,
                        start,
                        reference,
                        range,
                        counter_mode(counter),
                        func == RangeFn::Rate,
                    )
                }
                RangeFn::Delta => {
                    extrapolated_rate(t, v, start, reference, range, Counter::No, false)
                }
                RangeFn::Irate => instant_value(t, v, true),
                RangeFn::Idelta => instant_value(t, v, false),
                RangeFn::Deriv => (t.len() >= 2).then(|| linear_regression(t, v, t[0]).0),
                RangeFn::PredictLinear => (t.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(t, v, grid.time(i));
                    slope * param.map_or(0.0, |p| p[i]) + intercept
                }),
                RangeFn::Resets => Some(v.windows(2).filter(|w| w[1] < w[0]).count() as f64),
                RangeFn::Changes => Some(
                    v.windows(2)
                        .filter(|w| w[1] != w[0] && !(w[1].is_nan() && w[0].is_nan()))
                        .count() as f64,
                ),
                RangeFn::Avg => Some(avg(v)),
                RangeFn::Min => Some(
                    v.iter()
                        .fold(v[0], |m, &x| if x < m || m.is_nan() { x } else { m }),
                ),
                RangeFn::Max => Some(
                    v.iter()
                        .fold(v[0], |m, &x| if x > m || m.is_nan() { x } else { m }),
                ),
                RangeFn::Sum => Some(kahan_sum(v)),
                RangeFn::Count => Some(v.len() as f64),
                RangeFn::Last => v.last().copied(),
                RangeFn::Present => Some(1.0),
                RangeFn::Stddev => Some(variance(v).sqrt()),
                RangeFn::Stdvar => Some(variance(v)),
                RangeFn::Quantile => Some(quantile(param.map_or(f64::NAN, |p| p[i]), v.to_vec())),
            };
            if let Some(x) = value {
                o.push(i as u32, x);
            }
        });
        if !o.is_empty() {
            held += o.len();
            out.push(o);
        }
    }
    ev.release(r.points());
    ev.hold(held)?;
    // Prometheus refuses equal label sets among range function results even
    // when they never overlap in time.
    check_unique_labels(&out)?;
    Ok(out)
}

/// `max_over_time` / `min_over_time` over sliding windows in one pass: a
/// deque of candidate indexes, values decreasing (max) from the front. Ties
/// keep the earliest sample, as Prometheus' scan (which replaces only on a
/// strictly greater value) does; NaN is skipped unless the whole window is
/// NaN, which gives NaN — again Prometheus' result.
fn sliding_extreme(ts: &[i64], vs: &[f64], refs: &[i64], range: i64, max: bool, o: &mut Series) {
    let better = |a: f64, b: f64| if max { a > b } else { a < b };
    let mut deque: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut added = 0usize;
    for_each_window(ts, refs, range, |i, lo, hi| {
        while added < hi {
            let x = vs[added];
            if !x.is_nan() {
                while deque.back().is_some_and(|&b| better(x, vs[b])) {
                    deque.pop_back();
                }
                deque.push_back(added);
            }
            added += 1;
        }
        while deque.front().is_some_and(|&f| f < lo) {
            deque.pop_front();
        }
        if lo >= hi {
            return;
        }
        match deque.front() {
            Some(&f) => o.push(i as u32, vs[f]),
            None => o.push(i as u32, f64::NAN),
        }
    });
}

/// How `extrapolated_rate` treats the samples.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A gauge (`delta`).
    No,
    /// A counter whose window holds no reset.
    NoResets,
    /// A counter with resets in the window.
    Resets,
}

fn counter_mode(resets: bool) -> Counter {
    if resets {
        Counter::Resets
    } else {
        Counter::NoResets
    }
}

/// `rate`, `increase` and `delta` as Prometheus computes them: the change
/// over the samples (adding back counter resets), extrapolated towards the
/// window's edges when the first and last sample are close enough to them,
/// never extrapolating a counter below zero.
pub fn extrapolated_rate(
    ts: &[i64],
    vs: &[f64],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    counter: Counter,
    is_rate: bool,
) -> Option<f64> {
    let n = ts.len();
    if n < 2 {
        return None;
    }
    let is_counter = counter != Counter::No;
    let mut result = vs[n - 1] - vs[0];
    if counter == Counter::Resets {
        let mut prev = vs[0];
        for &v in &vs[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (ts[0] - range_start) as f64 / 1000.0;
    let to_end = (range_end - ts[n - 1]) as f64 / 1000.0;
    let sampled = (ts[n - 1] - ts[0]) as f64 / 1000.0;
    let avg_gap = sampled / (n - 1) as f64;
    if is_counter && result > 0.0 && vs[0] >= 0.0 {
        let to_zero = sampled * (vs[0] / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg_gap / 2.0
    };
    result *= interval / sampled;
    if is_rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(ts: &[i64], vs: &[f64], is_rate: bool) -> Option<f64> {
    let n = ts.len();
    if n < 2 {
        return None;
    }
    let (last, prev) = (vs[n - 1], vs[n - 2]);
    let mut result = if is_rate && last < prev {
        last // counter reset
    } else {
        last - prev
    };
    let interval = ts[n - 1] - ts[n - 2];
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Kahan–Neumaier summation step, as Prometheus does it.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub fn kahan_sum(v: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for &x in v {
        (sum, c) = kahan_inc(x, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// Mean with a compensated sum, switching to an incremental mean when the
/// sum overflows.
fn avg(v: &[f64]) -> f64 {
    let (mut sum, mut c, mut mean) = (0.0f64, 0.0f64, 0.0f64);
    let mut count = 0.0;
    let mut incremental = false;
    for &x in v {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_inc(x, sum, c);
            if !ns.is_infinite() && !nc.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(x / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        (sum + c) / count
    }
}

/// Population variance (Welford, compensated).
fn variance(v: &[f64]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &x in v {
        count += 1.0;
        let delta = x - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (x - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Least-squares line through the samples with times relative to
/// `intercept_time` (seconds): (slope, value at intercept_time).
pub fn linear_regression(ts: &[i64], vs: &[f64], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = vs[0];
    let mut const_y = true;
    for (i, (&t, &v)) in ts.iter().zip(vs).enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// The φ-quantile by linear interpolation between the closest ranks; NaN
/// values sort first like in Prometheus.
pub fn quantile(q: f64, mut v: Vec<f64>) -> f64 {
    if v.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = v.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    v[lower as usize] * (1.0 - weight) + v[upper as usize] * weight
}

/// `histogram_quantile` over classic `le` buckets, per step and per group
/// of series that differ only in `le` (and the metric name).
fn histogram_quantile(q: &[f64], v: &[Series], n: usize) -> Result<Vec<Series>, QueryError> {
    let mut groups: Vec<Arc<Labels>> = Vec::new();
    let mut index: rustc_hash::FxHashMap<Labels, usize> = Default::default();
    // Per input series: its group and upper bound (None: no usable `le`).
    let mut member: Vec<Option<(usize, f64)>> = Vec::with_capacity(v.len());
    for s in v {
        let Some(le) = s.labels.get("le").and_then(parse_go_float) else {
            member.push(None);
            continue;
        };
        let mut key = (*s.labels).clone();
        key.retain(|l| l.name != "le" && l.name != METRIC_NAME);
        let g = match index.get(&key) {
            Some(&g) => g,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Arc::new(key));
                groups.len() - 1
            }
        };
        member.push(Some((g, le)));
    }
    // Bucket lists per step and group, filled series by series.
    let mut buckets: Vec<Vec<Vec<(f64, f64)>>> = vec![Vec::new(); n];
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (s, m) in v.iter().zip(&member) {
        let Some((g, le)) = *m else { continue };
        for (k, &i) in s.steps.iter().enumerate() {
            let step = &mut buckets[i as usize];
            if step.len() <= g {
                step.resize(g + 1, Vec::new());
            }
            if step[g].is_empty() {
                order[i as usize].push(g);
            }
            step[g].push((le, s.values[k]));
        }
    }
    let mut out: Vec<Series> = groups.iter().map(|l| Series::new(l.clone())).collect();
    for i in 0..n {
        for &g in &order[i] {
            let b = std::mem::take(&mut buckets[i][g]);
            out[g].push(i as u32, bucket_quantile(q[i], b));
        }
    }
    let out: Vec<Series> = out.into_iter().filter(|s| !s.is_empty()).collect();
    Ok(out)
}

/// Parses a float like Go's `strconv.ParseFloat` for the forms `le` labels use.
fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    match b.last() {
        Some(l) if l.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Buckets with the same bound count together.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, count) in b {
        match c.last_mut() {
            Some(l) if l.0 == le => l.1 += count,
            _ => c.push((le, count)),
        }
    }
    // Counts must not decrease with the bound (scrapes are not atomic).
    let mut max = f64::NEG_INFINITY;
    for x in &mut c {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let observations = c[c.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if b == c.len() - 1 {
        return c[c.len() - 2].0;
    }
    if b == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let (mut start, end, mut count) = (0.0, c[b].0, c[b].1);
    if b > 0 {
        start = c[b - 1].0;
        count -= c[b - 1].1;
        rank -= c[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // Samples every 10 s from 5 s to 55 s in a 60 s window: extrapolated
        // by half a gap... no: 5 s < 1.1 × 10 s, so to both edges.
        let ts: Vec<i64> = (0..6).map(|i| 5_000 + i * 10_000).collect();
        let vs: Vec<f64> = (0..6).map(|i| 100.0 + 10.0 * i as f64).collect();
        let inc = extrapolated_rate(&ts, &vs, 0, 60_000, 60_000, Counter::NoResets, false).unwrap();
        assert!((inc - 60.0).abs() < 1e-9, "{inc}");
        // A reset adds the value before it.
        let vs2 = [5.0, 10.0, 2.0, 4.0];
        let ts2 = [10_000, 20_000, 30_000, 40_000];
        let inc = extrapolated_rate(&ts2, &vs2, 0, 50_000, 50_000, Counter::Resets, false).unwrap();
        // raw increase 4 - 5 + 10 = 9 over 30 s; start clamped at zero point
        // (30 × 5/9 = 16.7 s > 10 s, so 10 s) → 9 × 50/30.
        assert!((inc - 15.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn quantiles_and_buckets() {
        assert_eq!(quantile(0.5, vec![1.0, 3.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, vec![1.0, 2.0, 3.0, 4.0, 5.0]), 2.0);
        let b = vec![(0.1, 10.0), (0.5, 20.0), (1.0, 30.0), (f64::INFINITY, 40.0)];
        assert!((bucket_quantile(0.5, b.clone()) - 0.5).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, b), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 3.0)]).is_nan());
    }

    #[test]
    fn go_min_max() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert_eq!(go_min(2.0, 3.0), 2.0);
    }

    #[test]
    fn windows_are_left_open() {
        let ts = [10, 20, 30, 40];
        let mut got = Vec::new();
        for_each_window(&ts, &[20, 30, 45], 10, |i, lo, hi| got.push((i, lo, hi)));
        // (10, 20] holds 20 only; (20, 30] holds 30; (35, 45] holds 40.
        assert_eq!(got, vec![(0, 1, 2), (1, 2, 3), (2, 3, 4)]);
    }
}
