//! What alerts did over a time range, as episodes (a label set pending or
//! firing from a time to a time): the history of perch's own alerts, read
//! from the `ALERTS` series rule evaluation writes (so it follows the
//! store's retention, and a chart can lay it over any range), and a rule's
//! preview — the rule evaluated over past data at regular steps, with
//! Prometheus' `for` and `keep_firing_for`, to show where it would have
//! fired before it is saved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use base::Labels;
use query::promql::QueryValue;
use serde::Serialize;

use crate::eval::{AlertState, Group, Querier};
use crate::rulefile::{GroupSpec, RuleKind, RuleSpec};
use crate::AlertsError;

/// A label set pending or firing over a span of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Episode {
    /// The alert's labels (without `alertstate`).
    pub labels: Labels,
    /// `pending` or `firing`.
    pub state: &'static str,
    pub start_ms: i64,
    /// The last time it was seen so.
    pub end_ms: i64,
    /// Still so at the range's end.
    pub open: bool,
}

/// At most this many steps in a preview (plus the one at the start): a day
/// at one a minute.
pub const MAX_PREVIEW_STEPS: i64 = 1440;
/// A preview stops (and says so) after this much evaluation time; each
/// evaluation's query gets what is left of it as its timeout.
pub const PREVIEW_BUDGET: Duration = Duration::from_secs(20);
/// The longest range a preview covers.
pub const MAX_PREVIEW_RANGE_MS: i64 = 31 * 86_400_000;
/// The most label sets a previewed rule may return: a rule is about a few
/// things; more is a mistake (and unbounded work).
pub const MAX_PREVIEW_SERIES: usize = 1000;
/// The longest range of the history.
pub const MAX_HISTORY_RANGE_MS: i64 = 366 * 86_400_000;

/// A rule evaluated over past data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub step_ms: i64,
    pub evaluations: usize,
    /// When a comparison with a number: the compared expression (to chart)
    /// and the threshold.
    pub plot: Option<String>,
    pub threshold: Option<Threshold>,
    pub episodes: Vec<Episode>,
    /// The evaluation stopped early (its time budget), at this time.
    pub truncated_at_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Threshold {
    pub op: String,
    pub value: f64,
}

/// `end - start`, if positive and at most `max`.
fn range_of(start_ms: i64, end_ms: i64, max: i64) -> Result<i64, AlertsError> {
    if end_ms <= start_ms {
        return Err(AlertsError::Invalid(
            "the end must be after the start".into(),
        ));
    }
    match end_ms.checked_sub(start_ms) {
        Some(r) if r <= max => Ok(r),
        _ => Err(AlertsError::Invalid(format!(
            "the range is longer than {} days, the most that is looked at",
            max / 86_400_000
        ))),
    }
}

