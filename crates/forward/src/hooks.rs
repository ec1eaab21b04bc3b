//! The hooks the server calls: storage's append hook (every accepted batch
//! of samples) and the collector's messages. Each decides what goes to which
//! target — samples matching a samples target's selectors, messages whose
//! topic matches an MQTT target's filters — encodes it as a queue item and
//! hands it to the target's lane. They run on the appending and collector
//! threads: one item per append or message keeps the hand-over cheap.

use store::{AppendObserver, Appended, Labels};

use super::Forwarder;
use crate::item;
use crate::target::Target;
use config::ForwardKind;

impl AppendObserver for Forwarder {
    fn appended(&self, a: &Appended<'_>) {
        for t in self.targets().iter() {
            if !t.config.kind.takes_samples() {
                continue;
            }
            if let Some(item) = samples_item(t, a) {
                t.lane.offer(item);
            }
        }
    }
}

impl Forwarder {
    /// Hands an MQTT message to the targets whose topic filters match.
    pub fn offer_message(&self, topic: &str, payload: &[u8], qos: u8, retain: bool, time_ms: i64) {
        for t in self.targets().iter() {
            if t.config.kind == ForwardKind::Mqtt && t.takes_topic(topic) {
                t.lane
                    .offer(item::encode_message(topic, qos, retain, time_ms, payload));
            }
        }
    }
}

/// One item for the whole append, not one per series: one hand-over and
/// one queue entry. None when no series matches.
fn samples_item(t: &Target, a: &Appended<'_>) -> Option<Vec<u8>> {
    let mut w = item::SamplesWriter::default();
    for (labels, samples) in a.series() {
        if t.matches(labels) {
            w.add_labels(labels, samples);
        }
    }
    w.finish()
}

impl Target {
    /// Whether a series goes to this samples target.
    fn matches(&self, labels: &Labels) -> bool {
        self.selectors.is_empty()
            || self
                .selectors
                .iter()
                .any(|set| set.iter().all(|m| m.matches_labels(labels)))
    }

    /// Whether a message of `topic` goes to this MQTT target.
    pub(crate) fn takes_topic(&self, topic: &str) -> bool {
        self.config
            .topics
            .iter()
            .any(|f| base::topic::topic_matches(f, topic))
    }
}
