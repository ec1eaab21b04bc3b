//! Time in conditions: the operands a time may be compared with
//! (timestamps, `now()`, durations, nanosecond numbers) and the bounds a
//! `WHERE` clause puts on the time range read.

use super::error::InfluxError;
use super::parse::Expr;

/// A time operand in ms: a timestamp string, a number of nanoseconds, now()
/// and durations.
pub(super) fn time_operand(e: &Expr, now: i64) -> Option<i64> {
    match e {
        Expr::Now => Some(now),
        Expr::Number(ns) => Some((*ns / 1e6) as i64),
        Expr::Duration(ns) => Some(ns / 1_000_000),
        Expr::Str(s) => parse_time_literal(s),
        Expr::Binary(a, op @ ("+" | "-"), b) => {
            let a = time_operand(a, now)?;
            let b = match &**b {
                Expr::Duration(ns) => ns / 1_000_000,
                other => time_operand(other, now)?,
            };
            Some(if *op == "+" {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            })
        }
        _ => None,
    }
}

fn parse_time_literal(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// Whether `e` names the time column.
pub(super) fn is_time(e: &Expr) -> bool {
    matches!(e, Expr::Ident(n) if n.eq_ignore_ascii_case("time"))
}

/// Time bounds `[lo, hi]` (ms) from the top-level `AND`ed time comparisons;
/// the rest of the condition is evaluated per row. Time inside `OR` is
/// refused rather than answered wrongly.
pub(super) fn time_bounds(
    e: Option<&Expr>,
    now: i64,
) -> Result<(Option<i64>, Option<i64>), InfluxError> {
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    fn mentions_time(e: &Expr) -> bool {
        match e {
            Expr::Binary(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                mentions_time(a) || mentions_time(b)
            }
            e => is_time(e),
        }
    }
    fn walk(
        e: &Expr,
        now: i64,
        lo: &mut Option<i64>,
        hi: &mut Option<i64>,
    ) -> Result<(), InfluxError> {
        match e {
            Expr::And(a, b) => {
                walk(a, now, lo, hi)?;
                walk(b, now, lo, hi)
            }
            Expr::Or(a, b) if mentions_time(a) || mentions_time(b) => Err(InfluxError::TimeInOr),
            Expr::Binary(a, op, b) if is_time(a) || is_time(b) => {
                let (other, flip) = if is_time(a) { (b, false) } else { (a, true) };
                let x = time_operand(other, now)
                    .ok_or_else(|| InfluxError::NotATime((**other).clone()))?;
                let op = if flip {
                    match *op {
                        "<" => ">",
                        "<=" => ">=",
                        ">" => "<",
                        ">=" => "<=",
                        o => o,
                    }
                } else {
                    op
                };
                let raise = |lo: &mut Option<i64>, v: i64| *lo = Some(lo.map_or(v, |l| l.max(v)));
                let lower = |hi: &mut Option<i64>, v: i64| *hi = Some(hi.map_or(v, |h| h.min(v)));
                match op {
                    ">" => raise(lo, x.saturating_add(1)),
                    ">=" => raise(lo, x),
                    "<" => lower(hi, x.saturating_sub(1)),
                    "<=" => lower(hi, x),
                    "=" => {
                        raise(lo, x);
                        lower(hi, x);
                    }
                    "!=" => {}
                    o => return Err(InfluxError::TimeOperator(o)),
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    if let Some(e) = e {
        walk(e, now, &mut lo, &mut hi)?;
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influxql::parse::{parse, Statement};

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn bounds(condition: &str) -> Result<(Option<i64>, Option<i64>), InfluxError> {
        let q = format!("SELECT v FROM m WHERE {condition}");
        let Statement::Select(s) = parse(&q).unwrap().remove(0) else {
            panic!("{q}")
        };
        time_bounds(s.condition.as_ref(), NOW)
    }

    #[test]
    fn time_literals_in_every_accepted_form() {
        for (text, ms) in [
            ("2026-01-01T00:00:00Z", NOW),
            ("2026-01-01T01:00:00+01:00", NOW),
            ("2026-01-01T00:00:00.25Z", NOW + 250),
            ("2026-01-01 00:00:01", NOW + 1000),
            ("2026-01-01 00:00:01.5", NOW + 1500),
            ("2026-01-01T00:00:02.5", NOW + 2500),
            ("2026-01-01", NOW),
        ] {
            assert_eq!(parse_time_literal(text), Some(ms), "{text}");
        }
        assert_eq!(parse_time_literal("yesterday"), None);
        assert_eq!(parse_time_literal("2026-13-01"), None);
    }

    #[test]
    fn anded_comparisons_narrow_the_range() {
        // `>` and `<` exclude the instant itself; ms is the resolution.
        assert_eq!(
            bounds("time > now() - 1h AND time < now()").unwrap(),
            (Some(NOW - 3_600_000 + 1), Some(NOW - 1))
        );
        // Either side may hold the time; nanosecond numbers are times.
        assert_eq!(
            bounds("'2026-01-01' <= time AND 1767225660000000000 >= time").unwrap(),
            (Some(NOW), Some(NOW + 60_000))
        );
        assert_eq!(
            bounds("time = '2026-01-01T00:00:00Z' + 10s").unwrap(),
            (Some(NOW + 10_000), Some(NOW + 10_000))
        );
        // The narrowest of several bounds wins; != and tags leave them be.
        assert_eq!(
            bounds("time > now() - 2h AND host = 'a' AND time > now() - 1h AND time != now()")
                .unwrap(),
            (Some(NOW - 3_600_000 + 1), None)
        );
    }

    #[test]
    fn time_comparisons_it_cannot_bound_are_refused() {
        assert_eq!(
            bounds("time > now() - 1h OR host = 'a'")
                .unwrap_err()
                .to_string(),
            "time conditions combined with OR are not supported; combine them with AND"
        );
        assert_eq!(
            bounds("time > 'yesterday'").unwrap_err().to_string(),
            "cannot compare time with Str(\"yesterday\")"
        );
        assert_eq!(
            bounds("time =~ /x/").unwrap_err().to_string(),
            "cannot compare time with Regex(\"x\")"
        );
        // A tag-only OR is evaluated per row, not bounded.
        assert_eq!(bounds("host = 'a' OR host = 'b'").unwrap(), (None, None));
    }
}
