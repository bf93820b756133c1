//! An in-memory network of coordinators in virtual time (feature `test-util`).
//!
//! [`Network`] runs N [`Node`]s, each with its own memory [`Store`], and moves everything
//! between them itself: frames on the stream protocols, pubsub messages through a gossip
//! overlay, persist results, connections and timers. It always takes the earliest thing due —
//! a delivery or a node's timer — so a run is a pure function of its [`Options`] and the
//! actions taken, and a failure replays from its seed.
//!
//! # Model
//!
//! - **Links**: a connection between two nodes carries ordered frames per protocol, each after
//!   `latency` plus a seeded jitter (frames of one stream keep their order, like TCP). Dials
//!   succeed at once between running nodes that no partition separates.
//! - **Gossip**: the stand-in for gossipsub. A publish goes to every connected peer that joined
//!   the topic; a receiver hands the message to its node and, when the node accepts it,
//!   forwards it to its own connected peers on the topic. Duplicates are suppressed by
//!   (topic, message id), as gossipsub's duplicate cache does. Gossip may be lost or
//!   duplicated at the seeded rates; stream frames never are (they ride a reliable stream).
//! - **DHT**: a provider lookup finds the nodes providing the key among those reachable from
//!   the asker through connections — a DHT only spans the peers it can reach.
//! - **Partitions**: [`Network::partition`] holds traffic between two groups (a stalled
//!   link: it is delivered on [`Network::heal`]); [`Network::cut`] drops it instead, as a
//!   broken link would. "Concurrently" in SCENARIOS.md is a held partition.
//! - **Persist**: each [`Command::Persist`] is committed at once, in order, and its result is
//!   delivered after `persist_latency`.
//! - **Restarts**: [`Network::restart`] rebuilds a node's coordinator from its store, as a
//!   process restart does; [`Network::stop`] and [`Network::start`] leave it down in between.
//!
//! - **Strangers**: a peer number at or past the node count is no node of the network but
//!   an adversary the test plays by hand: [`Network::stranger_connects`] opens a connection
//!   from it, [`Network::inject_frame`] and [`Network::inject_pubsub`] hand a node whatever
//!   bytes it sends, and [`Network::take_sent`] returns what the nodes sent it.
//!
//! [`Network::wait`] is quiescence as SCENARIOS.md defines it — nothing in flight, every outbox
//! and pending set empty, and an anti-entropy round completed on every node since the wait
//! began — and fails, rather than hangs, when a time or step budget runs out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use hypha_crdt::{Author, Cid, CollectionId, DocId};
use hypha_store::{CommitError, Committed, Mutation, Replicator, Store};
use serde_json::{Map, Value};

use crate::connectivity::{self, Path};
use crate::node::{self, Command, Config, Event, Node, PersistToken, Protocol, Verdict};
pub use crate::rng::SplitMix64;

/// Adjusts node `i`'s coordinator configuration before it starts.
pub type Configure = fn(u16, Config<u16>) -> Config<u16>;

/// How a network behaves; everything random comes from `seed`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed of every random choice (jitter, loss, the nodes' cores).
    pub seed: u64,
    /// How many nodes.
    pub nodes: usize,
    /// One-way delay of a link.
    pub latency: Duration,
    /// Up to this much extra delay, drawn per message.
    pub jitter: Duration,
    /// Probability that a gossip message is lost on a link.
    pub gossip_loss: f64,
    /// Probability that a gossip message is delivered twice.
    pub gossip_duplication: f64,
    /// Delay between a persist and its durable result.
    pub persist_latency: Duration,
    /// Hot documents per node (SCENARIOS.md runs with 0 unless a scenario says otherwise).
    pub hot_docs: usize,
    /// Passive replication on.
    pub passive: bool,
    /// The network namespace.
    pub namespace: String,
    /// Sign blocks (each node its own key).
    pub signing: bool,
    /// Deliberate faults in every node.
    pub faults: node::Faults,
    /// Virtual time [`Network::wait`] may spend.
    pub wait_budget: Duration,
    /// Steps [`Network::wait`] may take.
    pub step_budget: u64,
    /// Adjusts node `i`'s coordinator configuration (allow lists, quotas, inline size…).
    pub configure: Option<Configure>,
}

