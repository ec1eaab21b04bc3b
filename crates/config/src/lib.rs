//! The one configuration tree of perch: every setting with its default, read
//! from a TOML file and overridden by command-line flags. This crate checks
//! the shape of the tree (ranges, names, URLs, combinations); what a value
//! means to the crate that uses it — a topic rule, a topic template — that
//! crate checks, through a [`Check`] passed to [`Config::load`]. Every
//! problem of a file is reported at once, each with its key path.
//!
//! Depends on `base` only: the tree is plain data.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use base::units::{self, BitRate, ByteSize, DiskBudget, Duration};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {file}: {reason}")]
    Syntax { file: String, reason: String },
    /// One or more keys hold values perch cannot use.
    #[error("config file {file}: {}", describe(issues))]
    Invalid { file: String, issues: Issues },
}

impl base::HasKind for ConfigError {
    fn kind(&self) -> base::ErrorKind {
        match self {
            ConfigError::Read { .. } => base::ErrorKind::Internal,
            _ => base::ErrorKind::InvalidArgument,
        }
    }
}

/// One problem of a configuration: the key path (`forward[0].url`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every problem found, in the order of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    pub fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Issue {
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// Adds the issues of a part of the tree, their keys put under `prefix`.
    pub fn extend_under(&mut self, prefix: &str, inner: Issues) {
        for i in inner.0 {
            self.add(format!("{prefix}.{}", i.key), i.reason);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Issues> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// `key: reason`, several joined by `; ` (as the API reports them).
impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, i) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{i}")?;
        }
        Ok(())
    }
}

/// For a file: one issue reads ``key `k`: reason``; several as a count and
/// one line each, so that a whole file's problems can be fixed in one go.
fn describe(issues: &Issues) -> String {
    let line = |i: &Issue| format!("key `{}`: {}", i.key, i.reason);
    match issues.0.as_slice() {
        [one] => line(one),
        many => {
            let mut out = format!("{} problems:", many.len());
            for i in many {
                out.push_str("\n  ");
                out.push_str(&line(i));
            }
            out
        }
    }
}

impl std::error::Error for Issues {}

/// A check of the meaning of configuration values, run by [`Config::load`]
/// after the shape checks; given by the crate that owns those values.
pub type Check = fn(&Config, &mut Issues);

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
    /// Devices and the conventions of their firmware (`[devices]`).
    pub devices: DevicesConfig,
    /// Alerting and recording rules (`[alerts]`).
    pub alerts: AlertsConfig,
    /// What perch sizes its caches and buffers for (`[memory]`).
    pub memory: MemoryConfig,
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
            devices: DevicesConfig::default(),
            alerts: AlertsConfig::default(),
            memory: MemoryConfig::default(),
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
    /// A connection waiting for a request (new, or idle between keep-alive
    /// requests) is closed once this passes without a complete request
    /// line and headers.
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this time; a stalled one
    /// gets 408.
    pub body_timeout: Duration,
    /// Connections open at once from one client address; more are refused
    /// with 503.
    pub max_connections_per_client: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("valid"),
            max_body_bytes: ByteSize(32 << 20),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(60),
            max_connections_per_client: 64,
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
    /// A packet whose first bytes have arrived must be complete within
    /// this time.
    pub read_timeout: Duration,
    /// The longest keep-alive a client may ask for (Mosquitto's
    /// `max_keepalive`): an MQTT 5 client asking for more, or for none, is
    /// told this one (Server Keep Alive); a 3.1.1 client asking for more is
    /// refused.
    pub max_keep_alive: Duration,
    /// Connections open at once from one client address (TCP, TLS and
    /// WebSocket together); more are closed at once.
    pub max_connections_per_client: usize,
    /// Topics the explorer tracks (least active forgotten first).
    pub max_topics: usize,
    /// Memory for the explorer's recent-message history.
    pub history_bytes: ByteSize,
    /// How topics and payloads become series; first match wins.
    pub rules: Vec<RuleConfig>,
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
            read_timeout: Duration::from_secs(30),
            max_keep_alive: Duration::from_secs(65535),
            max_connections_per_client: 100,
            max_topics: 10_000,
            history_bytes: ByteSize(16 << 20),
            rules: Vec::new(),
        }
    }
}

/// One `[[mqtt.rules]]` table, as written in the configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// An MQTT topic filter in which a level may also be `{name}`: it matches
    /// like `+` and adds the level as label `name`.
    pub topic: String,
    /// Prepended as is to every (sanitized) metric name: write `station_`,
    /// not `station`, to get a separator.
    #[serde(default)]
    pub metric_prefix: String,
    #[serde(default)]
    pub drop_values: Vec<f64>,
    /// The top-level JSON field that holds the time. Only that field is then a
    /// timestamp: `ts`, `time` and `timestamp` become ordinary fields.
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Keep the message (explorer, search) but store no samples.
    #[serde(default)]
    pub ignore: bool,
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
    /// How far ahead of the clock a sample may be; later ones are refused.
    pub max_future: Duration,
    /// Disk budget for the data directory (time series, search index,
    /// snapshots), never exceeded: a size or a share of the partition.
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
            max_future: Duration::from_secs(2 * 86_400),
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
    /// An export (`/api/v1/export`, `/api/v1/export/csv`) that works —
    /// reads and encodes — longer is cut, and so is one whose client takes
    /// nothing for this long.
    pub export_timeout: Duration,
    /// Samples one export may return.
    pub max_export_samples: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(60),
            max_samples: 10_000_000,
            max_series: 50_000,
            max_points_per_series: 11_000,
            lookback_delta: Duration::from_secs(300),
            export_timeout: Duration::from_secs(60),
            max_export_samples: 50_000_000,
        }
    }
}

