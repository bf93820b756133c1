//! [`Hypha`], the behaviour that runs the coordinator ([`Node`]) in a libp2p `Swarm`: frames
//! and gossipsub in, the node's commands executed, its events out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures_timer::Delay;
use hypha_crdt::{CollectionId, DocId};
use hypha_store::{Mutation, PeerKey, Store};
use libp2p_core::multiaddr::Protocol as Segment;
use libp2p_core::transport::PortUse;
use libp2p_core::{ConnectedPoint, Endpoint, Multiaddr};
use libp2p_gossipsub::{self as gossipsub, IdentTopic, MessageAcceptance, PublishError, TopicHash};
use libp2p_identity::{Keypair, PeerId};
use libp2p_swarm::behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure};
use libp2p_swarm::dial_opts::DialOpts;
use libp2p_swarm::{
    CloseConnection, ConnectionDenied, ConnectionHandlerSelect, ConnectionId, DialError, FromSwarm,
    NetworkBehaviour, StreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

use super::gossip;
use super::persist::Persister;
use super::{Config, Event as FramesEvent, Frames, SendError, StreamError};
use crate::connectivity::{self, Connectivity, Path, Reason};
use crate::node::{self, Command, FollowError, Node, Peer, PersistToken, Protocol, Verdict};
use crate::standing::{self, Standing};

/// Hypha in a `Swarm`: the coordinator, Hypha's stream protocols and gossipsub, persisting to
/// the store off the event loop. See the [module docs](super) for what it does and its bounds.
pub struct Hypha {
    inner: Inner,
    node: Node<PeerId>,
    /// Before `store`: dropping it waits for the tickets already submitted.
    persister: Persister,
    store: Arc<Store>,
    timer: Delay,
    timer_at: Option<Instant>,
    out: VecDeque<ToSwarm<HyphaEvent, THandlerInEvent<Inner>>>,
    waker: Option<Waker>,
    standing: Standing<PeerId>,
    next_prune: Instant,
}

/// How [`Hypha`] is set up: the coordinator's [`node::Config`] and the bounds of the wrapper.
#[derive(Debug, Clone)]
pub struct HyphaConfig {
    node: node::Config<PeerId>,
    heartbeat: Option<Duration>,
    max_transmit_bytes: usize,
    max_queued_persists: usize,
    max_topics_per_peer: usize,
    standing: standing::Config,
}

/// How often peers' standing records are pruned (on the node's timer).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What [`Hypha`] reports to the application.
#[derive(Debug)]
pub enum HyphaEvent {
    /// A connectivity decision for the application: provider records and lookups (Kademlia),
    /// relay reservations (the relay client), hole punches (DCUtR punches on its own and may
    /// ignore them). Report the outcomes with [`Hypha::handle_connectivity`]. Dials never
    /// appear here: the behaviour makes them.
    Connect(connectivity::Command<PeerId>),
    /// What the coordinator reports: changes, persist results, replication, misbehaviour.
    Node(node::Event<PeerId>),
    /// A frame for `peer` was not queued; the cores' timeouts send again what matters.
    NotSent {
        /// The peer.
        peer: PeerId,
        /// The stream protocol.
        protocol: Protocol,
        /// Why.
        error: SendError,
    },
    /// Publishing on `topic` failed, other than for having no peers or being a duplicate
    /// (both normal): the update reaches followers by their next update or by backfill.
    PublishFailed {
        /// The topic.
        topic: String,
        /// Why.
        error: PublishError,
    },
    /// A stream with `peer` failed. Inbound, the peer broke the framing or a bound: that is
    /// also a [`node::Violation::Framing`], reported (as [`node::Event::PeerMisbehaved`]) and
    /// charged to the peer's standing just before this event.
    StreamFailed {
        /// The peer.
        peer: PeerId,
        /// The stream protocol.
        protocol: Protocol,
        /// Why.
        error: StreamError,
    },
    /// `peer` joined the pubsub `topic`.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: String,
    },
    /// `peer` left the pubsub `topic`.
    Unsubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: String,
    },
    /// `peer` reached the ban threshold of its [`standing`](crate::standing): its
    /// connections are closed and new ones refused for `for_`.
    Banned {
        /// The peer.
        peer: PeerId,
        /// How long the ban lasts.
        for_: Duration,
    },
}

/// Why a connection was refused: the peer is banned for its violations
/// ([`standing`](crate::standing)).
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is banned for protocol violations")]
pub struct BannedPeer(pub PeerId);

impl Peer for PeerId {
    fn to_key(&self) -> PeerKey {
        PeerKey(self.to_bytes())
    }

