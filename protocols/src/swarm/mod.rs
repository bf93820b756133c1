//! Hypha on libp2p (feature `libp2p`): [`Hypha`], the behaviour that runs a whole node in a
//! `Swarm`, and [`Frames`], the transport of its stream protocols.
//!
//! # Hypha
//!
//! [`Hypha`] owns the coordinator ([`Node<PeerId>`](crate::node::Node)) and the store, and
//! composes two behaviours: [`Frames`] for the backfill and replicator streams, and gossipsub
//! for passive replication. It is everything a node needs to replicate; an application adds it
//! to its own `#[derive(NetworkBehaviour)]` next to whatever else it runs (identify, Kademlia,
//! relay, DCUtR) and polls the Swarm. It moves facts and commands between libp2p and the
//! coordinator, and decides nothing itself:
//!
//! ```text
//!  libp2p                                  Hypha                          Node<PeerId>
//!  first connection to a peer ─────▶ dialed address, Direct or Relayed ─▶ handle_connected
//!  last connection closed, dial failed ──────────────────────────────────▶ handle_disconnected,
//!                                                                          handle_dial_failed
//!  Frames: frame received ──────────────────────────────────────────────▶ handle_frame
//!  gossipsub: message ─────────────────────────────────────────────────▶ handle_pubsub
//!    ◀── report_message_validation_result(Accept | Ignore | Reject) ◀──── Verdict
//!  store: at the persist's stage (committer's callback) ─────────────────▶ handle_persisted
//!  timer at poll_timeout ───────────────────────────────────────────────▶ handle_timeout
//!
//!  Frames::send ◀──────────────── Transmit            Persist ──▶ store.submit, off the loop
//!  gossipsub publish, (un)subscribe ◀── Publish, Subscribe, Unsubscribe
//!  ToSwarm::Dial ◀─────────────── Connect(Dial)       Connect(other) ──▶ HyphaEvent::Connect
//!  HyphaEvent::Node ◀──────────── events
//! ```
//!
//! Only a dialed address is passed to the node (an inbound connection's remote address is an
//! ephemeral port); a connection over `/p2p-circuit` is [`Path::Relayed`](crate::connectivity::Path)
//! through the peer named before it. Provider records, lookups, relay reservations and hole
//! punches come out as [`HyphaEvent::Connect`] for the application's Kademlia, relay client and
//! DCUtR, which report back through [`Hypha::handle_connectivity`]; this crate has no
//! Kademlia.
//!
//! Writes never wait on the event loop: [`Command::Persist`](crate::node::Command::Persist)
//! goes to [`Store::submit_notify`](hypha_store::Store::submit_notify), and the store's
//! committer sends each result back to `poll` once the persist reaches its stage.
//! Acknowledgements to replicator sources therefore still go out only once the block is
//! durable.
//!
//! Gossipsub runs with signed messages and strict validation, forwards nothing before the
//! coordinator's verdict, uses the block's CID per topic as the message id
//! ([`pubsub::message_id`](crate::pubsub::message_id)), and scores peers: an invalid update
//! costs its sender −10 × count² in that topic, decaying over an hour, so a peer that sends two
//! gets no more gossip and one that sends three is graylisted (gossipsub's thresholds −10, −50,
//! −80). Mesh-delivery penalties are off: Hypha's topics carry one message per commit, and a
//! quiet topic must not count against honest mesh peers. Time in the mesh earns up to +10 in an
//! hour and first deliveries +1 each up to 50; positive topic scores are capped at 100.
//!
//! ```no_run
//! use futures::StreamExt as _;
//! use hypha_protocols::node;
//! use hypha_protocols::swarm::{Hypha, HyphaEvent};
//! use libp2p_swarm::{NetworkBehaviour, Swarm, SwarmEvent};
//! # use std::sync::Arc;
//! # use libp2p_core::{muxing::StreamMuxerBox, transport::Boxed};
//! # use libp2p_identity::{Keypair, PeerId};
//!
//! #[derive(NetworkBehaviour)]
//! #[behaviour(prelude = "libp2p_swarm::derive_prelude")] // not needed with the libp2p facade
//! struct App {
//!     hypha: Hypha,
//!     // …the application's own behaviours: identify, kademlia, relay, dcutr…
//! }
//!
//! # async fn run(
//! #     transport: Boxed<(PeerId, StreamMuxerBox)>,
//! #     key: Keypair,
//! #     store: Arc<hypha_store::Store>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let hypha = Hypha::new(node::Config::new("hypha"), store, &key, 7);
//! let config = libp2p_swarm::Config::with_tokio_executor();
//! let mut swarm = Swarm::new(transport, App { hypha }, key.public().to_peer_id(), config);
//! swarm.listen_on("/ip4/0.0.0.0/tcp/9171".parse()?)?;
//! swarm.behaviour_mut().hypha.follow_collections(&["Books"])?;
//! loop {
//!     match swarm.select_next_some().await {
//!         SwarmEvent::Behaviour(AppEvent::Hypha(HyphaEvent::Node(event))) => {
//!             let _ = event; // the change feed, persist results, replication, misbehaviour
//!         }
//!         SwarmEvent::Behaviour(AppEvent::Hypha(HyphaEvent::Connect(command))) => {
//!             let _ = command; // provide and find providers in Kademlia, reserve relays
//!         }
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! `examples/embed.rs` runs two such apps in one process.
//!
//! ## Bounds and defaults ([`HyphaConfig`])
//!
//! | bound | default | why |
//! |---|---|---|
//! | gossipsub message size (`max_transmit_bytes`) | 128 KiB | an update with a 32 KiB inline block, up to 1,024 head CIDs (~38 KiB) and the signed envelope fits |
//! | persists in flight: submitted, not yet answered (`max_queued_persists`) | 1,024 | past it, submitting blocks the event loop until the store answers one: back-pressure from a slow disk (so does a full store queue) |
//! | persist results awaiting `poll` | no bound of its own | at most the persists in flight |
//! | gossipsub heartbeat (`heartbeat_interval`) | gossipsub's 1 s, first after 6 s | tests shorten it |
//! | topics a peer may be known to follow (`max_topics_per_peer`) | [`DEFAULT_MAX_TOPICS_PER_PEER`] | a peer announcing more has its subscription request refused whole; topics of other networks are never tracked ([`NamespaceTopics`]) |
//! | peer standing (`standing`) | 1 point per violation (a stream that breaks the framing is one: a prefix over the cap, a frame cut off or stalled, too many streams), halving every 10 min; 5 points ban for 15 min | a banned peer's connections are closed and new ones refused ([`BannedPeer`]), [`HyphaEvent::Banned`] is reported; its points, negated, are its gossipsub application score (weight 10) |
//! | events queued for the Swarm | — | each poll hands one out before it takes new input |
//!
//! The coordinator's and the cores' bounds are in [`node`](crate::node); those of the streams
//! below. Gossipsub keeps its own defaults otherwise (mesh 5–12 peers, duplicate cache 1 min).
//!
//! # Frames
//!
//! The protocol cores are sans-IO: they emit `Transmit { peer, frame }` with the frame already
//! length-prefixed ([`wire`](crate::wire)), and take the payload of a received frame in
//! `handle_frame`. [`Frames`] carries those bytes and nothing else. It decodes no message,
//! retries nothing, counts nothing and runs no interval: deciding what to send, when to give
//! up and whom to blame stays in the cores and the coordinator, where the simulator tests it.
//!
//! ## Streams
//!
//! ```text
//!  A                                                           B
//!  send(B, i, frame) ─▶ queue i ─▶ outbound stream i ══════▶ inbound stream ─▶ FrameReader
//!                                  (one per protocol per      (at most max_inbound_streams
//!                                   connection, long-lived)    per protocol per connection)
//!                                                              └─▶ Event::Received { A, i, payload }
//! ```
//!
//! The protocols are the names in [`Config`], and a protocol is named by its index in that
//! list ([`Config::hypha`], [`Config::index_of`]). For each connection and protocol, the first
//! frame queued opens one outbound stream, which then stays open and carries every later frame
//! in the order [`Frames::send`] was called. A peer with several connections is sent to on the
//! first one established, so frames to one peer on one protocol stay in order until that
//! connection closes. Frames from a peer are read from any number of its inbound streams, up to
//! the bound; each stream's frames come out in order.
//!
//! A connection that has carried a frame stays open for as long as its streams do, which is
//! until one side closes the connection: the node, not this behaviour, decides when a peer is
//! dropped.
//!
//! ## Bounds and defaults ([`Config`])
//!
//! | bound | default | why | past it |
//! |---|---|---|---|
//! | frame size (`max_frame_bytes`) | [`DEFAULT_MAX_FRAME_BYTES`] | one block of the largest size fits; refused on the 4-byte prefix, before the body is buffered | [`send`](Frames::send) returns [`SendError::TooLarge`]; an inbound stream is dropped with [`StreamError::FrameTooLarge`] |
//! | frames queued per connection per protocol (`max_queued_frames`) | 1,024 | backpressure on the core instead of unbounded memory | [`send`](Frames::send) returns [`SendError::QueueFull`] and queues nothing |
//! | bytes queued per connection per protocol (`max_queued_bytes`) | [`DEFAULT_MAX_QUEUED_BYTES`] (16 MiB) | a peer that asks for much and never reads (a slow reader) makes the node hold at most this much for it, not `max_queued_frames` frames of up to `max_frame_bytes` (1 GiB); two backfill responses of the default size fit | as above; a frame is always accepted into an empty queue |
//! | inbound streams per connection per protocol (`max_inbound_streams`) | 8 | a well-behaved peer opens one per protocol; each may buffer one partial frame | the new stream is dropped with [`StreamError::TooManyStreams`] |
//! | silence in the middle of a frame (`idle_timeout`) | 30 s | frees the partial frame of a peer that stopped sending; silence between frames is fine | the stream is dropped with [`StreamError::IdleTimeout`] |
//!
//! A frame counts as queued from [`Frames::send`] until the handler has written and flushed it.
//!
//! ## Failures
//!
//! - A stream that fails ([`Event::StreamFailed`]) is dropped. An inbound failure
//!   ([`StreamError::FrameTooLarge`], [`StreamError::Truncated`], ...) means the peer broke the
//!   framing or a bound, and the driver decides what that costs the peer ([`Hypha`] makes it
//!   a [`Violation::Framing`](crate::node::Violation::Framing)). An outbound failure
//!   also drops the frames queued behind it ([`Event::Dropped`]); the next frame sent opens a
//!   new stream.
//! - Frames still queued on a connection that closes are reported by [`Event::Dropped`], so the
//!   driver can tell the cores without waiting for their timeouts.
//! - A frame that was written but never read (the peer closed the stream or the connection, or
//!   crashed) is lost without an event: the cores' own timeouts and retries cover it, as they
//!   cover every other loss.
//!
//! ## Example
//!
//! node-bin builds the transport (TCP, noise, yamux); this crate only provides the behaviour.
//!
//! ```no_run
//! use futures::StreamExt as _;
//! use hypha_protocols::{swarm, wire};
//! use libp2p_swarm::{Swarm, SwarmEvent};
//! # use libp2p_core::{muxing::StreamMuxerBox, transport::Boxed};
//! # use libp2p_identity::PeerId;
//!
//! # async fn run(transport: Boxed<(PeerId, StreamMuxerBox)>, local: PeerId, frame: Vec<u8>) {
//! let config = swarm::Config::hypha();
//! let replicator = config.index_of(wire::REPLICATOR_PROTOCOL).expect("Config::hypha lists it");
//! let mut swarm = Swarm::new(
//!     transport,
//!     swarm::Frames::new(config),
//!     local,
//!     libp2p_swarm::Config::with_tokio_executor(),
//! );
//! loop {
//!     match swarm.select_next_some().await {
//!         SwarmEvent::ConnectionEstablished { peer_id, .. } => {
//!             // A core's `Transmit { peer, frame }`, already length-prefixed.
//!             if let Err(error) = swarm.behaviour_mut().send(peer_id, replicator, frame.clone()) {
//!                 eprintln!("not sent: {error}"); // the core times out and retries
//!             }
//!         }
//!         SwarmEvent::Behaviour(swarm::Event::Received { peer, protocol, frame }) => {
//!             // `frame` is the payload, without its length: the core's `handle_frame` input.
//!             let _ = (peer, protocol, frame);
//!         }
//!         _ => {}
//!     }
//! }
//! # }
//! ```

