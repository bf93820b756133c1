//! The sans-IO backfill state machine.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use hypha_crdt::{BlockError, BlockSource, Cid, DocId, VerifiedBlock};

use crate::clock::Monotonic;
use crate::generated::hypha::backfill::v1 as pb;
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, DecodeError, decode_message, encode_frame};

/// Identifies one fetch; every event about it carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backfill#{}", self.0)
    }
}

/// Bounds and timeouts; see the module docs for the defaults and why.
#[derive(Debug, Clone)]
pub struct Config {
    max_blocks: u32,
    max_bytes: u64,
    max_walk: usize,
    max_in_flight: usize,
    max_queued_frames: usize,
    request_timeout: Duration,
    max_frame_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_blocks: 100_000,
            max_bytes: 8 << 20,
            max_walk: 200_000,
            max_in_flight: 64,
            max_queued_frames: 1024,
            request_timeout: Duration::from_secs(30),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl Config {
    /// Most blocks asked for, and served, per response. Default 100,000.
    pub fn with_max_blocks(mut self, n: u32) -> Config {
        self.max_blocks = n.max(1);
        self
    }

    /// Most block bytes asked for, and served, per response. Default 8 MiB: a response fits
    /// the bytes the libp2p transport (`swarm::Frames`) queues per connection and protocol
    /// (16 MiB) with room for another, so a responder never drops part of one for its size.
    pub fn with_max_bytes(mut self, n: u64) -> Config {
        self.max_bytes = n.max(1);
        self
    }

    /// Most blocks a served walk visits (both sides). Default 200,000.
    pub fn with_max_walk(mut self, n: usize) -> Config {
        self.max_walk = n.max(1);
        self
    }

    /// Most requests in flight. Default 64.
    pub fn with_max_in_flight(mut self, n: usize) -> Config {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most frames waiting in [`Backfill::poll_transmit`]; past it requests are answered
    /// `BUSY`. Default 1,024.
    pub fn with_max_queued_frames(mut self, n: usize) -> Config {
        self.max_queued_frames = n.max(1);
        self
    }

    /// How long a request may wait for its last frame. Default 30 s.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Config {
        self.request_timeout = timeout;
        self
    }

    /// Largest frame sent or accepted. Default [`DEFAULT_MAX_FRAME_BYTES`].
    pub fn with_max_frame_bytes(mut self, n: usize) -> Config {
        self.max_frame_bytes = n.max(hypha_crdt::block::MAX_BLOCK_BYTES + 1024);
        self
    }

    /// Most blocks asked for, and served, per response.
    pub fn max_blocks(&self) -> u32 {
        self.max_blocks
    }

    /// Most block bytes asked for, and served, per response.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Most blocks a served walk may visit.
    pub fn max_walk(&self) -> usize {
        self.max_walk
    }

    /// Requests this node has in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Frames queued for sending before requests are answered `BUSY`.
    pub fn max_queued_frames(&self) -> usize {
        self.max_queued_frames
    }

    /// How long a request may wait for its response.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The largest frame sent or accepted.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

/// A frame for the driver to send to `peer` (already length-prefixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The peer.
    pub peer: P,
    /// The frame's bytes.
    pub frame: Vec<u8>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// A request finished; `truncated` when the responder stopped at a budget (ask again from
    /// the new heads for the rest).
    Completed {
        /// The request.
        request: RequestId,
        /// The peer that answered.
        peer: P,
        /// Whether blocks were left out.
        truncated: bool,
    },
    /// A request failed; ask another peer.
    Failed {
        /// The request.
        request: RequestId,
        /// The peer asked.
        peer: P,
        /// Why.
        reason: Failure,
    },
    /// A peer broke the protocol; the driver decides what it costs the peer.
    PeerMisbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        violation: Violation,
    },
    /// A verified block of the requested document, parents before children: hand it to the
    /// merge.
    Received {
        /// The request.
        request: RequestId,
        /// The block.
        block: VerifiedBlock,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The peer does not have a wanted head.
    #[error("the peer does not have the wanted heads")]
    NotFound,
    /// The peer is busy.
    #[error("the peer is busy")]
    Busy,
    /// The peer disconnected before the last frame.
    #[error("the peer disconnected")]
    Disconnected,
    /// The peer broke the protocol.
    #[error("the peer misbehaved: {0}")]
    Misbehaved(Violation),
    /// No last frame before the timeout.
    #[error("the request timed out")]
    TimedOut,
}

/// A protocol violation by a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame that does not decode.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// A block that is not valid.
    #[error("invalid block: {0}")]
    BadBlock(BlockError),
    /// A block of another document than the one asked for.
    #[error("a block of another document than the one asked for")]
    WrongDocument,
    /// More blocks or bytes than asked for.
    #[error("more blocks or bytes than asked for")]
    OverBudget,
    /// A final frame without a status, or a status on a frame that is not final.
    #[error("a response frame with a missing or misplaced status")]
    BadStatus,
    /// A response for no request in flight with this peer.
    #[error("a response for no request in flight")]
    UnexpectedResponse,
    /// A request that names no document or no wanted heads, or CIDs that are not CIDs.
    #[error("a malformed request")]
    BadRequest,
    /// A history deeper than the requester's depth budget: every answer truncated, again and
    /// again (a deep DAG bomb). Reported by the coordinator, which stops asking.
    #[error("a history deeper than the depth budget")]
    DepthExceeded,
}