impl Options {
    /// Two nodes, 5 ms links with 2 ms jitter, no loss, hot documents off, signing on.
    pub fn seeded(seed: u64) -> Options {
        Options {
            seed,
            nodes: 2,
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            gossip_loss: 0.0,
            gossip_duplication: 0.0,
            persist_latency: Duration::from_millis(1),
            hot_docs: 0,
            passive: true,
            namespace: "hypha".to_owned(),
            signing: true,
            faults: node::Faults::default(),
            wait_budget: Duration::from_secs(6 * 3600),
            step_budget: 5_000_000,
            configure: None,
        }
    }

    /// With `n` nodes.
    pub fn nodes(mut self, n: usize) -> Options {
        self.nodes = n;
        self
    }
}

/// A network that did not settle within its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not quiescent after {steps} steps and {elapsed:?} of virtual time: {why}")]
pub struct NotQuiescent {
    /// Steps taken.
    pub steps: u64,
    /// Virtual time spent.
    pub elapsed: Duration,
    /// What was still outstanding.
    pub why: String,
}

#[derive(Debug)]
enum Delivery {
    Frame {
        from: u16,
        to: u16,
        protocol: Protocol,
        frame: Vec<u8>,
    },
    Gossip {
        from: u16,
        to: u16,
        topic: String,
        id: Cid,
        data: Vec<u8>,
    },
    Persisted {
        node: u16,
        epoch: u64,
        token: PersistToken,
        result: Result<Committed, CommitError>,
    },
    Connected {
        node: u16,
        peer: u16,
        inbound: bool,
    },
    DialFailed {
        node: u16,
        peer: u16,
    },
}

struct Host {
    node: Option<Node<u16>>,
    store: Store,
    /// Bumped on every restart: deliveries for an older incarnation are dropped.
    epoch: u64,
    topics: BTreeSet<String>,
    provides: BTreeSet<Vec<u8>>,
    seen: BTreeSet<(String, Cid)>,
    events: Vec<Event<u16>>,
    results: BTreeMap<PersistToken, Result<Committed, CommitError>>,
}

/// N coordinators in virtual time. See the [module docs](self).
pub struct Network {
    options: Options,
    origin: Instant,
    now: Instant,
    hosts: Vec<Host>,
    queue: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    rng: SplitMix64,
    links: BTreeSet<(u16, u16)>,
    held: BTreeSet<(u16, u16)>,
    cut: BTreeSet<(u16, u16)>,
    stream_tail: BTreeMap<(u16, u16, Protocol), Instant>,
    parked: Vec<Delivery>,
    steps: u64,
    /// Connections from strangers: (stranger, node).
    strangers: BTreeSet<(u16, u16)>,
    /// Frames nodes sent to strangers: (to, from, protocol, payload).
    sent: Vec<(u16, u16, Protocol, Vec<u8>)>,
}

impl Network {
    /// A network of `options.nodes` fresh nodes, none connected.
    ///
    /// # Panics
    /// If a memory store cannot be created (its committer thread fails to start).
    #[allow(clippy::disallowed_methods)] // The one clock read: an arbitrary origin.
    pub fn new(options: Options) -> Network {
        let origin = Instant::now();
        let mut net = Network {
            origin,
            now: origin,
            hosts: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: SplitMix64::new(options.seed ^ 0x9e37_79b9_7f4a_7c15),
            links: BTreeSet::new(),
            held: BTreeSet::new(),
            cut: BTreeSet::new(),
            stream_tail: BTreeMap::new(),
            parked: Vec::new(),
            steps: 0,
            strangers: BTreeSet::new(),
            sent: Vec::new(),
            options,
        };
        for i in 0..net.options.nodes {
            let i = u16::try_from(i).expect("at most 65,535 nodes");
            let author = if net.options.signing {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&net.options.seed.to_be_bytes());
                key[8..10].copy_from_slice(&i.to_be_bytes());
                Author::signing(hypha_crdt::SigningKey::from_bytes(&key))
            } else {
                let mut replica = [0u8; 32];
                replica[..2].copy_from_slice(&i.to_be_bytes());
                Author::unsigned(replica)
            };
            let config =
                hypha_store::Config::new(author).with_namespace(net.options.namespace.clone());
            let store = Store::memory(config).expect("memory store");
            net.hosts.push(Host {
                node: None,
                store,
                epoch: 0,
                topics: BTreeSet::new(),
                provides: BTreeSet::new(),
                seen: BTreeSet::new(),
                events: Vec::new(),
                results: BTreeMap::new(),
            });
            net.boot(i);
        }
        net
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the network was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// Node `i`'s store.
    pub fn store(&self, i: u16) -> &Store {
        &self.hosts[usize::from(i)].store
    }

