//! Framing MQTT packets with rumqttd's codecs: choosing v3.1.1 or v5 from the
//! CONNECT packet, checking what rumqttd does not (the protocol name, the
//! reserved flags), keeping v5-only fields and reason codes away from
//! v3.1.1 clients (rumqttd's v4 encoder cannot write them: it panics), and
//! never letting a decoder panic reach the connection.
//!
//! The panics are caught with `catch_unwind`, which works only while the
//! release profile unwinds (`panic = "unwind"`, the default):
//! `tests/it/hostile_network.rs` fails if Cargo.toml asks for `abort`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{ConnectReturnCode, Packet, Protocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// More bytes are needed; at least this many.
    #[error("incomplete packet")]
    Incomplete(usize),
    #[error("packet of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// rumqttd's codec refused the packet; named as rumqttd names the case.
    #[error("malformed packet: {0:?}")]
    Protocol(#[source] rumqttd::protocol::Error),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("unsupported protocol level {0} (perch speaks MQTT 3.1.1 and 5)")]
    UnsupportedLevel(u8),
    /// At most 16 bytes of it, lossily.
    #[error("protocol name {0:?} is not \"MQTT\"")]
    ProtocolName(String),
    #[error("the reserved flag of CONNECT is set (MQTT-3.1.2-3)")]
    ReservedFlag,
    /// A refusal v3.1.1 has no CONNACK code for; the connection is closed.
    #[error("MQTT 3.1.1 has no CONNACK code for {0:?}")]
    NoV311Code(rumqttd::protocol::ConnectReturnCode),
}

impl base::HasKind for CodecError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        let _ = self;
        K::InvalidArgument
    }
}

/// Reads the protocol level of a CONNECT packet at the start of `buf`.
pub fn peek_connect_version(buf: &[u8]) -> Result<Version, CodecError> {
    if buf.is_empty() {
        return Err(CodecError::Incomplete(2));
    }
    if buf[0] >> 4 != 1 {
        return Err(CodecError::Malformed("the first packet must be CONNECT"));
    }
    // Remaining length: 1 to 4 bytes.
    let mut i = 1;
    loop {
        let b = *buf.get(i).ok_or(CodecError::Incomplete(i + 1))?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(CodecError::Malformed(
                "remaining length longer than 4 bytes",
            ));
        }
    }
    // Protocol name: u16 length then the name, then the level byte.
    let name_len = match (buf.get(i), buf.get(i + 1)) {
        (Some(&a), Some(&b)) => u16::from_be_bytes([a, b]) as usize,
        _ => return Err(CodecError::Incomplete(i + 2)),
    };
    if name_len > 6 {
        return Err(CodecError::Malformed("unknown protocol name"));
    }
    let level = *buf
        .get(i + 2 + name_len)
        .ok_or(CodecError::Incomplete(i + 3 + name_len))?;
    match level {
        4 => Ok(Version::V311),
        5 => Ok(Version::V5),
        other => Err(CodecError::UnsupportedLevel(other)),
    }
}

/// Checks what rumqttd does not of a CONNECT at the start of `buf`: the
/// fixed header's flags (0), the protocol name (`MQTT`) and the reserved
/// connect flag (0). `Incomplete` until the connect flags have arrived.
pub fn check_connect_header(buf: &[u8]) -> Result<(), CodecError> {
    if buf.is_empty() {
        return Err(CodecError::Incomplete(2));
    }
    if buf[0] != 0x10 {
        return Err(CodecError::Malformed(
            "the flags of a CONNECT's fixed header must be 0",
        ));
    }
    let mut i = 1;
    loop {
        let b = *buf.get(i).ok_or(CodecError::Incomplete(i + 1))?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(CodecError::Malformed(
                "remaining length longer than 4 bytes",
            ));
        }
    }
    let name_len = match (buf.get(i), buf.get(i + 1)) {
        (Some(&a), Some(&b)) => u16::from_be_bytes([a, b]) as usize,
        _ => return Err(CodecError::Incomplete(i + 2)),
    };
    let name_end = i + 2 + name_len;
    let name = buf.get(i + 2..name_end.min(buf.len())).unwrap_or(&[]);
    if name != &b"MQTT"[..name.len().min(4)] || name_len != 4 {
        let shown = &name[..name.len().min(16)];
        return Err(CodecError::ProtocolName(
            String::from_utf8_lossy(shown).into_owned(),
        ));
    }
    // The level, then the connect flags.
    let flags = *buf
        .get(name_end + 1)
        .ok_or(CodecError::Incomplete(name_end + 2))?;
    if flags & 1 != 0 {
        return Err(CodecError::ReservedFlag);
    }
    Ok(())
}

