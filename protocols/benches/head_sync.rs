//! Head exchange on the same sets as the `negentropy` crate (DESIGN §8, issue 4).
//!
//! Two replicas share N documents; D of them (chosen by the trial's seed) are at a newer
//! version on the responder. The initiator pulls: Hypha's head exchange (root, sketch, heads of
//! the differing documents) and negentropy over the same items (each document's sync item hash
//! as its 32-byte id). Reported per (N, D), as the median over trials: round trips on the
//! critical path, control bytes in both directions (for Hypha every head-sync frame, heads
//! included; block payloads are backfill's and not counted), and CPU time of the exchange
//! (index upkeep excluded: it is incremental). The worst trial is printed beside the median.
//!
//! `cargo bench -p hypha-protocols --features peers --bench head_sync`;
//! `HYPHA_BENCH_SCALE=0.001` keeps N ≤ 1,000 (CI's smoke run).

#![allow(clippy::disallowed_methods)] // A benchmark reads the clock.

#[path = "../../crdt/benches/report.rs"]
mod report;

use std::collections::BTreeSet;
use std::time::Instant;

use hypha_crdt::cid::dag_cbor_cid;
use hypha_crdt::sync_index::{CollectionIndex, Iblt, ItemHash, Root, RootDelta, SyncIndex};
use hypha_crdt::{Cid, CollectionId, DocId};
use hypha_protocols::head_sync::{Config, Event, HeadSync, SyncSource};
use hypha_protocols::wire::{DEFAULT_MAX_FRAME_BYTES, FrameReader};

const TRIALS: u64 = 5;

fn main() {
    let scale: f64 = std::env::var("HYPHA_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut report = report::Report::new();
    let big = ((1_000_000.0 * scale) as u64).max(1000);
    let cases: Vec<(u64, Vec<u64>)> = vec![
        (1000, vec![0, 1, 10, 100]),
        (big, vec![0, 1, 10, 1000, big / 10]),
    ];
    for (n, ds) in cases {
        let started = Instant::now();
        let a = Side::base(n);
        println!(
            "N = {n}: index built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for d in ds {
            let trials = if d >= 10_000 { 1 } else { TRIALS };
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for t in 0..trials {
                let b = a.changed(d, t);
                let m = hypha(&a, &b);
                assert_eq!(
                    m.found, d,
                    "head exchange finds exactly the D differing documents"
                );
                ours.push(m);
                theirs.push(negentropy(&a, &b));
            }
            let (o, neg) = (median(&mut ours), median(&mut theirs));
            let worst = ours
                .iter()
                .map(|m| (m.rtts, m.bytes))
                .max()
                .unwrap_or_default();
            println!(
                "N = {n:>7}, D = {d:>6}: hypha {} rtt {:>9} B {:>8.2} ms (worst {} rtt {} B) | \
                 negentropy {} rtt {:>9} B {:>8.2} ms",
                o.rtts, o.bytes, o.ms, worst.0, worst.1, neg.rtts, neg.bytes, neg.ms
            );
            let tag = if n == big {
                "1m".to_owned()
            } else {
                n.to_string()
            };
            let dtag = if n == big && d == big / 10 {
                "100k".to_owned()
            } else {
                d.to_string()
            };
            if d == 0 {
                report.add(
                    &format!("hs_{tag}_equal_bytes"),
                    o.bytes as f64 / 2.0,
                    "bytes",
                );
            }
            report.add(&format!("hs_{tag}_{dtag}_rtts"), o.rtts as f64, "rtt");
            report.add(&format!("hs_{tag}_{dtag}_bytes"), o.bytes as f64, "bytes");
            report.add(&format!("hs_{tag}_{dtag}_cpu_ms"), o.ms, "ms");
            report.add(
                &format!("hs_{tag}_{dtag}_negentropy_rtts"),
                neg.rtts as f64,
                "rtt",
            );
            report.add(
                &format!("hs_{tag}_{dtag}_negentropy_bytes"),
                neg.bytes as f64,
                "bytes",
            );
            report.add(
                &format!("hs_{tag}_{dtag}_vs_negentropy_ratio"),
                o.bytes as f64 / neg.bytes.max(1) as f64,
                "x",
            );
        }
        if n == big {
            let index = a.index.collection(&collection()).expect("index");
            let per_doc = index.memory_bytes() as f64 / n as f64;
            report.add("hs_index_bytes_per_doc", per_doc, "bytes");
        }
    }
    report.finish("head_sync");
}

fn collection() -> CollectionId {
    CollectionId::derive("hypha", "Users")
}

fn doc(i: u64) -> DocId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    b[8..].copy_from_slice(&i.to_be_bytes());
    DocId::from_bytes(b)
}

fn heads(doc: &DocId, version: u64) -> Vec<Cid> {
    vec![dag_cbor_cid(
        &[doc.to_bytes().as_slice(), &version.to_be_bytes()].concat(),
    )]
}

/// A replica: the index, and which documents it holds at version 1 (the rest at 0), so heads
/// are computed when asked instead of stored.
struct Side {
    index: SyncIndex,
    newer: BTreeSet<DocId>,
}

impl Side {
    fn base(n: u64) -> Side {
        let items = (0..n).map(|i| {
            let d = doc(i);
            (d, ItemHash::of(&d, &heads(&d, 0)))
        });
        let mut index = SyncIndex::new();
        index.insert_collection(collection(), CollectionIndex::from_items(items));
        Side {
            index,
            newer: BTreeSet::new(),
        }
    }

