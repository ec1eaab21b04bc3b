//! Framing MQTT packets with rumqttd's codecs: choosing v3.1.1 or v5 from the
//! CONNECT packet, keeping v5-only fields away from v3.1.1 clients (rumqttd's
//! v4 encoder cannot write them), and never letting a decoder panic reach the
//! connection.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Packet, Protocol};

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
    let result = catch_unwind(AssertUnwindSafe(|| match version {
        Version::V311 => V4.read_mut(buf, max_packet),
        Version::V5 => V5.read_mut(buf, max_packet),
    }));
    match result {
        Ok(r) => r.map_err(|e| map_error(e, max_packet)),
        Err(_) => Err(CodecError::Malformed("packet could not be decoded")),
    }
}

pub fn encode(version: Version, packet: Packet, out: &mut BytesMut) -> Result<(), CodecError> {
    let packet = match version {
        Version::V311 => without_properties(packet),
        Version::V5 => packet,
    };
    let result = catch_unwind(AssertUnwindSafe(|| match version {
        Version::V311 => V4.write(packet, out),
        Version::V5 => V5.write(packet, out),
    }));
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(CodecError::Protocol(e)),
        Err(_) => Err(CodecError::Malformed("packet could not be encoded")),
    }
}

/// v3.1.1 has no properties: a message published with v5 properties is
/// forwarded to a v3.1.1 subscriber without them.
fn without_properties(p: Packet) -> Packet {
    match p {
        Packet::Publish(x, _) => Packet::Publish(x, None),
        Packet::PubAck(x, _) => Packet::PubAck(x, None),
        Packet::PubRec(x, _) => Packet::PubRec(x, None),
        Packet::PubRel(x, _) => Packet::PubRel(x, None),
        Packet::PubComp(x, _) => Packet::PubComp(x, None),
        Packet::SubAck(x, _) => Packet::SubAck(x, None),
        Packet::UnsubAck(x, _) => Packet::UnsubAck(x, None),
        Packet::ConnAck(x, _) => Packet::ConnAck(x, None),
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
