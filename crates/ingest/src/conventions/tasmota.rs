//! Tasmota: see docs/devices.md.
//!
//! Topics are `<prefix>/<topic>/<suffix>` (FullTopic `%prefix%/%topic%/`, the
//! default, also with levels before `%topic%`), or `<topic>/<prefix>/<suffix>`
//! (FullTopic `%topic%/%prefix%/`) when the payload is what that suffix
//! carries. The device id is `<topic>` (all its levels).

use serde_json::{Map, Value};

use super::values::{self, DeviceSeries};
use super::{Ctx, DeviceReport, Family, Message, Notice, NoticeKind, Reading, Settings, Signal};
use crate::mqtt_payload::PayloadFormat;

/// What the last topic level says the payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suffix {
    Sensor,
    State,
    Lwt,
    Info,
    Result,
    Status,
    /// `POWER` or `POWER<n>`: the channel.
    Power(u32),
    /// Anything under `cmnd/`: commands to the device, not readings.
    Command,
}

struct Topic {
    device: String,
    suffix: Suffix,
    /// `%topic%/%prefix%/` layout: claimed only if the payload fits.
    swapped: bool,
}

/// Whether [`read`] may claim `topic`, whatever the payload: a cheap test
/// that is true for every topic it claims (and for some others).
pub(crate) fn may_claim(topic: &str, _settings: &Settings) -> bool {
    let first = topic.split('/').next().unwrap_or("");
    let before_last = topic.rsplit('/').nth(1).unwrap_or("");
    matches!(first, "tele" | "stat" | "cmnd") || matches!(before_last, "tele" | "stat")
}

/// The device a Tasmota state topic belongs to (for Home Assistant
/// discovery configs that name one: Tasmota's own `SetOption19`).
pub(crate) fn device_of(topic: &str) -> Option<String> {
    parse_topic(topic)
        .filter(|t| !t.swapped && !matches!(t.suffix, Suffix::Command))
        .map(|t| t.device)
}

