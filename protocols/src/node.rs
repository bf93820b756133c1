//! The node coordinator: the one place where cross-protocol decisions live.
//!
//! [`Node`] owns every core — [`Connectivity`], passive replication ([`pubsub`](mod@crate::pubsub)),
//! active replication ([`Replicator`]) and [`Backfill`] — and ties them to the store: a local
//! commit is published and
//! pushed, a received block is merged, a missing ancestor is backfilled, a push is acknowledged
//! once durable. Both drivers run it: the `hypha` node over libp2p and the simulator over its
//! network model, so what the simulator tests is what the node runs.
//!
//! Like the cores, it does no IO and reads no clock. It reads the store through `&Store`
//! (synchronous reads of committed data) and asks for every write as a [`Command::Persist`];
//! the driver submits it and reports the result with [`Node::handle_persisted`] once it
//! reaches the command's [`Stage`]: durable, or for a received block only visible (committed
//! and readable, not yet fsynced — such a block is owed no acknowledgement, and head exchange
//! brings it back if a crash loses it; the document is readable on this node an fsync
//! sooner). Acknowledgements to peers are only ever sent from a durable result: a push is
//! acknowledged once a [`Mutation::Barrier`] behind its blocks is durable.
//!
//! # Drive loop
//!
//! ```no_run
//! # use std::time::{Duration, Instant};
//! # use hypha_protocols::node::{Command, Config, Node};
//! # fn example(store: &hypha_store::Store) {
//! let mut node = Node::<u16>::new(Config::new("hypha"), 7);
//! node.start(store, Instant::now());
//! loop {
//!     while let Some(command) = node.poll_command() {
//!         match command {
//!             Command::Persist { token, mutation, until } => {
//!                 let result = store.submit(mutation).wait_until(until).map(|r| r.committed);
//!                 node.handle_persisted(token, result, store, Instant::now());
//!             }
//!             Command::Transmit { .. } => { /* write the frame to the peer's stream */ }
//!             Command::Publish { .. } | Command::Subscribe { .. } | Command::Unsubscribe { .. } => {
//!                 /* gossipsub */
//!             }
//!             Command::Connect(_) => { /* dial, provider records, relays */ }
//!         }
//!     }
//!     while let Some(_event) = node.poll_event() { /* API feed, metrics, peer scores */ }
//!     // …wait for a frame, a pubsub message, a connection event or `poll_timeout`, and
//!     // hand it to the matching `handle_*` method.
//! #   break;
//! }
//! # }
//! ```
//!
//! # Flows
//!
//! ```text
//! local commit ──persisted──▶ publish Update on the collection topic and the shard topic
//!                             (block inline when small), mark the document hot, pump the
//!                             outboxes of the replicators whose scope covers it
//! pubsub Update ────────────▶ invalid: Reject (gossipsub lowers the sender's score)
//!                             not followed: Accept (forwarded), dropped here
//!                             followed, block inline: persist Ingest
//!                             followed, CID only: backfill from the sender
//! Ingest visible ───────────▶ Pending { missing }: backfill them from the peer that sent it
//!                             Applied, arrived by push or backfill, now a head: publish it,
//!                             so updates cross chains of nodes
//! replicator Ready ─────────▶ read the outbox; push each owed document's current heads
//! replicator Received ──────▶ unknown collection: refuse; else persist Ingest per block;
//!                             history missing: backfill from the source; every head applied:
//!                             persist a Barrier, and once it is durable ack DURABLE
//! replicator Acked ─────────▶ persist AckOutbox (kept if the heads moved on meanwhile)
//! head_sync Differs/Offered ─▶ backfill the heads not held from that peer
//! ```
//!
//! # Head exchange: when it runs
//!
//! - **On connect**: the node pulls what it follows (its collections, documents and hot
//!   documents) from the new peer, and catches the peer up if it is a replicator target.
//! - **On subscription**: following a collection pulls its existing documents from every
//!   connected peer; following a document pulls that document.
//! - **On demand**: [`Node::sync_collections`] and [`Node::sync_documents`] fetch once without
//!   following.
//! - **A cold document becoming hot** is pulled again from the connected peers.
//! - **Anti-entropy**: every `anti_entropy` interval (default 60 s) the same with every
//!   connected peer; equal roots settle it in one round trip of under 64 bytes each way.
//!
//! What a session finds differing is fetched by backfill from that peer. A node never pulls a
//! document it neither follows nor asked for; what a replicator source offers is taken on the
//! same terms as its pushes (known collection, allow list).
//!
//! # Catching a replicator up
//!
//! A new replicator (or one whose outbox overflowed) carries the store's catch-up marker. The
//! coordinator clears it when the catch-up starts (so later commits add outbox entries again)
//! and runs head exchange one way — a push session over the replicator's collections and
//! documents — instead of pushing every document. The same push session runs when the
//! target (re)connects and every anti-entropy round, so a catch-up cut short by a crash of
//! either side, or refused because the target lacked the schema, completes later by itself.

//! # Bounds and defaults ([`Config`])
//!
//! | bound | default | why |
//! |---|---|---|
//! | persists awaiting their result (`max_persists`) | 65,536 | past it, received blocks are dropped (peers resend; anti-entropy repairs). Local writes and bookkeeping persists (remembered peers, outbox acks, catch-up markers, hot documents, evicted orphans) are never dropped and may go past it: each is bounded by what causes it (the API's queue, connections, acks of pushes in flight, one per anti-entropy round) |
//! | unanswered pushes held as a target | the replicator's `max_inbound_per_source` × sources | each answered or dropped on disconnect |
//! | documents read per outbox pump (`outbox_batch`) | 64 | bounds one read |
//! | hot documents (`hot_docs`) | 64 | the seed's "frequently used" set; 0 disables. Persisted at most once per anti-entropy round, loaded at start |
//! | blocks one fetch takes over its truncated continuations (`max_fetch_depth`) | 100,000 | a deep DAG bomb (answers truncated forever) stops there, `Violation::Backfill(DepthExceeded)`; each answer is also within backfill's `max_blocks` and `max_bytes` |
//! | inline block size (`max_inline_bytes`) | 32 KiB | an update fits one gossipsub message |
//! | blocks a peer may have waiting for parents (`max_orphans_per_peer`) | 64 | an unknown-parent flood: past it a block whose parents are not here is dropped (anti-entropy brings a legitimate one back, parents first) |
//! | blocks waiting for parents over all peers (`max_orphans`) | 1,024 | the same, whatever the number of peers (the store's own cap, 100,000, is the last line) |
//! | fetches of orphans' parents in flight per sender (`max_orphan_fetches_per_peer`) | 16 | a flood of orphans cannot take all of backfill's places (64); past it the orphan waits for anti-entropy |
//! | fetches in flight per peer for what this node follows (`max_fetches_per_peer`) | 16 | a peer that claims heads and never serves them holds at most this many of backfill's 64 places until they time out; past it (or with every place taken) the fetch waits in a queue |
//! | fetches waiting for a place (`max_waiting_fetches`, `max_waiting_heads`) | 1,024 fetches, 16,384 heads | they go out, oldest first, as places free (a catch-up of many documents from one peer streams instead of stopping at 64 until the next anti-entropy round); past it a fetch is dropped, and the next head exchange finds the document again |
//! | time an orphan may wait for its parents (`orphan_ttl`) | 10 min | then it is evicted from the store's pending set (`Mutation::DropPending`) and its budget freed |
//! | work per replayed block | one `contains` read | a block held already, on pubsub or in a push, is never persisted again; a replayed push costs one [`Mutation::Barrier`] before its ack, which writes nothing (and takes no transaction when nothing waits for an fsync) |
//!
//! The cores' own bounds are in their module docs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use hypha_crdt::{Cid, CollectionId, DocId, Outcome, Rejection, VerifiedBlock};
use hypha_store::{
    CommitError, Committed, Mutation, PeerKey, PeerRecord, ReadError, Stage, Store, Subscription,
};

use crate::backfill::{self, Backfill, RequestId};
use crate::clock::Monotonic;
use crate::connectivity::{self, Address, Connectivity, Path, Reason};
use crate::head_sync::{self, HeadSync};
use crate::pubsub::{self, Follows, TopicChange, Update};
use crate::replicator::{self, InboundId, Replicator};

/// Peers asked in turn for blocks a pubsub update announced, after the one that sent it.
const MAX_FETCH_CANDIDATES: usize = 3;

/// A peer identity the coordinator can persist: a libp2p `PeerId` in the node, a number in the
/// simulator.
pub trait Peer: Copy + Ord + fmt::Debug {
    /// The bytes the store keeps for this peer.
    fn to_key(&self) -> PeerKey;
    /// The peer whose stored bytes are `key`, if they name one.
    fn from_key(key: &PeerKey) -> Option<Self>;
}

macro_rules! numeric_peer {
    ($($t:ty),*) => {$(
        impl Peer for $t {
            fn to_key(&self) -> PeerKey {
                PeerKey(self.to_be_bytes().to_vec())
            }
            fn from_key(key: &PeerKey) -> Option<$t> {
                key.0.as_slice().try_into().ok().map(<$t>::from_be_bytes)
            }
        }
    )*};
}
numeric_peer!(u8, u16, u32, u64);

/// The stream protocols the coordinator speaks; a [`Command::Transmit`] names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// [`crate::wire::BACKFILL_PROTOCOL`].
    Backfill,
    /// [`crate::wire::REPLICATOR_PROTOCOL`].
    Replicator,
    /// [`crate::wire::HEAD_SYNC_PROTOCOL`].
    HeadSync,
}

impl Protocol {
    /// Every protocol, in a fixed order (an index into it is a protocol's number).
    pub const ALL: [Protocol; 3] = [Protocol::Backfill, Protocol::Replicator, Protocol::HeadSync];

    /// The versioned stream protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Backfill => crate::wire::BACKFILL_PROTOCOL,
            Protocol::Replicator => crate::wire::REPLICATOR_PROTOCOL,
            Protocol::HeadSync => crate::wire::HEAD_SYNC_PROTOCOL,
        }
    }
}

