//! MQTT packets as perch's broker front end reads them
//! (`mqtt::codec`): the protocol level of the first packet, then packet
//! after packet from one buffer, as a connection does, each decoded packet
//! encoded again for v3.1.1 and v5 subscribers; the topics and filters they
//! carry go through perch's checks. First byte: bit 0 chooses the version
//! when the input does not start with a CONNECT, bits 1–2 the packet size
//! limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt::codec::{decode, encode, peek_connect_version, Version};
use rumqttd::protocol::Packet;

fuzz_target!(|data: &[u8]| {
    // rumqttd's codecs panic on some malformed packets; perch catches that
    // (`codec::decode`, `codec::encode`).
    perch_fuzz::tolerate_caught_panics_in(&["rumqttd"]);
    let Some((sel, rest)) = perch_fuzz::selector(data) else {
        return;
    };
    let max_packet = [1 << 20, 268_435_455, 64, 5][((sel >> 1) & 3) as usize];
    let version = match peek_connect_version(rest) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            if sel & 1 == 0 {
                Version::V311
            } else {
                Version::V5
            }
        }
    };
    let mut buf = BytesMut::from(rest);
    for _ in 0..64 {
        let before = buf.len();
        match decode(version, &mut buf, max_packet) {
            Ok(packet) => {
                assert!(buf.len() < before, "a decoded packet consumed no bytes");
                check(&packet);
                for v in [Version::V311, Version::V5] {
                    let mut out = BytesMut::new();
                    let _ = encode(v, packet.clone(), &mut out);
                }
            }
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
});

/// What the front end checks of a packet's topics and filters.
fn check(packet: &Packet) {
    match packet {
        Packet::Publish(p, _) => {
            if let Ok(topic) = std::str::from_utf8(&p.topic) {
                for filter in ["#", "+/+", "a/+/c", "$SYS/#", "sensors/#"] {
                    let _ = mqtt::topic_matches(filter, topic);
                }
            }
        }
        Packet::Subscribe(s, _) => {
            for f in &s.filters {
                if mqtt::invalid_filter(&f.path).is_none() {
                    for topic in ["a/b/c", "sensors/x", "$SYS/broker", ""] {
                        let _ = mqtt::topic_matches(&f.path, topic);
                    }
                }
            }
        }
        Packet::Unsubscribe(u, _) => {
            for f in &u.filters {
                let _ = mqtt::invalid_filter(f);
            }
        }
        _ => {}
    }
}
