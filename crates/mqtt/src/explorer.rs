//! What the dashboard's explorer shows: every topic with its last payload,
//! count, rate and retained flag; a bounded history of recent messages; and a
//! live feed. All bounded: at most `mqtt.max_topics` topics (the least
//! recently active are forgotten first) and `mqtt.history_bytes` of history.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use ingest::conventions::Family;
use ingest::mqtt_payload::PayloadFormat;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use super::acl::topic_matches;

/// Longest payload kept per message for display; the length is recorded.
pub const PREVIEW_BYTES: usize = 4096;
/// Time constant of the per-topic message rate.
const RATE_TAU_SECS: f64 = 60.0;

/// A message as it entered the broker.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub client_id: Arc<str>,
    /// Who signed in and from where, for a client's message; none for
    /// perch's own (the publish API, wills).
    pub origin: Option<Arc<super::collector::Origin>>,
    pub time_ms: i64,
    /// How the collector read it; set before the explorer records it.
    pub read: Option<ReadSummary>,
}

/// How one message was read, for the explorer: as which family and format,
/// how many series and samples it gave, and why none where it gave none.
/// Kept small (it rides along every message in the history): enums, not
/// strings, and the note boxed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadSummary {
    #[serde(serialize_with = "family_name")]
    pub family: Family,
    #[serde(serialize_with = "format_name")]
    pub format: PayloadFormat,
    pub series: u32,
    pub samples: u32,
    pub outcome: Outcome,
    /// The first reason something was not stored, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<Box<str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It gave samples.
    Stored,
    NoSamples,
    /// No format matched.
    Unparsed,
}

fn family_name<S: serde::Serializer>(f: &Family, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.as_str())
}

fn format_name<S: serde::Serializer>(f: &PayloadFormat, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match f {
        PayloadFormat::Number => "number",
        PayloadFormat::Boolean => "boolean",
        PayloadFormat::Json => "json",
        PayloadFormat::OpenTsdb => "opentsdb",
        PayloadFormat::LineProtocol => "line_protocol",
        PayloadFormat::Text => "text",
        PayloadFormat::Unparsed => "unparsed",
        PayloadFormat::Ignored => "ignored",
    })
}

/// A message as the explorer keeps and shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Shown {
    pub topic: String,
    /// UTF-8 text, or base64 when the payload is binary.
    pub payload: String,
    pub encoding: &'static str,
    pub bytes: usize,
    pub truncated: bool,
    pub qos: u8,
    pub retain: bool,
    pub client_id: String,
    pub time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadSummary>,
}

impl Shown {
    pub fn of(m: &Inbound) -> Shown {
        let cut = &m.payload[..m.payload.len().min(PREVIEW_BYTES)];
        let (payload, encoding) = match std::str::from_utf8(cut) {
            Ok(s) => (s.to_string(), "utf8"),
            // A cut in the middle of a character is still text.
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => (
                String::from_utf8_lossy(&cut[..e.valid_up_to()]).into_owned(),
                "utf8",
            ),
            Err(_) => {
                use base64::Engine;
                (
                    base64::engine::general_purpose::STANDARD.encode(cut),
                    "base64",
                )
            }
        };
        Shown {
            topic: m.topic.clone(),
            payload,
            encoding,
            bytes: m.payload.len(),
            truncated: m.payload.len() > PREVIEW_BYTES,
            qos: m.qos,
            retain: m.retain,
            client_id: m.client_id.to_string(),
            time_ms: m.time_ms,
            read: m.read.clone(),
        }
    }
}

struct TopicStats {
    last: Arc<Inbound>,
    count: u64,
    /// Exponentially decayed rate, messages/s, as of `rate_at_ms`.
    rate: f64,
    rate_at_ms: i64,
    retained: bool,
}

impl TopicStats {
    fn rate_at(&self, now_ms: i64) -> f64 {
        let dt = (now_ms - self.rate_at_ms).max(0) as f64 / 1000.0;
        self.rate * (-dt / RATE_TAU_SECS).exp()
    }
}

struct Inner {
    topics: HashMap<String, TopicStats>,
    /// With what each costs, so that forgetting the oldest reads nothing of
    /// it (it is long out of the CPU's cache).
    history: VecDeque<(Arc<Inbound>, usize)>,
    history_bytes: usize,
}

pub struct Explorer {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Inbound>>,
    max_topics: usize,
    max_history_bytes: usize,
}

/// One node of the topic tree.
#[derive(Debug, Serialize)]
pub struct TopicNode {
    pub name: String,
    pub topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Shown>,
    pub messages: u64,
    pub rate_per_sec: f64,
    pub retained: bool,
    pub children: Vec<TopicNode>,
}

impl Explorer {
    pub fn new(max_topics: usize, max_history_bytes: usize) -> Explorer {
        let (live, _) = broadcast::channel(4096);
        Explorer {
            inner: Mutex::new(Inner {
                topics: HashMap::new(),
                history: VecDeque::new(),
                history_bytes: 0,
            }),
            live,
            max_topics,
            max_history_bytes,
        }
    }

