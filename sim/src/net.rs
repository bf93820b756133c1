//! The hosts and their network: each host runs a [`Node`] over turmoil TCP.
//!
//! [`Net`] holds every host's state (its coordinator, its store, its disk queue, its
//! connections) behind one `Rc<RefCell<_>>` shared by the hosts' software (the async tasks
//! turmoil runs) and by the [`World`](crate::World) that drives the scenario between steps.
//! Nothing holds a borrow across an `.await`, and turmoil runs one host at a time on one thread,
//! so every borrow is short and uncontended.
//!
//! # Transport
//!
//! One TCP connection per pair of hosts carries everything, as records
//! `len u32 ‖ kind u8 ‖ body`: kinds 0–2 are the coordinator's stream protocols (its frame
//! payload, in [`Protocol::ALL`] order), 3 is a gossip message, 4 a keepalive, and the rest
//! are the handshake and the relay protocol. A record is capped at
//! [`wire::DEFAULT_MAX_FRAME_BYTES`] plus a small header before anything is allocated.
//!
//! Turmoil's TCP does not retransmit: a segment dropped by a partition leaves a gap the stream
//! never fills. So each side sends a keepalive every [`KEEPALIVE`] and closes a connection
//! silent for [`IDLE_TIMEOUT`] — the role libp2p's ping and yamux keepalives play in the node —
//! and the coordinator redials.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hypha_crdt::Cid;
use hypha_protocols::connectivity::{self, Path, Reachability};
use hypha_protocols::node::{Command, Config, Event, Node, PersistToken, Protocol, Verdict};
use hypha_protocols::wire;
use hypha_store::{CommitError, Committed, Mutation, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use turmoil::net::{TcpListener, TcpStream};

use crate::log::EventLog;
use crate::rng::Rng;

/// The port every host listens on.
pub(crate) const PORT: u16 = 9171;
/// A keepalive goes out on a connection after this long without sending anything.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(5);
/// A connection that received nothing for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a TCP connect or handshake may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes queued for one connection before it is closed as too slow.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Gossip message ids remembered per host for duplicate suppression (oldest forgotten first).
pub(crate) const MAX_SEEN: usize = 65_536;

const KIND_GOSSIP: u8 = 3;
const KIND_PING: u8 = 4;
const KIND_HELLO: u8 = 5;
const KIND_WELCOME: u8 = 6;
const KIND_RESERVE: u8 = 7;
const KIND_RESERVED: u8 = 8;
const KIND_CIRCUIT_OPEN: u8 = 9;
const KIND_CIRCUIT_INCOMING: u8 = 10;
const KIND_CIRCUIT_OK: u8 = 11;
const KIND_CIRCUIT_FAILED: u8 = 12;
const KIND_RELAYED: u8 = 13;
const KIND_CIRCUIT_CLOSED: u8 = 14;

/// How a host sits in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Nat {
    /// Dialable by anyone.
    #[default]
    Public,
    /// Behind a cone NAT: not dialable, hole punching works with cone and public peers.
    Cone,
    /// Behind a symmetric NAT: not dialable, hole punching never works.
    Symmetric,
}

impl Nat {
    /// Whether a hole punch between NATs `a` and `b` yields a direct connection.
    pub fn punchable(a: Nat, b: Nat) -> bool {
        a != Nat::Symmetric && b != Nat::Symmetric
    }

    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Nat::Public => "public",
            Nat::Cone => "cone",
            Nat::Symmetric => "symmetric",
        }
    }
}

/// One host's fixed setup.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Its NAT.
    pub nat: Nat,
    /// Whether it serves as a relay.
    pub relay: bool,
    /// Hot documents (SCENARIOS.md runs with 0 unless a scenario says otherwise).
    pub hot_docs: usize,
}

impl Default for HostSpec {
    fn default() -> HostSpec {
        HostSpec {
            nat: Nat::Public,
            relay: false,
            hot_docs: 0,
        }
    }
}

/// Settings shared by every host of a run.
#[derive(Debug, Clone)]
pub(crate) struct NetConfig {
    pub(crate) seed: u64,
    pub(crate) namespace: String,
    pub(crate) anti_entropy: Duration,
    pub(crate) fsync: (Duration, Duration),
    pub(crate) faults: hypha_protocols::node::Faults,
    pub(crate) max_outbox_per_peer: u64,
}

/// An address in the simulator: a host number, optionally through a relay.
pub(crate) fn address(peer: u16, via: Option<u16>) -> Vec<u8> {
    match via {
        None => peer.to_be_bytes().to_vec(),
        Some(r) => [peer.to_be_bytes(), r.to_be_bytes()].concat(),
    }
}

fn parse_address(a: &[u8]) -> Option<(u16, Option<u16>)> {
    match a {
        [p0, p1] => Some((u16::from_be_bytes([*p0, *p1]), None)),
        [p0, p1, r0, r1] => Some((
            u16::from_be_bytes([*p0, *p1]),
            Some(u16::from_be_bytes([*r0, *r1])),
        )),
        _ => None,
    }
}

/// The turmoil host name of host `i`.
pub(crate) fn host_name(i: u16) -> String {
    format!("n{i}")
}

/// A direct connection's record queue and its queued byte count.
type Writer = (mpsc::UnboundedSender<Vec<u8>>, Rc<RefCell<usize>>);

/// A live connection to a peer, direct or through a relay.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// The side that dialed it (tie-break between simultaneous dials: the lower id's wins).
    dialer: u16,
    /// `None` for a direct connection; the relay otherwise.
    via: Option<u16>,
    /// Records to send (direct connections only).
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    queued: Rc<RefCell<usize>>,
}