    /// Node `i`'s coordinator, while it runs.
    pub fn node(&self, i: u16) -> Option<&Node<u16>> {
        self.hosts[usize::from(i)].node.as_ref()
    }

    /// Everything node `i`'s coordinator reported so far.
    pub fn events(&self, i: u16) -> &[Event<u16>] {
        &self.hosts[usize::from(i)].events
    }

    /// The topics node `i` joined.
    pub fn topics(&self, i: u16) -> &BTreeSet<String> {
        &self.hosts[usize::from(i)].topics
    }

    // ---- actions ---------------------------------------------------------------------------

    /// Commits `mutation` on node `i` through its coordinator and returns the result.
    ///
    /// # Panics
    /// If node `i` is stopped.
    pub fn submit(&mut self, i: u16, mutation: Mutation) -> Result<Committed, CommitError> {
        let now = self.now;
        let token = self.with_node(i, |n, _| n.submit(mutation, now));
        self.flush(i);
        // The commit happened in `flush`; its result is recorded there.
        self.hosts[usize::from(i)]
            .results
            .remove(&token)
            .expect("a submitted mutation is committed by flush")
    }

    /// Adds schema `sdl` on node `i`.
    ///
    /// # Panics
    /// If the schema is refused.
    pub fn schema(&mut self, i: u16, sdl: &str) {
        let sdl = sdl.to_owned();
        self.submit(i, Mutation::AddSchema { sdl }).expect("schema");
    }

    /// Adds schema `sdl` on every node.
    pub fn schema_all(&mut self, sdl: &str) {
        for i in self.ids() {
            self.schema(i, sdl);
        }
    }

