//! MQTT payloads to series: what the collector runs on every PUBLISH. It owns
//! the detection of the payload's format and the mapping of each format to
//! samples; it uses [`line_protocol`] and [`opentsdb`] for theirs, and the
//! topic [`Rules`] for labels, prefixes, sentinels and timestamps.
//!
//! Detection, cheapest first, each step final once it applies:
//! 1. The trimmed payload is a number (`21.5`, ` 7\n`, `1e3`) or a boolean
//!    (`true`, `false`, `on`, `off`, any case): one sample, named after the
//!    last non-empty topic level, `temperature{topic="a/b/temperature"}`.
//!    A level `state` (any case) or a bare number (a channel index) names
//!    nothing, so the level before it is used: `x/y/temperature/state` →
//!    `temperature`, `shellies/x/relay/0` → `relay` (the `topic` label keeps
//!    the channels apart); only a topic of such levels alone is named after
//!    its last one. `nan` and `inf` (what an Arduino prints for a failed
//!    read) are sensor errors, never stored: counted in `dropped_sentinels`.
//! 2. It starts with `{` or `[`: JSON, or unparsed if it is not valid JSON.
//!    An object with `metric` and `value` keys, or a non-empty array of only
//!    such objects, is OpenTSDB; any other JSON is generic (see
//!    [`parse_message`]).
//! 3. Anything else is tried as InfluxDB line protocol, precision ns, lines
//!    without a timestamp at the receive time. A body of which no line parses
//!    is unparsed; otherwise bad lines are reported in `errors`.
//!
//! Unparsed payloads (also those that are not UTF-8, and empty ones) yield no
//! series: the collector keeps them as messages and counts them.

use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

use super::conventions::values::{self, is_time_key, number_in_string, state_word};
use super::line_protocol::{self, Precision};
use super::opentsdb;
use super::rules::{RuleConfig, Rules};
use super::MAX_ERRORS;
use base::labels::METRIC_NAME;
use base::names::sanitize_metric_name;
use base::{Labels, MeasurementField, SeriesSamples};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadFormat {
    Number,
    Boolean,
    Json,
    OpenTsdb,
    LineProtocol,
    /// Text that a device family knows is not a sample (a text sensor's
    /// state, a mode, a log line): read, with nothing to store.
    Text,
    Unparsed,
    /// A rule with `ignore = true` matched the topic.
    Ignored,
}

#[derive(Debug)]
pub struct ParsedMessage {
    /// In order of first appearance; samples in payload order.
    pub series: Vec<SeriesSamples>,
    pub format: PayloadFormat,
    /// Samples not stored because they were a rule's `drop_values` (or a
    /// plain `nan`/`inf` payload).
    pub dropped_sentinels: usize,
    /// What was refused and why: bad lines, bad data points, unusable JSON
    /// fields; for an unparsed payload, why it is not one of the formats.
    pub errors: Vec<String>,
}

impl ParsedMessage {
    fn new(format: PayloadFormat) -> ParsedMessage {
        ParsedMessage {
            series: Vec::new(),
            format,
            dropped_sentinels: 0,
            errors: Vec::new(),
        }
    }

    fn unparsed(why: String) -> ParsedMessage {
        ParsedMessage {
            errors: vec![why],
            ..ParsedMessage::new(PayloadFormat::Unparsed)
        }
    }
}

/// Parses one message; never fails, never panics. Every series carries label
/// `topic` (the whole topic) and the captures of the first rule matching the
/// topic, if any.
///
/// Generic JSON: each numeric or boolean leaf of an object is a series named
/// by its keys joined with `_` and sanitized (`{"env":{"co2":612}}` →
/// `env_co2`); so is a string that holds a number (`"47.69"`, read by
/// [`number_in_string`]) or a two-state word (`"ON"`, `"closed"`: 1 or 0 by
/// [`state_word`]). Other strings and nulls are not samples,
/// and neither are arrays inside an object (`{"t":[21,22]}`): positions are
/// not names, and indexing them would make series that mean different
/// things from message to message.
/// A top-level array is taken element by element; its non-object elements are
/// skipped, so an array of numbers stores nothing. Two leaves of one object
/// that name one series (`{"a.b":1,"a_b":2}`) keep the first.
///
/// The time of an object is its first valid top-level time field: one whose
/// key [`is_time_key`] recognises, in any case (`ts`, `time`,
/// `timestamp`, `tst`, `created_at`, `last_seen`, …), or the rule's
/// `timestamp_field` alone instead; else `received_ms`. Those fields are
/// never samples (with a rule's `timestamp_field`, the others are ordinary
/// fields: the rule says which one is the time). It may be an RFC 3339 string
/// or an epoch number, as such or in a string, whose unit is told by its
/// magnitude: below 1e11 seconds, below 1e14 ms, below 1e17 µs, else ns. Each
/// unit is so read right from March 1973 to the year 5138 (ns: to 2262, the
/// end of 64 bits). Fractions are rounded to the ms; negative epochs are
/// refused (then `received_ms` is used and the reason is in `errors`).
/// OpenTSDB and line protocol carry their own timestamps.
///
/// Then the rule's `metric_prefix` is prepended to every metric name and its
/// `drop_values` are removed.
pub fn parse_message(
    topic: &str,
    payload: &[u8],
    received_ms: i64,
    rules: &Rules,
) -> ParsedMessage {
    let found = rules.find(topic);
    let rule = found.as_ref().map(|m| m.rule);
    if rule.is_some_and(|r| r.ignore) {
        return ParsedMessage::new(PayloadFormat::Ignored);
    }
    let topic_only = [("topic", topic)];
    let with_captures: Vec<_>;
    let extra: &[(&str, &str)] = match &found {
        Some(m) if !m.captures.is_empty() => {
            with_captures = topic_only.iter().chain(&m.captures).copied().collect();
            &with_captures
        }
        _ => &topic_only,
    };
    let Ok(text) = std::str::from_utf8(payload) else {
        return ParsedMessage::unparsed("payload is not UTF-8 text".into());
    };
    let mut msg = parse_text(topic, text, received_ms, extra, rule);
    if let Some(rule) = rule {
        apply_rule(rule, &mut msg);
    }
    msg
}

