//! Swarm tests of `hypha_protocols::swarm::Frames` over real libp2p connections (memory
//! transport, plaintext, yamux): frames arrive whole, in order, on their protocol, and the
//! bounds and failures are reported as documented. No timing assertions, no sleeps.
#![cfg(feature = "swarm-test")]

use futures::future;
use hypha_protocols::swarm::{Config, Event, Frames, SendError, StreamError};
use libp2p_identity::PeerId;
use libp2p_swarm::{StreamProtocol, Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt as _;

const A: usize = 0;
const B: usize = 1;

#[tokio::test]
async fn frames_arrive_in_order_on_their_protocol() {
    let (mut a, mut b) = connected(config(), config()).await;
    let to = *b.local_peer_id();
    let sent: Vec<(usize, Vec<u8>)> = (0..1000).map(|i| (i % 3 % 2, payload(i))).collect();
    for (protocol, payload) in &sent {
        a.behaviour_mut()
            .send(to, *protocol, frame(payload))
            .unwrap();
    }

    let events = run_until(&mut [&mut a, &mut b], |e| received(&e[1]).len() == 1000).await;

    assert!(
        events[0].is_empty(),
        "the sender reports nothing: {:?}",
        events[0]
    );
    assert_eq!(per_protocol(&received(&events[1])), per_protocol(&sent));
    let from = *a.local_peer_id();
    assert!(
        events[1]
            .iter()
            .all(|e| matches!(e, Event::Received { peer, .. } if *peer == from))
    );
}

#[tokio::test]
async fn both_directions_at_once() {
    let (mut a, mut b) = connected(config(), config()).await;
    let (peer_a, peer_b) = (*a.local_peer_id(), *b.local_peer_id());
    let a_sent: Vec<(usize, Vec<u8>)> = (0..500).map(|i| (i % 2, payload(i))).collect();
    let b_sent: Vec<(usize, Vec<u8>)> = (500..1000).map(|i| (i % 2, payload(i))).collect();
    for ((pa, fa), (pb, fb)) in a_sent.iter().zip(&b_sent) {
        a.behaviour_mut().send(peer_b, *pa, frame(fa)).unwrap();
        b.behaviour_mut().send(peer_a, *pb, frame(fb)).unwrap();
    }

    let events = run_until(&mut [&mut a, &mut b], |e| {
        received(&e[0]).len() == 500 && received(&e[1]).len() == 500
    })
    .await;

    assert_eq!(per_protocol(&received(&events[0])), per_protocol(&b_sent));
    assert_eq!(per_protocol(&received(&events[1])), per_protocol(&a_sent));
}

#[tokio::test]
async fn a_frame_over_the_cap_is_refused_by_the_receiver_and_nothing_else_breaks() {
    let (mut a, mut b) = connected(config(), config().with_max_frame_bytes(1024)).await;
    let (peer_a, peer_b) = (*a.local_peer_id(), *b.local_peer_id());
    a.behaviour_mut()
        .send(peer_b, A, frame(&[7; 2000]))
        .unwrap();

    let events = run_until(&mut [&mut a, &mut b], |e| !e[1].is_empty()).await;

    let refused = Event::StreamFailed {
        peer: peer_a,
        protocol: A,
        error: StreamError::FrameTooLarge {
            len: 2000,
            max: 1024,
        },
    };
    assert_eq!(events[1], [refused]);

    // The other protocol, the other direction and the connection are all still fine.
    a.behaviour_mut().send(peer_b, B, frame(b"after")).unwrap();
    b.behaviour_mut().send(peer_a, A, frame(b"back")).unwrap();
    let events = run_until(&mut [&mut a, &mut b], |e| {
        !received(&e[0]).is_empty() && !received(&e[1]).is_empty()
    })
    .await;
    assert_eq!(received(&events[0]), [(A, b"back".to_vec())]);
    assert_eq!(received(&events[1]), [(B, b"after".to_vec())]);
    assert!(a.behaviour().is_connected(&peer_b) && b.behaviour().is_connected(&peer_a));
}

#[tokio::test]
async fn the_sender_refuses_what_its_own_bounds_refuse() {
    let (mut a, b) = connected(config().with_max_queued_frames(2), config()).await;
    let to = *b.local_peer_id();
    let too_large = frame(&vec![0; wire_max() + 1]);
    assert_eq!(
        a.behaviour_mut().send(to, A, too_large),
        Err(SendError::TooLarge {
            len: wire_max() + 1,
            max: wire_max()
        })
    );
    a.behaviour_mut().send(to, A, frame(b"1")).unwrap();
    a.behaviour_mut().send(to, A, frame(b"2")).unwrap();
    assert_eq!(
        a.behaviour_mut().send(to, A, frame(b"3")),
        Err(SendError::QueueFull)
    );
    // The bound is per protocol.
    a.behaviour_mut().send(to, B, frame(b"1")).unwrap();
}

#[tokio::test]
async fn sending_to_a_disconnected_peer_is_refused_and_queued_frames_are_reported() {
    let (mut a, b) = connected(config(), config()).await;
    let to = *b.local_peer_id();
    tokio::spawn(b.loop_on_next());
    for i in 0..3 {
        a.behaviour_mut().send(to, A, frame(&payload(i))).unwrap();
    }
    a.disconnect_peer_id(to).unwrap();

    let mut dropped = Vec::new();
    loop {
        match a.next_swarm_event().await {
            SwarmEvent::Behaviour(event) => dropped.push(event),
            SwarmEvent::ConnectionClosed { .. } => break,
            _ => {}
        }
    }
    dropped.extend(
        run_until(&mut [&mut a], |e| !e[0].is_empty())
            .await
            .remove(0),
    );

    assert_eq!(
        dropped,
        [Event::Dropped {
            peer: to,
            protocol: A,
            frames: 3
        }]
    );
    assert!(!a.behaviour().is_connected(&to));
    assert_eq!(
        a.behaviour_mut().send(to, A, frame(b"late")),
        Err(SendError::NotConnected)
    );
}

#[tokio::test]
async fn a_protocol_the_peer_lacks_fails_only_its_own_stream() {
    let only_a = Config::new(vec![StreamProtocol::new("/test/a/1")]);
    let (mut a, mut b) = connected(config(), only_a).await;
    let to = *b.local_peer_id();
    a.behaviour_mut().send(to, B, frame(b"lost")).unwrap();
    a.behaviour_mut().send(to, A, frame(b"kept")).unwrap();

    let events = run_until(&mut [&mut a, &mut b], |e| {
        e[0].len() == 2 && received(&e[1]).len() == 1
    })
    .await;

    let failed = Event::StreamFailed {
        peer: to,
        protocol: B,
        error: StreamError::Unsupported,
    };
    let dropped = Event::Dropped {
        peer: to,
        protocol: B,
        frames: 1,
    };
    assert_eq!(events[0], [failed, dropped]);
    assert_eq!(received(&events[1]), [(A, b"kept".to_vec())]);
}

#[tokio::test]
async fn three_swarms_each_pair_exchanges_frames() {
    let mut swarms: Vec<Swarm<Frames>> = (0..3).map(|_| swarm(config())).collect();
    for s in &mut swarms {
        s.listen().with_memory_addr_external().await;
    }
    let [a, b, c] = &mut swarms[..] else {
        unreachable!("three swarms")
    };
    a.connect(b).await;
    b.connect(c).await;
    c.connect(a).await;
    let peers: Vec<PeerId> = [&*a, &*b, &*c].iter().map(|s| *s.local_peer_id()).collect();
    for (from, s) in [&mut *a, &mut *b, &mut *c].into_iter().enumerate() {
        for (to, peer) in peers.iter().enumerate().filter(|(to, _)| *to != from) {
            let message = format!("{from} to {to}").into_bytes();
            s.behaviour_mut()
                .send(*peer, to % 2, frame(&message))
                .unwrap();
        }
    }

    let events = run_until(&mut [a, b, c], |e| e.iter().all(|e| e.len() == 2)).await;

    for (to, events) in events.iter().enumerate() {
        let mut got: Vec<(PeerId, usize, Vec<u8>)> = events
            .iter()
            .map(|e| match e {
                Event::Received {
                    peer,
                    protocol,
                    frame,
                } => (*peer, *protocol, frame.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        got.sort();
        let mut want: Vec<(PeerId, usize, Vec<u8>)> = (0..3)
            .filter(|from| *from != to)
            .map(|from| (peers[from], to % 2, format!("{from} to {to}").into_bytes()))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}

/// Two protocols, `A` and `B`, with the default bounds.
fn config() -> Config {
    Config::new(vec![
        StreamProtocol::new("/test/a/1"),
        StreamProtocol::new("/test/b/1"),
    ])
}

fn wire_max() -> usize {
    hypha_protocols::wire::DEFAULT_MAX_FRAME_BYTES
}

fn swarm(config: Config) -> Swarm<Frames> {
    Swarm::new_ephemeral_tokio(|_| Frames::new(config))
}

/// Two swarms, the first connected to the second.
async fn connected(a: Config, b: Config) -> (Swarm<Frames>, Swarm<Frames>) {
    let (mut a, mut b) = (swarm(a), swarm(b));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    (a, b)
}

/// Polls every swarm until `done` holds for the behaviour events collected so far, one list
/// per swarm. A swarm that emits nothing for 10 s fails the test (libp2p-swarm-test's guard).
async fn run_until(
    swarms: &mut [&mut Swarm<Frames>],
    mut done: impl FnMut(&[Vec<Event>]) -> bool,
) -> Vec<Vec<Event>> {
    let mut events = vec![Vec::new(); swarms.len()];
    while !done(&events) {
        let next = swarms.iter_mut().map(|s| s.next_swarm_event());
        if let (SwarmEvent::Behaviour(event), i, _) = future::select_all(next).await {
            events[i].push(event);
        }
    }
    events
}

/// The protocol and payload of every `Received`, in order.
fn received(events: &[Event]) -> Vec<(usize, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Received {
                protocol, frame, ..
            } => Some((*protocol, frame.clone())),
            _ => None,
        })
        .collect()
}

/// The payloads of each protocol, in order: order holds per protocol, not across them.
fn per_protocol(frames: &[(usize, Vec<u8>)]) -> [Vec<&[u8]>; 2] {
    [A, B].map(|p| {
        frames
            .iter()
            .filter(|(protocol, _)| *protocol == p)
            .map(|(_, payload)| payload.as_slice())
            .collect()
    })
}

/// Payload `i`: its index, then 0 to ~3 KB of bytes that depend on it; every 97th is 200 KiB,
/// so that frames span many reads.
fn payload(i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(97) {
        200 << 10
    } else {
        i * 7919 % 3001
    };
    let mut payload = u32::try_from(i).unwrap().to_be_bytes().to_vec();
    payload.extend((0..len).map(|j| (i ^ j) as u8));
    payload
}

/// `payload` with its length prefix, as the cores emit it.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}
