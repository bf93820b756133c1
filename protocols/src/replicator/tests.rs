//! The replicator between a source and a target, driven by hand over real frames.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hypha_crdt::{Author, CollectionId, Replica, VerifiedBlock, parse_sdl};
use serde_json::json;

use super::*;
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, FrameReader};

/// The start of a test's virtual time; only differences from it matter.
#[allow(clippy::disallowed_methods)] // The one clock read: an arbitrary origin.
fn epoch() -> Instant {
    Instant::now()
}

const SOURCE: u8 = 0;
const TARGET: u8 = 1;

fn doc_blocks() -> (Replica, hypha_crdt::DocId, Vec<VerifiedBlock>) {
    let schema = parse_sdl("hypha", "type U { a: Int }").unwrap();
    let mut r = Replica::new(schema, Author::unsigned([1; 32]));
    let (doc, genesis) = r.create("U", &json!({"a": 0})).unwrap();
    let update = r.update(doc, &json!({"a": 1})).unwrap();
    (r, doc, vec![genesis, update])
}

fn collection() -> CollectionId {
    CollectionId::derive("hypha", "U")
}

/// Moves every queued frame from `from` to `to`.
fn deliver(
    from: &mut Replicator<u8>,
    to: &mut Replicator<u8>,
    to_peer: u8,
    from_peer: u8,
    now: Instant,
) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit() {
        assert_eq!(t.peer, to_peer);
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
        for frame in reader.push(&t.frame).unwrap() {
            to.handle_frame(from_peer, &frame, now);
            n += 1;
        }
    }
    n
}

fn events(r: &mut Replicator<u8>) -> Vec<Event<u8>> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn connected_pair(now: Instant) -> (Replicator<u8>, Replicator<u8>) {
    let mut source = Replicator::new(Config::default());
    let target = Replicator::new(Config::default());
    source.handle_connected(TARGET, now);
    assert_eq!(events(&mut source), vec![Event::Ready { peer: TARGET }]);
    (source, target)
}

fn push_all(source: &mut Replicator<u8>, blocks: &[VerifiedBlock], now: Instant) -> PushId {
    let doc = blocks[0].doc_id();
    let heads = vec![blocks.last().unwrap().cid()];
    let bytes = blocks.iter().map(|b| b.bytes().to_vec()).collect();
    source
        .push(TARGET, "U", collection(), doc, heads, bytes, now)
        .unwrap()
}

#[test]
fn ack_reaches_the_source_only_when_the_target_responds() {
    let now = epoch();
    let (mut source, mut target) = connected_pair(now);
    let (_, doc, blocks) = doc_blocks();
    let push = push_all(&mut source, &blocks, now);
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    let received = events(&mut target);
    let [
        Event::Received {
            id,
            doc: d,
            blocks: got,
            heads,
            ..
        },
    ] = received.as_slice()
    else {
        panic!("expected one Received, got {received:?}");
    };
    assert_eq!((*d, got.len(), heads.len()), (doc, 2, 1));
    assert_eq!(
        target.poll_transmit(),
        None,
        "no ack before the target says durable"
    );
    target.respond(SOURCE, *id, Status::Durable, now);
    deliver(&mut target, &mut source, SOURCE, TARGET, now);
    let acked = events(&mut source);
    assert!(matches!(acked.as_slice(), [Event::Acked { push: p, peer: TARGET, .. }] if *p == push));
    assert_eq!(source.stats().acked, 1);
}

