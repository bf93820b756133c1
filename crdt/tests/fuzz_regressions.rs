//! Replays every input committed under `fuzz/regressions/<target>/` through the fuzz bodies,
//! so a crasher found once stays fixed.

#[path = "../../fuzz/replay.rs"]
mod replay;

use hypha_crdt::fuzzing;
use replay::replay;

#[test]
fn decode_block_regressions() {
    replay("decode_block", fuzzing::decode_block);
}

#[test]
fn crdt_merge_order_regressions() {
    replay("crdt_merge_order", fuzzing::merge_order);
}

#[test]
fn crdt_merge_model_regressions() {
    replay("crdt_merge_model", fuzzing::merge_model);
}
