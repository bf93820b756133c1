//! SCENARIOS.md C (restarts), D (replicator to an offline target), E (replicators) and J
//! (reachability through a relay) against real `hypha` processes on 127.0.0.1. Some
//! replicators are set through the `hypha client` CLI, the rest through the HTTP API.

mod common;

use common::*;
use serde_json::{Value, json};

/// Two nodes with schema U.
fn two() -> (Node, Node) {
    let n0 = Node::start("N0");
    let n1 = Node::start("N1");
    schema(&n0, U);
    schema(&n1, U);
    (n0, n1)
}

/// The replicators a node lists.
fn replicators(node: &Node) -> Vec<Value> {
    match node.get("/p2p/replicators") {
        Value::Array(r) => r,
        other => panic!("{}: GET /p2p/replicators answered {other}", node.name),
    }
}

/// C1: subscriptions survive restarts, and peers reconnect by themselves.
#[test]
fn c1_subscriptions_survive_restarts() {
    let (mut n0, mut n1) = two();
    let john = user(&n0, "John", 21);
    connect(&n0, &n1);
    follow_docs(&n1, &[&john]);
    wait(&[&n0, &n1]);
    // Restart all: both down, then both up.
    for n in [&mut n0, &mut n1] {
        let status = n.stop();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            n.name
        );
    }
    n0.start_again();
    n1.start_again();
    assert_eq!(
        n1.get("/p2p/documents"),
        json!([john]),
        "N1 still follows doc0"
    );
    // Nobody is told to connect: the peers redial the addresses they remember.
    await_connected(&n0, &n1);
    set_age(&n0, &john, 60);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[60]);
    assert_ages(&n1, &[60]);
}

/// C2: replicators survive restarts.
#[test]
fn c2_replicators_survive_restarts() {
    let (mut n0, mut n1) = two();
    replicator(&n0, &n1, &["Users"]);
    n0.restart();
    n1.restart();
    let r = replicators(&n0);
    assert_eq!(r.len(), 1, "N0 replicators after the restart: {r:?}");
    assert_eq!(r[0]["id"], json!(n1.id()), "N0's replicator targets N1");
    user(&n0, "John", 21);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[21]);
}

fn offline_target(with_updates: bool) {
    let (n0, mut n1) = two();
    replicator(&n0, &n1, &["Users"]);
    let status = n1.stop();
    assert!(status.success(), "N1 exited with {status} after SIGTERM");
    let john = user(&n0, "John", 21);
    let fred = user(&n0, "Fred", 22);
    if with_updates {
        set_age(&n0, &john, 22);
        set_age(&n0, &fred, 23);
    }
    n1.start_again();
    wait(&[&n0, &n1]);
    let expected: &[i64] = if with_updates { &[22, 23] } else { &[21, 22] };
    assert_ages(&n0, expected);
    assert_ages(&n1, expected);
}

/// D1: what a replicator's target missed while stopped arrives when it is back.
#[test]
fn d1_offline_target_catches_up() {
    offline_target(false);
}

/// D2: the same, with updates made while the target was stopped.
#[test]
fn d2_offline_target_catches_up_with_updates() {
    offline_target(true);
}

/// E1: a replicator (set through the CLI) pushes a new document.
#[test]
fn e1_replicator_pushes_new_documents() {
    let (n0, n1) = two();
    n0.cli_ok(&["p2p", "replicator", "set", "-c", "Users", &n1.maddr()]);
    let listed = n0.cli_ok(&["p2p", "replicator", "getall"]);
    assert!(
        listed.contains(n1.id()),
        "`replicator getall` lists N1: {listed}"
    );
    user(&n0, "John", 21);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[21]);
}

/// E2: existing documents are brought over when a replicator is set.
#[test]
fn e2_existing_documents_are_brought_over() {
    let (n0, n1) = two();
    user(&n0, "John", 21);
    replicator(&n0, &n1, &["Users"]);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[21]);
}

/// E3: replication is one-way.
#[test]
fn e3_replication_is_one_way() {
    let (n0, n1) = two();
    user(&n1, "John", 21);
    replicator(&n0, &n1, &["Users"]);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[]);
    assert_ages(&n1, &[21]);
}

/// E4: a deleted replicator (deleted through the CLI) pushes nothing.
#[test]
fn e4_deleted_replicator_pushes_nothing() {
    let (n0, n1) = two();
    replicator(&n0, &n1, &["Users"]);
    assert_eq!(replicators(&n0).len(), 1, "N0 has the replicator");
    n0.cli_ok(&["p2p", "replicator", "delete", n1.id()]);
    assert_eq!(
        replicators(&n0),
        Vec::<Value>::new(),
        "N0 has no replicator"
    );
    user(&n0, "John", 21);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[]);
}