fn map_error(e: rumqttd::protocol::Error, limit: usize) -> CodecError {
    use rumqttd::protocol::Error as E;
    match e {
        E::InsufficientBytes(n) => CodecError::Incomplete(n),
        E::PayloadSizeLimitExceeded(size) => CodecError::TooLarge { size, limit },
        other => CodecError::Protocol(other),
    }
}

pub fn decode(
    version: Version,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Packet, CodecError> {
    guarded("packet could not be decoded", || match version {
        Version::V311 => V4.read_mut(buf, max_packet),
        Version::V5 => V5.read_mut(buf, max_packet),
    })?
    .map_err(|e| map_error(e, max_packet))
}

/// Runs rumqttd's codec with its panics on hostile bytes caught: they
/// become `Malformed(failed)`.
fn guarded<T>(
    failed: &'static str,
    codec: impl FnOnce() -> Result<T, rumqttd::protocol::Error>,
) -> Result<Result<T, rumqttd::protocol::Error>, CodecError> {
    catch_unwind(AssertUnwindSafe(codec)).map_err(|_| CodecError::Malformed(failed))
}

pub fn encode(version: Version, packet: Packet, out: &mut BytesMut) -> Result<(), CodecError> {
    if let (Version::V311, Packet::ConnAck(ack, _)) = (version, &packet) {
        if v311_code(ack.code).is_none() {
            return Err(CodecError::NoV311Code(ack.code));
        }
    }
    let packet = match version {
        Version::V311 => without_properties(packet),
        Version::V5 => packet,
    };
    guarded("packet could not be encoded", || match version {
        Version::V311 => V4.write(packet, out),
        Version::V5 => V5.write(packet, out),
    })?
    .map(drop)
    .map_err(CodecError::Protocol)
}

/// The v3.1.1 code for a CONNACK's refusal: the same, or the nearest, or
/// none (a malformed or otherwise unacceptable CONNECT, for which v3.1.1
/// closes the connection).
pub fn v311_code(code: ConnectReturnCode) -> Option<ConnectReturnCode> {
    use ConnectReturnCode as C;
    match code {
        C::Success
        | C::RefusedProtocolVersion
        | C::ClientIdentifierNotValid
        | C::ServiceUnavailable
        | C::BadUserNamePassword
        | C::NotAuthorized => Some(code),
        C::UnsupportedProtocolVersion => Some(C::RefusedProtocolVersion),
        C::ServerUnavailable
        | C::ServerBusy
        | C::QuotaExceeded
        | C::UseAnotherServer
        | C::ServerMoved
        | C::ConnectionRateExceeded => Some(C::ServiceUnavailable),
        C::Banned | C::BadAuthenticationMethod => Some(C::NotAuthorized),
        C::UnspecifiedError
        | C::MalformedPacket
        | C::ProtocolError
        | C::ImplementationSpecificError
        | C::TopicNameInvalid
        | C::PacketTooLarge
        | C::PayloadFormatInvalid
        | C::RetainNotSupported
        | C::QoSNotSupported => None,
    }
}

/// v3.1.1 has no properties: a message published with v5 properties is
/// forwarded to a v3.1.1 subscriber without them. CONNACK codes v3.1.1 has
/// not are written as [`v311_code`] says; `encode` refuses those it has no
/// equivalent for.
fn without_properties(p: Packet) -> Packet {
    match p {
        Packet::Publish(x, _) => Packet::Publish(x, None),
        Packet::PubAck(x, _) => Packet::PubAck(x, None),
        Packet::PubRec(x, _) => Packet::PubRec(x, None),
        Packet::PubRel(x, _) => Packet::PubRel(x, None),
        Packet::PubComp(x, _) => Packet::PubComp(x, None),
        Packet::SubAck(x, _) => Packet::SubAck(x, None),
        Packet::UnsubAck(x, _) => Packet::UnsubAck(x, None),
        Packet::ConnAck(mut x, _) => {
            x.code = v311_code(x.code).unwrap_or(x.code);
            Packet::ConnAck(x, None)
        }
        Packet::Disconnect(x, _) => Packet::Disconnect(x, None),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_connect() {
        // CONNECT, remaining 12, "MQTT", level 4
        let v4 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert_eq!(peek_connect_version(&v4).unwrap(), Version::V311);
        let mut v5 = v4;
        v5[8] = 5;
        assert_eq!(peek_connect_version(&v5).unwrap(), Version::V5);
        let mut v3 = [
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
        ];
        assert!(matches!(
            peek_connect_version(&v3),
            Err(CodecError::UnsupportedLevel(3))
        ));
        v3[0] = 0x30;
        assert!(matches!(
            peek_connect_version(&v3),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            peek_connect_version(&v4[..5]),
            Err(CodecError::Incomplete(_))
        ));
    }

    #[test]
    fn connect_headers_are_checked_where_rumqttd_does_not() {
        let good = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert!(check_connect_header(&good).is_ok());
        assert!(matches!(
            check_connect_header(&good[..9]),
            Err(CodecError::Incomplete(_))
        ));
        let mut name = good;
        name[7] = b'X';
        assert_eq!(
            check_connect_header(&name).unwrap_err().to_string(),
            r#"protocol name "MQTX" is not "MQTT""#
        );
        // A wrong name is known as soon as its first bytes differ.
        assert!(matches!(
            check_connect_header(&name[..8]),
            Err(CodecError::ProtocolName(_))
        ));
        let mut reserved = good;
        reserved[9] |= 1;
        assert!(matches!(
            check_connect_header(&reserved),
            Err(CodecError::ReservedFlag)
        ));
        let mut flags = good;
        flags[0] = 0x12;
        assert!(matches!(
            check_connect_header(&flags),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn v5_refusals_are_written_to_v311_clients_as_v311_has_them() {
        use rumqttd::protocol::ConnAck;
        let ack = |code| {
            Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code,
                },
                None,
            )
        };
        let mut out = BytesMut::new();
        encode(Version::V311, ack(ConnectReturnCode::ServerBusy), &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 2, 0, 3]);
        out.clear();
        encode(Version::V311, ack(ConnectReturnCode::Banned), &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 2, 0, 5]);
        // No panic caught: no v3.1.1 code is refused before rumqttd sees it.
        assert!(matches!(
            encode(
                Version::V311,
                ack(ConnectReturnCode::MalformedPacket),
                &mut out
            ),
            Err(CodecError::NoV311Code(_))
        ));
        out.clear();
        encode(
            Version::V5,
            ack(ConnectReturnCode::MalformedPacket),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[3], 0x81);
    }

    #[test]
    fn rumqttd_errors_keep_their_names() {
        // PUBLISH with QoS 3.
        let mut b = BytesMut::from(&[0x36, 5, 0, 1, b'a', 0, 1][..]);
        let e = decode(Version::V311, &mut b, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "malformed packet: InvalidQoS(3)");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            for v in [Version::V311, Version::V5] {
                let mut b = BytesMut::from(&bytes[..]);
                let _ = decode(v, &mut b, 1 << 20);
            }
            let _ = peek_connect_version(&bytes);
        }
    }
}
