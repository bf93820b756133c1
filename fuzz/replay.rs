//! The committed inputs of one fuzz target, for the regression-replay tests of each crate
//! (included with `#[path]`, so the three crates share one copy).

use std::path::{Path, PathBuf};

/// The files under `fuzz/regressions/<target>/`, sorted; panics when there are none (every
/// target has seed inputs).
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "seed inputs exist in {}", dir.display());
    files
}

/// Runs `body` on every input of `target`.
pub(crate) fn replay(target: &str, body: fn(&[u8])) {
    for path in inputs(target) {
        body(&std::fs::read(path).unwrap());
    }
}
