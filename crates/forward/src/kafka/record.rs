//! A sample as a Kafka record: the key names the series, the value is the
//! sample in the target's `format`, and the partition is the one Kafka's own
//! Java producer would pick for the key.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rskafka::record::Record;

use crate::item;
use config::KafkaFormat;

/// The series' identity, `name{a="1",b="2"}`: the record key.
pub(super) fn series_key(labels: &[(String, String)]) -> String {
    let name = labels
        .iter()
        .find(|(k, _)| k == "__name__")
        .map_or("", |(_, v)| v.as_str());
    let mut out = String::from(name);
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().filter(|(k, _)| k != "__name__") {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}={:?}", v);
    }
    out.push('}');
    out
}

fn json_number(v: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => serde_json::Value::Number(n),
        None if v.is_nan() => "NaN".into(),
        None if v > 0.0 => "+Inf".into(),
        None => "-Inf".into(),
    }
}

fn escape_line(s: &str, specials: &[char], out: &mut String) {
    for c in s.chars() {
        if specials.contains(&c) || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A sample's record value, or None when the format cannot carry it (NaN
/// and infinities in line protocol and OpenTSDB).
fn record_value(
    format: KafkaFormat,
    labels: &[(String, String)],
    t_ms: i64,
    v: f64,
) -> Option<Vec<u8>> {
    let name = labels
        .iter()
        .find(|(k, _)| k == "__name__")
        .map_or("", |(_, v)| v.as_str());
    let tags = || {
        labels
            .iter()
            .filter(|(k, _)| k != "__name__")
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
    };
    match format {
        KafkaFormat::Json => {
            let doc = serde_json::json!({
                "name": name,
                "labels": tags(),
                "timestamp": t_ms,
                "value": json_number(v),
            });
            Some(doc.to_string().into_bytes())
        }
        KafkaFormat::OpentsdbJson => {
            if !v.is_finite() {
                return None;
            }
            let doc = serde_json::json!({
                "metric": name,
                "timestamp": t_ms,
                "value": v,
                "tags": tags(),
            });
            Some(doc.to_string().into_bytes())
        }
        KafkaFormat::InfluxLine => {
            if !v.is_finite() {
                return None;
            }
            let mut line = String::new();
            escape_line(name, &[',', ' '], &mut line);
            for (k, val) in labels
                .iter()
                .filter(|(k, v)| k != "__name__" && !v.is_empty())
            {
                line.push(',');
                escape_line(k, &[',', '=', ' '], &mut line);
                line.push('=');
                escape_line(val, &[',', '=', ' '], &mut line);
            }
            let _ = write!(line, " value={v:?} {}", t_ms.saturating_mul(1_000_000));
            Some(line.into_bytes())
        }
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), so a series lands
/// in the partition Kafka's own producers would pick for its key, on every
/// platform and version.
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            h ^= (*b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's default partitioner for a keyed record.
pub(super) fn partition_for(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// A series' samples as records, leaving out what `format` cannot carry.
pub(super) fn records<'a>(
    format: KafkaFormat,
    key: &'a str,
    s: &'a item::Samples,
) -> impl Iterator<Item = Record> + 'a {
    s.samples.iter().filter_map(move |&(ts, v)| {
        Some(Record {
            key: Some(key.as_bytes().to_vec()),
            value: Some(record_value(format, &s.labels, ts, v)?),
            headers: BTreeMap::new(),
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn record_values() {
        let l = labels(&[("__name__", "cpu"), ("host", "a b"), ("k", "x=y,z")]);
        let json = record_value(KafkaFormat::Json, &l, 1500, 2.5).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "cpu", "labels": {"host": "a b", "k": "x=y,z"}, "timestamp": 1500, "value": 2.5})
        );
        let nan = record_value(KafkaFormat::Json, &l, 1, f64::NAN).unwrap();
        assert!(String::from_utf8(nan).unwrap().contains(r#""value":"NaN""#));
        let line = record_value(KafkaFormat::InfluxLine, &l, 1500, 2.0).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r"cpu,host=a\ b,k=x\=y\,z value=2.0 1500000000"
        );
        assert!(record_value(KafkaFormat::InfluxLine, &l, 1, f64::INFINITY).is_none());
        let tsdb = record_value(KafkaFormat::OpentsdbJson, &l, 1500, 22.5).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&tsdb).unwrap();
        assert_eq!(v["metric"], "cpu");
        assert_eq!(v["tags"]["host"], "a b");
        assert_eq!(v["timestamp"], 1500);
        assert_eq!(series_key(&l), r#"cpu{host="a b",k="x=y,z"}"#);
        assert_eq!(partition_for("a", 1), 0);
        // Kafka's own test vectors for Utils.murmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
