//! The MQTT bridge: publishes queued messages to an upstream broker with
//! rumqttc, `remote_prefix` prepended to the topic. One connection at a
//! time, a clean session each: a batch (up to `batch_max` messages in flight)
//! is committed once every message of it is acknowledged (PUBACK for QoS 1,
//! PUBCOMP for QoS 2; for QoS 0, once written to the socket). A connection
//! lost halfway resends the whole batch on the next one: at-least-once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio::sync::mpsc;

use super::{item, pause, Backoff, Pace, Target};

enum Ev {
    Connected,
    Refused(String),
    Acked,
    Written,
    Lost(String),
}

pub async fn run(t: Arc<Target>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let c = &t.config;
    let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "perch".into());
    let prefix = c.remote_prefix.replace("{hostname}", &hostname);
    let opts = match options(&t, &hostname) {
        Ok(o) => o,
        Err(e) => {
            t.error(format!("cannot set up MQTT: {e}"));
            return;
        }
    };
    let qos = match c.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let mut backoff = Backoff::new(c.max_backoff.0);
    let mut pace = Pace::new(&t);
    tracing::info!(url = %super::redact(&c.url), %prefix, "forwarding MQTT messages");
    while !*stop.borrow() {
        let (client, mut eventloop) = AsyncClient::new(opts.clone(), c.batch_max + 16);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        if a.code == rumqttc::ConnectReturnCode::Success {
                            Ev::Connected
                        } else {
                            Ev::Refused(format!("the broker refused the connection: {:?}", a.code))
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Incoming(Packet::PubComp(_))) => Ev::Acked,
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => Ev::Written,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = ev_tx.send(Ev::Lost(e.to_string()));
                        return;
                    }
                };
                if ev_tx.send(ev).is_err() {
                    return;
                }
            }
        });
        let result = session(
            &t,
            &client,
            &mut ev_rx,
            &prefix,
            qos,
            &mut pace,
            &mut backoff,
            &mut stop,
        )
        .await;
        let _ = client.try_disconnect();
        poller.abort();
        t.set_connected(false);
        t.set_catching_up(false);
        match result {
            Ok(()) => break,
            Err(e) => {
                t.error(e);
                if !pause(backoff.step(), &mut stop).await {
                    break;
                }
            }
        }
    }
}

fn options(t: &Target, hostname: &str) -> Result<MqttOptions, String> {
    let c = &t.config;
    let url = url::Url::parse(&c.url).map_err(|e| e.to_string())?;
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
            rumqttc::TlsConfiguration::Rustls(super::tls::client_config(c.ca_file.as_deref())?),
        ));
    }
    Ok(o)
}

/// One connection: waits for CONNACK, then sends batches until the
/// connection is lost (Err) or perch stops (Ok).
#[allow(clippy::too_many_arguments)]
async fn session(
    t: &Target,
    client: &AsyncClient,
    ev: &mut mpsc::UnboundedReceiver<Ev>,
    prefix: &str,
    qos: QoS,
    pace: &mut Pace,
    backoff: &mut Backoff,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let c = &t.config;
    match tokio::time::timeout(c.timeout.0, ev.recv()).await {
        Ok(Some(Ev::Connected)) => {}
        Ok(Some(Ev::Refused(e))) | Ok(Some(Ev::Lost(e))) => return Err(e),
        Ok(_) => return Err("connection closed".into()),
        Err(_) => return Err(format!("no CONNACK within {}", c.timeout)),
    }
    t.set_connected(true);
    backoff.reset();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        pace.update_rate(t);
        if !t.wait_for_priority(stop).await {
            return Ok(());
        }
        // Anything but acknowledgements between batches: the connection went.
        while let Ok(e) = ev.try_recv() {
            if let Ev::Lost(e) = e {
                return Err(e);
            }
        }
        let batch = t
            .queue
            .peek(c.batch_max, super::SEND_BATCH_BYTES)
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            t.set_catching_up(false);
            tokio::select! {
                _ = t.queue.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = base::stopping(stop) => {}
                e = ev.recv() => match e {
                    Some(Ev::Lost(e)) => return Err(e),
                    None => return Err("connection closed".into()),
                    _ => {}
                },
            }
            continue;
        };
        let mut bytes = 0usize;
        let mut expected = 0usize;
        let mut bad = 0u64;
        for e in &batch {
            let m = match item::decode_message(e.payload()) {
                Ok(m) => m,
                Err(_) => {
                    bad += 1;
                    continue;
                }
            };
            let topic = format!("{prefix}{}", m.topic);
            bytes += topic.len() + m.payload.len();
            client
                .publish(topic, qos, m.retain, m.payload.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            expected += 1;
        }
        let deadline = tokio::time::Instant::now() + c.timeout.0;
        let mut done = 0usize;
        while done < expected {
            match tokio::time::timeout_at(deadline, ev.recv()).await {
                Ok(Some(Ev::Acked)) if qos != QoS::AtMostOnce => done += 1,
                Ok(Some(Ev::Written)) if qos == QoS::AtMostOnce => done += 1,
                Ok(Some(Ev::Lost(e))) => return Err(e),
                Ok(None) => return Err("connection closed".into()),
                Ok(Some(_)) => {}
                Err(_) => {
                    return Err(format!(
                        "{} of {expected} messages unacknowledged after {}",
                        expected - done,
                        c.timeout
                    ))
                }
            }
        }
        t.queue.commit(last).map_err(|e| e.to_string())?;
        t.set_catching_up(batch.len() >= c.batch_max);
        t.counters
            .sent
            .fetch_add(expected as u64, Ordering::Relaxed);
        if bad > 0 {
            t.counters.rejected.fetch_add(bad, Ordering::Relaxed);
        }
        let wait = pace.delay_for(bytes);
        if !wait.is_zero() && !pause(wait, stop).await {
            return Ok(());
        }
    }
}
