//! The coordinator's cross-protocol behaviour beyond SCENARIOS.md: chains of nodes, blocks too
//! large to travel inline, hostile pubsub input, allow lists, lossy gossip, determinism.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hypha_crdt::Author;
use hypha_protocols::connectivity::Path;
use hypha_protocols::node::{self, Command, Event, Node, Verdict, Violation};
use hypha_protocols::replicator::{self, Refusal};
use hypha_protocols::testing::{Network, Options};
use hypha_store::{Mutation, Replicator, Stage, Store};
use serde_json::{Value, json};

const U: &str = "type Users { Name: String  Age: Int }";

fn ages(n: &Network, i: u16) -> Vec<Value> {
    n.values(i, "Users", "Age")
}

#[test]
fn gossip_crosses_a_chain_of_followers() {
    // 0 — 1 — 2: node 0 and node 2 are not connected.
    let mut n = Network::new(Options::seeded(40).nodes(3));
    n.schema_all(U);
    n.connect(0, 1);
    n.connect(1, 2);
    n.follow_collections(1, &["Users"]).unwrap();
    n.follow_collections(2, &["Users"]).unwrap();
    n.wait().unwrap();
    let doc = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.update(0, doc, json!({"Age": 22})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 2), vec![json!(22)]);
}

#[test]
fn a_block_pushed_to_a_replicator_is_published_on_to_its_followers() {
    // 0 →(replicator) 1 —(pubsub) 2: node 2 follows Users and is connected to node 1 only.
    let mut n = Network::new(Options::seeded(41).nodes(3));
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.connect(2, 1);
    n.follow_collections(2, &["Users"]).unwrap();
    n.wait().unwrap();
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), vec![json!(21)]);
    assert_eq!(
        ages(&n, 2),
        vec![json!(21)],
        "node 1 republished the pushed block"
    );
}

#[test]
fn a_block_too_large_to_travel_inline_is_fetched_by_backfill() {
    let mut o = Options::seeded(42);
    o.configure = Some(|_, c| c.with_max_inline_bytes(64));
    let mut n = Network::new(o);
    n.schema_all(U);
    n.connect(0, 1);
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    let doc = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    for age in 22..30 {
        n.update(0, doc, json!({"Age": age})).unwrap();
    }
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), vec![json!(29)]);
    let stats = n.node(1).unwrap().stats();
    assert!(
        stats.fetches > 0,
        "updates came by CID and were backfilled: {stats:?}"
    );
}

#[test]
fn a_follower_that_missed_history_backfills_it_from_the_sender() {
    // Node 1 follows a document it does not have; the next update brings the whole history.
    let mut n = Network::new(Options::seeded(43));
    n.schema_all(U);
    let doc = n
        .create(0, "Users", json!({"Name": "John", "Age": 1}))
        .unwrap();
    for age in 2..50 {
        n.update(0, doc, json!({"Age": age})).unwrap();
    }
    n.connect(1, 0);
    n.follow_documents(1, &[doc]);
    n.wait().unwrap();
    n.update(0, doc, json!({"Age": 50})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), vec![json!(50)]);
    assert_eq!(n.store(1).stats().unwrap().blocks, 50);
}

#[test]
fn a_source_off_the_allow_list_is_refused_and_nothing_is_written() {
    let mut o = Options::seeded(44);
    // Node 1 accepts pushes only from a peer that does not exist.
    o.configure = Some(|i, c| {
        if i == 1 {
            let allowed = Some(BTreeSet::from([99u16]));
            c.with_replicator(replicator::Config::default().with_allowed_sources(allowed))
        } else {
            c
        }
    });
    let mut n = Network::new(o);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.run_for(Duration::from_secs(10));
    assert!(ages(&n, 1).is_empty());
    let refused = n.events(0).iter().any(|e| match e {
        Event::ReplicationFailed { reason, .. } => *reason == Refusal::Unauthorized.into(),
        Event::CatchUpRefused { reason, .. } => *reason == Refusal::Unauthorized,
        _ => false,
    });
    assert!(refused, "the target refused the source as unauthorized");
    // A push of a document made after the catch-up is refused by the replicator protocol.
    n.create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.run_for(Duration::from_secs(10));
    assert!(ages(&n, 1).is_empty());
    assert_eq!(
        n.node(1).unwrap().replicator_stats().refused_unauthorized,
        1
    );
}