/// Alerting and recording rules in Prometheus' rule file format
/// (docs/alerts.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// perch's own rules: a device or camera offline, the disk budget or
    /// the disk nearly full, MQTT ingest stopped (docs/alerts.md).
    pub builtin: bool,
    /// Rule files, or directories whose `*.yml` and `*.yaml` files are
    /// rule files; read at start (a file with a problem stops the start,
    /// with its line).
    pub rule_files: Vec<PathBuf>,
    /// How often a group without its own `interval` is evaluated
    /// (Prometheus' `evaluation_interval`; default 1m).
    pub evaluation_interval: Option<Duration>,
    /// A firing alert is sent again after this long (Alertmanager's
    /// `repeat_interval`; default 4h).
    pub repeat_interval: Option<Duration>,
    /// Where alerts are sent when they fire and resolve
    /// (`[[alerts.notify]]`).
    pub notify: Vec<NotifyConfig>,
    /// Anomaly rules without PromQL (`[[alerts.anomaly]]`).
    pub anomaly: Vec<AnomalyConfig>,
}

/// A statistical anomaly rule: the latest value of `series` further than
/// `deviations` standard deviations from its mean over `window` — the
/// window just past, or with `same_hour_days`, the same window of each of
/// that many previous days.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// A series selector, e.g. `temperature{device="freezer"}`.
    pub series: String,
    /// The alert's name.
    #[serde(default = "default_anomaly_name")]
    pub name: String,
    #[serde(default = "default_anomaly_window")]
    pub window: Duration,
    #[serde(default = "default_anomaly_deviations")]
    pub deviations: f64,
    /// 0: the window just past; N: the same window on each of the N days
    /// before.
    #[serde(default)]
    pub same_hour_days: u32,
    /// How long it must hold before it fires.
    #[serde(default, rename = "for")]
    pub for_: Option<Duration>,
}

fn default_anomaly_name() -> String {
    "Anomaly".into()
}

fn default_anomaly_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_anomaly_deviations() -> f64 {
    3.0
}

/// How a notification target is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// Published on perch's own broker: the event on `topic`, the alert's
    /// state retained on `topic/<fingerprint>`.
    Mqtt,
    /// An HTTP POST to `url`, in Alertmanager's webhook JSON.
    Webhook,
    /// An HTTP POST to an ntfy topic URL (`https://ntfy.sh/mytopic`).
    Ntfy,
    /// An HTTP POST to a Gotify server's `/message`, with `token`.
    Gotify,
    /// An external Alertmanager's v2 API (`url` is its base,
    /// `http://host:9093`): firing alerts are posted again every minute, as
    /// Prometheus does, and the resolution with its end time.
    Alertmanager,
    /// E-mail over SMTP: `url` is `smtp://host:587` (STARTTLS when offered,
    /// required with a password) or `smtps://host:465`.
    Email,
}

/// A notification target.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Letters, digits, `-` and `_`; names the queue and the status.
    pub name: String,
    pub kind: NotifyKind,
    /// webhook, ntfy, gotify: where to POST.
    #[serde(default)]
    pub url: String,
    /// mqtt: the topic of each notification, a template over the alert's
    /// labels.
    #[serde(default = "default_notify_topic")]
    pub topic: String,
    /// gotify: the application token. Never returned by the API nor logged
    /// (never serialized).
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// email: the sender address.
    #[serde(default)]
    pub from: String,
    /// email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// email: the SMTP user name, when the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: the SMTP password. Never returned by the API nor logged
    /// (never serialized).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// PEM certificates to trust besides the system's (email's TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// webhook: the body to POST instead of Alertmanager's webhook JSON, a
    /// template over the alert (`$labels`, `$annotations`, `$status`,
    /// `$value`, `$externalURL`; `toJson` quotes a value for JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// webhook: the `Content-Type` of a templated body (default
    /// application/json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Also say when an alert resolves.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// webhook, ntfy, gotify, email: alerts with the same values of these
    /// labels go out together, one message for the group (Alertmanager's
    /// `group_by`). Empty (the default): each alert is sent on its own, at
    /// once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first message
    /// (Alertmanager's `group_wait`; default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<Duration>,
    /// How long after a group's message a change to it (a new alert, one
    /// resolved, a repetition) is sent (`group_interval`; default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<Duration>,
}

impl NotifyConfig {
    /// Whether this target sends groups of alerts.
    pub fn groups(&self) -> bool {
        !self.group_by.is_empty()
    }

    pub fn group_wait(&self) -> Duration {
        self.group_wait.unwrap_or(Duration::from_secs(30))
    }

    pub fn group_interval(&self) -> Duration {
        self.group_interval.unwrap_or(Duration::from_secs(300))
    }
}

fn default_notify_topic() -> String {
    "perch/alerts/{{ $labels.alertname }}".into()
}

