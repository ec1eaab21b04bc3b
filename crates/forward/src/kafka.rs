//! Kafka: produces samples as records with rskafka (pure Rust, no
//! librdkafka). One record per sample: the key names the series (so a
//! series stays in one partition, in order), the value is the sample in the
//! target's `format`, the record's timestamp is the sample's. The topic
//! comes from the `topic` template; topics that do not exist are created
//! (one partition, `replication_factor`). A batch is committed once every
//! partition it touched acknowledged its records (acks from all in-sync
//! replicas); a failure halfway resends the batch: at-least-once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rustc_hash::FxHashMap;

use super::{item, Outcome, Target};
use config::KafkaFormat;

/// Uncompressed bytes of records per produce request, at most: brokers
/// refuse batches over `message.max.bytes` (1 MiB by default).
const PRODUCE_BYTES: usize = 768 << 10;

/// A piece of a topic template.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Label(String),
    TopicLevel(usize),
}

/// `topic = "{site}_{index}_{type}"`: text with `{label}` and `{topic.N}`
/// (the N-th level, from 0, of the MQTT topic a sample came from).
#[derive(Clone, Debug)]
pub struct TopicTemplate(Vec<Piece>);

impl TopicTemplate {
    pub fn parse(s: &str) -> Result<TopicTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!(
                    "unmatched '}}' at byte {}",
                    s.len() - rest.len() + open
                ));
            }
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!(
                    "unclosed '{{' at byte {}",
                    s.len() - rest.len() + open
                ));
            };
            let name = &rest[open + 1..open + close];
            let piece = match name.strip_prefix("topic.") {
                Some(n) => Piece::TopicLevel(
                    n.parse()
                        .map_err(|_| format!("{{{name}}}: the level must be a number"))?,
                ),
                None => {
                    let valid = !name.is_empty()
                        && !name.starts_with(|c: char| c.is_ascii_digit())
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(format!("{{{name}}} is not a label name"));
                    }
                    Piece::Label(name.to_string())
                }
            };
            pieces.push(piece);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("the topic is empty".into());
        }
        Ok(TopicTemplate(pieces))
    }

    /// The topic of a series (labels sorted by name). A missing label is
    /// empty; characters Kafka does not allow in topic names become `_`.
    pub fn render(&self, labels: &[(String, String)]) -> String {
        let label = |n: &str| {
            labels
                .iter()
                .find(|(k, _)| k == n)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Label(n) => out.push_str(label(n)),
                Piece::TopicLevel(i) => {
                    out.push_str(label("topic").split('/').nth(*i).unwrap_or(""))
                }
            }
        }
        let mut topic: String = out
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(249)
            .collect();
        if topic.is_empty() || topic == "." || topic == ".." {
            topic = "perch".into();
        }
        topic
    }
}

/// The series' identity, `name{a="1",b="2"}`: the record key.
fn series_key(labels: &[(String, String)]) -> String {
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
pub fn record_value(
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

/// A connection to the cluster and what it learnt about topics.
struct Conn {
    client: Client,
    /// Partitions per topic.
    topics: FxHashMap<String, i32>,
    partitions: FxHashMap<(String, i32), PartitionClient>,
}

async fn connect(t: &Target) -> Result<Conn, String> {
    let c = &t.config;
    let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "perch".into());
    // rskafka retries internally; a deadline hands failures back to the
    // target's own backoff, which the status shows.
    let backoff = rskafka::BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        base: 3.0,
        deadline: Some(c.timeout.0),
    };
    let mut b = ClientBuilder::new(c.brokers.clone())
        .client_id(
            c.client_id
                .clone()
                .unwrap_or_else(|| format!("perch-{hostname}-{}", c.name)),
        )
        .backoff_config(backoff);
    if c.tls {
        b = b.tls_config(super::tls::client_config(c.ca_file.as_deref())?);
    }
    if let Some(u) = &c.username {
        b = b.sasl_config(SaslConfig::Plain(Credentials::new(
            u.clone(),
            c.password.clone().unwrap_or_default(),
        )));
    }
    let client = tokio::time::timeout(c.timeout.0, b.build())
        .await
        .map_err(|_| {
            format!(
                "no answer from {} within {}",
                c.brokers.join(","),
                c.timeout
            )
        })?
        .map_err(|e| format!("cannot connect to {}: {e}", c.brokers.join(",")))?;
    Ok(Conn {
        client,
        topics: FxHashMap::default(),
        partitions: FxHashMap::default(),
    })
}

