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

/// Alertmanager's webhook payload (version 4) for one alert.
fn webhook_body(receiver: &str, a: &Alert, external_url: &str) -> String {
    let labels = label_map(&a.labels);
    let alertname = a.labels.get("alertname").unwrap_or("").to_string();
    let group_key = format!("{{}}:{{alertname={alertname:?}}}");
    serde_json::json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status(a),
        "receiver": receiver,
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": a.annotations,
        "externalURL": external_url,
        "alerts": [alert_json(a, external_url)],
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

/// An alert as an e-mail: the title as subject, the summary and
/// description, the labels, when it started (and ended), a link.
fn email(target: &NotifyConfig, a: &Alert, external_url: &str, now_ms: i64) -> String {
    let date = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .to_rfc2822();
    let fp = fingerprint(&a.labels);
    let mut body = String::new();
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
    body.push_str(&format!("{external_url}/alerts\n"));
    format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{fp}.{now_ms}@perch>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}",
        target.from,
        target.to.join(", "),
        header_text(&title(a)),
    )
}

/// The messages for one alert's change, for one target.
pub fn deliveries(
    target: &NotifyConfig,
    a: &Alert,
    external_url: &str,
    now_ms: i64,
) -> Vec<Delivery> {
    let firing = a.state == AlertState::Firing;
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
        NotifyKind::Webhook => vec![Delivery::Http {
            url: target.url.clone(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: webhook_body(&target.name, a, external_url),
        }],
        NotifyKind::Ntfy => {
            let severity = a.labels.get("severity").unwrap_or("");
            let priority = match (firing, severity) {
                (false, _) => "default",
                (true, "critical" | "page") => "urgent",
                (true, _) => "high",
            };
            vec![Delivery::Http {
                url: target.url.clone(),
                headers: vec![
                    ("Title".into(), title(a)),
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
                body: message(a),
            }]
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
        NotifyKind::Email => vec![Delivery::Email {
            data: email(target, a, external_url, now_ms),
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
                    "title": title(a),
                    "message": message(a),
                    "priority": if firing { 8 } else { 4 },
                })
                .to_string(),
            }]
        }
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

    /// Queues what the targets are to be told of an alert's change.
    /// `resolved` alerts go only to targets with `send_resolved` (and to
    /// Alertmanagers, which must hear of it). `resend_only`: a firing
    /// alert's regular repetition for Alertmanagers, which forget an alert
    /// not posted again.
    pub fn enqueue(&self, a: &Alert, resend_only: bool) {
        let now = self.clock.now_ms();
        for t in &self.targets {
            let alertmanager = t.kind == NotifyKind::Alertmanager;
            if resend_only && !alertmanager {
                continue;
            }
            if a.state != AlertState::Firing && !t.send_resolved && !alertmanager {
                continue;
            }
            let item = Queued {
                deliveries: deliveries(t, a, &self.external_url, now),
                attempts: 0,
                next_attempt_ms: 0,
            };
            // After the target's last queued message (keys sort in order).
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
                continue;
            }
            // Bounded: the oldest go first.
            let mut excess = self.queued(&t.name).saturating_sub(MAX_QUEUED);
            while excess > 0 {
                if let Ok(Some((k, _))) = self.queue.scan_prefix(prefix(&t.name)).next().transpose()
                {
                    let _ = self.queue.remove(k);
                    tracing::warn!(
                        target = t.name,
                        "notification queue full: the oldest dropped"
                    );
                }
                excess -= 1;
            }
        }
        for w in &self.wake {
            w.notify_one();
        }
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
                        let wait = me.send_due(&t, &http, publisher.as_deref()).await;
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

    #[test]
    fn fingerprints_are_alertmanagers() {
        // Alertmanager's model.LabelSet{}.Fingerprint() is FNV-1a's offset.
        assert_eq!(fingerprint(&Labels::empty()), "cbf29ce484222325");
        let a = Labels::from_pairs([("a", "1")]);
        let b = Labels::from_pairs([("a", "2")]);
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
