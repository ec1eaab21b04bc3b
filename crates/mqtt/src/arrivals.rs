//! Who has connected and what they first sent, per perch user: the
//! dashboard's "Connect a device" page waits on this to tell a newcomer
//! that the credentials it just made work and what the first message
//! stored. The connection records who logged in from where under which
//! client id; the collector records the first message of each user.
//!
//! Bounded: at most [`MAX_USERS`] users are remembered (the first seen
//! forgotten first), payload previews and series lists are cut short.
//! Memory only: after a restart a device is seen anew.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use base::SeriesSamples;
use parking_lot::Mutex;
use serde::Serialize;

use crate::explorer::{Inbound, Outcome, ReadSummary, Shown};

const MAX_USERS: usize = 1_024;
/// Series of the first message listed by name.
const LISTED_SERIES: usize = 20;

/// What one user's devices did, as the dashboard shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Arrival {
    /// The last successful CONNECT with these credentials.
    pub connected: Option<Connection>,
    /// The first message these credentials published since perch started.
    pub first_message: Option<FirstMessage>,
    /// Messages published since perch started.
    pub messages: u64,
    /// When the last one arrived.
    pub last_message_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    pub time_ms: i64,
    pub client_id: String,
    pub address: String,
    /// `tcp` (TLS included) or `ws`.
    pub via: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct FirstMessage {
    pub time_ms: i64,
    pub topic: String,
    pub client_id: String,
    /// The payload as the Explorer shows it: text, or base64 when binary,
    /// cut short.
    pub payload: String,
    /// `utf8` or `base64`.
    pub encoding: &'static str,
    /// `stored`, `no_samples` or `unparsed`, as the explorer says.
    pub outcome: Outcome,
    pub samples: u32,
    /// The stored series, as `name{label="value"}`, at most 20.
    pub series: Vec<String>,
    /// Why nothing was stored, when nothing was.
    pub note: Option<String>,
}

#[derive(Default)]
struct State {
    users: HashMap<Arc<str>, Arrival>,
    /// Users in the order they were first seen.
    user_order: VecDeque<Arc<str>>,
}

#[derive(Default)]
pub struct Arrivals {
    state: Mutex<State>,
}

impl Arrivals {
    /// A client logged in as `user` (anonymous clients are not followed).
    pub(crate) fn connected(
        &self,
        user: &str,
        client_id: &Arc<str>,
        peer: SocketAddr,
        via: &'static str,
        time_ms: i64,
    ) {
        let mut s = self.state.lock();
        let arrival = s.touch(user);
        arrival.connected = Some(Connection {
            time_ms,
            client_id: client_id.to_string(),
            address: peer.ip().to_canonical().to_string(),
            via,
        });
    }

    /// The collector read a message `user` published.
    pub(crate) fn message(
        &self,
        user: &str,
        msg: &Inbound,
        series: &[SeriesSamples],
        read: &ReadSummary,
    ) {
        let mut s = self.state.lock();
        let arrival = s.touch(user);
        arrival.messages += 1;
        arrival.last_message_ms = Some(msg.time_ms);
        if arrival.first_message.is_some() {
            return;
        }
        let shown = Shown::of(msg);
        arrival.first_message = Some(FirstMessage {
            time_ms: msg.time_ms,
            topic: msg.topic.clone(),
            client_id: msg.client_id.to_string(),
            payload: shown.payload,
            encoding: shown.encoding,
            outcome: read.outcome,
            samples: read.samples,
            series: series
                .iter()
                .take(LISTED_SERIES)
                .map(|s| s.labels.to_string())
                .collect(),
            note: read.note.as_deref().map(str::to_owned),
        });
    }

    /// What `user` did, if anything since perch started.
    pub fn get(&self, user: &str) -> Option<Arrival> {
        self.state.lock().users.get(user).cloned()
    }

    /// Forgets `user` (the page's "wait again" after new credentials).
    pub fn forget(&self, user: &str) {
        let mut s = self.state.lock();
        s.users.remove(user);
        s.user_order.retain(|u| &**u != user);
    }
}

impl State {
    fn touch(&mut self, user: &str) -> &mut Arrival {
        if !self.users.contains_key(user) {
            let user: Arc<str> = Arc::from(user);
            self.user_order.push_back(user.clone());
            while self.users.len() >= MAX_USERS {
                match self.user_order.pop_front() {
                    Some(old) => {
                        self.users.remove(&old);
                    }
                    None => break,
                }
            }
            return self.users.entry(user).or_default();
        }
        self.users.get_mut(user).expect("present")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(outcome: Outcome, samples: u32) -> ReadSummary {
        ReadSummary {
            family: ingest::conventions::Family::Generic,
            format: ingest::mqtt_payload::PayloadFormat::Number,
            series: 1,
            samples,
            outcome,
            note: None,
        }
    }

    fn msg(client_id: &str, topic: &str, payload: &'static [u8], time_ms: i64) -> Inbound {
        Inbound {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(payload),
            qos: 0,
            retain: false,
            client_id: Arc::from(client_id),
            time_ms,
            read: None,
            origin: None,
        }
    }

    #[test]
    fn the_first_message_of_a_user_is_kept() {
        let a = Arrivals::default();
        let peer: SocketAddr = "192.168.1.7:40000".parse().unwrap();
        a.connected("sensor1", &Arc::from("tasmota_1"), peer, "tcp", 1_000);
        let stored = read(Outcome::Stored, 1);
        a.message(
            "sensor1",
            &msg("tasmota_1", "lab/t", b"21.5", 2_000),
            &[],
            &stored,
        );
        a.message(
            "sensor1",
            &msg("tasmota_1", "lab/t", b"22", 3_000),
            &[],
            &stored,
        );
        let got = a.get("sensor1").unwrap();
        let first = got.first_message.unwrap();
        assert_eq!(
            (first.time_ms, first.topic.as_str(), first.payload.as_str()),
            (2_000, "lab/t", "21.5")
        );
        assert_eq!((got.messages, got.last_message_ms), (2, Some(3_000)));
        let conn = got.connected.unwrap();
        assert_eq!(
            (conn.address.as_str(), conn.client_id.as_str()),
            ("192.168.1.7", "tasmota_1")
        );
        assert!(a.get("stranger").is_none());
        // A user made anew under an old name starts afresh.
        a.forget("sensor1");
        assert!(a.get("sensor1").is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let a = Arrivals::default();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for i in 0..MAX_USERS + 10 {
            a.connected(
                &format!("u{i}"),
                &Arc::from(format!("c{i}")),
                peer,
                "tcp",
                0,
            );
        }
        let s = a.state.lock();
        assert!(s.users.len() <= MAX_USERS);
        assert!(s.users.contains_key(format!("u{}", MAX_USERS + 9).as_str()));
        assert!(!s.users.contains_key("u0"));
    }
}
