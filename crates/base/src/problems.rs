//! The recent problems people should see on the Overview, not only in
//! metrics: failed sign-ins (MQTT and HTTP), publishes and subscriptions the
//! MQTT ACL refused, refused writes, and MQTT payloads that stored nothing
//! because they could not be read.
//!
//! Identical problems (same kind, who, where and reason) are one entry with
//! a count and the first and last time seen, so a flood of bad logins is one
//! line. Bounded: at most [`CAPACITY`] entries (the one seen longest ago is
//! forgotten first), every text cut short. The log hears of a problem when
//! it is first seen and when its count reaches 10, 100, 1000, …, at most
//! [`LOG_LINES_PER_MINUTE`] lines a minute; the rest is counted, not logged.
//!
//! Process-wide like the log, so the broker and the HTTP front end report
//! to one list ([`record`], [`recent`]); the time is the caller's, from its
//! [`crate::Clock`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::Serialize;

/// The target of problems' own log lines (`RecentEventsLayer` leaves them
/// out: problems have this list).
pub const LOG_TARGET: &str = "perch_base::problems";

/// Entries kept at most.
pub const CAPACITY: usize = 200;
/// Log lines about problems a minute, at most.
pub const LOG_LINES_PER_MINUTE: u32 = 20;
/// Bytes kept of a name (user, client id, route).
const MAX_NAME: usize = 128;
/// Bytes kept of a topic.
const MAX_TOPIC: usize = 256;
/// Bytes kept of a reason.
const MAX_WHY: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A CONNECT refused: wrong password, unknown user, anonymous.
    MqttSignIn,
    /// Basic auth, an API token or the sign-in page refused, or an account
    /// whose role may not do what it asked.
    HttpSignIn,
    /// A PUBLISH (or a will) the ACL refused.
    MqttPublishRefused,
    /// A SUBSCRIBE filter the ACL refused.
    MqttSubscribeRefused,
    /// A write endpoint refused the write (in whole or in part).
    WriteRefused,
    /// An MQTT payload no format could read: nothing stored.
    UnreadablePayload,
}

impl ProblemKind {
    /// What happened, in words.
    pub fn what(self) -> &'static str {
        match self {
            ProblemKind::MqttSignIn => "MQTT sign-in refused",
            ProblemKind::HttpSignIn => "HTTP sign-in refused",
            ProblemKind::MqttPublishRefused => "MQTT publish refused",
            ProblemKind::MqttSubscribeRefused => "MQTT subscription refused",
            ProblemKind::WriteRefused => "write refused",
            ProblemKind::UnreadablePayload => "MQTT payload not readable",
        }
    }
}

