//! Hostile peers (issue 7), through the in-memory harness where the logic lives.
//!
//! Each test plays one attack from a *stranger* — a peer number that is no node of the
//! network, whose frames and pubsub messages the test writes by hand
//! ([`Network::inject_frame`], [`Network::inject_pubsub`]) — against a victim node (1), while
//! an honest node (0) keeps updating a document the victim follows. Each asserts the typed
//! rejection, that nothing was written that should not be, that the honest pair converged, and
//! that the victim's memory accounting during the attack stays within 2× its peak before it.
//!
//! # Memory accounting
//!
//! The victim's memory is its memory store plus its coordinator's queues and maps: applied
//! blocks, pending blocks, documents and outbox entries from [`hypha_store::Stats`], plus
//! [`Gauges::total`] (persists awaiting results, fetches, unanswered pushes, backfill requests
//! and head-exchange sessions in flight, queued commands and events). It is sampled every
//! millisecond of virtual time; the baseline is its peak over the same honest traffic
//! before the attack, with an honest history of [`HISTORY`] blocks already replicated.
//!
//! Attacks 1 and 3 at the frame level are the `frames_*` tests at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hypha_crdt::block::{MAX_BLOCK_BYTES, MAX_LINKS};
use hypha_crdt::cid::dag_cbor_cid;
use hypha_crdt::{
    Author, Block, BlockError, Cid, Delta, DocId, FieldOp, Ipld, Rejection, SigningKey, Status,
    VerifiedBlock,
};
use hypha_protocols::generated::hypha::backfill::v1 as bpb;
use hypha_protocols::generated::hypha::head_sync::v1 as hpb;
use hypha_protocols::generated::hypha::pubsub::v1 as ppb;
use hypha_protocols::generated::hypha::replicator::v1 as rpb;
use hypha_protocols::node::{Event, Gauges, Protocol, Verdict, Violation};
use hypha_protocols::testing::{Configure, Network, Options};
use hypha_protocols::wire::{self, DEFAULT_MAX_FRAME_BYTES, FrameError, FrameReader};
use hypha_protocols::{backfill, head_sync, pubsub, replicator};
use quick_protobuf::{MessageWrite, Writer};
use serde_json::json;

const U: &str = "type Users { Name: String  Age: Int }";
/// A collection only the victim follows (attack 4's deep histories).
const D: &str = "type Deep { Name: String  Age: Int }";
const HONEST: u16 = 0;
const VICTIM: u16 = 1;
const EVIL: u16 = 666;
/// Blocks of honest history the victim holds before any attack.
const HISTORY: i64 = 300;

// ---- the arena ------------------------------------------------------------------------------

struct Arena {
    n: Network,
    doc: DocId,
    age: i64,
}

/// The victim's memory accounting: see the module docs.
fn footprint(n: &Network) -> u64 {
    let s = n.store(VICTIM).stats().expect("stats");
    let g: Gauges = n.node(VICTIM).expect("victim runs").gauges();
    s.blocks + s.pending + s.documents + s.outbox_entries + g.total() as u64
}

impl Arena {
    /// Node 0 holds a document with [`HISTORY`] blocks; node 1 follows Users and has
    /// replicated it; the stranger is connected to node 1.
    fn new(seed: u64, configure: Option<Configure>) -> Arena {
        let mut o = Options::seeded(seed);
        o.configure = configure;
        let mut n = Network::new(o);
        n.schema_all(U);
        n.schema_all(D);
        n.follow_collections(VICTIM, &["Users", "Deep"]).unwrap();
        n.follow_collections(HONEST, &["Users"]).unwrap();
        n.connect(VICTIM, HONEST);
        n.wait().unwrap();
        let doc = n
            .create(HONEST, "Users", json!({"Name": "honest", "Age": 1}))
            .unwrap();
        for age in 2..=HISTORY {
            n.update(HONEST, doc, json!({"Age": age})).unwrap();
            n.run_for(Duration::from_millis(10));
        }
        n.wait().unwrap();
        assert_eq!(n.store(VICTIM).stats().unwrap().blocks, HISTORY as u64);
        n.stranger_connects(EVIL, VICTIM);
        Arena {
            n,
            doc,
            age: HISTORY,
        }
    }

    /// Runs `ms` milliseconds of honest traffic — node 0 updates its document every 20 ms —
    /// while `attack` acts at the start of every millisecond; returns the peak footprint.
    fn run(&mut self, ms: u64, mut attack: impl FnMut(&mut Network, u64)) -> u64 {
        let mut peak = footprint(&self.n);
        for t in 0..ms {
            if t % 20 == 0 {
                self.age += 1;
                let age = self.age;
                self.n
                    .update(HONEST, self.doc, json!({"Age": age}))
                    .unwrap();
            }
            attack(&mut self.n, t);
            self.n.run_for(Duration::from_millis(1));
            peak = peak.max(footprint(&self.n));
        }
        peak
    }

    /// The peak footprint over 500 ms of honest traffic alone.
    fn baseline(&mut self) -> u64 {
        self.run(500, |_, _| {})
    }

    /// The honest pair agrees on the honest document: same heads, the last age written.
    fn assert_honest_converged(&mut self) {
        self.n.run_for(Duration::from_secs(1));
        let heads = |i| self.n.store(i).state(&self.doc).unwrap().unwrap().heads;
        assert_eq!(heads(HONEST), heads(VICTIM), "the honest pair converged");
        let doc = self.n.store(VICTIM).document(&self.doc).unwrap().unwrap();
        assert_eq!(
            doc["Age"],
            json!(self.age),
            "the victim has the last update"
        );
    }

    fn collection(&self) -> hypha_crdt::Collection {
        self.n.store(VICTIM).collection("Users").unwrap().unwrap()
    }

    fn topic(&self) -> String {
        pubsub::collection_topic("hypha", &self.collection().id())
    }

