//! The merge benchmark (DESIGN.md §8): Hypha's Merkle-CRDT against automerge and loro, side by
//! side in one process, reported as ratios.
//!
//! - W1: 100k LWW puts on one document, each a full mutation (block, encoding, CID, apply).
//! - W2: two replicas make 10k concurrent puts each from the same state, then merge both
//!   ways; only the merge is timed.
//! - W3: 100k counter increments; cost per increment early (1st window) vs late (last window).
//! - CID: encode + hash a ~256-byte block vs raw SHA-256 of the same bytes.
//! - Signed: W1 with signing vs raw Ed25519 signing; applying signed blocks on a fresh
//!   replica vs raw `verify_strict`.
//!
//! `cargo bench -p hypha-crdt --features peers --bench merge`; without `peers` only Hypha's
//! own figures are measured. `HYPHA_BENCH_SCALE=0.01` shrinks every count for a smoke run.
//! Every run checks its result (final values, convergence), so a fast but wrong run fails.

// A benchmark reads the clock; the crate's clippy.toml forbids it for the library code.
#![allow(clippy::disallowed_methods)]
#![cfg_attr(not(feature = "peers"), allow(unused_mut))]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, Verifier as _};
use hypha_crdt::{Author, Block, Collection, DocId, Replica, SigningKey, VerifiedBlock, parse_sdl};
use multihash_codetable::{Code, MultihashDigest as _};
use serde_json::json;

mod report;
use report::Report;

const SDL: &str = "type Users { name: String age: Int likes: Int @crdt(type: pncounter) }";

fn users() -> Collection {
    parse_sdl("hypha", SDL).expect("schema parses").remove(0)
}

// ---- knobs and timing helpers ----

struct Counts {
    w1: usize,
    w2: usize,
    w3: usize,
    /// W3 window: cost per increment is taken over the first and the last `window` increments.
    window: usize,
    signed: usize,
    apply: usize,
    cid: usize,
    /// Repetitions of the big runs (the median is kept).
    reps: usize,
}

