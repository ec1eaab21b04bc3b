//! The message history read back in time order, whole: what `perch forward
//! replay` re-publishes to an MQTT target. Only what the index holds can
//! come back: text payloads up to `search.max_payload_bytes`, within the
//! retention (binary and empty payloads are not indexed, nor numbers when
//! `search.index_numeric` is off). Messages of the same millisecond in
//! different segments may come back in another order than they arrived.

use tantivy::schema::{Field, Value};
use tantivy::{DocAddress, TantivyDocument};

use super::schema::Fields;
use super::{SearchError, Shared};

/// Messages are gathered and sorted an hour at a time: memory stays
/// bounded by one hour's messages, not a day's.
const WINDOW_MS: i64 = 3_600_000;

/// A message as the index stored it.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub time_ms: i64,
    pub topic: String,
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
}

/// Text of a stored field, empty when absent.
pub(super) fn stored_text(d: &TantivyDocument, field: Field) -> String {
    d.get_first(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl StoredMessage {
    /// The message a stored document holds.
    pub(super) fn of(f: &Fields, d: &TantivyDocument) -> StoredMessage {
        StoredMessage {
            time_ms: d.get_first(f.time).and_then(|v| v.as_i64()).unwrap_or(0),
            topic: stored_text(d, f.topic_exact),
            payload: stored_text(d, f.body),
            qos: d.get_first(f.qos).and_then(|v| v.as_u64()).unwrap_or(0) as u8,
            retain: d
                .get_first(f.retained)
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
    }
}

/// Calls `visit` with every stored message of `[start, end]`, oldest first,
/// until it returns false; returns how many it was given.
pub(super) fn history(
    shared: &Shared,
    start: i64,
    end: i64,
    visit: &mut dyn FnMut(StoredMessage) -> bool,
) -> Result<u64, SearchError> {
    let periods: Vec<_> = shared
        .periods
        .read()
        .values()
        .filter(|p| p.start_ms() <= end && p.end_ms() >= start)
        .cloned()
        .collect();
    let f = &shared.fields;
    let mut given = 0u64;
    for p in periods {
        let searcher = p.reader.searcher();
        let mut times = Vec::new();
        for seg in searcher.segment_readers() {
            times.push(seg.fast_fields().i64("time")?);
        }
        let mut from = start.max(p.start_ms());
        let last = end.min(p.end_ms());
        while from <= last {
            let to = (from + WINDOW_MS - 1).min(last);
            let mut found: Vec<(i64, u32, u32)> = Vec::new();
            for (ord, seg) in searcher.segment_readers().iter().enumerate() {
                // Segments hold stretches of arrival time: most miss the window.
                if times[ord].max_value() < from || times[ord].min_value() > to {
                    continue;
                }
                for doc in 0..seg.max_doc() {
                    if seg.is_deleted(doc) {
                        continue;
                    }
                    if let Some(t) = times[ord].first(doc) {
                        if (from..=to).contains(&t) {
                            found.push((t, ord as u32, doc));
                        }
                    }
                }
            }
            // Within a segment documents are in arrival order.
            found.sort_unstable();
            for (_, ord, doc) in found {
                let d: TantivyDocument = searcher.doc(DocAddress::new(ord, doc))?;
                let m = StoredMessage::of(f, &d);
                given += 1;
                if !visit(m) {
                    return Ok(given);
                }
            }
            from = to + 1;
        }
    }
    Ok(given)
}
