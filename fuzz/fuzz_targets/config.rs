//! The configuration file: `config::Config::parse` (TOML, then the shape,
//! with every other section parsed alone when one fails), then the shape
//! checks and the meaning checks the binary runs at start
//! (`ingest::check_config`, `forward::check_config`), and the device
//! settings made from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match config::Config::parse(text, "perch.toml") {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut issues = c.validate().err().unwrap_or_default();
    ingest::check_config(&c, &mut issues);
    forward::check_config(&c, &mut issues);
    if issues.is_empty() {
        let _ = ingest::conventions::Settings::from_config(&c.devices);
        let _ = ingest::Rules::compile(&c.mqtt.rules).expect("checked rules compile");
    }
    let _ = issues.into_result().map_err(|e| e.to_string());
});
