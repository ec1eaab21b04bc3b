//! How device firmware families lay out their MQTT topics and payloads, read
//! without any configuration: Tasmota, Shelly (Gen1 and Gen2/Gen3),
//! zigbee2mqtt, ESPHome, Home Assistant MQTT discovery, OwnTracks, Telegraf's
//! JSON output and Frigate. `docs/devices.md` has a table per family: topic
//! layout → metric name, labels, sample time, units, device fields.
//!
//! [`Interpreter::read`] is what the collector runs on every message. In
//! order, first match wins:
//! 1. a `[[mqtt.rules]]` rule whose filter matches the topic: the generic
//!    reading with that rule ([`crate::mqtt_payload`]), so a rule overrides
//!    any convention;
//! 2. Home Assistant discovery configs and the state topics they named;
//! 3. the families recognised by their topic layout (cheap string checks, so
//!    a message of none costs little);
//! 4. Telegraf's JSON, recognised by the payload's shape on any topic;
//! 5. the generic reading.
//!
//! Family modules each export `read(&Message, &mut Ctx) -> Option<Reading>`:
//! `None` means "not mine", and the next one is tried. Some families keep
//! state between messages (what discovery configs said, the bridge's device
//! list); it lives in [`State`], bounded, and is rebuilt at start from the
//! retained messages ([`Interpreter::learn`]).

#[cfg(test)]
pub(crate) mod corpus;
mod esphome;
mod frigate;
mod homeassistant;
mod owntracks;
mod shelly;
mod tasmota;
mod telegraf;
pub mod values;
mod zigbee2mqtt;

use std::fmt;

use base::SeriesSamples;

use crate::mqtt_payload::{parse_message, PayloadFormat};
use crate::rules::Rules;
pub use values::{TimeZones, Zone};

/// The firmware family (or format) a message was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// No convention: numbers, JSON, OpenTSDB or line protocol as such.
    Generic,
    Tasmota,
    Shelly,
    Zigbee2Mqtt,
    EspHome,
    HomeAssistant,
    OwnTracks,
    Telegraf,
    Frigate,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Generic => "generic",
            Family::Tasmota => "tasmota",
            Family::Shelly => "shelly",
            Family::Zigbee2Mqtt => "zigbee2mqtt",
            Family::EspHome => "esphome",
            Family::HomeAssistant => "homeassistant",
            Family::OwnTracks => "owntracks",
            Family::Telegraf => "telegraf",
            Family::Frigate => "frigate",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one message was read: its samples, what it says about devices, and
/// what could not be used.
#[derive(Debug)]
pub struct Reading {
    pub family: Family,
    pub format: PayloadFormat,
    /// In order of first appearance. Series of a device carry the label
    /// `device` with its [`DeviceReport::id`].
    pub series: Vec<SeriesSamples>,
    /// Samples not stored because they were sentinel "sensor error" values.
    pub dropped_sentinels: usize,
    /// Parts of the payload that were refused, and why (as the generic
    /// reading has always listed them).
    pub errors: Vec<String>,
    /// What perch could not make sense of and the user should hear about,
    /// once per topic: a time field that did not parse, a discovery config
    /// that cannot be used, a template perch does not support.
    pub notices: Vec<Notice>,
    /// The devices the message speaks of (one for most, many for a bridge's
    /// device list or a batch).
    pub devices: Vec<DeviceReport>,
    /// Units of metrics, where the message or a discovery config says them:
    /// (metric name, unit as the device writes it, e.g. `°C`, `kWh`).
    pub units: Vec<(String, String)>,
    /// The label whose value is the device a series belongs to: `device`,
    /// Telegraf's `host`; none where the labels are a payload's own tags
    /// (line protocol, OpenTSDB: `disk,device=sda1` is a partition).
    pub device_label: Option<&'static str>,
}

impl Reading {
    pub fn new(family: Family, format: PayloadFormat) -> Reading {
        Reading {
            device_label: match format {
                PayloadFormat::LineProtocol | PayloadFormat::OpenTsdb => None,
                _ => Some("device"),
            },
            family,
            format,
            series: Vec::new(),
            dropped_sentinels: 0,
            errors: Vec::new(),
            notices: Vec::new(),
            devices: Vec::new(),
            units: Vec::new(),
        }
    }

