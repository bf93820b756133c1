//! The connection handler of [`Frames`](super::Frames): it opens and accepts streams, writes
//! the frames it is given and reads frames with [`FrameReader`], and nothing else.

use std::{
    collections::VecDeque,
    convert::Infallible,
    io, mem,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, FutureExt as _, StreamExt as _,
    future::{self, BoxFuture, Either},
    stream::FuturesUnordered,
};
use futures_timer::Delay;
use libp2p_core::upgrade::{InboundUpgrade, ReadyUpgrade, UpgradeInfo};
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

use super::{Config, StreamError};
use crate::wire::{FrameError, FrameReader};

/// A frame that [`Frames`](super::Frames) hands to a connection's [`Handler`].
#[derive(Debug)]
pub struct OutboundFrame {
    pub(super) protocol: usize,
    pub(super) frame: Vec<u8>,
}

/// What a [`Handler`] reports to [`Frames`](super::Frames).
#[derive(Debug)]
pub struct FromHandler(pub(super) Report);

#[derive(Debug)]
pub(super) enum Report {
    /// Frames given to the handler that will not be written.
    Dropped {
        protocol: usize,
        frames: usize,
    },
    Failed {
        protocol: usize,
        error: StreamError,
    },
    Received {
        protocol: usize,
        frame: Vec<u8>,
    },
    /// Frames given to the handler that were written and flushed.
    Written {
        protocol: usize,
        frames: usize,
    },
}

/// Moves frames over one connection: one outbound stream per protocol, opened when its first
/// frame is queued, and a bounded number of inbound streams per protocol.
pub struct Handler {
    config: Config,
    /// Per protocol index.
    outbound: Vec<Outbound>,
    /// Per protocol index: inbound streams open.
    inbound_open: Vec<usize>,
    /// One read per open inbound stream; each returns the stream with the frames it read.
    reads: FuturesUnordered<BoxFuture<'static, (usize, Read)>>,
    /// Reported before more is read, so it holds at most one read's frames and a few failures.
    events: VecDeque<HandlerEvent>,
}

type HandlerEvent = ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, usize, FromHandler>;

impl Handler {
    pub(super) fn new(config: Config) -> Handler {
        let protocols = config.protocols().len();
        Handler {
            outbound: (0..protocols).map(|_| Outbound::default()).collect(),
            inbound_open: vec![0; protocols],
            reads: FuturesUnordered::new(),
            events: VecDeque::new(),
            config,
        }
    }

    fn report(&mut self, report: Report) {
        let event = ConnectionHandlerEvent::NotifyBehaviour(FromHandler(report));
        self.events.push_back(event);
    }

    /// Reports a failed outbound stream and drops the frames waiting for it.
    fn fail_outbound(&mut self, protocol: usize, error: StreamError, in_flight: usize) {
        let queue = &mut self.outbound[protocol].queue;
        let frames = in_flight + queue.len();
        queue.clear();
        self.outbound[protocol].stream = OutboundStream::None;
        self.report(Report::Failed { protocol, error });
        if frames > 0 {
            self.report(Report::Dropped { protocol, frames });
        }
    }

    /// Starts or finishes the write on `protocol`'s stream; says whether anything changed.
    fn poll_outbound(&mut self, protocol: usize, cx: &mut Context<'_>) -> bool {
        let outbound = &mut self.outbound[protocol];
        match mem::replace(&mut outbound.stream, OutboundStream::None) {
            OutboundStream::Idle(stream) if !outbound.queue.is_empty() => {
                let frames: Vec<Vec<u8>> = outbound.queue.drain(..).collect();
                let count = frames.len();
                let write = write_frames(stream, frames).boxed();
                outbound.stream = OutboundStream::Writing {
                    write,
                    frames: count,
                };
                true
            }
            OutboundStream::Writing { mut write, frames } => match write.poll_unpin(cx) {
                Poll::Pending => {
                    outbound.stream = OutboundStream::Writing { write, frames };
                    false
                }
                Poll::Ready(Ok(stream)) => {
                    outbound.stream = OutboundStream::Idle(stream);
                    self.report(Report::Written { protocol, frames });
                    true
                }
                Poll::Ready(Err(e)) => {
                    self.fail_outbound(protocol, StreamError::Io(e.kind()), frames);
                    true
                }
            },
            unchanged => {
                outbound.stream = unchanged;
                false
            }
        }
    }

    fn on_read(&mut self, protocol: usize, read: Read) {
        match read {
            Read::Frames(inbound, frames) => {
                for frame in frames {
                    self.report(Report::Received { protocol, frame });
                }
                let timeout = self.config.idle_timeout;
                self.reads
                    .push(read_frames(protocol, inbound, timeout).boxed());
            }
            Read::Closed => self.inbound_open[protocol] -= 1,
            Read::Failed(error) => {
                self.inbound_open[protocol] -= 1;
                self.report(Report::Failed { protocol, error });
            }
        }
    }

