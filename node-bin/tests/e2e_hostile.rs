//! Hostile peers and bad input (issue 7) against real `hypha` processes: attacks 1–3, 10–13
//! and 16, the ones that cross libp2p or the API. The protocol logic behind each defence is
//! tested in depth in `protocols/tests/hostile.rs`; here the question is whether the node as
//! shipped — its Swarm, connection limits, gossipsub settings, stream handlers and API —
//! survives the attack.
//!
//! Every test builds the same arena: an honest node H and a victim V, both with schema U, V
//! following `Users` and connected to H. The adversary is one or more libp2p Swarms inside the
//! test process ([`Evil`]): TCP, Noise, Yamux, identify with the node's own protocol version (so
//! it is not dropped as a peer of another network), signed gossipsub, and raw streams
//! (`libp2p-stream`) on Hypha's protocol IDs, on which it writes whatever bytes it likes.
//!
//! During each attack H keeps creating documents and each must reach V (polled with a bounded
//! deadline); V's resident set size (`VmRSS`) is sampled throughout and must stay within 2× its
//! peak over the same honest traffic before the attack. After it, V holds exactly H's blocks
//! (nothing the attacker sent) and nothing is pending, and the rejections show in V's metrics
//! where the node counts them.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use hypha_crdt::{Block, Cid, Delta, FieldOp, Ipld, SigningKey, Status, VerifiedBlock};
use hypha_protocols::generated::hypha::backfill::v1 as bpb;
use hypha_protocols::generated::hypha::pubsub::v1 as ppb;
use hypha_protocols::generated::hypha::replicator::v1 as rpb;
use hypha_protocols::wire::{self, BACKFILL_PROTOCOL, HEAD_SYNC_PROTOCOL, REPLICATOR_PROTOCOL};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, identify, noise, tcp, yamux};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

/// The network every node of these tests runs in (the default).
const NETWORK: &str = "hypha";
/// Honest rounds before an attack, to warm the victim up and measure its baseline.
const WARMUP: usize = 6;

// ---- the arena ------------------------------------------------------------------------------

/// The honest node, the victim, the adversaries' runtime, and the victim's memory figures.
struct Arena {
    honest: Node,
    victim: Node,
    rt: Runtime,
    round: usize,
    /// The victim's peak RSS (KiB) over the warm-up's honest traffic.
    before: u64,
    /// The victim's peak RSS (KiB) since the attack began.
    peak: u64,
}

impl Arena {
    fn new(what: &str) -> Arena {
        Arena::with(what, Opts::default())
    }

    /// H and V (V started with `victim`'s options), connected, V following Users; then
    /// [`WARMUP`] honest rounds, whose peak RSS is the baseline.
    fn with(what: &str, victim: Opts) -> Arena {
        let honest = Node::start(&format!("H-{what}"));
        let victim = Node::start_with(&format!("V-{what}"), victim);
        schema(&honest, U);
        schema(&victim, U);
        follow_collections(&victim, &["Users"]);
        connect(&victim, &honest);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut arena = Arena {
            honest,
            victim,
            rt,
            round: 0,
            before: 0,
            peak: 0,
        };
        for _ in 0..WARMUP {
            arena.honest_round();
        }
        arena.before = arena.peak;
        arena.peak = arena.victim.rss_kib();
        arena
    }

    /// H creates a document; it must reach V. Samples V's RSS.
    fn honest_round(&mut self) {
        self.round += 1;
        let name = format!("honest-{}", self.round);
        user(&self.honest, &name, self.round as i64);
        self.sample();
        let victim = &self.victim;
        poll(DEADLINE, &format!("{name} to reach the victim"), || {
            let names = strings(victim, "Users", "Name");
            if names.contains(&name) {
                Ok(())
            } else {
                Err(format!("{} has {} documents", victim.name, names.len()))
            }
        });
        self.sample();
    }

    fn sample(&mut self) {
        self.peak = self.peak.max(self.victim.rss_kib());
    }

    /// A few more honest rounds; then V holds exactly H's blocks, nothing pending, and its
    /// peak RSS since the attack began is within 2× the baseline.
    fn finish(&mut self, what: &str) {
        for _ in 0..3 {
            self.honest_round();
        }
        let (h, v) = (&self.honest, &self.victim);
        poll(
            DEADLINE,
            "the victim to hold exactly the honest blocks",
            || {
                let hb = h.metric("hypha_store_blocks");
                let vb = v.metric("hypha_store_blocks");
                let pending = v.metric("hypha_store_pending_blocks");
                if hb == vb && pending == 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "honest {hb} blocks, victim {vb}, pending {pending}"
                    ))
                }
            },
        );
        assert_eq!(
            strings(v, "Users", "Name"),
            strings(h, "Users", "Name"),
            "the victim holds the honest documents and nothing else"
        );
        self.sample();
        eprintln!(
            "rss {what}: victim before the attack {} KiB, peak during it {} KiB ({:.2}x)",
            self.before,
            self.peak,
            self.peak as f64 / self.before as f64
        );
        assert!(
            self.peak <= 2 * self.before,
            "{what}: the victim's RSS reached {} KiB, more than 2 × {} KiB",
            self.peak,
            self.before
        );
    }

    fn victim_id(&self) -> PeerId {
        self.victim.id().parse().expect("a peer ID")
    }

    /// An adversary connected to the victim, with a new identity.
    fn evil(&self) -> Evil {
        let evil = Evil::spawn(&self.rt, self.victim_id(), self.victim_addr());
        evil.dial();
        evil.await_connected();
        evil
    }

    fn victim_addr(&self) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{}", self.victim.p2p_port)
            .parse()
            .expect("a multiaddr")
    }

    /// The collection topic of Users, as the nodes name it.
    fn topic(&self) -> String {
        let (_, head) = self.honest_head();
        hypha_protocols::pubsub::collection_topic(NETWORK, &head.block().delta.collection)
    }

    /// The honest document `honest-1`: its docID and current head block.
    fn honest_head(&self) -> (String, VerifiedBlock) {
        let docs = documents(&self.honest, "Users", false);
        let doc = docs
            .iter()
            .find(|d| d["Name"] == "honest-1")
            .and_then(|d| d["_docID"].as_str())
            .expect("honest-1")
            .to_string();
        let sync = self.honest.get(&format!("/documents/{doc}/sync"));
        let head = sync["heads"][0].as_str().expect("a head").to_string();
        (doc, block(&self.honest, &head))
    }
}

