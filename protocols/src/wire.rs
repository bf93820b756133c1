//! Framing shared by every Hypha stream protocol, and the protobuf messages.
//!
//! # Frames
//!
//! ```text
//! ┌──────────────────────┬──────────────────────────────┐
//! │ length: u32, big-end │ `length` bytes of protobuf    │
//! └──────────────────────┴──────────────────────────────┘
//! ```
//!
//! A length above the reader's `max_frame_bytes` is refused as soon as its four bytes are
//! seen, before anything is buffered or allocated for it ([`FrameError::TooLarge`]). The
//! default, [`DEFAULT_MAX_FRAME_BYTES`], fits one block of the largest size
//! ([`MAX_BLOCK_BYTES`]) with room for its envelope; protocols that send several blocks per
//! frame pack them up to that size.
//!
//! # Messages
//!
//! The `.proto` files in `protocols/proto/` define every message; the Rust in
//! `src/generated/` is produced from them by `pb-rs` (quick-protobuf) and checked in, so
//! building needs neither `protoc` nor a build script. To regenerate after editing a
//! `.proto` file:
//!
//! ```sh
//! cargo install pb-rs --locked
//! bash protocols/proto/generate.sh
//! ```
//!
//! Stream protocols are versioned by name: [`BACKFILL_PROTOCOL`], [`REPLICATOR_PROTOCOL`],
//! [`HEAD_SYNC_PROTOCOL`].
//! A change to a message that an older peer would misread gets a new version.

use hypha_crdt::block::MAX_BLOCK_BYTES;
use hypha_crdt::{Cid, CollectionId, DocId};
use quick_protobuf::{BytesReader, MessageRead, MessageWrite, Writer};

use crate::generated::hypha::backfill::v1 as backfill;
use crate::generated::hypha::head_sync::v1 as head_sync;
use crate::generated::hypha::pubsub::v1 as pubsub;
use crate::generated::hypha::replicator::v1 as replicator;

/// The stream protocol that backfills missing DAG history.
pub const BACKFILL_PROTOCOL: &str = "/hypha/backfill/1.0.0";
/// The stream protocol of active replication (push and ack).
pub const REPLICATOR_PROTOCOL: &str = "/hypha/replicator/1.0.0";
/// The stream protocol of head exchange.
pub const HEAD_SYNC_PROTOCOL: &str = "/hypha/head-sync/1.0.0";

/// The default largest frame: one block of [`MAX_BLOCK_BYTES`] plus 64 KiB of envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = MAX_BLOCK_BYTES + 64 * 1024;

/// The length prefix of a frame.
const PREFIX: usize = 4;

/// A frame that cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame longer than the limit.
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// A frame whose bytes are not the message expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(pub String);

/// Encodes `message` as one frame: its length, then its protobuf bytes.
///
/// # Errors
/// [`FrameError::TooLarge`] when the message is longer than `max_frame_bytes`.
pub fn encode_frame<M: MessageWrite>(
    message: &M,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let len = message.get_size();
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    let mut out = Vec::with_capacity(PREFIX + len);
    // invariant: checked above against a limit that is below u32::MAX in practice; a larger
    // limit is refused here rather than truncated.
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: max_frame_bytes,
    })?;
    out.extend_from_slice(&prefix.to_be_bytes());
    let mut writer = Writer::new(&mut out);
    message
        .write_message(&mut writer)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    debug_assert_eq!(
        out.len(),
        PREFIX + len,
        "get_size agrees with write_message"
    );
    Ok(out)
}

/// Which fields of a message hold nested messages, and what those hold in turn: the shape
/// [`decode_message`] checks before quick-protobuf reads anything.
#[derive(Debug)]
pub struct Nested(pub &'static [(u32, &'static Nested)]);

/// A message with no nested messages.
pub const LEAF: Nested = Nested(&[]);

/// A protobuf message Hypha sends in a frame.
pub trait WireMessage: for<'a> MessageRead<'a> + MessageWrite {
    /// The fields that hold nested messages, recursively.
    const NESTED: Nested = LEAF;
}

