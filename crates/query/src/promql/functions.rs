//! PromQL functions: the table of every function perch implements (its
//! parameters, its kind and the code behind it), the dispatch of a call
//! through that table, and the functions that are not range-vector ones:
//! per-sample maths and dates, `absent`, `scalar`, `sort`, `label_*`,
//! classic-bucket `histogram_quantile`. Which functions keep the metric name
//! follows Prometheus (`last_over_time`, `label_*`, `sort*` keep it).

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, Timelike};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr};

use super::eval::{merge_same_labels, Evaluator};
use super::numeric::{go_max, go_min};
use super::range_functions::{for_each_window, range_function, RangeFn};
use super::rollup;
use super::value::{drop_name, Grid, RangeArg, Series, Val};
use crate::QueryError;
use base::labels::{compile_anchored, is_valid_label_name, METRIC_NAME};
use store::Labels;

/// The type of one parameter, as Prometheus' signature of the function
/// gives it. Each argument is evaluated to its parameter's type before the
/// function runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Param {
    Vector,
    Scalar,
    Range,
    /// A string literal.
    String,
    /// An instant vector whose samples carry their timestamps as values
    /// (`timestamp`): a plain selector keeps each sample's own time, any
    /// other expression gets the step's time.
    Timestamps,
}

/// How many arguments a call takes for the parameters listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arity {
    /// One per parameter.
    Exact,
    /// The last parameter may be left out.
    LastOptional,
    /// The last parameter may be left out or repeated any number of times.
    LastRepeated,
}

/// How a function computes its answer.
#[derive(Clone, Copy)]
enum Kind {
    /// From a range vector, one value per series and window (`rate`,
    /// `*_over_time`): the shared window loop, or rollup buckets where they
    /// answer exactly.
    Range(RangeFn),
    /// From an instant vector, each sample on its own (`abs`, `hour`),
    /// dropping the metric name. Without an argument (the date functions),
    /// from each step's time.
    Instant(fn(f64) -> f64),
    /// Its own code over the evaluated arguments: functions that look across
    /// series or steps (`absent`, `scalar`, `sort`, `histogram_quantile`),
    /// rewrite labels (`label_*`), take per-step scalar parameters (`round`,
    /// `clamp*`) or no vector at all (`time`, `pi`, `vector`).
    Custom(CustomFn),
}

type CustomFn = fn(&mut Evaluator<'_>, Args<'_>, Grid) -> Result<Val, QueryError>;

struct Function {
    name: &'static str,
    params: &'static [Param],
    arity: Arity,
    kind: Kind,
}

const fn range(name: &'static str, func: RangeFn) -> Function {
    Function {
        name,
        params: &[Param::Range],
        arity: Arity::Exact,
        kind: Kind::Range(func),
    }
}

const fn instant(name: &'static str, f: fn(f64) -> f64) -> Function {
    Function {
        name,
        params: &[Param::Vector],
        arity: Arity::Exact,
        kind: Kind::Instant(f),
    }
}

const fn date(name: &'static str, f: fn(f64) -> f64) -> Function {
    Function {
        name,
        params: &[Param::Vector],
        arity: Arity::LastOptional,
        kind: Kind::Instant(f),
    }
}

const fn custom(
    name: &'static str,
    params: &'static [Param],
    arity: Arity,
    f: CustomFn,
) -> Function {
    Function {
        name,
        params,
        arity,
        kind: Kind::Custom(f),
    }
}

