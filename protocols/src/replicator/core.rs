//! The replicator state machine: source pushes, target verification and acks, retries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use hypha_crdt::{BlockError, Cid, CollectionId, DocId, VerifiedBlock};

use crate::clock::Monotonic;
use crate::generated::hypha::replicator::v1 as pb;
use crate::wire::{self, DEFAULT_MAX_FRAME_BYTES, DecodeError, decode_message, encode_frame};

/// A push made by this node, as a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PushId(pub u64);

impl fmt::Display for PushId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "push-{}", self.0)
    }
}

/// A push received by this node, as a target: the source's own id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// Limits and timings of the replicator; every setter states its default.
#[derive(Debug, Clone)]
pub struct Config<P> {
    retry_intervals: Vec<Duration>,
    push_timeout: Duration,
    max_in_flight: usize,
    allowed_sources: Option<BTreeSet<P>>,
    max_inbound_per_source: usize,
    quota_bytes: u64,
    quota_window: Duration,
    max_sources: usize,
    max_frame_bytes: usize,
}

impl<P: Ord> Default for Config<P> {
    fn default() -> Config<P> {
        Config {
            retry_intervals: (0..7).map(|i| Duration::from_secs(30 << i)).collect(),
            push_timeout: Duration::from_secs(60),
            max_in_flight: 16,
            allowed_sources: None,
            max_inbound_per_source: 16,
            quota_bytes: 64 << 20,
            quota_window: Duration::from_secs(60),
            max_sources: 4096,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl<P: Ord> Config<P> {
    /// The waits between attempts to an unreachable or refusing target, the last repeating.
    /// Default: 30 s doubling to 32 min (30, 60, …, 1920 s). An empty list means the default.
    pub fn with_retry_intervals(mut self, intervals: Vec<Duration>) -> Config<P> {
        if !intervals.is_empty() {
            self.retry_intervals = intervals;
        }
        self
    }

    /// How long a push may wait for its ack. Default: 60 s.
    pub fn with_push_timeout(mut self, timeout: Duration) -> Config<P> {
        self.push_timeout = timeout;
        self
    }

    /// Pushes in flight per target. Default: 16 (at least 1).
    pub fn with_max_in_flight(mut self, n: usize) -> Config<P> {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sources allowed to push here; others are refused `UNAUTHORIZED`. Default: `None`, any
    /// peer may push (within quotas).
    pub fn with_allowed_sources(mut self, sources: Option<BTreeSet<P>>) -> Config<P> {
        self.allowed_sources = sources;
        self
    }

    /// Pushes from one source awaiting this node's ack. Default: 16.
    pub fn with_max_inbound_per_source(mut self, n: usize) -> Config<P> {
        self.max_inbound_per_source = n.max(1);
        self
    }

    /// Block bytes one source may push per `window` (a token bucket of that size, refilled at
    /// that rate). Default: 64 MiB per 60 s.
    pub fn with_quota(mut self, bytes: u64, window: Duration) -> Config<P> {
        self.quota_bytes = bytes.max(1);
        self.quota_window = window.max(Duration::from_millis(1));
        self
    }

    /// Sources whose quota state is kept. Default: 4,096.
    pub fn with_max_sources(mut self, n: usize) -> Config<P> {
        self.max_sources = n.max(1);
        self
    }

    /// The largest frame sent or accepted. Default:
    /// [`DEFAULT_MAX_FRAME_BYTES`](crate::wire::DEFAULT_MAX_FRAME_BYTES).
    pub fn with_max_frame_bytes(mut self, n: usize) -> Config<P> {
        self.max_frame_bytes = n;
        self
    }

    /// The sources allowed to push here (`None`: any).
    pub fn allowed_sources(&self) -> Option<&BTreeSet<P>> {
        self.allowed_sources.as_ref()
    }

    /// The largest frame.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Pushes this node has unanswered at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Pushes one source may have unanswered here.
    pub fn max_inbound_per_source(&self) -> usize {
        self.max_inbound_per_source
    }

    /// The per-source quota: block bytes a source may push per window.
    pub fn quota(&self) -> (u64, Duration) {
        (self.quota_bytes, self.quota_window)
    }

    /// Sources whose quota state is kept.
    pub fn max_sources(&self) -> usize {
        self.max_sources
    }
}

/// A frame for the driver to send to `peer` on the replicator protocol (already framed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The peer.
    pub peer: P,
    /// The frame's bytes.
    pub frame: Vec<u8>,
}

/// What the target answers a push with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Every head of the push is applied and durable.
    Durable,
    /// The source is not on the allow list.
    Unauthorized,
    /// The target has no such collection.
    UnknownCollection,
    /// History is missing that the target could not fetch.
    Missing(Vec<Cid>),
    /// A block is invalid.
    Rejected,
    /// Over quota or too many pushes unanswered.
    Busy,
}

/// Why a target refused a push.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The target allows only listed sources.
    #[error("the target refuses pushes from this node (unauthorized)")]
    Unauthorized,
    /// The target lacks the collection; it may add the schema later.
    #[error("the target does not have the collection")]
    UnknownCollection,
    /// The target is over this source's quota.
    #[error("the target is busy")]
    Busy,
    /// The target could not complete the history.
    #[error("the target is missing history")]
    Missing,
    /// The target found a block invalid.
    #[error("the target rejected a block")]
    Rejected,
}

/// Why a push failed without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No ack before the push timeout.
    #[error("the push timed out")]
    TimedOut,
    /// The target disconnected with the push in flight.
    #[error("the target disconnected")]
    Disconnected,
}

