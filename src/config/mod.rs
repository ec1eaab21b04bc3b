//! The one configuration tree of perch: every setting with its default, read
//! from a TOML file, overridden by command-line flags, and validated here and
//! nowhere else. Errors name the file, the key and the reason.

pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use units::{BitRate, ByteSize, DiskBudget, Duration};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {file}: key `{key}`: {reason}")]
    Key {
        file: String,
        key: String,
        reason: String,
    },
    #[error("config file {file}: {reason}")]
    Syntax { file: String, reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where everything perch keeps lives.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub storage: StorageConfig,
    pub query: QueryConfig,
    pub search: SearchConfig,
    pub cameras: Vec<CameraConfig>,
    /// Systems perch forwards samples or messages to (`[[forward]]`).
    pub forward: Vec<ForwardConfig>,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./perch-data"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
            search: SearchConfig::default(),
            cameras: Vec::new(),
            forward: Vec::new(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted (writes, imports); larger gets 413.
    pub max_body_bytes: ByteSize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("valid"),
            max_body_bytes: ByteSize(32 << 20),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// MQTT over TCP (`--mqtt`).
    pub listen: SocketAddr,
    /// MQTT over WebSocket, for browser clients such as MQTT.js; `""` or
    /// absent in `--mqtt-ws off` disables it.
    #[serde(with = "optional_addr")]
    pub ws_listen: Option<SocketAddr>,
    /// MQTT over TLS, used when `tls_cert` and `tls_key` are set.
    pub tls_listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept clients without a user name (with full access).
    pub allow_anonymous: bool,
    pub max_payload_bytes: ByteSize,
    pub max_connections: usize,
    /// Unacknowledged QoS 1/2 messages a client may have in flight; beyond
    /// it perch stops reading from that client until acknowledgements catch up.
    pub max_inflight: usize,
    /// A connection must send CONNECT within this time.
    pub connect_timeout: Duration,
    /// Topics the explorer tracks (least active forgotten first).
    pub max_topics: usize,
    /// Memory for the explorer's recent-message history.
    pub history_bytes: ByteSize,
    /// How topics and payloads become series; first match wins.
    pub rules: Vec<crate::ingest::rules::RuleConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "0.0.0.0:1883".parse().expect("valid"),
            ws_listen: Some("0.0.0.0:8083".parse().expect("valid")),
            tls_listen: "0.0.0.0:8883".parse().expect("valid"),
            tls_cert: None,
            tls_key: None,
            allow_anonymous: false,
            max_payload_bytes: ByteSize(1 << 20),
            max_connections: 1000,
            max_inflight: 100,
            connect_timeout: Duration::from_secs(10),
            max_topics: 10_000,
            history_bytes: ByteSize(16 << 20),
            rules: Vec::new(),
        }
    }
}

/// An address that may be switched off with an empty string.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s == "off" {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid address {s:?}: {e}")))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How long raw samples are kept.
    pub retention: Duration,
    /// Disk budget for the time-series data: a size or a share of the partition.
    pub max_disk_bytes: DiskBudget,
    /// How often the write-ahead log is synced: the most a power cut can lose.
    pub flush_interval: Duration,
    /// How often the head is written out as blocks (and the WAL truncated).
    pub checkpoint_interval: Duration,
    /// Samples held in memory before a checkpoint is forced; at four times
    /// this, writers are told to back off (HTTP 503).
    pub max_head_samples: usize,
    /// Free space kept on the data partition (at most 10% of it): below it
    /// the oldest data is dropped.
    pub min_free_disk_bytes: ByteSize,
    /// Memory sled may use as page cache.
    pub cache_bytes: ByteSize,
    pub rollup_1m_retention: Duration,
    pub rollup_1h_retention: Duration,
    pub max_series: usize,
    pub max_labels: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
    /// When true, a write is acknowledged only after the WAL is synced.
    pub sync_writes: bool,
    /// How often perch stores its own metrics (`perch_*`) as series; 0
    /// turns that off (`/metrics` still answers).
    pub self_metrics_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            retention: Duration::from_secs(30 * 86_400),
            max_disk_bytes: DiskBudget::PercentOfPartition(50.0),
            flush_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(300),
            max_head_samples: 2_000_000,
            min_free_disk_bytes: ByteSize(64 << 20),
            cache_bytes: ByteSize(32 << 20),
            rollup_1m_retention: Duration::from_secs(365 * 86_400),
            rollup_1h_retention: Duration::from_secs(5 * 365 * 86_400),
            max_series: 200_000,
            max_labels: 32,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
            sync_writes: false,
            self_metrics_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is stopped with a `timeout` error (HTTP 503).
    pub timeout: Duration,
    /// Samples a query may hold in memory at once (Prometheus' `query.max-samples`).
    pub max_samples: usize,
    /// Series a single selector may match.
    pub max_series: usize,
    /// Points per series a range query may return (Prometheus: 11 000).
    pub max_points_per_series: usize,
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(60),
            max_samples: 10_000_000,
            max_series: 50_000,
            max_points_per_series: 11_000,
            lookback_delta: Duration::from_secs(300),
        }
    }
}