struct InFlight<P> {
    peer: P,
    doc: DocId,
    deadline: Instant,
    blocks: u32,
    bytes: u64,
    max_blocks: u32,
    max_bytes: u64,
}

/// Fetches missing DAG history from peers, and serves it to them.
///
/// # Driving it
///
/// Inputs are [`fetch`](Backfill::fetch) (a command), [`handle_frame`](Backfill::handle_frame),
/// [`handle_disconnected`](Backfill::handle_disconnected) and
/// [`handle_timeout`](Backfill::handle_timeout), each with the current time. After every
/// input, drain [`poll_transmit`](Backfill::poll_transmit), then
/// [`poll_event`](Backfill::poll_event), then re-arm the timer at
/// [`poll_timeout`](Backfill::poll_timeout). Serving reads blocks through a
/// [`BlockSource`] passed to `handle_frame`; the core keeps no blocks of its own.
///
/// # Panics
///
/// When time goes backwards between inputs.
pub struct Backfill<P> {
    config: Config,
    next_id: u64,
    in_flight: BTreeMap<RequestId, InFlight<P>>,
    transmits: VecDeque<Transmit<P>>,
    events: VecDeque<Event<P>>,
    clock: Monotonic,
}

impl<P: Copy + Ord + fmt::Debug> Backfill<P> {
    /// A core with `config`.
    pub fn new(config: Config) -> Backfill<P> {
        Backfill {
            config,
            next_id: 0,
            in_flight: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            clock: Monotonic::default(),
        }
    }

    /// Asks `peer` for the blocks of `doc` reachable from `wanted` and not from `have`.
    ///
    /// Returns `None` when [`Config::with_max_in_flight`] requests are already in flight, or
    /// when `wanted` is empty or either list names more than
    /// [`MAX_LINKS`](hypha_crdt::block::MAX_LINKS) heads.
    pub fn fetch(
        &mut self,
        peer: P,
        doc: DocId,
        wanted: &[Cid],
        have: &[Cid],
        now: Instant,
    ) -> Option<RequestId> {
        self.advance(now);
        let max = hypha_crdt::block::MAX_LINKS;
        if self.in_flight.len() >= self.config.max_in_flight
            || wanted.is_empty()
            || wanted.len() > max
            || have.len() > max
        {
            return None;
        }
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let request = pb::Request {
            id: id.0,
            doc_id: doc.to_bytes().to_vec(),
            wanted: wanted.iter().map(|c| c.to_bytes()).collect(),
            have: have.iter().map(|c| c.to_bytes()).collect(),
            max_blocks: self.config.max_blocks,
            max_bytes: self.config.max_bytes,
        };
        let frame = pb::Frame {
            kind: pb::mod_Frame::OneOfkind::request(request),
        };
        // A request names at most MAX_LINKS heads on each side, far below a frame.
        let Ok(frame) = encode_frame(&frame, self.config.max_frame_bytes) else {
            return None;
        };
        self.transmits.push_back(Transmit { peer, frame });
        let deadline = now + self.config.request_timeout;
        let (max_blocks, max_bytes) = (self.config.max_blocks, self.config.max_bytes);
        let state = InFlight {
            peer,
            doc,
            deadline,
            blocks: 0,
            bytes: 0,
            max_blocks,
            max_bytes,
        };
        self.in_flight.insert(id, state);
        Some(id)
    }