/// A push could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The target already has `max_in_flight` pushes in flight.
    #[error("too many pushes in flight to this peer")]
    TooManyInFlight,
    /// The push names no heads, or more than a block may link.
    #[error("a push must name between 1 and {max} heads", max = hypha_crdt::block::MAX_LINKS)]
    BadHeads,
}

/// A protocol violation by a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame that does not decode, or a push whose ids are not ids.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// A pushed block that does not verify.
    #[error("invalid block: {0}")]
    BadBlock(BlockError),
    /// A pushed block of another document or collection than the push names.
    #[error("a pushed block of another document or collection")]
    WrongDocument,
    /// An ack for no push in flight to this peer.
    #[error("an ack for no push in flight")]
    UnexpectedAck,
    /// An ack without a known status.
    #[error("an ack without a known status")]
    BadStatus,
    /// A push reusing the id of one of the source's pushes that is not answered yet: ignored,
    /// so it can neither free the first one's place nor be confused with it.
    #[error("a push reusing the id of an unanswered push")]
    DuplicateId,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// The target made the push durable: drop the outbox entry for `heads`.
    Acked {
        /// The push.
        push: PushId,
        /// The target.
        peer: P,
        /// The document.
        doc: DocId,
        /// The heads pushed.
        heads: Vec<Cid>,
    },
    /// The push failed without an answer; the peer's retry is scheduled.
    Failed {
        /// The push.
        push: PushId,
        /// The target.
        peer: P,
        /// The document.
        doc: DocId,
        /// Why.
        reason: Failure,
    },
    /// A peer broke the protocol.
    PeerMisbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        violation: Violation,
    },
    /// The peer may be pushed to (again): it connected, or its retry is due.
    Ready {
        /// The target.
        peer: P,
    },
    /// A verified push arrived: ingest the blocks, then [`Replicator::respond`].
    Received {
        /// The source.
        peer: P,
        /// The source's id for the push.
        id: InboundId,
        /// The collection's name at the source.
        collection_name: String,
        /// The collection.
        collection: CollectionId,
        /// The document.
        doc: DocId,
        /// The document's heads at the source.
        heads: Vec<Cid>,
        /// The verified blocks, parents first.
        blocks: Vec<VerifiedBlock>,
    },
    /// The target refused the push; the peer's retry is scheduled.
    Refused {
        /// The push.
        push: PushId,
        /// The target.
        peer: P,
        /// The document.
        doc: DocId,
        /// Why.
        reason: Refusal,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Pushes sent.
    pub pushes: u64,
    /// Durable acks received.
    pub acked: u64,
    /// Pushes refused or failed.
    pub failed: u64,
    /// Pushes received and handed to the coordinator.
    pub received: u64,
    /// Pushes refused here: not on the allow list.
    pub refused_unauthorized: u64,
    /// Pushes refused here: over quota or too many unanswered.
    pub refused_busy: u64,
    /// Pushes refused here: invalid blocks.
    pub refused_invalid: u64,
}

