//! zigbee2mqtt: see docs/devices.md.
//!
//! Under the base topic (`zigbee2mqtt` by default): `<friendly_name>` with
//! the device's state as JSON (the friendly name may have levels),
//! `<friendly_name>/availability`, `<friendly_name>/set|get[/…]` (commands),
//! and `bridge/…`, the bridge's own topics, of which `bridge/devices` (the
//! device list, with each device's model, vendor, firmware and exposes) is
//! remembered in [`Bridge`] so that later states carry the device's model
//! and the units and kinds of its properties. With `advanced.output:
//! attribute` each property comes on its own topic,
//! `<friendly_name>/<property>`, as plain text.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::values::{self, SeriesOut};
use super::{Ctx, DeviceReport, Family, Message, Notice, NoticeKind, Reading, Settings, Signal};
use crate::mqtt_payload::PayloadFormat;

/// Properties remembered per device, at most (a device exposes a few
/// dozen).
const MAX_PROPERTIES: usize = 256;

/// What the bridge said about its devices (`<prefix>/bridge/devices`).
#[derive(Default)]
pub(crate) struct Bridge {
    /// By friendly name.
    devices: HashMap<String, Known>,
}

/// A device of the bridge's list.
#[derive(Clone, Debug, Default, PartialEq)]
struct Known {
    manufacturer: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    /// The properties its definition exposes, by property name.
    props: HashMap<String, Prop>,
}

#[derive(Clone, Debug, PartialEq)]
struct Prop {
    unit: Option<String>,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Numeric,
    /// Two states, with the values meaning on and off.
    Binary {
        on: Value,
        off: Value,
    },
    /// One of a list of words: not a sample.
    Enum,
    Text,
    Other,
}

/// Units of the properties zigbee-herdsman-converters' exposes define with
/// one unit whatever the device (`src/lib/exposes.ts`), used when the
/// bridge's device list has not said. Not here: `voltage` (mV for a
/// battery, V for mains) and `illuminance` (raw before zigbee2mqtt 2.0,
/// lx since; `illuminance_lux` was lx).
const UNITS: &[(&str, &str)] = &[
    ("ac_frequency", "Hz"),
    ("battery", "%"),
    ("co", "ppm"),
    ("co2", "ppm"),
    ("current", "A"),
    ("device_temperature", "°C"),
    ("energy", "kWh"),
    ("formaldehyd", "mg/m³"),
    ("hcho", "mg/m³"),
    ("humidity", "%"),
    ("illuminance_lux", "lx"),
    ("linkquality", "lqi"),
    ("local_temperature", "°C"),
    ("pm1", "µg/m³"),
    ("pm10", "µg/m³"),
    ("pm25", "µg/m³"),
    ("power", "W"),
    ("power_apparent", "VA"),
    ("power_reactive", "VAR"),
    ("pressure", "hPa"),
    ("produced_energy", "kWh"),
    ("soil_moisture", "%"),
    ("temperature", "°C"),
];

/// The topic's part after the base topic.
fn strip<'a>(topic: &'a str, settings: &Settings) -> Option<&'a str> {
    let rest = topic
        .strip_prefix(settings.zigbee2mqtt_prefix.as_str())?
        .strip_prefix('/')?;
    (!rest.is_empty()).then_some(rest)
}

/// Whether [`read`] may claim `topic`, whatever the payload.
pub(crate) fn may_claim(topic: &str, settings: &Settings) -> bool {
    strip(topic, settings).is_some()
}

/// The device id a zigbee2mqtt topic is about: the friendly name, or the
/// base topic for the bridge's own topics. `None` if not zigbee2mqtt's.
pub(crate) fn device_of<'a>(topic: &'a str, settings: &'a Settings) -> Option<&'a str> {
    let rest = strip(topic, settings)?;
    if is_bridge(rest) {
        return Some(settings.zigbee2mqtt_prefix.as_str());
    }
    if let Some(cmd) = command_at(rest) {
        return Some(&rest[..cmd]).filter(|n| !n.is_empty());
    }
    Some(rest.strip_suffix("/availability").unwrap_or(rest))
}

fn is_bridge(rest: &str) -> bool {
    rest == "bridge" || rest.starts_with("bridge/")
}

/// Where `/set` or `/get` starts in the topic (commands to the device,
/// zigbee2mqtt splits on the first such level).
fn command_at(rest: &str) -> Option<usize> {
    let mut at = 0;
    for level in rest.split('/') {
        if at > 0 && (level == "set" || level == "get") {
            return Some(at - 1);
        }
        at += level.len() + 1;
    }
    None
}

