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
            let data = Data {
                labels: a
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect(),
                value: a.value,
                external_url,
                ..Default::default()
            };
            let topic = Template::parse(&target.topic)
                .map(|t| t.expand(&data))
                .unwrap_or_else(|_| target.topic.clone());
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
            let body = target.body.as_deref().unwrap_or_default();
            // Checked when perch started (Manager::open).
            let body = Template::parse(body)
                .map(|t| t.expand(&data))
                .unwrap_or_else(|_| body.to_string());
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
                    ("Title".into(), group_title(group, alerts)),
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
        }
    }

    pub fn targets(&self) -> &[NotifyConfig] {
        &self.targets
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

    /// Puts an alert's change in its group of a grouping target: a firing
    /// alert joins or updates it; a resolved one stays until its
    /// resolution is sent (with `send_resolved`) or leaves at once.
    /// Called with `writing` held.
    fn add_to_group(&self, t: &NotifyConfig, a: &Alert, now: i64) {
        let labels = Labels::from_pairs(
            t.group_by
                .iter()
                .map(|n| (n.as_str(), a.labels.get(n).unwrap_or(""))),
        );
        let mut k = group_prefix(&t.name);
        k.extend_from_slice(fingerprint(&labels).as_bytes());
        let mut group = match self.queue.get(&k) {
            Ok(Some(v)) => serde_json::from_slice::<PendingGroup>(&v).ok(),
            _ => None,
        }
        .unwrap_or(PendingGroup {
            labels,
            alerts: BTreeMap::new(),
            created_ms: now,
            last_sent_ms: None,
            changed: false,
        });
        let fp = fingerprint(&a.labels);
        let grouped = GroupedAlert {
            alert: a.clone(),
            value: crate::template::go_float(a.value, None),
        };
        if a.state == AlertState::Firing {
            group.alerts.insert(fp, grouped);
            group.changed = true;
        } else if let Some(known) = group.alerts.get_mut(&fp) {
            if t.send_resolved {
                *known = grouped;
                group.changed = true;
            } else {
                group.alerts.remove(&fp);
            }
        }
        let result = if group.alerts.is_empty() {
            self.queue.remove(&k).map(drop)
        } else {
            self.queue
                .insert(&k, serde_json::to_vec(&group).unwrap_or_default())
                .map(drop)
        };
        if let Err(e) = result {
            tracing::warn!(target = t.name, error = %e, "alert group not kept");
        }
    }

    /// Queues the message of each of the target's groups that is due: a
    /// new group `group_wait` after its first alert, a changed one
    /// `group_interval` after its last message. The message carries every
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
        let mut next: Option<i64> = None;
        for entry in self.queue.scan_prefix(group_prefix(&t.name)) {
            let Ok((k, v)) = entry else { continue };
            let Ok(mut group) = serde_json::from_slice::<PendingGroup>(&v) else {
                let _ = self.queue.remove(k);
                continue;
            };
            if !group.changed {
                continue;
            }
            let due = match group.last_sent_ms {
                None => group.created_ms + wait,
                Some(sent) => sent + interval,
            };
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
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
            if alerts.iter().any(|a| a.state == AlertState::Firing) || t.send_resolved {
                self.push(
                    t,
                    group_deliveries(t, &group.labels, &alerts, &self.external_url, now),
                );
            }
            group
                .alerts
                .retain(|_, g| g.alert.state == AlertState::Firing);
            group.changed = false;
            group.last_sent_ms = Some(now);
            let _ = if group.alerts.is_empty() {
                self.queue.remove(&k).map(drop)
            } else {
                self.queue
                    .insert(&k, serde_json::to_vec(&group).unwrap_or_default())
                    .map(drop)
            };
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
                Err(e) => {
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

async fn send(
    deliveries: &[Delivery],
    http: &reqwest::Client,
    publisher: Option<&dyn Publisher>,
    target: &NotifyConfig,
    tls: &Option<Arc<tokio_rustls::rustls::ClientConfig>>,
) -> Result<(), String> {
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
                    format!("{}", e.without_url())
                })?;
                if !resp.status().is_success() {
                    return Err(format!("the target answered {}", resp.status()));
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

    #[test]
    fn grouped_alerts_go_out_together_after_group_wait_and_interval() {
        let mut t: NotifyConfig = toml::from_str(
            "name = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n\
             group_by = [\"alertname\"]\ngroup_wait = \"30s\"\ngroup_interval = \"5m\"\n",
        )
        .unwrap();
        t.send_resolved = true;
        let clock = base::ManualClock::new(1_700_000_000_000);
        let tree = sled::Config::new()
            .temporary(true)
            .open()
            .unwrap()
            .open_tree("q")
            .unwrap();
        let n = Notifier::new(vec![t.clone()], tree, clock.clone(), "http://perch".into());
        let device = |name: &str, state| {
            let mut a = alert(state);
            a.labels.set("device", name);
            a
        };
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
        // Sent resolutions leave the group; nothing changed, nothing sent.
        clock.advance(600_000);
        assert_eq!(n.send_groups(&t), None);
        assert_eq!(queued_bodies(&n, "hook").len(), 2);
        n.enqueue(&device("freezer", AlertState::Inactive), false);
        clock.advance(300_000);
        n.send_groups(&t);
        let bodies = queued_bodies(&n, "hook");
        assert_eq!(bodies[2]["status"], "resolved");
        assert_eq!(bodies[2]["alerts"].as_array().unwrap().len(), 1);
        // The group is gone: a new alert waits group_wait again.
        n.enqueue(&device("freezer", AlertState::Firing), false);
        assert_eq!(n.send_groups(&t), Some(Duration::from_secs(30)));
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