fn default_true() -> bool {
    true
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            builtin: true,
            rule_files: Vec::new(),
            evaluation_interval: None,
            repeat_interval: None,
            notify: Vec::new(),
            anomaly: Vec::new(),
        }
    }
}

impl AlertsConfig {
    pub fn evaluation_interval(&self) -> Duration {
        self.evaluation_interval.unwrap_or(Duration::from_secs(60))
    }

    pub fn repeat_interval(&self) -> Duration {
        self.repeat_interval
            .unwrap_or(Duration::from_secs(4 * 3600))
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
fn check_name(n: &str) -> Result<(), InvalidName<'_>> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(InvalidName(n));
    }
    Ok(())
}

#[derive(Debug, Error)]
#[error("{0:?}: use 1 to 64 letters, digits, '-' or '_'")]
struct InvalidName<'a>(&'a str);

impl CameraConfig {
    /// Checks one camera; the keys of the issues are relative to it.
    pub fn validate(&self) -> Result<(), Issues> {
        let mut issues = Issues::default();
        if let Err(r) = check_name(&self.name) {
            issues.add("name", r.to_string());
        }
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "rtsp" || u.scheme() == "rtsps" => {
                if u.host_str().is_none() {
                    issues.add("url", "the URL has no host");
                }
            }
            Ok(u) => issues.add("url", format!("scheme {:?} is not rtsp", u.scheme())),
            Err(e) => issues.add("url", format!("not a URL: {e}")),
        }
        if let Some(s) = &self.snapshot_schedule {
            let parsed = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Required)
                .dom_and_dow(true)
                .build()
                .parse(s);
            if let Err(e) = parsed {
                issues.add(
                    "snapshot_schedule",
                    format!(
                        "{s:?} is not a cron schedule with seconds such as \"0 */5 * * * *\": {e}"
                    ),
                );
            }
        }
        if !(1..=100).contains(&self.snapshot_quality) {
            issues.add("snapshot_quality", "must be 1 to 100");
        }
        if self.snapshot_max_bytes.0 == 0 {
            issues.add("snapshot_max_bytes", "must be greater than 0");
        }
        issues.into_result()
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
    /// Checks one target's shape; the keys of the issues are relative to it.
    /// What only the forwarding crate understands (topic templates) it
    /// checks itself.
    pub fn validate(&self) -> Result<(), Issues> {
        let mut issues = Issues::default();
        if let Err(r) = check_name(&self.name) {
            issues.add("name", r.to_string());
        }
        let schemes: &[&str] = match self.kind {
            ForwardKind::Kafka => &[],
            ForwardKind::RemoteWrite => &["http", "https"],
            ForwardKind::Mqtt => &["mqtt", "mqtts", "tcp", "ssl"],
        };
        match url::Url::parse(&self.url) {
            _ if self.kind == ForwardKind::Kafka => {
                if !self.url.is_empty() {
                    issues.add("url", "kafka targets name their `brokers` instead");
                }
            }
            Ok(u) if schemes.contains(&u.scheme()) => {
                if u.host_str().is_none_or(str::is_empty) {
                    issues.add("url", "the URL has no host");
                }
            }
            Ok(u) => issues.add(
                "url",
                format!(
                    "scheme {:?} is not one of {}",
                    u.scheme(),
                    schemes.join(", ")
                ),
            ),
            Err(e) => issues.add("url", format!("not a URL: {e}")),
        }
        // Whatever the kind: the forwarder parses them for every target,
        // and one it cannot parse would stop it from starting.
        for (i, sel) in self.selectors.iter().enumerate() {
            if let Err(e) = base::selector::parse_selector(sel) {
                issues.add(format!("match[{i}]"), e.to_string());
            }
        }
        match self.kind {
            ForwardKind::RemoteWrite => {}
            ForwardKind::Mqtt => {
                if self.qos > 2 {
                    issues.add("qos", "must be 0, 1 or 2");
                }
                if self.topics.is_empty() {
                    issues.add("topics", "name at least one topic filter, e.g. \"#\"");
                }
                for (i, t) in self.topics.iter().enumerate() {
                    if !base::topic::is_valid_filter(t) {
                        issues.add(
                            format!("topics[{i}]"),
                            format!("{t:?} is not an MQTT topic filter"),
                        );
                    }
                }
                if self.remote_prefix.contains(['+', '#']) {
                    issues.add("remote_prefix", "must not contain MQTT wildcards");
                }
            }
            ForwardKind::Kafka => {
                if self.brokers.is_empty() {
                    issues.add("brokers", "name at least one broker, host:port");
                }
                for (i, b) in self.brokers.iter().enumerate() {
                    let ok = b.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        issues.add(format!("brokers[{i}]"), format!("{b:?} is not host:port"));
                    }
                }
                if self.username.is_some() && !self.tls {
                    issues.add(
                        "tls",
                        "SASL PLAIN would send the password in clear: set tls = true",
                    );
                }
                if !(1..=32).contains(&self.replication_factor) {
                    issues.add("replication_factor", "must be between 1 and 32");
                }
            }
        }
        if self.password.is_some() && self.username.is_none() {
            issues.add("password", "set username too");
        }
        if self.queue_max_bytes.0 < 64 << 10 {
            issues.add("queue_max_bytes", "must be at least 64KiB");
        }
        if self.batch_max == 0 || self.batch_max > 1_000_000 {
            issues.add("batch_max", "must be between 1 and 1000000");
        } else if self.kind == ForwardKind::Mqtt && self.batch_max > 65535 {
            issues.add(
                "batch_max",
                "mqtt targets allow at most 65535 messages in flight",
            );
        }
        if self.timeout.0.is_zero() || self.max_backoff.0 < std::time::Duration::from_millis(500) {
            issues.add(
                "timeout",
                "timeout must be greater than 0 and max_backoff at least 500ms",
            );
        }
        issues.into_result()
    }
}

