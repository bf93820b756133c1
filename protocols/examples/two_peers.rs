//! Two Hypha nodes in one process, driven by hand: the drive loop every driver writes.
//!
//! Node 0 makes node 1 a replicator of the `Books` collection, node 1 follows the collection
//! over pubsub too, and node 0 writes. This loop is the whole of what a driver does: execute
//! each node's commands (persist, transmit, publish, connect), hand what arrives to the other
//! node, and fire timers. The simulator does the same over its network model, and the `hypha`
//! node over libp2p.
//!
//! Run it with `cargo run -p hypha-protocols --example two_peers`.

// An example reads the clock once, as every driver does; the crate's clippy.toml forbids it
// for the cores.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hypha_crdt::Author;
use hypha_protocols::connectivity::{self, Path};
use hypha_protocols::node::{Command, Config, Node, Peer, Protocol, Verdict};
use hypha_store::{Committed, Mutation, Replicator, Store};
use serde_json::json;

/// Something in flight from one node to the other.
enum Message {
    Frame(Protocol, Vec<u8>),
    Gossip(String, Vec<u8>),
    Connected,
}

struct Host {
    node: Node<u8>,
    store: Store,
    topics: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut now = Instant::now();
    let mut peers = Vec::new();
    for i in 0..2u8 {
        let store = Store::memory(hypha_store::Config::new(Author::unsigned([i; 32])))?;
        store.commit(Mutation::AddSchema {
            sdl: "type Books { name: String  rating: Float }".into(),
        })?;
        let mut node = Node::new(Config::new("hypha").with_hot_docs(0), u64::from(i));
        node.start(&store, now);
        peers.push(Host {
            node,
            store,
            topics: Vec::new(),
        });
    }
    // What each node sends to the other, in order.
    let mut wires: [VecDeque<Message>; 2] = [VecDeque::new(), VecDeque::new()];

    // Node 1 follows Books over pubsub; node 0 makes node 1 its replicator for Books.
    let p1 = &mut peers[1];
    p1.node.follow_collections(&["Books"], &p1.store, now)?;
    let books = peers[0].store.collection("Books")?.expect("declared").id();
    let replicator = Replicator {
        collections: [books].into(),
        addresses: vec![vec![1]],
        ..Replicator::default()
    };
    let peer = 1u8.to_key();
    peers[0]
        .node
        .submit(Mutation::SetReplicator { peer, replicator }, now);
    drive(&mut peers, &mut wires, &mut now);

    // Node 0 writes; the block reaches node 1 by push and by pubsub (once: CIDs dedupe).
    let doc = peers[0].node.submit(
        Mutation::Create {
            collection: "Books".into(),
            document: json!({"name": "Hypha in Action", "rating": 4.5}),
        },
        now,
    );
    let _ = doc;
    drive(&mut peers, &mut wires, &mut now);

    for (i, p) in peers.iter().enumerate() {
        let ids = p.store.documents(books, false, None, 10)?;
        for id in ids {
            let doc = p.store.document(&id)?.expect("listed");
            println!("node {i}: {id} {}", serde_json::Value::Object(doc));
        }
    }
    Ok(())
}

/// Runs both nodes until nothing is in flight and no timer is due within a minute.
fn drive(peers: &mut [Host], wires: &mut [VecDeque<Message>; 2], now: &mut Instant) {
    loop {
        for i in 0..2 {
            run_commands(i, peers, wires, *now);
        }
        // Deliver one message each way, or else advance time to the next timer.
        let mut moved = false;
        for (from, wire) in wires.iter_mut().enumerate() {
            let to = 1 - from;
            if let Some(m) = wire.pop_front() {
                moved = true;
                let (p, from) = (&mut peers[to], from as u8);
                match m {
                    Message::Frame(protocol, frame) => {
                        p.node.handle_frame(from, protocol, &frame, &p.store, *now);
                    }
                    Message::Gossip(topic, data) => {
                        if p.topics.contains(&topic) {
                            let verdict = p.node.handle_pubsub(from, &topic, &data, &p.store, *now);
                            assert_eq!(verdict, Verdict::Accept);
                        }
                    }
                    Message::Connected => {
                        let addresses = vec![vec![from]];
                        p.node.handle_connected(
                            from,
                            addresses,
                            Path::Direct,
                            true,
                            &p.store,
                            *now,
                        );
                    }
                }
            }
        }
        if moved {
            continue;
        }
        let next = peers.iter().filter_map(|p| p.node.poll_timeout()).min();
        match next {
            Some(t) if t <= *now + Duration::from_secs(60) => {
                *now = (*now).max(t);
                for p in peers.iter_mut() {
                    p.node.handle_timeout(&p.store, *now);
                }
            }
            _ => return,
        }
    }
}

/// Executes node `i`'s commands: persist to its store, queue frames and gossip for the other
/// node, connect when asked to dial.
fn run_commands(i: usize, peers: &mut [Host], wires: &mut [VecDeque<Message>; 2], now: Instant) {
    while let Some(command) = peers[i].node.poll_command() {
        let p = &mut peers[i];
        match command {
            Command::Persist {
                token,
                mutation,
                until,
            } => {
                // Reported at the stage the coordinator asks for: durable (acks and API
                // answers follow only from there), or visible for a received block.
                let result = p
                    .store
                    .submit(mutation)
                    .wait_until(until)
                    .map(|r| r.committed);
                if let Ok(Committed::Local { block, .. }) = &result {
                    println!("node {i}: committed {}", block.cid());
                }
                p.node.handle_persisted(token, result, &p.store, now);
            }
            Command::Transmit {
                protocol, frame, ..
            } => {
                // A stream carries frames; the length prefix is the stream's framing.
                wires[i].push_back(Message::Frame(protocol, frame[4..].to_vec()));
            }
            Command::Publish { topic, data, .. } => {
                wires[i].push_back(Message::Gossip(topic, data));
            }
            Command::Subscribe { topic } => p.topics.push(topic),
            Command::Unsubscribe { topic } => p.topics.retain(|t| *t != topic),
            Command::Connect(connectivity::Command::Dial { peer, .. }) => {
                let addresses = vec![vec![peer]];
                p.node
                    .handle_connected(peer, addresses, Path::Direct, false, &p.store, now);
                wires[i].push_back(Message::Connected);
            }
            // One process, no DHT and no NAT: nothing to do for the other decisions.
            Command::Connect(_) => {}
        }
    }
    let p = &mut peers[i];
    while let Some(event) = p.node.poll_event() {
        let _ = event;
    }
}
