//! The sync-index benchmark (DESIGN.md §8, research goal G6): one collection of 10⁶ documents.
//!
//! - `hs_index_update_us`: µs per change into the full index, half inserts of new documents
//!   and half replaces of existing ones (a replace hashes two items to the curve);
//!   `hs_index_insert_us` and `hs_index_replace_us` separately, and `hs_hash_to_curve_us`,
//!   the cost of one item's ECMH point (SHA-512 + `from_uniform_bytes`), for scale;
//!   `hs_index_apply_us`, a replace applied with its root delta computed beforehand (what the
//!   store does after a durable batch): the index's own cost without hash-to-curve.
//! - `hs_index_bytes_per_doc`: `memory_bytes() / len()`, the index's own estimate, and
//!   `hs_index_rss_bytes_per_doc`, the resident memory the index took when it was built,
//!   read from `/proc/self/statm` (Linux; 0 elsewhere), as a check of the estimate;
//!   `hs_btreemap_rss_bytes_per_doc`, the same for a plain `BTreeMap<DocId, ItemHash>`.
//! - `hs_index_rebuild_ms_per_1m`: building the index from persisted items and root
//!   ([`CollectionIndex::restore`]: chunks and sketches, no hash-to-curve), what opening a
//!   store does, per 10⁶ documents; `hs_root_recompute_ms_per_1m`: recomputing the root
//!   from the items instead (one hash-to-curve each), per 10⁶ documents.
//! - `hs_root_read_us`: reading the root (one point compression); `hs_sketch_decode_us`:
//!   subtracting two 64-cell sketches 10 items apart and decoding the difference.
//!
//! `cargo bench -p hypha-crdt --bench sync_index`; `HYPHA_BENCH_SCALE=0.01` shrinks the
//! collection for a smoke run (figures per 10⁶ are then extrapolated). Every run checks its
//! results (roots against recomputations, decoded differences), so a fast but wrong run fails.

// A benchmark reads the clock; the crate's clippy.toml forbids it for the library code.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use hypha_crdt::DocId;
use hypha_crdt::sync_index::{CollectionIndex, ItemHash, Root, RootDelta, SKETCH_CELLS};

mod report;
use report::Report;

