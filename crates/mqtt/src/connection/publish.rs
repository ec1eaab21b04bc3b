//! The publish flows: PUBLISH from the client and its QoS 1/2 handshake,
//! and the client's acknowledgements of what the router delivered.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelProperties, Publish, PublishProperties,
};

use super::error::Violation;
use super::session::{Batch, Session, TOPIC_ALIAS_MAX};
use crate::acl::invalid_topic_name;
use crate::acl::Access;
use crate::codec::Version;
use crate::explorer::Inbound;
use base::problems::{Problem, ProblemKind};

/// QoS 1/2 state perch keeps beside the router's.
#[derive(Default)]
pub(super) struct InFlight {
    /// Packet ids of the client's QoS 1/2 publishes the router has not
    /// acknowledged yet.
    pub(super) unacknowledged: HashSet<u16>,
    /// QoS 2 publishes refused by the ACL: the router never saw them, so
    /// perch completes their handshake.
    pub(super) refused_qos2: HashSet<u16>,
    /// A v3.1.1 client's QoS 2 publishes acknowledged with PUBREC, waiting
    /// for its PUBREL: the router holds each whole until then.
    pub(super) awaiting_release: HashSet<u16>,
}

impl Session {
    pub(super) fn on_publish(
        &mut self,
        publish: Publish,
        props: Option<PublishProperties>,
        batch: &mut Batch,
    ) -> Result<(), Violation> {
        let (qos, pkid) = qos_and_pkid(&publish);
        let (topic, props) = self.resolve_topic(&publish, props)?;
        if let Some(reason) = invalid_topic_name(&topic) {
            return Err(Violation::InvalidTopic { topic, reason });
        }
        let size = publish.payload.len();
        if size > self.limits.max_payload {
            return Err(Violation::PayloadTooLarge {
                size,
                limit: self.limits.max_payload,
            });
        }
        if !self.access.can_publish(&topic) {
            self.refuse_publish(&topic, qos, pkid, batch);
            return Ok(());
        }
        if qos > 0 && self.version == Version::V5 {
            let limit = self.limits.receive_max() as usize;
            if self.in_flight.unacknowledged.len() >= limit
                && !self.in_flight.unacknowledged.contains(&pkid)
            {
                return Err(Violation::ReceiveMaximumExceeded { limit });
            }
        }
        // A v3.1.1 client that never releases its QoS 2 publishes would
        // have the router hold them all: past mqtt.max_inflight it is
        // dropped (3.1.1 has no code to say why).
        if qos == 2 && self.version == Version::V311 {
            let limit = self.limits.max_inflight;
            let waiting = &self.in_flight.awaiting_release;
            if waiting.len() >= limit && !waiting.contains(&pkid) {
                return Err(Violation::ReleasesWithheld { limit });
            }
        }
        // The router is given the topic, not the alias: perch keeps the
        // client's aliases.
        let mut publish = publish;
        if publish.topic.is_empty() {
            publish.topic = bytes::Bytes::from(topic.clone().into_bytes());
        }
        let accepted = self.accept_publish(topic, qos, &publish);
        if qos == 2 {
            self.in_flight.refused_qos2.remove(&pkid);
        }
        if qos > 0 {
            self.in_flight.unacknowledged.insert(pkid);
        }
        batch.to_collector.push(accepted);
        batch.to_router.push(Packet::Publish(publish, props));
        Ok(())
    }

    /// The topic a publish names, or the one its v5 topic alias stands for
    /// when it names none; naming both sets the alias.
    /// Returns the properties without the alias, which is the client's
    /// business with perch only.
    fn resolve_topic(
        &mut self,
        publish: &Publish,
        mut props: Option<PublishProperties>,
    ) -> Result<(String, Option<PublishProperties>), Violation> {
        let topic = std::str::from_utf8(&publish.topic)
            .map_err(|_| Violation::TopicNotUtf8)?
            .to_string();
        let Some(alias) = props.as_mut().and_then(|p| p.topic_alias.take()) else {
            return Ok((topic, props));
        };
        // MQTT-3.3.2-8/9: 0 and anything above the Topic Alias Maximum
        // perch announced are invalid.
        if alias == 0 || alias > TOPIC_ALIAS_MAX {
            return Err(Violation::TopicAliasOutOfRange {
                alias,
                max: TOPIC_ALIAS_MAX,
            });
        }
        if topic.is_empty() {
            let topic = self
                .topic_aliases
                .get(&alias)
                .cloned()
                .ok_or(Violation::UnknownTopicAlias(alias))?;
            return Ok((topic, props));
        }
        self.topic_aliases.insert(alias, topic.clone());
        Ok((topic, props))
    }

