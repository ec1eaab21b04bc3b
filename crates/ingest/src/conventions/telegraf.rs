//! Telegraf's JSON output: see docs/devices.md.
//!
//! Telegraf's `json` serializer (`data_format = "json"`, used by
//! `[[outputs.mqtt]]` and others) writes one metric as
//! `{"fields":{…},"name":"docker","tags":{"host":"raynor"},"timestamp":1458229140}`
//! (layout `non-batch`), and a batch as `{"metrics":[<metric>, …]}`
//! (layout `batch`). It is recognised by that shape on any topic, after the
//! families that are recognised by their topic.
//!
//! A metric is read as the InfluxDB line protocol reading of the same metric
//! ([`crate::line_protocol`], as the MQTT collector runs it) would read it:
//! metric `<name>_<field>` (`<name>` for a field named `value`), sanitized
//! but not snake_cased; the tags as labels, and `topic`. So switching
//! Telegraf between `data_format = "influx"` and `"json"` keeps the series.
//! What that reading refuses (an empty tag value, a tag `__name__`, two
//! tags or fields that land on one label or series) refuses the metric here
//! too. String fields are not samples, booleans are 1 and 0. The `host` tag
//! names the device.
//!
//! `timestamp` is an epoch in the serializer's `json_timestamp_units` (1s by
//! default), told by its magnitude as s, ms, µs or ns; or, with
//! `json_timestamp_format`, a time text, which Telegraf writes in UTC. It is
//! the sample time however old it is (a batch can have waited in Telegraf's
//! buffer): only a time that is not one, or one more than 15 minutes after
//! the arrival, is replaced by the arrival time, with a notice.

use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;
use std::collections::hash_map::Entry;

use base::labels::METRIC_NAME;
use base::names::{sanitize_label_name, sanitize_metric_name};
use base::{Labels, MeasurementField, SeriesSamples};
use rustc_hash::FxHashMap;
use serde_json::{Map, Number, Value};

use super::values::{self, TimeError, Zone, MAX_CLOCK_SKEW_MS};
use super::{Ctx, DeviceReport, Family, Message, Notice, NoticeKind, Reading};
use crate::mqtt_payload::PayloadFormat;
use crate::MAX_ERRORS;

/// The keys of one metric in the standard form.
const METRIC_KEYS: &[&str] = &["fields", "name", "tags", "timestamp"];

/// The message read as Telegraf's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, _ctx: &mut Ctx) -> Option<Reading> {
    // Cheap checks first: this runs on every message no family claimed.
    if msg.payload.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    static FIELDS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"fields\""));
    static METRICS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"metrics\""));
    if FIELDS.find(msg.payload).is_none() && METRICS.find(msg.payload).is_none() {
        return None;
    }
    let text = msg.text()?;
    let Ok(Value::Object(top)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let metrics: Vec<&Value> = if is_metric(&top) {
        Vec::new()
    } else {
        match top.get("metrics") {
            Some(Value::Array(list))
                if top.len() == 1
                    && list
                        .first()
                        .and_then(Value::as_object)
                        .is_some_and(is_metric) =>
            {
                list.iter().collect()
            }
            _ => return None,
        }
    };
    let mut r = Out::new(msg);
    if metrics.is_empty() {
        r.metric(&top, None);
    } else {
        for (i, m) in metrics.into_iter().enumerate() {
            match m.as_object() {
                Some(m) => r.metric(m, Some(i)),
                None => r.error(format!("metric {i}: not an object")),
            }
        }
    }
    Some(r.finish())
}

/// Has the keys of a metric in the standard form, and no others.
fn is_metric(obj: &Map<String, Value>) -> bool {
    obj.contains_key("fields")
        && obj.contains_key("name")
        && obj.keys().all(|k| METRIC_KEYS.contains(&k.as_str()))
}

/// The reading being built.
struct Out<'m> {
    topic: &'m str,
    received_ms: i64,
    reading: Reading,
    series: Vec<SeriesSamples>,
    by_labels: FxHashMap<Labels, usize>,
    /// The first time that was not used, and how many there were.
    bad_time: Option<String>,
    bad_times: usize,
}

