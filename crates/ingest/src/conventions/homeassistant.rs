//! Home Assistant MQTT discovery: see docs/devices.md.
//!
//! A discovery config (`<prefix>/<component>/[<node_id>/]<object_id>/config`,
//! or a device config `<prefix>/device/<id>/config` with its components
//! under `cmps`) is remembered, never stored as samples: the entity's name,
//! unit, device, the topics it reads and how (value template, payloads for
//! on and off), its availability topics. Messages on those topics are then
//! read as the entity says. An empty config removes the entity.
//!
//! Topics that a family recognised by its topic layout reads better
//! (zigbee2mqtt's, ESPHome's) are left to that family: a config naming them
//! still reports its device (with that family's id) and the unit of the
//! metric that family stores, and the family asks [`Discovery`] for units
//! and device metadata.

use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

use super::values::{self, SeriesOut};
use super::{
    esphome, shelly, tasmota, zigbee2mqtt, Ctx, DeviceReport, Family, Message, Notice, NoticeKind,
    Reading, Settings,
};

/// Configs larger than this are refused (a discovery config is a few
/// hundred bytes; a device config with many components a few KiB).
pub(crate) const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Bounds on what one config may make perch remember, whatever its bytes:
/// `~` is copied into every topic and a device config's shared options into
/// every component, so a 64 KiB config could otherwise expand a
/// thousandfold.
const MAX_TOPIC_BYTES: usize = 512;
const MAX_AVAILABILITY: usize = 8;
const MAX_COMPONENTS: usize = 128;

/// The entities discovery configs announced, and the topics they read.
#[derive(Default)]
pub(crate) struct Discovery {
    /// By config key: the config topic, plus `#<component id>` for the
    /// components of a device config.
    entities: FxHashMap<String, Entity>,
    /// Topic → keys of the entities that read, watch or command it.
    topics: FxHashMap<String, Vec<String>>,
}

/// What a discovery config says about one entity.
#[derive(Clone, Debug)]
struct Entity {
    component: String,
    /// The `entity` label: the config's object id.
    object_id: String,
    /// The metric its main state is stored as.
    metric: String,
    device: Dev,
    unit: Option<String>,
    reads: Vec<StateRead>,
    availability: Vec<Avail>,
    commands: Vec<String>,
    /// Payloads (or states) meaning on and off, for two-state components.
    on: Option<String>,
    off: Option<String>,
    /// A light with `schema: json`: the state is a JSON object.
    json_light: bool,
}

/// The device of an entity, as its config (or a native family) names it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Dev {
    pub id: String,
    pub family: Family,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
}

impl Dev {
    fn report(&self) -> DeviceReport {
        DeviceReport {
            name: self.name.clone().filter(|n| *n != self.id),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            firmware: self.firmware.clone(),
            ..DeviceReport::new(self.id.clone(), self.family)
        }
    }
}

/// A topic an entity reads a value from.
#[derive(Clone, Debug)]
struct StateRead {
    topic: String,
    template: Option<Result<Template, UnsupportedTemplate>>,
    metric: String,
    role: Role,
    /// Left to the family that recognises the topic.
    native: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The entity's state, read as its component says.
    Main,
    /// A number (a cover's position, a climate's temperature, …).
    Number,
}

#[derive(Clone, Debug)]
struct Avail {
    topic: String,
    template: Option<Result<Template, UnsupportedTemplate>>,
    available: String,
    not_available: String,
}

impl Discovery {
    /// The unit of the entity whose state topic is `topic`, if its config
    /// says one.
    pub(crate) fn unit_on(&self, topic: &str) -> Option<&str> {
        self.entities_on(topic)
            .filter(|e| {
                e.reads
                    .iter()
                    .any(|r| r.topic == topic && r.role == Role::Main)
            })
            .find_map(|e| e.unit.as_deref())
    }

    /// The device of the entities reading or watching `topic`.
    pub(crate) fn device_on(&self, topic: &str) -> Option<&Dev> {
        self.entities_on(topic).map(|e| &e.device).next()
    }

    fn entities_on<'a>(&'a self, topic: &str) -> impl Iterator<Item = &'a Entity> + 'a {
        self.topics
            .get(topic)
            .into_iter()
            .flatten()
            .filter_map(|k| self.entities.get(k))
    }

    fn insert(&mut self, key: String, e: Entity) {
        self.remove(&key);
        let mut topics: Vec<&str> = e
            .reads
            .iter()
            .filter(|r| !r.native)
            .map(|r| r.topic.as_str())
            .collect();
        topics.extend(e.availability.iter().map(|a| a.topic.as_str()));
        topics.extend(e.commands.iter().map(String::as_str));
        // Native reads are indexed too, for `unit_on` and `device_on`.
        topics.extend(
            e.reads
                .iter()
                .filter(|r| r.native)
                .map(|r| r.topic.as_str()),
        );
        topics.sort_unstable();
        topics.dedup();
        for t in topics {
            self.topics
                .entry(t.to_string())
                .or_default()
                .push(key.clone());
        }
        self.entities.insert(key, e);
    }

    fn remove(&mut self, key: &str) -> Option<Entity> {
        let e = self.entities.remove(key)?;
        let topics = e
            .reads
            .iter()
            .map(|r| &r.topic)
            .chain(e.availability.iter().map(|a| &a.topic))
            .chain(e.commands.iter());
        for t in topics {
            if let Some(keys) = self.topics.get_mut(t) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.topics.remove(t);
                }
            }
        }
        Some(e)
    }

    fn has_device(&self, id: &str) -> bool {
        self.entities.values().any(|e| e.device.id == id)
    }

    /// Whether `topic` is one only watched (not read) by native entities.
    fn only_native(&self, topic: &str) -> bool {
        self.entities_on(topic).all(|e| {
            e.reads.iter().all(|r| r.topic != topic || r.native)
                && e.availability.iter().all(|a| a.topic != topic)
                && e.commands.iter().all(|c| c != topic)
        })
    }
}

/// A discovery config, or a message on a state topic one named; `None`
/// otherwise.
pub(crate) fn read(msg: &Message, ctx: &mut Ctx) -> Option<Reading> {
    let prefix = ctx.settings.homeassistant_prefix.as_str();
    let under_prefix = under(msg.topic, prefix);
    if under_prefix {
        let rest = &msg.topic[prefix.len() + 1..];
        if let Some(path) = rest.strip_suffix("/config") {
            return Some(read_config(msg, ctx, path));
        }
    }
    if ctx.state.homeassistant.topics.contains_key(msg.topic)
        && !ctx.state.homeassistant.only_native(msg.topic)
    {
        return Some(read_state(msg, ctx));
    }
    // Everything else under the prefix (Home Assistant's own status, states
    // of entities not (yet) discovered, commands) is not a sample.
    under_prefix.then(|| Reading::new(Family::HomeAssistant, values::payload_format(msg.payload)))
}

