//! MQTT packets built by hand, byte by byte: for the load benchmark (no
//! client library between it and the broker) and for tests that send what
//! a client library never would (a wrong protocol name, a reserved flag).

/// A length-prefixed MQTT string or binary field.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet: its first byte, the remaining length as a variable byte
/// integer, the body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        p.push(b);
        if n == 0 {
            break;
        }
    }
    p.extend_from_slice(body);
    p
}

/// A CONNECT with a clean session and a 60 s keep-alive: protocol `name`
/// (`MQTT`) and `level` (4: v3.1.1, 5: v5, with no properties), extra
/// connect flags (`1` is the reserved bit), the client id, and a user and
/// password if given.
pub fn connect(
    name: &str,
    level: u8,
    extra_flags: u8,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, name.as_bytes());
    body.push(level);
    let login_flags = if login.is_some() { 0b1100_0000 } else { 0 };
    body.push(0b10 | login_flags | extra_flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    string(&mut body, client_id.as_bytes());
    if let Some((user, password)) = login {
        string(&mut body, user.as_bytes());
        string(&mut body, password.as_bytes());
    }
    frame(0x10, &body)
}

/// A v3.1.1 PUBLISH at `qos` (a packet id from QoS 1).
pub fn publish(topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &body)
}

/// A v3.1.1 SUBSCRIBE of one filter at `qos`.
pub fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = Vec::with_capacity(filter.len() + 5);
    body.extend_from_slice(&pkid.to_be_bytes());
    string(&mut body, filter.as_bytes());
    body.push(qos);
    frame(0x82, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_decode_with_rumqttd() {
        use crate::codec::{decode, Version};
        use bytes::BytesMut;
        let mut buf = BytesMut::from(&connect("MQTT", 4, 0, "c1", Some(("u", "p")))[..]);
        let p = decode(Version::V311, &mut buf, 1 << 20).unwrap();
        assert!(format!("{p:?}").contains("c1"), "{p:?}");
        // A remaining length past 127 takes two bytes.
        let big = publish("t", &[7; 200], 1, 9);
        assert_eq!(&big[..3], &[0x32, 0xcd, 0x01]);
        let mut buf = BytesMut::from(&big[..]);
        assert!(decode(Version::V311, &mut buf, 1 << 20).is_ok());
        let mut buf = BytesMut::from(&subscribe(3, "a/#", 1)[..]);
        let p = format!("{:?}", decode(Version::V311, &mut buf, 1 << 20).unwrap());
        assert!(
            p.contains("pkid: 3") && p.contains("\"a/#\"") && p.contains("AtLeastOnce"),
            "{p}"
        );
    }
}