/// The message read as Tasmota's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, ctx: &mut Ctx) -> Option<Reading> {
    let mut topic = parse_topic(msg.topic)?;
    let mut r = Reading::new(Family::Tasmota, PayloadFormat::Json);
    let text = msg.text();
    // A command's answer on stat/<topic>/POWER (SetOption4) is JSON.
    if matches!(topic.suffix, Suffix::Power(_))
        && text.is_some_and(|t| t.trim_start().starts_with('{'))
    {
        topic.suffix = Suffix::Result;
    }
    match topic.suffix {
        Suffix::Command => {
            r.format = PayloadFormat::Ignored;
            return Some(r);
        }
        Suffix::Lwt => {
            let online = text.and_then(values::state_word);
            if topic.swapped && online.is_none() {
                return None;
            }
            r.format = PayloadFormat::Boolean;
            let mut d = DeviceReport::new(&topic.device, Family::Tasmota);
            match online {
                Some(v) => d.online = Some(v == 1.0),
                None => r.errors.push(format!(
                    "LWT: {:?} is neither Online nor Offline",
                    text.unwrap_or("<not UTF-8>")
                )),
            }
            r.devices.push(d);
            return Some(r);
        }
        Suffix::Power(channel) => {
            let v = text.and_then(values::state_word);
            if topic.swapped && v.is_none() {
                return None;
            }
            r.format = PayloadFormat::Boolean;
            let mut out = Out::new(msg, &topic.device);
            match v {
                Some(v) => out.power(channel, msg.received_ms, v),
                None => r.errors.push(format!(
                    "POWER: {:?} is neither ON nor OFF",
                    text.unwrap_or("<not UTF-8>")
                )),
            }
            out.finish(&mut r);
            r.devices
                .push(DeviceReport::new(&topic.device, Family::Tasmota));
            return Some(r);
        }
        _ => {}
    }
    let obj = match text.map(|t| serde_json::from_str::<Value>(t.trim())) {
        Some(Ok(Value::Object(o))) => o,
        _ if topic.swapped => return None,
        Some(Ok(_)) => {
            r.format = PayloadFormat::Unparsed;
            r.errors.push("not a JSON object".into());
            r.devices
                .push(DeviceReport::new(&topic.device, Family::Tasmota));
            return Some(r);
        }
        Some(Err(e)) => {
            r.format = PayloadFormat::Unparsed;
            r.errors.push(format!("not JSON: {e}"));
            r.devices
                .push(DeviceReport::new(&topic.device, Family::Tasmota));
            return Some(r);
        }
        None => {
            r.format = PayloadFormat::Unparsed;
            r.errors.push("not UTF-8".into());
            r.devices
                .push(DeviceReport::new(&topic.device, Family::Tasmota));
            return Some(r);
        }
    };
    let mut out = Out::new(msg, &topic.device);
    let mut device = DeviceReport::new(&topic.device, Family::Tasmota);
    match topic.suffix {
        Suffix::Sensor => {
            if let Some(Value::Object(zb)) = obj.get("ZbReceived") {
                zigbee(zb, &topic.device, &mut out, &mut r);
                out.finish(&mut r);
                return Some(r);
            }
            let t = out.sample_time(&obj, ctx);
            out.sensor(&obj, t);
        }
        Suffix::State => {
            let t = out.sample_time(&obj, ctx);
            out.state(&obj, t, &mut device);
        }
        Suffix::Result => {
            let t = out.sample_time(&obj, ctx);
            out.powers(&obj, t);
        }
        Suffix::Status => {
            if let Some(Value::Object(sns)) = obj.get("StatusSNS") {
                let t = out.sample_time(sns, ctx);
                out.sensor(sns, t);
            }
            if let Some(Value::Object(sts)) = obj.get("StatusSTS") {
                let t = out.sample_time(sts, ctx);
                out.state(sts, t, &mut device);
            }
            if let Some(Value::Object(fwr)) = obj.get("StatusFWR") {
                device.firmware = text_field(fwr, "Version");
            }
            if let Some(Value::Object(st)) = obj.get("Status") {
                let name = text_field(st, "DeviceName").or_else(|| match st.get("FriendlyName") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
                    _ => None,
                });
                device.name = name.filter(|n| !n.is_empty() && *n != topic.device);
            }
        }
        Suffix::Info => {
            // Since 12.x the fields are wrapped: {"Info1":{"Module":…}}.
            let inner = ["Info1", "Info2", "Info3"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(Value::as_object))
                .unwrap_or(&obj);
            device.model = text_field(inner, "Module");
            device.firmware = text_field(inner, "Version");
        }
        Suffix::Lwt | Suffix::Power(_) | Suffix::Command => {}
    }
    out.finish(&mut r);
    r.devices.push(device);
    Some(r)
}

/// The layouts Tasmota's FullTopic allows, recognised by their prefix and
/// last level.
fn parse_topic(topic: &str) -> Option<Topic> {
    // Without allocating first: this runs on every message.
    let first = topic.split('/').next()?;
    let before_last = topic.rsplit('/').nth(1)?;
    if !matches!(first, "tele" | "stat" | "cmnd") && !matches!(before_last, "tele" | "stat") {
        return None;
    }
    let levels: Vec<&str> = topic.split('/').collect();
    let n = levels.len();
    if n < 3 || levels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let (prefix, device, suffix, swapped) = match levels[0] {
        "tele" | "stat" | "cmnd" => (levels[0], levels[1..n - 1].join("/"), levels[n - 1], false),
        _ if matches!(levels[n - 2], "tele" | "stat") => (
            levels[n - 2],
            levels[..n - 2].join("/"),
            levels[n - 1],
            true,
        ),
        _ => return None,
    };
    let suffix = match (prefix, suffix) {
        ("cmnd", _) if !swapped => Suffix::Command,
        ("tele", "SENSOR") => Suffix::Sensor,
        ("tele", "STATE") => Suffix::State,
        ("tele", "LWT") => Suffix::Lwt,
        ("tele", "INFO1" | "INFO2" | "INFO3") => Suffix::Info,
        ("tele" | "stat", "RESULT") => Suffix::Result,
        ("stat", s) if s == "STATUS" || indexed(s, "STATUS").is_some() => Suffix::Status,
        ("stat", s) => Suffix::Power(indexed(s, "POWER")?),
        _ => return None,
    };
    Some(Topic {
        device,
        suffix,
        swapped,
    })
}

