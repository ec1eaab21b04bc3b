//! OwnTracks: see docs/devices.md.
//!
//! The OwnTracks apps (and trackers converted to its format) publish JSON
//! objects told apart by their `_type` on `owntracks/<user>/<device>`
//! (`location`, and the broker's last will `lwt`) and on subtopics of it:
//! `/event` (`transition`), `/step` (`steps`), `/beacon`, `/status`,
//! `/waypoint`, `/waypoints`, `/dump` (`configuration`), `/info` (a
//! `card`, published by the user's tools) and `/cmd` (commands to the app).
//! The device id is `<user>/<device>`. A message is read by its `_type`,
//! whatever subtopic it came on. A base topic other than `owntracks/…`
//! (`pubTopicBase`) is not recognised: such messages are read generically.

use serde_json::{Map, Value};

use super::values::{self, DeviceSeries};
use super::{Ctx, DeviceReport, Family, Message, Notice, NoticeKind, Reading, Settings};
use crate::mqtt_payload::PayloadFormat;

/// The subtopics of `owntracks/<user>/<device>` the apps publish or
/// subscribe to.
const SUBTOPICS: &[&str] = &[
    "event",
    "step",
    "beacon",
    "status",
    "waypoint",
    "waypoints",
    "dump",
    "info",
    "cmd",
];

/// How a location field is stored: its metric, its unit, and whether a
/// negative value means "not known" (iOS sends -1 for an invalid course,
/// speed or vertical accuracy, and for a battery level it cannot read).
struct Field {
    key: &'static str,
    metric: &'static str,
    unit: Option<&'static str>,
    negative_unknown: bool,
}

const fn f(
    key: &'static str,
    metric: &'static str,
    unit: Option<&'static str>,
    negative_unknown: bool,
) -> Field {
    Field {
        key,
        metric,
        unit,
        negative_unknown,
    }
}

/// The location fields of docs/tech/json.md (apps, then Queclink trackers
/// via qtripp) that are quantities.
const FIELDS: &[Field] = &[
    f("acc", "accuracy", Some("m"), true),
    f("alt", "altitude", Some("m"), false),
    f("batt", "battery", Some("%"), true),
    f("bs", "battery_status", None, false),
    f("cog", "course", Some("°"), true),
    f("lat", "latitude", Some("°"), false),
    f("lon", "longitude", Some("°"), false),
    f("p", "pressure", Some("kPa"), false),
    f("vac", "vertical_accuracy", Some("m"), true),
    f("vel", "velocity", Some("km/h"), true),
    // Queclink.
    f("odometer", "odometer", Some("km"), false),
    f("hmc", "operating_time", Some("s"), false),
    f("ubatt", "battery_voltage", Some("V"), false),
    f("uext", "external_voltage", Some("V"), false),
    f("don", "ignition_on_duration", Some("s"), false),
    f("doff", "ignition_off_duration", Some("s"), false),
    f("aiv", "analog_input_voltage", Some("V"), false),
    f("rpm", "rpm", None, false),
    f("fcon", "fuel_consumption", Some("L/100km"), false),
    f("flvl", "fuel_level", Some("%"), false),
    f("ign", "ignition", None, false),
    f("motion", "motion", None, false),
    f("tow", "tow", None, false),
    f("fake", "fake_tow", None, false),
    f("sens", "motion_sensor", None, false),
    f("nmds", "non_movement_detection", None, false),
];

/// Location fields that are not quantities: words, names, identifiers,
/// codes and enumerations, times other than `tst`, lists.
const NOT_QUANTITIES: &[&str] = &[
    "t",
    "tid",
    "conn",
    "SSID",
    "BSSID",
    "topic",
    "inregions",
    "inrids",
    "poi",
    "image",
    "imagename",
    "tag",
    "m",
    "rad",
    "motionactivities",
    "desc",
    "event",
    "wtst",
    // Queclink.
    "vin",
    "imei",
    "name",
    "sent",
    "mcc",
    "mnc",
    "lac",
    "cid",
    "rit",
    "rty",
    "rid",
    "mst",
    "count",
    "counter",
    "ignored",
    "anum",
    "can",
    "raw_line",
];

/// Whether [`read`] may claim `topic`, whatever the payload.
pub(crate) fn may_claim(topic: &str, settings: &Settings) -> bool {
    topic
        .strip_prefix(settings.owntracks_prefix.as_str())
        .is_some_and(|r| r.starts_with('/'))
}

