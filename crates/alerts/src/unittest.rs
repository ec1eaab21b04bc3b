//! Rule unit tests in promtool's format (`promtool test rules`): input
//! series in the expanding notation, alert and PromQL expectations at
//! evaluation times. `perch rules test` runs them with perch's own store,
//! PromQL engine and rule evaluator, so one test file checks the same rules
//! in Prometheus and in perch (tests/it/alerts.rs runs both).
//!
//! As promtool: samples start at time 0 and follow every `interval`; every
//! group is evaluated at 0, `evaluation_interval`, … up to the last
//! evaluation time asked for; an alert test at time t looks at the alerts
//! firing after the evaluation at or before t; PromQL tests query the
//! store after all evaluations (so they see recorded series and `ALERTS`).
//! Not supported: `fuzzy_compare`, `start_timestamp`, `external_url`,
//! native histograms in series values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use base::{Labels, ManualClock, SeriesSamples};

use crate::eval::{AlertState, EngineQuerier, Group, Querier, StoreSink, STALE_NAN};
use crate::rulefile::{self, parse_duration};
use crate::yaml::{self, Node, Value};

/// The outcome of a test file: `Ok` with how many test groups passed, or
/// every failure in words.
pub fn run_file(path: &Path, scratch: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let spec = TestFile::parse(&text).map_err(|e| format!("{}:{e}", path.display()))?;
    let mut groups_spec = Vec::new();
    for pattern in &spec.rule_files {
        let full = base_dir.join(pattern);
        let text =
            std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", full.display()))?;
        let file =
            rulefile::parse(&full.display().to_string(), &text).map_err(|e| e.to_string())?;
        for g in file.groups {
            groups_spec.push((full.display().to_string(), g));
        }
    }
    let mut failures = String::new();
    let mut passed = 0;
    for (i, test) in spec.tests.iter().enumerate() {
        let dir = scratch.join(format!("test-{i}"));
        let mut groups: Vec<Group> = groups_spec
            .iter()
            .map(|(file, g)| Group::new(file, g.clone(), spec.evaluation_interval_ms))
            .collect();
        order_groups(&mut groups, &spec.group_eval_order);
        match run_test(test, &mut groups, spec.evaluation_interval_ms, &dir) {
            Ok(()) => passed += 1,
            Err(e) => {
                let name = test.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
                let _ = writeln!(failures, "  FAILED test group {name}:\n{e}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if failures.is_empty() {
        Ok(passed)
    } else {
        Err(failures)
    }
}

fn order_groups(groups: &mut [Group], order: &[String]) {
    let rank = |g: &Group| {
        order
            .iter()
            .position(|n| n == g.name())
            .unwrap_or(usize::MAX)
    };
    groups.sort_by_key(rank);
}

struct TestFile {
    rule_files: Vec<String>,
    evaluation_interval_ms: i64,
    group_eval_order: Vec<String>,
    tests: Vec<TestGroup>,
}

struct TestGroup {
    name: Option<String>,
    interval_ms: i64,
    input: Vec<(Labels, Vec<Option<f64>>)>,
    alert_tests: Vec<AlertTest>,
    promql_tests: Vec<PromqlTest>,
}

struct AlertTest {
    eval_ms: i64,
    alertname: String,
    /// Labels (with `alertname`) and annotations of each firing alert.
    expected: Vec<(Labels, BTreeMap<String, String>)>,
}

struct PromqlTest {
    expr: String,
    eval_ms: i64,
    expected: Vec<(Labels, f64)>,
}

type Fields<'a> = Vec<(&'a str, &'a Node)>;

fn fields<'a>(n: &'a Node, what: &str) -> Result<Fields<'a>, String> {
    match &n.value {
        Value::Map(m) => Ok(m
            .iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k, v)))
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(format!("{}: {what} must be a mapping", n.pos)),
    }
}

fn items<'a>(n: &'a Node, what: &str) -> Result<&'a [Node], String> {
    match &n.value {
        Value::Seq(s) => Ok(s),
        Value::Null => Ok(&[]),
        _ => Err(format!("{}: {what} must be a list", n.pos)),
    }
}