impl Counts {
    fn from_env() -> (Counts, f64) {
        let scale = std::env::var("HYPHA_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0);
        let n = |base: f64, min: usize| ((base * scale).round() as usize).max(min);
        let w3 = n(100_000.0, 100);
        let counts = Counts {
            w1: n(100_000.0, 100),
            w2: n(10_000.0, 20),
            w3,
            window: (w3 / 50).max(10),
            signed: n(100_000.0, 50),
            apply: n(10_000.0, 50),
            cid: n(20_000.0, 100),
            reps: 3,
        };
        (counts, scale)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Per-operation costs (seconds) of batches of one long run, to read the cost at two points.
struct Batches {
    size: usize,
    costs: Vec<f64>,
}

impl Batches {
    /// Median cost per op over the batches that lie in ops `from..to`.
    fn cost(&self, from: usize, to: usize) -> f64 {
        let first = from / self.size;
        let last = (to / self.size).min(self.costs.len());
        median(self.costs[first..last.max(first + 1)].to_vec())
    }
}

/// Runs `op(i)` for `i` in `1..=n`, timing batches of `batch` ops; returns the total time.
fn batched(n: usize, batch: usize, mut op: impl FnMut(usize)) -> (Duration, Batches) {
    let mut costs = Vec::with_capacity(n / batch + 1);
    let mut total = Duration::ZERO;
    let mut i = 1;
    while i <= n {
        let end = (i + batch - 1).min(n);
        let start = Instant::now();
        for j in i..=end {
            op(j);
        }
        let t = start.elapsed();
        total += t;
        costs.push(secs(t) / (end + 1 - i) as f64);
        i = end + 1;
    }
    (total, Batches { size: batch, costs })
}

fn ops_per_s(n: usize, t: f64) -> f64 {
    n as f64 / t
}

// ---- Hypha ----

/// A replica holding one Users document.
fn hypha_doc(author: Author, name: &str) -> (Replica, DocId, VerifiedBlock) {
    let mut r = Replica::new([users()], author);
    let (doc, genesis) = r
        .create("Users", &json!({"name": name, "age": 0, "likes": 0}))
        .expect("create");
    (r, doc, genesis)
}

/// W1: `n` LWW puts, each a full mutation through `Replica::update`.
fn w1_hypha(n: usize, author: Author) -> f64 {
    let (mut r, doc, _) = hypha_doc(author, "w1");
    let start = Instant::now();
    for i in 1..=n {
        black_box(r.update(doc, &json!({ "age": i })).expect("update"));
    }
    let t = secs(start.elapsed());
    assert_eq!(r.read(doc).expect("doc")["age"], json!(n));
    assert_eq!(r.state(doc).expect("doc").blocks, n as u64 + 1);
    assert_eq!(r.state(doc).expect("doc").heads.len(), 1);
    t
}

struct W2Hypha {
    a: Replica,
    b: Replica,
    doc: DocId,
    from_a: Vec<Vec<u8>>,
    from_b: Vec<Vec<u8>>,
}

/// W2 setup: A and B share a genesis, then each makes `n` puts. A writes `i`, B writes `-i`:
/// the last writes tie on priority and B's negative integer has the greater CBOR bytes.
fn w2_hypha_setup(n: usize) -> W2Hypha {
    let (mut a, doc, genesis) = hypha_doc(Author::unsigned([1; 32]), "w2");
    let mut b = Replica::new([users()], Author::unsigned([2; 32]));
    b.apply(genesis.bytes()).expect("genesis");
    let mut from_a = Vec::with_capacity(n);
    let mut from_b = Vec::with_capacity(n);
    for i in 1..=n as i64 {
        from_a.push(
            a.update(doc, &json!({ "age": i }))
                .expect("a")
                .bytes()
                .to_vec(),
        );
        from_b.push(
            b.update(doc, &json!({ "age": -i }))
                .expect("b")
                .bytes()
                .to_vec(),
        );
    }
    W2Hypha {
        a,
        b,
        doc,
        from_a,
        from_b,
    }
}

/// W2: merge both ways (decode + verify + ingest each of the other's blocks, in order).
fn w2_hypha(n: usize) -> f64 {
    let W2Hypha {
        mut a,
        mut b,
        doc,
        from_a,
        from_b,
    } = w2_hypha_setup(n);
    let start = Instant::now();
    for bytes in &from_b {
        black_box(a.apply(bytes).expect("apply b on a"));
    }
    for bytes in &from_a {
        black_box(b.apply(bytes).expect("apply a on b"));
    }
    let t = secs(start.elapsed());
    let (sa, sb) = (a.state(doc).expect("doc"), b.state(doc).expect("doc"));
    assert_eq!(sa, sb, "W2: replicas did not converge");
    assert_eq!(sa.heads.len(), 2);
    assert_eq!(sa.blocks, 2 * n as u64 + 1);
    assert_eq!(a.read(doc), b.read(doc));
    assert_eq!(a.read(doc).expect("doc")["age"], json!(-(n as i64)));
    t
}

/// W3: `n` counter increments, batch-timed.
fn w3_hypha(n: usize, batch: usize) -> (Duration, Batches) {
    let (mut r, doc, _) = hypha_doc(Author::unsigned([3; 32]), "w3");
    let patch = json!({ "likes": 1 });
    let out = batched(n, batch, |_| {
        black_box(r.update(doc, &patch).expect("increment"));
    });
    assert_eq!(r.read(doc).expect("doc")["likes"], json!(n));
    out
}

/// A block of an update whose encoding is about 256 bytes.
fn block_of_about_256_bytes() -> (Block, Vec<u8>) {
    let (mut r, doc, _) = hypha_doc(Author::unsigned([4; 32]), "cid");
    r.update(doc, &json!({"age": 1})).expect("update");
    let mut pad = 0;
    loop {
        let name = "x".repeat(pad);
        let mut probe = r.clone();
        let vb = probe.update(doc, &json!({"name": name})).expect("update");
        if vb.bytes().len() >= 256 {
            return (vb.block().clone(), vb.bytes().to_vec());
        }
        pad += 1;
    }
}

/// CID: `Block::encode` (validate, DAG-CBOR, CID) over `n` copies, in chunks of 1,000 whose
/// outputs are dropped between chunks (as a node would, after storing them); the time excludes
/// cloning the inputs and dropping the outputs.
fn cid_hypha(block: &Block, bytes: &[u8], n: usize) -> f64 {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(1000);
        let inputs: Vec<Block> = (0..chunk).map(|_| block.clone()).collect();
        let mut outputs = Vec::with_capacity(chunk);
        let start = Instant::now();
        for b in inputs {
            outputs.push(black_box(b.encode().expect("encode")));
        }
        total += start.elapsed();
        assert!(outputs.iter().all(|o| o.bytes() == bytes));
        assert_eq!(
            outputs[0].cid(),
            hypha_crdt::cid::dag_cbor_cid(bytes),
            "CID is sha2-256 of the bytes"
        );
        done += chunk;
    }
    secs(total)
}

fn cid_raw(bytes: &[u8], n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        black_box(Code::Sha2_256.digest(black_box(bytes)));
    }
    secs(start.elapsed())
}

/// Raw Ed25519 signing of `n` 36-byte messages (the size of a CID).
fn sign_raw(key: &SigningKey, messages: &[[u8; 36]]) -> f64 {
    let start = Instant::now();
    for m in messages {
        black_box(key.sign(black_box(m)));
    }
    secs(start.elapsed())
}

/// Raw Ed25519 `verify_strict` of `n` signatures.
fn verify_raw(key: &SigningKey, signed: &[([u8; 36], ed25519_dalek::Signature)]) -> f64 {
    let public = key.verifying_key();
    let start = Instant::now();
    for (m, s) in signed {
        public.verify_strict(black_box(m), s).expect("verifies");
    }
    let t = secs(start.elapsed());
    // Sanity: verification is really checking.
    let (m, s) = &signed[0];
    let mut bad = *m;
    bad[0] ^= 1;
    assert!(public.verify(&bad, s).is_err());
    t
}

fn messages(n: usize) -> Vec<[u8; 36]> {
    (0..n as u64)
        .map(|i| {
            let mut m = [0u8; 36];
            m[..4].copy_from_slice(&[0x01, 0x71, 0x12, 0x20]);
            m[4..].copy_from_slice(&hypha_crdt::cid::sha256(&i.to_be_bytes()));
            m
        })
        .collect()
}

/// Apply of signed blocks: a fresh replica decodes, verifies and ingests `blocks` (after the
/// genesis, which is not timed).
fn apply_hypha(genesis: &[u8], blocks: &[Vec<u8>], doc: DocId, expect_age: i64) -> f64 {
    let mut r = Replica::new([users()], Author::unsigned([9; 32]));
    r.apply(genesis).expect("genesis");
    let start = Instant::now();
    for bytes in blocks {
        black_box(r.apply(bytes).expect("apply"));
    }
    let t = secs(start.elapsed());
    assert_eq!(r.read(doc).expect("doc")["age"], json!(expect_age));
    assert_eq!(r.state(doc).expect("doc").blocks, blocks.len() as u64 + 1);
    t
}

// ---- peers ----

#[cfg(feature = "peers")]
mod peers {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use automerge::transaction::Transactable as _;
    use automerge::{ActorId, AutoCommit, ROOT, ReadDoc as _, ScalarValue};
    use loro::{ExportMode, LoroDoc, LoroValue, ValueOrContainer};