/// The device id (`<user>/<device>`) and subtopic of an OwnTracks topic
/// under the base topic `prefix`.
fn layout<'t>(topic: &'t str, prefix: &str) -> Option<(&'t str, Option<&'t str>)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let user = levels.next()?;
    let device = levels.next()?;
    let sub = levels.next();
    if user.is_empty() || device.is_empty() || levels.next().is_some() {
        return None;
    }
    if sub.is_some_and(|s| !SUBTOPICS.contains(&s)) {
        return None;
    }
    Some((&rest[..user.len() + 1 + device.len()], sub))
}

/// The message read as OwnTracks's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, ctx: &mut Ctx) -> Option<Reading> {
    let (id, sub) = layout(msg.topic, &ctx.settings.owntracks_prefix)?;
    let mut r = Reading::new(Family::OwnTracks, PayloadFormat::Json);
    if msg.payload.iter().all(u8::is_ascii_whitespace) {
        // A retained message cleared.
        return Some(r);
    }
    let obj = match serde_json::from_slice::<Value>(msg.payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            r.errors
                .push("an OwnTracks message is not a JSON object".into());
            return Some(r);
        }
        Err(e) => {
            r.format = PayloadFormat::Unparsed;
            r.errors
                .push(format!("an OwnTracks message is not JSON: {e}"));
            return Some(r);
        }
    };
    let Some(kind) = obj.get("_type").and_then(Value::as_str) else {
        r.errors.push("an OwnTracks message without a _type".into());
        return Some(r);
    };
    if kind == "cmd" || sub == Some("cmd") {
        // A command to the app, not the app speaking.
        return Some(r);
    }
    let mut d = DeviceReport::new(id, Family::OwnTracks);
    let mut out = Out {
        msg,
        series: DeviceSeries::new(id, msg.topic),
        reading: &mut r,
    };
    match kind {
        "location" => {
            d.online = Some(true);
            d.battery = obj
                .get("batt")
                .and_then(values::sample_value)
                .filter(|b| (0.0..=100.0).contains(b));
            out.location(&obj);
        }
        "lwt" => d.online = Some(false),
        "transition" => out.transition(&obj),
        "steps" => out.steps(&obj),
        "beacon" => out.beacon(&obj),
        "card" => {
            d.name = text(&obj, "name").filter(|n| n != id);
        }
        "status" => {
            if let Some(Value::Object(ios)) = obj.get("iOS") {
                d.model = text(ios, "deviceModel");
                d.firmware = text(ios, "version");
            }
        }
        "encrypted" => out
            .reading
            .errors
            .push("an encrypted OwnTracks message: perch does not hold the key".into()),
        // Waypoints, configuration dumps, requests, types to come: not
        // samples.
        _ => {}
    }
    let Out {
        series, reading, ..
    } = out;
    series.finish(reading);
    r.devices.push(d);
    Some(r)
}

/// A string field, trimmed, if not empty.
fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Samples, units and notices of one message.
struct Out<'a, 'm> {
    msg: &'a Message<'m>,
    series: DeviceSeries<'a>,
    reading: &'a mut Reading,
}

impl Out<'_, '_> {
    fn push(&mut self, metric: &str, extra: &[(&str, &str)], t: i64, v: f64, unit: Option<&str>) {
        self.series.push(metric, extra, t, v, unit);
    }

    /// The sample time: `tst` when it is close to the arrival time, else
    /// the arrival time (and a notice); the arrival time without a `tst`.
    fn time(&mut self, obj: &Map<String, Value>) -> i64 {
        let Some(tst) = obj.get("tst") else {
            return self.msg.received_ms;
        };
        let parsed = values::time_value(tst, &values::Zone::Utc);
        let (t, why) = values::device_time(parsed, self.msg.received_ms);
        if let Some(why) = why {
            self.reading.notices.push(Notice {
                kind: NoticeKind::Time,
                message: format!("tst {tst}: {why}"),
            });
        }
        t
    }

