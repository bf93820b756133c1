//! SCENARIOS.md through the in-memory harness: every node runs the real coordinator over a
//! memory store; the harness moves frames, gossip, persists and timers in virtual time.
//!
//! Each "must not have" expectation is paired with a run that breaks the rule it protects on
//! purpose (`node::Faults`) and shows the expectation then fails. Where a scenario needs head
//! exchange (A11, E2, F5, H1), the coordinator's stats show it did the work.

use hypha_protocols::node::{Event, Faults, FollowError};
use hypha_protocols::replicator::Refusal;
use hypha_protocols::testing::{Network, Options};
use serde_json::{Value, json};

const U: &str = "type Users { Name: String  Age: Int }";

fn net(nodes: usize, seed: u64) -> Network {
    Network::new(Options::seeded(seed).nodes(nodes))
}

fn faulty(nodes: usize, seed: u64, faults: Faults) -> Network {
    let mut o = Options::seeded(seed).nodes(nodes);
    o.faults = faults;
    Network::new(o)
}

fn ages(n: &Network, i: u16) -> Vec<Value> {
    n.values(i, "Users", "Age")
}

fn nums(v: &[i64]) -> Vec<Value> {
    let mut v: Vec<Value> = v.iter().map(|x| json!(x)).collect();
    v.sort_by_key(|x| x.to_string());
    v
}

// ---- A. Passive replication ------------------------------------------------------------------

fn a1(n: &mut Network) {
    n.schema_all(U);
    n.create_all("Users", json!({"Name": "Shahzad", "Age": 300}));
    n.connect(1, 0);
    n.wait().unwrap();
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
}

#[test]
fn a1_a_new_document_does_not_reach_a_peer_that_follows_nothing() {
    let mut n = net(2, 1);
    a1(&mut n);
    assert_eq!(ages(&n, 0), nums(&[300, 21]));
    assert_eq!(ages(&n, 1), nums(&[300]));
}

fn a2(n: &mut Network) {
    n.schema_all(U);
    n.create_all("Users", json!({"Name": "Shahzad", "Age": 30}));
    n.connect(1, 0);
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.create(0, "Users", json!({"Name": "Addo", "Age": 28}))
        .unwrap();
    n.create(1, "Users", json!({"Name": "Fred", "Age": 31}))
        .unwrap();
    n.wait().unwrap();
}

#[test]
fn a2_a_collection_follower_gets_new_documents_and_keeps_its_own() {
    let mut n = net(2, 2);
    a2(&mut n);
    assert_eq!(ages(&n, 0), nums(&[30, 21, 28]));
    assert_eq!(ages(&n, 1), nums(&[30, 21, 28, 31]));
}

#[test]
fn a3_an_update_reaches_a_document_follower() {
    let mut n = net(2, 3);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_documents(1, &[doc]);
    n.wait().unwrap();
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[60]));
    assert_eq!(ages(&n, 1), nums(&[60]));
}

#[test]
fn a4_a_follower_gets_the_other_sides_update() {
    let mut n = net(2, 4);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_documents(0, &[doc]);
    n.wait().unwrap();
    n.update(1, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[60]));
    assert_eq!(ages(&n, 1), nums(&[60]));
}

#[test]
fn a5_concurrent_writes_converge_to_the_greater_value() {
    let mut n = net(2, 5);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_documents(0, &[doc]);
    n.follow_documents(1, &[doc]);
    n.wait().unwrap();
    n.concurrently(|n| {
        n.update(0, doc, json!({"Age": 60})).unwrap();
        n.update(1, doc, json!({"Age": 45})).unwrap();
    });
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[60]));
    assert_eq!(ages(&n, 1), nums(&[60]));
}

fn a6() -> Network {
    let mut n = net(3, 6);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_documents(1, &[doc]);
    n.wait().unwrap();
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    n
}

#[test]
fn a6_an_unconnected_node_gets_nothing() {
    let n = a6();
    assert_eq!(ages(&n, 0), nums(&[60]));
    assert_eq!(ages(&n, 1), nums(&[60]));
    assert_eq!(ages(&n, 2), nums(&[21]));
}

