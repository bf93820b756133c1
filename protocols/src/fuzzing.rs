//! Bodies of the cargo-fuzz targets over the wire layer, the protocol cores and the
//! coordinator, as plain functions so ordinary tests replay committed inputs too. Enabled by
//! the `fuzzing` feature.
//!
//! Each core target decodes its input (with `arbitrary`) into a script of inputs: frames from
//! peers — arbitrary bytes, and well-formed messages built from the wire types over a small
//! fixture of valid blocks, so the fuzzer gets past decoding — commands, connections,
//! disconnections and timeouts. Time is an origin plus arbitrary forward steps; no body reads a
//! clock after taking its origin. After every input the body drains the core's outputs and
//! asserts what the core's module docs promise ("Bounds and defaults").

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use hypha_crdt::sync_index::Iblt;
use hypha_crdt::{Author, Cid, CollectionId, DocId, Replica, VerifiedBlock, parse_sdl};
use quick_protobuf::MessageWrite;
use serde_json::json;

use crate::generated::hypha::{
    backfill::v1 as backfill_pb, head_sync::v1 as head_sync_pb, pubsub::v1 as pubsub_pb,
    replicator::v1 as replicator_pb,
};
use crate::wire::{FrameReader, WireMessage, decode_message, encode_frame};
use crate::{backfill, connectivity, head_sync, node, pubsub, replicator};

/// Feeds arbitrary bytes to a frame reader (with a small cap, so the cap is exercised), in
/// pieces whose sizes the input chooses, and decodes every frame as every message type and
/// through every decoder above the protobuf layer: pubsub [`Update`](pubsub::Update)
/// validation and message ids, and head-exchange sketches. Nothing may panic; a message that
/// decodes re-encodes and decodes to itself.
pub fn decode_frames(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut reader = FrameReader::new(4096);
    for piece in stream.chunks(usize::from(split).max(1)) {
        let Ok(frames) = reader.push(piece) else {
            return;
        };
        assert!(
            reader.buffered() <= 4 + 4096,
            "the reader holds at most one frame"
        );
        for frame in frames {
            check::<replicator_pb::Frame>(&frame);
            check::<backfill_pb::Frame>(&frame);
            check::<pubsub_pb::Update>(&frame);
            check::<head_sync_pb::Frame>(&frame);
            decode_higher(&frame);
        }
    }
}

fn check<M: WireMessage + PartialEq + std::fmt::Debug>(frame: &[u8]) {
    let Ok(message) = decode_message::<M>(frame) else {
        return;
    };
    let again = encode_frame(&message, usize::MAX >> 1).expect("a decoded message encodes");
    let decoded: M = decode_message(&again[4..]).expect("an encoded message decodes");
    assert_eq!(decoded, message, "decode(encode(m)) == m");
}

/// The decoders above protobuf: a validated pubsub update re-encodes to one that validates to
/// itself; a sketch that parses has the size asked for, and peeling it never panics.
fn decode_higher(frame: &[u8]) {
    let _ = pubsub::message_id("topic", frame);
    if let Ok(update) = pubsub::Update::decode(frame) {
        let again = pubsub::Update::decode(&update.encode()).expect("an encoded update decodes");
        assert_eq!(again, update, "Update: decode(encode(u)) == u");
    }
    for cells in hypha_crdt::sync_index::SKETCH_CELLS {
        if let Ok(sketch) = Iblt::from_bytes(frame, cells) {
            let _ = sketch.decode();
            let _ = sketch.subtract(&sketch).map(|d| d.decode());
        }
    }
    if let Ok(m) = decode_message::<head_sync_pb::Frame>(frame)
        && let head_sync_pb::mod_Frame::OneOfkind::sketches(s) = m.kind
    {
        for c in &s.collections {
            if let Ok(sketch) = Iblt::from_bytes(&c.iblt, hypha_crdt::sync_index::SKETCH_CELLS[2]) {
                let _ = sketch.decode();
            }
        }
    }
}

// ---- shared fixture ---------------------------------------------------------------------------

const NAMESPACE: &str = "hypha";
const SDL: &str =
    "type T { name: String points: Int @crdt(type: pncounter) } type U { name: String }";

/// Valid blocks to build well-formed messages from: two documents of collection `T` (one with
/// a concurrent branch), one of `U`, and a replica holding them all.
struct Fixture {
    collection: CollectionId,
    other_collection: CollectionId,
    docs: [DocId; 3],
    /// Every block, parents first.
    blocks: Vec<VerifiedBlock>,
    holder: Replica,
}

impl Fixture {
    fn new() -> Fixture {
        let schema = parse_sdl(NAMESPACE, SDL).expect("static schema parses");
        let mut a = Replica::new(schema.clone(), Author::unsigned([1; 32]));
        let mut b = Replica::new(schema.clone(), Author::unsigned([2; 32]));
        let mut blocks = Vec::new();
        let (doc0, genesis) = a
            .create("T", &json!({"name": "a", "points": 0}))
            .expect("create");
        b.ingest(&genesis).expect("genesis applies");
        blocks.push(genesis);
        for i in 0..20 {
            blocks.push(a.update(doc0, &json!({"points": 1})).expect("update"));
            if i % 6 == 2 {
                let block = b
                    .update(doc0, &json!({"name": format!("{i}")}))
                    .expect("update");
                blocks.push(block);
            }
        }
        let (doc1, genesis) = a.create("T", &json!({"name": "b"})).expect("create");
        blocks.push(genesis);
        for i in 0..3 {
            blocks.push(a.update(doc1, &json!({"points": i})).expect("update"));
        }
        blocks.push(a.delete(doc1).expect("delete"));
        let (doc2, genesis) = a.create("U", &json!({"name": "u"})).expect("create");
        blocks.push(genesis);
        let mut holder = Replica::new(schema, Author::unsigned([3; 32]));
        for block in &blocks {
            holder.ingest(block).expect("valid blocks apply");
        }
        Fixture {
            collection: blocks[0].block().delta.collection,
            other_collection: CollectionId::derive(NAMESPACE, "U"),
            docs: [doc0, doc1, doc2],
            blocks,
            holder,
        }
    }

    /// A document: one of the fixture's, or one nobody has.
    fn doc(&self, sel: u8) -> DocId {
        match sel % 4 {
            3 => DocId::from_bytes([sel; 16]),
            i => self.docs[usize::from(i)],
        }
    }

    /// A CID's bytes: a fixture block's, a CID nobody has, or bytes that are not a CID.
    fn cid_bytes(&self, sel: u8) -> Vec<u8> {
        match sel {
            0..=239 => self.blocks[usize::from(sel) % self.blocks.len()]
                .cid()
                .to_bytes(),
            240..=254 => hypha_crdt::cid::raw_cid(&[sel]).to_bytes(),
            255 => vec![0x01, 0x71, 0x12],
        }
    }

    fn cids(&self, sel: &[u8]) -> Vec<Cid> {
        sel.iter()
            .take(64)
            .filter_map(|&s| Cid::try_from(self.cid_bytes(s).as_slice()).ok())
            .collect()
    }

    /// A block's bytes: a fixture block, possibly with one byte flipped.
    fn block_bytes(&self, sel: u8, corrupt: bool) -> Vec<u8> {
        let mut bytes = self.blocks[usize::from(sel) % self.blocks.len()]
            .bytes()
            .to_vec();
        if corrupt {
            let at = usize::from(sel) % bytes.len();
            bytes[at] ^= 0x55;
        }
        bytes
    }
}

thread_local! {
    static FIXTURE: Fixture = Fixture::new();
    /// Whether forged messages may carry inputs that reach known bugs.
    static STRICT: Cell<bool> = const { Cell::new(false) };
}

/// Virtual time: an origin, then only forward steps chosen by the input.
struct Clock {
    now: Instant,
}

impl Clock {
    fn new() -> Clock {
        // The one clock read: an origin. Every later time is the origin plus input deltas, so
        // a run depends on its input only.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Clock { now }
    }

    /// Steps `ms` milliseconds (scaled, so a few steps reach the timeouts) and returns now.
    fn wait(&mut self, ms: u16) -> Instant {
        self.now += Duration::from_millis(u64::from(ms) * 4);
        self.now
    }
}

/// A message's bytes as a frame's body (without the length prefix).
fn body<M: MessageWrite>(message: &M) -> Vec<u8> {
    let frame = encode_frame(message, usize::MAX >> 1).expect("any message encodes uncapped");
    frame[4..].to_vec()
}

/// The body of a length-prefixed frame a core sent, after checking the prefix and the cap.
fn sent(frame: &[u8], max_frame_bytes: usize) -> &[u8] {
    assert!(frame.len() >= 4, "a frame has its length prefix");
    let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(len, frame.len() - 4, "the prefix is the body's length");
    assert!(len <= max_frame_bytes, "a sent frame is within the cap");
    &frame[4..]
}

fn script<T: for<'a> Arbitrary<'a>>(data: &[u8]) -> Option<(u8, Vec<T>)> {
    let mut input = Unstructured::new(data);
    let first = input.arbitrary::<u8>().ok()?;
    let ops = Vec::<T>::arbitrary(&mut input).ok()?;
    Some((first, ops))
}

// ---- backfill ---------------------------------------------------------------------------------

