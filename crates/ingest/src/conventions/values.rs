//! What every family shares: state words that are 1 or 0, numbers sent as
//! strings, time fields (recognised by name, case-insensitively, and never
//! stored as values), local device clocks, metric names from the keys
//! firmware uses, and collecting samples into series.

use std::collections::HashMap;

use base::labels::METRIC_NAME;
use base::names::sanitize_metric_name;
use base::{Labels, SeriesSamples};
use chrono::{DateTime, NaiveDateTime, TimeZone as _};
use rustc_hash::FxHashMap;
use serde_json::Value;
use thiserror::Error;

use crate::mqtt_payload::PayloadFormat;

/// The words devices use for a two-state value, as 1 or 0: `ON`/`OFF`,
/// `open`/`closed`, `true`/`false`, `online`/`offline`, `LOCK`/`UNLOCK`,
/// `detected`/`clear`, … Any case.
pub fn state_word(s: &str) -> Option<f64> {
    const ONE: &[&str] = &[
        "on",
        "true",
        "open",
        "opened",
        "online",
        "lock",
        "locked",
        "detected",
        "yes",
        "active",
        "occupied",
        "wet",
        "home",
        "connected",
    ];
    const ZERO: &[&str] = &[
        "off",
        "false",
        "closed",
        "close",
        "offline",
        "unlock",
        "unlocked",
        "clear",
        "no",
        "inactive",
        "idle",
        "unoccupied",
        "dry",
        "not_home",
        "away",
        "disconnected",
    ];
    let s = s.trim();
    if ONE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(1.0)
    } else if ZERO.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(0.0)
    } else {
        None
    }
}

/// A number written as a string (`"21.5"`, `" 7 "`); not `nan` or `inf`,
/// which are failed readings, not words, and not digits with a leading zero
/// (`"021528603314"`: a serial number or a code, which a number would lose).
pub fn number_in_string(s: &str) -> Option<f64> {
    let s = s.trim();
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let first = *digits.first()?;
    if !(first.is_ascii_digit() || first == b'.')
        || (first == b'0' && digits.get(1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The format a payload is in, as the readings report it.
pub(crate) fn payload_format(payload: &[u8]) -> PayloadFormat {
    let Ok(text) = std::str::from_utf8(payload) else {
        return PayloadFormat::Unparsed;
    };
    let t = text.trim();
    if t.starts_with('{') || t.starts_with('[') {
        PayloadFormat::Json
    } else if number_in_string(t).is_some() || t.eq_ignore_ascii_case("nan") {
        PayloadFormat::Number
    } else if state_word(t).is_some() {
        PayloadFormat::Boolean
    } else {
        PayloadFormat::Text
    }
}

/// A JSON value as a sample value: numbers, booleans, state words and
/// numbers in strings; anything else is not a sample.
pub fn sample_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|v| v.is_finite()),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => number_in_string(s).or_else(|| state_word(s)),
        _ => None,
    }
}

/// Keys that hold a time, in any case: they are read as the sample time (by
/// the family that knows which one applies) and never stored as values.
pub fn is_time_key(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "time",
        "ts",
        "timestamp",
        "tst",
        "created_at",
        "frame_time",
        "minute_ts",
        "start_time",
        "end_time",
        "last_seen",
        "last_updated",
        "datetime",
        "date_time",
        "unixtime",
        "epoch",
    ];
    // Every key of every JSON message comes here: most are rejected by
    // their length and first letter before any comparison.
    let Some(first) = key.as_bytes().first().map(u8::to_ascii_lowercase) else {
        return false;
    };
    KEYS.iter()
        .any(|k| k.len() == key.len() && k.as_bytes()[0] == first && key.eq_ignore_ascii_case(k))
}

/// Why a time field was not used.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum TimeError {
    #[error("{0} is not a time (negative or out of range)")]
    Number(f64),
    #[error("{0:?} is not a time (epoch s, ms, µs or ns, or ISO 8601)")]
    Text(String),
    #[error("{0} is not a time")]
    Other(&'static str),
    #[error("{0:?} does not exist or is ambiguous in the device's time zone")]
    Local(String),
}

/// An epoch number in s, ms, µs or ns, told by its magnitude: below 1e11
/// seconds, below 1e14 ms, below 1e17 µs, else ns (each right from 1973 to
/// at least 2262). Fractions are rounded to the ms.
pub fn epoch_ms(t: f64) -> Result<i64, TimeError> {
    let ms = if t < 1e11 {
        t * 1e3
    } else if t < 1e14 {
        t
    } else if t < 1e17 {
        t / 1e3
    } else {
        t / 1e6
    }
    .round();
    if (0.0..i64::MAX as f64).contains(&ms) {
        Ok(ms as i64)
    } else {
        Err(TimeError::Number(t))
    }
}

