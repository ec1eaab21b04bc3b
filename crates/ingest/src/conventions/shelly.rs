//! Shelly: see docs/devices.md.
//!
//! Gen1 publishes one value a topic under `shellies/<id>/…`
//! (`relay/0/power`, `sensor/temperature`, `online`, `announce`, …); Gen2
//! and Gen3 publish a component's status as JSON on
//! `<prefix>/status/<component>[:<n>]` and notifications on
//! `<prefix>/events/rpc`, with `<prefix>/online`. The device id is the part
//! of the topic before those levels, without a leading `shellies/`, so that
//! both generations (and a Gen2 prefix set to `shellies/<name>`) name a
//! device the same on all its topics.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};
use serde_json::{Map, Value};

use super::values::{self, DeviceSeries};
use super::{Ctx, DeviceReport, Family, Message, Notice, NoticeKind, Reading, Settings, Signal};
use crate::mqtt_payload::PayloadFormat;

/// The message read as Shelly's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, _ctx: &mut Ctx) -> Option<Reading> {
    let topic = msg.topic;
    if let Some(prefix) = topic.strip_suffix("/events/rpc") {
        return gen2_events(msg, prefix);
    }
    if let Some((prefix, component)) = status_split(topic) {
        if let Some(r) = gen2_status(msg, prefix, component) {
            return Some(r);
        }
    }
    if let Some(rest) = topic.strip_prefix("shellies/") {
        return gen1(msg, rest);
    }
    if let Some(prefix) = topic.strip_suffix("/online") {
        if shelly_like(prefix) {
            return Some(online(msg, device_id(prefix)));
        }
    }
    // Commands to a Gen2 device (RPC requests, the MQTT control interface).
    static COMMAND: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"/command/"));
    let command = topic.strip_suffix("/rpc").is_some_and(shelly_like)
        || COMMAND
            .find(topic.as_bytes())
            .is_some_and(|at| shelly_like(&topic[..at]));
    command.then(|| Reading::new(Family::Shelly, PayloadFormat::Ignored))
}

/// `<prefix>/status/<component>` split at its last `/status/`; a searcher
/// built once, as this runs on every message.
fn status_split(topic: &str) -> Option<(&str, &str)> {
    static STATUS: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"/status/"));
    let at = STATUS.rfind(topic.as_bytes())?;
    Some((&topic[..at], &topic[at + "/status/".len()..]))
}

/// Whether [`read`] may claim `topic`, whatever the payload: a cheap test
/// that is true for every topic it claims (and for some others). Every
/// layout but `…/status/<component>` and `…/events/rpc` needs a prefix that
/// [`shelly_like`] accepts, which holds `shell` in some case.
pub(crate) fn may_claim(topic: &str, _settings: &Settings) -> bool {
    topic.ends_with("/events/rpc")
        || status_split(topic).is_some()
        || topic
            .as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"shell"))
}

/// The device a Shelly state topic belongs to (for Home Assistant
/// discovery configs that name one), by the layouts [`read`] claims.
pub(crate) fn device_of(topic: &str) -> Option<&str> {
    if let Some(prefix) = topic.strip_suffix("/events/rpc") {
        return shelly_like(prefix).then(|| device_id(prefix));
    }
    if let Some((prefix, component)) = status_split(topic) {
        let (_, channel) = component_name(component)?;
        let ours = !prefix.is_empty() && (channel.is_some() || shelly_like(prefix));
        return ours.then(|| device_id(prefix));
    }
    if let Some(rest) = topic.strip_prefix("shellies/") {
        let id = gen1_topic(rest)?.id;
        return Some(&rest[..id.len()]);
    }
    let prefix = topic.strip_suffix("/online")?;
    shelly_like(prefix).then(|| device_id(prefix))
}

/// A topic prefix that is a Shelly's by its name: `shellies/…`, or a last
/// level starting with `shelly` (the default Gen2 prefix is the device id,
/// `shellyplus1pm-…`).
fn shelly_like(prefix: &str) -> bool {
    if prefix.starts_with("shellies/") {
        return true;
    }
    let last = prefix.rsplit('/').next().unwrap_or(prefix);
    last.len() > 6 && last.as_bytes()[..6].eq_ignore_ascii_case(b"shelly")
}

fn device_id(prefix: &str) -> &str {
    prefix.strip_prefix("shellies/").unwrap_or(prefix)
}

