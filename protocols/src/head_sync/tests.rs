//! Two head-sync cores over real frames, on in-memory indexes.

use std::time::Instant;

use hypha_crdt::cid::dag_cbor_cid;
use hypha_crdt::{CollectionId, DocId};
use proptest::prelude::*;

use super::*;
use crate::generated::hypha::head_sync::v1 as pb;
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, FrameReader};

#[allow(clippy::disallowed_methods)] // The test's one clock read: an arbitrary origin.
fn epoch() -> Instant {
    Instant::now()
}

const A: u8 = 0;
const B: u8 = 1;

type Side = MemorySource;

/// Holds `doc` at a head derived from `version`.
fn put(side: &mut Side, c: CollectionId, doc: DocId, version: u64) {
    let heads = vec![dag_cbor_cid(
        &[doc.to_bytes().as_slice(), &version.to_be_bytes()].concat(),
    )];
    side.put(c, doc, heads);
}

fn collection() -> CollectionId {
    CollectionId::derive("hypha", "Users")
}

fn doc(i: u64) -> DocId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    b[8..].copy_from_slice(&i.to_be_bytes());
    DocId::from_bytes(b)
}

struct Run {
    a_events: Vec<Event<u8>>,
    b_events: Vec<Event<u8>>,
    round_trips: usize,
    bytes_ab: usize,
    bytes_ba: usize,
}

/// Moves frames both ways until both cores are quiet.
fn drive(a: &mut HeadSync<u8>, sa: &Side, b: &mut HeadSync<u8>, sb: &Side) -> Run {
    let now = epoch();
    let mut run = Run {
        a_events: Vec::new(),
        b_events: Vec::new(),
        round_trips: 0,
        bytes_ab: 0,
        bytes_ba: 0,
    };
    loop {
        let to_b: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
        if to_b.is_empty() {
            break;
        }
        run.round_trips += 1;
        for t in to_b {
            assert_eq!(t.peer, B);
            run.bytes_ab += t.frame.len();
            for f in FrameReader::new(DEFAULT_MAX_FRAME_BYTES)
                .push(&t.frame)
                .unwrap()
            {
                b.handle_frame(A, &f, sb, now);
            }
        }
        for t in std::iter::from_fn(|| b.poll_transmit()).collect::<Vec<_>>() {
            run.bytes_ba += t.frame.len();
            for f in FrameReader::new(DEFAULT_MAX_FRAME_BYTES)
                .push(&t.frame)
                .unwrap()
            {
                a.handle_frame(B, &f, sa, now);
            }
        }
    }
    run.a_events.extend(std::iter::from_fn(|| a.poll_event()));
    run.b_events.extend(std::iter::from_fn(|| b.poll_event()));
    run
}

fn cores() -> (HeadSync<u8>, HeadSync<u8>) {
    (
        HeadSync::new(Config::default(), 1),
        HeadSync::new(Config::default(), 2),
    )
}

/// Two sides sharing `n` documents; `changed` of them at a newer version on B, `only_b` only
/// on B, `only_a` only on A.
fn pair(n: u64, changed: u64, only_b: u64, only_a: u64) -> (Side, Side) {
    let (mut a, mut b) = (Side::new(), Side::new());
    let c = collection();
    for i in 0..n {
        put(&mut a, c, doc(i), 0);
        put(&mut b, c, doc(i), u64::from(i < changed));
    }
    for i in 0..only_b {
        put(&mut b, c, doc(n + i), 0);
    }
    for i in 0..only_a {
        put(&mut a, c, doc(n + only_b + i), 0);
    }
    (a, b)
}

