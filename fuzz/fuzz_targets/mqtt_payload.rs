//! MQTT payload detection, the generic reading of a message
//! (`ingest::parse_message`: number, boolean, JSON, OpenTSDB, line
//! protocol) under topic rules with captures, a prefix, sentinels and a
//! timestamp field. Input: topic, a zero byte, payload.
#![no_main]

use std::sync::LazyLock;

use ingest::{parse_message, RuleConfig, Rules};
use libfuzzer_sys::fuzz_target;

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    let rule = |topic: &str| RuleConfig {
        topic: topic.into(),
        metric_prefix: String::new(),
        drop_values: Vec::new(),
        timestamp_field: None,
        ignore: false,
    };
    Rules::compile(&[
        RuleConfig {
            metric_prefix: "station_".into(),
            drop_values: vec![-1.0, -999.0],
            timestamp_field: Some("time".into()),
            ..rule("stations/{site}/{device}/#")
        },
        RuleConfig {
            ignore: true,
            ..rule("ignored/#")
        },
        RuleConfig {
            metric_prefix: "9 weird.prefix".into(),
            ..rule("+/{kind}/+")
        },
    ])
    .expect("the rules compile")
});

/// What the broker front end refuses before the collector sees it
/// (`mqtt::acl::invalid_topic_name`): an empty name, wildcards.
fn mqtt_topic_name_refused(topic: &str) -> bool {
    topic.is_empty() || topic.contains(['+', '#'])
}

fuzz_target!(|data: &[u8]| {
    let (topic, payload) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"sensors/a"[..], data),
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    if mqtt_topic_name_refused(topic) {
        return;
    }
    let m = parse_message(topic, payload, perch_fuzz::NOW_MS, &RULES);
    for s in &m.series {
        assert!(s.labels.iter().any(|l| l.name == "topic"));
        let _ = s.labels.to_string();
    }
});