    /// Samples in all series.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// Something the user should be told about a topic, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A time field that did not parse, or a time far from the arrival time:
    /// the arrival time was used.
    Time,
    /// A discovery config (or a bridge's device list) that cannot be used.
    Discovery,
    /// A value template perch does not evaluate.
    Template,
    /// Too many devices or entities: what is past the limit is not tracked.
    Limit,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Time => "time",
            NoticeKind::Discovery => "discovery",
            NoticeKind::Template => "template",
            NoticeKind::Limit => "limit",
        }
    }
}

/// What a message says about one device. Fields a message does not speak of
/// are `None` and leave what the registry knows as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceReport {
    /// Stable across messages, and the value of the `device` label of its
    /// series: the name the firmware publishes under (Tasmota topic, Shelly
    /// id, zigbee2mqtt friendly name, ESPHome node, …).
    pub id: String,
    pub family: Option<Family>,
    /// A human name, where it differs from the id.
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// From a last will, an availability topic or a status topic.
    pub online: Option<bool>,
    /// Percent, 0–100.
    pub battery: Option<f64>,
    pub signal: Option<Signal>,
    /// The message is a notice that the device was removed (an empty
    /// discovery config, a device gone from a bridge's list).
    pub removed: bool,
}

impl DeviceReport {
    pub fn new(id: impl Into<String>, family: Family) -> DeviceReport {
        DeviceReport {
            id: id.into(),
            family: Some(family),
            ..DeviceReport::default()
        }
    }
}

/// Radio signal as the device reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// Wi-Fi or BLE received signal strength, dBm (negative).
    Rssi(f64),
    /// Zigbee link quality, 0–255.
    LinkQuality(f64),
    /// Tasmota's Wi-Fi quality, percent.
    Percent(f64),
}

/// Settings of the conventions, from the `[devices]` configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Read the families at all (else every message is read generically).
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub homeassistant_prefix: String,
    /// zigbee2mqtt's base topic.
    pub zigbee2mqtt_prefix: String,
    /// Frigate's topic prefix, and the id of the Frigate server device.
    pub frigate_prefix: String,
    /// The OwnTracks apps' base topic.
    pub owntracks_prefix: String,
    /// Entities and bridge devices remembered, at most.
    pub max_entities: usize,
    /// Time zone of device clocks that send local time without an offset
    /// (Tasmota), by device id; others use the box's.
    pub time_zones: values::TimeZones,
}

impl Settings {
    /// The settings of `[devices]`; zones that do not parse (refused by
    /// [`crate::check_config`] at start) fall back to the box's.
    pub fn from_config(c: &config::DevicesConfig) -> Settings {
        Settings {
            enabled: c.conventions,
            homeassistant_prefix: c.homeassistant_prefix.clone(),
            zigbee2mqtt_prefix: c.zigbee2mqtt_prefix.clone(),
            frigate_prefix: c.frigate_prefix.clone(),
            owntracks_prefix: c.owntracks_prefix.clone(),
            max_entities: c.max_entities,
            time_zones: TimeZones {
                default: Zone::parse(&c.time_zone).unwrap_or_default(),
                by_device: c
                    .time_zones
                    .iter()
                    .filter_map(|(d, z)| Some((d.clone(), Zone::parse(z)?)))
                    .collect(),
            },
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            enabled: true,
            homeassistant_prefix: "homeassistant".into(),
            zigbee2mqtt_prefix: "zigbee2mqtt".into(),
            frigate_prefix: "frigate".into(),
            owntracks_prefix: "owntracks".into(),
            max_entities: 10_000,
            time_zones: values::TimeZones::default(),
        }
    }
}

/// What families remember between messages.
#[derive(Default)]
pub struct State {
    homeassistant: homeassistant::Discovery,
    zigbee2mqtt: zigbee2mqtt::Bridge,
}

/// One message as the family modules see it.
pub(crate) struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub received_ms: i64,
}

impl<'a> Message<'a> {
    /// The payload as text, if it is UTF-8.
    pub fn text(&self) -> Option<&'a str> {
        std::str::from_utf8(self.payload).ok()
    }
}

/// What a family module may use and change.
pub(crate) struct Ctx<'a> {
    pub settings: &'a Settings,
    pub state: &'a mut State,
}

/// Reads messages by the conventions; owned by the collector thread.
pub struct Interpreter {
    rules: Rules,
    settings: Settings,
    state: State,
}