/// The message read as zigbee2mqtt's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, ctx: &mut Ctx) -> Option<Reading> {
    let rest = strip(msg.topic, ctx.settings)?;
    let format = values::payload_format(msg.payload);
    if is_bridge(rest) {
        return Some(match rest {
            "bridge/state" => bridge_state(msg, ctx),
            "bridge/info" => bridge_info(msg, ctx),
            "bridge/devices" => bridge_devices(msg, ctx),
            // Logging, events, groups, responses, requests, extensions:
            // never samples.
            _ => Reading::new(Family::Zigbee2Mqtt, format),
        });
    }
    if command_at(rest).is_some() {
        return Some(Reading::new(Family::Zigbee2Mqtt, format));
    }
    let mut r = Reading::new(Family::Zigbee2Mqtt, format);
    let Some(text) = msg.text() else {
        r.errors.push("payload is not UTF-8 text".into());
        return Some(r);
    };
    if let Some(name) = rest.strip_suffix("/availability").filter(|n| !n.is_empty()) {
        if let Some(online) = availability(text, &mut r) {
            let mut d = report(name, ctx.state.zigbee2mqtt.devices.get(name));
            d.online = Some(online);
            r.devices.push(d);
        }
        return Some(r);
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        // A retained state being cleared (a device removed or renamed).
        return Some(r);
    }
    if trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(obj)) => state(msg, ctx, rest, &obj, &mut r),
            Ok(_) => r.errors.push("the state is not a JSON object".into()),
            Err(e) => r.errors.push(format!("the state is not JSON: {e}")),
        }
        return Some(r);
    }
    // `advanced.output: attribute`: `<friendly_name>/<property>`.
    let Some((name, attr)) = attribute_topic(rest, &ctx.state.zigbee2mqtt) else {
        r.errors.push(
            "a device's state is JSON (or, with attribute output, on <name>/<property>)".into(),
        );
        return Some(r);
    };
    let known = ctx.state.zigbee2mqtt.devices.get(name);
    let mut d = report(name, known);
    let mut out = SeriesOut::default();
    let labels = [("device", name), ("topic", msg.topic)];
    if !skip(attr) && !attr.starts_with("update-") && !attr.starts_with("device-") {
        let v = Value::String(trimmed.to_string());
        if let Some(x) = value(known, attr, &v) {
            let metric = values::metric_name([attr]);
            out.push(&metric, &labels, msg.received_ms, x);
            device_fields(&mut d, attr, x);
            unit(known, attr, &metric, &mut r.units);
        }
    }
    if !out.is_empty() {
        r.devices.push(d);
    }
    r.series = out.into_series();
    Some(r)
}

/// Splits `<friendly_name>/<property>`: a known device's name if one is a
/// prefix, else the last level is the property.
fn attribute_topic<'a>(rest: &'a str, bridge: &Bridge) -> Option<(&'a str, &'a str)> {
    let mut best: Option<(&str, &str)> = None;
    for (i, _) in rest.match_indices('/') {
        let (name, attr) = (&rest[..i], &rest[i + 1..]);
        if bridge.devices.contains_key(name) && !attr.contains('/') {
            best = Some((name, attr));
        }
    }
    best.or_else(|| rest.rsplit_once('/'))
        .filter(|(n, a)| !n.is_empty() && !a.is_empty())
}

/// `online`/`offline`, plain or as `{"state": …}`; an empty payload (a
/// cleared retained message) says nothing.
fn availability(text: &str, r: &mut Reading) -> Option<bool> {
    let t = text.trim();
    let word = if t.starts_with('{') {
        match serde_json::from_str::<Value>(t) {
            Ok(v) => v.get("state").and_then(Value::as_str).map(str::to_string),
            Err(e) => {
                r.errors.push(format!("availability is not JSON: {e}"));
                return None;
            }
        }
    } else {
        Some(t.to_string())
    };
    match word.as_deref() {
        Some("online") => Some(true),
        Some("offline") => Some(false),
        Some("") => None,
        _ => {
            r.errors
                .push(format!("availability {t:?} is neither online nor offline"));
            None
        }
    }
}

/// Keys that are events or times, not values.
fn skip(key: &str) -> bool {
    key == "action" || key == "click" || key.starts_with("action_") || values::is_time_key(key)
}