/// Full-text search over the MQTT message history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    pub enabled: bool,
    /// Text payloads up to this size are indexed; larger ones are counted.
    pub max_payload_bytes: ByteSize,
    /// Index messages whose payload is just a number.
    pub index_numeric: bool,
    /// Memory the index writer may use.
    pub writer_heap: ByteSize,
    /// How often new messages become searchable (and what a crash may lose).
    pub commit_interval: Duration,
    pub retention: Duration,
    pub max_disk_bytes: DiskBudget,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            enabled: true,
            max_payload_bytes: ByteSize(16 << 10),
            index_numeric: true,
            writer_heap: ByteSize(16 << 20),
            commit_interval: Duration::from_secs(2),
            retention: Duration::from_secs(30 * 86_400),
            max_disk_bytes: DiskBudget::PercentOfPartition(10.0),
        }
    }
}

/// One RTSP camera (`[[cameras]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Letters, digits, `-` and `_`; used in URLs and file names.
    pub name: String,
    /// `rtsp://host:port/path`
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Never returned by the API nor logged.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub transport: CameraTransport,
    /// Cron with seconds, e.g. `0 */5 * * * *`; none: no scheduled snapshots.
    #[serde(default)]
    pub snapshot_schedule: Option<String>,
    #[serde(default = "default_snapshot_retention")]
    pub snapshot_retention: Duration,
    #[serde(default = "default_snapshot_bytes")]
    pub snapshot_max_bytes: ByteSize,
    /// JPEG quality, 1–100.
    #[serde(default = "default_snapshot_quality")]
    pub snapshot_quality: u8,
    /// Snapshots wider than this are scaled down; 0 keeps the camera's size.
    #[serde(default)]
    pub snapshot_max_width: u32,
}

/// Names of cameras and forwarding targets: they become file names, sled
/// tree names and URL path segments.
fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{n:?}: use 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

impl CameraConfig {
    /// Checks one camera; returns the offending field and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, r: String| Err((k.to_string(), r));
        check_name(&self.name).map_err(|r| ("name".to_string(), r))?;
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "rtsp" || u.scheme() == "rtsps" => {
                if u.host_str().is_none() {
                    return err("url", "the URL has no host".into());
                }
            }
            Ok(u) => return err("url", format!("scheme {:?} is not rtsp", u.scheme())),
            Err(e) => return err("url", format!("not a URL: {e}")),
        }
        if let Some(s) = &self.snapshot_schedule {
            let parsed = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Required)
                .dom_and_dow(true)
                .build()
                .parse(s);
            if let Err(e) = parsed {
                return err(
                    "snapshot_schedule",
                    format!(
                        "{s:?} is not a cron schedule with seconds such as \"0 */5 * * * *\": {e}"
                    ),
                );
            }
        }
        if !(1..=100).contains(&self.snapshot_quality) {
            return err("snapshot_quality", "must be 1 to 100".into());
        }
        if self.snapshot_max_bytes.0 == 0 {
            return err("snapshot_max_bytes", "must be greater than 0".into());
        }
        Ok(())
    }
}

fn default_snapshot_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_snapshot_bytes() -> ByteSize {
    ByteSize(2 << 30)
}

fn default_snapshot_quality() -> u8 {
    85
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraTransport {
    #[default]
    Tcp,
    Udp,
}

/// What a forwarding target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardKind {
    /// Prometheus remote write 1.0 (protobuf + snappy) of stored samples.
    RemoteWrite,
    /// MQTT messages bridged to an upstream broker.
    Mqtt,
    /// Samples produced to Kafka as records (rskafka: pure Rust).
    Kafka,
}

