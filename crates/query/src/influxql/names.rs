//! Measurements and fields recovered from metric names: line protocol's
//! measurement `m` with field `f` was stored as the series `m_f` (field
//! `value` as `m` itself), its tags as labels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use regex::Regex;

use super::error::InfluxError;
use super::Ctx;
use base::labels::{MatchOp, Matcher, METRIC_NAME};
use store::{Labels, SeriesId};

pub(super) fn tag_keys(l: &Labels) -> Vec<String> {
    l.iter()
        .filter(|x| x.name != METRIC_NAME)
        .map(|x| x.name.clone())
        .collect()
}

/// Every series, sorted by labels.
pub(super) fn all_series(ctx: &Ctx) -> Result<Vec<Arc<Labels>>, InfluxError> {
    let m = Matcher {
        name: METRIC_NAME.into(),
        value: ".+".into(),
        op: MatchOp::Regex(Regex::new("^.+$").map_err(InfluxError::MeasurementPattern)?),
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
pub(super) fn measurements_of(series: &[Arc<Labels>]) -> Vec<String> {
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
pub(super) fn measurement_series(
    ctx: &Ctx,
    m: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<(SeriesId, Arc<Labels>, String)>, InfluxError> {
    let m = base::names::sanitize_metric_name(m).into_owned();
    let re = format!("^{}(?:_.+)?$", regex::escape(&m));
    let matcher = Matcher {
        name: METRIC_NAME.into(),
        value: re.clone(),
        op: MatchOp::Regex(Regex::new(&re).map_err(InfluxError::MeasurementPattern)?),
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
        return Err(InfluxError::TooManySeries {
            measurement: m,
            count: out.len(),
            limit: ctx.config.max_series,
        });
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Series (labels, field name) per measurement.
pub(super) type ByMeasurement = BTreeMap<String, Vec<(Arc<Labels>, String)>>;

/// Series per measurement: `FROM m`, or every measurement.
pub(super) fn per_measurement(ctx: &Ctx, from: Option<&str>) -> Result<ByMeasurement, InfluxError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, tags: &[(&str, &str)]) -> Arc<Labels> {
        let mut l = Labels::from_pairs(tags.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        l.set(METRIC_NAME, name);
        Arc::new(l)
    }

    #[test]
    fn measurements_are_the_common_prefix_of_a_lines_fields() {
        let all = [
            // One line `env,site=s0 temp=…,hum=…`.
            series("env_temp", &[("site", "s0")]),
            series("env_hum", &[("site", "s0")]),
            // Field `value` of the same measurement, and a second tag set
            // with a single field: both fall under the measurement found.
            series("env", &[("site", "s1")]),
            series("env_temp", &[("site", "s2")]),
            // `system` with underscores in its field names.
            series("system_cpu_percent", &[("host", "edge01")]),
            series("system_mem_used", &[("host", "edge01")]),
            // Alone, with nothing known to prefix it: its own measurement.
            series("mqtt_home_pcroom", &[("loc", "pcroom")]),
        ];
        assert_eq!(
            measurements_of(&all),
            vec![
                "env",
                "env",
                "env",
                "env",
                "system",
                "system",
                "mqtt_home_pcroom"
            ]
        );
    }

    #[test]
    fn the_longest_shared_prefix_wins() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            common_measurement(&names(&["a_b_c", "a_b_d"])),
            Some("a_b".into())
        );
        assert_eq!(common_measurement(&names(&["a_b", "a"])), Some("a".into()));
        assert_eq!(common_measurement(&names(&["x_1", "y_1"])), None);
    }
}
