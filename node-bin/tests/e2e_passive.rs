//! SCENARIOS.md A (passive replication), B (deletes), F (subscriptions), G1 (counters),
//! H (on-demand sync) and I (hot documents) against real `hypha` processes on 127.0.0.1.
//! A5, A8, A11, G2 and G3 (`concurrently`) run in the simulator and the protocol harness.

mod common;

use common::*;
use serde_json::json;

/// Two nodes with schema `sdl`.
fn two(sdl: &str) -> (Node, Node) {
    let n0 = Node::start("N0");
    let n1 = Node::start("N1");
    schema(&n0, sdl);
    schema(&n1, sdl);
    (n0, n1)
}

/// Three nodes with schema `sdl`.
fn three(sdl: &str) -> (Node, Node, Node) {
    let (n0, n1) = two(sdl);
    let n2 = Node::start("N2");
    schema(&n2, sdl);
    (n0, n1, n2)
}

/// A1: a new document does not reach a peer that follows nothing.
#[test]
fn a1_new_document_does_not_reach_a_peer_that_follows_nothing() {
    let (n0, n1) = two(U);
    create_all(&[&n0, &n1], "Users", json!({"Name": "Shahzad", "Age": 300}));
    connect(&n1, &n0);
    user(&n0, "John", 21);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[300, 21]);
    assert_ages(&n1, &[300]);
}

/// A2: a follower of the collection gets the other node's new documents; the other node,
/// following nothing, does not get the follower's.
#[test]
fn a2_collection_follower_gets_new_documents() {
    let (n0, n1) = two(U);
    create_all(&[&n0, &n1], "Users", json!({"Name": "Shahzad", "Age": 30}));
    connect(&n1, &n0);
    follow_collections(&n1, &["Users"]);
    user(&n0, "John", 21);
    user(&n0, "Addo", 28);
    user(&n1, "Fred", 31);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[30, 21, 28]);
    assert_ages(&n1, &[30, 21, 28, 31]);
}

/// A3: a follower of a document gets the other node's update.
#[test]
fn a3_document_follower_gets_the_update() {
    let (n0, n1) = two(U);
    let doc0 = create_all(&[&n0, &n1], "Users", json!({"Name": "John", "Age": 21}));
    connect(&n0, &n1);
    follow_docs(&n1, &[&doc0]);
    set_age(&n0, &doc0, 60);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[60]);
    assert_ages(&n1, &[60]);
}

/// A4: as A3 with the roles swapped: the follower is the node that did not write.
#[test]
fn a4_document_follower_gets_the_update_the_other_way() {
    let (n0, n1) = two(U);
    let doc0 = create_all(&[&n0, &n1], "Users", json!({"Name": "John", "Age": 21}));
    connect(&n0, &n1);
    follow_docs(&n0, &[&doc0]);
    set_age(&n1, &doc0, 60);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[60]);
    assert_ages(&n1, &[60]);
}

/// A6: an update reaches the connected follower, not the unconnected third node.
#[test]
fn a6_unconnected_node_keeps_its_value() {
    let (n0, n1, n2) = three(U);
    let doc0 = create_all(
        &[&n0, &n1, &n2],
        "Users",
        json!({"Name": "John", "Age": 21}),
    );
    connect(&n0, &n1);
    follow_docs(&n1, &[&doc0]);
    set_age(&n0, &doc0, 60);
    wait(&[&n0, &n1, &n2]);
    assert_ages(&n0, &[60]);
    assert_ages(&n1, &[60]);
    assert_ages(&n2, &[21]);
}

/// A7: an update on an unconnected node stays there.
#[test]
fn a7_update_on_an_unconnected_node_stays_there() {
    let (n0, n1, n2) = three(U);
    let doc0 = create_all(
        &[&n0, &n1, &n2],
        "Users",
        json!({"Name": "John", "Age": 21}),
    );
    connect(&n0, &n1);
    set_age(&n2, &doc0, 60);
    wait(&[&n0, &n1, &n2]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[21]);
    assert_ages(&n2, &[60]);
}

/// A9: a collection follower gets a new document and its later update.
#[test]
fn a9_new_document_and_its_update_reach_the_follower() {
    let (n0, n1) = two(U);
    create_all(&[&n0, &n1], "Users", json!({"Name": "John", "Age": 21}));
    connect(&n0, &n1);
    follow_collections(&n1, &["Users"]);
    let fred = user(&n0, "Fred", 31);
    set_age(&n0, &fred, 60);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[21, 60]);
    assert_ages(&n1, &[21, 60]);
}