fn differs(events: &[Event<u8>]) -> Vec<DocId> {
    let mut v: Vec<DocId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Differs { doc, .. } => Some(*doc),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn offered(events: &[Event<u8>]) -> Vec<DocId> {
    let mut v: Vec<DocId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Offered { doc, .. } => Some(*doc),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn completed(events: &[Event<u8>]) -> Option<SessionStats> {
    events.iter().find_map(|e| match e {
        Event::Completed { stats, .. } => Some(*stats),
        _ => None,
    })
}

fn expected(range: std::ops::Range<u64>) -> Vec<DocId> {
    let mut v: Vec<DocId> = range.map(doc).collect();
    v.sort();
    v
}

#[test]
fn equal_roots_end_in_one_round_trip_of_under_64_bytes_each_way() {
    let (sa, sb) = pair(1000, 0, 0, 0);
    let (mut a, mut b) = cores();
    a.pull(B, &[collection()], &sa, epoch()).unwrap();
    let run = drive(&mut a, &sa, &mut b, &sb);
    assert_eq!(run.round_trips, 1);
    assert!(
        run.bytes_ab <= 64 && run.bytes_ba <= 64,
        "{} / {}",
        run.bytes_ab,
        run.bytes_ba
    );
    assert_eq!(completed(&run.a_events).unwrap().equal, 1);
    assert!(differs(&run.a_events).is_empty());
}

#[test]
fn a_pull_finds_exactly_what_the_responder_has_differently() {
    for (changed, only_b, only_a) in [(1, 0, 0), (5, 3, 2), (10, 0, 10), (0, 7, 0)] {
        let (sa, sb) = pair(1000, changed, only_b, only_a);
        let (mut a, mut b) = cores();
        a.pull(B, &[collection()], &sa, epoch()).unwrap();
        let run = drive(&mut a, &sa, &mut b, &sb);
        let mut want = expected(0..changed);
        want.extend(expected(1000..1000 + only_b));
        want.sort();
        assert_eq!(
            differs(&run.a_events),
            want,
            "changed {changed}, only_b {only_b}"
        );
        // Two round trips when the first sketch decodes (the usual case: 64 cells for up to
        // ~20 items); three when it takes the next level.
        assert!(run.round_trips <= 3, "{} round trips", run.round_trips);
        let stats = completed(&run.a_events).expect("completed");
        assert_eq!(
            stats.listed, 0,
            "small differences decode from the first sketch"
        );
    }
}

#[test]
fn a_push_offers_exactly_what_the_responder_lacks_or_holds_differently() {
    let (sa, sb) = pair(1000, 4, 2, 6);
    let (mut a, mut b) = cores();
    a.push(B, &[collection()], &sa, epoch()).unwrap();
    let run = drive(&mut a, &sa, &mut b, &sb);
    let mut want = expected(0..4);
    want.extend(expected(1002..1008));
    want.sort();
    assert_eq!(offered(&run.b_events), want);
    assert!(completed(&run.a_events).is_some());
}

#[test]
fn large_differences_fall_back_to_the_exact_listing() {
    // 5,000 + 400 differing items: more than the largest sketch (4,096 cells) can peel.
    let (sa, sb) = pair(6000, 2500, 300, 100);
    let (mut a, mut b) = cores();
    a.pull(B, &[collection()], &sa, epoch()).unwrap();
    let run = drive(&mut a, &sa, &mut b, &sb);
    let mut want = expected(0..2500);
    want.extend(expected(6000..6300));
    want.sort();
    assert_eq!(differs(&run.a_events), want);
    assert_eq!(completed(&run.a_events).unwrap().listed, 1);
}

#[test]
fn one_empty_side_pulls_everything() {
    let (_, sb) = pair(500, 0, 0, 0);
    let sa = Side::new();
    let (mut a, mut b) = cores();
    a.pull(B, &[collection()], &sa, epoch()).unwrap();
    let run = drive(&mut a, &sa, &mut b, &sb);
    assert_eq!(differs(&run.a_events), expected(0..500));
}

#[test]
fn pulling_named_documents_needs_no_index() {
    let (sa, sb) = pair(100, 10, 0, 0);
    let (mut a, mut b) = cores();
    a.pull_documents(B, &[doc(3), doc(50), doc(999)], epoch())
        .unwrap();
    let run = drive(&mut a, &sa, &mut b, &sb);
    assert_eq!(
        differs(&run.a_events),
        vec![doc(3)],
        "50 is equal, 999 unknown"
    );
    assert!(completed(&run.a_events).is_some());
}

#[test]
fn malformed_and_unbounded_requests_are_violations() {
    let (_, sb) = pair(10, 0, 0, 0);
    let mut b = HeadSync::<u8>::new(Config::default().with_max_collections(2), 2);
    let now = epoch();
    b.handle_frame(A, b"\x0a\xff\xff", &sb, now);
    // A Hello naming three collections, over the bound of two.
    let hello = pb::Frame {
        kind: pb::mod_Frame::OneOfkind::hello(pb::Hello {
            session: 1,
            mode: pb::Mode::PULL,
            collections: (0..3)
                .map(|i| pb::CollectionRoot {
                    collection_tag: i,
                    root: vec![0; 32],
                    count: 0,
                })
                .collect(),
        }),
    };
    let frame = crate::wire::encode_frame(&hello, DEFAULT_MAX_FRAME_BYTES).unwrap();
    b.handle_frame(A, &frame[4..], &sb, now);
    // A Sketches reply for no session.
    let stray = pb::Frame {
        kind: pb::mod_Frame::OneOfkind::sketches(pb::Sketches {
            session: 9,
            collections: vec![],
        }),
    };
    let frame = crate::wire::encode_frame(&stray, DEFAULT_MAX_FRAME_BYTES).unwrap();
    b.handle_frame(A, &frame[4..], &sb, now);
    let violations: Vec<Violation> = std::iter::from_fn(|| b.poll_event())
        .filter_map(|e| match e {
            Event::PeerMisbehaved { violation, .. } => Some(violation),
            _ => None,
        })
        .collect();
    assert!(matches!(violations[0], Violation::Malformed(_)));
    assert_eq!(violations[1], Violation::OverBounds);
    assert_eq!(violations[2], Violation::Unexpected);
    assert!(b.poll_transmit().is_none(), "nothing answered");
}

#[test]
fn a_bad_sketch_fails_the_session() {
    let (sa, _) = pair(10, 0, 0, 0);
    let (mut a, _) = cores();
    let now = epoch();
    let session = a.pull(B, &[collection()], &sa, now).unwrap();
    while a.poll_transmit().is_some() {}
    let reply = pb::Frame {
        kind: pb::mod_Frame::OneOfkind::sketches(pb::Sketches {
            session: session.0,
            collections: vec![pb::CollectionSketch {
                collection_tag: u64::from_be_bytes(
                    collection().0.hash().digest()[..8].try_into().unwrap(),
                ),
                status: pb::SketchStatus::SKETCH,
                level: 0,
                iblt: vec![1, 2, 3],
            }],
        }),
    };
    let frame = crate::wire::encode_frame(&reply, DEFAULT_MAX_FRAME_BYTES).unwrap();
    a.handle_frame(B, &frame[4..], &sa, now);
    let events: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Failed {
            reason: Failure::Misbehaved,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PeerMisbehaved {
            violation: Violation::BadSketch,
            ..
        }
    )));
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn a_silent_peer_times_out() {
    let (sa, _) = pair(10, 0, 0, 0);
    let (mut a, _) = cores();
    let now = epoch();
    a.pull(B, &[collection()], &sa, now).unwrap();
    let deadline = a.poll_timeout().unwrap();
    a.handle_timeout(deadline);
    let events: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(matches!(
        events.as_slice(),
        [Event::Failed {
            reason: Failure::TimedOut,
            ..
        }]
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_pair_of_sets_reconciles_exactly(
        n in 0u64..600, changed in 0u64..60, only_b in 0u64..60, only_a in 0u64..60, push in any::<bool>(),
    ) {
        let changed = changed.min(n);
        let (sa, sb) = pair(n, changed, only_b, only_a);
        let (mut a, mut b) = cores();
        if push {
            a.push(B, &[collection()], &sa, epoch()).unwrap();
        } else {
            a.pull(B, &[collection()], &sa, epoch()).unwrap();
        }
        let run = drive(&mut a, &sa, &mut b, &sb);
        let mut want = expected(0..changed);
        if push {
            want.extend(expected(n + only_b..n + only_b + only_a));
            want.sort();
            prop_assert_eq!(offered(&run.b_events), want);
        } else {
            want.extend(expected(n..n + only_b));
            want.sort();
            prop_assert_eq!(differs(&run.a_events), want);
        }
        prop_assert!(completed(&run.a_events).is_some());
    }

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (sa, _) = pair(20, 0, 0, 0);
        let mut core = HeadSync::<u8>::new(Config::default(), 3);
        core.handle_frame(A, &bytes, &sa, epoch());
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
    }
}