/// Whether `topic` is under the discovery prefix.
fn under(topic: &str, prefix: &str) -> bool {
    !prefix.is_empty()
        && topic
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// The family that reads `topic` by its layout, and the device id it gives.
/// ESPHome's layout (`<node>/sensor/<id>/state`) is also what people write
/// by hand: it is ESPHome's only when `esphome` says the config may be
/// (its device says ESPHome, or it has no value template to apply).
fn native(topic: &str, settings: &Settings, esphome: bool) -> Option<(Family, String)> {
    // States under the discovery prefix (its docs' examples use
    // `homeassistant/<component>/<id>/state`) are discovery's.
    if under(topic, &settings.homeassistant_prefix) {
        return None;
    }
    if let Some(id) = zigbee2mqtt::device_of(topic, settings) {
        return Some((Family::Zigbee2Mqtt, id.to_string()));
    }
    if let Some(id) = tasmota::device_of(topic) {
        return Some((Family::Tasmota, id));
    }
    if let Some(id) = shelly::device_of(topic) {
        return Some((Family::Shelly, id.to_string()));
    }
    esphome::device_of(topic)
        .filter(|_| esphome)
        .map(|id| (Family::EspHome, id.to_string()))
}

/// The metric a native family stores the value `read` gives as, if known.
fn native_metric(
    topic: &str,
    template: Option<&Result<Template, UnsupportedTemplate>>,
    family: Family,
) -> Option<String> {
    match family {
        Family::EspHome => esphome::metric_of(topic),
        Family::Zigbee2Mqtt => match template {
            Some(Ok(t)) if t.json && !t.path.is_empty() => {
                let names: Option<Vec<&str>> = t
                    .path
                    .iter()
                    .map(|k| match k {
                        Key::Name(n) => Some(n.as_str()),
                        Key::Index(_) => None,
                    })
                    .collect();
                Some(values::metric_name(names?)).filter(|m| !m.is_empty())
            }
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Configs

fn read_config(msg: &Message, ctx: &mut Ctx, path: &str) -> Reading {
    let mut r = Reading::new(Family::HomeAssistant, values::payload_format(msg.payload));
    let levels: Vec<&str> = path.split('/').collect();
    let (component, node_id, object_id) = match levels.as_slice() {
        [c, o] => (*c, None, *o),
        [c, n, o] => (*c, Some(*n), *o),
        _ => {
            discovery_notice(
                &mut r,
                format!(
                    "{:?} is not a discovery topic (<component>/[<node_id>/]<object_id>/config)",
                    msg.topic
                ),
            );
            return r;
        }
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !valid(component) || !valid(object_id) || node_id.is_some_and(|n| !valid(n)) {
        discovery_notice(
            &mut r,
            format!(
                "{:?}: the component, node id and object id may hold only letters, digits, _ and -",
                msg.topic
            ),
        );
        return r;
    }
    if msg.payload.is_empty() {
        remove_config(ctx, msg.topic, component == "device", &mut r);
        return r;
    }
    if msg.payload.len() > MAX_CONFIG_BYTES {
        discovery_notice(
            &mut r,
            format!(
                "the config is {} bytes, more than the {} KiB a discovery config may have",
                msg.payload.len(),
                MAX_CONFIG_BYTES / 1024
            ),
        );
        return r;
    }
    let cfg = match serde_json::from_slice::<Value>(msg.payload) {
        Ok(Value::Object(m)) => match expand_bounded(m) {
            Ok(m) => m,
            Err(why) => {
                discovery_notice(&mut r, why.to_string());
                return r;
            }
        },
        Ok(_) => {
            discovery_notice(&mut r, "the config is not a JSON object".into());
            return r;
        }
        Err(e) => {
            discovery_notice(&mut r, format!("the config is not JSON: {e}"));
            return r;
        }
    };
    // A migration between a device config and single configs: the next
    // config says what the entities are.
    if cfg.len() == 1 && cfg.contains_key("migrate_discovery") {
        return r;
    }
    if component == "device" {
        read_device_config(msg, ctx, object_id, cfg, &mut r);
        return r;
    }
    let entity = build_entity(ctx.settings, component, node_id, object_id, &cfg, &mut r);
    store(ctx, msg.topic.to_string(), entity, &mut r);
    r
}

/// Components of a device config (`cmps`), each with the shared options.
fn read_device_config(
    msg: &Message,
    ctx: &mut Ctx,
    id: &str,
    mut cfg: Map<String, Value>,
    r: &mut Reading,
) {
    let Some(Value::Object(cmps)) = cfg.remove("components") else {
        discovery_notice(
            r,
            "a device config needs its components (cmps) as an object".into(),
        );
        return;
    };
    if !matches!(cfg.get("device"), Some(Value::Object(_))) {
        discovery_notice(r, "a device config needs its device (dev)".into());
        return;
    }
    cfg.remove("origin");
    if cmps.len() > MAX_COMPONENTS {
        discovery_notice(
            r,
            format!(
                "the device config has {} components, more than the {MAX_COMPONENTS} perch reads",
                cmps.len()
            ),
        );
        return;
    }
    let prefix = format!("{}#", msg.topic);
    let mut kept = Vec::new();
    for (cid, c) in cmps {
        let Value::Object(c) = c else {
            discovery_notice(r, format!("component {cid:?} is not an object"));
            continue;
        };
        let c = expand(c);
        let Some(platform) = c
            .get("platform")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            discovery_notice(r, format!("component {cid:?} has no platform (p)"));
            continue;
        };
        // A component with only its platform is one being removed.
        if c.len() == 1 {
            continue;
        }
        let mut merged = cfg.clone();
        merged.extend(c);
        // The shared base topic `~` applies to the component's topics too.
        let merged = match expand_bounded(merged) {
            Ok(m) => m,
            Err(why) => {
                discovery_notice(r, format!("component {cid:?}: {why}"));
                continue;
            }
        };
        let entity = build_entity(ctx.settings, &platform, Some(id), &cid, &merged, r);
        let key = format!("{prefix}{cid}");
        kept.push(key.clone());
        store(ctx, key, entity, r);
    }
    let gone: Vec<String> = ctx
        .state
        .homeassistant
        .entities
        .keys()
        .filter(|k| k.starts_with(&prefix) && !kept.contains(k))
        .cloned()
        .collect();
    for key in gone {
        remove_entity(ctx, &key, r);
    }
}

fn store(ctx: &mut Ctx, key: String, entity: Option<Entity>, r: &mut Reading) {
    let Some(entity) = entity else {
        return;
    };
    let d = &mut ctx.state.homeassistant;
    if !d.entities.contains_key(&key) && d.entities.len() >= ctx.settings.max_entities {
        r.notices.push(Notice {
            kind: NoticeKind::Limit,
            message: format!(
                "{} discovered entities are remembered already (devices.max_entities): this one is not read",
                d.entities.len()
            ),
        });
        return;
    }
    let report = entity.device.report();
    if !r.devices.contains(&report) {
        r.devices.push(report);
    }
    if let Some(unit) = &entity.unit {
        let metric = entity
            .reads
            .iter()
            .find(|s| s.role == Role::Main)
            .map(|s| s.metric.clone())
            .unwrap_or_else(|| entity.metric.clone());
        let u = (metric, unit.clone());
        if !u.0.is_empty() && !r.units.contains(&u) {
            r.units.push(u);
        }
    }
    d.insert(key, entity);
}

fn remove_config(ctx: &mut Ctx, topic: &str, device_config: bool, r: &mut Reading) {
    if device_config {
        let prefix = format!("{topic}#");
        let keys: Vec<String> = ctx
            .state
            .homeassistant
            .entities
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for key in keys {
            remove_entity(ctx, &key, r);
        }
    } else {
        remove_entity(ctx, topic, r);
    }
}

fn remove_entity(ctx: &mut Ctx, key: &str, r: &mut Reading) {
    let d = &mut ctx.state.homeassistant;
    let Some(e) = d.remove(key) else {
        return;
    };
    // A device a native family reads lives on without its discovery config.
    if e.device.family == Family::HomeAssistant
        && !d.has_device(&e.device.id)
        && !r.devices.iter().any(|x| x.id == e.device.id && x.removed)
    {
        r.devices.push(DeviceReport {
            removed: true,
            ..DeviceReport::new(e.device.id.clone(), e.device.family)
        });
    }
}

/// Components whose whole point is a state topic: a config of one without
/// it is a mistake worth telling.
const NEED_STATE: &[&str] = &["sensor", "binary_sensor"];

fn build_entity(
    settings: &Settings,
    component: &str,
    node_id: Option<&str>,
    object_id: &str,
    cfg: &Map<String, Value>,
    r: &mut Reading,
) -> Option<Entity> {
    let text = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_string);
    let topic = |k: &str| -> Result<Option<String>, ConfigError> {
        match cfg.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::NotAString(k.to_string())),
        }
    };
    let template = |k: &str| {
        text(k)
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse_template(&t))
    };

    let state_topic = match topic("state_topic") {
        Ok(t) => t,
        Err(e) => {
            discovery_notice(r, e.to_string());
            return None;
        }
    };
    if state_topic.is_none() && NEED_STATE.contains(&component) {
        discovery_notice(
            r,
            format!("the {component} {object_id:?} has no state topic (state_topic, stat_t): nothing to read"),
        );
    }

    // The metric: the entity's name in snake_case, else its device class,
    // else the object id of its discovery topic.
    let metric = [
        text("name"),
        text("device_class"),
        Some(object_id.to_string()),
    ]
    .into_iter()
    .flatten()
    .map(|s| values::metric_name([s.as_str()]))
    .find(|m| !m.is_empty())
    .unwrap_or_default();
    if metric.is_empty() {
        discovery_notice(r, format!("no metric name can be made for {object_id:?}"));
        return None;
    }

    let dev_cfg = match cfg.get("device") {
        Some(Value::Object(d)) => Some(d),
        _ => None,
    };
    let dev_text = |k: &str| {
        dev_cfg
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let first = |k: &str, pick: fn(&Value) -> Option<&str>| {
        dev_cfg.and_then(|d| match d.get(k)? {
            Value::Array(a) => a.iter().find_map(pick).map(str::to_string),
            v => pick(v).map(str::to_string),
        })
    };
    let identifier = first("identifiers", Value::as_str);
    let connection = first("connections", |v| v.as_array()?.get(1)?.as_str());
    let dev_name = dev_text("name");
    let esphome = dev_text("sw_version")
        .is_some_and(|v| v.to_ascii_lowercase().contains("esphome"))
        || text("value_template").is_none();
    let native_of = |t: &str| native(t, settings, esphome);
    let native_dev = state_topic.as_deref().and_then(native_of);
    let (family, id) = match &native_dev {
        Some((f, id)) => (*f, id.clone()),
        // The identifier first: every config of a device repeats it, where
        // only some give the name (Home Assistant's own example names the
        // device in one of its two sensors' configs).
        None => (
            Family::HomeAssistant,
            [
                identifier,
                connection,
                dev_name.clone(),
                node_id.map(str::to_string),
            ]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| object_id.to_string()),
        ),
    };
    let device = Dev {
        id,
        family,
        name: dev_name,
        manufacturer: dev_text("manufacturer"),
        // zigbee2mqtt's configs give the description as `model` and the
        // model its device list gives as `model_id`.
        model: match family {
            Family::Zigbee2Mqtt => dev_text("model_id").or_else(|| dev_text("model")),
            _ => dev_text("model"),
        },
        firmware: dev_text("sw_version"),
    };

    let mut reads = Vec::new();
    let mut add_read = |topic: Option<String>,
                        tpl: Option<Result<Template, UnsupportedTemplate>>,
                        metric: String,
                        role| {
        if let Some(t) = topic {
            let native = native_of(&t);
            // Left to a native family: the metric that family stores, if
            // known (else none, and no unit is reported for it).
            let metric = match &native {
                Some((f, _)) => native_metric(&t, tpl.as_ref(), *f).unwrap_or_default(),
                None => metric,
            };
            reads.push(StateRead {
                native: native.is_some(),
                topic: t,
                template: tpl,
                metric,
                role,
            });
        }
    };
    let main_tpl = template("value_template").or_else(|| template("state_value_template"));
    add_read(state_topic, main_tpl, metric.clone(), Role::Main);
    for (t, tpl, suffix) in [
        ("position_topic", "position_template", "position"),
        (
            "current_temperature_topic",
            "current_temperature_template",
            "current_temperature",
        ),
        (
            "temperature_state_topic",
            "temperature_state_template",
            "target_temperature",
        ),
        (
            "brightness_state_topic",
            "brightness_value_template",
            "brightness",
        ),
        (
            "percentage_state_topic",
            "percentage_value_template",
            "percentage",
        ),
    ] {
        if let Ok(Some(topic)) = topic(t) {
            add_read(
                Some(topic),
                template(tpl),
                values::metric_name([metric.as_str(), suffix]),
                Role::Number,
            );
        }
    }

    let mut availability = Vec::new();
    let payload = |m: &Map<String, Value>, k: &str, default: &str| {
        m.get(k)
            .map(render_config)
            .unwrap_or_else(|| default.to_string())
    };
    if let Ok(Some(t)) = topic("availability_topic") {
        availability.push(Avail {
            topic: t,
            template: template("availability_template"),
            available: payload(cfg, "payload_available", "online"),
            not_available: payload(cfg, "payload_not_available", "offline"),
        });
    }
    let avty_items: Vec<&Value> = match cfg.get("availability") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        Some(Value::Null) | None => Vec::new(),
        Some(_) => {
            discovery_notice(
                r,
                "availability is not a list of {topic, …}: it is not watched".into(),
            );
            Vec::new()
        }
    };
    for item in avty_items {
        let Some(m) = item.as_object() else {
            discovery_notice(
                r,
                "an availability item is not an object: it is not watched".into(),
            );
            continue;
        };
        let Some(t) = m
            .get("topic")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            discovery_notice(
                r,
                "an availability item has no topic: it is not watched".into(),
            );
            continue;
        };
        availability.push(Avail {
            topic: t.to_string(),
            template: m
                .get("value_template")
                .and_then(Value::as_str)
                .map(parse_template),
            available: payload(m, "payload_available", "online"),
            not_available: payload(m, "payload_not_available", "offline"),
        });
    }
    // Topics left to a native family are not watched here either.
    availability.retain(|a| native_of(&a.topic).is_none());

    let mut commands: Vec<String> = cfg
        .iter()
        .filter(|(k, _)| k.ends_with("command_topic"))
        .filter_map(|(_, v)| v.as_str())
        .filter(|t| !t.is_empty() && native_of(t).is_none())
        .map(str::to_string)
        .collect();
    commands.sort();
    commands.dedup();

    let (on_key, off_key, on_default, off_default) = match component {
        "lock" => ("state_locked", "state_unlocked", "LOCKED", "UNLOCKED"),
        "cover" | "valve" => ("state_open", "state_closed", "open", "closed"),
        "binary_sensor" => ("payload_on", "payload_off", "ON", "OFF"),
        _ => ("state_on", "state_off", "ON", "OFF"),
    };
    let on = cfg
        .get(on_key)
        .or_else(|| cfg.get("payload_on").filter(|_| on_key == "state_on"))
        .map(render_config)
        .or_else(|| Some(on_default.to_string()));
    let off = cfg
        .get(off_key)
        .or_else(|| cfg.get("payload_off").filter(|_| off_key == "state_off"))
        .map(render_config)
        .or_else(|| Some(off_default.to_string()));

    Some(Entity {
        component: component.to_string(),
        object_id: object_id.to_string(),
        metric,
        device,
        unit: text("unit_of_measurement").filter(|u| !u.is_empty()),
        reads,
        availability,
        commands,
        on,
        off,
        json_light: component == "light" && text("schema").as_deref() == Some("json"),
    })
}

