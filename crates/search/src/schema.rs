//! What one message becomes in the index: the schema every period shares,
//! the tokenizers it names, and turning a payload into searchable words
//! (JSON flattened to `key value` words, keys listed in `field`).

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STORED,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, RemoveLongFilter, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

/// Exact values (whole topic, client id), case kept.
const EXACT: &str = "perch_exact";
/// JSON keys: the whole key, lower-cased so `field:Battery` finds `battery`.
const KEYWORD: &str = "perch_keyword";
/// Longest exact value indexed (longer topics are stored but not indexed
/// exactly; their words still are).
const MAX_EXACT_BYTES: usize = 1024;
/// JSON nesting followed when flattening; deeper values become plain text.
const MAX_JSON_DEPTH: usize = 32;

/// The fields, by role. Field names are what users type in queries.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// ms since the epoch; fast (sorting, ranges, histograms) and stored.
    pub time: Field,
    /// The topic's words (`topic:garage`).
    pub topic: Field,
    /// The whole topic (`topic_exact:home/garage/motion`), stored.
    pub topic_exact: Field,
    /// The payload's words, JSON flattened (`payload:"low battery"`).
    pub payload: Field,
    /// The original payload text as shown in hits; stored only.
    pub body: Field,
    /// JSON keys: leaf names and dotted paths (`field:battery`).
    pub field: Field,
    pub client_id: Field,
    pub qos: Field,
    pub retained: Field,
}

impl Fields {
    pub fn build() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let exact = TextFieldIndexing::default()
            .set_tokenizer(EXACT)
            .set_fieldnorms(false)
            .set_index_option(IndexRecordOption::Basic);
        let time = b.add_i64_field("time", NumericOptions::default().set_fast().set_stored());
        let topic = b.add_text_field("topic", words.clone());
        let topic_exact = b.add_text_field(
            "topic_exact",
            TextOptions::default()
                .set_indexing_options(exact.clone())
                .set_stored(),
        );
        let payload = b.add_text_field("payload", words);
        let body = b.add_text_field("body", STORED);
        let field = b.add_text_field(
            "field",
            TextOptions::default().set_indexing_options(exact.clone().set_tokenizer(KEYWORD)),
        );
        let client_id = b.add_text_field(
            "client_id",
            TextOptions::default()
                .set_indexing_options(exact)
                .set_stored(),
        );
        let qos = b.add_u64_field("qos", NumericOptions::default().set_indexed().set_stored());
        let retained = b.add_bool_field(
            "retained",
            NumericOptions::default().set_indexed().set_stored(),
        );
        (
            b.build(),
            Fields {
                time,
                topic,
                topic_exact,
                payload,
                body,
                field,
                client_id,
                qos,
                retained,
            },
        )
    }
}

/// Tokenizers are not stored in the index: every opened index gets them.
pub fn register_tokenizers(index: &Index) {
    let t = index.tokenizers();
    t.register(
        EXACT,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_EXACT_BYTES))
            .build(),
    );
    t.register(
        KEYWORD,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_EXACT_BYTES))
            .filter(LowerCaser)
            .build(),
    );
}

/// One message to index.
#[derive(Clone, Debug)]
pub struct Message {
    pub time_ms: i64,
    pub topic: String,
    pub payload: bytes::Bytes,
    pub client_id: std::sync::Arc<str>,
    pub qos: u8,
    pub retain: bool,
}

/// Why a message was not indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Binary,
    Numeric,
    Empty,
}

/// The document for `m` whose payload is `text`.
pub fn document(f: &Fields, m: &Message, text: &str) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_i64(f.time, m.time_ms);
    doc.add_text(f.topic, &m.topic);
    doc.add_text(f.topic_exact, &m.topic);
    doc.add_text(f.client_id, &*m.client_id);
    doc.add_u64(f.qos, m.qos as u64);
    doc.add_bool(f.retained, m.retain);
    doc.add_text(f.body, text);
    let trimmed = text.trim_start();
    let json = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str::<serde_json::Value>(text).ok()
    } else {
        None
    };
    match json {
        Some(v) => {
            let mut flat = Flattened::default();
            flat.walk(&v, &mut String::new(), 0);
            doc.add_text(f.payload, &flat.words);
            flat.keys.sort_unstable();
            flat.keys.dedup();
            for k in &flat.keys {
                doc.add_text(f.field, k);
            }
        }
        None => doc.add_text(f.payload, text),
    }
    doc
}

/// The payload as text, or why it is not indexed.
pub fn payload_text(payload: &[u8], index_numeric: bool) -> Result<&str, Skip> {
    let text = std::str::from_utf8(payload).map_err(|_| Skip::Binary)?;
    let t = text.trim();
    if t.is_empty() {
        return Err(Skip::Empty);
    }
    if !index_numeric && t.parse::<f64>().is_ok() {
        return Err(Skip::Numeric);
    }
    Ok(text)
}

/// A JSON value as words: `{"a":{"b":"low battery"},"c":[1,2]}` becomes
/// `a b low battery c 1 2`, with the keys `a`, `b`, `a.b` and `c`.
#[derive(Default)]
struct Flattened {
    words: String,
    keys: Vec<String>,
}

impl Flattened {
    fn push(&mut self, s: &str) {
        if !self.words.is_empty() {
            self.words.push(' ');
        }
        self.words.push_str(s);
    }

    fn walk(&mut self, v: &serde_json::Value, path: &mut String, depth: usize) {
        use serde_json::Value;
        match v {
            Value::Null => self.push("null"),
            Value::Bool(b) => self.push(if *b { "true" } else { "false" }),
            Value::Number(n) => self.push(&n.to_string()),
            Value::String(s) => self.push(s),
            Value::Array(items) => {
                for item in items {
                    if depth < MAX_JSON_DEPTH {
                        self.walk(item, path, depth + 1);
                    }
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    self.push(k);
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    self.keys.push(k.clone());
                    if len > 0 {
                        self.keys.push(path.clone());
                    }
                    if depth < MAX_JSON_DEPTH {
                        self.walk(item, path, depth + 1);
                    }
                    path.truncate(len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flattened_with_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"status":{"battery":"low battery"},"vals":[1,{"x":true}]}"#)
                .unwrap();
        let mut f = Flattened::default();
        f.walk(&v, &mut String::new(), 0);
        assert_eq!(f.words, "status battery low battery vals 1 x true");
        f.keys.sort();
        assert_eq!(
            f.keys,
            ["battery", "status", "status.battery", "vals", "vals.x", "x"]
        );
    }

    #[test]
    fn payload_kinds() {
        assert_eq!(payload_text(b"\xff\x00", true), Err(Skip::Binary));
        assert_eq!(payload_text(b" 21.5 ", false), Err(Skip::Numeric));
        assert_eq!(payload_text(b"21.5", true), Ok("21.5"));
        assert_eq!(payload_text(b"  ", true), Err(Skip::Empty));
        assert_eq!(payload_text(b"door open", false), Ok("door open"));
    }
}
