//! Prometheus rule files: `groups:` of alerting and recording rules, read
//! with Prometheus' rules (rulefmt) and every problem reported with its
//! line and column. A file is kept as the text it came in, so it is
//! exported as is; this module makes the checked form that is evaluated.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use base::labels::{is_valid_label_name, is_valid_metric_name};

use crate::template::Template;
use crate::yaml::{self, Node, Pos, Value};

/// Rule files larger than this are refused (Prometheus has no limit; an
/// appliance needs one).
pub const MAX_RULE_FILE_BYTES: usize = 4 << 20;

/// A checked rule file.
#[derive(Clone, Debug)]
pub struct RuleFile {
    pub groups: Vec<GroupSpec>,
}

#[derive(Clone, Debug)]
pub struct GroupSpec {
    pub name: String,
    /// `interval`, if the group sets one (else the global one).
    pub interval_ms: Option<i64>,
    /// At most this many alerts or series per rule (0: no limit).
    pub limit: usize,
    /// Evaluate this much in the past (Prometheus' `query_offset`).
    pub query_offset_ms: i64,
    /// Labels added to every rule's results (Prometheus 3's group labels).
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<RuleSpec>,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub kind: RuleKind,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    /// Where the rule starts in its file.
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub enum RuleKind {
    Alert {
        name: String,
        for_ms: i64,
        keep_firing_for_ms: i64,
        annotations: BTreeMap<String, String>,
    },
    Record {
        name: String,
    },
}

impl RuleSpec {
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Alert { name, .. } | RuleKind::Record { name } => name,
        }
    }
}

/// One problem in a rule file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
}

/// Every problem found in a rule file, in the order of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleFileError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for RuleFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}: {}", self.file, p.pos, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleFileError {}

/// Parses and checks a rule file. `file` names it in the messages.
pub fn parse(file: &str, text: &str) -> Result<RuleFile, RuleFileError> {
    let fail = |problems| RuleFileError {
        file: file.to_string(),
        problems,
    };
    if text.len() > MAX_RULE_FILE_BYTES {
        return Err(fail(vec![Problem {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes, more than the limit of {MAX_RULE_FILE_BYTES}",
                text.len()
            ),
        }]));
    }
    let doc = yaml::parse(text).map_err(|e| {
        fail(vec![Problem {
            pos: e.pos,
            message: e.message,
        }])
    })?;
    let mut checker = Checker::default();
    let groups = checker.file(&doc);
    if checker.problems.is_empty() {
        Ok(RuleFile { groups })
    } else {
        Err(fail(checker.problems))
    }
}