fn parse_text(
    topic: &str,
    text: &str,
    received_ms: i64,
    extra: &[(&str, &str)],
    rule: Option<&RuleConfig>,
) -> ParsedMessage {
    let trimmed = text.trim_ascii();
    if let Some((value, format)) = scalar(trimmed) {
        let mut msg = ParsedMessage::new(format);
        let Some(level) = metric_level(topic) else {
            msg.errors.push(format!(
                "topic {topic:?} has no level to name the metric after"
            ));
            return msg;
        };
        if value.is_finite() {
            msg.series.push(SeriesSamples::new(
                series_labels(&sanitize_metric_name(level), extra),
                vec![(received_ms, value)],
            ));
        } else {
            msg.dropped_sentinels = 1;
        }
        return msg;
    }
    match trimmed.as_bytes().first() {
        None => ParsedMessage::unparsed("empty payload".into()),
        Some(b'{' | b'[') => json(text.as_bytes(), received_ms, extra, rule),
        Some(_) => {
            let p = line_protocol::parse(text, Precision::Nanoseconds, received_ms, extra);
            let mut errors = p.errors.into_iter().map(|e| e.message);
            if p.samples == 0 {
                let why = "not a number, boolean, JSON or line protocol";
                return ParsedMessage::unparsed(match errors.next() {
                    Some(e) => format!("{why} ({e})"),
                    None => why.into(),
                });
            }
            ParsedMessage {
                series: p.series,
                errors: errors.collect(),
                ..ParsedMessage::new(PayloadFormat::LineProtocol)
            }
        }
    }
}

/// The topic level a scalar payload is named after: the last non-empty one
/// that is neither `state` nor a bare number, else the last non-empty one.
fn metric_level(topic: &str) -> Option<&str> {
    let names_nothing =
        |l: &str| l.eq_ignore_ascii_case("state") || l.bytes().all(|b| b.is_ascii_digit());
    let mut levels = topic.rsplit('/').filter(|l| !l.is_empty());
    let last = levels.next()?;
    if !names_nothing(last) {
        return Some(last);
    }
    Some(levels.find(|l| !names_nothing(l)).unwrap_or(last))
}

fn scalar(s: &str) -> Option<(f64, PayloadFormat)> {
    for (word, value) in [("true", 1.0), ("on", 1.0), ("false", 0.0), ("off", 0.0)] {
        if s.eq_ignore_ascii_case(word) {
            return Some((value, PayloadFormat::Boolean));
        }
    }
    // Also takes `nan`, `inf` and `infinity` in any case, on purpose.
    s.parse().ok().map(|v| (v, PayloadFormat::Number))
}

fn series_labels(name: &str, extra: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(std::iter::once((METRIC_NAME, name)).chain(extra.iter().copied()))
}

fn apply_rule(rule: &RuleConfig, msg: &mut ParsedMessage) {
    if !rule.metric_prefix.is_empty() {
        for s in &mut msg.series {
            let name = format!(
                "{}{}",
                rule.metric_prefix,
                s.labels.metric_name().unwrap_or_default()
            );
            s.labels.set(METRIC_NAME, &name);
            if let Some(o) = &s.origin {
                s.origin = Some(Arc::new(MeasurementField {
                    measurement: format!("{}{}", rule.metric_prefix, o.measurement),
                    field: o.field.clone(),
                }));
            }
        }
    }
    if !rule.drop_values.is_empty() {
        for s in &mut msg.series {
            let before = s.samples.len();
            s.samples.retain(|(_, v)| !rule.drop_values.contains(v));
            msg.dropped_sentinels += before - s.samples.len();
        }
        msg.series.retain(|s| !s.samples.is_empty());
    }
}

fn json(
    body: &[u8],
    received_ms: i64,
    extra: &[(&str, &str)],
    rule: Option<&RuleConfig>,
) -> ParsedMessage {
    let mut w = Walk {
        received_ms,
        ts_field: rule.and_then(|r| r.timestamp_field.as_deref()),
        path: String::with_capacity(64),
        out: ByName {
            extra,
            series: Vec::new(),
            ids: FxHashMap::default(),
            last_record: Vec::new(),
        },
        errors: Vec::new(),
        records: 0,
        opentsdb: true,
        pending: Vec::new(),
        ts: None,
        ts_seen: false,
        has_metric: false,
        has_value: false,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Node {
        w: &mut w,
        role: Role::Top,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = walked {
        return ParsedMessage::unparsed(format!("invalid JSON: {e}"));
    }
    if w.records == 0 || !w.opentsdb {
        return ParsedMessage {
            series: w.out.series,
            errors: w.errors,
            ..ParsedMessage::new(PayloadFormat::Json)
        };
    }
    match opentsdb::parse(body, extra) {
        Ok(p) => ParsedMessage {
            series: p.series,
            errors: p
                .errors
                .into_iter()
                .map(|e| format!("data point {}: {}", e.index, e.message))
                .collect(),
            ..ParsedMessage::new(PayloadFormat::OpenTsdb)
        },
        Err(e) => ParsedMessage::unparsed(e.to_string()),
    }
}

/// Generic JSON, read in one pass without building a `serde_json::Value`:
/// keys are appended to `path` as they come, leaves become series at once,
/// and their samples wait in `pending` for the end of their object, because
/// the object's timestamp may come after them.
struct Walk<'a> {
    received_ms: i64,
    ts_field: Option<&'a str>,
    path: String,
    out: ByName<'a>,
    errors: Vec<String>,
    /// Objects seen so far, the current one included.
    records: usize,
    /// So far, every element was an object with `metric` and `value`.
    opentsdb: bool,
    // The current object.
    pending: Vec<(usize, f64)>,
    ts: Option<i64>,
    ts_seen: bool,
    has_metric: bool,
    has_value: bool,
}

impl Walk<'_> {
    fn error(&mut self, message: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message);
        }
    }

    fn record<'de, A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error> {
        self.records += 1;
        self.pending.clear();
        self.ts = None;
        self.ts_seen = false;
        self.has_metric = false;
        self.has_value = false;
        self.object(map, true)?;
        self.opentsdb &= self.has_metric && self.has_value;
        if let (Some(field), false) = (self.ts_field, self.ts_seen) {
            self.error(format!(
                "no timestamp field {field:?}: the receive time was used"
            ));
        }
        let ts = self.ts.unwrap_or(self.received_ms);
        for &(id, v) in &self.pending {
            self.out.series[id].samples.push((ts, v));
        }
        Ok(())
    }

    fn object<'de, A: MapAccess<'de>>(&mut self, mut map: A, top: bool) -> Result<(), A::Error> {
        let base = self.path.len();
        while map.next_key_seed(Key(&mut self.path))?.is_some() {
            let mut role = Role::Field;
            if top {
                let key = self.path.as_str();
                self.has_metric |= key == "metric";
                self.has_value |= key == "value";
                let is_ts = match self.ts_field {
                    Some(field) => key == field,
                    None => is_time_key(key),
                };
                if is_ts {
                    self.ts_seen = true;
                    role = Role::Timestamp;
                }
            }
            map.next_value_seed(Node { w: self, role })?;
            self.path.truncate(base);
        }
        Ok(())
    }

    fn leaf(&mut self, value: f64) {
        let name = sanitize_metric_name(&self.path);
        if name.is_empty() {
            return self.error("a field with an empty key is not a sample".into());
        }
        let id = self.out.id(&name);
        if self.out.last_record[id] == self.records {
            return self.error(format!(
                "field {:?}: another field of the object already gave series {:?}",
                self.path,
                sanitize_metric_name(&self.path)
            ));
        }
        self.out.last_record[id] = self.records;
        self.pending.push((id, value));
    }

    fn timestamp(&mut self, ms: Result<i64, NotATimestamp<'_>>) {
        match ms {
            Ok(ms) => {
                self.ts.get_or_insert(ms);
            }
            Err(why) => self.error(format!(
                "field {:?}: {why}: the receive time was used",
                self.path
            )),
        }
    }
}