fn main() {
    let scale = std::env::var("HYPHA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    let n = ((1_000_000.0 * scale).round() as usize).max(1_000);
    let updates = ((20_000.0 * scale).round() as usize).max(200);
    let per_1m = 1_000_000.0 / n as f64;
    println!("sync_index bench: scale {scale}, {n} documents, {updates} updates");
    let mut report = Report::new();
    let mut rng = Rng(0x5eed);

    let mut items: Vec<(DocId, ItemHash)> = (0..n).map(|_| (rng.doc(), rng.item())).collect();
    items.sort_unstable_by_key(|(d, _)| *d);
    items.dedup_by_key(|(d, _)| *d);

    // The root from the items: one hash-to-curve per item.
    let started = Instant::now();
    let mut delta = RootDelta::new();
    for (doc, item) in &items {
        delta.change(doc, None, Some(item));
    }
    let root = delta
        .apply(&Root::EMPTY)
        .expect("the empty root is a point");
    let recompute = started.elapsed().as_secs_f64();
    report.add(
        "hs_root_recompute_ms_per_1m",
        recompute * 1e3 * per_1m,
        "ms",
    );
    report.add(
        "hs_hash_to_curve_us",
        recompute * 1e6 / items.len() as f64,
        "us",
    );

    // What opening a store does with the persisted items and root.
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut index = CollectionIndex::restore(items.iter().copied(), &root).expect("restores");
    let rebuild = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    report.add("hs_index_rebuild_ms_per_1m", rebuild * 1e3 * per_1m, "ms");
    assert_eq!(index.len(), items.len() as u64);
    assert_eq!(index.root(), root);
    report.add(
        "hs_index_bytes_per_doc",
        index.memory_bytes() as f64 / index.len() as f64,
        "B",
    );
    report.add(
        "hs_index_rss_bytes_per_doc",
        rss_after.saturating_sub(rss_before) as f64 / index.len() as f64,
        "B",
    );

    // Changes into the full index: new documents and replaced items, interleaved.
    let mut insert_s = 0.0;
    let mut replace_s = 0.0;
    for k in 0..updates {
        if k % 2 == 0 {
            let (doc, item) = (rng.doc(), rng.item());
            let started = Instant::now();
            black_box(index.insert(doc, item));
            insert_s += started.elapsed().as_secs_f64();
        } else {
            let doc = items[rng.below(items.len())].0;
            let item = rng.item();
            let started = Instant::now();
            black_box(index.insert(doc, item));
            replace_s += started.elapsed().as_secs_f64();
        }
    }
    let inserts = updates.div_ceil(2) as f64;
    let replaces = (updates / 2) as f64;
    report.add(
        "hs_index_update_us",
        (insert_s + replace_s) * 1e6 / updates as f64,
        "us",
    );
    report.add("hs_index_insert_us", insert_s * 1e6 / inserts, "us");
    report.add("hs_index_replace_us", replace_s * 1e6 / replaces, "us");
    // The same changes with their root deltas computed beforehand, as the store applies a
    // durable batch: the index's own cost, without hash-to-curve.
    let mut apply_s = 0.0;
    for _ in 0..updates {
        let doc = items[rng.below(items.len())].0;
        let item = rng.item();
        let mut delta = RootDelta::new();
        delta.change(&doc, index.get(&doc).as_ref(), Some(&item));
        let started = Instant::now();
        index.apply([(doc, Some(item))], &delta);
        apply_s += started.elapsed().as_secs_f64();
    }
    report.add("hs_index_apply_us", apply_s * 1e6 / updates as f64, "us");
    report.add(
        "hs_index_bytes_per_doc_after_updates",
        index.memory_bytes() as f64 / index.len() as f64,
        "B",
    );

    let reads = 1_000;
    let started = Instant::now();
    for _ in 0..reads {
        black_box(index.root());
    }
    report.add(
        "hs_root_read_us",
        started.elapsed().as_secs_f64() * 1e6 / reads as f64,
        "us",
    );

    // Two replicas 10 items apart: 5 new documents on each side.
    let mut theirs = index.clone();
    for _ in 0..5 {
        index.insert(rng.doc(), rng.item());
        theirs.insert(rng.doc(), rng.item());
    }
    let (a, b) = (index.sketch(0), theirs.sketch(0));
    let (a, b) = (a.expect("level 0 is kept"), b.expect("level 0 is kept"));
    assert_eq!(a.cells(), SKETCH_CELLS[0]);
    let decodes = 1_000;
    let started = Instant::now();
    for _ in 0..decodes {
        let diff = a.subtract(b).expect("equal sizes").decode();
        assert_eq!(
            black_box(diff).map(|d| d.ours.len() + d.theirs.len()),
            Ok(10)
        );
    }
    report.add(
        "hs_sketch_decode_us",
        started.elapsed().as_secs_f64() * 1e6 / decodes as f64,
        "us",
    );

    // For comparison: the plain `BTreeMap<DocId, ItemHash>` this index does not use, filled in
    // random order as a collection grows.
    let mut order: Vec<(DocId, ItemHash)> = index.iter().map(|(d, i)| (*d, *i)).collect();
    for k in (1..order.len()).rev() {
        order.swap(k, rng.below(k + 1));
    }
    let rss_before = rss_bytes();
    let mut plain = std::collections::BTreeMap::new();
    for (doc, item) in &order {
        plain.insert(*doc, *item);
    }
    let rss_after = rss_bytes();
    report.add(
        "hs_btreemap_rss_bytes_per_doc",
        rss_after.saturating_sub(rss_before) as f64 / plain.len() as f64,
        "B",
    );
    drop(plain);

    // The roots must be what recomputing gives (sampled at the smoke scale only: it costs
    // another full hash-to-curve pass at 10⁶).
    if index.len() <= 100_000 {
        assert_eq!(index.root(), index.recompute_root());
    }
    report.note(format!(
        "{} documents after the run; sketch levels kept: {}",
        index.len(),
        (0..SKETCH_CELLS.len())
            .filter(|l| index.sketch(*l).is_some())
            .count()
    ));
    report.finish("sync_index");
}

/// The resident set size of this process, from `/proc/self/statm` (0 where unavailable).
fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// SplitMix64: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn doc(&mut self) -> DocId {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.next().to_be_bytes());
        b[8..].copy_from_slice(&self.next().to_be_bytes());
        DocId::from_bytes(b)
    }

    fn item(&mut self) -> ItemHash {
        let mut b = [0; 32];
        for c in b.chunks_exact_mut(8) {
            c.copy_from_slice(&self.next().to_be_bytes());
        }
        ItemHash(b)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