    fn from_key(key: &PeerKey) -> Option<PeerId> {
        PeerId::from_bytes(&key.0).ok()
    }
}

impl HyphaConfig {
    /// The wrapper's defaults around the coordinator's `node` configuration.
    pub fn new(node: node::Config<PeerId>) -> HyphaConfig {
        HyphaConfig {
            node,
            heartbeat: None,
            max_transmit_bytes: gossip::DEFAULT_MAX_TRANSMIT_BYTES,
            max_queued_persists: 1024,
            max_topics_per_peer: gossip::DEFAULT_MAX_TOPICS_PER_PEER,
            standing: standing::Config::default(),
        }
    }

    /// Gossipsub's heartbeat interval, and its delay before the first heartbeat. Default:
    /// gossipsub's (1 s, first after 6 s); tests shorten it. At least 1 ms.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> HyphaConfig {
        self.heartbeat = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// The largest gossipsub message, in bytes. Default 128 KiB: an update with a 32 KiB
    /// inline block and up to 1,024 head CIDs (~38 KiB), plus gossipsub's signed envelope.
    /// A larger `max_inline_bytes` in the node config needs a larger value.
    pub fn with_max_transmit_bytes(mut self, n: usize) -> HyphaConfig {
        self.max_transmit_bytes = n;
        self
    }

    /// Persists in flight (submitted to the store, not yet answered) before submitting blocks
    /// the event loop until the store answers one (back-pressure from a slow disk). Default
    /// 1,024; at least 1.
    pub fn with_max_queued_persists(mut self, n: usize) -> HyphaConfig {
        self.max_queued_persists = n.max(1);
        self
    }

    /// Pubsub topics a peer may be known to follow; a subscription request past it is refused
    /// whole. Default [`DEFAULT_MAX_TOPICS_PER_PEER`](super::DEFAULT_MAX_TOPICS_PER_PEER); at
    /// least 1.
    pub fn with_max_topics_per_peer(mut self, n: usize) -> HyphaConfig {
        self.max_topics_per_peer = n.max(1);
        self
    }

    /// What violations cost peers and when they are banned. Default
    /// [`standing::Config::default`]: 5 points (one per violation, halving every 10 minutes)
    /// ban for 15 minutes.
    pub fn with_standing(mut self, config: standing::Config) -> HyphaConfig {
        self.standing = config;
        self
    }

    /// The coordinator's configuration.
    pub fn node(&self) -> &node::Config<PeerId> {
        &self.node
    }

    /// Gossipsub's configuration, as [`Hypha::new`] builds gossipsub with it: signed messages
    /// validated strictly, each by the coordinator before it is forwarded, of at most
    /// `max_transmit_bytes`.
    pub fn gossipsub(&self) -> gossipsub::Config {
        gossip::config(self.heartbeat, self.max_transmit_bytes)
    }

    /// The configuration of the stream protocols' transport ([`Frames`]), as [`Hypha::new`]
    /// builds it: every protocol of [`Protocol::ALL`], in that order, with the default bounds.
    pub fn frames(&self) -> Config {
        // Frames names a protocol by its index in its config: list them in Protocol::ALL's
        // order, so that the index is the same in both.
        Config::new(
            Protocol::ALL
                .map(|p| StreamProtocol::new(p.name()))
                .to_vec(),
        )
    }

    /// Persists in flight before submitting blocks the event loop.
    pub fn max_queued_persists(&self) -> usize {
        self.max_queued_persists
    }

    /// Pubsub topics a peer may be known to follow.
    pub fn max_topics_per_peer(&self) -> usize {
        self.max_topics_per_peer
    }

    /// What violations cost peers and when they are banned.
    pub fn standing(&self) -> &standing::Config {
        &self.standing
    }
}

impl From<node::Config<PeerId>> for HyphaConfig {
    fn from(node: node::Config<PeerId>) -> HyphaConfig {
        HyphaConfig::new(node)
    }
}

impl Hypha {
    /// The behaviour for the node with `keypair` (gossipsub signs with it), reading and
    /// writing `store`; `seed` seeds the cores. Loads what the store remembers
    /// ([`Node::start`]): topics are joined and wanted peers dialed at the first poll.
    pub fn new(
        config: impl Into<HyphaConfig>,
        store: Arc<Store>,
        keypair: &Keypair,
        seed: u64,
    ) -> Hypha {
        let config = config.into();
        let inner = Inner {
            frames: Frames::new(config.frames()),
            gossipsub: gossip::behaviour(
                keypair,
                config.node.namespace(),
                config.gossipsub(),
                config.max_topics_per_peer,
            ),
        };
        let mut node = Node::new(config.node, seed);
        node.start(&store, now());
        Hypha {
            inner,
            node,
            store,
            persister: Persister::new(config.max_queued_persists),
            timer: Delay::new(Duration::ZERO),
            timer_at: None,
            out: VecDeque::new(),
            waker: None,
            standing: Standing::new(config.standing),
            next_prune: now() + PRUNE_EVERY,
        }
    }