/// Every function perch implements. The parser knows more (native-histogram
/// functions, experimental ones); calling those is an error naming them.
static FUNCTIONS: &[Function] = &[
    range("rate", RangeFn::Rate),
    range("increase", RangeFn::Increase),
    range("delta", RangeFn::Delta),
    range("irate", RangeFn::Irate),
    range("idelta", RangeFn::Idelta),
    range("deriv", RangeFn::Deriv),
    range("resets", RangeFn::Resets),
    range("changes", RangeFn::Changes),
    range("avg_over_time", RangeFn::Avg),
    range("min_over_time", RangeFn::Min),
    range("max_over_time", RangeFn::Max),
    range("sum_over_time", RangeFn::Sum),
    range("count_over_time", RangeFn::Count),
    range("last_over_time", RangeFn::Last),
    range("present_over_time", RangeFn::Present),
    range("stddev_over_time", RangeFn::Stddev),
    range("stdvar_over_time", RangeFn::Stdvar),
    Function {
        name: "quantile_over_time",
        params: &[Param::Scalar, Param::Range],
        arity: Arity::Exact,
        kind: Kind::Range(RangeFn::Quantile),
    },
    Function {
        name: "predict_linear",
        params: &[Param::Range, Param::Scalar],
        arity: Arity::Exact,
        kind: Kind::Range(RangeFn::PredictLinear),
    },
    instant("abs", f64::abs),
    instant("ceil", f64::ceil),
    instant("floor", f64::floor),
    instant("exp", f64::exp),
    instant("sqrt", f64::sqrt),
    instant("ln", f64::ln),
    instant("log2", f64::log2),
    instant("log10", f64::log10),
    instant("sgn", sgn),
    instant("deg", f64::to_degrees),
    instant("rad", f64::to_radians),
    instant("acos", f64::acos),
    instant("acosh", f64::acosh),
    instant("asin", f64::asin),
    instant("asinh", f64::asinh),
    instant("atan", f64::atan),
    instant("atanh", f64::atanh),
    instant("cos", f64::cos),
    instant("cosh", f64::cosh),
    instant("sin", f64::sin),
    instant("sinh", f64::sinh),
    instant("tan", f64::tan),
    instant("tanh", f64::tanh),
    Function {
        name: "timestamp",
        params: &[Param::Timestamps],
        arity: Arity::Exact,
        kind: Kind::Instant(sample_time),
    },
    date("hour", hour),
    date("minute", minute),
    date("month", month),
    date("year", year),
    date("day_of_month", day_of_month),
    date("day_of_week", day_of_week),
    date("day_of_year", day_of_year),
    date("days_in_month", days_in_month),
    custom("absent", &[Param::Vector], Arity::Exact, absent),
    custom(
        "absent_over_time",
        &[Param::Range],
        Arity::Exact,
        absent_over_time,
    ),
    custom(
        "round",
        &[Param::Vector, Param::Scalar],
        Arity::LastOptional,
        round,
    ),
    custom(
        "clamp",
        &[Param::Vector, Param::Scalar, Param::Scalar],
        Arity::Exact,
        clamp,
    ),
    custom(
        "clamp_min",
        &[Param::Vector, Param::Scalar],
        Arity::Exact,
        clamp_min,
    ),
    custom(
        "clamp_max",
        &[Param::Vector, Param::Scalar],
        Arity::Exact,
        clamp_max,
    ),
    custom("time", &[], Arity::Exact, time),
    custom("pi", &[], Arity::Exact, pi),
    custom("vector", &[Param::Scalar], Arity::Exact, vector),
    custom("scalar", &[Param::Vector], Arity::Exact, scalar),
    custom("sort", &[Param::Vector], Arity::Exact, sort),
    custom("sort_desc", &[Param::Vector], Arity::Exact, sort_desc),
    custom(
        "label_replace",
        &[
            Param::Vector,
            Param::String,
            Param::String,
            Param::String,
            Param::String,
        ],
        Arity::Exact,
        label_replace,
    ),
    custom(
        "label_join",
        &[Param::Vector, Param::String, Param::String, Param::String],
        Arity::LastRepeated,
        label_join,
    ),
    custom(
        "histogram_quantile",
        &[Param::Scalar, Param::Vector],
        Arity::Exact,
        histogram_quantile,
    ),
];

/// Evaluates a function call over the grid.
pub fn call(ev: &mut Evaluator, c: &Call, grid: Grid) -> Result<Val, QueryError> {
    let name = c.func.name;
    let Some(f) = FUNCTIONS.iter().find(|f| f.name == name) else {
        return Err(QueryError::BadData(format!(
            "function {name}() is not supported by perch"
        )));
    };
    let exprs: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    if let (Kind::Range(func), [arg]) = (f.kind, exprs.as_slice()) {
        if let Expr::MatrixSelector(ms) = unwrap_parens(arg) {
            let range_ms = ms.range.as_millis() as i64;
            if let Some(out) = rollup::try_over_time(ev, func, &ms.vs, range_ms, grid)? {
                return Ok(Val::Vector(out));
            }
            if let Some(out) = rollup::try_instant_extreme(ev, func, &ms.vs, range_ms, grid)? {
                return Ok(Val::Vector(out));
            }
        }
    }
    let args = Args::evaluate(ev, f, exprs, grid)?;
    match f.kind {
        Kind::Range(func) => range_call(ev, func, args, grid),
        Kind::Instant(map) => instant_call(ev, map, args, grid),
        Kind::Custom(run) => run(ev, args, grid),
    }
}

