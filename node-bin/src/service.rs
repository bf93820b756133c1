//! The event loop: moves events between the Swarm, the coordinator (inside `Hypha`), the
//! store and the API. It decides nothing about replication itself.
//!
//! ```text
//!  API handler ──Request──▶ mpsc (bounded) ──▶ loop ──▶ Hypha::submit / follow / sync …
//!       ▲                                        │
//!       └──────── oneshot reply ◀── Persisted{token} (the write is durable)
//!
//!  Swarm events ──▶ loop ──▶ identify: Kademlia addresses, relays found, peers remembered
//!                        ──▶ Kademlia providers, AutoNAT status, relay reservations, DCUtR
//!                            ──▶ Hypha::handle_connectivity (the coordinator's connectivity core)
//!                        ──▶ HyphaEvent::Connect(Provide | FindProviders | ReserveRelay …)
//!                            ──▶ Kademlia, relay listeners
//!                        ──▶ HyphaEvent::Node(Changed) ──▶ change feed (broadcast), metrics
//! ```
//!
//! # Bounds
//!
//! | what | bound |
//! |---|---|
//! | API requests queued for the loop | [`REQUEST_QUEUE`]; a full queue makes handlers wait (back-pressure) |
//! | change-feed events buffered per subscriber | [`CHANGE_FEED`]; a slow subscriber skips and is told how many it missed |
//! | `p2p connect` waiting for its connection | [`CONNECT_TIMEOUT`] |
//! | provider lookups in flight | [`MAX_LOOKUPS`]; older ones are forgotten |
//! | relay listeners | one per reserved relay (the coordinator bounds the relays) |
//!
//! # Shutdown
//!
//! On SIGTERM or Ctrl-C the API stops taking requests, the loop answers the writes already
//! submitted once they are durable (for at most [`DRAIN_TIMEOUT`]), then drops the Swarm; the
//! store commits what is queued and closes cleanly when the last handle drops.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hypha_crdt::{CollectionId, DocId};
use hypha_protocols::connectivity::{Reachability, Reason};
use hypha_protocols::node::{Event, PersistToken};
use hypha_protocols::swarm::HyphaEvent;
use hypha_store::{CommitError, Committed, Mutation, Subscription};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol as Segment;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, identify, kad, mdns, relay};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::net::{Behaviour, BehaviourEvent, identify_version};

/// API requests queued for the loop.
pub(crate) const REQUEST_QUEUE: usize = 1024;
/// Change-feed events buffered per subscriber.
pub(crate) const CHANGE_FEED: usize = 4096;
/// How long `p2p connect` waits for the connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Provider lookups remembered while in flight.
pub(crate) const MAX_LOOKUPS: usize = 256;
/// How long shutdown waits for submitted writes.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay hop protocol a relay-capable peer lists in identify.
const RELAY_HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// What the API asks of the loop.
#[derive(Debug)]
pub(crate) enum Request {
    /// Commit a mutation through the coordinator (so it is published and replicated).
    Submit(Mutation, Reply<Result<Committed, CommitError>>),
    /// Follow collections by name.
    FollowCollections(Vec<String>, Reply<Result<(), String>>),
    /// Follow documents.
    FollowDocuments(Vec<DocId>, Reply<Result<(), String>>),
    /// Stop following.
    Unfollow(Vec<Subscription>, Reply<Result<(), String>>),
    /// Head exchange on collections with every connected peer.
    SyncCollections(Vec<String>, Reply<Result<usize, String>>),
    /// Head exchange on documents with every connected peer.
    SyncDocuments(Vec<DocId>, Reply<usize>),
    /// A document was read (hot documents).
    Touch(DocId, CollectionId),
    /// This node's ID and addresses.
    Info(Reply<Info>),
    /// Connected peers.
    Peers(Reply<Vec<PeerInfo>>),
    /// Connect to a peer and keep connected.
    Connect(PeerId, Multiaddr, Reply<Result<(), String>>),
    /// Disconnect and forget a peer.
    Disconnect(PeerId, Reply<()>),
    /// The node's counters, for `/metrics`.
    Stats(Reply<NodeStats>),
}

