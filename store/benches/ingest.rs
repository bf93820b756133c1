//! Durable ingest throughput (DESIGN §8): full mutations through the group-committed store
//! against raw redb inserts of the same bytes with the same commit boundaries, and mutations
//! per second with one durable commit each.
//!
//! "The same bytes" are the records a full mutation must write: the block record, the
//! document's state, its sync item, (once per document) the outbox entry and (once per
//! batch) the collection's sync root, in the same tables under the same keys, so `ingest_vs_redb_ratio` is the store's own cost (merge reads, checks,
//! encoding) over the writes themselves. The ratio against inserting the block bytes alone
//! into one table is reported too (`ingest_vs_redb_blocks_only_ratio`).
//!
//! The store's cost of the sync index beyond those writes (hashing items, hash-to-curve for
//! the roots) is inside the ratio.
//! `hs_store_open_ms_per_1m` is the time to open the store (rebuilding the in-memory sync
//! index from the persisted items and roots) per 10⁶ documents, extrapolated.
//!
//! `cargo bench -p hypha-store --bench ingest`; `HYPHA_BENCH_MUTATIONS` (default 1,000,000)
//! and `HYPHA_BENCH_SINGLE` (default 3,000) shrink it for a smoke run.

#[path = "../../crdt/benches/report.rs"]
mod report;

use std::collections::VecDeque;
use std::time::Instant;

use hypha_crdt::{Author, Replica, VerifiedBlock, parse_sdl};
use hypha_store::{Committed, Config, Mutation, PeerKey, Replicator, Store};
use serde_json::json;

const SDL: &str = "type Books { name: String rating: Float likes: Int @crdt(type: pncounter) }";
const DOCUMENTS: usize = 10_000;

