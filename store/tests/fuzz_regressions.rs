//! Replays every input committed under `fuzz/regressions/store_io_errors/` through the fuzz
//! body, so a crasher found once stays fixed.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn store_io_errors_regressions() {
    replay::replay("store_io_errors", hypha_store::fuzzing::store_io_errors);
}
