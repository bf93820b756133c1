//! The head-exchange state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::Hasher;
use std::time::{Duration, Instant};

use hypha_crdt::sync_index::{Iblt, ItemHash, Root, SKETCH_CELLS};
use hypha_crdt::{Cid, CollectionId, DocId};
use siphasher::sip::SipHasher24;

use crate::clock::Monotonic;
use crate::generated::hypha::head_sync::v1 as pb;
use crate::rng::SplitMix64;
use crate::wire::{self, DEFAULT_MAX_FRAME_BYTES, DecodeError, decode_message, encode_frame};

/// Read access to the local sync index and document heads.
pub trait SyncSource {
    /// The root of `collection`'s index.
    fn root(&self, collection: &CollectionId) -> Root;
    /// The maintained sketch of `collection` at `level`, if that level is maintained.
    fn sketch(&self, collection: &CollectionId, level: usize) -> Option<Iblt>;
    /// Up to `limit` items of `collection` with docIDs after `after`, in order.
    fn items(
        &self,
        collection: &CollectionId,
        after: Option<DocId>,
        limit: usize,
    ) -> Vec<(DocId, ItemHash)>;
    /// The item of `doc` in `collection`.
    fn item(&self, collection: &CollectionId, doc: &DocId) -> Option<ItemHash>;
    /// The collection and heads of `doc`, if held.
    fn heads(&self, doc: &DocId) -> Option<(CollectionId, Vec<Cid>)>;
    /// The collections of the local schema (a responder without a collection takes nothing
    /// and has nothing of it).
    fn collections(&self) -> Vec<CollectionId>;
}

impl SyncSource for hypha_store::Store {
    fn root(&self, collection: &CollectionId) -> Root {
        self.sync_root(collection)
    }

    fn sketch(&self, collection: &CollectionId, level: usize) -> Option<Iblt> {
        self.sync_sketch(collection, level)
    }

    fn items(
        &self,
        collection: &CollectionId,
        after: Option<DocId>,
        limit: usize,
    ) -> Vec<(DocId, ItemHash)> {
        self.sync_items(collection, after, limit)
    }

    fn item(&self, collection: &CollectionId, doc: &DocId) -> Option<ItemHash> {
        self.sync_item(collection, doc)
    }

    fn heads(&self, doc: &DocId) -> Option<(CollectionId, Vec<Cid>)> {
        // A read failure reads as "not held": the peer asks again next round.
        self.state(doc)
            .ok()
            .flatten()
            .map(|s| (s.collection, s.heads))
    }

    fn collections(&self) -> Vec<CollectionId> {
        hypha_store::Store::collections(self)
            .map(|cs| cs.iter().map(hypha_crdt::Collection::id).collect())
            .unwrap_or_default()
    }
}

/// A session this node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "head-sync-{}", self.0)
    }
}

/// Which way a session moves documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bring the initiator what the responder has.
    Pull,
    /// Offer the responder what the initiator has.
    Push,
}

/// Limits and timings; every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    max_sessions: usize,
    max_collections: usize,
    max_docs_per_frame: usize,
    max_wanted: usize,
    list_page: usize,
    max_listed: u64,
    session_timeout: Duration,
    max_frame_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_sessions: 64,
            max_collections: 256,
            max_docs_per_frame: 4096,
            max_wanted: 100_000,
            list_page: 32_768,
            max_listed: 10_000_000,
            session_timeout: Duration::from_secs(30),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl Config {
    /// Sessions this node initiates at once. Default: 64.
    pub fn with_max_sessions(mut self, n: usize) -> Config {
        self.max_sessions = n.max(1);
        self
    }

    /// Collections per session. Default: 256.
    pub fn with_max_collections(mut self, n: usize) -> Config {
        self.max_collections = n.max(1);
        self
    }

    /// Documents per Want or Heads frame. Default: 4,096.
    pub fn with_max_docs_per_frame(mut self, n: usize) -> Config {
        self.max_docs_per_frame = n.max(1);
        self
    }

    /// Documents wanted per session. Default: 100,000.
    pub fn with_max_wanted(mut self, n: usize) -> Config {
        self.max_wanted = n.max(1);
        self
    }

    /// Documents per listing page. Default: 32,768 (at most what fits a frame).
    pub fn with_list_page(mut self, n: usize) -> Config {
        self.list_page = n.clamp(1, 40_000);
        self
    }

    /// Documents listed per session. Default: 10,000,000.
    pub fn with_max_listed(mut self, n: u64) -> Config {
        self.max_listed = n;
        self
    }

    /// How long a session may last. Default: 30 s.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Config {
        self.session_timeout = timeout;
        self
    }

    /// Sessions this node initiates at once.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Collections one session may cover.
    pub fn max_collections(&self) -> usize {
        self.max_collections
    }

    /// Documents per heads frame.
    pub fn max_docs_per_frame(&self) -> usize {
        self.max_docs_per_frame
    }

    /// Documents one session may ask heads for.
    pub fn max_wanted(&self) -> usize {
        self.max_wanted
    }

    /// Documents one session may list in all.
    pub fn max_listed(&self) -> u64 {
        self.max_listed
    }

    /// How long a session may last.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The largest frame sent or accepted.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

/// A frame for the driver to send to `peer` on the head-sync protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The peer.
    pub peer: P,
    /// The frame, length-prefixed.
    pub frame: Vec<u8>,
}

/// What one session cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes sent (frames, prefixes included).
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Documents found to differ.
    pub differing: u64,
    /// Collections settled by equal roots.
    pub equal: u64,
    /// Collections that needed the exact listing.
    pub listed: u64,
}