fn discovery_notice(r: &mut Reading, why: String) {
    r.errors.push(why.clone());
    r.notices.push(Notice {
        kind: NoticeKind::Discovery,
        message: why,
    });
}

/// Abbreviations Home Assistant accepts in discovery configs (from its
/// `abbreviations.py`), for the options read here.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("avty", "availability"),
    ("avty_mode", "availability_mode"),
    ("avty_t", "availability_topic"),
    ("avty_tpl", "availability_template"),
    ("bri_stat_t", "brightness_state_topic"),
    ("bri_val_tpl", "brightness_value_template"),
    ("cmd_t", "command_topic"),
    ("cmps", "components"),
    ("curr_temp_t", "current_temperature_topic"),
    ("curr_temp_tpl", "current_temperature_template"),
    ("dev", "device"),
    ("dev_cla", "device_class"),
    ("json_attr_t", "json_attributes_topic"),
    ("json_attr_tpl", "json_attributes_template"),
    ("migr_discvry", "migrate_discovery"),
    ("o", "origin"),
    ("obj_id", "object_id"),
    ("p", "platform"),
    ("pct_stat_t", "percentage_state_topic"),
    ("pct_val_tpl", "percentage_value_template"),
    ("pl_avail", "payload_available"),
    ("pl_not_avail", "payload_not_available"),
    ("pl_off", "payload_off"),
    ("pl_on", "payload_on"),
    ("pos_t", "position_topic"),
    ("pos_tpl", "position_template"),
    ("stat_cla", "state_class"),
    ("stat_clsd", "state_closed"),
    ("stat_locked", "state_locked"),
    ("stat_off", "state_off"),
    ("stat_on", "state_on"),
    ("stat_open", "state_open"),
    ("stat_t", "state_topic"),
    ("stat_unlocked", "state_unlocked"),
    ("stat_val_tpl", "state_value_template"),
    ("t", "topic"),
    ("temp_stat_t", "temperature_state_topic"),
    ("temp_stat_tpl", "temperature_state_template"),
    ("uniq_id", "unique_id"),
    ("unit_of_meas", "unit_of_measurement"),
    ("val_tpl", "value_template"),
];

