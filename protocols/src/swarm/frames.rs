//! [`Frames`], the behaviour: which connection a frame goes to, and what the handlers report.

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    task::{Context, Poll},
};

use libp2p_core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
    behaviour::{ConnectionClosed, ConnectionEstablished},
};

use super::Config;
use super::handler::{FromHandler, Handler, OutboundFrame};

/// Sends and receives length-prefixed frames on the stream protocols of its [`Config`].
///
/// Call [`send`](Frames::send) between polls of the `Swarm`; the swarm's next poll hands the
/// frame to the connection. See the [module docs](super) for streams, bounds and failures.
#[derive(Debug)]
pub struct Frames {
    config: Config,
    /// Each connected peer's connections, oldest first; frames go to the first.
    peers: BTreeMap<PeerId, Vec<Connection>>,
    events: VecDeque<Event>,
    commands: VecDeque<(PeerId, ConnectionId, OutboundFrame)>,
}

/// What [`Frames`] reports. The peer and the protocol index say which stream it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `frames` frames queued for `peer` on `protocol` were dropped unwritten: their connection
    /// closed, or their stream failed ([`Event::StreamFailed`] came first). No event follows
    /// for them; the cores' timeouts decide whether to send them again.
    Dropped {
        /// The peer.
        peer: PeerId,
        /// The protocol's index in the [`Config`].
        protocol: usize,
        /// How many frames.
        frames: usize,
    },
    /// A frame arrived from `peer` on `protocol`.
    Received {
        /// The peer.
        peer: PeerId,
        /// The protocol's index in the [`Config`].
        protocol: usize,
        /// The frame's payload, without its length prefix: what `handle_frame` takes.
        frame: Vec<u8>,
    },
    /// A stream with `peer` on `protocol` failed and was dropped.
    StreamFailed {
        /// The peer.
        peer: PeerId,
        /// The protocol's index in the [`Config`].
        protocol: usize,
        /// Why.
        error: StreamError,
    },
}

