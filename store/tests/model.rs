//! Random mutation scripts run against the redb and the memory backend must give the same
//! results and leave the same data (one logic over two backends, checked), including a sync
//! index that is what the documents' heads give, and the same after reopening the file.

use hypha_crdt::sync_index::{CollectionIndex, ItemHash};
use hypha_crdt::{Author, DocId, Replica, VerifiedBlock, parse_sdl};
use hypha_store::{
    CommitError, Config, Mutation, PeerKey, PeerRecord, Replicator, Store, Subscription,
};
use proptest::prelude::*;
use serde_json::json;

const SDL: &str = "type Books { name: String likes: Int @crdt(type: pncounter) }";

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Update(u8, bool),
    Delete(u8),
    Ingest(u8),
    SetReplicator(u8, bool, u8),
    DeleteReplicator(u8),
    Subscribe(u8),
    Unsubscribe(u8),
    Ack(u8, u8),
    ClearCatchUp(u8),
    Remember(u8, u64),
    Forget(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8).prop_map(Op::Create),
        4 => (0..8u8, any::<bool>()).prop_map(|(d, c)| Op::Update(d, c)),
        1 => (0..8u8).prop_map(Op::Delete),
        4 => (0..12u8).prop_map(Op::Ingest),
        2 => (0..3u8, any::<bool>(), 0..8u8).prop_map(|(p, c, d)| Op::SetReplicator(p, c, d)),
        1 => (0..3u8).prop_map(Op::DeleteReplicator),
        1 => (0..8u8).prop_map(Op::Subscribe),
        1 => (0..8u8).prop_map(Op::Unsubscribe),
        2 => (0..3u8, 0..8u8).prop_map(|(p, d)| Op::Ack(p, d)),
        1 => (0..3u8).prop_map(Op::ClearCatchUp),
        1 => (0..3u8, any::<u64>()).prop_map(|(p, t)| Op::Remember(p, t)),
        1 => (0..3u8).prop_map(Op::Forget),
    ]
}

/// Blocks of a remote replica: two documents, each a short chain (delivered in any order).
fn remote_blocks() -> Vec<VerifiedBlock> {
    let schema = parse_sdl("hypha", SDL).unwrap();
    let mut r = Replica::new(schema, Author::unsigned([8; 32]));
    let mut out = Vec::new();
    for name in ["r0", "r1"] {
        let (doc, genesis) = r.create("Books", &json!({"name": name})).unwrap();
        out.push(genesis);
        for i in 0..5 {
            out.push(r.update(doc, &json!({"likes": i})).unwrap());
        }
    }
    out
}

fn peer(p: u8) -> PeerKey {
    PeerKey(vec![b'p', p])
}

fn config() -> Config {
    Config::new(Author::unsigned([1; 32])).with_max_outbox_per_peer(2)
}

/// Translates an op to a mutation; documents are picked among those the store knows.
fn mutation(
    op: &Op,
    docs: &[DocId],
    remote: &[VerifiedBlock],
    books: hypha_crdt::CollectionId,
    heads: &dyn Fn(DocId) -> Vec<hypha_crdt::Cid>,
) -> Mutation {
    let doc = |i: u8| {
        docs.get(usize::from(i) % docs.len().max(1))
            .copied()
            .unwrap_or(DocId::from_bytes([i; 16]))
    };
    match op.clone() {
        Op::Create(n) => Mutation::Create {
            collection: "Books".into(),
            document: json!({"name": format!("b{n}")}),
        },
        Op::Update(d, true) => Mutation::Update {
            doc_id: doc(d),
            patch: json!({"likes": 1}),
        },
        Op::Update(d, false) => Mutation::Update {
            doc_id: doc(d),
            patch: json!({"name": format!("u{d}")}),
        },
        Op::Delete(d) => Mutation::Delete { doc_id: doc(d) },
        Op::Ingest(i) => Mutation::Ingest {
            block: remote[usize::from(i) % remote.len()].clone(),
        },
        Op::SetReplicator(p, whole, d) => {
            let replicator = if whole {
                Replicator {
                    collections: [books].into(),
                    ..Default::default()
                }
            } else {
                Replicator {
                    documents: [doc(d)].into(),
                    ..Default::default()
                }
            };
            Mutation::SetReplicator {
                peer: peer(p),
                replicator,
            }
        }
        Op::DeleteReplicator(p) => Mutation::DeleteReplicator { peer: peer(p) },
        Op::Subscribe(d) => Mutation::Subscribe(Subscription::Document(doc(d))),
        Op::Unsubscribe(d) => Mutation::Unsubscribe(Subscription::Document(doc(d))),
        Op::Ack(p, d) => Mutation::AckOutbox {
            peer: peer(p),
            doc_id: doc(d),
            heads: heads(doc(d)),
        },
        Op::ClearCatchUp(p) => Mutation::ClearCatchUp { peer: peer(p) },
        Op::Remember(p, t) => Mutation::RememberPeer {
            peer: peer(p),
            record: PeerRecord {
                addresses: vec![vec![p]],
                last_seen: t,
            },
        },
        Op::Forget(p) => Mutation::ForgetPeer { peer: peer(p) },
    }
}