#[test]
fn unknown_collection_is_refused_and_retried_after_the_first_interval() {
    let now = epoch();
    let (mut source, mut target) = connected_pair(now);
    let (_, _, blocks) = doc_blocks();
    push_all(&mut source, &blocks, now);
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    let Some(Event::Received { id, .. }) = target.poll_event() else {
        panic!()
    };
    target.respond(SOURCE, id, Status::UnknownCollection, now);
    deliver(&mut target, &mut source, SOURCE, TARGET, now);
    assert!(matches!(
        events(&mut source).as_slice(),
        [Event::Refused {
            reason: Refusal::UnknownCollection,
            ..
        }]
    ));
    assert!(!source.can_push(&TARGET), "waits for the retry");
    assert_eq!(source.poll_timeout(), Some(now + Duration::from_secs(30)));
    source.handle_timeout(now + Duration::from_secs(29));
    assert!(
        events(&mut source).is_empty(),
        "an early timeout does nothing"
    );
    source.handle_timeout(now + Duration::from_secs(30));
    assert_eq!(events(&mut source), vec![Event::Ready { peer: TARGET }]);
    assert!(source.can_push(&TARGET));
}

#[test]
fn retries_back_off_doubling_to_thirty_two_minutes() {
    let mut now = epoch();
    let (mut source, _) = connected_pair(now);
    let (_, _, blocks) = doc_blocks();
    let mut waits = Vec::new();
    for _ in 0..9 {
        push_all(&mut source, &blocks, now);
        let _ = source.poll_transmit();
        let deadline = source.poll_timeout().unwrap();
        now = deadline;
        source.handle_timeout(now); // the push times out
        let retry = source.poll_timeout().unwrap();
        waits.push((retry - now).as_secs());
        now = retry;
        source.handle_timeout(now);
        let _ = events(&mut source);
    }
    assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 1920, 1920]);
}

#[test]
fn reconnect_makes_the_target_ready_at_once() {
    let now = epoch();
    let (mut source, _) = connected_pair(now);
    let (_, _, blocks) = doc_blocks();
    push_all(&mut source, &blocks, now);
    source.handle_disconnected(TARGET, now);
    assert!(matches!(
        events(&mut source).as_slice(),
        [Event::Failed {
            reason: Failure::Disconnected,
            ..
        }]
    ));
    assert!(source.retry_pending(&TARGET));
    source.handle_connected(TARGET, now + Duration::from_secs(1));
    assert_eq!(events(&mut source), vec![Event::Ready { peer: TARGET }]);
    assert!(source.can_push(&TARGET));
}

#[test]
fn a_source_not_on_the_allow_list_is_refused_unauthorized() {
    let now = epoch();
    let mut source = Replicator::new(Config::default());
    source.handle_connected(TARGET, now);
    let allowed = BTreeSet::from([7u8]);
    let mut target = Replicator::new(Config::default().with_allowed_sources(Some(allowed)));
    let (_, _, blocks) = doc_blocks();
    push_all(&mut source, &blocks, now);
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    assert!(
        events(&mut target).is_empty(),
        "nothing reaches the coordinator"
    );
    assert_eq!(target.stats().refused_unauthorized, 1);
    deliver(&mut target, &mut source, SOURCE, TARGET, now);
    assert!(events(&mut source).iter().any(|e| matches!(
        e,
        Event::Refused {
            reason: Refusal::Unauthorized,
            ..
        }
    )));
}

#[test]
fn a_source_over_its_quota_gets_busy() {
    let now = epoch();
    let mut source = Replicator::new(Config::default());
    source.handle_connected(TARGET, now);
    let (_, _, blocks) = doc_blocks();
    let bytes: u64 = blocks.iter().map(|b| b.bytes().len() as u64).sum();
    let config = Config::default().with_quota(bytes * 3, Duration::from_secs(60));
    let mut target = Replicator::new(config);
    for _ in 0..5 {
        push_all(&mut source, &blocks, now);
    }
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    let received = events(&mut target).len();
    assert_eq!((received, target.stats().refused_busy), (3, 2));
    // A minute later the bucket has refilled.
    let later = now + Duration::from_secs(60);
    for e in [0, 1, 2] {
        target.respond(SOURCE, InboundId(e), Status::Durable, later);
    }
    let _ = std::iter::from_fn(|| target.poll_transmit()).count();
    push_all(&mut source, &blocks, later);
    deliver(&mut source, &mut target, TARGET, SOURCE, later);
    assert_eq!(events(&mut target).len(), 1);
}

