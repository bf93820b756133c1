//! The backfill core between two peers, driven by hand over real frames.

use std::time::{Duration, Instant};

use hypha_crdt::{Author, Cid, DocId, MemoryDag, Outcome, Replica, VerifiedBlock, parse_sdl};
use serde_json::json;

use super::*;
use crate::generated::hypha::backfill::v1 as pb;
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, FrameReader, encode_frame};

/// The start of a test's virtual time; only differences from it matter.
#[allow(clippy::disallowed_methods)] // The one clock read: an arbitrary origin.
fn epoch() -> Instant {
    Instant::now()
}

const REQUESTER: u8 = 0;
const RESPONDER: u8 = 1;

fn replica(i: u8) -> Replica {
    let schema = parse_sdl("hypha", "type U { a: Int b: String }").unwrap();
    Replica::new(schema, Author::unsigned([i; 32]))
}

/// A document with a chain of `n` blocks (genesis first).
fn chain(n: usize) -> (Replica, DocId, Vec<VerifiedBlock>) {
    let mut r = replica(1);
    let (doc, genesis) = r.create("U", &json!({"a": 0})).unwrap();
    let mut blocks = vec![genesis];
    for i in 1..n {
        blocks.push(r.update(doc, &json!({"a": i})).unwrap());
    }
    (r, doc, blocks)
}

struct Run {
    events: Vec<Event<u8>>,
    /// Request frames the requester sent (round trips on the critical path).
    requests: usize,
    responses: usize,
}

/// Moves frames both ways until both cores are idle; the requester's events are collected,
/// and every received block is ingested into `into`.
fn drive(
    requester: &mut Backfill<u8>,
    responder: &mut Backfill<u8>,
    source: &MemoryDag,
    into: &mut Replica,
    now: Instant,
) -> Run {
    let empty = MemoryDag::new();
    let mut run = Run {
        events: Vec::new(),
        requests: 0,
        responses: 0,
    };
    let (mut to_responder, mut to_requester) = (
        FrameReader::new(DEFAULT_MAX_FRAME_BYTES),
        FrameReader::new(DEFAULT_MAX_FRAME_BYTES),
    );
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(t) = requester.poll_transmit() {
            assert_eq!(t.peer, RESPONDER);
            run.requests += 1;
            for frame in to_responder.push(&t.frame).unwrap() {
                responder.handle_frame(REQUESTER, &frame, source, now);
            }
            moved = true;
        }
        while let Some(t) = responder.poll_transmit() {
            assert_eq!(t.peer, REQUESTER);
            run.responses += 1;
            for frame in to_requester.push(&t.frame).unwrap() {
                requester.handle_frame(RESPONDER, &frame, &empty, now);
            }
            moved = true;
        }
        while let Some(event) = requester.poll_event() {
            if let Event::Received { block, .. } = &event {
                into.ingest(block).unwrap();
            }
            run.events.push(event);
            moved = true;
        }
        assert!(
            responder.poll_event().is_none(),
            "an honest requester gives no cause"
        );
        if !moved {
            return run;
        }
    }
    panic!("the exchange did not settle");
}