    /// `_type=location`.
    fn location(&mut self, obj: &Map<String, Value>) {
        let t = self.time(obj);
        for (k, v) in obj {
            if k.starts_with('_') || values::is_time_key(k) || NOT_QUANTITIES.contains(&k.as_str())
            {
                continue;
            }
            if let Some(field) = FIELDS.iter().find(|f| f.key == k.as_str()) {
                match values::sample_value(v) {
                    Some(x) if x < 0.0 && field.negative_unknown => {
                        self.reading.dropped_sentinels += 1
                    }
                    Some(x) => self.push(field.metric, &[], t, x, field.unit),
                    None => self.not_a_number(k, v),
                }
                continue;
            }
            // Queclink's numbered inputs: `temp_c-01`, `din1`, `dout2`;
            // analog input ids, types and data are words.
            if let Some(n) = k.strip_prefix("temp_c-") {
                if let Some(x) = values::sample_value(v) {
                    self.push("temperature", &[("input", n)], t, x, Some("°C"));
                }
                continue;
            }
            if k.starts_with("adid-") || k.starts_with("adty-") || k.starts_with("adda-") {
                continue;
            }
            let numbered = [
                ("din", "digital_input", "input"),
                ("dout", "digital_output", "output"),
            ]
            .into_iter()
            .find_map(|(p, m, l)| {
                let n = k.strip_prefix(p)?;
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some((m, l, n))
            });
            if let Some((metric, label, n)) = numbered {
                if let Some(x) = values::sample_value(v) {
                    self.push(metric, &[(label, n)], t, x, None);
                }
                continue;
            }
            // Anything else that is a number or a boolean (a tracker's
            // `dist`, `trip`), under its own name; words are not samples.
            if matches!(v, Value::Number(_) | Value::Bool(_)) {
                if let Some(x) = values::sample_value(v) {
                    self.push(&values::metric_name([k.as_str()]), &[], t, x, None);
                }
            }
        }
    }

    fn not_a_number(&mut self, k: &str, v: &Value) {
        if !v.is_null() {
            self.reading
                .errors
                .push(format!("{k}: {v} is not a number"));
        }
    }

    /// `_type=transition`: `in_region{region=<desc>}` 1 on `enter`, 0 on
    /// `leave`.
    fn transition(&mut self, obj: &Map<String, Value>) {
        let value = match obj.get("event").and_then(Value::as_str) {
            Some("enter") => 1.0,
            Some("leave") => 0.0,
            other => {
                self.reading.errors.push(format!(
                    "a transition's event {:?} is neither enter nor leave",
                    other.unwrap_or("(none)")
                ));
                return;
            }
        };
        let Some(region) = text(obj, "desc").or_else(|| text(obj, "rid")) else {
            self.reading
                .errors
                .push("a transition without desc or rid: which region is not said".into());
            return;
        };
        let t = self.time(obj);
        self.push("in_region", &[("region", &region)], t, value, None);
    }

    /// `_type=steps`: `steps` at `tst` (the request's time); -1 means the
    /// device cannot count steps.
    fn steps(&mut self, obj: &Map<String, Value>) {
        let t = self.time(obj);
        match obj.get("steps").and_then(values::sample_value) {
            Some(x) if x < 0.0 => self.reading.dropped_sentinels += 1,
            Some(x) => self.push("steps", &[], t, x, None),
            None => self
                .reading
                .errors
                .push("a steps message without a number of steps".into()),
        }
    }