/// Why a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer in time.
    #[error("the session timed out")]
    TimedOut,
    /// The peer disconnected.
    #[error("the peer disconnected")]
    Disconnected,
    /// The peer broke the protocol.
    #[error("the peer misbehaved")]
    Misbehaved,
}

/// A protocol violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame that does not decode, or ids that are not ids.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// More collections, documents or items than the bounds allow.
    #[error("a request beyond the protocol's bounds")]
    OverBounds,
    /// A sketch that does not parse or has the wrong size for its level.
    #[error("a malformed sketch")]
    BadSketch,
    /// A reply for no session in flight, or for a collection or range not asked about.
    #[error("a reply for no session, collection or range in flight")]
    Unexpected,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// A session ended; every differing document was reported.
    Completed {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: P,
        /// What it cost.
        stats: SessionStats,
    },
    /// The peer holds `doc` at `heads`, which differ from ours (pull): backfill what is
    /// missing from it.
    Differs {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: P,
        /// The document's collection.
        collection: CollectionId,
        /// The document.
        doc: DocId,
        /// The peer's heads.
        heads: Vec<Cid>,
    },
    /// A session failed.
    Failed {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: P,
        /// Why.
        reason: Failure,
    },
    /// The peer offers `doc` at `heads` (push): backfill it from the peer if it is welcome.
    Offered {
        /// The peer.
        peer: P,
        /// The document's collection.
        collection: CollectionId,
        /// The document.
        doc: DocId,
        /// The peer's heads.
        heads: Vec<Cid>,
    },
    /// A peer broke the protocol.
    PeerMisbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        violation: Violation,
    },
    /// The peer refused a push session for `collection`: it lacks the collection, or does not
    /// accept pushes from this node.
    Refused {
        /// The peer.
        peer: P,
        /// The collection.
        collection: CollectionId,
        /// Why.
        reason: crate::replicator::Refusal,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Sessions started.
    pub sessions: u64,
    /// Sessions completed.
    pub completed: u64,
    /// Sessions failed.
    pub failed: u64,
    /// Collections settled by equal roots.
    pub equal_roots: u64,
    /// Sketches that decoded.
    pub sketches_decoded: u64,
    /// Sketches that did not (a bigger level or a listing followed).
    pub sketches_undecodable: u64,
    /// Decoded sketches whose result did not check out.
    pub sketch_mismatches: u64,
    /// Collections listed exactly.
    pub listings: u64,
    /// Requests served as responder.
    pub served: u64,
}

/// Listing ranges per collection: docIDs split by their first byte.
const LIST_RANGES: u8 = 8;

/// Heads per document accepted in a Heads frame.
const MAX_HEADS: usize = hypha_crdt::block::MAX_LINKS;

#[derive(Debug)]
enum Phase {
    Sketch {
        level: usize,
    },
    /// Per open range, the last docID compared so far.
    Listing {
        open: BTreeMap<u8, Option<DocId>>,
        listed: u64,
    },
    Done,
}

/// A document a pull asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    /// The collection it was found in (`None` for a document named on demand).
    collection: Option<CollectionId>,
    /// The tag a decoded sketch promised for the peer's version (`None` from a listing).
    promised: Option<u64>,
}

struct Session<P> {
    peer: P,
    mode: Mode,
    deadline: Instant,
    key: (u64, u64),
    collections: BTreeMap<CollectionId, Phase>,
    /// Pull: documents wanted, with their collection when known and the tag a sketch promised.
    wanted: BTreeMap<DocId, Wanted>,
    stats: SessionStats,
}

/// Finds differing documents with peers, and answers their sessions.
///
/// # Driving it
///
/// Commands [`pull`](HeadSync::pull), [`push`](HeadSync::push),
/// [`pull_documents`](HeadSync::pull_documents) and
/// [`push_documents`](HeadSync::push_documents) start sessions; inputs are
/// [`handle_frame`](HeadSync::handle_frame), [`handle_disconnected`](HeadSync::handle_disconnected)
/// and [`handle_timeout`](HeadSync::handle_timeout); after each, drain
/// [`poll_transmit`](HeadSync::poll_transmit) and [`poll_event`](HeadSync::poll_event) and re-arm
/// the timer at [`poll_timeout`](HeadSync::poll_timeout).
///
/// # Panics
///
/// When time goes backwards between inputs.
pub struct HeadSync<P> {
    config: Config,
    next_id: u64,
    rng: SplitMix64,
    sessions: BTreeMap<SessionId, Session<P>>,
    transmits: VecDeque<Transmit<P>>,
    events: VecDeque<Event<P>>,
    stats: Stats,
    allowed_sources: Option<BTreeSet<P>>,
    clock: Monotonic,
}

impl<P: Copy + Ord + fmt::Debug> HeadSync<P> {
    /// A core with no sessions; `seed` draws the listing keys.
    pub fn new(config: Config, seed: u64) -> HeadSync<P> {
        HeadSync {
            config,
            next_id: 0,
            rng: SplitMix64::new(seed ^ 0x6a09_e667_f3bc_c908),
            sessions: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            allowed_sources: None,
            clock: Monotonic::default(),
        }
    }

    /// Refuses push sessions (offers) from peers not in `sources`, as the replicator's allow
    /// list does for pushes. `None`, the default, accepts any peer.
    pub fn set_allowed_sources(&mut self, sources: Option<BTreeSet<P>>) {
        self.allowed_sources = sources;
    }