fn main() {
    let n: usize = env_or("HYPHA_BENCH_MUTATIONS", 1_000_000);
    let single: usize = env_or("HYPHA_BENCH_SINGLE", 3_000);
    let mut report = report::Report::new();
    let dir = tempfile::tempdir().expect("temp dir");

    eprintln!("generating {n} blocks over {DOCUMENTS} documents…");
    let blocks = generate(n);

    // (a) ours: every block is received and ingested as one full mutation.
    let store = open(&dir.path().join("ours.redb"));
    let mutations: Vec<Mutation> = blocks
        .iter()
        .map(|b| Mutation::Ingest { block: b.clone() })
        .collect();
    let before = store.stats().expect("stats");
    let start = Instant::now();
    let mut tickets = VecDeque::new();
    let mut batches: Vec<usize> = Vec::new();
    let mut last_commit = 0;
    let mut record = |commit: u64, batches: &mut Vec<usize>| {
        if commit != last_commit {
            batches.push(0);
            last_commit = commit;
        }
        // invariant: a batch was pushed for the first commit seen.
        *batches.last_mut().expect("a batch") += 1;
    };
    for m in mutations {
        tickets.push_back(store.submit(m));
        if tickets.len() > 16_384 {
            let r = tickets
                .pop_front()
                .expect("non-empty")
                .wait()
                .expect("durable");
            record(r.commit, &mut batches);
        }
    }
    for t in tickets {
        let r = t.wait().expect("durable");
        record(r.commit, &mut batches);
    }
    let ours = start.elapsed();
    let stats = store.stats().expect("stats");
    assert_eq!(stats.blocks as usize, n);
    assert_eq!(
        stats.outbox_entries as usize,
        DOCUMENTS.min(n),
        "one outbox entry per document"
    );
    let commits = stats.commits - before.commits;
    assert_eq!(commits as usize, batches.len());
    // The bytes each mutation wrote: its block record, its document's state (the final state
    // stands in for the intermediate ones, which are the same size or smaller) and, for a
    // document's first block, its outbox entry.
    let mut states = std::collections::BTreeMap::new();
    for block in &blocks {
        let doc = block.doc_id();
        states.entry(doc).or_insert_with(|| {
            let state = store.state(&doc).expect("read").expect("stored");
            state.to_bytes().expect("encode")
        });
    }
    let books = store
        .collection("Books")
        .expect("read")
        .expect("declared")
        .id();
    let root = store.sync_root(&books);
    assert_eq!(root.count as usize, DOCUMENTS.min(n));
    drop(store);

    // Opening the store rebuilds the in-memory sync index from `sync_items` (one scan) and
    // takes the roots from `sync_roots`: timed here per 10⁶ documents (extrapolated from
    // this store's documents).
    let open_s = (0..3)
        .map(|_| {
            let start = Instant::now();
            let store = Store::open(
                dir.path().join("ours.redb"),
                Config::new(Author::unsigned([1; 32])),
            )
            .expect("reopen");
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(store.sync_root(&books), root);
            elapsed
        })
        .fold(f64::INFINITY, f64::min);
    report.add(
        "hs_store_open_ms_per_1m",
        open_s * 1e3 * 1e6 / root.count as f64,
        "ms",
    );

    // Raw redb, same commit boundaries: (1) the same records in the same tables under the
    // same keys — what the target is about: the store's own cost over the writes it must do;
    // (2) the block bytes alone, for reference.
    let raw = raw_redb(
        &dir.path().join("raw.redb"),
        &blocks,
        &batches,
        Some(&states),
    );
    let raw_blocks = raw_redb(&dir.path().join("raw-blocks.redb"), &blocks, &batches, None);

    // (b) one durable commit per mutation.
    let store = open(&dir.path().join("single.redb"));
    let Committed::Local { block, .. } = store
        .commit(Mutation::Create {
            collection: "Books".into(),
            document: json!({"name": "x"}),
        })
        .expect("create")
        .committed
    else {
        unreachable!("a create is local")
    };
    let doc = block.doc_id();
    let start = Instant::now();
    for i in 0..single {
        store
            .commit(Mutation::Update {
                doc_id: doc,
                patch: json!({"likes": 1, "rating": i as f64}),
            })
            .expect("update");
    }
    let single_rate = single as f64 / start.elapsed().as_secs_f64();

    let ours_rate = n as f64 / ours.as_secs_f64();
    let raw_rate = n as f64 / raw.as_secs_f64();
    let raw_blocks_rate = n as f64 / raw_blocks.as_secs_f64();
    report.note(format!(
        "{n} mutations in {commits} durable commits (mean batch {:.0}); ours {:.2} s, raw redb \
         {:.2} s (same records), {:.2} s (block bytes only)",
        n as f64 / commits as f64,
        ours.as_secs_f64(),
        raw.as_secs_f64(),
        raw_blocks.as_secs_f64()
    ));
    report.add("ingest_group_commit_per_s", ours_rate, "mutations/s");
    report.add("ingest_raw_redb_per_s", raw_rate, "mutations/s");
    report.add(
        "ingest_raw_redb_blocks_only_per_s",
        raw_blocks_rate,
        "inserts/s",
    );
    report.add(
        "ingest_vs_redb_blocks_only_ratio",
        ours_rate / raw_blocks_rate,
        "x",
    );
    report.add("ingest_commits", commits as f64, "commits");
    report.add("ingest_single_commit_per_s", single_rate, "ops/s");
    report.add("ingest_vs_redb_ratio", ours_rate / raw_rate, "x");
    report.finish("ingest");
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` blocks of a remote replica: creates, then LWW updates and counter increments spread
/// round-robin over the documents, in causal order.
fn generate(n: usize) -> Vec<VerifiedBlock> {
    let schema = parse_sdl("hypha", SDL).expect("sdl");
    let mut remote = Replica::new(schema, Author::unsigned([9; 32]));
    let mut docs = Vec::with_capacity(DOCUMENTS);
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let block = if docs.len() < DOCUMENTS {
            let (doc, block) = remote
                .create(
                    "Books",
                    &json!({"name": format!("book {i}"), "rating": 1.0}),
                )
                .expect("create");
            docs.push(doc);
            block
        } else {
            let doc = docs[i % DOCUMENTS];
            let patch = if i % 2 == 0 {
                json!({"name": format!("book {i}")})
            } else {
                json!({"likes": 1})
            };
            remote.update(doc, &patch).expect("update")
        };
        blocks.push(block);
    }
    blocks
}

fn open(path: &std::path::Path) -> Store {
    let store = Store::open(path, Config::new(Author::unsigned([1; 32]))).expect("open");
    store
        .commit(Mutation::AddSchema { sdl: SDL.into() })
        .expect("schema");
    let books = store
        .collection("Books")
        .expect("read")
        .expect("declared")
        .id();
    let peer = PeerKey(b"replica".to_vec());
    let replicator = Replicator {
        collections: [books].into(),
        ..Replicator::default()
    };
    store
        .commit(Mutation::SetReplicator {
            peer: peer.clone(),
            replicator,
        })
        .expect("replicator");
    store
        .commit(Mutation::ClearCatchUp { peer })
        .expect("clear");
    store
}

fn raw_redb(
    path: &std::path::Path,
    blocks: &[VerifiedBlock],
    batches: &[usize],
    states: Option<&std::collections::BTreeMap<hypha_crdt::DocId, Vec<u8>>>,
) -> std::time::Duration {
    type Table = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;
    let (blocks_t, states_t, outbox_t): (Table, Table, Table) = (
        redb::TableDefinition::new("blocks"),
        redb::TableDefinition::new("states"),
        redb::TableDefinition::new("outbox"),
    );
    let (items_t, roots_t): (Table, Table) = (
        redb::TableDefinition::new("sync_items"),
        redb::TableDefinition::new("sync_roots"),
    );
    let db = redb::Database::create(path).expect("raw redb");
    let mut seen = std::collections::BTreeSet::new();
    let start = Instant::now();
    let mut at = 0;
    for &size in batches {
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(redb::Durability::Immediate)
            .expect("durability");
        {
            let mut blocks_table = txn.open_table(blocks_t).expect("table");
            let mut states_table = txn.open_table(states_t).expect("table");
            let mut outbox_table = txn.open_table(outbox_t).expect("table");
            let mut items_table = txn.open_table(items_t).expect("table");
            let mut roots_table = txn.open_table(roots_t).expect("table");
            if states.is_some() {
                // One root per collection per batch (its value does not matter to redb).
                let collection = blocks[at].block().delta.collection;
                roots_table
                    .insert(&collection.0.to_bytes()[..], &[0u8; 40][..])
                    .expect("insert");
            }
            for b in &blocks[at..at + size] {
                let Some(states) = states else {
                    blocks_table
                        .insert(&b.cid().to_bytes()[..], b.bytes())
                        .expect("insert");
                    continue;
                };
                // The store's block record: doc ‖ priority ‖ bytes.
                let doc = b.doc_id();
                let mut record = Vec::with_capacity(24 + b.bytes().len());
                record.extend_from_slice(&doc.to_bytes());
                record.extend_from_slice(&b.block().delta.priority.to_be_bytes());
                record.extend_from_slice(b.bytes());
                blocks_table
                    .insert(&b.cid().to_bytes()[..], &record[..])
                    .expect("insert");
                states_table
                    .insert(&doc.to_bytes()[..], &states[&doc][..])
                    .expect("insert");
                // The document's sync item: collection ‖ doc → 32 bytes.
                let mut key = b.block().delta.collection.0.to_bytes();
                key.extend_from_slice(&doc.to_bytes());
                items_table
                    .insert(&key[..], b.cid().hash().digest())
                    .expect("insert");
                if seen.insert(doc) {
                    let mut key = b"\x07replica".to_vec();
                    key.extend_from_slice(&doc.to_bytes());
                    outbox_table.insert(&key[..], &[][..]).expect("insert");
                }
            }
        }
        txn.commit().expect("commit");
        at += size;
    }
    start.elapsed()
}