/// `<prefix>/online`: `true` or `false`.
fn online(msg: &Message, id: &str) -> Reading {
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Boolean);
    let mut d = DeviceReport::new(id, Family::Shelly);
    match msg.text().map(str::trim) {
        Some("true") => d.online = Some(true),
        Some("false") => d.online = Some(false),
        other => r.errors.push(format!(
            "online: {:?} is neither true nor false",
            other.unwrap_or("<not UTF-8>")
        )),
    }
    r.devices.push(d);
    r
}

/// Samples, units and notices of one message.
struct Out<'a> {
    series: DeviceSeries<'a>,
    notices: Vec<Notice>,
    errors: Vec<String>,
}

impl<'a> Out<'a> {
    fn new(topic: &'a str, device: &'a str) -> Out<'a> {
        Out {
            series: DeviceSeries::new(device, topic),
            notices: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, extra: &[(&str, &str)], t: i64, v: f64, unit: Option<&str>) {
        self.series.push(name, extra, t, v, unit);
    }

    fn finish(self, r: &mut Reading) {
        self.series.finish(r);
        r.notices = self.notices;
        r.errors.extend(self.errors);
    }
}

/// Why a payload that should be a JSON object is not one.
#[derive(Debug, thiserror::Error)]
enum NotAnObject {
    #[error("not UTF-8")]
    Utf8,
    #[error("not a JSON object")]
    Shape,
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn parse_object(msg: &Message) -> Result<Map<String, Value>, NotAnObject> {
    let text = msg.text().ok_or(NotAnObject::Utf8)?;
    match serde_json::from_str::<Value>(text.trim())? {
        Value::Object(o) => Ok(o),
        _ => Err(NotAnObject::Shape),
    }
}

fn unparsed(id: &str, why: String) -> Reading {
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Unparsed);
    r.errors.push(why);
    r.devices.push(DeviceReport::new(id, Family::Shelly));
    r
}

// ---- Gen2 / Gen3 -----------------------------------------------------------

/// `switch:0` → (`switch`, Some(`0`)); `sys` → (`sys`, None); `None` for
/// what is not a component's name.
fn component_name(s: &str) -> Option<(&str, Option<&str>)> {
    let (name, channel) = match s.split_once(':') {
        Some((n, c)) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => (n, Some(c)),
        Some(_) => return None,
        None => (s, None),
    };
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some((name, channel))
}

/// `<prefix>/status/<component>`: the component's whole status, at the
/// arrival time (it carries no time of its own).
fn gen2_status(msg: &Message, prefix: &str, component: &str) -> Option<Reading> {
    let (name, channel) = component_name(component)?;
    if prefix.is_empty() || !(channel.is_some() || shelly_like(prefix)) {
        return None;
    }
    let id = device_id(prefix);
    let status = match parse_object(msg) {
        Ok(o) => o,
        Err(why) => return Some(unparsed(id, format!("status/{component}: {why}"))),
    };
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Json);
    let mut d = DeviceReport::new(id, Family::Shelly);
    let mut out = Out::new(msg.topic, id);
    gen2_component(&mut out, name, channel, &status, msg.received_ms, &mut d);
    out.finish(&mut r);
    r.devices.push(d);
    Some(r)
}

/// `<prefix>/events/rpc`: `NotifyStatus` and `NotifyFullStatus` carry
/// components' status at `params.ts`; `NotifyEvent` (a button push, going
/// to sleep) is not a sample.
fn gen2_events(msg: &Message, prefix: &str) -> Option<Reading> {
    if prefix.is_empty() {
        return None;
    }
    let id = device_id(prefix);
    let frame = match parse_object(msg) {
        Ok(o) if o.get("method").is_some_and(Value::is_string) || o.contains_key("src") => o,
        Ok(_) if shelly_like(prefix) => {
            return Some(unparsed(id, "events/rpc: not an RPC frame".into()))
        }
        Err(why) if shelly_like(prefix) => return Some(unparsed(id, format!("events/rpc: {why}"))),
        _ => return None,
    };
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Json);
    let mut d = DeviceReport::new(id, Family::Shelly);
    let method = frame.get("method").and_then(Value::as_str).unwrap_or("");
    if matches!(method, "NotifyStatus" | "NotifyFullStatus") {
        let Some(Value::Object(params)) = frame.get("params") else {
            r.errors.push(format!("{method}: no params"));
            r.devices.push(d);
            return Some(r);
        };
        let mut out = Out::new(msg.topic, id);
        let t = match params.get("ts") {
            Some(ts) => {
                let parsed = values::time_value(ts, &values::Zone::Utc);
                let (t, why) = values::device_time(parsed, msg.received_ms);
                if let Some(why) = why {
                    out.notices.push(Notice {
                        kind: NoticeKind::Time,
                        message: format!("params.ts {ts}: {why}"),
                    });
                }
                t
            }
            None => msg.received_ms,
        };
        for (key, v) in params {
            let (Some((name, channel)), Value::Object(status)) = (component_name(key), v) else {
                continue;
            };
            gen2_component(&mut out, name, channel, status, t, &mut d);
        }
        out.finish(&mut r);
    }
    r.devices.push(d);
    Some(r)
}