    fn on_inbound(&mut self, stream: Stream, name: &StreamProtocol) {
        // invariant: the stream was negotiated from `listen_protocol`, which lists exactly the
        // configured names.
        let Some(protocol) = self.config.index_of(name.as_ref()) else {
            debug_assert!(false, "negotiated {name}, which is not configured");
            return;
        };
        if self.inbound_open[protocol] >= self.config.max_inbound_streams {
            drop(stream);
            self.report(Report::Failed {
                protocol,
                error: StreamError::TooManyStreams,
            });
            return;
        }
        self.inbound_open[protocol] += 1;
        let inbound = Inbound {
            stream,
            reader: FrameReader::new(self.config.max_frame_bytes),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
        };
        let timeout = self.config.idle_timeout;
        self.reads
            .push(read_frames(protocol, inbound, timeout).boxed());
    }

    fn on_dial_upgrade_error(&mut self, protocol: usize, error: StreamUpgradeError<Infallible>) {
        let error = match error {
            StreamUpgradeError::NegotiationFailed => StreamError::Unsupported,
            StreamUpgradeError::Timeout => StreamError::NegotiationTimeout,
            StreamUpgradeError::Io(e) => StreamError::Io(e.kind()),
            StreamUpgradeError::Apply(never) => match never {},
        };
        self.fail_outbound(protocol, error, 0);
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = OutboundFrame;
    type ToBehaviour = FromHandler;
    type InboundProtocol = Protocols;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    /// The protocol index.
    type OutboundOpenInfo = usize;

    fn listen_protocol(&self) -> SubstreamProtocol<Protocols> {
        SubstreamProtocol::new(Protocols(self.config.protocols().to_vec()), ())
    }

    fn connection_keep_alive(&self) -> bool {
        !self.reads.is_empty()
            || self
                .outbound
                .iter()
                .any(|o| !o.queue.is_empty() || !matches!(o.stream, OutboundStream::None))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<HandlerEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let mut progressed = false;
            for protocol in 0..self.outbound.len() {
                progressed |= self.poll_outbound(protocol, cx);
            }
            // Reads wait until every frame already read has been reported.
            if self.events.is_empty()
                && let Poll::Ready(Some((protocol, read))) = self.reads.poll_next_unpin(cx)
            {
                self.on_read(protocol, read);
                progressed = true;
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    fn on_behaviour_event(&mut self, OutboundFrame { protocol, frame }: OutboundFrame) {
        let outbound = &mut self.outbound[protocol];
        outbound.queue.push_back(frame);
        debug_assert!(
            outbound.queue.len() <= self.config.max_queued_frames,
            "Frames::send bounds the queue"
        );
        if matches!(outbound.stream, OutboundStream::None) {
            outbound.stream = OutboundStream::Requested;
            let name = self.config.protocols()[protocol].clone();
            let request = SubstreamProtocol::new(ReadyUpgrade::new(name), protocol);
            self.events
                .push_back(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol: request });
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Protocols, Self::OutboundProtocol, (), usize>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, name),
                ..
            }) => self.on_inbound(stream, &name),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: protocol,
            }) => {
                let outbound = &mut self.outbound[protocol];
                debug_assert!(matches!(outbound.stream, OutboundStream::Requested));
                outbound.stream = OutboundStream::Idle(stream);
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                self.on_dial_upgrade_error(info, error);
            }
            ConnectionEvent::ListenUpgradeError(e) => match e.error {},
            _ => {}
        }
    }
}

/// Every configured protocol name, offered to the peer for its inbound streams; the stream
/// comes out with the name that was agreed.
#[derive(Debug, Clone)]
pub struct Protocols(Vec<StreamProtocol>);

impl UpgradeInfo for Protocols {
    type Info = StreamProtocol;
    type InfoIter = Vec<StreamProtocol>;

    fn protocol_info(&self) -> Vec<StreamProtocol> {
        self.0.clone()
    }
}

impl<C: Send + 'static> InboundUpgrade<C> for Protocols {
    type Output = (C, StreamProtocol);
    type Error = Infallible;
    type Future = future::Ready<Result<(C, StreamProtocol), Infallible>>;

    fn upgrade_inbound(self, stream: C, name: StreamProtocol) -> Self::Future {
        future::ready(Ok((stream, name)))
    }
}

/// One protocol's frames waiting to be written, and its stream.
#[derive(Default)]
struct Outbound {
    queue: VecDeque<Vec<u8>>,
    stream: OutboundStream,
}

#[derive(Default)]
enum OutboundStream {
    /// No stream: the next frame queued requests one.
    #[default]
    None,
    /// Requested; frames queue until it is negotiated.
    Requested,
    Idle(Stream),
    /// `frames` frames, taken off the queue, are being written.
    Writing {
        write: BoxFuture<'static, io::Result<Stream>>,
        frames: usize,
    },
}