/// `POWER` → 1, `POWER2` → 2 (Tasmota's `POWER` is `POWER1`); `None` for
/// other keys.
fn indexed(key: &str, base: &str) -> Option<u32> {
    let rest = key.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(1);
    }
    if rest.bytes().all(|b| b.is_ascii_digit()) && rest.len() <= 3 {
        rest.parse().ok()
    } else {
        None
    }
}

fn text_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Blocks of a SENSOR message that are events or raw frames, not readings.
const EVENT_BLOCKS: &[&str] = &[
    "IrReceived",
    "RfReceived",
    "RfRaw",
    "TuyaReceived",
    "SerialReceived",
    "SSerialReceived",
];

/// Samples, units and notices of one message.
struct Out<'a> {
    received_ms: i64,
    series: DeviceSeries<'a>,
    notices: Vec<Notice>,
}

impl<'a> Out<'a> {
    fn new(msg: &Message<'a>, device: &'a str) -> Out<'a> {
        Out {
            received_ms: msg.received_ms,
            series: DeviceSeries::new(device, msg.topic),
            notices: Vec::new(),
        }
    }

    fn finish(self, r: &mut Reading) {
        self.series.finish(r);
        r.notices = self.notices;
    }

    fn push(&mut self, name: &str, extra: &[(&str, &str)], t: i64, v: f64, unit: Option<&str>) {
        self.series.push(name, extra, t, v, unit);
    }

    fn power(&mut self, channel: u32, t: i64, v: f64) {
        let ch = channel.to_string();
        self.push("power_state", &[("channel", &ch)], t, v, None);
    }

    /// The message's time: `Epoch` (UTC) where the firmware sends it, else
    /// `Time` (local, read in the device's zone), else the arrival time.
    fn sample_time(&mut self, obj: &Map<String, Value>, ctx: &Ctx) -> i64 {
        let (field, parsed) = if let Some(e) = obj.get("Epoch") {
            ("Epoch", values::time_value(e, &values::Zone::Utc))
        } else if let Some(t) = obj.get("Time") {
            let zone = ctx.settings.time_zones.of(self.series.device);
            let parsed = match t {
                Value::String(s) => values::time_text(&dotted_date(s), zone),
                other => values::time_value(other, zone),
            };
            ("Time", parsed)
        } else {
            return self.received_ms;
        };
        let (t, why) = values::device_time(parsed, self.received_ms);
        if let Some(why) = why {
            self.notices.push(Notice {
                kind: NoticeKind::Time,
                message: format!("{field} {}: {why}", obj[field]),
            });
        }
        t
    }

    /// `POWER`/`POWER<n>` keys of an object.
    fn powers(&mut self, obj: &Map<String, Value>, t: i64) {
        for (k, v) in obj {
            if let Some(ch) = indexed(k, "POWER") {
                if let Some(x) = scalar(v) {
                    self.power(ch, t, x);
                }
            }
        }
    }

    /// A SENSOR message (or STATUS's `StatusSNS`).
    fn sensor(&mut self, obj: &Map<String, Value>, t: i64) {
        let temp_unit = obj.get("TempUnit").and_then(Value::as_str).map(temp_unit);
        let pressure_unit = obj.get("PressureUnit").and_then(Value::as_str);
        let units = Units {
            temp: temp_unit,
            pressure: pressure_unit,
        };
        for (k, v) in obj {
            if matches!(
                k.as_str(),
                "TempUnit" | "PressureUnit" | "SpeedUnit" | "Epoch"
            ) || values::is_time_key(k)
                || EVENT_BLOCKS.contains(&k.as_str())
            {
                continue;
            }
            if let Some(ch) = indexed(k, "POWER") {
                if let Some(x) = scalar(v) {
                    self.power(ch, t, x);
                }
                continue;
            }
            if let Some(ch) = indexed(k, "Switch") {
                // An object is a switch action (an event), not a state.
                if let Some(x) = scalar(v) {
                    let ch = ch.to_string();
                    self.push("switch_state", &[("channel", &ch)], t, x, None);
                }
                continue;
            }
            if indexed(k, "Button").is_some() {
                continue;
            }
            match v {
                Value::Object(block) if k == "ENERGY" => self.energy(block, t),
                Value::Object(block) => self.block(k, block, t, &units),
                Value::Array(_) | Value::Null => {}
                _ => {
                    if let Some(x) = scalar(v) {
                        let name = values::metric_name([k.as_str()]);
                        let unit = units.of(k);
                        self.push(&name, &[], t, x, unit);
                    }
                }
            }
        }
    }

    /// A sensor block, `"BME280":{"Temperature":21.7,…}`: the block's name
    /// is the label `sensor`; a DS18x20 probe's `Id` is the label `id` (its
    /// `-<n>` suffix is the order of discovery, which can change).
    fn block(&mut self, name: &str, block: &Map<String, Value>, t: i64, units: &Units) {
        let id = block
            .get("Id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let sensor = match id {
            Some(_) => strip_index(name),
            None => name,
        };
        let mut labels = vec![("sensor", sensor)];
        if let Some(id) = id {
            labels.push(("id", id));
        }
        let mut path = Vec::new();
        self.flatten(block, &mut path, &labels, t, units);
    }

    fn flatten<'k>(
        &mut self,
        obj: &'k Map<String, Value>,
        path: &mut Vec<&'k str>,
        labels: &[(&str, &str)],
        t: i64,
        units: &Units,
    ) {
        for (k, v) in obj {
            if k == "Id" || values::is_time_key(k) {
                continue;
            }
            match v {
                Value::Object(inner) if path.len() < 4 => {
                    path.push(k);
                    self.flatten(inner, path, labels, t, units);
                    path.pop();
                }
                _ => {
                    if let Some(x) = scalar(v) {
                        let name = values::metric_name(path.iter().copied().chain([k.as_str()]));
                        let unit = if path.is_empty() { units.of(k) } else { None };
                        self.push(&name, labels, t, x, unit);
                    }
                }
            }
        }
    }

    /// The `ENERGY` block: `energy_<field>`, with the units Tasmota's energy
    /// driver uses; per-phase arrays get the label `phase` (1, 2, …).
    fn energy(&mut self, block: &Map<String, Value>, t: i64) {
        for (k, v) in block {
            if k == "TotalStartTime" || values::is_time_key(k) {
                continue;
            }
            let name = values::metric_name(["ENERGY", k.as_str()]);
            let unit = energy_unit(k);
            match v {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(x) = scalar(item) {
                            let phase = (i + 1).to_string();
                            self.push(&name, &[("phase", &phase)], t, x, unit);
                        }
                    }
                }
                _ => {
                    if let Some(x) = scalar(v) {
                        self.push(&name, &[], t, x, unit);
                    }
                }
            }
        }
    }

    /// A STATE message (or STATUS's `StatusSTS`): relay states and the
    /// device's health.
    fn state(&mut self, obj: &Map<String, Value>, t: i64, device: &mut DeviceReport) {
        self.powers(obj, t);
        for (key, name, unit) in [
            ("UptimeSec", "uptime_sec", Some("s")),
            ("Heap", "heap", Some("kB")),
            ("Vcc", "vcc", Some("V")),
            ("LoadAvg", "load_avg", None),
            ("MqttCount", "mqtt_count", None),
            ("Dimmer", "dimmer", Some("%")),
        ] {
            if let Some(x) = obj.get(key).and_then(scalar) {
                self.push(name, &[], t, x, unit);
            }
        }
        if let Some(Value::Object(wifi)) = obj.get("Wifi") {
            let rssi = wifi.get("RSSI").and_then(scalar);
            let signal = wifi.get("Signal").and_then(scalar);
            for (name, v, unit) in [
                ("wifi_rssi", rssi, Some("%")),
                ("wifi_signal", signal, Some("dBm")),
                (
                    "wifi_link_count",
                    wifi.get("LinkCount").and_then(scalar),
                    None,
                ),
            ] {
                if let Some(x) = v {
                    self.push(name, &[], t, x, unit);
                }
            }
            device.signal = match (signal, rssi) {
                (Some(dbm), _) => Some(Signal::Rssi(dbm)),
                (None, Some(pct)) => Some(Signal::Percent(pct)),
                _ => None,
            };
        }
    }
}