fn a7() -> Network {
    let mut n = net(3, 7);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.update(2, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    n
}

#[test]
fn a7_an_update_on_an_isolated_node_stays_there() {
    let n = a7();
    assert_eq!(ages(&n, 0), nums(&[21]));
    assert_eq!(ages(&n, 1), nums(&[21]));
    assert_eq!(ages(&n, 2), nums(&[60]));
}

#[test]
fn a8_many_concurrent_writes_converge() {
    let mut n = net(2, 8);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_documents(0, &[doc]);
    n.follow_documents(1, &[doc]);
    n.wait().unwrap();
    n.concurrently(|n| {
        for (a, b) in [(60, 45), (61, 46), (62, 47)] {
            n.update(0, doc, json!({"Age": a})).unwrap();
            n.update(1, doc, json!({"Age": b})).unwrap();
        }
    });
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[62]));
    assert_eq!(ages(&n, 1), nums(&[62]));
}

#[test]
fn a9_a_new_document_and_its_update_reach_a_collection_follower() {
    let mut n = net(2, 9);
    n.schema_all(U);
    n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    let fred = n
        .create(0, "Users", json!({"Name": "Fred", "Age": 31}))
        .unwrap();
    n.update(0, fred, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[21, 60]));
    assert_eq!(ages(&n, 1), nums(&[21, 60]));
}

#[test]
fn a10_interleaved_writes_converge_on_both() {
    let mut n = net(2, 10);
    n.schema_all(U);
    let john = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    let fred = n
        .create(0, "Users", json!({"Name": "Fred", "Age": 31}))
        .unwrap();
    for (a, b) in [(60, 45), (61, 46), (62, 47)] {
        n.update(0, john, json!({"Age": a})).unwrap();
        n.update(1, john, json!({"Age": b})).unwrap();
    }
    n.update(0, fred, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    let docs = |i| n.documents(i, "Users", false);
    assert_eq!(docs(0), docs(1), "both nodes hold the same documents");
    let fred_age = docs(1)
        .iter()
        .find(|d| d["Name"] == "Fred")
        .map(|d| d["Age"].clone());
    assert_eq!(fred_age, Some(json!(60)));
}

#[test]
fn a11_what_a_follower_missed_while_apart_arrives_after_healing() {
    let mut n = net(2, 36);
    n.schema_all(U);
    n.connect(0, 1);
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    n.cut(&[0], &[1]);
    let fred = n
        .create(0, "Users", json!({"Name": "Fred", "Age": 31}))
        .unwrap();
    n.update(0, fred, json!({"Age": 32})).unwrap();
    n.run_for(std::time::Duration::from_secs(1));
    assert_eq!(
        ages(&n, 1),
        nums(&[]),
        "the updates were lost with the cut link"
    );
    n.heal();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[32]));
    let hs = n.node(1).unwrap().head_sync_stats();
    assert!(hs.sketches_decoded >= 1, "head exchange found Fred: {hs:?}");
}

// ---- B. Deletes ------------------------------------------------------------------------------

#[test]
fn b1_a_delete_reaches_a_follower_and_deleted_documents_can_be_listed() {
    let mut n = net(2, 11);
    n.schema_all(U);
    let john = n.create_all("Users", json!({"Name": "John", "Age": 43}));
    n.create_all("Users", json!({"Name": "Andy", "Age": 74}));
    n.connect(0, 1);
    n.follow_documents(1, &[john]);
    n.wait().unwrap();
    n.delete(0, john).unwrap();
    n.wait().unwrap();
    for i in [0, 1] {
        let live = n.documents(i, "Users", false);
        assert_eq!(
            live,
            vec![
                json!({"Name": "Andy", "Age": 74})
                    .as_object()
                    .unwrap()
                    .clone()
            ]
        );
        let all = n.documents(i, "Users", true);
        assert_eq!(all.len(), 2);
        let deleted: Vec<_> = all.iter().filter(|d| d.get("_deleted").is_some()).collect();
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0]["Name"], "John");
    }
}

