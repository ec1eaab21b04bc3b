//! Why a connection was refused or its session ended. Nothing here reaches
//! HTTP: these are logged (the messages are part of perch's log), and each
//! says its kind like every other error in perch.

use std::io;
use std::sync::atomic::AtomicU64;

use rumqttd::local::LinkError;
use rumqttd::protocol::{DisconnectReasonCode, Packet};
use thiserror::Error;

use base::{ErrorKind as K, HasKind};

use crate::codec::CodecError;
use crate::{BrokerCounters, RouterError};

/// Why a connection ended before its session began.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    #[error("bad CONNECT: {0}")]
    BadConnect(#[source] CodecError),
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    #[error("not MQTT: {0}")]
    NotMqtt(#[source] CodecError),
    #[error("closed before CONNECT")]
    ClosedBeforeConnect,
    #[error(transparent)]
    Read(io::Error),
    #[error("no CONNECT within mqtt.connect_timeout")]
    ConnectTimeout,
    #[error("the first packet must be CONNECT")]
    NotConnect,
    #[error("bad user name or password for {user:?}")]
    BadCredentials { user: String },
    #[error("anonymous client refused (mqtt.allow_anonymous = false)")]
    AnonymousRefused,
    #[error("too many failed sign-ins; try again in {wait} s")]
    SignInsHeld { wait: u64 },
    #[error("too many sign-ins in progress; try again in {wait} s")]
    SignInsBusy { wait: u64 },
    #[error("too many connections from this address (mqtt.max_connections_per_client = {limit})")]
    AddressLimit { limit: usize },
    #[error("will topic {topic:?} not allowed")]
    WillNotAllowed { topic: String },
    #[error("connection limit of {limit} reached (mqtt.max_connections)")]
    ConnectionLimit { limit: usize },
    #[error("empty client id with a persistent session")]
    EmptyClientId,
    #[error("client id reserved for perch's own session")]
    ReservedClientId,
    #[error("keep-alive of {asked} s over mqtt.max_keep_alive ({max} s)")]
    KeepAliveTooLong { asked: u16, max: u16 },
    #[error("router refused the session: {0}")]
    Router(#[source] RouterError),
    /// The CONNACK could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl HasKind for ConnectError {
    fn kind(&self) -> K {
        match self {
            ConnectError::BadConnect(_)
            | ConnectError::UnsupportedLevel(_)
            | ConnectError::NotMqtt(_)
            | ConnectError::NotConnect
            | ConnectError::EmptyClientId
            | ConnectError::ReservedClientId
            | ConnectError::KeepAliveTooLong { .. } => K::InvalidArgument,
            ConnectError::ClosedBeforeConnect | ConnectError::Read(_) => K::Unavailable,
            ConnectError::ConnectTimeout => K::DeadlineExceeded,
            ConnectError::BadCredentials { .. } | ConnectError::AnonymousRefused => {
                K::Unauthenticated
            }
            ConnectError::WillNotAllowed { .. } => K::PermissionDenied,
            ConnectError::SignInsHeld { .. } => K::RateLimited,
            ConnectError::ConnectionLimit { .. }
            | ConnectError::AddressLimit { .. }
            | ConnectError::SignInsBusy { .. } => K::Unavailable,
            ConnectError::Router(e) => e.kind(),
            ConnectError::Write(e) => e.kind(),
        }
    }
}

/// Why a session ended other than by the client's DISCONNECT, the router or
/// perch stopping; its will is published.
#[derive(Debug, Error)]
pub(crate) enum SessionError {
    #[error("connection closed by the client")]
    ClosedByClient,
    #[error(transparent)]
    Read(io::Error),
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
    #[error("a packet begun was not complete within {limit:?} (mqtt.read_timeout)")]
    ReadTimeout { limit: std::time::Duration },
    /// Boxed, as in [`RouterError`].
    #[error("router link closed: {0}")]
    RouterClosed(#[source] Box<LinkError>),
    /// The link did not take the answer to Unschedule.
    #[error("router link closed")]
    WakeFailed(#[source] Box<LinkError>),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Violation(#[from] Violation),
}

impl HasKind for SessionError {
    fn kind(&self) -> K {
        match self {
            SessionError::ClosedByClient | SessionError::Read(_) => K::Unavailable,
            SessionError::KeepAliveTimeout | SessionError::ReadTimeout { .. } => {
                K::DeadlineExceeded
            }
            SessionError::RouterClosed(_) | SessionError::WakeFailed(_) => K::Unavailable,
            SessionError::Write(e) => e.kind(),
            SessionError::Violation(e) => e.kind(),
        }
    }
}

/// A packet from a client that breaks the protocol or a limit: the session
/// ends, a v5 client told why.
#[derive(Debug, Error)]
pub(crate) enum Violation {
    /// Carries mqtt.max_payload_bytes, the limit the user configured, rather
    /// than the packet limit derived from it.
    #[error("packet over the limit of {limit} bytes (mqtt.max_payload_bytes)")]
    PacketTooLarge { limit: usize },
    #[error(transparent)]
    Undecodable(CodecError),
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    #[error("unknown topic alias {0}")]
    UnknownTopicAlias(u16),
    #[error("topic alias {alias} outside 1..={max}, the Topic Alias Maximum announced")]
    TopicAliasOutOfRange { alias: u16, max: u16 },
    #[error("more than {limit} QoS 1/2 publishes unacknowledged, the Receive Maximum announced")]
    ReceiveMaximumExceeded { limit: usize },
    #[error("more than {limit} QoS 2 publishes without their PUBREL (mqtt.max_inflight)")]
    ReleasesWithheld { limit: usize },
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    #[error("payload of {size} bytes over mqtt.max_payload_bytes ({limit})")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("second CONNECT")]
    SecondConnect,
    #[error("unexpected packet from a client: {0:?}")]
    UnexpectedPacket(Box<Packet>),
}

impl Violation {
    /// The reason a v5 client is given in the DISCONNECT.
    pub(crate) fn reason_code(&self) -> DisconnectReasonCode {
        use DisconnectReasonCode as R;
        match self {
            Violation::PacketTooLarge { .. } | Violation::PayloadTooLarge { .. } => {
                R::PacketTooLarge
            }
            Violation::Undecodable(_) => R::MalformedPacket,
            Violation::TopicNotUtf8 | Violation::InvalidTopic { .. } => R::TopicNameInvalid,
            Violation::UnknownTopicAlias(_) | Violation::TopicAliasOutOfRange { .. } => {
                R::TopicAliasInvalid
            }
            Violation::ReceiveMaximumExceeded { .. } | Violation::ReleasesWithheld { .. } => {
                R::ReceiveMaximumExceeded
            }
            Violation::SecondConnect | Violation::UnexpectedPacket(_) => R::ProtocolError,
        }
    }

    /// Which `perch_mqtt_rejected_total` counter the violation counts in,
    /// if any.
    pub(crate) fn rejection_counter<'a>(
        &self,
        counters: &'a BrokerCounters,
    ) -> Option<&'a AtomicU64> {
        match self {
            Violation::PacketTooLarge { .. } | Violation::PayloadTooLarge { .. } => {
                Some(&counters.rejected_too_large)
            }
            Violation::Undecodable(_) | Violation::InvalidTopic { .. } => {
                Some(&counters.rejected_malformed)
            }
            Violation::TopicNotUtf8
            | Violation::UnknownTopicAlias(_)
            | Violation::TopicAliasOutOfRange { .. }
            | Violation::ReceiveMaximumExceeded { .. }
            | Violation::ReleasesWithheld { .. }
            | Violation::SecondConnect
            | Violation::UnexpectedPacket(_) => None,
        }
    }
}

impl HasKind for Violation {
    fn kind(&self) -> K {
        match self {
            Violation::PacketTooLarge { .. } | Violation::PayloadTooLarge { .. } => {
                K::PayloadTooLarge
            }
            _ => K::InvalidArgument,
        }
    }
}

/// Why packets could not be written to a client.
#[derive(Debug, Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Encode(CodecError),
    #[error(transparent)]
    Io(io::Error),
    #[error("client stopped reading")]
    Stalled,
}

impl HasKind for WriteError {
    fn kind(&self) -> K {
        match self {
            // perch built the packet.
            WriteError::Encode(_) => K::Internal,
            WriteError::Io(_) => K::Unavailable,
            WriteError::Stalled => K::DeadlineExceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are what perch logs when a client is refused or dropped.
    #[test]
    fn messages() {
        let cases: Vec<(Box<dyn std::error::Error>, &str)> = vec![
            (
                Box::new(ConnectError::BadCredentials { user: "bob".into() }),
                r#"bad user name or password for "bob""#,
            ),
            (
                Box::new(ConnectError::WillNotAllowed {
                    topic: "a/b".into(),
                }),
                r#"will topic "a/b" not allowed"#,
            ),
            (
                Box::new(ConnectError::ConnectionLimit { limit: 2 }),
                "connection limit of 2 reached (mqtt.max_connections)",
            ),
            (
                Box::new(ConnectError::NotMqtt(CodecError::Malformed("x"))),
                "not MQTT: malformed packet: x",
            ),
            (
                Box::new(ConnectError::Write(WriteError::Stalled)),
                "client stopped reading",
            ),
            (
                Box::new(SessionError::from(Violation::PacketTooLarge {
                    limit: 1024,
                })),
                "packet over the limit of 1024 bytes (mqtt.max_payload_bytes)",
            ),
            (
                Box::new(Violation::InvalidTopic {
                    topic: "a/+".into(),
                    reason: "wildcards are not allowed in topic names",
                }),
                r#"invalid topic "a/+": wildcards are not allowed in topic names"#,
            ),
            (
                Box::new(Violation::PayloadTooLarge {
                    size: 2000,
                    limit: 1024,
                }),
                "payload of 2000 bytes over mqtt.max_payload_bytes (1024)",
            ),
            (
                Box::new(Violation::UnknownTopicAlias(3)),
                "unknown topic alias 3",
            ),
            (
                Box::new(SessionError::KeepAliveTimeout),
                "keep-alive timeout",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn violations_answer_and_count() {
        let counters = BrokerCounters::default();
        let too_large = Violation::PayloadTooLarge { size: 2, limit: 1 };
        assert_eq!(
            too_large.reason_code(),
            DisconnectReasonCode::PacketTooLarge
        );
        assert!(std::ptr::eq(
            too_large.rejection_counter(&counters).unwrap(),
            &counters.rejected_too_large
        ));
        let undecodable = Violation::Undecodable(CodecError::Malformed("x"));
        assert_eq!(
            undecodable.reason_code(),
            DisconnectReasonCode::MalformedPacket
        );
        assert!(std::ptr::eq(
            undecodable.rejection_counter(&counters).unwrap(),
            &counters.rejected_malformed
        ));
        assert_eq!(
            Violation::TopicNotUtf8.reason_code(),
            DisconnectReasonCode::TopicNameInvalid
        );
        assert!(Violation::TopicNotUtf8
            .rejection_counter(&counters)
            .is_none());
        assert_eq!(
            Violation::SecondConnect.reason_code(),
            DisconnectReasonCode::ProtocolError
        );
        assert_eq!(too_large.kind(), K::PayloadTooLarge);
        assert_eq!(ConnectError::AnonymousRefused.kind(), K::Unauthenticated);
    }
}