    /// Heap bytes of the history (as counted against `history_bytes`) and
    /// of the topic table.
    pub fn memory_bytes(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let table = inner.topics.capacity() * (std::mem::size_of::<(String, TopicStats)>() + 1)
            + inner.topics.keys().map(String::len).sum::<usize>();
        (inner.history_bytes, table)
    }

    /// Records a message; called by the collector for every one.
    pub fn record(&self, msg: Arc<Inbound>) {
        let _ = self.live.send(msg.clone());
        let mut inner = self.inner.lock();
        let now = msg.time_ms;
        match inner.topics.get_mut(&msg.topic) {
            Some(t) => {
                t.rate = t.rate_at(now) + 1.0 / RATE_TAU_SECS;
                t.rate_at_ms = now;
                t.count += 1;
                if msg.retain {
                    t.retained = !msg.payload.is_empty();
                }
                t.last = msg.clone();
            }
            None => {
                inner.topics.insert(
                    msg.topic.clone(),
                    TopicStats {
                        last: msg.clone(),
                        count: 1,
                        rate: 1.0 / RATE_TAU_SECS,
                        rate_at_ms: now,
                        retained: msg.retain && !msg.payload.is_empty(),
                    },
                );
                if inner.topics.len() > self.max_topics {
                    forget_least_active(&mut inner.topics, self.max_topics);
                }
            }
        }
        let kept = trimmed(msg);
        let cost = kept_bytes(&kept);
        inner.history_bytes += cost;
        inner.history.push_back((kept, cost));
        while inner.history_bytes > self.max_history_bytes {
            let Some((_, cost)) = inner.history.pop_front() else {
                break;
            };
            inner.history_bytes -= cost;
        }
    }

    /// The newest messages whose topic matches `filter`, newest first.
    pub fn messages(&self, filter: &str, limit: usize) -> Vec<Shown> {
        let inner = self.inner.lock();
        inner
            .history
            .iter()
            .rev()
            .map(|(m, _)| m)
            .filter(|m| topic_matches(filter, &m.topic))
            .take(limit)
            .map(|m| Shown::of(m))
            .collect()
    }

    pub fn subscribe_live(&self) -> broadcast::Receiver<Arc<Inbound>> {
        self.live.subscribe()
    }

    pub fn topic_count(&self) -> usize {
        self.inner.lock().topics.len()
    }

    /// The topic tree of topics matching `filter`.
    pub fn tree(&self, filter: &str, now_ms: i64) -> TopicNode {
        let inner = self.inner.lock();
        let mut root = TopicNode {
            name: String::new(),
            topic: String::new(),
            last: None,
            messages: 0,
            rate_per_sec: 0.0,
            retained: false,
            children: Vec::new(),
        };
        let mut names: Vec<&String> = inner
            .topics
            .keys()
            .filter(|t| topic_matches(filter, t))
            .collect();
        // Level by level, so each subtree's topics are contiguous and a
        // child, if it exists, is always the last one added.
        names.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        for name in names {
            let stats = &inner.topics[name];
            let rate = stats.rate_at(now_ms);
            let mut node = &mut root;
            node.messages += stats.count;
            node.rate_per_sec += rate;
            let mut end = 0;
            for level in name.split('/') {
                end += level.len();
                let topic = &name[..end];
                end += 1;
                if node.children.last().is_none_or(|c| c.name != level) {
                    node.children.push(TopicNode {
                        name: level.to_string(),
                        topic: topic.to_string(),
                        last: None,
                        messages: 0,
                        rate_per_sec: 0.0,
                        retained: false,
                        children: Vec::new(),
                    });
                }
                node = node.children.last_mut().expect("just ensured");
                node.messages += stats.count;
                node.rate_per_sec += rate;
            }
            node.last = Some(Shown::of(&stats.last));
            node.retained = stats.retained;
        }
        root
    }
}

/// History keeps a preview, not megabyte payloads.
/// What a message in the history costs, counted against `history_bytes`:
/// its text, its read summary's note and the record itself.
fn kept_bytes(m: &Inbound) -> usize {
    let note = m
        .read
        .as_ref()
        .and_then(|r| r.note.as_ref())
        .map_or(0, |n| n.len());
    m.payload.len() + m.topic.len() + note + std::mem::size_of::<Inbound>() + 16
}

fn trimmed(msg: Arc<Inbound>) -> Arc<Inbound> {
    if msg.payload.len() <= PREVIEW_BYTES {
        return msg;
    }
    let mut m = (*msg).clone();
    m.payload = m.payload.slice(..PREVIEW_BYTES);
    Arc::new(m)
}

/// Drops the least recently active tenth beyond the limit at once, so a flood
/// of new topics costs a sort now and then, not a scan per message.
fn forget_least_active(topics: &mut HashMap<String, TopicStats>, max: usize) {
    let target = max - max / 10;
    let mut by_age: Vec<(i64, String)> = topics
        .iter()
        .map(|(k, v)| (v.last.time_ms, k.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, k) in by_age.into_iter().take(topics.len() - target) {
        topics.remove(&k);
    }
}