impl<'m> Out<'m> {
    fn new(msg: &'m Message) -> Out<'m> {
        Out {
            topic: msg.topic,
            received_ms: msg.received_ms,
            reading: Reading {
                // Its series keep exactly its tags (the series its line
                // protocol gives): the host is the device.
                device_label: Some("host"),
                ..Reading::new(Family::Telegraf, PayloadFormat::Json)
            },
            series: Vec::new(),
            by_labels: FxHashMap::default(),
            bad_time: None,
            bad_times: 0,
        }
    }

    fn error(&mut self, message: String) {
        if self.reading.errors.len() < MAX_ERRORS {
            self.reading.errors.push(message);
        }
    }

    /// One metric; `index` is its place in a batch.
    fn metric(&mut self, m: &Map<String, Value>, index: Option<usize>) {
        let at = match index {
            Some(i) => format!("metric {i}: "),
            None => String::new(),
        };
        let tags = match m.get("tags") {
            None => None,
            Some(Value::Object(t)) => Some(t),
            Some(_) => return self.error(format!("{at}\"tags\" is not an object")),
        };
        if let Some(Value::String(host)) = tags.and_then(|t| t.get("host")) {
            if !host.is_empty() && !self.reading.devices.iter().any(|d| d.id == *host) {
                self.reading
                    .devices
                    .push(DeviceReport::new(host.as_str(), Family::Telegraf));
            }
        }
        let name = match m.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return self.error(format!("{at}\"name\" is not a non-empty string")),
        };
        let at = match index {
            Some(i) => format!("metric {i} ({name:?}): "),
            None => format!("metric {name:?}: "),
        };
        let Some(Value::Object(fields)) = m.get("fields") else {
            return self.error(format!("{at}\"fields\" is not an object"));
        };
        let labels = match tags.map(Out::labels).unwrap_or(Ok(Vec::new())) {
            Ok(l) => l,
            Err(why) => return self.error(format!("{at}{why}")),
        };
        let metric = sanitize_metric_name(name);
        let mut samples: Vec<(&str, String, f64)> = Vec::with_capacity(fields.len());
        for (key, v) in fields {
            if key.is_empty() {
                return self.error(format!("{at}a field has an empty key"));
            }
            let value = match v {
                Value::Number(n) => match n.as_f64().filter(|v| v.is_finite()) {
                    Some(v) => v,
                    None => {
                        self.error(format!("{at}field {key:?}: {n} is out of range"));
                        continue;
                    }
                },
                Value::Bool(b) => f64::from(u8::from(*b)),
                // Not samples in line protocol either.
                Value::String(_) => continue,
                Value::Object(_) | Value::Array(_) => {
                    self.error(format!(
                        "{at}field {key:?}: nested JSON (json_nested_fields_include) is not a sample"
                    ));
                    continue;
                }
                Value::Null => {
                    self.error(format!("{at}field {key:?}: null is not a sample"));
                    continue;
                }
            };
            let series = if key == "value" {
                metric.clone().into_owned()
            } else {
                sanitize_metric_name(&format!("{metric}_{key}")).into_owned()
            };
            if let Some((first, _, _)) = samples.iter().find(|(_, s, _)| *s == series) {
                return self.error(format!(
                    "{at}fields {first:?} and {key:?} both become series {series:?}"
                ));
            }
            samples.push((key.as_str(), series, value));
        }
        let t = self.time(m.get("timestamp"));
        for (key, series, value) in samples {
            let l = Labels::from_pairs(
                std::iter::once((METRIC_NAME, series.as_str()))
                    .chain(labels.iter().map(|(n, v)| (n.as_str(), *v)))
                    .chain(std::iter::once(("topic", self.topic))),
            );
            let id = match self.by_labels.entry(l) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    self.series.push(SeriesSamples {
                        labels: e.key().clone(),
                        samples: Vec::new(),
                        origin: Some(Arc::new(MeasurementField {
                            measurement: name.clone(),
                            field: key.to_owned(),
                        })),
                    });
                    *e.insert(self.series.len() - 1)
                }
            };
            self.series[id].samples.push((t, value));
        }
    }

    /// The labels of a metric's tags, refused as line protocol refuses
    /// them; without a tag `topic`, which the `topic` label replaces.
    fn labels(tags: &Map<String, Value>) -> Result<Vec<(String, &str)>, String> {
        let mut out: Vec<(String, &str)> = Vec::with_capacity(tags.len() + 1);
        let mut from: Vec<&str> = Vec::with_capacity(tags.len());
        for (key, v) in tags {
            let Value::String(value) = v else {
                return Err(format!("tag {key:?} is not a string"));
            };
            if key.is_empty() {
                return Err("a tag has an empty key".into());
            }
            if value.is_empty() {
                return Err(format!("empty value for tag {key:?}"));
            }
            let name = sanitize_label_name(key).into_owned();
            if name == METRIC_NAME {
                return Err(format!("tag key {key:?} is reserved for the metric name"));
            }
            if let Some(i) = out.iter().position(|(n, _)| *n == name) {
                return Err(format!(
                    "tags {:?} and {key:?} both become label {name:?}",
                    from[i]
                ));
            }
            out.push((name, value));
            from.push(key);
        }
        out.retain(|(n, _)| n != "topic");
        Ok(out)
    }

    /// The sample time of a metric.
    fn time(&mut self, ts: Option<&Value>) -> i64 {
        let Some(ts) = ts else {
            return self.received_ms;
        };
        let parsed = match ts {
            Value::Number(n) => epoch(n),
            // `json_timestamp_format`: Telegraf formats the time in UTC.
            Value::String(s) => values::time_text(s, &Zone::Utc),
            other => values::time_value(other, &Zone::Utc),
        };
        let why = match parsed {
            Ok(t) if t - self.received_ms <= MAX_CLOCK_SKEW_MS => return t,
            Ok(t) => format!(
                "timestamp {ts} is {} s after the arrival time: the arrival time was used",
                (t - self.received_ms) / 1000
            ),
            Err(e) => format!("timestamp: {e}: the arrival time was used"),
        };
        self.bad_times += 1;
        self.bad_time.get_or_insert(why);
        self.received_ms
    }

    fn finish(mut self) -> Reading {
        if let Some(why) = self.bad_time.take() {
            let message = match self.bad_times {
                1 => why,
                n => format!("{why} (and for {} more metrics)", n - 1),
            };
            self.reading.notices.push(Notice {
                kind: NoticeKind::Time,
                message,
            });
        }
        self.reading.series = self.series;
        self.reading
    }
}

