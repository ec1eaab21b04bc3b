//! InfluxQL (`/query`): `query::influxql::parse::parse`, then every query
//! that parses run against a small store (`perch_fuzz::store`) and its
//! answer serialized, as the HTTP handler does.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use query::influxql::{execute, parse, Epoch};

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse::parse(q) {
        let _ = e.to_string();
        return;
    }
    let config = config::QueryConfig {
        // Far below the default: a query that runs on past it is a finding.
        timeout: config::Duration(Duration::from_secs(2)),
        max_samples: 1_000_000,
        ..Default::default()
    };
    let epoch = Epoch::parse(Some(if q.len() % 2 == 0 { "" } else { "ns" })).expect("an epoch");
    match execute(perch_fuzz::store(), &config, q, epoch) {
        Ok(r) => {
            let _ = serde_json::to_string(&r);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
