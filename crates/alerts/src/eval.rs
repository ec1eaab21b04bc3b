//! Rule evaluation with Prometheus' semantics (`rules/alerting.go`,
//! `rules/recording.go`, `rules/group.go`): an alert is pending from the
//! evaluation its expression first returns it, firing once it has been
//! returned for `for`, kept firing for `keep_firing_for` after it stops
//! being returned, then resolved and remembered for 15 minutes. Every
//! evaluation writes `ALERTS` and `ALERTS_FOR_STATE` for the active alerts
//! and a staleness marker for each series a rule stopped returning;
//! recording rules write their results under the record's name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base::labels::METRIC_NAME;
use base::{Labels, SeriesSamples};
use serde::{Deserialize, Serialize};

use crate::rulefile::{GroupSpec, RuleKind, RuleSpec};
use crate::template::{Data, Template};

/// How long a resolved alert is kept (and reported) after it resolved.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;

/// Prometheus' staleness marker: a NaN with these bits ends a series.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Runs an instant query: what a rule's expression returns at a time.
pub trait Querier {
    /// The sample labels and values; a scalar is one sample without labels.
    fn instant(&self, expr: &str, t_ms: i64) -> Result<Vec<(Labels, f64)>, String>;
}

/// Where rule results go: called after each rule, so a later rule of the
/// group reads what an earlier one recorded at the same time.
pub trait Sink {
    fn write(&mut self, samples: Vec<SeriesSamples>);
}