/// One evaluated argument.
enum Arg {
    Vector(Vec<Series>),
    Scalar(Vec<f64>),
    Range(RangeArg),
    String(String),
}

/// A call's arguments, evaluated in order to their parameters' types and
/// taken in that order by the function.
struct Args<'e> {
    name: &'static str,
    exprs: Vec<&'e Expr>,
    values: std::vec::IntoIter<Arg>,
    /// Arguments taken so far, to name a missing one.
    taken: usize,
}

impl<'e> Args<'e> {
    fn evaluate(
        ev: &mut Evaluator,
        f: &Function,
        exprs: Vec<&'e Expr>,
        grid: Grid,
    ) -> Result<Args<'e>, QueryError> {
        let repeated = match f.arity {
            Arity::LastRepeated => f.params.last(),
            _ => None,
        };
        let mut values = Vec::with_capacity(exprs.len());
        for (i, &e) in exprs.iter().enumerate() {
            let Some(param) = f.params.get(i).or(repeated) else {
                break;
            };
            values.push(match param {
                Param::Vector => Arg::Vector(ev.eval_vector(e, grid)?),
                Param::Scalar => Arg::Scalar(ev.eval_scalar(e, grid)?),
                Param::Range => Arg::Range(ev.eval_range(e, grid)?),
                Param::String => Arg::String(string_arg(e)?),
                Param::Timestamps => Arg::Vector(sample_times(ev, e, grid)?),
            });
        }
        Ok(Args {
            name: f.name,
            exprs,
            values: values.into_iter(),
            taken: 0,
        })
    }

    fn next(&mut self) -> Option<Arg> {
        self.taken += 1;
        self.values.next()
    }

    fn missing(&self) -> QueryError {
        QueryError::BadData(format!(
            "missing argument {} of {}()",
            self.taken, self.name
        ))
    }

    fn vector(&mut self) -> Result<Vec<Series>, QueryError> {
        match self.next() {
            Some(Arg::Vector(v)) => Ok(v),
            _ => Err(self.missing()),
        }
    }

    fn scalar(&mut self) -> Result<Vec<f64>, QueryError> {
        match self.next() {
            Some(Arg::Scalar(v)) => Ok(v),
            _ => Err(self.missing()),
        }
    }

    fn range(&mut self) -> Result<RangeArg, QueryError> {
        match self.next() {
            Some(Arg::Range(r)) => Ok(r),
            _ => Err(self.missing()),
        }
    }

    fn string(&mut self) -> Result<String, QueryError> {
        match self.next() {
            Some(Arg::String(s)) => Ok(s),
            _ => Err(self.missing()),
        }
    }

    /// The next argument if the call has one left (an optional or repeated
    /// parameter).
    fn optional<T>(
        &mut self,
        take: fn(&mut Self) -> Result<T, QueryError>,
    ) -> Result<Option<T>, QueryError> {
        if self.values.as_slice().is_empty() {
            return Ok(None);
        }
        take(self).map(Some)
    }

    /// The expression of argument `i` (from 0), for functions that look at
    /// it rather than only at its value.
    fn expr(&self, i: usize) -> Result<&'e Expr, QueryError> {
        self.exprs.get(i).copied().ok_or_else(|| {
            QueryError::BadData(format!("missing argument {} of {}()", i + 1, self.name))
        })
    }
}

fn range_call(
    ev: &mut Evaluator,
    func: RangeFn,
    args: Args,
    grid: Grid,
) -> Result<Val, QueryError> {
    let name = args.name;
    // The range, and the scalar that quantile_over_time takes before it and
    // predict_linear after it.
    let (mut range, mut param) = (None, None);
    for a in args.values {
        match a {
            Arg::Range(r) => range = Some(r),
            Arg::Scalar(p) => param = Some(p),
            _ => {}
        }
    }
    let Some(r) = range else {
        return Err(QueryError::BadData(format!(
            "missing argument 1 of {name}()"
        )));
    };
    let out = range_function(ev, func, r, param.as_deref(), grid);
    if let Some(p) = &param {
        ev.release(p.len());
    }
    out.map(Val::Vector)
}