/// A10: sequences of updates on both sides converge to the same value on both nodes.
///
/// N1 writes first here. A10's two sequences are independent writes of two nodes that
/// converge only because each is made without seeing the other's (in the protocol harness
/// they are, as its gossip is slower than its writes): N0 follows nothing (`--hot-docs 0`),
/// so were N1 to write after receiving N0's updates, its later, higher-priority writes could
/// never reach N0 — exactly what I1 with `--hot-docs 0` requires of a node that follows
/// nothing. On real processes gossip outruns the test's next request, so the order that
/// keeps the sequences independent is N1's first.
#[test]
fn a10_sequences_of_updates_converge() {
    let (n0, n1) = two(U);
    let john = create_all(&[&n0, &n1], "Users", json!({"Name": "John", "Age": 21}));
    connect(&n0, &n1);
    follow_collections(&n1, &["Users"]);
    let fred = user(&n0, "Fred", 31);
    for age in [45, 46, 47] {
        set_age(&n1, &john, age);
    }
    for age in [60, 61, 62] {
        set_age(&n0, &john, age);
    }
    set_age(&n0, &fred, 60);
    wait(&[&n0, &n1]);
    let by_name = |n: &Node| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = documents(n, "Users", false)
            .iter()
            .map(|d| {
                (
                    d["Name"].as_str().unwrap_or("").to_string(),
                    d["Age"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (on0, on1) = (by_name(&n0), by_name(&n1));
    let history = |n: &Node| -> Vec<String> {
        let h = n.get(&format!("/documents/{john}/history"));
        h["blocks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|b| {
                format!(
                    "priority {} Age {}",
                    b["priority"], b["fields"]["Age"]["value"]
                )
            })
            .collect()
    };
    assert_eq!(
        on0,
        on1,
        "N0 and N1 hold different Users; John's history on N0: {:?}; on N1: {:?}",
        history(&n0),
        history(&n1)
    );
    assert_eq!(on0.len(), 2, "N0 Users: {on0:?}");
    assert_eq!(on0[0], ("Fred".to_string(), 60), "Fred on both");
    assert_eq!(on0[1].0, "John");
    assert!(
        [47, 62].contains(&on0[1].1),
        "John's Age is one of the last writes (47, 62): {}",
        on0[1].1
    );
}

/// B1: a delete reaches the follower; deleted documents show only when asked for.
#[test]
fn b1_delete_reaches_the_follower() {
    let (n0, n1) = two(U);
    let john = create_all(&[&n0, &n1], "Users", json!({"Name": "John", "Age": 43}));
    create_all(&[&n0, &n1], "Users", json!({"Name": "Andy", "Age": 74}));
    connect(&n0, &n1);
    follow_docs(&n1, &[&john]);
    delete(&n0, "Users", &john);
    wait(&[&n0, &n1]);
    let listing = |n: &Node, show_deleted: bool| -> Vec<(String, i64, bool)> {
        let mut v: Vec<(String, i64, bool)> = documents(n, "Users", show_deleted)
            .iter()
            .map(|d| {
                (
                    d["Name"].as_str().unwrap_or("").to_string(),
                    d["Age"].as_i64().unwrap_or(-1),
                    d["_deleted"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("no _deleted in {d}")),
                )
            })
            .collect();
        v.sort();
        v
    };
    for n in [&n0, &n1] {
        assert_on(
            n,
            "listing",
            listing(n, false),
            vec![("Andy".into(), 74, false)],
        );
        assert_on(
            n,
            "listing with deleted shown",
            listing(n, true),
            vec![("Andy".into(), 74, false), ("John".into(), 43, true)],
        );
    }
}

/// F1: a collection follower gets the other node's documents, not the other way round.
#[test]
fn f1_collection_subscription_is_one_way() {
    let (n0, n1) = two("type Users { name: String }");
    connect(&n1, &n0);
    follow_collections(&n1, &["Users"]);
    create(&n0, "Users", json!({"name": "John"}));
    create(&n1, "Users", json!({"name": "Fred"}));
    wait(&[&n0, &n1]);
    assert_strings(&n0, "Users", "name", &["John"]);
    assert_strings(&n1, "Users", "name", &["Fred", "John"]);
}

/// F2: only the followed collections sync.
#[test]
fn f2_only_followed_collections_sync() {
    let sdl =
        "type Users { name: String }\ntype Giraffes { name: String }\ntype Bears { name: String }";
    let (n0, n1) = two(sdl);
    connect(&n0, &n1);
    // Through the CLI: `p2p collection add` takes several names.
    n1.cli_ok(&["p2p", "collection", "add", "Users", "Bears"]);
    let followed = n1.get("/p2p/collections");
    let mut followed: Vec<String> = serde_json::from_value(followed.clone())
        .unwrap_or_else(|_| panic!("N1 followed collections: {followed}"));
    followed.sort();
    assert_eq!(followed, ["Bears", "Users"], "N1 followed collections");
    create(&n0, "Users", json!({"name": "John"}));
    create(&n0, "Giraffes", json!({"name": "Gillian"}));
    create(&n0, "Bears", json!({"name": "Bjorn"}));
    wait(&[&n0, &n1]);
    for n in [&n0, &n1] {
        assert_strings(n, "Users", "name", &["John"]);
        assert_strings(n, "Bears", "name", &["Bjorn"]);
    }
    assert_strings(&n0, "Giraffes", "name", &["Gillian"]);
    assert_strings(&n1, "Giraffes", "name", &[]);
}

/// F3: subscribing to an unknown collection fails as a whole and subscribes nothing.
#[test]
fn f3_subscribing_to_an_unknown_collection_fails_as_a_whole() {
    let n0 = Node::start("N0");
    schema(&n0, U);
    let a = n0.fails("POST", "/p2p/collections", Some(json!(["Nope"])));
    let e = a.error();
    assert!(e.contains("Nope") && e.contains("not found"), "error: {e}");
    let a = n0.fails("POST", "/p2p/collections", Some(json!(["Users", "Nope"])));
    let e = a.error();
    assert!(e.contains("Nope") && e.contains("not found"), "error: {e}");
    assert_eq!(
        n0.get("/p2p/collections"),
        json!([]),
        "nothing is subscribed"
    );
    // The CLI: one line, non-zero exit, and still nothing subscribed.
    let line = n0.cli_fails(&["p2p", "collection", "add", "Users", "Nope"]);
    assert!(line.contains("not found"), "CLI error: {line}");
    assert_eq!(
        n0.get("/p2p/collections"),
        json!([]),
        "nothing is subscribed"
    );
    // A valid subscription does subscribe (the checks above could not pass vacuously).
    n0.ok("POST", "/p2p/collections", Some(json!(["Users"])));
    assert_eq!(n0.get("/p2p/collections"), json!(["Users"]));
}

/// F3: an empty list is a no-op (it succeeds and subscribes nothing).
#[test]
fn f3_an_empty_subscription_list_is_a_no_op() {
    let n0 = Node::start("N0");
    schema(&n0, U);
    n0.ok("POST", "/p2p/collections", Some(json!([])));
    assert_eq!(
        n0.get("/p2p/collections"),
        json!([]),
        "an empty list is a no-op"
    );
    n0.ok("POST", "/p2p/documents", Some(json!([])));
    assert_eq!(
        n0.get("/p2p/documents"),
        json!([]),
        "an empty list is a no-op"
    );
}

/// F4: following a document the node lacks brings the whole document with the next update;
/// a malformed docID is refused with a clear error.
#[test]
fn f4_following_a_missing_document_brings_all_of_it() {
    let (n0, n1) = two("type Users { name: String }");
    let john = create(&n0, "Users", json!({"name": "John"}));
    create(&n0, "Users", json!({"name": "Fred"}));
    connect(&n1, &n0);
    follow_docs(&n1, &[&john]);
    update(&n0, "Users", &john, json!({"name": "Andy"}));
    wait(&[&n0, &n1]);
    assert_strings(&n0, "Users", "name", &["Andy", "Fred"]);
    assert_strings(&n1, "Users", "name", &["Andy"]);

    let a = n1.fails("POST", "/p2p/documents", Some(json!(["bae-not-a-doc-id"])));
    assert_eq!(a.status, 400, "malformed docID: {}", a.text());
    let e = a.error();
    assert!(
        e.contains("bae-not-a-doc-id"),
        "the error names the input: {e}"
    );
    let line = n1.cli_fails(&["p2p", "document", "add", "bae-not-a-doc-id"]);
    assert!(line.contains("bae-not-a-doc-id"), "CLI error: {line}");
}

/// F5: subscribing to a collection brings its existing documents.
#[test]
fn f5_subscribing_brings_existing_documents() {
    let (n0, n1) = two(U);
    user(&n0, "John", 21);
    user(&n0, "Fred", 22);
    connect(&n0, &n1);
    follow_collections(&n1, &["Users"]);
    wait(&[&n0, &n1]);
    assert_ages(&n1, &[21, 22]);
}

fn counter_scenario(crdt: &str) {
    let sdl = format!("type Users {{ name: String  points: Int @crdt(type: {crdt}) }}");
    let (n0, n1) = two(&sdl);
    let doc0 = create(&n0, "Users", json!({"name": "Shahzad", "points": 10}));
    connect(&n1, &n0);
    follow_docs(&n1, &[&doc0]);
    wait(&[&n0, &n1]);
    update(&n0, "Users", &doc0, json!({"points": 10}));
    wait(&[&n0, &n1]);
    for n in [&n0, &n1] {
        assert_on(
            n,
            &format!("{crdt} points"),
            values(n, "Users", "points"),
            vec![json!(20)],
        );
    }
    let a = n0.request(
        "PATCH",
        &format!("/collections/Users/documents/{doc0}"),
        Some(("application/json", br#"{"points": -5}"#.to_vec())),
    );
    if crdt == "pcounter" {
        assert_eq!(a.status, 400, "a negative pcounter increment: {}", a.text());
        assert_eq!(values(&n0, "Users", "points"), vec![json!(20)]);
    } else {
        assert_eq!(
            a.status,
            200,
            "a negative pncounter increment: {}",
            a.text()
        );
        assert_eq!(values(&n0, "Users", "points"), vec![json!(15)]);
    }
}

/// G1: a counter increment replicates as an increment (pncounter).
#[test]
fn g1_pncounter_increment_replicates() {
    counter_scenario("pncounter");
}

/// G1: the same with a pcounter; a negative increment on it fails.
#[test]
fn g1_pcounter_increment_replicates_and_refuses_negative() {
    counter_scenario("pcounter");
}

/// H1: an on-demand sync fetches the documents once, and does not follow them.
#[test]
fn h1_on_demand_sync_fetches_once() {
    let (n0, n1) = two(U);
    let john = user(&n0, "John", 21);
    let andy = user(&n0, "Andy", 25);
    connect(&n0, &n1);
    let answer = n1.ok("POST", "/p2p/documents/sync", Some(json!([john, andy])));
    assert!(
        answer["sessions"].as_u64().unwrap_or(0) >= 1,
        "N1 started no head exchange: {answer}"
    );
    wait(&[&n0, &n1]);
    assert_ages(&n1, &[21, 25]);
    assert_eq!(
        n1.get("/p2p/documents"),
        json!([]),
        "N1 follows no document"
    );
    // Not followed: a later update stays on N0.
    set_age(&n0, &john, 60);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[25, 60]);
    assert_ages(&n1, &[21, 25]);
}

fn hot_docs_scenario(hot_docs: usize) -> (Vec<i64>, Vec<i64>) {
    let opts = Opts {
        hot_docs,
        ..Opts::default()
    };
    let n0 = Node::start_with("N0", opts.clone());
    let n1 = Node::start_with("N1", opts);
    schema(&n0, U);
    schema(&n1, U);
    let doc0 = create_all(&[&n0, &n1], "Users", json!({"Name": "John", "Age": 21}));
    connect(&n0, &n1);
    set_age(&n0, &doc0, 60);
    wait(&[&n0, &n1]);
    (ages(&n0), ages(&n1))
}

/// I1: with hot-document following on, both nodes follow the document they wrote.
#[test]
fn i1_hot_documents_are_followed() {
    assert_eq!(hot_docs_scenario(16), (vec![60], vec![60]));
}

/// I1: with `--hot-docs 0`, N1 stays at 21.
#[test]
fn i1_without_hot_documents_nothing_is_followed() {
    assert_eq!(hot_docs_scenario(0), (vec![60], vec![21]));
}
