//! InfluxQL, read-only, over the series line protocol writes: measurement
//! `m` with field `f` is the series `m_f` (field `value` is `m` itself), tags
//! are labels. Answers in InfluxDB 1.x's JSON shape
//! (`results[].series[].{name,tags,columns,values}`).
//!
//! Reads raw samples only (rollup buckets are left-open, InfluxQL intervals
//! right-open, so they are not interchangeable), within `query.max_samples`
//! and `query.timeout`. Measurement and field names are recovered from metric
//! names, which is ambiguous where one measurement's name plus `_` starts
//! another's; `docs/query.md` says what that means.

pub mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;
use serde_json::{json, Value};

use parse::{Expr, Field, Fill, KeySelector, Select, Statement};

use super::QueryError;
use base::labels::{MatchOp, Matcher, METRIC_NAME};
use config::QueryConfig;
use store::{Labels, SeriesId, Storage};

/// How to write times: RFC 3339 strings, or integers in a unit (`epoch=`).
#[derive(Clone, Copy, Debug)]
pub enum Epoch {
    Rfc3339,
    /// Milliseconds are divided by this (or multiplied for finer units).
    Unit {
        mul: i64,
        div: i64,
    },
}

impl Epoch {
    pub fn parse(s: Option<&str>) -> Result<Epoch, String> {
        Ok(match s.unwrap_or("") {
            "" => Epoch::Rfc3339,
            "ns" | "n" => Epoch::Unit {
                mul: 1_000_000,
                div: 1,
            },
            "u" | "µ" | "us" => Epoch::Unit { mul: 1_000, div: 1 },
            "ms" => Epoch::Unit { mul: 1, div: 1 },
            "s" => Epoch::Unit { mul: 1, div: 1_000 },
            "m" => Epoch::Unit {
                mul: 1,
                div: 60_000,
            },
            "h" => Epoch::Unit {
                mul: 1,
                div: 3_600_000,
            },
            other => return Err(format!("invalid epoch {other:?}: use h, m, s, ms, u or ns")),
        })
    }

    fn time(&self, ms: i64) -> Value {
        match *self {
            Epoch::Rfc3339 => Value::String(rfc3339(ms)),
            Epoch::Unit { mul, div } => json!(ms.saturating_mul(mul) / div),
        }
    }
}

/// RFC 3339 with as many fraction digits as needed, like Go's RFC3339Nano.
pub fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => ms.to_string(),
    }
}

/// A sample value as JSON: integers without a fraction (as InfluxDB prints
/// integral floats), NaN and infinities as null.
fn number(v: f64) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return json!(v as i64);
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// The answer to a query, fields in InfluxDB's order.
#[derive(Debug, Serialize)]
pub struct Response {
    pub results: Vec<StatementResult>,
}

#[derive(Debug, Serialize)]
pub struct StatementResult {
    pub statement_id: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<SeriesOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SeriesOut {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Value>>,
}

fn series_out(name: &str, columns: &[&str], values: Vec<Vec<Value>>) -> SeriesOut {
    SeriesOut {
        name: name.to_string(),
        tags: None,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        values,
    }
}

struct Ctx<'a> {
    storage: &'a Storage,
    config: &'a QueryConfig,
    now: i64,
    epoch: Epoch,
    deadline: Instant,
    timeout: Duration,
}

impl Ctx<'_> {
    fn check_deadline(&self) -> Result<(), String> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout(self.timeout).to_string());
        }
        Ok(())
    }
}

/// Runs `q` (one or more statements). A statement that fails reports its
/// error in its own result, as InfluxDB does; a query that does not parse is
/// an `Err` (HTTP 400).
pub fn execute(
    storage: &Storage,
    config: &QueryConfig,
    q: &str,
    epoch: Epoch,
) -> Result<Response, String> {
    let statements = parse::parse(q).map_err(|e| format!("error parsing query: {e}"))?;
    let ctx = Ctx {
        storage,
        config,
        now: storage.now_ms(),
        epoch,
        deadline: Instant::now() + config.timeout.0,
        timeout: config.timeout.0,
    };
    let mut results = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        let span = tracing::info_span!("influxql", statement = i);
        let _g = span.enter();
        let mut r = StatementResult {
            statement_id: i,
            series: None,
            error: None,
        };
        match run(&ctx, st) {
            Ok(series) if series.is_empty() => {}
            Ok(series) => r.series = Some(series),
            Err(e) => r.error = Some(e),
        }
        results.push(r);
    }
    Ok(Response { results })
}

