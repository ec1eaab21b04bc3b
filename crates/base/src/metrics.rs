//! perch's self-metrics model: what a measurement looks like ([`MetricPoint`]),
//! how a module offers its measurements ([`MetricSource`]), the [`Registry`]
//! that collects them, and the Prometheus text exposition format (0.0.4) they
//! are served in at `GET /metrics`.
//!
//! Owns only this vocabulary; calls nothing else in perch. Every module feeds
//! it by implementing [`MetricSource`] without knowing about the others, and
//! the consumers (the HTTP handler, the 10 s recorder that stores the points as
//! ordinary series, see `storage::metrics`) only ever see `Vec<MetricPoint>`.
//!
//! Naming follows Prometheus conventions: a `perch_` prefix, base units as a
//! suffix (`_bytes`, `_seconds`, `_celsius`, `_ratio` for 0–1 fractions), and
//! `_total` on counters.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::RwLock;

/// How a value behaves over time; decides the `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets to 0 when perch or the host restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One sample of one series, without a timestamp: the scraper or the recorder
/// stamps it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    pub name: String,
    /// Shared by every point of the same name (the family); the first wins.
    pub help: &'static str,
    pub kind: MetricKind,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl MetricPoint {
    pub fn gauge(name: impl Into<String>, help: &'static str, value: f64) -> MetricPoint {
        MetricPoint {
            name: name.into(),
            help,
            kind: MetricKind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    pub fn counter(name: impl Into<String>, help: &'static str, value: f64) -> MetricPoint {
        MetricPoint {
            kind: MetricKind::Counter,
            ..MetricPoint::gauge(name, help, value)
        }
    }

    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> MetricPoint {
        self.labels.push((name.into(), value.into()));
        self
    }
}

/// Anything that can report measurements. `collect` is called from the HTTP
/// handler and the recorder, possibly at the same time, on a blocking thread:
/// it may read `/proc` or take a short lock, but must not wait on the network
/// or on long work, and must not panic.
pub trait MetricSource: Send + Sync {
    fn collect(&self, out: &mut Vec<MetricPoint>);
}

/// The sources perch reports. Shared as `Arc<Registry>`; modules that start
/// late (the MQTT broker, say) can register after the HTTP server is up.
#[derive(Default)]
pub struct Registry {
    sources: RwLock<Vec<Arc<dyn MetricSource>>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&self, source: Arc<dyn MetricSource>) {
        self.sources.write().push(source);
    }

    /// Every source's points, in registration order.
    pub fn gather(&self) -> Vec<MetricPoint> {
        // Collect outside the lock so a slow source cannot block `register`.
        let sources = self.sources.read().clone();
        let mut out = Vec::with_capacity(64);
        for s in &sources {
            s.collect(&mut out);
        }
        out
    }
}

/// Renders points in the Prometheus text exposition format 0.0.4.
///
/// Points of one name are brought together under a single `# HELP`/`# TYPE`
/// header, in the order names first appear. A point Prometheus would refuse —
/// an invalid metric or label name, a repeated label, or the same series twice
/// — is left out rather than failing the whole scrape.
pub fn render_prometheus_text(points: &[MetricPoint]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: HashMap<&str, Vec<&MetricPoint>> = HashMap::new();
    for p in points {
        if !is_valid_metric_name(&p.name) || !labels_valid(&p.labels) {
            continue;
        }
        families
            .entry(p.name.as_str())
            .or_insert_with(|| {
                order.push(p.name.as_str());
                Vec::new()
            })
            .push(p);
    }
    let mut out = String::with_capacity(points.len() * 96);
    for name in order {
        let Some(members) = families.get(name) else {
            continue;
        };
        let Some(first) = members.first() else {
            continue;
        };
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape_help(first.help, &mut out);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {name} {}", first.kind.as_str());
        let mut seen: HashSet<Vec<(&str, &str)>> = HashSet::new();
        for p in members {
            let mut key: Vec<(&str, &str)> = p
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            key.sort_unstable();
            if !seen.insert(key) {
                continue;
            }
            out.push_str(name);
            if !p.labels.is_empty() {
                out.push('{');
                for (i, (n, v)) in p.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(n);
                    out.push_str("=\"");
                    escape_label_value(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(p.value, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Values as Prometheus spells them: `NaN`, `+Inf`, `-Inf`, otherwise the
/// shortest decimal that reads back to the same `f64`.
fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes only backslash and newline (a quote is literal there).
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

// The same rules as `storage::labels`, repeated because `system` calls nothing
// else in perch.
fn is_valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        // `__`-prefixed names are reserved for Prometheus itself.
        && !s.starts_with("__")
}

fn labels_valid(labels: &[(String, String)]) -> bool {
    labels
        .iter()
        .enumerate()
        .all(|(i, (n, _))| is_valid_label_name(n) && !labels[..i].iter().any(|(m, _)| m == n))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<MetricPoint>);

    impl MetricSource for Fixed {
        fn collect(&self, out: &mut Vec<MetricPoint>) {
            out.extend(self.0.iter().cloned());
        }
    }

    #[test]
    fn families_are_contiguous_with_one_header() {
        let points = vec![
            MetricPoint::counter("a_total", "A.", 1.0).with_label("x", "1"),
            MetricPoint::gauge("b", "B.", 2.0),
            MetricPoint::counter("a_total", "A.", 3.0).with_label("x", "2"),
        ];
        let text = render_prometheus_text(&points);
        assert_eq!(
            text,
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"2\"} 3\n\
             # HELP b B.\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn escapes_and_special_values() {
        let points = vec![
            MetricPoint::gauge("g", "Back\\slash \"q\"\nline.", f64::NAN)
                .with_label("v", "a\\b\"c\nd"),
            MetricPoint::gauge("g", "", f64::INFINITY).with_label("v", "2"),
            MetricPoint::gauge("g", "", f64::NEG_INFINITY).with_label("v", "3"),
            MetricPoint::gauge("g", "", 0.25).with_label("v", "4"),
            MetricPoint::gauge("g", "", 1e300).with_label("v", "5"),
        ];
        let text = render_prometheus_text(&points);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# HELP g Back\\\\slash \"q\"\\nline.");
        assert_eq!(lines[2], "g{v=\"a\\\\b\\\"c\\nd\"} NaN");
        assert_eq!(lines[3], "g{v=\"2\"} +Inf");
        assert_eq!(lines[4], "g{v=\"3\"} -Inf");
        assert_eq!(lines[5], "g{v=\"4\"} 0.25");
        let big: f64 = lines[6].rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(big, 1e300);
    }

    #[test]
    fn points_prometheus_would_refuse_are_left_out() {
        let points = vec![
            MetricPoint::gauge("ok", "", 1.0),
            MetricPoint::gauge("0bad", "", 1.0),
            MetricPoint::gauge("ok", "", 2.0), // same series again
            MetricPoint::gauge("l", "", 1.0).with_label("bad-name", "x"),
            MetricPoint::gauge("l", "", 1.0).with_label("__reserved", "x"),
            MetricPoint::gauge("l", "", 1.0)
                .with_label("a", "1")
                .with_label("a", "2"),
        ];
        let text = render_prometheus_text(&points);
        assert_eq!(text, "# HELP ok \n# TYPE ok gauge\nok 1\n");
    }

    #[test]
    fn registry_gathers_in_registration_order() {
        let r = Registry::new();
        assert!(r.gather().is_empty());
        r.register(Arc::new(Fixed(vec![MetricPoint::gauge("one", "", 1.0)])));
        r.register(Arc::new(Fixed(vec![MetricPoint::gauge("two", "", 2.0)])));
        let names: Vec<String> = r.gather().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["one", "two"]);
    }
}