/// One component's status: its fields as metrics, with the labels
/// `component` and `channel`.
fn gen2_component(
    out: &mut Out,
    name: &str,
    channel: Option<&str>,
    status: &Map<String, Value>,
    t: i64,
    d: &mut DeviceReport,
) {
    let mut labels = vec![("component", name)];
    if let Some(c) = channel {
        labels.push(("channel", c));
    }
    if name == "wifi" {
        if let Some(rssi) = status.get("rssi").and_then(Value::as_f64) {
            d.signal = Some(Signal::Rssi(rssi));
        }
    }
    if name == "devicepower" {
        if let Some(p) = status
            .get("battery")
            .and_then(|b| b.get("percent"))
            .and_then(Value::as_f64)
        {
            d.battery = Some(p);
        }
    }
    let mut path = Vec::new();
    gen2_flatten(out, name, status, &mut path, &labels, t);
}

/// Fields that are configuration, counters of configuration changes or
/// identifiers, not measurements.
const GEN2_SKIP: &[&str] = &[
    "id",
    "utc_offset",
    "reset_reason",
    "wakeup_period",
    "ram_size",
    "fs_size",
];

fn gen2_skip(key: &str) -> bool {
    GEN2_SKIP.contains(&key)
        || values::is_time_key(key)
        || key.ends_with("_ts")
        || key.ends_with("_rev")
        || key.starts_with("timer_")
}

fn gen2_flatten<'k>(
    out: &mut Out,
    component: &str,
    obj: &'k Map<String, Value>,
    path: &mut Vec<&'k str>,
    labels: &[(&str, &str)],
    t: i64,
) {
    for (k, v) in obj {
        if gen2_skip(k) {
            continue;
        }
        match v {
            Value::Object(inner) if path.len() < 4 => {
                path.push(k);
                gen2_flatten(out, component, inner, path, labels, t);
                path.pop();
            }
            Value::Object(_) | Value::Array(_) | Value::Null => {}
            // An input's `state` is the input's (as Gen1's `input/0`); a
            // cover's is the direction of a movement, not stored.
            Value::String(_) if path.is_empty() && k == "state" => {}
            _ => {
                if let Some(x) = values::sample_value(v) {
                    let name = if path.is_empty() && k == "state" {
                        values::metric_name([component])
                    } else {
                        gen2_name(path, k)
                    };
                    let unit = gen2_unit(&name);
                    out.push(&name, labels, t, x, unit);
                }
            }
        }
    }
}

/// The metric of a field: `temperature.tC` → `temperature` (°C),
/// `temperature.tF` → `temperature_f`, a Temperature component's `tC` →
/// `temperature`, `rh` → `humidity`; else the path in snake_case
/// (`aenergy.total` → `aenergy_total`).
fn gen2_name(path: &[&str], key: &str) -> String {
    let mut parts: Vec<&str> = path.to_vec();
    let in_temperature = parts.last() == Some(&"temperature");
    match key {
        "tC" if in_temperature => {}
        "tC" => parts.push("temperature"),
        "tF" if in_temperature => parts.push("f"),
        "tF" => parts.push("temperature_f"),
        "rh" => parts.push("humidity"),
        k => parts.push(k),
    }
    values::metric_name(parts)
}