    use super::{Batches, batched, secs};

    fn am_int(doc: &AutoCommit, key: &str) -> Option<i64> {
        doc.get(ROOT, key)
            .expect("get")
            .and_then(|(v, _)| v.as_i64())
    }

    fn loro_int(doc: &LoroDoc, key: &str) -> Option<i64> {
        match doc.get_map("users").get(key) {
            Some(ValueOrContainer::Value(LoroValue::I64(i))) => Some(i),
            _ => None,
        }
    }

    fn loro_doc(peer: u64) -> LoroDoc {
        let doc = LoroDoc::new();
        doc.set_peer_id(peer).expect("peer id");
        doc
    }

    /// W1, automerge: each put its own committed change.
    pub(super) fn w1_automerge(n: usize) -> f64 {
        let mut doc = AutoCommit::new().with_actor(ActorId::from([1u8; 16]));
        let start = Instant::now();
        for i in 1..=n {
            doc.put(ROOT, "age", i as i64).expect("put");
            black_box(doc.commit());
        }
        let t = secs(start.elapsed());
        assert_eq!(am_int(&doc, "age"), Some(n as i64));
        t
    }

    /// W1, loro: each insert followed by a commit.
    pub(super) fn w1_loro(n: usize) -> f64 {
        let doc = loro_doc(1);
        let map = doc.get_map("users");
        let start = Instant::now();
        for i in 1..=n {
            map.insert("age", i as i64).expect("insert");
            doc.commit();
        }
        let t = secs(start.elapsed());
        assert_eq!(loro_int(&doc, "age"), Some(n as i64));
        t
    }