const DEVICE_ABBREVIATIONS: &[(&str, &str)] = &[
    ("cns", "connections"),
    ("cu", "configuration_url"),
    ("hw", "hw_version"),
    ("ids", "identifiers"),
    ("mdl", "model"),
    ("mdl_id", "model_id"),
    ("mf", "manufacturer"),
    ("sa", "suggested_area"),
    ("sn", "serial_number"),
    ("sw", "sw_version"),
];

/// [`expand`], refusing a config whose topics, once expanded, are longer
/// than [`MAX_TOPIC_BYTES`] or that watches more than [`MAX_AVAILABILITY`]
/// availability topics.
fn expand_bounded(cfg: Map<String, Value>) -> Result<Map<String, Value>, ConfigError> {
    let cfg = expand(cfg);
    let items = match cfg.get("availability") {
        Some(Value::Array(a)) => a.as_slice(),
        _ => &[],
    };
    if items.len() > MAX_AVAILABILITY {
        return Err(ConfigError::Availability(items.len()));
    }
    let topics = cfg
        .iter()
        .filter(|(k, _)| k.ends_with("topic"))
        .map(|(k, v)| (k.as_str(), v))
        .chain(
            items
                .iter()
                .filter_map(|i| Some(("availability topic", i.get("topic")?))),
        );
    for (key, v) in topics {
        if let Some(t) = v.as_str().filter(|t| t.len() > MAX_TOPIC_BYTES) {
            return Err(ConfigError::LongTopic {
                key: key.to_string(),
                len: t.len(),
            });
        }
    }
    Ok(cfg)
}

/// Why a discovery config, or a part of it, is not used.
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    #[error("{0} is not a string")]
    NotAString(String),
    #[error("{0} availability topics, more than the {MAX_AVAILABILITY} perch watches")]
    Availability(usize),
    #[error("{key} is {len} bytes long, more than the {MAX_TOPIC_BYTES} perch keeps")]
    LongTopic { key: String, len: usize },
}

/// Expands abbreviations (in the device and availability items too) and
/// the base topic `~` at the start or end of topics, as Home Assistant does.
fn expand(cfg: Map<String, Value>) -> Map<String, Value> {
    let full = |k: String, table: &[(&str, &str)]| {
        table
            .iter()
            .find(|(a, _)| *a == k)
            .map(|(_, f)| f.to_string())
            .unwrap_or(k)
    };
    let mut out: Map<String, Value> = cfg
        .into_iter()
        .map(|(k, v)| (full(k, ABBREVIATIONS), v))
        .collect();
    if let Some(Value::Object(d)) = out.remove("device") {
        let d = d
            .into_iter()
            .map(|(k, v)| (full(k, DEVICE_ABBREVIATIONS), v))
            .collect();
        out.insert("device".into(), Value::Object(d));
    }
    if let Some(Value::Array(items)) = out.get_mut("availability") {
        for item in items {
            if let Value::Object(m) = item {
                *m = std::mem::take(m)
                    .into_iter()
                    .map(|(k, v)| (full(k, ABBREVIATIONS), v))
                    .collect();
            }
        }
    }
    if let Some(Value::Object(m)) = out.get_mut("availability") {
        *m = std::mem::take(m)
            .into_iter()
            .map(|(k, v)| (full(k, ABBREVIATIONS), v))
            .collect();
    }
    if let Some(base) = out.get("~").and_then(Value::as_str).map(str::to_string) {
        let replace = |v: &mut Value| {
            if let Value::String(s) = v {
                if let Some(rest) = s.strip_prefix('~') {
                    *s = format!("{base}{rest}");
                } else if let Some(rest) = s.strip_suffix('~') {
                    *s = format!("{rest}{base}");
                }
            }
        };
        for (k, v) in out.iter_mut() {
            if k.ends_with("_topic") {
                replace(v);
            }
        }
        if let Some(v) = out.get_mut("availability") {
            let items: Vec<&mut Value> = match v {
                Value::Array(a) => a.iter_mut().collect(),
                v => vec![v],
            };
            for item in items {
                if let Some(t) = item.as_object_mut().and_then(|m| m.get_mut("topic")) {
                    replace(t);
                }
            }
        }
    }
    out
}

/// A config value as Home Assistant compares it with a payload: strings as
/// they are, booleans as Python writes them.
fn render_config(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        v => v.to_string(),
    }
}

// ---------------------------------------------------------------------------
// States

fn read_state(msg: &Message, ctx: &mut Ctx) -> Reading {
    let d = &ctx.state.homeassistant;
    let mut r = Reading::new(Family::HomeAssistant, values::payload_format(msg.payload));
    let Some(text) = msg.text() else {
        r.errors.push("payload is not UTF-8 text".into());
        return r;
    };
    let json: Option<Value> = serde_json::from_str(text.trim()).ok();
    let keys = d.topics.get(msg.topic).cloned().unwrap_or_default();
    let mut out = SeriesOut::default();
    for key in &keys {
        let Some(e) = d.entities.get(key) else {
            continue;
        };
        let labels = [
            ("device", e.device.id.as_str()),
            ("entity", e.object_id.as_str()),
            ("topic", msg.topic),
        ];
        // A state message is the device speaking, whatever its value.
        let mut spoke = false;
        for read in e.reads.iter().filter(|s| s.topic == msg.topic && !s.native) {
            spoke = true;
            match read_value(e, read, text, json.as_ref()) {
                Ok(samples) => {
                    for (metric, v) in samples {
                        if v.is_nan() {
                            r.dropped_sentinels += 1;
                            continue;
                        }
                        out.push(&metric, &labels, msg.received_ms, v);
                        if read.role == Role::Main && metric == read.metric {
                            if let Some(u) = &e.unit {
                                let u = (metric.clone(), u.clone());
                                if !r.units.contains(&u) {
                                    r.units.push(u);
                                }
                            }
                        }
                    }
                }
                Err(Problem::Template(why)) => {
                    let message = format!("{}: {why}: the value is not read", read.metric);
                    r.errors.push(message.clone());
                    r.notices.push(Notice {
                        kind: NoticeKind::Template,
                        message,
                    });
                }
                Err(Problem::Value(why)) => r.errors.push(format!("{}: {why}", read.metric)),
            }
        }
        let mut online = None;
        for a in e.availability.iter().filter(|a| a.topic == msg.topic) {
            let got = match &a.template {
                None => Ok(Tv::Text(text.to_string())),
                Some(Ok(t)) => t.eval(text, json.as_ref()),
                Some(Err(why)) => Err(Problem::Template(why.clone())),
            };
            match got {
                Ok(tv) => {
                    let s = tv.render();
                    if s == a.available {
                        online = Some(true);
                    } else if s == a.not_available {
                        online = Some(false);
                    }
                }
                Err(Problem::Template(why)) => {
                    let message = format!("availability of {}: {why}", e.object_id);
                    r.errors.push(message.clone());
                    r.notices.push(Notice {
                        kind: NoticeKind::Template,
                        message,
                    });
                }
                Err(Problem::Value(why)) => r.errors.push(why),
            }
        }
        if spoke || online.is_some() {
            let mut report = e.device.report();
            report.online = online;
            match r.devices.iter_mut().find(|x| x.id == report.id) {
                Some(x) => x.online = x.online.or(online),
                None => r.devices.push(report),
            }
        }
    }
    r.series = out.into_series();
    r
}