struct Outgoing<P> {
    peer: P,
    doc: DocId,
    heads: Vec<Cid>,
    deadline: Instant,
}

#[derive(Default)]
struct Target {
    connected: bool,
    failures: usize,
    retry_at: Option<Instant>,
    in_flight: usize,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    inbound: BTreeSet<InboundId>,
}

/// Pushes to replicator peers and answers their pushes.
///
/// # Driving it
///
/// As a source: [`push`](Replicator::push) when [`can_push`](Replicator::can_push) says the
/// target is ready; [`Event::Acked`] means durable at the target. As a target: each
/// [`Event::Received`] is answered with [`respond`](Replicator::respond) once its blocks are
/// durable (or refused). Inputs are [`handle_frame`](Replicator::handle_frame),
/// [`handle_connected`](Replicator::handle_connected),
/// [`handle_disconnected`](Replicator::handle_disconnected),
/// [`handle_unreachable`](Replicator::handle_unreachable) and
/// [`handle_timeout`](Replicator::handle_timeout); after each, drain
/// [`poll_transmit`](Replicator::poll_transmit) and [`poll_event`](Replicator::poll_event) and
/// re-arm the timer at [`poll_timeout`](Replicator::poll_timeout).
///
/// # Panics
///
/// When time goes backwards between inputs.
pub struct Replicator<P> {
    config: Config<P>,
    next_id: u64,
    outgoing: BTreeMap<PushId, Outgoing<P>>,
    targets: BTreeMap<P, Target>,
    sources: BTreeMap<P, Bucket>,
    transmits: VecDeque<Transmit<P>>,
    events: VecDeque<Event<P>>,
    stats: Stats,
    clock: Monotonic,
}

impl<P: Copy + Ord + fmt::Debug> Replicator<P> {
    /// A replicator with no targets and no pushes.
    pub fn new(config: Config<P>) -> Replicator<P> {
        Replicator {
            config,
            next_id: 0,
            outgoing: BTreeMap::new(),
            targets: BTreeMap::new(),
            sources: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            clock: Monotonic::default(),
        }
    }

    /// Pushes `doc`'s `heads` with `blocks` (the heads' DAG-CBOR bytes, parents first) to
    /// `peer`. Blocks that would overflow a frame are left out; the target backfills them.
    ///
    /// # Errors
    /// [`PushError`] when the peer has `max_in_flight` pushes in flight or `heads` is empty or
    /// too long.
    #[allow(clippy::too_many_arguments)] // A push is exactly these facts.
    pub fn push(
        &mut self,
        peer: P,
        collection_name: &str,
        collection: CollectionId,
        doc: DocId,
        heads: Vec<Cid>,
        blocks: Vec<Vec<u8>>,
        now: Instant,
    ) -> Result<PushId, PushError> {
        self.advance(now);
        if heads.is_empty() || heads.len() > hypha_crdt::block::MAX_LINKS {
            return Err(PushError::BadHeads);
        }
        let target = self.targets.entry(peer).or_default();
        if target.in_flight >= self.config.max_in_flight {
            return Err(PushError::TooManyInFlight);
        }
        target.in_flight += 1;
        let id = PushId(self.next_id);
        self.next_id += 1;
        let mut message = pb::Push {
            id: id.0,
            collection: collection_name.to_owned(),
            collection_id: collection.0.to_bytes(),
            doc_id: doc.to_bytes().to_vec(),
            heads: heads.iter().map(|c| c.to_bytes()).collect(),
            blocks: Vec::new(),
        };
        let mut frame = None;
        // Add blocks while the frame fits; the heads alone always fit (1024 CIDs ≈ 40 KiB).
        for block in blocks {
            message.blocks.push(block);
            let candidate = pb::Frame {
                kind: pb::mod_Frame::OneOfkind::push(message.clone()),
            };
            match encode_frame(&candidate, self.config.max_frame_bytes) {
                Ok(f) => frame = Some(f),
                Err(_) => {
                    message.blocks.pop();
                    break;
                }
            }
        }
        let frame = match frame {
            Some(f) => f,
            None => {
                let bare = pb::Frame {
                    kind: pb::mod_Frame::OneOfkind::push(message),
                };
                // invariant: a push of at most MAX_LINKS heads and no blocks is far below any
                // sensible frame cap; a cap smaller than that is a configuration bug.
                encode_frame(&bare, self.config.max_frame_bytes)
                    .expect("a push without blocks fits in a frame")
            }
        };
        self.transmits.push_back(Transmit { peer, frame });
        let deadline = now + self.config.push_timeout;
        self.outgoing.insert(
            id,
            Outgoing {
                peer,
                doc,
                heads,
                deadline,
            },
        );
        self.stats.pushes += 1;
        Ok(id)
    }

