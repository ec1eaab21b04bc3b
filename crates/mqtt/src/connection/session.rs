//! What one connection knows once its CONNECT is accepted, and its loop:
//! input from the client, deliveries from the router, keep-alive and
//! shutdown. The packet handlers are in `publish` and `subscribe`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use config::MqttConfig;
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectProperties, DisconnectReasonCode, LastWill, Packet, PingResp,
};
use rumqttd::Notification;

use super::connect::Slot;
use super::error::{SessionError, Violation, WriteError};
use super::publish::InFlight;
use super::subscribe::RefusedFilters;
use super::write_packets;
use crate::acl::Access;
use crate::codec::{self, CodecError, Version};
use crate::explorer::Inbound;
use crate::transport::Transport;
use crate::Shared;

/// Notifications from the router written to the client in one go, at most.
const MAX_DELIVERY_BATCH: usize = 1024;

/// Topic aliases a v5 client may set (its CONNACK's Topic Alias Maximum),
/// as Mosquitto's default.
pub(super) const TOPIC_ALIAS_MAX: u16 = 10;

/// A client connection after its CONNECT was accepted: what perch knows of
/// it beside the router's session.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) transport: Transport,
    /// Bytes read from the client and not decoded yet.
    pub(super) input: BytesMut,
    pub(super) version: Version,
    /// As the client sent it, or assigned by perch.
    pub(super) client_id: Arc<str>,
    /// This connection's serial among those of its client id.
    pub(super) serial: u64,
    /// The user it signed in as and its address, for the problems it causes.
    pub(super) origin: Arc<crate::collector::Origin>,
    pub(super) access: Access,
    pub(super) will: Option<Will>,
    /// How long the router keeps the session after the connection; `None`
    /// for ever.
    pub(super) session_expiry: Option<Duration>,
    /// How long the client may stay silent (see [`idle_limit`]).
    pub(super) idle_limit: Duration,
    pub(super) limits: Limits,
    pub(super) to_router: LinkTx,
    pub(super) from_router: LinkRx,
    pub(super) in_flight: InFlight,
    pub(super) refused_filters: RefusedFilters,
    /// v5 topic aliases the client set, to know the topic of an aliased
    /// publish.
    pub(super) topic_aliases: HashMap<u16, String>,
    /// v5 topic aliases perch uses towards the client.
    pub(super) server_aliases: ServerAliases,
    /// Since when the input holds the start of a packet not yet whole
    /// (`mqtt.read_timeout`).
    pub(super) partial_since: Option<Instant>,
    /// Dropped last, once the connection is closed.
    pub(super) _slot: Slot,
}

/// The client's will. Wills are perch's, not the router's, so they can be
/// delayed (v5), checked against the ACL and delivered even if the link is
/// gone.
pub(super) struct Will {
    pub(super) message: LastWill,
    /// v5 will delay interval.
    pub(super) delay: Duration,
    /// v5 will properties, for the message published.
    pub(super) properties: Option<rumqttd::protocol::PublishProperties>,
}

/// The limits perch holds a client to, from the configuration.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    /// mqtt.max_payload_bytes.
    pub(super) max_payload: usize,
    /// The largest packet decoded: a largest payload with room for its
    /// topic and properties.
    pub(super) max_packet: usize,
    /// mqtt.max_inflight: unacknowledged QoS 1/2 publishes from the client
    /// before perch stops reading its socket.
    pub(super) max_inflight: usize,
    /// mqtt.read_timeout: how long a packet begun may take to complete.
    pub(super) read_timeout: Duration,
}

impl Limits {
    /// The Receive Maximum announced to v5 clients.
    pub(super) fn receive_max(&self) -> u16 {
        self.max_inflight.clamp(1, u16::MAX as usize) as u16
    }

    pub(super) fn from_config(cfg: &MqttConfig) -> Limits {
        let max_payload = cfg.max_payload_bytes.0 as usize;
        Limits {
            max_payload,
            max_packet: max_payload + 64 * 1024,
            max_inflight: cfg.max_inflight,
            read_timeout: cfg.read_timeout.std(),
        }
    }
}