fn instant_call(
    ev: &mut Evaluator,
    f: fn(f64) -> f64,
    mut args: Args,
    grid: Grid,
) -> Result<Val, QueryError> {
    match args.optional(Args::vector)? {
        Some(v) => map_values(v, |_, x| Some(f(x))),
        None => {
            let n = grid.len();
            let mut s = Series::with_capacity(Arc::new(Labels::empty()), n);
            for (i, t) in grid.times().enumerate() {
                s.push(i as u32, f(t.div_euclid(1000) as f64));
            }
            ev.hold(n)?;
            Ok(Val::Vector(vec![s]))
        }
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

/// `timestamp()`'s argument: the samples with their times (seconds) as
/// values.
fn sample_times(ev: &mut Evaluator, e: &Expr, grid: Grid) -> Result<Vec<Series>, QueryError> {
    let a = unwrap_parens(e);
    if let Expr::VectorSelector(vs) = a {
        return ev.vector_selector(vs, grid, true);
    }
    let mut v = ev.eval_vector(a, grid)?;
    for s in &mut v {
        for (k, &i) in s.steps.iter().enumerate() {
            s.values[k] = grid.time(i as usize) as f64 / 1000.0;
        }
    }
    Ok(v)
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

fn sgn(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v
    }
}

/// `timestamp()` maps the times [`sample_times`] put in place of the values.
fn sample_time(t: f64) -> f64 {
    t
}

/// The UTC time of `v` seconds, as Go converts it: `int64(v)` truncates
/// toward zero.
fn utc(v: f64) -> Option<chrono::NaiveDateTime> {
    if !v.is_finite() {
        return None;
    }
    chrono::DateTime::from_timestamp(v.trunc() as i64, 0).map(|d| d.naive_utc())
}

fn hour(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.hour() as f64)
}

fn minute(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.minute() as f64)
}

fn month(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.month() as f64)
}

fn year(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.year() as f64)
}

fn day_of_month(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.day() as f64)
}

fn day_of_week(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.weekday().num_days_from_sunday() as f64)
}

fn day_of_year(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| d.ordinal() as f64)
}

fn days_in_month(v: f64) -> f64 {
    utc(v).map_or(f64::NAN, |d| {
        let (y, m) = (d.year(), d.month());
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        match (
            NaiveDate::from_ymd_opt(y, m, 1),
            NaiveDate::from_ymd_opt(ny, nm, 1),
        ) {
            (Some(a), Some(b)) => (b - a).num_days() as f64,
            _ => f64::NAN,
        }
    })
}

fn absent(ev: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let mut present = vec![false; grid.len()];
    for s in &v {
        for &i in &s.steps {
            present[i as usize] = true;
        }
    }
    ev.release(points(&v));
    let labels = absent_labels(args.expr(0)?);
    Ok(Val::Vector(absent_series(labels, &present, ev)?))
}