/// This node.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Info {
    /// Its peer ID.
    pub(crate) id: String,
    /// Its addresses, each ending in `/p2p/<id>`: listen addresses and confirmed external ones.
    pub(crate) addresses: Vec<String>,
}

/// A connected peer.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PeerInfo {
    /// Its peer ID.
    pub(crate) id: String,
    /// Addresses of its connections.
    pub(crate) addresses: Vec<String>,
    /// `direct` or `relayed`.
    pub(crate) path: &'static str,
}

/// A change for the feed.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) doc: DocId,
    pub(crate) collection: CollectionId,
    pub(crate) heads: Vec<hypha_crdt::Cid>,
}

/// Counters of the coordinator and its cores, copied out for `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeStats {
    pub(crate) node: hypha_protocols::node::Stats,
    pub(crate) replicator: hypha_protocols::replicator::Stats,
    pub(crate) head_sync: hypha_protocols::head_sync::Stats,
    pub(crate) connected_peers: usize,
    pub(crate) gossip_peers: usize,
}

/// A `p2p connect` waiting for its connection, until its deadline.
type ConnectWaiter = (Instant, Reply<Result<(), String>>);

/// What a persist token's result goes to.
enum Waiter {
    Commit(Reply<Result<Committed, CommitError>>),
    Group(u64),
}

/// Several tokens answered together (a follow of several names).
struct Group {
    left: usize,
    error: Option<String>,
    reply: Reply<Result<(), String>>,
}

/// The loop's state.
pub(crate) struct Service {
    swarm: Swarm<Behaviour>,
    requests: mpsc::Receiver<Request>,
    changes: broadcast::Sender<Change>,
    metrics: Arc<Metrics>,
    network: String,
    waiters: BTreeMap<PersistToken, Waiter>,
    groups: BTreeMap<u64, Group>,
    next_group: u64,
    connects: BTreeMap<PeerId, Vec<ConnectWaiter>>,
    /// Lookups in flight (`QueryId` is not `Ord`; nothing iterates this map), oldest first.
    lookups: HashMap<kad::QueryId, Vec<u8>>,
    lookup_order: VecDeque<kad::QueryId>,
    relay_listeners: HashMap<ListenerId, PeerId>,
    connections: BTreeMap<PeerId, BTreeMap<ConnectionId, Multiaddr>>,
    /// Take listen addresses as external ones (a `--relay` node, or `--reachability public`):
    /// a relay serves reservations only on a confirmed external address, and an operator who
    /// says the node is public knows its addresses better than AutoNAT on a LAN or loopback.
    advertise_listen: bool,
}