    /// v3.1.1 has no way to say no: acknowledge and drop, as Mosquitto does;
    /// v5 says "not authorized".
    fn refuse_publish(&mut self, topic: &str, qos: u8, pkid: u16, batch: &mut Batch) {
        self.shared
            .counters
            .acl_denied
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%topic, "publish refused by the ACL");
        self.report_refusal(ProblemKind::MqttPublishRefused, topic);
        match qos {
            1 => {
                let ack = PubAck {
                    pkid,
                    reason: PubAckReason::NotAuthorized,
                };
                batch.to_client.push(Packet::PubAck(ack, None));
            }
            2 => {
                // A v5 flow ends at a PUBREC refusing it; a v3.1.1 client
                // still sends its PUBREL, which perch answers.
                if self.version == Version::V311 {
                    self.in_flight.refused_qos2.insert(pkid);
                }
                let rec = PubRec {
                    pkid,
                    reason: PubRecReason::NotAuthorized,
                };
                batch.to_client.push(Packet::PubRec(rec, None));
            }
            _ => {}
        }
    }

    /// Records an ACL refusal in the recent problems the Overview shows.
    pub(super) fn report_refusal(&self, kind: ProblemKind, topic: &str) {
        let why = match (&self.access, kind) {
            (Access::ReadOnly, ProblemKind::MqttPublishRefused) => {
                "viewer accounts may subscribe, not publish"
            }
            (_, ProblemKind::MqttSubscribeRefused) => "filter outside the account's topics",
            _ => "topic outside the account's topics",
        };
        let who = self.origin.user.as_deref().unwrap_or("anonymous");
        let problem = Problem::new(kind, who, why)
            .with_address(self.origin.ip)
            .with_client_id(&self.client_id)
            .with_topic(topic);
        base::problems::record(problem, self.shared.clock.now_ms());
    }

    /// Records a retained message and counts the publish; returns it for the
    /// collector.
    fn accept_publish(&self, topic: String, qos: u8, publish: &Publish) -> Inbound {
        let now = self.shared.clock.now_ms();
        if publish.retain {
            let recorded = self
                .shared
                .retained
                .record(&topic, &publish.payload, qos.min(2), now);
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not persist a retained message");
            }
        }
        let counters = &self.shared.counters;
        counters.messages_in.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_in
            .fetch_add(publish.payload.len() as u64, Ordering::Relaxed);
        Inbound {
            topic,
            payload: publish.payload.clone(),
            qos,
            retain: publish.retain,
            client_id: self.client_id.clone(),
            origin: Some(self.origin.clone()),
            time_ms: now,
            read: None,
        }
    }

    /// The router acknowledged a publish of the client (PUBACK, or PUBREC
    /// for QoS 2): it no longer counts against the inflight limit.
    pub(super) fn on_publish_acknowledged(&mut self, pkid: u16) {
        self.in_flight.unacknowledged.remove(&pkid);
    }

    pub(super) fn on_pubrel(
        &mut self,
        rel: PubRel,
        props: Option<PubRelProperties>,
        batch: &mut Batch,
    ) {
        if self.in_flight.refused_qos2.remove(&rel.pkid) {
            let comp = PubComp {
                pkid: rel.pkid,
                reason: PubCompReason::Success,
            };
            batch.to_client.push(Packet::PubComp(comp, None));
        } else {
            batch.to_router.push(Packet::PubRel(rel, props));
        }
    }

    /// PUBACK, PUBREC or PUBCOMP from the client, for a message the router
    /// delivered: the router keeps that QoS state.
    pub(super) fn on_delivery_ack(&mut self, ack: Packet, batch: &mut Batch) {
        batch.to_router.push(ack);
    }
}

/// rumqttd keeps a publish's QoS and packet id crate-private; its serialized
/// form (see `make_publish`) starts with them.
fn qos_and_pkid(publish: &Publish) -> (u8, u16) {
    let raw = publish.serialize();
    (raw[0] >> 1 & 0b11, u16::from_be_bytes([raw[1], raw[2]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::make_publish;

    #[test]
    fn qos_and_packet_id_are_read_back() {
        assert_eq!(
            qos_and_pkid(&make_publish("a/b", b"1", 2, true, 513)),
            (2, 513)
        );
        assert_eq!(
            qos_and_pkid(&make_publish("a/b", b"1", 1, false, 65535)),
            (1, 65535)
        );
        assert_eq!(qos_and_pkid(&make_publish("a", b"", 0, false, 0)), (0, 0));
    }
}
