//! The Prometheus data model: a series is a set of labels, one of which,
//! `__name__`, is the metric name. Labels are kept sorted by name; a label with
//! an empty value is the same as an absent label.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const METRIC_NAME: &str = "__name__";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

/// Limits on what a series may look like, with clear errors when exceeded.
#[derive(Clone, Copy, Debug)]
pub struct LabelLimits {
    pub max_labels: usize,
    pub max_name_len: usize,
    pub max_value_len: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            max_labels: 32,
            max_name_len: 256,
            max_value_len: 4096,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("series has no metric name")]
    MissingName,
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    BadMetricName(String),
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    BadLabelName(String),
    #[error("label {0:?} appears twice")]
    Duplicate(String),
    #[error("series has {count} labels, the limit is {limit}")]
    TooManyLabels { count: usize, limit: usize },
    #[error("label name {name:?}… is {len} bytes, the limit is {limit}")]
    NameTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
    #[error("value of label {name:?} is {len} bytes, the limit is {limit}")]
    ValueTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
}

impl crate::HasKind for LabelError {
    fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        let _ = self;
        K::InvalidArgument
    }
}

pub fn is_valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn is_valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped.
    /// Does not validate: see [`Labels::validate`].
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Labels {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .filter(|l| !l.value.is_empty())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Labels(v)
    }

    pub fn empty() -> Labels {
        Labels(Vec::new())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets (or with an empty value removes) one label, keeping the order.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(
                i,
                Label {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            ),
        }
    }

    pub fn without(&self, name: &str) -> Labels {
        Labels(self.0.iter().filter(|l| l.name != name).cloned().collect())
    }

    pub fn retain(&mut self, f: impl FnMut(&Label) -> bool) {
        self.0.retain(f)
    }

    pub fn validate(&self, limits: &LabelLimits) -> Result<(), LabelError> {
        let name = self.metric_name().ok_or(LabelError::MissingName)?;
        if !is_valid_metric_name(name) {
            return Err(LabelError::BadMetricName(name.to_string()));
        }
        if self.0.len() > limits.max_labels {
            return Err(LabelError::TooManyLabels {
                count: self.0.len(),
                limit: limits.max_labels,
            });
        }
        for (i, l) in self.0.iter().enumerate() {
            if l.name.len() > limits.max_name_len {
                return Err(LabelError::NameTooLong {
                    name: l.name.chars().take(40).collect(),
                    len: l.name.len(),
                    limit: limits.max_name_len,
                });
            }
            if l.name != METRIC_NAME && !is_valid_label_name(&l.name) {
                return Err(LabelError::BadLabelName(l.name.clone()));
            }
            if l.value.len() > limits.max_value_len {
                return Err(LabelError::ValueTooLong {
                    name: l.name.clone(),
                    len: l.value.len(),
                    limit: limits.max_value_len,
                });
            }
            if i > 0 && self.0[i - 1].name == l.name {
                return Err(LabelError::Duplicate(l.name.clone()));
            }
        }
        Ok(())
    }

    /// Canonical bytes identifying the series: `name\0value\0` per label.
    /// Label names and values cannot contain NUL after validation of names;
    /// values containing NUL are escaped so keys stay unambiguous.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        self.write_key_filtered(out, |_| true)
    }

    /// The key of the series' group: every label but the metric name. Series
    /// that share it usually share their timestamps (fields of one line or one
    /// JSON message) and are stored together.
    pub fn write_group_key(&self, out: &mut Vec<u8>) {
        self.write_key_filtered(out, |l| l.name != METRIC_NAME)
    }

    fn write_key_filtered(&self, out: &mut Vec<u8>, keep: impl Fn(&Label) -> bool) {
        out.clear();
        for l in self.0.iter().filter(|l| keep(l)) {
            out.extend_from_slice(l.name.as_bytes());
            out.push(0);
            for &b in l.value.as_bytes() {
                if b == 0 || b == 1 {
                    out.push(1);
                }
                out.push(b);
            }
            out.push(0);
        }
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }
}

impl fmt::Display for Labels {
    /// Prometheus' text form: `name{a="b",c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or("");
        write!(f, "{name}{{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                write!(f, ",")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        write!(f, "}}")
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for l in &self.0 {
            m.serialize_entry(&l.name, &l.value)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(Labels::from_pairs(m))
    }
}

/// How a matcher compares a label's value.
#[derive(Clone, Debug)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex(Regex),
    NotRegex(Regex),
}

/// One label matcher of a selector, such as `site=~"s[0-9]"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub op: MatchOp,
}

#[derive(Debug, Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct MatcherError {
    pub pattern: String,
    pub reason: String,
}

/// Regexes are anchored like Prometheus'; the size limit keeps a hostile
/// pattern from eating memory.
pub fn compile_anchored(pattern: &str) -> Result<Regex, MatcherError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| MatcherError {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })
}

impl Matcher {
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            op: MatchOp::Equal,
        }
    }

    /// `name=~"pattern"`, the pattern anchored like Prometheus'.
    pub fn regex(name: &str, pattern: &str) -> Result<Matcher, MatcherError> {
        Ok(Matcher {
            name: name.into(),
            value: pattern.into(),
            op: MatchOp::Regex(compile_anchored(pattern)?),
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex(r) => r.is_match(value),
            MatchOp::NotRegex(r) => !r.is_match(value),
        }
    }

    /// Whether a series without this label (value "") matches.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_and_drop_empty() {
        let l = Labels::from_pairs([("b", "2"), ("__name__", "m"), ("a", "1"), ("z", "")]);
        assert_eq!(l.to_string(), r#"m{a="1",b="2"}"#);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("z"), None);
    }

    #[test]
    fn validation_names_the_problem() {
        let lim = LabelLimits::default();
        assert_eq!(
            Labels::from_pairs([("a", "1")]).validate(&lim),
            Err(LabelError::MissingName)
        );
        assert!(matches!(
            Labels::from_pairs([("__name__", "1m")]).validate(&lim),
            Err(LabelError::BadMetricName(_))
        ));
        assert!(matches!(
            Labels::from_pairs([("__name__", "m"), ("a-b", "x")]).validate(&lim),
            Err(LabelError::BadLabelName(_))
        ));
        let many: Vec<(String, String)> = (0..40).map(|i| (format!("l{i}"), "v".into())).collect();
        let mut l = Labels::from_pairs(many);
        l.set("__name__", "m");
        assert!(matches!(
            l.validate(&lim),
            Err(LabelError::TooManyLabels { .. })
        ));
    }

    #[test]
    fn keys_are_unambiguous() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        Labels::from_pairs([("__name__", "m"), ("a", "x\0b")]).write_key(&mut a);
        Labels::from_pairs([("__name__", "m"), ("a", "x"), ("b", "")]).write_key(&mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn matchers_follow_prometheus() {
        let re = Matcher {
            name: "a".into(),
            value: "x|y".into(),
            op: MatchOp::Regex(compile_anchored("x|y").unwrap()),
        };
        assert!(re.matches("x") && !re.matches("xx") && !re.matches_empty());
        let ne = Matcher {
            name: "a".into(),
            value: "x".into(),
            op: MatchOp::NotEqual,
        };
        assert!(ne.matches_empty());
    }
}