    /// Pulls from `peer` what it holds of `collections` and this node does not. `None` when
    /// `max_sessions` are in flight or `collections` is empty.
    pub fn pull(
        &mut self,
        peer: P,
        collections: &[CollectionId],
        source: &impl SyncSource,
        now: Instant,
    ) -> Option<SessionId> {
        self.start(peer, Mode::Pull, collections, source, now)
    }

    /// Offers `peer` what this node holds of `collections` and the peer does not.
    pub fn push(
        &mut self,
        peer: P,
        collections: &[CollectionId],
        source: &impl SyncSource,
        now: Instant,
    ) -> Option<SessionId> {
        self.start(peer, Mode::Push, collections, source, now)
    }

    /// Asks `peer` for the heads of `docs` (an on-demand sync, or followed documents).
    pub fn pull_documents(&mut self, peer: P, docs: &[DocId], now: Instant) -> Option<SessionId> {
        self.advance(now);
        if docs.is_empty() || self.sessions.len() >= self.config.max_sessions {
            return None;
        }
        let (id, mut session) = self.new_session(peer, Mode::Pull, now);
        for doc in docs.iter().take(self.config.max_wanted) {
            // The collection is unknown until the peer answers; the tag is not promised.
            session.wanted.insert(
                *doc,
                Wanted {
                    collection: None,
                    promised: None,
                },
            );
        }
        let docs: Vec<DocId> = session.wanted.keys().copied().collect();
        self.sessions.insert(id, session);
        self.send_want(id, &docs);
        Some(id)
    }

    /// Offers `peer` the heads of `docs` held here (document-scoped replicators).
    pub fn push_documents(
        &mut self,
        peer: P,
        docs: &[DocId],
        source: &impl SyncSource,
        now: Instant,
    ) -> Option<SessionId> {
        self.advance(now);
        if docs.is_empty() || self.sessions.len() >= self.config.max_sessions {
            return None;
        }
        let (id, session) = self.new_session(peer, Mode::Push, now);
        self.sessions.insert(id, session);
        let offers: Vec<pb::DocHeads> = docs
            .iter()
            .filter_map(|d| source.heads(d).map(|(c, h)| doc_heads(d, &c, &h)))
            .collect();
        self.send_heads(id, peer, offers, true);
        self.finish(id);
        Some(id)
    }

    /// A frame (without its length prefix) from `peer`.
    pub fn handle_frame(&mut self, peer: P, frame: &[u8], source: &impl SyncSource, now: Instant) {
        self.advance(now);
        let len = frame.len() as u64 + 4;
        let frame = match decode_message::<pb::Frame>(frame) {
            Ok(f) => f,
            Err(e) => return self.misbehaved(peer, None, Violation::Malformed(e)),
        };
        use pb::mod_Frame::OneOfkind as K;
        let session = match &frame.kind {
            K::sketches(m) => Some(m.session),
            K::heads(m) if !m.offer => Some(m.session),
            K::list_page(m) => Some(m.session),
            _ => None,
        };
        if let Some(s) = session.map(SessionId)
            && let Some(state) = self.sessions.get_mut(&s)
            && state.peer == peer
        {
            state.stats.frames_received += 1;
            state.stats.bytes_received += len;
            // The timeout is one of liveness: a long listing that progresses stays alive.
            state.deadline = now + self.config.session_timeout;
        }
        let result = match frame.kind {
            K::hello(m) => self.serve_hello(peer, m, source),
            K::sketch_request(m) => self.serve_sketch_request(peer, m, source),
            K::want(m) => self.serve_want(peer, m, source),
            K::list_request(m) => self.serve_list(peer, m, source),
            K::sketches(m) => self.on_sketches(peer, m, source),
            K::heads(m) => self.on_heads(peer, m, source),
            K::list_page(m) => self.on_page(peer, m, source),
            K::None => Err(Violation::Malformed(DecodeError("an empty frame".into()))),
        };
        if let Err(v) = result {
            self.misbehaved(peer, session.map(SessionId), v);
        }
    }