impl WireMessage for backfill::Frame {
    const NESTED: Nested = Nested(&[(1, &LEAF), (2, &LEAF)]);
}
impl WireMessage for head_sync::Frame {
    const NESTED: Nested = Nested(&[
        (1, &Nested(&[(3, &LEAF)])),
        (2, &Nested(&[(2, &LEAF)])),
        (3, &LEAF),
        (4, &LEAF),
        (5, &Nested(&[(2, &LEAF)])),
        (6, &LEAF),
        (7, &LEAF),
    ]);
}
impl WireMessage for pubsub::Update {}
impl WireMessage for replicator::Frame {
    const NESTED: Nested = Nested(&[(1, &LEAF), (2, &LEAF)]);
}

/// A docID carried as its 16 bytes.
pub(crate) fn doc_id(bytes: &[u8]) -> Result<DocId, DecodeError> {
    <[u8; 16]>::try_from(bytes)
        .map(DocId::from_bytes)
        .map_err(|_| DecodeError("a docID that is not 16 bytes".to_owned()))
}

/// A collection identity carried as its binary CID.
pub(crate) fn collection_id(bytes: &[u8]) -> Result<CollectionId, DecodeError> {
    Cid::try_from(bytes)
        .map(CollectionId)
        .map_err(|_| DecodeError("a collection id that is not a CID".to_owned()))
}