/// Why the value of an object's timestamp field was not used.
#[derive(Debug, Error)]
enum NotATimestamp<'v> {
    #[error("{0:?} is not a timestamp (negative or out of range)")]
    Number(f64),
    #[error("{0:?} is not a timestamp (epoch s, ms, µs or ns, or RFC 3339)")]
    Text(&'v str),
    /// What the value is instead, such as "a boolean".
    #[error("{0} is not a timestamp")]
    Other(&'static str),
}

/// The series of a message by metric name: their other labels are the same.
struct ByName<'a> {
    extra: &'a [(&'a str, &'a str)],
    series: Vec<SeriesSamples>,
    /// Name → index in `series`, filled only past [`LINEAR_SEARCH`] series.
    ids: FxHashMap<String, usize>,
    /// Per series, the last object (`Walk::records`) that gave it a value.
    last_record: Vec<usize>,
}

impl ByName<'_> {
    fn id(&mut self, name: &str) -> usize {
        let found = if self.ids.is_empty() {
            self.series
                .iter()
                .position(|s| s.labels.metric_name() == Some(name))
        } else {
            self.ids.get(name).copied()
        };
        if let Some(id) = found {
            return id;
        }
        let id = self.series.len();
        self.series.push(SeriesSamples::new(
            series_labels(name, self.extra),
            Vec::new(),
        ));
        self.last_record.push(0);
        if id == LINEAR_SEARCH {
            self.ids = (self.series.iter().enumerate())
                .map(|(i, s)| (s.labels.metric_name().unwrap_or_default().to_string(), i))
                .collect();
        } else if id > LINEAR_SEARCH {
            self.ids.insert(name.to_string(), id);
        }
        id
    }
}

/// Up to this many series, finding one by name is faster by scanning them
/// than by hashing the name, and saves allocating a copy of every name.
const LINEAR_SEARCH: usize = 16;

#[derive(Clone, Copy)]
enum Role {
    /// The whole payload.
    Top,
    /// An element of a top-level array.
    Element,
    /// A value in an object.
    Field,
    /// The value of the timestamp field.
    Timestamp,
}

/// Appends a key to the path, after a `_` if nested.
struct Key<'p>(&'p mut String);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<(), E> {
        if !self.0.is_empty() {
            self.0.push('_');
        }
        self.0.push_str(key);
        Ok(())
    }
}