/// A time value of any form: an epoch number (or one in a string), ISO 8601
/// with an offset, or ISO 8601 without one, read in `zone`.
pub fn time_value(v: &Value, zone: &Zone) -> Result<i64, TimeError> {
    match v {
        Value::Number(n) => epoch_ms(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => time_text(s, zone),
        Value::Bool(_) => Err(TimeError::Other("a boolean")),
        Value::Null => Err(TimeError::Other("null")),
        Value::Array(_) => Err(TimeError::Other("an array")),
        Value::Object(_) => Err(TimeError::Other("an object")),
    }
}

/// [`time_value`] of a string.
pub fn time_text(s: &str, zone: &Zone) -> Result<i64, TimeError> {
    let t = s.trim();
    if let Some(v) = number_in_string(t) {
        return epoch_ms(v);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    // ISO 8601 as firmware writes it: `T` or a space, optional fraction,
    // an offset without a colon (`+0100`) or none at all.
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d.timestamp_millis());
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, f) {
            return zone
                .to_utc_ms(naive)
                .ok_or_else(|| TimeError::Local(s.into()));
        }
    }
    Err(TimeError::Text(s.into()))
}

/// The time zone of a device clock that sends local time without an offset.
#[derive(Clone, Debug, Default)]
pub enum Zone {
    /// The box's own (`/etc/localtime`, or `TZ`).
    #[default]
    Local,
    Utc,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
}

impl Zone {
    /// Parses `local`, `UTC`, or an offset such as `+01:00`, `-0530`, `+2`.
    pub fn parse(s: &str) -> Option<Zone> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("local") {
            return Some(Zone::Local);
        }
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Some(Zone::Utc);
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m) = match digits.len() {
            1 | 2 => (digits.parse::<i32>().ok()?, 0),
            3 | 4 => {
                let (h, m) = digits.split_at(digits.len() - 2);
                (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?)
            }
            _ => return None,
        };
        (h <= 14 && m < 60).then_some(Zone::Fixed(sign * (h * 3600 + m * 60)))
    }

    /// A local wall-clock time in this zone, as UTC ms; `None` for a time
    /// that does not exist or is ambiguous (a DST change).
    pub fn to_utc_ms(&self, naive: NaiveDateTime) -> Option<i64> {
        match self {
            Zone::Local => chrono::Local
                .from_local_datetime(&naive)
                .single()
                .map(|d| d.timestamp_millis()),
            Zone::Utc => Some(naive.and_utc().timestamp_millis()),
            Zone::Fixed(secs) => chrono::FixedOffset::east_opt(*secs)?
                .from_local_datetime(&naive)
                .single()
                .map(|d| d.timestamp_millis()),
        }
    }
}

/// Device clocks' zones: one per device id where configured, else the
/// default.
#[derive(Clone, Debug, Default)]
pub struct TimeZones {
    pub default: Zone,
    pub by_device: HashMap<String, Zone>,
}

impl TimeZones {
    pub fn of(&self, device: &str) -> &Zone {
        self.by_device.get(device).unwrap_or(&self.default)
    }
}

/// How far a device's clock may be from the arrival time before the
/// arrival time is used instead (and the difference reported): a clock
/// that is hours off is wrong, not late.
pub const MAX_CLOCK_SKEW_MS: i64 = 15 * 60 * 1000;

/// The sample time of a message: the device's time when it is close to the
/// arrival time, else the arrival time and the reason.
pub fn device_time(device_ms: Result<i64, TimeError>, received_ms: i64) -> (i64, Option<String>) {
    match device_ms {
        Ok(t) if (t - received_ms).abs() <= MAX_CLOCK_SKEW_MS => (t, None),
        Ok(t) => (
            received_ms,
            Some(format!(
                "the device's time is {} s from the arrival time: the arrival time was used",
                (t - received_ms) / 1000
            )),
        ),
        Err(e) => (received_ms, Some(format!("{e}: the arrival time was used"))),
    }
}

/// A metric name from the keys firmware uses: `ApparentPower` →
/// `apparent_power`, `DS18B20` → `ds18b20`, `linkquality` stays, parts are
/// joined with `_`. Always a valid metric name (possibly empty).
pub fn metric_name<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for part in parts {
        let snake = snake_case(part);
        if snake.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(&snake);
    }
    sanitize_metric_name(&out).into_owned()
}