/// Counters over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Records sent (frames, gossip, relay control; keepalives excluded).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Stream-protocol frames sent, per protocol in [`Protocol::ALL`] order.
    pub frames: [u64; 3],
    /// Gossip messages sent.
    pub gossip: u64,
    /// Connections established.
    pub connections: u64,
    /// Hole punches that made a connection direct.
    pub punched: u64,
}

impl HostState {
    /// Persists waiting for their fsync.
    pub(crate) fn disk_len(&self) -> usize {
        self.disk.len()
    }
}

pub(crate) struct HostState {
    pub(crate) spec: HostSpec,
    pub(crate) store: Store,
    pub(crate) node: Option<Node<u16>>,
    pub(crate) incarnation: u64,
    conns: BTreeMap<u16, Conn>,
    topics: BTreeSet<String>,
    seen: BTreeSet<(String, Cid)>,
    seen_order: VecDeque<(String, Cid)>,
    provides: BTreeSet<Vec<u8>>,
    /// Persists waiting for their simulated fsync: committed at `due`, in order.
    disk: VecDeque<(Instant, PersistToken, Mutation)>,
    jobs: VecDeque<Job>,
    pub(crate) wake: Rc<Notify>,
    pub(crate) events: Vec<Event<u16>>,
    pub(crate) results: BTreeMap<PersistToken, Result<Committed, CommitError>>,
    /// As a relay: hosts holding a reservation here.
    reservations: BTreeSet<u16>,
    /// Circuits being opened from here, by target.
    opening: BTreeSet<u16>,
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Dial { peer: u16, via: Option<u16> },
    Punch { peer: u16 },
    Reserve { relay: u16 },
}

/// Every host, and what the network knows. See the [module docs](self).
pub(crate) struct Net {
    pub(crate) config: NetConfig,
    pub(crate) base: Instant,
    pub(crate) hosts: Vec<HostState>,
    pub(crate) log: EventLog,
    pub(crate) traffic: Traffic,
    pub(crate) rng: Rng,
    next_conn: u64,
    /// The last time any host received a record or finished a persist.
    pub(crate) last_activity: Instant,
    /// The last time a document changed on any host.
    pub(crate) last_change: Instant,
    /// (source, target) pairs whose catch-up marker the source cleared: from then on the
    /// catch-up push of every (re)connection owes the target its scope (see [`crate::check`]).
    pub(crate) catching_up: BTreeSet<(u16, u16)>,
    /// Peers each host is configured with (`--peers`): wanted at every boot.
    pub(crate) configured: BTreeMap<u16, BTreeSet<u16>>,
    /// Hole punches asked for (succeeded, failed).
    pub(crate) punches: (u64, u64),
    /// Replicator acknowledgements of a document the target did not hold durably when the
    /// source heard them (see [`crate::check`]).
    pub(crate) bad_acks: Vec<String>,
}

pub(crate) type Shared = Rc<RefCell<Net>>;

