//! MQTT topic rules (`[[mqtt.rules]]`): compiled from the configuration and
//! matched against topics.
//!
//! A rule says how the collector maps the messages of the topics it matches:
//! `{name}` levels capture the level as a label (Telegraf's topic parsing),
//! `metric_prefix` is prepended to metric names, `drop_values` are sentinel
//! "sensor error" readings that are never stored, `timestamp_field` names the
//! JSON field holding the time, and `ignore` stores nothing. Rules are tried in
//! order; the first that matches wins. Plain MQTT matching is the shared
//! model's ([`base::topic`]).

use thiserror::Error;

use base::labels::is_valid_label_name;
use base::names::sanitize_metric_name;
use base::topic::{match_levels, Level};
pub use config::RuleConfig;

/// Why a rule was refused; `index` is 0-based, as in `mqtt.rules[0]`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("mqtt.rules[{index}]: topic {topic:?}: {reason}")]
pub struct RuleError {
    pub index: usize,
    pub topic: String,
    pub reason: FilterError,
}

impl base::HasKind for RuleError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// What is wrong with a rule's topic filter.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("empty topic filter")]
    Empty,
    /// `level` is 1-based.
    #[error("level {level} is empty (write '+' to match any level)")]
    EmptyLevel { level: usize },
    #[error("'#' must be the last level")]
    HashNotLast,
    #[error("level {level:?}: '+' and '#' must be a whole level")]
    PartialWildcard { level: String },
    #[error("level {level:?}: a capture must be a whole level, {{name}}")]
    PartialCapture { level: String },
    #[error("capture {{{name}}}: a label name must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidCaptureName { name: String },
    #[error("capture {{{name}}}: the label name is reserved")]
    ReservedCaptureName { name: String },
    #[error("capture {{{name}}} appears twice")]
    RepeatedCapture { name: String },
}

impl base::HasKind for FilterError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// Compiled rules, in configuration order.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    /// As configured, but with `metric_prefix` sanitized.
    config: RuleConfig,
    levels: Vec<FilterLevel>,
}

#[derive(Clone, Debug)]
enum FilterLevel {
    Exact(String),
    /// `+`, or `{name}` with the name.
    One(Option<String>),
    /// `#`: compile keeps it last.
    Rest,
}

/// The rule that matched a topic and the levels it captured.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleMatch<'a> {
    /// Position in the configuration.
    pub index: usize,
    /// As configured, but with `metric_prefix` sanitized.
    pub rule: &'a RuleConfig,
    /// (label name, topic level), in filter order.
    pub captures: Vec<(&'a str, &'a str)>,
}

impl Rules {
    pub fn compile(configs: &[RuleConfig]) -> Result<Rules, RuleError> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let levels = compile_filter(&c.topic).map_err(|reason| RuleError {
                    index,
                    topic: c.topic.clone(),
                    reason,
                })?;
                let mut config = c.clone();
                config.metric_prefix = sanitize_metric_name(&c.metric_prefix).into_owned();
                Ok(Rule { config, levels })
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules { rules })
    }

    /// The first rule whose filter matches `topic`.
    pub fn find<'a>(&'a self, topic: &'a str) -> Option<RuleMatch<'a>> {
        let mut captures = Vec::new();
        self.rules.iter().enumerate().find_map(|(index, r)| {
            captures.clear();
            let levels = r.levels.iter().map(|l| match l {
                FilterLevel::Exact(s) => Level::Exact(s),
                FilterLevel::One(name) => Level::One(name.as_deref()),
                FilterLevel::Rest => Level::Rest,
            });
            match_levels(levels, topic, |name, value| captures.push((name, value))).then(|| {
                RuleMatch {
                    index,
                    rule: &r.config,
                    captures: std::mem::take(&mut captures),
                }
            })
        })
    }
}

