//! ESPHome: see docs/devices.md.
//!
//! ESPHome's MQTT component publishes each entity's state on
//! `<topic_prefix>/<component>/<object_id>/state` (and some on
//! `<topic_prefix>/<component>/<object_id>/<what>/state`: a cover's
//! position, a climate's temperatures), its availability on
//! `<topic_prefix>/status` (`online`/`offline`), its log on
//! `<topic_prefix>/debug`, and answers `esphome/discover` on
//! `esphome/discover/<name>`. The topic prefix is the node name unless
//! configured (it may have levels); it is the device id. Units are not in
//! the states: they come from ESPHome's Home Assistant discovery configs,
//! where it publishes them ([`super::homeassistant::Discovery::unit_on`]).

use serde_json::Value;

use super::values::{self, SeriesOut};
use super::{Ctx, DeviceReport, Family, Message, Reading, Settings};
use crate::mqtt_payload::PayloadFormat;

/// The entity components ESPHome's MQTT component publishes (the
/// `component_type()` of each `mqtt_*.cpp`; text sensors use `sensor`).
const COMPONENTS: &[&str] = &[
    "alarm_control_panel",
    "binary_sensor",
    "button",
    "climate",
    "cover",
    "date",
    "datetime",
    "event",
    "fan",
    "humidifier",
    "light",
    "lock",
    "number",
    "select",
    "sensor",
    "switch",
    "text",
    "text_sensor",
    "time",
    "update",
    "valve",
];

/// The second-level state topics (`MQTT_COMPONENT_CUSTOM_TOPIC`) of
/// climate, cover, fan and valve.
const SUBS: &[&str] = &[
    "action",
    "away",
    "current_humidity",
    "current_temperature",
    "fan_mode",
    "mode",
    "oscillation",
    "position",
    "preset",
    "speed",
    "speed_level",
    "swing_mode",
    "target_humidity",
    "target_temperature",
    "target_temperature_high",
    "target_temperature_low",
    "tilt",
];

/// A state (or command) topic's parts.
#[derive(Debug, PartialEq)]
struct Layout<'a> {
    node: &'a str,
    component: &'a str,
    object_id: &'a str,
    sub: Option<&'a str>,
    command: bool,
}

fn layout(topic: &str) -> Option<Layout<'_>> {
    let (rest, last) = topic.rsplit_once('/')?;
    let command = match last {
        "state" => false,
        "command" => true,
        _ => return None,
    };
    let (rest, a) = rest.rsplit_once('/')?;
    let (node, b) = rest.rsplit_once('/')?;
    if COMPONENTS.contains(&b) && !node.is_empty() && !a.is_empty() {
        return Some(Layout {
            node,
            component: b,
            object_id: a,
            sub: None,
            command,
        });
    }
    let (node, c) = node.rsplit_once('/')?;
    (SUBS.contains(&a) && COMPONENTS.contains(&c) && !node.is_empty() && !b.is_empty()).then_some(
        Layout {
            node,
            component: c,
            object_id: b,
            sub: Some(a),
            command,
        },
    )
}

/// Whether [`read`] may claim `topic`, whatever the payload: a cheap test
/// that is true for every topic it claims (and for some others).
pub(crate) fn may_claim(topic: &str, _settings: &Settings) -> bool {
    topic.starts_with("esphome/")
        || ["/status", "/debug", "/state", "/command"]
            .iter()
            .any(|end| topic.ends_with(end))
}

/// The device (node) of an ESPHome state or command topic.
pub(crate) fn device_of(topic: &str) -> Option<&str> {
    layout(topic).map(|l| l.node)
}

/// The metric an ESPHome state topic's value is stored as.
pub(crate) fn metric_of(topic: &str) -> Option<String> {
    let l = layout(topic).filter(|l| !l.command)?;
    let name = match l.sub {
        None => values::metric_name([l.object_id]),
        Some(s) => values::metric_name([l.object_id, s]),
    };
    Some(name).filter(|n| !n.is_empty())
}

