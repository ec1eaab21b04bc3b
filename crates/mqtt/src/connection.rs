//! One client connection: CONNECT and authentication, then packets both ways
//! between the socket and the client's rumqttd link, with perch's checks in
//! between (topic ACLs, payload limit, inflight limit, keep-alive, wills).
//!
//! The router (rumqttd) keeps sessions, subscriptions, QoS state and retained
//! messages; this task owns everything rumqttd has no hook for.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Packet,
    PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish, SubAck,
    SubscribeReasonCode,
};
use rumqttd::Notification;
use tracing::Instrument;

use super::acl::{invalid_filter, invalid_topic_name, Access};
use super::codec::{self, CodecError, Version};
use super::explorer::Inbound;
use super::transport::Transport;
use super::Shared;

/// A write to a client that takes longer is given up on, and the client
/// dropped: a stuck subscriber must not hold resources forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed logins wait this long before the answer, slowing guessing.
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(500);

/// Why a session ended, which decides whether the will is published.
enum End {
    /// DISCONNECT from the client: no will (unless v5 asked for it).
    Clean {
        with_will: bool,
    },
    /// Anything else: network error, keep-alive, protocol violation.
    Abnormal(String),
    /// The router closed the session (another client took the client id).
    TakenOver,
    ServerShutdown,
}

pub async fn serve(transport: Transport, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("mqtt", %peer, via = transport.kind(), client_id = tracing::field::Empty);
    async move {
        if let Err(e) = session(transport, shared).await {
            tracing::debug!(error = %e, "connection closed");
        }
    }
    .instrument(span)
    .await
}

/// Owns a connection slot; releases it on drop.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.counters.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn write_packets(
    t: &mut Transport,
    version: Version,
    packets: Vec<Packet>,
) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(256);
    for p in packets {
        codec::encode(version, p, &mut out).map_err(|e| e.to_string())?;
    }
    match tokio::time::timeout(WRITE_TIMEOUT, t.write_all(&out)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("client stopped reading".into()),
    }
}

fn connack(
    code: ConnectReturnCode,
    session_present: bool,
    props: Option<ConnAckProperties>,
) -> Packet {
    Packet::ConnAck(
        ConnAck {
            session_present,
            code,
        },
        props,
    )
}

/// Maps a failure to the code each protocol version has for it.
fn refusal(version: Version, v5: ConnectReturnCode, v311: ConnectReturnCode) -> ConnectReturnCode {
    match version {
        Version::V5 => v5,
        Version::V311 => v311,
    }
}