    /// A frame from `peer`: a request to serve from `source`, or a response to one of ours.
    pub fn handle_frame(&mut self, peer: P, frame: &[u8], source: &impl BlockSource, now: Instant) {
        self.advance(now);
        let frame = match decode_message::<pb::Frame>(frame) {
            Ok(frame) => frame,
            Err(e) => return self.misbehaved(peer, Violation::Malformed(e)),
        };
        match frame.kind {
            pb::mod_Frame::OneOfkind::request(request) => self.serve(peer, request, source),
            pb::mod_Frame::OneOfkind::response(response) => self.receive(peer, response),
            pb::mod_Frame::OneOfkind::None => {
                let e = DecodeError("an empty frame".to_owned());
                self.misbehaved(peer, Violation::Malformed(e));
            }
        }
    }

    /// `peer` disconnected: its requests fail.
    pub fn handle_disconnected(&mut self, peer: P, now: Instant) {
        self.advance(now);
        let gone: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.fail(id, Failure::Disconnected);
        }
    }

    /// Expires requests whose deadline passed. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let expired: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
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

    /// When [`handle_timeout`](Backfill::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|r| r.deadline).min()
    }

    /// How many requests are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn advance(&mut self, now: Instant) {
        self.clock.advance(now);
    }

    fn misbehaved(&mut self, peer: P, violation: Violation) {
        self.events
            .push_back(Event::PeerMisbehaved { peer, violation });
    }

    fn fail(&mut self, id: RequestId, reason: Failure) {
        if let Some(request) = self.in_flight.remove(&id) {
            let peer = request.peer;
            self.events.push_back(Event::Failed {
                request: id,
                peer,
                reason,
            });
        }
    }

    fn receive(&mut self, peer: P, response: pb::Response) {
        let id = RequestId(response.id);
        let Some(request) = self.in_flight.get_mut(&id).filter(|r| r.peer == peer) else {
            return self.misbehaved(peer, Violation::UnexpectedResponse);
        };
        let mut violation = None;
        let mut received = Vec::with_capacity(response.blocks.len());
        for bytes in &response.blocks {
            request.blocks = request.blocks.saturating_add(1);
            request.bytes = request.bytes.saturating_add(bytes.len() as u64);
            if request.blocks > request.max_blocks || request.bytes > request.max_bytes {
                violation = Some(Violation::OverBudget);
                break;
            }
            match VerifiedBlock::decode(bytes, None) {
                Ok(block) if block.doc_id() == request.doc => received.push(block),
                Ok(_) => {
                    violation = Some(Violation::WrongDocument);
                    break;
                }
                Err(e) => {
                    violation = Some(Violation::BadBlock(e));
                    break;
                }
            }
        }
        let unspecified = response.status == pb::Status::STATUS_UNSPECIFIED;
        if violation.is_none() && response.done == unspecified {
            violation = Some(Violation::BadStatus);
        }
        // Blocks before a violation are valid on their own: the merge may keep them.
        for block in received {
            self.events
                .push_back(Event::Received { request: id, block });
        }
        if let Some(violation) = violation {
            self.misbehaved(peer, violation.clone());
            return self.fail(id, Failure::Misbehaved(violation));
        }
        if !response.done {
            return;
        }
        match response.status {
            pb::Status::COMPLETE | pb::Status::TRUNCATED => {
                self.in_flight.remove(&id);
                let truncated = response.status == pb::Status::TRUNCATED;
                self.events.push_back(Event::Completed {
                    request: id,
                    peer,
                    truncated,
                });
            }
            pb::Status::NOT_FOUND => self.fail(id, Failure::NotFound),
            pb::Status::BUSY => self.fail(id, Failure::Busy),
            pb::Status::STATUS_UNSPECIFIED => unreachable!("checked above"),
        }
    }

    fn serve(&mut self, peer: P, request: pb::Request, source: &impl BlockSource) {
        let id = request.id;
        let parsed = parse_request(&request);
        let Some((doc, wanted, have)) = parsed else {
            return self.misbehaved(peer, Violation::BadRequest);
        };
        if self.transmits.len() >= self.config.max_queued_frames {
            return self.respond(peer, id, Vec::new(), pb::Status::BUSY);
        }
        // The requester's budget, within this node's; 0 sets none, so this node's applies.
        let max_blocks = budget(request.max_blocks, self.config.max_blocks);
        let max_bytes = budget(request.max_bytes, self.config.max_bytes);
        let (blocks, status) = match difference(source, doc, &wanted, &have, self.config.max_walk) {
            Walk::Done {
                newest_first,
                truncated,
            } => {
                // Send the oldest part that fits the budget: those blocks apply at once, and
                // the requester asks again from its new heads for the rest.
                let mut blocks = Vec::new();
                let mut bytes = 0u64;
                let total = newest_first.len();
                for cid in newest_first.into_iter().rev() {
                    let Some(block) = source.block(&cid).ok().flatten() else {
                        break;
                    };
                    let len = block.bytes().len() as u64;
                    if blocks.len() as u32 >= max_blocks || bytes + len > max_bytes {
                        break;
                    }
                    bytes += len;
                    blocks.push(block);
                }
                let truncated = truncated || blocks.len() < total;
                let status = if truncated {
                    pb::Status::TRUNCATED
                } else {
                    pb::Status::COMPLETE
                };
                (blocks, status)
            }
            Walk::NotFound => (Vec::new(), pb::Status::NOT_FOUND),
        };
        self.respond(peer, id, blocks, status);
    }

    /// Packs `blocks` (oldest first) into frames of at most `max_frame_bytes`; the last
    /// carries `done` and the status.
    fn respond(&mut self, peer: P, id: u64, blocks: Vec<VerifiedBlock>, status: pb::Status) {
        // Room for the frame envelope: ids, tags and lengths.
        let limit = self.config.max_frame_bytes - 64;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        for block in blocks {
            let len = block.bytes().len() + 8;
            if !batch.is_empty() && size + len > limit {
                self.send_response(
                    peer,
                    id,
                    std::mem::take(&mut batch),
                    false,
                    pb::Status::STATUS_UNSPECIFIED,
                );
                size = 0;
            }
            size += len;
            batch.push(block.bytes().to_vec());
        }
        self.send_response(peer, id, batch, true, status);
    }

    fn send_response(
        &mut self,
        peer: P,
        id: u64,
        blocks: Vec<Vec<u8>>,
        done: bool,
        status: pb::Status,
    ) {
        let response = pb::Response {
            id,
            blocks,
            done,
            status,
        };
        let frame = pb::Frame {
            kind: pb::mod_Frame::OneOfkind::response(response),
        };
        // invariant: batches are packed below max_frame_bytes, and one block fits a frame.
        let frame =
            encode_frame(&frame, self.config.max_frame_bytes).expect("packed below the cap");
        self.transmits.push_back(Transmit { peer, frame });
    }
}