/// One problem: as reported ([`Problem::new`] and the `with_` methods), and
/// as kept, with its count and times.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// [`ProblemKind::what`].
    pub what: &'static str,
    /// The user name, a client id, or `anonymous`.
    pub who: String,
    /// `address`, `client_id`, `topic` and `route` in one line.
    #[serde(rename = "where")]
    pub where_: String,
    /// The client's IP address.
    pub address: Option<String>,
    /// The MQTT client id (of the last occurrence).
    pub client_id: Option<String>,
    /// The MQTT topic (or subscription filter).
    pub topic: Option<String>,
    /// The HTTP route.
    pub route: Option<String>,
    /// Why: as the client was told (of the last occurrence).
    pub why: String,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Problem {
    pub fn new(kind: ProblemKind, who: &str, why: &str) -> Problem {
        let who = if who.is_empty() { "anonymous" } else { who };
        Problem {
            kind,
            what: kind.what(),
            who: cut(who, MAX_NAME),
            where_: String::new(),
            address: None,
            client_id: None,
            topic: None,
            route: None,
            why: cut(why, MAX_WHY),
            count: 0,
            first_ms: 0,
            last_ms: 0,
        }
    }

    pub fn with_address(mut self, ip: Option<IpAddr>) -> Problem {
        self.address = ip.map(|ip| ip.to_canonical().to_string());
        self
    }

    pub fn with_client_id(mut self, id: &str) -> Problem {
        self.client_id = (!id.is_empty()).then(|| cut(id, MAX_NAME));
        self
    }

    pub fn with_topic(mut self, topic: &str) -> Problem {
        self.topic = Some(cut(topic, MAX_TOPIC));
        self
    }

    pub fn with_route(mut self, route: &str) -> Problem {
        self.route = Some(cut(route, MAX_NAME));
        self
    }

    /// The client id is not part of it: clients that sign in with a new
    /// random id each time (mosquitto_pub) are one problem. Digits in the
    /// reason are not either (`line 3`, `2 samples stored`).
    fn key(&self) -> Key {
        Key {
            kind: self.kind,
            who: self.who.clone(),
            address: self.address.clone(),
            topic: self.topic.clone(),
            route: self.route.clone(),
            why: without_numbers(&self.why),
        }
    }

    fn describe_where(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.address {
            parts.push(a.clone());
        }
        if let Some(c) = &self.client_id {
            parts.push(format!("client {c}"));
        }
        if let Some(t) = &self.topic {
            parts.push(format!("topic {t}"));
        }
        if let Some(r) = &self.route {
            parts.push(r.clone());
        }
        parts.join(", ")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: ProblemKind,
    who: String,
    address: Option<String>,
    topic: Option<String>,
    route: Option<String>,
    why: String,
}

/// The kept problems; see the module's documentation.
#[derive(Default)]
pub struct Problems {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Problem>,
    /// The minute (ms / 60 000) `logged` counts lines of.
    log_minute: i64,
    logged: u32,
    /// Lines not logged since the last that was.
    unlogged: u64,
}

/// A line to log once the lock is let go.
enum Line {
    First(Problem),
    Repeated(Problem),
    Unlogged(u64),
}

impl Problems {
    /// Counts `problem` as happened at `now_ms`.
    pub fn record(&self, problem: Problem, now_ms: i64) {
        let mut lines = Vec::new();
        {
            let mut s = self.state.lock();
            let key = problem.key();
            let log = match s.entries.get_mut(&key) {
                Some(e) => {
                    e.count += 1;
                    e.last_ms = e.last_ms.max(now_ms);
                    e.why = problem.why;
                    if problem.client_id.is_some() {
                        e.client_id = problem.client_id;
                        e.where_ = e.describe_where();
                    }
                    is_power_of_ten(e.count).then(|| Line::Repeated(e.clone()))
                }
                None => {
                    if s.entries.len() >= CAPACITY {
                        let oldest = s
                            .entries
                            .iter()
                            .min_by_key(|(_, e)| e.last_ms)
                            .map(|(k, _)| k.clone());
                        if let Some(k) = oldest {
                            s.entries.remove(&k);
                        }
                    }
                    let mut e = problem;
                    e.count = 1;
                    e.first_ms = now_ms;
                    e.last_ms = now_ms;
                    e.where_ = e.describe_where();
                    s.entries.insert(key, e.clone());
                    Some(Line::First(e))
                }
            };
            if let Some(line) = log {
                let minute = now_ms.div_euclid(60_000);
                if minute != s.log_minute {
                    s.log_minute = minute;
                    s.logged = 0;
                }
                if s.logged < LOG_LINES_PER_MINUTE {
                    s.logged += 1;
                    if s.unlogged > 0 {
                        lines.push(Line::Unlogged(std::mem::take(&mut s.unlogged)));
                    }
                    lines.push(line);
                } else {
                    s.unlogged += 1;
                }
            }
        }
        for line in lines {
            log(line);
        }
    }

    /// The kept problems, the last seen first.
    pub fn recent(&self) -> Vec<Problem> {
        let mut list: Vec<Problem> = self.state.lock().entries.values().cloned().collect();
        list.sort_by(|a, b| {
            b.last_ms
                .cmp(&a.last_ms)
                .then(b.first_ms.cmp(&a.first_ms))
                .then(a.who.cmp(&b.who))
        });
        list
    }

    /// Log lines about problems left out (over the rate) so far.
    #[cfg(test)]
    fn unlogged(&self) -> u64 {
        self.state.lock().unlogged
    }
}

fn log(line: Line) {
    match line {
        Line::First(p) => tracing::warn!(
            target: LOG_TARGET,
            who = %p.who,
            r#where = %p.where_,
            "{}: {}",
            p.what,
            p.why
        ),
        Line::Repeated(p) => tracing::warn!(
            target: LOG_TARGET,
            who = %p.who,
            r#where = %p.where_,
            "{}: {} ({} times since {})",
            p.what,
            p.why,
            p.count,
            chrono::DateTime::from_timestamp_millis(p.first_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default()
        ),
        Line::Unlogged(n) => tracing::warn!(
            target: LOG_TARGET,
            "{n} more problem reports were not logged (at most {LOG_LINES_PER_MINUTE} a minute); the dashboard's Overview counts them all"
        ),
    }
}

/// `s` with each run of digits as one `#`.
fn without_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

fn is_power_of_ten(mut n: u64) -> bool {
    if n < 10 {
        return false;
    }
    while n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// `s` cut to at most `max` bytes, on a character boundary, with `…` when
/// cut; control characters (a topic's NUL, a newline in a user name) as
/// spaces.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = s[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < s.len() {
        out.push('…');
    }
    out
}

/// The process's problems.
pub fn global() -> &'static Problems {
    static PROBLEMS: OnceLock<Problems> = OnceLock::new();
    PROBLEMS.get_or_init(Problems::default)
}