/// The block `cid` as `node` serves it, verified.
fn block(node: &Node, cid: &str) -> VerifiedBlock {
    let a = node.request("GET", &format!("/blocks/{cid}"), None);
    assert_eq!(a.status, 200, "GET /blocks/{cid}: {}", a.text());
    let cid: Cid = cid.parse().expect("a CID");
    VerifiedBlock::decode(&a.body, Some(&cid)).expect("a valid block")
}

/// Whether `node` serves the block `cid`.
fn has_block(node: &Node, cid: &Cid) -> bool {
    let a = node.request("GET", &format!("/blocks/{cid}"), None);
    match a.status {
        200 => true,
        404 => false,
        s => panic!("GET /blocks/{cid}: {s} {}", a.text()),
    }
}

/// A valid child of `parent` by the adversary's key: what an honest writer could have sent.
fn child_of(parent: &VerifiedBlock, age: i64) -> VerifiedBlock {
    let d = &parent.block().delta;
    let priority = d.priority + 1;
    Block {
        heads: vec![parent.cid()],
        delta: Delta {
            doc_id: d.doc_id,
            collection: d.collection,
            schema_version: d.schema_version,
            priority,
            status: Status::Active,
            fields: [(
                "Age".to_owned(),
                FieldOp::Lww {
                    priority,
                    value: Ipld::Integer(age.into()),
                },
            )]
            .into(),
        },
        author: None,
        signature: None,
    }
    .sign(&SigningKey::from_bytes(&[0xEE; 32]))
    .expect("signs")
}

/// A pubsub update (protobuf, as gossipsub carries it) announcing `cid` with `bytes` inline.
fn update_bytes(of: &VerifiedBlock, cid: &Cid, bytes: Vec<u8>) -> Vec<u8> {
    let d = &of.block().delta;
    let update = ppb::Update {
        doc_id: d.doc_id.to_bytes().to_vec(),
        collection_id: d.collection.0.to_bytes(),
        cid: cid.to_bytes(),
        block: bytes,
        heads: vec![cid.to_bytes()],
    };
    unframed(&update)
}

/// A message's protobuf bytes, without the frame's length prefix.
fn unframed<M: wire::WireMessage>(m: &M) -> Vec<u8> {
    let mut f = wire::encode_frame(m, usize::MAX).expect("encodes");
    f.drain(..4);
    f
}

/// `payload` behind its 4-byte big-endian length.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A replicator push of `blocks` for the document of `of`.
fn push_frame(id: u64, of: &VerifiedBlock, blocks: Vec<Vec<u8>>) -> Vec<u8> {
    let d = &of.block().delta;
    unframed(&rpb::Frame {
        kind: rpb::mod_Frame::OneOfkind::push(rpb::Push {
            id,
            collection: "Users".to_owned(),
            collection_id: d.collection.0.to_bytes(),
            doc_id: d.doc_id.to_bytes().to_vec(),
            heads: vec![of.cid().to_bytes()],
            blocks,
        }),
    })
}

/// Protobuf bytes nested `depth` deep, each level's field 1 holding the next.
fn nested(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![0x0a];
        let mut len = inner.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(byte);
                break;
            }
            outer.push(byte | 0x80);
        }
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

// ---- the adversary --------------------------------------------------------------------------