    /// `peer` disconnected: its sessions fail.
    pub fn handle_disconnected(&mut self, peer: P, now: Instant) {
        self.advance(now);
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail(id, Failure::Disconnected);
        }
    }

    /// Fails sessions past their deadline. Idempotent; early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail(id, Failure::TimedOut);
        }
    }

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<P>> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](HeadSync::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions.values().map(|s| s.deadline).min()
    }

    /// Sessions in flight.
    pub fn in_flight(&self) -> usize {
        self.sessions.len()
    }

    /// Whether a session with `peer` is in flight.
    pub fn has_session_with(&self, peer: &P) -> bool {
        self.sessions.values().any(|s| s.peer == *peer)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ---- initiator -------------------------------------------------------------------------

    fn start(
        &mut self,
        peer: P,
        mode: Mode,
        collections: &[CollectionId],
        source: &impl SyncSource,
        now: Instant,
    ) -> Option<SessionId> {
        self.advance(now);
        if collections.is_empty() || self.sessions.len() >= self.config.max_sessions {
            return None;
        }
        let (id, mut session) = self.new_session(peer, mode, now);
        let mut roots = Vec::new();
        for c in collections.iter().take(self.config.max_collections) {
            if session
                .collections
                .insert(*c, Phase::Sketch { level: 0 })
                .is_none()
            {
                let root = source.root(c);
                roots.push(pb::CollectionRoot {
                    collection_tag: collection_tag(c),
                    root: root.digest.to_vec(),
                    count: root.count,
                });
            }
        }
        let mode = match mode {
            Mode::Pull => pb::Mode::PULL,
            Mode::Push => pb::Mode::PUSH,
        };
        self.sessions.insert(id, session);
        self.send(
            id,
            peer,
            pb::mod_Frame::OneOfkind::hello(pb::Hello {
                session: id.0,
                mode,
                collections: roots,
            }),
        );
        Some(id)
    }

    fn new_session(&mut self, peer: P, mode: Mode, now: Instant) -> (SessionId, Session<P>) {
        let id = SessionId(self.next_id);
        self.next_id += 1;
        self.stats.sessions += 1;
        let key = (self.rng.next_u64(), self.rng.next_u64());
        let session = Session {
            peer,
            mode,
            deadline: now + self.config.session_timeout,
            key,
            collections: BTreeMap::new(),
            wanted: BTreeMap::new(),
            stats: SessionStats::default(),
        };
        (id, session)
    }

    fn on_sketches(
        &mut self,
        peer: P,
        m: pb::Sketches,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        let id = SessionId(m.session);
        self.session_of(id, peer)?;
        for entry in m.collections {
            let c = self
                .sessions
                .get(&id)
                .and_then(|s| {
                    s.collections
                        .keys()
                        .find(|c| collection_tag(c) == entry.collection_tag)
                })
                .copied()
                .ok_or(Violation::Unexpected)?;
            let level = match self.sessions.get(&id).and_then(|s| s.collections.get(&c)) {
                Some(Phase::Sketch { level }) => *level,
                _ => return Err(Violation::Unexpected),
            };
            match entry.status {
                pb::SketchStatus::EQUAL => {
                    self.stats.equal_roots += 1;
                    self.set_phase(id, c, Phase::Done);
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.stats.equal += 1;
                    }
                }
                pb::SketchStatus::SKETCH => {
                    let got = usize::try_from(entry.level).map_err(|_| Violation::BadSketch)?;
                    if got < level || got >= SKETCH_CELLS.len() {
                        return Err(Violation::BadSketch);
                    }
                    let cells = SKETCH_CELLS[got];
                    let theirs =
                        Iblt::from_bytes(&entry.iblt, cells).map_err(|_| Violation::BadSketch)?;
                    if theirs.cells() != cells {
                        return Err(Violation::BadSketch);
                    }
                    self.decode(id, c, got, &theirs, source);
                }
                pb::SketchStatus::TOO_DIFFERENT => self.start_listing(id, c),
                pb::SketchStatus::UNKNOWN_COLLECTION | pb::SketchStatus::UNAUTHORIZED => {
                    self.set_phase(id, c, Phase::Done);
                    let reason = match entry.status {
                        pb::SketchStatus::UNAUTHORIZED => crate::replicator::Refusal::Unauthorized,
                        _ => crate::replicator::Refusal::UnknownCollection,
                    };
                    if let Some(s) = self.sessions.get(&id) {
                        let peer = s.peer;
                        self.events.push_back(Event::Refused {
                            peer,
                            collection: c,
                            reason,
                        });
                    }
                }
                pb::SketchStatus::SKETCH_STATUS_UNSPECIFIED => {
                    return Err(Violation::Malformed(DecodeError("no sketch status".into())));
                }
            }
        }
        self.maybe_finish(id);
        Ok(())
    }

    /// Subtracts the peer's sketch from ours and acts on what it peels.
    fn decode(
        &mut self,
        id: SessionId,
        c: CollectionId,
        level: usize,
        theirs: &Iblt,
        source: &impl SyncSource,
    ) {
        let mine = source
            .sketch(&c, level)
            .unwrap_or_else(|| build_sketch(source, &c, level));
        let diff = mine.subtract(theirs).and_then(|d| d.decode().ok());
        let Some(diff) = diff else {
            self.stats.sketches_undecodable += 1;
            if level + 1 < SKETCH_CELLS.len() {
                self.set_phase(id, c, Phase::Sketch { level: level + 1 });
                let Some(peer) = self.sessions.get(&id).map(|s| s.peer) else {
                    return;
                };
                let kind = pb::mod_Frame::OneOfkind::sketch_request(pb::SketchRequest {
                    session: id.0,
                    collection: c.0.to_bytes(),
                    level: level as u32 + 1,
                });
                self.send(id, peer, kind);
            } else {
                self.start_listing(id, c);
            }
            return;
        };
        self.stats.sketches_decoded += 1;
        // Our side of the difference must be ours exactly; anything else means the sketch
        // peeled something false.
        let ours_ok = diff
            .ours
            .iter()
            .all(|(doc, tag)| source.item(&c, doc).is_some_and(|i| i.tag() == *tag));
        if !ours_ok {
            self.stats.sketch_mismatches += 1;
            return self.start_listing(id, c);
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.collections.insert(c, Phase::Done);
        match session.mode {
            Mode::Pull => {
                let mut docs = Vec::new();
                for (doc, tag) in diff.theirs {
                    if session.wanted.len() >= self.config.max_wanted {
                        break;
                    }
                    let wanted = Wanted {
                        collection: Some(c),
                        promised: Some(tag),
                    };
                    session.wanted.insert(doc, wanted);
                    docs.push(doc);
                }
                session.stats.differing += docs.len() as u64;
                self.send_want(id, &docs);
            }
            Mode::Push => {
                let peer = session.peer;
                let offers: Vec<pb::DocHeads> = diff
                    .ours
                    .iter()
                    .filter_map(|(d, _)| source.heads(d).map(|(c, h)| doc_heads(d, &c, &h)))
                    .collect();
                session.stats.differing += offers.len() as u64;
                self.send_heads(id, peer, offers, false);
            }
        }
    }

    fn on_heads(
        &mut self,
        peer: P,
        m: pb::Heads,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        if m.offer {
            return self.on_offer(peer, m, source);
        }
        let id = SessionId(m.session);
        self.session_of(id, peer)?;
        if m.docs.len() > self.config.max_docs_per_frame {
            return Err(Violation::OverBounds);
        }
        let mut relist = BTreeSet::new();
        let known = tags(source);
        for entry in m.docs {
            let (doc, tag, heads) = parse_doc_heads(&entry)?;
            let Some(session) = self.sessions.get_mut(&id) else {
                return Ok(());
            };
            let Some(wanted) = session.wanted.remove(&doc) else {
                return Err(Violation::Unexpected);
            };
            if let (Some(c), Some(promised)) = (wanted.collection, wanted.promised) {
                let actual = (!heads.is_empty() && collection_tag(&c) == tag)
                    .then(|| ItemHash::of(&doc, &heads).tag());
                if actual != Some(promised) {
                    // The sketch promised a version the peer does not hold (a false peel, or
                    // the document changed since): check the collection exactly.
                    self.stats.sketch_mismatches += 1;
                    relist.insert(c);
                }
            }
            if heads.is_empty() {
                continue;
            }
            let collection = match wanted.collection {
                Some(c) if collection_tag(&c) == tag => c,
                // Named on demand: the peer's tag says which of our collections it is in; a
                // collection this node does not have has nothing to merge it into.
                _ => match known.get(&tag) {
                    Some(c) => *c,
                    None => continue,
                },
            };
            let ours = source.item(&collection, &doc);
            if ours == Some(ItemHash::of(&doc, &heads)) {
                continue;
            }
            self.events.push_back(Event::Differs {
                session: id,
                peer,
                collection,
                doc,
                heads,
            });
        }
        for c in relist {
            let listed = matches!(
                self.sessions.get(&id).and_then(|s| s.collections.get(&c)),
                Some(Phase::Listing { .. })
            );
            if !listed {
                self.start_listing(id, c);
            }
        }
        self.maybe_finish(id);
        Ok(())
    }

    fn on_offer(
        &mut self,
        peer: P,
        m: pb::Heads,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        if m.docs.len() > self.config.max_docs_per_frame {
            return Err(Violation::OverBounds);
        }
        if self
            .allowed_sources
            .as_ref()
            .is_some_and(|a| !a.contains(&peer))
        {
            return Ok(());
        }
        let known = tags(source);
        for entry in m.docs {
            let (doc, tag, heads) = parse_doc_heads(&entry)?;
            // Offers of collections this node does not have are not taken.
            let Some(&collection) = known.get(&tag) else {
                continue;
            };
            if heads.is_empty() {
                continue;
            }
            self.events.push_back(Event::Offered {
                peer,
                collection,
                doc,
                heads,
            });
        }
        Ok(())
    }

    fn start_listing(&mut self, id: SessionId, c: CollectionId) {
        self.stats.listings += 1;
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.stats.listed += 1;
        let key = session.key;
        let peer = session.peer;
        let open: BTreeMap<u8, Option<DocId>> =
            (0..LIST_RANGES).map(|r| (r, range_bounds(r).0)).collect();
        session
            .collections
            .insert(c, Phase::Listing { open, listed: 0 });
        for range in 0..LIST_RANGES {
            let (after, before) = range_bounds(range);
            self.send_list_request(id, peer, c, key, after, before);
        }
    }

    fn send_list_request(
        &mut self,
        id: SessionId,
        peer: P,
        c: CollectionId,
        key: (u64, u64),
        after: Option<DocId>,
        before: Option<DocId>,
    ) {
        let mut k = key.0.to_be_bytes().to_vec();
        k.extend_from_slice(&key.1.to_be_bytes());
        let kind = pb::mod_Frame::OneOfkind::list_request(pb::ListRequest {
            session: id.0,
            collection: c.0.to_bytes(),
            key: k,
            after: after.map(|d| d.to_bytes().to_vec()).unwrap_or_default(),
            before: before.map(|d| d.to_bytes().to_vec()).unwrap_or_default(),
            limit: self.config.list_page as u32,
        });
        self.send(id, peer, kind);
    }

    fn on_page(
        &mut self,
        peer: P,
        m: pb::ListPage,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        let id = SessionId(m.session);
        self.session_of(id, peer)?;
        let c = wire::collection_id(&m.collection)?;
        let before = optional_doc(&m.before)?;
        let range = match before {
            None => LIST_RANGES - 1,
            Some(b) => (0..LIST_RANGES)
                .find(|r| range_bounds(*r).1 == Some(b))
                .ok_or(Violation::Unexpected)?,
        };
        let (key, mode, cursor) = match self.sessions.get(&id) {
            Some(s) => match s.collections.get(&c) {
                Some(Phase::Listing { open, .. }) => match open.get(&range) {
                    Some(cursor) => (s.key, s.mode, *cursor),
                    None => return Err(Violation::Unexpected),
                },
                _ => return Err(Violation::Unexpected),
            },
            None => return Err(Violation::Unexpected),
        };
        if !m.items.len().is_multiple_of(24) || m.items.len() / 24 > self.config.list_page {
            return Err(Violation::OverBounds);
        }
        let theirs: Vec<(DocId, u64)> = m.items.chunks_exact(24).map(list_item).collect();
        let hi = range_bounds(range).1;
        let out_of_range =
            |d: &DocId| cursor.is_some_and(|l| *d <= l) || hi.is_some_and(|h| *d >= h);
        if theirs.windows(2).any(|w| w[0].0 >= w[1].0)
            || theirs.iter().any(|(d, _)| out_of_range(d))
        {
            let e = DecodeError("a listing page out of order or out of its range".into());
            return Err(Violation::Malformed(e));
        }
        let last_doc = theirs.last().map(|(d, _)| *d);
        // Their documents whose version differs from ours (or that we lack).
        let differ: Vec<DocId> = theirs
            .iter()
            .filter(|(doc, tag)| source.item(&c, doc).map(|i| keyed(key, &i)) != Some(*tag))
            .map(|(d, _)| *d)
            .collect();
        let mut docs = Vec::new();
        match mode {
            Mode::Pull => docs = differ,
            Mode::Push => {
                // Ours in the span this page covers that the page lacks, and ours that differ.
                let span_end = if m.last { hi } else { last_doc };
                let listed: BTreeSet<DocId> = theirs.iter().map(|(d, _)| *d).collect();
                let mut after = cursor;
                'walk: loop {
                    let batch = source.items(&c, after, 4096);
                    let Some((last, _)) = batch.last() else { break };
                    after = Some(*last);
                    for (doc, _) in batch {
                        let past = match (span_end, m.last) {
                            (Some(e), true) => doc >= e,
                            (Some(e), false) => doc > e,
                            (None, _) => false,
                        };
                        if past {
                            break 'walk;
                        }
                        if !listed.contains(&doc) {
                            docs.push(doc);
                        }
                    }
                }
                docs.extend(differ.into_iter().filter(|d| source.item(&c, d).is_some()));
                docs.sort();
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        let Some(Phase::Listing { open, listed }) = session.collections.get_mut(&c) else {
            return Ok(());
        };
        *listed += theirs.len() as u64;
        let over = *listed > self.config.max_listed;
        let next = match last_doc {
            Some(last) if !m.last && !over => {
                open.insert(range, Some(last));
                Some(last)
            }
            _ => {
                open.remove(&range);
                None
            }
        };
        if open.is_empty() {
            session.collections.insert(c, Phase::Done);
        }
        let peer = session.peer;
        match mode {
            Mode::Pull => {
                let mut wanted = Vec::new();
                for doc in docs {
                    if session.wanted.len() >= self.config.max_wanted {
                        break;
                    }
                    let entry = Wanted {
                        collection: Some(c),
                        promised: None,
                    };
                    if session.wanted.insert(doc, entry).is_none() {
                        wanted.push(doc);
                    }
                }
                session.stats.differing += wanted.len() as u64;
                self.send_want(id, &wanted);
            }
            Mode::Push => {
                session.stats.differing += docs.len() as u64;
                let offers: Vec<pb::DocHeads> = docs
                    .iter()
                    .filter_map(|d| source.heads(d).map(|(c, h)| doc_heads(d, &c, &h)))
                    .collect();
                self.send_heads(id, peer, offers, false);
            }
        }
        if let Some(after) = next {
            self.send_list_request(id, peer, c, key, Some(after), hi);
        }
        self.maybe_finish(id);
        Ok(())
    }

    fn maybe_finish(&mut self, id: SessionId) {
        let done = self.sessions.get(&id).is_some_and(|s| {
            s.wanted.is_empty() && s.collections.values().all(|p| matches!(p, Phase::Done))
        });
        if done {
            self.finish(id);
        }
    }

    fn finish(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.remove(&id) {
            self.stats.completed += 1;
            self.events.push_back(Event::Completed {
                session: id,
                peer: s.peer,
                stats: s.stats,
            });
        }
    }

    fn fail(&mut self, id: SessionId, reason: Failure) {
        if let Some(s) = self.sessions.remove(&id) {
            self.stats.failed += 1;
            self.events.push_back(Event::Failed {
                session: id,
                peer: s.peer,
                reason,
            });
        }
    }

    fn send_want(&mut self, id: SessionId, docs: &[DocId]) {
        let Some(peer) = self.sessions.get(&id).map(|s| s.peer) else {
            return;
        };
        for chunk in docs.chunks(self.config.max_docs_per_frame) {
            let kind = pb::mod_Frame::OneOfkind::want(pb::Want {
                session: id.0,
                docs: chunk.iter().map(|d| d.to_bytes().to_vec()).collect(),
            });
            self.send(id, peer, kind);
        }
    }

    /// Sends offers (push) of `docs` to `peer`.
    fn send_heads(&mut self, id: SessionId, peer: P, docs: Vec<pb::DocHeads>, done: bool) {
        if docs.is_empty() && !done {
            return;
        }
        let max = self.config.max_docs_per_frame;
        let mut chunks: Vec<Vec<pb::DocHeads>> = Vec::new();
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            chunks.push(docs.by_ref().take(max).collect());
        }
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let kind = pb::mod_Frame::OneOfkind::heads(pb::Heads {
                session: id.0,
                docs: chunk,
                done: done && i + 1 == n,
                offer: true,
            });
            self.send(id, peer, kind);
        }
    }

    // ---- responder -------------------------------------------------------------------------

    fn serve_hello(
        &mut self,
        peer: P,
        m: pb::Hello,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        if m.collections.len() > self.config.max_collections {
            return Err(Violation::OverBounds);
        }
        if m.mode == pb::Mode::MODE_UNSPECIFIED {
            return Err(Violation::Malformed(DecodeError("no mode".into())));
        }
        self.stats.served += 1;
        let refused = m.mode == pb::Mode::PUSH
            && self
                .allowed_sources
                .as_ref()
                .is_some_and(|a| !a.contains(&peer));
        let mut out = Vec::with_capacity(m.collections.len());
        let known: BTreeMap<u64, CollectionId> = source
            .collections()
            .into_iter()
            .map(|c| (collection_tag(&c), c))
            .collect();
        for entry in m.collections {
            if entry.root.len() != 32 {
                return Err(Violation::Malformed(DecodeError(
                    "a root that is not 32 bytes".into(),
                )));
            }
            if refused {
                out.push(pb::CollectionSketch {
                    collection_tag: entry.collection_tag,
                    status: pb::SketchStatus::UNAUTHORIZED,
                    ..Default::default()
                });
                continue;
            }
            let Some(&c) = known.get(&entry.collection_tag) else {
                out.push(pb::CollectionSketch {
                    collection_tag: entry.collection_tag,
                    status: pb::SketchStatus::UNKNOWN_COLLECTION,
                    ..Default::default()
                });
                continue;
            };
            let mine = source.root(&c);
            if mine.digest[..] == entry.root[..] && mine.count == entry.count {
                out.push(pb::CollectionSketch {
                    collection_tag: entry.collection_tag,
                    status: pb::SketchStatus::EQUAL,
                    ..Default::default()
                });
                continue;
            }
            let gap = mine.count.abs_diff(entry.count);
            match (0..SKETCH_CELLS.len()).find(|l| SKETCH_CELLS[*l] as u64 >= gap.saturating_mul(3))
            {
                Some(level) => out.push(sketch_entry(source, &c, level)),
                None => out.push(pb::CollectionSketch {
                    collection_tag: entry.collection_tag,
                    status: pb::SketchStatus::TOO_DIFFERENT,
                    ..Default::default()
                }),
            }
        }
        let kind = pb::mod_Frame::OneOfkind::sketches(pb::Sketches {
            session: m.session,
            collections: out,
        });
        self.reply(peer, kind);
        Ok(())
    }

    fn serve_sketch_request(
        &mut self,
        peer: P,
        m: pb::SketchRequest,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        let c = wire::collection_id(&m.collection)?;
        let level = usize::try_from(m.level).map_err(|_| Violation::OverBounds)?;
        if level >= SKETCH_CELLS.len() {
            return Err(Violation::OverBounds);
        }
        self.stats.served += 1;
        let kind = pb::mod_Frame::OneOfkind::sketches(pb::Sketches {
            session: m.session,
            collections: vec![sketch_entry(source, &c, level)],
        });
        self.reply(peer, kind);
        Ok(())
    }

    fn serve_want(
        &mut self,
        peer: P,
        m: pb::Want,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        if m.docs.len() > self.config.max_docs_per_frame {
            return Err(Violation::OverBounds);
        }
        self.stats.served += 1;
        let mut docs = Vec::with_capacity(m.docs.len());
        for raw in &m.docs {
            let doc = wire::doc_id(raw)?;
            let entry = match source.heads(&doc) {
                Some((c, heads)) => doc_heads(&doc, &c, &heads),
                None => pb::DocHeads {
                    doc: raw.clone(),
                    ..Default::default()
                },
            };
            docs.push(entry);
        }
        let kind = pb::mod_Frame::OneOfkind::heads(pb::Heads {
            session: m.session,
            docs,
            done: false,
            offer: false,
        });
        self.reply(peer, kind);
        Ok(())
    }

    fn serve_list(
        &mut self,
        peer: P,
        m: pb::ListRequest,
        source: &impl SyncSource,
    ) -> Result<(), Violation> {
        let c = wire::collection_id(&m.collection)?;
        let limit = usize::try_from(m.limit).map_err(|_| Violation::OverBounds)?;
        if limit == 0 || limit > self.config.list_page || m.key.len() != 16 {
            return Err(Violation::OverBounds);
        }
        let mut k = [0u8; 16];
        k.copy_from_slice(&m.key);
        let (k0, k1) = k.split_at(8);
        let key = (
            u64::from_be_bytes(k0.try_into().unwrap_or_default()),
            u64::from_be_bytes(k1.try_into().unwrap_or_default()),
        );
        let after = optional_doc(&m.after)?;
        let before = optional_doc(&m.before)?;
        self.stats.served += 1;
        let items = source.items(&c, after, limit + 1);
        let mut out = Vec::with_capacity(limit.min(items.len()) * 24);
        let mut last = true;
        for (i, (doc, item)) in items.iter().enumerate() {
            if before.is_some_and(|b| *doc >= b) {
                break;
            }
            if i == limit {
                last = false;
                break;
            }
            out.extend_from_slice(&doc.to_bytes());
            out.extend_from_slice(&keyed(key, item).to_be_bytes());
        }
        let kind = pb::mod_Frame::OneOfkind::list_page(pb::ListPage {
            session: m.session,
            collection: m.collection,
            before: m.before,
            items: out,
            last,
        });
        self.reply(peer, kind);
        Ok(())
    }

    // ---- plumbing --------------------------------------------------------------------------

    fn session_of(&self, id: SessionId, peer: P) -> Result<(), Violation> {
        match self.sessions.get(&id) {
            Some(s) if s.peer == peer => Ok(()),
            _ => Err(Violation::Unexpected),
        }
    }

    fn set_phase(&mut self, id: SessionId, c: CollectionId, phase: Phase) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.collections.insert(c, phase);
        }
    }

    fn send(&mut self, id: SessionId, peer: P, kind: pb::mod_Frame::OneOfkind) {
        let frame = pb::Frame { kind };
        // invariant: every message is bounded by the config far below the frame cap (a page
        // of `list_page` ≤ 40,000 items is under 1 MiB).
        let frame = encode_frame(&frame, self.config.max_frame_bytes).expect("frames fit");
        if let Some(s) = self.sessions.get_mut(&id) {
            s.stats.frames_sent += 1;
            s.stats.bytes_sent += frame.len() as u64;
        }
        self.transmits.push_back(Transmit { peer, frame });
    }

    fn reply(&mut self, peer: P, kind: pb::mod_Frame::OneOfkind) {
        let frame = pb::Frame { kind };
        // invariant: as in `send`.
        let frame = encode_frame(&frame, self.config.max_frame_bytes).expect("frames fit");
        self.transmits.push_back(Transmit { peer, frame });
    }

    fn misbehaved(&mut self, peer: P, session: Option<SessionId>, violation: Violation) {
        if let Some(id) = session
            && self.sessions.get(&id).is_some_and(|s| s.peer == peer)
        {
            self.fail(id, Failure::Misbehaved);
        }
        self.events
            .push_back(Event::PeerMisbehaved { peer, violation });
    }

    fn advance(&mut self, now: Instant) {
        self.clock.advance(now);
    }
}