#[test]
fn replicators_converge_under_lossy_duplicating_gossip() {
    // Every node replicates Users to every other and follows it; gossip loses a third of its
    // messages and duplicates a fifth. Pushes are reliable, so all converge.
    for seed in 0..8 {
        let mut o = Options::seeded(100 + seed).nodes(3);
        o.gossip_loss = 0.3;
        o.gossip_duplication = 0.2;
        o.jitter = Duration::from_millis(20);
        let mut n = Network::new(o);
        n.schema_all(U);
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    n.set_replicator(a, b, &["Users"], &[]);
                }
            }
            n.follow_collections(a, &["Users"]).unwrap();
        }
        let doc = n.create_all("Users", json!({"Name": "John", "Age": 0}));
        for round in 0..5 {
            n.concurrently(|n| {
                for i in 0..3u16 {
                    let age = round * 10 + i64::from(i);
                    n.update(i, doc, json!({"Age": age})).unwrap();
                }
            });
            n.run_for(Duration::from_millis(3));
        }
        n.wait().unwrap();
        let states: Vec<Vec<Value>> = (0..3).map(|i| ages(&n, i)).collect();
        assert!(
            states.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: {states:?}"
        );
        let heads: BTreeSet<_> = (0..3)
            .map(|i| n.store(i).state(&doc).unwrap().unwrap().heads)
            .collect();
        assert_eq!(heads.len(), 1, "seed {seed}: same heads everywhere");
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut o = Options::seeded(seed).nodes(3);
        o.gossip_loss = 0.2;
        let mut n = Network::new(o);
        n.schema_all(U);
        n.connect(0, 1);
        n.connect(1, 2);
        n.set_replicator(0, 2, &["Users"], &[]);
        n.follow_collections(1, &["Users"]).unwrap();
        let doc = n
            .create(0, "Users", json!({"Name": "John", "Age": 0}))
            .unwrap();
        for age in 1..20 {
            n.update(0, doc, json!({"Age": age})).unwrap();
        }
        n.wait().unwrap();
        let heads: Vec<_> = (0..3).map(|i| n.store(i).state(&doc).unwrap()).collect();
        (
            n.elapsed(),
            heads,
            format!("{:?}", n.node(1).unwrap().stats()),
        )
    };
    assert_eq!(run(7), run(7));
}

#[test]
fn nodes_that_diverged_apart_converge_by_head_exchange_alone() {
    // Pubsub off: only head exchange (on connect and as anti-entropy) can move anything.
    let mut o = Options::seeded(45).nodes(2);
    o.passive = false;
    let mut n = Network::new(o);
    n.schema_all(U);
    n.follow_collections(0, &["Users"]).unwrap();
    n.follow_collections(1, &["Users"]).unwrap();
    for i in 0..30 {
        n.create(0, "Users", json!({"Name": format!("a{i}"), "Age": i}))
            .unwrap();
        n.create(1, "Users", json!({"Name": format!("b{i}"), "Age": 100 + i}))
            .unwrap();
    }
    let shared = n.create_all("Users", json!({"Name": "both", "Age": 0}));
    n.update(0, shared, json!({"Age": 1})).unwrap();
    n.update(1, shared, json!({"Age": 2})).unwrap();
    n.connect(0, 1);
    n.wait().unwrap();
    assert_eq!(n.documents(0, "Users", true), n.documents(1, "Users", true));
    assert_eq!(n.documents(0, "Users", false).len(), 61);
    let root = |i| n.store(i).sync_root(&n.collection_id("Users"));
    assert_eq!(root(0), root(1), "equal roots once converged");
}

/// A follower that finds 300 documents changed on one peer fetches them all from that peer's
/// first head exchange: at most `max_fetches_per_peer` (16) in flight to it at any time, the
/// rest waiting for a place rather than for the next anti-entropy round (a minute away).
#[test]
fn a_catch_up_of_many_documents_streams_through_the_per_peer_fetch_limit() {
    let mut o = Options::seeded(46).nodes(2);
    o.passive = false;
    let mut n = Network::new(o);
    n.schema_all(U);
    n.follow_collections(1, &["Users"]).unwrap();
    for i in 0..300 {
        let doc = n
            .create(0, "Users", json!({"Name": format!("u{i}"), "Age": i}))
            .unwrap();
        // Two blocks: the head is not the genesis, so the follower must fetch history.
        n.update(0, doc, json!({"Age": i + 1})).unwrap();
    }
    n.connect(0, 1);
    let (mut peak, mut waited) = (0, 0);
    let start = n.now();
    while n.now() < start + Duration::from_secs(20) {
        if !n.step() {
            break;
        }
        let g = n.node(1).unwrap().gauges();
        peak = peak.max(g.backfill_in_flight);
        waited = waited.max(g.waiting_fetches);
    }
    assert!(peak <= 16, "{peak} fetches in flight to one peer");
    assert!(waited > 0, "some fetches waited for a place");
    assert_eq!(n.documents(1, "Users", false).len(), 300, "all within 20 s");
    assert_eq!(n.node(1).unwrap().gauges().waiting_fetches, 0);
    assert_eq!(n.node(1).unwrap().stats().anti_entropy_rounds, 0);
}