/// The message read as ESPHome's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, ctx: &mut Ctx) -> Option<Reading> {
    let topic = msg.topic;
    if let Some(name) = topic.strip_prefix("esphome/discover/") {
        return Some(discover(msg, name));
    }
    if topic == "esphome/discover" || topic.starts_with("esphome/ping/") {
        return Some(Reading::new(
            Family::EspHome,
            values::payload_format(msg.payload),
        ));
    }
    if let Some(node) = topic.strip_suffix("/status").filter(|n| !n.is_empty()) {
        let online = match msg.text().map(str::trim) {
            Some("online") => true,
            Some("offline") => false,
            _ => return None,
        };
        let mut r = Reading::new(Family::EspHome, PayloadFormat::Boolean);
        let mut d = device(ctx, node, topic);
        d.online = Some(online);
        r.devices.push(d);
        return Some(r);
    }
    if topic.strip_suffix("/debug").is_some_and(|n| !n.is_empty())
        && matches!(msg.payload.first(), Some(b'[' | 0x1b))
    {
        // A log line, never a sample.
        return Some(Reading::new(Family::EspHome, PayloadFormat::Text));
    }
    // The topic first: this runs on every message no earlier family took.
    let l = layout(topic)?;
    // JSON where ESPHome sends a plain value is not ESPHome's: a hand-made
    // `<x>/sensor/<y>/state` layout, read generically instead (only lights,
    // events and update offers are JSON in ESPHome).
    if !l.command
        && !matches!(l.component, "light" | "event" | "update")
        && matches!(msg.payload.trim_ascii_start().first(), Some(b'{' | b'['))
    {
        return None;
    }
    let text = msg.text();
    let mut r = Reading::new(Family::EspHome, values::payload_format(msg.payload));
    if l.command {
        return Some(r);
    }
    let Some(text) = text else {
        r.errors.push("payload is not UTF-8 text".into());
        return Some(r);
    };
    let metric = metric_of(topic).unwrap_or_default();
    let labels = [
        ("component", l.component),
        ("device", l.node),
        ("topic", topic),
    ];
    let mut out = SeriesOut::default();
    let t = msg.received_ms;
    let word = text.trim();
    match (l.component, l.sub) {
        ("sensor" | "number", None)
        | ("climate", Some("current_temperature" | "current_humidity" | "target_humidity"))
        | (
            "climate",
            Some("target_temperature" | "target_temperature_low" | "target_temperature_high"),
        )
        | (_, Some("position" | "tilt" | "speed" | "speed_level")) => {
            if let Some(v) = values::number_in_string(word) {
                out.push(&metric, &labels, t, v);
            } else if word.eq_ignore_ascii_case("nan") || word == "None" {
                // A sensor without a reading (`publish_nan_as_none`: None).
                r.dropped_sentinels += 1;
            } else if l.component != "sensor" {
                r.errors.push(format!("{word:?} is not a number"));
            }
            // Else a text sensor (published under `sensor`): not a sample.
        }
        ("binary_sensor" | "switch" | "fan", None) | ("climate", Some("away")) => match word {
            "ON" => out.push(&metric, &labels, t, 1.0),
            "OFF" => out.push(&metric, &labels, t, 0.0),
            _ => r.errors.push(format!("{word:?} is neither ON nor OFF")),
        },
        ("fan", Some("oscillation")) => match word {
            "oscillate_on" => out.push(&metric, &labels, t, 1.0),
            "oscillate_off" => out.push(&metric, &labels, t, 0.0),
            _ => r.errors.push(format!(
                "{word:?} is neither oscillate_on nor oscillate_off"
            )),
        },
        // `open`/`closed`, `LOCKED`/`UNLOCKED`; opening, closing, jammed
        // and the like are not states to chart.
        ("cover" | "valve", None) => match word {
            "open" => out.push(&metric, &labels, t, 1.0),
            "closed" => out.push(&metric, &labels, t, 0.0),
            _ => {}
        },
        ("lock", None) => match word {
            "LOCKED" => out.push(&metric, &labels, t, 1.0),
            "UNLOCKED" => out.push(&metric, &labels, t, 0.0),
            _ => {}
        },
        ("light", None) => light(&metric, &labels, t, word, &mut out, &mut r),
        // Text (select, text, date, time, modes, presets), events and
        // update offers are not samples.
        _ => {}
    }
    if !out.is_empty() {
        if let Some(unit) = ctx.state.homeassistant.unit_on(topic) {
            r.units.push((metric.clone(), unit.to_string()));
        }
    }
    // A state message is the node speaking, whatever its value.
    r.devices.push(device(ctx, l.node, topic));
    r.series = out.into_series();
    Some(r)
}