    /// `_type=beacon`: a ranged iBeacon's signal, proximity and accuracy,
    /// labelled with its uuid, major and minor.
    fn beacon(&mut self, obj: &Map<String, Value>) {
        let t = self.time(obj);
        let label = |k: &str| match obj.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let (uuid, major, minor) = (label("uuid"), label("major"), label("minor"));
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [("uuid", &uuid), ("major", &major), ("minor", &minor)] {
            if !v.is_empty() {
                labels.push((k, v));
            }
        }
        // 0 for rssi and proximity, and a negative accuracy, mean "not
        // determined".
        let fields = [
            ("rssi", "beacon_rssi", Some("dBm")),
            ("prox", "beacon_proximity", None),
            ("acc", "beacon_accuracy", Some("m")),
        ];
        for (key, metric, unit) in fields {
            match obj.get(key).and_then(values::sample_value) {
                Some(x) if (key == "acc" && x < 0.0) || (key != "acc" && x == 0.0) => {
                    self.reading.dropped_sentinels += 1
                }
                Some(x) => self.push(metric, &labels, t, x, unit),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::render_samples;
    use super::super::{Interpreter, Settings};
    use super::*;
    use crate::rules::Rules;

    const NOW: i64 = 1_706_856_298_000;

    fn read_at(topic: &str, payload: &str, received_ms: i64) -> Reading {
        let mut s = Settings::default();
        s.time_zones.default = values::Zone::Utc;
        Interpreter::new(Rules::default(), s).read(topic, payload.as_bytes(), received_ms)
    }

    fn read(topic: &str, payload: &str) -> Reading {
        read_at(topic, payload, NOW)
    }

    #[test]
    fn layouts() {
        assert_eq!(
            layout("owntracks/jane/phone", "owntracks"),
            Some(("jane/phone", None))
        );
        assert_eq!(
            layout("owntracks/jane/phone/event", "owntracks"),
            Some(("jane/phone", Some("event")))
        );
        assert_eq!(layout("owntracks/jane", "owntracks"), None);
        assert_eq!(layout("owntracks//phone", "owntracks"), None);
        assert_eq!(layout("owntracks/jane/", "owntracks"), None);
        assert_eq!(layout("owntracks/jane/phone/other", "owntracks"), None);
        assert_eq!(layout("owntracks/jane/phone/event/x", "owntracks"), None);
        assert_eq!(layout("tele/jane/phone", "owntracks"), None);
        // Not OwnTracks's: read generically.
        assert_eq!(
            read("owntracks/jane/phone/other", "{\"a\":1}").family,
            Family::Generic
        );
    }

    #[test]
    fn location_fields_and_sentinels() {
        let r = read(
            "owntracks/j/p",
            r#"{"_type":"location","lat":"48.1","lon":2,"batt":-1,"vel":-1,"alt":-3,"bs":2,"conn":"w","m":1,"tst":1706856298,"created_at":1706856000,"dist":12,"ign":true,"din2":false,"temp_c-01":21.5,"adda-01":"7","_id":"x","inregions":["Home"]}"#,
        );
        let s = render_samples(&r);
        assert_eq!(
            s,
            [
                r#"altitude{device="j/p",topic="owntracks/j/p"} -3.0 @1706856298000"#,
                r#"battery_status{device="j/p",topic="owntracks/j/p"} 2.0 @1706856298000"#,
                r#"digital_input{device="j/p",input="2",topic="owntracks/j/p"} 0.0 @1706856298000"#,
                r#"dist{device="j/p",topic="owntracks/j/p"} 12.0 @1706856298000"#,
                r#"ignition{device="j/p",topic="owntracks/j/p"} 1.0 @1706856298000"#,
                r#"latitude{device="j/p",topic="owntracks/j/p"} 48.1 @1706856298000"#,
                r#"longitude{device="j/p",topic="owntracks/j/p"} 2.0 @1706856298000"#,
                r#"temperature{device="j/p",input="01",topic="owntracks/j/p"} 21.5 @1706856298000"#,
            ]
        );
        assert_eq!(r.dropped_sentinels, 2);
        assert!(r.errors.is_empty() && r.notices.is_empty());
        assert_eq!(r.devices[0].battery, None);
        assert_eq!(r.devices[0].online, Some(true));
        assert_eq!(
            r.units,
            [
                ("altitude".to_string(), "m".to_string()),
                ("latitude".into(), "°".into()),
                ("longitude".into(), "°".into()),
                ("temperature".into(), "°C".into()),
            ]
        );
    }

    #[test]
    fn times() {
        let p = r#"{"_type":"location","lat":1,"lon":2,"tst":1706856298}"#;
        // A queued fix an hour old: the arrival time, and why.
        let r = read_at("owntracks/j/p", p, NOW + 3_600_000);
        assert!(render_samples(&r)
            .iter()
            .all(|s| s.ends_with(&format!("@{}", NOW + 3_600_000))));
        assert_eq!(r.notices.len(), 1);
        assert_eq!(r.notices[0].kind, NoticeKind::Time);
        assert!(r.notices[0].message.contains("-3600 s"), "{:?}", r.notices);
        // No tst: the arrival time, silently.
        let r = read_at("owntracks/j/p", r#"{"_type":"location","lat":1}"#, 7);
        assert_eq!(r.series[0].samples, [(7, 1.0)]);
        assert!(r.notices.is_empty());
        // A tst that is not a time.
        let r = read_at(
            "owntracks/j/p",
            r#"{"_type":"location","lat":1,"tst":"x"}"#,
            7,
        );
        assert_eq!(r.series[0].samples, [(7, 1.0)]);
        assert_eq!(r.notices.len(), 1);
        // An epoch in a string is a time.
        let r = read(
            "owntracks/j/p",
            r#"{"_type":"location","lat":1,"tst":"1706856290"}"#,
        );
        assert_eq!(r.series[0].samples, [(NOW - 8000, 1.0)]);
    }

    #[test]
    fn malformed() {
        for p in ["{", "not json", "[1,2]", "42", "{\"lat\":1}", "\u{0}\u{ff}"] {
            let r = read("owntracks/j/p", p);
            assert_eq!(r.family, Family::OwnTracks, "{p}");
            assert!(r.series.is_empty(), "{p}");
            assert_eq!(r.errors.len(), 1, "{p}: {:?}", r.errors);
        }
        let r = read(
            "owntracks/j/p",
            r#"{"_type":"location","lat":{"x":1},"lon":null}"#,
        );
        assert!(r.series.is_empty());
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let r = read("owntracks/j/p", r#"{"_type":7}"#);
        assert_eq!(r.errors.len(), 1);
        // A cleared retained message.
        let r = read("owntracks/j/p", "");
        assert!(r.series.is_empty() && r.errors.is_empty() && r.devices.is_empty());
        let r = read("owntracks/j/p", r#"{"_type":"encrypted","data":"abc"}"#);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.devices.len(), 1);
    }

    #[test]
    fn other_types() {
        let r = read("owntracks/j/p", r#"{"_type":"lwt","tst":1}"#);
        assert!(r.series.is_empty() && r.notices.is_empty());
        assert_eq!(r.devices[0].online, Some(false));
        let r = read(
            "owntracks/j/p/event",
            r#"{"_type":"transition","event":"leave","rid":"f7","tst":1706856298,"lat":1,"lon":2,"acc":5}"#,
        );
        assert_eq!(
            render_samples(&r),
            [
                r#"in_region{device="j/p",region="f7",topic="owntracks/j/p/event"} 0.0 @1706856298000"#
            ]
        );
        let r = read(
            "owntracks/j/p/event",
            r#"{"_type":"transition","event":"enter"}"#,
        );
        assert!(r.series.is_empty() && r.errors.len() == 1);
        let r = read(
            "owntracks/j/p/event",
            r#"{"_type":"transition","desc":"x"}"#,
        );
        assert!(r.series.is_empty() && r.errors.len() == 1);
        let r = read(
            "owntracks/j/p/step",
            r#"{"_type":"steps","steps":-1,"tst":1706856298}"#,
        );
        assert!(r.series.is_empty() && r.dropped_sentinels == 1);
        let r = read(
            "owntracks/j/p/beacon",
            r#"{"_type":"beacon","uuid":"CA27","major":1,"minor":2,"tst":1706856298,"acc":-1,"rssi":-71,"prox":0}"#,
        );
        assert_eq!(
            render_samples(&r),
            [
                r#"beacon_rssi{device="j/p",major="1",minor="2",topic="owntracks/j/p/beacon",uuid="CA27"} -71.0 @1706856298000"#
            ]
        );
        assert_eq!(r.dropped_sentinels, 2);
        let r = read(
            "owntracks/j/p/status",
            r#"{"_type":"status","iOS":{"deviceModel":"iPhone","version":"18.2.0"}}"#,
        );
        assert_eq!(r.devices[0].model.as_deref(), Some("iPhone"));
        assert_eq!(r.devices[0].firmware.as_deref(), Some("18.2.0"));
        let r = read(
            "owntracks/j/p/status",
            r#"{"_type":"status","android":{"wifi":1}}"#,
        );
        assert!(r.series.is_empty() && r.devices[0].model.is_none());
        let r = read(
            "owntracks/j/p/cmd",
            r#"{"_type":"cmd","action":"reportLocation"}"#,
        );
        assert!(r.series.is_empty() && r.devices.is_empty() && r.errors.is_empty());
        let r = read("owntracks/j/p", r#"{"_type":"somethingnew","x":1}"#);
        assert!(r.series.is_empty() && r.errors.is_empty() && r.devices.len() == 1);
    }
}
