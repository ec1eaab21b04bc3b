//! Name sanitization for inputs whose names follow looser rules than
//! Prometheus' (Influx measurements and keys, OpenTSDB metrics and tags), the
//! way VictoriaMetrics does it: every character a Prometheus name may not hold
//! becomes `_`, and a leading digit gets a `_` prefix so that `1wire` stays
//! readable as `_1wire` instead of losing its first character.

use std::borrow::Cow;

/// Makes `name` a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
/// Empty stays empty: callers report that as an error.
pub fn sanitize_metric_name(name: &str) -> Cow<'_, str> {
    sanitize(name, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b':'
    })
}

/// Makes `name` a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
/// Empty stays empty: callers report that as an error.
pub fn sanitize_label_name(name: &str) -> Cow<'_, str> {
    sanitize(name, |b| b.is_ascii_alphanumeric() || b == b'_')
}

fn sanitize(name: &str, allowed: impl Fn(u8) -> bool) -> Cow<'_, str> {
    let leading_digit = name.as_bytes().first().is_some_and(u8::is_ascii_digit);
    // Nearly every name that arrives is already valid; don't allocate for it.
    if !leading_digit && name.bytes().all(&allowed) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if leading_digit {
        out.push('_');
    }
    // Per character, not per byte: `é` becomes one `_`, not two.
    out.extend(name.chars().map(|c| {
        if c.is_ascii() && allowed(c as u8) {
            c
        } else {
            '_'
        }
    }));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{is_valid_label_name, is_valid_metric_name};

    #[test]
    fn metric_names() {
        for (input, want) in [
            ("cpu_load", "cpu_load"),
            ("cpu.load", "cpu_load"),
            ("mqtt/home-pc room", "mqtt_home_pc_room"),
            ("rate:5m", "rate:5m"),
            ("1wire", "_1wire"),
            ("température", "temp_rature"),
            ("_x", "_x"),
            ("", ""),
        ] {
            assert_eq!(sanitize_metric_name(input), want, "{input:?}");
        }
        assert!(matches!(sanitize_metric_name("ok_name"), Cow::Borrowed(_)));
    }

    #[test]
    fn label_names() {
        for (input, want) in [
            ("loc", "loc"),
            ("rate:5m", "rate_5m"),
            ("a.b-c", "a_b_c"),
            ("9", "_9"),
            ("日本", "__"),
            ("", ""),
        ] {
            assert_eq!(sanitize_label_name(input), want, "{input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn results_are_valid_names(s in "\\PC+") {
            proptest::prop_assert!(is_valid_metric_name(&sanitize_metric_name(&s)));
            proptest::prop_assert!(is_valid_label_name(&sanitize_label_name(&s)));
        }
    }
}
