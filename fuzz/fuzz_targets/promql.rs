//! PromQL as `/api/v1/query`, `query_range`, `format_query` and
//! `parse_query` read it: `query::promql::parse` (the text limits, then
//! promql-parser, then the depth limit), the pretty-printed and plain text
//! of the expression, and a query that parses is evaluated, instant and
//! over an hour, against a small store (`perch_fuzz::store`).
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use query::promql::{Engine, QueryOptions};

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let config = config::QueryConfig {
        // Far below the default: a query that runs on past it is a finding.
        timeout: config::Duration(Duration::from_secs(2)),
        max_samples: 1_000_000,
        ..Default::default()
    };
    Engine::new(perch_fuzz::store().clone(), &config)
});

fuzz_target!(|data: &[u8]| {
    // perch runs promql-parser inside `catch_unwind` (`promql::parse`): a
    // panic there is an error answer, not a crash.
    perch_fuzz::tolerate_caught_panics_in(&["promql-parser", "lrpar", "lrlex", "cfgrammar"]);
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let expr = match query::promql::parse(q) {
        Ok(expr) => expr,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = expr.prettify();
    let _ = expr.to_string();
    let o = QueryOptions::default();
    let now = perch_fuzz::NOW_MS;
    if let Err(e) = ENGINE.instant(q, now, &o) {
        let _ = e.to_string();
    }
    if let Err(e) = ENGINE.range(q, now - 3_600_000, now, 60_000, &o) {
        let _ = e.to_string();
    }
});
