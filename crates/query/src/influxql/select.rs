//! `SELECT`: the output columns (fields, tags, `func(field)`), the samples
//! read, rows filtered by the condition and grouped by tags, then written
//! raw or aggregated (per `GROUP BY time` bucket, with `fill`), ordered and
//! limited.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::condition::{condition_fields, holds, Regexes, Row};
use super::error::InfluxError;
use super::names::{measurement_series, tag_keys};
use super::parse::{Expr, Field, Fill, Select};
use super::response::{number, SeriesOut};
use super::time::time_bounds;
use super::Ctx;
use base::labels::METRIC_NAME;
use store::{Labels, SeriesId};

/// One output column of a SELECT.
enum Column {
    Field(String),
    Tag(String),
    /// `func(field)` (`func(*)` is expanded to one per field).
    Agg(String, String),
}

/// The aggregate functions answered.
pub(super) const FUNCTIONS: [&str; 7] = ["mean", "min", "max", "sum", "count", "first", "last"];

pub(super) fn select(ctx: &Ctx, s: &Select) -> Result<Vec<SeriesOut>, InfluxError> {
    let (lo, hi) = time_bounds(s.condition.as_ref(), ctx.now)?;
    let aggregate = s.fields.iter().any(|f| matches!(f.expr, Expr::Call(..)));
    if aggregate && s.fields.iter().any(|f| !matches!(f.expr, Expr::Call(..))) {
        return Err(InfluxError::MixedAggregate);
    }
    if s.group_time.is_some() && !aggregate {
        return Err(InfluxError::GroupByWithoutAggregate);
    }
    // Upper bound: now() for GROUP BY time, like InfluxDB; all data otherwise.
    let read_lo = lo.unwrap_or(i64::MIN);
    let read_hi = hi.unwrap_or(if s.group_time.is_some() {
        ctx.now
    } else {
        i64::MAX
    });
    let (name, series) = measurement_series(ctx, &s.measurement, read_lo, read_hi)?;
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let all_fields: BTreeSet<String> = series.iter().map(|x| x.2.clone()).collect();
    let all_tags: BTreeSet<String> = series.iter().flat_map(|x| tag_keys(&x.1)).collect();
    let columns = columns(s, &all_fields, &all_tags)?;
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
        .read(&ids, read_lo, read_hi, ctx.config.max_samples)?;
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
                if !holds(c, &row, ctx.now, &rx) {
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
            name: name.clone(),
            tags: (!key.is_empty()).then(|| key.into_iter().collect()),
            columns: cols,
            values,
        });
    }
    Ok(out)
}

/// The output columns after `time`, named as InfluxDB names them (`mean`,
/// `mean_temp` for `mean(*)`, `_1`, `_2` … on repeats).
fn columns(
    s: &Select,
    all_fields: &BTreeSet<String>,
    all_tags: &BTreeSet<String>,
) -> Result<Vec<(String, Column)>, InfluxError> {
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
                    return Err(InfluxError::UnsupportedFunction(f.clone()));
                }
                match args.as_slice() {
                    [Expr::Ident(field)] => push_col(
                        &mut columns,
                        alias.clone().unwrap_or_else(|| f.clone()),
                        Column::Agg(f.clone(), field.clone()),
                    ),
                    [Expr::Wildcard] => {
                        for field in all_fields {
                            push_col(
                                &mut columns,
                                format!("{f}_{field}"),
                                Column::Agg(f.clone(), field.clone()),
                            );
                        }
                    }
                    _ => return Err(InfluxError::FunctionArguments(f.clone())),
                }
            }
            other => return Err(InfluxError::UnsupportedExpression(other.clone())),
        }
    }
    Ok(columns)
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
) -> Result<Vec<Vec<Value>>, InfluxError> {
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
        return Err(InfluxError::FillLinear);
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
        return Err(InfluxError::TooManyBuckets {
            every_ms: every,
            buckets: n,
            limit: ctx.config.max_points_per_series,
        });
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
