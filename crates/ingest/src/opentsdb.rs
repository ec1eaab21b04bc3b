//! OpenTSDB's `/api/put` JSON to series: one data point object or an array of
//! them, `{"metric": "sys.cpu", "timestamp": 1346846400, "value": 18.2,
//! "tags": {"host": "web01"}}`. The metric and tag names are sanitized
//! (`mqtt.home.pcroom` → `mqtt_home_pcroom`); keys other than these four,
//! such as the `"type": "Metric"` some devices send, are ignored.
//!
//! Like OpenTSDB, a bad data point is refused alone and NaN or infinite values
//! are refused. Unlike it, tags are optional: a device with one sensor has
//! nothing to put there.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use thiserror::Error;

use super::MAX_ERRORS;
use base::labels::METRIC_NAME;
use base::names::{sanitize_label_name, sanitize_metric_name};
use base::{Labels, SeriesSamples};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("data point {index}: {message}")]
pub struct PointError {
    /// 0-based position in the array (0 for a lone object).
    pub index: usize,
    /// What is wrong, without the index.
    pub message: String,
}

impl base::HasKind for PointError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// A body that is not JSON at all, or neither an object nor an array: serde's
/// message, with line and column.
#[derive(Debug, Error)]
#[error("invalid JSON: {0}")]
pub struct BodyError(serde_json::Error);