/// Units a SENSOR message declares for its temperatures and pressures.
struct Units<'a> {
    temp: Option<&'a str>,
    pressure: Option<&'a str>,
}

impl<'a> Units<'a> {
    fn of(&self, field: &str) -> Option<&'a str> {
        let temp_field = field == "DewPoint"
            || field
                .strip_prefix("Temperature")
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()));
        if temp_field {
            self.temp
        } else if matches!(field, "Pressure" | "SeaPressure") {
            self.pressure
        } else if field == "Humidity" {
            Some("%")
        } else {
            None
        }
    }
}

fn temp_unit(u: &str) -> &str {
    match u {
        "C" => "°C",
        "F" => "°F",
        other => other,
    }
}

fn energy_unit(field: &str) -> Option<&'static str> {
    Some(match field {
        "Total" | "Today" | "Yesterday" | "ExportActive" | "ImportActive" => "kWh",
        "Period" => "Wh",
        "Power" => "W",
        "ApparentPower" => "VA",
        "ReactivePower" => "var",
        "Voltage" => "V",
        "Current" => "A",
        "Frequency" => "Hz",
        _ => return None,
    })
}

/// `DS18B20-1` → `DS18B20`.
fn strip_index(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    }
}

/// A JSON scalar as a sample value (numbers, state words, numbers in
/// strings); objects, arrays and other text are not samples.
fn scalar(v: &Value) -> Option<f64> {
    match v {
        Value::Object(_) | Value::Array(_) => None,
        _ => values::sample_value(v),
    }
}