/// A device's JSON state: a series per numeric, boolean or two-state
/// property (nested objects such as `color` one level down).
fn state(msg: &Message, ctx: &Ctx, name: &str, obj: &Map<String, Value>, r: &mut Reading) {
    let known = ctx.state.zigbee2mqtt.devices.get(name);
    let mut d = report(name, known);
    let labels = [("device", name), ("topic", msg.topic)];
    let t = msg.received_ms;
    let mut out = SeriesOut::default();
    for (k, v) in obj {
        if skip(k) || k == "update" {
            continue;
        }
        match v {
            // `advanced.include_device_information`.
            Value::Object(info) if k == "device" => {
                if known.is_none() {
                    let s = |key: &str| info.get(key).and_then(Value::as_str).and_then(clean);
                    d.model = s("model");
                    d.manufacturer = s("manufacturerName");
                    d.firmware = s("softwareBuildID");
                }
            }
            Value::Object(inner) => {
                for (k2, v2) in inner {
                    if let Some(x) = values::sample_value(v2) {
                        out.push(
                            &values::metric_name([k.as_str(), k2.as_str()]),
                            &labels,
                            t,
                            x,
                        );
                    }
                }
            }
            _ => {
                if let Some(x) = value(known, k, v) {
                    let metric = values::metric_name([k.as_str()]);
                    out.push(&metric, &labels, t, x);
                    device_fields(&mut d, k, x);
                    unit(known, k, &metric, &mut r.units);
                }
            }
        }
    }
    r.devices.push(d);
    r.series = out.into_series();
}

/// A property's value as a sample, as the device's exposes say it is.
fn value(known: Option<&Known>, key: &str, v: &Value) -> Option<f64> {
    match known.and_then(|k| k.props.get(key)).map(|p| &p.kind) {
        Some(Kind::Enum | Kind::Text) if !v.is_number() => None,
        Some(Kind::Binary { on, off }) if v.is_string() => {
            let as_text = |x: &Value| match x {
                Value::String(s) => s.clone(),
                x => x.to_string(),
            };
            let s = as_text(v);
            if s == as_text(on) {
                Some(1.0)
            } else if s == as_text(off) {
                Some(0.0)
            } else {
                values::sample_value(v)
            }
        }
        _ => values::sample_value(v),
    }
}

/// Battery and link quality are the device's too.
fn device_fields(d: &mut DeviceReport, key: &str, x: f64) {
    match key {
        "battery" if (0.0..=100.0).contains(&x) => d.battery = Some(x),
        "linkquality" => d.signal = Some(Signal::LinkQuality(x)),
        _ => {}
    }
}

fn unit(known: Option<&Known>, key: &str, metric: &str, units: &mut Vec<(String, String)>) {
    let u = known
        .and_then(|k| k.props.get(key))
        .and_then(|p| p.unit.clone())
        .or_else(|| {
            UNITS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, u)| u.to_string())
        });
    if let Some(u) = u {
        let pair = (metric.to_string(), u);
        if !units.contains(&pair) {
            units.push(pair);
        }
    }
}

fn report(name: &str, known: Option<&Known>) -> DeviceReport {
    let mut d = DeviceReport::new(name, Family::Zigbee2Mqtt);
    if let Some(k) = known {
        d.manufacturer = k.manufacturer.clone();
        d.model = k.model.clone();
        d.firmware = k.firmware.clone();
    }
    d
}

