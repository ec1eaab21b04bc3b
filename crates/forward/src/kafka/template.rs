//! Kafka topic templates: `topic = "{site}_{index}_{type}"`, text with
//! `{label}` and `{topic.N}` rendered per series into a name Kafka takes.

use thiserror::Error;

/// A piece of a topic template.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Label(String),
    TopicLevel(usize),
}

impl Piece {
    /// What is between a pair of braces.
    fn parse(name: &str) -> Result<Piece, TopicTemplateError> {
        if let Some(n) = name.strip_prefix("topic.") {
            return n
                .parse()
                .map(Piece::TopicLevel)
                .map_err(|_| TopicTemplateError::BadLevel(name.to_string()));
        }
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(TopicTemplateError::NotALabel(name.to_string()));
        }
        Ok(Piece::Label(name.to_string()))
    }
}

/// `topic = "{site}_{index}_{type}"`: text with `{label}` and `{topic.N}`
/// (the N-th level, from 0, of the MQTT topic a sample came from).
#[derive(Clone, Debug)]
pub struct TopicTemplate(Vec<Piece>);

/// Why a topic template cannot be used; byte offsets are from the start
/// of the template.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TopicTemplateError {
    #[error("unmatched '}}' at byte {0}")]
    UnmatchedClose(usize),
    #[error("unclosed '{{' at byte {0}")]
    Unclosed(usize),
    /// `{topic.N}` with an N that is not a number (the whole braced text).
    #[error("{{{0}}}: the level must be a number")]
    BadLevel(String),
    #[error("{{{0}}} is not a label name")]
    NotALabel(String),
    #[error("the topic is empty")]
    Empty,
}

impl base::HasKind for TopicTemplateError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

impl TopicTemplate {
    pub fn parse(s: &str) -> Result<TopicTemplate, TopicTemplateError> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            let at = s.len() - rest.len() + open;
            if rest.as_bytes()[open] == b'}' {
                return Err(TopicTemplateError::UnmatchedClose(at));
            }
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(TopicTemplateError::Unclosed(at));
            };
            pieces.push(Piece::parse(&rest[open + 1..open + close])?);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err(TopicTemplateError::Empty);
        }
        Ok(TopicTemplate(pieces))
    }

    /// The topic of a series (labels sorted by name). A missing label is
    /// empty; characters Kafka does not allow in topic names become `_`.
    pub fn render(&self, labels: &[(String, String)]) -> String {
        let label = |n: &str| {
            labels
                .iter()
                .find(|(k, _)| k == n)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Label(n) => out.push_str(label(n)),
                Piece::TopicLevel(i) => {
                    out.push_str(label("topic").split('/').nth(*i).unwrap_or(""))
                }
            }
        }
        let mut topic: String = out
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(249)
            .collect();
        if topic.is_empty() || topic == "." || topic == ".." {
            topic = "perch".into();
        }
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn topic_templates() {
        let l = labels(&[
            ("__name__", "env_temp"),
            ("site", "greenhouse 2"),
            ("type", "temperature"),
            ("topic", "sensors/gh2/air"),
        ]);
        let t = TopicTemplate::parse("{site}_{index}_{type}").unwrap();
        assert_eq!(t.render(&l), "greenhouse_2__temperature");
        let t = TopicTemplate::parse("iot.{topic.1}.{__name__}").unwrap();
        assert_eq!(t.render(&l), "iot.gh2.env_temp");
        assert_eq!(
            TopicTemplate::parse("{missing}").unwrap().render(&l),
            "perch"
        );
        for (bad, why) in [
            ("", "the topic is empty"),
            ("{", "unclosed '{' at byte 0"),
            ("ab{site", "unclosed '{' at byte 2"),
            ("a}", "unmatched '}' at byte 1"),
            ("{a-b}", "{a-b} is not a label name"),
            ("{topic.x}", "{topic.x}: the level must be a number"),
            ("{}", "{} is not a label name"),
            ("{1a}", "{1a} is not a label name"),
        ] {
            let e = TopicTemplate::parse(bad).expect_err(bad);
            assert_eq!(e.to_string(), why, "{bad:?}");
        }
        assert!(TopicTemplate::parse("x").unwrap().render(&l).len() == 1);
    }
}