/// A listing item: 16 bytes of docID, 8 of keyed tag.
fn list_item(b: &[u8]) -> (DocId, u64) {
    let mut d = [0u8; 16];
    d.copy_from_slice(&b[..16]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[16..24]);
    (DocId::from_bytes(d), u64::from_be_bytes(t))
}

/// The keyed 8-byte tag of an item in an exact listing.
fn keyed(key: (u64, u64), item: &ItemHash) -> u64 {
    let mut h = SipHasher24::new_with_keys(key.0, key.1);
    h.write(&item.0);
    h.finish()
}

/// The docID range `range` of a listing: docIDs whose first byte is in
/// `[32 · range, 32 · (range + 1))`, as exclusive bounds.
fn range_bounds(range: u8) -> (Option<DocId>, Option<DocId>) {
    let width = 256 / u16::from(LIST_RANGES);
    let bound = |r: u16| {
        let mut b = [0u8; 16];
        b[0] = u8::try_from(r * width).unwrap_or(u8::MAX);
        DocId::from_bytes(b)
    };
    let after = (range > 0).then(|| {
        // The largest docID below the range: first byte one less, the rest 0xff.
        let mut b = [0xffu8; 16];
        b[0] = u8::try_from(u16::from(range) * width - 1).unwrap_or(u8::MAX);
        DocId::from_bytes(b)
    });
    let before = (range + 1 < LIST_RANGES).then(|| bound(u16::from(range) + 1));
    (after, before)
}