/// E5: two replicators from one source (one set with the seed's `rpc addreplicator`).
#[test]
fn e5_two_replicators() {
    let (n0, n1) = two();
    let n2 = Node::start("N2");
    schema(&n2, U);
    replicator(&n0, &n1, &["Users"]);
    n0.cli_ok(&["rpc", "addreplicator", "Users", &n2.maddr()]);
    user(&n0, "John", 21);
    wait(&[&n0, &n1, &n2]);
    for n in [&n0, &n1, &n2] {
        assert_ages(n, &[21]);
    }
}

/// E6: only the replicator's target gets the document.
#[test]
fn e6_only_the_target_gets_the_document() {
    let (n0, n1) = two();
    let n2 = Node::start("N2");
    schema(&n2, U);
    // N2 is connected to N0, so only the replicator's scope keeps the document from it.
    connect(&n2, &n0);
    replicator(&n0, &n1, &["Users"]);
    user(&n0, "John", 21);
    wait(&[&n0, &n1, &n2]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[21]);
    assert_ages(&n2, &[]);
}

/// E7: a replicator pushes every new document.
#[test]
fn e7_replicator_pushes_every_document() {
    let (n0, n1) = two();
    replicator(&n0, &n1, &["Users"]);
    user(&n0, "John", 21);
    user(&n0, "Fred", 22);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[21, 22]);
    assert_ages(&n1, &[21, 22]);
}

/// E8: a replicator pushes updates.
#[test]
fn e8_replicator_pushes_updates() {
    let (n0, n1) = two();
    replicator(&n0, &n1, &["Users"]);
    let john = user(&n0, "John", 21);
    set_age(&n0, &john, 60);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[60]);
    assert_ages(&n1, &[60]);
}

/// E9: a replicator for one chosen document (set through the CLI's `--doc`).
#[test]
fn e9_granular_replicator() {
    let (n0, n1) = two();
    let john = user(&n0, "John", 21);
    let fred = user(&n0, "Fred", 22);
    n0.cli_ok(&["p2p", "replicator", "set", "--doc", &john, &n1.maddr()]);
    set_age(&n0, &john, 30);
    set_age(&n0, &fred, 40);
    wait(&[&n0, &n1]);
    assert_ages(&n0, &[30, 40]);
    assert_ages(&n1, &[30]);
}

/// E10: a target without the collection refuses; the document arrives once it adds the
/// schema.
#[test]
fn e10_target_without_the_collection_gets_it_after_adding_the_schema() {
    let n0 = Node::start("N0");
    let n1 = Node::start("N1");
    schema(&n0, U);
    replicator(&n0, &n1, &["Users"]);
    let john = user(&n0, "John", 21);
    // N0 keeps the refused push in its outbox to retry it: that is not "in flight".
    wait_allowing_outbox(&[&n0, &n1], &[&n0]);
    let a = n1.request("GET", "/collections/Users/documents", None);
    assert_eq!(a.status, 404, "N1 has no Users collection: {}", a.text());
    let a = n1.request("GET", &format!("/documents/{john}/sync"), None);
    assert_eq!(a.status, 404, "N1 does not hold John: {}", a.text());
    let refusal = "the target does not have the collection";
    let log = n0.log();
    assert!(
        log.lines()
            .any(|l| l.contains(refusal) && l.contains(n1.id())),
        "N0's log reports that N1 lacks the collection ({refusal:?})"
    );
    schema(&n1, U);
    wait(&[&n0, &n1]);
    assert_ages(&n1, &[21]);
}

/// J1: a replicator reaches a node that is only reachable through a relay.
#[test]
fn j1_replicator_through_a_relay() {
    let r = Node::start_with("R", Opts::with(&["--relay"]));
    let n1 = Node::start_with(
        "N1",
        Opts::with(&["--reachability", "private", "--relay-addr", &r.maddr()]),
    );
    let n0 = Node::start("N0");
    schema(&n0, U);
    schema(&n1, U);
    let circuit = format!("{}/p2p-circuit/p2p/{}", r.maddr(), n1.id());
    poll(
        DEADLINE,
        "N1 to hold a reservation on R and advertise its relayed address",
        || {
            let info = n1.get("/p2p/info");
            let listed = info["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(circuit.as_str())));
            if listed {
                Ok(())
            } else {
                Err(format!("N1 info: {info}"))
            }
        },
    );
    n0.ok(
        "POST",
        "/p2p/replicators",
        Some(json!({ "address": circuit, "collections": ["Users"] })),
    );
    user(&n0, "John", 21);
    wait(&[&n0, &n1, &r]);
    assert_ages(&n0, &[21]);
    assert_ages(&n1, &[21]);
}