    /// Queues a local mutation (a write, schema, subscription, replicator…); its result comes
    /// as [`node::Event::Persisted`] with the returned token. See [`Node::submit`].
    pub fn submit(&mut self, mutation: Mutation) -> PersistToken {
        let token = self.node.submit(mutation, now());
        self.wake();
        token
    }

    /// Follows the collections named `names` over pubsub. See [`Node::follow_collections`].
    ///
    /// # Errors
    /// [`FollowError`]: a name is not a local collection, or the store could not be read.
    pub fn follow_collections(&mut self, names: &[&str]) -> Result<Vec<PersistToken>, FollowError> {
        let tokens = self.node.follow_collections(names, &self.store, now());
        self.wake();
        tokens
    }

    /// Follows single documents over pubsub. See [`Node::follow_documents`].
    pub fn follow_documents(&mut self, docs: &[DocId]) -> Vec<PersistToken> {
        let tokens = self.node.follow_documents(docs, now());
        self.wake();
        tokens
    }

    /// Catches up on the collections named `names` from every connected peer now, by head
    /// exchange, without following them. Returns how many sessions started. See
    /// [`Node::sync_collections`].
    ///
    /// # Errors
    /// [`FollowError`]: a name is not a local collection, or the store could not be read.
    pub fn sync_collections(&mut self, names: &[&str]) -> Result<usize, FollowError> {
        let started = self.node.sync_collections(names, &self.store, now());
        self.wake();
        started
    }

    /// Fetches the current heads of `docs` from every connected peer now, without following
    /// them. Returns how many sessions started. See [`Node::sync_documents`].
    pub fn sync_documents(&mut self, docs: &[DocId]) -> usize {
        let started = self.node.sync_documents(docs, &self.store, now());
        self.wake();
        started
    }

    /// `peer` listens on `addresses` (from identify): remembered, so a restart redials it
    /// even when it dialed this node. See [`Node::remember_peer`].
    pub fn remember_peer(&mut self, peer: PeerId, addresses: Vec<Vec<u8>>) {
        self.node.remember_peer(peer, addresses, &self.store, now());
        self.wake();
    }

    /// Marks `doc` used by a local read (a hot document). See [`Node::touch`].
    pub fn touch(&mut self, doc: DocId, collection: CollectionId) {
        self.node.touch(doc, collection, now());
        self.wake();
    }

    /// Connectivity facts the application learns — providers found, relay reservations,
    /// hole-punch outcomes, reachability — handed to the connectivity core.
    pub fn handle_connectivity(&mut self, input: impl FnOnce(&mut Connectivity<PeerId>, Instant)) {
        self.node.handle_connectivity(input, &self.store, now());
        self.wake();
    }

    /// The coordinator: stats, follows, connectivity, [`Node::is_idle`].
    pub fn node(&self) -> &Node<PeerId> {
        &self.node
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Peers' standing: points, bans.
    pub fn standing(&self) -> &Standing<PeerId> {
        &self.standing
    }

    /// The gossipsub behaviour: meshes, subscribed peers, peer scores.
    pub fn gossipsub(&self) -> &gossip::Gossipsub {
        &self.inner.gossipsub
    }

    /// Executes the node's commands and queues its events. Returns whether there were any.
    fn run_node(&mut self) -> bool {
        let mut progressed = false;
        while let Some(command) = self.node.poll_command() {
            progressed = true;
            self.execute(command);
        }
        while let Some(event) = self.node.poll_event() {
            progressed = true;
            if let node::Event::PeerMisbehaved { peer, violation } = &event {
                self.penalize(*peer, violation);
            }
            self.emit(HyphaEvent::Node(event));
        }
        progressed
    }

    /// Charges `peer` for `violation`: a lower gossipsub application score, and past the ban
    /// threshold its connections closed and refused until the ban ends.
    fn penalize(&mut self, peer: PeerId, violation: &node::Violation) {
        let now = now();
        match self.standing.penalize(peer, violation, now) {
            standing::Outcome::Penalized { score } => {
                self.inner.gossipsub.set_application_score(&peer, score);
            }
            standing::Outcome::Banned { until } => {
                let score = self.standing.score(&peer, now);
                self.inner.gossipsub.set_application_score(&peer, score);
                // Stop redialing it; a configured peer or a replicator target stays wanted
                // and is dialed again once the ban ends (dials are refused until then).
                self.node.handle_connectivity(
                    |c, now| {
                        c.unwant(peer, Reason::Remembered, now);
                        c.unwant(peer, Reason::Provider, now);
                    },
                    &self.store,
                    now,
                );
                self.out.push_back(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: CloseConnection::All,
                });
                self.emit(HyphaEvent::Banned {
                    peer,
                    for_: until.saturating_duration_since(now),
                });
            }
        }
    }

