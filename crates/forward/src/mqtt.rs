//! The MQTT bridge: publishes queued messages to an upstream broker with
//! rumqttc, `remote_prefix` prepended to the topic. One connection at a
//! time, a clean session each: a batch (up to `batch_max` messages in flight)
//! is committed once every message of it is acknowledged (PUBACK for QoS 1,
//! PUBCOMP for QoS 2; for QoS 0, once written to the socket). A connection
//! lost halfway resends the whole batch on the next one: at-least-once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, Transport,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::definitions::redact;
use crate::item;
use crate::queue::Entry;
use crate::sender::{pause, Backoff, Pace, SEND_BATCH_BYTES};
use crate::target::Target;
use crate::tls::{self, TlsError};
use crate::ForwardError;

#[derive(Debug, Error)]
enum MqttError {
    #[error("{0}")]
    Url(#[from] url::ParseError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("{0}")]
    Lost(#[from] Box<ConnectionError>),
    #[error("connection closed")]
    Closed,
    #[error("no CONNACK within {0}")]
    NoConnack(config::Duration),
    #[error("{missing} of {expected} messages unacknowledged after {timeout}")]
    Unacknowledged {
        missing: usize,
        expected: usize,
        timeout: config::Duration,
    },
    #[error("{0}")]
    Publish(#[from] rumqttc::ClientError),
    #[error("{0}")]
    Queue(#[from] ForwardError),
}

impl base::HasKind for MqttError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            MqttError::Url(_) => K::InvalidArgument,
            MqttError::Tls(e) => e.kind(),
            MqttError::Refused(_) | MqttError::Lost(_) | MqttError::Closed => K::Unavailable,
            MqttError::NoConnack(_) | MqttError::Unacknowledged { .. } => K::DeadlineExceeded,
            MqttError::Publish(_) => K::Internal,
            MqttError::Queue(e) => e.kind(),
        }
    }
}

/// What a session waits for from the event loop.
enum LoopEvent {
    Connected,
    Refused(ConnectReturnCode),
    Acked,
    Written,
    Lost(Box<ConnectionError>),
}

pub async fn run(t: Arc<Target>, mut stop: watch::Receiver<bool>) {
    let c = &t.config;
    let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "perch".into());
    let opts = match options(&t, &hostname) {
        Ok(o) => o,
        Err(e) => {
            t.error(format!("cannot set up MQTT: {e}"));
            return;
        }
    };
    let mut bridge = Bridge {
        t: &t,
        prefix: c.remote_prefix.replace("{hostname}", &hostname),
        qos: match c.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        },
        pace: Pace::new(&t),
        backoff: Backoff::new(c.max_backoff.0),
    };
    tracing::info!(url = %redact(&c.url), prefix = %bridge.prefix, "forwarding MQTT messages");
    while !*stop.borrow() {
        let (client, eventloop) = AsyncClient::new(opts.clone(), c.batch_max + 16);
        let (poller, mut events) = spawn_poller(eventloop);
        let result = bridge.session(&client, &mut events, &mut stop).await;
        let _ = client.try_disconnect();
        poller.abort();
        t.set_connected(false);
        t.seat.set_catching_up(false);
        match result {
            Ok(()) => break,
            Err(e) => {
                t.error(e);
                if !pause(bridge.backoff.step(), &mut stop).await {
                    break;
                }
            }
        }
    }
}

fn options(t: &Target, hostname: &str) -> Result<MqttOptions, MqttError> {
    let c = &t.config;
    let url = url::Url::parse(&c.url)?;
    let tls = matches!(url.scheme(), "mqtts" | "ssl");
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let id = c
        .client_id
        .clone()
        .unwrap_or_else(|| format!("perch-{hostname}-{}", c.name));
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(c.batch_max.min(65535) as u16)
        .set_max_packet_size(1 << 20, 256 << 20);
    if let Some(u) = &c.username {
        o.set_credentials(u, c.password.clone().unwrap_or_default());
    }
    if tls {
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls::client_config(c.ca_file.as_deref())?),
        ));
    }
    Ok(o)
}