    /// Creates `document` in `collection` on node `i`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn create(
        &mut self,
        i: u16,
        collection: &str,
        document: Value,
    ) -> Result<DocId, CommitError> {
        let collection = collection.to_owned();
        match self.submit(
            i,
            Mutation::Create {
                collection,
                document,
            },
        )? {
            Committed::Local { block, .. } => Ok(block.doc_id()),
            other => panic!("a create commits a local block, not {other:?}"),
        }
    }

    /// Creates `document` independently on every node; returns its (shared) docID.
    ///
    /// # Panics
    /// If the nodes disagree on the docID or a create fails.
    pub fn create_all(&mut self, collection: &str, document: Value) -> DocId {
        let ids: BTreeSet<DocId> = self
            .ids()
            .map(|i| {
                self.create(i, collection, document.clone())
                    .expect("create")
            })
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "the same document gets the same docID everywhere"
        );
        *ids.first().expect("at least one node")
    }

    /// Updates `doc` on node `i` with `patch`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn update(&mut self, i: u16, doc: DocId, patch: Value) -> Result<(), CommitError> {
        self.submit(i, Mutation::Update { doc_id: doc, patch })
            .map(drop)
    }

    /// Deletes `doc` on node `i`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn delete(&mut self, i: u16, doc: DocId) -> Result<(), CommitError> {
        self.submit(i, Mutation::Delete { doc_id: doc }).map(drop)
    }

    /// Node `i` follows the collections named `names` (all or none).
    ///
    /// # Errors
    /// [`node::FollowError`] when a collection is unknown; nothing is followed then.
    pub fn follow_collections(&mut self, i: u16, names: &[&str]) -> Result<(), node::FollowError> {
        let now = self.now;
        let tokens = {
            let host = &mut self.hosts[usize::from(i)];
            let node = host.node.as_mut().expect("node is running");
            node.follow_collections(names, &host.store, now)?
        };
        self.flush(i);
        for t in tokens {
            self.hosts[usize::from(i)].results.remove(&t);
        }
        Ok(())
    }

    /// Node `i` follows single documents.
    pub fn follow_documents(&mut self, i: u16, docs: &[DocId]) {
        let now = self.now;
        let tokens = self.with_node(i, |n, _| n.follow_documents(docs, now));
        self.flush(i);
        for t in tokens {
            self.hosts[usize::from(i)].results.remove(&t);
        }
    }

    /// Node `i` fetches `docs` once from its connected peers, without following them.
    pub fn sync_documents(&mut self, i: u16, docs: &[DocId]) {
        let now = self.now;
        self.with_node(i, |n, s| n.sync_documents(docs, s, now));
        self.flush(i);
    }

    /// Node `i` fetches the collections named `names` once from its connected peers.
    ///
    /// # Errors
    /// [`node::FollowError`] when a collection is unknown.
    pub fn sync_collections(&mut self, i: u16, names: &[&str]) -> Result<(), node::FollowError> {
        let now = self.now;
        self.with_node(i, |n, s| n.sync_collections(names, s, now))?;
        self.flush(i);
        Ok(())
    }

    /// Makes `to` a replicator of node `from` for `collections` (by name) and `documents`.
    ///
    /// # Panics
    /// If a collection is unknown on `from` or the store refuses.
    pub fn set_replicator(
        &mut self,
        from: u16,
        to: u16,
        collections: &[&str],
        documents: &[DocId],
    ) {
        let store = &self.hosts[usize::from(from)].store;
        let collections = collections
            .iter()
            .map(|n| store.collection(n).expect("read").expect("collection").id())
            .collect();
        let replicator = Replicator {
            collections,
            documents: documents.iter().copied().collect(),
            addresses: vec![address(to)],
        };
        let peer = node::Peer::to_key(&to);
        self.submit(from, Mutation::SetReplicator { peer, replicator })
            .expect("set replicator");
    }

    /// Deletes node `from`'s replicator `to`.
    pub fn delete_replicator(&mut self, from: u16, to: u16) {
        let peer = node::Peer::to_key(&to);
        self.submit(from, Mutation::DeleteReplicator { peer })
            .expect("delete replicator");
    }

    /// Connects `a` and `b` (a dials b), as `p2p connect` does; nothing is subscribed.
    pub fn connect(&mut self, a: u16, b: u16) {
        let now = self.now;
        let addresses = vec![address(b)];
        self.with_node(a, |n, s| {
            n.handle_connectivity(
                |c, now| {
                    c.want(b, addresses, connectivity::Reason::Configured, now);
                },
                s,
                now,
            );
        });
        self.flush(a);
    }

    /// Holds traffic between `left` and `right` until [`heal`](Network::heal).
    pub fn partition(&mut self, left: &[u16], right: &[u16]) {
        for &a in left {
            for &b in right {
                self.held.insert(pair(a, b));
            }
        }
    }

    /// Drops traffic between `left` and `right` until [`heal`](Network::heal).
    pub fn cut(&mut self, left: &[u16], right: &[u16]) {
        for &a in left {
            for &b in right {
                self.cut.insert(pair(a, b));
            }
        }
    }

    /// Ends every partition; held traffic is delivered.
    pub fn heal(&mut self) {
        self.held.clear();
        self.cut.clear();
        for d in std::mem::take(&mut self.parked) {
            let at = self.now + self.options.latency;
            self.schedule(at, d);
        }
    }

    /// Runs `f` with every node isolated from every other, then heals: the actions in `f`
    /// happen concurrently.
    pub fn concurrently(&mut self, f: impl FnOnce(&mut Network)) {
        let all: Vec<u16> = self.ids().collect();
        for &a in &all {
            for &b in &all {
                if a < b {
                    self.held.insert((a, b));
                }
            }
        }
        f(self);
        self.heal();
    }

    /// Stops node `i`: its connections close; its store keeps what was durable.
    pub fn stop(&mut self, i: u16) {
        let host = &mut self.hosts[usize::from(i)];
        host.node = None;
        host.epoch += 1;
        host.topics.clear();
        host.provides.clear();
        let peers: Vec<u16> = self
            .links
            .iter()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .collect();
        for p in peers {
            self.links.remove(&pair(i, p));
            let now = self.now;
            self.with_node(p, |n, s| n.handle_disconnected(i, s, now));
            self.flush(p);
        }
    }

    /// Starts a stopped node: a new coordinator over the same store.
    pub fn start(&mut self, i: u16) {
        assert!(
            self.hosts[usize::from(i)].node.is_none(),
            "node {i} is running"
        );
        self.boot(i);
    }

    /// Restarts node `i`, keeping its store.
    pub fn restart(&mut self, i: u16) {
        self.stop(i);
        self.start(i);
    }

    /// Runs until quiescent: nothing in flight, every running node idle with empty outboxes
    /// and pending sets.
    ///
    /// # Errors
    /// [`NotQuiescent`] when the time or step budget runs out first.
    pub fn wait(&mut self) -> Result<(), NotQuiescent> {
        let (start_steps, start) = (self.steps, self.now);
        let rounds = self.rounds();
        loop {
            if self.queue.is_empty()
                && let Some(why) = self.busy()
                && self.next_timer().is_none()
            {
                return Err(self.not_quiescent(start_steps, start, why));
            }
            // Quiescent: nothing in flight, and every running node completed an anti-entropy
            // round since the wait began.
            let settled = self
                .rounds()
                .iter()
                .zip(&rounds)
                .all(|(now, then)| match (now, then) {
                    (Some(now), Some(then)) => now > then,
                    _ => true,
                });
            if self.queue.is_empty() && self.busy().is_none() && settled {
                return Ok(());
            }
            if self.now - start > self.options.wait_budget
                || self.steps - start_steps > self.options.step_budget
            {
                let why = self
                    .busy()
                    .unwrap_or_else(|| "deliveries in flight".to_owned());
                return Err(self.not_quiescent(start_steps, start, why));
            }
            if !self.step() {
                let why = self.busy().unwrap_or_default();
                return Err(self.not_quiescent(start_steps, start, why));
            }
        }
    }

    /// Runs for `duration` of virtual time, whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.next_due().is_some_and(|t| t <= end) && self.step() {}
        self.now = self.now.max(end);
    }

    /// Takes the earliest delivery or timer. Returns false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let delivery = self.queue.first_key_value().map(|(k, _)| k.0);
        let timer = self.next_timer();
        let take_timer = match (delivery, timer) {
            (None, None) => return false,
            (Some(d), Some((t, _))) => t < d,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        self.steps += 1;
        if take_timer {
            let (t, i) = timer.expect("checked above");
            self.now = self.now.max(t);
            let now = self.now;
            self.with_node(i, |n, s| n.handle_timeout(s, now));
            self.flush(i);
        } else {
            let ((t, _), d) = self.queue.pop_first().expect("checked above");
            self.now = self.now.max(t);
            self.deliver(d);
        }
        true
    }

    // ---- strangers (adversaries played by a test) ------------------------------------------

    /// `stranger` (a number at or past the node count: no node of this network) connects to
    /// node `to`, inbound. What `to` sends it is kept for [`take_sent`](Network::take_sent).
    ///
    /// # Panics
    /// If `stranger` is a node of this network.
    pub fn stranger_connects(&mut self, stranger: u16, to: u16) {
        assert!(usize::from(stranger) >= self.hosts.len(), "not a stranger");
        self.strangers.insert((stranger, to));
        let now = self.now;
        let addresses = vec![address(stranger)];
        self.with_node(to, |n, s| {
            n.handle_connected(stranger, addresses, Path::Direct, true, s, now)
        });
        self.flush(to);
    }

    /// `from` sends node `to` the frame `payload` (without its length prefix) on `protocol`,
    /// delivered now, whatever it holds.
    pub fn inject_frame(&mut self, from: u16, to: u16, protocol: Protocol, payload: &[u8]) {
        let now = self.now;
        self.with_node(to, |n, s| n.handle_frame(from, protocol, payload, s, now));
        self.flush(to);
    }

    /// `from` forwards node `to` the pubsub message `data` on `topic`, delivered now; returns
    /// the node's verdict. No duplicate suppression: the attacker chooses what to repeat.
    pub fn inject_pubsub(&mut self, from: u16, to: u16, topic: &str, data: &[u8]) -> Verdict {
        let now = self.now;
        let verdict = self.with_node(to, |n, s| n.handle_pubsub(from, topic, data, s, now));
        self.flush(to);
        verdict
    }

    /// The frames nodes sent to `stranger` since the last call: (node, protocol, payload).
    pub fn take_sent(&mut self, stranger: u16) -> Vec<(u16, Protocol, Vec<u8>)> {
        let (mine, rest) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(to, ..)| *to == stranger);
        self.sent = rest;
        mine.into_iter().map(|(_, f, p, b)| (f, p, b)).collect()
    }

    // ---- reads -----------------------------------------------------------------------------

    /// The documents of `collection` on node `i` as JSON, in docID order; deleted ones only
    /// with `include_deleted` (they carry `"_deleted": true`).
    ///
    /// # Panics
    /// If the store cannot be read.
    pub fn documents(
        &self,
        i: u16,
        collection: &str,
        include_deleted: bool,
    ) -> Vec<Map<String, Value>> {
        documents(self.store(i), collection, include_deleted)
    }

    /// The values of `field` over the live documents of `collection` on node `i`, sorted.
    pub fn values(&self, i: u16, collection: &str, field: &str) -> Vec<Value> {
        let mut v: Vec<Value> = self
            .documents(i, collection, false)
            .into_iter()
            .filter_map(|mut d| d.remove(field))
            .collect();
        v.sort_by_key(|x| x.to_string());
        v
    }

    /// The identity of collection `name` in this network's namespace.
    pub fn collection_id(&self, name: &str) -> CollectionId {
        CollectionId::derive(&self.options.namespace, name)
    }

    // ---- internals -------------------------------------------------------------------------

    fn ids(&self) -> impl Iterator<Item = u16> + use<> {
        let n = u16::try_from(self.hosts.len()).expect("at most 65,535 nodes");
        0..n
    }

    fn boot(&mut self, i: u16) {
        let o = &self.options;
        let config = Config::new(o.namespace.clone())
            .with_hot_docs(o.hot_docs)
            .with_passive(o.passive)
            .with_faults(o.faults);
        let config = match o.configure {
            Some(f) => f(i, config),
            None => config,
        };
        let seed = o.seed.wrapping_mul(31).wrapping_add(u64::from(i));
        let mut node = Node::new(config, seed);
        let host = &mut self.hosts[usize::from(i)];
        node.start(&host.store, self.now);
        host.node = Some(node);
        self.flush(i);
    }

    fn with_node<T>(&mut self, i: u16, f: impl FnOnce(&mut Node<u16>, &Store) -> T) -> T {
        let host = &mut self.hosts[usize::from(i)];
        let node = host.node.as_mut().expect("node is running");
        f(node, &host.store)
    }

    /// Executes node `i`'s commands and collects its events, until it has none left.
    fn flush(&mut self, i: u16) {
        let idx = usize::from(i);
        loop {
            let Some(node) = self.hosts[idx].node.as_mut() else {
                return;
            };
            let Some(command) = node.poll_command() else {
                break;
            };
            self.execute(i, command);
        }
        let host = &mut self.hosts[idx];
        if let Some(node) = host.node.as_mut() {
            while let Some(e) = node.poll_event() {
                host.events.push(e);
            }
        }
    }

    fn execute(&mut self, i: u16, command: Command<u16>) {
        let now = self.now;
        match command {
            // Committed durably at once: later than any stage `until` asks for.
            Command::Persist {
                token, mutation, ..
            } => {
                let host = &mut self.hosts[usize::from(i)];
                let result = host.store.commit(mutation).map(|r| r.committed);
                host.results.insert(token, result.clone());
                let epoch = host.epoch;
                let at = now + self.options.persist_latency;
                self.schedule(
                    at,
                    Delivery::Persisted {
                        node: i,
                        epoch,
                        token,
                        result,
                    },
                );
            }
            Command::Transmit {
                peer,
                protocol,
                frame,
            } => {
                if self.strangers.contains(&(peer, i)) {
                    let payload = frame.get(4..).unwrap_or_default().to_vec();
                    self.sent.push((peer, i, protocol, payload));
                    return;
                }
                if !self.links.contains(&pair(i, peer)) {
                    return;
                }
                // Strip the length prefix: the link is the stream, the frame its payload.
                let payload = frame.get(4..).unwrap_or_default().to_vec();
                let at = self.stream_time(i, peer, protocol);
                self.send(
                    at,
                    Delivery::Frame {
                        from: i,
                        to: peer,
                        protocol,
                        frame: payload,
                    },
                );
            }
            Command::Publish { topic, id, data } => {
                self.hosts[usize::from(i)].seen.insert((topic.clone(), id));
                self.gossip(i, None, &topic, id, &data);
            }
            Command::Subscribe { topic } => {
                self.hosts[usize::from(i)].topics.insert(topic);
            }
            Command::Unsubscribe { topic } => {
                self.hosts[usize::from(i)].topics.remove(&topic);
            }
            Command::Connect(c) => self.connectivity(i, c),
        }
    }

    fn connectivity(&mut self, i: u16, command: connectivity::Command<u16>) {
        let now = self.now;
        match command {
            connectivity::Command::Dial { peer, .. } => {
                let up = self
                    .hosts
                    .get(usize::from(peer))
                    .is_some_and(|h| h.node.is_some());
                let blocked =
                    self.cut.contains(&pair(i, peer)) || self.held.contains(&pair(i, peer));
                let at = now + self.options.latency;
                if up && !blocked && peer != i {
                    if self.links.contains(&pair(i, peer)) {
                        self.schedule(
                            at,
                            Delivery::Connected {
                                node: i,
                                peer,
                                inbound: false,
                            },
                        );
                    } else {
                        self.links.insert(pair(i, peer));
                        self.schedule(
                            at,
                            Delivery::Connected {
                                node: i,
                                peer,
                                inbound: false,
                            },
                        );
                        self.schedule(
                            at,
                            Delivery::Connected {
                                node: peer,
                                peer: i,
                                inbound: true,
                            },
                        );
                    }
                } else {
                    self.schedule(at, Delivery::DialFailed { node: i, peer });
                }
            }
            connectivity::Command::Provide { key } => {
                self.hosts[usize::from(i)].provides.insert(key);
            }
            connectivity::Command::StopProviding { key } => {
                self.hosts[usize::from(i)].provides.remove(&key);
            }
            connectivity::Command::FindProviders { key } => {
                let providers: Vec<(u16, Vec<Vec<u8>>)> = self
                    .reachable(i)
                    .into_iter()
                    .filter(|&p| p != i && self.hosts[usize::from(p)].provides.contains(&key))
                    .map(|p| (p, vec![address(p)]))
                    .collect();
                if !providers.is_empty() {
                    self.with_node(i, |n, s| {
                        n.handle_connectivity(
                            |c, now| c.handle_providers(&key, providers, now),
                            s,
                            now,
                        );
                    });
                }
            }
            // No NAT in this harness (the simulator models it): every node is public.
            connectivity::Command::ReserveRelay { .. }
            | connectivity::Command::CancelReservation { .. }
            | connectivity::Command::HolePunch { .. } => {}
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        match delivery {
            Delivery::Frame {
                from,
                to,
                protocol,
                frame,
            } => {
                if !self.links.contains(&pair(from, to)) {
                    return;
                }
                self.with_node(to, |n, s| n.handle_frame(from, protocol, &frame, s, now));
                self.flush(to);
            }
            Delivery::Gossip {
                from,
                to,
                topic,
                id,
                data,
            } => {
                if !self.links.contains(&pair(from, to)) {
                    return;
                }
                let host = &mut self.hosts[usize::from(to)];
                if host.node.is_none()
                    || !host.topics.contains(&topic)
                    || !host.seen.insert((topic.clone(), id))
                {
                    return;
                }
                let verdict =
                    self.with_node(to, |n, s| n.handle_pubsub(from, &topic, &data, s, now));
                self.flush(to);
                if verdict == Verdict::Accept {
                    self.gossip(to, Some(from), &topic, id, &data);
                }
            }
            Delivery::Persisted {
                node,
                epoch,
                token,
                result,
            } => {
                if self.hosts[usize::from(node)].epoch != epoch
                    || self.hosts[usize::from(node)].node.is_none()
                {
                    return;
                }
                self.with_node(node, |n, s| n.handle_persisted(token, result, s, now));
                self.flush(node);
            }
            Delivery::Connected {
                node,
                peer,
                inbound,
            } => {
                if self.hosts[usize::from(node)].node.is_none()
                    || !self.links.contains(&pair(node, peer))
                {
                    return;
                }
                let addresses = vec![address(peer)];
                self.with_node(node, |n, s| {
                    n.handle_connected(peer, addresses, Path::Direct, inbound, s, now)
                });
                self.flush(node);
            }
            Delivery::DialFailed { node, peer } => {
                if self.hosts[usize::from(node)].node.is_none() {
                    return;
                }
                self.with_node(node, |n, s| n.handle_dial_failed(peer, s, now));
                self.flush(node);
            }
        }
    }

    /// Sends a gossip message from `i` to its connected peers on `topic` (except `except`).
    fn gossip(&mut self, i: u16, except: Option<u16>, topic: &str, id: Cid, data: &[u8]) {
        let peers: Vec<u16> = self
            .links
            .iter()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .filter(|&p| Some(p) != except && self.hosts[usize::from(p)].topics.contains(topic))
            .collect();
        for p in peers {
            if self.chance(self.options.gossip_loss) {
                continue;
            }
            let copies = if self.chance(self.options.gossip_duplication) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.options.latency + self.jitter();
                let d = Delivery::Gossip {
                    from: i,
                    to: p,
                    topic: topic.to_owned(),
                    id,
                    data: data.to_vec(),
                };
                self.send(at, d);
            }
        }
    }

    /// Queues a delivery between two nodes, through whatever partition separates them.
    fn send(&mut self, at: Instant, d: Delivery) {
        let (from, to) = match &d {
            Delivery::Frame { from, to, .. } | Delivery::Gossip { from, to, .. } => (*from, *to),
            _ => return self.schedule(at, d),
        };
        if self.cut.contains(&pair(from, to)) {
            return;
        }
        if self.held.contains(&pair(from, to)) {
            self.parked.push(d);
            return;
        }
        self.schedule(at, d);
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), d);
    }

    /// When a frame on the stream (from, to, protocol) arrives: after the link's delay, and
    /// never before the frame sent ahead of it.
    fn stream_time(&mut self, from: u16, to: u16, protocol: Protocol) -> Instant {
        let at = self.now + self.options.latency + self.jitter();
        let tail = self.stream_tail.entry((from, to, protocol)).or_insert(at);
        *tail = (*tail).max(at);
        *tail
    }

    fn reachable(&self, i: u16) -> BTreeSet<u16> {
        let mut seen = BTreeSet::from([i]);
        let mut todo = VecDeque::from([i]);
        while let Some(n) = todo.pop_front() {
            for &(a, b) in &self.links {
                let other = if a == n {
                    b
                } else if b == n {
                    a
                } else {
                    continue;
                };
                if seen.insert(other) {
                    todo.push_back(other);
                }
            }
        }
        seen
    }

    /// Anti-entropy rounds per running node (stopped nodes count as settled).
    fn rounds(&self) -> Vec<Option<u64>> {
        self.hosts
            .iter()
            .map(|h| h.node.as_ref().map(|n| n.stats().anti_entropy_rounds))
            .collect()
    }

    fn next_timer(&self) -> Option<(Instant, u16)> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let t = h.node.as_ref()?.poll_timeout()?;
                Some((t, u16::try_from(i).ok()?))
            })
            .min()
    }

    fn next_due(&self) -> Option<Instant> {
        let d = self.queue.first_key_value().map(|(k, _)| k.0);
        let t = self.next_timer().map(|(t, _)| t);
        d.into_iter().chain(t).min()
    }

    /// What keeps the network from being quiescent, if anything (deliveries aside).
    fn busy(&self) -> Option<String> {
        if !self.parked.is_empty() {
            return Some(format!(
                "{} messages held by a partition",
                self.parked.len()
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let Some(node) = &h.node else { continue };
            if !node.is_idle() {
                return Some(format!("node {i} has work in flight"));
            }
            let stats = h.store.stats().ok()?;
            if stats.outbox_entries > 0 {
                return Some(format!(
                    "node {i} has {} outbox entries",
                    stats.outbox_entries
                ));
            }
            if stats.pending > 0 {
                return Some(format!("node {i} has {} pending blocks", stats.pending));
            }
        }
        None
    }

    fn not_quiescent(&self, start_steps: u64, start: Instant, why: String) -> NotQuiescent {
        NotQuiescent {
            steps: self.steps - start_steps,
            elapsed: self.now - start,
            why,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn jitter(&mut self) -> Duration {
        let max = self.options.jitter.as_nanos() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next_u64() % max)
    }
}

/// The documents of `collection` in `store` as JSON, in docID order; deleted ones only with
/// `include_deleted` (they carry `"_deleted": true`). Shared with `hypha-sim`'s expectations.
///
/// # Panics
/// If the store cannot be read.
pub fn documents(
    store: &Store,
    collection: &str,
    include_deleted: bool,
) -> Vec<Map<String, Value>> {
    let Some(c) = store.collection(collection).expect("read") else {
        return Vec::new();
    };
    let ids = store
        .documents(c.id(), include_deleted, None, usize::MAX)
        .expect("read");
    ids.iter()
        .filter_map(|d| {
            let mut doc = store.document(d).expect("read")?;
            let deleted = store.state(d).expect("read").is_some_and(|s| s.deleted);
            if deleted {
                doc.insert("_deleted".to_owned(), Value::Bool(true));
            }
            Some(doc)
        })
        .collect()
}

/// A node's address in this harness: its number.
fn address(i: u16) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn pair(a: u16, b: u16) -> (u16, u16) {
    (a.min(b), a.max(b))
}