    /// The stranger's violations as the victim reported them.
    fn violations(&self) -> Vec<Violation> {
        self.n
            .events(VICTIM)
            .iter()
            .filter_map(|e| match e {
                Event::PeerMisbehaved { peer, violation } if *peer == EVIL => {
                    Some(violation.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// A block of the honest document by the stranger's key (unsigned when `key` is None):
    /// `parents`, document priority `priority`, Age written at field priority `priority`.
    fn block(&self, parents: Vec<Cid>, priority: u64, age: i64) -> Block {
        let c = self.collection();
        let mut parents = parents;
        parents.sort_by_key(|c| c.to_bytes());
        Block {
            heads: parents,
            delta: Delta {
                doc_id: self.doc,
                collection: c.id(),
                schema_version: c.version(),
                priority,
                status: Status::Active,
                fields: BTreeMap::from([(
                    "Age".to_owned(),
                    FieldOp::Lww {
                        priority,
                        value: Ipld::Integer(age.into()),
                    },
                )]),
            },
            author: None,
            signature: None,
        }
    }

    /// The victim's state of the honest document: (heads, priority).
    fn honest_state(&self) -> (Vec<Cid>, u64) {
        let s = self.n.store(VICTIM).state(&self.doc).unwrap().unwrap();
        (s.heads, s.height)
    }

    /// Asserts the accounting during the attack stayed within 2× the baseline.
    fn assert_bounded(&self, what: &str, before: u64, during: u64) {
        eprintln!("{what}: footprint before {before}, during {during}");
        assert!(
            during <= 2 * before,
            "{what}: footprint {during} during the attack, more than 2 × {before}"
        );
    }
}

fn evil_key() -> SigningKey {
    SigningKey::from_bytes(&[0xEE; 32])
}

/// A CID no block has.
fn fake_cid(i: u64) -> Cid {
    dag_cbor_cid(&i.to_be_bytes())
}

fn encode<M: MessageWrite>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    m.write_message(&mut Writer::new(&mut out)).unwrap();
    out
}

fn raw_update(
    doc: DocId,
    collection: hypha_crdt::CollectionId,
    cid: Cid,
    block: Vec<u8>,
) -> Vec<u8> {
    encode(&ppb::Update {
        doc_id: doc.to_bytes().to_vec(),
        collection_id: collection.0.to_bytes(),
        cid: cid.to_bytes(),
        block,
        heads: vec![cid.to_bytes()],
    })
}

// ---- 2. CID mismatch ------------------------------------------------------------------------

/// Attack 2: a block whose bytes do not hash to the CID it is announced under (a valid block
/// of the honest document, announced as another block's CID; and a valid block with one
/// byte flipped). Defence: every block is decoded against the CID it travels under
/// (`VerifiedBlock::decode(bytes, Some(cid))`) before anything else — `CidMismatch`, the
/// message is rejected, the sender penalised, nothing stored. Bound: one hash per message, no
/// state.
#[test]
fn attack_02_a_block_not_hashing_to_its_cid_is_rejected_and_never_stored() {
    let mut a = Arena::new(702, None);
    let before = a.baseline();
    let (heads, priority) = a.honest_state();
    let mutations = a.n.store(VICTIM).stats().unwrap().mutations;
    let collection = a.collection().id();
    let topic = a.topic();
    let mut forged = Vec::new();
    let mut messages = Vec::new();
    for i in 0..200u64 {
        // A valid child of the honest head, announced under a CID that is not its own.
        let block = a
            .block(heads.clone(), priority + 1, 10_000 + i as i64)
            .sign(&evil_key())
            .unwrap();
        let lie = fake_cid(i);
        messages.push(raw_update(a.doc, collection, lie, block.bytes().to_vec()));
        forged.push((lie, block.cid()));
        // The same bytes with one byte changed, under the original CID.
        let mut bytes = block.bytes().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        messages.push(raw_update(a.doc, collection, block.cid(), bytes));
    }
    let mut verdicts = Vec::new();
    let during = a.run(500, |n, t| {
        if let Some(m) = messages.get(t as usize) {
            verdicts.push(n.inject_pubsub(EVIL, VICTIM, &topic, m));
        }
    });
    assert!(verdicts.iter().all(|v| *v == Verdict::Reject));
    let v = a.violations();
    assert_eq!(v.len(), 400);
    let mismatches = v
        .iter()
        .filter(|v| {
            matches!(
                v,
                Violation::Pubsub(pubsub::Invalid::BadBlock(BlockError::CidMismatch { .. }))
            )
        })
        .count();
    assert!(mismatches >= 200, "CidMismatch for each lie: {v:?}");
    for (lie, real) in forged {
        assert!(!a.n.store(VICTIM).contains(&lie).unwrap());
        assert!(!a.n.store(VICTIM).contains(&real).unwrap());
    }
    // Only the honest updates were written (one ingest each), nothing of the attacker's.
    let written = a.n.store(VICTIM).stats().unwrap().mutations - mutations;
    assert!(written <= 40, "{written} mutations: only the honest ones");
    a.assert_honest_converged();
    a.assert_bounded("attack 2", before, during);
}

fn push_frame(
    id: u64,
    collection: hypha_crdt::CollectionId,
    doc: DocId,
    heads: &[Cid],
    blocks: Vec<Vec<u8>>,
) -> Vec<u8> {
    encode(&rpb::Frame {
        kind: rpb::mod_Frame::OneOfkind::push(rpb::Push {
            id,
            collection: "Users".to_owned(),
            collection_id: collection.0.to_bytes(),
            doc_id: doc.to_bytes().to_vec(),
            heads: heads.iter().map(|c| c.to_bytes()).collect(),
            blocks,
        }),
    })
}

/// The acks the victim sent the stranger, by push id.
fn acks(n: &mut Network) -> Vec<(u64, rpb::AckStatus)> {
    n.take_sent(EVIL)
        .into_iter()
        .filter(|(_, p, _)| *p == Protocol::Replicator)
        .filter_map(
            |(_, _, f)| match wire::decode_message::<rpb::Frame>(&f).ok()?.kind {
                rpb::mod_Frame::OneOfkind::ack(a) => Some((a.id, a.status)),
                _ => None,
            },
        )
        .collect()
}

/// Every block of `doc` node `i` holds, oldest first.
fn history(n: &Network, i: u16, doc: &DocId) -> Vec<VerifiedBlock> {
    let store = n.store(i);
    let mut todo = store.state(doc).unwrap().unwrap().heads;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    while let Some(c) = todo.pop() {
        if !seen.insert(c) {
            continue;
        }
        let b = store.block(&c).unwrap().unwrap();
        todo.extend(b.block().heads.iter().copied());
        out.push(b);
    }
    out.sort_by_key(|b| b.block().delta.priority);
    out
}

// ---- 7. replays -----------------------------------------------------------------------------

/// Attack 7: replays of old valid blocks — the honest document's whole history, each block
/// five times on pubsub, and pushed again on the replicator protocol. Defence: a block
/// already held is a no-op — pubsub checks `contains` before anything (no persist, no fetch),
/// a push of held blocks is answered from the store without a write. Bound: O(1) per replay,
/// shown by the counters — no ingest, no fetch, no store mutation for any replay.
#[test]
fn attack_07_replayed_blocks_are_no_ops() {
    let mut a = Arena::new(707, None);
    let before = a.baseline();
    let old = history(&a.n, HONEST, &a.doc);
    assert_eq!(old.len() as i64, a.age);
    let topic = a.topic();
    let collection = a.collection().id();
    let doc = a.doc;
    let messages: Vec<Vec<u8>> = old
        .iter()
        .flat_map(|b| {
            let m = pubsub::Update::new(b, vec![b.cid()], usize::MAX).encode();
            std::iter::repeat_n(m, 5)
        })
        .collect();
    let stats0 = a.n.node(VICTIM).unwrap().stats();
    let mutations0 = a.n.store(VICTIM).stats().unwrap().mutations;
    let mut verdicts = Vec::new();
    let during = a.run(messages.len() as u64, |n, t| {
        verdicts.push(n.inject_pubsub(EVIL, VICTIM, &topic, &messages[t as usize]));
    });
    assert!(
        verdicts.iter().all(|v| *v == Verdict::Accept),
        "valid, forwarded"
    );
    let stats = a.n.node(VICTIM).unwrap().stats();
    eprintln!("attack 7: {stats0:?} → {stats:?}");
    assert!(
        stats.pubsub_received - stats0.pubsub_received >= messages.len() as u64,
        "every replay was received"
    );
    // Only the honest updates of this phase were ingested or written.
    let phase_updates = messages.len() as u64 / 20;
    assert_eq!(stats.ingested - stats0.ingested, phase_updates);
    assert_eq!(stats.fetches, stats0.fetches, "no replay caused a fetch");
    let mutations = a.n.store(VICTIM).stats().unwrap().mutations - mutations0;
    assert_eq!(mutations, phase_updates, "no replay caused a write");

    // The same history pushed again, one push per old block.
    let mutations0 = a.n.store(VICTIM).stats().unwrap().mutations;
    let stats0 = a.n.node(VICTIM).unwrap().stats();
    let frames: Vec<Vec<u8>> = old
        .iter()
        .enumerate()
        .map(|(i, b)| {
            push_frame(
                i as u64 + 1,
                collection,
                doc,
                &[b.cid()],
                vec![b.bytes().to_vec()],
            )
        })
        .collect();
    let during = during.max(a.run(frames.len() as u64, |n, t| {
        n.inject_frame(EVIL, VICTIM, Protocol::Replicator, &frames[t as usize]);
    }));
    let acked = acks(&mut a.n);
    assert_eq!(acked.len(), frames.len());
    assert!(
        acked.iter().all(|(_, s)| *s == rpb::AckStatus::DURABLE),
        "{acked:?}"
    );
    let stats = a.n.node(VICTIM).unwrap().stats();
    let phase_updates = frames.len().div_ceil(20) as u64;
    let mutations = a.n.store(VICTIM).stats().unwrap().mutations - mutations0;
    eprintln!("attack 7 (push): {stats0:?} → {stats:?}, {mutations} mutations");
    assert_eq!(
        stats.ingested - stats0.ingested,
        phase_updates,
        "no replayed push was ingested"
    );
    assert_eq!(mutations, phase_updates, "no replayed push caused a write");
    assert!(
        a.violations().is_empty(),
        "replays are valid, not violations"
    );
    a.assert_honest_converged();
    a.assert_bounded("attack 7", before, during);
}

// ---- 8. priority mismatch -------------------------------------------------------------------

/// Attack 8: blocks claiming a priority their parents do not allow — a child of the honest
/// head at height + 5, and one whose field priority jumps. Defence: the merge checks that a
/// block's priority is 1 + its highest parent's — `PriorityMismatch`, refused before any
/// state change, reported as `Violation::Rejected`. Bound: no state.
#[test]
fn attack_08_a_block_claiming_a_priority_its_parents_do_not_allow_is_rejected() {
    let mut a = Arena::new(708, None);
    let before = a.baseline();
    let (heads, height) = a.honest_state();
    let mut blocks = Vec::new();
    for i in 0..100u64 {
        blocks.push(
            a.block(heads.clone(), height + 5 + i, 7)
                .sign(&evil_key())
                .unwrap(),
        );
    }
    let topic = a.topic();
    let messages: Vec<Vec<u8>> = blocks
        .iter()
        .map(|b| pubsub::Update::new(b, vec![b.cid()], usize::MAX).encode())
        .collect();
    let during = a.run(500, |n, t| {
        if t % 5 == 0 {
            n.inject_pubsub(EVIL, VICTIM, &topic, &messages[t as usize / 5]);
        }
    });
    let v = a.violations();
    assert_eq!(v.len(), 100, "{v:?}");
    assert!(
        v.iter()
            .all(|v| matches!(v, Violation::Rejected(Rejection::PriorityMismatch { .. })))
    );
    for b in &blocks {
        assert!(
            !a.n.store(VICTIM).contains(&b.cid()).unwrap(),
            "never stored"
        );
    }
    let doc = a.n.store(VICTIM).document(&a.doc).unwrap().unwrap();
    assert_ne!(doc["Age"], json!(7));
    a.assert_honest_converged();
    a.assert_bounded("attack 8", before, during);
}

// ---- 9. equivocation and forged signatures --------------------------------------------------

/// Attack 9: equivocation — the stranger's key signs two different blocks with the same
/// parents and height — and forged signatures (a valid block with its signature altered,
/// re-addressed so the CID matches). Defence: equivocating blocks are both valid, so both are
/// kept as concurrent branches and every node converges on the same heads; a signature that
/// does not verify is `SignatureInvalid` at decode, before any state change. Bound: one
/// verification per message.
#[test]
fn attack_09_equivocation_converges_and_forged_signatures_are_rejected() {
    let mut a = Arena::new(709, None);
    let before = a.baseline();
    let (heads, height) = a.honest_state();
    let one = a
        .block(heads.clone(), height + 1, 1001)
        .sign(&evil_key())
        .unwrap();
    let two = a
        .block(heads.clone(), height + 1, 1002)
        .sign(&evil_key())
        .unwrap();
    assert_ne!(one.cid(), two.cid());
    let collection = a.collection().id();
    let topic = a.topic();
    let mut forged = Vec::new();
    for i in 0..100i64 {
        let b = a
            .block(heads.clone(), height + 1, 2000 + i)
            .sign(&evil_key())
            .unwrap();
        let mut bytes = b.bytes().to_vec();
        let last = bytes.len() - 1 - (i as usize % 64);
        bytes[last] ^= 0x40;
        let cid = dag_cbor_cid(&bytes);
        forged.push((cid, raw_update(a.doc, collection, cid, bytes)));
    }
    let equivocation =
        [&one, &two].map(|b| pubsub::Update::new(b, vec![b.cid()], usize::MAX).encode());
    let mutations0 = a.n.store(VICTIM).stats().unwrap().mutations;
    let mut verdicts = Vec::new();
    let during = a.run(200, |n, t| {
        if let Some((_, m)) = forged.get(t as usize) {
            verdicts.push(n.inject_pubsub(EVIL, VICTIM, &topic, m));
        }
    });
    assert!(verdicts.iter().all(|v| *v == Verdict::Reject));
    let v = a.violations();
    assert_eq!(v.len(), 100);
    assert!(
        v.iter().all(|v| matches!(
            v,
            Violation::Pubsub(pubsub::Invalid::BadBlock(BlockError::SignatureInvalid))
        )),
        "{v:?}"
    );
    let mutations = a.n.store(VICTIM).stats().unwrap().mutations - mutations0;
    assert_eq!(mutations, 10, "only the honest updates were written");
    for (cid, _) in &forged {
        assert!(!a.n.store(VICTIM).contains(cid).unwrap());
    }
    for m in &equivocation {
        assert_eq!(a.n.inject_pubsub(EVIL, VICTIM, &topic, m), Verdict::Accept);
    }
    let during = during.max(a.run(200, |_, _| {}));
    // Head exchange carries the branches to the honest node.
    a.n.wait().unwrap();
    for i in [HONEST, VICTIM] {
        let s = a.n.store(i);
        assert!(s.is_applied(&one.cid()).unwrap() && s.is_applied(&two.cid()).unwrap());
    }
    let state = |i| a.n.store(i).state(&a.doc).unwrap().unwrap();
    assert_eq!(state(HONEST).heads, state(VICTIM).heads, "converged");
    assert_eq!(
        a.n.store(HONEST).document(&a.doc).unwrap(),
        a.n.store(VICTIM).document(&a.doc).unwrap()
    );
    // And they keep replicating on top of the branches.
    a.assert_honest_converged();
    a.assert_bounded("attack 9", before, during);
}

// ---- 5. wide DAG bomb -----------------------------------------------------------------------

/// Attack 5: a wide DAG bomb — one block naming 10⁵ parents. Defence: a block names at most
/// `MAX_LINKS` (1,024) parents and is at most `MAX_BLOCK_BYTES` (1 MiB); an update lists at
/// most `MAX_UPDATE_HEADS` (1,024) heads. 10⁵ parents do not fit a block at all (the encoder
/// refuses, and a frame carrying one is refused by its length prefix); the widest block that
/// fits (20,000 parents) and one just over the cap (1,025) are refused at decode on pubsub and
/// on a push, and an update listing 10⁵ heads is refused. No walk ever fans out past 1,024.
#[test]
fn attack_05_wide_dag_bomb_is_refused_by_the_links_cap() {
    let mut a = Arena::new(705, None);
    let before = a.baseline();
    let (_, height) = a.honest_state();
    let parents = |k: u64| (0..k).map(fake_cid).collect::<Vec<_>>();
    // 10⁵ parents: larger than any block may be.
    let huge = a.block(parents(100_000), height + 1, 5);
    assert!(matches!(
        huge.to_bytes(),
        Err(BlockError::BlockTooLarge { .. })
    ));
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
    let len = 100_000u32 * 41;
    assert!(matches!(
        reader.push(&len.to_be_bytes()),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(reader.buffered() <= 4, "nothing buffered past the prefix");

    let collection = a.collection().id();
    let topic = a.topic();
    let doc = a.doc;
    let mut messages = Vec::new();
    let mut pushes = Vec::new();
    let mut cids = Vec::new();
    for k in [20_000u64, MAX_LINKS as u64 + 1] {
        let bytes = a.block(parents(k), height + 1, 5).to_bytes().unwrap();
        assert!(bytes.len() <= MAX_BLOCK_BYTES);
        let cid = dag_cbor_cid(&bytes);
        cids.push(cid);
        messages.push(raw_update(doc, collection, cid, bytes.clone()));
        pushes.push(push_frame(k, collection, doc, &[cid], vec![bytes]));
    }
    // An update whose block is fine but which lists 10⁵ heads.
    let (heads, _) = a.honest_state();
    let fine = a.block(heads, height + 1, 5).sign(&evil_key()).unwrap();
    let mut wide = ppb::Update {
        doc_id: doc.to_bytes().to_vec(),
        collection_id: collection.0.to_bytes(),
        cid: fine.cid().to_bytes(),
        block: fine.bytes().to_vec(),
        heads: Vec::new(),
    };
    wide.heads = parents(100_000).iter().map(|c| c.to_bytes()).collect();
    messages.push(encode(&wide));
    let mut verdicts = Vec::new();
    let during = a.run(100, |n, t| match t {
        0..3 => verdicts.push(n.inject_pubsub(EVIL, VICTIM, &topic, &messages[t as usize])),
        3..5 => n.inject_frame(EVIL, VICTIM, Protocol::Replicator, &pushes[t as usize - 3]),
        _ => {}
    });
    assert_eq!(verdicts, [Verdict::Reject; 3]);
    let v = a.violations();
    eprintln!("attack 5: {v:?}");
    assert_eq!(v.len(), 5, "{v:?}");
    let too_many_parents = |v: &Violation| match v {
        Violation::Pubsub(pubsub::Invalid::BadBlock(BlockError::Malformed(m))) => {
            m.contains("parents")
        }
        _ => false,
    };
    assert!(v[..2].iter().all(too_many_parents));
    assert!(matches!(
        &v[2],
        Violation::Pubsub(pubsub::Invalid::Malformed(_))
    ));
    assert!(v[3..].iter().all(|v| matches!(
        v,
        Violation::Replicator(replicator::Violation::BadBlock(BlockError::Malformed(_)))
    )));
    for c in cids {
        assert!(!a.n.store(VICTIM).contains(&c).unwrap());
    }
    assert!(!a.n.store(VICTIM).contains(&fine.cid()).unwrap());
    a.assert_honest_converged();
    a.assert_bounded("attack 5", before, during);
}

// ---- 6. unknown-parent flood ----------------------------------------------------------------

/// `count` orphans of the honest document — each names a parent that exists nowhere — as
/// pubsub updates of the stranger.
fn orphan_updates(a: &Arena, count: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let b = a
                .block(vec![fake_cid(1_000_000 + i)], 50, 3)
                .sign(&evil_key())
                .unwrap();
            pubsub::Update::new(&b, vec![b.cid()], usize::MAX).encode()
        })
        .collect()
}

/// Attack 6: an unknown-parent flood — 2,000 blocks of a followed document whose parents
/// never come, one every millisecond. Defence: a block whose parents are not all applied here
/// takes a place in the pending set only within its sender's budget — at most
/// `max_orphans_per_peer` (default 64) and `max_orphans` over all peers (default 1,024) —
/// and is evicted from the store's pending set when its parents have not come within
/// `orphan_ttl` (default 10 min); past the budget the block is dropped. An admitted orphan
/// asks its sender for its parents only while that sender has fewer than
/// `max_orphan_fetches_per_peer` (default 16) such fetches in flight, so a flood cannot take
/// all of backfill's 64 places. Bound: pending blocks from one peer ≤ 64 at any time, 0 after
/// the time limit; backfill places ≤ 16. Without the budget, every orphan is kept and
/// the accounting passes 2× (shown).
#[test]
fn attack_06_unknown_parent_flood_is_held_to_the_pending_budget() {
    let mut a = Arena::new(706, None);
    let before = a.baseline();
    let topic = a.topic();
    let messages = orphan_updates(&a, 2_000);
    let during = a.run(messages.len() as u64, |n, t| {
        n.inject_pubsub(EVIL, VICTIM, &topic, &messages[t as usize]);
    });
    let pending = a.n.store(VICTIM).stats().unwrap().pending;
    eprintln!(
        "attack 6: {pending} pending, {:?}",
        a.n.node(VICTIM).unwrap().stats()
    );
    assert!(pending <= 64, "{pending} pending from one peer");
    let fetches = a.n.node(VICTIM).unwrap().gauges().fetches;
    assert!(
        fetches <= 16,
        "{fetches} backfill places taken by the flood's parents"
    );
    assert!(pending > 0, "orphans within the budget are kept a while");
    a.assert_honest_converged();
    a.assert_bounded("attack 6", before, during);
    // The time limit: the orphans are evicted.
    a.n.run_for(Duration::from_secs(11 * 60));
    assert_eq!(a.n.store(VICTIM).stats().unwrap().pending, 0, "evicted");
    // The budget is free again: the honest pair still replicates.
    a.run(100, |_, _| {});
    a.assert_honest_converged();
}

/// Attack 6 from many peers at once: eight strangers flood together, 1,000 orphans (125
/// each, past the per-peer 64). Defence: the total
/// orphan budget (`max_orphans`, default 1,024; here 128, with 64 per peer) holds whatever the
/// number of senders. Bound: pending ≤ the total.
#[test]
fn attack_06_many_flooding_peers_share_the_total_orphan_budget() {
    let configure: Configure = |_, c| c.with_orphans(64, 128, Duration::from_secs(600));
    let mut a = Arena::new(716, Some(configure));
    let strangers: Vec<u16> = (EVIL + 1..EVIL + 8).collect();
    for s in &strangers {
        a.n.stranger_connects(*s, VICTIM);
    }
    let before = a.baseline();
    let topic = a.topic();
    let messages = orphan_updates(&a, 1_000);
    let senders: Vec<u16> = std::iter::once(EVIL).chain(strangers).collect();
    let during = a.run(messages.len() as u64, |n, t| {
        let from = senders[t as usize % senders.len()];
        n.inject_pubsub(from, VICTIM, &topic, &messages[t as usize]);
    });
    let pending = a.n.store(VICTIM).stats().unwrap().pending;
    let stats = a.n.node(VICTIM).unwrap().stats();
    eprintln!(
        "attack 6 (8 peers): {pending} pending, {} refused",
        stats.orphans_refused
    );
    assert_eq!(pending, 128, "the total holds, not 8 × 64");
    assert_eq!(stats.orphans_refused, 1_000 - 128);
    a.assert_honest_converged();
    a.assert_bounded("attack 6 (8 peers)", before, during);
}

/// Attack 6 with the budget lifted: every orphan is kept, the accounting passes 2×.
#[test]
fn attack_06_without_the_pending_budget_the_flood_grows_memory() {
    let configure: Configure = |_, c| c.with_orphans(usize::MAX, usize::MAX, Duration::MAX);
    let mut a = Arena::new(706, Some(configure));
    let before = a.baseline();
    let topic = a.topic();
    let messages = orphan_updates(&a, 2_000);
    let during = a.run(messages.len() as u64, |n, t| {
        n.inject_pubsub(EVIL, VICTIM, &topic, &messages[t as usize]);
    });
    eprintln!("attack 6 unbounded: footprint before {before}, during {during}");
    assert!(during > 2 * before, "the budget is what bounds it");
}

// ---- 15. unauthorized pushes and the per-source quota ---------------------------------------

/// `count` pushes of new documents by the stranger's key, each a genesis block of about 2 KiB.
fn spam_pushes(a: &Arena, count: u64) -> (Vec<Vec<u8>>, Vec<(Cid, usize)>) {
    let mut author = Author::signing(evil_key());
    let c = a.collection();
    let filler = "x".repeat(2000);
    (0..count)
        .map(|i| {
            let b = author
                .create(&c, &json!({"Name": format!("spam {i} {filler}"), "Age": i}))
                .unwrap();
            let frame = push_frame(
                i + 1,
                c.id(),
                b.doc_id(),
                &[b.cid()],
                vec![b.bytes().to_vec()],
            );
            (frame, (b.cid(), b.bytes().len()))
        })
        .unzip()
}

/// Attack 15, with an allow list: the victim takes pushes from node 0 only; the stranger
/// pushes 200 valid documents. Defence: the replicator refuses a push from a source off the
/// allow list with `UNAUTHORIZED` before reading its blocks — nothing is written; node 0's
/// pushes are taken. Bound: no state per refused push.
#[test]
fn attack_15_a_push_from_off_the_allow_list_is_unauthorized_and_writes_nothing() {
    let configure: Configure = |i, c| {
        if i == VICTIM {
            let allowed = Some(std::collections::BTreeSet::from([HONEST]));
            c.with_replicator(replicator::Config::default().with_allowed_sources(allowed))
        } else {
            c
        }
    };
    let mut a = Arena::new(715, Some(configure));
    a.n.set_replicator(HONEST, VICTIM, &["Users"], &[]);
    let before = a.baseline();
    let (frames, cids) = spam_pushes(&a, 200);
    let during = a.run(frames.len() as u64, |n, t| {
        n.inject_frame(EVIL, VICTIM, Protocol::Replicator, &frames[t as usize]);
    });
    let acked = acks(&mut a.n);
    assert_eq!(acked.len(), 200);
    assert!(
        acked
            .iter()
            .all(|(_, s)| *s == rpb::AckStatus::UNAUTHORIZED),
        "{acked:?}"
    );
    assert_eq!(
        a.n.node(VICTIM)
            .unwrap()
            .replicator_stats()
            .refused_unauthorized,
        200
    );
    for (c, _) in &cids {
        assert!(!a.n.store(VICTIM).contains(c).unwrap(), "nothing written");
    }
    assert_eq!(a.n.store(VICTIM).stats().unwrap().documents, 1);
    // Node 0 is on the list: its pushes are acknowledged.
    let replicated =
        a.n.events(HONEST)
            .iter()
            .filter(|e| matches!(e, Event::Replicated { peer: VICTIM, .. }))
            .count();
    assert!(replicated > 0, "the allowed source replicates");
    a.assert_honest_converged();
    a.assert_bounded("attack 15 (allow list)", before, during);
}

/// Attack 15, without an allow list: a stranger pushes new documents at full rate (2,000
/// pushes of ~2 KiB, one a millisecond). Defence: each source has a byte quota, a token
/// bucket of `quota_bytes` per `quota_window` (default 64 MiB per 60 s; here 192 KiB per
/// 60 s, to keep the test small), and at most 16 pushes unanswered; past it a push is answered
/// `BUSY` and nothing of it is written. Bound: what a source writes in a window ≤ its quota
/// plus one push. Without the quota every push is written and the accounting passes 2×
/// (shown).
#[test]
fn attack_15_a_stranger_pushing_at_full_rate_is_held_to_its_quota() {
    let quota: Configure = |_, c| {
        c.with_replicator(
            replicator::Config::default().with_quota(192 << 10, Duration::from_secs(60)),
        )
    };
    let unlimited: Configure = |_, c| {
        c.with_replicator(
            replicator::Config::default().with_quota(u64::MAX, Duration::from_secs(60)),
        )
    };
    let mut written = Vec::new();
    for configure in [quota, unlimited] {
        let mut a = Arena::new(716, Some(configure));
        let before = a.baseline();
        let (frames, cids) = spam_pushes(&a, 2_000);
        let during = a.run(frames.len() as u64, |n, t| {
            n.inject_frame(EVIL, VICTIM, Protocol::Replicator, &frames[t as usize]);
        });
        let acked = acks(&mut a.n);
        let busy = acked
            .iter()
            .filter(|(_, s)| *s == rpb::AckStatus::BUSY)
            .count();
        let held: Vec<usize> = cids
            .iter()
            .filter(|(c, _)| a.n.store(VICTIM).contains(c).unwrap())
            .map(|(_, len)| *len)
            .collect();
        let (stored, stored_bytes) = (held.len(), held.iter().sum::<usize>());
        eprintln!(
            "attack 15 (quota): {stored} of 2000 written (~{stored_bytes} bytes), {busy} BUSY; \
             footprint before {before}, during {during}"
        );
        written.push((stored, stored_bytes, busy, before, during));
        a.assert_honest_converged();
    }
    let (stored, bytes, busy, before, during) = written[0];
    // 192 KiB, what refills in the 2 s of the attack, and the push that crossed the line.
    let allowed = (192 << 10) + (192 << 10) * 2 / 60 + 2_500;
    assert!(
        bytes <= allowed,
        "{stored} pushes, {bytes} bytes written: held to the quota"
    );
    assert!(busy > 0);
    assert!(during <= 2 * before, "{during} > 2 × {before}");
    let (stored, _, _, before, during) = written[1];
    assert_eq!(stored, 2_000, "without the quota every push is written");
    assert!(during > 2 * before, "the quota is what bounds it");
}

// ---- 4. deep DAG bomb -----------------------------------------------------------------------

/// A chain of tiny blocks by the stranger's key, made as the victim asks for them.
struct Chain {
    doc: DocId,
    blocks: Vec<VerifiedBlock>,
    collection: hypha_crdt::Collection,
    author: Author,
}

impl Chain {
    fn new(a: &Arena, name: &str) -> Chain {
        let collection = a.n.store(VICTIM).collection("Deep").unwrap().unwrap();
        let mut author = Author::unsigned([0xEE; 32]);
        let genesis = author
            .create(&collection, &json!({"Name": name, "Age": 0}))
            .unwrap();
        Chain {
            doc: genesis.doc_id(),
            blocks: vec![genesis],
            collection,
            author,
        }
    }

    /// Block `i` (0 is the genesis), made on demand.
    fn get(&mut self, i: usize) -> VerifiedBlock {
        while self.blocks.len() <= i {
            let parent = self.blocks.last().unwrap();
            let p = parent.block().delta.priority;
            let block = Block {
                heads: vec![parent.cid()],
                delta: Delta {
                    doc_id: self.doc,
                    collection: self.collection.id(),
                    schema_version: self.collection.version(),
                    priority: p + 1,
                    status: Status::Active,
                    fields: BTreeMap::from([(
                        "Age".to_owned(),
                        FieldOp::Lww {
                            priority: p + 1,
                            value: Ipld::Integer(i128::from(p)),
                        },
                    )]),
                },
                author: None,
                signature: None,
            };
            let _ = &self.author;
            self.blocks.push(block.encode().unwrap());
        }
        self.blocks[i].clone()
    }
}

/// The stranger announces `head` of `doc` (CID only) and serves the victim's backfill
/// requests from `chain`, oldest first, each answer within the request's budget
/// (`max_blocks`), until the victim stops asking or `limit` blocks were served. Returns the
/// blocks served, the requests seen and the victim's peak footprint.
fn serve_chain(a: &mut Arena, chain: &mut Chain, head: Cid, limit: usize) -> (usize, u64, u64) {
    let topic = pubsub::collection_topic("hypha", &chain.collection.id());
    let update = encode(&ppb::Update {
        doc_id: chain.doc.to_bytes().to_vec(),
        collection_id: chain.collection.id().0.to_bytes(),
        cid: head.to_bytes(),
        block: Vec::new(),
        heads: vec![head.to_bytes()],
    });
    a.n.inject_pubsub(EVIL, VICTIM, &topic, &update);
    let (mut served, mut requests, mut peak) = (0usize, 0u64, footprint(&a.n));
    loop {
        let asks: Vec<bpb::Request> =
            a.n.take_sent(EVIL)
                .into_iter()
                .filter(|(_, p, _)| *p == Protocol::Backfill)
                .filter_map(
                    |(_, _, f)| match wire::decode_message::<bpb::Frame>(&f).ok()?.kind {
                        bpb::mod_Frame::OneOfkind::request(r) => Some(r),
                        _ => None,
                    },
                )
                .collect();
        if asks.is_empty() {
            break;
        }
        for r in asks {
            requests += 1;
            let n = (r.max_blocks as usize).min(limit.saturating_sub(served));
            let blocks: Vec<Vec<u8>> = (served..served + n)
                .map(|i| chain.get(i).bytes().to_vec())
                .collect();
            served += n;
            let more = served < limit;
            let frame = encode(&bpb::Frame {
                kind: bpb::mod_Frame::OneOfkind::response(bpb::Response {
                    id: r.id,
                    blocks,
                    done: true,
                    status: if more {
                        bpb::Status::TRUNCATED
                    } else {
                        bpb::Status::COMPLETE
                    },
                }),
            });
            a.n.inject_frame(EVIL, VICTIM, Protocol::Backfill, &frame);
        }
        a.n.run_for(Duration::from_millis(5));
        peak = peak.max(footprint(&a.n));
    }
    (served, requests, peak)
}

/// The depth of the legitimate history in attack 4, and the depth budget there.
const DEEP: usize = 10_000;

/// Attack 4: a deep DAG bomb — a head announced at depth 10⁶, its chain of tiny blocks
/// served oldest first, each answer within the request's budget and marked truncated, so the
/// victim keeps asking. Defence: backfill streams a history oldest first, `max_blocks` per
/// request (default 100,000; here 1,000) and `max_bytes` (8 MiB), every block applied as it
/// arrives (nothing waits in the pending set); and one fetch stops after `max_fetch_depth`
/// blocks over its truncated continuations (default 100,000; here [`DEEP`] = 10⁴) —
/// `Violation::Backfill(DepthExceeded)`, which lowers the sender's standing. Scale: the
/// bomb's 10⁶ blocks are made on demand, so only what the victim asks for exists; a
/// legitimate history of [`DEEP`] blocks completes under the same budgets first, and is part
/// of the baseline. Bound: blocks fetched per announcement ≤ `max_fetch_depth`.
#[test]
fn attack_04_deep_dag_bomb_is_cut_off_by_budgets() {
    let configure: Configure = |_, c| {
        c.with_backfill(backfill::Config::default().with_max_blocks(DEEP as u32 / 10))
            .with_max_fetch_depth(DEEP as u64)
    };
    let mut a = Arena::new(704, Some(configure));

    // A legitimate deep history of DEEP blocks, announced by its real head.
    let mut legit = Chain::new(&a, "deep");
    let head = legit.get(DEEP - 1).cid();
    let (served, requests, _) = serve_chain(&mut a, &mut legit, head, DEEP);
    assert_eq!(served, DEEP);
    assert_eq!(requests, 10, "streamed in budget-sized requests");
    assert!(
        a.n.store(VICTIM).is_applied(&head).unwrap(),
        "the deep history completed"
    );
    assert_eq!(
        a.n.store(VICTIM).stats().unwrap().pending,
        0,
        "oldest first: nothing pending"
    );
    assert!(a.violations().is_empty(), "{:?}", a.violations());
    let before = a.baseline();

    // The bomb: a head claimed at depth 10⁶ (no block has it: the attacker makes blocks as
    // they are asked for), DEEP / 10 blocks an answer, always truncated.
    let mut bomb = Chain::new(&a, "bomb");
    let fake_head = fake_cid(10u64.pow(6));
    let (served, requests, during) = serve_chain(&mut a, &mut bomb, fake_head, 1_000_000);
    eprintln!("attack 4: the bomb was served {served} blocks in {requests} requests");
    assert_eq!(served, DEEP, "cut off at the depth budget");
    let v = a.violations();
    assert_eq!(v, [Violation::Backfill(backfill::Violation::DepthExceeded)]);
    assert_eq!(a.n.store(VICTIM).stats().unwrap().pending, 0);
    let during = during.max(a.run(200, |_, _| {}));
    a.assert_honest_converged();
    let added = during - before;
    assert!(
        added <= DEEP as u64 + 2 * 64,
        "the bomb added {added}: within the budget"
    );
    a.assert_bounded("attack 4", before, during);
}

// ---- 14. poisoned head-exchange messages ----------------------------------------------------

fn hs(kind: hpb::mod_Frame::OneOfkind) -> Vec<u8> {
    encode(&hpb::Frame { kind })
}

/// Attack 14: poisoned head-exchange messages. Absurd sizes — a Hello naming 10,000
/// collections, a Want of 5,000 documents, a sketch request at level 99, a listing of
/// 2³² − 1 documents, and (within bounds) a Hello claiming 2⁶⁴ − 1 documents; endless
/// rounds — 1,000 replies (sketches, heads, pages) for sessions never opened; and
/// fingerprints that lie — answering the victim's own Hello with a well-formed sketch of 40
/// documents that do not exist. Defence: every request is checked
/// against the protocol's bounds before any work (`max_collections` 256, `max_docs_per_frame`
/// 4,096, three sketch levels, `list_page` 32,768) — `OverBounds`; a reply for no session in
/// flight is `Unexpected` and costs nothing; what a lying sketch makes the victim want is
/// bounded by `max_wanted` (100,000) per session and fetched within backfill's caps, and the
/// session ends by `session_timeout` (30 s). Bound: no responder state per request, one
/// session per pull.
#[test]
fn attack_14_poisoned_head_exchange_messages_are_validated_and_capped() {
    let mut a = Arena::new(714, None);
    // The victim pulled from the stranger when it connected: the Hello to lie to.
    let hello =
        a.n.take_sent(EVIL)
            .into_iter()
            .filter(|(_, p, _)| *p == Protocol::HeadSync)
            .find_map(
                |(_, _, f)| match wire::decode_message::<hpb::Frame>(&f).ok()?.kind {
                    hpb::mod_Frame::OneOfkind::hello(h) => Some(h),
                    _ => None,
                },
            )
            .expect("the victim said hello");
    let before = a.baseline();
    let users = a.collection().id();
    let root = |tag| hpb::CollectionRoot {
        collection_tag: tag,
        root: vec![0; 32],
        count: u64::MAX,
    };
    let mut poison = vec![
        hs(hpb::mod_Frame::OneOfkind::hello(hpb::Hello {
            session: 1,
            mode: hpb::Mode::PULL,
            collections: (0..10_000).map(root).collect(),
        })),
        hs(hpb::mod_Frame::OneOfkind::want(hpb::Want {
            session: 2,
            docs: (0..5_000u32)
                .map(|i| {
                    let mut d = a.doc.to_bytes().to_vec();
                    d[..4].copy_from_slice(&i.to_be_bytes());
                    d
                })
                .collect(),
        })),
        hs(hpb::mod_Frame::OneOfkind::sketch_request(
            hpb::SketchRequest {
                session: 3,
                collection: users.0.to_bytes(),
                level: 99,
            },
        )),
        hs(hpb::mod_Frame::OneOfkind::list_request(hpb::ListRequest {
            session: 4,
            collection: users.0.to_bytes(),
            key: Vec::new(),
            after: Vec::new(),
            before: Vec::new(),
            limit: u32::MAX,
        })),
    ];
    let absurd = poison.len();
    for i in 0..1_000u64 {
        let session = 1_000_000 + i;
        poison.push(hs(match i % 3 {
            0 => hpb::mod_Frame::OneOfkind::sketches(hpb::Sketches {
                session,
                collections: vec![hpb::CollectionSketch {
                    collection_tag: hello.collections[0].collection_tag,
                    status: hpb::SketchStatus::TOO_DIFFERENT,
                    level: 0,
                    iblt: Vec::new(),
                }],
            }),
            1 => hpb::mod_Frame::OneOfkind::heads(hpb::Heads {
                session,
                docs: Vec::new(),
                done: false,
                offer: false,
            }),
            _ => hpb::mod_Frame::OneOfkind::list_page(hpb::ListPage {
                session,
                collection: users.0.to_bytes(),
                before: Vec::new(),
                items: vec![0; 64],
                last: false,
            }),
        }));
    }
    // An absurd claim within bounds: a Hello on the victim's collections claiming 2⁶⁴ − 1
    // documents. Served (a sketch at the largest level), never trusted, no overflow.
    poison.push(hs(hpb::mod_Frame::OneOfkind::hello(hpb::Hello {
        session: 5,
        mode: hpb::Mode::PULL,
        collections: hello
            .collections
            .iter()
            .map(|c| hpb::CollectionRoot {
                collection_tag: c.collection_tag,
                root: vec![7; 32],
                count: u64::MAX,
            })
            .collect(),
    })));
    // The lie: a well-formed level-0 sketch holding 40 documents nobody has.
    let mut lie = hypha_crdt::sync_index::Iblt::new(hypha_crdt::sync_index::SKETCH_CELLS[0]);
    for i in 0..40u64 {
        let doc: DocId = a.doc;
        let mut d = doc.to_bytes();
        d[..8].copy_from_slice(&i.to_be_bytes());
        let doc = DocId::from_bytes(d);
        lie.insert(&doc, &hypha_crdt::ItemHash::of(&doc, &[fake_cid(i)]));
    }
    let lie = hs(hpb::mod_Frame::OneOfkind::sketches(hpb::Sketches {
        session: hello.session,
        collections: hello
            .collections
            .iter()
            .map(|c| hpb::CollectionSketch {
                collection_tag: c.collection_tag,
                status: hpb::SketchStatus::SKETCH,
                level: 0,
                iblt: lie.to_bytes(),
            })
            .collect(),
    }));
    poison.push(lie);
    let served0 = a.n.node(VICTIM).unwrap().head_sync_stats();
    let during = a.run(poison.len() as u64 + 200, |n, t| {
        if let Some(f) = poison.get(t as usize) {
            n.inject_frame(EVIL, VICTIM, Protocol::HeadSync, f);
        }
    });
    let v = a.violations();
    let stats = a.n.node(VICTIM).unwrap().head_sync_stats();
    eprintln!(
        "attack 14: {} violations, first {:?}; stats {served0:?} → {stats:?}",
        v.len(),
        &v[..absurd.min(v.len())]
    );
    assert!(
        v[..absurd]
            .iter()
            .all(|v| *v == Violation::HeadSync(head_sync::Violation::OverBounds)),
        "{:?}",
        &v[..absurd]
    );
    assert!(
        v[absurd..absurd + 1_000]
            .iter()
            .all(|v| *v == Violation::HeadSync(head_sync::Violation::Unexpected)),
        "replies for no session"
    );
    assert_eq!(
        v.len(),
        absurd + 1_000,
        "the absurd count is no violation: {v:?}"
    );
    assert_eq!(
        stats.served,
        served0.served + 1,
        "nothing served for a request out of bounds; the absurd count served once"
    );
    // The lie decoded: the victim asked the stranger for the 40 documents it claimed, once per
    // collection the lie was told about.
    assert!(stats.sketches_decoded > served0.sketches_decoded);
    let wants: Vec<usize> =
        a.n.take_sent(EVIL)
            .into_iter()
            .filter(|(_, p, _)| *p == Protocol::HeadSync)
            .filter_map(
                |(_, _, f)| match wire::decode_message::<hpb::Frame>(&f).ok()?.kind {
                    hpb::mod_Frame::OneOfkind::want(w) => Some(w.docs.len()),
                    _ => None,
                },
            )
            .collect();
    eprintln!("attack 14: the lie made the victim want {wants:?}");
    assert_eq!(wants, vec![40; hello.collections.len()]);
    // The stranger never answers: the session times out, and a minute later anti-entropy
    // opens at most one new pull with each peer.
    a.n.run_for(Duration::from_secs(90));
    let g = a.n.node(VICTIM).unwrap().gauges();
    assert!(g.head_sync_in_flight <= 2, "{g:?}");
    assert_eq!(g.fetches, 0, "{g:?}");
    a.assert_honest_converged();
    a.assert_bounded("attack 14", before, during);
}

// ---- 1 and 3 at the frame level -------------------------------------------------------------

/// Protobuf bytes nested `depth` deep, each level field 1 holding the next.
fn nested(depth: usize) -> Vec<u8> {
    let mut inner = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![0x0a];
        let mut len = inner.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(byte);
                break;
            }
            outer.push(byte | 0x80);
        }
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

/// Attack 1 at the frame level: malformed frames and protobuf on every stream protocol and
/// on pubsub — truncated messages, a wrong wire type (field 1 as fixed32: not the field, so an
/// empty frame), a length inside the message claiming 2⁶⁴ − 1 bytes, 10,000 levels of nesting
/// (read as bytes where the schema has no nested message: a request that names nothing) —
/// and a frame whose length prefix claims 4 GiB.
/// Defence: a frame longer than `max_frame_bytes` (default 1 MiB + 64 KiB) is refused from its
/// four-byte prefix, before anything is buffered for it; inside a frame, the wire shape is
/// checked (lengths against the bytes actually there, nesting only where the schema has it)
/// before quick-protobuf reads anything — `Malformed`, the sender penalised, nothing written.
/// Bound: memory per frame ≤ the frame cap.
#[test]
fn frames_01_malformed_protobuf_is_rejected_before_allocating() {
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
    let err = reader.push(&u32::MAX.to_be_bytes()).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u32::MAX as usize));
    assert!(
        reader.buffered() <= 4,
        "nothing buffered for the claimed 4 GiB"
    );

    let mut a = Arena::new(701, None);
    let before = a.baseline();
    let (heads, height) = a.honest_state();
    let block = a.block(heads, height + 1, 5).sign(&evil_key()).unwrap();
    let collection = a.collection().id();
    let valid_push = push_frame(
        1,
        collection,
        a.doc,
        &[block.cid()],
        vec![block.bytes().to_vec()],
    );
    let valid_update = pubsub::Update::new(&block, vec![block.cid()], usize::MAX).encode();
    let garbage: Vec<Vec<u8>> = vec![
        valid_push[..valid_push.len() / 2].to_vec(),
        vec![0x0d, 1, 2, 3, 4],
        vec![
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 2, 3,
        ],
        nested(10_000),
    ];
    let mut frames = Vec::new();
    for g in &garbage {
        for p in Protocol::ALL {
            frames.push((p, g.clone()));
        }
    }
    let mut messages = garbage.clone();
    messages[0] = valid_update[..valid_update.len() / 2].to_vec();
    let topic = a.topic();
    let mutations0 = a.n.store(VICTIM).stats().unwrap().mutations;
    let mut verdicts = Vec::new();
    let during = a.run(100, |n, t| {
        let t = t as usize;
        if let Some((p, f)) = frames.get(t) {
            n.inject_frame(EVIL, VICTIM, *p, f);
        } else if let Some(m) = messages.get(t - frames.len()) {
            verdicts.push(n.inject_pubsub(EVIL, VICTIM, &topic, m));
        }
    });
    assert_eq!(verdicts, vec![Verdict::Reject; messages.len()]);
    let v = a.violations();
    eprintln!("frames 1: {v:?}");
    assert_eq!(v.len(), frames.len() + messages.len());
    assert!(v.iter().all(|v| matches!(
        v,
        Violation::Backfill(backfill::Violation::Malformed(_) | backfill::Violation::BadRequest)
            | Violation::Replicator(replicator::Violation::Malformed(_))
            | Violation::HeadSync(head_sync::Violation::Malformed(_))
            | Violation::Pubsub(pubsub::Invalid::Malformed(_))
    )));
    assert!(!a.n.store(VICTIM).contains(&block.cid()).unwrap());
    let mutations = a.n.store(VICTIM).stats().unwrap().mutations - mutations0;
    assert_eq!(mutations, 5, "only the honest updates were written");
    a.assert_honest_converged();
    a.assert_bounded("frames 1", before, during);
}

/// Attack 3 at the frame level: oversized blocks and messages — a push frame carrying a
/// 2 MiB block, a message too large to encode into a frame, an inline block one byte over the
/// block cap on pubsub and in a push that fits a frame. Defence: frames are capped at
/// `max_frame_bytes` (default 1 MiB + 64 KiB) on both sides — the reader refuses the prefix,
/// the writer refuses to encode; blocks are capped at `MAX_BLOCK_BYTES` (1 MiB) at decode —
/// `BlockTooLarge`. Bound: nothing larger than a frame is ever buffered.
#[test]
fn frames_03_oversized_blocks_and_messages_are_rejected_at_framing() {
    let mut a = Arena::new(703, None);
    let before = a.baseline();
    let collection = a.collection().id();
    let doc = a.doc;
    // A 2 MiB block in a push: the frame is refused by its prefix, on read and on write.
    let huge = rpb::Frame {
        kind: rpb::mod_Frame::OneOfkind::push(rpb::Push {
            id: 1,
            collection: "Users".to_owned(),
            collection_id: collection.0.to_bytes(),
            doc_id: doc.to_bytes().to_vec(),
            heads: vec![fake_cid(1).to_bytes()],
            blocks: vec![vec![0xa4; 2 << 20]],
        }),
    };
    assert!(matches!(
        wire::encode_frame(&huge, DEFAULT_MAX_FRAME_BYTES),
        Err(FrameError::TooLarge { .. })
    ));
    let wire_bytes = wire::encode_frame(&huge, usize::MAX).unwrap();
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
    assert!(matches!(
        reader.push(&wire_bytes[..64 << 10]),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(reader.buffered() <= 4, "refused at the prefix");
    // One byte over the block cap, within a frame: BlockTooLarge at decode.
    let over = vec![0xa4; MAX_BLOCK_BYTES + 1];
    let cid = dag_cbor_cid(&over);
    let update = raw_update(doc, collection, cid, over.clone());
    let push = push_frame(2, collection, doc, &[cid], vec![over]);
    assert!(push.len() <= DEFAULT_MAX_FRAME_BYTES);
    let topic = a.topic();
    let mut verdict = None;
    let during = a.run(100, |n, t| match t {
        0 => verdict = Some(n.inject_pubsub(EVIL, VICTIM, &topic, &update)),
        1 => n.inject_frame(EVIL, VICTIM, Protocol::Replicator, &push),
        _ => {}
    });
    assert_eq!(verdict, Some(Verdict::Reject));
    let v = a.violations();
    eprintln!("frames 3: {v:?}");
    assert!(matches!(
        v.as_slice(),
        [
            Violation::Pubsub(pubsub::Invalid::BadBlock(BlockError::BlockTooLarge { .. })),
            Violation::Replicator(replicator::Violation::BadBlock(
                BlockError::BlockTooLarge { .. }
            )),
        ]
    ));
    assert!(!a.n.store(VICTIM).contains(&cid).unwrap());
    a.assert_honest_converged();
    a.assert_bounded("frames 3", before, during);
}

/// Attack 4 without the depth budget: the victim keeps asking as long as the bomb answers
/// "truncated" — here until the attacker stops at 4,000 blocks, 40 requests later. The budget
/// is what cuts it off.
#[test]
fn attack_04_without_the_depth_budget_the_bomb_is_followed_down() {
    let configure: Configure = |_, c| {
        c.with_backfill(backfill::Config::default().with_max_blocks(100))
            .with_max_fetch_depth(u64::MAX)
    };
    let mut a = Arena::new(704, Some(configure));
    let before = a.baseline();
    let mut bomb = Chain::new(&a, "bomb");
    let (served, requests, during) = serve_chain(&mut a, &mut bomb, fake_cid(1 << 20), 4_000);
    eprintln!("attack 4 unbounded: served {served} in {requests}; footprint {before} → {during}");
    assert_eq!((served, requests), (4_000, 40), "followed all the way down");
    assert!(during > 2 * before);
}