/// Names one [`Command::Persist`]; its result comes back through
/// [`Node::handle_persisted`], and for [`Node::submit`] also as [`Event::Persisted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

impl fmt::Display for PersistToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "persist-{}", self.0)
    }
}

/// Deliberate faults for tests that prove a checker can fail (feature `test-util`). Each one
/// breaks one rule the scenarios protect; never enable them in a real node.
#[cfg(feature = "test-util")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Follow everything: join the collection topic of every local collection and merge every
    /// valid update, whatever the subscriptions say.
    pub follow_everything: bool,
    /// Push every local commit to every replicator ever set, whatever its scope (a deleted
    /// replicator's scope is empty, so it is not forgotten either).
    pub ignore_replicator_scope: bool,
    /// Acknowledge a replicator push as durable as soon as it arrives, before its blocks are
    /// persisted: a crash of the target then loses what the source believes delivered.
    pub ack_before_persist: bool,
    /// Drop every replicator outbox at start: what was owed to a target before a restart is
    /// never pushed.
    pub drop_outbox_on_restart: bool,
}

/// How the coordinator and its cores are configured.
#[derive(Debug, Clone)]
pub struct Config<P> {
    namespace: String,
    passive: bool,
    hot_docs: usize,
    max_inline_bytes: usize,
    max_persists: usize,
    max_fetch_depth: u64,
    max_orphans_per_peer: usize,
    max_orphans: usize,
    max_orphan_fetches_per_peer: usize,
    max_fetches_per_peer: usize,
    max_waiting_fetches: usize,
    max_waiting_heads: usize,
    orphan_ttl: Duration,
    outbox_batch: usize,
    anti_entropy: Duration,
    peers: Vec<(P, Vec<Address>)>,
    head_sync: head_sync::Config,
    backfill: backfill::Config,
    replicator: replicator::Config<P>,
    connectivity: connectivity::Config,
    #[cfg(feature = "test-util")]
    faults: Faults,
}

impl<P: Ord> Config<P> {
    /// Defaults for a node of network `namespace` (DESIGN §2: it scopes topics and
    /// collections).
    pub fn new(namespace: impl Into<String>) -> Config<P> {
        Config {
            namespace: namespace.into(),
            passive: true,
            hot_docs: 64,
            max_inline_bytes: pubsub::DEFAULT_MAX_INLINE_BYTES,
            max_persists: 65_536,
            max_fetch_depth: 100_000,
            max_orphans_per_peer: 64,
            max_orphans: 1024,
            max_orphan_fetches_per_peer: 16,
            max_fetches_per_peer: 16,
            max_waiting_fetches: 1024,
            max_waiting_heads: 16_384,
            orphan_ttl: Duration::from_secs(600),
            outbox_batch: 64,
            anti_entropy: Duration::from_secs(60),
            peers: Vec::new(),
            head_sync: head_sync::Config::default(),
            backfill: backfill::Config::default(),
            replicator: replicator::Config::default(),
            connectivity: connectivity::Config::default(),
            #[cfg(feature = "test-util")]
            faults: Faults::default(),
        }
    }

    /// Passive replication over pubsub on or off (`--no-pubsub`). Default: on.
    pub fn with_passive(mut self, on: bool) -> Config<P> {
        self.passive = on;
        self
    }

    /// Hot documents followed on top of subscriptions (`--hot-docs`). Default: 64; 0 disables.
    pub fn with_hot_docs(mut self, n: usize) -> Config<P> {
        self.hot_docs = n;
        self
    }

    /// The largest block published inline. Default: 32 KiB.
    pub fn with_max_inline_bytes(mut self, n: usize) -> Config<P> {
        self.max_inline_bytes = n;
        self
    }

    /// Persists awaiting their result. Default: 65,536.
    pub fn with_max_persists(mut self, n: usize) -> Config<P> {
        self.max_persists = n.max(1);
        self
    }

    /// The depth budget: how many blocks one fetch may take over its truncated continuations.
    /// Default: 100,000.
    pub fn with_max_fetch_depth(mut self, blocks: u64) -> Config<P> {
        self.max_fetch_depth = blocks;
        self
    }

    /// The unknown-parent budget: how many received blocks whose parents are not here may wait
    /// in the pending set per peer (default 64) and over all peers (default 1,024), and for
    /// how long before they are evicted (default 10 min).
    pub fn with_orphans(mut self, per_peer: usize, total: usize, ttl: Duration) -> Config<P> {
        self.max_orphans_per_peer = per_peer;
        self.max_orphans = total;
        self.orphan_ttl = ttl;
        self
    }

    /// How many fetches for what this node follows may be in flight to one peer (default 16),
    /// and how many more may wait for a place (default 1,024 fetches naming 16,384 heads in
    /// all).
    pub fn with_fetch_queue(mut self, per_peer: usize, waiting: usize, heads: usize) -> Config<P> {
        self.max_fetches_per_peer = per_peer.max(1);
        self.max_waiting_fetches = waiting;
        self.max_waiting_heads = heads;
        self
    }

    /// How many fetches of orphans' parents may be in flight per sender. Default: 16.
    pub fn with_max_orphan_fetches_per_peer(mut self, n: usize) -> Config<P> {
        self.max_orphan_fetches_per_peer = n;
        self
    }

    /// How often head exchange runs with every connected peer as anti-entropy: pulls of what
    /// the node follows, pushes to replicator targets. Cheap when nothing differs (equal roots
    /// settle in one small round trip). Default: 60 s.
    pub fn with_anti_entropy(mut self, interval: Duration) -> Config<P> {
        self.anti_entropy = interval.max(Duration::from_millis(1));
        self
    }

    /// The head-exchange core's configuration.
    pub fn with_head_sync(mut self, config: head_sync::Config) -> Config<P> {
        self.head_sync = config;
        self
    }

    /// Peers to stay connected to (`--peers`), with their addresses. Default: none.
    pub fn with_peers(mut self, peers: Vec<(P, Vec<Address>)>) -> Config<P> {
        self.peers = peers;
        self
    }

    /// The backfill core's configuration.
    pub fn with_backfill(mut self, config: backfill::Config) -> Config<P> {
        self.backfill = config;
        self
    }

    /// The replicator core's configuration (retry intervals, allow list, quotas).
    pub fn with_replicator(mut self, config: replicator::Config<P>) -> Config<P> {
        self.replicator = config;
        self
    }

    /// The connectivity core's configuration.
    pub fn with_connectivity(mut self, config: connectivity::Config) -> Config<P> {
        self.connectivity = config;
        self
    }

    /// Deliberate faults (tests only).
    #[cfg(feature = "test-util")]
    pub fn with_faults(mut self, faults: Faults) -> Config<P> {
        self.faults = faults;
        self
    }

    /// The network namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether passive replication (pubsub) is on.
    pub fn passive(&self) -> bool {
        self.passive
    }

    /// Hot documents followed on top of subscriptions.
    pub fn hot_docs(&self) -> usize {
        self.hot_docs
    }

    /// The largest block published inline.
    pub fn max_inline_bytes(&self) -> usize {
        self.max_inline_bytes
    }

    /// Persists awaiting their result.
    pub fn max_persists(&self) -> usize {
        self.max_persists
    }

    /// The depth budget: blocks one fetch may take over its truncated continuations.
    pub fn max_fetch_depth(&self) -> u64 {
        self.max_fetch_depth
    }

    /// The unknown-parent budget: blocks waiting for their parents per peer and in all, and
    /// how long one may wait.
    pub fn orphans(&self) -> (usize, usize, Duration) {
        (self.max_orphans_per_peer, self.max_orphans, self.orphan_ttl)
    }

    /// Fetches of orphans' parents in flight per sender.
    pub fn max_orphan_fetches_per_peer(&self) -> usize {
        self.max_orphan_fetches_per_peer
    }

    /// Fetches for what this node follows in flight per peer, and the fetches (and the heads
    /// they name) that may wait for a place.
    pub fn fetch_queue(&self) -> (usize, usize, usize) {
        (
            self.max_fetches_per_peer,
            self.max_waiting_fetches,
            self.max_waiting_heads,
        )
    }

    /// The head-exchange core's configuration.
    pub fn head_sync(&self) -> &head_sync::Config {
        &self.head_sync
    }

    /// The backfill core's configuration.
    pub fn backfill(&self) -> &backfill::Config {
        &self.backfill
    }