fn build_sketch(source: &impl SyncSource, c: &CollectionId, level: usize) -> Iblt {
    let mut iblt = Iblt::new(SKETCH_CELLS[level]);
    let mut after = None;
    loop {
        let batch = source.items(c, after, 4096);
        let Some((last, _)) = batch.last() else {
            return iblt;
        };
        after = Some(*last);
        for (doc, item) in &batch {
            iblt.insert(doc, item);
        }
    }
}

fn sketch_entry(source: &impl SyncSource, c: &CollectionId, level: usize) -> pb::CollectionSketch {
    let iblt = source
        .sketch(c, level)
        .unwrap_or_else(|| build_sketch(source, c, level));
    pb::CollectionSketch {
        collection_tag: collection_tag(c),
        status: pb::SketchStatus::SKETCH,
        level: level as u32,
        iblt: iblt.to_bytes(),
    }
}

fn doc_heads(doc: &DocId, collection: &CollectionId, heads: &[Cid]) -> pb::DocHeads {
    pb::DocHeads {
        doc: doc.to_bytes().to_vec(),
        collection_tag: collection_tag(collection),
        heads: heads.iter().map(|h| h.to_bytes()).collect(),
    }
}

/// The local collections by tag.
fn tags(source: &impl SyncSource) -> BTreeMap<u64, CollectionId> {
    source
        .collections()
        .into_iter()
        .map(|c| (collection_tag(&c), c))
        .collect()
}

fn parse_doc_heads(entry: &pb::DocHeads) -> Result<(DocId, u64, Vec<Cid>), Violation> {
    let doc = wire::doc_id(&entry.doc)?;
    if entry.heads.len() > MAX_HEADS {
        return Err(Violation::OverBounds);
    }
    let collection = entry.collection_tag;
    let mut heads = wire::cids(&entry.heads)?;
    heads.sort();
    heads.dedup();
    Ok((doc, collection, heads))
}

/// A collection's tag in a Hello: the first 8 bytes of its CID's digest, big-endian.
fn collection_tag(c: &CollectionId) -> u64 {
    let digest = c.0.hash().digest();
    let mut b = [0u8; 8];
    let n = digest.len().min(8);
    b[..n].copy_from_slice(&digest[..n]);
    u64::from_be_bytes(b)
}

fn optional_doc(bytes: &[u8]) -> Result<Option<DocId>, Violation> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        Ok(Some(wire::doc_id(bytes)?))
    }
}