#[derive(NetworkBehaviour)]
struct EvilBehaviour {
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// What an adversary's Swarm saw.
#[derive(Debug, Default)]
struct Seen {
    /// Connections to the victim open now.
    open: usize,
    /// Connections ever established.
    opened: usize,
    /// Connections closed.
    closed: usize,
    /// Dials that failed.
    dial_errors: Vec<String>,
    /// Why connections closed.
    close_causes: Vec<String>,
    /// Topics the victim said it follows.
    victim_topics: BTreeSet<String>,
}

enum Command {
    Dial,
    Subscribe(Vec<String>, oneshot::Sender<usize>),
    Publish(String, Vec<Vec<u8>>, oneshot::Sender<usize>),
}

/// One adversary identity: a Swarm driven by a task on the arena's runtime.
struct Evil {
    id: PeerId,
    victim: PeerId,
    seen: Arc<Mutex<Seen>>,
    commands: mpsc::UnboundedSender<Command>,
    control: libp2p_stream::Control,
    rt: tokio::runtime::Handle,
}

impl Evil {
    fn spawn(rt: &Runtime, victim: PeerId, address: Multiaddr) -> Evil {
        let _guard = rt.enter();
        let mut swarm: Swarm<EvilBehaviour> = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    // Large enough for the oversized messages of attack 3.
                    .max_transmit_size(4 << 20)
                    // Behind a flood of subscriptions a message may wait long to be sent: the
                    // adversary must not drop it (gossipsub's default is 5 s).
                    .publish_queue_duration(Duration::from_secs(120))
                    .build()
                    .expect("gossipsub config");
                EvilBehaviour {
                    identify: identify::Behaviour::new(
                        // The victim's own protocol version: not dropped as a foreign peer.
                        identify::Config::new(format!("/hypha/{NETWORK}/id/1.0.0"), key.public())
                            .with_agent_version("hypha/0.1.0".into()),
                    ),
                    gossipsub: gossipsub::Behaviour::new(
                        MessageAuthenticity::Signed(key.clone()),
                        config,
                    )
                    .expect("gossipsub"),
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (commands, mut rx) = mpsc::unbounded_channel();
        let shared = Arc::clone(&seen);
        rt.spawn(async move {
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        None => break,
                        Some(Command::Dial) => {
                            let opts = DialOpts::peer_id(victim)
                                .addresses(vec![address.clone()])
                                .condition(PeerCondition::Always)
                                .build();
                            if let Err(e) = swarm.dial(opts) {
                                lock(&shared).dial_errors.push(e.to_string());
                            }
                        }
                        Some(Command::Subscribe(topics, reply)) => {
                            let g = &mut swarm.behaviour_mut().gossipsub;
                            let n = topics
                                .iter()
                                .filter(|t| g.subscribe(&IdentTopic::new(t.as_str())).is_ok())
                                .count();
                            let _ = reply.send(n);
                        }
                        Some(Command::Publish(topic, messages, reply)) => {
                            let g = &mut swarm.behaviour_mut().gossipsub;
                            let n = messages
                                .into_iter()
                                .filter(|m| {
                                    let topic = IdentTopic::new(topic.as_str());
                                    g.publish(topic, m.clone()).is_ok()
                                })
                                .count();
                            let _ = reply.send(n);
                        }
                    },
                    event = swarm.select_next_some() => on_event(&shared, victim, event),
                }
            }
        });
        Evil {
            id,
            victim,
            seen,
            commands,
            control,
            rt: rt.handle().clone(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    /// One more connection to the victim (even when one is open).
    fn dial(&self) {
        let _ = self.commands.send(Command::Dial);
    }

    fn await_connected(&self) {
        poll(DEADLINE, "the adversary to connect", || {
            let s = self.seen();
            if s.open > 0 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        });
    }

    /// Waits until gossipsub knows the victim follows `topic`.
    fn await_victim_topic(&self, topic: &str) {
        poll(
            DEADLINE,
            "the victim's subscription to reach the adversary",
            || {
                let s = self.seen();
                if s.victim_topics.contains(topic) {
                    Ok(())
                } else {
                    Err(format!("{} victim topics", s.victim_topics.len()))
                }
            },
        );
    }

    /// Subscribes to `topics`; how many gossipsub took.
    fn subscribe(&self, topics: Vec<String>) -> usize {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Subscribe(topics, tx));
        self.rt.block_on(rx).expect("the adversary runs")
    }

    /// Publishes `messages` on `topic`; how many gossipsub sent.
    fn publish(&self, topic: &str, messages: Vec<Vec<u8>>) -> usize {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::Publish(topic.to_owned(), messages, tx));
        self.rt.block_on(rx).expect("the adversary runs")
    }

    /// Opens a raw stream to the victim on `protocol`.
    fn open(&self, protocol: &'static str) -> libp2p::Stream {
        self.try_open(protocol)
            .unwrap_or_else(|e| panic!("opening a {protocol} stream: {e}"))
    }

    /// Opens a raw stream to the victim on `protocol`, if the victim still lets it.
    fn try_open(&self, protocol: &'static str) -> Result<libp2p::Stream, String> {
        let mut control = self.control.clone();
        let victim = self.victim;
        self.rt
            .block_on(async move {
                tokio::time::timeout(
                    DEADLINE,
                    control.open_stream(victim, StreamProtocol::new(protocol)),
                )
                .await
            })
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// Writes `bytes` on `stream` (an error is fine: the victim may have dropped it).
    fn write(&self, stream: &mut libp2p::Stream, bytes: &[u8]) -> std::io::Result<()> {
        self.rt.block_on(async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
    }

    /// Waits (bounded) until the victim closes or resets `stream`: reading ends.
    fn await_dropped(&self, stream: &mut libp2p::Stream, what: &str) {
        let mut buf = [0u8; 64];
        let read = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
        });
        assert!(read.is_ok(), "{what}: the victim kept the stream open");
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

fn on_event(seen: &Mutex<Seen>, victim: PeerId, event: SwarmEvent<EvilBehaviourEvent>) {
    let mut s = lock(seen);
    match event {
        SwarmEvent::ConnectionEstablished { .. } => {
            s.open += 1;
            s.opened += 1;
        }
        SwarmEvent::ConnectionClosed { cause, .. } => {
            s.open = s.open.saturating_sub(1);
            s.closed += 1;
            s.close_causes.push(format!("{cause:?}"));
        }
        SwarmEvent::OutgoingConnectionError { error, .. } => {
            s.dial_errors.push(error.to_string());
        }
        SwarmEvent::Behaviour(EvilBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
            peer_id,
            topic,
        })) if peer_id == victim => {
            s.victim_topics.insert(topic.into_string());
        }
        _ => {}
    }
}

// ---- 1. malformed frames and protobuf -------------------------------------------------------