impl ForwardKind {
    /// Whether the target is fed stored samples (else MQTT messages).
    pub fn takes_samples(self) -> bool {
        matches!(self, ForwardKind::RemoteWrite | ForwardKind::Kafka)
    }
}

/// How a sample is written into a Kafka record's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaFormat {
    /// `{"name":…,"labels":{…},"timestamp":ms,"value":v}`
    #[default]
    Json,
    /// InfluxDB line protocol, nanosecond timestamps.
    InfluxLine,
    /// OpenTSDB's put JSON, millisecond timestamps.
    OpentsdbJson,
}

/// What a full forwarding queue does with more data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Delete the oldest queued data to make room.
    #[default]
    DropOldest,
    /// Keep the queue and drop what arrives.
    RejectNew,
}

/// One forwarding target (`[[forward]]`); see docs/forward.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Letters, digits, `-` and `_`; names the queue, the status and the series.
    pub name: String,
    pub kind: ForwardKind,
    /// remote_write: `http(s)://host/path`; mqtt: `mqtt(s)://host:port`.
    #[serde(default)]
    pub url: String,
    /// remote_write: series selectors; a series matching any is forwarded.
    /// Empty: every series.
    #[serde(default, rename = "match")]
    pub selectors: Vec<String>,
    /// remote_write: file holding a bearer token (re-read on every connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// remote_write: basic auth; mqtt: the upstream user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Never returned by the API nor logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM certificates to trust besides the system's (https, mqtts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// mqtt: topic filters forwarded.
    #[serde(default = "default_forward_topics")]
    pub topics: Vec<String>,
    /// mqtt: prepended to every topic upstream; `{hostname}` is replaced.
    #[serde(default)]
    pub remote_prefix: String,
    /// mqtt: QoS used upstream (0, 1 or 2); 0 gives up the acknowledgement.
    #[serde(default = "default_forward_qos")]
    pub qos: u8,
    /// mqtt: client id upstream; default `perch-<hostname>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// kafka: bootstrap brokers, `host:port`.
    #[serde(default)]
    pub brokers: Vec<String>,
    /// kafka: topic template; `{label}` is a label's value, `{topic.N}` the
    /// N-th level (from 0) of the MQTT topic a sample came from.
    #[serde(default = "default_kafka_topic")]
    pub topic: String,
    /// kafka: the records' value.
    #[serde(default)]
    pub format: KafkaFormat,
    /// kafka: connect with TLS (trusting the system's roots and `ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// kafka: replication factor of topics perch creates.
    #[serde(default = "default_kafka_replication")]
    pub replication_factor: i16,
    /// The durable queue's cap on disk.
    #[serde(default = "default_forward_queue")]
    pub queue_max_bytes: ByteSize,
    #[serde(default)]
    pub overflow: Overflow,
    /// 1 is the highest. While a target of higher priority is catching up
    /// (more queued than one batch) and reachable, lower ones wait: after a
    /// shared uplink comes back, what matters most goes first.
    #[serde(default = "default_forward_priority")]
    pub priority: u8,
    /// Upper bound on the bytes sent per second (after compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<BitRate>,
    /// remote_write: samples per request; mqtt: messages in flight.
    #[serde(default = "default_forward_batch")]
    pub batch_max: usize,
    /// One request (or one batch's acknowledgements) may take this long.
    #[serde(default = "default_forward_timeout")]
    pub timeout: Duration,
    /// Retries wait 0.5 s, doubling up to this, with ±50% jitter.
    #[serde(default = "default_forward_backoff")]
    pub max_backoff: Duration,
}

fn default_forward_topics() -> Vec<String> {
    vec!["#".into()]
}

fn default_forward_qos() -> u8 {
    1
}

fn default_forward_queue() -> ByteSize {
    ByteSize(256 << 20)
}

fn default_kafka_topic() -> String {
    "perch".into()
}

fn default_kafka_replication() -> i16 {
    1
}

fn default_forward_priority() -> u8 {
    1
}

fn default_forward_batch() -> usize {
    5000
}

fn default_forward_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_forward_backoff() -> Duration {
    Duration::from_secs(30)
}

