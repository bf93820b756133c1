//! Replays every input committed under `fuzz/regressions/<target>/` through the fuzz bodies
//! of the wire layer, the protocol cores and the coordinator, so a crasher found once stays
//! fixed.

#[path = "../../fuzz/replay.rs"]
mod replay;

use hypha_protocols::fuzzing;
use replay::replay;

#[test]
fn decode_wire_regressions() {
    replay("decode_wire", fuzzing::decode_frames);
}

#[test]
fn backfill_core_regressions() {
    replay("backfill_core", fuzzing::backfill_core);
}

#[test]
fn replicator_core_regressions() {
    replay("replicator_core", fuzzing::replicator_core);
}

#[test]
fn head_sync_core_regressions() {
    replay("head_sync_core", fuzzing::head_sync_core);
}

#[test]
fn connectivity_core_regressions() {
    replay("connectivity_core", fuzzing::connectivity_core);
}

#[test]
fn node_coordinator_regressions() {
    replay("node_coordinator", fuzzing::node_coordinator);
}

/// Found by fuzzing: a source reusing the id of an unanswered valid push for an invalid one
/// made the core forget the first (the REJECTED ack removed the id), so a source could hold
/// any number of unanswered pushes, past `max_inbound_per_source`. A reused id is now a
/// violation and the push is ignored.
#[test]
fn replicator_core_strict_regressions() {
    replay("replicator_core", fuzzing::replicator_core_strict);
}

/// Found by fuzzing: a head-exchange Hello whose collection count differed from the
/// responder's by more than `u64::MAX / 3` overflowed the sketch-level choice in
/// `serve_hello` (a panic with overflow checks, a wrong level in release). It saturates now.
#[test]
fn node_coordinator_strict_regressions() {
    replay("node_coordinator", fuzzing::node_coordinator_strict);
}