/// Devices: how their messages are read without configuration, and how
/// many are tracked (docs/devices.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Read the messages of Tasmota, Shelly, zigbee2mqtt, ESPHome, Home
    /// Assistant discovery, OwnTracks, Telegraf and Frigate by their
    /// conventions; `false` reads every message generically.
    pub conventions: bool,
    /// Devices tracked at most; past it new devices are counted, not
    /// tracked (their samples are stored all the same).
    pub max_devices: usize,
    /// Discovery entities and bridge devices remembered at most.
    pub max_entities: usize,
    /// Home Assistant's discovery prefix.
    pub homeassistant_prefix: String,
    /// zigbee2mqtt's base topic.
    pub zigbee2mqtt_prefix: String,
    /// Frigate's `mqtt.topic_prefix`; also the Frigate server's device id.
    pub frigate_prefix: String,
    /// The OwnTracks apps' base topic (`owntracks`, their default).
    pub owntracks_prefix: String,
    /// The zone of device clocks that send local time without an offset
    /// (Tasmota): `local` (the box's), `UTC`, or an offset like `+01:00`.
    pub time_zone: String,
    /// `time_zone` per device id.
    pub time_zones: BTreeMap<String, String>,
    /// A device that sends regularly is offline after this many of its
    /// usual intervals without a message.
    pub offline_after_intervals: u32,
    /// Units of metrics the devices do not state themselves: metric → unit.
    pub units: BTreeMap<String, String>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            conventions: true,
            max_devices: 2_000,
            max_entities: 10_000,
            homeassistant_prefix: "homeassistant".into(),
            zigbee2mqtt_prefix: "zigbee2mqtt".into(),
            frigate_prefix: "frigate".into(),
            owntracks_prefix: "owntracks".into(),
            time_zone: "local".into(),
            time_zones: BTreeMap::new(),
            offline_after_intervals: 3,
            units: BTreeMap::new(),
        }
    }
}

/// `[memory]`: the RAM perch sizes itself for. The settings that hold
/// memory — sled's cache, the search writer's heap, the explorer's history,
/// the head's and a query's sample limits — default to a profile of that
/// RAM (see [`MemoryProfile`]); a value set in the file wins.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// `"auto"` (the machine's `MemTotal`, or the cgroup's `memory.max`
    /// when that is smaller: a container's limit) or a size such as
    /// `"1GiB"` to size perch as for a smaller board.
    pub ram: RamSize,
}

impl MemoryConfig {
    /// The RAM to size for: the given size, or the machine's when it can
    /// be read.
    pub fn ram_bytes(&self) -> Option<u64> {
        match self.ram {
            RamSize::Auto => base::host::total_ram_bytes(),
            RamSize::Bytes(b) => Some(b),
        }
    }

    /// The profile the memory settings default to.
    pub fn profile(&self) -> Option<MemoryProfile> {
        self.ram_bytes().map(MemoryProfile::for_ram)
    }
}

/// The RAM to size for: the machine's, or a given size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RamSize {
    #[default]
    Auto,
    Bytes(u64),
}