/// One input of [`backfill_core`].
#[derive(Debug, Arbitrary)]
enum BackfillOp {
    Fetch {
        peer: u8,
        doc: u8,
        wanted: Vec<u8>,
        have: Vec<u8>,
    },
    Raw {
        peer: u8,
        frame: Vec<u8>,
    },
    Request {
        peer: u8,
        id: u64,
        doc: u8,
        wanted: Vec<u8>,
        have: Vec<u8>,
        max_blocks: u32,
        max_bytes: u64,
    },
    Response {
        peer: u8,
        request: u8,
        blocks: Vec<u8>,
        corrupt: bool,
        done: bool,
        status: u8,
    },
    /// `peer` answers our oldest request to it honestly, through a responder core.
    Honest {
        peer: u8,
    },
    Disconnect {
        peer: u8,
    },
    Wait {
        ms: u16,
    },
}

struct Asked {
    peer: u16,
    doc: DocId,
    deadline: Instant,
    blocks: u32,
    bytes: u64,
}

const BF_MAX_BLOCKS: u32 = 8;
const BF_MAX_BYTES: u64 = 4096;
const BF_IN_FLIGHT: usize = 4;
const BF_TIMEOUT: Duration = Duration::from_secs(5);

/// A backfill core serving and fetching over the fixture, driven by arbitrary inputs. Checks:
/// no panic; requests in flight match the fetches made and never exceed `max_in_flight`;
/// every received block is of the requested document, within the request's block and byte
/// budgets; every request ends once (completed, failed, timed out at its deadline); the timer
/// is the earliest deadline; served responses stay within the budgets and the frame cap,
/// oldest first.
pub fn backfill_core(data: &[u8]) {
    let Some((_, ops)) = script::<BackfillOp>(data) else {
        return;
    };
    FIXTURE.with(|fx| {
        let config = backfill::Config::default()
            .with_max_blocks(BF_MAX_BLOCKS)
            .with_max_bytes(BF_MAX_BYTES)
            .with_max_walk(24)
            .with_max_in_flight(BF_IN_FLIGHT)
            .with_max_queued_frames(8)
            .with_request_timeout(BF_TIMEOUT);
        let max_frame = crate::wire::DEFAULT_MAX_FRAME_BYTES;
        let mut core = backfill::Backfill::<u16>::new(config);
        let mut responder = backfill::Backfill::<u16>::new(backfill::Config::default());
        let source = fx.holder.dag();
        let mut clock = Clock::new();
        let mut live: BTreeMap<backfill::RequestId, Asked> = BTreeMap::new();
        let mut ended: BTreeSet<backfill::RequestId> = BTreeSet::new();
        let mut requests: VecDeque<(u16, Vec<u8>)> = VecDeque::new();
        for op in ops.into_iter().take(128) {
            let now = clock.now;
            let mut served_cap = None;
            match op {
                BackfillOp::Fetch {
                    peer,
                    doc,
                    wanted,
                    have,
                } => {
                    let (peer, doc) = (u16::from(peer % 4), fx.doc(doc));
                    if let Some(id) = core.fetch(peer, doc, &fx.cids(&wanted), &fx.cids(&have), now)
                    {
                        let asked = Asked {
                            peer,
                            doc,
                            deadline: now + BF_TIMEOUT,
                            blocks: 0,
                            bytes: 0,
                        };
                        assert!(live.insert(id, asked).is_none(), "request ids are fresh");
                    }
                }
                BackfillOp::Raw { peer, frame } => {
                    core.handle_frame(u16::from(peer % 4), &frame, source, now);
                }
                BackfillOp::Request {
                    peer,
                    id,
                    doc,
                    wanted,
                    have,
                    max_blocks,
                    max_bytes,
                } => {
                    let request = backfill_pb::Request {
                        id,
                        doc_id: fx.doc(doc).to_bytes().to_vec(),
                        wanted: wanted.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                        have: have.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                        max_blocks,
                        max_bytes,
                    };
                    let frame = backfill_pb::Frame {
                        kind: backfill_pb::mod_Frame::OneOfkind::request(request),
                    };
                    // What the request asked for (0: no bound of the requester's own) within
                    // the responder's bounds.
                    served_cap = Some((
                        if max_blocks == 0 {
                            BF_MAX_BLOCKS
                        } else {
                            max_blocks.min(BF_MAX_BLOCKS)
                        },
                        if max_bytes == 0 {
                            BF_MAX_BYTES
                        } else {
                            max_bytes.min(BF_MAX_BYTES)
                        },
                    ));
                    core.handle_frame(u16::from(peer % 4), &body(&frame), source, now);
                }
                BackfillOp::Response {
                    peer,
                    request,
                    blocks,
                    corrupt,
                    done,
                    status,
                } => {
                    let ids: Vec<u64> = live.keys().map(|r| r.0).collect();
                    let id = match ids.get(usize::from(request) % ids.len().max(1)) {
                        Some(&id) if request < 200 => id,
                        _ => u64::from(request),
                    };
                    let response = backfill_pb::Response {
                        id,
                        blocks: blocks
                            .iter()
                            .take(32)
                            .enumerate()
                            .map(|(i, &s)| fx.block_bytes(s, corrupt && i == 0))
                            .collect(),
                        done,
                        status: backfill_pb::Status::from(i32::from(status % 6)),
                    };
                    let frame = backfill_pb::Frame {
                        kind: backfill_pb::mod_Frame::OneOfkind::response(response),
                    };
                    core.handle_frame(u16::from(peer % 4), &body(&frame), source, now);
                }
                BackfillOp::Honest { peer } => {
                    let peer = u16::from(peer % 4);
                    if let Some(at) = requests.iter().position(|(p, _)| *p == peer) {
                        let (_, request) = requests.remove(at).expect("found");
                        responder.handle_frame(100, &request, source, now);
                        while let Some(t) = responder.poll_transmit() {
                            core.handle_frame(peer, sent(&t.frame, max_frame), source, now);
                        }
                        while responder.poll_event().is_some() {}
                    }
                }
                BackfillOp::Disconnect { peer } => {
                    let peer = u16::from(peer % 4);
                    core.handle_disconnected(peer, now);
                    requests.retain(|(p, _)| *p != peer);
                }
                BackfillOp::Wait { ms } => {
                    let now = clock.wait(ms);
                    core.handle_timeout(now);
                }
            }
            let now = clock.now;
            // Outputs: transmits first, then events, as the docs say.
            let (mut served_blocks, mut served_bytes) = (0u32, 0u64);
            let mut served_cids: Vec<Cid> = Vec::new();
            while let Some(t) = core.poll_transmit() {
                let frame = decode_message::<backfill_pb::Frame>(sent(&t.frame, max_frame))
                    .expect("a sent frame decodes");
                match frame.kind {
                    backfill_pb::mod_Frame::OneOfkind::request(r) => {
                        assert!(r.max_blocks <= BF_MAX_BLOCKS && r.max_bytes <= BF_MAX_BYTES);
                        requests.push_back((t.peer, t.frame[4..].to_vec()));
                    }
                    backfill_pb::mod_Frame::OneOfkind::response(r) => {
                        for bytes in &r.blocks {
                            let block = VerifiedBlock::decode(bytes, None)
                                .expect("a served block is valid");
                            served_cids.push(block.cid());
                            served_blocks += 1;
                            served_bytes += bytes.len() as u64;
                        }
                        assert!(
                            !r.done || r.status != backfill_pb::Status::STATUS_UNSPECIFIED,
                            "a final frame carries a status"
                        );
                    }
                    backfill_pb::mod_Frame::OneOfkind::None => panic!("an empty frame was sent"),
                }
            }
            // A parent served after its child would be a violation; checked against the whole
            // response below, once every frame is read.
            for (i, cid) in served_cids.iter().enumerate() {
                let block = fx.blocks.iter().find(|b| b.cid() == *cid);
                if let Some(block) = block {
                    for parent in &block.block().heads {
                        assert!(
                            !served_cids[i..].contains(parent),
                            "blocks are served oldest first"
                        );
                    }
                }
            }
            if let Some((max_blocks, max_bytes)) = served_cap {
                assert!(served_blocks <= max_blocks, "served more blocks than asked");
                assert!(served_bytes <= max_bytes, "served more bytes than asked");
            }
            while let Some(event) = core.poll_event() {
                match event {
                    backfill::Event::Received { request, block } => {
                        let asked = live
                            .get_mut(&request)
                            .expect("blocks only for a request in flight");
                        assert_eq!(block.doc_id(), asked.doc, "a block of the requested doc");
                        asked.blocks += 1;
                        asked.bytes += block.bytes().len() as u64;
                        assert!(asked.blocks <= BF_MAX_BLOCKS, "more blocks than asked");
                        assert!(asked.bytes <= BF_MAX_BYTES, "more bytes than asked");
                    }
                    backfill::Event::Completed { request, peer, .. } => {
                        let asked = live.remove(&request).expect("ends once, while in flight");
                        assert_eq!(asked.peer, peer, "completed by the peer asked");
                        ended.insert(request);
                    }
                    backfill::Event::Failed {
                        request,
                        peer,
                        reason,
                    } => {
                        let asked = live.remove(&request).expect("ends once, while in flight");
                        assert_eq!(asked.peer, peer, "failed with the peer asked");
                        if reason == backfill::Failure::TimedOut {
                            assert!(asked.deadline <= now, "timed out before its deadline");
                        }
                        ended.insert(request);
                    }
                    backfill::Event::PeerMisbehaved { .. } => {}
                }
            }
            assert!(live.len() <= BF_IN_FLIGHT, "max_in_flight holds");
            assert_eq!(core.in_flight(), live.len(), "in flight = fetched − ended");
            assert_eq!(
                core.poll_timeout(),
                live.values().map(|a| a.deadline).min(),
                "the timer is the earliest deadline"
            );
            assert!(
                live.values().all(|a| a.deadline > now) || core.poll_timeout() <= Some(now),
                "expired requests are due"
            );
        }
    });
}