/// A light's JSON state: `state` as the light's metric (1 or 0), and its
/// brightness, colour temperature, white value and colour channels.
fn light(
    metric: &str,
    labels: &[(&str, &str)],
    t: i64,
    text: &str,
    out: &mut SeriesOut,
    r: &mut Reading,
) {
    let obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            r.errors.push("a light's state is not a JSON object".into());
            return;
        }
        Err(e) => {
            r.errors.push(format!("a light's state is not JSON: {e}"));
            return;
        }
    };
    for (k, v) in &obj {
        match (k.as_str(), v) {
            ("state", Value::String(s)) => match s.as_str() {
                "ON" => out.push(metric, labels, t, 1.0),
                "OFF" => out.push(metric, labels, t, 0.0),
                _ => {}
            },
            ("color", Value::Object(c)) => {
                for (ck, cv) in c {
                    if let Some(v) = cv.as_f64() {
                        out.push(&values::metric_name([metric, "color", ck]), labels, t, v);
                    }
                }
            }
            (_, Value::Number(n)) => {
                if let Some(v) = n.as_f64() {
                    out.push(&values::metric_name([metric, k]), labels, t, v);
                }
            }
            // Effect, colour mode: words.
            _ => {}
        }
    }
}

/// The node as a device, with what its discovery configs said of it.
fn device(ctx: &Ctx, node: &str, topic: &str) -> DeviceReport {
    let mut d = DeviceReport::new(node, Family::EspHome);
    if let Some(dev) = ctx.state.homeassistant.device_on(topic) {
        d.manufacturer = dev.manufacturer.clone();
        d.model = dev.model.clone();
        d.firmware = dev.firmware.clone();
        d.name = dev.name.clone().filter(|n| n != node);
    }
    d
}

/// `esphome/discover/<name>`: the node's answer to a discovery request.
fn discover(msg: &Message, topic_name: &str) -> Reading {
    let mut r = Reading::new(Family::EspHome, PayloadFormat::Json);
    let obj = match serde_json::from_slice::<Value>(msg.payload) {
        Ok(Value::Object(m)) => m,
        _ if msg.payload.is_empty() => return r,
        _ => {
            r.errors
                .push("a discovery answer is not a JSON object".into());
            return r;
        }
    };
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let id = text("name").unwrap_or_else(|| topic_name.to_string());
    if id.is_empty() {
        return r;
    }
    r.devices.push(DeviceReport {
        name: text("friendly_name").filter(|n| *n != id),
        model: text("board"),
        firmware: text("version"),
        ..DeviceReport::new(id, Family::EspHome)
    });
    r
}

#[cfg(test)]
mod tests {
    use super::super::{Interpreter, Settings};
    use super::*;
    use crate::rules::Rules;

    fn read(topic: &str, payload: &str) -> Reading {
        Interpreter::new(Rules::default(), Settings::default()).read(topic, payload.as_bytes(), 5)
    }

