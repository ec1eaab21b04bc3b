//! SUBSCRIBE and UNSUBSCRIBE from the client, and the router's SUBACK.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rumqttd::protocol::{
    Packet, SubAck, Subscribe, SubscribeProperties, SubscribeReasonCode, Unsubscribe,
    UnsubscribeProperties,
};

use super::session::{Batch, Session};
use crate::acl::invalid_filter;
use crate::codec::Version;
use base::problems::ProblemKind;

/// SUBSCRIBE packet id → per requested filter, perch's refusal, or `None`
/// where the router decides. Kept for SUBSCRIBEs perch passed on in part, as
/// the router's SUBACK covers only the filters it saw.
pub(super) type RefusedFilters = HashMap<u16, Vec<Option<SubscribeReasonCode>>>;

impl Session {
    /// Filters that are malformed or outside the client's ACL are refused
    /// here; the others go to the router.
    pub(super) fn on_subscribe(
        &mut self,
        mut sub: Subscribe,
        props: Option<SubscribeProperties>,
        batch: &mut Batch,
    ) {
        let refusals: Vec<Option<SubscribeReasonCode>> = sub
            .filters
            .iter()
            .map(|f| self.refuse_filter(&f.path))
            .collect();
        if refusals.iter().all(Option::is_some) {
            let ack = SubAck {
                pkid: sub.pkid,
                return_codes: refusals.into_iter().flatten().collect(),
            };
            batch.to_client.push(Packet::SubAck(ack, None));
            return;
        }
        if refusals.iter().any(Option::is_some) {
            let mut keep = refusals.iter().map(Option::is_none);
            sub.filters.retain(|_| keep.next().unwrap_or(false));
            self.refused_filters.insert(sub.pkid, refusals);
        }
        batch.to_router.push(Packet::Subscribe(sub, props));
    }

    /// The code perch refuses a filter with, in the client's protocol
    /// version; `None` if the router is to decide.
    fn refuse_filter(&self, filter: &str) -> Option<SubscribeReasonCode> {
        if invalid_filter(filter).is_some() {
            return Some(match self.version {
                Version::V5 => SubscribeReasonCode::TopicFilterInvalid,
                Version::V311 => SubscribeReasonCode::Failure,
            });
        }
        if !self.access.can_subscribe(filter) {
            self.shared
                .counters
                .acl_denied
                .fetch_add(1, Ordering::Relaxed);
            self.report_refusal(ProblemKind::MqttSubscribeRefused, filter);
            return Some(match self.version {
                Version::V5 => SubscribeReasonCode::NotAuthorized,
                Version::V311 => SubscribeReasonCode::Failure,
            });
        }
        None
    }

    pub(super) fn on_suback(&mut self, ack: SubAck) -> SubAck {
        match self.refused_filters.remove(&ack.pkid) {
            Some(refusals) => merge_refusals(refusals, ack),
            None => ack,
        }
    }

    /// Not checked: a client can only drop subscriptions of its own.
    pub(super) fn on_unsubscribe(
        &mut self,
        unsub: Unsubscribe,
        props: Option<UnsubscribeProperties>,
        batch: &mut Batch,
    ) {
        batch.to_router.push(Packet::Unsubscribe(unsub, props));
    }
}

/// Puts perch's refusals back in the places of the filters it kept from the
/// router.
fn merge_refusals(refusals: Vec<Option<SubscribeReasonCode>>, ack: SubAck) -> SubAck {
    let mut from_router = ack.return_codes.into_iter();
    let return_codes = refusals
        .into_iter()
        .map(|r| r.unwrap_or_else(|| from_router.next().unwrap_or(SubscribeReasonCode::Failure)))
        .collect();
    SubAck {
        pkid: ack.pkid,
        return_codes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::QoS;

    #[test]
    fn refusals_keep_their_places_among_the_routers_codes() {
        use SubscribeReasonCode as C;
        let from_router = SubAck {
            pkid: 7,
            return_codes: vec![C::Success(QoS::AtLeastOnce), C::Success(QoS::AtMostOnce)],
        };
        let refusals = vec![None, Some(C::NotAuthorized), None, Some(C::Failure)];
        let merged = merge_refusals(refusals, from_router);
        assert_eq!(merged.pkid, 7);
        assert_eq!(
            merged.return_codes,
            vec![
                C::Success(QoS::AtLeastOnce),
                C::NotAuthorized,
                C::Success(QoS::AtMostOnce),
                C::Failure
            ]
        );
        // A router that answered fewer filters than it was given: failure.
        let short = SubAck {
            pkid: 8,
            return_codes: vec![],
        };
        let merged = merge_refusals(vec![None, Some(C::NotAuthorized)], short);
        assert_eq!(merged.return_codes, vec![C::Failure, C::NotAuthorized]);
    }
}