fn text(n: &Node, what: &str) -> Result<String, String> {
    match &n.value {
        Value::Scalar(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(format!("{}: {what} must be a string", n.pos)),
    }
}

fn duration(n: &Node, what: &str) -> Result<i64, String> {
    parse_duration(&text(n, what)?).map_err(|e| format!("{}: {what}: {e}", n.pos))
}

fn string_map(n: &Node, what: &str) -> Result<BTreeMap<String, String>, String> {
    fields(n, what)?
        .into_iter()
        .map(|(k, v)| Ok((k.to_string(), text(v, what)?)))
        .collect()
}

impl TestFile {
    fn parse(src: &str) -> Result<TestFile, String> {
        let doc = yaml::parse(src).map_err(|e| format!("{}: {}", e.pos, e.message))?;
        let mut file = TestFile {
            rule_files: Vec::new(),
            evaluation_interval_ms: 60_000,
            group_eval_order: Vec::new(),
            tests: Vec::new(),
        };
        let mut tests = None;
        for (k, v) in fields(&doc, "the test file")? {
            match k {
                "rule_files" => {
                    for f in items(v, k)? {
                        file.rule_files.push(text(f, k)?);
                    }
                }
                "evaluation_interval" => file.evaluation_interval_ms = duration(v, k)?,
                "group_eval_order" => {
                    for g in items(v, k)? {
                        file.group_eval_order.push(text(g, k)?);
                    }
                }
                "tests" => tests = Some(v),
                other => return Err(format!("{}: field {other} is not supported", v.pos)),
            }
        }
        if file.evaluation_interval_ms <= 0 {
            return Err("evaluation_interval must be more than 0".into());
        }
        if let Some(tests) = tests {
            for t in items(tests, "tests")? {
                let group = TestGroup::parse(t, file.evaluation_interval_ms)?;
                file.tests.push(group);
            }
        }
        Ok(file)
    }
}

impl TestGroup {
    fn parse(n: &Node, default_interval: i64) -> Result<TestGroup, String> {
        let mut g = TestGroup {
            name: None,
            interval_ms: default_interval,
            input: Vec::new(),
            alert_tests: Vec::new(),
            promql_tests: Vec::new(),
        };
        for (k, v) in fields(n, "a test group")? {
            match k {
                "name" => g.name = Some(text(v, k)?),
                "interval" => g.interval_ms = duration(v, k)?,
                "external_labels" => {}
                "input_series" => {
                    for s in items(v, k)? {
                        let f = fields(s, "an input series")?;
                        let get = |name: &str| f.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
                        let series = get("series").ok_or(format!("{}: series missing", s.pos))?;
                        let labels = parse_series(&text(series, "series")?)
                            .map_err(|e| format!("{}: {e}", series.pos))?;
                        let values = match get("values") {
                            Some(v) => expand_values(&text(v, "values")?)
                                .map_err(|e| format!("{}: {e}", v.pos))?,
                            None => Vec::new(),
                        };
                        g.input.push((labels, values));
                    }
                }
                "alert_rule_test" => {
                    for t in items(v, k)? {
                        g.alert_tests.push(AlertTest::parse(t)?);
                    }
                }
                "promql_expr_test" => {
                    for t in items(v, k)? {
                        g.promql_tests.push(PromqlTest::parse(t)?);
                    }
                }
                other => return Err(format!("{}: field {other} is not supported", v.pos)),
            }
        }
        if g.interval_ms <= 0 {
            return Err(format!("{}: interval must be more than 0", n.pos));
        }
        Ok(g)
    }
}

impl AlertTest {
    fn parse(n: &Node) -> Result<AlertTest, String> {
        let mut t = AlertTest {
            eval_ms: 0,
            alertname: String::new(),
            expected: Vec::new(),
        };
        for (k, v) in fields(n, "an alert test")? {
            match k {
                "eval_time" => t.eval_ms = duration(v, k)?,
                "alertname" => t.alertname = text(v, k)?,
                "exp_alerts" => {
                    for a in items(v, k)? {
                        let mut labels = BTreeMap::new();
                        let mut annotations = BTreeMap::new();
                        for (k, v) in fields(a, "an expected alert")? {
                            match k {
                                "exp_labels" => labels = string_map(v, k)?,
                                "exp_annotations" => annotations = string_map(v, k)?,
                                other => return Err(format!("{}: unknown field {other}", v.pos)),
                            }
                        }
                        t.expected.push((Labels::from_pairs(labels), annotations));
                    }
                }
                other => return Err(format!("{}: unknown field {other}", v.pos)),
            }
        }
        for (labels, _) in &mut t.expected {
            labels.set("alertname", &t.alertname);
        }
        Ok(t)
    }
}

impl PromqlTest {
    fn parse(n: &Node) -> Result<PromqlTest, String> {
        let mut t = PromqlTest {
            expr: String::new(),
            eval_ms: 0,
            expected: Vec::new(),
        };
        for (k, v) in fields(n, "a PromQL test")? {
            match k {
                "expr" => t.expr = text(v, k)?,
                "eval_time" => t.eval_ms = duration(v, k)?,
                "exp_samples" => {
                    for s in items(v, k)? {
                        let f = fields(s, "an expected sample")?;
                        let mut labels = Labels::empty();
                        let mut value = 0.0;
                        for (k, v) in f {
                            match k {
                                "labels" => {
                                    labels = parse_series(&text(v, k)?)
                                        .map_err(|e| format!("{}: {e}", v.pos))?
                                }
                                "value" => {
                                    value = parse_value(&text(v, k)?)
                                        .ok_or(format!("{}: bad value", v.pos))?
                                }
                                other => return Err(format!("{}: unknown field {other}", v.pos)),
                            }
                        }
                        t.expected.push((labels, value));
                    }
                }
                other => return Err(format!("{}: unknown field {other}", v.pos)),
            }
        }
        Ok(t)
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" => Some(f64::NAN),
        "Inf" | "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// `name{a="b", c="d"}` (or `{__name__="x"}`) to labels.
pub fn parse_series(s: &str) -> Result<Labels, String> {
    let s = s.trim();
    let brace = s.find('{').unwrap_or(s.len());
    let name = s[..brace].trim();
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.into()));
    }
    let rest = &s[brace..];
    if !rest.is_empty() {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| format!("bad series {s:?}"))?;
        let mut chars = inner.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let key: String = chars
                .by_ref()
                .take_while(|c| *c != '=')
                .collect::<String>()
                .trim()
                .to_string();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.next() != Some('"') {
                return Err(format!("bad series {s:?}: label values are quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => return Err(format!("bad series {s:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("bad series {s:?}: unclosed quote")),
                }
            }
            pairs.push((key, value));
        }
    }
    Ok(Labels::from_pairs(pairs))
}