// ---- C. Restarts -----------------------------------------------------------------------------

#[test]
fn c1_subscriptions_and_peers_survive_restarts() {
    let mut n = net(2, 12);
    n.schema_all(U);
    let doc = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.connect(0, 1);
    n.follow_documents(1, &[doc]);
    n.update(0, doc, json!({"Name": "John"})).unwrap();
    n.wait().unwrap();
    n.restart(0);
    n.restart(1);
    n.wait().unwrap();
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[60]));
    assert_eq!(ages(&n, 1), nums(&[60]));
}

#[test]
fn c2_replicators_survive_restarts() {
    let mut n = net(2, 13);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    n.restart(0);
    n.restart(1);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[21]));
    assert_eq!(ages(&n, 1), nums(&[21]));
}

// ---- D. Replicator to an offline target -------------------------------------------------------

#[test]
fn d1_an_offline_target_gets_everything_when_it_returns() {
    let mut n = net(2, 14);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    n.stop(1);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.start(1);
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[21, 22]));
    assert_eq!(ages(&n, 1), nums(&[21, 22]));
}

#[test]
fn d2_updates_made_while_the_target_was_offline_arrive_with_their_history() {
    let mut n = net(2, 15);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    n.stop(1);
    let john = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    let fred = n
        .create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.update(0, john, json!({"Age": 22})).unwrap();
    n.update(0, fred, json!({"Age": 23})).unwrap();
    n.start(1);
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[22, 23]));
    assert_eq!(ages(&n, 1), nums(&[22, 23]));
}

#[test]
fn d_a_long_offline_period_loses_nothing() {
    let mut n = net(2, 16);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    n.stop(1);
    let doc = n
        .create(0, "Users", json!({"Name": "John", "Age": 0}))
        .unwrap();
    for age in 1..=200 {
        n.update(0, doc, json!({"Age": age})).unwrap();
        n.run_for(std::time::Duration::from_secs(400));
    }
    n.start(1);
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[200]));
}

// ---- E. Replicators --------------------------------------------------------------------------

#[test]
fn e1_a_replicator_gets_a_new_document() {
    let mut n = net(2, 17);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21]));
}

#[test]
fn e2_existing_documents_are_brought_over_when_a_replicator_is_set() {
    let mut n = net(2, 18);
    n.schema_all(U);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21]));
}

#[test]
fn e3_replication_is_one_way() {
    let mut n = net(2, 19);
    n.schema_all(U);
    n.create(1, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[]));
    assert_eq!(ages(&n, 1), nums(&[21]));
}

#[test]
fn e4_a_deleted_replicator_gets_nothing() {
    let mut n = net(2, 20);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.delete_replicator(0, 1);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[]));
}

#[test]
fn e5_two_replicators_both_get_it() {
    let mut n = net(3, 21);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.set_replicator(0, 2, &["Users"], &[]);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    for i in 0..3 {
        assert_eq!(ages(&n, i), nums(&[21]), "node {i}");
    }
}

#[test]
fn e6_a_node_that_is_no_replicator_gets_nothing() {
    let mut n = net(3, 22);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21]));
    assert_eq!(ages(&n, 2), nums(&[]));
}

#[test]
fn e7_several_documents_reach_the_replicator() {
    let mut n = net(2, 23);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21, 22]));
}

#[test]
fn e8_an_update_reaches_the_replicator() {
    let mut n = net(2, 24);
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    let doc = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[60]));
}

fn e9(faults: Faults) -> Network {
    let mut n = faulty(2, 25, faults);
    n.schema_all(U);
    let john = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    let fred = n
        .create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.set_replicator(0, 1, &[], &[john]);
    n.update(0, john, json!({"Age": 30})).unwrap();
    n.update(0, fred, json!({"Age": 40})).unwrap();
    n.wait().unwrap();
    n
}