    fn refuse_banned(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        if self.standing.is_banned(&peer, now()) {
            return Err(ConnectionDenied::new(BannedPeer(peer)));
        }
        Ok(())
    }

    fn execute(&mut self, command: Command<PeerId>) {
        let gossipsub = &mut self.inner.gossipsub;
        match command {
            Command::Persist {
                token,
                mutation,
                until,
            } => {
                self.persister.submit(&self.store, token, mutation, until);
            }
            Command::Transmit {
                peer,
                protocol,
                frame,
            } => {
                // invariant: Protocol::ALL lists every protocol.
                let index = Protocol::ALL
                    .iter()
                    .position(|p| *p == protocol)
                    .expect("listed");
                if let Err(error) = self.inner.frames.send(peer, index, frame) {
                    self.emit(HyphaEvent::NotSent {
                        peer,
                        protocol,
                        error,
                    });
                }
            }
            Command::Publish { topic, data, .. } => {
                match gossipsub.publish(TopicHash::from_raw(topic.clone()), data) {
                    Ok(_)
                    | Err(PublishError::Duplicate | PublishError::NoPeersSubscribedToTopic) => {}
                    Err(error) => self.emit(HyphaEvent::PublishFailed { topic, error }),
                }
            }
            Command::Subscribe { topic } => {
                let topic = IdentTopic::new(topic);
                // Neither can fail: there is no subscription filter, and scoring is on.
                let _ = gossipsub.subscribe(&topic);
                let _ = gossipsub.set_topic_params(topic, gossip::topic_score_params());
            }
            Command::Unsubscribe { topic } => {
                gossipsub.unsubscribe(&IdentTopic::new(topic));
            }
            Command::Connect(connectivity::Command::Dial { peer, addresses }) => {
                let addresses = addresses
                    .into_iter()
                    .filter_map(|a| Multiaddr::try_from(a).ok())
                    .collect();
                let opts = DialOpts::peer_id(peer).addresses(addresses).build();
                self.out.push_back(ToSwarm::Dial { opts });
            }
            Command::Connect(command) => self.emit(HyphaEvent::Connect(command)),
        }
    }

