//! Notifications: when an alert fires, is still firing after the target's
//! `repeat_interval`, or resolves, a message for every `[[alerts.notify]]`
//! target is put in a durable queue (the store's `alert_notifications`
//! tree) and a sender per target delivers it, in order, retrying with
//! backoff through an outage (1 s doubling to 5 minutes) and removing it
//! once delivered. Rule evaluation only enqueues, so a target that hangs
//! (each HTTP attempt has a 10 s timeout) cannot delay it.
//!
//! Formats: Alertmanager's webhook JSON (version 4, one alert per
//! message), ntfy (title, priority and tags as headers), Gotify (JSON with
//! the token in the URL), an external Alertmanager's v2 API (postable
//! alerts; firing ones posted again every [`ALERTMANAGER_RESEND_MS`] with
//! an end time ahead, as Prometheus does, so Alertmanager keeps them
//! active), and MQTT on perch's own broker: the message on the target's
//! topic and the alert's state retained on `<topic>/<fingerprint>`, so
//! that Home Assistant or Node-RED subscribing later still sees what is
//! firing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base::{Clock, Labels};
use config::{NotifyConfig, NotifyKind};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::eval::{Alert, AlertState};
use crate::template::{Data, Template};

/// How often firing alerts are posted again to an Alertmanager
/// (Prometheus' `--rules.alert.resend-delay`).
pub const ALERTMANAGER_RESEND_MS: i64 = 60_000;

/// Messages kept per target at most; past it the oldest are dropped (and
/// logged): a target down for weeks must not fill the SD card.
pub const MAX_QUEUED: usize = 10_000;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 300_000;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes on perch's own MQTT broker (the binary passes the broker in).
pub trait Publisher: Send + Sync {
    fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Alertmanager's fingerprint of a label set: FNV-1a 64 over the sorted
/// names and values, each followed by a 0xff separator, as hex.
pub fn fingerprint(labels: &Labels) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for l in labels.iter() {
        add(l.name.as_bytes());
        add(&[0xff]);
        add(l.value.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// One message for one target, as queued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Delivery {
    Mqtt {
        topic: String,
        payload: String,
        retain: bool,
    },
    Http {
        url: String,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// The message as RFC 5322 text; the server, sender, recipients and
    /// credentials are the target's (so no password is queued).
    Email { data: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Queued {
    deliveries: Vec<Delivery>,
    attempts: u32,
    next_attempt_ms: i64,
}

/// Prometheus' and Alertmanager's zero time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| ZERO_TIME.into())
}

fn label_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// An alert as Alertmanager's webhook and perch's MQTT messages carry it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertJson {
    status: &'static str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
    /// perch's addition: the value at the last evaluation, as text (the
    /// collector would otherwise store it as a series).
    value: String,
}

fn status(a: &Alert) -> &'static str {
    if a.state == AlertState::Firing {
        "firing"
    } else {
        "resolved"
    }
}

fn alert_json(a: &Alert, external_url: &str) -> AlertJson {
    AlertJson {
        status: status(a),
        labels: label_map(&a.labels),
        annotations: a.annotations.clone(),
        starts_at: rfc3339(a.active_at),
        ends_at: a.resolved_at.map_or(ZERO_TIME.into(), rfc3339),
        generator_url: format!("{external_url}/#/alerts"),
        fingerprint: fingerprint(&a.labels),
        value: crate::template::go_float(a.value, None),
    }
}

/// The labels and annotations every alert of a group shares.
fn common(alerts: &[Alert]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = alerts
        .first()
        .map(|a| label_map(&a.labels))
        .unwrap_or_default();
    let mut annotations = alerts
        .first()
        .map(|a| a.annotations.clone())
        .unwrap_or_default();
    for a in alerts.iter().skip(1) {
        labels.retain(|k, v| a.labels.get(k) == Some(v.as_str()));
        annotations.retain(|k, v| a.annotations.get(k) == Some(v));
    }
    (labels, annotations)
}

/// "firing" when any alert of the group fires.
fn group_status(alerts: &[Alert]) -> &'static str {
    if alerts.iter().any(|a| a.state == AlertState::Firing) {
        "firing"
    } else {
        "resolved"
    }
}

/// Alertmanager's webhook payload (version 4) for a group of alerts.
fn webhook_body(receiver: &str, group: &Labels, alerts: &[Alert], external_url: &str) -> String {
    let (common_labels, common_annotations) = common(alerts);
    let group_key = format!(
        "{{}}:{{{}}}",
        group
            .iter()
            .map(|l| format!("{}={:?}", l.name, l.value))
            .collect::<Vec<_>>()
            .join(", ")
    );
    serde_json::json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": group_status(alerts),
        "receiver": receiver,
        "groupLabels": label_map(group),
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": alerts.iter().map(|a| alert_json(a, external_url)).collect::<Vec<_>>(),
    })
    .to_string()
}

/// A one-line title: `[FIRING] FreezerWarm device=freezer`.
fn title(a: &Alert) -> String {
    let mut t = format!(
        "[{}] {}",
        status(a).to_uppercase(),
        a.labels.get("alertname").unwrap_or("")
    );
    for l in a.labels.iter().filter(|l| l.name != "alertname") {
        t.push_str(&format!(" {}={}", l.name, l.value));
    }
    t
}

fn message(a: &Alert) -> String {
    a.annotations
        .get("summary")
        .or_else(|| a.annotations.get("description"))
        .cloned()
        .unwrap_or_else(|| title(a))
}

