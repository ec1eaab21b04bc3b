//! Measurements and fields of series. A write that named them (line
//! protocol, Telegraf's JSON) left them with the store, which remembers
//! them per metric name; for other series (MQTT values, Prometheus writes)
//! they are guessed from the metric name: line protocol's measurement `m`
//! with field `f` is the series `m_f` (field `value` is `m` itself), its
//! tags are labels.

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

fn name_matcher(re: String) -> Result<Matcher, InfluxError> {
    Ok(Matcher {
        name: METRIC_NAME.into(),
        op: MatchOp::Regex(Regex::new(&re).map_err(InfluxError::MeasurementPattern)?),
        value: re,
    })
}

/// Every series, sorted by labels.
pub(super) fn all_series(ctx: &Ctx) -> Result<Vec<Arc<Labels>>, InfluxError> {
    let mut v: Vec<Arc<Labels>> = ctx
        .storage
        .select(&[name_matcher("^.+$".into())?], i64::MIN, i64::MAX)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    v.sort();
    Ok(v)
}

/// The measurement and field of each series: as written where a write
/// named them, else guessed among the series without one
/// ([`guess_measurements`]).
/// A guess that lands on a named measurement's metric name takes its name
/// as written, as `FROM` does.
pub(super) fn measurements_of(ctx: &Ctx, series: &[Arc<Labels>]) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), String::new()); series.len()];
    let mut unnamed = Vec::new();
    // Sanitized measurement → as written.
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for (i, l) in series.iter().enumerate() {
        match ctx.storage.measurement_of(l.metric_name().unwrap_or("")) {
            Some(o) => {
                named
                    .entry(base::names::sanitize_metric_name(&o.measurement).into_owned())
                    .or_insert_with(|| o.measurement.clone());
                out[i] = (o.measurement.clone(), o.field.clone());
            }
            None => unnamed.push(i),
        }
    }
    let guessed: Vec<Arc<Labels>> = unnamed.iter().map(|&i| series[i].clone()).collect();
    let seeds: BTreeSet<String> = named.keys().cloned().collect();
    for (&i, m) in unnamed.iter().zip(guess_measurements(&guessed, seeds)) {
        let field = field_of(series[i].metric_name().unwrap_or(""), &m);
        let m = named.get(&m).cloned().unwrap_or(m);
        out[i] = (m, field);
    }
    out
}

/// The field a metric name stands for in measurement `m` (sanitized), which
/// it is or starts with followed by `_`.
fn field_of(name: &str, m: &str) -> String {
    if name == m {
        return "value".into();
    }
    name.get(m.len() + 1..).unwrap_or("value").to_string()
}

/// The measurement each series most likely came from. Series written by one
/// line share every label but the name; the longest common `_`-bounded
/// prefix of their names is the measurement. A series alone in its group is
/// its own measurement unless a measurement found so, or one of `known`,
/// names its prefix.
fn guess_measurements(series: &[Arc<Labels>], mut known: BTreeSet<String>) -> Vec<String> {
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

/// The series of measurement `m` in `[lo, hi]`, with their field names:
/// those written as fields of `m`, and the series without a remembered
/// measurement whose name is `m` (sanitized the way line protocol names
/// are) or starts with it and `_`. The name to answer with comes first:
/// `m` as written when a write named it, else sanitized.
pub(super) fn measurement_series(
    ctx: &Ctx,
    m: &str,
    lo: i64,
    hi: i64,
) -> Result<(String, MeasurementSeries), InfluxError> {
    let written = ctx.storage.measurement_metrics(m);
    let sanitized = base::names::sanitize_metric_name(m).into_owned();
    let mut out: MeasurementSeries = Vec::new();
    let named = !written.is_empty();
    if named {
        let fields: BTreeMap<String, String> = written.into_iter().collect();
        let names: Vec<String> = fields.keys().map(|n| regex::escape(n)).collect();
        let matcher = name_matcher(format!("^(?:{})$", names.join("|")))?;
        for (id, l) in ctx.storage.select(&[matcher], lo, hi) {
            if let Some(field) = fields.get(l.metric_name().unwrap_or("")) {
                out.push((id, l, field.clone()));
            }
        }
    }
    let matcher = name_matcher(format!("^{}(?:_.+)?$", regex::escape(&sanitized)))?;
    for (id, l) in ctx.storage.select(&[matcher], lo, hi) {
        let name = l.metric_name().unwrap_or("");
        if ctx.storage.measurement_of(name).is_none() {
            let field = field_of(name, &sanitized);
            out.push((id, l, field));
        }
    }
    let name = if named { m.to_string() } else { sanitized };
    if out.len() > ctx.config.max_series {
        return Err(InfluxError::TooManySeries {
            measurement: name,
            count: out.len(),
            limit: ctx.config.max_series,
        });
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok((name, out))
}

/// Series of one measurement: id, labels, field name.
pub(super) type MeasurementSeries = Vec<(SeriesId, Arc<Labels>, String)>;

/// Series (labels, field name) per measurement.
pub(super) type ByMeasurement = BTreeMap<String, Vec<(Arc<Labels>, String)>>;

/// Series per measurement: `FROM m`, or every measurement.
pub(super) fn per_measurement(ctx: &Ctx, from: Option<&str>) -> Result<ByMeasurement, InfluxError> {
    let mut out = ByMeasurement::new();
    match from {
        Some(m) => {
            let (name, s) = measurement_series(ctx, m, i64::MIN, i64::MAX)?;
            if !s.is_empty() {
                out.insert(name, s.into_iter().map(|(_, l, f)| (l, f)).collect());
            }
        }
        None => {
            let all = all_series(ctx)?;
            let named = measurements_of(ctx, &all);
            for (l, (m, field)) in all.into_iter().zip(named) {
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
    fn guesses_are_the_common_prefix_of_a_lines_fields() {
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
            guess_measurements(&all, BTreeSet::new()),
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
