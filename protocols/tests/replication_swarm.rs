//! Swarm tests of `hypha_protocols::swarm::Hypha` over real libp2p connections (memory
//! transport, plaintext, yamux) and memory stores: a write reaches a replicator target by
//! push, a follower by pubsub, and a follower two hops away through gossipsub forwarding. Each
//! test drives the swarms until a condition on the stores holds, checked after every event and
//! bounded by a count of events. No timing assertions, no sleeps.
#![cfg(feature = "swarm-test")]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::{self, Either};
use futures_timer::Delay;
use hypha_crdt::{Author, CollectionId, DocId};
use hypha_protocols::node::{self, Event, Peer as _};
use hypha_protocols::pubsub;
use hypha_protocols::swarm::{Hypha, HyphaConfig, HyphaEvent};
use hypha_store::{Committed, Mutation, Replicator, Store};
use libp2p_gossipsub::TopicHash;
use libp2p_identity::PeerId;
use libp2p_swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt as _;
use serde_json::json;

const SCHEMA: &str = "type Users { Name: String  Age: Int }";
const NAMESPACE: &str = "hypha";
/// Every test needs a few hundred events at most; past this, something is stuck in a loop.
const MAX_EVENTS: usize = 5_000;
/// Longer than anything here waits for: a handful of 100 ms heartbeats.
const IDLE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_replicator_target_is_caught_up_then_pushed_each_update() {
    let (mut a, mut b) = (swarm(1), swarm(2));
    let (b_address, _) = b.listen().with_memory_addr_external().await;
    let b_id = *b.local_peer_id();

    // A document written before B becomes a replicator reaches it by catch-up. A is never
    // told to dial B: the replicator's address is enough.
    let write = a.behaviour_mut().submit(create("Ada", 36));
    let replicator = Replicator {
        collections: [users(&a)].into(),
        addresses: vec![b_address.to_vec()],
        ..Replicator::default()
    };
    let set = Mutation::SetReplicator {
        peer: b_id.to_key(),
        replicator,
    };
    a.behaviour_mut().submit(set);
    // The catch-up is head exchange, one way: A offers what B lacks, B backfills it.
    let events = drive(&mut [&mut a, &mut b], "B is caught up", |s, e| {
        let reported = e[1]
            .iter()
            .any(|e| matches!(e, HyphaEvent::Node(Event::Changed { .. })));
        documents(s[1]) == [("Ada".into(), 36)] && reported
    })
    .await;
    let doc = written(&events[0], write);
    assert_eq!(ids(&b), [doc]);
    assert!(
        b.behaviour().node().stats().head_sync_docs >= 1,
        "head exchange did it"
    );
    let changed =
        |e: &HyphaEvent| matches!(e, HyphaEvent::Node(Event::Changed { doc: d, .. }) if *d == doc);
    assert!(events[1].iter().any(changed), "B reports the change");

    // A later update reaches it from A's outbox, acknowledged once durable on B.
    let patch = Mutation::Update {
        doc_id: doc,
        patch: json!({"Age": 37}),
    };
    a.behaviour_mut().submit(patch);
    let events = drive(&mut [&mut a, &mut b], "B gets the update", |s, e| {
        documents(s[1]) == [("Ada".into(), 37)] && replicated(&e[0], b_id) == [doc]
    })
    .await;
    assert_eq!(
        b.behaviour().node().stats().pubsub_useful,
        0,
        "B follows nothing"
    );
    assert!(events[1].iter().any(changed));
}

#[tokio::test]
async fn a_follower_gets_a_document_and_its_update_by_pubsub() {
    let (mut a, mut b) = (swarm(1), swarm(2));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    let b_id = *b.local_peer_id();
    let topic = pubsub::collection_topic(NAMESPACE, &users(&a));

    b.behaviour_mut().follow_collections(&["Users"]).unwrap();
    drive(&mut [&mut a, &mut b], "A sees B join the topic", |_, e| {
        subscribed(&e[0], b_id, &topic)
    })
    .await;

    let write = a.behaviour_mut().submit(create("Ada", 36));
    let events = drive(&mut [&mut a, &mut b], "B gets the document", |s, _| {
        documents(s[1]) == [("Ada".into(), 36)]
    })
    .await;
    let doc = written(&events[0], write);
    assert_eq!(ids(&b), [doc]);

    let patch = Mutation::Update {
        doc_id: doc,
        patch: json!({"Age": 37}),
    };
    a.behaviour_mut().submit(patch);
    drive(&mut [&mut a, &mut b], "B gets the update", |s, _| {
        documents(s[1]) == [("Ada".into(), 37)]
    })
    .await;
    assert_eq!(b.behaviour().node().stats().pubsub_useful, 2);
}