async fn session(mut t: Transport, shared: Arc<Shared>) -> Result<(), String> {
    let cfg = &shared.config;
    let max_packet = cfg.max_payload_bytes.0 as usize + 64 * 1024;
    // CONNECT, within the connect timeout.
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout.std();
    let (version, packet) = loop {
        match codec::peek_connect_version(&buf) {
            Ok(version) => match codec::decode(version, &mut buf, max_packet) {
                Ok(p) => break (version, p),
                Err(CodecError::Incomplete(_)) => {}
                Err(e) => {
                    let _ = write_packets(
                        &mut t,
                        version,
                        vec![connack(ConnectReturnCode::MalformedPacket, false, None)],
                    )
                    .await;
                    return Err(format!("bad CONNECT: {e}"));
                }
            },
            Err(CodecError::Incomplete(_)) => {}
            Err(CodecError::UnsupportedLevel(level)) => {
                let _ = write_packets(
                    &mut t,
                    Version::V311,
                    vec![connack(
                        ConnectReturnCode::RefusedProtocolVersion,
                        false,
                        None,
                    )],
                )
                .await;
                return Err(format!("unsupported protocol level {level}"));
            }
            Err(e) => return Err(format!("not MQTT: {e}")),
        }
        match tokio::time::timeout_at(deadline, t.read_into(&mut buf)).await {
            Ok(Ok(0)) => return Err("closed before CONNECT".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNECT within mqtt.connect_timeout".into()),
        }
    };
    let Packet::Connect(connect, props, will, will_props, login) = packet else {
        return Err("the first packet must be CONNECT".into());
    };
    tracing::Span::current().record("client_id", connect.client_id.as_str());

    // Who is this?
    let access = match login {
        Some(login) => {
            let accounts = shared.accounts.clone();
            let (user, password) = (login.username.clone(), login.password.clone());
            let verified = tokio::task::spawn_blocking(move || accounts.verify(&user, &password))
                .await
                .ok()
                .flatten();
            match verified {
                Some(info) => Access::for_user(&info),
                None => {
                    shared
                        .counters
                        .auth_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                    let code = refusal(
                        version,
                        ConnectReturnCode::BadUserNamePassword,
                        ConnectReturnCode::BadUserNamePassword,
                    );
                    write_packets(&mut t, version, vec![connack(code, false, None)]).await?;
                    return Err(format!(
                        "bad user name or password for {:?}",
                        login.username
                    ));
                }
            }
        }
        None if cfg.allow_anonymous => Access::Everything,
        None => {
            shared
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            write_packets(
                &mut t,
                version,
                vec![connack(ConnectReturnCode::NotAuthorized, false, None)],
            )
            .await?;
            return Err("anonymous client refused (mqtt.allow_anonymous = false)".into());
        }
    };
    if let Some(w) = &will {
        let topic = String::from_utf8_lossy(&w.topic);
        if invalid_topic_name(&topic).is_some() || !access.can_publish(&topic) {
            write_packets(
                &mut t,
                version,
                vec![connack(ConnectReturnCode::NotAuthorized, false, None)],
            )
            .await?;
            return Err(format!("will topic {topic:?} not allowed"));
        }
    }
    // A connection slot.
    if shared.counters.connections.fetch_add(1, Ordering::SeqCst) >= cfg.max_connections {
        shared.counters.connections.fetch_sub(1, Ordering::SeqCst);
        let code = refusal(
            version,
            ConnectReturnCode::ServerBusy,
            ConnectReturnCode::ServiceUnavailable,
        );
        write_packets(&mut t, version, vec![connack(code, false, None)]).await?;
        return Err(format!(
            "connection limit of {} reached (mqtt.max_connections)",
            cfg.max_connections
        ));
    }
    let _slot = Slot(shared.clone());

    let mut client_id = connect.client_id.clone();
    let mut assigned = None;
    if client_id.is_empty() {
        if !connect.clean_session && version == Version::V311 {
            write_packets(
                &mut t,
                version,
                vec![connack(
                    ConnectReturnCode::ClientIdentifierNotValid,
                    false,
                    None,
                )],
            )
            .await?;
            return Err("empty client id with a persistent session".into());
        }
        client_id = format!("perch-{:016x}", rand::random::<u64>());
        assigned = Some(client_id.clone());
    }
    shared.wills.cancel(&client_id);

    let topic_alias_max = props.as_ref().and_then(|p| p.topic_alias_max).unwrap_or(0);
    let (mut tx, mut rx, session_present) = shared
        .links
        .connect(&client_id, connect.clean_session, topic_alias_max)
        .await
        .map_err(|e| format!("router refused the session: {e}"))?;
    let ack_props = match version {
        Version::V5 => Some(ConnAckProperties {
            assigned_client_identifier: assigned,
            receive_max: Some(cfg.max_inflight.min(u16::MAX as usize) as u16),
            max_packet_size: Some(max_packet.min(u32::MAX as usize) as u32),
            retain_available: Some(1),
            wildcard_subscription_available: Some(1),
            shared_subscription_available: Some(1),
            ..Default::default()
        }),
        Version::V311 => None,
    };
    write_packets(
        &mut t,
        version,
        vec![connack(
            ConnectReturnCode::Success,
            session_present,
            ack_props,
        )],
    )
    .await?;
    shared.counters.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        clean = connect.clean_session,
        keep_alive = connect.keep_alive,
        v5 = version == Version::V5,
        "client connected"
    );

    let client: Arc<str> = Arc::from(client_id.as_str());
    let mut state = State {
        version,
        access,
        client: client.clone(),
        max_payload: cfg.max_payload_bytes.0 as usize,
        max_packet,
        max_inflight: cfg.max_inflight,
        inflight: HashSet::new(),
        denied_qos2: HashSet::new(),
        sub_denials: HashMap::new(),
        aliases: HashMap::new(),
    };
    let keep_alive = Duration::from_secs(connect.keep_alive as u64).mul_f32(1.5);
    let end = run(
        &mut t, &mut buf, &mut tx, &mut rx, &mut state, &shared, keep_alive,
    )
    .await;

    // Wills are perch's, not the router's, so they can be delayed (v5),
    // checked against the ACL and delivered even if the link is gone.
    let publish_will = match &end {
        End::Clean { with_will } => *with_will,
        End::Abnormal(_) | End::TakenOver => true,
        End::ServerShutdown => false,
    };
    if let (true, Some(w)) = (publish_will, will) {
        let delay = will_props
            .as_ref()
            .and_then(|p| p.delay_interval)
            .unwrap_or(0);
        shared.wills.schedule(
            client_id.clone(),
            w,
            Duration::from_secs(delay as u64),
            shared.clone(),
        );
    }
    // Tell the router the session ended (it keeps persistent sessions),
    // unless the router ended it: its connection id may already be reused.
    if !matches!(end, End::TakenOver) {
        let _ = tx
            .send(Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            ))
            .await;
    }
    if let End::ServerShutdown = end {
        if version == Version::V5 {
            let d = Disconnect {
                reason_code: DisconnectReasonCode::ServerShuttingDown,
            };
            let _ = write_packets(&mut t, version, vec![Packet::Disconnect(d, None)]).await;
        }
    }
    t.close().await;
    match end {
        End::Abnormal(reason) => {
            tracing::info!(%reason, "client gone");
            Ok(())
        }
        _ => {
            tracing::info!("client disconnected");
            Ok(())
        }
    }
}

