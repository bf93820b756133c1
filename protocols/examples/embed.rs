//! Hypha inside your own libp2p app: its behaviour sits in your `#[derive(NetworkBehaviour)]`
//! next to your own (here ping), and your event loop just polls the Swarm.
//!
//! Two nodes run in one process on libp2p's memory transport, so no network is needed. The
//! reader follows the `Users` collection; the writer knows the reader as a configured peer,
//! dials it by itself, waits until the reader has joined the collection's pubsub topic, and
//! writes a document, which the reader prints once it is in its store.
//!
//! Run it with `cargo run -p hypha-protocols --features swarm-test --example embed`.
//!
//! A real app builds its Swarm with its own transport (TCP or QUIC, noise, yamux); here
//! libp2p-swarm-test's `new_ephemeral_tokio` stands in for that. With the `libp2p` facade
//! crate, the derive needs no `prelude` attribute.

use std::error::Error;
use std::sync::Arc;

use futures::StreamExt as _;
use hypha_crdt::Author;
use hypha_protocols::node::{self, Event};
use hypha_protocols::pubsub;
use hypha_protocols::swarm::{Hypha, HyphaEvent};
use hypha_store::{Mutation, Store};
use libp2p_identity::PeerId;
use libp2p_swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt as _;
use serde_json::json;

const SCHEMA: &str = "type Users { Name: String  Age: Int }";

/// The application's behaviour: Hypha, and whatever else the app speaks.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p_swarm::derive_prelude")]
struct App {
    hypha: Hypha,
    ping: libp2p_ping::Behaviour,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut reader = app(2, Vec::new())?;
    let (address, _) = reader.listen().with_memory_addr_external().await;
    let reader_id = *reader.local_peer_id();
    reader
        .behaviour_mut()
        .hypha
        .follow_collections(&["Users"])?;

    // The writer wants the reader, so it dials it (and would redial it with backoff).
    let mut writer = app(1, vec![(reader_id, vec![address.to_vec()])])?;
    let store = Arc::clone(writer.behaviour().hypha.store());
    let users = store.collection("Users")?.ok_or("Users is declared")?.id();
    let topic = pubsub::collection_topic("hypha", &users);

    for _ in 0..1_000 {
        tokio::select! {
            event = writer.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    println!("writer: connected to {peer_id}");
                }
                SwarmEvent::Behaviour(AppEvent::Hypha(HyphaEvent::Subscribed { peer, topic: t }))
                    if peer == reader_id && t == topic =>
                {
                    println!("writer: the reader joined {t}; writing");
                    let ada = json!({"Name": "Ada", "Age": 36});
                    let create = Mutation::Create { collection: "Users".into(), document: ada };
                    writer.behaviour_mut().hypha.submit(create);
                }
                SwarmEvent::Behaviour(AppEvent::Hypha(HyphaEvent::Node(Event::Changed { doc, .. }))) => {
                    println!("writer: committed {doc}");
                }
                _ => {}
            },
            event = reader.select_next_some() => match event {
                SwarmEvent::Behaviour(AppEvent::Hypha(HyphaEvent::Node(Event::Changed { doc, .. }))) => {
                    let store = reader.behaviour().hypha.store();
                    let document = store.document(&doc)?.ok_or("a changed document is held")?;
                    println!("reader: {doc} {}", serde_json::Value::Object(document));
                    return Ok(());
                }
                SwarmEvent::Behaviour(AppEvent::Ping(ping)) => {
                    if let Ok(rtt) = ping.result {
                        println!("reader: ping from {} in {rtt:?}", ping.peer);
                    }
                }
                _ => {}
            },
        }
    }
    Err("the document did not arrive within 1,000 events".into())
}

/// A Swarm with a memory store holding the schema, and Hypha wanting `peers`.
fn app(seed: u8, peers: Vec<(PeerId, Vec<Vec<u8>>)>) -> Result<Swarm<App>, Box<dyn Error>> {
    let store = Arc::new(Store::memory(hypha_store::Config::new(Author::unsigned(
        [seed; 32],
    )))?);
    store.commit(Mutation::AddSchema { sdl: SCHEMA.into() })?;
    let config = node::Config::new("hypha").with_peers(peers);
    Ok(Swarm::new_ephemeral_tokio(move |key| App {
        hypha: Hypha::new(config, store, &key, u64::from(seed)),
        ping: libp2p_ping::Behaviour::default(),
    }))
}
