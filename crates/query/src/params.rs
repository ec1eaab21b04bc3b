//! Parameters of the Prometheus HTTP API: times as RFC 3339 or Unix seconds,
//! durations as `5m` or seconds.

use super::QueryError;

/// Parses a time: Unix seconds (with fraction) or RFC 3339. Returns ms.
pub fn parse_time(s: &str, what: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() {
            let ms = (secs * 1000.0).round();
            // Prometheus accepts the extremes it uses for "min/max time".
            return Ok(ms.clamp(i64::MIN as f64, i64::MAX as f64) as i64);
        }
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            QueryError::BadData(format!(
                "invalid parameter {what:?}: cannot parse {s:?} to a valid timestamp"
            ))
        })
}

/// Parses a duration: `5m`, `1h30m`, or (float) seconds. Returns ms.
pub fn parse_duration_ms(s: &str, what: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    let bad = || {
        QueryError::BadData(format!(
            "invalid parameter {what:?}: cannot parse {s:?} to a valid duration"
        ))
    };
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 1e15 {
            return Err(bad());
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    base::units::parse_duration(s)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_time("1700000000", "t").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("1700000000.123", "t").unwrap(),
            1_700_000_000_123
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", "t").unwrap(),
            1_767_225_600_000
        );
        assert!(parse_time("yesterday", "t").is_err());
        assert_eq!(parse_duration_ms("15", "step").unwrap(), 15_000);
        assert_eq!(parse_duration_ms("1m30s", "step").unwrap(), 90_000);
        assert!(parse_duration_ms("abc", "step").is_err());
    }
}