enum Problem {
    /// A template perch does not evaluate.
    Template(UnsupportedTemplate),
    /// A value that is not one.
    Value(String),
}

/// The samples (metric, value) a state message gives for one read; NaN is
/// a sensor's "no reading".
fn read_value(
    e: &Entity,
    read: &StateRead,
    text: &str,
    json: Option<&Value>,
) -> Result<Vec<(String, f64)>, Problem> {
    let tv = match &read.template {
        Some(Ok(t)) => t.eval(text, json)?,
        Some(Err(why)) => return Err(Problem::Template(why.clone())),
        None if read.role == Role::Main && e.json_light => {
            return json_light(&read.metric, json);
        }
        None => Tv::Text(text.trim().to_string()),
    };
    if matches!(tv, Tv::Missing) {
        return Ok(Vec::new());
    }
    let v = if read.role == Role::Number {
        number(&tv)?
    } else {
        match e.component.as_str() {
            "binary_sensor" => {
                let s = tv.render();
                if Some(&s) == e.on.as_ref() {
                    Some(1.0)
                } else if Some(&s) == e.off.as_ref() {
                    Some(0.0)
                } else {
                    return Err(Problem::Value(format!(
                        "{s:?} is neither payload_on ({:?}) nor payload_off ({:?})",
                        e.on.as_deref().unwrap_or_default(),
                        e.off.as_deref().unwrap_or_default()
                    )));
                }
            }
            "switch" | "light" | "fan" | "lock" | "siren" | "humidifier" | "cover" | "valve" => {
                let s = tv.render();
                if Some(&s) == e.on.as_ref() {
                    Some(1.0)
                } else if Some(&s) == e.off.as_ref() {
                    Some(0.0)
                } else if matches!(e.component.as_str(), "cover" | "valve" | "lock") {
                    // Opening, closing, jammed, stopped: not a position.
                    None
                } else {
                    values::state_word(&s)
                }
            }
            // A sensor without a unit may be a text sensor: its words are
            // not errors.
            "sensor" if e.unit.is_none() => number(&tv).ok().flatten(),
            _ => number(&tv)?,
        }
    };
    Ok(v.map(|v| vec![(read.metric.clone(), v)])
        .unwrap_or_default())
}

/// A light's JSON state (`schema: json`): `state` as 1 or 0, and its
/// brightness and colour temperature.
fn json_light(metric: &str, json: Option<&Value>) -> Result<Vec<(String, f64)>, Problem> {
    let Some(Value::Object(m)) = json else {
        return Err(Problem::Value(
            "a JSON light's state is not a JSON object".into(),
        ));
    };
    let mut out = Vec::new();
    if let Some(v) = m.get("state").and_then(values::sample_value) {
        out.push((metric.to_string(), v));
    }
    for k in ["brightness", "color_temp"] {
        if let Some(v) = m.get(k).and_then(Value::as_f64) {
            out.push((values::metric_name([metric, k]), v));
        }
    }
    Ok(out)
}

/// A template result as a number: numbers, numbers in strings, booleans;
/// `nan` is NaN (a sensor's "no reading"); other words are not numbers.
fn number(tv: &Tv) -> Result<Option<f64>, Problem> {
    Ok(match tv {
        Tv::Number(v) => Some(*v),
        Tv::Json(Value::Number(n)) => n.as_f64(),
        Tv::Json(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        Tv::Json(Value::String(s)) | Tv::Text(s) => {
            let t = s.trim();
            if let Some(v) = values::number_in_string(t) {
                Some(v)
            } else if t.eq_ignore_ascii_case("nan") {
                Some(f64::NAN)
            } else if t.is_empty()
                || ["none", "unknown", "unavailable", "null"]
                    .iter()
                    .any(|w| t.eq_ignore_ascii_case(w))
            {
                None
            } else {
                return Err(Problem::Value(format!("{t:?} is not a number")));
            }
        }
        Tv::Json(Value::Null) | Tv::Missing => None,
        Tv::Json(_) => return Err(Problem::Value("an object or a list is not a number".into())),
    })
}

// ---------------------------------------------------------------------------
// Templates

/// The value templates perch evaluates: `{{ value }}` or `{{ value_json` and
/// a path of `.name`, `['name']` or `[n]` `}}`, each followed by filters
/// `float`, `int` (each with an optional default) and `round(n)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    json: bool,
    path: Vec<Key>,
    filters: Vec<Filter>,
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Name(String),
    Index(usize),
}

#[derive(Clone, Debug, PartialEq)]
enum Filter {
    Float(Option<f64>),
    Int(Option<f64>),
    Round(i32),
}

/// What a template gives.
#[derive(Clone, Debug, PartialEq)]
enum Tv {
    Text(String),
    Json(Value),
    Number(f64),
    /// A path into the JSON that is not there (Jinja's undefined).
    Missing,
}

impl Tv {
    /// As Home Assistant renders it to compare with a payload.
    fn render(&self) -> String {
        match self {
            Tv::Text(s) => s.clone(),
            Tv::Json(v) => render_config(v),
            Tv::Number(v) => {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    format!("{v:.1}")
                } else {
                    v.to_string()
                }
            }
            Tv::Missing => String::new(),
        }
    }
}

/// A value template perch does not evaluate.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[error(
    "the template {0:?} is not one perch evaluates ({{{{ value_json.x | float }}}} and the like)"
)]
pub(crate) struct UnsupportedTemplate(String);