#[tokio::test]
async fn gossip_crosses_a_chain_of_three() {
    let (mut a, mut b, mut c) = (swarm(1), swarm(2), swarm(3));
    b.listen().with_memory_addr_external().await;
    c.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    b.connect(&mut c).await;
    let (b_id, c_id) = (*b.local_peer_id(), *c.local_peer_id());
    let topic = pubsub::collection_topic(NAMESPACE, &users(&a));
    let hash = TopicHash::from_raw(topic.clone());

    b.behaviour_mut().follow_collections(&["Users"]).unwrap();
    c.behaviour_mut().follow_collections(&["Users"]).unwrap();
    let in_mesh = |s: &Swarm<Hypha>, peer: PeerId| {
        s.behaviour()
            .gossipsub()
            .mesh_peers(&hash)
            .any(|p| *p == peer)
    };
    let mut swarms = [&mut a, &mut b, &mut c];
    drive(&mut swarms, "B and C mesh, A sees B join", |s, e| {
        subscribed(&e[0], b_id, &topic) && in_mesh(s[1], c_id) && in_mesh(s[2], b_id)
    })
    .await;

    swarms[0].behaviour_mut().submit(create("Ada", 36));
    let ada = [("Ada".to_owned(), 36)];
    drive(&mut swarms, "B and C get the document", |s, _| {
        documents(s[1]) == ada && documents(s[2]) == ada
    })
    .await;

    assert!(!a.is_connected(&c_id), "A and C never connected");
    assert_eq!(ids(&b), ids(&c));
    assert_eq!(b.behaviour().node().stats().pubsub_useful, 1);
    assert_eq!(
        c.behaviour().node().stats().pubsub_useful,
        1,
        "C got it by pubsub"
    );
}

/// A node with its own memory store holding the `Users` schema; gossipsub beats every 100 ms
/// so that meshes form quickly.
fn swarm(i: u8) -> Swarm<Hypha> {
    let author = Author::unsigned([i; 32]);
    let store = Store::memory(hypha_store::Config::new(author)).unwrap();
    store
        .commit(Mutation::AddSchema { sdl: SCHEMA.into() })
        .unwrap();
    let config = HyphaConfig::new(node::Config::new(NAMESPACE))
        .with_heartbeat_interval(Duration::from_millis(100));
    Swarm::new_ephemeral_tokio(move |key| Hypha::new(config, Arc::new(store), &key, u64::from(i)))
}

/// Polls every swarm until `done` holds for the swarms and the behaviour events collected so
/// far (one list per swarm), checked after each event. Fails after `MAX_EVENTS` events, or
/// when no swarm has anything to report for `IDLE` (a liveness guard, not a timing check).
async fn drive(
    swarms: &mut [&mut Swarm<Hypha>],
    what: &str,
    mut done: impl FnMut(&[&mut Swarm<Hypha>], &[Vec<HyphaEvent>]) -> bool,
) -> Vec<Vec<HyphaEvent>> {
    let mut events: Vec<Vec<HyphaEvent>> = swarms.iter().map(|_| Vec::new()).collect();
    for _ in 0..MAX_EVENTS {
        if done(swarms, &events) {
            return events;
        }
        let next = future::select_all(swarms.iter_mut().map(|s| s.select_next_some()));
        match future::select(next, Delay::new(IDLE)).await {
            Either::Left(((SwarmEvent::Behaviour(event), i, _), _)) => events[i].push(event),
            Either::Left(_) => {}
            Either::Right(_) => panic!("{}", stuck(what, &events, "no event for 10 s")),
        }
    }
    panic!("{}", stuck(what, &events, "too many events"));
}

/// The failure message of [`drive`]: what was awaited, and each swarm's last events.
fn stuck(what: &str, events: &[Vec<HyphaEvent>], why: &str) -> String {
    let mut message = format!("not done: {what} ({why})");
    for (i, events) in events.iter().enumerate() {
        let last = &events[events.len().saturating_sub(5)..];
        message += &format!("\nswarm {i}: {} events, the last: {last:#?}", events.len());
    }
    message
}

fn create(name: &str, age: i64) -> Mutation {
    Mutation::Create {
        collection: "Users".into(),
        document: json!({"Name": name, "Age": age}),
    }
}

fn users(s: &Swarm<Hypha>) -> CollectionId {
    let store = s.behaviour().store();
    store.collection("Users").unwrap().expect("declared").id()
}

/// The documents of `Users` held by the swarm's store.
fn ids(s: &Swarm<Hypha>) -> Vec<DocId> {
    let store = s.behaviour().store();
    store.documents(users(s), false, None, 100).unwrap()
}

/// Name and age of every `Users` document held by the swarm's store, in docID order.
fn documents(s: &Swarm<Hypha>) -> Vec<(String, i64)> {
    let store = s.behaviour().store();
    ids(s)
        .iter()
        .map(|id| {
            let doc = store.document(id).unwrap().expect("listed");
            let name = doc["Name"].as_str().unwrap_or_default().to_owned();
            (name, doc["Age"].as_i64().unwrap_or_default())
        })
        .collect()
}

/// The document that the write with `token` created, from its `Persisted` event.
fn written(events: &[HyphaEvent], token: node::PersistToken) -> DocId {
    events
        .iter()
        .find_map(|e| match e {
            HyphaEvent::Node(Event::Persisted {
                token: t,
                result: Ok(Committed::Local { block, .. }),
            }) if *t == token => Some(block.doc_id()),
            _ => None,
        })
        .expect("the write was persisted")
}

/// The documents `peer` acknowledged as a replicator target.
fn replicated(events: &[HyphaEvent], peer: PeerId) -> Vec<DocId> {
    events
        .iter()
        .filter_map(|e| match e {
            HyphaEvent::Node(Event::Replicated { peer: p, doc }) if *p == peer => Some(*doc),
            _ => None,
        })
        .collect()
}

fn subscribed(events: &[HyphaEvent], peer: PeerId, topic: &str) -> bool {
    events.iter().any(
        |e| matches!(e, HyphaEvent::Subscribed { peer: p, topic: t } if *p == peer && t == topic),
    )
}