/// Block CIDs carried as binary CIDs (bound their number before calling).
pub(crate) fn cids(list: &[Vec<u8>]) -> Result<Vec<Cid>, DecodeError> {
    list.iter()
        .map(|c| Cid::try_from(c.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DecodeError("a block id that is not a CID".to_owned()))
}

/// Decodes the protobuf bytes of one frame (without its length prefix).
///
/// The bytes are first checked to be well-formed protobuf — every varint complete, every
/// fixed-width and length-delimited field inside its enclosing message, no groups — because
/// quick-protobuf 0.8.1 trusts a nested message's length and underflows on one that runs past
/// its parent (found by the `decode_wire` fuzz target; the input is a regression test).
///
/// # Errors
/// [`DecodeError`] for bytes that are not a valid `M`. Never panics, whatever the bytes.
pub fn decode_message<M: WireMessage>(bytes: &[u8]) -> Result<M, DecodeError> {
    check_wire(bytes, &M::NESTED)?;
    let mut reader = BytesReader::from_bytes(bytes);
    M::from_reader(&mut reader, bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Checks that `bytes` is a well-formed protobuf message, and so are the fields `nested`
/// names, recursively (the shape is static, so the recursion is bounded by it).
fn check_wire(bytes: &[u8], nested: &Nested) -> Result<(), DecodeError> {
    let err = |what: &str| DecodeError(what.to_owned());
    let mut at = 0;
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at).ok_or_else(|| err("truncated tag"))?;
        let field = u32::try_from(tag >> 3).map_err(|_| err("field number out of range"))?;
        let end = match tag & 7 {
            0 => {
                read_varint(bytes, &mut at).ok_or_else(|| err("truncated varint"))?;
                at
            }
            1 => at.checked_add(8).ok_or_else(|| err("truncated fixed64"))?,
            2 => {
                let len = read_varint(bytes, &mut at).ok_or_else(|| err("truncated length"))?;
                let len = usize::try_from(len).map_err(|_| err("length out of range"))?;
                let end = at
                    .checked_add(len)
                    .ok_or_else(|| err("length out of range"))?;
                if end <= bytes.len()
                    && let Some((_, inner)) = nested.0.iter().find(|(f, _)| *f == field)
                {
                    check_wire(&bytes[at..end], inner)?;
                }
                end
            }
            5 => at.checked_add(4).ok_or_else(|| err("truncated fixed32"))?,
            _ => return Err(err("groups and unknown wire types are not accepted")),
        };
        if end > bytes.len() {
            return Err(err("a field runs past the end of its message"));
        }
        at = end;
    }
    Ok(())
}

/// Reads a varint of at most 10 bytes at `*at`, advancing it.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Splits a byte stream into frames, holding at most one partial frame.
///
/// Feed it whatever the stream delivers; it returns the frames those bytes complete.
#[derive(Debug, Clone)]
pub struct FrameReader {
    buf: Vec<u8>,
    max_frame_bytes: usize,
}

impl FrameReader {
    /// A reader that refuses frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            max_frame_bytes,
        }
    }

    /// Takes bytes from the stream and returns the protobuf bytes of every frame they
    /// complete, in order.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a length prefix over the limit is complete; nothing
    /// of that frame's body was buffered, and the stream is unusable (drop it).
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            // Take only what the current frame still needs: its prefix is checked before any
            // of its body is accepted.
            let need = match self.pending_len()? {
                None => PREFIX - self.buf.len(),
                Some(len) => PREFIX + len - self.buf.len(),
            };
            let take = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if let Some(len) = self.pending_len()?
                && self.buf.len() == PREFIX + len
            {
                frames.push(self.buf[PREFIX..].to_vec());
                self.buf.clear();
            }
        }
        Ok(frames)
    }

    /// How many bytes of an incomplete frame are buffered (at most one frame and its prefix).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The length of the frame being read, once its prefix is complete.
    fn pending_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buf.get(..PREFIX) else {
            return Ok(None);
        };
        let mut be = [0u8; PREFIX];
        be.copy_from_slice(prefix);
        let len = u32::from_be_bytes(be) as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn cids() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(bytes(40), 0..5)
    }

    fn push() -> impl Strategy<Value = replicator::Push> {
        (
            any::<u64>(),
            ".{0,20}",
            bytes(40),
            bytes(17),
            cids(),
            proptest::collection::vec(bytes(300), 0..4),
        )
            .prop_map(|(id, collection, collection_id, doc_id, heads, blocks)| {
                replicator::Push {
                    id,
                    collection,
                    collection_id,
                    doc_id,
                    heads,
                    blocks,
                }
            })
    }

    fn ack() -> impl Strategy<Value = replicator::Ack> {
        (any::<u64>(), 0i32..7, cids()).prop_map(|(id, status, missing)| replicator::Ack {
            id,
            status: status.into(),
            missing,
        })
    }

    fn request() -> impl Strategy<Value = backfill::Request> {
        (
            any::<u64>(),
            bytes(17),
            cids(),
            cids(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(id, doc_id, wanted, have, max_blocks, max_bytes)| {
                backfill::Request {
                    id,
                    doc_id,
                    wanted,
                    have,
                    max_blocks,
                    max_bytes,
                }
            })
    }

    fn response() -> impl Strategy<Value = backfill::Response> {
        (
            any::<u64>(),
            proptest::collection::vec(bytes(300), 0..4),
            any::<bool>(),
            0i32..5,
        )
            .prop_map(|(id, blocks, done, status)| backfill::Response {
                id,
                blocks,
                done,
                status: status.into(),
            })
    }

    fn update() -> impl Strategy<Value = pubsub::Update> {
        (bytes(17), bytes(40), bytes(40), bytes(300), cids()).prop_map(
            |(doc_id, collection_id, cid, block, heads)| pubsub::Update {
                doc_id,
                collection_id,
                cid,
                block,
                heads,
            },
        )
    }

    /// Frames `message`, feeds the stream to a reader in chunks of `chunk` bytes, and decodes
    /// the one frame that comes out.
    fn round_trip<M: WireMessage>(message: &M, chunk: usize) -> M {
        let frame = encode_frame(message, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
        let mut frames = Vec::new();
        for piece in frame.chunks(chunk.max(1)) {
            frames.extend(reader.push(piece).unwrap());
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(reader.buffered(), 0);
        decode_message(&frames[0]).unwrap()
    }

    proptest! {
        #[test]
        fn replicator_frames_round_trip(push in push(), ack in ack(), chunk in 1usize..64) {
            let frame = replicator::Frame { kind: replicator::mod_Frame::OneOfkind::push(push) };
            prop_assert_eq!(round_trip(&frame, chunk), frame);
            let frame = replicator::Frame { kind: replicator::mod_Frame::OneOfkind::ack(ack) };
            prop_assert_eq!(round_trip(&frame, chunk), frame);
        }

        #[test]
        fn backfill_messages_round_trip(request in request(), response in response(), chunk in 1usize..64) {
            let frame = backfill::Frame { kind: backfill::mod_Frame::OneOfkind::request(request) };
            prop_assert_eq!(round_trip(&frame, chunk), frame);
            let frame = backfill::Frame { kind: backfill::mod_Frame::OneOfkind::response(response) };
            prop_assert_eq!(round_trip(&frame, chunk), frame);
        }

        #[test]
        fn pubsub_updates_round_trip(update in update(), chunk in 1usize..64) {
            prop_assert_eq!(round_trip(&update, chunk), update);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in bytes(512)) {
            let _ = decode_message::<replicator::Frame>(&data);
            let _ = decode_message::<backfill::Frame>(&data);
            let _ = decode_message::<pubsub::Update>(&data);
        }

        #[test]
        fn several_frames_in_one_push_come_out_in_order(
            updates in proptest::collection::vec(update(), 1..6),
            chunk in 1usize..200,
        ) {
            let stream: Vec<u8> = updates
                .iter()
                .flat_map(|u| encode_frame(u, DEFAULT_MAX_FRAME_BYTES).unwrap())
                .collect();
            let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                for frame in reader.push(piece).unwrap() {
                    out.push(decode_message::<pubsub::Update>(&frame).unwrap());
                }
            }
            prop_assert_eq!(out, updates);
        }
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_its_body_is_buffered() {
        let mut reader = FrameReader::new(1024);
        let mut stream = 1025u32.to_be_bytes().to_vec();
        stream.extend_from_slice(&[0; 100]);
        assert_eq!(
            reader.push(&stream),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert!(reader.buffered() <= PREFIX);
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
        assert!(matches!(
            reader.push(&[0xff; 4]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_oversized_message_is_not_framed() {
        let update = pubsub::Update {
            block: vec![0; 2048],
            ..Default::default()
        };
        assert!(matches!(
            encode_frame(&update, 1024),
            Err(FrameError::TooLarge { max: 1024, .. })
        ));
    }

    #[test]
    fn a_nested_message_running_past_its_parent_is_refused() {
        // A frame whose ack claims 3 bytes but whose own fields run past them.
        let err = decode_message::<replicator::Frame>(&[0x12, 3, 0x1a, 0x7f, 0x00]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed message: a field runs past the end of its message"
        );
        assert!(
            decode_message::<pubsub::Update>(&[0x0b]).is_err(),
            "groups are refused"
        );
        assert!(
            decode_message::<pubsub::Update>(&[0x08, 0xff]).is_err(),
            "truncated varint"
        );
    }

    #[test]
    fn empty_frames_are_frames() {
        let frame = encode_frame(&pubsub::Update::default(), 16).unwrap();
        assert_eq!(frame, [0, 0, 0, 0]);
        let mut reader = FrameReader::new(16);
        assert_eq!(
            reader.push(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            vec![Vec::<u8>::new(), Vec::new()]
        );
    }

    #[test]
    fn unknown_status_values_are_never_success() {
        // An ack whose status is a value this version does not know (field 2, varint 99).
        let frame: replicator::Frame = decode_message(&[0x12, 2, 0x10, 99]).unwrap();
        let replicator::mod_Frame::OneOfkind::ack(ack) = frame.kind else {
            panic!("an ack")
        };
        assert_eq!(ack.status, replicator::AckStatus::ACK_STATUS_UNSPECIFIED);
        let frame: backfill::Frame = decode_message(&[0x12, 2, 0x20, 42]).unwrap();
        let backfill::mod_Frame::OneOfkind::response(response) = frame.kind else {
            panic!("a response")
        };
        assert_eq!(response.status, backfill::Status::STATUS_UNSPECIFIED);
    }
}