impl Sink for Vec<SeriesSamples> {
    fn write(&mut self, samples: Vec<SeriesSamples>) {
        self.extend(samples);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule: one label set its expression returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    /// The value of the sample that made it, at the last evaluation (not
    /// kept across a restart: the next evaluation sets it; JSON has no NaN).
    #[serde(skip)]
    pub value: f64,
    /// When it became pending (ms).
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// Since when it is kept firing without being returned.
    pub keep_firing_since: Option<i64>,
    /// When the notification targets were last told it fires (kept across
    /// restarts, so a restart does not notify again).
    #[serde(default)]
    pub last_sent_at: Option<i64>,
    /// When an Alertmanager was last posted it again (not kept: after a
    /// restart it is posted at once).
    #[serde(skip)]
    pub last_resent_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

/// What the last evaluation of a rule did.
#[derive(Clone, Debug)]
pub struct RuleStatus {
    pub health: Health,
    pub last_error: Option<String>,
    pub last_evaluation: Option<i64>,
    pub evaluation_time: Duration,
}

impl Default for RuleStatus {
    fn default() -> Self {
        RuleStatus {
            health: Health::Unknown,
            last_error: None,
            last_evaluation: None,
            evaluation_time: Duration::ZERO,
        }
    }
}

/// A rule with its state.
pub struct Rule {
    pub spec: RuleSpec,
    labels: Vec<(String, Template)>,
    annotations: Vec<(String, Template)>,
    /// Active and recently resolved alerts by label set (alerting rules).
    alerts: HashMap<Labels, Alert>,
    /// Series written at the last evaluation, for staleness markers.
    previous: HashSet<Labels>,
    pub status: RuleStatus,
}

impl Rule {
    fn new(spec: RuleSpec, group_labels: &BTreeMap<String, String>) -> Rule {
        let templated = matches!(spec.kind, RuleKind::Alert { .. });
        let mut merged = group_labels.clone();
        merged.extend(spec.labels.clone());
        // The rule file was checked: templates parse.
        let parse = |(k, v): (&String, &String)| {
            let t = if templated {
                Template::parse(v).unwrap_or_else(|_| plain(v))
            } else {
                plain(v)
            };
            (k.clone(), t)
        };
        let labels = merged.iter().map(parse).collect();
        let annotations = match &spec.kind {
            RuleKind::Alert { annotations, .. } => annotations.iter().map(parse).collect(),
            RuleKind::Record { .. } => Vec::new(),
        };
        Rule {
            spec,
            labels,
            annotations,
            alerts: HashMap::new(),
            previous: HashSet::new(),
            status: RuleStatus::default(),
        }
    }

    pub fn name(&self) -> &str {
        self.spec.name()
    }

    pub fn is_alerting(&self) -> bool {
        matches!(self.spec.kind, RuleKind::Alert { .. })
    }

    /// The alerts of an alerting rule, pending, firing and recently
    /// resolved, in label order.
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self.alerts.values().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// The alerts, to mark what was sent.
    pub fn alerts_mut(&mut self) -> impl Iterator<Item = &mut Alert> {
        self.alerts.values_mut()
    }

    /// Puts back alerts kept from before a restart (the `for` timers go on
    /// from their `active_at`).
    pub fn restore(&mut self, alerts: Vec<Alert>) {
        for a in alerts {
            self.alerts.insert(a.labels.clone(), a);
        }
    }

    /// Evaluates the rule at `ts` and returns the samples to write.
    fn eval(&mut self, ts: i64, limit: usize, querier: &dyn Querier) -> Vec<SeriesSamples> {
        let began = Instant::now();
        let result =
            querier
                .instant(&self.spec.expr, ts)
                .and_then(|vector| match &self.spec.kind {
                    RuleKind::Record { name } => self.record(name.clone(), vector, limit),
                    RuleKind::Alert { .. } => self.alert(ts, vector, limit),
                });
        let mut out: Vec<SeriesSamples> = Vec::new();
        match result {
            Ok(series) => {
                self.status.health = Health::Ok;
                self.status.last_error = None;
                out = series
                    .into_iter()
                    .map(|(labels, v)| SeriesSamples::new(labels, vec![(ts, v)]))
                    .collect();
            }
            Err(e) => {
                self.status.health = Health::Err;
                self.status.last_error = Some(e);
            }
        }
        // Series written last time and not now end with a staleness
        // marker, as Prometheus writes them (also after an error).
        let now: HashSet<Labels> = out.iter().map(|s| s.labels.clone()).collect();
        for gone in self.previous.difference(&now) {
            out.push(SeriesSamples::new(
                gone.clone(),
                vec![(ts, f64::from_bits(STALE_NAN))],
            ));
        }
        self.previous = now;
        self.status.last_evaluation = Some(ts);
        self.status.evaluation_time = began.elapsed();
        out
    }

    fn record(
        &mut self,
        name: String,
        vector: Vec<(Labels, f64)>,
        limit: usize,
    ) -> Result<Vec<(Labels, f64)>, String> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(vector.len());
        for (mut labels, v) in vector {
            labels.set(METRIC_NAME, &name);
            for (k, t) in &self.labels {
                labels.set(k, &t.expand(&Data::default()));
            }
            if !seen.insert(labels.clone()) {
                return Err(
                    "vector contains metrics with the same labelset after applying rule labels"
                        .into(),
                );
            }
            out.push((labels, v));
        }
        if limit > 0 && out.len() > limit {
            return Err(format!(
                "exceeded limit of {limit} with {} series",
                out.len()
            ));
        }
        Ok(out)
    }

    fn alert(
        &mut self,
        ts: i64,
        vector: Vec<(Labels, f64)>,
        limit: usize,
    ) -> Result<Vec<(Labels, f64)>, String> {
        let RuleKind::Alert {
            name,
            for_ms,
            keep_firing_for_ms,
            ..
        } = &self.spec.kind
        else {
            unreachable!("alert() is called for alerting rules")
        };
        let mut returned: HashMap<Labels, Alert> = HashMap::new();
        for (sample, value) in vector {
            let data = Data {
                labels: sample
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect(),
                value,
                ..Default::default()
            };
            let mut labels = sample.without(METRIC_NAME);
            for (k, t) in &self.labels {
                labels.set(k, &t.expand(&data));
            }
            labels.set("alertname", name);
            let annotations = self
                .annotations
                .iter()
                .map(|(k, t)| (k.clone(), t.expand(&data)))
                .collect();
            if returned.contains_key(&labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            returned.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    keep_firing_since: None,
                    last_sent_at: None,
                    last_resent_at: None,
                },
            );
        }
        for (labels, new) in returned.iter() {
            match self.alerts.get_mut(labels) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = new.value;
                    a.annotations = new.annotations.clone();
                }
                _ => {
                    self.alerts.insert(labels.clone(), new.clone());
                }
            }
        }
        let mut active = 0;
        let mut out = Vec::new();
        self.alerts.retain(|labels, a| {
            let mut keep_firing = false;
            if !returned.contains_key(labels) {
                if a.state == AlertState::Firing && *keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < *keep_firing_for_ms;
                }
                if a.state == AlertState::Pending
                    || a.resolved_at
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                {
                    return false;
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    return true;
                }
            } else {
                a.keep_firing_since = None;
            }
            active += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= *for_ms {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            let mut alerts = a.labels.clone();
            alerts.set(METRIC_NAME, "ALERTS");
            alerts.set("alertstate", a.state.as_str());
            out.push((alerts, 1.0));
            let mut for_state = a.labels.clone();
            for_state.set(METRIC_NAME, "ALERTS_FOR_STATE");
            out.push((for_state, (a.active_at / 1000) as f64));
            true
        });
        if limit > 0 && active > limit {
            self.alerts.clear();
            return Err(format!("exceeded limit of {limit} with {active} alerts"));
        }
        Ok(out)
    }
}

