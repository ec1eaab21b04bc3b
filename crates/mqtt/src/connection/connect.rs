//! The handshake: the CONNECT packet within mqtt.connect_timeout, who the
//! client is and whether it may connect, its router session, and the CONNACK
//! that says so. A refused client is told why in the CONNACK whenever its
//! protocol has a code for it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use accounts::{Held, SignIn};
use base::problems::{Problem, ProblemKind};
use bytes::BytesMut;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode, LastWill,
    LastWillProperties, Login, Packet, PublishProperties,
};
use tokio::time::Instant;

use super::error::{ConnectError, WriteError};
use super::publish::InFlight;
use super::session::{idle_limit, Limits, ServerAliases, Session, Will, TOPIC_ALIAS_MAX};
use super::write_packets;
use crate::acl::{invalid_topic_name, Access};
use crate::codec::{self, CodecError, Version};
use crate::collector::Origin;
use crate::transport::Transport;
use crate::{SessionTerms, Shared};

/// Sign-ins the limiter held back wait this long before the answer (failed
/// checks wait as long as the limiter says).
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(500);

/// Owns a connection slot; releases it on drop.
pub(super) struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.counters.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads and answers the CONNECT; on success the session is ready to run.
pub(super) async fn accept(
    mut transport: Transport,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
) -> Result<Session, ConnectError> {
    let limits = Limits::from_config(&shared.config);
    let mut input = BytesMut::with_capacity(4096);
    let deadline = Instant::now() + shared.config.connect_timeout.std();
    let (version, packet) =
        read_connect(&mut transport, &mut input, limits.max_packet, deadline).await?;
    let Packet::Connect(connect, props, will, will_props, login) = packet else {
        return Err(ConnectError::NotConnect);
    };
    tracing::Span::current().record("client_id", connect.client_id.as_str());

    let mut handshake = Handshake {
        shared,
        transport,
        version,
        limits,
        peer: peer.ip(),
        client_id_sent: connect.client_id.clone(),
        user: login.as_ref().map(|l| l.username.clone()),
    };
    let access = handshake.authenticate(login).await?;
    let keep_alive = handshake.keep_alive(connect.keep_alive).await?;
    handshake.check_will(will.as_ref(), &access).await?;
    let slot = handshake.take_slot().await?;
    let (client_id, assigned) = handshake.client_id(&connect).await?;
    let session_expiry = session_expiry(version, &connect, props.as_ref());
    let (to_router, from_router, serial) = handshake
        .open_session(
            &connect,
            props.as_ref(),
            session_expiry,
            &client_id,
            assigned,
            keep_alive,
        )
        .await?;

    let Handshake {
        shared,
        transport,
        user: origin_user,
        ..
    } = handshake;
    let origin = Arc::new(Origin {
        user: origin_user.filter(|u| !u.is_empty()),
        ip: Some(peer.ip()),
    });
    let client_id: Arc<str> = Arc::from(client_id);
    if let Some(user) = &origin.user {
        let now = shared.clock.now_ms();
        shared
            .arrivals
            .connected(user, &client_id, peer, transport.kind(), now);
    }
    Ok(Session {
        shared,
        transport,
        input,
        version,
        client_id,
        serial,
        origin,
        access,
        will: will.map(|message| Will {
            message,
            delay: will_delay(will_props.as_ref()),
            properties: will_props.map(will_publish_properties),
        }),
        session_expiry,
        idle_limit: idle_limit(keep_alive.0),
        limits,
        to_router,
        from_router,
        in_flight: InFlight::default(),
        refused_filters: HashMap::new(),
        topic_aliases: HashMap::new(),
        server_aliases: ServerAliases::new(match version {
            Version::V5 => props.as_ref().and_then(|p| p.topic_alias_max).unwrap_or(0),
            Version::V311 => 0,
        }),
        partial_since: None,
        _slot: slot,
    })
}