/// Units of Gen2 fields, from Shelly's component documentation.
fn gen2_unit(name: &str) -> Option<&'static str> {
    let ends = |s: &str| name == s || name.ends_with(&format!("_{s}"));
    Some(match name {
        "temperature" => "°C",
        "temperature_f" => "°F",
        "humidity" => "%",
        "rssi" => "dBm",
        "uptime" => "s",
        "ram_free" | "ram_min_free" | "fs_free" => "B",
        "battery_percent" => "%",
        "battery_v" => "V",
        "current_pos" | "target_pos" | "brightness" => "%",
        "lux" => "lx",
        "aenergy_total" | "ret_aenergy_total" | "total_act" | "total_act_ret" => "Wh",
        _ if ends("apower") || ends("act_power") => "W",
        _ if ends("aprt_power") => "VA",
        _ if ends("voltage") => "V",
        _ if ends("current") => "A",
        _ if ends("freq") => "Hz",
        _ if ends("act_energy") || ends("act_ret_energy") => "Wh",
        _ => return None,
    })
}

// ---- Gen1 ------------------------------------------------------------------

/// Where a Gen1 topic's value belongs.
struct Gen1Topic<'a> {
    id: String,
    component: Option<&'a str>,
    channel: Option<&'a str>,
    attribute: Option<&'a str>,
}

fn is_index(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Components whose attributes come without a channel (`sensor/battery`,
/// Shelly 2's `relay/power`).
const GEN1_GROUPS: &[&str] = &["sensor", "relay", "roller", "light", "meter", "emeter"];

/// `shellies/<id>/…`, read from its end: `<component>/<n>/<attribute>`,
/// `<component>/<n>`, `sensor/<attribute>` or `<attribute>`; the id is
/// what comes before (it may have levels of its own).
fn gen1_topic(rest: &str) -> Option<Gen1Topic<'_>> {
    let levels: Vec<&str> = rest.split('/').collect();
    let k = levels.len();
    if k < 2 || levels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let (id_len, component, channel, attribute) = if k >= 4 && is_index(levels[k - 2]) {
        (
            k - 3,
            Some(levels[k - 3]),
            Some(levels[k - 2]),
            Some(levels[k - 1]),
        )
    } else if k >= 3 && is_index(levels[k - 1]) {
        (k - 2, Some(levels[k - 2]), Some(levels[k - 1]), None)
    } else if k >= 3 && GEN1_GROUPS.contains(&levels[k - 2]) {
        (k - 2, Some(levels[k - 2]), None, Some(levels[k - 1]))
    } else {
        (k - 1, None, None, Some(levels[k - 1]))
    };
    Some(Gen1Topic {
        id: levels[..id_len].join("/"),
        component,
        channel,
        attribute,
    })
}

fn gen1(msg: &Message, rest: &str) -> Option<Reading> {
    match rest {
        "announce" => return Some(announce(msg, None)),
        "command" => return Some(Reading::new(Family::Shelly, PayloadFormat::Ignored)),
        _ => {}
    }
    let levels: Vec<&str> = rest.split('/').collect();
    // Commands to the device: `relay/0/command`, `roller/0/command/pos`,
    // `light/0/set`, `<id>/command`.
    if levels
        .iter()
        .skip(1)
        .any(|l| matches!(*l, "command" | "set"))
    {
        return Some(Reading::new(Family::Shelly, PayloadFormat::Ignored));
    }
    let topic = gen1_topic(rest)?;
    let id = topic.id.as_str();
    match (topic.component, topic.attribute) {
        (None, Some("online")) => return Some(online(msg, id)),
        (None, Some("announce")) => return Some(announce(msg, Some(id))),
        (None, Some("info")) => return Some(info(msg, id)),
        (None, Some("status")) => return Some(gen1_json(msg, id, None, None)),
        (Some(c), Some("status")) if topic.channel.is_some() => {
            return Some(gen1_json(msg, id, Some(c), topic.channel))
        }
        _ => {}
    }
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Number);
    let mut d = DeviceReport::new(id, Family::Shelly);
    let mut out = Out::new(msg.topic, id);
    let Some(text) = msg.text().map(str::trim) else {
        r.format = PayloadFormat::Unparsed;
        r.errors.push(format!("{}: not UTF-8", gen1_where(&topic)));
        r.devices.push(d);
        return Some(r);
    };
    let name = topic.attribute.or(topic.component).unwrap_or("");
    let mut labels = Vec::new();
    if let Some(c) = topic.component {
        labels.push(("component", c));
    }
    if let Some(ch) = topic.channel {
        labels.push(("channel", ch));
    }
    if text.starts_with('{') || text.starts_with('[') {
        // Events (`input_event/0`) and lists (`sensor/act_reasons`).
        r.format = PayloadFormat::Json;
    } else if matches!(topic.component, Some("roller")) && topic.attribute.is_none() {
        // `open`/`close`/`stop` is the direction of a movement, not a state.
    } else {
        let value = match (topic.component, topic.attribute, text) {
            // The relay was switched off for drawing too much.
            (Some("relay"), None, "overpower") => Some(0.0),
            _ => values::number_in_string(text).or_else(|| {
                values::state_word(text).inspect(|_| r.format = PayloadFormat::Boolean)
            }),
        };
        // A door/window sensor's `sensor/state` (`open`/`close`).
        let metric = match (topic.component, name) {
            (Some("sensor"), "state") => "open".to_string(),
            _ => values::metric_name([name]),
        };
        match value {
            Some(mut v) => {
                // Gen1 counts energy in watt-minutes: stored as Wh.
                if matches!(topic.attribute, Some("energy" | "returned_energy")) {
                    v /= 60.0;
                }
                let unit = gen1_unit(&metric, topic.component);
                out.push(&metric, &labels, msg.received_ms, v, unit);
                if topic.component == Some("sensor") && metric == "battery" {
                    d.battery = Some(v);
                }
            }
            None if GEN1_NUMERIC.contains(&metric.as_str()) => {
                out.errors
                    .push(format!("{}: {text:?} is not a number", gen1_where(&topic)));
            }
            // Text states (`temperature_status` High, `sensor/gas` mild).
            None => r.format = PayloadFormat::Text,
        }
    }
    out.finish(&mut r);
    r.devices.push(d);
    Some(r)
}