fn plain(s: &str) -> Template {
    // A literal that cannot contain an action parses.
    Template::parse(&s.replace("{{", "{{\"{{\"}}")).expect("a literal template")
}

/// A group of rules evaluated together, in order, every interval.
pub struct Group {
    pub file: String,
    pub spec_name: String,
    pub interval_ms: i64,
    pub limit: usize,
    pub query_offset_ms: i64,
    pub rules: Vec<Rule>,
    pub last_evaluation: Option<i64>,
    pub evaluation_time: Duration,
}

impl Group {
    pub fn new(file: &str, spec: GroupSpec, default_interval_ms: i64) -> Group {
        let rules = spec
            .rules
            .iter()
            .cloned()
            .map(|r| Rule::new(r, &spec.labels))
            .collect();
        Group {
            file: file.to_string(),
            spec_name: spec.name,
            interval_ms: spec.interval_ms.unwrap_or(default_interval_ms),
            limit: spec.limit,
            query_offset_ms: spec.query_offset_ms,
            rules,
            last_evaluation: None,
            evaluation_time: Duration::ZERO,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec_name
    }

    /// Evaluates every rule at `ts` (ms), writing each rule's results to
    /// `sink` before the next rule runs.
    pub fn eval(&mut self, ts: i64, querier: &dyn Querier, sink: &mut dyn Sink) {
        let began = Instant::now();
        let at = ts - self.query_offset_ms;
        for rule in &mut self.rules {
            let out = rule.eval(at, self.limit, querier);
            if !out.is_empty() {
                sink.write(out);
            }
        }
        self.last_evaluation = Some(ts);
        self.evaluation_time = began.elapsed();
    }
}

/// [`Sink`] into the store: rule results are written as they come.
pub(crate) struct StoreSink<'a>(pub &'a store::Storage);

impl Sink for StoreSink<'_> {
    fn write(&mut self, samples: Vec<SeriesSamples>) {
        match self.0.append(&samples) {
            Ok(r) => {
                if let Some((_, e)) = r.rejected.first() {
                    tracing::warn!(error = %e, refused = r.rejected.len(), "rule results refused");
                }
            }
            Err(e) => tracing::warn!(error = %e, "rule results not written"),
        }
    }
}

/// [`Querier`] over perch's PromQL engine.
pub struct EngineQuerier(pub query::promql::Engine);

impl Querier for EngineQuerier {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<Vec<(Labels, f64)>, String> {
        self.instant_with(expr, t_ms, &query::promql::QueryOptions::default())
    }
}

/// [`Querier`] whose queries end by a deadline (a rule preview's).
pub struct UntilQuerier<'a> {
    pub engine: &'a EngineQuerier,
    pub deadline: std::time::Instant,
}

impl Querier for UntilQuerier<'_> {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<Vec<(Labels, f64)>, String> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err("out of time".into());
        }
        let options = query::promql::QueryOptions {
            timeout: Some(left),
            ..Default::default()
        };
        self.engine.instant_with(expr, t_ms, &options)
    }
}