// ---- replicator -------------------------------------------------------------------------------

/// One input of [`replicator_core`].
#[derive(Debug, Arbitrary)]
enum ReplicatorOp {
    Push {
        peer: u8,
        doc: u8,
        heads: Vec<u8>,
        blocks: Vec<u8>,
    },
    Raw {
        peer: u8,
        frame: Vec<u8>,
    },
    PushFrame {
        peer: u8,
        id: u8,
        doc: u8,
        other_collection: bool,
        heads: Vec<u8>,
        blocks: Vec<u8>,
        corrupt: bool,
    },
    Ack {
        peer: u8,
        push: u8,
        status: u8,
        missing: Vec<u8>,
    },
    Respond {
        which: u8,
        status: u8,
    },
    Connect {
        peer: u8,
    },
    Disconnect {
        peer: u8,
    },
    Unreachable {
        peer: u8,
    },
    Forget {
        peer: u8,
    },
    Wait {
        ms: u16,
    },
}

const RP_IN_FLIGHT: usize = 3;
const RP_INBOUND: usize = 3;
const RP_QUOTA: u64 = 6000;
const RP_WINDOW: Duration = Duration::from_secs(10);

/// Per source: when it was first charged and what it was let through.
struct Charged {
    since: Instant,
    bytes: u64,
    unanswered: BTreeSet<replicator::InboundId>,
}

/// A replicator core (with or without an allow list, small quotas) driven by arbitrary
/// inputs. Checks: no panic; pushes in flight per target match the pushes made and stay within
/// `max_in_flight`; each push ends once (acked, refused, failed) with its own peer and document,
/// or is forgotten; unanswered pushes per source stay within `max_inbound_per_source`; the
/// bytes let through from a source stay within its token bucket (`quota_bytes` plus the
/// refill since it was first seen); only allowed sources get through; every sent frame is
/// within the cap and decodes.
///
/// The unanswered count is checked leniently: a `REJECTED` ack for an id also forgets an
/// earlier unanswered push of the same id (the strict count is [`replicator_core_strict`]).
pub fn replicator_core(data: &[u8]) {
    replicator_run(data, false);
}

/// [`replicator_core`], counting unanswered pushes as the coordinator holds them: every
/// [`Received`](replicator::Event::Received) push not yet answered with
/// [`respond`](replicator::Replicator::respond) nor dropped by a disconnect. It found a
/// source that reused the id of an unanswered valid push for an invalid one making the core
/// forget the first (its `REJECTED` ack removed the id), so any number of valid pushes could
/// stay unanswered at the coordinator; a reused id is now a violation and ignored.
pub fn replicator_core_strict(data: &[u8]) {
    replicator_run(data, true);
}

fn replicator_run(data: &[u8], strict: bool) {
    let Some((first, ops)) = script::<ReplicatorOp>(data) else {
        return;
    };
    FIXTURE.with(|fx| {
        let allowed: Option<BTreeSet<u16>> = (first & 1 == 1).then(|| [1, 2].into());
        let config = replicator::Config::default()
            .with_max_in_flight(RP_IN_FLIGHT)
            .with_max_inbound_per_source(RP_INBOUND)
            .with_quota(RP_QUOTA, RP_WINDOW)
            .with_max_sources(2)
            .with_push_timeout(Duration::from_secs(5))
            .with_retry_intervals(vec![Duration::from_secs(1), Duration::from_secs(3)])
            .with_allowed_sources(allowed.clone());
        let max_frame = config.max_frame_bytes();
        let mut core = replicator::Replicator::<u16>::new(config);
        let mut clock = Clock::new();
        let mut pushes: BTreeMap<replicator::PushId, (u16, DocId)> = BTreeMap::new();
        let mut sources: BTreeMap<u16, Charged> = BTreeMap::new();
        let mut received = 0u64;
        for op in ops.into_iter().take(128) {
            let now = clock.now;
            match op {
                ReplicatorOp::Push {
                    peer,
                    doc,
                    heads,
                    blocks,
                } => {
                    let (peer, doc) = (u16::from(peer % 5), fx.doc(doc));
                    let blocks = blocks.iter().take(8).map(|&s| fx.block_bytes(s, false));
                    let result = core.push(
                        peer,
                        "T",
                        fx.collection,
                        doc,
                        fx.cids(&heads),
                        blocks.collect(),
                        now,
                    );
                    if let Ok(id) = result {
                        assert!(pushes.insert(id, (peer, doc)).is_none(), "fresh push ids");
                    }
                }
                ReplicatorOp::Raw { peer, frame } => {
                    core.handle_frame(u16::from(peer % 5), &frame, now)
                }
                ReplicatorOp::PushFrame {
                    peer,
                    id,
                    doc,
                    other_collection,
                    heads,
                    blocks,
                    corrupt,
                } => {
                    let collection = if other_collection {
                        fx.other_collection
                    } else {
                        fx.collection
                    };
                    let push = replicator_pb::Push {
                        id: u64::from(id % 8),
                        collection: "T".into(),
                        collection_id: collection.0.to_bytes(),
                        doc_id: fx.doc(doc).to_bytes().to_vec(),
                        heads: heads.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                        blocks: blocks
                            .iter()
                            .take(16)
                            .enumerate()
                            .map(|(i, &s)| fx.block_bytes(s, corrupt && i == 0))
                            .collect(),
                    };
                    let frame = replicator_pb::Frame {
                        kind: replicator_pb::mod_Frame::OneOfkind::push(push),
                    };
                    core.handle_frame(u16::from(peer % 5), &body(&frame), now);
                }
                ReplicatorOp::Ack {
                    peer,
                    push,
                    status,
                    missing,
                } => {
                    let ids: Vec<(replicator::PushId, u16)> =
                        pushes.iter().map(|(id, (p, _))| (*id, *p)).collect();
                    let (id, to) = match ids.get(usize::from(push) % ids.len().max(1)) {
                        Some(&(id, p)) if push < 200 => {
                            (id.0, if peer < 128 { p } else { u16::from(peer % 5) })
                        }
                        _ => (u64::from(push), u16::from(peer % 5)),
                    };
                    let ack = replicator_pb::Ack {
                        id,
                        status: replicator_pb::AckStatus::from(i32::from(status % 8)),
                        missing: missing.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                    };
                    let frame = replicator_pb::Frame {
                        kind: replicator_pb::mod_Frame::OneOfkind::ack(ack),
                    };
                    core.handle_frame(to, &body(&frame), now);
                }
                ReplicatorOp::Respond { which, status } => {
                    let open: Vec<(u16, replicator::InboundId)> = sources
                        .iter()
                        .flat_map(|(p, c)| c.unanswered.iter().map(|id| (*p, *id)))
                        .collect();
                    let (peer, id) = match open.get(usize::from(which) % open.len().max(1)) {
                        Some(&found) => found,
                        None => (
                            u16::from(which % 5),
                            replicator::InboundId(u64::from(which)),
                        ),
                    };
                    let status = match status % 6 {
                        0 => replicator::Status::Durable,
                        1 => replicator::Status::Unauthorized,
                        2 => replicator::Status::UnknownCollection,
                        3 => replicator::Status::Missing(fx.cids(&[status, 250])),
                        4 => replicator::Status::Rejected,
                        _ => replicator::Status::Busy,
                    };
                    core.respond(peer, id, status, now);
                    if let Some(c) = sources.get_mut(&peer) {
                        c.unanswered.remove(&id);
                    }
                }
                ReplicatorOp::Connect { peer } => core.handle_connected(u16::from(peer % 5), now),
                ReplicatorOp::Disconnect { peer } => {
                    let peer = u16::from(peer % 5);
                    core.handle_disconnected(peer, now);
                    if let Some(c) = sources.get_mut(&peer) {
                        c.unanswered.clear();
                    }
                }
                ReplicatorOp::Unreachable { peer } => {
                    core.handle_unreachable(u16::from(peer % 5), now);
                }
                ReplicatorOp::Forget { peer } => {
                    let peer = u16::from(peer % 5);
                    core.forget(&peer);
                    pushes.retain(|_, (p, _)| *p != peer);
                }
                ReplicatorOp::Wait { ms } => {
                    let now = clock.wait(ms);
                    core.handle_timeout(now);
                }
            }
            let now = clock.now;
            while let Some(t) = core.poll_transmit() {
                let frame = decode_message::<replicator_pb::Frame>(sent(&t.frame, max_frame))
                    .expect("a sent frame decodes");
                if let replicator_pb::mod_Frame::OneOfkind::ack(ack) = frame.kind
                    && ack.status == replicator_pb::AckStatus::REJECTED
                    && !strict
                    && let Some(c) = sources.get_mut(&t.peer)
                {
                    c.unanswered.remove(&replicator::InboundId(ack.id));
                }
            }
            while let Some(event) = core.poll_event() {
                match event {
                    replicator::Event::Acked {
                        push, peer, doc, ..
                    }
                    | replicator::Event::Failed {
                        push, peer, doc, ..
                    }
                    | replicator::Event::Refused {
                        push, peer, doc, ..
                    } => {
                        let made = pushes.remove(&push).expect("a push ends once");
                        assert_eq!(made, (peer, doc), "an end names the push's peer and doc");
                    }
                    replicator::Event::Received {
                        peer,
                        id,
                        blocks,
                        doc,
                        ..
                    } => {
                        received += 1;
                        if let Some(allowed) = &allowed {
                            assert!(allowed.contains(&peer), "a source not on the allow list");
                        }
                        assert!(
                            blocks.iter().all(|b| b.doc_id() == doc),
                            "blocks of the doc"
                        );
                        let c = sources.entry(peer).or_insert(Charged {
                            since: now,
                            bytes: 0,
                            unanswered: BTreeSet::new(),
                        });
                        c.bytes += blocks.iter().map(|b| b.bytes().len() as u64).sum::<u64>();
                        c.unanswered.insert(id);
                        let refill = RP_QUOTA as f64 * (now - c.since).as_secs_f64()
                            / RP_WINDOW.as_secs_f64();
                        assert!(
                            c.bytes as f64 <= RP_QUOTA as f64 + refill + 1.0,
                            "a source got past its quota: {} bytes in {:?}",
                            c.bytes,
                            now - c.since
                        );
                        assert!(c.unanswered.len() <= RP_INBOUND, "max_inbound_per_source");
                    }
                    replicator::Event::PeerMisbehaved { .. } | replicator::Event::Ready { .. } => {}
                }
            }
            for peer in 0..5u16 {
                let n = core.in_flight(&peer).count();
                assert!(n <= RP_IN_FLIGHT, "max_in_flight holds");
                let made = pushes.values().filter(|(p, _)| *p == peer).count();
                assert_eq!(n, made, "in flight = pushed − ended");
            }
            assert_eq!(
                core.stats().received,
                received,
                "received counts Received events"
            );
        }
    });
}