struct State {
    version: Version,
    access: Access,
    client: Arc<str>,
    max_payload: usize,
    max_packet: usize,
    max_inflight: usize,
    /// Packet ids of the client's QoS 1/2 publishes not yet acknowledged.
    inflight: HashSet<u16>,
    /// QoS 2 publishes refused by the ACL: perch completes their handshake.
    denied_qos2: HashSet<u16>,
    /// SUBSCRIBE packet id → per requested filter, the refusal code or None
    /// where the router decides.
    sub_denials: HashMap<u16, Vec<Option<SubscribeReasonCode>>>,
    /// v5 topic aliases, to know the topic of an aliased publish.
    aliases: HashMap<u16, String>,
}

/// Disconnects a v5 client with a reason (v3.1.1 has none to send).
async fn kick(t: &mut Transport, version: Version, reason: DisconnectReasonCode) {
    if version == Version::V5 {
        let _ = write_packets(
            t,
            version,
            vec![Packet::Disconnect(
                Disconnect {
                    reason_code: reason,
                },
                None,
            )],
        )
        .await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    t: &mut Transport,
    buf: &mut BytesMut,
    tx: &mut LinkTx,
    rx: &mut LinkRx,
    state: &mut State,
    shared: &Shared,
    keep_alive: Duration,
) -> End {
    let mut shutdown = shared.shutdown.clone();
    let mut last_heard = Instant::now();
    // Packets already in the buffer (sent together with CONNECT) count too.
    let mut pending_input = !buf.is_empty();
    loop {
        if pending_input {
            pending_input = false;
            match handle_input(t, buf, tx, state, shared).await {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(end) => return end,
            }
        }
        let idle_limit = if keep_alive.is_zero() {
            Duration::from_secs(365 * 86_400)
        } else {
            keep_alive
        };
        let reading = state.inflight.len() < state.max_inflight;
        tokio::select! {
            r = t.read_into(buf), if reading => {
                match r {
                    Ok(0) => return End::Abnormal("connection closed by the client".into()),
                    Ok(_) => {
                        last_heard = Instant::now();
                        pending_input = true;
                    }
                    Err(e) => return End::Abnormal(e.to_string()),
                }
            }
            n = rx.next() => {
                match n {
                    Ok(Some(first)) => {
                        if let Some(end) = handle_output(t, first, rx, state, shared).await {
                            return end;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return End::Abnormal(format!("router link closed: {e}")),
                }
            }
            _ = tokio::time::sleep_until((last_heard + idle_limit).into()) => {
                kick(t, state.version, DisconnectReasonCode::KeepAliveTimeout).await;
                return End::Abnormal("keep-alive timeout".into());
            }
            _ = base::stopping(&mut shutdown) => return End::ServerShutdown,
        }
    }
}

/// Decodes and handles every complete packet in `buf`. `Ok(Some(end))` ends
/// the session cleanly, `Err(end)` on a violation.
async fn handle_input(
    t: &mut Transport,
    buf: &mut BytesMut,
    tx: &mut LinkTx,
    state: &mut State,
    shared: &Shared,
) -> Result<Option<End>, End> {
    let mut to_router: Vec<Packet> = Vec::new();
    let mut to_client: Vec<Packet> = Vec::new();
    let mut accepted: Vec<Inbound> = Vec::new();
    let mut end = None;
    loop {
        let packet = match codec::decode(state.version, buf, state.max_packet) {
            Ok(p) => p,
            Err(CodecError::Incomplete(_)) => break,
            Err(CodecError::TooLarge { .. }) => {
                shared
                    .counters
                    .rejected_too_large
                    .fetch_add(1, Ordering::Relaxed);
                kick(t, state.version, DisconnectReasonCode::PacketTooLarge).await;
                return Err(End::Abnormal(format!(
                    "packet over the limit of {} bytes (mqtt.max_payload_bytes)",
                    state.max_payload
                )));
            }
            Err(e) => {
                shared
                    .counters
                    .rejected_malformed
                    .fetch_add(1, Ordering::Relaxed);
                kick(t, state.version, DisconnectReasonCode::MalformedPacket).await;
                return Err(End::Abnormal(e.to_string()));
            }
        };
        match packet {
            Packet::Publish(publish, props) => {
                let raw = publish.serialize();
                let (qos, pkid) = (raw[0] >> 1 & 0b11, u16::from_be_bytes([raw[1], raw[2]]));
                let mut topic = match std::str::from_utf8(&publish.topic) {
                    Ok(s) => s.to_string(),
                    Err(_) => {
                        kick(t, state.version, DisconnectReasonCode::TopicNameInvalid).await;
                        return Err(End::Abnormal("topic is not UTF-8".into()));
                    }
                };
                if let Some(alias) = props.as_ref().and_then(|p| p.topic_alias) {
                    if topic.is_empty() {
                        match state.aliases.get(&alias) {
                            Some(t) => topic = t.clone(),
                            None => {
                                kick(t, state.version, DisconnectReasonCode::TopicAliasInvalid)
                                    .await;
                                return Err(End::Abnormal(format!("unknown topic alias {alias}")));
                            }
                        }
                    } else {
                        state.aliases.insert(alias, topic.clone());
                    }
                }
                if let Some(why) = invalid_topic_name(&topic) {
                    shared
                        .counters
                        .rejected_malformed
                        .fetch_add(1, Ordering::Relaxed);
                    kick(t, state.version, DisconnectReasonCode::TopicNameInvalid).await;
                    return Err(End::Abnormal(format!("invalid topic {topic:?}: {why}")));
                }
                if publish.payload.len() > state.max_payload {
                    shared
                        .counters
                        .rejected_too_large
                        .fetch_add(1, Ordering::Relaxed);
                    kick(t, state.version, DisconnectReasonCode::PacketTooLarge).await;
                    return Err(End::Abnormal(format!(
                        "payload of {} bytes over mqtt.max_payload_bytes ({})",
                        publish.payload.len(),
                        state.max_payload
                    )));
                }
                if !state.access.can_publish(&topic) {
                    shared.counters.acl_denied.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%topic, "publish refused by the ACL");
                    // v3.1.1 has no way to say no: acknowledge and drop, as
                    // Mosquitto does; v5 says "not authorized".
                    match qos {
                        1 => to_client.push(Packet::PubAck(
                            PubAck {
                                pkid,
                                reason: PubAckReason::NotAuthorized,
                            },
                            None,
                        )),
                        2 => {
                            state.denied_qos2.insert(pkid);
                            to_client.push(Packet::PubRec(
                                PubRec {
                                    pkid,
                                    reason: PubRecReason::NotAuthorized,
                                },
                                None,
                            ));
                        }
                        _ => {}
                    }
                    continue;
                }
                let now = shared.clock.now_ms();
                if publish.retain {
                    if let Err(e) =
                        shared
                            .retained
                            .record(&topic, &publish.payload, qos.min(2), now)
                    {
                        tracing::warn!(error = %e, "could not persist a retained message");
                    }
                }
                if qos > 0 {
                    state.inflight.insert(pkid);
                }
                shared.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                shared
                    .counters
                    .bytes_in
                    .fetch_add(publish.payload.len() as u64, Ordering::Relaxed);
                accepted.push(Inbound {
                    topic,
                    payload: publish.payload.clone(),
                    qos,
                    retain: publish.retain,
                    client_id: state.client.clone(),
                    time_ms: now,
                });
                to_router.push(Packet::Publish(publish, props));
            }
            Packet::Subscribe(mut sub, props) => {
                let decisions: Vec<Option<SubscribeReasonCode>> = sub
                    .filters
                    .iter()
                    .map(|f| {
                        if invalid_filter(&f.path).is_some() {
                            Some(match state.version {
                                Version::V5 => SubscribeReasonCode::TopicFilterInvalid,
                                Version::V311 => SubscribeReasonCode::Failure,
                            })
                        } else if !state.access.can_subscribe(&f.path) {
                            shared.counters.acl_denied.fetch_add(1, Ordering::Relaxed);
                            Some(match state.version {
                                Version::V5 => SubscribeReasonCode::NotAuthorized,
                                Version::V311 => SubscribeReasonCode::Failure,
                            })
                        } else {
                            None
                        }
                    })
                    .collect();
                if decisions.iter().all(Option::is_some) {
                    to_client.push(Packet::SubAck(
                        SubAck {
                            pkid: sub.pkid,
                            return_codes: decisions.into_iter().flatten().collect(),
                        },
                        None,
                    ));
                    continue;
                }
                if decisions.iter().any(Option::is_some) {
                    let mut keep = decisions.iter().map(Option::is_none);
                    sub.filters.retain(|_| keep.next().unwrap_or(false));
                    state.sub_denials.insert(sub.pkid, decisions);
                }
                to_router.push(Packet::Subscribe(sub, props));
            }
            Packet::PubRel(rel, props) => {
                if state.denied_qos2.remove(&rel.pkid) {
                    to_client.push(Packet::PubComp(
                        PubComp {
                            pkid: rel.pkid,
                            reason: PubCompReason::Success,
                        },
                        None,
                    ));
                } else {
                    to_router.push(Packet::PubRel(rel, props));
                }
            }
            Packet::PingReq(_) => to_client.push(Packet::PingResp(PingResp)),
            Packet::Disconnect(d, _) => {
                end = Some(End::Clean {
                    with_will: d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
                });
                break;
            }
            Packet::Connect(..) => {
                kick(t, state.version, DisconnectReasonCode::ProtocolError).await;
                return Err(End::Abnormal("second CONNECT".into()));
            }
            p @ (Packet::PubAck(..)
            | Packet::PubRec(..)
            | Packet::PubComp(..)
            | Packet::Unsubscribe(..)) => to_router.push(p),
            other => {
                kick(t, state.version, DisconnectReasonCode::ProtocolError).await;
                return Err(End::Abnormal(format!(
                    "unexpected packet from a client: {other:?}"
                )));
            }
        }
    }
    // The collector sees messages before routing; a full collector makes
    // this client wait, never drops.
    if !accepted.is_empty() && shared.collector.send(accepted).await.is_err() {
        return Err(End::ServerShutdown);
    }
    if let Some(last) = to_router.pop() {
        tx.buffer().extend(to_router);
        if let Err(e) = tx.send(last).await {
            return Err(End::Abnormal(format!("router link closed: {e}")));
        }
    }
    if !to_client.is_empty() {
        if let Err(e) = write_packets(t, state.version, to_client).await {
            return Err(End::Abnormal(e));
        }
    }
    Ok(end)
}

/// Writes what the router has for the client: the first notification and
/// everything else already queued.
async fn handle_output(
    t: &mut Transport,
    first: Notification,
    rx: &mut LinkRx,
    state: &mut State,
    shared: &Shared,
) -> Option<End> {
    let mut notifications = vec![first];
    while let Ok(Some(n)) = rx.recv_deadline(Instant::now()) {
        notifications.push(n);
        if notifications.len() >= 1024 {
            break;
        }
    }
    let mut packets = Vec::with_capacity(notifications.len());
    let mut unscheduled = false;
    let mut end = None;
    for n in notifications {
        if let Notification::Disconnect(..) = n {
            end = Some(End::TakenOver);
        }
        let packet: Option<Packet> = n.into();
        match packet {
            None => unscheduled = true,
            Some(Packet::PubAck(ack, props)) => {
                state.inflight.remove(&ack.pkid);
                packets.push(Packet::PubAck(ack, props));
            }
            Some(Packet::PubRec(rec, props)) => {
                state.inflight.remove(&rec.pkid);
                packets.push(Packet::PubRec(rec, props));
            }
            Some(Packet::SubAck(ack, props)) => {
                packets.push(Packet::SubAck(merge_suback(ack, state), props))
            }
            Some(p @ Packet::Publish(..)) => {
                shared.counters.messages_out.fetch_add(1, Ordering::Relaxed);
                packets.push(p);
            }
            Some(p) => packets.push(p),
        }
    }
    if !packets.is_empty() {
        if let Err(e) = write_packets(t, state.version, packets).await {
            return Some(End::Abnormal(e));
        }
    }
    // A link that does not answer Unschedule is never scheduled again.
    if unscheduled && rx.wake().await.is_err() {
        return Some(End::Abnormal("router link closed".into()));
    }
    end
}

/// Puts perch's refusals back in the places of the filters it kept from the
/// router.
fn merge_suback(ack: SubAck, state: &mut State) -> SubAck {
    let Some(decisions) = state.sub_denials.remove(&ack.pkid) else {
        return ack;
    };
    let mut from_router = ack.return_codes.into_iter();
    let return_codes = decisions
        .into_iter()
        .map(|d| d.unwrap_or_else(|| from_router.next().unwrap_or(SubscribeReasonCode::Failure)))
        .collect();
    SubAck {
        pkid: ack.pkid,
        return_codes,
    }
}

/// Builds a publish with a given QoS, retain flag and packet id (rumqttd's
/// fields for them are crate-private; its serialized form is public).
pub fn make_publish(topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) -> Publish {
    let mut raw = BytesMut::with_capacity(5 + topic.len() + payload.len());
    raw.extend_from_slice(&[0x30 | (qos.min(2) << 1) | retain as u8]);
    raw.extend_from_slice(&pkid.to_be_bytes());
    raw.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    raw.extend_from_slice(topic.as_bytes());
    raw.extend_from_slice(payload);
    Publish::deserialize(raw.freeze())
}