/// `ApparentPower` → `apparent_power`, `TotalStartTime` →
/// `total_start_time`, `CO2` → `co2`, `pm2.5` → `pm2_5`, `temperature_C`
/// → `temperature_c`.
pub fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            // A new word starts at an upper-case letter after a lower-case
            // one or a digit, or at the last capital of a run followed by
            // lower case (`HTTPServer` → `http_server`).
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Collects samples into series; two samples of the same labels go into
/// one series.
#[derive(Default)]
pub struct SeriesOut {
    series: Vec<SeriesSamples>,
    /// Where each series is, once there are more than [`SCAN_SERIES`]: a
    /// payload with a hundred thousand keys must not cost their square.
    index: FxHashMap<Labels, usize>,
}

/// Series found by a scan, below which an index costs more than it saves.
const SCAN_SERIES: usize = 16;

impl SeriesOut {
    /// Adds a sample of metric `name` with `labels` (besides `__name__`).
    /// An empty name is skipped.
    pub fn push(&mut self, name: &str, labels: &[(&str, &str)], t: i64, v: f64) {
        if name.is_empty() || !v.is_finite() {
            return;
        }
        let l =
            Labels::from_pairs(std::iter::once((METRIC_NAME, name)).chain(labels.iter().copied()));
        let found = if self.series.len() <= SCAN_SERIES {
            self.series.iter().position(|s| s.labels == l)
        } else {
            if self.index.is_empty() {
                self.index = (self.series.iter().enumerate())
                    .map(|(i, s)| (s.labels.clone(), i))
                    .collect();
            }
            self.index.get(&l).copied()
        };
        match found {
            Some(i) => self.series[i].samples.push((t, v)),
            None => {
                if !self.index.is_empty() {
                    self.index.insert(l.clone(), self.series.len());
                }
                self.series.push(SeriesSamples::new(l, vec![(t, v)]));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn into_series(self) -> Vec<SeriesSamples> {
        self.series
    }
}

/// The series of one message about one device: each labelled `device` and
/// `topic` besides its own labels, with the units of their metrics (the
/// first unit given for a metric wins).
pub(crate) struct DeviceSeries<'a> {
    pub device: &'a str,
    pub topic: &'a str,
    series: SeriesOut,
    units: Vec<(String, String)>,
}

impl<'a> DeviceSeries<'a> {
    pub fn new(device: &'a str, topic: &'a str) -> DeviceSeries<'a> {
        DeviceSeries {
            device,
            topic,
            series: SeriesOut::default(),
            units: Vec::new(),
        }
    }

    /// A sample of metric `name` (none if it is empty), with `extra` labels.
    pub fn push(&mut self, name: &str, extra: &[(&str, &str)], t: i64, v: f64, unit: Option<&str>) {
        self.push_for(self.device, name, extra, t, v, unit);
    }

    /// A sample of another device the message speaks for (a bridge's).
    pub fn push_for(
        &mut self,
        device: &str,
        name: &str,
        extra: &[(&str, &str)],
        t: i64,
        v: f64,
        unit: Option<&str>,
    ) {
        if name.is_empty() {
            return;
        }
        let mut labels = Vec::with_capacity(extra.len() + 2);
        labels.extend_from_slice(&[("device", device), ("topic", self.topic)]);
        labels.extend_from_slice(extra);
        self.series.push(name, &labels, t, v);
        self.unit(name, unit);
    }

    pub fn unit(&mut self, metric: &str, unit: Option<&str>) {
        if let Some(u) = unit.filter(|u| !u.is_empty()) {
            if !self.units.iter().any(|(m, _)| m == metric) {
                self.units.push((metric.to_string(), u.to_string()));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Adds the series and units to the reading.
    pub fn finish(self, r: &mut super::Reading) {
        r.series.extend(self.series.into_series());
        r.units.extend(self.units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many series in one message: each sample in its own series, in
    /// order, the same labels twice in one series, in linear time.
    #[test]
    fn series_out_with_many_series() {
        let mut out = SeriesOut::default();
        let n = 100_000;
        for i in 0..n {
            out.push(&format!("m{i}"), &[("device", "d")], 1, i as f64);
        }
        out.push("m5", &[("device", "d")], 2, 5.0);
        out.push("m50000", &[("device", "d")], 2, 7.0);
        let series = out.into_series();
        assert_eq!(series.len(), n);
        assert_eq!(series[5].samples, [(1, 5.0), (2, 5.0)]);
        assert_eq!(series[50_000].samples, [(1, 50_000.0), (2, 7.0)]);
        assert_eq!(series[99_999].labels.metric_name(), Some("m99999"));
    }

    #[test]
    fn words_and_numbers() {
        assert_eq!(state_word("ON"), Some(1.0));
        assert_eq!(state_word("Closed"), Some(0.0));
        assert_eq!(state_word("detected"), Some(1.0));
        assert_eq!(state_word("UNLOCK"), Some(0.0));
        assert_eq!(state_word("kitchen"), None);
        assert_eq!(number_in_string(" 21.5 "), Some(21.5));
        assert_eq!(number_in_string("-3"), Some(-3.0));
        assert_eq!(number_in_string("nan"), None);
        assert_eq!(number_in_string("inf"), None);
        assert_eq!(number_in_string("12abc"), None);
        assert_eq!(number_in_string("021528603314"), None);
        assert_eq!(number_in_string("-007"), None);
        assert_eq!(number_in_string("0.5"), Some(0.5));
        assert_eq!(number_in_string("-0.25"), Some(-0.25));
        assert_eq!(number_in_string("0"), Some(0.0));
        assert_eq!(number_in_string(".5"), Some(0.5));
        assert_eq!(number_in_string("+-1"), None);
        assert_eq!(sample_value(&serde_json::json!("OFF")), Some(0.0));
        assert_eq!(sample_value(&serde_json::json!("47.69")), Some(47.69));
        assert_eq!(sample_value(&serde_json::json!(null)), None);
    }

    #[test]
    fn times() {
        let utc = Zone::Utc;
        assert_eq!(epoch_ms(1_700_000_000.0), Ok(1_700_000_000_000));
        assert_eq!(epoch_ms(1_700_000_000_123.0), Ok(1_700_000_000_123));
        assert_eq!(epoch_ms(1_700_000_000_123_456.0), Ok(1_700_000_000_123));
        assert_eq!(epoch_ms(1.7e18), Ok(1_700_000_000_000));
        assert!(epoch_ms(-5.0).is_err());
        assert_eq!(
            time_text("2018-02-15T17:37:10", &utc),
            Ok(1_518_716_230_000)
        );
        assert_eq!(
            time_text("2018-02-15T17:37:10", &Zone::Fixed(3600)),
            Ok(1_518_716_230_000 - 3_600_000)
        );
        assert_eq!(
            time_text("2018-02-15T17:37:10+01:00", &utc),
            Ok(1_518_716_230_000 - 3_600_000)
        );
        assert_eq!(
            time_text("2018-02-15T17:37:10.5+0100", &utc),
            Ok(1_518_716_230_500 - 3_600_000)
        );
        assert_eq!(time_text("1518716230", &utc), Ok(1_518_716_230_000));
        assert!(time_text("yesterday", &utc).is_err());
        assert!(is_time_key("Time") && is_time_key("TST") && !is_time_key("temperature"));
        assert_eq!(
            Zone::parse("+01:00").map(|z| z.to_utc_ms(NaiveDateTime::default())),
            Some(Some(-3_600_000))
        );
        assert!(Zone::parse("+25").is_none());
        assert!(Zone::parse("+-1").is_none());
        assert!(Zone::parse("Europe/Berlin").is_none());
    }

    #[test]
    fn clocks_far_off_are_not_believed() {
        let now = 1_700_000_000_000;
        assert_eq!(device_time(Ok(now - 1000), now), (now - 1000, None));
        let (t, why) = device_time(Ok(now - 3_600_000), now);
        assert_eq!(t, now);
        assert!(why.unwrap().contains("-3600 s"));
        let (t, why) = device_time(Err(TimeError::Other("null")), now);
        assert_eq!(t, now);
        assert!(why.unwrap().contains("null is not a time"));
    }

    #[test]
    fn names() {
        assert_eq!(snake_case("ApparentPower"), "apparent_power");
        assert_eq!(snake_case("TotalStartTime"), "total_start_time");
        assert_eq!(snake_case("DS18B20"), "ds18b20");
        assert_eq!(snake_case("CO2"), "co2");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("linkquality"), "linkquality");
        assert_eq!(snake_case("pm2.5"), "pm2_5");
        assert_eq!(snake_case("temperature_C"), "temperature_c");
        assert_eq!(snake_case("switch:0"), "switch_0");
        assert_eq!(metric_name(["ENERGY", "Total"]), "energy_total");
        assert_eq!(metric_name(["1wire"]), "_1wire");
    }

    #[test]
    fn series_collect_by_labels() {
        let mut out = SeriesOut::default();
        out.push("t", &[("device", "a")], 1, 1.0);
        out.push("t", &[("device", "a")], 2, 2.0);
        out.push("t", &[("device", "b")], 1, 3.0);
        out.push("", &[], 1, 1.0);
        out.push("t", &[], 1, f64::NAN);
        let s = out.into_series();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].samples, [(1, 1.0), (2, 2.0)]);
    }
}
