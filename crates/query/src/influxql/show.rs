//! The `SHOW` statements: measurements, databases (perch has one), tag
//! keys, field keys (all floats) and tag values, from the series' labels.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::condition::{compile, holds, Regexes, Row};
use super::error::InfluxError;
use super::names::{self, all_series, measurements_of, per_measurement};
use super::parse::{Expr, KeySelector};
use super::response::{series_out, SeriesOut};
use super::Ctx;
use base::labels::METRIC_NAME;

pub(super) fn measurements(
    ctx: &Ctx,
    condition: Option<&Expr>,
    limit: Option<usize>,
) -> Result<Vec<SeriesOut>, InfluxError> {
    let rx = Regexes::compile(condition)?;
    let all = all_series(ctx)?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    let measurements = measurements_of(ctx, &all);
    for (labels, (m, _)) in all.iter().zip(&measurements) {
        if let Some(c) = condition {
            if !holds(c, &Row::tags_only(labels), ctx.now, &rx) {
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

pub(super) fn databases() -> Vec<SeriesOut> {
    vec![series_out(
        "databases",
        &["name"],
        vec![vec![json!("perch")]],
    )]
}

pub(super) fn tag_keys(ctx: &Ctx, from: Option<&str>) -> Result<Vec<SeriesOut>, InfluxError> {
    let per = per_measurement(ctx, from)?;
    Ok(per
        .into_iter()
        .filter_map(|(m, series)| {
            let keys: BTreeSet<String> = series
                .iter()
                .flat_map(|(l, _)| names::tag_keys(l))
                .collect();
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

pub(super) fn field_keys(ctx: &Ctx, from: Option<&str>) -> Result<Vec<SeriesOut>, InfluxError> {
    let per = per_measurement(ctx, from)?;
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

pub(super) fn tag_values(
    ctx: &Ctx,
    from: Option<&str>,
    key: &KeySelector,
    condition: Option<&Expr>,
) -> Result<Vec<SeriesOut>, InfluxError> {
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
    let rx = Regexes::compile(condition)?;
    let per = per_measurement(ctx, from)?;
    let mut out = Vec::new();
    for (m, series) in per {
        let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
        for (labels, _) in &series {
            if let Some(c) = condition {
                if !holds(c, &Row::tags_only(labels), ctx.now, &rx) {
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