/// Why [`Frames::send`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer has no established connection; the frame was not queued.
    #[error("peer is not connected")]
    NotConnected,
    /// `max_queued_frames` frames, or `max_queued_bytes` bytes, already wait for this peer and
    /// protocol: the peer reads more slowly than the core sends. Send again later, or give up
    /// on the peer.
    #[error("too many frames are queued for this peer and protocol")]
    QueueFull,
    /// The frame's payload is longer than `max_frame_bytes`; the peer would refuse it.
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a stream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The peer announced a frame longer than `max_frame_bytes` (refused from its length
    /// prefix, before the body was read): it is misbehaving or configured differently.
    #[error("peer sent a frame of {len} bytes, larger than the limit of {max}")]
    FrameTooLarge {
        /// The length the peer announced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer stayed silent in the middle of a frame for longer than `idle_timeout`.
    #[error("stream stayed silent in the middle of a frame")]
    IdleTimeout,
    /// Reading or writing failed with this kind of I/O error (a reset stream, a closed
    /// connection).
    #[error("stream failed: {0}")]
    Io(io::ErrorKind),
    /// Negotiating a new outbound stream took too long.
    #[error("stream negotiation timed out")]
    NegotiationTimeout,
    /// The peer opened more than `max_inbound_streams` streams on the protocol; the new one was
    /// dropped.
    #[error("peer opened too many streams")]
    TooManyStreams,
    /// The peer closed a stream in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The peer does not speak the protocol.
    #[error("peer does not support the protocol")]
    Unsupported,
}

impl Frames {
    /// A behaviour speaking the protocols of `config`.
    pub fn new(config: Config) -> Frames {
        Frames {
            config,
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            commands: VecDeque::new(),
        }
    }

    /// Queues `frame` (length prefix included, as the cores emit it) for `peer` on the protocol
    /// at index `protocol`. Frames to one peer on one protocol are written in the order of
    /// these calls.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::QueueFull`] or [`SendError::TooLarge`]; the
    /// frame was not queued.
    ///
    /// # Panics
    /// If `protocol` is not an index of the [`Config`]'s protocols, or `frame` does not start
    /// with the big-endian `u32` length of the rest (a bug in the caller, which would corrupt
    /// the stream).
    pub fn send(&mut self, peer: PeerId, protocol: usize, frame: Vec<u8>) -> Result<(), SendError> {
        let protocols = self.config.protocols().len();
        assert!(
            protocol < protocols,
            "protocol {protocol} is not one of the {protocols} configured"
        );
        let len = frame.len().checked_sub(4).filter(|len| {
            u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize == *len
        });
        let Some(len) = len else {
            panic!(
                "a frame of {} bytes does not start with its length",
                frame.len()
            );
        };
        let max = self.config.max_frame_bytes;
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let Some(connection) = self.peers.get_mut(&peer).and_then(|c| c.first_mut()) else {
            return Err(SendError::NotConnected);
        };
        let queued = &mut connection.queued[protocol];
        let bytes = &mut connection.queued_bytes[protocol];
        let full = queued.len() >= self.config.max_queued_frames
            || (!queued.is_empty() && *bytes + frame.len() > self.config.max_queued_bytes);
        if full {
            return Err(SendError::QueueFull);
        }
        queued.push_back(frame.len());
        *bytes += frame.len();
        self.commands
            .push_back((peer, connection.id, OutboundFrame { protocol, frame }));
        Ok(())
    }

    /// Whether `peer` has an established connection, so that [`send`](Frames::send) can
    /// queue frames for it.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Takes `frames` that the handler wrote or dropped off the connection's queue count, and
    /// says whether the connection is still known.
    fn unqueue(&mut self, peer: PeerId, id: ConnectionId, protocol: usize, frames: usize) -> bool {
        // The handler reports before its connection's close, so the connection is still
        // known; had it been forgotten, its close has already counted these frames as dropped.
        let Some(connection) = self
            .peers
            .get_mut(&peer)
            .and_then(|c| c.iter_mut().find(|c| c.id == id))
        else {
            return false;
        };
        let queued = &mut connection.queued[protocol];
        debug_assert!(
            queued.len() >= frames,
            "the handler reports only frames it was given"
        );
        // The handler writes and drops frames in the order it was given them: oldest first.
        let done: usize = queued.drain(..frames.min(queued.len())).sum();
        connection.queued_bytes[protocol] -= done;
        true
    }

    fn on_connection_closed(&mut self, peer: PeerId, id: ConnectionId) {
        let Some(connections) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(at) = connections.iter().position(|c| c.id == id) else {
            return;
        };
        let closed = connections.remove(at);
        if connections.is_empty() {
            self.peers.remove(&peer);
        }
        // The swarm discards frames for a closed connection; they are counted below.
        self.commands.retain(|(_, connection, _)| *connection != id);
        for (protocol, frames) in closed.queued.iter().map(VecDeque::len).enumerate() {
            if frames > 0 {
                self.events.push_back(Event::Dropped {
                    peer,
                    protocol,
                    frames,
                });
            }
        }
    }
}

impl NetworkBehaviour for Frames {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.config.clone()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.config.clone()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                let protocols = self.config.protocols().len();
                let connection = Connection {
                    id: connection_id,
                    queued: vec![VecDeque::new(); protocols],
                    queued_bytes: vec![0; protocols],
                };
                self.peers.entry(peer_id).or_default().push(connection);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => self.on_connection_closed(peer_id, connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        FromHandler(report): THandlerOutEvent<Self>,
    ) {
        use super::handler::Report;
        match report {
            Report::Received { protocol, frame } => {
                self.events.push_back(Event::Received {
                    peer,
                    protocol,
                    frame,
                });
            }
            Report::Failed { protocol, error } => {
                self.events.push_back(Event::StreamFailed {
                    peer,
                    protocol,
                    error,
                });
            }
            Report::Written { protocol, frames } => {
                self.unqueue(peer, id, protocol, frames);
            }
            Report::Dropped { protocol, frames } => {
                if self.unqueue(peer, id, protocol, frames) {
                    self.events.push_back(Event::Dropped {
                        peer,
                        protocol,
                        frames,
                    });
                }
            }
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        // Reports first: the core's answers to them become the next frames.
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        if let Some((peer_id, connection, frame)) = self.commands.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: frame,
            });
        }
        Poll::Pending
    }
}

/// One established connection, and how many frames per protocol wait to be written on it.
#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    /// Per protocol index: the lengths of the frames given to [`Frames::send`] and not yet
    /// reported written or dropped by the handler, oldest first.
    queued: Vec<VecDeque<usize>>,
    /// Per protocol index: the sum of `queued`.
    queued_bytes: Vec<usize>,
}
