//! [`World`]: a turmoil simulation of Hypha hosts, driven action by action.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hypha_crdt::DocId;
use hypha_protocols::node::{Event, Faults, FollowError, PersistToken};
use hypha_store::{CommitError, Committed, Mutation, Replicator, Store};
use serde_json::{Map, Value};

use crate::check::{Model, Violation};
use crate::log::EventLog;
use crate::net::{self, HostSpec, Net, NetConfig, Shared, Traffic};

/// How a run behaves; everything random comes from `seed`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed of every random choice: the network's, the cores', the disk's.
    pub seed: u64,
    /// The hosts, in order (host `i` is `n{i}`).
    pub hosts: Vec<HostSpec>,
    /// One-way link latency, drawn per message between these bounds.
    pub latency: (Duration, Duration),
    /// turmoil's step: the resolution of the simulated clock.
    pub tick: Duration,
    /// Simulated fsync latency of a persist, drawn between these bounds.
    pub fsync: (Duration, Duration),
    /// The coordinators' anti-entropy interval.
    pub anti_entropy: Duration,
    /// Deliberate faults in every coordinator (tests that prove checkers can fail).
    pub faults: Faults,
    /// Virtual time one [`World::wait`] may take before it fails.
    pub wait_budget: Duration,
    /// How long the network must be silent (no record received, no persist finished) for
    /// [`World::wait`] to call it quiescent; raised to at least twice the largest latency plus
    /// a tick.
    pub quiet: Duration,
    /// The network namespace.
    pub namespace: String,
    /// The store's outbox bound per replicator target.
    pub max_outbox_per_peer: u64,
    /// Keep every event-log line (for `--trace`).
    pub trace: bool,
}

impl Options {
    /// `nodes` public hosts, 1–10 ms links, 2–20 ms fsync, 10 ms ticks, 15 s anti-entropy.
    pub fn seeded(seed: u64, nodes: usize) -> Options {
        Options {
            seed,
            hosts: vec![HostSpec::default(); nodes],
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            tick: Duration::from_millis(10),
            fsync: (Duration::from_millis(2), Duration::from_millis(20)),
            anti_entropy: Duration::from_secs(15),
            faults: Faults::default(),
            wait_budget: Duration::from_secs(6 * 3600),
            quiet: Duration::from_millis(500),
            namespace: "hypha".to_owned(),
            max_outbox_per_peer: 10_000,
            trace: false,
        }
    }
}

/// A run that did not settle within its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not quiescent after {elapsed:?} of virtual time: {why}")]
pub struct NotQuiescent {
    /// Virtual time spent waiting.
    pub elapsed: Duration,
    /// What was still outstanding.
    pub why: String,
}

/// How a partition treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMode {
    /// Messages are held and delivered on heal (a stalled link).
    Hold,
    /// Messages are dropped (a broken link; connections time out and are redialed).
    Drop,
    /// Messages from the first group to the second are dropped; the other way flows.
    OneWay,
}

/// Hypha hosts in a turmoil simulation. See the [crate docs](crate).
pub struct World {
    sim: turmoil::Sim<'static>,
    net: Shared,
    options: Options,
    /// The independent model of who follows what, for the checkers.
    pub(crate) model: Model,
    held: BTreeSet<(u16, u16)>,
    dropped: BTreeSet<(u16, u16)>,
    oneway: BTreeSet<(u16, u16)>,
    steps: u64,
    violations: Vec<Violation>,
}