    /// Answers the push `id` from `peer` (one [`Event::Received`] earlier): `Durable` only once
    /// every head of it is applied and durable here.
    pub fn respond(&mut self, peer: P, id: InboundId, status: Status, now: Instant) {
        self.advance(now);
        if let Some(bucket) = self.sources.get_mut(&peer) {
            bucket.inbound.remove(&id);
        }
        self.ack(peer, id, status);
    }

    /// A frame from `peer` on the replicator protocol.
    pub fn handle_frame(&mut self, peer: P, frame: &[u8], now: Instant) {
        self.advance(now);
        let frame = match decode_message::<pb::Frame>(frame) {
            Ok(f) => f,
            Err(e) => return self.misbehaved(peer, Violation::Malformed(e)),
        };
        match frame.kind {
            pb::mod_Frame::OneOfkind::push(push) => self.receive(peer, push, now),
            pb::mod_Frame::OneOfkind::ack(ack) => self.acked(peer, ack, now),
            pb::mod_Frame::OneOfkind::None => {
                let e = DecodeError("an empty frame".to_owned());
                self.misbehaved(peer, Violation::Malformed(e));
            }
        }
    }

    /// `peer` connected: it is ready at once, whatever its retry schedule said.
    pub fn handle_connected(&mut self, peer: P, now: Instant) {
        self.advance(now);
        let target = self.targets.entry(peer).or_default();
        target.connected = true;
        target.retry_at = None;
        self.events.push_back(Event::Ready { peer });
    }

    /// `peer` disconnected: its pushes in flight fail, its retry is scheduled, and pushes it
    /// sent here that are not answered yet are forgotten (it will push them again).
    pub fn handle_disconnected(&mut self, peer: P, now: Instant) {
        self.advance(now);
        if let Some(bucket) = self.sources.get_mut(&peer) {
            bucket.inbound.clear();
        }
        let failed: Vec<PushId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in &failed {
            self.fail(*id, Failure::Disconnected, now);
        }
        if let Some(target) = self.targets.get_mut(&peer) {
            target.connected = false;
        }
    }

    /// A dial to `peer` failed: schedule its next attempt.
    pub fn handle_unreachable(&mut self, peer: P, now: Instant) {
        self.advance(now);
        self.schedule_retry(peer, now);
    }

