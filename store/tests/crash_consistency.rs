//! Crash consistency: a child process commits mutations and prints each one once durable; the
//! test kills it with SIGKILL at random moments, reopens the store, and checks that every
//! printed mutation is present with its block, state, heads, index entry, outbox entry and
//! sync item consistent with each other, that every stored block re-hashes to its CID, and
//! that the persisted sync roots are what the persisted sync items hash to.
//!
//! The child is this test binary re-executed with `HYPHA_CRASH_CHILD=<path>`. Rounds:
//! `HYPHA_CRASH_ROUNDS` (default 50); seed: `HYPHA_CRASH_SEED` (printed first).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr as _;
use std::sync::Arc;

use hypha_crdt::sync_index::ItemHash;
use hypha_crdt::{Author, Cid, DocId, Limits, MemoryDag, ingest};
use hypha_store::{Committed, Config, Mutation, PeerKey, Replicator, Store};
use serde_json::json;

const SDL: &str = "type Books { name: String likes: Int @crdt(type: pncounter) }";
const CHILD_THREADS: usize = 4;

fn peer() -> PeerKey {
    PeerKey(b"replica-peer".to_vec())
}

fn config() -> Config {
    Config::new(Author::unsigned([5; 32]))
}

fn main() {
    if let Ok(path) = std::env::var("HYPHA_CRASH_CHILD") {
        child(Path::new(&path));
        return;
    }
    let rounds: u64 = env_or("HYPHA_CRASH_ROUNDS", 50);
    let seed: u64 = env_or("HYPHA_CRASH_SEED", 0x5eed);
    println!(
        "crash_consistency: seed {seed}, {rounds} rounds (HYPHA_CRASH_SEED, HYPHA_CRASH_ROUNDS)"
    );
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.redb");
    let mut acked = 0usize;
    for round in 0..rounds {
        let kill_after = 1 + (next(&mut rng) % 120) as usize;
        let lines = run_child(&path, round, kill_after);
        acked += lines.len();
        check(&path, &lines, round);
    }
    println!("crash_consistency: ok, {rounds} rounds, {acked} acknowledged mutations checked");
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a seeded, reproducible choice of kill moments.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs the child until it has printed `kill_after` durable mutations, kills it with SIGKILL,
/// and returns every line it printed (all of them were durable when printed).
fn run_child(path: &Path, round: u64, kill_after: usize) -> Vec<(DocId, Cid)> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env("HYPHA_CRASH_CHILD", path)
        .env("HYPHA_CRASH_CHILD_ROUND", round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut killed = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("read child") == 0 {
            break;
        }
        if let Some(entry) = parse(&line) {
            lines.push(entry);
        }
        if !killed && lines.len() >= kill_after {
            child.kill().expect("SIGKILL child"); // Child::kill is SIGKILL on Unix.
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    assert!(killed, "round {round}: child exited by itself: {status}");
    lines
}

fn parse(line: &str) -> Option<(DocId, Cid)> {
    let mut words = line.split_whitespace();
    if words.next()? != "durable" {
        return None;
    }
    let doc = DocId::from_str(words.next()?).ok()?;
    let cid = Cid::from_str(words.next()?).ok()?;
    Some((doc, cid))
}

/// Reopens the store after the crash and checks every mutation acknowledged in this round.
fn check(path: &Path, lines: &[(DocId, Cid)], round: u64) {
    let store = Store::open(path, config())
        .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL: {e:#?}"));
    let books = store
        .collection("Books")
        .unwrap()
        .expect("schema survived")
        .id();
    let outbox = store.outbox(&peer(), usize::MAX).unwrap();
    let owed: BTreeSet<DocId> = outbox.documents.iter().copied().collect();
    let mut docs: BTreeMap<DocId, Vec<Cid>> = BTreeMap::new();
    for (doc, cid) in lines {
        docs.entry(*doc).or_default().push(*cid);
    }
    for (doc, cids) in &docs {
        let state = store
            .state(doc)
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: acked document {doc} has no state"));
        let (history, more) = store.history(doc, 1_000_000).unwrap();
        assert!(!more);
        let in_history: BTreeSet<Cid> = history.iter().map(|b| b.cid()).collect();
        for cid in cids {
            assert!(
                store.block(cid).unwrap().is_some(),
                "round {round}: acked block {cid} lost"
            );
            assert!(
                in_history.contains(cid),
                "round {round}: {cid} not reachable from heads"
            );
        }
        // State and heads are exactly what the stored blocks merge into.
        let mut dag = MemoryDag::new();
        for block in history.iter().rev() {
            ingest(&mut dag, block, &Limits::default()).unwrap();
        }
        assert_eq!(
            dag.states().get(doc),
            Some(&state),
            "round {round}: state of {doc}"
        );
        assert_eq!(
            state.blocks as usize,
            history.len(),
            "round {round}: block count"
        );
        assert!(
            store
                .documents(books, true, None, usize::MAX)
                .unwrap()
                .contains(doc),
            "round {round}: {doc} missing from the collection index"
        );
        assert!(
            outbox.catch_up || owed.contains(doc),
            "round {round}: {doc} missing from the outbox"
        );
        assert_eq!(
            store.sync_item(&books, doc),
            Some(ItemHash::of(doc, &state.heads)),
            "round {round}: sync item of {doc}"
        );
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.pending, 0);
    assert_eq!(store.verify_blocks().unwrap(), stats.blocks);
    // Every document's persisted sync item is its heads' hash, the persisted root is what the
    // persisted items hash to, and the index rebuilt at open holds exactly those.
    assert_eq!(
        store
            .verify_sync_index()
            .unwrap_or_else(|e| panic!("round {round}: sync index: {e:#?}")),
        stats.documents
    );
    assert_eq!(store.sync_root(&books).count, stats.documents);
}

/// The child: commits creates, updates and counter increments from several threads until it
/// is killed, printing `durable <doc> <cid>` after each mutation is durable.
fn child(path: &Path) {
    let round = std::env::var("HYPHA_CRASH_CHILD_ROUND").unwrap_or_default();
    let store = Arc::new(Store::open(path, config()).expect("child opens store"));
    store
        .commit(Mutation::AddSchema { sdl: SDL.into() })
        .expect("schema");
    let books = store.collection("Books").unwrap().expect("schema").id();
    let replicator = Replicator {
        collections: [books].into(),
        ..Default::default()
    };
    store
        .commit(Mutation::SetReplicator {
            peer: peer(),
            replicator,
        })
        .expect("replicator");
    store
        .commit(Mutation::ClearCatchUp { peer: peer() })
        .expect("clear");
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let round = round.clone();
            std::thread::spawn(move || writer(&store, &format!("{round}-{t}")))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn writer(store: &Store, name: &str) {
    let mut doc = None;
    for i in 0..100_000u64 {
        let mutation = match (doc, i % 3) {
            (None, _) | (_, 0) => Mutation::Create {
                collection: "Books".into(),
                document: json!({"name": format!("{name}-{i}")}),
            },
            (Some(d), 1) => Mutation::Update {
                doc_id: d,
                patch: json!({"likes": 1}),
            },
            (Some(d), _) => Mutation::Update {
                doc_id: d,
                patch: json!({"name": format!("{name}-{i}")}),
            },
        };
        let receipt = store.commit(mutation).expect("commit");
        let Committed::Local { block, .. } = receipt.committed else {
            unreachable!()
        };
        doc = Some(block.doc_id());
        let mut out = std::io::stdout().lock();
        if writeln!(out, "durable {} {}", block.doc_id(), block.cid()).is_err()
            || out.flush().is_err()
        {
            return; // The parent is gone.
        }
    }
}