/// Drives a connection's event loop on a task of its own, passing on what
/// a session waits for; it ends when the connection fails.
fn spawn_poller(mut eventloop: EventLoop) -> (JoinHandle<()>, mpsc::UnboundedReceiver<LoopEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = match eventloop.poll().await {
                Ok(ev) => match loop_event(ev) {
                    Some(ev) => ev,
                    None => continue,
                },
                Err(e) => {
                    let _ = tx.send(LoopEvent::Lost(Box::new(e)));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    (task, rx)
}

fn loop_event(ev: Event) -> Option<LoopEvent> {
    match ev {
        Event::Incoming(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => {
            Some(LoopEvent::Connected)
        }
        Event::Incoming(Packet::ConnAck(a)) => Some(LoopEvent::Refused(a.code)),
        Event::Incoming(Packet::PubAck(_)) | Event::Incoming(Packet::PubComp(_)) => {
            Some(LoopEvent::Acked)
        }
        Event::Outgoing(Outgoing::Publish(_)) => Some(LoopEvent::Written),
        _ => None,
    }
}

/// One MQTT target's sender: what lasts from one connection to the next.
struct Bridge<'a> {
    t: &'a Target,
    prefix: String,
    qos: QoS,
    pace: Pace,
    backoff: Backoff,
}

/// What publishing a batch came to.
#[derive(Default)]
struct Published {
    /// Messages handed to the client: acknowledgements to wait for.
    messages: usize,
    /// Topic and payload bytes, for `max_bandwidth`.
    bytes: usize,
    /// Damaged items left out (they can never be sent).
    damaged: u64,
}

impl Bridge<'_> {
    /// One connection: waits for CONNACK, then sends batches until the
    /// connection is lost (Err) or perch stops (Ok).
    async fn session(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::UnboundedReceiver<LoopEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), MqttError> {
        let t = self.t;
        let c = &t.config;
        await_connack(events, c.timeout).await?;
        t.set_connected(true);
        self.backoff.reset();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            self.pace.update_rate(t);
            if !t.seat.wait_turn(stop).await {
                return Ok(());
            }
            check_connection(events)?;
            let batch = t.lane.queue.peek(c.batch_max, SEND_BATCH_BYTES)?;
            let Some(last) = batch.last().map(|e| e.seq) else {
                t.seat.set_catching_up(false);
                wait_for_items(t, events, stop).await?;
                continue;
            };
            let published = self.publish(client, &batch).await?;
            await_acks(events, published.messages, self.qos, c.timeout).await?;
            t.lane.queue.commit(last)?;
            t.seat.set_catching_up(batch.len() >= c.batch_max);
            self.count(&published);
            let wait = self.pace.delay_for(published.bytes);
            if !wait.is_zero() && !pause(wait, stop).await {
                return Ok(());
            }
        }
    }

    async fn publish(&self, client: &AsyncClient, batch: &[Entry]) -> Result<Published, MqttError> {
        let mut p = Published::default();
        for e in batch {
            let Ok(m) = item::decode_message(e.payload()) else {
                p.damaged += 1;
                continue;
            };
            let topic = format!("{}{}", self.prefix, m.topic);
            p.bytes += topic.len() + m.payload.len();
            client
                .publish(topic, self.qos, m.retain, m.payload.to_vec())
                .await?;
            p.messages += 1;
        }
        Ok(p)
    }

    fn count(&self, p: &Published) {
        self.t
            .lane
            .counters
            .sent
            .fetch_add(p.messages as u64, Ordering::Relaxed);
        if p.damaged > 0 {
            self.t.count_rejected(p.damaged);
        }
    }
}

async fn await_connack(
    events: &mut mpsc::UnboundedReceiver<LoopEvent>,
    timeout: config::Duration,
) -> Result<(), MqttError> {
    match tokio::time::timeout(timeout.0, events.recv()).await {
        Ok(Some(LoopEvent::Connected)) => Ok(()),
        Ok(Some(LoopEvent::Refused(code))) => Err(MqttError::Refused(code)),
        Ok(Some(LoopEvent::Lost(e))) => Err(e.into()),
        Ok(_) => Err(MqttError::Closed),
        Err(_) => Err(MqttError::NoConnack(timeout)),
    }
}

/// Between batches only stale acknowledgements or the end of the
/// connection can be waiting.
fn check_connection(events: &mut mpsc::UnboundedReceiver<LoopEvent>) -> Result<(), MqttError> {
    while let Ok(ev) = events.try_recv() {
        if let LoopEvent::Lost(e) = ev {
            return Err(e.into());
        }
    }
    Ok(())
}

/// Waits (up to a second) for items to arrive in an empty queue, watching
/// the connection meanwhile.
async fn wait_for_items(
    t: &Target,
    events: &mut mpsc::UnboundedReceiver<LoopEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), MqttError> {
    tokio::select! {
        _ = t.lane.queue.notify.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = base::stopping(stop) => {}
        ev = events.recv() => match ev {
            Some(LoopEvent::Lost(e)) => return Err(e.into()),
            None => return Err(MqttError::Closed),
            _ => {}
        },
    }
    Ok(())
}

/// Waits until the broker acknowledged `expected` messages: PUBACK or
/// PUBCOMP, or for QoS 0 their being written to the socket.
async fn await_acks(
    events: &mut mpsc::UnboundedReceiver<LoopEvent>,
    expected: usize,
    qos: QoS,
    timeout: config::Duration,
) -> Result<(), MqttError> {
    let deadline = tokio::time::Instant::now() + timeout.0;
    let mut done = 0usize;
    while done < expected {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(LoopEvent::Acked)) if qos != QoS::AtMostOnce => done += 1,
            Ok(Some(LoopEvent::Written)) if qos == QoS::AtMostOnce => done += 1,
            Ok(Some(LoopEvent::Lost(e))) => return Err(e.into()),
            Ok(None) => return Err(MqttError::Closed),
            Ok(Some(_)) => {}
            Err(_) => {
                return Err(MqttError::Unacknowledged {
                    missing: expected - done,
                    expected,
                    timeout,
                })
            }
        }
    }
    Ok(())
}