/// A string field as the device's: NULs (some firmware pads with them) and
/// blanks removed, nothing if empty.
fn clean(s: &str) -> Option<String> {
    let s: String = s.chars().filter(|c| *c != '\0').collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn bridge_state(msg: &Message, ctx: &Ctx) -> Reading {
    let mut r = Reading::new(Family::Zigbee2Mqtt, values::payload_format(msg.payload));
    if let Some(online) = msg.text().and_then(|t| availability(t, &mut r)) {
        let mut d = DeviceReport::new(
            ctx.settings.zigbee2mqtt_prefix.as_str(),
            Family::Zigbee2Mqtt,
        );
        d.online = Some(online);
        r.devices.push(d);
    }
    r
}

fn bridge_info(msg: &Message, ctx: &Ctx) -> Reading {
    let mut r = Reading::new(Family::Zigbee2Mqtt, PayloadFormat::Json);
    match serde_json::from_slice::<Value>(msg.payload) {
        Ok(Value::Object(info)) => {
            let mut d = DeviceReport::new(
                ctx.settings.zigbee2mqtt_prefix.as_str(),
                Family::Zigbee2Mqtt,
            );
            d.firmware = info.get("version").and_then(Value::as_str).and_then(clean);
            d.model = info
                .get("coordinator")
                .and_then(|c| c.get("type"))
                .and_then(Value::as_str)
                .and_then(clean);
            r.devices.push(d);
        }
        _ if msg.payload.is_empty() => {}
        _ => r
            .errors
            .push("the bridge's info is not a JSON object".into()),
    }
    r
}

/// The bridge's device list: every device reported with its model, vendor
/// and firmware, and remembered; devices gone from the list are removed.
fn bridge_devices(msg: &Message, ctx: &mut Ctx) -> Reading {
    let mut r = Reading::new(Family::Zigbee2Mqtt, values::payload_format(msg.payload));
    let list = match serde_json::from_slice::<Value>(msg.payload) {
        Ok(Value::Array(list)) => list,
        _ if msg.payload.is_empty() => return r,
        Ok(_) => {
            discovery_notice(
                &mut r,
                "the bridge's device list is not a JSON array".into(),
            );
            return r;
        }
        Err(e) => {
            discovery_notice(&mut r, format!("the bridge's device list is not JSON: {e}"));
            return r;
        }
    };
    let limit = ctx.settings.max_entities;
    let mut devices = HashMap::new();
    let mut listed = HashSet::new();
    let mut over = 0;
    for item in &list {
        let Some(obj) = item.as_object() else {
            continue;
        };
        // The coordinator is the bridge itself, reported as the base topic.
        if obj.get("type").and_then(Value::as_str) == Some("Coordinator") {
            continue;
        }
        let Some(name) = obj
            .get("friendly_name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        listed.insert(name.to_string());
        if devices.len() >= limit {
            over += 1;
            continue;
        }
        let known = known(obj);
        r.devices.push(report(name, Some(&known)));
        devices.insert(name.to_string(), known);
    }
    if over > 0 {
        r.notices.push(Notice {
            kind: NoticeKind::Limit,
            message: format!(
                "the bridge lists {} devices; {over} past devices.max_entities ({limit}) are not remembered",
                listed.len()
            ),
        });
    }
    let mut gone: Vec<&String> = ctx
        .state
        .zigbee2mqtt
        .devices
        .keys()
        .filter(|n| !listed.contains(*n))
        .collect();
    gone.sort();
    for name in gone {
        r.devices.push(DeviceReport {
            removed: true,
            ..DeviceReport::new(name.as_str(), Family::Zigbee2Mqtt)
        });
    }
    ctx.state.zigbee2mqtt.devices = devices;
    r
}

fn discovery_notice(r: &mut Reading, why: String) {
    r.errors.push(why.clone());
    r.notices.push(Notice {
        kind: NoticeKind::Discovery,
        message: why,
    });
}

/// A device of the bridge's list.
fn known(obj: &Map<String, Value>) -> Known {
    let s = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).and_then(clean);
    let def = obj.get("definition").and_then(Value::as_object);
    let mut k = Known {
        manufacturer: def
            .and_then(|d| s(d, "vendor"))
            .or_else(|| s(obj, "manufacturer")),
        model: def
            .and_then(|d| s(d, "model"))
            .or_else(|| s(obj, "model_id")),
        firmware: s(obj, "software_build_id"),
        props: HashMap::new(),
    };
    if let Some(exposes) = def.and_then(|d| d.get("exposes")) {
        collect_props(exposes, &mut k.props, 0);
    }
    k
}

/// The properties of a definition's exposes (features nested in lights,
/// switches, climates …), with their unit and kind.
fn collect_props(v: &Value, props: &mut HashMap<String, Prop>, depth: usize) {
    let Some(list) = v.as_array() else {
        return;
    };
    if depth > 4 {
        return;
    }
    for e in list {
        let Some(e) = e.as_object() else {
            continue;
        };
        if let Some(p) = e.get("property").and_then(Value::as_str) {
            if props.len() < MAX_PROPERTIES && !props.contains_key(p) {
                let kind = match e.get("type").and_then(Value::as_str) {
                    Some("numeric") => Kind::Numeric,
                    Some("binary") => Kind::Binary {
                        on: e.get("value_on").cloned().unwrap_or(Value::Null),
                        off: e.get("value_off").cloned().unwrap_or(Value::Null),
                    },
                    Some("enum") => Kind::Enum,
                    Some("text") => Kind::Text,
                    _ => Kind::Other,
                };
                let unit = e.get("unit").and_then(Value::as_str).and_then(clean);
                props.insert(p.to_string(), Prop { unit, kind });
            }
        }
        if let Some(f) = e.get("features") {
            collect_props(f, props, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Interpreter, Settings};
    use super::*;
    use crate::rules::Rules;

    fn interp() -> Interpreter {
        Interpreter::new(Rules::default(), Settings::default())
    }

    fn samples(r: &Reading) -> Vec<String> {
        super::super::corpus::render_samples(r)
    }

    #[test]
    fn topics() {
        let s = Settings::default();
        assert_eq!(
            device_of("zigbee2mqtt/kitchen/floor_light", &s),
            Some("kitchen/floor_light")
        );
        assert_eq!(device_of("zigbee2mqtt/bulb/availability", &s), Some("bulb"));
        assert_eq!(device_of("zigbee2mqtt/bulb/set/state", &s), Some("bulb"));
        assert_eq!(
            device_of("zigbee2mqtt/bridge/devices", &s),
            Some("zigbee2mqtt")
        );
        assert_eq!(device_of("zigbee2mqtt", &s), None);
        assert_eq!(device_of("zigbee2mqttx/a", &s), None);
        assert_eq!(command_at("a/b/set"), Some(3));
        assert_eq!(command_at("set"), None);
        assert_eq!(command_at("a/get/x"), Some(1));
    }

    #[test]
    fn names_with_levels_events_and_nesting() {
        let mut i = interp();
        let r = i.read(
            "zigbee2mqtt/kitchen/floor_light",
            br#"{"state":"ON","brightness":215,"color":{"x":0.7,"y":0.3},"color_mode":"xy","action":"single","action_group":3,"last_seen":"2024-01-01T00:00:00Z","update":{"state":"idle","installed_version":1},"linkquality":96}"#,
            9,
        );
        assert_eq!(
            samples(&r),
            [
                r#"brightness{device="kitchen/floor_light",topic="zigbee2mqtt/kitchen/floor_light"} 215.0 @9"#,
                r#"color_x{device="kitchen/floor_light",topic="zigbee2mqtt/kitchen/floor_light"} 0.7 @9"#,
                r#"color_y{device="kitchen/floor_light",topic="zigbee2mqtt/kitchen/floor_light"} 0.3 @9"#,
                r#"linkquality{device="kitchen/floor_light",topic="zigbee2mqtt/kitchen/floor_light"} 96.0 @9"#,
                r#"state{device="kitchen/floor_light",topic="zigbee2mqtt/kitchen/floor_light"} 1.0 @9"#,
            ]
        );
        assert_eq!(r.devices[0].signal, Some(Signal::LinkQuality(96.0)));
        assert_eq!(r.units, [("linkquality".to_string(), "lqi".to_string())]);
    }

    #[test]
    fn commands_bridge_topics_and_odd_payloads() {
        let mut i = interp();
        for (t, p) in [
            ("zigbee2mqtt/bulb/set", r#"{"state":"ON"}"#),
            ("zigbee2mqtt/bulb/set/state", "ON"),
            ("zigbee2mqtt/bulb/get", r#"{"state":""}"#),
            (
                "zigbee2mqtt/bridge/logging",
                r#"{"level":"info","message":"x"}"#,
            ),
            (
                "zigbee2mqtt/bridge/event",
                r#"{"type":"device_joined","data":{}}"#,
            ),
            (
                "zigbee2mqtt/bridge/response/permit_join",
                r#"{"data":{"value":true},"status":"ok"}"#,
            ),
            (
                "zigbee2mqtt/bridge/health",
                r#"{"os":{"load_average":[1,2,3]}}"#,
            ),
            ("zigbee2mqtt/bulb", ""),
            ("zigbee2mqtt/bulb", "[1,2]"),
            ("zigbee2mqtt/bulb", "{"),
            ("zigbee2mqtt/bulb", "ON"),
            ("zigbee2mqtt/bulb/availability", ""),
            ("zigbee2mqtt/bulb/availability", "maybe"),
            ("zigbee2mqtt/bridge/devices", "{}"),
            ("zigbee2mqtt/bridge/devices", "[1, {\"friendly_name\": 5}]"),
            ("zigbee2mqtt/bridge/info", "x"),
        ] {
            let r = i.read(t, p.as_bytes(), 0);
            assert_eq!(r.family, Family::Zigbee2Mqtt, "{t}");
            assert!(r.series.is_empty(), "{t} {p}");
        }
        let r = i.read(
            "zigbee2mqtt/bulb/availability",
            br#"{"state":"offline"}"#,
            0,
        );
        assert_eq!(r.devices[0].online, Some(false));
        let r = i.read("zigbee2mqtt/bridge/state", b"online", 0);
        assert_eq!(r.devices[0].id, "zigbee2mqtt");
        assert_eq!(r.devices[0].online, Some(true));
        assert_eq!(i.read("zigbee2mqtt/bulb", b"\xff", 0).errors.len(), 1);
    }

    #[test]
    fn the_device_list_teaches_models_units_and_kinds() {
        let mut i = interp();
        let list = r#"[
          {"friendly_name":"Coordinator","type":"Coordinator","ieee_address":"0x1"},
          {"friendly_name":"plug","ieee_address":"0x2","software_build_id":"\u0000\u0000",
           "definition":{"model":"ZNCZ02LM","vendor":"Xiaomi","exposes":[
             {"type":"switch","features":[{"type":"binary","property":"state","value_on":"ON","value_off":"OFF"}]},
             {"type":"numeric","property":"voltage","unit":"V"},
             {"type":"enum","property":"power_outage_memory_mode","values":["on","off","restore"]}]}},
          {"friendly_name":"old","ieee_address":"0x3","definition":null,"model_id":"lumi.x","manufacturer":"LUMI"}
        ]"#;
        let r = i.read("zigbee2mqtt/bridge/devices", list.as_bytes(), 0);
        assert_eq!(r.devices.len(), 2);
        assert_eq!(r.devices[0].model.as_deref(), Some("ZNCZ02LM"));
        assert_eq!(r.devices[0].firmware, None);
        assert_eq!(r.devices[1].model.as_deref(), Some("lumi.x"));
        let r = i.read(
            "zigbee2mqtt/plug",
            br#"{"state":"ON","voltage":231,"power_outage_memory_mode":"off"}"#,
            1,
        );
        assert_eq!(r.samples(), 2);
        assert_eq!(r.units, [("voltage".to_string(), "V".to_string())]);
        assert_eq!(r.devices[0].manufacturer.as_deref(), Some("Xiaomi"));
        // Attribute output for a known name with levels.
        let r = i.read("zigbee2mqtt/plug/voltage", b"230", 2);
        assert_eq!(
            samples(&r),
            [r#"voltage{device="plug",topic="zigbee2mqtt/plug/voltage"} 230.0 @2"#]
        );
        // A device gone from the list is removed.
        let r = i.read(
            "zigbee2mqtt/bridge/devices",
            br#"[{"friendly_name":"plug"}]"#,
            3,
        );
        assert_eq!(r.devices.len(), 2);
        assert!(r.devices[1].removed && r.devices[1].id == "old");
    }

    #[test]
    fn the_device_list_is_bounded() {
        let settings = Settings {
            max_entities: 1,
            ..Settings::default()
        };
        let mut i = Interpreter::new(Rules::default(), settings);
        let r = i.read(
            "zigbee2mqtt/bridge/devices",
            br#"[{"friendly_name":"a"},{"friendly_name":"b"}]"#,
            0,
        );
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.notices[0].kind, NoticeKind::Limit);
        // b is listed, so not removed, though not remembered.
        let r = i.read(
            "zigbee2mqtt/bridge/devices",
            br#"[{"friendly_name":"b"},{"friendly_name":"a"}]"#,
            0,
        );
        assert!(r.devices.iter().all(|d| !d.removed));
    }

    #[test]
    fn another_base_topic() {
        let settings = Settings {
            zigbee2mqtt_prefix: "z2m/home".into(),
            ..Settings::default()
        };
        let mut i = Interpreter::new(Rules::default(), settings);
        let r = i.read(
            "z2m/home/sensor",
            br#"{"temperature":"21.5","battery":250}"#,
            0,
        );
        assert_eq!(r.family, Family::Zigbee2Mqtt);
        assert_eq!(r.samples(), 2);
        // A battery out of 0–100 is a sample, not a percent.
        assert_eq!(r.devices[0].battery, None);
        assert_eq!(
            i.read("zigbee2mqtt/sensor", br#"{"temperature":1}"#, 0)
                .family,
            Family::Generic
        );
    }
}
