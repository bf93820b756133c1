//! Replays every input committed under `fuzz/regressions/decode_wire/` through the fuzz body,
//! so a crasher found once stays fixed.

use std::path::Path;

#[test]
fn decode_wire_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/decode_wire");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "seed inputs exist");
    for path in files {
        hypha_protocols::fuzzing::decode_frames(&std::fs::read(path).unwrap());
    }
}