fn compile_filter(filter: &str) -> Result<Vec<FilterLevel>, FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    let count = filter.split('/').count();
    let mut names: Vec<&str> = Vec::new();
    filter
        .split('/')
        .enumerate()
        .map(|(i, level)| {
            Ok(match level {
                "" => return Err(FilterError::EmptyLevel { level: i + 1 }),
                "#" if i + 1 == count => FilterLevel::Rest,
                "#" => return Err(FilterError::HashNotLast),
                "+" => FilterLevel::One(None),
                _ if level.contains(['+', '#']) => {
                    return Err(FilterError::PartialWildcard {
                        level: level.into(),
                    })
                }
                _ if level.contains(['{', '}']) => {
                    let name = level
                        .strip_prefix('{')
                        .and_then(|l| l.strip_suffix('}'))
                        .filter(|n| !n.contains(['{', '}']))
                        .ok_or_else(|| FilterError::PartialCapture {
                            level: level.into(),
                        })?;
                    if !is_valid_label_name(name) {
                        return Err(FilterError::InvalidCaptureName { name: name.into() });
                    }
                    // `topic` is always set to the whole topic; `__` names are
                    // Prometheus' own.
                    if name == "topic" || name.starts_with("__") {
                        return Err(FilterError::ReservedCaptureName { name: name.into() });
                    }
                    if names.contains(&name) {
                        return Err(FilterError::RepeatedCapture { name: name.into() });
                    }
                    names.push(name);
                    FilterLevel::One(Some(name.to_string()))
                }
                _ => FilterLevel::Exact(level.to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn rule(topic: &str) -> RuleConfig {
        RuleConfig {
            topic: topic.into(),
            metric_prefix: String::new(),
            drop_values: Vec::new(),
            timestamp_field: None,
            ignore: false,
        }
    }

    #[test]
    fn captures_and_first_match_wins() {
        let rules = Rules::compile(&[
            rule("sensors/{site}/{device}/#"),
            rule("sensors/+/x"),
            rule("{kind}/#"),
        ])
        .unwrap();
        let m = rules.find("sensors/lab/d1/temp").unwrap();
        assert_eq!(m.index, 0);
        assert_eq!(m.captures, [("site", "lab"), ("device", "d1")]);
        assert_eq!(rules.find("sensors/lab/d1").unwrap().index, 0);
        // Rule 1 also matches, but rule 0 comes first… unless it does not match.
        assert_eq!(
            rules.find("sensors/lab").unwrap().captures,
            [("kind", "sensors")]
        );
        assert_eq!(rules.find("other").unwrap().index, 2);
        assert_eq!(rules.find("$SYS/broker"), None);
        assert!(Rules::compile(&[]).unwrap().find("a").is_none());
    }

    #[test]
    fn prefix_is_sanitized() {
        let mut c = rule("a");
        c.metric_prefix = "1st.floor-".into();
        let rules = Rules::compile(&[c]).unwrap();
        assert_eq!(rules.find("a").unwrap().rule.metric_prefix, "_1st_floor_");
    }

    #[test]
    fn compile_errors_say_which_rule_and_why() {
        for (filter, reason) in [
            ("", "empty topic filter"),
            ("a//b", "level 2 is empty"),
            ("a/", "level 2 is empty"),
            ("a/#/b", "'#' must be the last level"),
            ("a/b+", "'+' and '#' must be a whole level"),
            ("{site}_{index}_{type}", "a capture must be a whole level"),
            ("a/{site", "a capture must be a whole level"),
            ("a/{{x}}", "a capture must be a whole level"),
            ("a/{}", "a label name must match"),
            ("a/{1x}", "a label name must match"),
            ("a/{a-b}", "a label name must match"),
            ("a/{topic}", "reserved"),
            ("a/{__name__}", "reserved"),
            ("{x}/{x}", "capture {x} appears twice"),
        ] {
            let e = Rules::compile(&[rule("ok/#"), rule(filter)]).unwrap_err();
            assert_eq!((e.index, e.topic.as_str()), (1, filter));
            assert!(e.reason.to_string().contains(reason), "{filter}: {e}");
            assert!(e.to_string().starts_with("mqtt.rules[1]: topic "), "{e}");
        }
    }

    #[test]
    fn config_from_toml() {
        #[derive(Debug, Deserialize)]
        struct Mqtt {
            rules: Vec<RuleConfig>,
        }
        let m: Mqtt = toml::from_str(
            r#"
            [[rules]]
            topic = "sensors/{site}/{device}/#"
            drop_values = [-1, -999.5]
            timestamp_field = "time"
            [[rules]]
            topic = "noise/#"
            ignore = true
            "#,
        )
        .unwrap();
        assert_eq!(m.rules[0].drop_values, [-1.0, -999.5]);
        assert_eq!(m.rules[0].timestamp_field.as_deref(), Some("time"));
        assert_eq!(
            m.rules[1],
            RuleConfig {
                ignore: true,
                ..rule("noise/#")
            }
        );
        let e = toml::from_str::<Mqtt>("[[rules]]\ntopic = \"a\"\nprefix = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `prefix`"), "{e}");
    }
}
