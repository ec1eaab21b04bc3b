//! Kafka: produces samples as records with rskafka (pure Rust, no
//! librdkafka). One record per sample: the key names the series (so a
//! series stays in one partition, in order), the value is the sample in the
//! target's `format`, the record's timestamp is the sample's. The topic
//! comes from the `topic` template; topics that do not exist are created
//! (one partition, `replication_factor`). A batch is committed once every
//! partition it touched acknowledged its records (acks from all in-sync
//! replicas); a failure halfway resends the batch: at-least-once.

mod record;
mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rustc_hash::FxHashMap;
use thiserror::Error;

use crate::item;
use crate::sender::{send_samples, Outcome, SamplesSink};
use crate::target::Target;
use crate::tls::{self, TlsError};
use record::{partition_for, records, series_key};
pub use template::{TopicTemplate, TopicTemplateError};

/// Uncompressed bytes of records per produce request, at most: brokers
/// refuse batches over `message.max.bytes` (1 MiB by default).
const PRODUCE_BYTES: usize = 768 << 10;

/// A connection to the cluster and what it learnt about topics.
struct Conn {
    client: Client,
    /// Partitions per topic.
    topics: FxHashMap<String, i32>,
    partitions: FxHashMap<(String, i32), PartitionClient>,
}

#[derive(Debug, Error)]
enum ConnectError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("no answer from {brokers} within {timeout}")]
    NoAnswer {
        brokers: String,
        timeout: config::Duration,
    },
    #[error("cannot connect to {brokers}: {source}")]
    Refused { brokers: String, source: KafkaError },
}

impl base::HasKind for ConnectError {
    fn kind(&self) -> base::ErrorKind {
        match self {
            ConnectError::Tls(e) => e.kind(),
            ConnectError::NoAnswer { .. } => base::ErrorKind::DeadlineExceeded,
            ConnectError::Refused { .. } => base::ErrorKind::Unavailable,
        }
    }
}

async fn connect(t: &Target) -> Result<Conn, ConnectError> {
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
        b = b.tls_config(tls::client_config(c.ca_file.as_deref())?);
    }
    if let Some(u) = &c.username {
        b = b.sasl_config(SaslConfig::Plain(Credentials::new(
            u.clone(),
            c.password.clone().unwrap_or_default(),
        )));
    }
    let brokers = || c.brokers.join(",");
    let client = tokio::time::timeout(c.timeout.0, b.build())
        .await
        .map_err(|_| ConnectError::NoAnswer {
            brokers: brokers(),
            timeout: c.timeout,
        })?
        .map_err(|source| ConnectError::Refused {
            brokers: brokers(),
            source,
        })?;
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
        self.learn_topics().await?;
        if let Some(&n) = self.topics.get(topic) {
            return Ok(n);
        }
        self.create_topic(t, topic).await?;
        self.learn_topics().await?;
        if let Some(&n) = self.topics.get(topic) {
            return Ok(n);
        }
        // Created but not in the metadata yet: one partition, as created.
        self.topics.insert(topic.to_string(), 1);
        Ok(1)
    }

    /// The cluster's topics with their partition counts; topics without
    /// partitions (being created or deleted) are left out.
    async fn learn_topics(&mut self) -> Result<(), KafkaError> {
        for tp in self.client.list_topics().await? {
            if !tp.partitions.is_empty() {
                self.topics.insert(tp.name, tp.partitions.len() as i32);
            }
        }
        Ok(())
    }

    /// One partition, `replication_factor` replicas; created meanwhile by
    /// someone else is as good.
    async fn create_topic(&mut self, t: &Target, topic: &str) -> Result<(), KafkaError> {
        let timeout_ms = t.config.timeout.0.as_millis().min(i32::MAX as u128) as i32;
        match self
            .client
            .controller_client()?
            .create_topic(topic, 1, t.config.replication_factor, timeout_ms)
            .await
        {
            Ok(()) => {
                tracing::info!(topic, "created the Kafka topic");
                Ok(())
            }
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
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

/// A batch's records by topic and partition, each partition's in order.
type Groups = BTreeMap<(String, i32), Vec<Record>>;

/// Produces one batch; the records of each partition in order. A topic or
/// partition the cluster refuses is given up (counted as rejected) without
/// the rest of the batch; any other error fails the whole batch (resent).
/// Returns the bytes of records produced.
async fn produce(
    t: &Target,
    template: &TopicTemplate,
    conn: &mut Conn,
    series: &[item::Samples],
) -> Result<usize, KafkaError> {
    let groups = group_records(t, template, conn, series).await?;
    let mut bytes = 0usize;
    for ((topic, p), records) in groups {
        bytes += produce_partition(t, conn, &topic, p, records).await?;
    }
    Ok(bytes)
}

/// Sorts the samples into records by topic and partition, looking up (or
/// creating) each topic; the samples of a topic the cluster refuses are
/// given up.
async fn group_records(
    t: &Target,
    template: &TopicTemplate,
    conn: &mut Conn,
    series: &[item::Samples],
) -> Result<Groups, KafkaError> {
    let mut groups = Groups::new();
    let mut refused_topics: Vec<String> = Vec::new();
    for s in series {
        let topic = template.render(&s.labels);
        if refused_topics.contains(&topic) {
            t.count_rejected(s.samples.len() as u64);
            continue;
        }
        let partitions = match conn.partitions_of(t, &topic).await {
            Ok(n) => n,
            Err(e) if refused(&e) => {
                t.count_rejected(s.samples.len() as u64);
                give_up(t, &topic, &e);
                refused_topics.push(topic);
                continue;
            }
            Err(e) => return Err(e),
        };
        let key = series_key(&s.labels);
        let p = partition_for(&key, partitions);
        groups
            .entry((topic, p))
            .or_default()
            .extend(records(t.config.format, &key, s));
    }
    Ok(groups)
}

/// Produces one partition's records, request by request; a request the
/// cluster refuses is given up. Returns the bytes produced.
async fn produce_partition(
    t: &Target,
    conn: &mut Conn,
    topic: &str,
    p: i32,
    records: Vec<Record>,
) -> Result<usize, KafkaError> {
    let pc = conn.partition(topic, p).await?;
    let mut bytes = 0usize;
    for (request, size) in produce_requests(records) {
        let n = request.len();
        match pc.produce(request, Compression::Snappy).await {
            Ok(_) => bytes += size,
            Err(e) if refused(&e) => {
                t.count_rejected(n as u64);
                give_up(t, &format!("{topic}[{p}]"), &e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(bytes)
}

/// Records cut into produce requests of about `PRODUCE_BYTES`, each with
/// its size.
fn produce_requests(records: Vec<Record>) -> Vec<(Vec<Record>, usize)> {
    let mut out = Vec::new();
    let mut request = Vec::new();
    let mut size = 0usize;
    for r in records {
        size += r.approximate_size();
        request.push(r);
        if size >= PRODUCE_BYTES {
            out.push((std::mem::take(&mut request), size));
            size = 0;
        }
    }
    if !request.is_empty() {
        out.push((request, size));
    }
    out
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
    send_samples(&t, stop, sink).await
}

struct Sink {
    t: Arc<Target>,
    template: TopicTemplate,
    conn: Option<Conn>,
}

impl SamplesSink for Sink {
    async fn send(&mut self, series: &[item::Samples]) -> Outcome {
        let t = &self.t;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => match connect(t).await {
                Ok(c) => self.conn.insert(c),
                Err(e) => return Outcome::Retry(e.to_string()),
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