impl Net {
    pub(crate) fn new(config: NetConfig, specs: &[HostSpec], base: Instant) -> Net {
        let mut hosts = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let i = u16::try_from(i).expect("at most 65,535 hosts");
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&config.seed.to_be_bytes());
            key[8..10].copy_from_slice(&i.to_be_bytes());
            key[10] = 0x5a;
            let author = hypha_crdt::Author::signing(hypha_crdt::SigningKey::from_bytes(&key));
            let store_config = hypha_store::Config::new(author)
                .with_namespace(config.namespace.clone())
                .with_max_outbox_per_peer(config.max_outbox_per_peer);
            let store = Store::memory(store_config).expect("a memory store");
            hosts.push(HostState {
                spec: spec.clone(),
                store,
                node: None,
                incarnation: 0,
                conns: BTreeMap::new(),
                topics: BTreeSet::new(),
                seen: BTreeSet::new(),
                seen_order: VecDeque::new(),
                provides: BTreeSet::new(),
                disk: VecDeque::new(),
                jobs: VecDeque::new(),
                wake: Rc::new(Notify::new()),
                events: Vec::new(),
                results: BTreeMap::new(),
                reservations: BTreeSet::new(),
                opening: BTreeSet::new(),
            });
        }
        let rng = Rng::new(config.seed ^ 0x6a09_e667_f3bc_c908);
        Net {
            config,
            base,
            hosts,
            log: EventLog::default(),
            traffic: Traffic::default(),
            rng,
            next_conn: 0,
            last_activity: base,
            last_change: base,
            punches: (0, 0),
            configured: BTreeMap::new(),
            catching_up: BTreeSet::new(),
            bad_acks: Vec::new(),
        }
    }

    fn host(&mut self, i: u16) -> &mut HostState {
        &mut self.hosts[usize::from(i)]
    }

    pub(crate) fn running(&self, i: u16) -> bool {
        self.hosts[usize::from(i)].node.is_some()
    }

    /// The address others dial `peer` at: direct if public, through its relay otherwise.
    pub(crate) fn address_of(&self, peer: u16) -> Vec<u8> {
        let spec = &self.hosts[usize::from(peer)].spec;
        if spec.nat == Nat::Public {
            return address(peer, None);
        }
        address(peer, self.relays().first().copied())
    }

    pub(crate) fn relays(&self) -> Vec<u16> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].spec.relay)
            .filter_map(|i| u16::try_from(i).ok())
            .collect()
    }

    // ---- lifecycle -------------------------------------------------------------------------

    /// Starts host `i`'s coordinator over its store (its software calls this at boot).
    pub(crate) fn boot(&mut self, i: u16, now: Instant) {
        let relays: Vec<u16> = self.relays().into_iter().filter(|&r| r != i).collect();
        let relay_addrs: Vec<(u16, Vec<u8>)> =
            relays.iter().map(|&r| (r, self.address_of(r))).collect();
        let config = self.config.clone();
        let peers: Vec<(u16, Vec<Vec<u8>>)> = self
            .configured
            .get(&i)
            .into_iter()
            .flatten()
            .map(|&p| (p, vec![self.address_of(p)]))
            .collect();
        let host = self.host(i);
        host.incarnation += 1;
        let node_config = Config::new(config.namespace.clone())
            .with_hot_docs(host.spec.hot_docs)
            .with_anti_entropy(config.anti_entropy)
            .with_peers(peers)
            .with_faults(config.faults);
        let seed = mix(config.seed, u64::from(i), host.incarnation);
        let mut node = Node::new(node_config, seed);
        node.start(&host.store, now);
        let nat = host.spec.nat;
        host.node = Some(node);
        self.log.record(
            now - self.base,
            i,
            format_args!("boot #{}", self.hosts[usize::from(i)].incarnation),
        );
        if nat != Nat::Public {
            self.with_node(i, now, |n, s, now| {
                n.handle_connectivity(
                    |c, now| {
                        for (r, a) in relay_addrs {
                            c.add_relay(r, vec![a], now);
                        }
                        c.handle_reachability(Reachability::Private, now);
                    },
                    s,
                    now,
                );
            });
        }
        self.flush(i, now);
    }

    /// Host `i` goes down. `graceful`: its pending persists complete first (a clean stop);
    /// otherwise they are lost (a crash: unsynced writes never reach the store).
    pub(crate) fn down(&mut self, i: u16, graceful: bool, now: Instant) {
        if graceful {
            while !self.hosts[usize::from(i)].disk.is_empty() {
                self.complete_one_persist(i, now);
            }
        }
        let lost = self.hosts[usize::from(i)].disk.len();
        let host = self.host(i);
        host.node = None;
        host.disk.clear();
        host.jobs.clear();
        host.topics.clear();
        host.provides.clear();
        host.opening.clear();
        host.reservations.clear();
        host.seen.clear();
        host.seen_order.clear();
        let conns = std::mem::take(&mut host.conns);
        let what = if graceful { "stop" } else { "crash" };
        self.log.record(
            now - self.base,
            i,
            format_args!("{what} ({lost} unsynced persists lost)"),
        );
        // Peers holding a circuit through this host lose it at once (the relay's connections
        // to them break); direct peers notice through their own connection.
        for (peer, conn) in conns {
            if conn.via.is_none() {
                self.relay_gone(peer, i, now);
            }
        }
    }

    /// `relay` is gone for `host`: its circuits through it close and its reservation is lost.
    fn relay_gone(&mut self, host: u16, relay: u16, now: Instant) {
        if !self.running(host) {
            return;
        }
        let through: Vec<u16> = self.hosts[usize::from(host)]
            .conns
            .iter()
            .filter(|(_, c)| c.via == Some(relay))
            .map(|(p, _)| *p)
            .collect();
        for p in through {
            let id = self.hosts[usize::from(host)].conns[&p].id;
            self.closed(host, p, id, now);
        }
    }

    // ---- coordinator I/O -------------------------------------------------------------------

    pub(crate) fn with_node<T>(
        &mut self,
        i: u16,
        now: Instant,
        f: impl FnOnce(&mut Node<u16>, &Store, Instant) -> T,
    ) -> Option<T> {
        let host = &mut self.hosts[usize::from(i)];
        let node = host.node.as_mut()?;
        let out = f(node, &host.store, now);
        Some(out)
    }

    /// Executes host `i`'s commands and collects its events until none are left.
    pub(crate) fn flush(&mut self, i: u16, now: Instant) {
        loop {
            let Some(node) = self.hosts[usize::from(i)].node.as_mut() else {
                return;
            };
            let Some(command) = node.poll_command() else {
                break;
            };
            self.execute(i, command, now);
        }
        let mut events = Vec::new();
        if let Some(node) = self.hosts[usize::from(i)].node.as_mut() {
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
        }
        for e in events {
            self.on_event(i, e, now);
        }
        self.hosts[usize::from(i)].wake.notify_one();
    }

    fn on_event(&mut self, i: u16, e: Event<u16>, now: Instant) {
        let at = now - self.base;
        match &e {
            Event::Persisted { token, result } => {
                self.host(i).results.insert(*token, result.clone());
            }
            Event::Replicated { peer, doc } => {
                let held = self
                    .hosts
                    .get(usize::from(*peer))
                    .is_some_and(|t| t.store.state(doc).ok().flatten().is_some());
                if !held {
                    self.bad_acks.push(format!(
                        "n{peer} acknowledged {doc} to n{i} as durable at {at:?}, but does not hold it"
                    ));
                }
                self.log
                    .record(at, i, format_args!("replicated {doc} to n{peer}"));
            }
            Event::Changed { doc, heads, .. } => {
                self.last_change = now;
                self.log
                    .record(at, i, format_args!("changed {doc} heads {}", heads.len()));
            }
            other => self.log.record(at, i, format_args!("{other:?}")),
        }
        let host = self.host(i);
        if host.events.len() < 100_000 {
            host.events.push(e);
        }
    }

    fn execute(&mut self, i: u16, command: Command<u16>, now: Instant) {
        match command {
            // Every persist waits for the simulated fsync, a visible-stage one too: the
            // simulated store cannot lose a visible commit in a crash, so it is never given
            // one (the store's own tests cover that window).
            Command::Persist {
                token, mutation, ..
            } => {
                let (lo, hi) = self.config.fsync;
                let span = (hi - lo).as_micros() as u64;
                let jitter = if span == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_micros(self.rng.below(span))
                };
                let host = self.host(i);
                let last = host.disk.back().map(|d| d.0).unwrap_or(now);
                let due = (now + lo + jitter).max(last);
                host.disk.push_back((due, token, mutation));
            }
            Command::Transmit {
                peer,
                protocol,
                frame,
            } => {
                let kind = Protocol::ALL
                    .iter()
                    .position(|p| *p == protocol)
                    .expect("a known protocol") as u8;
                let payload = frame.get(4..).unwrap_or_default();
                self.traffic.frames[usize::from(kind)] += 1;
                self.send(i, peer, kind, payload, now);
            }
            Command::Publish { topic, id, data } => {
                self.remember(i, &topic, id);
                self.gossip(i, None, &topic, id, &data, now);
            }
            Command::Subscribe { topic } => {
                self.host(i).topics.insert(topic);
            }
            Command::Unsubscribe { topic } => {
                self.host(i).topics.remove(&topic);
            }
            Command::Connect(c) => self.connectivity(i, c, now),
        }
    }

    fn connectivity(&mut self, i: u16, command: connectivity::Command<u16>, now: Instant) {
        match command {
            connectivity::Command::Dial { peer, addresses } => {
                // The most recently learnt address first; a relayed one names the relay.
                let via = addresses
                    .iter()
                    .filter_map(|a| parse_address(a))
                    .find(|(p, _)| *p == peer)
                    .and_then(|(_, via)| via);
                if peer == i || usize::from(peer) >= self.hosts.len() {
                    self.dial_failed(i, peer, now);
                } else {
                    self.host(i).jobs.push_back(Job::Dial { peer, via });
                }
            }
            connectivity::Command::Provide { key } => {
                self.host(i).provides.insert(key);
            }
            connectivity::Command::StopProviding { key } => {
                self.host(i).provides.remove(&key);
            }
            connectivity::Command::FindProviders { key } => {
                let providers: Vec<(u16, Vec<Vec<u8>>)> = self
                    .reachable(i)
                    .into_iter()
                    .filter(|&p| p != i && self.hosts[usize::from(p)].provides.contains(&key))
                    .map(|p| (p, vec![self.address_of(p)]))
                    .collect();
                if !providers.is_empty() {
                    self.with_node(i, now, |n, s, now| {
                        n.handle_connectivity(
                            |c, now| c.handle_providers(&key, providers, now),
                            s,
                            now,
                        );
                    });
                }
            }
            connectivity::Command::ReserveRelay { relay, .. } => {
                if usize::from(relay) < self.hosts.len() && relay != i {
                    self.host(i).jobs.push_back(Job::Reserve { relay });
                } else {
                    self.with_node(i, now, |n, s, now| {
                        n.handle_connectivity(|c, now| c.handle_relay_failed(relay, now), s, now);
                    });
                }
            }
            connectivity::Command::CancelReservation { relay } => {
                if self.running(relay) {
                    self.host(relay).reservations.remove(&i);
                }
            }
            connectivity::Command::HolePunch { peer } => {
                self.host(i).jobs.push_back(Job::Punch { peer });
            }
        }
    }

    /// Hosts reachable from `i` over live connections (a DHT spans what it can reach).
    fn reachable(&self, i: u16) -> BTreeSet<u16> {
        let mut seen = BTreeSet::from([i]);
        let mut todo = VecDeque::from([i]);
        while let Some(n) = todo.pop_front() {
            for &p in self.hosts[usize::from(n)].conns.keys() {
                if seen.insert(p) {
                    todo.push_back(p);
                }
            }
        }
        seen
    }

    fn remember(&mut self, i: u16, topic: &str, id: Cid) -> bool {
        let host = self.host(i);
        let key = (topic.to_owned(), id);
        if !host.seen.insert(key.clone()) {
            return false;
        }
        host.seen_order.push_back(key);
        if host.seen_order.len() > MAX_SEEN
            && let Some(old) = host.seen_order.pop_front()
        {
            host.seen.remove(&old);
        }
        true
    }

    /// Sends a gossip message from `i` to its connected peers that joined `topic`.
    ///
    /// Who joined what is read from the other hosts directly: gossipsub learns it from
    /// subscription announcements, which this stand-in does not model.
    fn gossip(
        &mut self,
        i: u16,
        except: Option<u16>,
        topic: &str,
        id: Cid,
        data: &[u8],
        now: Instant,
    ) {
        let peers: Vec<u16> = self.hosts[usize::from(i)]
            .conns
            .keys()
            .copied()
            .filter(|&p| Some(p) != except && self.hosts[usize::from(p)].topics.contains(topic))
            .collect();
        if peers.is_empty() {
            return;
        }
        let cid = id.to_bytes();
        let mut body = Vec::with_capacity(3 + topic.len() + cid.len() + data.len());
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.push(cid.len() as u8);
        body.extend_from_slice(&cid);
        body.extend_from_slice(data);
        for p in peers {
            self.traffic.gossip += 1;
            self.send(i, p, KIND_GOSSIP, &body, now);
        }
    }

    /// Queues a record for `peer` on whatever connection reaches it.
    fn send(&mut self, i: u16, peer: u16, kind: u8, body: &[u8], now: Instant) {
        let Some(conn) = self.hosts[usize::from(i)].conns.get(&peer) else {
            return;
        };
        let record = match conn.via {
            None => record(kind, body),
            Some(relay) => {
                let mut inner = Vec::with_capacity(3 + body.len());
                inner.extend_from_slice(&peer.to_be_bytes());
                inner.push(kind);
                inner.extend_from_slice(body);
                let r = record(KIND_RELAYED, &inner);
                return self.send_direct(i, relay, r, now);
            }
        };
        self.send_direct(i, peer, record, now);
    }

    fn send_direct(&mut self, i: u16, peer: u16, record: Vec<u8>, now: Instant) {
        let Some(conn) = self.hosts[usize::from(i)].conns.get(&peer) else {
            return;
        };
        let Some(tx) = &conn.tx else { return };
        let mut queued = conn.queued.borrow_mut();
        if *queued + record.len() > MAX_QUEUED_BYTES {
            drop(queued);
            let id = conn.id;
            self.log
                .record(now - self.base, i, format_args!("n{peer} too slow: closed"));
            self.closed(i, peer, id, now);
            return;
        }
        *queued += record.len();
        self.traffic.messages += 1;
        self.traffic.bytes += record.len() as u64;
        let _ = tx.send(record);
    }

    // ---- inputs from the network -----------------------------------------------------------

    /// A record arrived at `i` from `peer` on connection `id`.
    fn on_record(&mut self, i: u16, peer: u16, id: u64, kind: u8, body: &[u8], now: Instant) {
        let current = self.hosts[usize::from(i)]
            .conns
            .get(&peer)
            .is_some_and(|c| c.id == id);
        if !current || !self.running(i) {
            return;
        }
        if kind != KIND_PING {
            self.last_activity = now;
        }
        self.dispatch(i, peer, kind, body, now);
    }

    fn dispatch(&mut self, i: u16, peer: u16, kind: u8, body: &[u8], now: Instant) {
        match kind {
            0..=2 => {
                let protocol = Protocol::ALL[usize::from(kind)];
                self.log.record(
                    now - self.base,
                    i,
                    format_args!("frame {} from n{peer} {} B", protocol.name(), body.len()),
                );
                self.with_node(i, now, |n, s, now| {
                    n.handle_frame(peer, protocol, body, s, now)
                });
                self.flush(i, now);
            }
            KIND_GOSSIP => self.on_gossip(i, peer, body, now),
            KIND_PING => {}
            KIND_RESERVE => {
                // Only a relay grants reservations, to hosts connected directly.
                let ok = self.hosts[usize::from(i)].spec.relay;
                if ok {
                    self.host(i).reservations.insert(peer);
                }
                let reply = if ok {
                    KIND_RESERVED
                } else {
                    KIND_CIRCUIT_FAILED
                };
                self.send_direct(i, peer, record(reply, &i.to_be_bytes()), now);
            }
            KIND_RESERVED => {
                self.log
                    .record(now - self.base, i, format_args!("reserved on n{peer}"));
                self.with_node(i, now, |n, s, now| {
                    n.handle_connectivity(|c, now| c.handle_relay_reserved(peer, now), s, now);
                });
                self.flush(i, now);
            }
            KIND_CIRCUIT_OPEN => {
                // As a relay: open a circuit from `peer` to the target, if it holds a
                // reservation here.
                let Some(target) = read_u16(body) else { return };
                let reserved = self.hosts[usize::from(i)].spec.relay
                    && self.hosts[usize::from(i)].reservations.contains(&target)
                    && self.hosts[usize::from(i)]
                        .conns
                        .get(&target)
                        .is_some_and(|c| c.via.is_none());
                if reserved {
                    self.send_direct(
                        i,
                        target,
                        record(KIND_CIRCUIT_INCOMING, &peer.to_be_bytes()),
                        now,
                    );
                    self.send_direct(i, peer, record(KIND_CIRCUIT_OK, &target.to_be_bytes()), now);
                } else {
                    self.send_direct(
                        i,
                        peer,
                        record(KIND_CIRCUIT_FAILED, &target.to_be_bytes()),
                        now,
                    );
                }
            }
            KIND_CIRCUIT_INCOMING => {
                let Some(from) = read_u16(body) else { return };
                self.register(i, from, from, Some(peer), None, now);
            }
            KIND_CIRCUIT_OK => {
                let Some(target) = read_u16(body) else { return };
                if self.host(i).opening.remove(&target) {
                    self.register(i, target, i, Some(peer), None, now);
                }
            }
            KIND_CIRCUIT_FAILED => {
                let Some(target) = read_u16(body) else { return };
                if target == peer {
                    // A refused reservation.
                    self.with_node(i, now, |n, s, now| {
                        n.handle_connectivity(|c, now| c.handle_relay_failed(peer, now), s, now);
                    });
                    self.flush(i, now);
                } else if self.host(i).opening.remove(&target) {
                    self.dial_failed(i, target, now);
                }
            }
            KIND_RELAYED => {
                let Some(other) = read_u16(body) else { return };
                let Some((&inner, rest)) = body[2..].split_first() else {
                    return;
                };
                if self.hosts[usize::from(i)].spec.relay
                    && self.hosts[usize::from(i)]
                        .conns
                        .get(&other)
                        .is_some_and(|c| c.via.is_none())
                    && inner <= KIND_PING
                {
                    // As a relay: forward, naming the sender.
                    let mut fwd = Vec::with_capacity(body.len());
                    fwd.extend_from_slice(&peer.to_be_bytes());
                    fwd.push(inner);
                    fwd.extend_from_slice(rest);
                    self.send_direct(i, other, record(KIND_RELAYED, &fwd), now);
                    return;
                }
                // As an endpoint: from `other`, through relay `peer`. Records still in flight
                // on a circuit that a hole punch has since replaced are delivered too, as the
                // old connection's streams would be.
                let through = self.hosts[usize::from(i)]
                    .conns
                    .get(&other)
                    .is_some_and(|c| c.via == Some(peer) || c.via.is_none());
                if through && inner <= KIND_PING {
                    self.dispatch(i, other, inner, rest, now);
                } else if !through && inner <= KIND_PING {
                    // A circuit this side no longer has: tell the far end.
                    let back = [&other.to_be_bytes()[..], &[KIND_CIRCUIT_CLOSED]].concat();
                    self.send_direct(i, peer, record(KIND_RELAYED, &back), now);
                } else if inner == KIND_CIRCUIT_CLOSED
                    && self.hosts[usize::from(i)]
                        .conns
                        .get(&other)
                        .is_some_and(|c| c.via == Some(peer))
                {
                    let id = self.hosts[usize::from(i)].conns[&other].id;
                    self.closed(i, other, id, now);
                }
            }
            _ => {
                self.log.record(
                    now - self.base,
                    i,
                    format_args!("unknown record {kind} from n{peer}"),
                );
            }
        }
    }

    fn on_gossip(&mut self, i: u16, from: u16, body: &[u8], now: Instant) {
        let Some((topic, id, data)) = parse_gossip(body) else {
            self.log.record(
                now - self.base,
                i,
                format_args!("malformed gossip from n{from}"),
            );
            return;
        };
        if !self.hosts[usize::from(i)].topics.contains(&topic) || !self.remember(i, &topic, id) {
            return;
        }
        let verdict = self
            .with_node(i, now, |n, s, now| {
                n.handle_pubsub(from, &topic, data, s, now)
            })
            .unwrap_or(Verdict::Ignore);
        self.log.record(
            now - self.base,
            i,
            format_args!("gossip {topic} from n{from}: {verdict:?}"),
        );
        self.flush(i, now);
        if verdict == Verdict::Accept {
            self.gossip(i, Some(from), &topic, id, data, now);
        }
    }

    /// Registers a connection of `i` with `peer`; returns its id, or `None` when an existing
    /// connection wins the tie-break (the caller drops the new one).
    fn register(
        &mut self,
        i: u16,
        peer: u16,
        dialer: u16,
        via: Option<u16>,
        tx: Option<Writer>,
        now: Instant,
    ) -> Option<u64> {
        if !self.running(i) {
            return None;
        }
        let keeper = i.min(peer);
        let existing = self.hosts[usize::from(i)].conns.get(&peer);
        let replace = match existing {
            None => true,
            // A direct connection replaces a relayed one (a hole punch, or a dial once
            // reachable); between two alike, the lower id's dial wins, then the newer one.
            Some(old) => {
                (old.via.is_some() && via.is_none())
                    || (old.via.is_some() == via.is_some()
                        && (dialer == keeper || old.dialer != keeper))
            }
        };
        let inbound = dialer != i;
        if !replace {
            if !inbound {
                // Our dial found us connected already: answer the dial.
                self.connected(i, peer, via, inbound, now);
            }
            return None;
        }
        self.next_conn += 1;
        let id = self.next_conn;
        let (tx, queued) = match tx {
            Some((tx, q)) => (Some(tx), q),
            None => (None, Rc::new(RefCell::new(0))),
        };
        let had = self.host(i).conns.insert(
            peer,
            Conn {
                id,
                dialer,
                via,
                tx,
                queued,
            },
        );
        self.traffic.connections += 1;
        let how = match via {
            None => "direct".to_owned(),
            Some(r) => format!("via n{r}"),
        };
        self.log.record(
            now - self.base,
            i,
            format_args!(
                "connected n{peer} {how} {}",
                if inbound { "in" } else { "out" }
            ),
        );
        match had {
            // A hole punch (or a direct dial) upgrades a relayed connection in place.
            Some(old) if old.via.is_some() && via.is_none() => {}
            // Any other replacement is a new connection: the old one closed.
            Some(_) => {
                self.with_node(i, now, |n, s, now| n.handle_disconnected(peer, s, now));
                self.flush(i, now);
            }
            None => {}
        }
        self.connected(i, peer, via, inbound, now);
        Some(id)
    }

    fn connected(&mut self, i: u16, peer: u16, via: Option<u16>, inbound: bool, now: Instant) {
        let addresses = vec![self.address_of(peer)];
        let path = match via {
            None => Path::Direct,
            Some(relay) => Path::Relayed { relay },
        };
        self.with_node(i, now, |n, s, now| {
            n.handle_connected(peer, addresses, path, inbound, s, now);
        });
        self.flush(i, now);
    }

    /// Connection `id` of `i` with `peer` closed.
    fn closed(&mut self, i: u16, peer: u16, id: u64, now: Instant) {
        let current = self.hosts[usize::from(i)]
            .conns
            .get(&peer)
            .is_some_and(|c| c.id == id);
        if !current {
            return;
        }
        let conn = self.host(i).conns.remove(&peer).expect("checked");
        self.log
            .record(now - self.base, i, format_args!("disconnected n{peer}"));
        self.with_node(i, now, |n, s, now| n.handle_disconnected(peer, s, now));
        self.flush(i, now);
        if conn.via.is_none() {
            // Circuits through `peer` break with it, and reservations on it.
            self.relay_gone(i, peer, now);
            self.host(i).reservations.remove(&peer);
        }
    }

    fn dial_failed(&mut self, i: u16, peer: u16, now: Instant) {
        self.log
            .record(now - self.base, i, format_args!("dial n{peer} failed"));
        self.with_node(i, now, |n, s, now| n.handle_dial_failed(peer, s, now));
        self.flush(i, now);
    }

    // ---- disk and timers -------------------------------------------------------------------

    fn complete_one_persist(&mut self, i: u16, now: Instant) {
        let Some((_, token, mutation)) = self.host(i).disk.pop_front() else {
            return;
        };
        let host = &self.hosts[usize::from(i)];
        let cleared = match &mutation {
            Mutation::ClearCatchUp { peer } => hypha_protocols::node::Peer::from_key(peer),
            _ => None,
        };
        let result = host.store.commit(mutation).map(|r| r.committed);
        if let (Some(target), Ok(_)) = (cleared, &result) {
            self.catching_up.insert((i, target));
        }
        self.last_activity = now;
        self.with_node(i, now, |n, s, now| {
            n.handle_persisted(token, result, s, now)
        });
        self.flush(i, now);
    }

    /// Runs what is due on host `i`: finished fsyncs, then the coordinator's timer.
    pub(crate) fn on_timer(&mut self, i: u16, now: Instant) {
        while self.hosts[usize::from(i)]
            .disk
            .front()
            .is_some_and(|d| d.0 <= now)
        {
            self.complete_one_persist(i, now);
        }
        let due = self.hosts[usize::from(i)]
            .node
            .as_ref()
            .and_then(Node::poll_timeout)
            .is_some_and(|t| t <= now);
        if due {
            self.with_node(i, now, |n, s, now| n.handle_timeout(s, now));
            self.flush(i, now);
        }
    }

    fn next_deadline(&self, i: u16) -> Option<Instant> {
        let host = &self.hosts[usize::from(i)];
        let disk = host.disk.front().map(|d| d.0);
        let timer = host.node.as_ref().and_then(Node::poll_timeout);
        disk.into_iter().chain(timer).min()
    }

    // ---- what the driver reads -------------------------------------------------------------

    /// Why host `i` is not quiescent, if it is not.
    pub(crate) fn busy(&self, i: u16) -> Option<String> {
        let host = &self.hosts[usize::from(i)];
        let node = host.node.as_ref()?;
        if !host.disk.is_empty() {
            return Some(format!(
                "n{i} has {} persists awaiting fsync",
                host.disk.len()
            ));
        }
        if !node.is_idle() {
            return Some(format!("n{i} has work in flight"));
        }
        if !host.jobs.is_empty() {
            return Some(format!("n{i} has dials queued"));
        }
        if host.conns.values().any(|c| *c.queued.borrow() > 0) {
            return Some(format!("n{i} has records queued"));
        }
        let stats = host.store.stats().ok()?;
        if stats.outbox_entries > 0 {
            return Some(format!("n{i} has {} outbox entries", stats.outbox_entries));
        }
        if stats.pending > 0 {
            return Some(format!("n{i} has {} pending blocks", stats.pending));
        }
        None
    }

    /// The peers host `i` is connected to, with the relay for relayed ones.
    pub(crate) fn connections(&self, i: u16) -> BTreeMap<u16, Option<u16>> {
        self.hosts[usize::from(i)]
            .conns
            .iter()
            .map(|(p, c)| (*p, c.via))
            .collect()
    }
}