// ---- head exchange ----------------------------------------------------------------------------

/// A hand-made head-exchange message, sent by the attacker or spoofing the honest peer.
#[derive(Debug, Arbitrary)]
enum Forged {
    Hello {
        session: u64,
        mode: u8,
        other: bool,
        root: Vec<u8>,
        count: u64,
    },
    Sketches {
        session: u8,
        status: u8,
        level: u32,
        cells: Vec<u8>,
        fill: u8,
    },
    SketchRequest {
        session: u64,
        level: u32,
    },
    Want {
        session: u64,
        docs: Vec<u8>,
        many: u16,
    },
    Heads {
        session: u8,
        docs: Vec<(u8, Vec<u8>)>,
        done: bool,
        offer: bool,
    },
    ListRequest {
        session: u64,
        key: Vec<u8>,
        after: u8,
        before: u8,
        limit: u32,
    },
    ListPage {
        session: u8,
        items: Vec<u8>,
        before: u8,
        last: bool,
    },
}

/// One input of [`head_sync_core`]. `b` picks the core: A (peer 1) or B (peer 2).
#[derive(Debug, Arbitrary)]
enum HeadSyncOp {
    Pull {
        b: bool,
        both: bool,
    },
    Push {
        b: bool,
        both: bool,
    },
    PullDocs {
        b: bool,
        docs: Vec<u8>,
    },
    PushDocs {
        b: bool,
        docs: Vec<u8>,
    },
    Deliver {
        b: bool,
        n: u8,
    },
    Drop {
        b: bool,
    },
    Duplicate {
        b: bool,
    },
    Corrupt {
        b: bool,
        at: u16,
        xor: u8,
    },
    Raw {
        b: bool,
        frame: Vec<u8>,
    },
    Forge {
        b: bool,
        spoof: bool,
        message: Forged,
    },
    Disconnect,
    Wait {
        ms: u16,
    },
}

const HS_SESSIONS: usize = 4;
const HS_DOCS_PER_FRAME: usize = 16;
const HS_WANTED: usize = 64;
const HS_LIST_PAGE: usize = 32;

/// One side of the head-exchange harness.
struct Side {
    core: head_sync::HeadSync<u16>,
    source: head_sync::MemorySource,
    /// Frames for this side, from the other.
    inbox: VecDeque<Vec<u8>>,
    live: BTreeMap<head_sync::SessionId, Started>,
}

struct Started {
    pull: bool,
    honest: bool,
    collections: Vec<CollectionId>,
    differs: BTreeMap<DocId, Vec<Cid>>,
}

/// Two honest head-exchange cores (A = peer 1, B = peer 2) with fuzz-chosen document sets,
/// joined by a link the input may drop, duplicate, corrupt and inject into, plus an attacker
/// (peer 3) sending arbitrary and hand-made messages. Checks: no panic; sessions in flight
/// match those started and stay within `max_sessions`; each session ends once; documents
/// reported per session stay within `max_wanted`; every sent frame is within the cap, decodes,
/// and names at most `max_docs_per_frame` documents (Want, Heads) or `list_page` items; and a
/// pull over an untampered link that completes reports exactly the documents whose heads differ
/// (when they are within `max_wanted`).
pub fn head_sync_core(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(items) = Vec::<(u8, u8, u8)>::arbitrary(&mut input) else {
        return;
    };
    let Ok(bulk) = input.arbitrary::<u16>() else {
        return;
    };
    let Ok(ops) = Vec::<HeadSyncOp>::arbitrary(&mut input) else {
        return;
    };
    FIXTURE.with(|fx| {
        let config = head_sync::Config::default()
            .with_max_sessions(HS_SESSIONS)
            .with_max_collections(4)
            .with_max_docs_per_frame(HS_DOCS_PER_FRAME)
            .with_max_wanted(HS_WANTED)
            .with_list_page(HS_LIST_PAGE)
            .with_max_listed(4096)
            .with_session_timeout(Duration::from_secs(5));
        let mut sides = [1u64, 2].map(|seed| Side {
            core: head_sync::HeadSync::new(config.clone(), seed),
            source: head_sync::MemorySource::new(),
            inbox: VecDeque::new(),
            live: BTreeMap::new(),
        });
        let collections = [fx.collection, fx.other_collection];
        let head = |sel: u8| Cid::try_from(fx.cid_bytes(sel % 250).as_slice()).expect("a CID");
        for (doc, heads, side) in items.into_iter().take(200) {
            let collection = collections[usize::from(doc & 1)];
            let d = DocId::from_bytes([doc; 16]);
            let (a, b) = (vec![head(heads)], vec![head(heads.wrapping_add(1))]);
            match side % 4 {
                0 => {
                    sides[0].source.put(collection, d, a.clone());
                    sides[1].source.put(collection, d, a);
                }
                1 => sides[0].source.put(collection, d, a),
                2 => sides[1].source.put(collection, d, b),
                _ => {
                    sides[0].source.put(collection, d, a);
                    sides[1].source.put(collection, d, b);
                }
            }
        }
        // Enough documents on one side to defeat every sketch level: the exact listing runs.
        let bulk = if bulk % 8 == 0 {
            usize::from(bulk) % 1500
        } else {
            0
        };
        for i in 0..bulk {
            let mut d = [0u8; 16];
            d[..2].copy_from_slice(&(i as u16).to_be_bytes());
            d[15] = 0xee;
            sides[usize::from(i % 3 == 0)].source.put(
                fx.collection,
                DocId::from_bytes(d),
                vec![head(i as u8)],
            );
        }
        let max_frame = crate::wire::DEFAULT_MAX_FRAME_BYTES;
        let mut clock = Clock::new();
        let mut tampered = false;
        for op in ops.into_iter().take(160) {
            let now = clock.now;
            let id = |b: bool| usize::from(b);
            match op {
                HeadSyncOp::Pull { b, both } | HeadSyncOp::Push { b, both } => {
                    let pull = matches!(op, HeadSyncOp::Pull { .. });
                    let cs = if both {
                        &collections[..]
                    } else {
                        &collections[..1]
                    };
                    let side = &mut sides[id(b)];
                    let peer = if b { 1 } else { 2 };
                    let started = if pull {
                        side.core.pull(peer, cs, &side.source, now)
                    } else {
                        side.core.push(peer, cs, &side.source, now)
                    };
                    if let Some(s) = started {
                        side.live.insert(
                            s,
                            Started {
                                pull,
                                honest: !tampered,
                                collections: cs.to_vec(),
                                differs: BTreeMap::new(),
                            },
                        );
                    }
                }
                HeadSyncOp::PullDocs { b, ref docs } | HeadSyncOp::PushDocs { b, ref docs } => {
                    let pull = matches!(op, HeadSyncOp::PullDocs { .. });
                    let docs: Vec<DocId> = docs
                        .iter()
                        .take(40)
                        .map(|&d| DocId::from_bytes([d; 16]))
                        .collect();
                    let side = &mut sides[id(b)];
                    let peer = if b { 1 } else { 2 };
                    let started = if pull {
                        side.core.pull_documents(peer, &docs, now)
                    } else {
                        side.core.push_documents(peer, &docs, &side.source, now)
                    };
                    if let Some(s) = started {
                        side.live.insert(
                            s,
                            Started {
                                pull,
                                honest: false,
                                collections: Vec::new(),
                                differs: BTreeMap::new(),
                            },
                        );
                    }
                }
                HeadSyncOp::Deliver { b, n } => {
                    for _ in 0..=(n % 4) {
                        let from = if b { 1 } else { 2 };
                        let side = &mut sides[id(b)];
                        let Some(frame) = side.inbox.pop_front() else {
                            break;
                        };
                        side.core.handle_frame(from, &frame, &side.source, now);
                        route(&mut sides, max_frame);
                    }
                }
                HeadSyncOp::Drop { b } => {
                    tampered |= sides[id(b)].inbox.pop_front().is_some();
                }
                HeadSyncOp::Duplicate { b } => {
                    let side = &mut sides[id(b)];
                    if let Some(frame) = side.inbox.front().cloned() {
                        side.inbox.push_back(frame);
                        tampered = true;
                    }
                }
                HeadSyncOp::Corrupt { b, at, xor } => {
                    if let Some(frame) = sides[id(b)].inbox.front_mut()
                        && !frame.is_empty()
                    {
                        let at = usize::from(at) % frame.len();
                        frame[at] ^= xor.max(1);
                        tampered = true;
                    }
                }
                HeadSyncOp::Raw { b, frame } => {
                    let side = &mut sides[id(b)];
                    side.core.handle_frame(3, &frame, &side.source, now);
                }
                HeadSyncOp::Forge { b, spoof, message } => {
                    let from = match (spoof, b) {
                        (false, _) => 3,
                        (true, true) => 1,
                        (true, false) => 2,
                    };
                    tampered |= spoof;
                    let side = &mut sides[id(b)];
                    let sessions: Vec<u64> = side.live.keys().map(|s| s.0).collect();
                    let frame = forge(fx, &message, &sessions, &collections);
                    side.core.handle_frame(from, &frame, &side.source, now);
                }
                HeadSyncOp::Disconnect => {
                    sides[0].core.handle_disconnected(2, now);
                    sides[1].core.handle_disconnected(1, now);
                    for side in &mut sides {
                        tampered |= !side.inbox.is_empty();
                        side.inbox.clear();
                    }
                }
                HeadSyncOp::Wait { ms } => {
                    let now = clock.wait(ms);
                    for side in &mut sides {
                        side.core.handle_timeout(now);
                    }
                }
            }
            route(&mut sides, max_frame);
            for i in 0..2 {
                let (this, other) = if i == 0 {
                    let (a, b) = sides.split_at_mut(1);
                    (&mut a[0], &b[0])
                } else {
                    let (a, b) = sides.split_at_mut(1);
                    (&mut b[0], &a[0])
                };
                check_head_sync_events(this, other);
            }
        }
    });
}