impl base::HasKind for BodyError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// Why a data point was refused. Borrows from the parsed point, which lives
/// until the refusal is written into a [`PointError`].
#[derive(Debug, Error)]
enum Refusal<'p> {
    #[error("expected an object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("missing \"{key}\"")]
    Missing { key: &'static str },
    #[error("\"{key}\" must be {expected}, found {found}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("\"metric\" is empty")]
    EmptyMetric,
    #[error("\"timestamp\" {0} is negative")]
    NegativeTimestamp(&'p Number),
    #[error("\"timestamp\" {0} is out of range")]
    TimestampOutOfRange(&'p Number),
    #[error("\"value\" {0} is out of range")]
    ValueOutOfRange(&'p Number),
    #[error("\"value\" {0:?} is not a finite number")]
    ValueNotFinite(&'p str),
    #[error("empty value for tag {tag:?}")]
    EmptyTagValue { tag: &'p str },
    #[error("tag {tag:?} must be a string or number, found {found}")]
    TagNotStringOrNumber { tag: &'p str, found: &'static str },
    #[error("empty tag name")]
    EmptyTagName,
    #[error("tag {tag:?} is reserved for the metric name")]
    ReservedTag { tag: &'p str },
    #[error("tags {first:?} and {second:?} both become label {label:?}")]
    TagsCollide {
        first: &'p str,
        second: &'p str,
        label: Cow<'p, str>,
    },
}

#[derive(Debug, Default)]
pub struct ParsedPoints {
    /// In order of first appearance; samples in input order.
    pub series: Vec<SeriesSamples>,
    /// The first [`MAX_ERRORS`] refused data points; every other was kept.
    pub errors: Vec<PointError>,
    /// All refused data points, also those past [`MAX_ERRORS`].
    pub refused: usize,
}

/// Parses a whole body. `Err` when it is not JSON at all, or not an object or
/// array (serde's message, with line and column). `extra_labels` are set on
/// every series, replacing tags of the same name; their names are used as
/// given.
pub fn parse(body: &[u8], extra_labels: &[(&str, &str)]) -> Result<ParsedPoints, BodyError> {
    let mut points = Points {
        extra_labels,
        out: ParsedPoints::default(),
        ids: FxHashMap::default(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_any(&mut points)
        .and_then(|()| de.end())
        .map_err(BodyError)?;
    Ok(points.out)
}

/// Takes the data points of an array one at a time, as they are read: a
/// whole array as a `Value` would take many times the body's size.
struct Points<'a> {
    extra_labels: &'a [(&'a str, &'a str)],
    out: ParsedPoints,
    ids: FxHashMap<Labels, usize>,
}

impl Points<'_> {
    fn add(&mut self, index: usize, p: &Value) {
        match point(p, self.extra_labels) {
            Ok((labels, sample)) => {
                let series = &mut self.out.series;
                let id = *self.ids.entry(labels).or_insert_with_key(|labels| {
                    series.push(SeriesSamples::new(labels.clone(), Vec::new()));
                    series.len() - 1
                });
                series[id].samples.push(sample);
            }
            Err(why) => {
                self.out.refused += 1;
                if self.out.errors.len() < MAX_ERRORS {
                    self.out.errors.push(PointError {
                        index,
                        message: why.to_string(),
                    });
                }
            }
        }
    }
}

impl<'de> Visitor<'de> for &mut Points<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a data point object or an array of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(p) = seq.next_element::<Value>()? {
            self.add(index, &p);
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let p = Value::deserialize(MapAccessDeserializer::new(map))?;
        self.add(0, &p);
        Ok(())
    }
}

fn point<'p>(
    p: &'p Value,
    extra_labels: &[(&str, &str)],
) -> Result<(Labels, (i64, f64)), Refusal<'p>> {
    let p = p
        .as_object()
        .ok_or(Refusal::NotAnObject { found: kind(p) })?;
    let wrong_type = |key, expected, v| Refusal::WrongType {
        key,
        expected,
        found: kind(v),
    };
    let metric = match p.get("metric") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(Refusal::EmptyMetric),
        Some(v) => return Err(wrong_type("metric", "a string", v)),
        None => return Err(Refusal::Missing { key: "metric" }),
    };
    let ts = match p.get("timestamp") {
        Some(Value::Number(n)) => timestamp_ms(n)?,
        Some(v) => return Err(wrong_type("timestamp", "a number", v)),
        None => return Err(Refusal::Missing { key: "timestamp" }),
    };
    let value = match p.get("value") {
        Some(Value::Number(n)) => n.as_f64().ok_or(Refusal::ValueOutOfRange(n))?,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::String(s)) => s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(Refusal::ValueNotFinite(s))?,
        Some(v) => return Err(wrong_type("value", "a number", v)),
        None => return Err(Refusal::Missing { key: "value" }),
    };
    let mut labels = match p.get("tags") {
        None | Some(Value::Null) => Labels::empty(),
        Some(Value::Object(tags)) => labels(tags)?,
        Some(v) => return Err(wrong_type("tags", "an object", v)),
    };
    for (name, value) in extra_labels {
        labels.set(name, value);
    }
    labels.set(METRIC_NAME, &sanitize_metric_name(metric));
    Ok((labels, (ts, value)))
}

/// OpenTSDB tells seconds from milliseconds by size: 10 digits or fewer are
/// seconds, which holds until the year 5138. Fractional seconds are rounded
/// to the millisecond.
fn timestamp_ms(n: &Number) -> Result<i64, Refusal<'_>> {
    const SECONDS_BELOW: i64 = 100_000_000_000;
    if let Some(t) = n.as_i64() {
        return match t {
            ..0 => Err(Refusal::NegativeTimestamp(n)),
            0..SECONDS_BELOW => Ok(t * 1000),
            _ => Ok(t),
        };
    }
    let t = n.as_f64().unwrap_or(f64::NAN);
    let ms = if t < SECONDS_BELOW as f64 {
        t * 1000.0
    } else {
        t
    }
    .round();
    // 2^63 is exactly representable; anything from there up does not fit.
    if t < 0.0 {
        Err(Refusal::NegativeTimestamp(n))
    } else if ms < i64::MAX as f64 {
        Ok(ms as i64)
    } else {
        Err(Refusal::TimestampOutOfRange(n))
    }
}