/// What a response may carry: what the requester `asked` for (0: no bound of its own) within
/// this node's `own` bound, and at least one.
fn budget<T: Ord + Copy + From<u8>>(asked: T, own: T) -> T {
    let own = own.max(T::from(1));
    if asked == T::from(0) {
        own
    } else {
        asked.min(own)
    }
}

fn parse_request(request: &pb::Request) -> Option<(DocId, Vec<Cid>, Vec<Cid>)> {
    let doc = DocId::from_bytes(request.doc_id.as_slice().try_into().ok()?);
    let cids = |list: &[Vec<u8>]| -> Option<Vec<Cid>> {
        if list.len() > hypha_crdt::block::MAX_LINKS {
            return None;
        }
        list.iter()
            .map(|b| Cid::try_from(b.as_slice()).ok())
            .collect()
    };
    let wanted = cids(&request.wanted)?;
    if wanted.is_empty() {
        return None;
    }
    Some((doc, wanted, cids(&request.have)?))
}

enum Walk {
    /// The CIDs of the difference, newest first; `truncated` when the walk hit its bound
    /// before the difference was complete (what it found is its newest part).
    Done {
        newest_first: Vec<Cid>,
        truncated: bool,
    },
    NotFound,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Wanted,
    Have,
}

/// The blocks of `doc` reachable from `wanted` and not from `have`, newest first, visiting at
/// most `max_walk` blocks (see the module docs for why processing by descending priority is
/// exact). Only CIDs are kept for the result, and blocks only for the walk's frontier.
fn difference(
    source: &impl BlockSource,
    doc: DocId,
    wanted: &[Cid],
    have: &[Cid],
    max_walk: usize,
) -> Walk {
    let load = |cid: &Cid| -> Option<VerifiedBlock> {
        source
            .block(cid)
            .ok()
            .flatten()
            .filter(|b| b.doc_id() == doc)
    };
    let mut side: BTreeMap<Cid, Side> = BTreeMap::new();
    let mut heap: BinaryHeap<(u64, Cid)> = BinaryHeap::new();
    let mut loaded: BTreeMap<Cid, VerifiedBlock> = BTreeMap::new();
    let mut wanted_left = 0usize;
    for cid in have {
        if let Some(block) = load(cid) {
            side.insert(*cid, Side::Have);
            heap.push((block.block().delta.priority, *cid));
            loaded.insert(*cid, block);
        }
    }
    for cid in wanted {
        if side.contains_key(cid) {
            continue;
        }
        let Some(block) = load(cid) else {
            return Walk::NotFound;
        };
        side.insert(*cid, Side::Wanted);
        wanted_left += 1;
        heap.push((block.block().delta.priority, *cid));
        loaded.insert(*cid, block);
    }
    let (mut out, mut visited) = (Vec::new(), 0usize);
    while wanted_left > 0 {
        // Every CID enters the heap once: only when it first gets a side.
        let Some((_, cid)) = heap.pop() else { break };
        visited += 1;
        let this = side[&cid];
        let Some(block) = loaded.remove(&cid) else {
            continue;
        };
        if visited > max_walk {
            return Walk::Done {
                newest_first: out,
                truncated: true,
            };
        }
        if this == Side::Wanted {
            wanted_left -= 1;
        }
        for parent in &block.block().heads {
            match side.get(parent).copied() {
                Some(Side::Have) => {}
                Some(Side::Wanted) => {
                    if this == Side::Have {
                        side.insert(*parent, Side::Have);
                        wanted_left -= 1;
                    }
                }
                None => {
                    // A parent the responder lacks ends that branch: it sends what it has.
                    let Some(parent_block) = load(parent) else {
                        continue;
                    };
                    side.insert(*parent, this);
                    if this == Side::Wanted {
                        wanted_left += 1;
                    }
                    heap.push((parent_block.block().delta.priority, *parent));
                    loaded.insert(*parent, parent_block);
                }
            }
        }
        if this == Side::Wanted {
            out.push(cid);
        }
    }
    Walk::Done {
        newest_first: out,
        truncated: false,
    }
}
