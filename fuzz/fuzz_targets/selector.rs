//! Series selectors (`match[]` of `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/export`, federation): `base::selector::parse_selector`, and
//! the matchers it makes run against a few label sets.
#![no_main]

use base::labels::Labels;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `parse_selector` runs promql-parser inside `catch_unwind`, as
    // `query::promql::parse` does: a panic there is an invalid selector.
    perch_fuzz::tolerate_caught_panics_in(&["promql-parser", "lrpar", "lrlex", "cfgrammar"]);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sets) = base::selector::parse_selector(s) else {
        return;
    };
    let samples = [
        Labels::from_pairs([("__name__", "temp"), ("site", "s1")]),
        Labels::from_pairs([("__name__", ""), ("a", "ä/b\n")]),
        Labels::from_pairs(Vec::<(String, String)>::new()),
    ];
    for set in &sets {
        for labels in &samples {
            let _ = set.iter().all(|m| m.matches_labels(labels));
        }
    }
});