impl ForwardConfig {
    /// Checks one target; returns the offending field and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, r: String| Err((k.to_string(), r));
        check_name(&self.name).map_err(|r| ("name".to_string(), r))?;
        let schemes: &[&str] = match self.kind {
            ForwardKind::Kafka => &[],
            ForwardKind::RemoteWrite => &["http", "https"],
            ForwardKind::Mqtt => &["mqtt", "mqtts", "tcp", "ssl"],
        };
        match url::Url::parse(&self.url) {
            _ if self.kind == ForwardKind::Kafka => {
                if !self.url.is_empty() {
                    return err("url", "kafka targets name their `brokers` instead".into());
                }
            }
            Ok(u) if schemes.contains(&u.scheme()) => {
                if u.host_str().is_none_or(str::is_empty) {
                    return err("url", "the URL has no host".into());
                }
            }
            Ok(u) => {
                return err(
                    "url",
                    format!(
                        "scheme {:?} is not one of {}",
                        u.scheme(),
                        schemes.join(", ")
                    ),
                )
            }
            Err(e) => return err("url", format!("not a URL: {e}")),
        }
        if self.kind.takes_samples() {
            for (i, sel) in self.selectors.iter().enumerate() {
                if let Err(e) = crate::query::selector::parse_selector(sel) {
                    return err(&format!("match[{i}]"), e.to_string());
                }
            }
        }
        match self.kind {
            ForwardKind::RemoteWrite => {}
            ForwardKind::Mqtt => {
                if self.qos > 2 {
                    return err("qos", "must be 0, 1 or 2".into());
                }
                if self.topics.is_empty() {
                    return err(
                        "topics",
                        "name at least one topic filter, e.g. \"#\"".into(),
                    );
                }
                for (i, t) in self.topics.iter().enumerate() {
                    let levels: Vec<&str> = t.split('/').collect();
                    let bad = t.is_empty()
                        || levels.iter().enumerate().any(|(j, l)| {
                            (l.contains('#') && (*l != "#" || j + 1 != levels.len()))
                                || (l.contains('+') && *l != "+")
                        });
                    if bad {
                        return err(
                            &format!("topics[{i}]"),
                            format!("{t:?} is not an MQTT topic filter"),
                        );
                    }
                }
                if self.remote_prefix.contains(['+', '#']) {
                    return err("remote_prefix", "must not contain MQTT wildcards".into());
                }
            }
            ForwardKind::Kafka => {
                if self.brokers.is_empty() {
                    return err("brokers", "name at least one broker, host:port".into());
                }
                for (i, b) in self.brokers.iter().enumerate() {
                    let ok = b.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        return err(&format!("brokers[{i}]"), format!("{b:?} is not host:port"));
                    }
                }
                if let Err(e) = crate::forward::TopicTemplate::parse(&self.topic) {
                    return err("topic", e);
                }
                if self.username.is_some() && !self.tls {
                    return err(
                        "tls",
                        "SASL PLAIN would send the password in clear: set tls = true".into(),
                    );
                }
                if !(1..=32).contains(&self.replication_factor) {
                    return err("replication_factor", "must be between 1 and 32".into());
                }
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return err("password", "set username too".into());
        }
        if self.queue_max_bytes.0 < 64 << 10 {
            return err("queue_max_bytes", "must be at least 64KiB".into());
        }
        if self.batch_max == 0 || self.batch_max > 1_000_000 {
            return err("batch_max", "must be between 1 and 1000000".into());
        }
        if self.kind == ForwardKind::Mqtt && self.batch_max > 65535 {
            return err(
                "batch_max",
                "mqtt targets allow at most 65535 messages in flight".into(),
            );
        }
        if self.timeout.0.is_zero() || self.max_backoff.0 < std::time::Duration::from_millis(500) {
            return err(
                "timeout",
                "timeout must be greater than 0 and max_backoff at least 500ms".into(),
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `perch=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

/// Command-line values that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<SocketAddr>,
    pub mqtt_listen: Option<SocketAddr>,
    /// `Some(None)` switches the WebSocket listener off.
    pub mqtt_ws_listen: Option<Option<SocketAddr>>,
}

impl Config {
    /// Reads the file if given (defaults otherwise), applies the overrides
    /// and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.to_path_buf(),
                    source,
                })?;
                Config::parse(&text, &path.display().to_string())?
            }
            None => Config::default(),
        };
        if let Some(d) = &overrides.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = overrides.http_listen {
            config.http.listen = a;
        }
        if let Some(a) = overrides.mqtt_listen {
            config.mqtt.listen = a;
        }
        if let Some(a) = overrides.mqtt_ws_listen {
            config.mqtt.ws_listen = a;
        }
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Key {
                file: file.map_or("(defaults)".into(), |p| p.display().to_string()),
                key,
                reason,
            })?;
        Ok(config)
    }

    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let reason = inner.message().to_string();
            let location = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            if key == "." || key.is_empty() {
                ConfigError::Syntax {
                    file: file_name.to_string(),
                    reason: format!("{reason}{location}"),
                }
            } else {
                ConfigError::Key {
                    file: file_name.to_string(),
                    key,
                    reason: format!("{reason}{location}"),
                }
            }
        })
    }

    /// Cross-field checks. Returns the offending key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let s = &self.storage;
        let err = |k: &str, r: String| Err((k.to_string(), r));
        if s.flush_interval.0.is_zero() {
            return err("storage.flush_interval", "must be greater than 0".into());
        }
        if s.checkpoint_interval.0 < s.flush_interval.0 {
            return err(
                "storage.checkpoint_interval",
                format!(
                    "must be at least storage.flush_interval ({})",
                    s.flush_interval
                ),
            );
        }
        if s.retention.0 < std::time::Duration::from_secs(3 * 3600) {
            return err(
                "storage.retention",
                "must be at least 3h (raw data is kept in 2 h windows)".into(),
            );
        }
        if s.max_head_samples < 1000 {
            return err("storage.max_head_samples", "must be at least 1000".into());
        }
        if s.max_series == 0 {
            return err("storage.max_series", "must be greater than 0".into());
        }
        if s.max_labels == 0 || s.max_label_name_bytes == 0 || s.max_label_value_bytes == 0 {
            return err(
                "storage.max_labels",
                "label limits must be greater than 0".into(),
            );
        }
        // Records must stay far below the WAL's 64 MiB record limit and the
        // decoders' 1024-label bound.
        if s.max_labels > 256 {
            return err("storage.max_labels", "must be at most 256".into());
        }
        if s.max_label_name_bytes > 1024 || s.max_label_value_bytes > 65536 {
            return err(
                "storage.max_label_value_bytes",
                "label names are limited to 1024 bytes and values to 64KiB".into(),
            );
        }
        let q = &self.query;
        if q.timeout.0.is_zero() || q.lookback_delta.0.is_zero() {
            return err(
                "query.timeout",
                "query.timeout and query.lookback_delta must be greater than 0".into(),
            );
        }
        if q.max_samples == 0 || q.max_series == 0 || q.max_points_per_series == 0 {
            return err(
                "query.max_samples",
                "query limits must be greater than 0".into(),
            );
        }
        for (i, c) in self.cameras.iter().enumerate() {
            if let Err((k, r)) = c.validate() {
                return Err((format!("cameras[{i}].{k}"), r));
            }
            if self.cameras[..i].iter().any(|o| o.name == c.name) {
                return Err((
                    format!("cameras[{i}].name"),
                    format!("{:?} is used twice", c.name),
                ));
            }
        }
        for (i, f) in self.forward.iter().enumerate() {
            if let Err((k, r)) = f.validate() {
                return Err((format!("forward[{i}].{k}"), r));
            }
            if self.forward[..i].iter().any(|o| o.name == f.name) {
                return Err((
                    format!("forward[{i}].name"),
                    format!("{:?} is used twice", f.name),
                ));
            }
        }
        let m = &self.mqtt;
        if m.max_payload_bytes.0 == 0 || m.max_payload_bytes.0 > 256 << 20 {
            return err(
                "mqtt.max_payload_bytes",
                "must be between 1 byte and 256MiB (MQTT's own limit)".into(),
            );
        }
        if m.max_connections == 0 || m.max_inflight == 0 || m.max_inflight > 65535 {
            return err("mqtt.max_inflight", "mqtt.max_connections and mqtt.max_inflight must be at least 1 (inflight at most 65535)".into());
        }
        if m.tls_cert.is_some() != m.tls_key.is_some() {
            return err(
                "mqtt.tls_cert",
                "set both mqtt.tls_cert and mqtt.tls_key, or neither".into(),
            );
        }
        if let Err(e) = crate::ingest::rules::Rules::compile(&m.rules) {
            return Err((format!("mqtt.rules[{}].topic", e.index), e.reason));
        }
        if self.http.max_body_bytes.0 < 1024 {
            return err("http.max_body_bytes", "must be at least 1KiB".into());
        }
        let se = &self.search;
        // tantivy's bounds for one indexing thread's memory.
        if se.writer_heap.0 < 15_000_000 || se.writer_heap.0 > 4 << 30 {
            return err(
                "search.writer_heap",
                "must be between 15MB (tantivy's minimum) and 4GiB".into(),
            );
        }
        if se.commit_interval.0.is_zero() || se.retention.0.is_zero() {
            return err(
                "search.commit_interval",
                "search.commit_interval and search.retention must be greater than 0".into(),
            );
        }
        if se.max_payload_bytes.0 == 0 {
            return err("search.max_payload_bytes", "must be greater than 0".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return err("data_dir", "must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::parse("[storage]\nretention = \"3x\"\n", "perch.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("perch.toml") && msg.contains("storage.retention"),
            "{msg}"
        );
        assert!(msg.contains("unknown unit"), "{msg}");
        let e = Config::parse("[storage]\nretenshun = \"3d\"\n", "perch.toml").unwrap_err();
        assert!(e.to_string().contains("retenshun"), "{e}");
        let e = Config::parse("[http]\nlisten = \"nope\"\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("http.listen"), "{e}");
    }

    #[test]
    fn forward_targets_parse_and_validate() {
        let text = r#"
[[forward]]
name = "central-vm"
kind = "remote_write"
url = "https://vm.example/api/v1/write"
match = ['{__name__=~"env_.*"}']
queue_max_bytes = "1MiB"
overflow = "reject_new"
max_bandwidth = "1Mbit"

[[forward]]
name = "cloud"
kind = "mqtt"
url = "mqtts://emqx.example:8883"
topics = ["sensors/#"]
remote_prefix = "site/{hostname}/"
"#;
        let c = Config::parse(text, "p.toml").unwrap();
        c.validate().unwrap();
        assert_eq!(c.forward[0].overflow, Overflow::RejectNew);
        assert_eq!(c.forward[0].max_bandwidth, Some(BitRate(1_000_000)));
        assert_eq!(c.forward[1].qos, 1);
        assert_eq!(c.forward[1].queue_max_bytes, ByteSize(256 << 20));
        let bad = |t: &str| {
            let c = Config::parse(t, "p.toml").unwrap();
            c.validate().unwrap_err()
        };
        let (k, _) = bad("[[forward]]\nname = \"k\"\nkind = \"kafka\"\n");
        assert_eq!(k, "forward[0].brokers");
        let (k, r) = bad("[[forward]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"kafka-1\"]\n");
        assert_eq!(k, "forward[0].brokers[0]");
        assert!(r.contains("host:port"), "{r}");
        let (k, r) = bad("[[forward]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"k:9092\"]\ntopic = \"{site\"\n");
        assert_eq!(k, "forward[0].topic");
        assert!(r.contains("unclosed"), "{r}");
        let kafka = Config::parse(
            "[[forward]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"kafka-1:9092\"]\ntopic = \"{site}_{index}_{type}\"\nformat = \"influx-line\"\n",
            "p.toml",
        )
        .unwrap();
        kafka.validate().unwrap();
        assert_eq!(kafka.forward[0].format, KafkaFormat::InfluxLine);
        let (k, _) = bad("[[forward]]\nname = \"m\"\nkind = \"remote_write\"\nurl = \"http://h/w\"\nmatch = [\"{a=\"]\n");
        assert_eq!(k, "forward[0].match[0]");
        let (k, _) = bad("[[forward]]\nname = \"m\"\nkind = \"mqtt\"\nurl = \"http://h\"\n");
        assert_eq!(k, "forward[0].url");
        let (k, _) = bad("[[forward]]\nname = \"m\"\nkind = \"mqtt\"\nurl = \"mqtt://h\"\ntopics = [\"a/#/b\"]\n");
        assert_eq!(k, "forward[0].topics[0]");
        let e = Config::parse(
            "[[forward]]\nname = \"m\"\nkind = \"mqtt\"\nmax_bandwidth = \"3furlongs\"\n",
            "p.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("forward[0].max_bandwidth"), "{e}");
    }

    #[test]
    fn defaults_validate_and_parse() {
        let c = Config::parse("[storage]\nmax_disk_bytes = \"2GiB\"\n", "x").unwrap();
        assert_eq!(c.storage.max_disk_bytes, DiskBudget::Bytes(2 << 30));
        assert!(c.validate().is_ok());
        let text = toml::to_string(&Config::default()).unwrap();
        Config::parse(&text, "roundtrip").unwrap();
    }
}