/// An epoch number in s, ms, µs or ns, told by its magnitude as
/// [`values::epoch_ms`] tells it; integers exactly, rounded down to the ms
/// as line protocol rounds.
fn epoch(n: &Number) -> Result<i64, TimeError> {
    match n.as_i64() {
        Some(t) if t < 0 => Err(TimeError::Number(t as f64)),
        Some(t) => Ok(if t < 100_000_000_000 {
            t * 1000
        } else if t < 100_000_000_000_000 {
            t
        } else if t < 100_000_000_000_000_000 {
            t / 1000
        } else {
            t / 1_000_000
        }),
        None => values::epoch_ms(n.as_f64().unwrap_or(f64::NAN)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::{render_samples, settings};
    use super::super::{Interpreter, State};
    use super::*;
    use crate::mqtt_payload::parse_message;
    use crate::rules::Rules;

    const NOW: i64 = 1_700_000_000_000;

    fn read_at(topic: &str, payload: &str, now: i64) -> Option<Reading> {
        let settings = settings();
        let mut state = State::default();
        let mut ctx = Ctx {
            settings: &settings,
            state: &mut state,
        };
        let msg = Message {
            topic,
            payload: payload.as_bytes(),
            received_ms: now,
        };
        read(&msg, &mut ctx)
    }

    fn reading(payload: &str) -> Reading {
        read_at("telegraf/h/m", payload, NOW).expect("a Telegraf message")
    }

    /// The series, sorted by labels, as `labels value @ms (measurement
    /// field)`.
    fn sorted(series: &[SeriesSamples]) -> Vec<String> {
        let mut s: Vec<&SeriesSamples> = series.iter().collect();
        s.sort_by(|a, b| a.labels.cmp(&b.labels));
        s.iter()
            .flat_map(|s| {
                let o = s.origin.as_deref().expect("a measurement and field");
                s.samples.iter().map(move |(t, v)| {
                    format!(
                        "{} {v:?} @{t} ({:?} {:?})",
                        s.labels, o.measurement, o.field
                    )
                })
            })
            .collect()
    }

    /// The JSON form of a metric reads as its line protocol form does.
    #[test]
    fn same_series_as_line_protocol() {
        let topic = "telegraf/raynor/docker";
        for (json, line) in [
            (
                r#"{"fields":{"field_1":30,"field_2":4,"field_N":59,"n_images":660},"name":"docker","tags":{"host":"raynor"},"timestamp":1458229140}"#,
                "docker,host=raynor field_1=30i,field_2=4i,field_N=59i,n_images=660i 1458229140000000000",
            ),
            // Telegraf's serializer test of names that need escaping.
            (
                r#"{"fields":{"U,age=Idle":90},"name":"My CPU","tags":{"cpu tag":"cpu0"},"timestamp":1525478795}"#,
                r"My\ CPU,cpu\ tag=cpu0 U\,age\=Idle=90i 1525478795000000000",
            ),
            // plugins/serializers/json/testcases/nested_fields_*: the
            // nested (string, in line protocol) fields are no samples.
            (
                r#"{"fields":{"id-1234":{"address":"AB1A","status":"online"},"id-0000":{"status":"offline"},"hops":10,"latency":1.23},"name":"in","tags":{"host":"myhost","type":"diagnostic"},"timestamp":1666006350}"#,
                r#"in,host=myhost,type=diagnostic hops=10,latency=1.23,id-1234="{\"address\": \"AB1A\", \"status\": \"online\"}",id-0000="{\"status\": \"offline\"}" 1666006350000000000"#,
            ),
            // plugins/serializers/json/testcases/transformation_single.conf:
            // a tag named `value`, a batch of two hosts.
            (
                r#"{"metrics":[{"name":"impression","timestamp":1653643420,"fields":{"count_sum":5},"tags":{"key":"12345","flagname":"F5","host":"1cbbb3796fc2","platform":"Java","sdkver":"4.9.1","value":"false"}},{"name":"expression","timestamp":1653646789,"fields":{"count_sum":42},"tags":{"key":"67890","flagname":"E42","host":"klaus","platform":"Golang","sdkver":"1.18.3","value":"true"}}]}"#,
                "impression,flagname=F5,host=1cbbb3796fc2,key=12345,platform=Java,sdkver=4.9.1,value=false count_sum=5i 1653643420000000000\n\
                 expression,flagname=E42,host=klaus,key=67890,platform=Golang,sdkver=1.18.3,value=true count_sum=42i 1653646789000000000",
            ),
            // A field `value`, a boolean, a string, a tag `topic`, one
            // series twice, ns and ms timestamps.
            (
                r#"{"metrics":[{"fields":{"value":1.5,"ok":true,"state":"x"},"name":"m.x","tags":{"topic":"other","a-b":"1"},"timestamp":1525478795123456789},{"fields":{"value":2},"name":"m.x","tags":{"topic":"y","a-b":"1"},"timestamp":1525478795124}]}"#,
                "m.x,topic=other,a-b=1 value=1.5,ok=true,state=\"x\" 1525478795123456789\n\
                 m.x,topic=y,a-b=1 value=2 1525478795124000000",
            ),
        ] {
            let lp = parse_message(topic, line.as_bytes(), NOW, &Rules::default());
            assert_eq!(lp.errors, Vec::<String>::new(), "{line}");
            assert_eq!(lp.format, PayloadFormat::LineProtocol);
            let r = read_at(topic, json, NOW).expect(json);
            assert_eq!(sorted(&r.series), sorted(&lp.series), "{json}");
            assert!(!r.series.is_empty());
        }
    }

    #[test]
    fn through_the_interpreter() {
        let mut i = Interpreter::new(Rules::default(), settings());
        let r = i.read(
            "telegraf/raynor/docker",
            br#"{"fields":{"n_images":660},"name":"docker","tags":{"host":"raynor"},"timestamp":1458229140}"#,
            1_458_229_140_000,
        );
        assert_eq!(r.family, Family::Telegraf);
        assert_eq!(
            render_samples(&r),
            [
                r#"docker_n_images{host="raynor",topic="telegraf/raynor/docker"} 660.0 @1458229140000"#
            ]
        );
        assert_eq!(r.devices, [DeviceReport::new("raynor", Family::Telegraf)]);
    }

    #[test]
    fn not_telegraf() {
        for payload in [
            "21.5",
            "",
            "cpu,host=a fields=1",
            "[{\"fields\":{},\"name\":\"a\"}]",
            r#"{"temperature": 21.5}"#,
            // Other keys beside a metric's: someone else's JSON.
            r#"{"name":"a","fields":{"x":1},"id":7}"#,
            r#"{"name":"a","tags":{}}"#,
            r#"{"metrics":[]}"#,
            r#"{"metrics":[{"x":1}]}"#,
            r#"{"metrics":[{"name":"a","fields":{}}],"more":1}"#,
            r#"{"metrics":{"name":"a","fields":{}}}"#,
            r#"{"fields": "#,
            "\u{feff}{\"fields\":{}}",
        ] {
            assert!(read_at("t", payload, NOW).is_none(), "{payload}");
        }
        let msg = Message {
            topic: "t",
            payload: b"{\"fields\":\xff}",
            received_ms: NOW,
        };
        let settings = settings();
        let mut state = State::default();
        let mut ctx = Ctx {
            settings: &settings,
            state: &mut state,
        };
        assert!(read(&msg, &mut ctx).is_none());
    }

    #[test]
    fn malformed_metrics_are_errors() {
        for (payload, why) in [
            (
                r#"{"name":7,"fields":{"a":1}}"#,
                r#""name" is not a non-empty string"#,
            ),
            (
                r#"{"name":"","fields":{"a":1}}"#,
                r#""name" is not a non-empty string"#,
            ),
            (
                r#"{"name":"m","fields":[1]}"#,
                r#"metric "m": "fields" is not an object"#,
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":[]}"#,
                r#""tags" is not an object"#,
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":{"t":1}}"#,
                r#"metric "m": tag "t" is not a string"#,
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":{"t":""}}"#,
                r#"empty value for tag "t""#,
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":{"":"x"}}"#,
                "a tag has an empty key",
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":{"__name__":"x"}}"#,
                "reserved for the metric name",
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":{"a.b":"x","a-b":"y"}}"#,
                r#"tags "a-b" and "a.b" both become label "a_b""#,
            ),
            (
                r#"{"name":"m","fields":{"a.b":1,"a_b":2}}"#,
                r#"fields "a.b" and "a_b" both become series "m_a_b""#,
            ),
            (
                r#"{"name":"m","fields":{"":1}}"#,
                "a field has an empty key",
            ),
            (
                r#"{"metrics":[{"name":"m","fields":{"a":1},"timestamp":1},5]}"#,
                "metric 1: not an object",
            ),
            (
                r#"{"metrics":[{"name":"m","fields":{"a":1},"timestamp":1},{"name":"n","fields":{"a":1},"tags":{"x":""}}]}"#,
                r#"metric 1 ("n"): empty value for tag "x""#,
            ),
        ] {
            let r = reading(payload);
            assert_eq!(r.errors.len(), 1, "{payload}: {:?}", r.errors);
            assert!(r.errors[0].contains(why), "{payload}: {:?}", r.errors);
            // A refused metric stores nothing; the others of a batch do.
            if payload.starts_with(r#"{"metrics""#) {
                assert_eq!(
                    render_samples(&r),
                    [r#"m_a{topic="telegraf/h/m"} 1.0 @1000"#]
                );
            } else {
                assert!(r.series.is_empty(), "{payload}");
            }
        }
        // A refused metric leaves the rest of its batch.
        let r = reading(
            r#"{"metrics":[{"name":"m","fields":{"a":1},"timestamp":1700000000},{"name":"m","fields":{"a":"x","b":null,"c":{"d":1},"e":[1]},"timestamp":1700000000}]}"#,
        );
        assert_eq!(
            render_samples(&r),
            [r#"m_a{topic="telegraf/h/m"} 1.0 @1700000000000"#]
        );
        assert_eq!(
            r.errors,
            [
                r#"metric 1 ("m"): field "b": null is not a sample"#,
                r#"metric 1 ("m"): field "c": nested JSON (json_nested_fields_include) is not a sample"#,
                r#"metric 1 ("m"): field "e": nested JSON (json_nested_fields_include) is not a sample"#,
            ]
        );
        // A huge number is a float; still finite.
        let r = reading(r#"{"name":"m","fields":{"a":1e308,"b":18446744073709551615}}"#);
        assert_eq!(r.samples(), 2);
    }

    #[test]
    fn times() {
        let one = |ts: &str| {
            let r = reading(&format!(
                r#"{{"name":"m","fields":{{"a":1}},"timestamp":{ts}}}"#
            ));
            let t = r.series[0].samples[0].0;
            (
                t,
                r.notices.into_iter().map(|n| n.message).collect::<Vec<_>>(),
            )
        };
        let none: Vec<String> = Vec::new();
        // Seconds, ms, µs, ns; floats; time text in UTC (Telegraf's).
        assert_eq!(one("1700000000"), (NOW, none.clone()));
        assert_eq!(one("1700000000123"), (NOW + 123, none.clone()));
        assert_eq!(one("1700000000123456"), (NOW + 123, none.clone()));
        assert_eq!(one("1700000000123999999"), (NOW + 123, none.clone()));
        assert_eq!(one("1.7000000001e9"), (NOW + 100, none.clone()));
        assert_eq!(one(r#""2023-11-14T22:13:20Z""#), (NOW, none.clone()));
        assert_eq!(one(r#""2023-11-14T22:13:20""#), (NOW, none.clone()));
        assert_eq!(one(r#""1700000000""#), (NOW, none.clone()));
        // Old is believed: a batch may have waited in Telegraf's buffer.
        assert_eq!(one("1600000000"), (1_600_000_000_000, none.clone()));
        assert_eq!(one("0"), (0, none.clone()));
        // Within 15 minutes ahead too; further is a wrong clock.
        assert_eq!(one("1700000900"), (NOW + 900_000, none.clone()));
        let (t, why) = one("1700000901");
        assert_eq!(t, NOW);
        assert_eq!(
            why,
            ["timestamp 1700000901 is 901 s after the arrival time: the arrival time was used"]
        );
        for (ts, why) in [
            ("-5", "-5 is not a time"),
            (r#""yesterday""#, r#""yesterday" is not a time"#),
            ("true", "a boolean is not a time"),
            ("null", "null is not a time"),
            ("{}", "an object is not a time"),
            ("1e300", "is not a time"),
        ] {
            let (t, notices) = one(ts);
            assert_eq!(t, NOW, "{ts}");
            assert_eq!(notices.len(), 1, "{ts}");
            assert!(notices[0].contains(why), "{ts}: {notices:?}");
        }
        // No timestamp: the arrival time, no notice.
        let r = reading(r#"{"name":"m","fields":{"a":1}}"#);
        assert_eq!((r.series[0].samples[0].0, r.notices.len()), (NOW, 0));
        // One notice for a batch.
        let r = reading(
            r#"{"metrics":[{"name":"m","fields":{"a":1},"timestamp":-1},{"name":"m","fields":{"a":2},"timestamp":"x"},{"name":"m","fields":{"a":3},"timestamp":1700000000}]}"#,
        );
        assert_eq!(r.notices.len(), 1);
        assert!(r.notices[0].message.ends_with("(and for 1 more metrics)"));
        assert_eq!(
            render_samples(&r),
            [
                format!(r#"m_a{{topic="telegraf/h/m"}} 1.0 @{NOW}"#),
                format!(r#"m_a{{topic="telegraf/h/m"}} 2.0 @{NOW}"#),
                format!(r#"m_a{{topic="telegraf/h/m"}} 3.0 @{NOW}"#)
            ]
        );
    }

    #[test]
    fn devices_by_host() {
        let r = reading(
            r#"{"metrics":[{"name":"a","fields":{"x":1},"tags":{"host":"h1"}},{"name":"b","fields":{"x":1},"tags":{"host":"h2"}},{"name":"c","fields":{},"tags":{"host":"h1"}},{"name":"d","fields":{"x":1},"tags":{"host":""}},{"name":"e","fields":{"x":1}}]}"#,
        );
        assert_eq!(
            r.devices,
            [
                DeviceReport::new("h1", Family::Telegraf),
                DeviceReport::new("h2", Family::Telegraf)
            ]
        );
        assert_eq!(r.errors, [r#"metric 3 ("d"): empty value for tag "host""#]);
        assert_eq!(r.samples(), 3);
        // The registry finds each series' host by this label.
        assert_eq!(r.device_label, Some("host"));
        // No host: no device, samples still.
        let r = reading(r#"{"name":"cpu","fields":{"value":42},"tags":{},"timestamp":1525478795}"#);
        assert!(r.devices.is_empty());
        assert_eq!(
            render_samples(&r),
            [r#"cpu{topic="telegraf/h/m"} 42.0 @1525478795000"#]
        );
    }

    #[test]
    fn big_batches_are_linear() {
        let metric = |i: usize| {
            format!(
                r#"{{"name":"m","fields":{{"a":{i},"b":{i}}},"tags":{{"host":"h","n":"{}"}},"timestamp":1700000000}}"#,
                i % 5000
            )
        };
        let body = format!(
            r#"{{"metrics":[{}]}}"#,
            (0..20_000).map(metric).collect::<Vec<_>>().join(",")
        );
        let r = reading(&body);
        assert_eq!((r.series.len(), r.samples()), (10_000, 40_000));
        assert_eq!(r.devices.len(), 1);
    }
}
