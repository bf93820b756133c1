//! A peer that keeps sending what an honest node never sends is banned: its connection is
//! closed and a new one refused, while the victim keeps its store untouched. Real libp2p
//! Swarms on the memory transport; the attacker is a bare `Frames` behaviour speaking Hypha's
//! stream protocols with garbage.
#![cfg(feature = "swarm-test")]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use hypha_crdt::Author;
use hypha_protocols::node::{self, Event, Protocol};
use hypha_protocols::standing;
use hypha_protocols::swarm::{self, Frames, Hypha, HyphaConfig, HyphaEvent};
use hypha_store::{Mutation, Store};
use libp2p_swarm::{StreamProtocol, Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt as _;

/// Past this many events, something is stuck.
const MAX_EVENTS: usize = 5_000;
/// No event for this long: something is stuck (a liveness guard, not a timing check).
const IDLE: Duration = Duration::from_secs(10);

#[tokio::test]
#[allow(clippy::disallowed_methods)] // Hypha's standing runs on the wall clock: ask it now.
async fn a_peer_sending_garbage_is_banned_and_refused() {
    let store = Store::memory(hypha_store::Config::new(Author::unsigned([1; 32]))).unwrap();
    store
        .commit(Mutation::AddSchema {
            sdl: "type Users { Name: String }".into(),
        })
        .unwrap();
    let store = Arc::new(store);
    let config = HyphaConfig::new(node::Config::new("hypha"))
        .with_standing(standing::Config::default().with_ban_at(3.0));
    let victim_store = Arc::clone(&store);
    let mut victim =
        Swarm::new_ephemeral_tokio(move |key| Hypha::new(config, victim_store, &key, 1));
    let names = Protocol::ALL
        .map(|p| StreamProtocol::new(p.name()))
        .to_vec();
    let mut attacker = Swarm::new_ephemeral_tokio(|_| Frames::new(swarm::Config::new(names)));
    let (address, _) = victim.listen().with_memory_addr_external().await;
    attacker.connect(&mut victim).await;
    let (victim_id, attacker_id) = (*victim.local_peer_id(), *attacker.local_peer_id());
    let replicator = Protocol::ALL
        .iter()
        .position(|p| *p == Protocol::Replicator)
        .unwrap();

    // Three malformed replicator messages: not protobuf at all.
    for _ in 0..3 {
        let garbage = [0xff_u8; 16];
        let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&garbage);
        attacker
            .behaviour_mut()
            .send(victim_id, replicator, frame)
            .unwrap();
    }

    let (mut violations, mut banned, mut closed) = (0, None, false);
    for _ in 0..MAX_EVENTS {
        if banned.is_some() && closed {
            break;
        }
        tokio::select! {
            () = futures_timer::Delay::new(IDLE) => {
                panic!("stuck: {violations} violations, banned {banned:?}, closed {closed}")
            }
            event = victim.select_next_some() => match event {
                SwarmEvent::Behaviour(HyphaEvent::Node(Event::PeerMisbehaved { peer, .. })) => {
                    assert_eq!(peer, attacker_id);
                    violations += 1;
                }
                SwarmEvent::Behaviour(HyphaEvent::Banned { peer, for_ }) => {
                    assert_eq!(peer, attacker_id);
                    banned = Some(for_);
                }
                _ => {}
            },
            event = attacker.select_next_some() => {
                if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = event {
                    assert_eq!(peer_id, victim_id);
                    closed = true;
                }
            }
        }
    }
    assert_eq!(violations, 3, "each garbage frame is a violation");
    assert_eq!(
        banned,
        Some(Duration::from_secs(900)),
        "banned for the default 15 minutes"
    );
    assert!(closed, "the victim closed the attacker's connection");
    assert!(
        victim
            .behaviour()
            .standing()
            .is_banned(&attacker_id, std::time::Instant::now())
    );

    // A new connection is refused while the ban lasts.
    attacker.dial(address).unwrap();
    let mut refused = false;
    for _ in 0..MAX_EVENTS {
        tokio::select! {
            () = futures_timer::Delay::new(IDLE) => panic!("stuck: the redial neither connected nor failed"),
            event = victim.select_next_some() => {
                if let SwarmEvent::IncomingConnectionError { .. } = event {
                    refused = true;
                }
                assert!(
                    !matches!(event, SwarmEvent::ConnectionEstablished { .. }),
                    "a banned peer got a connection: {event:?}"
                );
            }
            event = attacker.select_next_some() => {
                if let SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } = event {
                    refused = true;
                }
            }
        }
        if refused {
            break;
        }
    }
    assert!(refused, "the banned peer's new connection was refused");
    assert_eq!(store.stats().unwrap().documents, 0, "nothing was written");
}