struct Node<'w, 'a> {
    w: &'w mut Walk<'a>,
    role: Role,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Node<'_, '_> {
    fn number(self, ms: impl FnOnce() -> Option<i64>, value: f64) {
        match self.role {
            Role::Field => self.w.leaf(value),
            Role::Timestamp => self.w.timestamp(ms().ok_or(NotATimestamp::Number(value))),
            Role::Top | Role::Element => self.w.opentsdb = false,
        }
    }

    /// Anything but a number, string or object: not a sample.
    fn other(self, what: &'static str) {
        match self.role {
            Role::Timestamp => self.w.timestamp(Err(NotATimestamp::Other(what))),
            Role::Top | Role::Element => self.w.opentsdb = false,
            Role::Field => {}
        }
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        match self.role {
            Role::Field => self.w.leaf(f64::from(u8::from(v))),
            _ => self.other("a boolean"),
        }
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.number(|| epoch_ms(v), v as f64);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let ms = || i64::try_from(v).map_or_else(|_| epoch_ms_f64(v as f64), epoch_ms);
        self.number(ms, v as f64);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.number(|| epoch_ms_f64(v), v);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        match self.role {
            Role::Timestamp => self.w.timestamp(text_ms(v).ok_or(NotATimestamp::Text(v))),
            Role::Field => {
                if let Some(value) = number_in_string(v).or_else(|| state_word(v)) {
                    self.w.leaf(value);
                }
            }
            _ => self.other("a string"),
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.other("null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Role::Top = self.role {
            while seq
                .next_element_seed(Node {
                    w: &mut *self.w,
                    role: Role::Element,
                })?
                .is_some()
            {}
            return Ok(());
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.other("an array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.role {
            Role::Top | Role::Element => self.w.record(map),
            Role::Field => self.w.object(map, false),
            Role::Timestamp => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                self.other("an object");
                Ok(())
            }
        }
    }
}

/// Epoch in s, ms, µs or ns by magnitude; see [`parse_message`].
fn epoch_ms(t: i64) -> Option<i64> {
    match t {
        ..0 => None,
        0..100_000_000_000 => Some(t * 1_000),
        100_000_000_000..100_000_000_000_000 => Some(t),
        100_000_000_000_000..100_000_000_000_000_000 => Some(t / 1_000),
        _ => Some(t / 1_000_000),
    }
}

fn epoch_ms_f64(t: f64) -> Option<i64> {
    values::epoch_ms(t).ok()
}

fn text_ms(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<i64>() {
        return epoch_ms(t);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    s.parse::<f64>().ok().and_then(epoch_ms_f64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use base::labels::LabelLimits;

    const NOW: i64 = 1_767_225_600_000;

    fn no_rules() -> Rules {
        Rules::compile(&[]).unwrap()
    }

    fn rule(topic: &str) -> RuleConfig {
        RuleConfig {
            topic: topic.into(),
            metric_prefix: String::new(),
            drop_values: Vec::new(),
            timestamp_field: None,
            ignore: false,
        }
    }

    /// One line per sample: `labels value @ms`.
    fn render(m: &ParsedMessage) -> Vec<String> {
        m.series
            .iter()
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(move |(t, v)| format!("{} {v:?} @{t}", s.labels))
            })
            .collect()
    }

    fn parse(topic: &str, payload: &str) -> ParsedMessage {
        parse_message(topic, payload.as_bytes(), NOW, &no_rules())
    }

    #[track_caller]
    fn check(topic: &str, payload: &str, format: PayloadFormat, want: &[&str]) {
        let m = parse(topic, payload);
        assert_eq!(m.format, format, "{payload:?}: {:?}", m.errors);
        assert_eq!(render(&m), want, "{payload:?}");
        assert_eq!(m.errors, Vec::<String>::new(), "{payload:?}");
    }

    #[test]
    fn numbers_and_booleans() {
        use PayloadFormat::*;
        let t = "a/b/temperature";
        for (payload, format, value) in [
            ("21.5", Number, "21.5"),
            (" 7\n", Number, "7.0"),
            ("\t1e3\r\n", Number, "1000.0"),
            ("-0.5", Number, "-0.5"),
            ("+.5", Number, "0.5"),
            ("3977560064", Number, "3977560064.0"),
            ("true", Boolean, "1.0"),
            ("ON", Boolean, "1.0"),
            (" False ", Boolean, "0.0"),
            ("off", Boolean, "0.0"),
        ] {
            let want = format!(r#"temperature{{topic="a/b/temperature"}} {value} @{NOW}"#);
            check(t, payload, format, &[&want]);
        }
        check(
            "x/1-wire.t/",
            "1",
            Number,
            &[&format!(r#"_1_wire_t{{topic="x/1-wire.t/"}} 1.0 @{NOW}"#)],
        );
        check(
            "t",
            "1",
            Number,
            &[&format!(r#"t{{topic="t"}} 1.0 @{NOW}"#)],
        );
        let m = parse("//", "1");
        assert_eq!((m.format, m.series.len()), (Number, 0));
        assert!(
            m.errors[0].contains("no level to name the metric"),
            "{:?}",
            m.errors
        );
    }

    /// Non-finite readings are what a failed sensor read prints (Arduino's
    /// `nan`); a NaN sample would poison every average, so it is dropped.
    #[test]
    fn nan_and_infinity_are_sensor_errors() {
        for payload in ["nan", "NaN", "-inf", "Infinity", "1e999"] {
            let m = parse("a/t", payload);
            assert_eq!(m.format, PayloadFormat::Number, "{payload}");
            assert_eq!((m.series.len(), m.dropped_sentinels), (0, 1), "{payload}");
        }
        // JSON has no NaN: such a body is not JSON.
        let m = parse("a/t", r#"{"t": NaN}"#);
        assert_eq!(m.format, PayloadFormat::Unparsed);
        assert!(m.errors[0].starts_with("invalid JSON"), "{:?}", m.errors);
    }

    #[test]
    fn generic_json() {
        let t = |s: &str| format!("{s} @{NOW}");
        check(
            "home/env",
            r#"{"env": {"co2": 612, "t.c": 21.5, "deep": {"x": -1}}, "ok": true, "off": false,
                "name": "lab", "none": null, "list": [1, 2, {"a": 1}], "1wire": 3, "big": 18446744073709551615}"#,
            PayloadFormat::Json,
            &[
                &t(r#"env_co2{topic="home/env"} 612.0"#),
                &t(r#"env_t_c{topic="home/env"} 21.5"#),
                &t(r#"env_deep_x{topic="home/env"} -1.0"#),
                &t(r#"ok{topic="home/env"} 1.0"#),
                &t(r#"off{topic="home/env"} 0.0"#),
                &t(r#"_1wire{topic="home/env"} 3.0"#),
                &t(r#"big{topic="home/env"} 1.8446744073709552e19"#),
            ],
        );
        // Arrays of objects element by element, anything else in them skipped.
        check(
            "t",
            r#"[{"a": 1, "ts": 1700000000}, 5, "x", [1], null, {"a": 2, "b": 3, "ts": 1700000001}, {}]"#,
            PayloadFormat::Json,
            &[
                r#"a{topic="t"} 1.0 @1700000000000"#,
                r#"a{topic="t"} 2.0 @1700000001000"#,
                r#"b{topic="t"} 3.0 @1700000001000"#,
            ],
        );
        for nothing in [
            "[1, 2, 3]",
            "[]",
            "{}",
            r#"{"state": "heating"}"#,
            r#"[[{"a": 1}]]"#,
        ] {
            check("t", nothing, PayloadFormat::Json, &[]);
        }
    }

    /// A level `state` or a bare number names nothing: the level before it
    /// names the metric (issue 14: Shelly Gen1's relay state, input state
    /// and external temperature all became `_0`).
    #[test]
    fn scalar_names_skip_state_and_channel_levels() {
        use PayloadFormat::*;
        for (topic, payload, format, name) in [
            (
                "livingroom/sensor/temperature/state",
                "21.5",
                Number,
                "temperature",
            ),
            ("node/switch/relay/STATE", "ON", Boolean, "relay"),
            ("shellies/shelly1-A1B2C3/relay/0", "on", Boolean, "relay"),
            ("shellies/shelly1-A1B2C3/input/0", "1", Number, "input"),
            (
                "shellies/shelly1-A1B2C3/ext_temperature/0",
                "21.5",
                Number,
                "ext_temperature",
            ),
            (
                "shellies/shellyem-A1B2C3/emeter/0/power",
                "12.5",
                Number,
                "power",
            ),
            ("x/relay/0/state/", "0", Number, "relay"),
            ("x/state2", "1", Number, "state2"),
            ("x/0.5", "1", Number, "_0_5"),
            // Nothing else to name it after: as before.
            ("0", "1", Number, "_0"),
            ("/state/", "1", Number, "state"),
            ("12/state", "1", Number, "state"),
        ] {
            let want = format!(r#"{name}{{topic="{topic}"}} {:?} @{NOW}"#, {
                let (v, _) = scalar(payload).unwrap();
                v
            });
            check(topic, payload, format, &[&want]);
        }
    }

    #[test]
    fn json_numbers_and_state_words_in_strings_are_values() {
        let t = |s: &str| format!("{s} @{NOW}");
        check(
            "home/env",
            r#"{"t": "21.5", "h": " 48 ", "n": {"x": "-3e2"}, "name": "lab", "bad": "nan",
                "inf": "inf", "hex": "0x1f", "unit": "12 %", "empty": "", "power": "ON",
                "door": "closed", "serial": "021528603314"}"#,
            PayloadFormat::Json,
            &[
                &t(r#"t{topic="home/env"} 21.5"#),
                &t(r#"h{topic="home/env"} 48.0"#),
                &t(r#"n_x{topic="home/env"} -300.0"#),
                &t(r#"power{topic="home/env"} 1.0"#),
                &t(r#"door{topic="home/env"} 0.0"#),
            ],
        );
        // A string of a field that another field already named is refused
        // like any value.
        let m = parse("t", r#"{"a_b": 1, "a.b": "2"}"#);
        assert_eq!(render(&m), [format!(r#"a_b{{topic="t"}} 1.0 @{NOW}"#)]);
        assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
    }

    /// Every key `values::is_time_key` knows, in any case, at the top level:
    /// the sample time, never a value; nested, an ordinary field.
    #[test]
    fn json_time_keys() {
        for key in [
            "tst",
            "TST",
            "Time",
            "TimeStamp",
            "created_at",
            "frame_time",
            "last_seen",
            "datetime",
            "unixtime",
            "epoch",
        ] {
            check(
                "t",
                &format!(r#"{{"v": 1, "{key}": 1700000000, "m": {{"{key}": 2}}}}"#),
                PayloadFormat::Json,
                &[
                    r#"v{topic="t"} 1.0 @1700000000000"#,
                    &format!(
                        r#"{}{{topic="t"}} 2.0 @1700000000000"#,
                        sanitize_metric_name(&format!("m_{key}"))
                    ),
                ],
            );
        }
        // The first valid one, in payload order.
        check(
            "t",
            r#"{"last_seen": "2023-11-14T22:13:21Z", "Time": 1600000000, "v": "7"}"#,
            PayloadFormat::Json,
            &[r#"v{topic="t"} 7.0 @1700000001000"#],
        );
        let m = parse("t", r#"{"Time": "soon", "v": 1}"#);
        assert_eq!(render(&m), [format!(r#"v{{topic="t"}} 1.0 @{NOW}"#)]);
        assert!(
            m.errors[0].starts_with(r#"field "Time": "#),
            "{:?}",
            m.errors
        );
    }

    #[test]
    fn json_fields_that_are_not_samples_are_reported() {
        let m = parse("t", r#"{"a.b": 1, "a_b": 2, "": 3, "c": 4}"#);
        assert_eq!(m.format, PayloadFormat::Json);
        assert_eq!(
            render(&m),
            [
                format!(r#"a_b{{topic="t"}} 1.0 @{NOW}"#),
                format!(r#"c{{topic="t"}} 4.0 @{NOW}"#)
            ]
        );
        assert_eq!(
            m.errors,
            [
                r#"field "a_b": another field of the object already gave series "a_b""#,
                "a field with an empty key is not a sample",
            ]
        );
    }

    #[test]
    fn json_timestamps() {
        for (ts, want) in [
            ("0", 0_i64),
            ("1700000000", 1_700_000_000_000),
            ("99999999999", 99_999_999_999_000),
            ("100000000000", 100_000_000_000),
            ("1700000000123", 1_700_000_000_123),
            ("1700000000123456", 1_700_000_000_123),
            ("1700000000123999999", 1_700_000_000_123),
            ("9223372036854775807", 9_223_372_036_854),
            ("18446744073709551615", 18_446_744_073_710),
            ("1700000000.1236", 1_700_000_000_124),
            ("1.7e12", 1_700_000_000_000),
            ("1.7e15", 1_700_000_000_000),
            ("1.7e18", 1_700_000_000_000),
            (r#""1700000000""#, 1_700_000_000_000),
            (r#""1700000000.5""#, 1_700_000_000_500),
            (r#""2017-09-18T08:52:56.794724369Z""#, 1_505_724_776_794),
            (r#""2017-09-18T17:52:56+09:00""#, 1_505_724_776_000),
            (r#""1969-12-31T23:59:59.5Z""#, -500),
        ] {
            for key in ["ts", "time", "timestamp"] {
                let payload = format!(r#"{{"v": 1, "{key}": {ts}}}"#);
                check(
                    "t",
                    &payload,
                    PayloadFormat::Json,
                    &[&format!(r#"v{{topic="t"}} 1.0 @{want}"#)],
                );
            }
        }
        // The first valid one wins; a nested `ts` is an ordinary field.
        let m = parse(
            "t",
            r#"{"time": "soon", "ts": 1700000000, "timestamp": 1600000000, "m": {"ts": 5}}"#,
        );
        assert_eq!(render(&m), [r#"m_ts{topic="t"} 5.0 @1700000000000"#]);
        assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
        for (ts, why) in [
            ("-1", "-1.0 is not a timestamp"),
            ("-0.5", "-0.5 is not a timestamp"),
            ("1e300", "is not a timestamp"),
            (
                r#""yesterday""#,
                r#""yesterday" is not a timestamp (epoch s, ms, µs or ns, or RFC 3339)"#,
            ),
            (r#""NaN""#, "is not a timestamp"),
            ("true", "a boolean is not a timestamp"),
            ("null", "null is not a timestamp"),
            ("[1]", "an array is not a timestamp"),
            (r#"{"s": 1}"#, "an object is not a timestamp"),
        ] {
            let m = parse("t", &format!(r#"{{"v": 1, "ts": {ts}}}"#));
            assert_eq!(
                render(&m),
                [format!(r#"v{{topic="t"}} 1.0 @{NOW}"#)],
                "{ts}"
            );
            assert_eq!(m.errors.len(), 1, "{ts}");
            assert!(m.errors[0].starts_with(r#"field "ts": "#), "{:?}", m.errors);
            assert!(m.errors[0].contains(why), "{ts}: {:?}", m.errors);
            assert!(
                m.errors[0].ends_with("the receive time was used"),
                "{:?}",
                m.errors
            );
        }
    }

    /// Seed fixture 1: a psutil publisher, in line protocol and in JSON.
    #[test]
    fn psutil_publisher() {
        let lp = "system,host=edge01 cpu_percent=12.5,mem_total=3977560064i,mem_used=1048576000i,mem_percent=26.4";
        check(
            "edge01/system",
            lp,
            PayloadFormat::LineProtocol,
            &[
                &format!(
                    r#"system_cpu_percent{{host="edge01",topic="edge01/system"}} 12.5 @{NOW}"#
                ),
                &format!(
                    r#"system_mem_total{{host="edge01",topic="edge01/system"}} 3977560064.0 @{NOW}"#
                ),
                &format!(
                    r#"system_mem_used{{host="edge01",topic="edge01/system"}} 1048576000.0 @{NOW}"#
                ),
                &format!(
                    r#"system_mem_percent{{host="edge01",topic="edge01/system"}} 26.4 @{NOW}"#
                ),
            ],
        );
        let json = r#"{"host": "edge01", "cpu_percent": 12.5, "mem_total": 3977560064, "mem_used": 1048576000, "mem_percent": 26.4}"#;
        check(
            "edge01/system",
            json,
            PayloadFormat::Json,
            &[
                &format!(r#"cpu_percent{{topic="edge01/system"}} 12.5 @{NOW}"#),
                &format!(r#"mem_total{{topic="edge01/system"}} 3977560064.0 @{NOW}"#),
                &format!(r#"mem_used{{topic="edge01/system"}} 1048576000.0 @{NOW}"#),
                &format!(r#"mem_percent{{topic="edge01/system"}} 26.4 @{NOW}"#),
            ],
        );
    }

    #[test]
    fn line_protocol() {
        check(
            "t",
            "# comment\nm,topic=x,a=b f=1 1700000000000000000\n\nm g=2i\n",
            PayloadFormat::LineProtocol,
            &[
                r#"m_f{a="b",topic="t"} 1.0 @1700000000000"#,
                &format!(r#"m_g{{topic="t"}} 2.0 @{NOW}"#),
            ],
        );
        let m = parse("t", "m f=1\nm f=\nm g=x");
        assert_eq!(m.format, PayloadFormat::LineProtocol);
        assert_eq!(render(&m), [format!(r#"m_f{{topic="t"}} 1.0 @{NOW}"#)]);
        assert_eq!(m.errors.len(), 2, "{:?}", m.errors);
        assert!(m.errors[0].starts_with("line 2: "), "{:?}", m.errors);
    }

    /// Seed fixture 2: an Arduino sending an OpenTSDB array.
    #[test]
    fn opentsdb_array() {
        let body = r#"[
  {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.5,
   "tags": {"type": "temperature", "loc": "pcroom"}},
  {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 18.2,
   "tags": {"type": "humidity", "loc": "pcroom"}},
  {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.3,
   "tags": {"type": "dust", "loc": "pcroom"}}
]"#;
        check(
            "home/pcroom",
            body,
            PayloadFormat::OpenTsdb,
            &[
                r#"mqtt_home_pcroom{loc="pcroom",topic="home/pcroom",type="temperature"} 22.5 @1346846400000"#,
                r#"mqtt_home_pcroom{loc="pcroom",topic="home/pcroom",type="humidity"} 18.2 @1346846400000"#,
                r#"mqtt_home_pcroom{loc="pcroom",topic="home/pcroom",type="dust"} 22.3 @1346846400000"#,
            ],
        );
    }

    #[test]
    fn opentsdb_single_and_refused_points() {
        check(
            "t",
            r#"{"metric": "sys.cpu", "timestamp": 1346846400123, "value": "18.5", "tags": {"topic": "mine"}}"#,
            PayloadFormat::OpenTsdb,
            &[r#"sys_cpu{topic="t"} 18.5 @1346846400123"#],
        );
        // opentsdb::parse requires a timestamp, as OpenTSDB does.
        let m = parse(
            "t",
            r#"[{"metric": "m", "value": 1}, {"metric": "m", "value": 2, "timestamp": 1}]"#,
        );
        assert_eq!(m.format, PayloadFormat::OpenTsdb);
        assert_eq!(render(&m), [r#"m{topic="t"} 2.0 @1000"#]);
        assert_eq!(m.errors, [r#"data point 0: missing "timestamp""#]);
        // Not every element is a data point: generic JSON.
        check(
            "t",
            r#"[{"metric": "m", "value": 1}, {"other": 2}]"#,
            PayloadFormat::Json,
            &[
                &format!(r#"value{{topic="t"}} 1.0 @{NOW}"#),
                &format!(r#"other{{topic="t"}} 2.0 @{NOW}"#),
            ],
        );
    }

    #[test]
    fn unparsed() {
        let deep = r#"{"a":"#.repeat(200);
        for (payload, why) in [
            (&b"\xff\xfe1"[..], "payload is not UTF-8 text"),
            (b"", "empty payload"),
            (b" \r\n", "empty payload"),
            (b"{\"a\": ", "invalid JSON: EOF while parsing a value at line 1 column 6"),
            (b"{\"a\": 1} x", "invalid JSON: trailing characters"),
            (b"[1, 2", "invalid JSON: EOF while parsing a list"),
            (b"hello world", "not a number, boolean, JSON or line protocol (line 1: field \"world\" has no value"),
            (b"\"21.5\"", "not a number, boolean, JSON or line protocol (line 1: missing fields"),
            (b"# only a comment", "not a number, boolean, JSON or line protocol"),
            (deep.as_bytes(), "invalid JSON: recursion limit exceeded"),
        ] {
            let m = parse_message("t", payload, NOW, &no_rules());
            assert_eq!((m.format, m.series.len()), (PayloadFormat::Unparsed, 0), "{payload:?}");
            assert_eq!(m.errors.len(), 1);
            assert!(m.errors[0].starts_with(why), "{payload:?}: {:?}", m.errors);
        }
    }

    #[test]
    fn rules_apply_to_every_format() {
        let rules = Rules::compile(&[
            RuleConfig {
                metric_prefix: "s.".into(),
                drop_values: vec![-1.0, -999.0],
                ..rule("sensors/{site}/{device}/#")
            },
            RuleConfig {
                ignore: true,
                ..rule("sensors/+")
            },
            rule("sensors/#"),
        ])
        .unwrap();
        let run =
            |topic: &str, payload: &str| parse_message(topic, payload.as_bytes(), NOW, &rules);
        let labels = r#"device="d1",site="lab",topic="sensors/lab/d1/t""#;
        for (payload, format, want, dropped) in [
            (
                "21.5",
                PayloadFormat::Number,
                vec![format!("s_t{{{labels}}} 21.5 @{NOW}")],
                0,
            ),
            ("-999", PayloadFormat::Number, vec![], 1),
            (
                r#"{"a": -1, "b": 2, "c": {"d": -999}, "ts": 1}"#,
                PayloadFormat::Json,
                vec![format!("s_b{{{labels}}} 2.0 @1000")],
                2,
            ),
            (
                "m,site=x a=-1,b=3 1000000\nm a=4 2000000",
                PayloadFormat::LineProtocol,
                // The capture replaces the tag, so both lines feed one `m_a`.
                vec![
                    format!("s_m_a{{{labels}}} 4.0 @2"),
                    format!("s_m_b{{{labels}}} 3.0 @1"),
                ],
                1,
            ),
            (
                r#"[{"metric": "m", "timestamp": 1, "value": -1}, {"metric": "m", "timestamp": 2, "value": 5}]"#,
                PayloadFormat::OpenTsdb,
                vec![format!("s_m{{{labels}}} 5.0 @2000")],
                1,
            ),
        ] {
            let m = run("sensors/lab/d1/t", payload);
            assert_eq!(m.format, format, "{payload}");
            assert_eq!(render(&m), want, "{payload}");
            assert_eq!(m.dropped_sentinels, dropped, "{payload}");
            assert_eq!(m.errors, Vec::<String>::new(), "{payload}");
        }
        // `#` also matches no level at all.
        let m = run("sensors/lab/d1", "1");
        let want = r#"s_d1{device="d1",site="lab",topic="sensors/lab/d1"} 1.0"#;
        assert_eq!(render(&m), [format!("{want} @{NOW}")]);
        // Rules 1 and 2 both match; the first wins.
        let m = run("sensors/lab", "1");
        assert_eq!((m.format, m.series.len()), (PayloadFormat::Ignored, 0));
        let m = run("sensors", "1");
        assert_eq!(
            render(&m),
            [format!(r#"sensors{{topic="sensors"}} 1.0 @{NOW}"#)]
        );
        let m = run("other/t", "1");
        assert_eq!(render(&m), [format!(r#"t{{topic="other/t"}} 1.0 @{NOW}"#)]);
    }

    #[test]
    fn rule_timestamp_field() {
        let rules = Rules::compile(&[RuleConfig {
            timestamp_field: Some("at".into()),
            ..rule("#")
        }])
        .unwrap();
        let m = parse_message("t", br#"{"at": 1700000000, "ts": 5, "v": 1}"#, NOW, &rules);
        assert_eq!(
            render(&m),
            [
                r#"ts{topic="t"} 5.0 @1700000000000"#,
                r#"v{topic="t"} 1.0 @1700000000000"#
            ]
        );
        let m = parse_message(
            "t",
            br#"[{"v": 1}, {"v": 2, "at": 1700000000}]"#,
            NOW,
            &rules,
        );
        assert_eq!(
            render(&m),
            [
                format!(r#"v{{topic="t"}} 1.0 @{NOW}"#),
                r#"v{topic="t"} 2.0 @1700000000000"#.into()
            ]
        );
        assert_eq!(
            m.errors,
            [r#"no timestamp field "at": the receive time was used"#]
        );
    }

    /// Seed fixture 3: a field station publishing records on one-level topics
    /// named `<Site>_<index>_<type>`. A capture takes a whole level, and the
    /// whole level is the `topic` label already, so the rule captures nothing:
    ///
    /// ```toml
    /// [[mqtt.rules]]
    /// topic = "+"                    # every one-level topic
    /// metric_prefix = "station_"
    /// drop_values = [-1, -999]
    /// timestamp_field = "time"
    /// ```
    ///
    /// turns the record on topic `JNU_1_rasp` into, at 2017-09-18T08:52:56.794Z:
    /// `station_status{topic="JNU_1_rasp"} 1`, `station_lat… 35.17959`,
    /// `station_lon… 126.90822`, `station_alcohol_gas… 9`, `station_light… 554`,
    /// `station_dust… 0.05`; `device_id` is a string, and `co_gas` (-1) and
    /// `temp` (-999) are the sensors' error values, so none of these is stored.
    #[test]
    fn station_record() {
        let rules = Rules::compile(&[RuleConfig {
            metric_prefix: "station_".into(),
            drop_values: vec![-1.0, -999.0],
            timestamp_field: Some("time".into()),
            ..rule("+")
        }])
        .unwrap();
        let record = r#"{"device_id":"RaspberryPi","status":1,"time":"2017-09-18T08:52:56.794724369Z","lat":35.17959,"lon":126.90822,"alcohol_gas":9,"co_gas":-1,"temp":-999,"light":554,"dust":0.05}"#;
        let m = parse_message("JNU_1_rasp", record.as_bytes(), NOW, &rules);
        assert_eq!(m.format, PayloadFormat::Json);
        assert_eq!(m.dropped_sentinels, 2);
        assert_eq!(m.errors, Vec::<String>::new());
        let at = " @1505724776794";
        assert_eq!(
            render(&m),
            [
                r#"station_status{topic="JNU_1_rasp"} 1.0"#,
                r#"station_lat{topic="JNU_1_rasp"} 35.17959"#,
                r#"station_lon{topic="JNU_1_rasp"} 126.90822"#,
                r#"station_alcohol_gas{topic="JNU_1_rasp"} 9.0"#,
                r#"station_light{topic="JNU_1_rasp"} 554.0"#,
                r#"station_dust{topic="JNU_1_rasp"} 0.05"#,
            ]
            .map(|s| format!("{s}{at}"))
        );
    }

    /// A rule's prefix is part of the measurement line protocol named.
    #[test]
    fn prefixed_line_protocol_keeps_its_measurement() {
        let rules = Rules::compile(&[RuleConfig {
            metric_prefix: "cellar.".into(),
            ..rule("#")
        }])
        .unwrap();
        let m = parse_message("t", br"boiler\ room temp.c=60,value=1", NOW, &rules);
        let got: Vec<(String, String, String)> = m
            .series
            .iter()
            .map(|s| {
                let o = s.origin.as_deref().unwrap();
                let name = s.labels.metric_name().unwrap().to_string();
                (name, o.measurement.clone(), o.field.clone())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("cellar_boiler_room_temp_c", "cellar_boiler room", "temp.c"),
                ("cellar_boiler_room", "cellar_boiler room", "value"),
            ]
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        );
        check_invariants("t", br"boiler\ room temp.c=60,value=1", &rules);
    }

    fn fuzz_rules() -> Rules {
        Rules::compile(&[
            RuleConfig {
                metric_prefix: "p.".into(),
                drop_values: vec![-1.0, 0.0],
                timestamp_field: Some("t".into()),
                ..rule("{a}/+/#")
            },
            RuleConfig {
                ignore: true,
                ..rule("x/#")
            },
        ])
        .unwrap()
    }

    fn check_invariants(topic: &str, payload: &[u8], rules: &Rules) {
        let m = parse_message(topic, payload, NOW, rules);
        let limits = LabelLimits {
            max_labels: usize::MAX,
            max_name_len: usize::MAX,
            max_value_len: usize::MAX,
        };
        if matches!(m.format, PayloadFormat::Unparsed | PayloadFormat::Ignored) {
            assert!(m.series.is_empty());
        }
        for s in &m.series {
            assert!(!s.samples.is_empty());
            assert_eq!(s.labels.validate(&limits), Ok(()), "{}", s.labels);
            assert_eq!(s.labels.get("topic"), Some(topic).filter(|t| !t.is_empty()));
            for (_, v) in &s.samples {
                assert!(v.is_finite());
            }
            // The measurement and field are what the metric name is made of.
            if let Some(o) = &s.origin {
                let name = match o.field.as_str() {
                    "value" => o.measurement.clone(),
                    f => format!("{}_{f}", o.measurement),
                };
                assert_eq!(
                    s.labels.metric_name(),
                    Some(&*sanitize_metric_name(&name)),
                    "{o:?}"
                );
            }
        }
    }

    const SEEDS: &[&str] = &[
        r#"{"a": {"b": [1, {"c": 2}], "d": true}, "t": "2017-09-18T08:52:56Z", "ts": 1.5e9}"#,
        r#"[{"metric": "m.x", "timestamp": 1346846400, "value": "22.5", "tags": {"a": 1}}, {"x": -1}]"#,
        "m,t=a\\ b f=1.5,g=2i,h=\"s\\\" x\",b=true 1700000000000000000\n# c\n",
        " -1e3\n",
    ];

    proptest! {
        #[test]
        fn random_messages_never_panic(
            topic in "[a-z$+#/]{0,12}",
            payload in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            check_invariants(&topic, &payload, &fuzz_rules());
            check_invariants(&topic, &payload, &no_rules());
        }

        /// Mutated valid payloads reach deeper into the parsers than noise.
        #[test]
        fn mutated_messages_never_panic(
            topic in "[a-z$/]{1,12}",
            seed in 0..SEEDS.len(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..8),
        ) {
            let mut bytes = SEEDS[seed].as_bytes().to_vec();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    2 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            check_invariants(&topic, &bytes, &fuzz_rules());
        }
    }

    /// What `perch bench mqtt` publishes (a JSON object of seven numeric
    /// fields), read with no rule, generically and through the conventions:
    /// `cargo test --release --lib mqtt_payload::tests::throughput_bench_payload -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn throughput_bench_payload() {
        let rules = no_rules();
        let payloads: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    r#"{{"temp":{:.2},"hum":{:.1},"co2":{},"light":{},"energy_wh":{:.3},"battery_v":3.9{},"status":0}}"#,
                    20.0 + (i % 100) as f64 / 10.0,
                    40.0 + (i % 10) as f64,
                    400 + i % 300,
                    i % 800,
                    i as f64 * 0.25,
                    i % 10
                )
            })
            .collect();
        // CPU time of this thread, as in `throughput`.
        let cpu_secs = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `t` is a valid timespec to write to.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
        };
        let n = 500_000;
        let mut interpreter = crate::conventions::Interpreter::new(
            no_rules(),
            crate::conventions::Settings::default(),
        );
        let mut read = |generic: bool, p: &str| {
            if generic {
                parse_message("bench/site0/dev0/env", p.as_bytes(), NOW, &rules)
                    .series
                    .len()
            } else {
                interpreter
                    .read("bench/site0/dev0/env", p.as_bytes(), NOW)
                    .series
                    .len()
            }
        };
        for (generic, what) in [(true, "generic reading"), (false, "by the conventions")] {
            let best = (0..5)
                .map(|_| {
                    let start = cpu_secs();
                    let mut samples = 0;
                    for i in 0..n {
                        samples += read(generic, &payloads[i % payloads.len()]);
                    }
                    assert_eq!(samples, 7 * n);
                    cpu_secs() - start
                })
                .fold(f64::INFINITY, f64::min);
            println!(
                "bench payload, 7 fields, {what:<18} {:>9.0} messages/s",
                n as f64 / best
            );
        }
    }

    /// `cargo test --release --lib mqtt_payload::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn throughput() {
        let rules = Rules::compile(&[
            RuleConfig {
                ignore: true,
                ..rule("zigbee2mqtt/bridge/#")
            },
            RuleConfig {
                drop_values: vec![-1.0],
                ..rule("home/{room}/{device}/#")
            },
        ])
        .unwrap();
        let small = r#"{"temperature":21.5,"humidity":48.2,"battery":3.01,"rssi":-67,"ok":true}"#;
        let psutil = "system,host=edge01 cpu_percent=12.5,mem_total=3977560064i,\
                      mem_used=1048576000i,mem_percent=26.4";
        let point = r#"{"metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.5,
                        "tags": {"type": "temperature", "loc": "pcroom"}}"#;
        let cases = [
            ("small JSON, no rule", "sensors/lab/env1", small),
            ("small JSON, captures", "home/kitchen/env1", small),
            ("number", "home/kitchen/env1/temperature", "21.5"),
            ("psutil line protocol", "edge01/system", psutil),
            ("OpenTSDB, 1 point", "home/pcroom", point),
        ];
        // CPU time of this thread, not wall time: on a busy machine the
        // thread's waits for a core are not the parser's cost.
        let cpu_secs = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `t` is a valid timespec to write to.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
        };
        for (what, topic, payload) in cases {
            let n = 200_000;
            let mut samples = 0;
            let best = (0..5)
                .map(|_| {
                    let start = cpu_secs();
                    for i in 0..n {
                        let m = parse_message(topic, payload.as_bytes(), NOW + i, &rules);
                        samples += m.series.iter().map(|s| s.samples.len()).sum::<usize>();
                    }
                    cpu_secs() - start
                })
                .fold(f64::INFINITY, f64::min);
            let per_message = samples as f64 / (5 * n) as f64;
            println!(
                "{what:<22} {:>9.0} messages/s {:>9.0} samples/s",
                n as f64 / best,
                n as f64 * per_message / best
            );
        }
    }
}