impl World {
    /// A world of `options.hosts` fresh hosts, booted, none connected.
    ///
    /// # Panics
    /// If a memory store cannot be created.
    #[allow(clippy::disallowed_methods)] // The one clock read: an arbitrary origin.
    pub fn new(options: Options) -> World {
        let base = Instant::now();
        let config = NetConfig {
            seed: options.seed,
            namespace: options.namespace.clone(),
            anti_entropy: options.anti_entropy,
            fsync: options.fsync,
            faults: options.faults,
            max_outbox_per_peer: options.max_outbox_per_peer,
        };
        let mut options = options;
        // Silence must outlast a record's worst delay.
        options.quiet = options.quiet.max(options.latency.1 * 2 + options.tick);
        let mut n = Net::new(config, &options.hosts, base);
        n.log.keep_all = options.trace;
        let net: Shared = Rc::new(RefCell::new(n));
        let sim = turmoil::Builder::new()
            .rng_seed(options.seed)
            .tick_duration(options.tick)
            .min_message_latency(options.latency.0)
            .max_message_latency(options.latency.1)
            .simulation_duration(Duration::from_secs(100 * 365 * 86_400))
            .tcp_capacity(1 << 16)
            .build();
        let mut w = World {
            sim,
            net,
            model: Model::new(options.hosts.len()),
            held: BTreeSet::new(),
            dropped: BTreeSet::new(),
            oneway: BTreeSet::new(),
            steps: 0,
            violations: Vec::new(),
            options,
        };
        for i in w.ids() {
            let net = w.net.clone();
            w.sim
                .host(net::host_name(i), move || net::software(net.clone(), i));
        }
        w.step();
        w
    }

    /// The options it runs with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Host ids.
    pub fn ids(&self) -> impl Iterator<Item = u16> + use<> {
        let n = u16::try_from(self.options.hosts.len()).expect("at most 65,535 hosts");
        0..n
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    fn now(&self) -> Instant {
        self.net.borrow().base + self.sim.elapsed()
    }

    /// The event log so far.
    pub fn log(&self) -> EventLog {
        self.net.borrow().log.clone()
    }

    /// Writes a driver line into the event log.
    pub fn note(&mut self, what: std::fmt::Arguments<'_>) {
        let at = self.elapsed();
        self.net.borrow_mut().log.note(at, what);
    }

    /// Virtual time of the last document change on any host.
    pub fn last_change(&self) -> Duration {
        let n = self.net.borrow();
        n.last_change - n.base
    }

    /// Traffic counters so far.
    pub fn traffic(&self) -> Traffic {
        self.net.borrow().traffic
    }

    /// Turmoil steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Runs `f` over host `i`'s store (durable data only: unsynced persists are not in it).
    pub fn with_store<T>(&self, i: u16, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.net.borrow().hosts[usize::from(i)].store)
    }

    /// Whether host `i` runs.
    pub fn is_running(&self, i: u16) -> bool {
        self.net.borrow().running(i)
    }

    /// Everything host `i`'s coordinators reported.
    pub fn events(&self, i: u16) -> Vec<Event<u16>> {
        self.net.borrow().hosts[usize::from(i)].events.clone()
    }

    /// Host `i`'s connections: peer → relay for relayed ones.
    pub fn connections(&self, i: u16) -> BTreeMap<u16, Option<u16>> {
        self.net.borrow().connections(i)
    }

    /// Hole punches (succeeded, failed).
    pub fn punches(&self) -> (u64, u64) {
        self.net.borrow().punches
    }

    /// Head-exchange sessions and backfill requests (one round trip each at least) of the
    /// running coordinators since they started.
    pub fn round_trips(&self) -> (u64, u64) {
        let n = self.net.borrow();
        let mut hs = 0;
        let mut bf = 0;
        for h in &n.hosts {
            if let Some(node) = &h.node {
                hs += node.head_sync_stats().sessions;
                bf += node.stats().fetches;
            }
        }
        (hs, bf)
    }

    /// Violations the checkers found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    // ---- time ------------------------------------------------------------------------------

    /// One turmoil step (one tick of every host and the network).
    ///
    /// # Panics
    /// If a host's software fails (a bug: the software never returns an error by design).
    pub fn step(&mut self) {
        self.steps += 1;
        if let Err(e) = self.sim.step() {
            panic!("host software failed: {e}");
        }
    }

