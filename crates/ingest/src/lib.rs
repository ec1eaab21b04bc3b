//! Ingest: turns what devices and clients send (InfluxDB line protocol,
//! OpenTSDB JSON, VictoriaMetrics JSON lines) into series for storage, and
//! writes the VictoriaMetrics format back out for export. It uses the
//! shared model (`base`) and the configuration's rule tables (`config`),
//! and calls nothing: the callers (http, mqtt) hand the series to the store
//! and decide what to do with the errors.
//!
//! Every parser keeps what is valid and reports the rest one error per line or
//! data point, saying what was wrong and where; none panics on any input.

pub mod conventions;
pub mod line_protocol;
pub mod mqtt_payload;
pub mod opentsdb;
pub mod rules;
pub mod vm_import;

pub use base::names::{sanitize_label_name, sanitize_metric_name};
pub use line_protocol::{LineError, ParsedLines, Precision};
pub use mqtt_payload::{parse_message, ParsedMessage, PayloadFormat};
pub use opentsdb::{BodyError, ParsedPoints, PointError};
pub use rules::{FilterError, RuleConfig, RuleError, RuleMatch, Rules};
pub use vm_import::{ImportError, ParsedImport};

/// Checks the `[[mqtt.rules]]` of a configuration (that every topic filter
/// compiles, with its captures) and the device clocks' time zones (a
/// [`config::Check`]).
pub fn check_config(config: &config::Config, issues: &mut config::Issues) {
    for (index, rule) in config.mqtt.rules.iter().enumerate() {
        if let Err(e) = Rules::compile(std::slice::from_ref(rule)) {
            issues.add(format!("mqtt.rules[{index}].topic"), e.reason.to_string());
        }
    }
    const ZONES: &str = "`local`, `UTC` or an offset such as `+01:00` (zone names such as Europe/Berlin are not supported)";
    let devices = &config.devices;
    if conventions::Zone::parse(&devices.time_zone).is_none() {
        issues.add(
            "devices.time_zone",
            format!("{:?} is not a time zone: {ZONES}", devices.time_zone),
        );
    }
    for (device, zone) in &devices.time_zones {
        if conventions::Zone::parse(zone).is_none() {
            issues.add(
                format!("devices.time_zones.{device}"),
                format!("{zone:?} is not a time zone: {ZONES}"),
            );
        }
    }
}

/// How many errors a parse details. Past that it only counts them, so that a
/// body of a million bad lines does not become a million messages.
pub const MAX_ERRORS: usize = 1000;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn time_zones_are_checked() {
        let mut config = config::Config::default();
        config.devices.time_zone = "Europe/Berlin".into();
        config
            .devices
            .time_zones
            .insert("kitchen".into(), "+-1".into());
        config
            .devices
            .time_zones
            .insert("garage".into(), "+02:00".into());
        let mut issues = config::Issues::default();
        check_config(&config, &mut issues);
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["devices.time_zone", "devices.time_zones.kitchen"]);
        assert!(
            issues.0[0].reason.contains("not supported"),
            "{:?}",
            issues.0
        );
    }

    fn all_parsers(bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for p in [Precision::Nanoseconds, Precision::Seconds, Precision::Hours] {
            let parsed = line_protocol::parse(&text, p, i64::MIN, &[("topic", "t")]);
            assert!(parsed.errors.len() <= parsed.lines);
        }
        let _ = opentsdb::parse(bytes, &[("topic", "t")]);
        let _ = vm_import::parse(&text);
    }

    #[test]
    fn errors_past_the_limit_are_only_counted() {
        let lines = "x\n".repeat(MAX_ERRORS + 5);
        let p = line_protocol::parse(&lines, Precision::Nanoseconds, 0, &[]);
        assert_eq!((p.errors.len(), p.refused), (MAX_ERRORS, MAX_ERRORS + 5));
        let p = vm_import::parse(&lines);
        assert_eq!((p.errors.len(), p.refused), (MAX_ERRORS, MAX_ERRORS + 5));
        let points = format!("[{}1]", "1,".repeat(MAX_ERRORS + 4));
        let p = opentsdb::parse(points.as_bytes(), &[]).unwrap();
        assert_eq!((p.errors.len(), p.refused), (MAX_ERRORS, MAX_ERRORS + 5));
    }

    const SEEDS: &[&str] = &[
        "m,t=a\\ b f=1.5,g=2i,h=\"s\\\" x\",b=true 1700000000000000000\n# c\n",
        r#"[{"type": "Metric", "metric": "m.x", "timestamp": 1346846400, "value": "22.5", "tags": {"a": 1, "b": "c"}}]"#,
        r#"{"metric":{"__name__":"x","a":"b"},"values":[1,null,"Inf"],"timestamps":[1,2,3]}"#,
    ];

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            all_parsers(&bytes);
        }

        /// Mutated valid inputs reach deeper into the parsers than noise.
        #[test]
        fn mutated_inputs_never_panic(
            seed in 0..SEEDS.len(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..8),
        ) {
            let mut bytes = SEEDS[seed].as_bytes().to_vec();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    2 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            all_parsers(&bytes);
        }
    }
}