fn received(run: &Run) -> Vec<Cid> {
    run.events
        .iter()
        .filter_map(|e| match e {
            Event::Received { block, .. } => Some(block.cid()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_long_chain_arrives_oldest_first_in_one_round_trip() {
    let (source, doc, blocks) = chain(500);
    let now = epoch();
    let (mut requester, mut responder) = (
        Backfill::new(Config::default()),
        Backfill::new(Config::default()),
    );
    let mut into = replica(2);
    into.ingest(&blocks[0]).unwrap();
    let head = blocks.last().unwrap().cid();
    let id = requester
        .fetch(RESPONDER, doc, &[head], &[blocks[0].cid()], now)
        .unwrap();
    let run = drive(&mut requester, &mut responder, source.dag(), &mut into, now);
    assert_eq!(run.requests, 1, "one request, whatever the depth");
    let expected: Vec<Cid> = blocks[1..].iter().map(|b| b.cid()).collect();
    assert_eq!(
        received(&run),
        expected,
        "exactly the difference, parents first"
    );
    assert!(
        into.dag().pending().next().is_none(),
        "every block applied as it arrived"
    );
    assert_eq!(into.state(doc), source.state(doc));
    assert_eq!(
        run.events.last(),
        Some(&Event::Completed {
            request: id,
            peer: RESPONDER,
            truncated: false
        })
    );
    assert_eq!(requester.in_flight(), 0);
}

#[test]
fn only_the_branch_the_requester_lacks_is_sent() {
    // Two writers diverge from a shared prefix; the requester holds one branch.
    let (mut x, doc, shared) = chain(20);
    let mut y = replica(3);
    for b in &shared {
        y.ingest(b).unwrap();
    }
    let mine: Vec<VerifiedBlock> = (0..30)
        .map(|i| y.update(doc, &json!({"b": format!("y{i}")})).unwrap())
        .collect();
    let theirs: Vec<VerifiedBlock> = (0..40)
        .map(|i| x.update(doc, &json!({"a": 1000 + i})).unwrap())
        .collect();
    for b in &mine {
        x.ingest(b).unwrap();
    }
    let merged = x.update(doc, &json!({"a": -1})).unwrap();
    let now = epoch();
    let (mut requester, mut responder) = (
        Backfill::new(Config::default()),
        Backfill::new(Config::default()),
    );
    let have = y.state(doc).unwrap().heads.clone();
    requester
        .fetch(RESPONDER, doc, &x.state(doc).unwrap().heads, &have, now)
        .unwrap();
    let run = drive(&mut requester, &mut responder, x.dag(), &mut y, now);
    let mut expected: Vec<Cid> = theirs.iter().map(|b| b.cid()).collect();
    expected.push(merged.cid());
    assert_eq!(received(&run), expected);
    assert_eq!(y.state(doc), x.state(doc));
}

#[test]
fn a_budget_sends_the_oldest_part_and_the_rest_follows_from_the_new_heads() {
    let (source, doc, blocks) = chain(95);
    let now = epoch();
    let mut requester = Backfill::new(Config::default().with_max_blocks(10));
    let mut responder = Backfill::new(Config::default());
    let mut into = replica(2);
    let head = blocks.last().unwrap().cid();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let have = into.state(doc).map(|s| s.heads.clone()).unwrap_or_default();
        requester
            .fetch(RESPONDER, doc, &[head], &have, now)
            .unwrap();
        let run = drive(&mut requester, &mut responder, source.dag(), &mut into, now);
        assert!(received(&run).len() <= 10);
        assert!(
            into.dag().pending().next().is_none(),
            "the oldest part applies at once"
        );
        match run.events.last() {
            Some(Event::Completed {
                truncated: true, ..
            }) => continue,
            Some(Event::Completed {
                truncated: false, ..
            }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rounds, 10);
    assert_eq!(into.state(doc), source.state(doc));
}

#[test]
fn a_peer_without_the_wanted_heads_says_not_found() {
    let (source, doc, _) = chain(3);
    let (other, _, other_blocks) = chain(4);
    let _ = other;
    let now = epoch();
    let (mut requester, mut responder) = (
        Backfill::new(Config::default()),
        Backfill::new(Config::default()),
    );
    let missing = other_blocks.last().unwrap().cid();
    let id = requester
        .fetch(RESPONDER, doc, &[missing], &[], now)
        .unwrap();
    let run = drive(
        &mut requester,
        &mut responder,
        source.dag(),
        &mut replica(2),
        now,
    );
    assert_eq!(
        run.events,
        vec![Event::Failed {
            request: id,
            peer: RESPONDER,
            reason: Failure::NotFound
        }]
    );
}

/// Sends a hand-made response frame from the responder to `requester`.
fn respond(requester: &mut Backfill<u8>, response: pb::Response, now: Instant) -> Vec<Event<u8>> {
    let frame = pb::Frame {
        kind: pb::mod_Frame::OneOfkind::response(response),
    };
    let bytes = encode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
    requester.handle_frame(RESPONDER, &bytes[4..], &MemoryDag::new(), now);
    std::iter::from_fn(|| requester.poll_event()).collect()
}

/// A request with a zero budget sets no bound of the requester's own (the field's protobuf
/// default): the responder serves within its own bounds, not one block or none.
#[test]
fn a_zero_budget_in_a_request_means_the_responders_bounds() {
    let (source, doc, blocks) = chain(5);
    let now = epoch();
    for (max_blocks, own, expected) in [(0, 100_000, 5), (0, 2, 2), (3, 100_000, 3)] {
        let mut responder = Backfill::new(Config::default().with_max_blocks(own));
        let request = pb::Request {
            id: 7,
            doc_id: doc.to_bytes().to_vec(),
            wanted: vec![blocks.last().unwrap().cid().to_bytes()],
            have: Vec::new(),
            max_blocks,
            max_bytes: 0,
        };
        let frame = pb::Frame {
            kind: pb::mod_Frame::OneOfkind::request(request),
        };
        let bytes = encode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        responder.handle_frame(REQUESTER, &bytes[4..], source.dag(), now);
        let sent = responder.poll_transmit().expect("a response");
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
        let frames = reader.push(&sent.frame).unwrap();
        let frame: pb::Frame = crate::wire::decode_message(&frames[0]).unwrap();
        let pb::mod_Frame::OneOfkind::response(response) = frame.kind else {
            panic!("not a response: {frame:?}");
        };
        assert_eq!(
            response.blocks.len(),
            expected,
            "asked {max_blocks}, own {own}"
        );
        let status = if expected == 5 {
            pb::Status::COMPLETE
        } else {
            pb::Status::TRUNCATED
        };
        assert_eq!(response.status, status);
    }
}

#[test]
fn lying_responders_are_caught() {
    let (_, doc, blocks) = chain(3);
    let mut other = replica(4);
    let (_, foreign_genesis) = other.create("U", &json!({"a": 99})).unwrap();
    let foreign = [foreign_genesis.clone(), foreign_genesis];
    let now = epoch();
    let cases: Vec<(Vec<Vec<u8>>, bool, pb::Status, Violation)> = vec![
        (
            vec![foreign[1].bytes().to_vec()],
            true,
            pb::Status::COMPLETE,
            Violation::WrongDocument,
        ),
        (
            vec![b"not a block".to_vec()],
            true,
            pb::Status::COMPLETE,
            Violation::BadBlock(hypha_crdt::BlockError::Malformed(String::new())),
        ),
        (
            vec![blocks[1].bytes().to_vec()],
            true,
            pb::Status::STATUS_UNSPECIFIED,
            Violation::BadStatus,
        ),
        (
            vec![blocks[1].bytes().to_vec(), blocks[2].bytes().to_vec()],
            true,
            pb::Status::COMPLETE,
            Violation::OverBudget,
        ),
    ];
    for (raw, done, status, expected) in cases {
        let mut requester = Backfill::new(Config::default().with_max_blocks(1));
        let id = requester
            .fetch(RESPONDER, doc, &[blocks[2].cid()], &[], now)
            .unwrap();
        let _ = requester.poll_transmit();
        let events = respond(
            &mut requester,
            pb::Response {
                id: id.0,
                blocks: raw,
                done,
                status,
            },
            now,
        );
        let violation = events.iter().find_map(|e| match e {
            Event::PeerMisbehaved { violation, .. } => Some(violation.clone()),
            _ => None,
        });
        match (violation, &expected) {
            (Some(Violation::BadBlock(_)), Violation::BadBlock(_)) => {}
            (got, expected) => assert_eq!(got.as_ref(), Some(expected)),
        }
        assert!(matches!(
            events.last(),
            Some(Event::Failed {
                reason: Failure::Misbehaved(_),
                ..
            })
        ));
        assert_eq!(requester.in_flight(), 0);
    }
    // A response for nothing in flight.
    let mut requester = Backfill::<u8>::new(Config::default());
    let events = respond(
        &mut requester,
        pb::Response {
            id: 7,
            blocks: vec![],
            done: true,
            status: pb::Status::COMPLETE,
        },
        now,
    );
    assert_eq!(
        events,
        vec![Event::PeerMisbehaved {
            peer: RESPONDER,
            violation: Violation::UnexpectedResponse
        }]
    );
    // Garbage frames.
    requester.handle_frame(RESPONDER, &[0xff, 0xff], &MemoryDag::new(), now);
    assert!(matches!(
        requester.poll_event(),
        Some(Event::PeerMisbehaved {
            violation: Violation::Malformed(_),
            ..
        })
    ));
}

#[test]
fn silent_peers_time_out_and_disconnects_fail_requests() {
    let (_, doc, blocks) = chain(2);
    let now = epoch();
    let config = Config::default().with_request_timeout(Duration::from_secs(5));
    let mut requester = Backfill::<u8>::new(config);
    let a = requester
        .fetch(RESPONDER, doc, &[blocks[1].cid()], &[], now)
        .unwrap();
    let b = requester
        .fetch(
            2,
            doc,
            &[blocks[1].cid()],
            &[],
            now + Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(requester.poll_timeout(), Some(now + Duration::from_secs(5)));
    requester.handle_timeout(now + Duration::from_secs(4));
    assert!(
        requester.poll_event().is_none(),
        "early timeouts do nothing"
    );
    requester.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(
        requester.poll_event(),
        Some(Event::Failed {
            request: a,
            peer: RESPONDER,
            reason: Failure::TimedOut
        })
    );
    requester.handle_disconnected(2, now + Duration::from_secs(5));
    assert_eq!(
        requester.poll_event(),
        Some(Event::Failed {
            request: b,
            peer: 2,
            reason: Failure::Disconnected
        })
    );
    assert_eq!(requester.poll_timeout(), None);
    assert_eq!(
        requester.fetch(RESPONDER, doc, &[], &[], now + Duration::from_secs(6)),
        None,
        "nothing wanted"
    );
}

#[test]
fn outcome_of_ingesting_received_blocks_never_pends() {
    // The order guarantee, stated against the merge itself.
    let (source, doc, blocks) = chain(50);
    let now = epoch();
    let (mut requester, mut responder) = (
        Backfill::new(Config::default()),
        Backfill::new(Config::default()),
    );
    requester
        .fetch(RESPONDER, doc, &[blocks[49].cid()], &[], now)
        .unwrap();
    let mut into = replica(2);
    let run = drive(
        &mut requester,
        &mut responder,
        source.dag(),
        &mut replica(9),
        now,
    );
    for event in run.events {
        if let Event::Received { block, .. } = event {
            assert!(matches!(
                into.ingest(&block).unwrap(),
                Outcome::Applied { .. }
            ));
        }
    }
}