/// One alert's title, or for several Alertmanager's
/// `[FIRING:2] <group label values>` (with the resolved counted too).
fn group_title(group: &Labels, alerts: &[Alert]) -> String {
    if let [a] = alerts {
        return title(a);
    }
    let firing = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    let resolved = alerts.len() - firing;
    let mut t = match (firing, resolved) {
        (0, n) => format!("[RESOLVED:{n}]"),
        (n, 0) => format!("[FIRING:{n}]"),
        (n, r) => format!("[FIRING:{n}, RESOLVED:{r}]"),
    };
    for l in group.iter() {
        t.push(' ');
        t.push_str(&l.value);
    }
    t
}

/// One alert's message, or a line per alert of a group.
fn group_message(alerts: &[Alert]) -> String {
    if let [a] = alerts {
        return message(a);
    }
    alerts
        .iter()
        .map(|a| {
            let labels: Vec<String> = a
                .labels
                .iter()
                .filter(|l| l.name != "alertname")
                .map(|l| format!("{}={}", l.name, l.value))
                .collect();
            let state = if a.state == AlertState::Firing {
                ""
            } else {
                "[resolved] "
            };
            format!("{state}{} ({})", message(a), labels.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// RFC 2047: a header value outside ASCII as UTF-8 in base64.
fn header_text(s: &str) -> String {
    use base64::Engine as _;
    if s.is_ascii() {
        s.to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

/// Alerts as an e-mail: the title as subject, then for each alert its
/// summary and description, labels, when it started (and ended); a link.
fn email(
    target: &NotifyConfig,
    group: &Labels,
    alerts: &[Alert],
    external_url: &str,
    now_ms: i64,
) -> String {
    let date = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .to_rfc2822();
    let fp = match alerts {
        [a] => fingerprint(&a.labels),
        _ => fingerprint(group),
    };
    let mut body = String::new();
    for a in alerts {
        if alerts.len() > 1 {
            body.push_str(&format!("{}\n", title(a)));
        }
        body.push_str(&message(a));
        body.push_str("\n\n");
        if let Some(d) = a.annotations.get("description") {
            body.push_str(d);
            body.push_str("\n\n");
        }
        for l in a.labels.iter() {
            body.push_str(&format!("{}: {}\n", l.name, l.value));
        }
        body.push_str(&format!("\nActive since {}\n", rfc3339(a.active_at)));
        if let Some(r) = a.resolved_at {
            body.push_str(&format!("Resolved at {}\n", rfc3339(r)));
        }
        body.push('\n');
    }
    body.push_str(&format!("{external_url}/alerts\n"));
    format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{fp}.{now_ms}@perch>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}",
        target.from,
        target.to.join(", "),
        header_text(&group_title(group, alerts)),
    )
}

/// `text` as a template over the alert (`$labels`, `$annotations`,
/// `$status`, `$value`, `$externalURL`), or as it is if it does not parse.
fn expand_over(text: &str, a: &Alert, external_url: &str) -> String {
    let data = Data {
        labels: a
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect(),
        value: a.value,
        external_url,
        annotations: a
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        status: status(a),
        ..Default::default()
    };
    Template::parse(text)
        .map(|t| t.expand(&data))
        .unwrap_or_else(|_| text.to_string())
}

/// The messages for one alert's change, for one target (one not grouping
/// its alerts: its group is the alert's name).
pub fn deliveries(
    target: &NotifyConfig,
    a: &Alert,
    external_url: &str,
    now_ms: i64,
) -> Vec<Delivery> {
    match target.kind {
        NotifyKind::Mqtt => {
            let topic = expand_over(&target.topic, a, external_url);
            let payload = serde_json::to_string(&alert_json(a, external_url)).unwrap_or_default();
            vec![
                Delivery::Mqtt {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain: false,
                },
                Delivery::Mqtt {
                    topic: format!("{topic}/{}", fingerprint(&a.labels)),
                    payload,
                    retain: true,
                },
            ]
        }
        NotifyKind::Alertmanager => {
            // Prometheus sends an end time ahead for a firing alert, so
            // that Alertmanager resolves it if perch goes quiet.
            let ends_at = match a.resolved_at {
                Some(t) => rfc3339(t),
                None => rfc3339(now_ms + 4 * ALERTMANAGER_RESEND_MS),
            };
            vec![Delivery::Http {
                url: format!("{}/api/v2/alerts", target.url.trim_end_matches('/')),
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: serde_json::json!([{
                    "labels": label_map(&a.labels),
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.active_at),
                    "endsAt": ends_at,
                    "generatorURL": format!("{external_url}/alerts"),
                }])
                .to_string(),
            }]
        }
        NotifyKind::Webhook if target.body.is_some() => {
            // Checked when perch started (Manager::open).
            let body = expand_over(target.body.as_deref().unwrap_or_default(), a, external_url);
            let content_type = target
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".into());
            vec![Delivery::Http {
                url: target.url.clone(),
                headers: vec![("Content-Type".into(), content_type)],
                body,
            }]
        }
        _ => {
            let group =
                Labels::from_pairs([("alertname", a.labels.get("alertname").unwrap_or(""))]);
            group_deliveries(
                target,
                &group,
                std::slice::from_ref(a),
                external_url,
                now_ms,
            )
        }
    }
}

/// The message for a group of alerts, for a webhook, ntfy, Gotify or
/// e-mail target.
fn group_deliveries(
    target: &NotifyConfig,
    group: &Labels,
    alerts: &[Alert],
    external_url: &str,
    now_ms: i64,
) -> Vec<Delivery> {
    let firing = group_status(alerts) == "firing";
    match target.kind {
        NotifyKind::Webhook => vec![Delivery::Http {
            url: target.url.clone(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: webhook_body(&target.name, group, alerts, external_url),
        }],
        NotifyKind::Ntfy => {
            let page = alerts.iter().any(|a| {
                a.state == AlertState::Firing
                    && matches!(a.labels.get("severity"), Some("critical" | "page"))
            });
            let priority = match (firing, page) {
                (false, _) => "default",
                (true, true) => "urgent",
                (true, false) => "high",
            };
            vec![Delivery::Http {
                url: target.url.clone(),
                headers: vec![
                    // Header values are ASCII: RFC 2047 for the rest (ntfy
                    // decodes it).
                    ("Title".into(), header_text(&group_title(group, alerts))),
                    ("Priority".into(), priority.into()),
                    (
                        "Tags".into(),
                        if firing {
                            "rotating_light"
                        } else {
                            "white_check_mark"
                        }
                        .into(),
                    ),
                ],
                body: group_message(alerts),
            }]
        }
        NotifyKind::Email => vec![Delivery::Email {
            data: email(target, group, alerts, external_url, now_ms),
        }],
        NotifyKind::Gotify => {
            let url = format!(
                "{}/message?token={}",
                target.url.trim_end_matches('/'),
                target.token.as_deref().unwrap_or("")
            );
            vec![Delivery::Http {
                url,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: serde_json::json!({
                    "title": group_title(group, alerts),
                    "message": group_message(alerts),
                    "priority": if firing { 8 } else { 4 },
                })
                .to_string(),
            }]
        }
        // Never grouped (the configuration refuses it).
        NotifyKind::Mqtt | NotifyKind::Alertmanager => alerts
            .iter()
            .flat_map(|a| deliveries(target, a, external_url, now_ms))
            .collect(),
    }
}

/// The queues and senders of every target.
pub struct Notifier {
    targets: Vec<NotifyConfig>,
    /// TLS for e-mail (the binary makes it: the system's roots and the
    /// targets' `ca_file`).
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    queue: sled::Tree,
    clock: Arc<dyn Clock>,
    external_url: String,
    /// One per target: `notify_one` keeps a permit when its sender is
    /// busy, so a message queued meanwhile is not left for the idle wait.
    wake: Vec<tokio::sync::Notify>,
    /// Held while queueing and while changing a group: rule evaluation and
    /// the senders (which send groups when due) both write.
    writing: std::sync::Mutex<()>,
    /// `alerts.repeat_interval`: how often a group with firing alerts and
    /// nothing new is sent again.
    repeat_ms: i64,
}

/// A grouping target's group: its alerts as last heard (a resolved one
/// until its resolution is sent), kept in the queue's tree so that a
/// restart loses none.
#[derive(Debug, Serialize, Deserialize)]
struct PendingGroup {
    labels: Labels,
    /// By fingerprint.
    alerts: BTreeMap<String, GroupedAlert>,
    created_ms: i64,
    last_sent_ms: Option<i64>,
    /// Something to tell since the last message.
    changed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupedAlert {
    alert: Alert,
    /// The alert's value as text (JSON has no NaN; `Alert` skips it).
    value: String,
    /// A message of the group carried it firing: its resolution is news.
    #[serde(default)]
    notified: bool,
    /// When rule evaluation last said it fires (it does again every
    /// repeat interval): one not heard of for long is dropped, as its
    /// rule or the target's grouping may be gone.
    #[serde(default)]
    seen_ms: i64,
}

/// Groups are kept apart from the queued messages by a first byte no
/// target name has.
const GROUP_TAG: u8 = 1;

fn group_prefix(target: &str) -> Vec<u8> {
    let mut k = vec![GROUP_TAG];
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k
}

/// Drops the queued messages and groups of targets no longer configured:
/// nothing would ever send them.
fn forget_removed_targets(queue: &sled::Tree, targets: &[NotifyConfig]) {
    let known = |name: &[u8]| targets.iter().any(|t| t.name.as_bytes() == name);
    let mut dropped = 0;
    for (k, _) in queue.iter().flatten() {
        let name_and_rest = k.strip_prefix(&[GROUP_TAG]).unwrap_or(&k);
        let name = name_and_rest.split(|&b| b == 0).next().unwrap_or_default();
        if !known(name) && queue.remove(&k).is_ok() {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "notifications and alert groups of targets no longer configured dropped"
        );
    }
}

fn key(target: &str, seq: u64) -> Vec<u8> {
    let mut k = target.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn prefix(target: &str) -> Vec<u8> {
    let mut k = target.as_bytes().to_vec();
    k.push(0);
    k
}

impl Notifier {
    pub fn new(
        targets: Vec<NotifyConfig>,
        queue: sled::Tree,
        clock: Arc<dyn Clock>,
        external_url: String,
    ) -> Notifier {
        let targets_len = targets.len();
        forget_removed_targets(&queue, &targets);
        Notifier {
            targets,
            tls: None,
            queue,
            clock,
            external_url,
            wake: (0..targets_len)
                .map(|_| tokio::sync::Notify::new())
                .collect(),
            writing: std::sync::Mutex::new(()),
            repeat_ms: 4 * 3_600_000,
        }
    }

    pub fn targets(&self) -> &[NotifyConfig] {
        &self.targets
    }

    /// `alerts.repeat_interval` (4 h unless set).
    pub fn set_repeat_interval(&mut self, ms: i64) {
        self.repeat_ms = ms.max(1);
    }

    /// The TLS client configuration e-mail uses.
    pub fn set_tls(&mut self, tls: Arc<tokio_rustls::rustls::ClientConfig>) {
        self.tls = Some(tls);
    }

    /// Whether an Alertmanager is among the targets.
    pub fn has_alertmanager(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.kind == NotifyKind::Alertmanager)
    }

    /// Messages waiting for a target.
    pub fn queued(&self, target: &str) -> usize {
        self.queue.scan_prefix(prefix(target)).count()
    }

    /// Queues what the targets are to be told of an alert's change (or,
    /// for a grouping target, adds it to its group). `resolved` alerts go
    /// only to targets with `send_resolved` (and to Alertmanagers, which
    /// must hear of it). `resend_only`: a firing alert's regular
    /// repetition for Alertmanagers, which forget an alert not posted
    /// again.
    pub fn enqueue(&self, a: &Alert, resend_only: bool) {
        let now = self.clock.now_ms();
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        for t in &self.targets {
            let alertmanager = t.kind == NotifyKind::Alertmanager;
            if resend_only && !alertmanager {
                continue;
            }
            if t.groups() {
                self.add_to_group(t, a, now);
                continue;
            }
            if a.state != AlertState::Firing && !t.send_resolved && !alertmanager {
                continue;
            }
            self.push(t, deliveries(t, a, &self.external_url, now));
        }
        for w in &self.wake {
            w.notify_one();
        }
    }

    /// Queues a message after the target's last one (keys sort in order),
    /// dropping the oldest past [`MAX_QUEUED`]. Called with `writing` held.
    fn push(&self, t: &NotifyConfig, deliveries: Vec<Delivery>) {
        let item = Queued {
            deliveries,
            attempts: 0,
            next_attempt_ms: 0,
        };
        let seq = match self.queue.scan_prefix(prefix(&t.name)).next_back() {
            Some(Ok((k, _))) => k
                .get(k.len().saturating_sub(8)..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, |b| u64::from_be_bytes(b) + 1),
            _ => 0,
        };
        let value = serde_json::to_vec(&item).unwrap_or_default();
        if let Err(e) = self.queue.insert(key(&t.name, seq), value) {
            tracing::warn!(target = t.name, error = %e, "notification not queued");
            return;
        }
        let mut excess = self.queued(&t.name).saturating_sub(MAX_QUEUED);
        while excess > 0 {
            if let Ok(Some((k, _))) = self.queue.scan_prefix(prefix(&t.name)).next().transpose() {
                let _ = self.queue.remove(k);
                tracing::warn!(
                    target = t.name,
                    "notification queue full: the oldest dropped"
                );
            }
            excess -= 1;
        }
    }

    /// The key of the group of `a` at target `t`.
    fn group_key(t: &NotifyConfig, a: &Alert) -> (Labels, Vec<u8>) {
        let labels = Labels::from_pairs(
            t.group_by
                .iter()
                .map(|n| (n.as_str(), a.labels.get(n).unwrap_or(""))),
        );
        let mut k = group_prefix(&t.name);
        k.extend_from_slice(fingerprint(&labels).as_bytes());
        (labels, k)
    }

    fn load_group(&self, k: &[u8]) -> Option<PendingGroup> {
        match self.queue.get(k) {
            Ok(Some(v)) => serde_json::from_slice::<PendingGroup>(&v).ok(),
            _ => None,
        }
    }

    /// Keeps a group, or removes it once it has no alert.
    fn store_group(&self, t: &NotifyConfig, k: &[u8], group: &PendingGroup) {
        let result = if group.alerts.is_empty() {
            self.queue.remove(k).map(drop)
        } else {
            self.queue
                .insert(k, serde_json::to_vec(group).unwrap_or_default())
                .map(drop)
        };
        if let Err(e) = result {
            tracing::warn!(target = t.name, error = %e, "alert group not kept");
        }
    }

    /// Puts an alert's change in its group of a grouping target: a new
    /// firing alert, or one firing again, joins it (news); one still firing
    /// (its repetition) is only refreshed — the group as a whole repeats
    /// every repeat interval; a resolved one stays until its resolution is
    /// sent if a message carried it firing and the target sends
    /// resolutions, else it leaves without a word. Called with `writing`
    /// held.
    fn add_to_group(&self, t: &NotifyConfig, a: &Alert, now: i64) {
        let (labels, k) = Self::group_key(t, a);
        let mut group = self.load_group(&k).unwrap_or(PendingGroup {
            labels,
            alerts: BTreeMap::new(),
            created_ms: now,
            last_sent_ms: None,
            changed: false,
        });
        let fp = fingerprint(&a.labels);
        let value = crate::template::go_float(a.value, None);
        let firing = a.state == AlertState::Firing;
        match group.alerts.get_mut(&fp) {
            Some(known) if firing => {
                if known.alert.state != AlertState::Firing {
                    group.changed = true;
                }
                known.alert = a.clone();
                known.value = value;
                known.seen_ms = now;
            }
            None if firing => {
                group.alerts.insert(
                    fp,
                    GroupedAlert {
                        alert: a.clone(),
                        value,
                        notified: false,
                        seen_ms: now,
                    },
                );
                group.changed = true;
            }
            Some(known) if known.notified && t.send_resolved => {
                known.alert = a.clone();
                known.value = value;
                group.changed = true;
            }
            Some(_) => {
                group.alerts.remove(&fp);
            }
            None => {}
        }
        self.store_group(t, &k, &group);
    }

    /// Takes a firing alert that is silenced or inhibited out of its
    /// groups, without a word: later messages of the group do not list
    /// it. (When it is notified again it joins again.)
    pub fn withdraw(&self, a: &Alert) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        for t in self.targets.iter().filter(|t| t.groups()) {
            let (_, k) = Self::group_key(t, a);
            if let Some(mut group) = self.load_group(&k) {
                if group.alerts.remove(&fingerprint(&a.labels)).is_some() {
                    self.store_group(t, &k, &group);
                }
            }
        }
    }

    /// Queues the message of each of the target's groups that is due: a
    /// new group `group_wait` after its first alert, a changed one
    /// `group_interval` after its last message, an unchanged one with
    /// firing alerts every repeat interval. The message carries every
    /// alert of the group, as Alertmanager's do. How long until the next
    /// group is due, if one is waiting.
    fn send_groups(&self, t: &NotifyConfig) -> Option<Duration> {
        if !t.groups() {
            return None;
        }
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now_ms();
        let wait = t.group_wait().0.as_millis() as i64;
        let interval = t.group_interval().0.as_millis() as i64;
        let repeat = self.repeat_ms;
        // Not heard of for two repetitions and more: its rule is gone.
        let forgotten = now - 2 * repeat - interval;
        let mut next: Option<i64> = None;
        for entry in self.queue.scan_prefix(group_prefix(&t.name)) {
            let Ok((k, v)) = entry else { continue };
            let Ok(mut group) = serde_json::from_slice::<PendingGroup>(&v) else {
                let _ = self.queue.remove(k);
                continue;
            };
            let before = group.alerts.len();
            group.alerts.retain(|_, g| {
                g.alert.state != AlertState::Firing || g.seen_ms == 0 || g.seen_ms >= forgotten
            });
            let firing = group
                .alerts
                .values()
                .any(|g| g.alert.state == AlertState::Firing);
            let due = match (group.changed, group.last_sent_ms) {
                (true, None) => Some(group.created_ms + wait),
                (true, Some(sent)) => Some(sent + interval),
                (false, Some(sent)) if firing => Some(sent + repeat),
                _ => None,
            };
            let Some(due) = due else {
                if group.alerts.len() != before {
                    self.store_group(t, &k, &group);
                }
                continue;
            };
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
                if group.alerts.len() != before {
                    self.store_group(t, &k, &group);
                }
                continue;
            }
            let mut alerts: Vec<Alert> = group
                .alerts
                .values()
                .map(|g| Alert {
                    value: g.value.parse().unwrap_or(f64::NAN),
                    ..g.alert.clone()
                })
                .collect();
            alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
            if !alerts.is_empty() && (firing || t.send_resolved) {
                self.push(
                    t,
                    group_deliveries(t, &group.labels, &alerts, &self.external_url, now),
                );
            }
            group
                .alerts
                .retain(|_, g| g.alert.state == AlertState::Firing);
            for g in group.alerts.values_mut() {
                g.notified = true;
            }
            group.changed = false;
            group.last_sent_ms = Some(now);
            self.store_group(t, &k, &group);
        }
        next.map(|due| Duration::from_millis((due - now).max(0) as u64))
    }

    /// Runs a sender per target until shutdown.
    pub async fn run(
        self: Arc<Self>,
        publisher: Option<Arc<dyn Publisher>>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        let mut tasks = Vec::new();
        for (i, t) in self.targets.clone().into_iter().enumerate() {
            let me = self.clone();
            let http = http.clone();
            let publisher = publisher.clone();
            let mut shutdown = shutdown.clone();
            let span = tracing::info_span!("notify", target = t.name);
            tasks.push(tokio::spawn(
                async move {
                    loop {
                        let group_due = me.send_groups(&t);
                        let wait = me.send_due(&t, &http, publisher.as_deref()).await;
                        let wait = group_due.map_or(wait, |g| g.min(wait));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = me.wake[i].notified() => {}
                            _ = base::stopping(&mut shutdown) => return,
                        }
                    }
                }
                .instrument(span),
            ));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Sends the target's queued messages in order until one fails or is
    /// not due; how long to wait before looking again.
    async fn send_due(
        &self,
        t: &NotifyConfig,
        http: &reqwest::Client,
        publisher: Option<&dyn Publisher>,
    ) -> Duration {
        loop {
            let Some(Ok((k, v))) = self.queue.scan_prefix(prefix(&t.name)).next() else {
                return Duration::from_secs(5);
            };
            let Ok(mut item) = serde_json::from_slice::<Queued>(&v) else {
                let _ = self.queue.remove(k);
                continue;
            };
            let now = self.clock.now_ms();
            if item.next_attempt_ms > now {
                return Duration::from_millis((item.next_attempt_ms - now) as u64);
            }
            match send(&item.deliveries, http, publisher, t, &self.tls).await {
                Ok(()) => {
                    let _ = self.queue.remove(k);
                    tracing::debug!("notification delivered");
                }
                Err(Failure::Refused(e)) => {
                    // Dropped, so that what comes after it is not held up
                    // behind it forever.
                    let _ = self.queue.remove(k);
                    tracing::warn!(error = %e, "notification refused by its target; dropped");
                }
                Err(Failure::Retry(e)) => {
                    item.attempts += 1;
                    let backoff = (1000i64 << item.attempts.min(20)).min(MAX_BACKOFF_MS);
                    item.next_attempt_ms = now + backoff;
                    tracing::warn!(error = %e, attempts = item.attempts, retry_in_ms = backoff, "notification not delivered; retrying");
                    if let Ok(v) = serde_json::to_vec(&item) {
                        let _ = self.queue.insert(k, v);
                    }
                    return Duration::from_millis(backoff as u64);
                }
            }
        }
    }
}

/// Why a message was not delivered.
enum Failure {
    /// The target or the way to it is down: try again later.
    Retry(String),
    /// The target refused this message (a 4xx): it would refuse it again.
    Refused(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Retry(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Failure {
        Failure::Retry(e.to_string())
    }
}

async fn send(
    deliveries: &[Delivery],
    http: &reqwest::Client,
    publisher: Option<&dyn Publisher>,
    target: &NotifyConfig,
    tls: &Option<Arc<tokio_rustls::rustls::ClientConfig>>,
) -> Result<(), Failure> {
    for d in deliveries {
        match d {
            Delivery::Mqtt {
                topic,
                payload,
                retain,
            } => {
                let p = publisher.ok_or("the MQTT broker is not running")?;
                p.publish(topic.clone(), payload.clone().into_bytes(), *retain)
                    .await?;
            }
            Delivery::Http { url, headers, body } => {
                let mut req = http.post(url).body(body.clone());
                for (k, v) in headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let resp = req.send().await.map_err(|e| {
                    // Never the URL's query: a Gotify token lives there.
                    if e.is_builder() {
                        Failure::Refused(format!("the request cannot be made: {}", e.without_url()))
                    } else {
                        Failure::Retry(format!("{}", e.without_url()))
                    }
                })?;
                let status = resp.status();
                // A 4xx says the message itself is wrong (but for "too
                // early" and "too many"): sending it again cannot help.
                let permanent = status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
                if permanent {
                    let body = resp.text().await.unwrap_or_default();
                    let body: String = body.chars().take(200).collect();
                    return Err(Failure::Refused(format!(
                        "the target answered {status}: {body}"
                    )));
                }
                if !status.is_success() {
                    return Err(Failure::Retry(format!("the target answered {status}")));
                }
            }
            Delivery::Email { data } => {
                let server = crate::smtp::Server {
                    url: &target.url,
                    username: target.username.as_deref(),
                    password: target.password.as_deref(),
                    tls: tls.clone(),
                };
                let mail = crate::smtp::Mail {
                    from: &target.from,
                    to: &target.to,
                    data,
                };
                crate::smtp::send(&server, &mail).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState) -> Alert {
        Alert {
            labels: Labels::from_pairs([
                ("alertname", "FreezerWarm"),
                ("device", "freezer"),
                ("severity", "page"),
            ]),
            annotations: [("summary".to_string(), "freezer at -5 °C".to_string())].into(),
            state,
            value: -5.0,
            active_at: 1_700_000_000_000,
            fired_at: Some(1_700_000_120_000),
            resolved_at: (state == AlertState::Inactive).then_some(1_700_000_600_000),
            keep_firing_since: None,
            last_sent_at: None,
            last_resent_at: None,
        }
    }

    fn target(kind: &str) -> NotifyConfig {
        toml::from_str(&format!(
            "name = \"t\"\nkind = \"{kind}\"\nurl = \"http://127.0.0.1:1/hook\"\ntoken = \"s3cret\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn alertmanager_webhook_shape() {
        let d = deliveries(
            &target("webhook"),
            &alert(AlertState::Firing),
            "http://perch:8080",
            0,
        );
        let Delivery::Http { body, .. } = &d[0] else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["groupKey"], "{}:{alertname=\"FreezerWarm\"}");
        assert_eq!(v["alerts"][0]["labels"]["device"], "freezer");
        assert_eq!(v["alerts"][0]["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let d = deliveries(&target("webhook"), &alert(AlertState::Inactive), "", 0);
        let Delivery::Http { body, .. } = &d[0] else {
            panic!()
        };
        assert!(body.contains("\"status\":\"resolved\""), "{body}");
    }

    #[test]
    fn mqtt_ntfy_gotify() {
        let d = deliveries(&target("mqtt"), &alert(AlertState::Firing), "", 0);
        let topics: Vec<(&str, bool)> = d
            .iter()
            .map(|d| match d {
                Delivery::Mqtt { topic, retain, .. } => (topic.as_str(), *retain),
                _ => panic!(),
            })
            .collect();
        let fp = fingerprint(&alert(AlertState::Firing).labels);
        assert_eq!(topics[0], ("perch/alerts/FreezerWarm", false));
        assert_eq!(
            topics[1],
            (format!("perch/alerts/FreezerWarm/{fp}").as_str(), true)
        );
        let d = deliveries(&target("ntfy"), &alert(AlertState::Firing), "", 0);
        let Delivery::Http { headers, body, .. } = &d[0] else {
            panic!()
        };
        assert_eq!(body, "freezer at -5 °C");
        assert!(headers.contains(&("Priority".into(), "urgent".into())));
        assert!(headers.contains(&(
            "Title".into(),
            "[FIRING] FreezerWarm device=freezer severity=page".into()
        )));
        let d = deliveries(&target("gotify"), &alert(AlertState::Firing), "", 0);
        let Delivery::Http { url, .. } = &d[0] else {
            panic!()
        };
        assert_eq!(url, "http://127.0.0.1:1/hook/message?token=s3cret");
    }

    #[test]
    fn alertmanager_v2_postable_alerts() {
        let d = deliveries(
            &target("alertmanager"),
            &alert(AlertState::Firing),
            "http://perch",
            1_700_000_000_000,
        );
        let Delivery::Http { url, body, .. } = &d[0] else {
            panic!()
        };
        assert_eq!(url, "http://127.0.0.1:1/hook/api/v2/alerts");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v[0]["labels"]["alertname"], "FreezerWarm");
        assert_eq!(v[0]["startsAt"], "2023-11-14T22:13:20Z");
        // Ahead: Alertmanager resolves it if nothing is posted again.
        assert_eq!(v[0]["endsAt"], "2023-11-14T22:17:20Z");
        let d = deliveries(&target("alertmanager"), &alert(AlertState::Inactive), "", 0);
        let Delivery::Http { body, .. } = &d[0] else {
            panic!()
        };
        assert!(
            body.contains("\"endsAt\":\"2023-11-14T22:23:20Z\""),
            "{body}"
        );
    }

    fn queued_bodies(n: &Notifier, target: &str) -> Vec<serde_json::Value> {
        n.queue
            .scan_prefix(prefix(target))
            .map(|e| {
                let q: Queued = serde_json::from_slice(&e.unwrap().1).unwrap();
                let Delivery::Http { body, .. } = &q.deliveries[0] else {
                    panic!()
                };
                serde_json::from_str(body).unwrap()
            })
            .collect()
    }

    fn queue_tree() -> sled::Tree {
        sled::Config::new()
            .temporary(true)
            .open()
            .unwrap()
            .open_tree("q")
            .unwrap()
    }

    /// A webhook "hook" grouping by alert name (with `extra` settings), its
    /// notifier and the notifier's clock.
    fn grouping_hook(extra: &str) -> (NotifyConfig, Notifier, Arc<base::ManualClock>) {
        let t: NotifyConfig = toml::from_str(&format!(
            "name = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n\
             group_by = [\"alertname\"]\n{extra}"
        ))
        .unwrap();
        assert!(t.send_resolved);
        let clock = base::ManualClock::new(1_700_000_000_000);
        let n = Notifier::new(
            vec![t.clone()],
            queue_tree(),
            clock.clone(),
            "http://perch".into(),
        );
        (t, n, clock)
    }

    /// [`alert`] of one device.
    fn device(name: &str, state: AlertState) -> Alert {
        let mut a = alert(state);
        a.labels.set("device", name);
        a
    }

    #[test]
    fn grouped_alerts_go_out_together_after_group_wait_and_interval() {
        let (t, n, clock) = grouping_hook("group_wait = \"30s\"\ngroup_interval = \"5m\"\n");
        n.enqueue(&device("freezer", AlertState::Firing), false);
        clock.advance(10_000);
        n.enqueue(&device("fridge", AlertState::Firing), false);
        // Nothing before group_wait; then one message with both.
        assert_eq!(n.send_groups(&t), Some(Duration::from_secs(20)));
        assert!(queued_bodies(&n, "hook").is_empty());
        clock.advance(20_000);
        assert_eq!(n.send_groups(&t), None);
        let bodies = queued_bodies(&n, "hook");
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        assert_eq!(bodies[0]["groupKey"], "{}:{alertname=\"FreezerWarm\"}");
        assert_eq!(bodies[0]["groupLabels"]["alertname"], "FreezerWarm");
        assert_eq!(bodies[0]["status"], "firing");
        assert_eq!(bodies[0]["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(bodies[0]["commonLabels"]["severity"], "page");
        assert!(bodies[0]["commonLabels"].get("device").is_none());
        assert_eq!(bodies[0]["alerts"][0]["value"], "-5");
        // A resolution waits for group_interval and carries the group.
        n.enqueue(&device("fridge", AlertState::Inactive), false);
        clock.advance(60_000);
        assert_eq!(n.send_groups(&t), Some(Duration::from_secs(240)));
        clock.advance(240_000);
        n.send_groups(&t);
        let bodies = queued_bodies(&n, "hook");
        assert_eq!(bodies.len(), 2);
        let states: Vec<(&str, &str)> = bodies[1]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["device"].as_str().unwrap(),
                    a["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(states, [("freezer", "firing"), ("fridge", "resolved")]);
        // Sent resolutions leave the group; nothing changed, nothing sent
        // until the repeat interval (4 h), when the group goes again, once,
        // although its alert's own repetition came before.
        clock.advance(600_000);
        assert_eq!(n.send_groups(&t), Some(Duration::from_secs(4 * 3600 - 600)));
        assert_eq!(queued_bodies(&n, "hook").len(), 2);
        clock.advance(3_000_000);
        n.enqueue(&device("freezer", AlertState::Firing), false);
        assert_eq!(
            n.send_groups(&t),
            Some(Duration::from_secs(4 * 3600 - 3600))
        );
        clock.advance(3 * 3_600_000);
        assert_eq!(n.send_groups(&t), None);
        let bodies = queued_bodies(&n, "hook");
        assert_eq!(bodies.len(), 3);
        assert_eq!(bodies[2]["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(bodies[2]["status"], "firing");
        n.enqueue(&device("freezer", AlertState::Inactive), false);
        clock.advance(300_000);
        n.send_groups(&t);
        let bodies = queued_bodies(&n, "hook");
        assert_eq!(bodies[3]["status"], "resolved");
        assert_eq!(bodies[3]["alerts"].as_array().unwrap().len(), 1);
        // The group is gone: a new alert waits group_wait again.
        n.enqueue(&device("freezer", AlertState::Firing), false);
        assert_eq!(n.send_groups(&t), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_group_says_nothing_of_alerts_it_never_carried_firing() {
        let (t, n, clock) = grouping_hook("");
        // Fired and resolved within group_wait: no message at all.
        n.enqueue(&device("freezer", AlertState::Firing), false);
        n.enqueue(&device("freezer", AlertState::Inactive), false);
        clock.advance(30_000);
        assert_eq!(n.send_groups(&t), None);
        assert!(queued_bodies(&n, "hook").is_empty());
        // A silenced alert is withdrawn: the group's message lacks it.
        n.enqueue(&device("fridge", AlertState::Firing), false);
        n.enqueue(&device("chest", AlertState::Firing), false);
        n.withdraw(&device("chest", AlertState::Firing));
        clock.advance(30_000);
        n.send_groups(&t);
        let bodies = queued_bodies(&n, "hook");
        assert_eq!(bodies.len(), 1);
        let devices: Vec<&str> = bodies[0]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["device"].as_str().unwrap())
            .collect();
        assert_eq!(devices, ["fridge"]);
        // An alert not heard of for two repeat intervals is forgotten.
        clock.advance(9 * 3_600_000);
        assert_eq!(n.send_groups(&t), None);
        assert_eq!(queued_bodies(&n, "hook").len(), 1);
    }

    /// A webhook that answers 400 to its first request and 200 after.
    fn refusing_once() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let got = seen.clone();
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let mut buf = vec![0u8; 65536];
                let n = conn.read(&mut buf).unwrap_or(0);
                got.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
                let answer: &[u8] = if i == 0 {
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 7\r\nconnection: close\r\n\r\nno JSON"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = conn.write_all(answer);
            }
        });
        (port, seen)
    }

    #[test]
    fn a_message_the_target_refuses_does_not_hold_up_the_next() {
        let (port, seen) = refusing_once();
        let mut t = target("webhook");
        t.url = format!("http://127.0.0.1:{port}/hook");
        let tree = queue_tree();
        let n = Arc::new(Notifier::new(
            vec![t],
            tree,
            base::ManualClock::new(0),
            "".into(),
        ));
        n.enqueue(&alert(AlertState::Firing), false);
        n.enqueue(&alert(AlertState::Inactive), false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        runtime.block_on(async {
            let sender = tokio::spawn(n.clone().run(None, stopped));
            for _ in 0..100 {
                if n.queued("t") == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = stop.send(true);
            let _ = sender.await;
        });
        assert_eq!(n.queued("t"), 0);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[1].contains("\"status\":\"resolved\""), "{}", seen[1]);
    }

    #[test]
    fn ntfy_titles_outside_ascii_are_rfc_2047() {
        let mut a = alert(AlertState::Firing);
        a.labels.set("room", "Küche");
        let d = deliveries(&target("ntfy"), &a, "", 0);
        let Delivery::Http { headers, .. } = &d[0] else {
            panic!()
        };
        let title = &headers.iter().find(|(k, _)| k == "Title").unwrap().1;
        assert!(
            title.is_ascii() && title.starts_with("=?UTF-8?B?"),
            "{title}"
        );
    }

    #[test]
    fn messages_of_removed_targets_are_dropped_at_start() {
        let tree = queue_tree();
        let clock = base::ManualClock::new(0);
        let old = Notifier::new(
            vec![target("webhook")],
            tree.clone(),
            clock.clone(),
            "".into(),
        );
        old.enqueue(&alert(AlertState::Firing), false);
        assert_eq!(old.queued("t"), 1);
        let mut other = target("webhook");
        other.name = "u".into();
        let new = Notifier::new(vec![other], tree, clock, "".into());
        assert_eq!(new.queued("t"), 0);
    }

    #[test]
    fn a_webhook_body_template_is_expanded_per_alert() {
        let mut t = target("webhook");
        t.body = Some(
            r#"{"text": {{ printf "%s: %s" $status $annotations.summary | toJson }}, "device": {{ $labels.device | toJson }}, "value": {{ $value | toJson }}}"#
                .into(),
        );
        t.content_type = Some("application/json; charset=utf-8".into());
        let d = deliveries(&t, &alert(AlertState::Firing), "", 0);
        let Delivery::Http { body, headers, .. } = &d[0] else {
            panic!()
        };
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(v["text"], "firing: freezer at -5 °C");
        assert_eq!(v["device"], "freezer");
        assert_eq!(v["value"], -5.0);
        assert!(headers.contains(&(
            "Content-Type".into(),
            "application/json; charset=utf-8".into()
        )));
    }

    #[test]
    fn group_titles_count_firing_and_resolved() {
        let group = Labels::from_pairs([("alertname", "FreezerWarm")]);
        let mut b = alert(AlertState::Inactive);
        b.labels.set("device", "fridge");
        let alerts = [alert(AlertState::Firing), b];
        assert_eq!(
            group_title(&group, &alerts),
            "[FIRING:1, RESOLVED:1] FreezerWarm"
        );
        assert_eq!(
            group_message(&alerts),
            "freezer at -5 °C (device=freezer severity=page)\n\
             [resolved] freezer at -5 °C (device=fridge severity=page)"
        );
        assert_eq!(
            group_title(&group, &alerts[..1]),
            "[FIRING] FreezerWarm device=freezer severity=page"
        );
    }

    #[test]
    fn fingerprints_are_alertmanagers() {
        // Alertmanager's model.LabelSet{}.Fingerprint() is FNV-1a's offset.
        assert_eq!(fingerprint(&Labels::empty()), "cbf29ce484222325");
        let a = Labels::from_pairs([("a", "1")]);
        let b = Labels::from_pairs([("a", "2")]);
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