fn gen1_where(t: &Gen1Topic) -> String {
    [t.component, t.channel, t.attribute]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/")
}

/// Gen1 values that are always numbers: anything else is an error.
const GEN1_NUMERIC: &[&str] = &[
    "power",
    "energy",
    "returned_energy",
    "total",
    "total_returned",
    "voltage",
    "current",
    "pf",
    "reactive_power",
    "overpower_value",
    "pos",
    "temperature",
    "temperature_f",
    "humidity",
    "battery",
    "lux",
    "tilt",
    "concentration",
    "ext_temperature",
    "ext_temperature_f",
    "ext_humidity",
    "adc",
];

/// Units of Gen1 values, from Shelly's Gen1 MQTT documentation. A
/// battery sensor's `sensor/temperature` follows the unit set on the
/// device, so it has none here.
fn gen1_unit(metric: &str, component: Option<&str>) -> Option<&'static str> {
    Some(match metric {
        "power" | "overpower_value" => "W",
        "energy" | "returned_energy" | "total" | "total_returned" => "Wh",
        "voltage" | "adc" => "V",
        "current" => "A",
        "reactive_power" => "var",
        "pos" | "humidity" | "ext_humidity" | "battery" | "brightness" | "gain" => "%",
        "temperature" if component != Some("sensor") => "°C",
        "temperature_f" | "ext_temperature_f" => "°F",
        "ext_temperature" => "°C",
        "lux" => "lx",
        "tilt" => "°",
        "concentration" => "ppm",
        "temp" => "K",
        _ => return None,
    })
}

/// A Gen1 JSON status: a light's `light/0/status` (`ison` is the same
/// on/off as `light/0`), or a motion sensor's `status`.
fn gen1_json(msg: &Message, id: &str, component: Option<&str>, channel: Option<&str>) -> Reading {
    let obj = match parse_object(msg) {
        Ok(o) => o,
        Err(why) => return unparsed(id, format!("status: {why}")),
    };
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Json);
    let mut d = DeviceReport::new(id, Family::Shelly);
    let mut out = Out::new(msg.topic, id);
    let mut labels = Vec::new();
    if let Some(c) = component {
        labels.push(("component", c));
    }
    if let Some(ch) = channel {
        labels.push(("channel", ch));
    }
    for (k, v) in &obj {
        if values::is_time_key(k) || k.starts_with("timer_") || k == "has_timer" {
            continue;
        }
        let Some(x) = (match v {
            Value::Object(_) | Value::Array(_) => None,
            _ => values::sample_value(v),
        }) else {
            continue;
        };
        let name = match (k.as_str(), component) {
            ("ison", Some(c)) => values::metric_name([c]),
            ("bat", _) => "battery".to_string(),
            (k, _) => values::metric_name([k]),
        };
        if name == "battery" {
            d.battery = Some(x);
        }
        let unit = gen1_unit(&name, component);
        out.push(&name, &labels, msg.received_ms, x, unit);
    }
    out.finish(&mut r);
    r.devices.push(d);
    r
}