fn read_u16(body: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(body.get(..2)?.try_into().ok()?))
}

fn parse_gossip(body: &[u8]) -> Option<(String, Cid, &[u8])> {
    let tlen = usize::from(read_u16(body)?);
    let topic = std::str::from_utf8(body.get(2..2 + tlen)?).ok()?.to_owned();
    let clen = usize::from(*body.get(2 + tlen)?);
    let cid_bytes = body.get(3 + tlen..3 + tlen + clen)?;
    let id = Cid::try_from(cid_bytes).ok()?;
    Some((topic, id, body.get(3 + tlen + clen..)?))
}

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(5 + body.len());
    r.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
    r.push(kind);
    r.extend_from_slice(body);
    r
}

/// A seed for one core: the run's seed, mixed with the host and its incarnation.
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut r = Rng::new(seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(32));
    r.next_u64()
}

// ---- the hosts' software ------------------------------------------------------------------

/// Virtual time inside a host.
fn host_now(net: &Shared) -> Instant {
    net.borrow().base + turmoil::sim_elapsed().unwrap_or_default()
}

/// What host `i` runs: the listener, the job runner and the coordinator's timer.
pub(crate) async fn software(net: Shared, i: u16) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    let now = host_now(&net);
    let wake = {
        let mut n = net.borrow_mut();
        n.boot(i, now);
        n.hosts[usize::from(i)].wake.clone()
    };
    tokio::task::spawn_local(accept_loop(net.clone(), i, listener));
    loop {
        let (jobs, deadline) = {
            let mut n = net.borrow_mut();
            let jobs: Vec<Job> = n.hosts[usize::from(i)].jobs.drain(..).collect();
            (jobs, n.next_deadline(i))
        };
        for job in jobs {
            tokio::task::spawn_local(run_job(net.clone(), i, job));
        }
        let now = host_now(&net);
        let sleep = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(now)
        });
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep) => {
                let now = host_now(&net);
                net.borrow_mut().on_timer(i, now);
            }
        }
    }
}

