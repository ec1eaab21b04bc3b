//! The search query language (`GET /api/v1/search?q=`, the explorer's
//! search box): tantivy's query grammar with perch's rewriting of `NOT`
//! clauses, built into a query over the message schema
//! (`search::parse_query`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = search::parse_query(q) {
        let _ = e.to_string();
    }
});