/// Topic aliases perch sets on publishes to a v5 client that allows them
/// (its CONNECT's Topic Alias Maximum): the first publish on a topic sets
/// an alias, later ones send the alias alone. Topics beyond the maximum go
/// without one.
#[derive(Default)]
pub(super) struct ServerAliases {
    max: u16,
    by_topic: HashMap<bytes::Bytes, u16>,
}

impl ServerAliases {
    /// Aliases perch keeps per client at most, whatever the client allows.
    const MAX: u16 = 64;

    pub(super) fn new(client_max: u16) -> ServerAliases {
        ServerAliases {
            max: client_max.min(Self::MAX),
            by_topic: HashMap::new(),
        }
    }

    fn apply(
        &mut self,
        publish: &mut rumqttd::protocol::Publish,
        props: &mut Option<rumqttd::protocol::PublishProperties>,
    ) {
        if self.max == 0 || publish.topic.is_empty() {
            return;
        }
        let alias = match self.by_topic.get(&publish.topic) {
            Some(&alias) => {
                publish.topic = bytes::Bytes::new();
                alias
            }
            None if self.by_topic.len() < self.max as usize => {
                let alias = self.by_topic.len() as u16 + 1;
                // A copy: the topic may share its buffer with a payload.
                let topic = bytes::Bytes::copy_from_slice(&publish.topic);
                self.by_topic.insert(topic, alias);
                alias
            }
            None => return,
        };
        props.get_or_insert_with(Default::default).topic_alias = Some(alias);
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// 1.5 × the client's keep-alive, as the spec says; a keep-alive of 0 turns
/// the check off.
pub(super) fn idle_limit(keep_alive_secs: u16) -> Duration {
    let limit = Duration::from_secs(keep_alive_secs as u64).mul_f32(1.5);
    if limit.is_zero() {
        Duration::from_secs(365 * 86_400)
    } else {
        limit
    }
}

/// How a session ended, which decides whether the will is published.
pub(super) enum End {
    /// DISCONNECT from the client: no will, unless a v5 client asked for it.
    Disconnected {
        with_will: bool,
    },
    /// Network error, keep-alive, protocol violation.
    Dropped(SessionError),
    /// The router closed the session (another client took the client id).
    TakenOver,
    ServerShutdown,
}

/// What the packets of one read produce, passed on together: one collector
/// hand-over, one router wake-up and one write per read, however many
/// packets it held.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) to_collector: Vec<Inbound>,
    pub(super) to_router: Vec<Packet>,
    pub(super) to_client: Vec<Packet>,
}

/// What the session loop waits for. Held for one turn of the loop: boxing
/// the router's (large) notification would cost an allocation per delivery.
#[allow(clippy::large_enum_variant)]
enum Event {
    Input(io::Result<usize>),
    Router(Result<Option<Notification>, Box<LinkError>>),
    Silence,
    /// A packet begun did not complete within `mqtt.read_timeout`.
    Stalled,
    Shutdown,
}

impl Session {
    pub(super) async fn run(mut self) {
        let end = self.relay().await;
        self.finish(end).await;
    }

    async fn relay(&mut self) -> End {
        let mut shutdown = self.shared.shutdown.clone();
        let mut last_heard = Instant::now();
        // Packets sent together with the CONNECT are in the buffer already.
        let mut unhandled_input = !self.input.is_empty();
        loop {
            if unhandled_input {
                unhandled_input = false;
                if let Some(end) = self.handle_input().await {
                    return end;
                }
            }
            // Past the inflight limit a v3.1.1 client is not read, so TCP
            // holds it back until the router's acknowledgements catch up; a
            // v5 client was told the limit (Receive Maximum) and is
            // disconnected if it goes past it.
            let reading = self.version == Version::V5
                || self.in_flight.unacknowledged.len() < self.limits.max_inflight;
            if !reading {
                // perch is not reading: the client is not late.
                self.partial_since = self.partial_since.map(|_| Instant::now());
            }
            let stalled_at = self.partial_since.map(|t| t + self.limits.read_timeout);
            let event = tokio::select! {
                read = self.transport.read_into(&mut self.input), if reading => Event::Input(read),
                n = self.from_router.next() => Event::Router(n.map_err(Box::new)),
                _ = tokio::time::sleep_until((last_heard + self.idle_limit).into()) => Event::Silence,
                _ = sleep_until_some(stalled_at), if reading && stalled_at.is_some() => Event::Stalled,
                _ = base::stopping(&mut shutdown) => Event::Shutdown,
            };
            match event {
                Event::Input(Ok(0)) => return End::Dropped(SessionError::ClosedByClient),
                Event::Input(Ok(_)) => {
                    last_heard = Instant::now();
                    unhandled_input = true;
                }
                Event::Input(Err(e)) => return End::Dropped(SessionError::Read(e)),
                Event::Router(Ok(Some(first))) => {
                    if let Some(end) = self.deliver(first).await {
                        return end;
                    }
                }
                Event::Router(Ok(None)) => {}
                Event::Router(Err(e)) => return End::Dropped(SessionError::RouterClosed(e)),
                Event::Silence => {
                    self.kick(DisconnectReasonCode::KeepAliveTimeout).await;
                    return End::Dropped(SessionError::KeepAliveTimeout);
                }
                Event::Stalled => {
                    self.kick(DisconnectReasonCode::KeepAliveTimeout).await;
                    let limit = self.limits.read_timeout;
                    return End::Dropped(SessionError::ReadTimeout { limit });
                }
                Event::Shutdown => return End::ServerShutdown,
            }
        }
    }