async fn accept_loop(net: Shared, i: u16, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::task::spawn_local(accept(net.clone(), i, stream));
    }
}

/// The acceptor's side of the handshake: `hello(id, punched)` in, `welcome(id)` out.
async fn accept(net: Shared, i: u16, mut stream: TcpStream) {
    let Ok(Ok((KIND_HELLO, body))) =
        tokio::time::timeout(CONNECT_TIMEOUT, read_record(&mut stream)).await
    else {
        return;
    };
    let (Some(peer), Some(&flags)) = (read_u16(&body), body.get(2)) else {
        return;
    };
    let punched = flags & 1 == 1;
    {
        // Behind a NAT, only a hole-punched connection gets in.
        let n = net.borrow();
        if n.hosts[usize::from(i)].spec.nat != Nat::Public && !punched {
            return;
        }
        if usize::from(peer) >= n.hosts.len() {
            return;
        }
    }
    if stream
        .write_all(&record(KIND_WELCOME, &i.to_be_bytes()))
        .await
        .is_err()
    {
        return;
    }
    run_conn(net, i, peer, peer, stream).await;
}

async fn run_job(net: Shared, i: u16, job: Job) {
    match job {
        Job::Dial { peer, via } => dial(net, i, peer, via).await,
        Job::Reserve { relay } => {
            let connected = net.borrow().hosts[usize::from(i)]
                .conns
                .get(&relay)
                .is_some_and(|c| c.via.is_none());
            if !connected {
                let ok = connect_direct(net.clone(), i, relay, false).await;
                if !ok {
                    let now = host_now(&net);
                    let mut n = net.borrow_mut();
                    n.with_node(i, now, |nd, s, now| {
                        nd.handle_connectivity(|c, now| c.handle_relay_failed(relay, now), s, now);
                    });
                    n.flush(i, now);
                    return;
                }
            }
            let now = host_now(&net);
            net.borrow_mut()
                .send_direct(i, relay, record(KIND_RESERVE, &i.to_be_bytes()), now);
        }
        Job::Punch { peer } => {
            let (ok, spec_peer_ok) = {
                let n = net.borrow();
                let a = n.hosts[usize::from(i)].spec.nat;
                let b = n.hosts[usize::from(peer)].spec.nat;
                let relayed = n.hosts[usize::from(i)]
                    .conns
                    .get(&peer)
                    .is_some_and(|c| c.via.is_some());
                (relayed, Nat::punchable(a, b))
            };
            let succeeded = ok && spec_peer_ok && connect_direct(net.clone(), i, peer, true).await;
            let now = host_now(&net);
            let mut n = net.borrow_mut();
            if succeeded {
                n.punches.0 += 1;
                n.traffic.punched += 1;
            } else {
                n.punches.1 += 1;
            }
            let at = now - n.base;
            n.log.record(
                at,
                i,
                format_args!(
                    "hole punch n{peer}: {}",
                    if succeeded { "direct" } else { "stays relayed" }
                ),
            );
            n.with_node(i, now, |nd, s, now| {
                nd.handle_connectivity(|c, now| c.handle_hole_punch(peer, succeeded, now), s, now);
            });
            n.flush(i, now);
        }
    }
}