/// Attack 1: malformed frames and protobuf on each of Hypha's stream protocols — a truncated
/// message, a wrong wire type, a length inside the message claiming 2⁶⁴ − 1 bytes, 10,000
/// levels of nesting — from three adversaries (one per protocol); then from 20 more, frame
/// prefixes claiming 4 GiB on 100 streams, and a frame cut off by closing its stream.
/// Defence: each malformed message is a typed violation (`Malformed`, or `BadRequest` for a
/// backfill request naming nothing), counted by protocol and reason; a prefix over the frame
/// cap drops the stream before any of the body is buffered (so 100 claims of 4 GiB cost
/// nothing) and is a violation too (`FrameTooLarge`, or `Truncated` for a cut-off frame), and
/// five violations ban the sender: its connection is closed, a new one refused, and the ban
/// counted (`hypha_peers_banned_total`).
#[test]
fn attack_01_malformed_frames_are_rejected_before_allocating() {
    let mut a = Arena::new("a1");
    let (_, head) = a.honest_head();
    let push = push_frame(1, &head, vec![head.bytes().to_vec()]);
    let garbage: Vec<Vec<u8>> = vec![
        push[..push.len() / 2].to_vec(),
        vec![0x0d, 1, 2, 3, 4],
        vec![
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 2, 3,
        ],
        nested(10_000),
    ];
    let protocols = [REPLICATOR_PROTOCOL, BACKFILL_PROTOCOL, HEAD_SYNC_PROTOCOL];
    let evils: Vec<Evil> = protocols.iter().map(|_| a.evil()).collect();
    for (evil, protocol) in evils.iter().zip(protocols) {
        let mut s = evil.open(protocol);
        for g in &garbage {
            evil.write(&mut s, &frame(g)).expect("written");
        }
    }
    a.honest_round();
    poll(DEADLINE, "every malformed frame to be counted", || {
        let n = a.victim.violations_of("");
        if n >= 12.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    let v = a.victim.violations();
    for key in v.keys() {
        assert!(
            key.ends_with("/Malformed") || key == "backfill/BadRequest",
            "only malformed frames were sent: {v:?}"
        );
    }
    for p in ["replicator/", "backfill/", "head_sync/"] {
        assert!(a.victim.violations_of(p) >= 1.0, "{p}: {v:?}");
    }

    // Prefixes claiming 4 GiB, five each from 20 identities: each stream is dropped at its
    // prefix, each claim is a violation, and each identity's fifth bans it.
    for i in 0..20 {
        let big = a.evil();
        for j in 0..5 {
            let mut s = big.open(protocols[(i + j) % 3]);
            let mut claim = u32::MAX.to_be_bytes().to_vec();
            claim.extend_from_slice(&[0xa4; 1024]);
            let _ = big.write(&mut s, &claim);
            big.await_dropped(&mut s, "a 4 GiB frame prefix");
        }
        if i % 5 == 0 {
            a.honest_round();
        }
    }
    poll(
        DEADLINE,
        "every 4 GiB claim to be counted and punished",
        || {
            let claims = a.victim.violations_of_reason("FrameTooLarge");
            let banned = a.victim.metric_or_zero("hypha_peers_banned_total");
            if claims >= 100.0 && banned >= 20.0 {
                Ok(())
            } else {
                Err(format!("banned {banned}, {:?}", a.victim.violations()))
            }
        },
    );
    // A frame cut off by closing the stream.
    let cut = a.evil();
    let mut s = cut.open(REPLICATOR_PROTOCOL);
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0x0a; 10]);
    cut.write(&mut s, &partial).expect("written");
    let _ = a.rt.block_on(s.close());
    poll(DEADLINE, "the cut-off frame to be counted", || {
        let n = a.victim.violations_of("replicator/Truncated");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    a.honest_round();

    // Two more malformed frames make the first adversary's fifth and sixth: banned.
    let mut s = evils[0].open(REPLICATOR_PROTOCOL);
    for g in &garbage[..2] {
        let _ = evils[0].write(&mut s, &frame(g));
    }
    poll(DEADLINE, "the repeat offender to be banned", || {
        let banned = a.victim.metric_or_zero("hypha_peers_banned_total");
        if banned >= 21.0 && evils[0].seen().open == 0 {
            Ok(())
        } else {
            Err(format!("banned {banned}, {:?}", evils[0].seen()))
        }
    });
    let v = a.victim.violations();
    eprintln!("attack 1 violations: {v:?}");
    for key in v.keys() {
        let reason = key.split('/').nth(1).unwrap_or_default();
        assert!(
            ["Malformed", "BadRequest", "FrameTooLarge", "Truncated"].contains(&reason),
            "only malformed frames and framing were sent: {v:?}"
        );
    }
    // A banned peer's new connection is refused.
    let opened = evils[0].seen().opened;
    evils[0].dial();
    poll(DEADLINE, "the banned peer's redial to end", || {
        let s = evils[0].seen();
        if s.open == 0 && (!s.dial_errors.is_empty() || s.closed > 1) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let peers = peer_ids(&a.victim).expect("peers");
    assert!(
        !peers.contains(&evils[0].id.to_string()),
        "the banned peer is not connected: {peers:?}"
    );
    assert!(evils[0].seen().opened - opened <= 1);
    assert!(!has_block(&a.victim, &child_of(&head, 1).cid()));
    a.finish("attack 1");
}

// ---- 2. CID mismatch ------------------------------------------------------------------------

/// Attack 2: pubsub updates whose inline block does not hash to the CID they announce — a
/// valid new block of the honest document with one byte flipped under its own CID, and the
/// intact block under four made-up CIDs. Defence: the block is decoded against the CID it
/// travels under before anything else (`CidMismatch`): the message is rejected (counted as
/// `pubsub/BadBlock`) and nothing is stored. Each rejection also costs the sender gossipsub
/// score (−10 × count²): after the third it is graylisted, so the rest are never even
/// validated.
#[test]
fn attack_02_a_block_not_hashing_to_its_cid_is_never_stored() {
    let mut a = Arena::new("a2");
    let topic = a.topic();
    let (_, head) = a.honest_head();
    let evil = a.evil();
    evil.await_victim_topic(&topic);
    let forged = child_of(&head, 4242);
    let mut flipped = forged.bytes().to_vec();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    let flipped_cid = hypha_crdt::cid::dag_cbor_cid(&flipped);
    let lies: Vec<Cid> = (0..4u64)
        .map(|i| hypha_crdt::cid::dag_cbor_cid(&i.to_be_bytes()))
        .collect();
    let mut messages = vec![update_bytes(&forged, &forged.cid(), flipped)];
    messages.extend(
        lies.iter()
            .map(|lie| update_bytes(&forged, lie, forged.bytes().to_vec())),
    );
    assert_eq!(evil.publish(&topic, messages), 5, "all published");
    a.honest_round();
    poll(DEADLINE, "the forgeries to be rejected", || {
        let n = a.victim.violations_of("pubsub/BadBlock");
        if n >= 3.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    for _ in 0..3 {
        a.honest_round();
    }
    let v = a.victim.violations();
    eprintln!("attack 2 violations: {v:?}");
    assert_eq!(
        v.keys().collect::<Vec<_>>(),
        ["pubsub/BadBlock"],
        "only the forgeries were counted"
    );
    assert!(v["pubsub/BadBlock"] <= 5.0);
    for cid in lies.iter().chain([&flipped_cid, &forged.cid()]) {
        assert!(!has_block(&a.victim, cid), "{cid} was stored");
    }
    a.finish("attack 2");
}

// ---- 3. oversized blocks and messages -------------------------------------------------------

/// Attack 3: a replicator frame of 2 MiB (a push carrying a 2 MiB block), a push of a block one
/// byte over the 1 MiB block cap inside a frame that fits, and 20 pubsub messages of 512 KiB.
/// Defence: the frame is refused at its prefix (over the 1 MiB + 64 KiB frame cap) and its
/// stream dropped (`replicator/FrameTooLarge`); the block over the cap is `BlockTooLarge` at
/// decode (`replicator/BadBlock`); gossipsub refuses messages over its 128 KiB transmit cap
/// before Hypha sees them (no violation is counted for them: they never reach validation).
#[test]
fn attack_03_oversized_blocks_and_messages_are_rejected_at_framing() {
    let mut a = Arena::new("a3");
    let topic = a.topic();
    let (_, head) = a.honest_head();
    let evil = a.evil();
    evil.await_victim_topic(&topic);

    let mut s = evil.open(REPLICATOR_PROTOCOL);
    let huge = push_frame(1, &head, vec![vec![0xa4; 2 << 20]]);
    let _ = evil.write(&mut s, &frame(&huge));
    evil.await_dropped(&mut s, "a 2 MiB frame");
    poll(DEADLINE, "the 2 MiB frame to be counted", || {
        let n = a.victim.violations_of("replicator/FrameTooLarge");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    a.honest_round();

    let over = vec![0xa4; hypha_crdt::block::MAX_BLOCK_BYTES + 1];
    let over_cid = hypha_crdt::cid::dag_cbor_cid(&over);
    let push = push_frame(2, &head, vec![over.clone()]);
    assert!(push.len() <= wire::DEFAULT_MAX_FRAME_BYTES);
    let mut s = evil.open(REPLICATOR_PROTOCOL);
    evil.write(&mut s, &frame(&push)).expect("written");
    poll(DEADLINE, "the block over the cap to be refused", || {
        let n = a.victim.violations_of("replicator/BadBlock");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    a.honest_round();

    let received = a.victim.metric("hypha_pubsub_received_bytes_total");
    let big: Vec<Vec<u8>> = (0..20u8)
        .map(|i| update_bytes(&head, &over_cid, vec![i; 512 << 10]))
        .collect();
    assert_eq!(evil.publish(&topic, big), 20, "the adversary sent them");
    for _ in 0..3 {
        a.honest_round();
    }
    let grew = a.victim.metric("hypha_pubsub_received_bytes_total") - received;
    assert!(
        grew < (512 << 10) as f64,
        "no oversized message reached validation ({grew} bytes received)"
    );
    assert_eq!(
        a.victim.violations_of("pubsub/"),
        0.0,
        "{:?}",
        a.victim.violations()
    );
    assert!(!has_block(&a.victim, &over_cid));
    a.finish("attack 3");
}

// ---- 10. topic flooding ---------------------------------------------------------------------

/// Topics each flooding identity subscribes to in the victim's namespace (past the cap).
const FLOOD_TOPICS: usize = 10_500;
/// Topics of another network each flooding identity subscribes to.
const FOREIGN_TOPICS: usize = 2_000;

/// Attack 10: topic flooding — four identities each subscribe to 10,500 topics of the
/// victim's network and 2,000 of another. Defence: gossipsub's subscription filter tracks no
/// topic of another network and at most 10,000 per peer (each request past it is refused
/// whole), the node's log does not grow with the refusals, the flood costs no violation (it is
/// not one) and honest replication goes on. The end of each flood is marked by one malformed
/// update, published after the subscriptions: once the victim counts four of those, it has
/// read every subscription before them.
#[test]
fn attack_10_topic_flooding_is_held_to_the_subscription_caps() {
    let mut a = Arena::new("a10");
    let topic = a.topic();
    let log = std::fs::metadata(a.victim.log_path()).map_or(0, |m| m.len());
    let evils: Vec<Evil> = (0..4).map(|_| a.evil()).collect();
    for (i, evil) in evils.iter().enumerate() {
        evil.await_victim_topic(&topic);
        let mut topics: Vec<String> = (0..FLOOD_TOPICS)
            .map(|k| format!("/hypha/{NETWORK}/pubsub/1/flood-{i}-{k}"))
            .collect();
        topics.extend((0..FOREIGN_TOPICS).map(|k| format!("/other/pubsub/1/{i}-{k}")));
        let n = topics.len();
        assert_eq!(evil.subscribe(topics), n);
        a.honest_round();
    }
    for (i, evil) in evils.iter().enumerate() {
        assert_eq!(evil.publish(&topic, vec![vec![0xff; 16 + i]]), 1);
    }
    poll(DEADLINE, "the end of every flood", || {
        let n = a.victim.violations_of("pubsub/Malformed");
        if n >= evils.len() as f64 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    for evil in &evils {
        assert!(evil.seen().open > 0, "a subscriber is not cut off");
    }
    // The refused subscriptions cost no disk either: the victim logs each refused request
    // nowhere (gossipsub would log every one at ERROR, a line per 60 bytes the peer sends).
    let grew = std::fs::metadata(a.victim.log_path()).map_or(0, |m| m.len()) - log;
    assert!(
        grew < 16 << 10,
        "the victim's log grew by {grew} bytes during the flood"
    );
    a.honest_round();
    a.finish("attack 10");
}

// ---- 11. pubsub spam and duplicates ---------------------------------------------------------

/// Attack 11: duplicate publishes and spam — 500 copies of an honest update (each a distinct
/// gossipsub message to the adversary, one CID to the victim), then 300 distinct invalid
/// updates. Defence: the gossipsub message id is the block's CID per topic, so the copies are
/// duplicates of what H already delivered and none reaches validation; each invalid update is
/// a violation (`pubsub/Malformed`) that costs the sender gossipsub score, so after the third
/// it is graylisted and the rest of the spam is dropped unvalidated.
#[test]
fn attack_11_pubsub_spam_and_duplicates_are_suppressed() {
    let mut a = Arena::new("a11");
    let topic = a.topic();
    let (_, head) = a.honest_head();
    let evil = a.evil();
    evil.await_victim_topic(&topic);
    let copy = update_bytes(&head, &head.cid(), head.bytes().to_vec());
    let received = a.victim.metric("hypha_pubsub_received_total");
    assert_eq!(evil.publish(&topic, vec![copy; 500]), 500);
    // A marker behind the copies: once it is counted, the copies were read.
    assert_eq!(evil.publish(&topic, vec![vec![0xff; 16]]), 1);
    poll(DEADLINE, "the marker behind the copies", || {
        let n = a.victim.violations_of("pubsub/Malformed");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    let delta = a.victim.metric("hypha_pubsub_received_total") - received;
    assert!(
        delta <= 2.0,
        "500 copies of one CID reached validation {delta} times (marker included)"
    );
    a.honest_round();

    let received = a.victim.metric("hypha_pubsub_received_total");
    let spam: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            let mut m = vec![0xff; 16];
            m.extend_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    assert_eq!(evil.publish(&topic, spam), 300);
    poll(DEADLINE, "the spam to be rejected", || {
        let n = a.victim.violations_of("pubsub/Malformed");
        if n >= 3.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    for _ in 0..5 {
        a.honest_round();
    }
    let counted = a.victim.violations_of("pubsub/Malformed");
    let validated = a.victim.metric("hypha_pubsub_received_total") - received;
    eprintln!(
        "attack 11: copies validated {delta}, spam validated {validated} of 300, violations {:?}",
        a.victim.violations()
    );
    assert!(
        counted <= 10.0,
        "the graylisted spammer's messages are not validated: {counted} counted"
    );
    a.finish("attack 11");
}

// ---- 12. slow readers and idle streams ------------------------------------------------------

/// Attack 12: many idle streams, a stalled frame, and a slow reader. One adversary opens up to
/// 20 streams on each protocol, sending nothing on them, until the victim bans it; a second
/// stalls a stream in the middle of a frame, and asks for the history of a large document 100
/// times over the backfill protocol but never reads the responses. Defence: at most 8 inbound
/// streams per protocol and connection (the rest are dropped at once, each a `TooManyStreams`
/// violation, so the idler is banned); a stream silent mid-frame is dropped after the 30 s idle
/// timeout (`Stalled`); and what is queued for a peer that does not read is bounded per
/// connection and protocol (16 MiB) — so the victim's memory stays within 2× while H keeps
/// replicating, and when the slow reader finally reads, it gets what was queued, not the
/// ~100 MiB it asked for. (Before the byte cap the victim held all of it: 48 → 149 MB.)
#[test]
fn attack_12_slow_readers_and_idle_streams_are_bounded() {
    let mut a = Arena::new("a12");
    // A large document: 10 versions of 100 KiB each, ~1 MiB of history.
    let big = create(
        &a.honest,
        "Users",
        json!({"Name": "x".repeat(100 << 10), "Age": 0}),
    );
    for age in 1..10 {
        update(
            &a.honest,
            "Users",
            &big,
            json!({"Name": format!("{age}").repeat(100 << 10)}),
        );
    }
    a.honest_round();
    let sync = a.honest.get(&format!("/documents/{big}/sync"));
    let head = sync["heads"][0].as_str().expect("a head").to_string();
    let head_cid: Cid = head.parse().expect("a CID");
    poll(DEADLINE, "the large document to reach the victim", || {
        if has_block(&a.victim, &head_cid) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    // The warm-up saw no large document: measure the baseline again with it.
    for _ in 0..3 {
        a.honest_round();
    }
    a.before = a.before.max(a.peak);
    a.peak = a.victim.rss_kib();

    let idler = a.evil();
    // Idle streams: 20 per protocol; the victim keeps 8 of each.
    let protocols = [REPLICATOR_PROTOCOL, BACKFILL_PROTOCOL, HEAD_SYNC_PROTOCOL];
    // Streams past the cap are violations: the idler is banned on the way, and cannot open
    // the rest.
    let mut idle = Vec::new();
    for p in protocols {
        for _ in 0..20 {
            if let Ok(s) = idler.try_open(p) {
                idle.push((p, s));
            }
        }
    }
    let opened: Vec<usize> = protocols
        .iter()
        .map(|p| idle.iter().filter(|(q, _)| q == p).count())
        .collect();
    // The kept streams never end, so wait only until the expected number has.
    let dropped = a.rt.block_on(async {
        let mut reads: futures::stream::FuturesUnordered<_> = idle
            .iter_mut()
            .map(|(p, s)| async move {
                let mut buf = [0u8; 16];
                let r = s.read(&mut buf).await;
                (*p, matches!(r, Ok(0) | Err(_)))
            })
            .collect();
        let mut dropped = Vec::new();
        let enough = |d: &Vec<(&str, bool)>| {
            protocols
                .iter()
                .zip(&opened)
                .all(|(p, n)| d.iter().filter(|(q, x)| q == p && *x).count() + 8 >= *n)
        };
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(r) = reads.next().await {
                dropped.push(r);
                if enough(&dropped) {
                    break;
                }
            }
        })
        .await;
        dropped
    });
    for (p, opened) in protocols.iter().zip(&opened) {
        let n = dropped.iter().filter(|(q, d)| q == p && *d).count();
        assert!(
            n + 8 >= *opened,
            "{p}: only {n} of {opened} idle streams dropped"
        );
    }
    eprintln!(
        "attack 12: idle streams opened {opened:?}, dropped {}",
        dropped.len()
    );
    // Each stream past the cap is a violation: the fifth bans the idler.
    poll(DEADLINE, "the idler to be banned", || {
        let n = a.victim.violations_of_reason("TooManyStreams");
        let banned = a.victim.metric_or_zero("hypha_peers_banned_total");
        if n >= 5.0 && banned >= 1.0 {
            Ok(())
        } else {
            Err(format!("banned {banned}, {:?}", a.victim.violations()))
        }
    });
    a.honest_round();

    // The first adversary keeps its idle streams; a second one stalls and reads slowly.
    let evil = a.evil();
    // A stream stalled mid-frame: dropped after the idle timeout.
    let mut stalled = evil.open(REPLICATOR_PROTOCOL);
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0x0a; 10]);
    evil.write(&mut stalled, &partial).expect("written");

    // The slow reader: accepts the victim's backfill streams and never reads them.
    let mut accept = evil.control.clone();
    let mut incoming = accept
        .accept(StreamProtocol::new(BACKFILL_PROTOCOL))
        .expect("accepting backfill");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    a.rt.spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            keep.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
        }
    });
    let doc: hypha_crdt::DocId = big.parse().expect("a docID");
    let mut requests = evil.open(BACKFILL_PROTOCOL);
    for id in 0..100u64 {
        let request = bpb::Frame {
            kind: bpb::mod_Frame::OneOfkind::request(bpb::Request {
                id: id + 1,
                doc_id: doc.to_bytes().to_vec(),
                wanted: vec![head_cid.to_bytes()],
                have: Vec::new(),
                max_blocks: u32::MAX,
                max_bytes: u64::MAX,
            }),
        };
        evil.write(&mut requests, &frame(&unframed(&request)))
            .unwrap_or_else(|e| panic!("request {id}: {e}; {:?}", evil.seen()));
        if id % 10 == 0 {
            a.honest_round();
        }
    }
    for _ in 0..5 {
        a.honest_round();
    }
    evil.await_dropped(&mut stalled, "a stream stalled mid-frame");
    poll(DEADLINE, "the stalled stream to be counted", || {
        let n = a.victim.violations_of("replicator/Stalled");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{:?}", a.victim.violations()))
        }
    });
    a.finish("attack 12");
    // What the victim kept for the slow reader: reading it all now (until the victim has sent
    // nothing for 2 s), it is what was queued when the reader stopped, not the 100 responses.
    let received = a.rt.block_on(async {
        let mut streams = std::mem::take(&mut *lock_streams(&held));
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        for s in &mut streams {
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                total += n;
            }
        }
        total
    });
    eprintln!("attack 12: the slow reader finally read {received} bytes of 100 responses");
    assert!(received > 0, "the victim answered the slow reader");
    assert!(
        received < 24 << 20,
        "the victim queued {received} bytes for one slow reader (cap 16 MiB + windows)"
    );
}

fn lock_streams(
    held: &Mutex<Vec<libp2p::Stream>>,
) -> std::sync::MutexGuard<'_, Vec<libp2p::Stream>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- 13. connection exhaustion --------------------------------------------------------------

/// Attack 13: connection exhaustion — 100 TCP connections that never start the handshake,
/// and one identity dialing the victim 10 times. Defence: at most 64 pending incoming
/// connections (the rest are closed at once), each pending one dropped after the 10 s
/// handshake timeout, and 4 established per peer; the honest connection is untouched and H
/// keeps replicating. (While 64 silent sockets are held, new peers cannot connect: the pending
/// cap trades their wait for the victim's memory.)
#[test]
fn attack_13_connection_exhaustion_is_held_to_the_limits() {
    let mut a = Arena::new("a13");
    let port = a.victim.p2p_port;
    let mut raw: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("TCP connect"))
        .collect();
    for s in &raw {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let mut closed = vec![false; raw.len()];
    let mut count_closed = |raw: &mut Vec<std::net::TcpStream>| {
        for (s, c) in raw.iter_mut().zip(closed.iter_mut()) {
            let mut buf = [0u8; 256];
            while !*c {
                match std::io::Read::read(s, &mut buf) {
                    Ok(0) => *c = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => *c = true,
                }
            }
        }
        closed.iter().filter(|c| **c).count()
    };
    let refused = poll(
        DEADLINE,
        "the victim to refuse pending connections past 64",
        || {
            let n = count_closed(&mut raw);
            if n >= 36 {
                Ok(n)
            } else {
                Err(format!("{n} of 100 closed"))
            }
        },
    );
    eprintln!("attack 13: {refused} of 100 half-open connections refused at once");
    a.honest_round();
    poll(
        Duration::from_secs(40),
        "the victim to drop every half-open connection",
        || {
            let n = count_closed(&mut raw);
            if n == 100 {
                Ok(())
            } else {
                Err(format!("{n} of 100 closed"))
            }
        },
    );
    a.honest_round();

    let evil = a.evil();
    for _ in 0..9 {
        evil.dial();
    }
    poll(DEADLINE, "the adversary's 10 dials to settle", || {
        let s = evil.seen();
        let settled = s.opened + s.dial_errors.len() >= 10 && s.open <= 4;
        if settled {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let peers = a.victim.get("/p2p/peers");
    let conns = peers
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == evil.id.to_string())
        .and_then(|p| p["addresses"].as_array().map(Vec::len))
        .unwrap_or(0);
    eprintln!("attack 13: the victim keeps {conns} of the adversary's 10 connections");
    assert!(
        (1..=4).contains(&conns),
        "the victim keeps 1 to 4 connections of the adversary, not {conns}: {peers}"
    );
    a.honest_round();
    a.finish("attack 13");
}

// ---- 16. bad client input -------------------------------------------------------------------

/// A request body: its content type and bytes.
type Body<'a> = Option<(&'a str, Vec<u8>)>;

/// Attack 16: bad client input on the API and the CLI — malformed JSON, wrong types, unknown
/// collections, bad docIDs and CIDs, a body over the 64 MiB limit, bad peer addresses. Defence:
/// each is a clear error (`{"error": …}` with a 4xx status, or one line on stderr from the CLI
/// and a non-zero exit), counted as a client error, and nothing is written: the documents,
/// blocks, subscriptions and replicators stay as they were.
#[test]
fn attack_16_bad_client_input_is_refused_and_writes_nothing() {
    let mut a = Arena::new("a16");
    let (doc, head) = a.honest_head();
    let v = &a.victim;
    // Documents and blocks are checked by `finish`: the victim must hold exactly the honest
    // node's, so a document or a change written by bad input would show there.
    let state = |v: &Node| {
        (
            v.metric("hypha_store_subscriptions"),
            v.metric("hypha_store_replicators"),
            v.metric("hypha_store_collections"),
        )
    };
    let before = state(v);
    let errors = a
        .victim
        .metric("hypha_api_requests_total{outcome=\"client_error\"}");
    let json = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
    let bad: Vec<(&str, String, Body)> = vec![
        ("POST", "/collections/Users".into(), json("{\"Name\": ")),
        ("POST", "/collections/Users".into(), json("[1, 2, 3]")),
        (
            "POST",
            "/collections/Users".into(),
            json("{\"Name\": 7, \"Age\": \"old\"}"),
        ),
        (
            "POST",
            "/collections/Users".into(),
            json("{\"Nope\": true}"),
        ),
        (
            "POST",
            "/collections/Nope".into(),
            json("{\"Name\": \"x\"}"),
        ),
        (
            "PATCH",
            format!("/collections/Users/documents/{doc}"),
            json("{\"Age\": \"old\"}"),
        ),
        (
            "PATCH",
            "/collections/Users/documents/not-a-docid".into(),
            json("{\"Age\": 1}"),
        ),
        (
            "DELETE",
            "/collections/Users/documents/bae-00000000-0000-0000-0000-000000000000".into(),
            None,
        ),
        ("GET", "/blocks/not-a-cid".into(), None),
        ("GET", "/documents/not-a-docid/history".into(), None),
        (
            "POST",
            "/schema".into(),
            Some(("text/plain", b"type {".to_vec())),
        ),
        ("POST", "/p2p/collections".into(), json("[\"Nope\"]")),
        ("POST", "/p2p/collections".into(), json("{\"a\": 1}")),
        ("POST", "/p2p/documents".into(), json("[\"not-a-docid\"]")),
        (
            "POST",
            "/p2p/replicators".into(),
            json("{\"address\": \"/ip4/1.2.3.4\", \"collections\": [\"Users\"]}"),
        ),
        (
            "POST",
            "/p2p/replicators".into(),
            json(&format!(
                "{{\"address\": \"{}\", \"collections\": [\"Nope\"]}}",
                a.honest.maddr()
            )),
        ),
        ("POST", "/p2p/peers".into(), json("{\"address\": 12}")),
        (
            "POST",
            "/backup/import".into(),
            Some(("application/vnd.ipld.car", vec![0xff; 4096])),
        ),
        (
            "POST",
            "/collections/Users".into(),
            Some(("application/json", vec![b' '; (64 << 20) + 1])),
        ),
    ];
    let n = bad.len();
    for (i, (method, path, body)) in bad.into_iter().enumerate() {
        let answer = a.victim.request(method, &path, body);
        assert!(
            (400..500).contains(&answer.status),
            "{method} {path}: answered {} {}",
            answer.status,
            answer.text()
        );
        if answer.status != 413 {
            let error = answer.error();
            assert!(!error.is_empty(), "{method} {path}: an empty error");
        }
        if i % 5 == 0 {
            a.honest_round();
        }
    }
    let v = &a.victim;
    let counted = v.metric("hypha_api_requests_total{outcome=\"client_error\"}") - errors;
    assert!(
        counted >= n as f64,
        "{counted} client errors counted for {n}"
    );

    let cli_bad: Vec<Vec<&str>> = vec![
        vec!["collection", "create", "--name", "Users", "{\"Name\": "],
        vec![
            "collection",
            "create",
            "--name",
            "Nope",
            "{\"Name\": \"x\"}",
        ],
        vec![
            "collection",
            "create",
            "--name",
            "Users",
            "{\"Age\": \"x\"}",
        ],
        vec![
            "collection",
            "update",
            "--name",
            "Users",
            "not-a-docid",
            "{}",
        ],
        vec!["collection", "update", "--name", "Users", &doc, "[1]"],
        vec!["collection", "delete", "--name", "Nope", &doc],
        vec!["block", "get", "not-a-cid"],
        vec!["dag", "not-a-docid"],
        vec!["p2p", "collection", "add", "Nope"],
        vec!["p2p", "document", "add", "not-a-docid"],
        vec![
            "p2p",
            "replicator",
            "set",
            "-c",
            "Users",
            "/ip4/1.2.3.4/tcp/1",
        ],
        vec!["schema", "add", "type {"],
    ];
    for args in &cli_bad {
        let out = v.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.to_lowercase().contains("error"),
            "`hypha client {}` should fail with an error; exit {}, stderr: {stderr}",
            args.join(" "),
            out.status
        );
        assert!(out.stdout.is_empty(), "{args:?}: printed {:?}", out.stdout);
    }
    assert_eq!(state(&a.victim), before, "nothing was written by bad input");
    assert!(has_block(&a.victim, &head.cid()));
    a.finish("attack 16");
}
