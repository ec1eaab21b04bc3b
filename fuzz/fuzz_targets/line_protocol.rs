//! InfluxDB line protocol (`POST /write`, `/api/v2/write`, MQTT payloads):
//! `ingest::line_protocol::parse`. First byte: precision (low 3 bits) and
//! whether a `topic` label is added (bit 3); the rest is the body.
#![no_main]

use ingest::line_protocol::{parse, Precision};
use libfuzzer_sys::fuzz_target;

const PRECISIONS: [Precision; 6] = [
    Precision::Nanoseconds,
    Precision::Microseconds,
    Precision::Milliseconds,
    Precision::Seconds,
    Precision::Minutes,
    Precision::Hours,
];

fuzz_target!(|data: &[u8]| {
    let Some((sel, rest)) = perch_fuzz::selector(data) else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let precision = PRECISIONS[(sel & 7) as usize % PRECISIONS.len()];
    let extra: &[(&str, &str)] = if sel & 8 != 0 {
        &[("topic", "sensors/a"), ("host", "")]
    } else {
        &[]
    };
    let out = parse(body, precision, perch_fuzz::NOW_MS, extra);
    let samples: usize = out.series.iter().map(|s| s.samples.len()).sum();
    assert_eq!(samples, out.samples);
    assert!(out.errors.len() <= out.refused);
    assert!(out.refused <= out.lines);
    for s in &out.series {
        assert!(!s.samples.is_empty());
        let _ = s.labels.to_string();
    }
    for e in &out.errors {
        let _ = e.to_string();
    }
});