/// Dials `peer`: directly, or through `via` (a relay), as its address says. A NATed peer
/// refuses direct dials; a relayed dial needs the relay connected (it is dialed first).
async fn dial(net: Shared, i: u16, peer: u16, via: Option<u16>) {
    let target_public = net.borrow().hosts[usize::from(peer)].spec.nat == Nat::Public;
    match via {
        Some(relay) if !target_public && relay != i => {
            let connected = net.borrow().hosts[usize::from(i)]
                .conns
                .get(&relay)
                .is_some_and(|c| c.via.is_none());
            if !connected && !connect_direct(net.clone(), i, relay, false).await {
                let now = host_now(&net);
                net.borrow_mut().dial_failed(i, peer, now);
                return;
            }
            let now = host_now(&net);
            let mut n = net.borrow_mut();
            n.host(i).opening.insert(peer);
            n.send_direct(
                i,
                relay,
                record(KIND_CIRCUIT_OPEN, &peer.to_be_bytes()),
                now,
            );
            drop(n);
            // Answered by CIRCUIT_OK or CIRCUIT_FAILED; if neither comes, the coordinator's
            // dial timeout fails it.
        }
        _ => {
            if !connect_direct(net.clone(), i, peer, false).await {
                let now = host_now(&net);
                net.borrow_mut().dial_failed(i, peer, now);
            }
        }
    }
}