/// Parses a value template of the supported forms; anything else is an
/// error saying why.
pub(crate) fn parse_template(src: &str) -> Result<Template, UnsupportedTemplate> {
    let unsupported = || UnsupportedTemplate(src.to_string());
    let inner = src
        .trim()
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .ok_or_else(unsupported)?;
    let mut p = Parser {
        s: inner.as_bytes(),
        i: 0,
    };
    p.ws();
    let base = p.ident().ok_or_else(unsupported)?;
    let json = match base {
        "value" => false,
        "value_json" => true,
        _ => return Err(unsupported()),
    };
    let mut path = Vec::new();
    loop {
        p.ws();
        match p.peek() {
            Some(b'.') if json => {
                p.i += 1;
                path.push(Key::Name(p.ident().ok_or_else(unsupported)?.to_string()));
            }
            Some(b'[') if json => {
                p.i += 1;
                p.ws();
                let key = match p.peek() {
                    Some(q @ (b'\'' | b'"')) => {
                        p.i += 1;
                        let start = p.i;
                        while p.peek().is_some_and(|c| c != q && c != b'\\') {
                            p.i += 1;
                        }
                        if p.peek() != Some(q) {
                            return Err(unsupported());
                        }
                        let name =
                            std::str::from_utf8(&p.s[start..p.i]).map_err(|_| unsupported())?;
                        p.i += 1;
                        Key::Name(name.to_string())
                    }
                    _ => Key::Index(p.integer().ok_or_else(unsupported)?),
                };
                p.ws();
                if p.peek() != Some(b']') {
                    return Err(unsupported());
                }
                p.i += 1;
                path.push(key);
            }
            _ => break,
        }
    }
    let mut filters = Vec::new();
    loop {
        p.ws();
        if p.peek() != Some(b'|') {
            break;
        }
        p.i += 1;
        p.ws();
        let name = p.ident().ok_or_else(unsupported)?;
        p.ws();
        let arg = if p.peek() == Some(b'(') {
            p.i += 1;
            p.ws();
            let v = if p.peek() == Some(b')') {
                None
            } else {
                Some(p.number().ok_or_else(unsupported)?)
            };
            p.ws();
            if p.peek() != Some(b')') {
                return Err(unsupported());
            }
            p.i += 1;
            v
        } else {
            None
        };
        filters.push(match name {
            "float" => Filter::Float(arg),
            "int" => Filter::Int(arg),
            "round" => {
                let n = arg.unwrap_or(0.0);
                if n.fract() != 0.0 || !(0.0..=15.0).contains(&n) {
                    return Err(unsupported());
                }
                Filter::Round(n as i32)
            }
            _ => return Err(unsupported()),
        });
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(unsupported());
    }
    Ok(Template {
        json,
        path,
        filters,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<&'a str> {
        let start = self.i;
        if !self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            return None;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()
    }

    fn integer(&mut self) -> Option<usize> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.'))
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
}

impl Template {
    /// The template applied to a payload (`json`: the payload parsed, if it
    /// is JSON).
    fn eval(&self, text: &str, json: Option<&Value>) -> Result<Tv, Problem> {
        let mut tv = if self.json {
            let Some(mut v) = json else {
                return Err(Problem::Value(
                    "the payload is not JSON (value_json)".into(),
                ));
            };
            for k in &self.path {
                let next = match (k, v) {
                    (Key::Name(n), Value::Object(m)) => m.get(n),
                    (Key::Index(i), Value::Array(a)) => a.get(*i),
                    _ => None,
                };
                match next {
                    Some(n) => v = n,
                    None => return Ok(Tv::Missing),
                }
            }
            Tv::Json(v.clone())
        } else {
            Tv::Text(text.to_string())
        };
        for f in &self.filters {
            tv = match f {
                Filter::Float(default) | Filter::Int(default) => {
                    let n = match number(&tv) {
                        Ok(Some(v)) if !v.is_nan() => Some(v),
                        _ => *default,
                    };
                    let Some(n) = n else {
                        return Err(Problem::Value(format!(
                            "{:?} is not a number (float/int without a default)",
                            tv.render()
                        )));
                    };
                    match f {
                        // Python's int: rendered without a fraction.
                        Filter::Int(_) if n.abs() < 9e15 => Tv::Json(Value::from(n.trunc() as i64)),
                        Filter::Int(_) => Tv::Number(n.trunc()),
                        _ => Tv::Number(n),
                    }
                }
                Filter::Round(places) => match number(&tv) {
                    Ok(Some(v)) => {
                        let scale = 10f64.powi(*places);
                        Tv::Number((v * scale).round_ties_even() / scale)
                    }
                    // Jinja's round of a string fails; of nothing, nothing.
                    Ok(None) => Tv::Missing,
                    Err(e) => return Err(e),
                },
            };
        }
        Ok(tv)
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
    fn templates_of_the_supported_forms() {
        let v = serde_json::json!({"temperature": 21.46, "a": {"b": "7"}, "l": [1, 2], "x": "n/a"});
        let ev = |t: &str| parse_template(t).unwrap().eval("", Some(&v)).ok();
        assert_eq!(
            ev("{{ value_json.temperature }}"),
            Some(Tv::Json(serde_json::json!(21.46)))
        );
        assert_eq!(
            ev("{{value_json['temperature']}}"),
            Some(Tv::Json(serde_json::json!(21.46)))
        );
        assert_eq!(
            ev("{{ value_json[\"a\"].b | float }}"),
            Some(Tv::Number(7.0))
        );
        assert_eq!(
            ev("{{ value_json.l[1] }}"),
            Some(Tv::Json(serde_json::json!(2)))
        );
        assert_eq!(
            ev("{{ value_json.temperature | round(1) }}"),
            Some(Tv::Number(21.5))
        );
        assert_eq!(
            ev("{{ value_json.temperature | int }}"),
            Some(Tv::Json(serde_json::json!(21)))
        );
        assert_eq!(ev("{{ value_json.x | float(0) }}"), Some(Tv::Number(0.0)));
        assert_eq!(ev("{{ value_json.x | float }}"), None);
        assert_eq!(ev("{{ value_json.nothere }}"), Some(Tv::Missing));
        let t = parse_template("{{ value | float | round(2) }}").unwrap();
        assert_eq!(t.eval(" 2.71828 ", None).ok(), Some(Tv::Number(2.72)));
        // Python's round: half to even.
        let t = parse_template("{{ value | float | round }}").unwrap();
        assert_eq!(t.eval("2.5", None).ok(), Some(Tv::Number(2.0)));
        for bad in [
            "{{ value_json.state | int * 2 }}",
            "{{ value.split(',')[0] }}",
            "{% if value %}1{% endif %}",
            "{{ states('sensor.x') }}",
            "{{ value_json.x | default(0) }}",
            "{{ value_json.x | round(1, 'floor') }}",
            "{{ value_json.x }} °C",
            "{{ value[0] }}",
            "{{ value_json['unterminated }}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_then_its_state_then_removal() {
        let mut i = interp();
        let r = i.read(
            "homeassistant/sensor/node1/t1/config",
            br#"{"name":"Outdoor Temp","stat_t":"~/state","~":"weather/out","unit_of_meas":"\u00b0C","val_tpl":"{{ value_json.t | float }}","dev":{"ids":"abc","mf":"Acme","mdl":"W1","sw":"1.0"}}"#,
            1000,
        );
        assert!(r.series.is_empty());
        assert_eq!(r.units, [("outdoor_temp".to_string(), "°C".to_string())]);
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.devices[0].id, "abc");
        assert_eq!(r.devices[0].manufacturer.as_deref(), Some("Acme"));
        let r = i.read("weather/out/state", br#"{"t": "4.5"}"#, 2000);
        assert_eq!(
            samples(&r),
            [r#"outdoor_temp{device="abc",entity="t1",topic="weather/out/state"} 4.5 @2000"#]
        );
        // A message without the field: nothing, quietly.
        let r = i.read("weather/out/state", br#"{"h": 3}"#, 3000);
        assert!(r.series.is_empty() && r.errors.is_empty());
        let r = i.read("homeassistant/sensor/node1/t1/config", b"", 4000);
        assert_eq!(r.devices.len(), 1);
        assert!(r.devices[0].removed);
        // No longer claimed: read generically.
        let r = i.read("weather/out/state", br#"{"t": 5}"#, 5000);
        assert_eq!(r.family, Family::Generic);
    }

    #[test]
    fn malformed_configs_give_notices() {
        let mut i = interp();
        for (topic, payload, why) in [
            (
                "homeassistant/sensor/x/config",
                &b"{not json"[..],
                "not JSON",
            ),
            ("homeassistant/sensor/x/config", b"[1]", "not a JSON object"),
            (
                "homeassistant/sensor/x/config",
                br#"{"name":"x"}"#,
                "no state topic",
            ),
            (
                "homeassistant/sensor/x/config",
                br#"{"stat_t":5}"#,
                "not a string",
            ),
            (
                "homeassistant/sensor/a/b/c/config",
                b"{}",
                "not a discovery topic",
            ),
            (
                "homeassistant/sensor/rörkrökare/config",
                b"{}",
                "only letters",
            ),
            (
                "homeassistant/device/d/config",
                br#"{"cmps":{}}"#,
                "device (dev)",
            ),
        ] {
            let r = i.read(topic, payload, 0);
            assert_eq!(r.notices.len(), 1, "{topic} {payload:?}");
            assert_eq!(r.notices[0].kind, NoticeKind::Discovery);
            assert!(
                r.notices[0].message.contains(why),
                "{}",
                r.notices[0].message
            );
            assert!(r.series.is_empty());
        }
        let big = format!(r#"{{"name":"{}","stat_t":"a"}}"#, "x".repeat(70_000));
        let r = i.read("homeassistant/sensor/big/config", big.as_bytes(), 0);
        assert!(r.notices[0].message.contains("KiB"));
    }

    #[test]
    fn unsupported_templates_give_a_notice_and_no_sample() {
        let mut i = interp();
        i.read(
            "homeassistant/sensor/x/config",
            br#"{"name":"x","stat_t":"s/x","val_tpl":"{{ value | float * 10 }}"}"#,
            0,
        );
        let r = i.read("s/x", b"2", 0);
        assert!(r.series.is_empty());
        assert_eq!(r.notices.len(), 1);
        assert_eq!(r.notices[0].kind, NoticeKind::Template);
    }

    #[test]
    fn binary_sensor_payloads_and_shared_topics() {
        let mut i = interp();
        i.read(
            "homeassistant/binary_sensor/door/config",
            br#"{"name":"Door","stat_t":"z/d","val_tpl":"{{ value_json.contact }}","pl_on":false,"pl_off":true,"dev":{"name":"d1"}}"#,
            0,
        );
        i.read(
            "homeassistant/sensor/door_batt/config",
            br#"{"name":"Battery","stat_t":"z/d","val_tpl":"{{ value_json.battery }}","unit_of_meas":"%","dev":{"name":"d1"}}"#,
            0,
        );
        let r = i.read("z/d", br#"{"contact":true,"battery":91}"#, 7);
        let mut s = samples(&r);
        s.sort();
        assert_eq!(
            s,
            [
                r#"battery{device="d1",entity="door_batt",topic="z/d"} 91.0 @7"#,
                r#"door{device="d1",entity="door",topic="z/d"} 0.0 @7"#,
            ]
        );
        assert_eq!(r.devices.len(), 1);
        let r = i.read("z/d", br#"{"contact":"maybe"}"#, 7);
        assert!(r.series.is_empty());
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn text_sensors_and_int_payloads() {
        let mut i = interp();
        i.read(
            "homeassistant/sensor/mode/config",
            br#"{"name":"Mode","stat_t":"h/mode"}"#,
            0,
        );
        let r = i.read("h/mode", b"Normal", 0);
        assert!(r.series.is_empty() && r.errors.is_empty());
        i.read(
            "homeassistant/sensor/t/config",
            br#"{"name":"T","stat_t":"h/t","unit_of_meas":"C"}"#,
            0,
        );
        assert_eq!(i.read("h/t", b"warm", 0).errors.len(), 1);
        i.read(
            "homeassistant/binary_sensor/b/config",
            br#"{"name":"B","stat_t":"h/b","val_tpl":"{{ value_json.v | int }}","pl_on":"1","pl_off":"0"}"#,
            0,
        );
        let r = i.read("h/b", br#"{"v":"1"}"#, 0);
        assert_eq!(
            samples(&r),
            [r#"b{device="b",entity="b",topic="h/b"} 1.0 @0"#]
        );
    }

    #[test]
    fn availability_and_commands() {
        let mut i = interp();
        i.read(
            "homeassistant/switch/p/config",
            br#"{"name":"Plug","stat_t":"p/state","cmd_t":"p/set","avty_t":"p/lwt","pl_avail":"up","pl_not_avail":"down"}"#,
            0,
        );
        let r = i.read("p/lwt", b"down", 0);
        assert_eq!(r.devices[0].online, Some(false));
        assert!(r.series.is_empty());
        let r = i.read("p/set", b"ON", 0);
        assert_eq!(r.family, Family::HomeAssistant);
        assert!(r.series.is_empty());
        let r = i.read("p/state", b"ON", 0);
        assert_eq!(
            samples(&r),
            [r#"plug{device="p",entity="p",topic="p/state"} 1.0 @0"#]
        );
        let r = i.read("homeassistant/status", b"online", 0);
        assert_eq!(r.family, Family::HomeAssistant);
        assert!(r.series.is_empty() && r.devices.is_empty());
    }

    #[test]
    fn entities_past_the_limit_are_not_remembered() {
        let settings = Settings {
            max_entities: 1,
            ..Settings::default()
        };
        let mut i = Interpreter::new(Rules::default(), settings);
        i.read(
            "homeassistant/sensor/a/config",
            br#"{"name":"a","stat_t":"t/a"}"#,
            0,
        );
        let r = i.read(
            "homeassistant/sensor/b/config",
            br#"{"name":"b","stat_t":"t/b"}"#,
            0,
        );
        assert_eq!(r.notices[0].kind, NoticeKind::Limit);
        assert_eq!(i.read("t/b", b"1", 0).family, Family::Generic);
        // Updating the remembered one is fine.
        let r = i.read(
            "homeassistant/sensor/a/config",
            br#"{"name":"a","stat_t":"t/a"}"#,
            0,
        );
        assert!(r.notices.is_empty());
    }

    #[test]
    fn native_topics_are_left_to_their_family() {
        let mut i = interp();
        let r = i.read(
            "homeassistant/sensor/0x00158d0001/temperature/config",
            r#"{"unit_of_measurement":"°C","device_class":"temperature","value_template":"{{ value_json.temperature }}","state_topic":"zigbee2mqtt/weather","device":{"identifiers":["zigbee2mqtt_0x00158d0001"],"name":"weather","manufacturer":"Aqara","model":"Temperature and humidity sensor","model_id":"WSDCGQ11LM"}}"#.as_bytes(),
            0,
        );
        assert_eq!(r.devices[0].id, "weather");
        assert_eq!(r.devices[0].family, Some(Family::Zigbee2Mqtt));
        assert_eq!(r.devices[0].model.as_deref(), Some("WSDCGQ11LM"));
        assert_eq!(r.units, [("temperature".to_string(), "°C".to_string())]);
        let r = i.read(
            "homeassistant/sensor/esp1/living_room_temperature/config",
            r#"{"unit_of_meas":"°C","name":"Living Room Temperature","stat_t":"esp1/sensor/living_room_temperature/state","avty_t":"esp1/status","dev":{"ids":"84fce6123456","name":"esp1","sw":"esphome v2024.4.1","mdl":"esp32dev","mf":"espressif"}}"#.as_bytes(),
            0,
        );
        assert_eq!(r.devices[0].id, "esp1");
        assert_eq!(r.devices[0].family, Some(Family::EspHome));
        let r = i.read("esp1/sensor/living_room_temperature/state", b"21.5", 0);
        assert_eq!(r.family, Family::EspHome);
        assert_eq!(
            r.units,
            [("living_room_temperature".to_string(), "°C".to_string())]
        );
        assert_eq!(r.devices[0].model.as_deref(), Some("esp32dev"));
        let r = i.read("esp1/status", b"offline", 0);
        assert_eq!(r.devices[0].online, Some(false));
        assert_eq!(r.devices[0].id, "esp1");
        // Tasmota (`SetOption19`) and scripts that announce Shellys name
        // their own state topics: those stay the family's, under its id.
        for (state_topic, family, id) in [
            (
                "tele/tasmota_A1B2C3/SENSOR",
                Family::Tasmota,
                "tasmota_A1B2C3",
            ),
            (
                "shellyplus1pm-a8032ab12345/status/switch:0",
                Family::Shelly,
                "shellyplus1pm-a8032ab12345",
            ),
            (
                "shellies/shellyht-A1B2C3/sensor/temperature",
                Family::Shelly,
                "shellyht-A1B2C3",
            ),
        ] {
            let config = format!(
                r#"{{"name":"Power","stat_t":"{state_topic}","val_tpl":"{{{{ value_json.apower }}}}","dev":{{"ids":"x{id}","name":"Named"}}}}"#
            );
            let r = i.read("homeassistant/sensor/x/power/config", config.as_bytes(), 0);
            assert_eq!(r.devices[0].family, Some(family), "{state_topic}");
            assert_eq!(r.devices[0].id, id, "{state_topic}");
            assert_ne!(i.read(state_topic, b"{}", 0).family, Family::HomeAssistant);
        }
    }

    /// A config may not make perch remember much more than its bytes: `~`
    /// copied into long topics, many availability topics or components.
    #[test]
    fn configs_that_would_expand_are_refused() {
        let mut i = interp();
        let base = "b".repeat(MAX_TOPIC_BYTES);
        let avty: Vec<String> = (0..=MAX_AVAILABILITY)
            .map(|n| format!(r#"{{"t":"a/{n}"}}"#))
            .collect();
        let cmps: Vec<String> = (0..=MAX_COMPONENTS)
            .map(|n| format!(r#""c{n}":{{"p":"sensor","val_tpl":"{{{{ value_json.a }}}}"}}"#))
            .collect();
        for (topic, config, why) in [
            (
                "homeassistant/sensor/x/config",
                format!(r#"{{"~":"{base}","stat_t":"~/s"}}"#),
                "state_topic is",
            ),
            (
                "homeassistant/sensor/x/config",
                format!(r#"{{"stat_t":"s","avty":[{}]}}"#, avty.join(",")),
                "availability topics",
            ),
            (
                "homeassistant/device/x/config",
                format!(
                    r#"{{"dev":{{"ids":"x"}},"stat_t":"s","cmps":{{{}}}}}"#,
                    cmps.join(",")
                ),
                "components",
            ),
            (
                "homeassistant/device/x/config",
                format!(
                    r#"{{"dev":{{"ids":"x"}},"~":"{base}","stat_t":"~/s","cmps":{{"a":{{"p":"sensor"}},"b":{{"p":"sensor","name":"B"}}}}}}"#
                ),
                "state_topic is",
            ),
        ] {
            let r = i.read(topic, config.as_bytes(), 0);
            assert!(
                r.notices.iter().any(|n| n.message.contains(why)),
                "{why}: {:?}",
                r.notices
            );
            assert_eq!(i.read("s", b"1", 0).family, Family::Generic, "{why}");
        }
    }

    /// A hand-made config on a topic shaped like ESPHome's, with a value
    /// template: Home Assistant's entity, read by its template.
    #[test]
    fn hand_made_esphome_like_topics_are_discoverys() {
        let mut i = interp();
        i.read(
            "homeassistant/sensor/env/temperature/config",
            br#"{"name":"Temperature","stat_t":"home/sensor/env/state","val_tpl":"{{ value_json.temperature }}","unit_of_meas":"\u00b0C","dev":{"ids":"env1"}}"#,
            0,
        );
        let r = i.read("home/sensor/env/state", br#"{"temperature":21.5}"#, 0);
        assert_eq!(r.family, Family::HomeAssistant);
        assert_eq!(
            samples(&r),
            [
                r#"temperature{device="env1",entity="temperature",topic="home/sensor/env/state"} 21.5 @0"#
            ]
        );
    }

    #[test]
    fn device_configs_and_their_components() {
        let mut i = interp();
        let r = i.read(
            "homeassistant/device/dev1/config",
            br#"{"dev":{"ids":"dev1","name":"Dev One"},"o":{"name":"x"},"stat_t":"dev1/state","cmps":{"t":{"p":"sensor","name":"Temperature","val_tpl":"{{ value_json.t }}","unit_of_meas":"C"},"h":{"p":"sensor","name":"Humidity","val_tpl":"{{ value_json.h }}"}}}"#,
            0,
        );
        assert!(r.notices.is_empty(), "{:?}", r.notices);
        let r = i.read("dev1/state", br#"{"t":1,"h":2}"#, 0);
        assert_eq!(r.samples(), 2);
        // Dropping a component: it is no longer read.
        i.read(
            "homeassistant/device/dev1/config",
            br#"{"dev":{"ids":"dev1","name":"Dev One"},"stat_t":"dev1/state","cmps":{"t":{"p":"sensor","name":"Temperature","val_tpl":"{{ value_json.t }}"},"h":{"p":"sensor"}}}"#,
            0,
        );
        assert_eq!(i.read("dev1/state", br#"{"t":1,"h":2}"#, 0).samples(), 1);
        let r = i.read("homeassistant/device/dev1/config", b"", 0);
        assert!(r.devices[0].removed);
        assert_eq!(r.devices[0].id, "dev1");
    }

    #[test]
    fn nothing_panics_on_odd_input() {
        let mut i = interp();
        i.read(
            "homeassistant/sensor/x/config",
            br#"{"name":"x","stat_t":"q","val_tpl":"{{ value_json[0][1].a }}"}"#,
            0,
        );
        for p in [
            &b""[..],
            b"\xff\xfe",
            b"[]",
            b"{}",
            b"null",
            b"nan",
            b"[[1,{\"a\":\"x\"}]]",
            b"1e999",
        ] {
            let _ = i.read("q", p, 0);
        }
        for p in [
            &b"{\"~\":5,\"stat_t\":\"~\"}"[..],
            b"{\"avty\":[1,{\"t\":null}]}",
            b"{\"dev\":[]}",
            b"{\"name\":null,\"stat_t\":\"w\"}",
        ] {
            let _ = i.read("homeassistant/binary_sensor/y/config", p, 0);
        }
    }

    mod never_panics {
        use super::super::super::{Interpreter, Settings};
        use crate::rules::Rules;
        use proptest::prelude::*;

        fn topic() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec![
                    "homeassistant/sensor/",
                    "homeassistant/device/",
                    "homeassistant/light/n/",
                    "zigbee2mqtt/",
                    "zigbee2mqtt/bridge/",
                    "esphome/discover/",
                    "n/sensor/",
                    "n/light/",
                    "n/climate/c/",
                    "s/",
                ]),
                "[a-z_/]{0,12}",
                prop::sample::select(vec![
                    "",
                    "/config",
                    "/state",
                    "/status",
                    "/availability",
                    "/set",
                ]),
            )
                .prop_map(|(a, b, c)| format!("{a}{b}{c}"))
        }

        fn payload() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..40),
                "[{}\\[\\]\":,a-z0-9~ .|_-]{0,60}".prop_map(String::into_bytes),
                Just(br#"{"stat_t":"s/x","val_tpl":"{{ value_json.a[0] | float(1) | round(2) }}","avty":[{"t":"s/a"}],"dev":{"ids":["x"]}}"#.to_vec()),
                Just(br#"{"cmps":{"a":{"p":"sensor","stat_t":"s/y"}},"dev":{"name":"d"}}"#.to_vec()),
                Just(br#"[{"friendly_name":"x","definition":{"exposes":[{"features":[{"property":"p","type":"binary"}]}]}}]"#.to_vec()),
            ]
        }

        proptest! {
            #[test]
            fn on_any_sequence(msgs in prop::collection::vec((topic(), payload()), 1..12)) {
                let mut i = Interpreter::new(Rules::default(), Settings::default());
                for (t, p) in &msgs {
                    let _ = i.read(t, p, 0);
                    let _ = i.learn(t, p, 0);
                }
            }
        }
    }
}
