//! OpenTSDB JSON (`POST /api/put`, MQTT payloads): `ingest::opentsdb::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let extra: &[(&str, &str)] = if data.first() == Some(&b' ') {
        &[("topic", "sensors/a")]
    } else {
        &[]
    };
    match ingest::opentsdb::parse(data, extra) {
        Ok(out) => {
            assert!(out.errors.len() <= out.refused);
            for s in &out.series {
                let _ = s.labels.to_string();
            }
            for e in &out.errors {
                let _ = e.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