/// The coordinator driven by hand, with no harness: hostile input straight into it.
struct Solo {
    node: Node<u8>,
    store: Store,
    now: Instant,
}

impl Solo {
    fn new() -> Solo {
        Solo::with_id(1)
    }

    #[allow(clippy::disallowed_methods)] // The test's one clock read: an arbitrary origin.
    fn with_id(id: u8) -> Solo {
        let store = Store::memory(hypha_store::Config::new(Author::unsigned([id; 32]))).unwrap();
        store.commit(Mutation::AddSchema { sdl: U.into() }).unwrap();
        let now = Instant::now();
        let mut node = Node::new(node::Config::new("hypha"), u64::from(id));
        node.start(&store, now);
        Solo { node, store, now }
    }

    /// Commits `mutation` (durably) and hands the result to the node.
    fn persist(&mut self, token: node::PersistToken, mutation: Mutation, now: Instant) {
        let result = self.store.commit(mutation).map(|r| r.committed);
        self.node.handle_persisted(token, result, &self.store, now);
    }

    fn events(&mut self) -> Vec<Event<u8>> {
        while self.node.poll_command().is_some() {}
        std::iter::from_fn(|| self.node.poll_event()).collect()
    }
}

#[test]
fn garbage_on_pubsub_is_rejected_and_reported() {
    let mut s = Solo::new();
    let verdict = s
        .node
        .handle_pubsub(7, "t", b"\xff\xff\xff garbage", &s.store, s.now);
    assert_eq!(verdict, Verdict::Reject);
    let events = s.events();
    assert!(matches!(
        events.as_slice(),
        [Event::PeerMisbehaved {
            peer: 7,
            violation: Violation::Pubsub(_)
        }]
    ));
    assert_eq!(s.store.stats().unwrap().blocks, 0);
}

#[test]
fn a_valid_update_on_a_foreign_topic_is_rejected() {
    let mut s = Solo::new();
    let mut other = Solo::new();
    let token = other.node.submit(
        Mutation::Create {
            collection: "Users".into(),
            document: json!({"Name": "John"}),
        },
        other.now,
    );
    let Some(Command::Persist { mutation, .. }) = other.node.poll_command() else {
        panic!("a persist first");
    };
    let result = other.store.commit(mutation).map(|r| r.committed);
    other
        .node
        .handle_persisted(token, result, &other.store, other.now);
    let data = std::iter::from_fn(|| other.node.poll_command())
        .find_map(|c| match c {
            Command::Publish { data, .. } => Some(data),
            _ => None,
        })
        .expect("published");
    let verdict =
        s.node
            .handle_pubsub(7, "/hypha/hypha/pubsub/1/elsewhere", &data, &s.store, s.now);
    assert_eq!(verdict, Verdict::Reject);
    assert!(matches!(
        s.events().as_slice(),
        [Event::PeerMisbehaved {
            violation: Violation::Pubsub(hypha_protocols::pubsub::Invalid::WrongTopic),
            ..
        }]
    ));
}

#[test]
fn garbage_frames_are_violations_and_change_nothing() {
    let mut s = Solo::new();
    for protocol in node::Protocol::ALL {
        s.node
            .handle_frame(3, protocol, &[0x0a, 0xff, 0x01], &s.store, s.now);
    }
    let events = s.events();
    assert_eq!(events.len(), node::Protocol::ALL.len());
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::PeerMisbehaved { peer: 3, .. }))
    );
    assert_eq!(s.store.stats().unwrap().blocks, 0);
}

#[test]
fn a_mutation_is_reported_only_once_persisted() {
    let mut s = Solo::new();
    let token = s.node.submit(
        Mutation::Create {
            collection: "Users".into(),
            document: json!({"Name": "John"}),
        },
        s.now,
    );
    let Some(Command::Persist {
        token: t,
        mutation,
        until,
    }) = s.node.poll_command()
    else {
        panic!("a submit asks for a persist first");
    };
    assert_eq!(t, token);
    assert_eq!(
        until,
        Stage::Durable,
        "the API answers a write once durable"
    );
    assert!(
        s.node.poll_event().is_none(),
        "nothing is reported before it is durable"
    );
    let result = s.store.commit(mutation).map(|r| r.committed);
    s.node.handle_persisted(token, result, &s.store, s.now);
    let commands: Vec<_> = std::iter::from_fn(|| s.node.poll_command()).collect();
    let publishes = commands
        .iter()
        .filter(|c| matches!(c, Command::Publish { .. }))
        .count();
    assert_eq!(publishes, 2, "the collection topic and the shard topic");
    let events: Vec<_> = std::iter::from_fn(|| s.node.poll_event()).collect();
    assert!(matches!(events[0], Event::Persisted { token: t, result: Ok(_) } if t == token));
}