/// The expanding notation: `1 2 3`, `a+bxn`, `a-bxn`, `axn`, `_`, `_xn`,
/// `stale`. `None` is a missing sample; a stale marker is its NaN.
pub fn expand_values(s: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    let stale = f64::from_bits(STALE_NAN);
    for token in s.split_whitespace() {
        if token == "_" {
            out.push(None);
            continue;
        }
        if token == "stale" {
            out.push(Some(stale));
            continue;
        }
        let Some((head, times)) = token.rsplit_once('x') else {
            out.push(Some(
                parse_value(token).ok_or_else(|| format!("bad value {token:?}"))?,
            ));
            continue;
        };
        let n: usize = times
            .parse()
            .map_err(|_| format!("bad repetition in {token:?}"))?;
        if n > 1_000_000 {
            return Err(format!("{token:?} repeats more than 1000000 times"));
        }
        if head == "_" {
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        // `a+b`, `a-b` (a may be negative) or `a`.
        let split = head
            .char_indices()
            .skip(1)
            .find(|(i, c)| (*c == '+' || *c == '-') && !head[..*i].ends_with(['e', 'E']))
            .map(|(i, _)| i);
        let (start, step) = match split {
            Some(i) => {
                let start =
                    parse_value(&head[..i]).ok_or_else(|| format!("bad value {token:?}"))?;
                let step =
                    parse_value(&head[i + 1..]).ok_or_else(|| format!("bad value {token:?}"))?;
                (start, if &head[i..i + 1] == "-" { -step } else { step })
            }
            None => (
                parse_value(head).ok_or_else(|| format!("bad value {token:?}"))?,
                0.0,
            ),
        };
        for k in 0..=n {
            out.push(Some(start + step * k as f64));
        }
    }
    Ok(out)
}

fn run_test(
    test: &TestGroup,
    groups: &mut [Group],
    evaluation_interval_ms: i64,
    dir: &Path,
) -> Result<(), String> {
    let last_sample = test
        .input
        .iter()
        .map(|(_, v)| v.len() as i64 * test.interval_ms)
        .max()
        .unwrap_or(0);
    let max_eval = test
        .alert_tests
        .iter()
        .map(|t| t.eval_ms)
        .chain(test.promql_tests.iter().map(|t| t.eval_ms))
        .max()
        .unwrap_or(0);
    let clock = ManualClock::new(last_sample.max(max_eval) + 60_000);
    let config = config::StorageConfig {
        retention: config::Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let (storage, _) = store::Storage::open(&config, dir, clock).map_err(|e| e.to_string())?;
    let batch: Vec<SeriesSamples> = test
        .input
        .iter()
        .map(|(labels, values)| {
            SeriesSamples::new(
                labels.clone(),
                values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (i as i64 * test.interval_ms, v)))
                    .collect(),
            )
        })
        .collect();
    let appended = storage.append(&batch).map_err(|e| e.to_string())?;
    if let Some((_, e)) = appended.rejected.first() {
        return Err(format!("    input series refused: {e}"));
    }
    let querier = EngineQuerier(query::promql::Engine::new(
        Arc::clone(&storage),
        &config::QueryConfig::default(),
    ));
    let mut alert_tests: Vec<&AlertTest> = test.alert_tests.iter().collect();
    alert_tests.sort_by_key(|t| t.eval_ms);
    let mut next = 0;
    let mut failures = String::new();
    let mut ts = 0;
    while ts <= max_eval {
        // As promtool: every group at every step, whatever its interval.
        for g in groups.iter_mut() {
            g.eval(ts, &querier, &mut StoreSink(&storage));
        }
        while next < alert_tests.len() && alert_tests[next].eval_ms < ts + evaluation_interval_ms {
            check_alerts(alert_tests[next], groups, &mut failures);
            next += 1;
        }
        ts += evaluation_interval_ms;
    }
    for t in &test.promql_tests {
        check_promql(t, &querier, &mut failures);
    }
    drop(querier);
    drop(storage);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn describe_alerts(alerts: &[(Labels, BTreeMap<String, String>)]) -> String {
    let items: Vec<String> = alerts
        .iter()
        .map(|(l, a)| format!("Labels:{l} Annotations:{a:?}"))
        .collect();
    format!("[{}]", items.join(", "))
}

fn check_alerts(t: &AlertTest, groups: &[Group], failures: &mut String) {
    let mut got: Vec<(Labels, BTreeMap<String, String>)> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter(|r| r.is_alerting() && r.name() == t.alertname)
        .flat_map(|r| r.alerts())
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| (a.labels.clone(), a.annotations.clone()))
        .collect();
    got.sort();
    let mut expected = t.expected.clone();
    expected.sort();
    if got != expected {
        let _ = writeln!(
            failures,
            "    alertname: {}, time: {}ms,\n        exp:{},\n        got:{}",
            t.alertname,
            t.eval_ms,
            describe_alerts(&expected),
            describe_alerts(&got)
        );
    }
}

fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn check_promql(t: &PromqlTest, querier: &EngineQuerier, failures: &mut String) {
    let got = match querier.instant(&t.expr, t.eval_ms) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(
                failures,
                "    expr: {:?}, time: {}ms, err: {e}",
                t.expr, t.eval_ms
            );
            return;
        }
    };
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = t.expected.clone();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let same = got.len() == expected.len()
        && got
            .iter()
            .zip(&expected)
            .all(|(g, e)| g.0 == e.0 && same_value(g.1, e.1));
    if !same {
        let show = |v: &[(Labels, f64)]| -> String {
            let items: Vec<String> = v.iter().map(|(l, v)| format!("{l} {v}")).collect();
            format!("[{}]", items.join(", "))
        };
        let _ = writeln!(
            failures,
            "    expr: {:?}, time: {}ms,\n        exp: {}\n        got: {}",
            t.expr,
            t.eval_ms,
            show(&expected),
            show(&got)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation() {
        assert_eq!(
            expand_values("-2+4x3").unwrap(),
            [Some(-2.0), Some(2.0), Some(6.0), Some(10.0)]
        );
        assert_eq!(
            expand_values("1-2x4").unwrap(),
            [Some(1.0), Some(-1.0), Some(-3.0), Some(-5.0), Some(-7.0)]
        );
        assert_eq!(
            expand_values("5x2 _ _x1").unwrap(),
            [Some(5.0), Some(5.0), Some(5.0), None, None]
        );
        assert!(expand_values("stale").unwrap()[0].unwrap().is_nan());
        assert!(expand_values("1e3+1x1").unwrap() == [Some(1000.0), Some(1001.0)]);
        assert!(expand_values("1+1x99999999").is_err());
        assert!(expand_values("abc").is_err());
    }

    #[test]
    fn series_notation() {
        let l = parse_series(r#"up{job="node", instance="a:9100"}"#).unwrap();
        assert_eq!(l.to_string(), r#"up{instance="a:9100",job="node"}"#);
        assert_eq!(parse_series("up").unwrap().to_string(), "up{}");
        assert!(parse_series("up{job=node}").is_err());
    }
}