    /// JSON on a layout that looks like ESPHome's but where ESPHome sends a
    /// plain value: a hand-made topic, read generically (no device).
    #[test]
    fn json_on_a_plain_value_topic_is_not_esphomes() {
        let r = read("home/sensor/env/state", r#"{"temperature":21}"#);
        assert_eq!(r.family, Family::Generic);
        assert_eq!(r.samples(), 1);
        assert!(r.devices.is_empty());
        let r = read(
            "home/light/lamp/state",
            r#"{"state":"ON","brightness":200}"#,
        );
        assert_eq!(r.family, Family::EspHome);
    }

    #[test]
    fn layouts() {
        assert_eq!(
            layout("home/living/sensor/temp/state"),
            Some(Layout {
                node: "home/living",
                component: "sensor",
                object_id: "temp",
                sub: None,
                command: false
            })
        );
        let l = layout("n/climate/thermo/current_temperature/state").unwrap();
        assert_eq!(
            (l.node, l.object_id, l.sub),
            ("n", "thermo", Some("current_temperature"))
        );
        assert!(layout("n/light/x/command").unwrap().command);
        assert_eq!(layout("sensor/temp/state"), None);
        assert_eq!(layout("n/widget/x/state"), None);
        assert_eq!(layout("/sensor/x/state"), None);
        assert_eq!(layout("n/sensor//state"), None);
        assert_eq!(
            metric_of("n/cover/garage/position/state").as_deref(),
            Some("garage_position")
        );
    }

    #[test]
    fn values_by_component() {
        let s = |t: &str, p: &str| super::super::corpus::render_samples(&read(t, p));
        assert_eq!(
            s("n/sensor/t/state", "21.5"),
            [r#"t{component="sensor",device="n",topic="n/sensor/t/state"} 21.5 @5"#]
        );
        assert_eq!(read("n/sensor/t/state", "nan").dropped_sentinels, 1);
        assert_eq!(read("n/sensor/t/state", "None").dropped_sentinels, 1);
        let r = read("n/sensor/ip/state", "192.168.1.5");
        assert!(r.series.is_empty() && r.errors.is_empty() && r.family == Family::EspHome);
        assert_eq!(s("n/lock/door/state", "LOCKED").len(), 1);
        assert!(s("n/lock/door/state", "JAMMED").is_empty());
        assert_eq!(
            s("n/cover/g/position/state", "40"),
            [
                r#"g_position{component="cover",device="n",topic="n/cover/g/position/state"} 40.0 @5"#
            ]
        );
        assert_eq!(s("n/cover/g/state", "closed").len(), 1);
        assert!(s("n/cover/g/state", "opening").is_empty());
        assert_eq!(s("n/fan/f/oscillation/state", "oscillate_on").len(), 1);
        assert!(s("n/climate/c/mode/state", "heat").is_empty());
        assert!(s("n/select/s/state", "Fast").is_empty());
        assert!(s("n/event/b/state", r#"{"event_type":"double_click"}"#).is_empty());
        assert!(s("n/switch/r/command", "ON").is_empty());
        let r = read("n/binary_sensor/x/state", "maybe");
        assert!(r.series.is_empty() && r.errors.len() == 1);
        let r = read("n/light/l/state", "{");
        assert!(r.series.is_empty() && r.errors.len() == 1);
        assert_eq!(
            s("n/light/l/state", r#"{"state":"ON","brightness":128,"color_mode":"rgb","color":{"r":255,"g":0,"b":3},"effect":"None"}"#).len(),
            5
        );
    }

    #[test]
    fn status_debug_and_others() {
        let r = read("n/status", "offline");
        assert_eq!(r.devices[0].online, Some(false));
        assert_eq!(r.devices[0].id, "n");
        // Not ESPHome's: another payload on a status topic.
        assert_eq!(read("n/status", "{\"up\":1}").family, Family::Generic);
        assert_eq!(
            read("n/debug", "[D][sensor:093]: 'T': Sending state 21.5").samples(),
            0
        );
        assert_eq!(read("n/debug", "[D][sensor:093]").family, Family::EspHome);
        let r = read("esphome/discover/x", "not json");
        assert_eq!(r.errors.len(), 1);
        assert!(read("esphome/discover", "").devices.is_empty());
    }
}