/// Parses a Prometheus duration (`1h30m`, `5m`, `90s`, `500ms`, `0`), in ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let units: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let bad = || format!("not a valid duration string: {s:?} (like 30s, 5m, 1h30m)");
    let mut rest = s;
    let mut total: i64 = 0;
    let mut next_unit = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        // The longest unit that matches ("ms" before "m"), in order.
        let found = units
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .ok_or_else(bad)?;
        let (i, (u, ms)) = found;
        rest = &rest[u.len()..];
        next_unit = i + 1;
        total = n
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, pos: Pos, message: impl Into<String>) {
        // A broken file can repeat one mistake many times: the first 100
        // are enough to fix it.
        if self.problems.len() < 100 {
            self.problems.push(Problem {
                pos,
                message: message.into(),
            });
        }
    }

    /// The entries of a mapping, refusing keys not in `known`.
    fn mapping<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        known: &[&str],
    ) -> Vec<(&'a str, &'a Node)> {
        let Value::Map(entries) = &node.value else {
            self.problem(
                node.pos,
                format!("{what} must be a mapping, not {}", node.kind()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match k.as_str() {
                Some(key) if known.contains(&key) => out.push((key, v)),
                Some(key) => self.problem(
                    k.pos,
                    format!(
                        "field {key} not found in {what} (known: {})",
                        known.join(", ")
                    ),
                ),
                None => self.problem(k.pos, format!("{what} has a key that is not a string")),
            }
        }
        out
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s) => Some(s.clone()),
            Value::Null => Some(String::new()),
            _ => {
                self.problem(
                    node.pos,
                    format!("{what} must be a string, not {}", node.kind()),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> i64 {
        let Some(s) = self.string(node, what) else {
            return 0;
        };
        match parse_duration(&s) {
            Ok(ms) => ms,
            Err(e) => {
                self.problem(node.pos, format!("{what}: {e}"));
                0
            }
        }
    }

    fn string_map(&mut self, node: &Node, what: &str, templates: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if node.value == Value::Null {
            return out;
        }
        let Value::Map(entries) = &node.value else {
            self.problem(
                node.pos,
                format!("{what} must be a mapping, not {}", node.kind()),
            );
            return out;
        };
        for (k, v) in entries {
            let Some(name) = self.string(k, what) else {
                continue;
            };
            if !is_valid_label_name(&name) {
                self.problem(k.pos, format!("invalid {what} name: {name:?}"));
                continue;
            }
            let Some(value) = self.string(v, &format!("{what} {name}")) else {
                continue;
            };
            if templates {
                if let Err(e) = Template::parse(&value) {
                    self.problem(v.pos, format!("{what} {name}: template: {e}"));
                }
            }
            out.insert(name, value);
        }
        out
    }

    fn file(&mut self, doc: &Node) -> Vec<GroupSpec> {
        if doc.value == Value::Null {
            return Vec::new();
        }
        let mut groups = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        for (key, value) in self.mapping(doc, "the rule file", &["groups"]) {
            debug_assert_eq!(key, "groups");
            let Value::Seq(items) = &value.value else {
                if value.value != Value::Null {
                    self.problem(
                        value.pos,
                        format!("groups must be a list, not {}", value.kind()),
                    );
                }
                continue;
            };
            for item in items {
                if let Some(g) = self.group(item) {
                    if !names.insert(g.name.clone()) {
                        self.problem(
                            g.pos,
                            format!("groupname: {:?} is repeated in the same file", g.name),
                        );
                    }
                    groups.push(g);
                }
            }
        }
        groups
    }

    fn group(&mut self, node: &Node) -> Option<GroupSpec> {
        let fields = self.mapping(
            node,
            "a rule group",
            &[
                "name",
                "interval",
                "limit",
                "query_offset",
                "labels",
                "rules",
            ],
        );
        let mut g = GroupSpec {
            name: String::new(),
            interval_ms: None,
            limit: 0,
            query_offset_ms: 0,
            labels: BTreeMap::new(),
            rules: Vec::new(),
            pos: node.pos,
        };
        let mut rules_node = None;
        for (key, v) in fields {
            match key {
                "name" => g.name = self.string(v, "name").unwrap_or_default(),
                "interval" => {
                    let ms = self.duration(v, "interval");
                    if ms <= 0 {
                        self.problem(v.pos, "interval must be more than 0");
                    }
                    g.interval_ms = Some(ms);
                }
                "limit" => match self.string(v, "limit").map(|s| s.parse::<usize>()) {
                    Some(Ok(n)) => g.limit = n,
                    Some(Err(_)) => self.problem(v.pos, "limit must be a whole number ≥ 0"),
                    None => {}
                },
                "query_offset" => g.query_offset_ms = self.duration(v, "query_offset"),
                "labels" => g.labels = self.string_map(v, "label", false),
                _ => rules_node = Some(v),
            }
        }
        if g.name.is_empty() {
            self.problem(node.pos, "groupname must not be empty");
        }
        if let Some(rules) = rules_node {
            match &rules.value {
                Value::Seq(items) => {
                    for item in items {
                        if let Some(r) = self.rule(item) {
                            g.rules.push(r);
                        }
                    }
                }
                Value::Null => {}
                _ => self.problem(
                    rules.pos,
                    format!("rules must be a list, not {}", rules.kind()),
                ),
            }
        }
        Some(g)
    }

    fn rule(&mut self, node: &Node) -> Option<RuleSpec> {
        let fields = self.mapping(
            node,
            "a rule",
            &[
                "record",
                "alert",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            ],
        );
        let mut record = None;
        let mut alert = None;
        let mut expr = None;
        let mut for_ms = 0;
        let mut keep_ms = 0;
        let mut labels_node = None;
        let mut annotations = BTreeMap::new();
        let mut alert_only: Vec<(&str, Pos)> = Vec::new();
        let problems_before = self.problems.len();
        for (key, v) in fields {
            match key {
                "record" => record = self.string(v, "record").map(|s| (s, v.pos)),
                "alert" => alert = self.string(v, "alert").map(|s| (s, v.pos)),
                "expr" => expr = self.string(v, "expr").map(|s| (s, v.pos)),
                "for" => {
                    for_ms = self.duration(v, "for");
                    alert_only.push(("for", v.pos));
                }
                "keep_firing_for" => {
                    keep_ms = self.duration(v, "keep_firing_for");
                    alert_only.push(("keep_firing_for", v.pos));
                }
                "labels" => labels_node = Some(v),
                _ => {
                    annotations = self.string_map(v, "annotation", true);
                    alert_only.push(("annotations", v.pos));
                }
            }
        }
        // Alerting rules' labels are templates; recording rules' are not.
        let labels = match labels_node {
            Some(v) => self.string_map(v, "label", alert.is_some()),
            None => BTreeMap::new(),
        };
        let kind = match (record, alert) {
            (Some(_), Some((_, pos))) => {
                self.problem(pos, "only one of 'record' and 'alert' must be set");
                return None;
            }
            (None, None) => {
                self.problem(node.pos, "one of 'record' or 'alert' must be set");
                return None;
            }
            (Some((name, pos)), None) => {
                if !is_valid_metric_name(&name) {
                    self.problem(pos, format!("invalid recording rule name: {name:?}"));
                }
                for (field, pos) in alert_only {
                    self.problem(pos, format!("invalid field '{field}' in recording rule"));
                }
                if labels.contains_key("__name__") {
                    self.problem(node.pos, "invalid label name: \"__name__\"");
                }
                RuleKind::Record { name }
            }
            (None, Some((name, pos))) => {
                if name.is_empty() {
                    self.problem(pos, "alert name must not be empty");
                }
                RuleKind::Alert {
                    name,
                    for_ms,
                    keep_firing_for_ms: keep_ms,
                    annotations,
                }
            }
        };
        let Some((expr, expr_pos)) = expr.filter(|(e, _)| !e.trim().is_empty()) else {
            self.problem(node.pos, "field 'expr' must be set in rule");
            return None;
        };
        if let Err(e) = query::promql::parse(&expr) {
            self.problem(expr_pos, format!("could not parse expression: {e}"));
        }
        (self.problems.len() == problems_before).then_some(RuleSpec {
            kind,
            expr,
            labels,
            pos: node.pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
groups:
  - name: freezer
    interval: 30s
    rules:
      - record: job:temperature:avg5m
        expr: avg_over_time(temperature[5m])
      - alert: FreezerWarm
        expr: temperature{device="freezer"} > -10
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.device }} is at {{ $value }} °C"
"#;

    #[test]
    fn a_good_file() {
        let f = parse("rules.yml", GOOD).unwrap();
        assert_eq!(f.groups.len(), 1);
        let g = &f.groups[0];
        assert_eq!(g.interval_ms, Some(30_000));
        assert_eq!(g.rules.len(), 2);
        assert_eq!(g.rules[1].name(), "FreezerWarm");
        assert_eq!(g.rules[1].pos.line, 8);
        let RuleKind::Alert {
            for_ms,
            keep_firing_for_ms,
            annotations,
            ..
        } = &g.rules[1].kind
        else {
            panic!()
        };
        assert_eq!((*for_ms, *keep_firing_for_ms), (300_000, 60_000));
        assert!(annotations["summary"].contains("$labels.device"));
    }

    #[test]
    fn every_problem_with_its_line() {
        let bad = r#"groups:
  - name: a
    rules:
      - alert: Broken
        expr: rate(x[5m]
      - record: "not a name"
        expr: up
        for: 5m
      - alert: T
        expr: up
        annotations:
          s: "{{ $labels.x "
        colour: red
  - name: a
    interval: 5 minutes
    rules: []
"#;
        let e = parse("bad.yml", bad).unwrap_err();
        let lines: Vec<(usize, &str)> = e
            .problems
            .iter()
            .map(|p| (p.pos.line, p.message.as_str()))
            .collect();
        let text = e.to_string();
        assert!(
            text.starts_with("bad.yml:5:15: could not parse expression"),
            "{text}"
        );
        for (line, what) in [
            (5, "could not parse expression"),
            (6, "invalid recording rule name"),
            (8, "invalid field 'for' in recording rule"),
            (12, "template"),
            (13, "field colour not found"),
            (14, "is repeated"),
            (15, "not a valid duration"),
        ] {
            assert!(
                lines.iter().any(|(l, m)| *l == line && m.contains(what)),
                "line {line} {what}: {lines:?}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("1m1ms"), Ok(60_001));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1m1h").is_err());
        assert!(parse_duration("-1m").is_err());
        assert!(parse_duration("99999999999999999y").is_err());
    }
}