impl EngineQuerier {
    fn instant_with(
        &self,
        expr: &str,
        t_ms: i64,
        options: &query::promql::QueryOptions,
    ) -> Result<Vec<(Labels, f64)>, String> {
        use query::promql::QueryValue;
        let out = self
            .0
            .instant(expr, t_ms, options)
            .map_err(|e| e.to_string())?;
        match out.value {
            QueryValue::Vector(v) => Ok(v
                .into_iter()
                .map(|(l, _, v)| (Arc::unwrap_or_clone(l), v))
                .collect()),
            QueryValue::Scalar(_, v) => Ok(vec![(Labels::empty(), v)]),
            _ => Err("rule result is not a vector or scalar".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rulefile;

    /// Answers from a script: at each time, the samples given.
    struct Script(Vec<(i64, Vec<(Labels, f64)>)>);

    impl Querier for Script {
        fn instant(&self, _: &str, t: i64) -> Result<Vec<(Labels, f64)>, String> {
            Ok(self
                .0
                .iter()
                .find(|(at, _)| *at == t)
                .map(|(_, v)| v.clone())
                .unwrap_or_default())
        }
    }

    fn group(yaml: &str) -> Group {
        let f = rulefile::parse("t.yml", yaml).unwrap();
        Group::new("t.yml", f.groups.into_iter().next().unwrap(), 60_000)
    }

    fn temp(v: f64) -> Vec<(Labels, f64)> {
        vec![(
            Labels::from_pairs([("__name__", "temperature"), ("device", "freezer")]),
            v,
        )]
    }

    #[test]
    fn pending_firing_kept_resolved() {
        let mut g = group(
            "groups:\n- name: g\n  rules:\n  - alert: Warm\n    expr: temperature > -10\n    for: 2m\n    keep_firing_for: 1m\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.device }} at {{ $value }}'}\n",
        );
        let m = 60_000;
        let q = Script(vec![
            (0, temp(-5.0)),
            (m, temp(-4.0)),
            (2 * m, temp(-3.0)),
            (3 * m, vec![]),
            (4 * m, vec![]),
        ]);
        let mut states = Vec::new();
        let mut written: Vec<SeriesSamples> = Vec::new();
        for i in 0..5 {
            g.eval(i * m, &q, &mut written);
            let alerts = g.rules[0].alerts();
            states.push(alerts.first().map(|a| a.state));
        }
        use AlertState::*;
        assert_eq!(
            states,
            [
                Some(Pending),
                Some(Pending),
                Some(Firing),
                Some(Firing),
                Some(Inactive)
            ]
        );
        let a = g.rules[0].alerts()[0].clone();
        assert_eq!(a.active_at, 0);
        assert_eq!(a.fired_at, Some(2 * m));
        assert_eq!(a.resolved_at, Some(4 * m));
        assert_eq!(a.annotations["summary"], "freezer at -3");
        assert_eq!(a.labels.get("severity"), Some("page"));
        assert_eq!(a.labels.get("alertname"), Some("Warm"));
        assert_eq!(a.labels.get("__name__"), None);
        // ALERTS went pending → firing, then ended with a staleness marker.
        let alerts_at = |t: i64| -> Vec<(String, bool)> {
            written
                .iter()
                .filter(|s| s.labels.metric_name() == Some("ALERTS") && s.samples[0].0 == t)
                .map(|s| {
                    (
                        s.labels.get("alertstate").unwrap().to_string(),
                        s.samples[0].1.to_bits() == STALE_NAN,
                    )
                })
                .collect()
        };
        assert_eq!(alerts_at(0), [("pending".to_string(), false)]);
        assert_eq!(alerts_at(3 * m), [("firing".to_string(), false)]);
        assert_eq!(alerts_at(4 * m), [("firing".to_string(), true)]);
        // The resolved alert is forgotten 15 minutes later.
        for i in 5..21 {
            g.eval(i * m, &q, &mut written);
        }
        assert!(g.rules[0].alerts().is_empty());
    }

    #[test]
    fn a_pending_alert_that_goes_away_is_forgotten() {
        let mut g = group("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    for: 5m\n");
        let q = Script(vec![(0, temp(1.0))]);
        let mut w: Vec<SeriesSamples> = Vec::new();
        g.eval(0, &q, &mut w);
        g.eval(60_000, &q, &mut w);
        assert!(g.rules[0].alerts().is_empty());
    }

    #[test]
    fn recording_and_duplicates() {
        let mut g = group(
            "groups:\n- name: g\n  rules:\n  - record: t:max\n    expr: x\n    labels: {source: perch}\n  - alert: Dup\n    expr: x\n    labels: {device: same}\n",
        );
        let two = vec![
            (
                Labels::from_pairs([("__name__", "x"), ("device", "a")]),
                1.0,
            ),
            (
                Labels::from_pairs([("__name__", "x"), ("device", "b")]),
                2.0,
            ),
        ];
        let q = Script(vec![(0, two)]);
        let mut w: Vec<SeriesSamples> = Vec::new();
        g.eval(0, &q, &mut w);
        let recorded: Vec<String> = w.iter().map(|s| s.labels.to_string()).collect();
        assert_eq!(
            recorded,
            [
                "t:max{device=\"a\",source=\"perch\"}",
                "t:max{device=\"b\",source=\"perch\"}"
            ]
        );
        assert_eq!(g.rules[1].status.health, Health::Err);
        assert!(g.rules[1]
            .status
            .last_error
            .as_deref()
            .unwrap()
            .contains("same labelset"));
    }
}