#[test]
fn a_block_of_another_document_is_rejected_as_misbehaviour() {
    let now = epoch();
    let (mut source, mut target) = connected_pair(now);
    let (_, _, a) = doc_blocks();
    let schema = parse_sdl("hypha", "type U { a: Int }").unwrap();
    let mut other = Replica::new(schema, Author::unsigned([2; 32]));
    let (_, foreign) = other.create("U", &json!({"a": 99})).unwrap();
    let doc = a[0].doc_id();
    let heads = vec![a[1].cid()];
    let bytes = vec![a[0].bytes().to_vec(), foreign.bytes().to_vec()];
    source
        .push(TARGET, "U", collection(), doc, heads, bytes, now)
        .unwrap();
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    assert!(matches!(
        events(&mut target).as_slice(),
        [Event::PeerMisbehaved {
            violation: Violation::WrongDocument,
            ..
        }]
    ));
    deliver(&mut target, &mut source, SOURCE, TARGET, now);
    assert!(matches!(
        events(&mut source).as_slice(),
        [Event::Refused {
            reason: Refusal::Rejected,
            ..
        }]
    ));
}

#[test]
fn corrupted_block_bytes_are_rejected() {
    let now = epoch();
    let (mut source, mut target) = connected_pair(now);
    let (_, doc, blocks) = doc_blocks();
    let mut bytes = blocks[0].bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    source
        .push(
            TARGET,
            "U",
            collection(),
            doc,
            vec![blocks[0].cid()],
            vec![bytes],
            now,
        )
        .unwrap();
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    assert!(matches!(
        events(&mut target).as_slice(),
        [Event::PeerMisbehaved {
            violation: Violation::BadBlock(_),
            ..
        }]
    ));
    assert_eq!(target.stats().refused_invalid, 1);
}

#[test]
fn an_ack_for_no_push_is_a_violation() {
    let now = epoch();
    let (mut source, mut target) = connected_pair(now);
    target.respond(SOURCE, InboundId(42), Status::Durable, now);
    deliver(&mut target, &mut source, SOURCE, TARGET, now);
    assert!(matches!(
        events(&mut source).as_slice(),
        [Event::PeerMisbehaved {
            violation: Violation::UnexpectedAck,
            ..
        }]
    ));
}

#[test]
fn pushes_in_flight_are_bounded() {
    let now = epoch();
    let mut source = Replicator::new(Config::default().with_max_in_flight(2));
    source.handle_connected(TARGET, now);
    let (_, _, blocks) = doc_blocks();
    push_all(&mut source, &blocks, now);
    push_all(&mut source, &blocks, now);
    assert!(!source.can_push(&TARGET));
    let doc = blocks[0].doc_id();
    let r = source.push(
        TARGET,
        "U",
        collection(),
        doc,
        vec![blocks[0].cid()],
        vec![],
        now,
    );
    assert_eq!(r, Err(PushError::TooManyInFlight));
}

#[test]
fn blocks_that_do_not_fit_a_frame_are_left_for_backfill() {
    let now = epoch();
    let config = Config::default().with_max_frame_bytes(300);
    let mut source = Replicator::new(config);
    source.handle_connected(TARGET, now);
    let mut target = Replicator::new(Config::default());
    let (_, _, blocks) = doc_blocks();
    push_all(&mut source, &blocks, now);
    deliver(&mut source, &mut target, TARGET, SOURCE, now);
    let Some(Event::Received { blocks: got, .. }) = target.poll_event() else {
        panic!()
    };
    assert!(got.len() < blocks.len());
}

proptest::proptest! {
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let mut r = Replicator::<u8>::new(Config::default());
        r.handle_frame(1, &bytes, epoch());
        while r.poll_transmit().is_some() {}
        while r.poll_event().is_some() {}
    }
}