    /// Fails pushes past their deadline and makes peers whose retry is due ready.
    /// Idempotent; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let expired: Vec<PushId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.fail(id, Failure::TimedOut, now);
        }
        for (peer, target) in &mut self.targets {
            if target.retry_at.is_some_and(|t| t <= now) {
                // A disconnected peer is ready too: the coordinator dials it on `Ready`.
                target.retry_at = None;
                self.events.push_back(Event::Ready { peer: *peer });
            }
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

    /// When [`handle_timeout`](Replicator::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self.outgoing.values().map(|o| o.deadline);
        let retries = self.targets.values().filter_map(|t| t.retry_at);
        deadlines.chain(retries).min()
    }

    /// Whether a push to `peer` may be made now: connected, no retry pending, and room in
    /// flight.
    pub fn can_push(&self, peer: &P) -> bool {
        self.targets.get(peer).is_some_and(|t| {
            t.connected && t.retry_at.is_none() && t.in_flight < self.config.max_in_flight
        })
    }

    /// Whether `peer` may push to this node (the allow list, when one is set).
    pub fn allows(&self, peer: &P) -> bool {
        self.config
            .allowed_sources
            .as_ref()
            .is_none_or(|a| a.contains(peer))
    }

    /// Whether `peer` is waiting for its retry.
    pub fn retry_pending(&self, peer: &P) -> bool {
        self.targets.get(peer).is_some_and(|t| t.retry_at.is_some())
    }

    /// Pushes in flight to `peer`, with their documents.
    pub fn in_flight(&self, peer: &P) -> impl Iterator<Item = DocId> + '_ {
        let peer = *peer;
        self.outgoing
            .values()
            .filter(move |o| o.peer == peer)
            .map(|o| o.doc)
    }

    /// Forgets `peer` as a target (its replicator was deleted): pushes in flight are dropped
    /// without events, and no retry is scheduled.
    pub fn forget(&mut self, peer: &P) {
        self.outgoing.retain(|_, o| o.peer != *peer);
        self.targets.remove(peer);
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn receive(&mut self, peer: P, push: pb::Push, now: Instant) {
        let id = InboundId(push.id);
        if let Some(allowed) = &self.config.allowed_sources
            && !allowed.contains(&peer)
        {
            self.stats.refused_unauthorized += 1;
            return self.ack(peer, id, Status::Unauthorized);
        }
        if self
            .sources
            .get(&peer)
            .is_some_and(|b| b.inbound.contains(&id))
        {
            return self.misbehaved(peer, Violation::DuplicateId);
        }
        let bytes: u64 = push.blocks.iter().map(|b| b.len() as u64).sum();
        if !self.admit(peer, id, bytes, now) {
            self.stats.refused_busy += 1;
            return self.ack(peer, id, Status::Busy);
        }
        match parse_push(&push) {
            Ok((collection, doc, heads, blocks)) => {
                self.stats.received += 1;
                self.events.push_back(Event::Received {
                    peer,
                    id,
                    collection_name: push.collection,
                    collection,
                    doc,
                    heads,
                    blocks,
                });
            }
            Err(violation) => {
                self.stats.refused_invalid += 1;
                if let Some(bucket) = self.sources.get_mut(&peer) {
                    bucket.inbound.remove(&id);
                }
                self.ack(peer, id, Status::Rejected);
                self.misbehaved(peer, violation);
            }
        }
    }

    /// Charges `bytes` to `peer`'s bucket and counts the push as unanswered; `false` when over
    /// quota or over the unanswered limit.
    fn admit(&mut self, peer: P, id: InboundId, bytes: u64, now: Instant) -> bool {
        let (cap, window) = (self.config.quota_bytes as f64, self.config.quota_window);
        if !self.sources.contains_key(&peer) && self.sources.len() >= self.config.max_sources {
            // Drop an idle source whose bucket has refilled: forgetting it loses nothing.
            let idle = self
                .sources
                .iter()
                .find(|(_, b)| b.inbound.is_empty() && refill(b, cap, window, now) >= cap);
            match idle.map(|(p, _)| *p) {
                Some(p) => {
                    self.sources.remove(&p);
                }
                None => return false,
            }
        }
        let bucket = self.sources.entry(peer).or_insert(Bucket {
            tokens: cap,
            at: now,
            inbound: BTreeSet::new(),
        });
        bucket.tokens = refill(bucket, cap, window, now);
        bucket.at = now;
        if bucket.inbound.len() >= self.config.max_inbound_per_source
            || bucket.tokens < bytes as f64
        {
            return false;
        }
        bucket.tokens -= bytes as f64;
        bucket.inbound.insert(id);
        true
    }

    fn acked(&mut self, peer: P, ack: pb::Ack, now: Instant) {
        let id = PushId(ack.id);
        if self.outgoing.get(&id).is_none_or(|o| o.peer != peer) {
            return self.misbehaved(peer, Violation::UnexpectedAck);
        }
        let reason = match ack.status {
            pb::AckStatus::DURABLE => None,
            pb::AckStatus::UNAUTHORIZED => Some(Refusal::Unauthorized),
            pb::AckStatus::UNKNOWN_COLLECTION => Some(Refusal::UnknownCollection),
            pb::AckStatus::BUSY => Some(Refusal::Busy),
            pb::AckStatus::MISSING => Some(Refusal::Missing),
            pb::AckStatus::REJECTED => Some(Refusal::Rejected),
            pb::AckStatus::ACK_STATUS_UNSPECIFIED => {
                self.misbehaved(peer, Violation::BadStatus);
                // The push stays in flight and times out: an ack without a status is not one.
                return;
            }
        };
        // invariant: checked just above that `id` is in flight.
        let push = self.outgoing.remove(&id).expect("push in flight");
        let target = self.targets.entry(peer).or_default();
        target.in_flight = target.in_flight.saturating_sub(1);
        match reason {
            None => {
                target.failures = 0;
                self.stats.acked += 1;
                self.events.push_back(Event::Acked {
                    push: id,
                    peer,
                    doc: push.doc,
                    heads: push.heads,
                });
            }
            Some(reason) => {
                self.stats.failed += 1;
                self.events.push_back(Event::Refused {
                    push: id,
                    peer,
                    doc: push.doc,
                    reason,
                });
                self.schedule_retry(peer, now);
            }
        }
    }

    fn fail(&mut self, id: PushId, reason: Failure, now: Instant) {
        let Some(push) = self.outgoing.remove(&id) else {
            return;
        };
        if let Some(target) = self.targets.get_mut(&push.peer) {
            target.in_flight = target.in_flight.saturating_sub(1);
        }
        self.stats.failed += 1;
        self.events.push_back(Event::Failed {
            push: id,
            peer: push.peer,
            doc: push.doc,
            reason,
        });
        self.schedule_retry(push.peer, now);
    }

    /// Schedules `peer`'s next attempt, unless one is already scheduled.
    fn schedule_retry(&mut self, peer: P, now: Instant) {
        let intervals = &self.config.retry_intervals;
        let target = self.targets.entry(peer).or_default();
        if target.retry_at.is_some() {
            return;
        }
        let wait = intervals[target.failures.min(intervals.len() - 1)];
        target.failures = target.failures.saturating_add(1);
        target.retry_at = Some(now + wait);
    }

    fn ack(&mut self, peer: P, id: InboundId, status: Status) {
        let (status, missing) = match status {
            Status::Durable => (pb::AckStatus::DURABLE, Vec::new()),
            Status::Unauthorized => (pb::AckStatus::UNAUTHORIZED, Vec::new()),
            Status::UnknownCollection => (pb::AckStatus::UNKNOWN_COLLECTION, Vec::new()),
            Status::Missing(cids) => (pb::AckStatus::MISSING, cids),
            Status::Rejected => (pb::AckStatus::REJECTED, Vec::new()),
            Status::Busy => (pb::AckStatus::BUSY, Vec::new()),
        };
        let missing = missing
            .iter()
            .take(hypha_crdt::block::MAX_LINKS)
            .map(|c| c.to_bytes())
            .collect();
        let frame = pb::Frame {
            kind: pb::mod_Frame::OneOfkind::ack(pb::Ack {
                id: id.0,
                status,
                missing,
            }),
        };
        // invariant: an ack lists at most MAX_LINKS CIDs, far below any frame cap.
        let frame = encode_frame(&frame, self.config.max_frame_bytes).expect("an ack fits");
        self.transmits.push_back(Transmit { peer, frame });
    }

    fn misbehaved(&mut self, peer: P, violation: Violation) {
        self.events
            .push_back(Event::PeerMisbehaved { peer, violation });
    }

    fn advance(&mut self, now: Instant) {
        self.clock.advance(now);
    }
}

fn refill(bucket: &Bucket, cap: f64, window: Duration, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + cap * elapsed / window.as_secs_f64()).min(cap)
}

type Parsed = (CollectionId, DocId, Vec<Cid>, Vec<VerifiedBlock>);

/// Checks a push's ids and verifies its blocks (CID, then signature), each of the named
/// document and collection.
fn parse_push(push: &pb::Push) -> Result<Parsed, Violation> {
    let bad = |what: &str| Violation::Malformed(DecodeError(what.to_owned()));
    let collection = wire::collection_id(&push.collection_id)?;
    let doc = wire::doc_id(&push.doc_id)?;
    if push.heads.is_empty() || push.heads.len() > hypha_crdt::block::MAX_LINKS {
        return Err(bad("a push without heads or with too many"));
    }
    let heads = wire::cids(&push.heads)?;
    let mut blocks = Vec::with_capacity(push.blocks.len());
    for bytes in &push.blocks {
        let block = VerifiedBlock::decode(bytes, None).map_err(Violation::BadBlock)?;
        let delta = &block.block().delta;
        if delta.doc_id != doc || delta.collection != collection {
            return Err(Violation::WrongDocument);
        }
        blocks.push(block);
    }
    Ok((collection, doc, heads, blocks))
}