    /// Handles every complete packet read so far, then passes on what they
    /// produced.
    async fn handle_input(&mut self) -> Option<End> {
        let mut batch = Batch::default();
        let end = match self.handle_packets(&mut batch) {
            Ok(end) => end,
            Err(violation) => return Some(self.reject(violation).await),
        };
        match self.pass_on(batch).await {
            Ok(()) => end,
            Err(end) => Some(end),
        }
    }

    /// Decodes and handles packets until no complete one is left or the
    /// client disconnects. After a violation nothing of the batch is passed
    /// on.
    fn handle_packets(&mut self, batch: &mut Batch) -> Result<Option<End>, Violation> {
        while let Some(packet) = self.next_packet()? {
            if let Some(end) = self.handle_packet(packet, batch)? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// The next complete packet in the input, if there is one.
    fn next_packet(&mut self) -> Result<Option<Packet>, Violation> {
        match codec::decode(self.version, &mut self.input, self.limits.max_packet) {
            Ok(packet) => {
                self.partial_since = None;
                Ok(Some(packet))
            }
            Err(CodecError::Incomplete(_)) => {
                if self.input.is_empty() {
                    self.partial_since = None;
                } else if self.partial_since.is_none() {
                    self.partial_since = Some(Instant::now());
                }
                Ok(None)
            }
            Err(CodecError::TooLarge { .. }) => Err(Violation::PacketTooLarge {
                limit: self.limits.max_payload,
            }),
            Err(e) => Err(Violation::Undecodable(e)),
        }
    }

    fn handle_packet(
        &mut self,
        packet: Packet,
        batch: &mut Batch,
    ) -> Result<Option<End>, Violation> {
        match packet {
            Packet::Publish(publish, props) => self.on_publish(publish, props, batch)?,
            Packet::PubRel(rel, props) => self.on_pubrel(rel, props, batch),
            ack @ (Packet::PubAck(..) | Packet::PubRec(..) | Packet::PubComp(..)) => {
                self.on_delivery_ack(ack, batch)
            }
            Packet::Subscribe(sub, props) => self.on_subscribe(sub, props, batch),
            Packet::Unsubscribe(unsub, props) => self.on_unsubscribe(unsub, props, batch),
            Packet::PingReq(_) => self.on_pingreq(batch),
            Packet::Disconnect(disconnect, props) => {
                return Ok(Some(self.on_disconnect(disconnect, props)))
            }
            Packet::Connect(..) => return Err(Violation::SecondConnect),
            other => return Err(Violation::UnexpectedPacket(Box::new(other))),
        }
        Ok(None)
    }

    fn on_pingreq(&mut self, batch: &mut Batch) {
        batch.to_client.push(Packet::PingResp(PingResp));
    }

    /// A v5 DISCONNECT may change the Session Expiry Interval, except from
    /// 0 (MQTT-3.14.2-2: that is a protocol error, and the session ends).
    fn on_disconnect(
        &mut self,
        disconnect: Disconnect,
        props: Option<DisconnectProperties>,
    ) -> End {
        let asked = props.and_then(|p| p.session_expiry_interval);
        if asked.is_some() && self.session_expiry != Some(Duration::ZERO) {
            self.session_expiry = super::connect::session_expiry_secs(asked);
        }
        End::Disconnected {
            with_will: disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
        }
    }

    /// Counts a violation, tells a v5 client why, and ends the session.
    async fn reject(&mut self, violation: Violation) -> End {
        if let Some(counter) = violation.rejection_counter(&self.shared.counters) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.kick_with_reason(violation.reason_code(), Some(violation.to_string()))
            .await;
        self.drain_input().await;
        End::Dropped(violation.into())
    }

    /// Messages go to the collector before they are routed; a full collector
    /// makes this client wait, never drops.
    async fn pass_on(&mut self, batch: Batch) -> Result<(), End> {
        let Batch {
            to_collector,
            mut to_router,
            to_client,
        } = batch;
        if !to_collector.is_empty() && self.shared.collector.send(to_collector).await.is_err() {
            return Err(End::ServerShutdown);
        }
        if let Some(last) = to_router.pop() {
            // Buffered, then sent with the last: the router is woken once.
            self.to_router.buffer().extend(to_router);
            if let Err(e) = self.to_router.send(last).await {
                return Err(End::Dropped(SessionError::RouterClosed(Box::new(e))));
            }
        }
        if !to_client.is_empty() {
            self.write(to_client)
                .await
                .map_err(|e| End::Dropped(e.into()))?;
        }
        Ok(())
    }

    /// Writes what the router has for the client: `first` and whatever else
    /// is queued already.
    async fn deliver(&mut self, first: Notification) -> Option<End> {
        let mut notifications = vec![first];
        while let Ok(Some(n)) = self.from_router.recv_deadline(Instant::now()) {
            notifications.push(n);
            if notifications.len() >= MAX_DELIVERY_BATCH {
                break;
            }
        }
        let mut packets = Vec::with_capacity(notifications.len());
        let mut unscheduled = false;
        let mut end = None;
        for notification in notifications {
            if let Notification::Disconnect(..) = notification {
                end = Some(End::TakenOver);
            }
            match Option::<Packet>::from(notification) {
                Some(packet) => packets.push(self.outgoing(packet)),
                None => unscheduled = true,
            }
        }
        if !packets.is_empty() {
            if let Err(e) = self.write(packets).await {
                return Some(End::Dropped(e.into()));
            }
        }
        // A link that does not answer Unschedule is never scheduled again.
        if unscheduled {
            if let Err(e) = self.from_router.wake().await {
                return Some(End::Dropped(SessionError::WakeFailed(Box::new(e))));
            }
        }
        end
    }

    /// perch's share of a packet the router sends the client.
    fn outgoing(&mut self, packet: Packet) -> Packet {
        match packet {
            Packet::PubAck(ack, props) => {
                self.on_publish_acknowledged(ack.pkid);
                Packet::PubAck(ack, props)
            }
            Packet::PubRec(rec, props) => {
                // A v5 client's QoS 2 publish counts against the Receive
                // Maximum until its PUBCOMP (MQTT-4.9.0-2); a v3.1.1 one
                // until its PUBREC, as perch stops reading it at the limit.
                if self.version == Version::V311 {
                    self.on_publish_acknowledged(rec.pkid);
                    self.in_flight.awaiting_release.insert(rec.pkid);
                }
                Packet::PubRec(rec, props)
            }
            Packet::PubComp(comp, props) => {
                self.on_publish_acknowledged(comp.pkid);
                self.in_flight.awaiting_release.remove(&comp.pkid);
                Packet::PubComp(comp, props)
            }
            Packet::SubAck(ack, props) => Packet::SubAck(self.on_suback(ack), props),
            Packet::Publish(mut publish, mut props) => {
                self.shared
                    .counters
                    .messages_out
                    .fetch_add(1, Ordering::Relaxed);
                self.server_aliases.apply(&mut publish, &mut props);
                Packet::Publish(publish, props)
            }
            other => other,
        }
    }

    async fn finish(mut self, end: End) {
        let publish_will = match &end {
            End::Disconnected { with_will } => *with_will,
            End::Dropped(_) | End::TakenOver => true,
            End::ServerShutdown => false,
        };
        // Another connection that took the client id over (the router does
        // not always say so) carries the session on.
        let taken_over = !self.shared.departures.left(&self.client_id, self.serial)
            || matches!(end, End::TakenOver);
        // The will waits for its delay or the end of the session, whichever
        // comes first (MQTT-3.1.3-9); after a takeover only a will without
        // delay is due, the session goes on.
        if let (true, Some(will)) = (publish_will, self.will.take()) {
            let delay = match self.session_expiry {
                Some(expiry) => will.delay.min(expiry),
                None => will.delay,
            };
            if !taken_over || delay.is_zero() {
                self.shared.departures.schedule_will(
                    self.client_id.to_string(),
                    will.message,
                    will.properties,
                    delay,
                    self.shared.clone(),
                );
            }
        }
        // A kept session with an expiry ends that long after; another
        // connection that took it over decides for itself.
        if let (Some(expiry), false) = (self.session_expiry, taken_over) {
            if !expiry.is_zero() {
                self.shared.departures.schedule_session_end(
                    self.client_id.to_string(),
                    expiry,
                    self.shared.clone(),
                );
            }
        }
        // Tell the router the session ended (it keeps persistent sessions),
        // unless another connection took it over: the router ended this one
        // then, and its connection id may already be the new one's.
        if !taken_over {
            let disconnect = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            // An expiry of 0 (perhaps set by the client's DISCONNECT) ends a
            // session the router would otherwise keep.
            let props =
                (self.session_expiry == Some(Duration::ZERO)).then_some(DisconnectProperties {
                    session_expiry_interval: Some(0),
                    reason_string: None,
                    user_properties: Vec::new(),
                    server_reference: None,
                });
            let _ = self
                .to_router
                .send(Packet::Disconnect(disconnect, props))
                .await;
        }
        if let End::ServerShutdown = end {
            self.kick(DisconnectReasonCode::ServerShuttingDown).await;
        }
        self.transport.close().await;
        match end {
            End::Dropped(reason) => tracing::info!(%reason, "client gone"),
            _ => tracing::info!("client disconnected"),
        }
    }

    async fn write(&mut self, packets: Vec<Packet>) -> Result<(), WriteError> {
        write_packets(&mut self.transport, self.version, packets).await
    }

    /// Disconnects a v5 client with a reason (v3.1.1 has none to send). The
    /// connection is closed next whether or not this arrives.
    async fn kick(&mut self, reason: DisconnectReasonCode) {
        self.kick_with_reason(reason, None).await
    }

    /// Reads and drops what the client still sends, for a moment, before a
    /// refused client's connection is closed: closing a socket with unread
    /// input resets it, and a reset can discard the DISCONNECT (and its
    /// reason) before the client reads it.
    async fn drain_input(&mut self) {
        if self.version != Version::V5 {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut sink = BytesMut::with_capacity(4096);
        let mut drained = 0;
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(deadline, self.transport.read_into(&mut sink)).await
        {
            drained += n;
            if n == 0 || drained > 1 << 20 {
                break;
            }
            sink.clear();
        }
    }

    /// [`Session::kick`] with a reason string (MQTT 5 Reason String).
    async fn kick_with_reason(&mut self, reason: DisconnectReasonCode, text: Option<String>) {
        if self.version == Version::V5 {
            let disconnect = Disconnect {
                reason_code: reason,
            };
            // Short enough for any client's Maximum Packet Size worth
            // having (a topic in it can be 64 KiB).
            let props = text.map(|mut reason_string| {
                if reason_string.len() > 200 {
                    let mut end = 200;
                    while !reason_string.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason_string.truncate(end);
                }
                reason_string
            });
            let props = props.map(|reason_string| DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(reason_string),
                user_properties: Vec::new(),
                server_reference: None,
            });
            let _ = self
                .write(vec![Packet::Disconnect(disconnect, props)])
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_limit_is_one_and_a_half_keep_alives() {
        assert_eq!(idle_limit(1), Duration::from_millis(1500));
        assert_eq!(idle_limit(60), Duration::from_secs(90));
        assert!(idle_limit(0) >= Duration::from_secs(365 * 86_400));
    }
}