fn run(ctx: &Ctx, st: &Statement) -> Result<Vec<SeriesOut>, String> {
    match st {
        Statement::Select(s) => select(ctx, s),
        Statement::ShowMeasurements { condition, limit } => {
            let rx = Regexes::compile(condition.as_ref())?;
            let all = all_series(ctx)?;
            let mut names: BTreeSet<String> = BTreeSet::new();
            let measurements = measurements_of(&all);
            for (labels, m) in all.iter().zip(&measurements) {
                if let Some(c) = condition {
                    let row = Row::tags_only(labels);
                    if !truthy(&eval(c, &row, ctx, &rx)) {
                        continue;
                    }
                }
                names.insert(m.clone());
            }
            let values: Vec<Vec<Value>> = names
                .into_iter()
                .take(limit.unwrap_or(usize::MAX))
                .map(|n| vec![json!(n)])
                .collect();
            if values.is_empty() {
                return Ok(Vec::new());
            }
            Ok(vec![series_out("measurements", &["name"], values)])
        }
        Statement::ShowDatabases => Ok(vec![series_out(
            "databases",
            &["name"],
            vec![vec![json!("perch")]],
        )]),
        Statement::ShowTagKeys { from } => {
            let per = per_measurement(ctx, from.as_deref())?;
            Ok(per
                .into_iter()
                .filter_map(|(m, series)| {
                    let keys: BTreeSet<String> =
                        series.iter().flat_map(|(l, _)| tag_keys(l)).collect();
                    (!keys.is_empty()).then(|| {
                        series_out(
                            &m,
                            &["tagKey"],
                            keys.into_iter().map(|k| vec![json!(k)]).collect(),
                        )
                    })
                })
                .collect())
        }
        Statement::ShowFieldKeys { from } => {
            let per = per_measurement(ctx, from.as_deref())?;
            Ok(per
                .into_iter()
                .filter_map(|(m, series)| {
                    let fields: BTreeSet<String> = series.iter().map(|(_, f)| f.clone()).collect();
                    (!fields.is_empty()).then(|| {
                        series_out(
                            &m,
                            &["fieldKey", "fieldType"],
                            fields
                                .into_iter()
                                .map(|f| vec![json!(f), json!("float")])
                                .collect(),
                        )
                    })
                })
                .collect())
        }
        Statement::ShowTagValues {
            from,
            key,
            condition,
        } => {
            let key_re = match key {
                KeySelector::Regex(r) | KeySelector::NotRegex(r) => Some(compile(r)?),
                _ => None,
            };
            let wanted = |k: &str| match key {
                KeySelector::Eq(x) => k == x,
                KeySelector::Neq(x) => k != x,
                KeySelector::In(xs) => xs.iter().any(|x| x == k),
                KeySelector::Regex(_) => key_re.as_ref().is_some_and(|r| r.is_match(k)),
                KeySelector::NotRegex(_) => !key_re.as_ref().is_some_and(|r| r.is_match(k)),
            };
            let rx = Regexes::compile(condition.as_ref())?;
            let per = per_measurement(ctx, from.as_deref())?;
            let mut out = Vec::new();
            for (m, series) in per {
                let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
                for (labels, _) in &series {
                    if let Some(c) = condition {
                        if !truthy(&eval(c, &Row::tags_only(labels), ctx, &rx)) {
                            continue;
                        }
                    }
                    for l in labels.iter() {
                        if l.name != METRIC_NAME && wanted(&l.name) {
                            pairs.insert((l.name.clone(), l.value.clone()));
                        }
                    }
                }
                if !pairs.is_empty() {
                    out.push(series_out(
                        &m,
                        &["key", "value"],
                        pairs
                            .into_iter()
                            .map(|(k, v)| vec![json!(k), json!(v)])
                            .collect(),
                    ));
                }
            }
            Ok(out)
        }
    }
}

fn tag_keys(l: &Labels) -> Vec<String> {
    l.iter()
        .filter(|x| x.name != METRIC_NAME)
        .map(|x| x.name.clone())
        .collect()
}

fn all_series(ctx: &Ctx) -> Result<Vec<Arc<Labels>>, String> {
    let m = Matcher {
        name: METRIC_NAME.into(),
        value: ".+".into(),
        op: MatchOp::Regex(Regex::new("^.+$").map_err(|e| e.to_string())?),
    };
    let mut v: Vec<Arc<Labels>> = ctx
        .storage
        .select(&[m], i64::MIN, i64::MAX)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    v.sort();
    Ok(v)
}