/// Moves every frame each side sent to the other side's inbox (the attacker's are dropped),
/// checking each against the bounds.
fn route(sides: &mut [Side; 2], max_frame: usize) {
    for i in 0..2 {
        while let Some(t) = sides[i].core.poll_transmit() {
            let body = sent(&t.frame, max_frame);
            let frame = decode_message::<head_sync_pb::Frame>(body).expect("a sent frame decodes");
            use head_sync_pb::mod_Frame::OneOfkind as K;
            match &frame.kind {
                K::want(m) => assert!(m.docs.len() <= HS_DOCS_PER_FRAME, "max_docs_per_frame"),
                K::heads(m) => assert!(m.docs.len() <= HS_DOCS_PER_FRAME, "max_docs_per_frame"),
                K::list_page(m) => assert!(m.items.len() / 24 <= HS_LIST_PAGE, "list_page"),
                K::hello(m) => assert!(m.collections.len() <= 4, "max_collections"),
                _ => {}
            }
            let to = match t.peer {
                1 => 0,
                2 => 1,
                _ => continue,
            };
            sides[to].inbox.push_back(body.to_vec());
        }
    }
}

fn check_head_sync_events(side: &mut Side, other: &Side) {
    while let Some(event) = side.core.poll_event() {
        match event {
            head_sync::Event::Differs {
                session,
                doc,
                heads,
                ..
            } => {
                let started = side
                    .live
                    .get_mut(&session)
                    .expect("differs for a live session");
                assert!(started.pull, "differs only in a pull");
                assert!(heads.len() <= hypha_crdt::block::MAX_LINKS);
                started.differs.insert(doc, heads);
                assert!(started.differs.len() <= HS_WANTED, "max_wanted holds");
            }
            head_sync::Event::Completed { session, .. } => {
                let started = side.live.remove(&session).expect("a session ends once");
                if started.pull && started.honest {
                    let mut expected = BTreeMap::new();
                    for c in &started.collections {
                        for (doc, _) in other.source.items(c, None, usize::MAX) {
                            let theirs = other.source.heads(&doc).map(|(_, h)| h);
                            if theirs != side.source.heads(&doc).map(|(_, h)| h) {
                                expected.insert(doc, theirs.unwrap_or_default());
                            }
                        }
                    }
                    if expected.len() <= HS_WANTED {
                        assert_eq!(
                            started.differs, expected,
                            "an honest pull reports exactly the differing documents"
                        );
                    }
                }
            }
            head_sync::Event::Failed { session, .. } => {
                side.live.remove(&session).expect("a session ends once");
            }
            head_sync::Event::Offered { heads, .. } => {
                assert!(heads.len() <= hypha_crdt::block::MAX_LINKS);
            }
            head_sync::Event::PeerMisbehaved { .. } | head_sync::Event::Refused { .. } => {}
        }
    }
    assert!(side.live.len() <= HS_SESSIONS, "max_sessions holds");
    assert_eq!(
        side.core.in_flight(),
        side.live.len(),
        "in flight = started − ended"
    );
}

use head_sync::SyncSource as _;

fn forge(
    fx: &Fixture,
    message: &Forged,
    sessions: &[u64],
    collections: &[CollectionId; 2],
) -> Vec<u8> {
    use head_sync_pb::mod_Frame::OneOfkind as K;
    let session = |sel: u8| match sessions.get(usize::from(sel) % sessions.len().max(1)) {
        Some(&s) if sel < 200 => s,
        _ => u64::from(sel),
    };
    let tag = |other: bool| {
        let c = collections[usize::from(other)];
        let digest = c.0.hash().digest();
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    };
    let kind = match message {
        Forged::Hello {
            session,
            mode,
            other,
            root,
            count,
        } => K::hello(head_sync_pb::Hello {
            session: *session,
            mode: head_sync_pb::Mode::from(i32::from(mode % 4)),
            collections: vec![head_sync_pb::CollectionRoot {
                collection_tag: tag(*other),
                root: root.iter().copied().cycle().take(32).collect(),
                // Outside the strict variants, counts stay below 2⁶², clear of the known
                // overflow in the responder (see `node_coordinator_strict`).
                count: if STRICT.get() { *count } else { *count >> 2 },
            }],
        }),
        Forged::Sketches {
            session: s,
            status,
            level,
            cells,
            fill,
        } => {
            let size = hypha_crdt::sync_index::SKETCH_CELLS[usize::from(*fill % 3)];
            let mut iblt = Iblt::new(size).to_bytes();
            for (i, b) in cells.iter().enumerate().take(256) {
                let at = (i * 131 + usize::from(*fill)) % iblt.len().max(1);
                if let Some(x) = iblt.get_mut(at) {
                    *x ^= b;
                }
            }
            K::sketches(head_sync_pb::Sketches {
                session: session(*s),
                collections: vec![head_sync_pb::CollectionSketch {
                    collection_tag: tag(fill & 1 == 1),
                    status: head_sync_pb::SketchStatus::from(i32::from(status % 7)),
                    level: *level % 4,
                    iblt,
                }],
            })
        }
        Forged::SketchRequest { session, level } => {
            K::sketch_request(head_sync_pb::SketchRequest {
                session: *session,
                collection: fx.collection.0.to_bytes(),
                level: *level,
            })
        }
        Forged::Want {
            session,
            docs,
            many,
        } => {
            let mut list: Vec<Vec<u8>> = docs
                .iter()
                .map(|&d| fx.doc(d).to_bytes().to_vec())
                .collect();
            list.extend(
                (0..usize::from(*many % 5000))
                    .map(|i| DocId::from_bytes([i as u8; 16]).to_bytes().to_vec()),
            );
            K::want(head_sync_pb::Want {
                session: *session,
                docs: list,
            })
        }
        Forged::Heads {
            session: s,
            docs,
            done,
            offer,
        } => K::heads(head_sync_pb::Heads {
            session: session(*s),
            docs: docs
                .iter()
                .take(64)
                .map(|(d, heads)| head_sync_pb::DocHeads {
                    doc: DocId::from_bytes([*d; 16]).to_bytes().to_vec(),
                    collection_tag: tag(d & 1 == 1),
                    heads: heads.iter().take(8).map(|&h| fx.cid_bytes(h)).collect(),
                })
                .collect(),
            done: *done,
            offer: *offer,
        }),
        Forged::ListRequest {
            session,
            key,
            after,
            before,
            limit,
        } => K::list_request(head_sync_pb::ListRequest {
            session: *session,
            collection: fx.collection.0.to_bytes(),
            key: key.clone(),
            after: if *after == 0 {
                Vec::new()
            } else {
                vec![*after; 16]
            },
            before: if *before == 0 {
                Vec::new()
            } else {
                vec![*before; 16]
            },
            limit: *limit,
        }),
        Forged::ListPage {
            session: s,
            items,
            before,
            last,
        } => K::list_page(head_sync_pb::ListPage {
            session: session(*s),
            collection: fx.collection.0.to_bytes(),
            before: if *before == 0 {
                Vec::new()
            } else {
                vec![*before; 16]
            },
            items: items.clone(),
            last: *last,
        }),
    };
    body(&head_sync_pb::Frame { kind })
}