    /// W2, loro: returns (export + import both ways, import only).
    pub(super) fn w2_loro(n: usize) -> (f64, f64) {
        let a = loro_doc(1);
        a.get_map("users").insert("age", 0i64).expect("insert");
        a.commit();
        let b = loro_doc(2);
        b.import(&a.export(ExportMode::Snapshot).expect("snapshot"))
            .expect("import");
        let common = a.oplog_vv();
        assert_eq!(common, b.oplog_vv());
        for i in 1..=n as i64 {
            a.get_map("users").insert("age", i).expect("a");
            a.commit();
            b.get_map("users").insert("age", -i).expect("b");
            b.commit();
        }
        let start = Instant::now();
        let from_a = a.export(ExportMode::updates(&common)).expect("export a");
        let from_b = b.export(ExportMode::updates(&common)).expect("export b");
        let exported = start.elapsed();
        let start_import = Instant::now();
        a.import(&from_b).expect("import b");
        b.import(&from_a).expect("import a");
        let imported = start_import.elapsed();
        assert_eq!(
            a.oplog_vv(),
            b.oplog_vv(),
            "loro W2: version vectors differ"
        );
        assert_eq!(a.get_deep_value(), b.get_deep_value(), "loro W2: diverged");
        assert!(loro_int(&a, "age").is_some());
        (secs(exported + imported), secs(imported))
    }

    /// W2, automerge: `merge` both ways.
    pub(super) fn w2_automerge(n: usize) -> f64 {
        let mut a = AutoCommit::new().with_actor(ActorId::from([1u8; 16]));
        a.put(ROOT, "age", 0i64).expect("put");
        a.commit();
        let mut b = a.fork().with_actor(ActorId::from([2u8; 16]));
        for i in 1..=n as i64 {
            a.put(ROOT, "age", i).expect("a");
            a.commit();
            b.put(ROOT, "age", -i).expect("b");
            b.commit();
        }
        let start = Instant::now();
        a.merge(&mut b).expect("merge b into a");
        b.merge(&mut a).expect("merge a into b");
        let t = secs(start.elapsed());
        assert_eq!(a.get_heads(), b.get_heads(), "automerge W2: heads differ");
        assert_eq!(
            am_int(&a, "age"),
            am_int(&b, "age"),
            "automerge W2: diverged"
        );
        t
    }

    /// W3, loro: `n` counter increments, each committed, batch-timed.
    pub(super) fn w3_loro(n: usize, batch: usize) -> (Duration, Batches) {
        let doc = loro_doc(3);
        let counter = doc.get_counter("likes");
        let out = batched(n, batch, |_| {
            counter.increment(1.0).expect("increment");
            doc.commit();
        });
        assert_eq!(counter.get_value(), n as f64);
        out
    }

    /// W3, automerge: `n` counter increments, each committed, batch-timed.
    pub(super) fn w3_automerge(n: usize, batch: usize) -> (Duration, Batches) {
        let mut doc = AutoCommit::new().with_actor(ActorId::from([3u8; 16]));
        doc.put(ROOT, "likes", ScalarValue::counter(0))
            .expect("put");
        doc.commit();
        let out = batched(n, batch, |_| {
            doc.increment(ROOT, "likes", 1).expect("increment");
            doc.commit();
        });
        assert_eq!(am_int(&doc, "likes"), Some(n as i64));
        out
    }
}

// ---- the run ----

/// Which sections run (`HYPHA_BENCH_ONLY=w1,w2,w3,cid,signed,apply`, default all) and whether
/// the peers run (`HYPHA_BENCH_PEERS=0` skips them in a `peers` build, e.g. for profiling).
struct Run {
    c: Counts,
    only: Option<Vec<String>>,
    peers: bool,
}

impl Run {
    fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == section))
    }
}