/// Counts `problem` in the process's problems.
pub fn record(problem: Problem, now_ms: i64) {
    global().record(problem, now_ms)
}

/// The process's problems, the last seen first.
pub fn recent() -> Vec<Problem> {
    global().recent()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(who: &str, ip: &str) -> Problem {
        Problem::new(ProblemKind::MqttSignIn, who, "wrong password")
            .with_address(Some(ip.parse().unwrap()))
            .with_client_id(&format!("mosq-{who}-{ip}"))
    }

    #[test]
    fn identical_problems_are_one_entry_with_a_count() {
        let p = Problems::default();
        for t in 0..5 {
            p.record(
                login("alice", "10.0.0.1").with_client_id(&format!("mosq-{t}")),
                1_000 + t,
            );
        }
        p.record(login("bob", "10.0.0.1"), 2_000);
        let list = p.recent();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].who, "bob");
        let alice = &list[1];
        assert_eq!(
            (alice.count, alice.first_ms, alice.last_ms),
            (5, 1_000, 1_004)
        );
        assert_eq!(alice.address.as_deref(), Some("10.0.0.1"));
        assert_eq!(alice.client_id.as_deref(), Some("mosq-4"));
        assert_eq!(alice.where_, "10.0.0.1, client mosq-4");
        assert_eq!(alice.what, "MQTT sign-in refused");
    }

    #[test]
    fn digits_in_the_reason_do_not_split_a_problem() {
        let p = Problems::default();
        let write = |why: &str| {
            Problem::new(ProblemKind::WriteRefused, "dev", why)
                .with_route("/write")
                .with_address(Some("::ffff:192.168.1.2".parse().unwrap()))
        };
        p.record(write("partial write: 2 samples stored, 1 problem"), 1);
        p.record(write("partial write: 15 samples stored, 1 problem"), 2);
        p.record(write("body is not UTF-8"), 3);
        let list = p.recent();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].count, 2);
        assert_eq!(list[1].why, "partial write: 15 samples stored, 1 problem");
        assert_eq!(list[1].where_, "192.168.1.2, /write");
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let p = Problems::default();
        let long = "x".repeat(10_000);
        for i in 0..(CAPACITY as i64 + 50) {
            p.record(
                Problem::new(ProblemKind::HttpSignIn, &format!("{i}{long}"), &long)
                    .with_topic(&long),
                i,
            );
        }
        let list = p.recent();
        assert_eq!(list.len(), CAPACITY);
        assert_eq!(list.last().unwrap().first_ms, 50);
        assert!(list.iter().all(|e| e.who.len() <= MAX_NAME + 3
            && e.why.len() <= MAX_WHY + 3
            && e.topic.as_ref().unwrap().len() <= MAX_TOPIC + 3));
    }

    #[test]
    fn log_lines_are_limited() {
        let p = Problems::default();
        // Distinct problems within one minute: the first ones are logged.
        for i in 0..(LOG_LINES_PER_MINUTE as i64 + 7) {
            p.record(login(&format!("u{i}"), "10.0.0.9"), 120_000 + i);
        }
        assert_eq!(p.unlogged(), 7);
        // Repeats are counted; none of them is a new line until the count
        // reaches 10.
        for i in 0..8 {
            p.record(login("u0", "10.0.0.9"), 120_100 + i);
        }
        assert_eq!(p.unlogged(), 7);
        // The next minute logs again, saying how many were left out.
        p.record(login("u0", "10.0.0.9"), 180_000);
        assert_eq!(p.unlogged(), 0);
        assert_eq!(p.recent()[0].count, 10);
    }

    #[test]
    fn names_are_cut_on_character_boundaries_without_control_characters() {
        assert_eq!(cut("ab\ncd", 10), "ab cd");
        assert_eq!(cut("ééé", 3), "é…");
        assert_eq!(
            Problem::new(ProblemKind::MqttSignIn, "", "x").who,
            "anonymous"
        );
        assert!(is_power_of_ten(10) && is_power_of_ten(1000));
        assert!(!is_power_of_ten(1) && !is_power_of_ten(20) && !is_power_of_ten(110));
    }
}