    fn on_inner_event(&mut self, event: InnerEvent) {
        let now = now();
        match event {
            InnerEvent::Frames(FramesEvent::Received {
                peer,
                protocol,
                frame,
            }) => {
                if let Some(&protocol) = Protocol::ALL.get(protocol) {
                    self.node
                        .handle_frame(peer, protocol, &frame, &self.store, now);
                }
            }
            InnerEvent::Frames(FramesEvent::StreamFailed {
                peer,
                protocol,
                error,
            }) => {
                if let Some(&protocol) = Protocol::ALL.get(protocol) {
                    // A stream the peer opened and broke the framing of is a violation like
                    // any other: counted, charged to the peer's standing.
                    if let Some(framing) = framing_violation(error) {
                        let violation = node::Violation::Framing(protocol, framing);
                        self.penalize(peer, &violation);
                        self.emit(HyphaEvent::Node(node::Event::PeerMisbehaved {
                            peer,
                            violation,
                        }));
                    }
                    let failed = HyphaEvent::StreamFailed {
                        peer,
                        protocol,
                        error,
                    };
                    self.emit(failed);
                }
            }
            // The cores time out and send again what matters.
            InnerEvent::Frames(FramesEvent::Dropped { .. }) => {}
            InnerEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source: from,
                message_id,
                message,
            }) => {
                let topic = message.topic.as_str();
                let verdict = self
                    .node
                    .handle_pubsub(from, topic, &message.data, &self.store, now);
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                    Verdict::Reject => MessageAcceptance::Reject,
                };
                self.inner.gossipsub.report_message_validation_result(
                    &message_id,
                    &from,
                    acceptance,
                );
            }
            InnerEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic, .. }) => {
                let topic = topic.into_string();
                self.emit(HyphaEvent::Subscribed {
                    peer: peer_id,
                    topic,
                });
            }
            InnerEvent::Gossipsub(gossipsub::Event::Unsubscribed { peer_id, topic }) => {
                let topic = topic.into_string();
                self.emit(HyphaEvent::Unsubscribed {
                    peer: peer_id,
                    topic,
                });
            }
            InnerEvent::Gossipsub(_) => {}
        }
    }

    /// Fires the node's timer when due. Ready when it did something.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.node.poll_timeout() else {
            return Poll::Pending;
        };
        let now = now();
        if now >= self.next_prune {
            self.standing.prune(now);
            self.next_prune = now + PRUNE_EVERY;
        }
        if deadline <= now {
            self.node.handle_timeout(&self.store, now);
            return Poll::Ready(());
        }
        if self.timer_at != Some(deadline) {
            self.timer.reset(deadline - now);
            self.timer_at = Some(deadline);
        }
        // Polled after every reset, so the waker is registered. A timer that fires a hair
        // early is re-armed for the rest on the next pass.
        match self.timer.poll_unpin(cx) {
            Poll::Ready(()) => {
                self.timer_at = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn emit(&mut self, event: HyphaEvent) {
        self.out.push_back(ToSwarm::GenerateEvent(event));
    }

    /// Wakes the swarm's task after an input from outside `poll`, so its commands run.
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl NetworkBehaviour for Hypha {
    // `THandler<Inner>`, spelled out: `Inner` is private.
    type ConnectionHandler = ConnectionHandlerSelect<THandler<Frames>, THandler<gossip::Gossipsub>>;
    type ToSwarm = HyphaEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.refuse_banned(peer)?;
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = peer {
            self.refuse_banned(peer)?;
        }
        self.inner
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.refuse_banned(peer)?;
        self.inner
            .handle_established_outbound_connection(id, peer, address, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
        let (store, now) = (&*self.store, now());
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                endpoint,
                other_established: 0,
                ..
            }) => {
                // Only a dialed address is worth remembering: an inbound connection's remote
                // address is an ephemeral port.
                let (addresses, circuit) = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => (vec![address.to_vec()], address),
                    ConnectedPoint::Listener { local_addr, .. } => (Vec::new(), local_addr),
                };
                let path = relay_of(circuit).map_or(Path::Direct, |relay| Path::Relayed { relay });
                let inbound = endpoint.is_listener();
                self.node
                    .handle_connected(peer_id, addresses, path, inbound, store, now);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                remaining_established: 0,
                ..
            }) => self.node.handle_disconnected(peer_id, store, now),
            // A dial refused for its condition (already connected or dialing) is not a failure:
            // the other connection's outcome is reported.
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) if !matches!(error, DialError::DialPeerConditionFalse(_)) => {
                self.node.handle_dial_failed(peer, store, now);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<HyphaEvent, THandlerInEvent<Self>>> {
        loop {
            if let Some(action) = self.out.pop_front() {
                return Poll::Ready(action);
            }
            if self.run_node() {
                continue;
            }
            if let Poll::Ready((token, result)) = self.persister.poll_result(cx) {
                self.node
                    .handle_persisted(token, result, &self.store, now());
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_inner_event(event);
                    continue;
                }
                Poll::Ready(action) => {
                    return Poll::Ready(action.map_out(|_| unreachable!("matched above")));
                }
                Poll::Pending => {}
            }
            if self.poll_timer(cx).is_ready() {
                continue;
            }
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}

/// The behaviours Hypha drives, composed by the derive.
#[derive(libp2p_swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p_swarm::derive_prelude")]
struct Inner {
    frames: Frames,
    gossipsub: gossip::Gossipsub,
}

/// The violation a failed stream is, if the peer broke the framing of a stream it opened:
/// an I/O error, a protocol the peer lacks or a slow negotiation is no one's fault.
fn framing_violation(error: StreamError) -> Option<node::Framing> {
    match error {
        StreamError::FrameTooLarge { len, max } => Some(node::Framing::FrameTooLarge { len, max }),
        StreamError::IdleTimeout => Some(node::Framing::Stalled),
        StreamError::TooManyStreams => Some(node::Framing::TooManyStreams),
        StreamError::Truncated => Some(node::Framing::Truncated),
        StreamError::Io(_) | StreamError::NegotiationTimeout | StreamError::Unsupported => None,
    }
}

/// The relay of a circuit address: the peer named just before `/p2p-circuit`. `None` for a
/// direct address, and for a circuit that names no relay (then counted as direct).
fn relay_of(address: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for segment in address {
        match segment {
            Segment::P2p(peer) => relay = Some(peer),
            Segment::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

#[allow(clippy::disallowed_methods)] // The behaviour's one clock read: the IO seam of the cores.
fn now() -> Instant {
    Instant::now()
}