    /// The replicator core's configuration.
    pub fn replicator(&self) -> &replicator::Config<P> {
        &self.replicator
    }
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Command<P> {
    /// Connectivity: dial, provider records, relay reservations, hole punching.
    Connect(connectivity::Command<P>),
    /// Commit `mutation` and report with [`Node::handle_persisted`] once it reaches `until`
    /// (or fails), in submission order.
    Persist {
        /// Echoed back.
        token: PersistToken,
        /// The change.
        mutation: Mutation,
        /// When to report: [`Stage::Durable`], or [`Stage::Visible`] for a received block.
        /// A driver may always wait longer (report durable results only); never shorter.
        until: Stage,
    },
    /// Publish `data` on `topic`. The message id is the block's CID on that topic
    /// ([`pubsub::message_id`]).
    Publish {
        /// The topic.
        topic: String,
        /// The block's CID.
        id: Cid,
        /// The encoded [`Update`].
        data: Vec<u8>,
    },
    /// Join a pubsub topic.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// Send `frame` (already length-prefixed) to `peer` on `protocol`.
    Transmit {
        /// The peer.
        peer: P,
        /// The stream protocol.
        protocol: Protocol,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Leave a pubsub topic.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
}

/// What happened, for the API, metrics and peer scoring.
#[derive(Debug, Clone)]
pub enum Event<P> {
    /// A document changed here (a local commit or a merged block): the change feed.
    Changed {
        /// The document.
        doc: DocId,
        /// Its collection.
        collection: CollectionId,
        /// Its heads now.
        heads: Vec<Cid>,
    },
    /// A peer broke a protocol or sent what the merge refuses: lower its standing.
    PeerMisbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        violation: Violation,
    },
    /// A mutation given to [`Node::submit`] is durable, or failed.
    Persisted {
        /// The token `submit` returned.
        token: PersistToken,
        /// What it did.
        result: Result<Committed, CommitError>,
    },
    /// A replicator target acknowledged a document durably.
    Replicated {
        /// The target.
        peer: P,
        /// The document.
        doc: DocId,
    },
    /// A push to a replicator target failed or was refused; it is retried with backoff.
    ReplicationFailed {
        /// The target.
        peer: P,
        /// The document.
        doc: DocId,
        /// Why, for `replicator getall` and the logs.
        reason: ReplicationError,
    },
    /// Persisting a received block failed in storage: it is dropped and arrives again by
    /// retry or anti-entropy; an operator must look.
    PersistFailed {
        /// What failed.
        error: CommitError,
    },
    /// A replicator target refused to be caught up on a collection of its scope: it lacks
    /// the collection (the documents follow once it has it: the next catch-up runs at the next
    /// anti-entropy round) or does not accept this node as a source.
    CatchUpRefused {
        /// The target.
        peer: P,
        /// The collection.
        collection: CollectionId,
        /// Why.
        reason: replicator::Refusal,
    },
    /// A store read failed: an operator must look (corruption or an IO error).
    StoreFailed {
        /// What failed.
        error: ReadError,
    },
}

/// Why a push to a replicator did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// The target answered with a refusal.
    #[error(transparent)]
    Refused(#[from] replicator::Refusal),
    /// No answer.
    #[error(transparent)]
    Failed(#[from] replicator::Failure),
}

/// A peer's misbehaviour, by protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// On the backfill protocol.
    #[error("backfill: {0}")]
    Backfill(backfill::Violation),
    /// On the head-exchange protocol.
    #[error("head sync: {0}")]
    HeadSync(head_sync::Violation),
    /// A pubsub message that does not validate.
    #[error("pubsub: {0}")]
    Pubsub(pubsub::Invalid),
    /// On the replicator protocol.
    #[error("replicator: {0}")]
    Replicator(replicator::Violation),
    /// A verified block the merge refuses (`PriorityMismatch`, …).
    #[error("block refused by the merge: {0}")]
    Rejected(Rejection),
    /// A stream of `protocol` that broke the framing, as the driver that reads the frames saw
    /// it (the cores only ever see whole frames).
    #[error("{name} framing: {1}", name = .0.name())]
    Framing(Protocol, Framing),
}

/// How a peer broke the framing of a stream it opened. The driver reports these (in a libp2p
/// `Swarm`, `swarm::Hypha` does); the stream is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Framing {
    /// A length prefix over the frame cap, refused before any of the body was read.
    #[error("a frame of {len} bytes, over the limit of {max}")]
    FrameTooLarge {
        /// The length announced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream was silent in the middle of a frame past the idle timeout.
    #[error("a stream stayed silent in the middle of a frame")]
    Stalled,
    /// More inbound streams on the protocol and connection than allowed.
    #[error("too many streams")]
    TooManyStreams,
    /// The stream ended in the middle of a frame.
    #[error("a stream ended in the middle of a frame")]
    Truncated,
}

/// What gossipsub should do with a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Not for us and not worth forwarding (passive replication is off).
    Ignore,
    /// Invalid: drop it and penalise the sender.
    Reject,
}

/// A subscription could not be made; nothing was subscribed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FollowError {
    /// No collection of that name in the local schema.
    #[error("collection not found: {0}")]
    UnknownCollection(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] ReadError),
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Pubsub updates published.
    pub published: u64,
    /// Pubsub updates received.
    pub pubsub_received: u64,
    /// Received updates of documents this node follows (merged or fetched).
    pub pubsub_useful: u64,
    /// Pubsub bytes received.
    pub pubsub_bytes: u64,
    /// Blocks handed to the store from peers.
    pub ingested: u64,
    /// Backfill requests made.
    pub fetches: u64,
    /// Peer violations seen.
    pub violations: u64,
    /// Received blocks dropped because too many persists were outstanding.
    pub dropped: u64,
    /// Anti-entropy rounds run.
    pub anti_entropy_rounds: u64,
    /// Documents head exchange found to differ and fetched or offered.
    pub head_sync_docs: u64,
    /// Received blocks whose parents are not here, refused a place in the pending set because
    /// their sender's orphan budget (or the total) was spent.
    pub orphans_refused: u64,
    /// Orphans evicted from the pending set after waiting `orphan_ttl` for their parents.
    pub orphans_evicted: u64,
}

/// What the coordinator holds right now: the length of each of its queues and maps that an
/// input can grow, for metrics and for the hostile-peer tests' memory accounting. Every one is
/// bounded (see the [module docs](self) and the cores' Bounds tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gauges {
    /// Persists awaiting their result. Received blocks stop at `max_persists`; local writes
    /// and bookkeeping persists may add to it (see the module's bounds table).
    pub persists: usize,
    /// Backfill fetches the coordinator tracks.
    pub fetches: usize,
    /// Fetches waiting for a place in flight.
    pub waiting_fetches: usize,
    /// Received pushes not yet answered.
    pub inbound: usize,
    /// Backfill requests in flight in the core.
    pub backfill_in_flight: usize,
    /// Head-exchange sessions in flight in the core.
    pub head_sync_in_flight: usize,
    /// Commands and events not yet taken by the driver.
    pub queued: usize,
}

impl Gauges {
    /// The sum of every gauge: one number to compare before and during an attack.
    pub fn total(&self) -> usize {
        self.persists
            + self.fetches
            + self.waiting_fetches
            + self.inbound
            + self.backfill_in_flight
            + self.head_sync_in_flight
            + self.queued
    }
}

/// How a block reached this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via<P> {
    Pubsub,
    Push(P, InboundId),
    Backfill(RequestId),
}

/// Why a persist was requested, so its result can be acted on.
#[derive(Debug, Clone)]
enum Purpose<P> {
    /// From [`Node::submit`]: report it, then react to what it changed.
    Api(Mutation),
    /// A block from `from`.
    Ingest {
        from: P,
        via: Via<P>,
        block: VerifiedBlock,
    },
    /// Bookkeeping whose result needs nothing more than a pump of `peer`.
    Outbox { peer: P },
    /// The catch-up marker of `peer` was cleared: catch it up now.
    CatchUp { peer: P },
    /// A barrier behind every block of `peer`'s push `id`: acknowledge the push once durable.
    AckPush { peer: P, id: InboundId },
    /// Bookkeeping with nothing to do afterwards.
    Quiet,
}

/// A push received as a target, until it is answered.
struct InboundPush {
    doc: DocId,
    heads: Vec<Cid>,
    outstanding: usize,
    fetch: Option<RequestId>,
    fetched: bool,
    /// The barrier whose durable result acknowledges the push. Only that barrier answers it,
    /// and only while the push is held: a push dropped with its connection is never answered
    /// (its source's retry is).
    barrier: Option<PersistToken>,
}

/// Why a backfill request was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchFor<P> {
    Follow,
    Push(P, InboundId),
}

/// A fetch for what this node follows, waiting for a place in flight.
struct Waiting<P> {
    doc: DocId,
    wanted: Vec<Cid>,
    peer: P,
    others: Vec<P>,
    /// The depth of the fetch it continues (a truncated answer's next request), so a
    /// continuation that waited still counts against `max_fetch_depth`.
    depth: u64,
}

struct Fetch<P> {
    doc: DocId,
    wanted: Vec<Cid>,
    peer: P,
    others: VecDeque<P>,
    purpose: FetchFor<P>,
    outstanding: usize,
    completed: Option<bool>,
    /// Blocks received for this fetch and the truncated ones it continues.
    depth: u64,
}

/// The sans-IO coordinator of one Hypha node. See the [module docs](self).
///
/// # Panics
///
/// When time goes backwards between inputs.
pub struct Node<P> {
    config: Config<P>,
    follows: Follows,
    backfill: Backfill<P>,
    replicator: Replicator<P>,
    connectivity: Connectivity<P>,
    collections: BTreeMap<CollectionId, String>,
    replicators: BTreeMap<P, hypha_store::Replicator>,
    head_sync: HeadSync<P>,
    /// Catch-up (push) sessions in flight, by target.
    catching_up: BTreeMap<P, BTreeSet<head_sync::SessionId>>,
    /// Targets whose catch-up marker is being cleared.
    clearing: BTreeSet<P>,
    /// Targets asked to be caught up while a catch-up of theirs was in flight: caught up again
    /// when it ends, since it may have read their state before the latest commits.
    recatch: BTreeSet<P>,
    /// The hot-document generation last persisted.
    hot_saved: u64,
    next_anti_entropy: Option<Instant>,
    persists: BTreeMap<PersistToken, Purpose<P>>,
    /// Blocks whose ingest is outstanding (a parent among them is not an unknown parent).
    ingesting: BTreeMap<Cid, usize>,
    /// Orphans admitted to the pending set: their sender and when.
    orphans: BTreeMap<Cid, (P, Instant)>,
    /// The same, oldest first, for eviction; entries released early are skipped.
    orphan_queue: VecDeque<(Instant, Cid)>,
    /// Orphans admitted per sender.
    orphans_by_peer: BTreeMap<P, usize>,
    inbound: BTreeMap<(P, InboundId), InboundPush>,
    fetches: BTreeMap<RequestId, Fetch<P>>,
    /// Fetches waiting for a place, oldest first, and the heads they name in all.
    waiting: VecDeque<Waiting<P>>,
    waiting_heads: usize,
    next_token: u64,
    commands: VecDeque<Command<P>>,
    events: VecDeque<Event<P>>,
    stats: Stats,
    clock: Monotonic,
}