fn main() {
    let (c, scale) = Counts::from_env();
    let only = std::env::var("HYPHA_BENCH_ONLY")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|x| x.trim().to_lowercase()).collect());
    let peers_off = std::env::var("HYPHA_BENCH_PEERS").is_ok_and(|v| v == "0" || v == "off");
    let run = Run {
        c,
        only,
        peers: cfg!(feature = "peers") && !peers_off,
    };
    let c = &run.c;
    let mut report = Report::new();
    println!(
        "merge bench: scale {scale}, W1 {} puts, W2 2 x {} puts, W3 {} increments (window {}), \
         signed {} puts, apply {} blocks, {} reps, peers {}",
        c.w1,
        c.w2,
        c.w3,
        c.window,
        c.signed,
        c.apply,
        c.reps,
        if run.peers { "on" } else { "off" }
    );
    if !cfg!(feature = "peers") {
        report.note(
            "built without --features peers: peer figures and ratios against automerge and \
             loro are skipped",
        );
    } else if peers_off {
        report.note("HYPHA_BENCH_PEERS=0: peer figures and ratios are skipped");
    }
    if let Some(only) = &run.only {
        report.note(format!("HYPHA_BENCH_ONLY: only {}", only.join(",")));
    }

    if run.runs("w1") {
        w1(&run, &mut report);
    }
    if run.runs("w2") {
        w2(&run, &mut report);
    }
    if run.runs("w3") {
        w3(&run, &mut report);
    }
    if run.runs("cid") {
        cid(&run, &mut report);
    }
    if run.runs("signed") {
        signed(&run, &mut report);
    }
    if run.runs("apply") {
        apply(&run, &mut report);
    }
    report.finish("merge");
}

fn peer_summary(l: Option<&f64>, a: Option<&f64>, f: impl Fn(f64) -> String) -> String {
    match (l, a) {
        (Some(l), Some(a)) => format!(", loro {}, automerge {}", f(*l), f(*a)),
        _ => String::new(),
    }
}

fn w1(run: &Run, report: &mut Report) {
    let c = &run.c;
    let warm = (c.w1 / 20).max(50);
    w1_hypha(warm, Author::unsigned([0; 32]));
    #[cfg(feature = "peers")]
    if run.peers {
        peers::w1_loro(warm);
        peers::w1_automerge((warm / 10).max(10));
    }
    let (mut ours, mut loro, mut am) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..c.reps {
        ours.push(w1_hypha(c.w1, Author::unsigned([1; 32])));
        #[cfg(feature = "peers")]
        if run.peers {
            loro.push(peers::w1_loro(c.w1));
            am.push(peers::w1_automerge(c.w1));
        }
        let rate = |t: f64| format!("{:.0} ops/s", ops_per_s(c.w1, t));
        println!(
            "W1 rep {rep}: hypha {}{}",
            rate(*ours.last().expect("run")),
            peer_summary(loro.last(), am.last(), rate)
        );
    }
    let w1_ours = ops_per_s(c.w1, median(ours));
    report.add("w1_hypha_ops_per_s", w1_ours, "ops/s");
    if run.peers {
        let (l, a) = (ops_per_s(c.w1, median(loro)), ops_per_s(c.w1, median(am)));
        report.add("w1_loro_ops_per_s", l, "ops/s");
        report.add("w1_automerge_ops_per_s", a, "ops/s");
        report.add("w1_vs_automerge_ratio", w1_ours / a, "x");
        report.add("w1_vs_loro_ratio", w1_ours / l, "x");
    }
}

fn w2(run: &Run, report: &mut Report) {
    let c = &run.c;
    w2_hypha((c.w2 / 10).max(10));
    #[cfg(feature = "peers")]
    if run.peers {
        peers::w2_loro((c.w2 / 10).max(10));
    }
    let (mut ours, mut loro, mut loro_import, mut am) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..c.reps {
        ours.push(w2_hypha(c.w2));
        #[cfg(feature = "peers")]
        if run.peers {
            let (both, import) = peers::w2_loro(c.w2);
            loro.push(both);
            loro_import.push(import);
            am.push(peers::w2_automerge(c.w2));
        }
        let ms = |t: f64| format!("{:.2} ms", t * 1e3);
        println!(
            "W2 rep {rep}: hypha {}{}",
            ms(*ours.last().expect("run")),
            peer_summary(loro.last(), am.last(), ms)
        );
    }
    let w2_ours = median(ours);
    report.add("w2_hypha_ms", w2_ours * 1e3, "ms");
    if run.peers {
        let (l, li, a) = (median(loro), median(loro_import), median(am));
        report.add("w2_loro_ms", l * 1e3, "ms");
        report.add("w2_loro_import_only_ms", li * 1e3, "ms");
        report.add("w2_automerge_ms", a * 1e3, "ms");
        report.add("w2_vs_loro_ratio", w2_ours / l, "x");
        report.add("w2_vs_loro_import_only_ratio", w2_ours / li, "x");
        report.add("w2_vs_automerge_ratio", w2_ours / a, "x");
    }
}

