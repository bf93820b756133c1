//! Gossipsub as Hypha runs it: signed messages checked strictly, nothing forwarded before
//! the coordinator validated it, the block's CID per topic as the message id, peer scoring on.

use std::time::Duration;

use libp2p_gossipsub::{
    self as gossipsub, IdentityTransform, MaxCountSubscriptionFilter, MessageAuthenticity,
    MessageId, PeerScoreParams, PeerScoreThresholds, TopicHash, TopicScoreParams,
    TopicSubscriptionFilter, ValidationMode, score_parameter_decay,
};
use libp2p_identity::Keypair;

use crate::pubsub;

/// The default of [`HyphaConfig::with_max_transmit_bytes`](super::HyphaConfig::with_max_transmit_bytes).
pub(super) const DEFAULT_MAX_TRANSMIT_BYTES: usize = 128 * 1024;

/// Topics a peer may be known to follow (gossipsub keeps a set per peer): past it, a peer's
/// subscription request is refused whole. Hypha joins at most 65 topics per followed
/// collection (the collection's and 64 shards), so this allows about 150 collections.
pub const DEFAULT_MAX_TOPICS_PER_PEER: usize = 10_000;

/// Gossipsub with Hypha's subscription filter.
pub type Gossipsub = gossipsub::Behaviour<IdentityTransform, Filter>;

/// The subscription filter: topics of this network only, a bounded number per peer.
pub type Filter = MaxCountSubscriptionFilter<NamespaceTopics>;

/// Accepts only the pubsub topics of one network (`/hypha/<namespace>/pubsub/…`), for this
/// node's own subscriptions and for what peers say they follow: a peer announcing topics of
/// another network or application costs no memory here.
#[derive(Debug, Clone)]
pub struct NamespaceTopics {
    prefix: String,
}

impl TopicSubscriptionFilter for NamespaceTopics {
    fn can_subscribe(&mut self, topic: &TopicHash) -> bool {
        topic.as_str().starts_with(&self.prefix)
    }
}

/// Gossipsub as Hypha needs it: signed messages checked strictly, nothing forwarded before the
/// coordinator validated it, the block's CID per topic as the message id, peer scoring on,
/// subscriptions filtered to `namespace`'s topics and at most `max_topics` per peer.
pub(super) fn behaviour(
    keypair: &Keypair,
    namespace: &str,
    gossipsub_config: gossipsub::Config,
    max_topics: usize,
) -> Gossipsub {
    let signed = MessageAuthenticity::Signed(keypair.clone());
    // invariant: signed messages with strict validation is a valid pair.
    let filter = MaxCountSubscriptionFilter {
        filter: NamespaceTopics {
            prefix: format!("/hypha/{namespace}/pubsub/"),
        },
        max_subscribed_topics: max_topics,
        // A peer announces all it follows in its first message: as many as it may follow.
        max_subscriptions_per_request: max_topics,
    };
    let mut behaviour =
        gossipsub::Behaviour::new_with_subscription_filter(signed, gossipsub_config, filter)
            .expect("signed, strict");
    // invariant: the parameters below are within the documented ranges; scoring is set once.
    behaviour
        .with_peer_score(peer_score_params(), PeerScoreThresholds::default())
        .expect("valid score parameters");
    behaviour
}

/// Gossipsub's own configuration as Hypha runs it: signed messages checked strictly, nothing
/// forwarded before the coordinator validated it, the block's CID per topic as the message id,
/// messages of at most `max_transmit_bytes`.
pub(super) fn config(heartbeat: Option<Duration>, max_transmit_bytes: usize) -> gossipsub::Config {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::new(&pubsub::message_id(m.topic.as_str(), &m.data))
        })
        .max_transmit_size(max_transmit_bytes);
    if let Some(interval) = heartbeat {
        builder
            .heartbeat_interval(interval)
            .heartbeat_initial_delay(interval);
    }
    // invariant: build checks per-topic sizes, mesh sizes and history lengths, none of which
    // is set here, and an unsubscribe backoff, left at its non-zero default.
    builder.build().expect("valid gossipsub config")
}

/// Peer scoring: gossipsub's defaults (gossip −10, publish −50, graylist −80; IP colocation
/// and behaviour penalties on; the application score, weighted 10, is minus the peer's
/// [`standing`](crate::standing) points), with positive topic scores capped at 100.
fn peer_score_params() -> PeerScoreParams {
    PeerScoreParams {
        topic_score_cap: 100.0,
        ..PeerScoreParams::default()
    }
}

/// Each joined topic's scoring. Hypha's topics are sparse — one message per commit — so the
/// mesh-delivery penalties (P3, P3b), which punish mesh peers for quiet topics, are off. Time
/// in the mesh (P1) earns up to +10 in an hour, first deliveries (P2) +1 each up to 50. An
/// invalid message (P4) costs −10 × count², decaying to zero over an hour: a peer that sends
/// two stops getting gossip, three and it is graylisted.
pub(super) fn topic_score_params() -> TopicScoreParams {
    let hour = Duration::from_secs(3600);
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 10.0 / 3600.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: score_parameter_decay(hour),
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: score_parameter_decay(hour),
        ..TopicScoreParams::default()
    }
}