type FamilyReader = fn(&Message, &mut Ctx) -> Option<Reading>;
/// A family's cheap test of a topic: true for every topic its reader
/// claims, whatever the payload, so that a message of none of them (most
/// of a busy broker's) costs a few comparisons, not every reader's checks.
type TopicTest = fn(&str, &Settings) -> bool;

/// The families recognised by topic layout, tried in this order.
const BY_TOPIC: &[(TopicTest, FamilyReader)] = &[
    (tasmota::may_claim, tasmota::read),
    (shelly::may_claim, shelly::read),
    (zigbee2mqtt::may_claim, zigbee2mqtt::read),
    (esphome::may_claim, esphome::read),
    (owntracks::may_claim, owntracks::read),
    (frigate::may_claim, frigate::read),
];

impl Interpreter {
    pub fn new(rules: Rules, settings: Settings) -> Interpreter {
        Interpreter {
            rules,
            settings,
            state: State::default(),
        }
    }

    /// Reads one message; never fails, never panics.
    pub fn read(&mut self, topic: &str, payload: &[u8], received_ms: i64) -> Reading {
        let msg = Message {
            topic,
            payload,
            received_ms,
        };
        self.dispatch(&msg)
    }

    /// Learns what a retained message replayed at start says (discovery
    /// configs, device lists, availability) without taking its samples:
    /// they were stored when it first arrived.
    pub fn learn(&mut self, topic: &str, payload: &[u8], received_ms: i64) -> Reading {
        let msg = Message {
            topic,
            payload,
            received_ms,
        };
        let mut r = self.dispatch(&msg);
        r.series.clear();
        r
    }

    fn dispatch(&mut self, msg: &Message) -> Reading {
        if !self.settings.enabled || self.rules.find(msg.topic).is_some() {
            return generic(msg, &self.rules);
        }
        let mut ctx = Ctx {
            settings: &self.settings,
            state: &mut self.state,
        };
        if let Some(r) = homeassistant::read(msg, &mut ctx) {
            return r;
        }
        for (may_claim, read) in BY_TOPIC {
            if may_claim(msg.topic, ctx.settings) {
                if let Some(r) = read(msg, &mut ctx) {
                    return r;
                }
            }
        }
        if let Some(r) = telegraf::read(msg, &mut ctx) {
            return r;
        }
        generic(msg, &self.rules)
    }
}