/// `shellies/announce` and `shellies/<id>/announce`: model and firmware.
/// The Gen2 announce script sends `Shelly.GetDeviceInfo`'s answer instead.
fn announce(msg: &Message, topic_id: Option<&str>) -> Reading {
    let obj = match parse_object(msg) {
        Ok(o) => o,
        Err(why) => {
            let mut r = Reading::new(Family::Shelly, PayloadFormat::Unparsed);
            r.errors.push(format!("announce: {why}"));
            if let Some(id) = topic_id {
                r.devices.push(DeviceReport::new(id, Family::Shelly));
            }
            return r;
        }
    };
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Json);
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let Some(id) = topic_id.or_else(|| text("id")) else {
        r.errors.push("announce: no id".into());
        return r;
    };
    let mut d = DeviceReport::new(id, Family::Shelly);
    d.model = text("model").map(str::to_string);
    d.firmware = text("fw_ver").or_else(|| text("ver")).map(str::to_string);
    d.name = text("name").filter(|n| *n != id).map(str::to_string);
    r.devices.push(d);
    r
}

/// `shellies/<id>/info`, the Gen1 full status: the device's signal,
/// battery and firmware, and its health. Relay, meter and sensor values
/// also have topics of their own, and are read there.
fn info(msg: &Message, id: &str) -> Reading {
    let obj = match parse_object(msg) {
        Ok(o) => o,
        Err(why) => return unparsed(id, format!("info: {why}")),
    };
    let mut r = Reading::new(Family::Shelly, PayloadFormat::Json);
    let mut d = DeviceReport::new(id, Family::Shelly);
    let mut out = Out::new(msg.topic, id);
    let t = msg.received_ms;
    let num = |v: Option<&Value>| v.and_then(Value::as_f64);
    if let Some(rssi) = num(obj.get("wifi_sta").and_then(|w| w.get("rssi"))) {
        d.signal = Some(Signal::Rssi(rssi));
        out.push("rssi", &[], t, rssi, Some("dBm"));
    }
    if let Some(b) = num(obj.get("bat").and_then(|b| b.get("value"))) {
        d.battery = Some(b);
        out.push("battery", &[], t, b, Some("%"));
    }
    for (key, unit) in [("uptime", "s"), ("ram_free", "B"), ("fs_free", "B")] {
        if let Some(x) = num(obj.get(key)) {
            out.push(key, &[], t, x, Some(unit));
        }
    }
    d.firmware = obj
        .get("update")
        .and_then(|u| u.get("old_version"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    out.finish(&mut r);
    r.devices.push(d);
    r
}

#[cfg(test)]
mod tests {
    use super::super::corpus::{series_names as names, utc_interpreter as interp};
    use super::*;

    #[test]
    fn gen1_topics() {
        let t = gen1_topic("shelly1pm-A/relay/0/power").unwrap();
        assert_eq!(
            (t.id.as_str(), t.component, t.channel, t.attribute),
            ("shelly1pm-A", Some("relay"), Some("0"), Some("power"))
        );
        let t = gen1_topic("shellies/em3/emeter/2/total").unwrap();
        assert_eq!(
            (t.id.as_str(), t.component, t.channel),
            ("shellies/em3", Some("emeter"), Some("2"))
        );
        let t = gen1_topic("sw/relay/power").unwrap();
        assert_eq!(
            (t.id.as_str(), t.component, t.channel, t.attribute),
            ("sw", Some("relay"), None, Some("power"))
        );
        let t = gen1_topic("ht/sensor/battery").unwrap();
        assert_eq!(
            (t.id.as_str(), t.component, t.attribute),
            ("ht", Some("sensor"), Some("battery"))
        );
        let t = gen1_topic("x/ext_temperature/1").unwrap();
        assert_eq!(
            (t.id.as_str(), t.component, t.channel, t.attribute),
            ("x", Some("ext_temperature"), Some("1"), None)
        );
        let t = gen1_topic("x/temperature").unwrap();
        assert_eq!(
            (t.id.as_str(), t.component, t.attribute),
            ("x", None, Some("temperature"))
        );
        assert!(gen1_topic("x").is_none());
        assert!(gen1_topic("x//power").is_none());
    }

    #[test]
    fn recognition() {
        let mut i = interp();
        for (topic, payload, family) in [
            (
                "shellyplus1-a8032abcf5f0/online",
                &b"true"[..],
                Family::Shelly,
            ),
            ("home/garage/online", b"true", Family::Generic),
            ("home/status/sys", br#"{"uptime":5}"#, Family::Generic),
            (
                "home/status/switch:0",
                br#"{"output":true}"#,
                Family::Shelly,
            ),
            (
                "home/status/switch:x",
                br#"{"output":true}"#,
                Family::Generic,
            ),
            ("home/events/rpc", br#"{"a":1}"#, Family::Generic),
            (
                "home/events/rpc",
                br#"{"src":"a","method":"NotifyEvent","params":{}}"#,
                Family::Shelly,
            ),
            (
                "shellyplus1-a/rpc",
                br#"{"id":1,"method":"Switch.Set"}"#,
                Family::Shelly,
            ),
            ("shellyplus1-a/command/switch:0", b"on", Family::Shelly),
        ] {
            assert_eq!(i.read(topic, payload, 0).family, family, "{topic}");
        }
    }

    #[test]
    fn commands_and_events_are_not_samples() {
        let mut i = interp();
        for (topic, payload) in [
            ("shellies/x/relay/0/command", &b"on"[..]),
            ("shellies/x/roller/0/command/pos", b"50"),
            ("shellies/x/light/0/set", br#"{"turn":"on"}"#),
            ("shellies/command", b"announce"),
            (
                "shellies/x/input_event/0",
                br#"{"event":"S","event_cnt":3}"#,
            ),
            ("shellies/x/roller/0", b"stop"),
            ("shellies/x/temperature_status", b"High"),
            (
                "shellyplus1-a/rpc",
                br#"{"id":1,"method":"Switch.Set","params":{"id":0,"on":true}}"#,
            ),
        ] {
            let r = i.read(topic, payload, 0);
            assert_eq!(
                (r.family, r.samples(), r.errors.len()),
                (Family::Shelly, 0, 0),
                "{topic}"
            );
        }
    }

    #[test]
    fn malformed_payloads_are_errors_not_samples() {
        let mut i = interp();
        for (topic, payload) in [
            ("shellies/x/relay/0/power", &b"lots"[..]),
            ("shellies/x/online", b"yes!"),
            ("shellies/x/info", b"{"),
            ("shellies/x/light/0/status", b"[1]"),
            ("shellies/announce", br#"{"model":"SHSW-1"}"#),
            ("shellyplus1-a/status/switch:0", b"\xff"),
            ("shellyplus1-a/events/rpc", b"{}"),
            ("x/status/switch:0", b"{\"output\":"),
        ] {
            let r = i.read(topic, payload, 0);
            assert_eq!((r.family, r.samples()), (Family::Shelly, 0), "{topic}");
            assert_eq!(r.errors.len(), 1, "{topic}: {:?}", r.errors);
        }
        let r = i.read(
            "shellyplus1-a/events/rpc",
            br#"{"method":"NotifyStatus"}"#,
            0,
        );
        assert_eq!((r.samples(), r.errors.len()), (0, 1));
    }

    #[test]
    fn gen2_names_units_and_skips() {
        let r = interp().read(
            "shellypro3em-1/status/em:0",
            br#"{"id":0,"a_current":1.5,"a_act_power":300,"a_aprt_power":310,"a_freq":50,"total_act_power":300,"user_calibrated_phase":[]}"#,
            7,
        );
        assert_eq!(
            r.units,
            [
                ("a_act_power".to_string(), "W".to_string()),
                ("a_aprt_power".into(), "VA".into()),
                ("a_current".into(), "A".into()),
                ("a_freq".into(), "Hz".into()),
                ("total_act_power".into(), "W".into()),
            ]
        );
        let r = interp().read(
            "shellyplus1pm-1/status/switch:0",
            br#"{"id":0,"output":true,"timer_started_at":1,"timer_duration":60,"temperature":{"tC":40.1,"tF":104.2},"aenergy":{"total":1,"by_minute":[1,2],"minute_ts":1654511340},"errors":["overtemp"]}"#,
            7,
        );
        assert_eq!(
            names(&r),
            [
                "aenergy_total{channel=\"0\",component=\"switch\",device=\"shellyplus1pm-1\",topic=\"shellyplus1pm-1/status/switch:0\"}",
                "output{channel=\"0\",component=\"switch\",device=\"shellyplus1pm-1\",topic=\"shellyplus1pm-1/status/switch:0\"}",
                "temperature{channel=\"0\",component=\"switch\",device=\"shellyplus1pm-1\",topic=\"shellyplus1pm-1/status/switch:0\"}",
                "temperature_f{channel=\"0\",component=\"switch\",device=\"shellyplus1pm-1\",topic=\"shellyplus1pm-1/status/switch:0\"}",
            ]
        );
        assert!(r.series.iter().all(|s| s.samples == [(7, s.samples[0].1)]));
    }

    #[test]
    fn gen2_state_is_the_components() {
        let r = interp().read(
            "shellyplusi4-1/status/input:2",
            br#"{"id":2,"state":true}"#,
            3,
        );
        assert_eq!(
            names(&r),
            ["input{channel=\"2\",component=\"input\",device=\"shellyplusi4-1\",topic=\"shellyplusi4-1/status/input:2\"}"]
        );
        let r = interp().read(
            "shellyplus2pm-1/status/cover:0",
            br#"{"id":0,"state":"opening","current_pos":40,"target_pos":100}"#,
            3,
        );
        assert_eq!(r.samples(), 2);
        assert_eq!(
            r.units,
            [
                ("current_pos".to_string(), "%".to_string()),
                ("target_pos".into(), "%".into())
            ]
        );
    }

    #[test]
    fn gen2_time_is_params_ts() {
        let now = 1_661_517_400_000;
        let r = interp().read(
            "p/events/rpc",
            br#"{"src":"shellyplus1pm-1","method":"NotifyStatus","params":{"ts":1661517385.44,"switch:0":{"id":0,"voltage":232.7}}}"#,
            now,
        );
        assert_eq!(r.series[0].samples, [(1_661_517_385_440, 232.7)]);
        assert!(r.notices.is_empty());
        let r = interp().read(
            "p/events/rpc",
            br#"{"src":"s","method":"NotifyStatus","params":{"ts":"soon","switch:0":{"voltage":1}}}"#,
            now,
        );
        assert_eq!((r.series[0].samples[0].0, r.notices.len()), (now, 1));
    }

    #[test]
    fn gen1_values() {
        let mut i = interp();
        let r = i.read("shellies/sw/relay/energy", b"120", 9);
        assert_eq!(
            names(&r),
            ["energy{component=\"relay\",device=\"sw\",topic=\"shellies/sw/relay/energy\"}"]
        );
        assert_eq!(r.series[0].samples, [(9, 2.0)]);
        let r = i.read("shellies/sw/roller/0/pos", b"-1", 9);
        assert_eq!(
            (r.series[0].samples[0].1, r.units[0].1.as_str()),
            (-1.0, "%")
        );
        let r = i.read("shellies/m/status", br#"{"motion":true,"timestamp":1600000000,"active":true,"vibration":false,"lux":12,"bat":80}"#, 9);
        assert_eq!(r.samples(), 5);
        assert_eq!(r.devices[0].battery, Some(80.0));
        let r = i.read("shellies/x/temperature", b"41.5", 9);
        assert_eq!(r.units, [("temperature".to_string(), "°C".to_string())]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let mut i = interp();
        for topic in [
            "shellies/",
            "shellies//",
            "shellies/a/",
            "/status/switch:0",
            "x/status/",
            "/events/rpc",
            "shellies/a/b/c/d/e/f/0/1/2",
            "shellies/announce",
            "shellies/x/info",
            "shellies/x/status",
            "shellyx/online",
            "a/status/switch:0",
        ] {
            for p in [
                &b""[..],
                b"\xff",
                b"{}",
                b"[]",
                b"null",
                b"{\"params\":7,\"method\":\"NotifyFullStatus\"}",
                br#"{"wifi_sta":{"rssi":"x"},"bat":[],"update":{"old_version":3}}"#,
            ] {
                let _ = i.read(topic, p, 0);
            }
        }
    }
}