fn discriminant(r: &Result<hypha_store::Receipt, CommitError>) -> String {
    match r {
        Ok(r) => format!("{:?}", r.committed),
        Err(e) => format!("err {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn backends_agree_on_random_scripts(ops in prop::collection::vec(op(), 1..40)) {
        let remote = remote_blocks();
        let dir = tempfile::tempdir().unwrap();
        let disk = Store::open(dir.path().join("m.redb"), config()).unwrap();
        let memory = Store::memory(config()).unwrap();
        let mut docs: Vec<DocId> = Vec::new();
        for store in [&disk, &memory] {
            store.commit(Mutation::AddSchema { sdl: SDL.into() }).unwrap();
        }
        let books = memory.collection("Books").unwrap().unwrap().id();
        for op in &ops {
            let heads = |d: DocId| memory.state(&d).unwrap().map(|s| s.heads).unwrap_or_default();
            let m = mutation(op, &docs, &remote, books, &heads);
            let a = disk.commit(m.clone());
            let b = memory.commit(m);
            prop_assert_eq!(discriminant(&a), discriminant(&b));
            if let Ok(hypha_store::Receipt { committed: hypha_store::Committed::Local { block, .. }, .. }) = &a
                && !docs.contains(&block.doc_id())
            {
                docs.push(block.doc_id());
            }
            for block in &remote {
                if !docs.contains(&block.doc_id()) && memory.state(&block.doc_id()).unwrap().is_some() {
                    docs.push(block.doc_id());
                }
            }
        }
        let (sa, sb) = (disk.stats().unwrap(), memory.stats().unwrap());
        prop_assert_eq!(
            (sa.blocks, sa.pending, sa.documents, sa.replicators, sa.subscriptions, sa.outbox_entries, sa.peers),
            (sb.blocks, sb.pending, sb.documents, sb.replicators, sb.subscriptions, sb.outbox_entries, sb.peers)
        );
        for doc in &docs {
            prop_assert_eq!(disk.state(doc).unwrap(), memory.state(doc).unwrap());
        }
        for p in 0..3 {
            prop_assert_eq!(disk.outbox(&peer(p), 100).unwrap(), memory.outbox(&peer(p), 100).unwrap());
        }
        prop_assert_eq!(disk.replicators().unwrap(), memory.replicators().unwrap());
        prop_assert_eq!(disk.subscriptions().unwrap(), memory.subscriptions().unwrap());
        prop_assert_eq!(disk.peers().unwrap(), memory.peers().unwrap());
        prop_assert_eq!(disk.nonce_seq().unwrap(), memory.nonce_seq().unwrap());
        prop_assert_eq!(disk.verify_blocks().unwrap(), sa.blocks + sa.pending);
        // Every outbox stays within its cap.
        for p in 0..3 {
            prop_assert!(memory.outbox(&peer(p), 100).unwrap().len <= 2);
        }
        // The sync index: the same on both backends, what the states give, and the same after
        // reopening the file.
        let mut expected: Vec<(DocId, ItemHash)> = Vec::new();
        for doc in memory.documents(books, true, None, usize::MAX).unwrap() {
            let heads = memory.state(&doc).unwrap().unwrap().heads;
            expected.push((doc, ItemHash::of(&doc, &heads)));
        }
        let rebuilt = CollectionIndex::from_items(expected.iter().copied());
        // A collection without documents has no index, so no sketch.
        let sketch = if expected.is_empty() { None } else { rebuilt.sketch(0).cloned() };
        for store in [&disk, &memory] {
            prop_assert_eq!(store.sync_items(&books, None, usize::MAX), expected.clone());
            prop_assert_eq!(store.sync_root(&books), rebuilt.root());
            prop_assert_eq!(store.sync_sketch(&books, 0), sketch.clone());
            prop_assert_eq!(store.verify_sync_index().unwrap(), expected.len() as u64);
        }
        let root = disk.sync_root(&books);
        disk.close();
        let disk = Store::open(dir.path().join("m.redb"), config()).unwrap();
        prop_assert_eq!(disk.sync_root(&books), root);
        prop_assert_eq!(disk.sync_items(&books, None, usize::MAX), expected);
        prop_assert_eq!(disk.sync_sketch(&books, 0), sketch);
        prop_assert_eq!(disk.sync_collections(), memory.sync_collections());
    }
}