/// The measurement each series most likely came from. Series written by one
/// line share every label but the name; the longest common `_`-bounded
/// prefix of their names is the measurement. A series alone in its group is
/// its own measurement unless a measurement found so names its prefix.
fn measurements_of(series: &[Arc<Labels>]) -> Vec<String> {
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<usize>> = BTreeMap::new();
    for (i, l) in series.iter().enumerate() {
        let key: Vec<(String, String)> = l
            .iter()
            .filter(|x| x.name != METRIC_NAME)
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        groups.entry(key).or_default().push(i);
    }
    let name = |i: usize| series[i].metric_name().unwrap_or("").to_string();
    let mut out = vec![String::new(); series.len()];
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut singles = Vec::new();
    for members in groups.values() {
        let names: Vec<String> = members.iter().map(|&i| name(i)).collect();
        let prefix = common_measurement(&names);
        match prefix {
            Some(p) if names.len() > 1 => {
                for &i in members {
                    out[i] = p.clone();
                }
                known.insert(p);
            }
            _ => singles.extend(members.iter().copied()),
        }
    }
    for i in singles {
        let n = name(i);
        let m = known
            .iter()
            .filter(|k| n == **k || n.starts_with(&format!("{k}_")))
            .max_by_key(|k| k.len())
            .cloned();
        out[i] = m.unwrap_or(n);
    }
    out
}

/// The longest prefix `p` such that every name is `p` or starts with `p_`.
fn common_measurement(names: &[String]) -> Option<String> {
    let first = names.first()?;
    let mut candidates: Vec<&str> = vec![first.as_str()];
    for (i, c) in first.char_indices() {
        if c == '_' && i > 0 {
            candidates.push(&first[..i]);
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.len()));
    candidates.into_iter().find_map(|p| {
        names
            .iter()
            .all(|n| n == p || n.starts_with(&format!("{p}_")))
            .then(|| p.to_string())
    })
}