/// The episodes of the `ALERTS` series over `(start, end]`: consecutive
/// samples of a series belong to one episode unless the gap between them
/// is more than one and a half times the series' usual spacing (the lower
/// median of its gaps: its group's interval, as evaluations are aligned to
/// it): there the alert had resolved for an evaluation or more (or perch
/// was not running).
pub fn history(
    engine: &query::promql::Engine,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<Episode>, AlertsError> {
    let range = range_of(start_ms, end_ms, MAX_HISTORY_RANGE_MS)?;
    let out = engine.instant(
        &format!("ALERTS[{range}ms]"),
        end_ms,
        &query::promql::QueryOptions::default(),
    )?;
    let QueryValue::Matrix(series) = out.value else {
        return Ok(Vec::new());
    };
    let mut episodes = Vec::new();
    for (labels, points) in series {
        let state = match labels.get("alertstate") {
            Some("firing") => "firing",
            Some("pending") => "pending",
            _ => continue,
        };
        let mut alert = labels.without("alertstate");
        alert.retain(|l| l.name != "__name__");
        let times: Vec<i64> = points
            .iter()
            .filter(|(_, v)| !v.is_nan())
            .map(|(t, _)| *t)
            .collect();
        let Some(&first) = times.first() else {
            continue;
        };
        let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let usual = gaps
            .get(gaps.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(60_000);
        let max_gap = (usual + usual / 2).max(1000);
        let mut from = first;
        let mut last = first;
        for &t in &times[1..] {
            if t - last > max_gap {
                episodes.push(Episode {
                    labels: alert.clone(),
                    state,
                    start_ms: from,
                    end_ms: last,
                    open: false,
                });
                from = t;
            }
            last = t;
        }
        episodes.push(Episode {
            labels: alert,
            state,
            start_ms: from,
            end_ms: last,
            open: end_ms - last <= max_gap,
        });
    }
    episodes.sort_by_key(|e| (e.start_ms, e.end_ms));
    Ok(episodes)
}

/// Evaluates an alerting rule at every step of `[start, end]` (ending at
/// `end`, at most [`MAX_PREVIEW_STEPS`] + 1 evaluations) over the stored
/// data, as if it had run then, and returns where it was pending and
/// firing. Nothing is written. Each evaluation is an instant query bounded
/// by the query limits; the preview as a whole stops at `deadline`, saying
/// where.
pub fn preview(
    querier: &dyn Querier,
    deadline: Instant,
    expr: &str,
    for_ms: i64,
    keep_firing_for_ms: i64,
    start_ms: i64,
    end_ms: i64,
) -> Result<Preview, AlertsError> {
    let parsed = query::promql::parse(expr)?;
    let threshold = query::promql::threshold(&parsed);
    let range = range_of(start_ms, end_ms, MAX_PREVIEW_RANGE_MS)?;
    let step_ms = (range as u64).div_ceil(MAX_PREVIEW_STEPS as u64).max(1000) as i64;
    let spec = GroupSpec {
        name: "preview".into(),
        interval_ms: Some(step_ms),
        limit: 0,
        query_offset_ms: 0,
        labels: BTreeMap::new(),
        rules: vec![RuleSpec {
            kind: RuleKind::Alert {
                name: "Preview".into(),
                for_ms,
                keep_firing_for_ms,
                annotations: BTreeMap::new(),
            },
            expr: expr.to_string(),
            labels: BTreeMap::new(),
            pos: Default::default(),
        }],
        pos: Default::default(),
    };
    let mut group = Group::new("preview", spec, step_ms);
    let mut open: HashMap<(Labels, &'static str), (i64, i64)> = HashMap::new();
    let mut episodes = Vec::new();
    let mut evaluations = 0;
    let mut truncated_at_ms = None;
    // Steps counted back from the end: the latest data is always seen.
    let mut ts = end_ms - range / step_ms * step_ms;
    while ts <= end_ms {
        if Instant::now() >= deadline {
            truncated_at_ms = Some(ts);
            break;
        }
        group.eval(ts, querier, &mut Vec::new());
        evaluations += 1;
        let rule = &group.rules[0];
        if let Some(e) = &rule.status.last_error {
            if Instant::now() >= deadline {
                truncated_at_ms = Some(ts);
                break;
            }
            return Err(AlertsError::Invalid(format!(
                "the expression failed at {}: {e}",
                chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default()
            )));
        }
        let mut seen = HashSet::new();
        for a in rule.alerts() {
            if a.state == AlertState::Inactive {
                continue;
            }
            let state = a.state.as_str();
            let mut labels = a.labels.clone();
            labels.retain(|l| l.name != "alertname");
            let key = (labels, state);
            open.entry(key.clone()).or_insert((ts, ts)).1 = ts;
            seen.insert(key);
        }
        if open.len() > MAX_PREVIEW_SERIES {
            return Err(AlertsError::Invalid(format!(
                "the rule returns more than {MAX_PREVIEW_SERIES} label sets; \
                 preview a narrower expression"
            )));
        }
        open.retain(|key, (from, last)| {
            let still = seen.contains(key);
            if !still {
                episodes.push(Episode {
                    labels: key.0.clone(),
                    state: key.1,
                    start_ms: *from,
                    end_ms: *last,
                    open: false,
                });
            }
            still
        });
        ts = match ts.checked_add(step_ms) {
            Some(next) => next,
            None => break,
        };
    }
    for ((labels, state), (from, last)) in open {
        episodes.push(Episode {
            labels,
            state,
            start_ms: from,
            end_ms: last,
            open: truncated_at_ms.is_none(),
        });
    }
    episodes.sort_by(|a, b| (a.start_ms, &a.labels).cmp(&(b.start_ms, &b.labels)));
    let (plot, threshold) = match threshold {
        Some((plot, op, value)) => (Some(plot), Some(Threshold { op, value })),
        None => (None, None),
    };
    Ok(Preview {
        step_ms,
        evaluations,
        plot,
        threshold,
        episodes,
        truncated_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `x` at each minute, from a list (None: no sample).
    struct Minutes(Vec<Option<f64>>);

    impl Querier for Minutes {
        fn instant(&self, _expr: &str, t_ms: i64) -> Result<Vec<(Labels, f64)>, String> {
            let i = (t_ms / 60_000) as usize;
            Ok(match self.0.get(i).copied().flatten() {
                Some(v) if v > 10.0 => vec![(Labels::from_pairs([("device", "d")]), v)],
                _ => vec![],
            })
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_preview_marks_pending_and_firing_with_for() {
        // Above 10 from minute 3 to 7, and at 10: with `for: 2m`, pending
        // at 3 and 4, firing 5..=7; minute 10 only pending.
        let mut xs = vec![Some(0.0); 13];
        for i in [3, 4, 5, 6, 7, 10] {
            xs[i] = Some(20.0);
        }
        let minutes = Minutes(xs);
        let p = preview(&minutes, far(), "x > 10", 120_000, 0, 0, 12 * 60_000).unwrap();
        assert_eq!(p.step_ms, 1000, "a short range is evaluated each second");
        let day = MAX_PREVIEW_STEPS * 60_000;
        let p = preview(&minutes, far(), "x > 10", 120_000, 0, 0, day).unwrap();
        assert_eq!(p.step_ms, 60_000);
        let spans: Vec<(&str, i64, i64)> = p
            .episodes
            .iter()
            .map(|e| (e.state, e.start_ms / 60_000, e.end_ms / 60_000))
            .collect();
        assert_eq!(
            spans,
            [("pending", 3, 4), ("firing", 5, 7), ("pending", 10, 10)]
        );
        assert_eq!(p.plot.as_deref(), Some("x"));
        assert_eq!(p.threshold.as_ref().map(|t| t.value), Some(10.0));
        assert!(p
            .episodes
            .iter()
            .all(|e| e.labels.get("device") == Some("d")));
    }

    /// As many label sets as asked for, at every time.
    struct Many(usize);

    impl Querier for Many {
        fn instant(&self, _expr: &str, _t_ms: i64) -> Result<Vec<(Labels, f64)>, String> {
            Ok((0..self.0)
                .map(|i| (Labels::from_pairs([("i", i.to_string())]), 1.0))
                .collect())
        }
    }

    #[test]
    fn a_preview_is_bounded_in_range_series_and_time() {
        let e = preview(&Many(1), far(), "x", 0, 0, 0, MAX_PREVIEW_RANGE_MS + 1).unwrap_err();
        assert!(e.to_string().contains("longer than 31 days"), "{e}");
        let e = preview(&Many(1), far(), "x", 0, 0, i64::MIN, i64::MAX).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let p = preview(&Many(1), far(), "x", 0, 0, i64::MAX - 60_000, i64::MAX).unwrap();
        assert_eq!(p.evaluations, 61);
        let e = preview(&Many(MAX_PREVIEW_SERIES + 1), far(), "x", 0, 0, 0, 60_000).unwrap_err();
        assert!(e.to_string().contains("more than 1000 label sets"), "{e}");
        // Out of time: stopped, and said where.
        let p = preview(&Many(1), Instant::now(), "x", 0, 0, 0, 60_000).unwrap();
        assert_eq!((p.evaluations, p.truncated_at_ms), (0, Some(0)));
        let p = preview(
            &Many(1),
            far(),
            "x",
            0,
            0,
            0,
            MAX_PREVIEW_STEPS * 60_000 + 1,
        )
        .unwrap();
        assert!(
            p.evaluations as i64 <= MAX_PREVIEW_STEPS + 1,
            "{}",
            p.evaluations
        );
    }

    #[test]
    fn a_bad_expression_is_refused_before_evaluating() {
        let e = preview(&Minutes(vec![]), far(), "x >", 0, 0, 0, 60_000).unwrap_err();
        assert!(e.to_string().contains("query"), "{e}");
    }
}