/// Today's reading of a message that no convention claims.
fn generic(msg: &Message, rules: &Rules) -> Reading {
    let p = parse_message(msg.topic, msg.payload, msg.received_ms, rules);
    Reading {
        series: p.series,
        dropped_sentinels: p.dropped_sentinels,
        errors: p.errors,
        ..Reading::new(Family::Generic, p.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod fuzz {
        use std::sync::LazyLock;

        use proptest::prelude::*;

        use super::*;

        /// Every corpus message, as (topic, payload).
        static SEEDS: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(|| {
            corpus::messages()
                .into_iter()
                .map(|m| (m.topic, m.payload.into_bytes()))
                .collect()
        });

        fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, *byte),
                    1 if i < bytes.len() => bytes[i] = *byte,
                    2 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            bytes
        }

        proptest! {
            /// Real messages of every family, their payloads (and now and
            /// then their topics) mutated, through one interpreter that
            /// learns from each: nothing panics, and what is stored is
            /// finite and named.
            #[test]
            fn mutated_device_messages_never_panic(
                messages in prop::collection::vec(
                    (
                        any::<prop::sample::Index>(),
                        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 0..6),
                        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 0..2),
                    ),
                    1..8,
                ),
            ) {
                let mut i = Interpreter::new(Rules::default(), Settings::default());
                for (seed, payload_edits, topic_edits) in messages {
                    let (topic, payload) = &SEEDS[seed.index(SEEDS.len())];
                    let payload = mutate(payload.clone(), &payload_edits);
                    let topic = mutate(topic.clone().into_bytes(), &topic_edits);
                    let topic = String::from_utf8_lossy(&topic);
                    let r = i.read(&topic, &payload, 1_700_000_000_000);
                    for s in &r.series {
                        prop_assert!(s.labels.metric_name().is_some_and(|n| !n.is_empty()));
                        prop_assert!(s.samples.iter().all(|(_, v)| v.is_finite()));
                    }
                    i.learn(&topic, &payload, 1_700_000_000_000);
                }
            }
        }
    }

    /// Frigate and OwnTracks under other prefixes, as configured.
    #[test]
    fn frigate_and_owntracks_prefixes_are_settings() {
        let settings = Settings {
            frigate_prefix: "nvr".into(),
            owntracks_prefix: "phones/ot".into(),
            ..Settings::default()
        };
        let mut i = Interpreter::new(Rules::default(), settings);
        let r = i.read("nvr/front/person", b"2", 0);
        assert_eq!(r.family, Family::Frigate);
        assert_eq!(r.devices[0].id, "nvr");
        assert_eq!(r.series[0].labels.get("device"), Some("nvr"));
        assert_eq!(
            i.read("frigate/front/person", b"2", 0).family,
            Family::Generic
        );
        let r = i.read(
            "phones/ot/jane/phone",
            br#"{"_type":"location","lat":52.5,"lon":13.4,"tst":0}"#,
            0,
        );
        assert_eq!(r.family, Family::OwnTracks);
        assert_eq!(r.devices[0].id, "jane/phone");
        assert_eq!(
            i.read(
                "owntracks/jane/phone",
                br#"{"_type":"location","lat":1}"#,
                0
            )
            .family,
            Family::Generic
        );
    }

    /// Each family's topic test is true for every topic its reader claims:
    /// over every corpus message, and over topics near the families' own
    /// with other payloads, a reader whose test says no claims nothing.
    #[test]
    fn topic_tests_never_refuse_what_a_family_claims() {
        let settings = Settings::default();
        let mut state = State::default();
        let mut topics: Vec<(String, Vec<u8>)> = corpus::messages()
            .into_iter()
            .map(|m| (m.topic, m.payload.into_bytes()))
            .collect();
        let payloads: [&[u8]; 5] = [b"ON", b"21.5", b"{}", b"online", br#"{"src":"x"}"#];
        for topic in [
            "a/b/state",
            "a/b/c/state",
            "a/sensor/t/state",
            "x/status/switch:0",
            "x/status",
            "x/debug",
            "x/events/rpc",
            "home/ShellyPlus1-A/online",
            "shellyplus1-a/rpc",
            "x/tele/SENSOR",
            "tele/x",
            "zigbee2mqtt",
            "owntracks/u",
            "frigatex/stats",
            "",
            "/",
        ] {
            for p in payloads {
                topics.push((topic.to_string(), p.to_vec()));
            }
        }
        for (topic, payload) in &topics {
            let msg = Message {
                topic,
                payload,
                received_ms: 0,
            };
            for (may_claim, read) in BY_TOPIC {
                if may_claim(topic, &settings) {
                    continue;
                }
                let mut ctx = Ctx {
                    settings: &settings,
                    state: &mut state,
                };
                if let Some(r) = read(&msg, &mut ctx) {
                    panic!(
                        "{topic}: claimed as {} by a family whose topic test says no",
                        r.family
                    );
                }
            }
        }
    }

    /// Bytes that are not text, on each family's topics: claimed by the
    /// family, no samples, the reason given, and `Unparsed` (the collector
    /// counts the message as `unparsed`), whatever the topic.
    #[test]
    fn bytes_that_are_not_text_are_unparsed_in_every_family() {
        let mut i = Interpreter::new(Rules::default(), Settings::default());
        let bytes = [0xff, 0xfe, 0x00, 0x81, b'{'];
        for (topic, family) in [
            ("tele/x/SENSOR", Family::Tasmota),
            ("stat/x/STATUS8", Family::Tasmota),
            ("shellies/shelly1pm-x/relay/0/power", Family::Shelly),
            ("shellyplus1pm-x/status/switch:0", Family::Shelly),
            ("zigbee2mqtt/x", Family::Zigbee2Mqtt),
            ("zigbee2mqtt/bridge/devices", Family::Zigbee2Mqtt),
            ("node/sensor/t/state", Family::EspHome),
            ("owntracks/u/d", Family::OwnTracks),
            ("frigate/stats", Family::Frigate),
            ("frigate/cam/person", Family::Frigate),
            ("homeassistant/sensor/x/config", Family::HomeAssistant),
        ] {
            let r = i.read(topic, &bytes, 0);
            assert_eq!(r.family, family, "{topic}");
            assert_eq!(r.format, PayloadFormat::Unparsed, "{topic}");
            assert_eq!(r.samples(), 0, "{topic}");
            assert!(
                r.errors.iter().all(|e| !e.contains("\"\"")),
                "{topic}: a reason that names an empty payload: {:?}",
                r.errors
            );
            assert!(!r.errors.is_empty(), "{topic}: no reason");
        }
    }
}