impl Service {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        requests: mpsc::Receiver<Request>,
        changes: broadcast::Sender<Change>,
        metrics: Arc<Metrics>,
        network: String,
        advertise_listen: bool,
    ) -> Service {
        Service {
            swarm,
            requests,
            changes,
            metrics,
            network,
            waiters: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_group: 0,
            connects: BTreeMap::new(),
            lookups: HashMap::new(),
            lookup_order: VecDeque::new(),
            relay_listeners: HashMap::new(),
            connections: BTreeMap::new(),
            advertise_listen,
        }
    }

    /// Runs until `shutdown` resolves, then drains submitted writes.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                request = self.requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => break,
                },
                _ = tick.tick() => self.expire_connects(),
            }
        }
        self.drain().await;
    }

    /// Answers the writes already submitted, for at most [`DRAIN_TIMEOUT`].
    async fn drain(&mut self) {
        self.requests.close();
        // Requests queued before the close still get their answer.
        while let Ok(request) = self.requests.try_recv() {
            self.on_request(request);
        }
        let deadline = tokio::time::sleep(DRAIN_TIMEOUT);
        tokio::pin!(deadline);
        while !self.waiters.is_empty() {
            tokio::select! {
                biased;
                () = &mut deadline => {
                    tracing::warn!(target: "hypha.node", { "Writes" = self.waiters.len() }, "Shutting down with writes unanswered");
                    break;
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
    }

    fn hypha(&mut self) -> &mut hypha_protocols::swarm::Hypha {
        &mut self.swarm.behaviour_mut().hypha
    }

    fn group(&mut self, tokens: Vec<PersistToken>, reply: Reply<Result<(), String>>) {
        if tokens.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        let id = self.next_group;
        self.next_group += 1;
        self.groups.insert(
            id,
            Group {
                left: tokens.len(),
                error: None,
                reply,
            },
        );
        for token in tokens {
            self.waiters.insert(token, Waiter::Group(id));
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Submit(mutation, reply) => {
                let token = self.hypha().submit(mutation);
                self.waiters.insert(token, Waiter::Commit(reply));
            }
            Request::FollowCollections(names, reply) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                match self.hypha().follow_collections(&names) {
                    Ok(tokens) => self.group(tokens, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Request::FollowDocuments(docs, reply) => {
                let tokens = self.hypha().follow_documents(&docs);
                self.group(tokens, reply);
            }
            Request::Unfollow(subs, reply) => {
                let tokens = subs
                    .into_iter()
                    .map(|s| self.hypha().submit(Mutation::Unsubscribe(s)))
                    .collect();
                self.group(tokens, reply);
            }
            Request::SyncCollections(names, reply) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let result = self.hypha().sync_collections(&names);
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Request::SyncDocuments(docs, reply) => {
                let _ = reply.send(self.hypha().sync_documents(&docs));
            }
            Request::Touch(doc, collection) => self.hypha().touch(doc, collection),
            Request::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Request::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Request::Connect(peer, address, reply) => self.connect(peer, address, reply),
            Request::Disconnect(peer, reply) => {
                self.hypha().handle_connectivity(|c, now| {
                    c.unwant(peer, Reason::Configured, now);
                    c.unwant(peer, Reason::Remembered, now);
                });
                let key = hypha_protocols::node::Peer::to_key(&peer);
                self.hypha().submit(Mutation::ForgetPeer { peer: key });
                let _ = self.swarm.disconnect_peer_id(peer);
                tracing::info!(target: "hypha.net", { "PeerId" = %peer }, "Disconnected peer");
                let _ = reply.send(());
            }
            Request::Stats(reply) => {
                let hypha = &self.swarm.behaviour().hypha;
                let stats = NodeStats {
                    node: hypha.node().stats(),
                    replicator: hypha.node().replicator_stats(),
                    head_sync: hypha.node().head_sync_stats(),
                    connected_peers: self.swarm.connected_peers().count(),
                    gossip_peers: hypha.gossipsub().all_peers().count(),
                };
                let _ = reply.send(stats);
            }
        }
    }

    fn info(&self) -> Info {
        let id = *self.swarm.local_peer_id();
        let mut addresses: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        addresses.extend(self.swarm.external_addresses().cloned());
        let mut seen = BTreeSet::new();
        let addresses = addresses
            .into_iter()
            .map(|a| with_peer(a, id).to_string())
            .filter(|a| seen.insert(a.clone()))
            .collect();
        Info {
            id: id.to_string(),
            addresses,
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let connectivity = self.swarm.behaviour().hypha.node().connectivity();
        self.connections
            .iter()
            .map(|(peer, conns)| PeerInfo {
                id: peer.to_string(),
                addresses: conns.values().map(ToString::to_string).collect(),
                path: match connectivity.path(peer) {
                    Some(hypha_protocols::connectivity::Path::Relayed { .. }) => "relayed",
                    _ => "direct",
                },
            })
            .collect()
    }

    fn connect(&mut self, peer: PeerId, address: Multiaddr, reply: Reply<Result<(), String>>) {
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err("that is this node's own peer ID".into()));
            return;
        }
        // Wanted as configured: kept connected and redialed, like a --peers entry.
        let bytes = address.to_vec();
        self.hypha().handle_connectivity(|c, now| {
            c.want(peer, vec![bytes], Reason::Configured, now);
        });
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let dial = DialOpts::peer_id(peer)
            .addresses(vec![address])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(dial)
            && !matches!(e, libp2p::swarm::DialError::DialPeerConditionFalse(_))
        {
            let _ = reply.send(Err(format!("dial {peer}: {e}")));
            return;
        }
        self.connects
            .entry(peer)
            .or_default()
            .push((Instant::now() + CONNECT_TIMEOUT, reply));
    }

    fn expire_connects(&mut self) {
        let now = Instant::now();
        for waiting in self.connects.values_mut() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(waiting)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            *waiting = kept;
            for (_, reply) in expired {
                let _ = reply.send(Err(format!(
                    "no connection within {} s; the node keeps trying",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
        self.connects.retain(|_, w| !w.is_empty());
    }

    fn answer_connects(&mut self, peer: &PeerId, result: Result<(), String>) {
        for (_, reply) in self.connects.remove(peer).unwrap_or_default() {
            let _ = reply.send(result.clone());
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let id = *self.swarm.local_peer_id();
                if let Some(relay) = self.relay_listeners.get(&listener_id) {
                    tracing::info!(target: "hypha.net", { "Relay" = %relay, "Address" = %with_peer(address, id) }, "Reachable through relay");
                } else {
                    tracing::info!(target: "hypha.net", { "Address" = %with_peer(address.clone(), id) }, "Listening");
                    if self.advertise_listen && !is_unspecified(&address) {
                        self.swarm.add_external_address(address);
                    }
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "closed".to_string(),
                        Err(e) => crate::api::chain(&e),
                    };
                    tracing::info!(target: "hypha.net", { "Relay" = %relay, "Reason" = %reason }, "Relay reservation closed");
                    self.hypha()
                        .handle_connectivity(|c, now| c.handle_relay_failed(relay, now));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(relay) = self.relay_listeners.get(&listener_id).copied() {
                    tracing::warn!(target: "hypha.net", { "Relay" = %relay, "Error" = %error }, "Relay reservation failed");
                    self.relay_listeners.remove(&listener_id);
                    self.swarm.remove_listener(listener_id);
                    self.hypha()
                        .handle_connectivity(|c, now| c.handle_relay_failed(relay, now));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let address = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                let first = !self.connections.contains_key(&peer_id);
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, address.clone());
                if first {
                    self.metrics
                        .connections_opened
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "hypha.net", { "PeerId" = %peer_id, "Address" = %address }, "Connected to peer");
                }
                self.answer_connects(&peer_id, Ok(()));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.remove(&connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    tracing::info!(target: "hypha.net", { "PeerId" = %peer_id }, "Disconnected from peer");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(target: "hypha.net", { "PeerId" = %peer, "Error" = %error }, "Dial failed");
                if !self.swarm.is_connected(&peer) {
                    self.answer_connects(&peer, Err(format!("dial {peer}: {error}")));
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(target: "hypha.net", { "Address" = %address }, "External address confirmed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Hypha(event) => self.on_hypha_event(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, info);
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            }) => {
                let key = if step.last {
                    self.lookups.remove(&id)
                } else {
                    self.lookups.get(&id).cloned()
                };
                if let (Some(key), Ok(kad::GetProvidersOk::FoundProviders { providers, .. })) =
                    (key, result)
                {
                    let local = *self.swarm.local_peer_id();
                    let providers: Vec<_> = providers
                        .into_iter()
                        .filter(|p| *p != local)
                        .map(|p| (p, Vec::new()))
                        .collect();
                    if !providers.is_empty() {
                        tracing::debug!(target: "hypha.net", { "Count" = providers.len() }, "Providers found");
                        self.hypha()
                            .handle_connectivity(|c, now| c.handle_providers(&key, providers, now));
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
                for (peer, address) in found {
                    by_peer.entry(peer).or_default().push(address);
                }
                for (peer, addresses) in by_peer {
                    tracing::debug!(target: "hypha.net", { "PeerId" = %peer }, "Found peer on the local network");
                    let dial = DialOpts::peer_id(peer)
                        .addresses(addresses)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let _ = self.swarm.dial(dial);
                }
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                let reachability = match new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                tracing::info!(target: "hypha.net", { "Reachability" = ?reachability }, "Reachability changed");
                self.hypha()
                    .handle_connectivity(|c, now| c.handle_reachability(reachability, now));
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                self.hypha()
                    .handle_connectivity(|c, now| c.handle_relay_reserved(relay_peer_id, now));
            }
            BehaviourEvent::Dcutr(event) => {
                let ok = event.result.is_ok();
                tracing::info!(target: "hypha.net", { "PeerId" = %event.remote_peer_id, "Succeeded" = ok }, "Hole punch");
                self.hypha().handle_connectivity(|c, now| {
                    c.handle_hole_punch(event.remote_peer_id, ok, now)
                });
            }
            _ => {}
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != identify_version(&self.network) {
            // mDNS and the DHT find nodes of other networks too: they have nothing for us.
            tracing::debug!(target: "hypha.net", { "PeerId" = %peer, "Protocol" = %info.protocol_version }, "Dropping a peer of another network");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        for address in &info.listen_addrs {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, address.clone());
        }
        let addresses: Vec<Vec<u8>> = info
            .listen_addrs
            .iter()
            .filter(|a| !a.iter().any(|p| matches!(p, Segment::P2pCircuit)))
            .map(|a| a.to_vec())
            .collect();
        if info.protocols.iter().any(|p| p.as_ref() == RELAY_HOP) {
            let relay_addresses = addresses.clone();
            self.hypha().handle_connectivity(|c, now| {
                c.add_relay(peer, relay_addresses, now);
            });
        }
        self.hypha().remember_peer(peer, addresses);
    }

    fn on_hypha_event(&mut self, event: HyphaEvent) {
        match event {
            HyphaEvent::Node(event) => self.on_node_event(event),
            HyphaEvent::Connect(command) => self.on_connect(command),
            HyphaEvent::StreamFailed {
                peer,
                protocol,
                error,
            } => {
                tracing::debug!(target: "hypha.net", { "PeerId" = %peer, "Protocol" = protocol.name(), "Error" = %error }, "Stream failed");
            }
            HyphaEvent::Banned { peer, for_ } => {
                self.metrics.peers_banned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "hypha.net", { "PeerId" = %peer, "Seconds" = for_.as_secs() }, "Banned a peer for repeated violations");
            }
            HyphaEvent::PublishFailed { topic, error } => {
                tracing::debug!(target: "hypha.net", { "Topic" = %topic, "Error" = %error }, "Publish failed");
            }
            _ => {}
        }
    }

    fn on_node_event(&mut self, event: Event<PeerId>) {
        match event {
            Event::Persisted { token, result } => match self.waiters.remove(&token) {
                Some(Waiter::Commit(reply)) => {
                    let _ = reply.send(result);
                }
                Some(Waiter::Group(id)) => {
                    if let Some(group) = self.groups.get_mut(&id) {
                        group.left -= 1;
                        if let Err(e) = result {
                            group.error.get_or_insert(e.to_string());
                        }
                        if group.left == 0 {
                            let group = self.groups.remove(&id).expect("present");
                            let _ = group.reply.send(group.error.map_or(Ok(()), Err));
                        }
                    }
                }
                None => {}
            },
            Event::Changed {
                doc,
                collection,
                heads,
            } => {
                self.metrics.changes.fetch_add(1, Ordering::Relaxed);
                // No subscriber is fine: the feed is best effort.
                let _ = self.changes.send(Change {
                    doc,
                    collection,
                    heads,
                });
            }
            Event::PeerMisbehaved { peer, violation } => {
                self.metrics.record_violation(&violation);
                tracing::warn!(target: "hypha.net", { "PeerId" = %peer, "Violation" = %violation }, "Peer misbehaved");
            }
            Event::Replicated { peer, doc } => {
                self.metrics.replicated.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "hypha.node", { "PeerId" = %peer, "DocID" = %doc }, "Replicated");
            }
            Event::ReplicationFailed { peer, doc, reason } => {
                self.metrics
                    .replication_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "hypha.node", { "PeerId" = %peer, "DocID" = %doc, "Reason" = %reason }, "Replication failed; retrying later");
            }
            Event::CatchUpRefused {
                peer,
                collection,
                reason,
            } => {
                tracing::info!(target: "hypha.node", { "PeerId" = %peer, "Collection" = %collection, "Reason" = %reason }, "Replicator refused catch-up");
            }
            Event::PersistFailed { error } => {
                self.metrics.persist_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "hypha.node", { "Error" = %error }, "Persisting a received block failed");
            }
            Event::StoreFailed { error } => {
                self.metrics.store_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "hypha.node", { "Error" = %error }, "Store read failed");
            }
        }
    }

    fn on_connect(&mut self, command: hypha_protocols::connectivity::Command<PeerId>) {
        use hypha_protocols::connectivity::Command;
        match command {
            Command::Provide { key } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(kad::RecordKey::new(&key))
                {
                    tracing::warn!(target: "hypha.net", { "Error" = %e }, "Cannot announce as provider");
                }
            }
            Command::StopProviding { key } => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&kad::RecordKey::new(&key));
            }
            Command::FindProviders { key } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.lookup_order.retain(|q| self.lookups.contains_key(q));
                while self.lookup_order.len() >= MAX_LOOKUPS {
                    if let Some(oldest) = self.lookup_order.pop_front() {
                        self.lookups.remove(&oldest);
                    }
                }
                self.lookups.insert(id, key);
                self.lookup_order.push_back(id);
            }
            Command::ReserveRelay { relay, addresses } => {
                let mut listening = false;
                for bytes in addresses {
                    let Ok(address) = Multiaddr::try_from(bytes) else {
                        continue;
                    };
                    let circuit = with_peer(address, relay).with(Segment::P2pCircuit);
                    match self.swarm.listen_on(circuit.clone()) {
                        Ok(id) => {
                            tracing::info!(target: "hypha.net", { "Relay" = %relay, "Address" = %circuit }, "Reserving a relay slot");
                            self.relay_listeners.insert(id, relay);
                            listening = true;
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(target: "hypha.net", { "Address" = %circuit, "Error" = %e }, "Cannot listen through relay");
                        }
                    }
                }
                if !listening {
                    self.hypha()
                        .handle_connectivity(|c, now| c.handle_relay_failed(relay, now));
                }
            }
            Command::CancelReservation { relay } => {
                let ids: Vec<_> = self
                    .relay_listeners
                    .iter()
                    .filter(|(_, r)| **r == relay)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.relay_listeners.remove(&id);
                    self.swarm.remove_listener(id);
                }
            }
            // DCUtR upgrades relayed connections by itself; its outcome is reported above.
            Command::HolePunch { .. } => {}
            // Hypha dials by itself; it never hands a dial out.
            Command::Dial { .. } => {}
        }
    }
}

/// Whether `address` names no host (`0.0.0.0`, `::`): never an external address.
fn is_unspecified(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        Segment::Ip4(ip) => ip.is_unspecified(),
        Segment::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// `address` ending in `/p2p/<peer>` (added if missing).
pub(crate) fn with_peer(address: Multiaddr, peer: PeerId) -> Multiaddr {
    match address.iter().last() {
        Some(Segment::P2p(p)) if p == peer => address,
        _ => address.with(Segment::P2p(peer)),
    }
}
