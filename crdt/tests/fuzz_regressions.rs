//! Replays every input committed under `fuzz/regressions/<target>/` through the fuzz bodies,
//! so a crasher found once stays fixed.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        body(&data);
    }
    files.len()
}

#[test]
fn decode_block_regressions() {
    assert!(
        replay("decode_block", hypha_crdt::fuzzing::decode_block) > 0,
        "seed inputs exist"
    );
}

#[test]
fn crdt_merge_order_regressions() {
    assert!(
        replay("crdt_merge_order", hypha_crdt::fuzzing::merge_order) > 0,
        "seed inputs exist"
    );
}
