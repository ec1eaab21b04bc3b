//! Series selectors such as `temp{site=~"s[0-9]",dev!="d3"}`, parsed with the
//! promql-parser crate (after the checks of [`crate::limits`], as every
//! query is) and turned into matchers.

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};

use crate::labels::{compile_anchored, MatchOp, Matcher, METRIC_NAME};

/// A selector that cannot be parsed or matches everything; the message says
/// which and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl crate::HasKind for SelectorError {
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidArgument
    }
}

/// One selector may be a union (`{a="1" or b="2"}`): a list of matcher sets.
pub type MatcherSets = Vec<Vec<Matcher>>;

impl From<crate::limits::LimitError> for SelectorError {
    fn from(e: crate::limits::LimitError) -> SelectorError {
        SelectorError(e.to_string())
    }
}

/// Parses one selector (`match[]`), refusing what is too large or nests
/// too deeply for the parser ([`crate::limits::check_promql`]) first.
pub fn parse_selector(s: &str) -> Result<MatcherSets, SelectorError> {
    crate::limits::check_promql("match[] selector", s)?;
    // promql-parser panics on some input (a huge `offset`, found by
    // fuzzing): a panic here is an invalid selector, as in
    // `query::promql::parse`, never a dead request or thread.
    let parsed = std::panic::catch_unwind(|| parser::parse(s))
        .map_err(|_| SelectorError(format!("invalid selector {s:?}: it could not be parsed")))?;
    let expr = parsed.map_err(|e| SelectorError(format!("invalid selector {s:?}: {e}")))?;
    match expr {
        Expr::VectorSelector(vs) => convert_selector(&vs),
        _ => Err(SelectorError(format!(
            "{s:?} is not a series selector such as metric{{label=\"value\"}}"
        ))),
    }
}

/// Converts a parsed vector selector; the metric name becomes a `__name__`
/// matcher like in Prometheus.
pub fn convert_selector(vs: &VectorSelector) -> Result<MatcherSets, SelectorError> {
    let mut sets = Vec::new();
    let base: Vec<&promql_parser::label::Matcher> = vs.matchers.matchers.iter().collect();
    let mut groups: Vec<Vec<&promql_parser::label::Matcher>> = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        groups.push(base);
    } else {
        for alt in &vs.matchers.or_matchers {
            let mut g = base.clone();
            g.extend(alt.iter());
            groups.push(g);
        }
    }
    for g in groups {
        let mut set = Vec::with_capacity(g.len() + 1);
        if let Some(name) = &vs.name {
            set.push(Matcher::equal(METRIC_NAME, name));
        }
        for m in g {
            if vs.name.is_some()
                && m.name == METRIC_NAME
                && matches!(m.op, PMatchOp::Equal)
                && Some(&m.value) == vs.name.as_ref()
            {
                continue;
            }
            set.push(convert_matcher(m)?);
        }
        if set.iter().all(|m| m.matches_empty()) {
            return Err(SelectorError(
                "a selector needs at least one matcher that does not match the empty string".into(),
            ));
        }
        sets.push(set);
    }
    Ok(sets)
}

fn convert_matcher(m: &promql_parser::label::Matcher) -> Result<Matcher, SelectorError> {
    let re = |v: &str| compile_anchored(v).map_err(|e| SelectorError(e.to_string()));
    let op = match &m.op {
        PMatchOp::Equal => MatchOp::Equal,
        PMatchOp::NotEqual => MatchOp::NotEqual,
        PMatchOp::Re(_) => MatchOp::Regex(re(&m.value)?),
        PMatchOp::NotRe(_) => MatchOp::NotRegex(re(&m.value)?),
    };
    Ok(Matcher {
        name: m.name.clone(),
        value: m.value.clone(),
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;

    #[test]
    fn selectors_convert() {
        let sets = parse_selector(r#"temp{site=~"s[01]",dev!="d3"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        let l = Labels::from_pairs([("__name__", "temp"), ("site", "s1"), ("dev", "d1")]);
        assert!(sets[0].iter().all(|m| m.matches_labels(&l)));
        let l2 = Labels::from_pairs([("__name__", "temp"), ("site", "s10")]);
        assert!(
            !sets[0].iter().all(|m| m.matches_labels(&l2)),
            "regex is anchored"
        );
        assert!(parse_selector("{}").is_err());
        assert!(parse_selector(r#"{a=""}"#).is_err());
        assert!(parse_selector("rate(x[5m])").is_err());
        assert!(parse_selector("x{").is_err());
    }

    #[test]
    fn a_selector_that_panics_promql_parser_is_invalid() {
        // Found by the selector fuzz target: promql-parser panics converting
        // an offset this large to a Duration.
        let q = "u(phtquesetst{code=~\"4+.\u{e}\"}[5m] offset 77777777777777777777777777771)";
        let e = parse_selector(q).unwrap_err();
        assert!(e.0.contains("could not be parsed"), "{e:?}");
    }

    #[test]
    fn deep_selectors_are_refused_before_parsing() {
        let deep = format!("{}m{}", "(".repeat(50_000), ")".repeat(50_000));
        assert_eq!(
            parse_selector(&deep).unwrap_err().0,
            "match[] selector nests deeper than 250 levels (at byte 250)"
        );
        // At the limit the parser runs, within a test thread's 2 MiB stack
        // (a tokio worker's), and says what is wrong.
        let at_limit = format!("{}m{}", "(".repeat(250), ")".repeat(250));
        assert!(parse_selector(&at_limit)
            .unwrap_err()
            .0
            .contains("is not a series selector"));
        let many = format!("{{{}}}", vec!["a=~\"(((((\""; 2000].join(","));
        assert!(parse_selector(&many).is_err());
    }
}