impl<'de> Deserialize<'de> for RamSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RamSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a size such as \"1GiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RamSize, E> {
                if s.trim() == "auto" {
                    return Ok(RamSize::Auto);
                }
                units::parse_bytes(s)
                    .map(RamSize::Bytes)
                    .map_err(|e| E::custom(format!("{e}; or \"auto\"")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RamSize, E> {
                u64::try_from(n)
                    .map(RamSize::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RamSize, E> {
                Ok(RamSize::Bytes(n))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for RamSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RamSize::Auto => s.serialize_str("auto"),
            RamSize::Bytes(b) => s.serialize_str(&units::format_bytes(*b)),
        }
    }
}

/// The memory settings' defaults for a board's RAM. A Raspberry Pi's
/// `MemTotal` is below its nominal size (a 1 GB Pi 3 reports about
/// 920 MiB), hence the thresholds above the nominal sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryProfile {
    /// The profile's name as the log and docs/configuration.md say it.
    pub name: &'static str,
    pub cache_bytes: u64,
    pub writer_heap: u64,
    pub history_bytes: u64,
    pub max_head_samples: usize,
    pub query_max_samples: usize,
}

impl MemoryProfile {
    pub const SMALL: MemoryProfile = MemoryProfile {
        name: "small (up to 1 GB: Pi Zero 2 W, Pi 3)",
        cache_bytes: 8 << 20,
        // tantivy's least for one indexing thread.
        writer_heap: 15_000_000,
        history_bytes: 4 << 20,
        max_head_samples: 500_000,
        query_max_samples: 2_500_000,
    };
    pub const MEDIUM: MemoryProfile = MemoryProfile {
        name: "medium (up to 2 GB)",
        cache_bytes: 16 << 20,
        writer_heap: 16 << 20,
        history_bytes: 8 << 20,
        max_head_samples: 1_000_000,
        query_max_samples: 5_000_000,
    };
    pub const LARGE: MemoryProfile = MemoryProfile {
        name: "large (more than 2 GB)",
        cache_bytes: 32 << 20,
        writer_heap: 16 << 20,
        history_bytes: 16 << 20,
        max_head_samples: 2_000_000,
        query_max_samples: 10_000_000,
    };

    /// The profile for `ram` bytes of RAM.
    pub fn for_ram(ram: u64) -> MemoryProfile {
        const GIB: u64 = 1 << 30;
        if ram <= GIB + GIB / 4 {
            MemoryProfile::SMALL
        } else if ram <= 2 * GIB + GIB / 2 {
            MemoryProfile::MEDIUM
        } else {
            MemoryProfile::LARGE
        }
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
    /// and validates the result: the shape here, the meaning by `checks`.
    pub fn load(
        file: Option<&Path>,
        overrides: &Overrides,
        checks: &[Check],
    ) -> Result<Config, ConfigError> {
        let (mut config, text) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.to_path_buf(),
                    source,
                })?;
                (Config::parse(&text, &path.display().to_string())?, text)
            }
            None => (Config::default(), String::new()),
        };
        if let Some(profile) = config.memory.profile() {
            config.apply_memory_profile(profile, &text);
        }
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
        let mut issues = config.validate().err().unwrap_or_default();
        for check in checks {
            check(&config, &mut issues);
        }
        if !issues.is_empty() {
            return Err(ConfigError::Invalid {
                file: file.map_or("(defaults)".into(), |p| p.display().to_string()),
                issues,
            });
        }
        Ok(config)
    }

    /// Gives the memory settings that `text` (the file) does not set the
    /// values of `profile`.
    pub fn apply_memory_profile(&mut self, profile: MemoryProfile, text: &str) {
        let table = text.parse::<toml::Table>().unwrap_or_default();
        let set = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
        };
        if !set("storage", "cache_bytes") {
            self.storage.cache_bytes = ByteSize(profile.cache_bytes);
        }
        if !set("storage", "max_head_samples") {
            self.storage.max_head_samples = profile.max_head_samples;
        }
        if !set("search", "writer_heap") {
            self.search.writer_heap = ByteSize(profile.writer_heap);
        }
        if !set("mqtt", "history_bytes") {
            self.mqtt.history_bytes = ByteSize(profile.history_bytes);
        }
        if !set("query", "max_samples") {
            self.query.max_samples = profile.query_max_samples;
        }
    }

    /// Parses a file's text. A value of the wrong type stops the parse
    /// there; the other top-level sections are still parsed on their own so
    /// that their problems are reported too.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default()
        };
        let first = match serde_path_to_error::deserialize(toml::Deserializer::new(text)) {
            Ok(config) => return Ok(config),
            Err(e) => e,
        };
        let key = first.path().to_string();
        let inner = first.into_inner();
        let reason = format!("{}{}", inner.message(), line_of(inner.span()));
        if key == "." || key.is_empty() {
            return Err(ConfigError::Syntax {
                file: file_name.to_string(),
                reason,
            });
        }
        let mut issues = Issues::default();
        issues.add(key.clone(), reason);
        // The text is valid TOML (else the error had no key): parse every
        // other section alone.
        let failed_section = key.split(['.', '[']).next().unwrap_or_default().to_string();
        if let Ok(table) = text.parse::<toml::Table>() {
            for (section, value) in table {
                if section == failed_section {
                    continue;
                }
                let mut alone = toml::Table::new();
                alone.insert(section, value);
                if let Err(e) =
                    serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(alone))
                {
                    let key = e.path().to_string();
                    issues.add(key, e.into_inner().to_string());
                }
            }
        }
        Err(ConfigError::Invalid {
            file: file_name.to_string(),
            issues,
        })
    }

    /// The shape checks of the whole tree: every problem found, each with
    /// its key path.
    pub fn validate(&self) -> Result<(), Issues> {
        let mut issues = Issues::default();
        if self.alerts.evaluation_interval().0 < std::time::Duration::from_secs(1) {
            issues.add("alerts.evaluation_interval", "must be at least 1s");
        }
        if self.alerts.repeat_interval().0 < std::time::Duration::from_secs(1) {
            issues.add("alerts.repeat_interval", "must be at least 1s");
        }
        for (i, a) in self.alerts.anomaly.iter().enumerate() {
            let key = format!("alerts.anomaly[{i}]");
            if !(a.deviations > 0.0 && a.deviations.is_finite()) {
                issues.add(format!("{key}.deviations"), "must be a number above 0");
            }
            if a.window.0 < std::time::Duration::from_secs(60) {
                issues.add(format!("{key}.window"), "must be at least 1m");
            }
            if a.same_hour_days > 30 {
                issues.add(format!("{key}.same_hour_days"), "at most 30");
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, n) in self.alerts.notify.iter().enumerate() {
            let key = format!("alerts.notify[{i}]");
            let valid_name = !n.name.is_empty()
                && n.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                issues.add(format!("{key}.name"), "letters, digits, - and _ only");
            } else if !names.insert(n.name.as_str()) {
                issues.add(format!("{key}.name"), format!("{:?} is used twice", n.name));
            }
            let http = !matches!(n.kind, NotifyKind::Mqtt | NotifyKind::Email);
            if http && !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
                issues.add(format!("{key}.url"), "an http:// or https:// URL is needed");
            }
            if n.kind == NotifyKind::Email {
                if !(n.url.starts_with("smtp://") || n.url.starts_with("smtps://")) {
                    issues.add(
                        format!("{key}.url"),
                        "an smtp://host:587 or smtps://host:465 URL is needed",
                    );
                }
                if !n.from.contains('@') {
                    issues.add(format!("{key}.from"), "the sender's address is needed");
                }
                if n.to.is_empty() || n.to.iter().any(|t| !t.contains('@')) {
                    issues.add(
                        format!("{key}.to"),
                        "one or more recipient addresses are needed",
                    );
                }
                if n.password.is_some() != n.username.is_some() {
                    issues.add(
                        format!("{key}.username"),
                        "username and password go together",
                    );
                }
            }
            let grouping = n.groups() || n.group_wait.is_some() || n.group_interval.is_some();
            if grouping && matches!(n.kind, NotifyKind::Mqtt | NotifyKind::Alertmanager) {
                issues.add(
                    format!("{key}.group_by"),
                    "webhook, ntfy, gotify and email targets group alerts; MQTT keeps a \
                     message per alert and Alertmanager groups them itself",
                );
            } else if !n.groups() && grouping {
                issues.add(
                    format!("{key}.group_by"),
                    "group_wait and group_interval need group_by, the labels that make a group",
                );
            }
            if (n.body.is_some() || n.content_type.is_some()) && n.kind != NotifyKind::Webhook {
                issues.add(
                    format!("{key}.body"),
                    "a body template is for webhook targets",
                );
            } else if n.body.is_some() && n.groups() {
                issues.add(
                    format!("{key}.body"),
                    "a body template is one alert's message: it does not go with group_by",
                );
            }
            if n.group_by.iter().any(|l| l.is_empty()) {
                issues.add(format!("{key}.group_by"), "a label name cannot be empty");
            }
            if n.group_interval.is_some_and(|d| d.0.is_zero()) {
                issues.add(format!("{key}.group_interval"), "must be greater than 0");
            }
            if n.kind == NotifyKind::Gotify && n.token.is_none() {
                issues.add(format!("{key}.token"), "gotify needs the application token");
            }
        }
        let s = &self.storage;
        if s.flush_interval.0.is_zero() {
            issues.add("storage.flush_interval", "must be greater than 0");
        }
        if s.checkpoint_interval.0 < s.flush_interval.0 {
            issues.add(
                "storage.checkpoint_interval",
                format!(
                    "must be at least storage.flush_interval ({})",
                    s.flush_interval
                ),
            );
        }
        if s.retention.0 < std::time::Duration::from_secs(3 * 3600) {
            issues.add(
                "storage.retention",
                "must be at least 3h (raw data is kept in 2 h windows)",
            );
        }
        if s.max_head_samples < 1000 {
            issues.add("storage.max_head_samples", "must be at least 1000");
        }
        if s.max_series == 0 {
            issues.add("storage.max_series", "must be greater than 0");
        }
        if s.max_labels == 0 || s.max_label_name_bytes == 0 || s.max_label_value_bytes == 0 {
            issues.add("storage.max_labels", "label limits must be greater than 0");
        }
        // Records must stay far below the WAL's 64 MiB record limit and the
        // decoders' 1024-label bound.
        if s.max_labels > 256 {
            issues.add("storage.max_labels", "must be at most 256");
        }
        if s.max_label_name_bytes > 1024 || s.max_label_value_bytes > 65536 {
            issues.add(
                "storage.max_label_value_bytes",
                "label names are limited to 1024 bytes and values to 64KiB",
            );
        }
        let q = &self.query;
        if q.timeout.0.is_zero() || q.lookback_delta.0.is_zero() {
            issues.add(
                "query.timeout",
                "query.timeout and query.lookback_delta must be greater than 0",
            );
        }
        if q.max_samples == 0 || q.max_series == 0 || q.max_points_per_series == 0 {
            issues.add("query.max_samples", "query limits must be greater than 0");
        }
        if q.export_timeout.0.is_zero() || q.max_export_samples == 0 {
            issues.add(
                "query.export_timeout",
                "query.export_timeout and query.max_export_samples must be greater than 0",
            );
        }
        for (i, c) in self.cameras.iter().enumerate() {
            if let Err(e) = c.validate() {
                issues.extend_under(&format!("cameras[{i}]"), e);
            }
            if self.cameras[..i].iter().any(|o| o.name == c.name) {
                issues.add(
                    format!("cameras[{i}].name"),
                    format!("{:?} is used twice", c.name),
                );
            }
        }
        for (i, f) in self.forward.iter().enumerate() {
            if let Err(e) = f.validate() {
                issues.extend_under(&format!("forward[{i}]"), e);
            }
            if self.forward[..i].iter().any(|o| o.name == f.name) {
                issues.add(
                    format!("forward[{i}].name"),
                    format!("{:?} is used twice", f.name),
                );
            }
        }
        let m = &self.mqtt;
        if m.max_payload_bytes.0 == 0 || m.max_payload_bytes.0 > 256 << 20 {
            issues.add(
                "mqtt.max_payload_bytes",
                "must be between 1 byte and 256MiB (MQTT's own limit)",
            );
        }
        if m.max_connections == 0 || m.max_inflight == 0 || m.max_inflight > 65535 {
            issues.add("mqtt.max_inflight", "mqtt.max_connections and mqtt.max_inflight must be at least 1 (inflight at most 65535)");
        }
        if m.tls_cert.is_some() != m.tls_key.is_some() {
            issues.add(
                "mqtt.tls_cert",
                "set both mqtt.tls_cert and mqtt.tls_key, or neither",
            );
        }
        if self.http.max_body_bytes.0 < 1024 {
            issues.add("http.max_body_bytes", "must be at least 1KiB");
        }
        for (key, d) in [
            ("http.header_timeout", self.http.header_timeout),
            ("http.body_timeout", self.http.body_timeout),
            ("mqtt.connect_timeout", m.connect_timeout),
            ("mqtt.read_timeout", m.read_timeout),
            ("mqtt.max_keep_alive", m.max_keep_alive),
        ] {
            if d.0.is_zero() {
                issues.add(key, "must be greater than 0");
            }
        }
        if m.max_keep_alive.0 > std::time::Duration::from_secs(65535) {
            issues.add(
                "mqtt.max_keep_alive",
                "at most 65535s, the largest keep-alive MQTT can carry",
            );
        }
        for (key, n) in [
            (
                "http.max_connections_per_client",
                self.http.max_connections_per_client,
            ),
            (
                "mqtt.max_connections_per_client",
                m.max_connections_per_client,
            ),
        ] {
            if n == 0 {
                issues.add(key, "must be at least 1");
            }
        }
        let se = &self.search;
        // tantivy's bounds for one indexing thread's memory.
        if se.writer_heap.0 < 15_000_000 || se.writer_heap.0 > 4 << 30 {
            issues.add(
                "search.writer_heap",
                "must be between 15MB (tantivy's minimum) and 4GiB",
            );
        }
        if se.commit_interval.0.is_zero() || se.retention.0.is_zero() {
            issues.add(
                "search.commit_interval",
                "search.commit_interval and search.retention must be greater than 0",
            );
        }
        if se.max_payload_bytes.0 == 0 {
            issues.add("search.max_payload_bytes", "must be greater than 0");
        }
        let d = &self.devices;
        if d.max_devices == 0 || d.max_devices > 1_000_000 {
            issues.add("devices.max_devices", "must be between 1 and 1000000");
        }
        if d.max_entities == 0 || d.max_entities > 1_000_000 {
            issues.add("devices.max_entities", "must be between 1 and 1000000");
        }
        for (key, prefix) in [
            ("devices.homeassistant_prefix", &d.homeassistant_prefix),
            ("devices.zigbee2mqtt_prefix", &d.zigbee2mqtt_prefix),
            ("devices.frigate_prefix", &d.frigate_prefix),
            ("devices.owntracks_prefix", &d.owntracks_prefix),
        ] {
            if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.ends_with('/') {
                issues.add(
                    key,
                    "must be a topic prefix without wildcards or a trailing '/'",
                );
            }
        }
        if d.offline_after_intervals < 2 {
            issues.add("devices.offline_after_intervals", "must be at least 2");
        }
        if self.data_dir.as_os_str().is_empty() {
            issues.add("data_dir", "must not be empty");
        }
        issues.into_result()
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
    fn grouping_is_for_targets_that_send_groups() {
        let problems = |kind: &str, extra: &str| {
            let text = format!(
                "[[alerts.notify]]\nname = \"t\"\nkind = \"{kind}\"\nurl = \"http://h/\"\n{extra}"
            );
            let c = Config::parse(&text, "p").unwrap();
            let keys: Vec<String> = c
                .validate()
                .err()
                .map(|i| i.0.into_iter().map(|i| i.key).collect())
                .unwrap_or_default();
            (c, keys)
        };
        let (c, keys) = problems("webhook", "group_by = [\"alertname\"]\n");
        assert!(keys.is_empty(), "{keys:?}");
        assert!(c.alerts.notify[0].groups());
        assert_eq!(c.alerts.notify[0].group_wait(), Duration::from_secs(30));
        let (_, keys) = problems("mqtt", "group_by = [\"alertname\"]\n");
        assert_eq!(keys, ["alerts.notify[0].group_by"]);
        let (_, keys) = problems("ntfy", "group_wait = \"1m\"\n");
        assert_eq!(keys, ["alerts.notify[0].group_by"]);
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
            let first = c.validate().unwrap_err().0.remove(0);
            (first.key, first.reason)
        };
        let (k, _) = bad("[[forward]]\nname = \"k\"\nkind = \"kafka\"\n");
        assert_eq!(k, "forward[0].brokers");
        let (k, r) = bad("[[forward]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"kafka-1\"]\n");
        assert_eq!(k, "forward[0].brokers[0]");
        assert!(r.contains("host:port"), "{r}");
        let kafka = Config::parse(
            "[[forward]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"kafka-1:9092\"]\ntopic = \"{site}_{index}_{type}\"\nformat = \"influx-line\"\n",
            "p.toml",
        )
        .unwrap();
        kafka.validate().unwrap();
        assert_eq!(kafka.forward[0].format, KafkaFormat::InfluxLine);
        let (k, _) = bad("[[forward]]\nname = \"m\"\nkind = \"remote_write\"\nurl = \"http://h/w\"\nmatch = [\"{a=\"]\n");
        assert_eq!(k, "forward[0].match[0]");
        let (k, _) = bad(
            "[[forward]]\nname = \"m\"\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nmatch = [\"{\"]\n",
        );
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

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("perch.toml");
        // Values of the right type but out of range, in three sections.
        std::fs::write(
            &file,
            "[storage]\nretention = \"1h\"\nmax_series = 0\n\n[http]\nmax_body_bytes = \"10B\"\n\n[[cameras]]\nname = \"a b\"\nurl = \"http://cam\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&file), &Overrides::default(), &[]).unwrap_err();
        let ConfigError::Invalid { issues, .. } = &e else {
            panic!("{e}");
        };
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "storage.retention",
                "storage.max_series",
                "cameras[0].name",
                "cameras[0].url",
                "http.max_body_bytes"
            ]
        );
        let text = e.to_string();
        assert!(text.contains("5 problems:"), "{text}");
        assert!(
            text.contains("\n  key `cameras[0].url`: scheme \"http\" is not rtsp"),
            "{text}"
        );

        // A check of meaning from another crate adds its issues to the same list.
        fn owner(_: &Config, issues: &mut Issues) {
            issues.add("mqtt.rules[0].topic", "from the owner");
        }
        let e = Config::load(Some(&file), &Overrides::default(), &[owner]).unwrap_err();
        assert!(e.to_string().contains("6 problems:"), "{e}");

        // A value of the wrong type stops the parse of its section; the
        // other sections are still parsed and their problems listed.
        let e = Config::parse(
            "[storage]\nretention = 5.5\n\n[http]\nlisten = \"nowhere\"\n",
            "perch.toml",
        )
        .unwrap_err();
        let ConfigError::Invalid { issues, .. } = &e else {
            panic!("{e}");
        };
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["storage.retention", "http.listen"], "{e}");
        assert!(issues.0[0].reason.contains("(line 2)"), "{e}");

        // One problem reads as before: the file, the key and the reason.
        std::fs::write(&file, "[storage]\nretention = \"1h\"\n").unwrap();
        let e = Config::load(Some(&file), &Overrides::default(), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config file {}: key `storage.retention`: must be at least 3h (raw data is kept in 2 h windows)",
                file.display()
            )
        );
    }

    #[test]
    fn memory_profiles_follow_the_ram_of_real_boards() {
        const MIB: u64 = 1 << 20;
        // MemTotal as Raspberry Pi OS reports it on each board.
        for (board, mem_total, profile) in [
            ("Pi Zero 2 W", 427 * MIB, MemoryProfile::SMALL),
            ("Pi 3 B", 921 * MIB, MemoryProfile::SMALL),
            ("Pi 4 2 GB", 1_848 * MIB, MemoryProfile::MEDIUM),
            ("Pi 4 4 GB", 3_794 * MIB, MemoryProfile::LARGE),
            ("Pi 5 8 GB", 8_052 * MIB, MemoryProfile::LARGE),
        ] {
            assert_eq!(MemoryProfile::for_ram(mem_total), profile, "{board}");
        }
        assert_eq!(
            MemoryProfile::LARGE.cache_bytes,
            StorageConfig::default().cache_bytes.0
        );
    }

    #[test]
    fn a_memory_profile_fills_only_what_the_file_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("perch.toml");
        std::fs::write(
            &file,
            "[memory]\nram = \"1GiB\"\n\n[storage]\ncache_bytes = \"64MiB\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), &Overrides::default(), &[]).unwrap();
        assert_eq!(c.memory.ram, RamSize::Bytes(1 << 30));
        assert_eq!(c.storage.cache_bytes, ByteSize(64 << 20), "set in the file");
        assert_eq!(c.search.writer_heap, ByteSize(15_000_000));
        assert_eq!(c.mqtt.history_bytes, ByteSize(4 << 20));
        assert_eq!(c.storage.max_head_samples, 500_000);
        assert_eq!(c.query.max_samples, 2_500_000);
        std::fs::write(&file, "[memory]\nram = \"lots\"\n").unwrap();
        let e = Config::load(Some(&file), &Overrides::default(), &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("memory.ram") && text.contains("\"auto\""),
            "{text}"
        );
        std::fs::write(&file, "[memory]\nram = 2147483648\n").unwrap();
        let c = Config::load(Some(&file), &Overrides::default(), &[]).unwrap();
        assert_eq!(c.memory.ram, RamSize::Bytes(2 << 30));
        assert_eq!(c.storage.cache_bytes, ByteSize(16 << 20));
        std::fs::write(&file, "[memory]\nram = \"auto\"\n").unwrap();
        let c = Config::load(Some(&file), &Overrides::default(), &[]).unwrap();
        assert_eq!(c.memory.ram, RamSize::Auto);
    }
}