// ---- connectivity -----------------------------------------------------------------------------

/// One input of [`connectivity_core`].
#[derive(Debug, Arbitrary)]
enum ConnectivityOp {
    Want {
        peer: u8,
        addresses: Vec<Vec<u8>>,
        reason: u8,
    },
    Unwant {
        peer: u8,
        reason: u8,
    },
    Follow {
        key: u8,
    },
    Unfollow {
        key: u8,
    },
    Find {
        key: u8,
    },
    AddRelay {
        peer: u8,
        addresses: Vec<Vec<u8>>,
    },
    Connected {
        peer: u8,
        relay: Option<u8>,
        inbound: bool,
    },
    Disconnected {
        peer: u8,
    },
    DialFailed {
        peer: u8,
    },
    Reachability {
        which: u8,
    },
    RelayReserved {
        peer: u8,
    },
    RelayFailed {
        peer: u8,
    },
    Providers {
        key: u8,
        providers: Vec<(u8, Vec<Vec<u8>>)>,
    },
    HolePunch {
        peer: u8,
        ok: bool,
    },
    Wait {
        ms: u16,
    },
    /// Executes up to `n` queued commands (the rest wait: the queue's bound is exercised).
    Drain {
        n: u8,
    },
}

const CN_WANTED: usize = 8;
const CN_DIALS: usize = 2;
const CN_RELAYS: usize = 1;
const CN_ADDRESSES: usize = 2;
const CN_ADDRESS_BYTES: usize = 16;
const CN_QUEUE: usize = 8;

fn reason(sel: u8) -> connectivity::Reason {
    use connectivity::Reason::*;
    [Configured, Replicator, Remembered, Provider][usize::from(sel % 4)]
}