/// An inbound stream (a libp2p [`Stream`] but in tests) and the partial frame read from it.
struct Inbound<S = Stream> {
    stream: S,
    reader: FrameReader,
    buf: Box<[u8]>,
}

enum Read<S = Stream> {
    /// At least one frame; the stream goes on.
    Frames(Inbound<S>, Vec<Vec<u8>>),
    /// The peer closed the stream between frames.
    Closed,
    Failed(StreamError),
}

/// Reads from `inbound` until at least one frame is complete. Silence between frames may last
/// forever; silence in the middle of one fails the stream after `idle_timeout`.
async fn read_frames<S: AsyncRead + Unpin>(
    protocol: usize,
    mut inbound: Inbound<S>,
    idle_timeout: Duration,
) -> (usize, Read<S>) {
    let read = loop {
        let Inbound {
            stream,
            reader,
            buf,
        } = &mut inbound;
        let n = if reader.buffered() == 0 {
            stream.read(buf).await
        } else {
            match future::select(stream.read(buf), Delay::new(idle_timeout)).await {
                Either::Left((n, _)) => n,
                Either::Right(((), _)) => break Read::Failed(StreamError::IdleTimeout),
            }
        };
        let n = match n {
            Ok(0) if reader.buffered() == 0 => break Read::Closed,
            Ok(0) => break Read::Failed(StreamError::Truncated),
            Ok(n) => n,
            Err(e) => break Read::Failed(StreamError::Io(e.kind())),
        };
        match reader.push(&buf[..n]) {
            Ok(frames) if frames.is_empty() => {}
            Ok(frames) => break Read::Frames(inbound, frames),
            Err(FrameError::TooLarge { len, max }) => {
                break Read::Failed(StreamError::FrameTooLarge { len, max });
            }
            // invariant: a reader refuses lengths; it encodes nothing.
            Err(FrameError::Encode(_)) => unreachable!("FrameReader::push does not encode"),
        }
    };
    (protocol, read)
}

/// Writes `frames`, each already length-prefixed, and flushes them.
async fn write_frames(mut stream: Stream, frames: Vec<Vec<u8>>) -> io::Result<Stream> {
    for frame in &frames {
        stream.write_all(frame).await?;
    }
    stream.flush().await?;
    Ok(stream)
}

/// How many bytes one read may take from an inbound stream. At most this many bytes of frames
/// are held between a read and their report, besides the partial frame.
const READ_CHUNK: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::{executor::block_on, io::Cursor};

    use super::*;

    #[test]
    fn frames_split_across_reads_come_out_whole_and_in_order() {
        let payloads: Vec<Vec<u8>> = (0..40usize).map(|i| vec![i as u8; i * 997]).collect();
        let bytes: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        let mut inbound = inbound(Cursor::new(bytes), 64 << 10);
        let mut out = Vec::new();
        loop {
            match read(inbound, Duration::from_secs(30)) {
                Read::Frames(next, frames) => {
                    out.extend(frames);
                    inbound = next;
                }
                Read::Closed => break,
                Read::Failed(error) => panic!("{error}"),
            }
        }
        assert_eq!(out, payloads);
    }

    #[test]
    fn a_length_over_the_cap_fails_before_the_body_arrives() {
        let prefix = 2000u32.to_be_bytes().to_vec();
        let read = read(inbound(Cursor::new(prefix), 1024), Duration::ZERO);
        let error = StreamError::FrameTooLarge {
            len: 2000,
            max: 1024,
        };
        assert!(matches!(read, Read::Failed(e) if e == error));
    }

    #[test]
    fn a_stream_closed_mid_frame_is_truncated() {
        let mut bytes = frame(b"0123456789");
        bytes.truncate(7);
        let read = read(inbound(Cursor::new(bytes), 1024), Duration::from_secs(30));
        assert!(matches!(read, Read::Failed(StreamError::Truncated)));
    }

    #[test]
    fn silence_mid_frame_fails_the_stream_after_the_idle_timeout() {
        let mut bytes = frame(b"0123456789");
        bytes.truncate(7);
        let stream = Cursor::new(bytes).chain(Silent);
        let read = read(inbound(stream, 1024), Duration::ZERO);
        assert!(matches!(read, Read::Failed(StreamError::IdleTimeout)));
    }

    fn read<S: AsyncRead + Unpin>(inbound: Inbound<S>, idle_timeout: Duration) -> Read<S> {
        block_on(read_frames(0, inbound, idle_timeout)).1
    }

    fn inbound<S>(stream: S, max_frame_bytes: usize) -> Inbound<S> {
        Inbound {
            stream,
            reader: FrameReader::new(max_frame_bytes),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    /// A stream whose peer never sends another byte.
    struct Silent;

    impl AsyncRead for Silent {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }
}