impl<P: Peer> Node<P> {
    /// A coordinator; `seed` seeds every core's randomness.
    pub fn new(config: Config<P>, seed: u64) -> Node<P> {
        let follows = Follows::new(config.namespace.clone(), config.hot_docs);
        Node {
            follows,
            backfill: Backfill::new(config.backfill.clone()),
            replicator: Replicator::new(config.replicator.clone()),
            connectivity: Connectivity::new(config.connectivity.clone(), seed),
            head_sync: {
                let mut core = HeadSync::new(config.head_sync.clone(), seed.rotate_left(17));
                core.set_allowed_sources(config.replicator.allowed_sources().cloned());
                core
            },
            config,
            collections: BTreeMap::new(),
            replicators: BTreeMap::new(),
            catching_up: BTreeMap::new(),
            clearing: BTreeSet::new(),
            recatch: BTreeSet::new(),
            hot_saved: 0,
            next_anti_entropy: None,
            persists: BTreeMap::new(),
            ingesting: BTreeMap::new(),
            orphans: BTreeMap::new(),
            orphan_queue: VecDeque::new(),
            orphans_by_peer: BTreeMap::new(),
            inbound: BTreeMap::new(),
            fetches: BTreeMap::new(),
            waiting: VecDeque::new(),
            waiting_heads: 0,
            next_token: 0,
            commands: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            clock: Monotonic::default(),
        }
    }

    /// Loads what the store remembers — schema, subscriptions, replicators, peers — joins the
    /// topics and wants the peers. Call once, before any other input.
    pub fn start(&mut self, store: &Store, now: Instant) {
        self.advance(now);
        self.reload_collections(store, now);
        if let Some(subs) = self.read(store.subscriptions()) {
            let mut changes = Vec::new();
            for c in subs.collections {
                self.follows.add_collection(c, &mut changes);
            }
            for d in subs.documents {
                for c in self.document_collections(store, &d) {
                    self.follows.add_document(d, c, &mut changes);
                }
            }
            self.apply_topic_changes(changes, now);
        }
        // The hot documents of the last run, least recently used first, so their order holds.
        if let Some(hot) = self.read(store.hot_documents()) {
            let mut changes = Vec::new();
            for (doc, collection) in hot {
                self.follows.touch(doc, collection, &mut changes);
            }
            self.apply_topic_changes(changes, now);
            self.hot_saved = self.follows.hot().generation();
        }
        for (peer, addresses) in self.config.peers.clone() {
            self.connectivity
                .want(peer, addresses, Reason::Configured, now);
        }
        if let Some(replicators) = self.read(store.replicators()) {
            for (key, r) in replicators {
                let Some(peer) = P::from_key(&key) else {
                    continue;
                };
                self.connectivity
                    .want(peer, r.addresses.clone(), Reason::Replicator, now);
                if self.fault_drop_outbox_on_restart() {
                    self.drop_outbox(&key, store);
                }
                self.replicators.insert(peer, r);
            }
        }
        self.next_anti_entropy = Some(now + self.config.anti_entropy);
        if let Some(peers) = self.read(store.peers()) {
            for (key, record) in peers {
                if let Some(peer) = P::from_key(&key) {
                    self.connectivity
                        .want(peer, record.addresses, Reason::Remembered, now);
                }
            }
        }
        self.process(store, now);
    }

    /// Queues a local mutation (a write, schema, subscription, replicator…) for persisting;
    /// its result comes as [`Event::Persisted`] with the returned token, and the node reacts
    /// to it (publishes a write, joins a topic, pushes to a new replicator…).
    pub fn submit(&mut self, mutation: Mutation, now: Instant) -> PersistToken {
        self.advance(now);
        self.persist(mutation.clone(), Purpose::Api(mutation))
    }