impl Conn {
    /// Partitions of `topic`, creating it when the cluster has none.
    async fn partitions_of(&mut self, t: &Target, topic: &str) -> Result<i32, KafkaError> {
        if let Some(&n) = self.topics.get(topic) {
            return Ok(n);
        }
        for attempt in 0..2 {
            for tp in self.client.list_topics().await? {
                if !tp.partitions.is_empty() {
                    self.topics.insert(tp.name, tp.partitions.len() as i32);
                }
            }
            if let Some(&n) = self.topics.get(topic) {
                return Ok(n);
            }
            if attempt == 0 {
                let timeout_ms = t.config.timeout.0.as_millis().min(i32::MAX as u128) as i32;
                match self
                    .client
                    .controller_client()?
                    .create_topic(topic, 1, t.config.replication_factor, timeout_ms)
                    .await
                {
                    Ok(()) => tracing::info!(topic, "created the Kafka topic"),
                    Err(KafkaError::ServerError {
                        protocol_error: ProtocolError::TopicAlreadyExists,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Created but not in the metadata yet: one partition, as created.
        self.topics.insert(topic.to_string(), 1);
        Ok(1)
    }

    async fn partition(&mut self, topic: &str, p: i32) -> Result<&PartitionClient, KafkaError> {
        let key = (topic.to_string(), p);
        if !self.partitions.contains_key(&key) {
            let pc = self
                .client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await?;
            self.partitions.insert(key.clone(), pc);
        }
        Ok(&self.partitions[&key])
    }
}

/// Whether the cluster will never take these records (retrying would only
/// hold up the queue behind them). `CorruptMessage` is retriable in Kafka.
fn refused(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::ServerError {
            protocol_error: ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::InvalidTopicException
                | ProtocolError::InvalidTimestamp
                | ProtocolError::PolicyViolation
                | ProtocolError::UnsupportedForMessageFormat,
            ..
        }
    )
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
fn partition_for(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// Produces one batch; the records of each partition in order. A topic or
/// partition the cluster refuses is given up (counted as rejected) without
/// the rest of the batch; any other error fails the whole batch (resent).
async fn produce(
    t: &Target,
    template: &TopicTemplate,
    conn: &mut Conn,
    series: &[item::Samples],
) -> Result<usize, KafkaError> {
    let format = t.config.format;
    let mut groups: BTreeMap<(String, i32), Vec<Record>> = BTreeMap::new();
    let mut refused_topics: Vec<String> = Vec::new();
    let reject = |n: usize| t.counters.rejected.fetch_add(n as u64, Ordering::Relaxed);
    for s in series {
        let topic = template.render(&s.labels);
        if refused_topics.contains(&topic) {
            reject(s.samples.len());
            continue;
        }
        let n = match conn.partitions_of(t, &topic).await {
            Ok(n) => n,
            Err(e) if refused(&e) => {
                reject(s.samples.len());
                give_up(t, &topic, &e);
                refused_topics.push(topic);
                continue;
            }
            Err(e) => return Err(e),
        };
        let key = series_key(&s.labels);
        let p = partition_for(&key, n);
        let records = groups.entry((topic, p)).or_default();
        for &(ts, v) in &s.samples {
            let Some(value) = record_value(format, &s.labels, ts, v) else {
                continue;
            };
            records.push(Record {
                key: Some(key.clone().into_bytes()),
                value: Some(value),
                headers: BTreeMap::new(),
                timestamp: rskafka::chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default(),
            });
        }
    }
    let mut bytes = 0usize;
    for ((topic, p), records) in groups {
        let pc = conn.partition(&topic, p).await?;
        let mut chunk = Vec::new();
        let mut size = 0usize;
        let mut rest = records.into_iter().peekable();
        while let Some(r) = rest.next() {
            size += r.approximate_size();
            chunk.push(r);
            if size >= PRODUCE_BYTES || rest.peek().is_none() {
                let n = chunk.len();
                match pc
                    .produce(std::mem::take(&mut chunk), Compression::Snappy)
                    .await
                {
                    Ok(_) => bytes += size,
                    Err(e) if refused(&e) => {
                        reject(n);
                        give_up(t, &format!("{topic}[{p}]"), &e);
                    }
                    Err(e) => return Err(e),
                }
                size = 0;
            }
        }
    }
    Ok(bytes)
}

fn give_up(t: &Target, what: &str, e: &KafkaError) {
    t.error(format!(
        "the cluster refused the records for {what}; given up: {e}"
    ));
}

pub async fn run(t: Arc<Target>, stop: tokio::sync::watch::Receiver<bool>) {
    let template = match TopicTemplate::parse(&t.config.topic) {
        Ok(tt) => tt,
        Err(e) => {
            t.error(format!("topic: {e}"));
            return;
        }
    };
    tracing::info!(brokers = %t.config.brokers.join(","), topic = %t.config.topic, "forwarding samples");
    let sink = Sink {
        t: t.clone(),
        template,
        conn: None,
    };
    super::send_samples(&t, stop, sink).await
}

struct Sink {
    t: Arc<Target>,
    template: TopicTemplate,
    conn: Option<Conn>,
}

impl super::SamplesSink for Sink {
    async fn send(&mut self, series: &[item::Samples]) -> Outcome {
        let t = &self.t;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => match connect(t).await {
                Ok(c) => self.conn.insert(c),
                Err(e) => return Outcome::Retry(e),
            },
        };
        let deadline = t.config.timeout.0 * 2;
        let outcome = match tokio::time::timeout(deadline, produce(t, &self.template, conn, series))
            .await
        {
            Ok(Ok(bytes)) => return Outcome::Sent { bytes },
            Ok(Err(e)) => Outcome::Retry(e.to_string()),
            Err(_) => Outcome::Retry(format!("no acknowledgement within {}s", deadline.as_secs())),
        };
        // Start over: leaders may have moved, the broker restarted.
        self.conn = None;
        outcome
    }
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
    fn topic_templates() {
        let l = labels(&[
            ("__name__", "env_temp"),
            ("site", "greenhouse 2"),
            ("type", "temperature"),
            ("topic", "sensors/gh2/air"),
        ]);
        let t = TopicTemplate::parse("{site}_{index}_{type}").unwrap();
        assert_eq!(t.render(&l), "greenhouse_2__temperature");
        let t = TopicTemplate::parse("iot.{topic.1}.{__name__}").unwrap();
        assert_eq!(t.render(&l), "iot.gh2.env_temp");
        assert_eq!(
            TopicTemplate::parse("{missing}").unwrap().render(&l),
            "perch"
        );
        for bad in ["", "{", "a}", "{a-b}", "{topic.x}", "{}", "{1a}"] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TopicTemplate::parse("x").unwrap().render(&l).len() == 1);
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
