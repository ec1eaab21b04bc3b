//! MQTT topic names and filters: standard matching (`+` one level, `#` the
//! rest), for the broker's ACLs, the explorer, forwarding and the collector's
//! topic rules alike.

/// Standard MQTT matching: `+` matches one level (also an empty one), `#`
/// (last only) matches zero or more levels, so `a/#` matches `a`; a filter
/// starting with a wildcard does not match topics starting with `$`. An
/// invalid filter (`a/#/b`, `a+`) matches nothing. `topic` is taken as a
/// topic name: wildcards in it are plain characters.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if filter.is_empty() || topic.is_empty() {
        return false;
    }
    let count = filter.split('/').count();
    let levels = filter.split('/').enumerate().map(|(i, l)| match l {
        "#" if i + 1 == count => Level::Rest,
        "+" => Level::One(None),
        _ if l.contains(['+', '#']) => Level::Invalid,
        _ => Level::Exact(l),
    });
    match_levels(levels, topic, |_, _| {})
}

/// One level of a topic filter.
#[derive(Clone, Copy)]
pub enum Level<'f> {
    Exact(&'f str),
    One(Option<&'f str>),
    Rest,
    Invalid,
}

/// `capture` gets (name, level) for each named `One`, and may be called
/// before the match fails.
pub fn match_levels<'f, 't>(
    filter: impl Iterator<Item = Level<'f>>,
    topic: &'t str,
    mut capture: impl FnMut(&'f str, &'t str),
) -> bool {
    let mut topic_levels = topic.split('/');
    for (i, level) in filter.enumerate() {
        if i == 0 && topic.starts_with('$') && !matches!(level, Level::Exact(_)) {
            return false;
        }
        match level {
            Level::Exact(want) => {
                if topic_levels.next() != Some(want) {
                    return false;
                }
            }
            Level::One(name) => match (topic_levels.next(), name) {
                (None, _) => return false,
                (Some(value), Some(name)) => capture(name, value),
                (Some(_), None) => {}
            },
            Level::Rest => return true,
            Level::Invalid => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether `filter` is a valid MQTT topic filter: not empty, `#` only as
/// the whole last level, `+` only as a whole level.
pub fn is_valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && !levels.iter().enumerate().any(|(j, l)| {
            (l.contains('#') && (*l != "#" || j + 1 != levels.len()))
                || (l.contains('+') && *l != "+")
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn mqtt_matching() {
        for (filter, topic, want) in [
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a/+", "a/b", true),
            ("a/+", "a/", true),
            ("a/+", "a", false),
            ("a/+/c", "a/b/c", true),
            ("+/+", "/x", true),
            ("+", "/x", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+/#", "a", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/$b", "a/$b", true),
            ("A", "a", false),
            ("a/#/b", "a/x/b", false),
            ("a/b#", "a/b#", false),
            ("a+", "a+", false),
            ("", "a", false),
            ("#", "", false),
            ("{x}", "{x}", true),
            ("{x}", "y", false),
        ] {
            assert_eq!(topic_matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    /// Matching written the naive way, with the levels in vectors.
    fn reference(filter: &str, topic: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        if filter.is_empty() || topic.is_empty() {
            return false;
        }
        if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
            return false;
        }
        for (i, l) in f.iter().enumerate() {
            if l.contains(['+', '#']) && *l != "+" && *l != "#" {
                return false;
            }
            if *l == "#" {
                return i + 1 == f.len();
            }
            if i >= t.len() || (*l != "+" && *l != t[i]) {
                return false;
            }
        }
        f.len() == t.len()
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            filter in "[ab+#$/]{0,8}",
            topic in "[ab$/]{0,8}",
        ) {
            prop_assert_eq!(topic_matches(&filter, &topic), reference(&filter, &topic));
        }
    }
}