#[test]
fn e9_granular_replication_sends_only_the_chosen_document() {
    let n = e9(Faults::default());
    assert_eq!(ages(&n, 1), nums(&[30]));
}

#[test]
fn e9_must_not_have_fails_when_the_scope_is_ignored() {
    let n = e9(scope_ignored());
    assert_ne!(
        ages(&n, 1),
        nums(&[30]),
        "the broken rule lets Fred through"
    );
}

#[test]
fn e10_a_target_without_the_schema_refuses_then_accepts_once_it_has_it() {
    let mut n = net(2, 26);
    n.schema(0, U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[]));
    let reported = n.events(0).iter().any(|e| match e {
        Event::CatchUpRefused {
            peer: 1, reason, ..
        } => *reason == Refusal::UnknownCollection,
        Event::ReplicationFailed {
            peer: 1, reason, ..
        } => *reason == Refusal::UnknownCollection.into(),
        _ => false,
    });
    assert!(
        reported,
        "the source reports that the target lacks the collection"
    );
    n.schema(1, U);
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21]));
}

// ---- F. Subscriptions ------------------------------------------------------------------------

#[test]
fn f1_a_collection_follower_gets_the_other_sides_documents_only_one_way() {
    let mut n = net(2, 27);
    n.schema_all("type Users { name: String }");
    n.connect(1, 0);
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    n.create(0, "Users", json!({"name": "John"})).unwrap();
    n.create(1, "Users", json!({"name": "Fred"})).unwrap();
    n.wait().unwrap();
    assert_eq!(n.values(0, "Users", "name"), vec![json!("John")]);
    assert_eq!(
        n.values(1, "Users", "name"),
        vec![json!("Fred"), json!("John")]
    );
}

fn f2(faults: Faults) -> Network {
    let mut n = faulty(2, 28, faults);
    n.schema_all(
        "type Users { name: String } type Giraffes { name: String } type Bears { name: String }",
    );
    n.connect(0, 1);
    n.follow_collections(1, &["Users", "Bears"]).unwrap();
    n.wait().unwrap();
    n.create(0, "Users", json!({"name": "John"})).unwrap();
    n.create(0, "Giraffes", json!({"name": "Gillian"})).unwrap();
    n.create(0, "Bears", json!({"name": "Bjorn"})).unwrap();
    n.wait().unwrap();
    n
}

#[test]
fn f2_only_followed_collections_sync() {
    let n = f2(Faults::default());
    for i in [0, 1] {
        assert_eq!(n.values(i, "Users", "name"), vec![json!("John")]);
        assert_eq!(n.values(i, "Bears", "name"), vec![json!("Bjorn")]);
    }
    assert!(n.values(1, "Giraffes", "name").is_empty());
}

#[test]
fn f3_following_an_unknown_collection_fails_as_a_whole() {
    let mut n = net(2, 29);
    n.schema_all(U);
    let e = n.follow_collections(1, &["Users", "Nope"]).unwrap_err();
    assert!(matches!(&e, FollowError::UnknownCollection(name) if name == "Nope"));
    assert!(e.to_string().contains("not found"), "{e}");
    n.wait().unwrap();
    assert!(
        n.store(1).subscriptions().unwrap().collections.is_empty(),
        "nothing subscribed"
    );
    n.follow_collections(1, &[]).unwrap();
    assert!(n.topics(1).is_empty(), "an empty list is a no-op");
}

#[test]
fn f4_following_a_document_not_held_brings_its_whole_history_with_the_next_update() {
    let mut n = net(2, 30);
    n.schema_all(U);
    let john = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.connect(1, 0);
    n.follow_documents(1, &[john]);
    n.wait().unwrap();
    n.update(0, john, json!({"Name": "Andy"})).unwrap();
    n.wait().unwrap();
    let mut names = n.values(0, "Users", "Name");
    names.sort_by_key(|v| v.to_string());
    assert_eq!(names, vec![json!("Andy"), json!("Fred")]);
    assert_eq!(n.values(1, "Users", "Name"), vec![json!("Andy")]);
    assert!(
        "bae-not-a-doc-id".parse::<hypha_crdt::DocId>().is_err(),
        "a malformed docID is an error"
    );
}

