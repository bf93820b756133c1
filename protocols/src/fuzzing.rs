//! Bodies of the cargo-fuzz targets over the wire layer, as plain functions so ordinary tests
//! replay committed inputs too. Enabled by the `fuzzing` feature.

use crate::generated::hypha::{
    backfill::v1 as backfill, head_sync::v1 as head_sync, pubsub::v1 as pubsub,
    replicator::v1 as replicator,
};
use crate::wire::{FrameReader, WireMessage, decode_message, encode_frame};

/// Feeds arbitrary bytes to a frame reader (with a small cap, so the cap is exercised), in
/// pieces whose sizes the input chooses, and decodes every frame as every message type.
/// Nothing may panic; a message that decodes re-encodes and decodes to itself.
pub fn decode_frames(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut reader = FrameReader::new(4096);
    for piece in stream.chunks(usize::from(split).max(1)) {
        let Ok(frames) = reader.push(piece) else {
            return;
        };
        assert!(
            reader.buffered() <= 4 + 4096,
            "the reader holds at most one frame"
        );
        for frame in frames {
            check::<replicator::Frame>(&frame);
            check::<backfill::Frame>(&frame);
            check::<pubsub::Update>(&frame);
            check::<head_sync::Frame>(&frame);
        }
    }
}

fn check<M: WireMessage + PartialEq + std::fmt::Debug>(frame: &[u8]) {
    let Ok(message) = decode_message::<M>(frame) else {
        return;
    };
    let again = encode_frame(&message, usize::MAX >> 1).expect("a decoded message encodes");
    let decoded: M = decode_message(&again[4..]).expect("an encoded message decodes");
    assert_eq!(decoded, message, "decode(encode(m)) == m");
}