fn w3(run: &Run, report: &mut Report) {
    let c = &run.c;
    let batch = (c.window / 10).max(1);
    let late_from = c.w3 - c.window;
    let (mut ours, mut early, mut late) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loro, mut l_early, mut l_late) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..c.reps {
        let (t, b) = w3_hypha(c.w3, batch);
        ours.push(secs(t));
        early.push(b.cost(0, c.window));
        late.push(b.cost(late_from, c.w3));
        #[cfg(feature = "peers")]
        if run.peers {
            let (t, b) = peers::w3_loro(c.w3, batch);
            loro.push(secs(t));
            l_early.push(b.cost(0, c.window));
            l_late.push(b.cost(late_from, c.w3));
        }
        println!(
            "W3 rep {rep}: hypha {:.0} ops/s, {:.2} us/op early, {:.2} us/op late{}",
            ops_per_s(c.w3, *ours.last().expect("run")),
            early.last().expect("run") * 1e6,
            late.last().expect("run") * 1e6,
            match loro.last() {
                Some(l) => format!(
                    ", loro {:.0} ops/s ({:.2} / {:.2} us/op)",
                    ops_per_s(c.w3, *l),
                    l_early.last().expect("run") * 1e6,
                    l_late.last().expect("run") * 1e6
                ),
                None => String::new(),
            }
        );
    }
    let w3_ours = ops_per_s(c.w3, median(ours));
    let (early, late) = (median(early), median(late));
    report.add("w3_hypha_ops_per_s", w3_ours, "ops/s");
    report.add("w3_hypha_early_us_per_op", early * 1e6, "us");
    report.add("w3_hypha_late_us_per_op", late * 1e6, "us");
    report.add("w3_flatness_ratio", late / early, "x");
    if run.peers {
        let l = ops_per_s(c.w3, median(loro));
        report.add("w3_loro_ops_per_s", l, "ops/s");
        report.add(
            "w3_loro_flatness_ratio",
            median(l_late) / median(l_early),
            "x",
        );
        report.add("w3_vs_loro_ratio", w3_ours / l, "x");
    }
    #[cfg(feature = "peers")]
    if run.peers {
        // Automerge's counter once, for the record. Its cost per increment grows with every
        // increment (100k take minutes), so it runs a fifth of the count.
        let n = (c.w3 / 5).max(50);
        let window = (n / 50).max(10);
        let (t, b) = peers::w3_automerge(n, (window / 10).max(1));
        let a = ops_per_s(n, secs(t));
        let flat = b.cost(n - window, n) / b.cost(0, window);
        println!("W3 automerge ({n} increments): {a:.0} ops/s, flatness {flat:.2}");
        report.add("w3_automerge_20pct_ops_per_s", a, "ops/s");
        report.add("w3_automerge_20pct_flatness_ratio", flat, "x");
    }
}