/// Opens a direct connection from `i` to `peer` and runs it; true once registered.
async fn connect_direct(net: Shared, i: u16, peer: u16, punched: bool) -> bool {
    let name = host_name(peer);
    let connect = TcpStream::connect((name.as_str(), PORT));
    let Ok(Ok(mut stream)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await else {
        return false;
    };
    let hello = record(
        KIND_HELLO,
        &[&i.to_be_bytes()[..], &[u8::from(punched)]].concat(),
    );
    if stream.write_all(&hello).await.is_err() {
        return false;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, read_record(&mut stream)).await {
        Ok(Ok((KIND_WELCOME, body))) if read_u16(&body) == Some(peer) => {}
        _ => return false,
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Rc::new(RefCell::new(0usize));
    let now = host_now(&net);
    let id = net
        .borrow_mut()
        .register(i, peer, i, None, Some((tx, queued.clone())), now);
    let Some(id) = id else {
        return true;
    };
    tokio::task::spawn_local(drive_conn(net, i, peer, id, stream, rx, queued));
    true
}

async fn run_conn(net: Shared, i: u16, peer: u16, dialer: u16, stream: TcpStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Rc::new(RefCell::new(0usize));
    let now = host_now(&net);
    let id = net
        .borrow_mut()
        .register(i, peer, dialer, None, Some((tx, queued.clone())), now);
    if let Some(id) = id {
        drive_conn(net, i, peer, id, stream, rx, queued).await;
    }
}

/// Moves records both ways on one connection until it breaks, goes idle past
/// [`IDLE_TIMEOUT`], or is replaced.
async fn drive_conn(
    net: Shared,
    i: u16,
    peer: u16,
    id: u64,
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Rc<RefCell<usize>>,
) {
    let (mut read, mut write) = stream.into_split();
    let writer = async move {
        loop {
            let next = tokio::time::timeout(KEEPALIVE, rx.recv()).await;
            let r = match next {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(_) => record(KIND_PING, &[]),
            };
            let len = r.len();
            if write.write_all(&r).await.is_err() {
                return;
            }
            if r[4] != KIND_PING {
                let mut q = queued.borrow_mut();
                *q = q.saturating_sub(len);
            }
        }
    };
    let reader_net = net.clone();
    let reader = async move {
        loop {
            match tokio::time::timeout(IDLE_TIMEOUT, read_record(&mut read)).await {
                Ok(Ok((kind, body))) => {
                    let now = host_now(&reader_net);
                    reader_net
                        .borrow_mut()
                        .on_record(i, peer, id, kind, &body, now);
                    let still = reader_net.borrow().hosts[usize::from(i)]
                        .conns
                        .get(&peer)
                        .is_some_and(|c| c.id == id);
                    if !still {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    tokio::select! {
        biased;
        () = reader => {}
        () = writer => {}
    }
    let now = host_now(&net);
    net.borrow_mut().closed(i, peer, id, now);
}

async fn read_record<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > wire::DEFAULT_MAX_FRAME_BYTES + 1024 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("record of {len} B"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let kind = buf[0];
    buf.remove(0);
    Ok((kind, buf))
}