#[test]
fn f5_subscribing_brings_the_collections_existing_documents() {
    let mut n = net(2, 37);
    n.schema_all(U);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.create(0, "Users", json!({"Name": "Fred", "Age": 22}))
        .unwrap();
    n.connect(0, 1);
    n.wait().unwrap();
    n.follow_collections(1, &["Users"]).unwrap();
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21, 22]));
    assert!(n.node(1).unwrap().stats().head_sync_docs >= 2);
}

// ---- H. On-demand sync -----------------------------------------------------------------------

#[test]
fn h1_an_on_demand_sync_fetches_once_and_does_not_follow() {
    let mut n = net(2, 38);
    n.schema_all(U);
    let john = n
        .create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    let andy = n
        .create(0, "Users", json!({"Name": "Andy", "Age": 25}))
        .unwrap();
    n.connect(0, 1);
    n.wait().unwrap();
    n.sync_documents(1, &[john, andy]);
    n.wait().unwrap();
    assert_eq!(ages(&n, 1), nums(&[21, 25]));
    assert_eq!(
        n.node(1).unwrap().stats().head_sync_docs,
        2,
        "head exchange fetched both"
    );
    n.update(0, john, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(
        ages(&n, 1),
        nums(&[21, 25]),
        "an on-demand sync does not follow"
    );
}

// ---- G. Counters and concurrent fields --------------------------------------------------------

#[test]
fn g1_counter_increments_replicate() {
    for kind in ["pncounter", "pcounter"] {
        let mut n = net(2, 31);
        n.schema_all(&format!(
            "type Users {{ name: String  points: Int @crdt(type: {kind}) }}"
        ));
        let doc = n
            .create(0, "Users", json!({"name": "Shahzad", "points": 10}))
            .unwrap();
        n.connect(1, 0);
        n.follow_documents(1, &[doc]);
        n.update(0, doc, json!({"name": "Shahzad"})).unwrap();
        n.wait().unwrap();
        n.update(0, doc, json!({"points": 10})).unwrap();
        n.wait().unwrap();
        for i in [0, 1] {
            assert_eq!(
                n.values(i, "Users", "points"),
                vec![json!(20)],
                "{kind} on node {i}"
            );
        }
        if kind == "pcounter" {
            assert!(
                n.update(0, doc, json!({"points": -1})).is_err(),
                "a pcounter refuses negatives"
            );
        }
    }
}

#[test]
fn g2_concurrent_increments_add_up_even_with_the_same_seed() {
    let mut n = net(2, 32);
    n.schema_all("type Users { Name: String  Age: Int @crdt(type: pncounter) }");
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 0}));
    n.connect(0, 1);
    n.follow_documents(0, &[doc]);
    n.follow_documents(1, &[doc]);
    n.wait().unwrap();
    n.concurrently(|n| {
        n.update(0, doc, json!({"Age": 45})).unwrap();
        n.update(1, doc, json!({"Age": 45})).unwrap();
    });
    n.wait().unwrap();
    assert_eq!(ages(&n, 0), nums(&[90]));
    assert_eq!(ages(&n, 1), nums(&[90]));
}

#[test]
fn g3_concurrent_writes_to_different_fields_all_survive() {
    let mut n = net(3, 33);
    n.schema_all("type Users { name: String  age: Int  score: Int }");
    let doc = n.create_all("Users", json!({"name": "John", "age": 21, "score": 0}));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        n.connect(a, b);
    }
    for i in 0..3 {
        n.follow_documents(i, &[doc]);
    }
    n.wait().unwrap();
    n.concurrently(|n| {
        n.update(0, doc, json!({"name": "Jane"})).unwrap();
        n.update(1, doc, json!({"age": 45})).unwrap();
        n.update(2, doc, json!({"score": 100})).unwrap();
    });
    n.wait().unwrap();
    for i in 0..3 {
        let docs = n.documents(i, "Users", false);
        assert_eq!(docs.len(), 1);
        let want = json!({"name": "Jane", "age": 45, "score": 100});
        assert_eq!(Value::Object(docs[0].clone()), want, "node {i}");
    }
}