/// Reads until a whole CONNECT is in `input`, by `deadline`.
async fn read_connect(
    transport: &mut Transport,
    input: &mut BytesMut,
    max_packet: usize,
    deadline: Instant,
) -> Result<(Version, Packet), ConnectError> {
    loop {
        if let Some(first) = decode_connect(transport, input, max_packet).await? {
            return Ok(first);
        }
        match tokio::time::timeout_at(deadline, transport.read_into(input)).await {
            Ok(Ok(0)) => return Err(ConnectError::ClosedBeforeConnect),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ConnectError::Read(e)),
            Err(_) => return Err(ConnectError::ConnectTimeout),
        }
    }
}

/// The first packet with the protocol version it asks for, once whole. A
/// CONNECT perch cannot read gets the refusal its protocol level has for it,
/// as far as that can be written: the reason logged is the refusal's. v3.1.1
/// has no code for a malformed CONNECT: the connection is closed (MQTT-4.8.0-1).
async fn decode_connect(
    transport: &mut Transport,
    input: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<(Version, Packet)>, ConnectError> {
    let version = match codec::peek_connect_version(input) {
        Ok(version) => version,
        Err(CodecError::Incomplete(_)) => return Ok(None),
        Err(CodecError::UnsupportedLevel(level)) => {
            // MQTT 3.1 reads a v3.1.1 CONNACK.
            let refusal = connack(ConnectReturnCode::RefusedProtocolVersion, false, None);
            let _ = write_packets(transport, Version::V311, vec![refusal]).await;
            return Err(ConnectError::UnsupportedLevel(level));
        }
        Err(e) => return Err(ConnectError::NotMqtt(e)),
    };
    let checked =
        codec::check_connect_header(input).and_then(|()| codec::decode(version, input, max_packet));
    let e = match checked {
        Ok(packet) => return Ok(Some((version, packet))),
        Err(CodecError::Incomplete(_)) => return Ok(None),
        Err(e) => e,
    };
    // MQTT-3.1.2-1: another protocol's name is refused as an unacceptable
    // protocol (v3.1.1 0x01, v5 0x84); anything else malformed is, in v5,
    // 0x81.
    let code = match (&e, version) {
        (CodecError::ProtocolName(_), Version::V311) => {
            Some(ConnectReturnCode::RefusedProtocolVersion)
        }
        (CodecError::ProtocolName(_), Version::V5) => {
            Some(ConnectReturnCode::UnsupportedProtocolVersion)
        }
        (_, Version::V5) => Some(ConnectReturnCode::MalformedPacket),
        (_, Version::V311) => None,
    };
    if let Some(code) = code {
        let _ = write_packets(transport, version, vec![connack(code, false, None)]).await;
    }
    Err(ConnectError::BadConnect(e))
}

/// A connection whose CONNECT has been read, until it is answered.
struct Handshake {
    shared: Arc<Shared>,
    transport: Transport,
    version: Version,
    limits: Limits,
    /// Who asks, for the problems a refusal reports.
    peer: IpAddr,
    client_id_sent: String,
    user: Option<String>,
}

impl Handshake {
    /// A perch user by name and password, or anonymous where allowed.
    /// Passwords go through the accounts' sign-in limiter, shared with
    /// HTTP: a name held back after failures is refused unchecked, after
    /// [`AUTH_FAILURE_DELAY`], with 0x05 not authorized (v3.1.1) or 0x9F
    /// connection rate exceeded (v5); a sign-in queue that is full gets
    /// 0x03 server unavailable or 0x89 server busy.
    async fn authenticate(&mut self, login: Option<Login>) -> Result<Access, ConnectError> {
        let Some(login) = login else {
            if self.shared.config.allow_anonymous {
                return Ok(Access::Everything);
            }
            self.count_auth_failure();
            self.report(
                ProblemKind::MqttSignIn,
                "anonymous clients are not allowed (mqtt.allow_anonymous)",
                None,
            );
            let refused = ConnectError::AnonymousRefused;
            return Err(self.refuse(ConnectReturnCode::NotAuthorized, refused).await);
        };
        let now = self.shared.clock.now_ms();
        let signed_in = self
            .shared
            .accounts
            .sign_in(Some(self.peer), &login.username, &login.password, now)
            .await;
        let held = match signed_in {
            SignIn::Valid(info) => return Ok(Access::for_user(&info)),
            SignIn::Wrong => {
                self.count_auth_failure();
                let why = if self.shared.accounts.get(&login.username).is_some() {
                    "wrong password"
                } else {
                    "unknown user"
                };
                self.report(ProblemKind::MqttSignIn, why, None);
                let refused = ConnectError::BadCredentials {
                    user: login.username,
                };
                return Err(self
                    .refuse(ConnectReturnCode::BadUserNamePassword, refused)
                    .await);
            }
            SignIn::Held(held) => held,
        };
        self.count_auth_failure();
        let wait = held.retry_after_secs();
        let (code, refused) = match (held, self.version) {
            (Held::Blocked { .. }, Version::V311) => (
                ConnectReturnCode::NotAuthorized,
                ConnectError::SignInsHeld { wait },
            ),
            (Held::Blocked { .. }, Version::V5) => (
                ConnectReturnCode::ConnectionRateExceeded,
                ConnectError::SignInsHeld { wait },
            ),
            (Held::Busy { .. }, Version::V311) => (
                ConnectReturnCode::ServiceUnavailable,
                ConnectError::SignInsBusy { wait },
            ),
            (Held::Busy { .. }, Version::V5) => (
                ConnectReturnCode::ServerBusy,
                ConnectError::SignInsBusy { wait },
            ),
        };
        // Without the wait, so that a flood is one line of the problems.
        let why = match held {
            Held::Blocked { .. } => "too many failed sign-ins: held back",
            Held::Busy { .. } => "too many sign-ins in progress: asked to retry",
        };
        self.report(ProblemKind::MqttSignIn, why, None);
        // Unchecked, but not at once: a client retrying at once would spin.
        tokio::time::sleep(AUTH_FAILURE_DELAY).await;
        let reason = (self.version == Version::V5).then(|| refused.to_string());
        Err(self.refuse_with_reason(code, reason, refused).await)
    }

    /// Records a refusal in the recent problems the Overview shows.
    fn report(&self, kind: ProblemKind, why: &str, topic: Option<&str>) {
        let who = self.user.as_deref().unwrap_or("anonymous");
        let mut problem = Problem::new(kind, who, why)
            .with_address(Some(self.peer))
            .with_client_id(&self.client_id_sent);
        if let Some(topic) = topic {
            problem = problem.with_topic(topic);
        }
        base::problems::record(problem, self.shared.clock.now_ms());
    }

    fn count_auth_failure(&self) {
        self.shared
            .counters
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The keep-alive the client is held to, and whether a v5 client is to
    /// be told it (Server Keep Alive): mqtt.max_keep_alive at most, as
    /// Mosquitto's max_keepalive. A v3.1.1 client cannot be told, so one
    /// asking for more is refused (0x02, as Mosquitto does).
    async fn keep_alive(&mut self, asked: u16) -> Result<(u16, bool), ConnectError> {
        let max = self.shared.config.max_keep_alive.std().as_secs().min(65535) as u16;
        let too_long = asked > max || (asked == 0 && max < u16::MAX);
        match (too_long, self.version) {
            (false, _) => Ok((asked, false)),
            (true, Version::V5) => Ok((max, true)),
            (true, Version::V311) if asked == 0 => Ok((0, false)),
            (true, Version::V311) => {
                let refused = ConnectError::KeepAliveTooLong { asked, max };
                Err(self
                    .refuse(ConnectReturnCode::ClientIdentifierNotValid, refused)
                    .await)
            }
        }
    }

    /// A will is published with the client's rights, so a will the client
    /// could not publish refuses the CONNECT, while the client can be told.
    async fn check_will(
        &mut self,
        will: Option<&LastWill>,
        access: &Access,
    ) -> Result<(), ConnectError> {
        let Some(will) = will else {
            return Ok(());
        };
        let topic = String::from_utf8_lossy(&will.topic);
        let invalid = invalid_topic_name(&topic);
        if invalid.is_none() && access.can_publish(&topic) {
            return Ok(());
        }
        let why = invalid.unwrap_or(match access {
            Access::ReadOnly => "a will from a viewer account, which may not publish",
            _ => "a will outside the account's topics",
        });
        self.report(ProblemKind::MqttPublishRefused, why, Some(&topic));
        let refused = ConnectError::WillNotAllowed {
            topic: topic.into_owned(),
        };
        Err(self.refuse(ConnectReturnCode::NotAuthorized, refused).await)
    }

    /// perch counts connections itself: a router at its limit never answers.
    async fn take_slot(&mut self) -> Result<Slot, ConnectError> {
        let connections = &self.shared.counters.connections;
        let limit = self.shared.config.max_connections;
        if connections.fetch_add(1, Ordering::SeqCst) < limit {
            return Ok(Slot(self.shared.clone()));
        }
        connections.fetch_sub(1, Ordering::SeqCst);
        let code = match self.version {
            Version::V5 => ConnectReturnCode::ServerBusy,
            Version::V311 => ConnectReturnCode::ServiceUnavailable,
        };
        let refused = ConnectError::ConnectionLimit { limit };
        Err(self.refuse(code, refused).await)
    }

    /// The client's id, and the one perch assigned if the client sent none.
    /// A v3.1.1 client without an id may not keep a persistent session: it
    /// could never resume it.
    async fn client_id(
        &mut self,
        connect: &Connect,
    ) -> Result<(String, Option<String>), ConnectError> {
        if connect.client_id == crate::INTERNAL_CLIENT_ID {
            let refused = ConnectError::ReservedClientId;
            return Err(self
                .refuse(ConnectReturnCode::ClientIdentifierNotValid, refused)
                .await);
        }
        if !connect.client_id.is_empty() {
            return Ok((connect.client_id.clone(), None));
        }
        if !connect.clean_session && self.version == Version::V311 {
            let refused = ConnectError::EmptyClientId;
            return Err(self
                .refuse(ConnectReturnCode::ClientIdentifierNotValid, refused)
                .await);
        }
        let assigned = format!("perch-{:016x}", rand::random::<u64>());
        Ok((assigned.clone(), Some(assigned)))
    }

    /// Opens the client's session with the router and accepts the CONNECT.
    async fn open_session(
        &mut self,
        connect: &Connect,
        props: Option<&ConnectProperties>,
        session_expiry: Option<Duration>,
        client_id: &str,
        assigned_client_id: Option<String>,
        (keep_alive, tell_keep_alive): (u16, bool),
    ) -> Result<(LinkTx, LinkRx, u64), ConnectError> {
        // Back before its will's delay or its session's expiry ran out: the
        // will is not published, the session goes on.
        let serial = self
            .shared
            .departures
            .arrived(client_id, connect.clean_session);
        // Kept when it outlives the connection (how long, perch counts);
        // the limits are v5 properties, which a v3.1.1 CONNECT has none of.
        let terms = SessionTerms {
            clean_start: connect.clean_session,
            persist: session_expiry != Some(Duration::ZERO),
            receive_max: props.and_then(|p| p.receive_maximum).filter(|&n| n > 0),
            max_packet_size: props.and_then(|p| p.max_packet_size).filter(|&n| n > 0),
        };
        let (to_router, from_router, session_present) = self
            .shared
            .links
            .connect(client_id, terms)
            .await
            .map_err(ConnectError::Router)?;
        let server_keep_alive = tell_keep_alive.then_some(keep_alive);
        self.welcome(session_present, assigned_client_id, server_keep_alive)
            .await?;
        self.shared
            .counters
            .connects
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            clean = connect.clean_session,
            keep_alive,
            v5 = self.version == Version::V5,
            "client connected"
        );
        Ok((to_router, from_router, serial))
    }

    /// CONNACK success; v5 clients also learn perch's limits and features,
    /// and the client id perch assigned.
    async fn welcome(
        &mut self,
        session_present: bool,
        assigned_client_id: Option<String>,
        server_keep_alive: Option<u16>,
    ) -> Result<(), ConnectError> {
        let limits = self.limits;
        let props = match self.version {
            Version::V5 => Some(ConnAckProperties {
                assigned_client_identifier: assigned_client_id,
                receive_max: Some(limits.receive_max()),
                max_packet_size: Some(limits.max_packet.min(u32::MAX as usize) as u32),
                topic_alias_max: Some(TOPIC_ALIAS_MAX),
                server_keep_alive,
                retain_available: Some(1),
                wildcard_subscription_available: Some(1),
                shared_subscription_available: Some(1),
                ..Default::default()
            }),
            Version::V311 => None,
        };
        self.write_connack(ConnectReturnCode::Success, session_present, props)
            .await?;
        Ok(())
    }

    /// Answers the CONNECT with a refusal. If even that cannot be written,
    /// the failed write is the reason reported.
    async fn refuse(&mut self, code: ConnectReturnCode, reason: ConnectError) -> ConnectError {
        self.refuse_with_reason(code, None, reason).await
    }

    /// [`Handshake::refuse`] with a reason string for a v5 client.
    async fn refuse_with_reason(
        &mut self,
        code: ConnectReturnCode,
        reason_string: Option<String>,
        reason: ConnectError,
    ) -> ConnectError {
        let props = reason_string.map(|r| ConnAckProperties {
            reason_string: Some(r),
            ..Default::default()
        });
        match self.write_connack(code, false, props).await {
            Ok(()) => reason,
            Err(e) => e.into(),
        }
    }

    async fn write_connack(
        &mut self,
        code: ConnectReturnCode,
        session_present: bool,
        props: Option<ConnAckProperties>,
    ) -> Result<(), WriteError> {
        let ack = connack(code, session_present, props);
        write_packets(&mut self.transport, self.version, vec![ack]).await
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

fn will_delay(props: Option<&LastWillProperties>) -> Duration {
    let secs = props.and_then(|p| p.delay_interval).unwrap_or(0);
    Duration::from_secs(secs as u64)
}

/// What a will's properties become on the message published (MQTT-3.1.3-9:
/// all but the delay).
fn will_publish_properties(props: LastWillProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: props.payload_format_indicator,
        message_expiry_interval: props.message_expiry_interval,
        response_topic: props.response_topic,
        correlation_data: props.correlation_data,
        user_properties: props.user_properties,
        content_type: props.content_type,
        ..Default::default()
    }
}

/// How long the session outlives the connection; `None` for ever (MQTT 5's
/// 0xFFFFFFFF, or a v3.1.1 session that is not clean).
fn session_expiry(
    version: Version,
    connect: &Connect,
    props: Option<&ConnectProperties>,
) -> Option<Duration> {
    match version {
        Version::V311 if connect.clean_session => Some(Duration::ZERO),
        Version::V311 => None,
        Version::V5 => session_expiry_secs(props.and_then(|p| p.session_expiry_interval)),
    }
}

/// MQTT 5's Session Expiry Interval: absent is 0, 0xFFFFFFFF never ends.
pub(super) fn session_expiry_secs(secs: Option<u32>) -> Option<Duration> {
    match secs.unwrap_or(0) {
        u32::MAX => None,
        secs => Some(Duration::from_secs(secs as u64)),
    }
}