/// CID: what the target names, encode + hash (`Block::to_bytes` + `dag_cbor_cid`), against raw
/// SHA-256 of the same bytes; and, for reference, the whole `Block::encode` (validation, the
/// shared `VerifiedBlock` allocation, and the allocator's page faults as outputs are dropped).
fn cid(run: &Run, report: &mut Report) {
    let c = &run.c;
    let (block, bytes) = block_of_about_256_bytes();
    println!("CID: block of {} bytes", bytes.len());
    cid_encode_hash(&block, &bytes, c.cid / 10);
    cid_hypha(&block, &bytes, c.cid / 10);
    cid_raw(&bytes, c.cid / 10);
    let (mut ours, mut full, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..(2 * c.reps + 1) {
        ours.push(cid_encode_hash(&block, &bytes, c.cid));
        full.push(cid_hypha(&block, &bytes, c.cid));
        raw.push(cid_raw(&bytes, c.cid));
    }
    let (ours, full, raw) = (median(ours), median(full), median(raw));
    report.add("cid_block_bytes", bytes.len() as f64, "B");
    report.add("cid_hypha_per_s", ops_per_s(c.cid, ours), "ops/s");
    report.add("cid_block_encode_per_s", ops_per_s(c.cid, full), "ops/s");
    report.add("cid_raw_sha256_per_s", ops_per_s(c.cid, raw), "ops/s");
    report.add("cid_vs_sha256_ratio", raw / ours, "x");
    report.add("cid_block_encode_vs_sha256_ratio", raw / full, "x");
}

/// Encode + hash: the canonical bytes and their CID, `n` times.
fn cid_encode_hash(block: &Block, bytes: &[u8], n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let encoded = black_box(block).to_bytes().expect("encode");
        black_box(hypha_crdt::cid::dag_cbor_cid(&encoded));
    }
    let t = secs(start.elapsed());
    assert_eq!(
        block.to_bytes().expect("encode"),
        bytes,
        "the bytes measured are the block's"
    );
    t
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn signed(run: &Run, report: &mut Report) {
    let c = &run.c;
    let key = signing_key();
    let msgs = messages(c.signed);
    let warm = (c.signed / 20).max(50);
    w1_hypha(warm, Author::signing(key.clone()));
    sign_raw(&key, &msgs[..warm.min(msgs.len())]);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for rep in 0..c.reps {
        ours.push(w1_hypha(c.signed, Author::signing(key.clone())));
        raw.push(sign_raw(&key, &msgs));
        println!(
            "W1 signed rep {rep}: hypha {:.0} ops/s, raw ed25519 sign {:.0} /s",
            ops_per_s(c.signed, *ours.last().expect("run")),
            ops_per_s(c.signed, *raw.last().expect("run"))
        );
    }
    let (ours, raw) = (
        ops_per_s(c.signed, median(ours)),
        ops_per_s(c.signed, median(raw)),
    );
    report.add("w1_signed_hypha_ops_per_s", ours, "ops/s");
    report.add("ed25519_sign_per_s", raw, "ops/s");
    report.add("w1_signed_vs_ed25519_ratio", ours / raw, "x");
}

fn apply(run: &Run, report: &mut Report) {
    let c = &run.c;
    let key = signing_key();
    let make = |author: Author| {
        let (mut maker, doc, genesis) = hypha_doc(author, "apply");
        let blocks: Vec<Vec<u8>> = (1..=c.apply)
            .map(|i| {
                let b = maker.update(doc, &json!({ "age": i })).expect("update");
                b.bytes().to_vec()
            })
            .collect();
        (doc, genesis, blocks)
    };
    let (doc, genesis, blocks) = make(Author::signing(key.clone()));
    let (udoc, ugenesis, unsigned_blocks) = make(Author::unsigned([5; 32]));
    let signed: Vec<([u8; 36], ed25519_dalek::Signature)> = messages(c.apply)
        .into_iter()
        .map(|m| (m, key.sign(&m)))
        .collect();
    let expect_age = c.apply as i64;
    let warm = (c.apply / 10).max(1);
    apply_hypha(genesis.bytes(), &blocks[..warm], doc, warm as i64);
    verify_raw(&key, &signed[..warm]);
    let (mut ours, mut raw, mut unsigned) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..c.reps {
        ours.push(apply_hypha(genesis.bytes(), &blocks, doc, expect_age));
        raw.push(verify_raw(&key, &signed));
        unsigned.push(apply_hypha(
            ugenesis.bytes(),
            &unsigned_blocks,
            udoc,
            expect_age,
        ));
        println!(
            "apply rep {rep}: hypha signed {:.0} blocks/s, raw verify_strict {:.0} /s, \
             hypha unsigned {:.0} blocks/s",
            ops_per_s(c.apply, *ours.last().expect("run")),
            ops_per_s(c.apply, *raw.last().expect("run")),
            ops_per_s(c.apply, *unsigned.last().expect("run"))
        );
    }
    let (ours, raw, unsigned) = (
        ops_per_s(c.apply, median(ours)),
        ops_per_s(c.apply, median(raw)),
        ops_per_s(c.apply, median(unsigned)),
    );
    report.add("apply_signed_hypha_per_s", ours, "ops/s");
    report.add("ed25519_verify_strict_per_s", raw, "ops/s");
    report.add("apply_unsigned_hypha_per_s", unsigned, "ops/s");
    report.add("apply_signed_vs_verify_ratio", ours / raw, "x");
}