    /// A copy of this side with `d` documents (picked by `trial`) at version 1. The root is
    /// moved by the changes only, as the store does: no rebuild.
    fn changed(&self, d: u64, trial: u64) -> Side {
        let base = self.index.collection(&collection()).expect("index");
        let n = base.len();
        let newer: BTreeSet<DocId> = (0..d)
            .map(|k| doc((k.wrapping_mul(7919) + trial.wrapping_mul(104_729)) % n))
            .collect();
        assert_eq!(newer.len() as u64, d, "distinct documents");
        let mut delta = RootDelta::new();
        let items: Vec<(DocId, ItemHash)> = base
            .iter()
            .map(|(doc, item)| {
                if newer.contains(doc) {
                    let new = ItemHash::of(doc, &heads(doc, 1));
                    delta.change(doc, Some(item), Some(&new));
                    (*doc, new)
                } else {
                    (*doc, *item)
                }
            })
            .collect();
        let root = delta.apply(&base.root()).expect("root");
        let mut index = SyncIndex::new();
        let c = CollectionIndex::restore(items, &root).expect("restore");
        index.insert_collection(collection(), c);
        Side { index, newer }
    }
}

impl SyncSource for Side {
    fn root(&self, c: &CollectionId) -> Root {
        self.index.root(c)
    }
    fn sketch(&self, c: &CollectionId, level: usize) -> Option<Iblt> {
        self.index.collection(c)?.sketch(level).cloned()
    }
    fn items(
        &self,
        c: &CollectionId,
        after: Option<DocId>,
        limit: usize,
    ) -> Vec<(DocId, ItemHash)> {
        self.index
            .collection(c)
            .map(|i| i.range(after, limit))
            .unwrap_or_default()
    }
    fn item(&self, c: &CollectionId, doc: &DocId) -> Option<ItemHash> {
        self.index.collection(c)?.get(doc)
    }
    fn heads(&self, d: &DocId) -> Option<(CollectionId, Vec<Cid>)> {
        self.item(&collection(), d)?;
        Some((collection(), heads(d, u64::from(self.newer.contains(d)))))
    }
    fn collections(&self) -> Vec<CollectionId> {
        vec![collection()]
    }
}

#[derive(Clone, Copy, Default)]
struct Measured {
    rtts: usize,
    bytes: usize,
    ms: f64,
    found: u64,
}

fn median(v: &mut [Measured]) -> Measured {
    v.sort_by_key(|m| m.bytes);
    v[v.len() / 2]
}

/// One pull session A ← B over real frames.
fn hypha(a_src: &Side, b_src: &Side) -> Measured {
    let now = Instant::now();
    let mut a = HeadSync::<u8>::new(Config::default(), 1);
    let mut b = HeadSync::<u8>::new(Config::default(), 2);
    let started = Instant::now();
    a.pull(1, &[collection()], a_src, now).expect("session");
    let mut m = Measured::default();
    loop {
        let to_b: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
        if to_b.is_empty() {
            break;
        }
        m.rtts += 1;
        for t in to_b {
            m.bytes += t.frame.len();
            for f in FrameReader::new(DEFAULT_MAX_FRAME_BYTES)
                .push(&t.frame)
                .expect("frame")
            {
                b.handle_frame(0, &f, b_src, now);
            }
        }
        for t in std::iter::from_fn(|| b.poll_transmit()).collect::<Vec<_>>() {
            m.bytes += t.frame.len();
            for f in FrameReader::new(DEFAULT_MAX_FRAME_BYTES)
                .push(&t.frame)
                .expect("frame")
            {
                a.handle_frame(1, &f, a_src, now);
            }
        }
        while let Some(e) = a.poll_event() {
            if let Event::Differs { .. } = e {
                m.found += 1;
            }
        }
    }
    m.ms = started.elapsed().as_secs_f64() * 1e3;
    if std::env::var_os("HYPHA_BENCH_VERBOSE").is_some() {
        println!("  hypha session: {:?}", a.stats());
    }
    m
}

/// negentropy over the same items (ids = sync item hashes), frame size unlimited.
fn negentropy(a: &Side, b: &Side) -> Measured {
    use negentropy::{Id, Negentropy, NegentropyStorageVector};
    let store = |side: &Side| {
        let index = side.index.collection(&collection()).expect("index");
        let mut s = NegentropyStorageVector::with_capacity(index.len() as usize);
        for (_, item) in index.iter() {
            s.insert(0, Id::from_byte_array(item.0)).expect("insert");
        }
        s.seal().expect("seal");
        s
    };
    let (sa, sb) = (store(a), store(b));
    let started = Instant::now();
    let mut client = Negentropy::borrowed(&sa, 0).expect("client");
    let mut relay = Negentropy::borrowed(&sb, 0).expect("relay");
    let mut msg = client.initiate().expect("initiate");
    let mut m = Measured::default();
    loop {
        m.bytes += msg.len();
        m.rtts += 1;
        let reply = relay.reconcile(&msg).expect("reconcile");
        m.bytes += reply.len();
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let next = client
            .reconcile_with_ids(&reply, &mut have, &mut need)
            .expect("reconcile");
        m.found += need.len() as u64;
        match next {
            Some(next) => msg = next,
            None => break,
        }
    }
    m.ms = started.elapsed().as_secs_f64() * 1e3;
    m
}