/// The series of measurement `m` (sanitized the way line protocol names
/// were) in `[lo, hi]`, with their field names.
fn measurement_series(
    ctx: &Ctx,
    m: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<(SeriesId, Arc<Labels>, String)>, String> {
    let m = base::names::sanitize_metric_name(m).into_owned();
    let re = format!("^{}(?:_.+)?$", regex::escape(&m));
    let matcher = Matcher {
        name: METRIC_NAME.into(),
        value: re.clone(),
        op: MatchOp::Regex(Regex::new(&re).map_err(|e| e.to_string())?),
    };
    let mut out: Vec<(SeriesId, Arc<Labels>, String)> = ctx
        .storage
        .select(&[matcher], lo, hi)
        .into_iter()
        .map(|(id, l)| {
            let name = l.metric_name().unwrap_or("");
            let field = if name == m {
                "value".to_string()
            } else {
                name[m.len() + 1..].to_string()
            };
            (id, l, field)
        })
        .collect();
    if out.len() > ctx.config.max_series {
        return Err(format!(
            "measurement {m} has {} series, more than query.max_series ({})",
            out.len(),
            ctx.config.max_series
        ));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Series per measurement: `FROM m`, or every measurement.
/// Series (labels, field name) per measurement.
type ByMeasurement = BTreeMap<String, Vec<(Arc<Labels>, String)>>;

fn per_measurement(ctx: &Ctx, from: Option<&str>) -> Result<ByMeasurement, String> {
    let mut out: BTreeMap<String, Vec<(Arc<Labels>, String)>> = BTreeMap::new();
    match from {
        Some(m) => {
            let s = measurement_series(ctx, m, i64::MIN, i64::MAX)?;
            if !s.is_empty() {
                out.insert(
                    base::names::sanitize_metric_name(m).into_owned(),
                    s.into_iter().map(|(_, l, f)| (l, f)).collect(),
                );
            }
        }
        None => {
            let all = all_series(ctx)?;
            let ms = measurements_of(&all);
            for (l, m) in all.into_iter().zip(ms) {
                let name = l.metric_name().unwrap_or("").to_string();
                let field = if name == m {
                    "value".to_string()
                } else {
                    name.get(m.len() + 1..).unwrap_or("value").to_string()
                };
                out.entry(m).or_default().push((l, field));
            }
        }
    }
    Ok(out)
}

fn compile(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression /{pattern}/: {e}"))
}

/// Compiled regexes of a condition, by pattern.
struct Regexes(BTreeMap<String, Regex>);

impl Regexes {
    fn compile(e: Option<&Expr>) -> Result<Regexes, String> {
        fn walk(e: &Expr, out: &mut BTreeMap<String, Regex>) -> Result<(), String> {
            match e {
                Expr::Regex(r) if !out.contains_key(r) => {
                    out.insert(r.clone(), compile(r)?);
                }
                Expr::Binary(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                    walk(a, out)?;
                    walk(b, out)?;
                }
                Expr::Call(_, args) => {
                    for a in args {
                        walk(a, out)?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let mut m = BTreeMap::new();
        if let Some(e) = e {
            walk(e, &mut m)?;
        }
        Ok(Regexes(m))
    }
}

/// What a condition sees: the time, the series' tags, the row's fields.
struct Row<'a> {
    time: i64,
    tags: &'a Labels,
    fields: &'a [(String, Option<f64>)],
}

impl<'a> Row<'a> {
    fn tags_only(tags: &'a Labels) -> Row<'a> {
        Row {
            time: 0,
            tags,
            fields: &[],
        }
    }
}

#[derive(Clone, Debug)]
enum V {
    Num(f64),
    Str(String),
    Bool(bool),
    Regex(String),
    Null,
}

fn truthy(v: &V) -> bool {
    matches!(v, V::Bool(true))
}

/// A time operand in ms: a timestamp string, a number of nanoseconds, now()
/// and durations.
fn time_operand(e: &Expr, now: i64) -> Option<i64> {
    match e {
        Expr::Now => Some(now),
        Expr::Number(ns) => Some((*ns / 1e6) as i64),
        Expr::Duration(ns) => Some(ns / 1_000_000),
        Expr::Str(s) => parse_time_literal(s),
        Expr::Binary(a, op @ ("+" | "-"), b) => {
            let a = time_operand(a, now)?;
            let b = match &**b {
                Expr::Duration(ns) => ns / 1_000_000,
                other => time_operand(other, now)?,
            };
            Some(if *op == "+" {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            })
        }
        _ => None,
    }
}

fn parse_time_literal(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

fn is_time(e: &Expr) -> bool {
    matches!(e, Expr::Ident(n) if n.eq_ignore_ascii_case("time"))
}

fn eval(e: &Expr, row: &Row, ctx: &Ctx, rx: &Regexes) -> V {
    match e {
        Expr::And(a, b) => {
            V::Bool(truthy(&eval(a, row, ctx, rx)) && truthy(&eval(b, row, ctx, rx)))
        }
        Expr::Or(a, b) => V::Bool(truthy(&eval(a, row, ctx, rx)) || truthy(&eval(b, row, ctx, rx))),
        Expr::Binary(a, op, b)
            if matches!(*op, "=" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~") =>
        {
            // Time comparisons convert the other side to a time.
            if is_time(a) || is_time(b) {
                let (t, other, flip) = if is_time(a) {
                    (row.time, b, false)
                } else {
                    (row.time, a, true)
                };
                let Some(x) = time_operand(other, ctx.now) else {
                    return V::Bool(false);
                };
                let (l, r) = if flip { (x, t) } else { (t, x) };
                return V::Bool(match *op {
                    "=" => l == r,
                    "!=" => l != r,
                    "<" => l < r,
                    "<=" => l <= r,
                    ">" => l > r,
                    ">=" => l >= r,
                    _ => false,
                });
            }
            let (l, r) = (eval(a, row, ctx, rx), eval(b, row, ctx, rx));
            V::Bool(match (&l, &r, *op) {
                (V::Str(s), V::Regex(p), "=~") => rx.0.get(p).is_some_and(|re| re.is_match(s)),
                (V::Str(s), V::Regex(p), "!~") => !rx.0.get(p).is_some_and(|re| re.is_match(s)),
                (V::Str(x), V::Str(y), op) => cmp(x.as_str().cmp(y.as_str()), op),
                (V::Num(x), V::Num(y), op) => match x.partial_cmp(y) {
                    Some(o) => cmp(o, op),
                    None => op == "!=",
                },
                _ => false,
            })
        }
        Expr::Binary(a, op, b) => match (eval(a, row, ctx, rx), eval(b, row, ctx, rx)) {
            (V::Num(x), V::Num(y)) => V::Num(match *op {
                "+" => x + y,
                "-" => x - y,
                _ => f64::NAN,
            }),
            _ => V::Null,
        },
        Expr::Ident(n) => {
            if n.eq_ignore_ascii_case("time") {
                return V::Num(row.time as f64);
            }
            if let Some((_, v)) = row.fields.iter().find(|(f, _)| f == n) {
                return v.map_or(V::Null, V::Num);
            }
            V::Str(row.tags.get(n).unwrap_or("").to_string())
        }
        Expr::Str(s) => V::Str(s.clone()),
        Expr::Number(n) => V::Num(*n),
        Expr::Duration(d) => V::Num(*d as f64),
        Expr::Regex(r) => V::Regex(r.clone()),
        Expr::Now => V::Num(ctx.now as f64),
        _ => V::Null,
    }
}

fn cmp(o: std::cmp::Ordering, op: &str) -> bool {
    use std::cmp::Ordering::*;
    match op {
        "=" => o == Equal,
        "!=" => o != Equal,
        "<" => o == Less,
        "<=" => o != Greater,
        ">" => o == Greater,
        ">=" => o != Less,
        _ => false,
    }
}

/// Time bounds `[lo, hi]` (ms) from the top-level `AND`ed time comparisons;
/// the rest of the condition is evaluated per row. Time inside `OR` is
/// refused rather than answered wrongly.
fn time_bounds(e: Option<&Expr>, now: i64) -> Result<(Option<i64>, Option<i64>), String> {
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    fn mentions_time(e: &Expr) -> bool {
        match e {
            Expr::Binary(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                mentions_time(a) || mentions_time(b)
            }
            e => is_time(e),
        }
    }
    fn walk(e: &Expr, now: i64, lo: &mut Option<i64>, hi: &mut Option<i64>) -> Result<(), String> {
        match e {
            Expr::And(a, b) => {
                walk(a, now, lo, hi)?;
                walk(b, now, lo, hi)
            }
            Expr::Or(a, b) if mentions_time(a) || mentions_time(b) => Err(
                "time conditions combined with OR are not supported; combine them with AND".into(),
            ),
            Expr::Binary(a, op, b) if is_time(a) || is_time(b) => {
                let (other, flip) = if is_time(a) { (b, false) } else { (a, true) };
                let x = time_operand(other, now)
                    .ok_or_else(|| format!("cannot compare time with {other:?}"))?;
                let op = if flip {
                    match *op {
                        "<" => ">",
                        "<=" => ">=",
                        ">" => "<",
                        ">=" => "<=",
                        o => o,
                    }
                } else {
                    op
                };
                let raise = |lo: &mut Option<i64>, v: i64| *lo = Some(lo.map_or(v, |l| l.max(v)));
                let lower = |hi: &mut Option<i64>, v: i64| *hi = Some(hi.map_or(v, |h| h.min(v)));
                match op {
                    ">" => raise(lo, x.saturating_add(1)),
                    ">=" => raise(lo, x),
                    "<" => lower(hi, x.saturating_sub(1)),
                    "<=" => lower(hi, x),
                    "=" => {
                        raise(lo, x);
                        lower(hi, x);
                    }
                    "!=" => {}
                    o => return Err(format!("operator {o} cannot compare time")),
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    if let Some(e) = e {
        walk(e, now, &mut lo, &mut hi)?;
    }
    Ok((lo, hi))
}

/// One output column of a SELECT.
enum Column {
    Field(String),
    Tag(String),
    /// `func(field)` (`func(*)` is expanded to one per field).
    Agg(String, String),
}

const FUNCTIONS: [&str; 7] = ["mean", "min", "max", "sum", "count", "first", "last"];

fn select(ctx: &Ctx, s: &Select) -> Result<Vec<SeriesOut>, String> {
    let (lo, hi) = time_bounds(s.condition.as_ref(), ctx.now)?;
    let aggregate = s.fields.iter().any(|f| matches!(f.expr, Expr::Call(..)));
    if aggregate && s.fields.iter().any(|f| !matches!(f.expr, Expr::Call(..))) {
        return Err("mixing aggregate and non-aggregate queries is not supported".into());
    }
    if s.group_time.is_some() && !aggregate {
        return Err("GROUP BY requires at least one aggregate function".into());
    }
    // Upper bound: now() for GROUP BY time, like InfluxDB; all data otherwise.
    let read_lo = lo.unwrap_or(i64::MIN);
    let read_hi = hi.unwrap_or(if s.group_time.is_some() {
        ctx.now
    } else {
        i64::MAX
    });
    let series = measurement_series(ctx, &s.measurement, read_lo, read_hi)?;
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let all_fields: BTreeSet<String> = series.iter().map(|x| x.2.clone()).collect();
    let all_tags: BTreeSet<String> = series.iter().flat_map(|x| tag_keys(&x.1)).collect();
    // Columns.
    let mut columns: Vec<(String, Column)> = Vec::new();
    let mut name_count: BTreeMap<String, usize> = BTreeMap::new();
    let mut push_col = |cols: &mut Vec<(String, Column)>, name: String, c: Column| {
        let n = name_count.entry(name.clone()).or_insert(0);
        let col = if *n == 0 {
            name.clone()
        } else {
            format!("{name}_{n}")
        };
        *n += 1;
        cols.push((col, c));
    };
    for Field { expr, alias } in &s.fields {
        match expr {
            Expr::Wildcard => {
                let mut names: Vec<(String, bool)> = all_fields
                    .iter()
                    .map(|f| (f.clone(), true))
                    .chain(
                        all_tags
                            .iter()
                            .filter(|t| !s.group_tags.contains(t))
                            .map(|t| (t.clone(), false)),
                    )
                    .collect();
                names.sort();
                for (n, is_field) in names {
                    let c = if is_field {
                        Column::Field(n.clone())
                    } else {
                        Column::Tag(n.clone())
                    };
                    push_col(&mut columns, n, c);
                }
            }
            Expr::Ident(n) => {
                let c = if all_fields.contains(n) || !all_tags.contains(n) {
                    Column::Field(n.clone())
                } else {
                    Column::Tag(n.clone())
                };
                push_col(&mut columns, alias.clone().unwrap_or_else(|| n.clone()), c);
            }
            Expr::Call(f, args) => {
                if !FUNCTIONS.contains(&f.as_str()) {
                    return Err(format!(
                        "function {f}() is not supported: use one of {}",
                        FUNCTIONS.join(", ")
                    ));
                }
                match args.as_slice() {
                    [Expr::Ident(field)] => push_col(
                        &mut columns,
                        alias.clone().unwrap_or_else(|| f.clone()),
                        Column::Agg(f.clone(), field.clone()),
                    ),
                    [Expr::Wildcard] => {
                        for field in &all_fields {
                            push_col(
                                &mut columns,
                                format!("{f}_{field}"),
                                Column::Agg(f.clone(), field.clone()),
                            );
                        }
                    }
                    _ => return Err(format!("{f}() takes one field name")),
                }
            }
            other => return Err(format!("unsupported expression in SELECT: {other:?}")),
        }
    }
    // Only the fields the query needs are read.
    let needed: BTreeSet<String> = columns
        .iter()
        .filter_map(|(_, c)| match c {
            Column::Field(f) | Column::Agg(_, f) => Some(f.clone()),
            Column::Tag(_) => None,
        })
        .chain(condition_fields(s.condition.as_ref(), &all_fields))
        .collect();
    let series: Vec<_> = series
        .into_iter()
        .filter(|x| needed.contains(&x.2))
        .collect();
    let ids: Vec<SeriesId> = series.iter().map(|x| x.0).collect();
    let data = ctx
        .storage
        .read(&ids, read_lo, read_hi, ctx.config.max_samples)
        .map_err(|e| match e {
            store::StorageError::TooManySamples { limit } => format!(
                "query would read more than {limit} samples (query.max_samples); add a time range such as WHERE time > now() - 1h"
            ),
            e => e.to_string(),
        })?;
    ctx.check_deadline()?;
    let field_of: BTreeMap<SeriesId, String> = series.iter().map(|x| (x.0, x.2.clone())).collect();
    // Tag sets, each with its rows (time → field values).
    let mut tagsets: BTreeMap<Labels, BTreeMap<i64, BTreeMap<String, f64>>> = BTreeMap::new();
    for d in &data {
        let tags = d.labels.without(METRIC_NAME);
        let field = field_of.get(&d.id).cloned().unwrap_or_default();
        let rows = tagsets.entry(tags).or_default();
        for (&t, &v) in d.ts.iter().zip(&d.values) {
            rows.entry(t).or_default().insert(field.clone(), v);
        }
    }
    drop(data);
    let rx = Regexes::compile(s.condition.as_ref())?;
    let field_list: Vec<String> = needed.iter().cloned().collect();
    // Group tag sets into output series.
    let group_tags: Vec<String> = if s.group_tags.iter().any(|t| t == "*") {
        all_tags.iter().cloned().collect()
    } else {
        s.group_tags.clone()
    };
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<Member>> = BTreeMap::new();
    for (tags, rows) in &tagsets {
        ctx.check_deadline()?;
        let key: Vec<(String, String)> = group_tags
            .iter()
            .map(|t| (t.clone(), tags.get(t).unwrap_or("").to_string()))
            .collect();
        let mut kept = Vec::new();
        for (&t, vals) in rows {
            let fields: Vec<(String, Option<f64>)> = field_list
                .iter()
                .map(|f| (f.clone(), vals.get(f).copied()))
                .collect();
            let row = Row {
                time: t,
                tags,
                fields: &fields,
            };
            if let Some(c) = &s.condition {
                if !truthy(&eval(c, &row, ctx, &rx)) {
                    continue;
                }
            }
            kept.push((t, fields));
        }
        groups.entry(key).or_default().push((tags, kept));
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let values = if aggregate {
            aggregate_rows(ctx, s, &columns, &members, lo, hi)?
        } else {
            raw_rows(ctx, s, &columns, &members)
        };
        if values.is_empty() {
            continue;
        }
        let mut cols = vec!["time".to_string()];
        cols.extend(columns.iter().map(|(n, _)| n.clone()));
        out.push(SeriesOut {
            name: base::names::sanitize_metric_name(&s.measurement).into_owned(),
            tags: (!key.is_empty()).then(|| key.into_iter().collect()),
            columns: cols,
            values,
        });
    }
    Ok(out)
}

fn condition_fields(e: Option<&Expr>, fields: &BTreeSet<String>) -> Vec<String> {
    fn walk(e: &Expr, fields: &BTreeSet<String>, out: &mut Vec<String>) {
        match e {
            Expr::Ident(n) if fields.contains(n) => out.push(n.clone()),
            Expr::Binary(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                walk(a, fields, out);
                walk(b, fields, out);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(e) = e {
        walk(e, fields, &mut out);
    }
    out
}

/// One row: time and the values of the fields read.
type RowValues = (i64, Vec<(String, Option<f64>)>);
/// A tag set of an output series, with its rows.
type Member<'a> = (&'a Labels, Vec<RowValues>);
type Members<'a> = [Member<'a>];

fn raw_rows(
    ctx: &Ctx,
    s: &Select,
    columns: &[(String, Column)],
    members: &Members,
) -> Vec<Vec<Value>> {
    let mut rows: Vec<(i64, usize, Vec<Value>)> = Vec::new();
    for (mi, (tags, kept)) in members.iter().enumerate() {
        for (t, fields) in kept {
            let mut any_field = false;
            let mut vals = vec![ctx.epoch.time(*t)];
            for (_, c) in columns {
                match c {
                    Column::Field(f) => {
                        let v = fields.iter().find(|(n, _)| n == f).and_then(|(_, v)| *v);
                        any_field |= v.is_some();
                        vals.push(v.map_or(Value::Null, number));
                    }
                    Column::Tag(tg) => vals.push(tags.get(tg).map_or(Value::Null, |v| json!(v))),
                    Column::Agg(..) => vals.push(Value::Null),
                }
            }
            if any_field {
                rows.push((*t, mi, vals));
            }
        }
    }
    rows.sort_by_key(|r| (r.0, r.1));
    if s.descending {
        rows.reverse();
    }
    rows.into_iter()
        .skip(s.offset)
        .take(s.limit.unwrap_or(usize::MAX))
        .map(|r| r.2)
        .collect()
}

/// One aggregate over the points of a bucket: (time, value) of a selector's
/// chosen point, or the computed value.
fn aggregate(f: &str, pts: &[(i64, f64)]) -> Option<(Option<i64>, f64)> {
    if pts.is_empty() {
        return None;
    }
    Some(match f {
        "count" => (None, pts.len() as f64),
        "sum" => (None, pts.iter().map(|p| p.1).sum()),
        "mean" => (
            None,
            pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64,
        ),
        "min" => {
            let p = pts
                .iter()
                .fold(pts[0], |m, &p| if p.1 < m.1 { p } else { m });
            (Some(p.0), p.1)
        }
        "max" => {
            let p = pts
                .iter()
                .fold(pts[0], |m, &p| if p.1 > m.1 { p } else { m });
            (Some(p.0), p.1)
        }
        "first" => {
            let p = pts
                .iter()
                .fold(pts[0], |m, &p| if p.0 < m.0 { p } else { m });
            (Some(p.0), p.1)
        }
        _ => {
            let p = pts
                .iter()
                .fold(pts[0], |m, &p| if p.0 >= m.0 { p } else { m });
            (Some(p.0), p.1)
        }
    })
}

fn aggregate_rows(
    ctx: &Ctx,
    s: &Select,
    columns: &[(String, Column)],
    members: &Members,
    lo: Option<i64>,
    hi: Option<i64>,
) -> Result<Vec<Vec<Value>>, String> {
    // Points per field of the whole group, NaN left out.
    let mut points: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for (_, kept) in members {
        for (t, fields) in kept {
            for (f, v) in fields {
                if let Some(v) = v.filter(|v| !v.is_nan()) {
                    points.entry(f.as_str()).or_default().push((*t, v));
                }
            }
        }
    }
    for p in points.values_mut() {
        p.sort_by_key(|x| x.0);
    }
    let aggs: Vec<(&str, &str)> = columns
        .iter()
        .filter_map(|(_, c)| match c {
            Column::Agg(f, field) => Some((f.as_str(), field.as_str())),
            _ => None,
        })
        .collect();
    let empty = Vec::new();
    let Some((every, offset)) = s.group_time else {
        // One bucket over the whole range.
        let mut vals = Vec::new();
        let mut time = lo.unwrap_or(0);
        let mut any = false;
        for &(f, field) in &aggs {
            let pts = points.get(field).unwrap_or(&empty);
            match aggregate(f, pts) {
                Some((t, v)) => {
                    any = true;
                    if aggs.len() == 1 {
                        if let Some(t) = t {
                            time = t;
                        }
                    }
                    vals.push(number(v));
                }
                None => vals.push(Value::Null),
            }
        }
        if !any {
            return Ok(Vec::new());
        }
        let mut row = vec![ctx.epoch.time(time)];
        row.extend(vals);
        return Ok(vec![row]);
    };
    if s.fill == Fill::Linear {
        return Err("fill(linear) is not supported; use null, none, previous or a number".into());
    }
    let every = (every / 1_000_000).max(1);
    let offset = offset / 1_000_000;
    let first_point = points.values().filter_map(|p| p.first().map(|x| x.0)).min();
    let Some(start) = lo.or(first_point) else {
        return Ok(Vec::new());
    };
    let end = hi.unwrap_or(ctx.now).max(start);
    let bucket = |t: i64| (t - offset).div_euclid(every) * every + offset;
    let (b0, b1) = (bucket(start), bucket(end));
    let n = (b1 - b0) / every + 1;
    if n > ctx.config.max_points_per_series as i64 {
        return Err(format!(
            "GROUP BY time({}ms) over this range makes {n} buckets, more than {} (query.max_points_per_series); use a larger interval or a shorter range",
            every, ctx.config.max_points_per_series
        ));
    }
    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut cursors = vec![0usize; aggs.len()];
    let mut previous: Vec<Option<f64>> = vec![None; aggs.len()];
    for k in 0..n {
        if k % 1024 == 0 {
            ctx.check_deadline()?;
        }
        let b = b0 + k * every;
        let mut row = vec![ctx.epoch.time(b)];
        let mut any = false;
        let mut cells = Vec::with_capacity(aggs.len());
        for (ai, &(f, field)) in aggs.iter().enumerate() {
            let pts = points.get(field).unwrap_or(&empty);
            // Points of [b, b + every) clipped to the query range.
            let mut a = cursors[ai];
            while a < pts.len() && pts[a].0 < b.max(start) {
                a += 1;
            }
            let mut z = a;
            while z < pts.len() && pts[z].0 < b + every && pts[z].0 <= end {
                z += 1;
            }
            cursors[ai] = z;
            let v = aggregate(f, &pts[a..z]).map(|x| x.1);
            any |= v.is_some();
            cells.push(v);
        }
        if !any && s.fill == Fill::None {
            continue;
        }
        for (ai, v) in cells.into_iter().enumerate() {
            let filled = match (v, &s.fill) {
                (Some(v), _) => Some(v),
                (None, Fill::Value(x)) => Some(*x),
                (None, Fill::Previous) => previous[ai],
                _ => None,
            };
            if v.is_some() {
                previous[ai] = v;
            }
            row.push(filled.map_or(Value::Null, number));
        }
        rows.push(row);
    }
    if rows.iter().all(|r| r[1..].iter().all(Value::is_null)) {
        return Ok(Vec::new());
    }
    if s.descending {
        rows.reverse();
    }
    Ok(rows
        .into_iter()
        .skip(s.offset)
        .take(s.limit.unwrap_or(usize::MAX))
        .collect())
}