/// Tasmota before 6.x wrote `2018.02.15 01:00:50`: made ISO 8601.
fn dotted_date(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.trim().as_bytes();
    if b.len() >= 19 && b[4] == b'.' && b[7] == b'.' && b[10] == b' ' {
        let t = s.trim();
        std::borrow::Cow::Owned(format!(
            "{}-{}-{}T{}",
            &t[..4],
            &t[5..7],
            &t[8..10],
            &t[11..]
        ))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A Zigbee bridge's `{"ZbReceived":{"0x8F20":{…}}}`: each Zigbee device is
/// its own device (id: its `Name`, else its short address), with the bridge
/// as the label `bridge`.
fn zigbee(zb: &Map<String, Value>, bridge_topic: &str, out: &mut Out, r: &mut Reading) {
    let t = out.received_ms;
    for (key, v) in zb {
        let Value::Object(obj) = v else {
            r.errors.push(format!("ZbReceived.{key}: not an object"));
            continue;
        };
        let short =
            text_field(obj, "Device").or_else(|| key.starts_with("0x").then(|| key.clone()));
        let name = text_field(obj, "Name")
            .or_else(|| (short.as_deref() != Some(key.as_str())).then(|| key.clone()));
        let id = name
            .or_else(|| short.clone())
            .unwrap_or_else(|| key.clone());
        // With SetOption89 the topic is tele/<bridge>/<short address>/SENSOR.
        let bridge = match (bridge_topic.rsplit_once('/'), &short) {
            (Some((b, last)), Some(s)) if s.trim_start_matches("0x").eq_ignore_ascii_case(last) => {
                b
            }
            _ => bridge_topic,
        };
        let endpoint = obj.get("Endpoint").and_then(scalar).map(|e| e.to_string());
        let pressure_unit = obj.get("PressureUnit").and_then(Value::as_str);
        let mut labels: Vec<(&str, &str)> = vec![("bridge", bridge)];
        if let Some(e) = &endpoint {
            labels.push(("endpoint", e));
        }
        let mut d = DeviceReport::new(&id, Family::Tasmota);
        d.model = text_field(obj, "ModelId");
        d.manufacturer = text_field(obj, "Manufacturer");
        for (k, v) in obj {
            if matches!(
                k.as_str(),
                "Device"
                    | "Name"
                    | "Endpoint"
                    | "ModelId"
                    | "Manufacturer"
                    | "PressureUnit"
                    | "Group"
                    | "Cluster"
            ) || values::is_time_key(k)
                || !k.starts_with(|c: char| c.is_ascii_alphabetic())
                || k.contains(['!', '?'])
            {
                continue;
            }
            let Some(x) = scalar(v) else { continue };
            let (name, unit) = match k.as_str() {
                // Zigbee's OnOff attribute, as Tasmota's own POWER.
                "Power" => ("power_state".to_string(), None),
                "Temperature" => ("temperature".to_string(), Some("°C")),
                "Humidity" => ("humidity".to_string(), Some("%")),
                "Pressure" => ("pressure".to_string(), pressure_unit),
                "Voltage" => ("voltage".to_string(), Some("V")),
                "Battery" | "BatteryPercentage" => {
                    d.battery = Some(x);
                    (values::metric_name([k.as_str()]), Some("%"))
                }
                "LinkQuality" => {
                    d.signal = Some(Signal::LinkQuality(x));
                    ("link_quality".to_string(), None)
                }
                _ => (values::metric_name([k.as_str()]), None),
            };
            out.series.push_for(&id, &name, &labels, t, x, unit);
        }
        r.devices.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::{series_names as names, utc_interpreter as interp};
    use super::super::{Interpreter, Settings};
    use super::*;
    use crate::rules::Rules;

    #[test]
    fn topics() {
        let t = parse_topic("tele/kitchen/SENSOR").unwrap();
        assert_eq!(
            (t.device.as_str(), t.suffix, t.swapped),
            ("kitchen", Suffix::Sensor, false)
        );
        let t = parse_topic("tele/home/cellar/plug/STATE").unwrap();
        assert_eq!(
            (t.device.as_str(), t.suffix),
            ("home/cellar/plug", Suffix::State)
        );
        let t = parse_topic("plug/stat/POWER3").unwrap();
        assert_eq!(
            (t.device.as_str(), t.suffix, t.swapped),
            ("plug", Suffix::Power(3), true)
        );
        assert_eq!(
            parse_topic("stat/plug/STATUS10").unwrap().suffix,
            Suffix::Status
        );
        assert_eq!(
            parse_topic("cmnd/plug/POWER").unwrap().suffix,
            Suffix::Command
        );
        assert!(parse_topic("stat/plug/POWERONSTATE").is_none());
        assert!(parse_topic("tele/SENSOR").is_none());
        assert!(parse_topic("tele//SENSOR").is_none());
        assert!(parse_topic("home/kitchen/temperature").is_none());
        assert!(parse_topic("plug/cmnd/POWER").is_none());
    }

    #[test]
    fn swapped_layout_needs_a_fitting_payload() {
        let mut i = interp();
        assert_eq!(
            i.read("plug/tele/SENSOR", b"21.5", 0).family,
            Family::Generic
        );
        assert_eq!(i.read("plug/stat/POWER", b"42", 0).family, Family::Generic);
        assert_eq!(i.read("plug/tele/LWT", b"gone", 0).family, Family::Generic);
        let r = i.read("plug/stat/POWER", b"ON", 0);
        assert_eq!(r.family, Family::Tasmota);
        assert_eq!(
            names(&r),
            ["power_state{channel=\"1\",device=\"plug\",topic=\"plug/stat/POWER\"}"]
        );
    }

    #[test]
    fn malformed_payloads_are_errors_not_samples() {
        let mut i = interp();
        for (topic, payload) in [
            ("tele/x/SENSOR", &b"{\"Time\":"[..]),
            ("tele/x/SENSOR", b"[1,2]"),
            ("tele/x/STATE", b"\xff\xfe"),
            ("tele/x/LWT", b"maybe"),
            ("stat/x/POWER2", b"TOGGLE"),
        ] {
            let r = i.read(topic, payload, 0);
            assert_eq!(r.family, Family::Tasmota, "{topic}");
            assert_eq!(r.samples(), 0, "{topic}");
            assert_eq!(r.errors.len(), 1, "{topic}: {:?}", r.errors);
        }
        let r = i.read("tele/x/SENSOR", br#"{"ZbReceived":{"0x1":5}}"#, 0);
        assert_eq!((r.samples(), r.errors.len()), (0, 1));
    }

    #[test]
    fn availability_and_info() {
        let mut i = interp();
        let r = i.read("tele/x/LWT", b"Offline", 0);
        assert_eq!((r.samples(), r.devices[0].online), (0, Some(false)));
        let r = i.read(
            "tele/x/INFO1",
            br#"{"Info1":{"Module":"Sonoff Basic","Version":"12.1.1(tasmota)","FallbackTopic":"cmnd/DVES_1_fb/","GroupTopic":"cmnd/tasmotas/"}}"#,
            0,
        );
        let d = &r.devices[0];
        assert_eq!(d.model.as_deref(), Some("Sonoff Basic"));
        assert_eq!(d.firmware.as_deref(), Some("12.1.1(tasmota)"));
    }

    #[test]
    fn commands_are_not_samples() {
        let r = interp().read("cmnd/plug/POWER", b"ON", 0);
        assert_eq!((r.family, r.samples()), (Family::Tasmota, 0));
        assert!(r.devices.is_empty());
    }

    #[test]
    fn times() {
        let mut i = interp();
        // Old firmware's dotted date.
        let t = 1_518_656_450_000; // 2018-02-15T01:00:50Z
        let r = i.read(
            "tele/x/SENSOR",
            br#"{"Time":"2018.02.15 01:00:50","AM2301":{"Temperature":15.5}}"#,
            t,
        );
        assert_eq!(r.series[0].samples, [(t, 15.5)]);
        assert!(r.notices.is_empty());
        // Epoch wins over Time.
        let r = i.read(
            "tele/x/STATE",
            br#"{"Time":"2019-09-04T13:08:48","Epoch":1567595328,"UptimeSec":14}"#,
            1_567_595_330_000,
        );
        assert_eq!(r.series[0].samples, [(1_567_595_328_000, 14.0)]);
        // A clock far off, or no time at all.
        let r = i.read(
            "tele/x/SENSOR",
            br#"{"Time":"2001-01-01T00:00:00","S":{"A":1}}"#,
            t,
        );
        assert_eq!(r.series[0].samples, [(t, 1.0)]);
        assert_eq!(r.notices.len(), 1);
        assert!(r.notices[0]
            .message
            .starts_with("Time \"2001-01-01T00:00:00\": the device's time is"));
        let r = i.read("tele/x/SENSOR", br#"{"Time":"soon","S":{"A":1}}"#, t);
        assert_eq!((r.series[0].samples[0].0, r.notices.len()), (t, 1));
    }

    #[test]
    fn device_time_zone_is_the_devices() {
        let mut s = Settings::default();
        s.time_zones.default = values::Zone::Utc;
        s.time_zones
            .by_device
            .insert("x".into(), values::Zone::Fixed(3600));
        let mut i = Interpreter::new(Rules::default(), s);
        let utc = 1_518_716_230_000; // 2018-02-15T17:37:10Z
        let r = i.read(
            "tele/x/SENSOR",
            br#"{"Time":"2018-02-15T18:37:10","S":{"A":1}}"#,
            utc,
        );
        assert_eq!(r.series[0].samples, [(utc, 1.0)]);
    }

    #[test]
    fn names_and_labels() {
        let r = interp().read(
            "tele/x/SENSOR",
            br#"{"Switch2":"ON","Switch1":{"Action":"ON"},"Button1":"ON","ANALOG":{"A0":512,"Sub":{"B":1}},"Temperature":3,"IrReceived":{"Data":"0x1"},"DS18B20-3":{"Temperature":1}}"#,
            0,
        );
        assert_eq!(
            names(&r),
            [
                "a0{device=\"x\",sensor=\"ANALOG\",topic=\"tele/x/SENSOR\"}",
                "sub_b{device=\"x\",sensor=\"ANALOG\",topic=\"tele/x/SENSOR\"}",
                "temperature{device=\"x\",sensor=\"DS18B20-3\",topic=\"tele/x/SENSOR\"}",
                "switch_state{channel=\"2\",device=\"x\",topic=\"tele/x/SENSOR\"}",
                "temperature{device=\"x\",topic=\"tele/x/SENSOR\"}",
            ]
        );
        // No TempUnit: no unit claimed.
        assert!(r.units.is_empty());
        assert_eq!(strip_index("DS18B20-12"), "DS18B20");
        assert_eq!(strip_index("LYWSD03-52680f"), "LYWSD03-52680f");
        assert_eq!(strip_index("-1"), "-1");
    }

    #[test]
    fn energy_phases() {
        let r = interp().read(
            "tele/x/SENSOR",
            br#"{"ENERGY":{"Power":[10,20],"Total":1.5}}"#,
            0,
        );
        assert_eq!(
            names(&r),
            [
                "energy_power{device=\"x\",phase=\"1\",topic=\"tele/x/SENSOR\"}",
                "energy_power{device=\"x\",phase=\"2\",topic=\"tele/x/SENSOR\"}",
                "energy_total{device=\"x\",topic=\"tele/x/SENSOR\"}",
            ]
        );
        assert_eq!(
            r.units,
            [
                ("energy_power".into(), "W".into()),
                ("energy_total".into(), "kWh".into())
            ]
        );
    }

    #[test]
    fn zigbee_device_topic_and_names() {
        let r = interp().read(
            "tele/zb/8F20/SENSOR",
            br#"{"ZbReceived":{"Kitchen":{"Device":"0x8F20","Power":1,"Endpoint":2,"0006!00":"","LinkQuality":10}}}"#,
            5,
        );
        assert_eq!(
            names(&r),
            [
                "link_quality{bridge=\"zb\",device=\"Kitchen\",endpoint=\"2\",topic=\"tele/zb/8F20/SENSOR\"}",
                "power_state{bridge=\"zb\",device=\"Kitchen\",endpoint=\"2\",topic=\"tele/zb/8F20/SENSOR\"}",
            ]
        );
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.devices[0].signal, Some(Signal::LinkQuality(10.0)));
    }

    #[test]
    fn status_name_and_firmware() {
        let r = interp().read(
            "stat/x/STATUS",
            br#"{"Status":{"Module":1,"DeviceName":"Hall","FriendlyName":["Hall light"]},"StatusFWR":{"Version":"13.1.0(tasmota)"}}"#,
            0,
        );
        assert_eq!(r.devices[0].name.as_deref(), Some("Hall"));
        assert_eq!(r.devices[0].firmware.as_deref(), Some("13.1.0(tasmota)"));
        let r = interp().read("stat/x/STATUS", br#"{"Status":{"FriendlyName":["x"]}}"#, 0);
        assert_eq!(r.devices[0].name, None);
    }

    #[test]
    fn never_panics_on_odd_json() {
        let mut i = interp();
        for p in [
            &br#"{"Time":null,"ENERGY":{"Power":{"a":1}},"S":{"Id":7},"Wifi":3}"#[..],
            br#"{"Epoch":-5,"Wifi":{"RSSI":"x"}}"#,
            br#"{"StatusSNS":3,"StatusSTS":{"Time":[]},"Status":{"FriendlyName":[]}}"#,
            br#"{"ZbReceived":{"":{}}}"#,
            br#"{"Info1":"x"}"#,
        ] {
            for topic in [
                "tele/x/SENSOR",
                "tele/x/STATE",
                "stat/x/STATUS0",
                "tele/x/INFO1",
                "stat/x/RESULT",
            ] {
                let _ = i.read(topic, p, 0);
            }
        }
    }
}