fn labels(tags: &Map<String, Value>) -> Result<Labels, Refusal<'_>> {
    // (label name, tag as written, value)
    let mut pairs: Vec<(Cow<str>, &str, Cow<str>)> = Vec::with_capacity(tags.len());
    for (tag, v) in tags {
        let value = match v {
            Value::String(s) if s.is_empty() => return Err(Refusal::EmptyTagValue { tag }),
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Number(n) => Cow::Owned(n.to_string()),
            v => {
                return Err(Refusal::TagNotStringOrNumber {
                    tag,
                    found: kind(v),
                })
            }
        };
        let name = sanitize_label_name(tag);
        if name.is_empty() {
            return Err(Refusal::EmptyTagName);
        }
        if name == METRIC_NAME {
            return Err(Refusal::ReservedTag { tag });
        }
        pairs.push((name, tag, value));
    }
    // JSON keys are unique already; sanitization can still merge two.
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(at) = pairs.windows(2).position(|w| w[0].0 == w[1].0) {
        let (label, first, _) = pairs.remove(at);
        return Err(Refusal::TagsCollide {
            first,
            second: pairs[at].1,
            label,
        });
    }
    Ok(Labels::from_pairs(
        pairs.into_iter().map(|(n, _, v)| (n, v)),
    ))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(p: &ParsedPoints) -> Vec<String> {
        p.series
            .iter()
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(move |(t, v)| format!("{} {v:?} @{t}", s.labels))
            })
            .collect()
    }

    #[test]
    fn mqtt_fixture() {
        let body = r#"[
  {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.5,
   "tags": {"type": "temperature", "loc": "pcroom"}},
  {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 18.2,
   "tags": {"type": "humidity", "loc": "pcroom"}},
  {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.3,
   "tags": {"type": "dust", "loc": "pcroom"}}
]"#;
        let p = parse(body.as_bytes(), &[]).unwrap();
        assert_eq!(p.errors, vec![]);
        assert_eq!(
            render(&p),
            vec![
                r#"mqtt_home_pcroom{loc="pcroom",type="temperature"} 22.5 @1346846400000"#,
                r#"mqtt_home_pcroom{loc="pcroom",type="humidity"} 18.2 @1346846400000"#,
                r#"mqtt_home_pcroom{loc="pcroom",type="dust"} 22.3 @1346846400000"#,
            ]
        );
    }

    #[test]
    fn values_timestamps_and_tags() {
        let body = r#"[
            {"metric": "a", "timestamp": 1346846400123, "value": "22.5"},
            {"metric": "a", "timestamp": 1346846400.5, "value": 1, "tags": {}},
            {"metric": "a", "timestamp": 0, "value": true, "tags": null},
            {"metric": "b", "timestamp": 9999999999, "value": false, "tags": {"n": 3, "f": 2.5}},
            {"metric": "b", "timestamp": 100000000000, "value": -1e3, "tags": {"f": 2.5, "n": 3}},
            {"metric": "1-wire/t", "timestamp": 1.7e12, "value": 0, "tags": {"dev.id": "x", "topic": "y"}}
        ]"#;
        let p = parse(body.as_bytes(), &[("topic", "home")]).unwrap();
        assert_eq!(p.errors, vec![]);
        assert_eq!(
            render(&p),
            vec![
                r#"a{topic="home"} 22.5 @1346846400123"#,
                r#"a{topic="home"} 1.0 @1346846400500"#,
                r#"a{topic="home"} 1.0 @0"#,
                r#"b{f="2.5",n="3",topic="home"} 0.0 @9999999999000"#,
                r#"b{f="2.5",n="3",topic="home"} -1000.0 @100000000000"#,
                r#"_1_wire_t{dev_id="x",topic="home"} 0.0 @1700000000000"#,
            ]
        );
    }

    #[test]
    fn single_object() {
        let p = parse(br#"{"metric":"m","timestamp":1,"value":2}"#, &[]).unwrap();
        assert_eq!(render(&p), vec!["m{} 2.0 @1000"]);
    }

    #[test]
    fn bad_points_are_refused_alone() {
        let cases: &[(&str, &str)] = &[
            (r#"5"#, "expected an object, found a number"),
            (r#"{"timestamp": 1, "value": 1}"#, "missing \"metric\""),
            (
                r#"{"metric": "", "timestamp": 1, "value": 1}"#,
                "\"metric\" is empty",
            ),
            (
                r#"{"metric": 5, "timestamp": 1, "value": 1}"#,
                "\"metric\" must be a string, found a number",
            ),
            (r#"{"metric": "m", "value": 1}"#, "missing \"timestamp\""),
            (
                r#"{"metric": "m", "timestamp": "1", "value": 1}"#,
                "\"timestamp\" must be a number, found a string",
            ),
            (
                r#"{"metric": "m", "timestamp": -1, "value": 1}"#,
                "\"timestamp\" -1 is negative",
            ),
            (
                r#"{"metric": "m", "timestamp": -1.5, "value": 1}"#,
                "is negative",
            ),
            (
                r#"{"metric": "m", "timestamp": 1e30, "value": 1}"#,
                "is out of range",
            ),
            (
                r#"{"metric": "m", "timestamp": 18446744073709551615, "value": 1}"#,
                "is out of range",
            ),
            (r#"{"metric": "m", "timestamp": 1}"#, "missing \"value\""),
            (
                r#"{"metric": "m", "timestamp": 1, "value": null}"#,
                "\"value\" must be a number, found null",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": "abc"}"#,
                "\"value\" \"abc\" is not a finite number",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": "NaN"}"#,
                "is not a finite number",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": [1]}"#,
                "found an array",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": 1, "tags": []}"#,
                "\"tags\" must be an object, found an array",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": 1, "tags": {"a": true}}"#,
                "tag \"a\" must be a string or number, found a boolean",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": 1, "tags": {"a": ""}}"#,
                "empty value for tag \"a\"",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": 1, "tags": {"": "x"}}"#,
                "empty tag name",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": 1, "tags": {"__name__": "x"}}"#,
                "reserved for the metric name",
            ),
            (
                r#"{"metric": "m", "timestamp": 1, "value": 1, "tags": {"a.b": "x", "a_b": "y"}}"#,
                "tags \"a.b\" and \"a_b\" both become label \"a_b\"",
            ),
        ];
        let mut body = String::from("[");
        for (point, _) in cases {
            body.push_str(point);
            body.push_str(r#", {"metric": "ok", "timestamp": 1, "value": 1},"#);
        }
        body.pop();
        body.push(']');
        let p = parse(body.as_bytes(), &[]).unwrap();
        assert_eq!(p.errors.len(), cases.len(), "{:#?}", p.errors);
        assert_eq!(p.refused, cases.len());
        for (i, (e, (point, want))) in p.errors.iter().zip(cases).enumerate() {
            assert_eq!(e.index, 2 * i, "{point}");
            assert!(
                e.message.contains(want),
                "{point}: {:?} lacks {want:?}",
                e.message
            );
        }
        assert_eq!(render(&p), vec!["ok{} 1.0 @1000"; cases.len()]);
    }

    #[test]
    fn whole_body_errors() {
        let message = |body: &[u8]| parse(body, &[]).unwrap_err().to_string();
        let e = message(b"[{\"metric\": \"m\",\n \"value\": }]");
        assert!(e.contains("line 2 column 11"), "{e}");
        let e = message(b"");
        assert!(e.starts_with("invalid JSON: EOF"), "{e}");
        let e = message(b"\"text\"");
        assert!(
            e.contains(
                "invalid type: string \"text\", expected a data point object or an array of them"
            ),
            "{e}"
        );
        let e = message(b"[] []");
        assert!(e.contains("trailing characters at line 1 column 4"), "{e}");
    }
}