fn absent_over_time(ev: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    let r = args.range()?;
    let labels = absent_labels(args.expr(0)?);
    let mut present = vec![false; grid.len()];
    for s in &r.series {
        for_each_window(&s.ts, &r.refs, r.range_ms, |i, lo, hi| {
            if lo < hi {
                present[i] = true;
            }
        });
    }
    ev.release(r.points());
    Ok(Val::Vector(absent_series(labels, &present, ev)?))
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

fn round(_: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let to = match args.optional(Args::scalar)? {
        Some(to) => to,
        None => vec![1.0; grid.len()],
    };
    map_values(v, |i, x| {
        // Prometheus rounds half up via the inverse, for exactness with
        // fractional targets like 0.1.
        let inv = 1.0 / to[i];
        Some((x * inv + 0.5).floor() / inv)
    })
}

fn clamp(_: &mut Evaluator, mut args: Args, _: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let lo = args.scalar()?;
    let hi = args.scalar()?;
    map_values(v, |i, x| {
        // An empty interval returns nothing, like Prometheus.
        if hi[i] < lo[i] {
            None
        } else {
            Some(go_max(lo[i], go_min(hi[i], x)))
        }
    })
}

fn clamp_min(_: &mut Evaluator, mut args: Args, _: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let lo = args.scalar()?;
    map_values(v, |i, x| Some(go_max(lo[i], x)))
}

fn clamp_max(_: &mut Evaluator, mut args: Args, _: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let hi = args.scalar()?;
    map_values(v, |i, x| Some(go_min(hi[i], x)))
}

fn time(ev: &mut Evaluator, _: Args, grid: Grid) -> Result<Val, QueryError> {
    ev.hold(grid.len())?;
    Ok(Val::Scalar(
        grid.times().map(|t| t as f64 / 1000.0).collect(),
    ))
}

fn pi(ev: &mut Evaluator, _: Args, grid: Grid) -> Result<Val, QueryError> {
    let n = grid.len();
    ev.hold(n)?;
    Ok(Val::Scalar(vec![std::f64::consts::PI; n]))
}

fn vector(_: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    let s = args.scalar()?;
    let mut out = Series::with_capacity(Arc::new(Labels::empty()), grid.len());
    for (i, v) in s.into_iter().enumerate() {
        out.push(i as u32, v);
    }
    Ok(Val::Vector(vec![out]))
}

fn scalar(ev: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let n = grid.len();
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

fn sort(_: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    sort_by_value(args.vector()?, grid, false)
}

fn sort_desc(_: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    sort_by_value(args.vector()?, grid, true)
}

fn sort_by_value(mut v: Vec<Series>, grid: Grid, desc: bool) -> Result<Val, QueryError> {
    // Order only means something for an instant query.
    if grid.len() == 1 {
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

fn label_replace(_: &mut Evaluator, mut args: Args, _: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let dst = args.string()?;
    let repl = args.string()?;
    let src = args.string()?;
    let re_s = args.string()?;
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

fn label_join(_: &mut Evaluator, mut args: Args, _: Grid) -> Result<Val, QueryError> {
    let v = args.vector()?;
    let dst = args.string()?;
    let sep = args.string()?;
    let mut srcs = Vec::new();
    while let Some(s) = args.optional(Args::string)? {
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

fn histogram_quantile(ev: &mut Evaluator, mut args: Args, grid: Grid) -> Result<Val, QueryError> {
    let q = args.scalar()?;
    let v = args.vector()?;
    let out = classic_histogram_quantile(&q, &v, grid.len());
    ev.release(points(&v));
    ev.hold(points(&out))?;
    Ok(Val::Vector(out))
}

/// `histogram_quantile` over classic `le` buckets, per step and per group
/// of series that differ only in `le` (and the metric name).
fn classic_histogram_quantile(q: &[f64], v: &[Series], n: usize) -> Vec<Series> {
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
    out.into_iter().filter(|s| !s.is_empty()).collect()
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
    use promql_parser::parser::value::ValueType;

    #[test]
    fn the_table_names_each_function_once() {
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    /// The table's parameters are the parser's signatures: the dispatcher
    /// evaluates arguments by them, so a wrong entry would evaluate an
    /// argument to the wrong type.
    #[test]
    fn the_table_matches_the_parsers_signatures() {
        for f in FUNCTIONS {
            let args: Vec<&str> = f
                .params
                .iter()
                .map(|p| match p {
                    Param::Vector | Param::Timestamps => "x",
                    Param::Scalar => "1",
                    Param::Range => "x[1m]",
                    Param::String => "\"a\"",
                })
                .collect();
            let q = format!("{}({})", f.name, args.join(", "));
            let expr = promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let Expr::Call(c) = expr else {
                panic!("{q} is not a call")
            };
            let ours: Vec<ValueType> = f
                .params
                .iter()
                .map(|p| match p {
                    Param::Vector | Param::Timestamps => ValueType::Vector,
                    Param::Scalar => ValueType::Scalar,
                    Param::Range => ValueType::Matrix,
                    Param::String => ValueType::String,
                })
                .collect();
            assert_eq!(ours, c.func.arg_types, "{}", f.name);
            let variadic = match f.arity {
                Arity::Exact => 0,
                Arity::LastOptional => 1,
                Arity::LastRepeated => -1,
            };
            assert_eq!(variadic, c.func.variadic, "{}", f.name);
        }
    }

    #[test]
    fn buckets_interpolate_within_the_bucket_of_the_rank() {
        let b = vec![(0.1, 10.0), (0.5, 20.0), (1.0, 30.0), (f64::INFINITY, 40.0)];
        assert!((bucket_quantile(0.5, b.clone()) - 0.5).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, b), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 3.0)]).is_nan());
    }
}