    /// Runs for `d` of virtual time, whatever happens.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            self.step();
        }
    }

    /// Runs until quiescent: nothing in flight, every running host idle with empty outboxes,
    /// pending sets and disk queues, every running peer a host wants connected (when no
    /// partition is in force), the network silent for [`Options::quiet`], and an
    /// anti-entropy round completed on every running host since the wait began. The checkers
    /// run at the end.
    ///
    /// # Errors
    /// [`NotQuiescent`] when [`Options::wait_budget`] runs out first.
    pub fn wait(&mut self) -> Result<(), NotQuiescent> {
        let start = self.sim.elapsed();
        let rounds = self.rounds();
        loop {
            let settled = self
                .rounds()
                .iter()
                .zip(&rounds)
                .all(|(now, then)| match (now, then) {
                    (Some(now), Some(then)) => now > then,
                    _ => true,
                });
            let why = self.busy();
            if settled && why.is_none() {
                self.note(format_args!(
                    "quiescent after {:?}",
                    self.sim.elapsed() - start
                ));
                self.check();
                return Ok(());
            }
            if self.sim.elapsed() - start > self.options.wait_budget {
                let why = why.unwrap_or_else(|| "no anti-entropy round completed".to_owned());
                self.note(format_args!("not quiescent: {why}"));
                return Err(NotQuiescent {
                    elapsed: self.sim.elapsed() - start,
                    why,
                });
            }
            // Idle stretches are long (anti-entropy waits): take them a tick at a time, as
            // turmoil steps, but skip the checks between.
            for _ in 0..10 {
                self.step();
            }
        }
    }

    fn busy(&self) -> Option<String> {
        let n = self.net.borrow();
        for i in self.ids() {
            if let Some(why) = n.busy(i) {
                return Some(why);
            }
        }
        if !self.partitioned() {
            for i in self.ids() {
                let Some(node) = &n.hosts[usize::from(i)].node else {
                    continue;
                };
                let c = node.connectivity();
                for p in self.ids() {
                    if p != i && n.running(p) && c.is_wanted(&p) && !c.is_connected(&p) {
                        return Some(format!("n{i} is still dialing n{p}"));
                    }
                }
            }
        }
        let quiet_for = self.now().saturating_duration_since(n.last_activity);
        if quiet_for < self.options.quiet {
            return Some("records in flight".to_owned());
        }
        None
    }

    fn rounds(&self) -> Vec<Option<u64>> {
        let n = self.net.borrow();
        n.hosts
            .iter()
            .map(|h| h.node.as_ref().map(|n| n.stats().anti_entropy_rounds))
            .collect()
    }

    // ---- actions ---------------------------------------------------------------------------

    /// Commits `mutation` on host `i` through its coordinator and waits (in virtual time) for
    /// the result: the mutation is durable when this returns `Ok`.
    ///
    /// # Errors
    /// The store's refusal, or [`CommitError`]-less failure text when the host is down.
    pub fn submit(&mut self, i: u16, mutation: Mutation) -> Result<Committed, String> {
        let what = match &mutation {
            Mutation::Create { collection, .. } => format!("create in {collection}"),
            Mutation::Update { doc_id, patch } => format!("update {doc_id} {patch}"),
            Mutation::Delete { doc_id } => format!("delete {doc_id}"),
            Mutation::AddSchema { .. } => "add schema".to_owned(),
            Mutation::SetReplicator { peer, replicator } => format!(
                "set replicator {peer:?}: {} collections, {} documents",
                replicator.collections.len(),
                replicator.documents.len()
            ),
            Mutation::DeleteReplicator { peer } => format!("delete replicator {peer:?}"),
            other => format!("{other:?}"),
        };
        self.note(format_args!("n{i} submits: {what}"));
        let now = self.now();
        let token = {
            let mut n = self.net.borrow_mut();
            let Some(token) = n.with_node(i, now, |node, _, now| node.submit(mutation, now)) else {
                return Err(format!("n{i} is not running"));
            };
            n.flush(i, now);
            token
        };
        let result = self.await_persist(i, token)?;
        let result = result.map_err(|e: CommitError| format!("{e} ({e:?})"));
        if let Ok(Committed::Local { block, .. }) = &result {
            self.model.local_write(i, block.doc_id(), block.cid());
            self.note(format_args!(
                "n{i} committed {} of {}",
                block.cid(),
                block.doc_id()
            ));
        }
        result
    }

    fn await_persist(
        &mut self,
        i: u16,
        token: PersistToken,
    ) -> Result<Result<Committed, CommitError>, String> {
        let deadline = self.sim.elapsed() + Duration::from_secs(60);
        loop {
            if let Some(r) = self.net.borrow_mut().hosts[usize::from(i)]
                .results
                .remove(&token)
            {
                return Ok(r);
            }
            if !self.is_running(i) {
                return Err(format!("n{i} went down before its write was durable"));
            }
            if self.sim.elapsed() > deadline {
                return Err(format!("n{i}: no persist result within 60 s"));
            }
            self.step();
        }
    }

    /// Adds schema `sdl` on host `i`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn schema(&mut self, i: u16, sdl: &str) -> Result<(), String> {
        self.submit(
            i,
            Mutation::AddSchema {
                sdl: sdl.to_owned(),
            },
        )
        .map(drop)
    }

    /// Creates `document` in `collection` on host `i`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn create(&mut self, i: u16, collection: &str, document: Value) -> Result<DocId, String> {
        let m = Mutation::Create {
            collection: collection.to_owned(),
            document,
        };
        match self.submit(i, m)? {
            Committed::Local { block, .. } => Ok(block.doc_id()),
            other => Err(format!("a create committed {other:?}")),
        }
    }

    /// Updates `doc` on host `i` with `patch`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn update(&mut self, i: u16, doc: DocId, patch: Value) -> Result<(), String> {
        self.submit(i, Mutation::Update { doc_id: doc, patch })
            .map(drop)
    }

    /// Deletes `doc` on host `i`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn delete(&mut self, i: u16, doc: DocId) -> Result<(), String> {
        self.submit(i, Mutation::Delete { doc_id: doc }).map(drop)
    }

    /// Host `i` follows the collections named `names` (all or none).
    ///
    /// # Errors
    /// [`FollowError`] when a collection is unknown (nothing is followed then), or text when
    /// the host is down or the subscription was not persisted.
    pub fn follow_collections(&mut self, i: u16, names: &[&str]) -> Result<(), String> {
        let now = self.now();
        let tokens = {
            let mut n = self.net.borrow_mut();
            let host = &mut n.hosts[usize::from(i)];
            let Some(node) = host.node.as_mut() else {
                return Err(format!("n{i} is not running"));
            };
            let r: Result<Vec<PersistToken>, FollowError> =
                node.follow_collections(names, &host.store, now);
            let tokens = r.map_err(|e| e.to_string())?;
            n.flush(i, now);
            tokens
        };
        for t in tokens {
            self.await_persist(i, t)?.map_err(|e| e.to_string())?;
        }
        for name in names {
            self.model.follow_collection(i, name);
        }
        self.note(format_args!("n{i} follows {names:?}"));
        Ok(())
    }

    /// Host `i` follows single documents.
    ///
    /// # Errors
    /// Text when the host is down or the subscription was not persisted.
    pub fn follow_documents(&mut self, i: u16, docs: &[DocId]) -> Result<(), String> {
        let now = self.now();
        let tokens = {
            let mut n = self.net.borrow_mut();
            let Some(tokens) = n.with_node(i, now, |node, _, now| node.follow_documents(docs, now))
            else {
                return Err(format!("n{i} is not running"));
            };
            n.flush(i, now);
            tokens
        };
        for t in tokens {
            self.await_persist(i, t)?.map_err(|e| e.to_string())?;
        }
        for d in docs {
            self.model.follow_document(i, *d);
        }
        Ok(())
    }

    /// Host `i` fetches `docs` once from its connected peers, without following them.
    ///
    /// # Errors
    /// Text when the host is down.
    pub fn sync_documents(&mut self, i: u16, docs: &[DocId]) -> Result<(), String> {
        let now = self.now();
        let mut n = self.net.borrow_mut();
        n.with_node(i, now, |node, s, now| node.sync_documents(docs, s, now))
            .ok_or_else(|| format!("n{i} is not running"))?;
        n.flush(i, now);
        drop(n);
        for d in docs {
            self.model.synced_document(i, *d);
        }
        Ok(())
    }

    /// Makes `to` a replicator of `from` for `collections` (by name) and `documents`.
    ///
    /// # Errors
    /// An unknown collection on `from`, or the store's refusal.
    pub fn set_replicator(
        &mut self,
        from: u16,
        to: u16,
        collections: &[&str],
        documents: &[DocId],
    ) -> Result<(), String> {
        let (ids, address) = {
            let n = self.net.borrow();
            let store = &n.hosts[usize::from(from)].store;
            let mut ids = BTreeSet::new();
            for c in collections {
                let c = store
                    .collection(c)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("n{from} has no collection {c}"))?;
                ids.insert(c.id());
            }
            (ids, n.address_of(to))
        };
        let replicator = Replicator {
            collections: ids,
            documents: documents.iter().copied().collect(),
            addresses: vec![address],
        };
        let peer = hypha_protocols::node::Peer::to_key(&to);
        self.submit(from, Mutation::SetReplicator { peer, replicator })?;
        self.model.set_replicator(from, to, collections, documents);
        Ok(())
    }

    /// Deletes `from`'s replicator `to`.
    ///
    /// # Errors
    /// The store's refusal.
    pub fn delete_replicator(&mut self, from: u16, to: u16) -> Result<(), String> {
        let peer = hypha_protocols::node::Peer::to_key(&to);
        self.submit(from, Mutation::DeleteReplicator { peer })?;
        let held = self.docs_held(from);
        self.model.delete_replicator(from, to, &held);
        Ok(())
    }

    /// Connects `a` to `b` (a dials b), as `p2p connect` does; nothing is subscribed.
    pub fn connect(&mut self, a: u16, b: u16) {
        let now = self.now();
        let mut n = self.net.borrow_mut();
        let addresses = vec![n.address_of(b)];
        n.with_node(a, now, |node, s, now| {
            node.handle_connectivity(
                |c, now| {
                    c.want(
                        b,
                        addresses,
                        hypha_protocols::connectivity::Reason::Configured,
                        now,
                    );
                },
                s,
                now,
            );
        });
        n.flush(a, now);
        drop(n);
        self.model.link(a, b);
        self.note(format_args!("n{a} connects to n{b}"));
    }

    /// Configures `b` as a peer of `a` (`--peers`): `a` wants it now and after every restart.
    pub fn configure_peer(&mut self, a: u16, b: u16) {
        self.net
            .borrow_mut()
            .configured
            .entry(a)
            .or_default()
            .insert(b);
        self.connect(a, b);
    }

    /// Cuts traffic between `left` and `right` (see [`PartitionMode`]) until [`World::heal`].
    pub fn partition(&mut self, left: &[u16], right: &[u16], mode: PartitionMode) {
        for &a in left {
            for &b in right {
                if a == b {
                    continue;
                }
                let (na, nb) = (net::host_name(a), net::host_name(b));
                match mode {
                    PartitionMode::Hold => {
                        self.sim.hold(na.as_str(), nb.as_str());
                        self.held.insert((a.min(b), a.max(b)));
                    }
                    PartitionMode::Drop => {
                        self.sim.partition(na.as_str(), nb.as_str());
                        self.dropped.insert((a.min(b), a.max(b)));
                    }
                    PartitionMode::OneWay => {
                        self.sim.partition_oneway(na.as_str(), nb.as_str());
                        self.oneway.insert((a, b));
                    }
                }
            }
        }
        self.note(format_args!("partition {left:?} | {right:?} ({mode:?})"));
    }

    /// Ends every partition; held traffic is delivered.
    pub fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.held) {
            let (na, nb) = (net::host_name(a), net::host_name(b));
            self.sim.release(na.as_str(), nb.as_str());
        }
        for (a, b) in std::mem::take(&mut self.dropped) {
            let (na, nb) = (net::host_name(a), net::host_name(b));
            self.sim.repair(na.as_str(), nb.as_str());
        }
        for (a, b) in std::mem::take(&mut self.oneway) {
            let (na, nb) = (net::host_name(a), net::host_name(b));
            self.sim.repair_oneway(na.as_str(), nb.as_str());
        }
        self.note(format_args!("heal"));
    }

    /// Raises (or lowers) the latency ceiling of the link between `a` and `b`.
    pub fn set_link_max_latency(&mut self, a: u16, b: u16, max: Duration) {
        let (na, nb) = (net::host_name(a), net::host_name(b));
        self.sim
            .set_link_max_message_latency(na.as_str(), nb.as_str(), max);
        self.options.quiet = self.options.quiet.max(max * 2 + self.options.tick);
        self.note(format_args!("link n{a} n{b} latency up to {max:?}"));
    }

    /// Releases the held link between `a` and `b` (its held traffic is delivered).
    pub fn release(&mut self, a: u16, b: u16) {
        if self.held.remove(&(a.min(b), a.max(b))) {
            let (na, nb) = (net::host_name(a), net::host_name(b));
            self.sim.release(na.as_str(), nb.as_str());
            self.note(format_args!("release n{a} n{b}"));
        }
    }

    /// Whether any partition is in force.
    pub fn partitioned(&self) -> bool {
        !(self.held.is_empty() && self.dropped.is_empty() && self.oneway.is_empty())
    }

    /// Isolates every host from every other (held), runs `f`, heals: the actions in `f`
    /// happen concurrently.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn concurrently<T>(&mut self, f: impl FnOnce(&mut World) -> T) -> T {
        let all: Vec<u16> = self.ids().collect();
        for &a in &all {
            let others: Vec<u16> = all.iter().copied().filter(|&b| b > a).collect();
            self.partition(&[a], &others, PartitionMode::Hold);
        }
        let out = f(self);
        self.heal();
        out
    }

    /// Crashes host `i`: its runtime is dropped, and persists not yet synced are lost.
    pub fn crash(&mut self, i: u16) {
        self.down(i, false);
    }

    /// Stops host `i` cleanly: its pending persists complete, then it goes down.
    pub fn stop(&mut self, i: u16) {
        self.down(i, true);
    }

    fn down(&mut self, i: u16, graceful: bool) {
        if !self.is_running(i) {
            return;
        }
        let now = self.now();
        self.net.borrow_mut().down(i, graceful, now);
        self.sim.crash(net::host_name(i).as_str());
        self.check_durable();
    }

    /// Starts a stopped host: a new coordinator over the same store.
    pub fn start(&mut self, i: u16) {
        if self.is_running(i) {
            return;
        }
        self.sim.bounce(net::host_name(i).as_str());
        // The software boots on its next tick.
        self.step();
    }

    /// Stops and starts host `i`, keeping its store.
    pub fn restart(&mut self, i: u16) {
        self.stop(i);
        self.start(i);
    }

    // ---- reads -----------------------------------------------------------------------------

    /// The documents of `collection` on host `i` as JSON, in docID order; deleted ones only
    /// with `include_deleted` (they carry `"_deleted": true`).
    pub fn documents(
        &self,
        i: u16,
        collection: &str,
        include_deleted: bool,
    ) -> Vec<Map<String, Value>> {
        self.with_store(i, |s| {
            hypha_protocols::testing::documents(s, collection, include_deleted)
        })
    }

    /// Every document host `i` holds (deleted ones included), with its collection name.
    pub(crate) fn docs_held(&self, i: u16) -> BTreeMap<DocId, String> {
        self.with_store(i, |s| {
            let mut out = BTreeMap::new();
            for c in s.collections().unwrap_or_default() {
                for d in s
                    .documents(c.id(), true, None, usize::MAX)
                    .unwrap_or_default()
                {
                    out.insert(d, c.name().to_owned());
                }
            }
            out
        })
    }

    // ---- checkers --------------------------------------------------------------------------

    /// Runs every checker now; returns the violations found by this run of them.
    pub fn check(&mut self) -> Vec<Violation> {
        let found = crate::check::all(self, !self.partitioned());
        self.record(found)
    }

    /// Runs the durability and bound checkers (valid at any moment, partitions or not).
    pub fn check_durable(&mut self) -> Vec<Violation> {
        let found = crate::check::safety(self);
        self.record(found)
    }

    fn record(&mut self, found: Vec<Violation>) -> Vec<Violation> {
        for v in &found {
            let at = self.elapsed();
            self.net
                .borrow_mut()
                .log
                .note(at, format_args!("VIOLATION {v}"));
            if !self.violations.contains(v) {
                self.violations.push(v.clone());
            }
        }
        found
    }

    pub(crate) fn net(&self) -> std::cell::Ref<'_, Net> {
        self.net.borrow()
    }

    pub(crate) fn net_mut(&self) -> std::cell::RefMut<'_, Net> {
        self.net.borrow_mut()
    }
}