    /// Follows the collections named `names`: all of them, or — if one is unknown — none.
    /// An empty list is a no-op.
    ///
    /// # Errors
    /// [`FollowError::UnknownCollection`] naming the first unknown collection.
    pub fn follow_collections(
        &mut self,
        names: &[&str],
        store: &Store,
        now: Instant,
    ) -> Result<Vec<PersistToken>, FollowError> {
        self.advance(now);
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            match store.collection(name)? {
                Some(c) => ids.push(c.id()),
                None => return Err(FollowError::UnknownCollection((*name).to_owned())),
            }
        }
        let sub = |id| Mutation::Subscribe(Subscription::Collection(id));
        Ok(ids
            .into_iter()
            .map(|id| self.submit(sub(id), now))
            .collect())
    }

    /// Follows single documents (they need not be held here yet: their history arrives with
    /// their next update).
    pub fn follow_documents(&mut self, docs: &[DocId], now: Instant) -> Vec<PersistToken> {
        let sub = |d| Mutation::Subscribe(Subscription::Document(d));
        docs.iter().map(|d| self.submit(sub(*d), now)).collect()
    }

    /// Fetches the named collections once from every connected peer, without following them
    /// (`p2p collection sync`). Returns the sessions started.
    ///
    /// # Errors
    /// [`FollowError::UnknownCollection`] naming the first unknown collection; nothing starts.
    pub fn sync_collections(
        &mut self,
        names: &[&str],
        store: &Store,
        now: Instant,
    ) -> Result<usize, FollowError> {
        self.advance(now);
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            match store.collection(name)? {
                Some(c) => ids.push(c.id()),
                None => return Err(FollowError::UnknownCollection((*name).to_owned())),
            }
        }
        let mut started = 0;
        for peer in self.connected_peers() {
            started += usize::from(self.head_sync.pull(peer, &ids, store, now).is_some());
        }
        self.process(store, now);
        Ok(started)
    }

    /// Fetches the named documents once from every connected peer, without following them
    /// (`p2p document sync`). Returns the sessions started.
    pub fn sync_documents(&mut self, docs: &[DocId], store: &Store, now: Instant) -> usize {
        self.advance(now);
        let mut started = 0;
        for peer in self.connected_peers() {
            started += usize::from(self.head_sync.pull_documents(peer, docs, now).is_some());
        }
        self.process(store, now);
        started
    }

    /// The head-exchange core's counters.
    pub fn head_sync_stats(&self) -> head_sync::Stats {
        self.head_sync.stats()
    }

    /// Marks `doc` used by a local read, so it becomes (or stays) a hot document.
    pub fn touch(&mut self, doc: DocId, collection: CollectionId, now: Instant) {
        self.advance(now);
        let mut changes = Vec::new();
        if self.follows.touch(doc, collection, &mut changes) {
            // A document that becomes hot again is resynced from the connected peers.
            for peer in self.connected_peers() {
                self.head_sync.pull_documents(peer, &[doc], now);
            }
        }
        self.apply_topic_changes(changes, now);
    }

    /// The result of a [`Command::Persist`], once it reached the command's stage (or failed).
    pub fn handle_persisted(
        &mut self,
        token: PersistToken,
        result: Result<Committed, CommitError>,
        store: &Store,
        now: Instant,
    ) {
        self.advance(now);
        let Some(purpose) = self.persists.remove(&token) else {
            return;
        };
        match purpose {
            Purpose::Api(mutation) => {
                self.events.push_back(Event::Persisted {
                    token,
                    result: result.clone(),
                });
                if let Ok(committed) = result {
                    self.on_local(mutation, committed, store, now);
                }
            }
            Purpose::Ingest { from, via, block } => {
                if let Some(n) = self.ingesting.get_mut(&block.cid()) {
                    *n -= 1;
                    if *n == 0 {
                        self.ingesting.remove(&block.cid());
                    }
                }
                self.on_ingested(from, via, &block, result, store, now);
            }
            Purpose::Outbox { peer } => self.pump(peer, store, now),
            Purpose::CatchUp { peer } => {
                self.clearing.remove(&peer);
                self.catch_up(peer, store, now);
            }
            Purpose::AckPush { peer, id } => {
                // Unless the push went with its connection (or a new push took its id).
                let held = self.inbound.get(&(peer, id)).and_then(|p| p.barrier);
                if held == Some(token) {
                    self.inbound.remove(&(peer, id));
                    let status = match result {
                        Ok(_) => replicator::Status::Durable,
                        Err(error) => {
                            self.events.push_back(Event::PersistFailed { error });
                            replicator::Status::Busy
                        }
                    };
                    self.replicator.respond(peer, id, status, now);
                }
            }
            Purpose::Quiet => {}
        }
        self.process(store, now);
    }

    /// A connection to `peer` is up, reached at `addresses` over `path`.
    pub fn handle_connected(
        &mut self,
        peer: P,
        addresses: Vec<Address>,
        path: Path<P>,
        inbound: bool,
        store: &Store,
        now: Instant,
    ) {
        self.advance(now);
        self.connectivity.handle_connected(peer, path, inbound, now);
        self.remember(peer, addresses, now);
        self.replicator.handle_connected(peer, now);
        self.sync_with(peer, store, now);
        self.process(store, now);
    }

    /// `peer` says it listens on `addresses` (libp2p's identify): remember them, so a restart
    /// dials it again even when it was the one that dialed (its connection's remote address is
    /// an ephemeral port). Replaces what was remembered; nothing is stored for an empty list.
    pub fn remember_peer(&mut self, peer: P, addresses: Vec<Address>, store: &Store, now: Instant) {
        self.advance(now);
        self.remember(peer, addresses, now);
        self.process(store, now);
    }

    /// Wants `peer` as remembered and persists its addresses.
    fn remember(&mut self, peer: P, addresses: Vec<Address>, now: Instant) {
        if addresses.is_empty() {
            return;
        }
        // Remember every peer, inbound ones too, so a restart reconnects by itself.
        self.connectivity
            .want(peer, addresses.clone(), Reason::Remembered, now);
        let record = PeerRecord {
            addresses,
            last_seen: 0,
        };
        self.persist(
            Mutation::RememberPeer {
                peer: peer.to_key(),
                record,
            },
            Purpose::Quiet,
        );
    }

    /// The last connection to `peer` closed.
    pub fn handle_disconnected(&mut self, peer: P, store: &Store, now: Instant) {
        self.advance(now);
        self.connectivity.handle_disconnected(peer, now);
        self.replicator.handle_disconnected(peer, now);
        self.backfill.handle_disconnected(peer, now);
        self.head_sync.handle_disconnected(peer, now);
        self.recatch.remove(&peer);
        self.inbound.retain(|(p, _), _| *p != peer);
        self.process(store, now);
    }

    /// A dial to `peer` failed.
    pub fn handle_dial_failed(&mut self, peer: P, store: &Store, now: Instant) {
        self.advance(now);
        self.connectivity.handle_dial_failed(peer, now);
        if self.replicators.contains_key(&peer) {
            self.replicator.handle_unreachable(peer, now);
        }
        self.process(store, now);
    }

    /// A frame (without its length prefix) from `peer` on `protocol`.
    pub fn handle_frame(
        &mut self,
        peer: P,
        protocol: Protocol,
        frame: &[u8],
        store: &Store,
        now: Instant,
    ) {
        self.advance(now);
        match protocol {
            Protocol::Backfill => self.backfill.handle_frame(peer, frame, store, now),
            Protocol::Replicator => self.replicator.handle_frame(peer, frame, now),
            Protocol::HeadSync => self.head_sync.handle_frame(peer, frame, store, now),
        }
        self.process(store, now);
    }

    /// A pubsub message on `topic`, forwarded by `from`. Returns what gossipsub should do
    /// with it.
    pub fn handle_pubsub(
        &mut self,
        from: P,
        topic: &str,
        data: &[u8],
        store: &Store,
        now: Instant,
    ) -> Verdict {
        self.advance(now);
        self.stats.pubsub_received += 1;
        self.stats.pubsub_bytes += data.len() as u64;
        let ns = &self.config.namespace;
        let update = Update::decode(data).and_then(|u| {
            // An update belongs on its collection's topic or its document's shard topic; one
            // anywhere else is spam aimed at that topic's subscribers.
            let ours = topic == pubsub::collection_topic(ns, &u.collection)
                || topic == pubsub::document_topic(ns, &u.collection, &u.doc_id);
            if ours {
                Ok(u)
            } else {
                Err(pubsub::Invalid::WrongTopic)
            }
        });
        let update = match update {
            Ok(u) => u,
            Err(e) => {
                self.misbehaved(from, Violation::Pubsub(e));
                self.process(store, now);
                return Verdict::Reject;
            }
        };
        if !self.config.passive {
            return Verdict::Ignore;
        }
        if self.follows_doc(&update.collection, &update.doc_id) {
            self.stats.pubsub_useful += 1;
            self.receive_update(from, update, store, now);
        }
        self.process(store, now);
        Verdict::Accept
    }

    /// Connectivity facts the driver learns: reachability, relays, providers, hole punches.
    /// Hands `input` to the connectivity core.
    pub fn handle_connectivity(
        &mut self,
        input: impl FnOnce(&mut Connectivity<P>, Instant),
        store: &Store,
        now: Instant,
    ) {
        self.advance(now);
        input(&mut self.connectivity, now);
        self.process(store, now);
    }

    /// Timers: call at [`poll_timeout`](Node::poll_timeout). Idempotent; early calls do
    /// nothing.
    pub fn handle_timeout(&mut self, store: &Store, now: Instant) {
        self.advance(now);
        self.backfill.handle_timeout(now);
        self.replicator.handle_timeout(now);
        self.connectivity.handle_timeout(now);
        self.head_sync.handle_timeout(now);
        self.evict_orphans(now);
        if self.next_anti_entropy.is_some_and(|t| t <= now) {
            self.anti_entropy(store, now);
        }
        self.process(store, now);
    }

    /// The next command for the driver.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command<P>> {
        self.commands.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Node::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.backfill.poll_timeout(),
            self.replicator.poll_timeout(),
            self.connectivity.poll_timeout(),
            self.head_sync.poll_timeout(),
            self.next_anti_entropy,
            self.orphan_queue
                .front()
                .and_then(|(at, _)| at.checked_add(self.config.orphan_ttl)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What the node follows, and the topics it joined.
    pub fn follows(&self) -> &Follows {
        &self.follows
    }

    /// The connectivity core (connected peers, paths, stats).
    pub fn connectivity(&self) -> &Connectivity<P> {
        &self.connectivity
    }

    /// Whether nothing is in flight: no persist awaiting its result, no backfill request, no
    /// push awaiting its ack, no received push unanswered, no head exchange under way.
    pub fn is_idle(&self) -> bool {
        self.persists.is_empty()
            && self.fetches.is_empty()
            && self.backfill.in_flight() == 0
            && self.inbound.is_empty()
            && self.head_sync.in_flight() == 0
            && self
                .replicators
                .keys()
                .all(|p| self.replicator.in_flight(p).next().is_none())
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The current length of every queue and map an input can grow.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            persists: self.persists.len(),
            fetches: self.fetches.len(),
            waiting_fetches: self.waiting.len(),
            inbound: self.inbound.len(),
            backfill_in_flight: self.backfill.in_flight(),
            head_sync_in_flight: self.head_sync.in_flight(),
            queued: self.commands.len() + self.events.len(),
        }
    }

    /// The replicator core's counters.
    pub fn replicator_stats(&self) -> replicator::Stats {
        self.replicator.stats()
    }

    // ---- reactions -------------------------------------------------------------------------

    fn on_local(&mut self, mutation: Mutation, committed: Committed, store: &Store, now: Instant) {
        match (mutation, committed) {
            (_, Committed::Local { block, outcome }) => {
                let heads = match outcome {
                    Outcome::Applied { heads, .. } => heads,
                    _ => vec![block.cid()],
                };
                let (doc, collection) = (block.doc_id(), block.block().delta.collection);
                let mut changes = Vec::new();
                self.follows.touch(doc, collection, &mut changes);
                self.apply_topic_changes(changes, now);
                self.publish(&block, heads.clone(), now);
                self.events.push_back(Event::Changed {
                    doc,
                    collection,
                    heads,
                });
                self.pump_covering(collection, doc, store, now);
            }
            (Mutation::AddSchema { .. }, _) => self.reload_collections(store, now),
            (Mutation::Subscribe(sub), _) => {
                let mut changes = Vec::new();
                match sub {
                    Subscription::Collection(c) => {
                        self.follows.add_collection(c, &mut changes);
                        // Subscribing brings the collection's existing documents.
                        for peer in self.connected_peers() {
                            self.head_sync.pull(peer, &[c], store, now);
                        }
                    }
                    Subscription::Document(d) => {
                        for c in self.document_collections(store, &d) {
                            self.follows.add_document(d, c, &mut changes);
                        }
                        for peer in self.connected_peers() {
                            self.head_sync.pull_documents(peer, &[d], now);
                        }
                    }
                }
                self.apply_topic_changes(changes, now);
            }
            (Mutation::Unsubscribe(sub), _) => {
                let mut changes = Vec::new();
                match sub {
                    Subscription::Collection(c) => {
                        self.follows.remove_collection(&c, &mut changes);
                    }
                    Subscription::Document(d) => self.follows.remove_document(&d, &mut changes),
                }
                self.apply_topic_changes(changes, now);
            }
            (Mutation::SetReplicator { peer, replicator }, _) => {
                let Some(peer) = P::from_key(&peer) else {
                    return;
                };
                let addresses = replicator.addresses.clone();
                self.replicators.insert(peer, replicator);
                self.connectivity
                    .want(peer, addresses, Reason::Replicator, now);
                self.pump(peer, store, now);
                self.catch_up(peer, store, now);
            }
            (Mutation::DeleteReplicator { peer }, _) => {
                let Some(peer) = P::from_key(&peer) else {
                    return;
                };
                if self.fault_ignore_scope() {
                    return;
                }
                self.replicators.remove(&peer);
                self.replicator.forget(&peer);
                self.connectivity.unwant(peer, Reason::Replicator, now);
            }
            _ => {}
        }
    }

    fn on_ingested(
        &mut self,
        from: P,
        via: Via<P>,
        block: &VerifiedBlock,
        result: Result<Committed, CommitError>,
        store: &Store,
        now: Instant,
    ) {
        let doc = block.doc_id();
        let mut pending_missing = None;
        match result {
            Ok(Committed::Ingested { outcome }) => match outcome {
                Outcome::Applied { heads, applied, .. } => {
                    for cid in &applied {
                        self.release_orphan(cid);
                    }
                    let collection = block.block().delta.collection;
                    if via != Via::Pubsub {
                        // A block that came by push or backfill and is now a head crosses to
                        // the followers of this node (gossipsub already forwards pubsub ones).
                        for cid in applied.iter().filter(|c| heads.contains(c)) {
                            let b = if *cid == block.cid() {
                                Some(block.clone())
                            } else {
                                self.read(store.block(cid)).flatten()
                            };
                            if let Some(b) = b {
                                self.publish(&b, heads.clone(), now);
                            }
                        }
                    }
                    self.events.push_back(Event::Changed {
                        doc,
                        collection,
                        heads,
                    });
                    self.pump_covering(collection, doc, store, now);
                }
                Outcome::Pending { missing } => pending_missing = Some(missing),
                Outcome::Duplicate => {}
            },
            Ok(_) => {}
            Err(CommitError::Rejected(rejection)) => {
                self.misbehaved(from, Violation::Rejected(rejection));
            }
            Err(error) => self.events.push_back(Event::PersistFailed { error }),
        }
        match via {
            Via::Pubsub => {
                // An orphan's parents are fetched at once or not at all: queued, a flood of
                // orphans would take the queue from the documents this node follows.
                let busy = self.follow_fetches_to(from) >= self.config.max_orphan_fetches_per_peer
                    || !self.has_place(from);
                if let Some(missing) = pending_missing.filter(|_| !busy) {
                    let others = self.other_peers(from);
                    self.fetch(doc, missing, from, others, FetchFor::Follow, store, now);
                }
            }
            Via::Push(peer, id) => {
                if let Some(push) = self.inbound.get_mut(&(peer, id)) {
                    push.outstanding = push.outstanding.saturating_sub(1);
                }
                self.finish_push(peer, id, store, now);
            }
            Via::Backfill(request) => {
                if let Some(fetch) = self.fetches.get_mut(&request) {
                    fetch.outstanding = fetch.outstanding.saturating_sub(1);
                }
                self.finish_fetch(request, store, now);
            }
        }
    }

    fn receive_update(&mut self, from: P, update: Update, store: &Store, now: Instant) {
        if self.read(store.contains(&update.cid)).unwrap_or(true) {
            return;
        }
        match update.block {
            Some(block) => {
                // Over the sender's orphan budget, the block is dropped: fetching it would let
                // the flood take backfill's places instead.
                if self.admit(from, &block, store, now) {
                    self.ingest(from, Via::Pubsub, block);
                }
            }
            None => {
                let wanted = vec![update.cid];
                let others = self.other_peers(from);
                self.fetch(
                    update.doc_id,
                    wanted,
                    from,
                    others,
                    FetchFor::Follow,
                    store,
                    now,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // The facts of one push, as the replicator reports them.
    fn on_push_received(
        &mut self,
        peer: P,
        id: InboundId,
        collection: CollectionId,
        doc: DocId,
        heads: Vec<Cid>,
        blocks: Vec<VerifiedBlock>,
        store: &Store,
        now: Instant,
    ) {
        if !self.collections.contains_key(&collection) {
            self.replicator
                .respond(peer, id, replicator::Status::UnknownCollection, now);
            return;
        }
        let push = InboundPush {
            doc,
            heads,
            outstanding: 0,
            fetch: None,
            fetched: false,
            barrier: None,
        };
        self.inbound.insert((peer, id), push);
        for block in blocks {
            // A block held already (a replay, or a push racing pubsub) is a no-op: no persist.
            if self.read(store.contains(&block.cid())).unwrap_or(false)
                || !self.admit(peer, &block, store, now)
            {
                continue;
            }
            if self.ingest(peer, Via::Push(peer, id), block)
                && let Some(push) = self.inbound.get_mut(&(peer, id))
            {
                push.outstanding += 1;
            }
        }
        if self.fault_ack_before_persist() {
            self.inbound.remove(&(peer, id));
            return self
                .replicator
                .respond(peer, id, replicator::Status::Durable, now);
        }
        self.finish_push(peer, id, store, now);
    }

    /// Answers an inbound push once nothing of it is outstanding: durable when every head is
    /// applied; else backfill once from the source; else missing.
    fn finish_push(&mut self, peer: P, id: InboundId, store: &Store, now: Instant) {
        let Some(push) = self.inbound.get(&(peer, id)) else {
            return;
        };
        if push.outstanding > 0 || push.fetch.is_some() || push.barrier.is_some() {
            return;
        }
        let (doc, heads, fetched) = (push.doc, push.heads.clone(), push.fetched);
        let mut missing = Vec::new();
        for h in &heads {
            match store.is_applied(h) {
                Ok(true) => {}
                Ok(false) => missing.push(*h),
                Err(error) => {
                    self.events.push_back(Event::StoreFailed { error });
                    self.inbound.remove(&(peer, id));
                    return self
                        .replicator
                        .respond(peer, id, replicator::Status::Busy, now);
                }
            }
        }
        if missing.is_empty() {
            // Every head is applied, and visible; some perhaps not yet durable (this push's
            // blocks, or blocks received over pubsub a moment ago): ack behind a barrier.
            let token = self.persist(Mutation::Barrier, Purpose::AckPush { peer, id });
            if let Some(push) = self.inbound.get_mut(&(peer, id)) {
                push.barrier = Some(token);
            }
            return;
        }
        if !fetched {
            let request = self.fetch(
                doc,
                missing.clone(),
                peer,
                Vec::new(),
                FetchFor::Push(peer, id),
                store,
                now,
            );
            if let Some(push) = self.inbound.get_mut(&(peer, id)) {
                push.fetched = true;
                push.fetch = request;
            }
            if request.is_some() {
                return;
            }
        }
        self.inbound.remove(&(peer, id));
        self.replicator
            .respond(peer, id, replicator::Status::Missing(missing), now);
    }

    // ---- backfill --------------------------------------------------------------------------

    /// Asks `peer` (then `others`) for the history of `doc` behind `wanted`.
    #[allow(clippy::too_many_arguments)] // One request's facts.
    fn fetch(
        &mut self,
        doc: DocId,
        wanted: Vec<Cid>,
        peer: P,
        others: Vec<P>,
        purpose: FetchFor<P>,
        store: &Store,
        now: Instant,
    ) -> Option<RequestId> {
        if purpose == FetchFor::Follow {
            let asked = self
                .fetches
                .values()
                .any(|f| f.doc == doc && f.purpose == FetchFor::Follow && f.wanted == wanted);
            if asked
                || self
                    .waiting
                    .iter()
                    .any(|w| w.doc == doc && w.wanted == wanted)
            {
                return None;
            }
            if !self.has_place(peer) {
                self.wait_for_place(Waiting {
                    doc,
                    wanted,
                    peer,
                    others,
                    depth: 0,
                });
                return None;
            }
        }
        let have = self
            .read(store.state(&doc))
            .flatten()
            .map(|s| s.heads)
            .unwrap_or_default();
        let request = self.backfill.fetch(peer, doc, &wanted, &have, now)?;
        self.stats.fetches += 1;
        self.fetches.insert(
            request,
            Fetch {
                doc,
                wanted,
                peer,
                others: others.into(),
                purpose,
                outstanding: 0,
                completed: None,
                depth: 0,
            },
        );
        Some(request)
    }

    /// Fetches for what this node follows that `peer` holds (sent, or persisting what came).
    fn follow_fetches_to(&self, peer: P) -> usize {
        self.fetches
            .values()
            .filter(|f| f.peer == peer && f.purpose == FetchFor::Follow)
            .count()
    }

    /// Whether a fetch for what this node follows may go to `peer` now.
    fn has_place(&self, peer: P) -> bool {
        self.backfill.in_flight() < self.config.backfill.max_in_flight()
            && self.follow_fetches_to(peer) < self.config.max_fetches_per_peer
    }

    /// Queues a fetch until a place frees; dropped when the queue is full (the next head
    /// exchange finds the document again).
    fn wait_for_place(&mut self, waiting: Waiting<P>) {
        let heads = self.waiting_heads + waiting.wanted.len();
        if self.waiting.len() < self.config.max_waiting_fetches
            && heads <= self.config.max_waiting_heads
        {
            self.waiting_heads = heads;
            self.waiting.push_back(waiting);
        }
    }

    /// Sends the waiting fetches that have a place now, oldest first; each is looked at once.
    /// A fetch whose peer is gone goes to the next of its other peers still connected, or is
    /// dropped.
    fn send_waiting(&mut self, store: &Store, now: Instant) {
        for _ in 0..self.waiting.len() {
            if self.backfill.in_flight() >= self.config.backfill.max_in_flight() {
                return;
            }
            let Some(mut w) = self.waiting.pop_front() else {
                return;
            };
            self.waiting_heads -= w.wanted.len();
            if !self.connectivity.is_connected(&w.peer) {
                w.others.retain(|p| self.connectivity.is_connected(p));
                if w.others.is_empty() {
                    continue;
                }
                w.peer = w.others.remove(0);
            }
            // Either sent, or (its peer still busy) queued again at the back.
            let depth = w.depth;
            let sent = self.fetch(
                w.doc,
                w.wanted,
                w.peer,
                w.others,
                FetchFor::Follow,
                store,
                now,
            );
            self.set_depth(sent, depth);
        }
    }

    /// Carries a fetch's depth over to the request that continues it, whether that went out
    /// (`sent`) or waits at the back of the queue.
    fn set_depth(&mut self, sent: Option<RequestId>, depth: u64) {
        match sent {
            Some(request) => {
                if let Some(f) = self.fetches.get_mut(&request) {
                    f.depth = depth;
                }
            }
            None => {
                if let Some(w) = self.waiting.back_mut() {
                    w.depth = w.depth.max(depth);
                }
            }
        }
    }

    fn finish_fetch(&mut self, request: RequestId, store: &Store, now: Instant) {
        let Some(fetch) = self.fetches.get(&request) else {
            return;
        };
        let Some(truncated) = fetch.completed else {
            return;
        };
        if fetch.outstanding > 0 {
            return;
        }
        // invariant: looked up just above.
        let fetch = self.fetches.remove(&request).expect("fetch present");
        let mut next = None;
        if truncated && fetch.depth >= self.config.max_fetch_depth {
            self.misbehaved(
                fetch.peer,
                Violation::Backfill(backfill::Violation::DepthExceeded),
            );
        } else if truncated {
            let waiting = self.waiting.len();
            next = self.fetch(
                fetch.doc,
                fetch.wanted.clone(),
                fetch.peer,
                fetch.others.into(),
                fetch.purpose,
                store,
                now,
            );
            if next.is_some() || self.waiting.len() > waiting {
                self.set_depth(next, fetch.depth);
            }
        }
        match fetch.purpose {
            FetchFor::Follow => {}
            FetchFor::Push(peer, id) => {
                if let Some(push) = self.inbound.get_mut(&(peer, id)) {
                    push.fetch = next;
                }
                self.finish_push(peer, id, store, now);
            }
        }
        // A place freed.
        self.send_waiting(store, now);
    }

    fn on_fetch_failed(&mut self, request: RequestId, store: &Store, now: Instant) {
        let Some(mut fetch) = self.fetches.remove(&request) else {
            return;
        };
        let mut next = None;
        while next.is_none() {
            let Some(peer) = fetch.others.pop_front() else {
                break;
            };
            let others = std::mem::take(&mut fetch.others).into();
            next = self.fetch(
                fetch.doc,
                fetch.wanted.clone(),
                peer,
                others,
                fetch.purpose,
                store,
                now,
            );
        }
        match fetch.purpose {
            FetchFor::Push(peer, id) => {
                if let Some(push) = self.inbound.get_mut(&(peer, id)) {
                    push.fetch = next;
                }
                self.finish_push(peer, id, store, now);
            }
            FetchFor::Follow if next.is_none() => {
                // Nobody connected had the blocks: look for providers of the document's
                // collection, so the next attempt (its next update) has somewhere to go.
                if let Some(collection) = self
                    .read(store.state(&fetch.doc))
                    .flatten()
                    .map(|s| s.collection)
                {
                    let topic = pubsub::collection_topic(&self.config.namespace, &collection);
                    self.connectivity.find_providers(topic.into_bytes(), now);
                }
            }
            FetchFor::Follow => {}
        }
    }

    /// Connected peers other than `peer`, a few, to ask for blocks `peer` did not have.
    fn other_peers(&self, peer: P) -> Vec<P> {
        self.connectivity
            .connected()
            .filter(|p| **p != peer)
            .take(MAX_FETCH_CANDIDATES)
            .copied()
            .collect()
    }

    // ---- replicator source -----------------------------------------------------------------

    /// Pushes to every replicator whose scope covers `doc`.
    fn pump_covering(&mut self, collection: CollectionId, doc: DocId, store: &Store, now: Instant) {
        let all = self.fault_ignore_scope();
        let peers: Vec<P> = self
            .replicators
            .iter()
            .filter(|(_, r)| all || r.covers(&collection, &doc))
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            if all {
                self.push_doc(peer, doc, store, now);
            } else {
                self.pump(peer, store, now);
            }
        }
    }

    /// Pushes what `peer` is owed, as far as its in-flight window allows.
    fn pump(&mut self, peer: P, store: &Store, now: Instant) {
        if !self.replicators.contains_key(&peer) || !self.replicator.can_push(&peer) {
            return;
        }
        let key = peer.to_key();
        let Some(outbox) = self.read(store.outbox(&key, self.config.outbox_batch)) else {
            return;
        };
        if outbox.catch_up && !self.clearing.contains(&peer) {
            // The catch-up starts once the marker is cleared (durably): from then on every
            // commit is owed again, and the catch-up reads the state after the clear, so no
            // commit falls between the two.
            self.clearing.insert(peer);
            self.persist(
                Mutation::ClearCatchUp { peer: key },
                Purpose::CatchUp { peer },
            );
        }
        let in_flight: BTreeSet<DocId> = self.replicator.in_flight(&peer).collect();
        for doc in outbox.documents {
            if !self.replicator.can_push(&peer) {
                break;
            }
            if !in_flight.contains(&doc) && !self.push_doc(peer, doc, store, now) {
                break;
            }
        }
    }

    /// Brings replicator `peer` up to date by head exchange, one way, over its whole scope:
    /// when it is set, when it (re)connects, when its outbox overflowed, and every
    /// anti-entropy round.
    fn catch_up(&mut self, peer: P, store: &Store, now: Instant) {
        if !self.connectivity.is_connected(&peer) {
            return;
        }
        if self.catching_up.get(&peer).is_some_and(|s| !s.is_empty()) {
            // The session in flight may have read the peer's state before what made this
            // call (a ClearCatchUp that just landed): run once more when it ends.
            self.recatch.insert(peer);
            return;
        }
        let Some(scope) = self.replicators.get(&peer) else {
            return;
        };
        let collections: Vec<CollectionId> = scope.collections.iter().copied().collect();
        let documents: Vec<DocId> = scope.documents.iter().copied().collect();
        let sessions = [
            self.head_sync.push(peer, &collections, store, now),
            self.head_sync.push_documents(peer, &documents, store, now),
        ];
        let entry = self.catching_up.entry(peer).or_default();
        entry.extend(sessions.into_iter().flatten());
    }

    /// Head exchange with a peer that just connected: pull what this node follows, catch the
    /// peer up if it is a replicator target.
    fn sync_with(&mut self, peer: P, store: &Store, now: Instant) {
        let collections: Vec<CollectionId> = self
            .follows
            .collections()
            .iter()
            .filter(|c| self.collections.contains_key(c))
            .copied()
            .collect();
        self.head_sync.pull(peer, &collections, store, now);
        let documents: Vec<DocId> = self
            .follows
            .documents()
            .chain(self.follows.hot().iter().map(|(d, _)| d))
            .copied()
            .collect();
        self.head_sync.pull_documents(peer, &documents, now);
        self.catch_up(peer, store, now);
    }

    /// One anti-entropy round: head exchange with every connected peer.
    fn anti_entropy(&mut self, store: &Store, now: Instant) {
        self.stats.anti_entropy_rounds += 1;
        self.next_anti_entropy = Some(now + self.config.anti_entropy);
        // Remember the hot documents at most once a round, so a restart follows them again.
        let generation = self.follows.hot().generation();
        if generation != self.hot_saved {
            self.hot_saved = generation;
            let documents = self.follows.hot().iter().map(|(d, c)| (*d, *c)).collect();
            self.persist(Mutation::SetHotDocuments { documents }, Purpose::Quiet);
        }
        // Nothing should be left waiting with a place free; if it is, this sends it.
        self.send_waiting(store, now);
        for peer in self.connected_peers() {
            if !self.head_sync.has_session_with(&peer) {
                self.sync_with(peer, store, now);
            }
        }
    }

    fn connected_peers(&self) -> Vec<P> {
        self.connectivity.connected().copied().collect()
    }

    /// Pushes `doc`'s current heads with their blocks to `peer`. Returns false when the push
    /// could not be made.
    fn push_doc(&mut self, peer: P, doc: DocId, store: &Store, now: Instant) -> bool {
        let Some(state) = self.read(store.state(&doc)).flatten() else {
            // Owed but unknown here (a document that only ever had pending blocks): nothing to
            // push; drop the entry.
            let ack = Mutation::AckOutbox {
                peer: peer.to_key(),
                doc_id: doc,
                heads: Vec::new(),
            };
            self.persist(ack, Purpose::Quiet);
            return true;
        };
        let mut blocks = Vec::with_capacity(state.heads.len());
        for head in &state.heads {
            match self.read(store.block_bytes(head)) {
                Some(Some(bytes)) => blocks.push(bytes),
                _ => return false,
            }
        }
        let name = self
            .collections
            .get(&state.collection)
            .cloned()
            .unwrap_or_default();
        self.replicator
            .push(peer, &name, state.collection, doc, state.heads, blocks, now)
            .is_ok()
    }

    // ---- plumbing --------------------------------------------------------------------------

    /// Moves the cores' outputs into commands and reacts to their events until nothing moves.
    fn process(&mut self, store: &Store, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.backfill.poll_transmit() {
                self.transmit(t.peer, Protocol::Backfill, t.frame);
            }
            while let Some(t) = self.replicator.poll_transmit() {
                self.transmit(t.peer, Protocol::Replicator, t.frame);
            }
            while let Some(t) = self.head_sync.poll_transmit() {
                self.transmit(t.peer, Protocol::HeadSync, t.frame);
            }
            while let Some(c) = self.connectivity.poll_command() {
                self.commands.push_back(Command::Connect(c));
            }
            while let Some(e) = self.backfill.poll_event() {
                progressed = true;
                self.on_backfill(e, store, now);
            }
            while let Some(e) = self.replicator.poll_event() {
                progressed = true;
                self.on_replicator(e, store, now);
            }
            while let Some(e) = self.head_sync.poll_event() {
                progressed = true;
                self.on_head_sync(e, store, now);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_backfill(&mut self, event: backfill::Event<P>, store: &Store, now: Instant) {
        match event {
            backfill::Event::Received { request, block } => {
                let Some(f) = self.fetches.get_mut(&request) else {
                    return;
                };
                f.depth += 1;
                let peer = f.peer;
                if !self.admit(peer, &block, store, now) {
                    return;
                }
                if self.ingest(peer, Via::Backfill(request), block)
                    && let Some(f) = self.fetches.get_mut(&request)
                {
                    f.outstanding += 1;
                }
            }
            backfill::Event::Completed {
                request, truncated, ..
            } => {
                if let Some(f) = self.fetches.get_mut(&request) {
                    f.completed = Some(truncated);
                }
                self.finish_fetch(request, store, now);
            }
            backfill::Event::Failed { request, .. } => {
                self.on_fetch_failed(request, store, now);
                self.send_waiting(store, now);
            }
            backfill::Event::PeerMisbehaved { peer, violation } => {
                self.misbehaved(peer, Violation::Backfill(violation));
            }
        }
    }

    fn on_head_sync(&mut self, event: head_sync::Event<P>, store: &Store, now: Instant) {
        match event {
            head_sync::Event::Differs {
                peer, doc, heads, ..
            } => self.fetch_heads(peer, doc, heads, store, now),
            head_sync::Event::Offered {
                peer,
                collection,
                doc,
                heads,
            } => {
                // A replicator source catching this node up: the same rules as its pushes.
                if self.collections.contains_key(&collection) && self.replicator.allows(&peer) {
                    self.fetch_heads(peer, doc, heads, store, now);
                }
            }
            head_sync::Event::PeerMisbehaved { peer, violation } => {
                self.misbehaved(peer, Violation::HeadSync(violation));
            }
            head_sync::Event::Refused {
                peer,
                collection,
                reason,
            } => {
                if self.replicators.contains_key(&peer) {
                    self.events.push_back(Event::CatchUpRefused {
                        peer,
                        collection,
                        reason,
                    });
                }
            }
            head_sync::Event::Completed { session, peer, .. }
            | head_sync::Event::Failed { session, peer, .. } => {
                if let Some(sessions) = self.catching_up.get_mut(&peer) {
                    sessions.remove(&session);
                    if sessions.is_empty() {
                        self.catching_up.remove(&peer);
                        if self.recatch.remove(&peer) {
                            self.catch_up(peer, store, now);
                        }
                    }
                }
            }
        }
    }

    /// Backfills `doc` from `peer` up to `heads`, if any of them is not held here.
    fn fetch_heads(&mut self, peer: P, doc: DocId, heads: Vec<Cid>, store: &Store, now: Instant) {
        let missing: Vec<Cid> = heads
            .into_iter()
            // A pending head counts as missing: its ancestors are what is lacking.
            .filter(|h| !self.read(store.is_applied(h)).unwrap_or(true))
            .collect();
        if !missing.is_empty() {
            self.stats.head_sync_docs += 1;
            self.fetch(doc, missing, peer, Vec::new(), FetchFor::Follow, store, now);
        }
    }

    fn on_replicator(&mut self, event: replicator::Event<P>, store: &Store, now: Instant) {
        match event {
            replicator::Event::Acked {
                peer, doc, heads, ..
            } => {
                let ack = Mutation::AckOutbox {
                    peer: peer.to_key(),
                    doc_id: doc,
                    heads,
                };
                self.persist(ack, Purpose::Outbox { peer });
                self.events.push_back(Event::Replicated { peer, doc });
                self.pump(peer, store, now);
            }
            replicator::Event::Failed {
                peer, doc, reason, ..
            } => {
                let reason = ReplicationError::Failed(reason);
                self.events
                    .push_back(Event::ReplicationFailed { peer, doc, reason });
            }
            replicator::Event::Refused {
                peer, doc, reason, ..
            } => {
                let reason = ReplicationError::Refused(reason);
                self.events
                    .push_back(Event::ReplicationFailed { peer, doc, reason });
            }
            replicator::Event::Ready { peer } => {
                if self.connectivity.is_connected(&peer) {
                    self.pump(peer, store, now);
                }
            }
            replicator::Event::Received {
                peer,
                id,
                collection,
                doc,
                heads,
                blocks,
                ..
            } => self.on_push_received(peer, id, collection, doc, heads, blocks, store, now),
            replicator::Event::PeerMisbehaved { peer, violation } => {
                self.misbehaved(peer, Violation::Replicator(violation));
            }
        }
    }

    /// Persists a received block. Returns false when it was dropped (too many persists
    /// outstanding).
    fn ingest(&mut self, from: P, via: Via<P>, block: VerifiedBlock) -> bool {
        if self.persists.len() >= self.config.max_persists {
            self.stats.dropped += 1;
            return false;
        }
        self.stats.ingested += 1;
        *self.ingesting.entry(block.cid()).or_default() += 1;
        let mutation = Mutation::Ingest {
            block: block.clone(),
        };
        self.persist(mutation, Purpose::Ingest { from, via, block });
        true
    }

    /// The `drop_outbox_on_restart` fault: acknowledges every entry of `peer`'s outbox at the
    /// document's current heads, as if the target had them.
    fn drop_outbox(&mut self, peer: &PeerKey, store: &Store) {
        let Some(outbox) = self.read(store.outbox(peer, usize::MAX)) else {
            return;
        };
        for doc_id in outbox.documents {
            let heads = self
                .read(store.state(&doc_id))
                .flatten()
                .map(|s| s.heads)
                .unwrap_or_default();
            let mutation = Mutation::AckOutbox {
                peer: peer.clone(),
                doc_id,
                heads,
            };
            self.persist(mutation, Purpose::Quiet);
        }
    }

    /// Whether a received block may go to the store: at once when every parent is applied
    /// here or being ingested; else (an orphan, which waits in the pending set) only within its
    /// sender's orphan budget and the total.
    fn admit(&mut self, from: P, block: &VerifiedBlock, store: &Store, now: Instant) -> bool {
        let mut orphan = false;
        for parent in &block.block().heads {
            if !self.ingesting.contains_key(parent)
                && !self.read(store.is_applied(parent)).unwrap_or(false)
            {
                orphan = true;
                break;
            }
        }
        if !orphan || self.orphans.contains_key(&block.cid()) {
            return true;
        }
        let mine = self.orphans_by_peer.get(&from).copied().unwrap_or(0);
        if mine >= self.config.max_orphans_per_peer || self.orphans.len() >= self.config.max_orphans
        {
            self.stats.orphans_refused += 1;
            return false;
        }
        self.orphans.insert(block.cid(), (from, now));
        self.orphan_queue.push_back((now, block.cid()));
        *self.orphans_by_peer.entry(from).or_default() += 1;
        if self.orphan_queue.len() > 2 * self.orphans.len() + 64 {
            // Entries released early accumulate; keep the queue within twice the live ones.
            let live = &self.orphans;
            self.orphan_queue
                .retain(|(at, c)| live.get(c).is_some_and(|(_, t)| t == at));
        }
        true
    }

    /// Frees an orphan's place in its sender's budget (it applied, or it is evicted).
    fn release_orphan(&mut self, cid: &Cid) -> bool {
        let Some((peer, _)) = self.orphans.remove(cid) else {
            return false;
        };
        if let Some(n) = self.orphans_by_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.orphans_by_peer.remove(&peer);
            }
        }
        true
    }

    /// Evicts the orphans that waited `orphan_ttl` for their parents from the pending set.
    fn evict_orphans(&mut self, now: Instant) {
        let mut evicted = Vec::new();
        while let Some(&(at, cid)) = self.orphan_queue.front() {
            if at
                .checked_add(self.config.orphan_ttl)
                .is_none_or(|due| due > now)
            {
                break;
            }
            self.orphan_queue.pop_front();
            let live = self.orphans.get(&cid).is_some_and(|(_, t)| *t == at);
            if live && self.release_orphan(&cid) {
                evicted.push(cid);
            }
        }
        if !evicted.is_empty() {
            self.stats.orphans_evicted += evicted.len() as u64;
            self.persist(Mutation::DropPending { cids: evicted }, Purpose::Quiet);
        }
    }

    fn persist(&mut self, mutation: Mutation, purpose: Purpose<P>) -> PersistToken {
        let token = PersistToken(self.next_token);
        self.next_token += 1;
        let until = match purpose {
            Purpose::Ingest { .. } => Stage::Visible,
            _ => Stage::Durable,
        };
        self.persists.insert(token, purpose);
        self.commands.push_back(Command::Persist {
            token,
            mutation,
            until,
        });
        token
    }

    fn publish(&mut self, block: &VerifiedBlock, heads: Vec<Cid>, now: Instant) {
        if !self.config.passive {
            return;
        }
        let update = Update::new(block, heads, self.config.max_inline_bytes);
        let data = update.encode();
        let ns = &self.config.namespace;
        let topics = [
            pubsub::collection_topic(ns, &update.collection),
            pubsub::document_topic(ns, &update.collection, &update.doc_id),
        ];
        // Peers following the collection but not yet connected are found through the DHT
        // (the connectivity core rate-limits lookups per key).
        self.connectivity
            .find_providers(topics[0].clone().into_bytes(), now);
        for topic in topics {
            self.stats.published += 1;
            self.commands.push_back(Command::Publish {
                topic,
                id: update.cid,
                data: data.clone(),
            });
        }
    }

    fn apply_topic_changes(&mut self, changes: Vec<TopicChange>, now: Instant) {
        if !self.config.passive {
            return;
        }
        for change in changes {
            match change {
                TopicChange::Subscribe(topic) => {
                    self.connectivity.follow(topic.clone().into_bytes(), now);
                    self.commands.push_back(Command::Subscribe { topic });
                }
                TopicChange::Unsubscribe(topic) => {
                    self.connectivity.unfollow(topic.as_bytes(), now);
                    self.commands.push_back(Command::Unsubscribe { topic });
                }
            }
        }
    }

    fn transmit(&mut self, peer: P, protocol: Protocol, frame: Vec<u8>) {
        self.commands.push_back(Command::Transmit {
            peer,
            protocol,
            frame,
        });
    }

    fn misbehaved(&mut self, peer: P, violation: Violation) {
        self.stats.violations += 1;
        self.events
            .push_back(Event::PeerMisbehaved { peer, violation });
    }

    fn follows_doc(&self, collection: &CollectionId, doc: &DocId) -> bool {
        self.fault_ignore_follow() || self.follows.follows(collection, doc)
    }

    /// The collections `doc` may be in: its own if it is held here, else every local one.
    fn document_collections(&mut self, store: &Store, doc: &DocId) -> Vec<CollectionId> {
        match self.read(store.state(doc)).flatten() {
            Some(state) => vec![state.collection],
            None => self.collections.keys().copied().collect(),
        }
    }

    fn reload_collections(&mut self, store: &Store, now: Instant) {
        if let Some(collections) = self.read(store.collections()) {
            self.collections = collections
                .into_iter()
                .map(|c| (c.id(), c.name().to_owned()))
                .collect();
        }
        if self.fault_ignore_follow() {
            let mut changes = Vec::new();
            for c in self.collections.keys().copied().collect::<Vec<_>>() {
                self.follows.add_collection(c, &mut changes);
            }
            self.apply_topic_changes(changes, now);
        }
    }

    /// A store read; a failure becomes [`Event::StoreFailed`].
    fn read<T>(&mut self, result: Result<T, ReadError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(error) => {
                self.events.push_back(Event::StoreFailed { error });
                None
            }
        }
    }

    #[cfg(feature = "test-util")]
    fn fault_ignore_follow(&self) -> bool {
        self.config.faults.follow_everything
    }

    #[cfg(not(feature = "test-util"))]
    fn fault_ignore_follow(&self) -> bool {
        false
    }

    #[cfg(feature = "test-util")]
    fn fault_ack_before_persist(&self) -> bool {
        self.config.faults.ack_before_persist
    }

    #[cfg(not(feature = "test-util"))]
    fn fault_ack_before_persist(&self) -> bool {
        false
    }

    #[cfg(feature = "test-util")]
    fn fault_drop_outbox_on_restart(&self) -> bool {
        self.config.faults.drop_outbox_on_restart
    }

    #[cfg(not(feature = "test-util"))]
    fn fault_drop_outbox_on_restart(&self) -> bool {
        false
    }

    #[cfg(feature = "test-util")]
    fn fault_ignore_scope(&self) -> bool {
        self.config.faults.ignore_replicator_scope
    }

    #[cfg(not(feature = "test-util"))]
    fn fault_ignore_scope(&self) -> bool {
        false
    }

    fn advance(&mut self, now: Instant) {
        self.clock.advance(now);
    }
}