/// A replicator source (1) and target (2) driven by hand. The target reports a received
/// block once *visible*, and acknowledges a push only after a barrier behind its blocks is
/// *durable*: while the barrier is held back, no ack leaves the target.
#[test]
fn a_push_is_acknowledged_only_once_a_barrier_behind_it_is_durable() {
    push_behind_a_held_barrier(false);
}

/// The same, with the source's connection gone while the barrier was held: the push went with
/// it, and its barrier answers nothing (a stale ack on a new connection would be a violation
/// charged to an honest target).
#[test]
fn a_push_whose_connection_closed_behind_its_barrier_is_never_answered() {
    push_behind_a_held_barrier(true);
}

fn push_behind_a_held_barrier(disconnect: bool) {
    let mut source = Solo::with_id(1);
    let mut target = Solo::with_id(2);
    let now = source.now.max(target.now);
    let users = source.store.collection("Users").unwrap().unwrap().id();
    source
        .node
        .handle_connected(2, Vec::new(), Path::Direct, false, &source.store, now);
    target
        .node
        .handle_connected(1, Vec::new(), Path::Direct, true, &target.store, now);
    source.node.submit(
        Mutation::SetReplicator {
            peer: node::Peer::to_key(&2u8),
            replicator: Replicator {
                collections: [users].into(),
                documents: BTreeSet::new(),
                addresses: Vec::new(),
            },
        },
        now,
    );
    let mut held = Vec::new();
    let mut stages = Vec::new();
    let mut acks_while_held = 0;
    // Runs both nodes until neither has a command; the target's barriers are held back.
    let mut pump = |source: &mut Solo, target: &mut Solo, held: &mut Vec<node::PersistToken>| {
        loop {
            let mut idle = true;
            while let Some(c) = source.node.poll_command() {
                idle = false;
                match c {
                    Command::Persist {
                        token, mutation, ..
                    } => source.persist(token, mutation, now),
                    Command::Transmit {
                        protocol, frame, ..
                    } => target
                        .node
                        .handle_frame(1, protocol, &frame[4..], &target.store, now),
                    _ => {}
                }
            }
            while let Some(c) = target.node.poll_command() {
                idle = false;
                match c {
                    Command::Persist {
                        token,
                        mutation,
                        until,
                    } => {
                        stages.push((matches!(mutation, Mutation::Barrier), until));
                        if matches!(mutation, Mutation::Barrier) {
                            held.push(token);
                            continue;
                        }
                        target.persist(token, mutation, now);
                    }
                    Command::Transmit {
                        protocol, frame, ..
                    } => {
                        if protocol == node::Protocol::Replicator && !held.is_empty() {
                            acks_while_held += 1;
                        }
                        source
                            .node
                            .handle_frame(2, protocol, &frame[4..], &source.store, now);
                    }
                    _ => {}
                }
            }
            if idle {
                return;
            }
        }
    };
    pump(&mut source, &mut target, &mut held);
    // The catch-up of a new replicator is a head exchange; later writes are pushed.
    source.node.submit(
        Mutation::Create {
            collection: "Users".into(),
            document: json!({"Name": "John", "Age": 30}),
        },
        now,
    );
    pump(&mut source, &mut target, &mut held);
    let replicated = |s: &mut Solo| {
        std::iter::from_fn(|| s.node.poll_event())
            .filter(|e| matches!(e, Event::Replicated { peer: 2, .. }))
            .count()
    };
    assert!(!held.is_empty(), "the push waits behind a barrier");
    assert_eq!(replicated(&mut source), 0, "nothing acknowledged yet");
    assert_eq!(
        target.store.stats().unwrap().blocks,
        1,
        "but the block is there"
    );
    if disconnect {
        target.node.handle_disconnected(1, &target.store, now);
    }
    for token in held.drain(..) {
        target.persist(token, Mutation::Barrier, now);
    }
    if disconnect {
        let acks = std::iter::from_fn(|| target.node.poll_command())
            .filter(|c| {
                matches!(
                    c,
                    Command::Transmit {
                        protocol: node::Protocol::Replicator,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(acks, 0, "a push gone with its connection is not answered");
        return;
    }
    pump(&mut source, &mut target, &mut held);
    assert_eq!(
        replicated(&mut source),
        1,
        "acknowledged once the barrier is durable"
    );
    assert_eq!(acks_while_held, 0);
    assert!(
        stages.contains(&(false, Stage::Visible)) && stages.contains(&(true, Stage::Durable)),
        "the block is reported visible, the barrier durable: {stages:?}"
    );
}
