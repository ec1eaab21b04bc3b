//! The device conventions (`ingest::conventions::Interpreter`: Tasmota,
//! Shelly, zigbee2mqtt, ESPHome, Home Assistant discovery and templates,
//! OwnTracks, Telegraf, Frigate), which keep state from message to message.
//! Input: zero-separated topic, payload, topic, payload, … (at most 16
//! messages); the first byte's bits say which messages are replayed
//! retained messages (`learn`) rather than live ones.
#![no_main]

use ingest::conventions::{Interpreter, Settings, Zone};
use ingest::Rules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((learn, rest)) = perch_fuzz::selector(data) else {
        return;
    };
    let mut settings = Settings::default();
    settings.time_zones.default = Zone::Utc;
    let mut interp = Interpreter::new(Rules::default(), settings);
    let mut parts = perch_fuzz::zero_split(rest);
    for i in 0..16 {
        let (Some(topic), Some(payload)) = (parts.next(), parts.next()) else {
            break;
        };
        let Ok(topic) = std::str::from_utf8(topic) else {
            continue;
        };
        // The broker front end refuses these names before the collector.
        if topic.is_empty() || topic.contains(['+', '#']) {
            continue;
        }
        let received = perch_fuzz::NOW_MS + i as i64 * 1000;
        let r = if i < 8 && learn & (1 << i) != 0 {
            interp.learn(topic, payload, received)
        } else {
            interp.read(topic, payload, received)
        };
        for s in &r.series {
            let _ = s.labels.to_string();
        }
    }
});