// ---- I. Hot documents ------------------------------------------------------------------------

fn i1(hot_docs: usize) -> Network {
    let mut o = Options::seeded(34);
    o.hot_docs = hot_docs;
    let mut n = Network::new(o);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.wait().unwrap();
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    n
}

#[test]
fn i1_hot_documents_are_followed() {
    let n = i1(16);
    assert_eq!(ages(&n, 0), nums(&[60]));
    assert_eq!(ages(&n, 1), nums(&[60]));
    let n = i1(0);
    assert_eq!(
        ages(&n, 1),
        nums(&[21]),
        "with hot documents off, N1 follows nothing"
    );
}

#[test]
fn i1_hot_documents_are_followed_again_after_a_restart() {
    let mut o = Options::seeded(39);
    o.hot_docs = 16;
    let mut n = Network::new(o);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.wait().unwrap();
    n.restart(1);
    n.wait().unwrap();
    assert!(
        n.store(1)
            .hot_documents()
            .unwrap()
            .iter()
            .any(|(d, _)| *d == doc)
    );
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_eq!(
        ages(&n, 1),
        nums(&[60]),
        "the hot document was loaded at start"
    );
}

// ---- must-not-have expectations fail when their rule is broken --------------------------------
//
// A "must not have" is only worth something if breaking the rule behind it makes it fail. The
// rules of the coordinator are two: a node merges (and listens for) only what it follows, and a
// source pushes only what a replicator's scope covers (a deleted replicator covers nothing).
// A6, A7, E3 and E6 are protected by the network itself — the node that must not have the
// document has no connection or no replicator that could carry it — so no coordinator fault
// can break them; their positive tests above stand as they are.

fn everything() -> Faults {
    Faults {
        follow_everything: true,
        ..Faults::default()
    }
}

fn scope_ignored() -> Faults {
    Faults {
        ignore_replicator_scope: true,
        ..Faults::default()
    }
}

#[test]
fn a1_must_not_have_fails_when_nodes_follow_everything() {
    let mut n = faulty(2, 1, everything());
    a1(&mut n);
    assert_ne!(ages(&n, 1), nums(&[300]));
}

#[test]
fn a2_must_not_have_fails_when_nodes_follow_everything() {
    let mut n = faulty(2, 2, everything());
    a2(&mut n);
    assert_ne!(ages(&n, 0), nums(&[30, 21, 28]));
}

#[test]
fn f2_must_not_have_fails_when_nodes_follow_everything() {
    let n = f2(everything());
    assert!(!n.values(1, "Giraffes", "name").is_empty());
}

#[test]
fn i1_must_not_have_fails_when_nodes_follow_everything() {
    let mut o = Options::seeded(34);
    o.faults = everything();
    let mut n = Network::new(o);
    n.schema_all(U);
    let doc = n.create_all("Users", json!({"Name": "John", "Age": 21}));
    n.connect(0, 1);
    n.wait().unwrap();
    n.update(0, doc, json!({"Age": 60})).unwrap();
    n.wait().unwrap();
    assert_ne!(ages(&n, 1), nums(&[21]));
}

#[test]
fn e4_must_not_have_fails_when_the_scope_is_ignored() {
    let mut n = faulty(2, 20, scope_ignored());
    n.schema_all(U);
    n.set_replicator(0, 1, &["Users"], &[]);
    n.wait().unwrap();
    n.delete_replicator(0, 1);
    n.create(0, "Users", json!({"Name": "John", "Age": 21}))
        .unwrap();
    n.wait().unwrap();
    assert_ne!(ages(&n, 1), nums(&[]));
}