use std::time::Duration;

use libp2p_swarm::StreamProtocol;

use crate::wire::{BACKFILL_PROTOCOL, DEFAULT_MAX_FRAME_BYTES, REPLICATOR_PROTOCOL};

/// The default of [`Config::with_max_queued_bytes`]: 16 MiB per connection and protocol.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 16 << 20;

mod frames;
mod gossip;
mod handler;
mod hypha;
mod persist;

pub use self::frames::{Event, Frames, SendError, StreamError};
pub use self::gossip::{DEFAULT_MAX_TOPICS_PER_PEER, Filter, Gossipsub, NamespaceTopics};
pub use self::hypha::{BannedPeer, Hypha, HyphaConfig, HyphaEvent};

/// What [`Frames`] speaks and the bounds it keeps; see the [module docs](self) for the table.
#[derive(Debug, Clone)]
pub struct Config {
    protocols: Vec<StreamProtocol>,
    max_frame_bytes: usize,
    max_queued_frames: usize,
    max_queued_bytes: usize,
    max_inbound_streams: usize,
    idle_timeout: Duration,
}

impl Config {
    /// A configuration for `protocols`, each then named by its index, with the default bounds.
    ///
    /// # Panics
    /// If a name is listed twice: the peer's choice of stream would not say which protocol it
    /// meant.
    pub fn new(protocols: Vec<StreamProtocol>) -> Config {
        for (i, name) in protocols.iter().enumerate() {
            assert!(
                !protocols[..i].contains(name),
                "stream protocol {name} is listed twice"
            );
        }
        Config {
            protocols,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_queued_frames: 1024,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_inbound_streams: 8,
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// Hypha's stream protocols, in this order: [`BACKFILL_PROTOCOL`] (index 0) and
    /// [`REPLICATOR_PROTOCOL`] (index 1), with the default bounds.
    pub fn hypha() -> Config {
        Config::new(vec![
            StreamProtocol::new(BACKFILL_PROTOCOL),
            StreamProtocol::new(REPLICATOR_PROTOCOL),
        ])
    }

    /// The largest frame payload sent or accepted, in bytes (the 4-byte length prefix not
    /// counted). Default [`DEFAULT_MAX_FRAME_BYTES`]; use the cores' own limit.
    pub fn with_max_frame_bytes(mut self, n: usize) -> Config {
        self.max_frame_bytes = n;
        self
    }

    /// Most frames queued per connection and protocol before [`Frames::send`] refuses more.
    /// Default 1,024; at least 1.
    pub fn with_max_queued_frames(mut self, n: usize) -> Config {
        self.max_queued_frames = n.max(1);
        self
    }

    /// Most bytes (frames with their length prefixes) queued per connection and protocol
    /// before [`Frames::send`] refuses more; a frame is always accepted into an empty queue.
    /// Default [`DEFAULT_MAX_QUEUED_BYTES`] (16 MiB).
    pub fn with_max_queued_bytes(mut self, n: usize) -> Config {
        self.max_queued_bytes = n;
        self
    }

    /// Most inbound streams a peer may keep open per connection and protocol. Default 8; at
    /// least 1.
    pub fn with_max_inbound_streams(mut self, n: usize) -> Config {
        self.max_inbound_streams = n.max(1);
        self
    }

    /// How long an inbound stream may stay silent in the middle of a frame before it is
    /// dropped. Default 30 s.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Config {
        self.idle_timeout = timeout;
        self
    }

    /// The largest frame payload sent or accepted, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Most frames queued per connection and protocol.
    pub fn max_queued_frames(&self) -> usize {
        self.max_queued_frames
    }

    /// Most bytes queued per connection and protocol.
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_bytes
    }

    /// Most inbound streams per connection and protocol.
    pub fn max_inbound_streams(&self) -> usize {
        self.max_inbound_streams
    }

    /// How long an inbound stream may stay silent in the middle of a frame.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The protocol names; a protocol's index in this list is how [`Frames`] names it.
    pub fn protocols(&self) -> &[StreamProtocol] {
        &self.protocols
    }

    /// The index of the protocol called `name`, if it is listed.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.protocols.iter().position(|p| p.as_ref() == name)
    }
}