/// A connectivity core with small bounds driven by arbitrary inputs, its commands executed
/// only when the input says so. Checks: no panic; dials in flight within
/// `max_dials_in_flight`; queued commands within `max_queued_commands`; reservations within
/// `max_relays`; the wanted set within `max_wanted` plus the peers wanted for a
/// redial-forever reason (which may exceed it, as documented); every dial and reservation
/// names at most `max_addresses_per_peer` addresses of at most `max_address_bytes`; connections
/// are one per connected peer.
pub fn connectivity_core(data: &[u8]) {
    let Some((seed, ops)) = script::<ConnectivityOp>(data) else {
        return;
    };
    let config = connectivity::Config::default()
        .with_backoff_min(Duration::from_millis(100))
        .with_backoff_max(Duration::from_secs(2))
        .with_max_attempts_best_effort(3)
        .with_max_wanted(CN_WANTED)
        .with_max_dials_in_flight(CN_DIALS)
        .with_dial_timeout(Duration::from_secs(5))
        .with_provider_refresh(Duration::from_secs(10))
        .with_lookup_interval(Duration::from_secs(1))
        .with_max_keys(4)
        .with_max_providers_per_lookup(3)
        .with_max_relays(CN_RELAYS)
        .with_max_known_relays(3)
        .with_max_addresses_per_peer(CN_ADDRESSES)
        .with_max_address_bytes(CN_ADDRESS_BYTES)
        .with_max_queued_commands(CN_QUEUE);
    let mut core = connectivity::Connectivity::<u16>::new(config, u64::from(seed));
    let mut clock = Clock::new();
    let mut forever: BTreeMap<u16, BTreeSet<connectivity::Reason>> = BTreeMap::new();
    let mut connected: BTreeSet<u16> = BTreeSet::new();
    let key = |k: u8| vec![k % 6];
    for op in ops.into_iter().take(192) {
        let now = clock.now;
        match op {
            ConnectivityOp::Want {
                peer,
                addresses,
                reason: r,
            } => {
                let (peer, r) = (u16::from(peer % 12), reason(r));
                let addresses = addresses.into_iter().take(8).collect();
                core.want(peer, addresses, r, now);
                if !r.is_best_effort() {
                    forever.entry(peer).or_default().insert(r);
                }
            }
            ConnectivityOp::Unwant { peer, reason: r } => {
                let (peer, r) = (u16::from(peer % 12), reason(r));
                core.unwant(peer, r, now);
                if let Some(reasons) = forever.get_mut(&peer) {
                    reasons.remove(&r);
                    if reasons.is_empty() {
                        forever.remove(&peer);
                    }
                }
            }
            ConnectivityOp::Follow { key: k } => {
                core.follow(key(k), now);
            }
            ConnectivityOp::Unfollow { key: k } => core.unfollow(&key(k), now),
            ConnectivityOp::Find { key: k } => {
                core.find_providers(key(k), now);
            }
            ConnectivityOp::AddRelay { peer, addresses } => {
                let addresses = addresses.into_iter().take(8).collect();
                core.add_relay(u16::from(peer % 12), addresses, now);
            }
            ConnectivityOp::Connected {
                peer,
                relay,
                inbound,
            } => {
                let peer = u16::from(peer % 12);
                let path = match relay {
                    Some(r) => connectivity::Path::Relayed {
                        relay: u16::from(r % 12),
                    },
                    None => connectivity::Path::Direct,
                };
                core.handle_connected(peer, path, inbound, now);
                connected.insert(peer);
            }
            ConnectivityOp::Disconnected { peer } => {
                let peer = u16::from(peer % 12);
                core.handle_disconnected(peer, now);
                connected.remove(&peer);
            }
            ConnectivityOp::DialFailed { peer } => {
                core.handle_dial_failed(u16::from(peer % 12), now)
            }
            ConnectivityOp::Reachability { which } => {
                let r = [
                    connectivity::Reachability::Private,
                    connectivity::Reachability::Public,
                    connectivity::Reachability::Unknown,
                ][usize::from(which % 3)];
                core.handle_reachability(r, now);
            }
            ConnectivityOp::RelayReserved { peer } => {
                core.handle_relay_reserved(u16::from(peer % 12), now);
            }
            ConnectivityOp::RelayFailed { peer } => {
                core.handle_relay_failed(u16::from(peer % 12), now)
            }
            ConnectivityOp::Providers { key: k, providers } => {
                let providers = providers
                    .into_iter()
                    .take(32)
                    .map(|(p, a)| (u16::from(p % 12), a.into_iter().take(8).collect()))
                    .collect();
                core.handle_providers(&key(k), providers, now);
            }
            ConnectivityOp::HolePunch { peer, ok } => {
                core.handle_hole_punch(u16::from(peer % 12), ok, now)
            }
            ConnectivityOp::Wait { ms } => {
                let now = clock.wait(ms);
                core.handle_timeout(now);
            }
            ConnectivityOp::Drain { n } => {
                for _ in 0..n {
                    let Some(command) = core.poll_command() else {
                        break;
                    };
                    match command {
                        connectivity::Command::Dial { addresses, .. }
                        | connectivity::Command::ReserveRelay { addresses, .. } => {
                            assert!(addresses.len() <= CN_ADDRESSES, "max_addresses_per_peer");
                            assert!(
                                addresses.iter().all(|a| a.len() <= CN_ADDRESS_BYTES),
                                "max_address_bytes"
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        let stats = core.stats();
        assert!(
            stats.dials_in_flight <= CN_DIALS,
            "max_dials_in_flight holds"
        );
        assert!(
            stats.queued_commands <= CN_QUEUE,
            "max_queued_commands holds"
        );
        // Reservations are capped while private, cancelled when public; with the command
        // queue full the cancellations wait for room, and while reachability is unknown the
        // core keeps what the driver reports (at most the known relays).
        // A decision starved by a full queue waits for the next input (`poll_timeout` is then
        // the last input's time), even once the driver has made room.
        let starved = core.poll_timeout() == Some(clock.now);
        if stats.queued_commands < CN_QUEUE && !starved {
            match core.reachability() {
                connectivity::Reachability::Private => {
                    assert!(stats.reserved_relays <= CN_RELAYS, "max_relays holds");
                }
                connectivity::Reachability::Public => {
                    assert_eq!(
                        stats.reserved_relays, 0,
                        "a public node keeps no reservation"
                    );
                }
                connectivity::Reachability::Unknown => {}
            }
        }
        assert!(
            stats.wanted <= CN_WANTED + forever.len(),
            "max_wanted holds for best-effort peers: {} wanted, {} forever",
            stats.wanted,
            forever.len()
        );
        assert_eq!(
            stats.connected,
            connected.len(),
            "one entry per connected peer"
        );
        for peer in &connected {
            assert!(core.is_connected(peer));
        }
    }
}

// ---- the coordinator --------------------------------------------------------------------------

/// One input of [`node_coordinator`]. Node 0 follows collection `T`; node 1 writes it and
/// has node 0 as replicator target; peer 7 is an attacker with no node.
#[derive(Debug, Arbitrary)]
enum NodeOp {
    /// Garbage on a stream protocol from the attacker.
    Raw {
        protocol: u8,
        frame: Vec<u8>,
    },
    /// Garbage on pubsub from the attacker.
    Pubsub {
        topic: u8,
        data: Vec<u8>,
    },
    /// A valid-but-hostile pubsub update from the attacker: blocks for unknown documents,
    /// missing parents, many heads, the wrong topic.
    Update {
        block: u8,
        heads: Vec<u8>,
        many: u16,
        inline: bool,
        topic: u8,
        corrupt: bool,
    },
    /// A well-formed protocol message from the attacker.
    Backfill(BackfillForge),
    Push {
        id: u8,
        doc: u8,
        heads: Vec<u8>,
        blocks: Vec<u8>,
        corrupt: bool,
    },
    HeadSync(Forged),
    /// Node 1 writes.
    Write {
        create: bool,
        doc: u8,
        points: i8,
    },
    /// Delivers up to `n + 1` frames and messages queued for node `to`.
    Deliver {
        to: bool,
        n: u8,
    },
    /// Executes up to `n + 1` of node `node`'s persists, or fails them.
    Persist {
        node: bool,
        n: u8,
        fail: bool,
    },
    Connect {
        attacker: bool,
    },
    Disconnect {
        attacker: bool,
    },
    Wait {
        ms: u16,
    },
}

/// A backfill message from the attacker to node 0.
#[derive(Debug, Arbitrary)]
enum BackfillForge {
    Request {
        id: u64,
        doc: u8,
        wanted: Vec<u8>,
        have: Vec<u8>,
        max_blocks: u32,
    },
    Response {
        id: u8,
        blocks: Vec<u8>,
        corrupt: bool,
        done: bool,
        status: u8,
    },
}

/// What a host delivers to its node.
enum Delivery {
    Frame(node::Protocol, Vec<u8>),
    Pubsub(String, Vec<u8>),
}

struct Host {
    node: node::Node<u16>,
    store: hypha_store::Store,
    persists: VecDeque<(node::PersistToken, hypha_store::Mutation)>,
    inbox: VecDeque<Delivery>,
}

const ND_PERSISTS: usize = 16;
/// Commands one input may cause, drained at once. An input touches a bounded number of
/// peers (three), sessions (`max_sessions` = 4), persists (`max_persists` = 16 plus the
/// API's), outbox documents (`outbox_batch` = 64) and topics: a few hundred at most. A core or
/// coordinator queue that grows with what a peer sends would blow through it.
const ND_COMMANDS_PER_INPUT: usize = 512;
const ATTACKER: u16 = 7;

/// Two coordinators on memory stores and an attacker. Node 1 writes documents and replicates
/// them to node 0, which follows the collection; the input interleaves deliveries, persist
/// results (successes and failures, in order), connections, timeouts, and the attacker's
/// garbage and valid-but-hostile frames and pubsub messages. Checks: no panic; garbage from
/// the attacker (a frame or pubsub message that does not decode) yields
/// [`node::Event::PeerMisbehaved`] and a `Reject` verdict; persists of received blocks
/// outstanding never exceed `max_persists`; the commands one input causes stay within
/// 512 (`ND_COMMANDS_PER_INPUT`); every frame sent is within the cap.
pub fn node_coordinator(data: &[u8]) {
    node_run(data);
}

/// [`node_coordinator`], with forged head-exchange Hellos carrying any collection count. It
/// found a Hello whose count differed from the responder's by more than `u64::MAX / 3`
/// overflowing `3 * gap` in the head-exchange responder (`serve_hello`, choosing a sketch
/// level): a panic where overflow checks are on, a wrong level in release; the level now
/// saturates.
pub fn node_coordinator_strict(data: &[u8]) {
    STRICT.set(true);
    let result = std::panic::catch_unwind(|| node_run(data));
    STRICT.set(false);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn node_run(data: &[u8]) {
    let Some((seed, ops)) = script::<NodeOp>(data) else {
        return;
    };
    FIXTURE.with(|fx| {
        let mut clock = Clock::new();
        let mut hosts: Vec<Host> = (0..2u8)
            .map(|i| {
                let config = hypha_store::Config::new(Author::unsigned([10 + i; 32]))
                    .with_namespace(NAMESPACE);
                let store = hypha_store::Store::memory(config).expect("memory store");
                let config = node::Config::new(NAMESPACE)
                    .with_max_persists(ND_PERSISTS)
                    .with_hot_docs(4)
                    .with_anti_entropy(Duration::from_secs(20))
                    .with_backfill(
                        backfill::Config::default()
                            .with_max_in_flight(4)
                            .with_max_blocks(16),
                    )
                    .with_head_sync(
                        head_sync::Config::default()
                            .with_max_sessions(4)
                            .with_max_wanted(64),
                    )
                    .with_replicator(
                        replicator::Config::default()
                            .with_max_in_flight(4)
                            .with_quota(1 << 16, Duration::from_secs(10)),
                    );
                let mut node = node::Node::new(config, u64::from(seed) + u64::from(i));
                node.start(&store, clock.now);
                Host {
                    node,
                    store,
                    persists: VecDeque::new(),
                    inbox: VecDeque::new(),
                }
            })
            .collect();
        // Setup, executed at once: both have the schema, node 0 follows T, node 1 replicates
        // to node 0, and they are connected.
        let now = clock.now;
        for h in &mut hosts {
            let _ = h
                .node
                .submit(hypha_store::Mutation::AddSchema { sdl: SDL.into() }, now);
        }
        settle(&mut hosts, now);
        let h = &mut hosts[0];
        h.node
            .follow_collections(&["T"], &h.store, now)
            .expect("T exists");
        let replicator = hypha_store::Replicator {
            collections: [fx.collection].into(),
            ..Default::default()
        };
        let _ = hosts[1].node.submit(
            hypha_store::Mutation::SetReplicator {
                peer: hypha_store::PeerKey(0u16.to_be_bytes().to_vec()),
                replicator,
            },
            now,
        );
        settle(&mut hosts, now);
        connect(&mut hosts, now);
        settle(&mut hosts, now);
        let mut docs: Vec<DocId> = Vec::new();
        for op in ops.into_iter().take(96) {
            let now = clock.now;
            let mut garbage = false;
            match op {
                NodeOp::Raw { protocol, frame } => {
                    let protocol = node::Protocol::ALL[usize::from(protocol % 3)];
                    garbage = match protocol {
                        node::Protocol::Backfill => {
                            decode_message::<backfill_pb::Frame>(&frame).is_err()
                        }
                        node::Protocol::Replicator => {
                            decode_message::<replicator_pb::Frame>(&frame).is_err()
                        }
                        node::Protocol::HeadSync => {
                            decode_message::<head_sync_pb::Frame>(&frame).is_err()
                        }
                    };
                    let h = &mut hosts[0];
                    h.node
                        .handle_frame(ATTACKER, protocol, &frame, &h.store, now);
                }
                NodeOp::Pubsub { topic, data } => {
                    garbage = pubsub::Update::decode(&data).is_err();
                    let topic = topic_name(fx, topic, None);
                    let h = &mut hosts[0];
                    let verdict = h.node.handle_pubsub(ATTACKER, &topic, &data, &h.store, now);
                    if garbage {
                        assert_eq!(verdict, node::Verdict::Reject, "garbage is rejected");
                    }
                }
                NodeOp::Update {
                    block,
                    heads,
                    many,
                    inline,
                    topic,
                    corrupt,
                } => {
                    let b = &fx.blocks[usize::from(block) % fx.blocks.len()];
                    let mut heads: Vec<Vec<u8>> = heads.iter().map(|&s| fx.cid_bytes(s)).collect();
                    heads.extend(
                        (0..usize::from(many % 1200)).map(|i| {
                            hypha_crdt::cid::raw_cid(&(i as u32).to_be_bytes()).to_bytes()
                        }),
                    );
                    let update = pubsub_pb::Update {
                        doc_id: b.doc_id().to_bytes().to_vec(),
                        collection_id: b.block().delta.collection.0.to_bytes(),
                        cid: b.cid().to_bytes(),
                        block: if inline {
                            fx.block_bytes(block, corrupt)
                        } else {
                            Vec::new()
                        },
                        heads,
                    };
                    let data = {
                        let mut out = Vec::new();
                        update
                            .write_message(&mut quick_protobuf::Writer::new(&mut out))
                            .expect("writing to a Vec cannot fail");
                        out
                    };
                    let topic = topic_name(fx, topic, Some(b));
                    let h = &mut hosts[0];
                    let _ = h.node.handle_pubsub(ATTACKER, &topic, &data, &h.store, now);
                }
                NodeOp::Backfill(forge) => {
                    let kind = match forge {
                        BackfillForge::Request {
                            id,
                            doc,
                            wanted,
                            have,
                            max_blocks,
                        } => backfill_pb::mod_Frame::OneOfkind::request(backfill_pb::Request {
                            id,
                            doc_id: fx.doc(doc).to_bytes().to_vec(),
                            wanted: wanted.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                            have: have.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                            max_blocks,
                            max_bytes: u64::MAX,
                        }),
                        BackfillForge::Response {
                            id,
                            blocks,
                            corrupt,
                            done,
                            status,
                        } => backfill_pb::mod_Frame::OneOfkind::response(backfill_pb::Response {
                            id: u64::from(id % 8),
                            blocks: blocks
                                .iter()
                                .take(16)
                                .enumerate()
                                .map(|(i, &s)| fx.block_bytes(s, corrupt && i == 0))
                                .collect(),
                            done,
                            status: backfill_pb::Status::from(i32::from(status % 6)),
                        }),
                    };
                    let frame = body(&backfill_pb::Frame { kind });
                    let h = &mut hosts[0];
                    h.node
                        .handle_frame(ATTACKER, node::Protocol::Backfill, &frame, &h.store, now);
                }
                NodeOp::Push {
                    id,
                    doc,
                    heads,
                    blocks,
                    corrupt,
                } => {
                    let push = replicator_pb::Push {
                        id: u64::from(id),
                        collection: "T".into(),
                        collection_id: fx.collection.0.to_bytes(),
                        doc_id: fx.doc(doc).to_bytes().to_vec(),
                        heads: heads.iter().take(64).map(|&s| fx.cid_bytes(s)).collect(),
                        blocks: blocks
                            .iter()
                            .take(16)
                            .enumerate()
                            .map(|(i, &s)| fx.block_bytes(s, corrupt && i == 0))
                            .collect(),
                    };
                    let frame = body(&replicator_pb::Frame {
                        kind: replicator_pb::mod_Frame::OneOfkind::push(push),
                    });
                    let h = &mut hosts[0];
                    h.node.handle_frame(
                        ATTACKER,
                        node::Protocol::Replicator,
                        &frame,
                        &h.store,
                        now,
                    );
                }
                NodeOp::HeadSync(message) => {
                    let frame = forge(fx, &message, &[], &[fx.collection, fx.other_collection]);
                    let h = &mut hosts[0];
                    h.node
                        .handle_frame(ATTACKER, node::Protocol::HeadSync, &frame, &h.store, now);
                }
                NodeOp::Write {
                    create,
                    doc,
                    points,
                } => {
                    let mutation = match docs.get(usize::from(doc) % docs.len().max(1)) {
                        Some(&d) if !create => hypha_store::Mutation::Update {
                            doc_id: d,
                            patch: json!({"points": points}),
                        },
                        _ => hypha_store::Mutation::Create {
                            collection: "T".into(),
                            document: json!({"name": format!("{doc}"), "points": points}),
                        },
                    };
                    let h = &mut hosts[1];
                    let _ = h.node.submit(mutation, now);
                }
                NodeOp::Deliver { to, n } => {
                    let i = usize::from(to);
                    for _ in 0..=(n % 8) {
                        let h = &mut hosts[i];
                        let from = 1 - i as u16;
                        match h.inbox.pop_front() {
                            Some(Delivery::Frame(protocol, frame)) => {
                                h.node.handle_frame(from, protocol, &frame, &h.store, now);
                            }
                            Some(Delivery::Pubsub(topic, data)) => {
                                let _ = h.node.handle_pubsub(from, &topic, &data, &h.store, now);
                            }
                            None => break,
                        }
                        drain(&mut hosts);
                    }
                }
                NodeOp::Persist {
                    node: n,
                    n: count,
                    fail,
                } => {
                    for _ in 0..=(count % 8) {
                        let h = &mut hosts[usize::from(n)];
                        let Some((token, mutation)) = h.persists.pop_front() else {
                            break;
                        };
                        let result = if fail {
                            Err(hypha_store::CommitError::Busy)
                        } else {
                            h.store.commit(mutation).map(|r| r.committed)
                        };
                        if let Ok(hypha_store::Committed::Local { block, .. }) = &result
                            && !docs.contains(&block.doc_id())
                        {
                            docs.push(block.doc_id());
                        }
                        h.node.handle_persisted(token, result, &h.store, now);
                        drain(&mut hosts);
                    }
                }
                NodeOp::Connect { attacker } => {
                    if attacker {
                        let h = &mut hosts[0];
                        h.node.handle_connected(
                            ATTACKER,
                            vec![vec![7; 8]],
                            connectivity::Path::Direct,
                            true,
                            &h.store,
                            now,
                        );
                    } else {
                        connect(&mut hosts, now);
                    }
                }
                NodeOp::Disconnect { attacker } => {
                    if attacker {
                        let h = &mut hosts[0];
                        h.node.handle_disconnected(ATTACKER, &h.store, now);
                    } else {
                        for (i, h) in hosts.iter_mut().enumerate() {
                            h.node.handle_disconnected(1 - i as u16, &h.store, now);
                            h.inbox.clear();
                        }
                    }
                }
                NodeOp::Wait { ms } => {
                    let now = clock.wait(ms);
                    for h in &mut hosts {
                        h.node.handle_timeout(&h.store, now);
                    }
                }
            }
            let misbehaved = drain(&mut hosts);
            if garbage {
                assert!(
                    misbehaved.contains(&ATTACKER),
                    "garbage is reported as misbehaviour"
                );
            }
        }
    });
}

fn topic_name(fx: &Fixture, sel: u8, block: Option<&VerifiedBlock>) -> String {
    let (collection, doc) = match block {
        Some(b) => (b.block().delta.collection, b.doc_id()),
        None => (fx.collection, fx.docs[0]),
    };
    match sel % 3 {
        0 => pubsub::collection_topic(NAMESPACE, &collection),
        1 => pubsub::document_topic(NAMESPACE, &collection, &doc),
        _ => format!("{sel}"),
    }
}

fn connect(hosts: &mut [Host], now: Instant) {
    for (i, h) in hosts.iter_mut().enumerate() {
        let other = 1 - i as u16;
        let address = vec![other as u8; 8];
        h.node.handle_connected(
            other,
            vec![address],
            connectivity::Path::Direct,
            i == 0,
            &h.store,
            now,
        );
    }
}

/// Drains every node's commands and events: persists are queued (executed by
/// [`NodeOp::Persist`]), frames and publishes go to the other node. Returns the peers reported
/// as misbehaving.
fn drain(hosts: &mut [Host]) -> BTreeSet<u16> {
    let mut misbehaved = BTreeSet::new();
    for i in 0..hosts.len() {
        let mut count = 0;
        let mut out = Vec::new();
        while let Some(command) = hosts[i].node.poll_command() {
            count += 1;
            assert!(
                count <= ND_COMMANDS_PER_INPUT,
                "commands per input stay bounded"
            );
            match command {
                node::Command::Persist {
                    token, mutation, ..
                } => hosts[i].persists.push_back((token, mutation)),
                node::Command::Transmit {
                    peer,
                    protocol,
                    frame,
                } => {
                    let body = sent(&frame, crate::wire::DEFAULT_MAX_FRAME_BYTES).to_vec();
                    if peer < 2 && usize::from(peer) != i {
                        out.push(Delivery::Frame(protocol, body));
                    }
                }
                node::Command::Publish { topic, data, .. } => {
                    out.push(Delivery::Pubsub(topic, data))
                }
                node::Command::Subscribe { .. }
                | node::Command::Unsubscribe { .. }
                | node::Command::Connect(_) => {}
            }
        }
        hosts[1 - i].inbox.extend(out);
        while let Some(event) = hosts[i].node.poll_event() {
            if let node::Event::PeerMisbehaved { peer, .. } = event {
                misbehaved.insert(peer);
            }
        }
        // `max_persists` gates the persists of received blocks: past it they are dropped.
        // Bookkeeping persists (a remembered peer per connection, outbox acks, hot documents)
        // are not gated and may go past it.
        let h = &hosts[i];
        let ingests = h
            .persists
            .iter()
            .filter(|(_, m)| matches!(m, hypha_store::Mutation::Ingest { .. }))
            .count();
        assert!(
            ingests <= ND_PERSISTS,
            "max_persists holds for received blocks: {ingests} outstanding"
        );
    }
    misbehaved
}

/// Executes every queued persist on both nodes and delivers everything, until quiet (setup).
fn settle(hosts: &mut [Host], now: Instant) {
    for _ in 0..64 {
        drain(hosts);
        let mut busy = false;
        for (i, h) in hosts.iter_mut().enumerate() {
            while let Some((token, mutation)) = h.persists.pop_front() {
                busy = true;
                let result = h.store.commit(mutation).map(|r| r.committed);
                h.node.handle_persisted(token, result, &h.store, now);
            }
            while let Some(d) = h.inbox.pop_front() {
                busy = true;
                let from = 1 - i as u16;
                match d {
                    Delivery::Frame(p, f) => h.node.handle_frame(from, p, &f, &h.store, now),
                    Delivery::Pubsub(t, d) => {
                        let _ = h.node.handle_pubsub(from, &t, &d, &h.store, now);
                    }
                }
            }
        }
        if !busy {
            break;
        }
    }
    drain(hosts);
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_run_on_simple_inputs() {
        let inputs: [Vec<u8>; 3] = [Vec::new(), vec![7; 300], (0..=255).collect()];
        for data in &inputs {
            super::decode_frames(data);
            super::backfill_core(data);
            super::replicator_core(data);
            super::head_sync_core(data);
            super::connectivity_core(data);
            super::node_coordinator(data);
        }
    }
}
