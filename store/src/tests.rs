//! Unit tests over both backends, and the ones that reach into the memory backend.

use hypha_crdt::sync_index::{CollectionIndex, ItemHash, Root};
use hypha_crdt::{Author, DocId, Replica, parse_sdl};
use serde_json::json;

use crate::layout::Table;
use crate::*;

const SDL: &str = "type Books { name: String rating: Float likes: Int @crdt(type: pncounter) }";

fn config() -> Config {
    Config::new(Author::unsigned([1; 32]))
}

fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let redb = Store::open(dir.path().join("s.redb"), config()).unwrap();
    vec![(Store::memory(config()).unwrap(), None), (redb, Some(dir))]
}

fn with_schema(store: &Store) {
    store
        .commit(Mutation::AddSchema { sdl: SDL.into() })
        .unwrap();
}

fn create(store: &Store, name: &str) -> (DocId, hypha_crdt::VerifiedBlock) {
    let r = store
        .commit(Mutation::Create {
            collection: "Books".into(),
            document: json!({"name": name}),
        })
        .unwrap();
    let Committed::Local { block, .. } = r.committed else {
        panic!("not local: {r:?}")
    };
    (block.doc_id(), block)
}

fn peer(n: u8) -> PeerKey {
    PeerKey(vec![n; 8])
}

/// Sets peer 1 as a replicator of Books, already caught up, so every commit feeds its outbox.
fn replicate_books(store: &Store) {
    let replicator = Replicator {
        collections: [books(store)].into(),
        ..Default::default()
    };
    store
        .commit(Mutation::SetReplicator {
            peer: peer(1),
            replicator,
        })
        .unwrap();
    store
        .commit(Mutation::ClearCatchUp { peer: peer(1) })
        .unwrap();
}

/// Ingests `block`, which must apply; the CIDs it applied (with what waited for it).
fn ingest_applied(store: &Store, block: &hypha_crdt::VerifiedBlock) -> Vec<hypha_crdt::Cid> {
    let r = store
        .commit(Mutation::Ingest {
            block: block.clone(),
        })
        .unwrap();
    let Committed::Ingested {
        outcome: hypha_crdt::Outcome::Applied { applied, .. },
    } = r.committed
    else {
        panic!("{} did not apply: {:?}", block.cid(), r.committed)
    };
    applied
}

/// Another replica of the Books schema, making the blocks a store receives.
fn remote() -> Replica {
    Replica::new(parse_sdl("hypha", SDL).unwrap(), Author::unsigned([2; 32]))
}

fn books(store: &Store) -> hypha_crdt::CollectionId {
    store.collection("Books").unwrap().unwrap().id()
}

#[test]
fn create_commits_block_state_heads_and_index() {
    for (store, _dir) in stores() {
        with_schema(&store);
        let (doc, block) = create(&store, "Dune");
        let state = store.state(&doc).unwrap().unwrap();
        assert_eq!(state.heads, vec![block.cid()]);
        assert_eq!(store.block(&block.cid()).unwrap().unwrap(), block);
        assert_eq!(
            store.block_bytes(&block.cid()).unwrap().unwrap(),
            block.bytes()
        );
        assert_eq!(
            store.documents(books(&store), false, None, 10).unwrap(),
            vec![doc]
        );
        assert_eq!(store.document(&doc).unwrap().unwrap()["name"], "Dune");
        let stats = store.stats().unwrap();
        assert_eq!(
            (stats.blocks, stats.documents, stats.collections),
            (1, 1, 1)
        );
    }
}

#[test]
fn update_and_delete_move_heads_and_index() {
    for (store, _dir) in stores() {
        with_schema(&store);
        let (doc, genesis) = create(&store, "Dune");
        let r = store
            .commit(Mutation::Update {
                doc_id: doc,
                patch: json!({"likes": 2}),
            })
            .unwrap();
        let Committed::Local { block: update, .. } = r.committed else {
            panic!()
        };
        assert_eq!(update.block().heads, vec![genesis.cid()]);
        assert_eq!(
            store.state(&doc).unwrap().unwrap().heads,
            vec![update.cid()]
        );
        assert_eq!(
            store.nonce_seq().unwrap(),
            1,
            "a counter increment uses a nonce"
        );
        store.commit(Mutation::Delete { doc_id: doc }).unwrap();
        assert!(store.state(&doc).unwrap().unwrap().deleted);
        assert!(
            store
                .documents(books(&store), false, None, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.documents(books(&store), true, None, 10).unwrap(),
            vec![doc]
        );
        let (history, more) = store.history(&doc, 10).unwrap();
        assert_eq!(history.len(), 3);
        assert!(!more);
        let (history, more) = store.history(&doc, 2).unwrap();
        assert_eq!((history.len(), more), (2, true));
    }
}

#[test]
fn refused_mutations_write_nothing() {
    for (store, _dir) in stores() {
        with_schema(&store);
        let (doc, _) = create(&store, "Dune");
        let before = store.stats().unwrap();
        let state = store.state(&doc).unwrap();
        let errors = [
            store.commit(Mutation::Create {
                collection: "Nope".into(),
                document: json!({}),
            }),
            store.commit(Mutation::Update {
                doc_id: doc,
                patch: json!({"rating": "x"}),
            }),
            store.commit(Mutation::Update {
                doc_id: DocId::from_bytes([9; 16]),
                patch: json!({"name": "a"}),
            }),
            store.commit(Mutation::AddSchema {
                sdl: "type {".into(),
            }),
            store.commit(Mutation::RememberPeer {
                peer: PeerKey(vec![]),
                record: PeerRecord {
                    addresses: vec![],
                    last_seen: 0,
                },
            }),
        ];
        assert!(matches!(errors[0], Err(CommitError::UnknownCollection(_))));
        assert!(matches!(errors[1], Err(CommitError::Mutation(_))));
        assert!(matches!(errors[2], Err(CommitError::UnknownDocument(_))));
        assert!(matches!(errors[3], Err(CommitError::Schema(_))));
        assert!(matches!(errors[4], Err(CommitError::Limit { .. })));
        let after = store.stats().unwrap();
        assert_eq!(
            (after.blocks, after.documents, after.peers),
            (before.blocks, before.documents, 0)
        );
        assert_eq!(after.refused, before.refused + 5);
        assert_eq!(store.state(&doc).unwrap(), state);
    }
}

#[test]
fn rejected_block_writes_nothing_and_fails_alone() {
    let mut remote = remote();
    let (doc, genesis) = remote.create("Books", &json!({"name": "Dune"})).unwrap();
    let update = remote.update(doc, &json!({"name": "Dune 2"})).unwrap();
    // A pending set of size 0 refuses any block that must wait.
    let store = Store::memory(config().with_limits(hypha_crdt::Limits {
        max_pending: 0,
        max_walk: 10,
    }))
    .unwrap();
    with_schema(&store);
    let refused = store.submit(Mutation::Ingest {
        block: update.clone(),
    });
    let ok = store.submit(Mutation::Ingest {
        block: genesis.clone(),
    });
    assert!(matches!(refused.wait(), Err(CommitError::Rejected(_))));
    ok.wait().unwrap();
    assert!(!store.contains(&update.cid()).unwrap());
    assert_eq!(store.stats().unwrap().pending, 0);
}

#[test]
fn drop_pending_evicts_orphans_and_what_waits_for_their_parents() {
    let mut remote = remote();
    let (doc, genesis) = remote.create("Books", &json!({"name": "Dune"})).unwrap();
    let u1 = remote.update(doc, &json!({"likes": 1})).unwrap();
    for (store, _dir) in stores() {
        with_schema(&store);
        store
            .commit(Mutation::Ingest { block: u1.clone() })
            .unwrap();
        assert_eq!(store.stats().unwrap().pending, 1);
        let drop = |cids| {
            store
                .commit(Mutation::DropPending { cids })
                .unwrap()
                .committed
        };
        assert_eq!(drop(vec![u1.cid()]), Committed::Meta { changed: true });
        assert_eq!(store.stats().unwrap().pending, 0);
        assert!(!store.contains(&u1.cid()).unwrap());
        // The parent arriving later applies alone: nothing waits for it any more.
        let applied = ingest_applied(&store, &genesis);
        assert_eq!(applied, vec![genesis.cid()]);
        // An applied block is not pending: dropping it changes nothing.
        assert_eq!(
            drop(vec![genesis.cid()]),
            Committed::Meta { changed: false }
        );
        assert!(store.is_applied(&genesis.cid()).unwrap());
        store
            .commit(Mutation::Ingest { block: u1.clone() })
            .unwrap();
        assert_eq!(store.stats().unwrap().blocks, 2);
    }
}

#[test]
fn received_blocks_wait_as_pending_and_cascade_into_outboxes() {
    let mut remote = remote();
    let (doc, genesis) = remote.create("Books", &json!({"name": "Dune"})).unwrap();
    let u1 = remote.update(doc, &json!({"likes": 1})).unwrap();
    let u2 = remote.update(doc, &json!({"likes": 1})).unwrap();
    for (store, _dir) in stores() {
        with_schema(&store);
        replicate_books(&store);
        for b in [&u2, &u1] {
            let r = store.commit(Mutation::Ingest { block: b.clone() }).unwrap();
            assert!(matches!(
                r.committed,
                Committed::Ingested {
                    outcome: hypha_crdt::Outcome::Pending { .. }
                }
            ));
        }
        assert_eq!(store.stats().unwrap().pending, 2);
        assert!(store.outbox(&peer(1), 10).unwrap().documents.is_empty());
        assert!(store.verify_blocks().unwrap() == 2);
        let applied = ingest_applied(&store, &genesis);
        assert_eq!(applied.len(), 3);
        let stats = store.stats().unwrap();
        assert_eq!((stats.pending, stats.blocks), (0, 3));
        assert_eq!(store.state(&doc).unwrap(), remote.state(doc).cloned());
        assert_eq!(store.outbox(&peer(1), 10).unwrap().documents, vec![doc]);
        assert_eq!(store.document(&doc).unwrap().unwrap()["likes"], 2);
    }
}

#[test]
fn outbox_holds_one_entry_per_document_and_acks_drop_it() {
    for (store, _dir) in stores() {
        with_schema(&store);
        let (doc, _) = create(&store, "Dune");
        let rep = Replicator {
            documents: [doc].into(),
            ..Default::default()
        };
        store
            .commit(Mutation::SetReplicator {
                peer: peer(1),
                replicator: rep,
            })
            .unwrap();
        assert!(
            store.outbox(&peer(1), 10).unwrap().catch_up,
            "a new replicator catches up first"
        );
        store
            .commit(Mutation::ClearCatchUp { peer: peer(1) })
            .unwrap();
        for _ in 0..3 {
            store
                .commit(Mutation::Update {
                    doc_id: doc,
                    patch: json!({"likes": 1}),
                })
                .unwrap();
        }
        let (other, _) = create(&store, "Emma");
        let outbox = store.outbox(&peer(1), 10).unwrap();
        assert_eq!(
            (outbox.documents, outbox.len, outbox.catch_up),
            (vec![doc], 1, false)
        );
        assert!(
            store
                .outbox(&peer(1), 10)
                .unwrap()
                .documents
                .iter()
                .all(|d| *d != other)
        );
        // An ack for heads the document has moved past keeps the entry.
        let stale = Mutation::AckOutbox {
            peer: peer(1),
            doc_id: doc,
            heads: vec![],
        };
        assert_eq!(
            store.commit(stale).unwrap().committed,
            Committed::Meta { changed: false }
        );
        assert_eq!(store.outbox(&peer(1), 10).unwrap().len, 1);
        let heads = store.state(&doc).unwrap().unwrap().heads;
        let r = store
            .commit(Mutation::AckOutbox {
                peer: peer(1),
                doc_id: doc,
                heads,
            })
            .unwrap();
        assert_eq!(r.committed, Committed::Meta { changed: true });
        assert_eq!(store.outbox(&peer(1), 10).unwrap(), Outbox::default());
    }
}

#[test]
fn outbox_collapses_into_catch_up_marker_past_its_cap() {
    let store = Store::memory(config().with_max_outbox_per_peer(3)).unwrap();
    with_schema(&store);
    replicate_books(&store);
    for i in 0..3 {
        create(&store, &format!("b{i}"));
    }
    let outbox = store.outbox(&peer(1), 10).unwrap();
    assert_eq!((outbox.documents.len(), outbox.catch_up), (3, false));
    create(&store, "b3");
    let outbox = store.outbox(&peer(1), 10).unwrap();
    assert_eq!(
        (outbox.documents.len(), outbox.len, outbox.catch_up),
        (0, 0, true)
    );
    create(&store, "b4");
    assert_eq!(
        store.outbox(&peer(1), 10).unwrap().documents.len(),
        0,
        "marker covers it"
    );
    store
        .commit(Mutation::ClearCatchUp { peer: peer(1) })
        .unwrap();
    let (doc, _) = create(&store, "b5");
    assert_eq!(store.outbox(&peer(1), 10).unwrap().documents, vec![doc]);
}

#[test]
fn metadata_round_trips() {
    for (store, _dir) in stores() {
        with_schema(&store);
        let doc = DocId::from_bytes([3; 16]);
        let rep = Replicator {
            collections: [books(&store)].into(),
            documents: [doc].into(),
            addresses: vec![b"/ip4/1".to_vec()],
        };
        store
            .commit(Mutation::SetReplicator {
                peer: peer(1),
                replicator: rep.clone(),
            })
            .unwrap();
        assert_eq!(store.replicators().unwrap().get(&peer(1)), Some(&rep));
        store
            .commit(Mutation::Subscribe(Subscription::Collection(books(&store))))
            .unwrap();
        store
            .commit(Mutation::Subscribe(Subscription::Document(doc)))
            .unwrap();
        let again = store
            .commit(Mutation::Subscribe(Subscription::Document(doc)))
            .unwrap();
        assert_eq!(again.committed, Committed::Meta { changed: false });
        let subs = store.subscriptions().unwrap();
        assert_eq!((subs.collections.len(), subs.documents.len()), (1, 1));
        store
            .commit(Mutation::Unsubscribe(Subscription::Document(doc)))
            .unwrap();
        assert!(store.subscriptions().unwrap().documents.is_empty());
        let record = PeerRecord {
            addresses: vec![b"a".to_vec(), b"b".to_vec()],
            last_seen: 42,
        };
        store
            .commit(Mutation::RememberPeer {
                peer: peer(2),
                record: record.clone(),
            })
            .unwrap();
        assert_eq!(store.peer(&peer(2)).unwrap(), Some(record));
        assert_eq!(store.peers().unwrap().len(), 1);
        store
            .commit(Mutation::ForgetPeer { peer: peer(2) })
            .unwrap();
        assert_eq!(store.peer(&peer(2)).unwrap(), None);
        store
            .commit(Mutation::DeleteReplicator { peer: peer(1) })
            .unwrap();
        assert!(store.replicators().unwrap().is_empty());
        assert_eq!(store.outbox(&peer(1), 10).unwrap(), Outbox::default());
    }
}

#[test]
fn corrupted_block_is_an_error_not_data() {
    let store = Store::memory(config()).unwrap();
    with_schema(&store);
    let (doc, block) = create(&store, "Dune");
    store.memory_backend().with_raw(Table::Blocks, |map| {
        let v = map.get_mut(&block.cid().to_bytes()).unwrap();
        let last = v.len() - 1;
        v[last] ^= 0x01;
    });
    let cid = block.cid();
    assert!(matches!(store.block(&cid), Err(ReadError::Corrupted { cid: c }) if c == cid));
    assert!(matches!(
        store.block_bytes(&cid),
        Err(ReadError::Corrupted { .. })
    ));
    assert!(matches!(
        store.verify_blocks(),
        Err(ReadError::Corrupted { .. })
    ));
    assert!(matches!(
        store.history(&doc, 10),
        Err(ReadError::Corrupted { .. })
    ));
}

#[test]
fn storage_failure_rolls_back_the_whole_batch() {
    let store = Store::memory(config()).unwrap();
    with_schema(&store);
    let (doc, _) = create(&store, "Dune");
    let rep = Replicator {
        documents: [doc].into(),
        ..Default::default()
    };
    store
        .memory_backend()
        .fail_next_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = store.commit(Mutation::SetReplicator {
        peer: peer(1),
        replicator: rep.clone(),
    });
    assert!(matches!(
        r,
        Err(CommitError::Storage(StorageError::Injected))
    ));
    assert!(store.replicators().unwrap().is_empty());
    // The committer's cache was reloaded: the replicator is not half-set.
    store
        .commit(Mutation::Update {
            doc_id: doc,
            patch: json!({"likes": 1}),
        })
        .unwrap();
    assert_eq!(store.outbox(&peer(1), 10).unwrap(), Outbox::default());
    assert_eq!(store.stats().unwrap().failed_batches, 1);
}

#[test]
fn concurrent_writers_share_durable_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path().join("s.redb"), config()).unwrap());
    with_schema(&store);
    let before = store.stats().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25 {
                    store
                        .commit(Mutation::Create {
                            collection: "Books".into(),
                            document: json!({"name": format!("{t}-{i}")}),
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.mutations - before.mutations, 200);
    assert!(
        stats.commits - before.commits < 200,
        "group commit shared fsyncs: {stats:?}"
    );
}

/// A block received off peak is readable before its fsync: its ticket reports it visible,
/// then durable, carried by one durable commit. A barrier behind it passes without a commit.
#[test]
fn a_received_block_is_visible_then_durable_and_a_barrier_behind_it_costs_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.redb"), config()).unwrap();
    with_schema(&store);
    let (_, genesis) = remote().create("Books", &json!({"name": "Dune"})).unwrap();
    let before = store.stats().unwrap().commits;
    let mut ticket = store.submit(Mutation::Ingest {
        block: genesis.clone(),
    });
    let visible = ticket.wait_until(Stage::Visible).unwrap();
    assert!(
        store.contains(&genesis.cid()).unwrap(),
        "readable once visible"
    );
    assert_eq!(
        visible.commit,
        before + 1,
        "the durable commit that will carry it"
    );
    let durable = ticket.wait().unwrap();
    assert_eq!(durable, visible);
    assert_eq!(store.stats().unwrap().commits, before + 1, "one fsync");

    let barrier = store.commit(Mutation::Barrier).unwrap();
    assert_eq!(barrier.committed, Committed::Meta { changed: false });
    assert_eq!(barrier.commit, before + 1);
    let stats = store.stats().unwrap();
    assert_eq!(stats.commits, before + 1);
    assert_eq!(stats.barriers, 1);
}

/// A batch of local writes only, or a full batch (a received block with at most one
/// mutation per batch), commits durably at once: a ticket waiting for visibility learns of it
/// then.
#[test]
fn local_writes_and_full_batches_commit_durably_at_once() {
    let (_, genesis) = remote().create("Books", &json!({"name": "Dune"})).unwrap();
    let local = Mutation::Create {
        collection: "Books".into(),
        document: json!({"name": "x"}),
    };
    let cases = [
        (config(), local),
        (
            config().with_max_batch(1),
            Mutation::Ingest { block: genesis },
        ),
    ];
    for (config, mutation) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), config).unwrap();
        with_schema(&store);
        let before = store.stats().unwrap().commits;
        let mut ticket = store.submit(mutation);
        let visible = ticket.wait_until(Stage::Visible).unwrap();
        assert_eq!(visible.commit, before + 1);
        assert_eq!(
            store.stats().unwrap().commits,
            before + 1,
            "already durable"
        );
        assert_eq!(ticket.wait().unwrap(), visible);
    }
}

/// `submit_notify` calls back exactly once: at the chosen stage, or on refusal; and a job
/// dropped unanswered (the committer stopped) calls back with `Closed`.
#[test]
fn submit_notify_calls_back_once_at_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.redb"), config()).unwrap();
    with_schema(&store);
    let (_, dune) = remote().create("Books", &json!({"name": "Dune"})).unwrap();
    let (_, emma) = remote().create("Books", &json!({"name": "Emma"})).unwrap();
    let nope = Mutation::Create {
        collection: "Nope".into(),
        document: json!({}),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let cases = [
        (
            "visible",
            Mutation::Ingest {
                block: dune.clone(),
            },
            Stage::Visible,
        ),
        (
            "durable",
            Mutation::Ingest {
                block: emma.clone(),
            },
            Stage::Durable,
        ),
        ("refused", nope, Stage::Durable),
    ];
    for (name, mutation, until) in cases {
        let tx = tx.clone();
        store.submit_notify(mutation, until, move |result| {
            tx.send((name, result)).unwrap();
        });
    }
    drop(tx);
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let (name, result) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        if name == "durable" {
            assert!(store.stats().unwrap().commits > 0, "durable when called");
        }
        assert!(
            answers.insert(name, result).is_none(),
            "{name} called twice"
        );
    }
    assert!(matches!(
        answers["visible"],
        Ok(Receipt {
            committed: Committed::Ingested { .. },
            ..
        })
    ));
    assert!(store.contains(&dune.cid()).unwrap());
    assert!(store.contains(&emma.cid()).unwrap());
    assert!(matches!(
        answers["refused"],
        Err(CommitError::UnknownCollection(_))
    ));
    store.close();
    assert!(rx.recv().is_err(), "no callback is called twice");

    let (tx, rx) = std::sync::mpsc::channel();
    let job = crate::committer::Job::notify(
        Mutation::Barrier,
        Stage::Durable,
        Box::new(move |result| tx.send(result).unwrap()),
    );
    drop(job);
    assert!(matches!(rx.recv().unwrap(), Err(CommitError::Closed)));
    assert!(rx.recv().is_err());
}

#[test]
fn barriers_pass_in_memory_and_on_redb() {
    for (store, _dir) in stores() {
        with_schema(&store);
        let (_, block) = create(&store, "x");
        let receipt = store.commit(Mutation::Barrier).unwrap();
        assert_eq!(receipt.committed, Committed::Meta { changed: false });
        assert!(store.contains(&block.cid()).unwrap());
    }
}

#[test]
fn try_submit_reports_busy_when_queue_is_full() {
    let store = Store::memory(config().with_queue_capacity(1)).unwrap();
    let mut tickets = Vec::new();
    // Holding the maps' lock stalls the committer, so the queue (capacity 1) fills up.
    let busy = store.memory_backend().with_raw(Table::Meta, |_| {
        for _ in 0..3 {
            match store.try_submit(Mutation::ForgetPeer { peer: peer(1) }) {
                Ok(t) => tickets.push(t),
                Err(CommitError::Busy) => return true,
                Err(e) => panic!("{e}"),
            }
        }
        false
    });
    for t in tickets {
        t.wait().unwrap();
    }
    assert!(busy);
}

/// The item every document's heads give, per collection, read from the states.
fn items_from_states(store: &Store) -> Vec<(DocId, ItemHash)> {
    let c = books(store);
    let mut out: Vec<(DocId, ItemHash)> = store
        .documents(c, true, None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d,
                ItemHash::of(&d, &store.state(&d).unwrap().unwrap().heads),
            )
        })
        .collect();
    out.sort();
    out
}

fn assert_sync_index_current(store: &Store) {
    let c = books(store);
    let expected = items_from_states(store);
    assert_eq!(store.sync_items(&c, None, usize::MAX), expected);
    let rebuilt = CollectionIndex::from_items(expected.iter().copied());
    assert_eq!(store.sync_root(&c), rebuilt.root());
    assert_eq!(store.sync_sketch(&c, 0).as_ref(), rebuilt.sketch(0));
    assert_eq!(store.verify_sync_index().unwrap(), expected.len() as u64);
}

#[test]
fn sync_index_follows_every_heads_change() {
    let mut remote = remote();
    let (rdoc, genesis) = remote.create("Books", &json!({"name": "Remote"})).unwrap();
    let u1 = remote.update(rdoc, &json!({"likes": 1})).unwrap();
    let u2 = remote.update(rdoc, &json!({"likes": 1})).unwrap();
    for (store, _dir) in stores() {
        with_schema(&store);
        let c = books(&store);
        assert_eq!(store.sync_root(&c), Root::EMPTY);
        assert!(store.sync_collections().is_empty());
        assert_eq!(store.sync_sketch(&c, 0), None);
        let (doc, genesis_local) = create(&store, "Dune");
        assert_eq!(
            store.sync_item(&c, &doc),
            Some(ItemHash::of(&doc, &[genesis_local.cid()]))
        );
        assert_eq!(store.sync_collections(), vec![c]);
        assert_eq!(store.sync_root(&c).count, 1);
        assert_sync_index_current(&store);
        let before = store.sync_root(&c);
        store
            .commit(Mutation::Update {
                doc_id: doc,
                patch: json!({"likes": 2}),
            })
            .unwrap();
        assert_ne!(store.sync_root(&c), before);
        assert_eq!(store.sync_root(&c).count, 1);
        assert_sync_index_current(&store);
        // Deleted documents keep their items: their heads still have to be synced.
        store.commit(Mutation::Delete { doc_id: doc }).unwrap();
        assert!(store.sync_item(&c, &doc).is_some());
        assert_sync_index_current(&store);
        // Received blocks: pending ones change nothing, the release applies them all.
        for b in [&u2, &u1] {
            store.commit(Mutation::Ingest { block: b.clone() }).unwrap();
        }
        assert_eq!(store.sync_item(&c, &rdoc), None);
        assert_eq!(store.sync_root(&c).count, 1);
        store
            .commit(Mutation::Ingest {
                block: genesis.clone(),
            })
            .unwrap();
        assert_eq!(
            store.sync_item(&c, &rdoc),
            Some(ItemHash::of(&rdoc, &remote.state(rdoc).unwrap().heads))
        );
        assert_eq!(store.sync_root(&c).count, 2);
        assert_sync_index_current(&store);
        let page = store.sync_items(&c, None, 1);
        assert_eq!(page.len(), 1);
        assert_eq!(store.sync_items(&c, Some(page[0].0), 10).len(), 1);
        assert!(store.sync_index_bytes() > 0);
    }
}

#[test]
fn sync_index_takes_many_changes_in_one_batch() {
    for (store, _dir) in stores() {
        with_schema(&store);
        // Enough documents changed in one batch to spread the root work over threads, some
        // changed several times in the batch.
        let docs: Vec<DocId> = (0..80)
            .map(|i| create(&store, &format!("b{i}")).0)
            .collect();
        let tickets: Vec<_> = docs
            .iter()
            .chain(&docs[..20])
            .map(|d| {
                store.submit(Mutation::Update {
                    doc_id: *d,
                    patch: json!({"likes": 1}),
                })
            })
            .chain((0..100).map(|i| {
                store.submit(Mutation::Create {
                    collection: "Books".into(),
                    document: json!({"name": format!("n{i}")}),
                })
            }))
            .collect();
        for t in tickets {
            t.wait().unwrap();
        }
        assert_eq!(store.sync_root(&books(&store)).count, 180);
        assert_sync_index_current(&store);
    }
}

#[test]
fn failed_commit_leaves_the_sync_index_as_it_was() {
    let store = Store::memory(config()).unwrap();
    with_schema(&store);
    let (doc, _) = create(&store, "Dune");
    let c = books(&store);
    let (root, items) = (store.sync_root(&c), store.sync_items(&c, None, 10));
    store
        .memory_backend()
        .fail_commit_after_writes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The batch runs (items and root written in the transaction), then its commit fails.
    let r = store.commit(Mutation::Update {
        doc_id: doc,
        patch: json!({"likes": 1}),
    });
    assert!(matches!(
        r,
        Err(CommitError::Storage(StorageError::Injected))
    ));
    assert_eq!(store.sync_root(&c), root);
    assert_eq!(store.sync_items(&c, None, 10), items);
    assert_sync_index_current(&store);
    // The next batch starts clean.
    store
        .commit(Mutation::Update {
            doc_id: doc,
            patch: json!({"likes": 1}),
        })
        .unwrap();
    assert_ne!(store.sync_root(&c), root);
    assert_sync_index_current(&store);
}

/// The committer caches recent states, applied blocks and outbox sizes (write-through); a
/// batch that rolls back must take its entries with it.
#[test]
fn a_batch_that_rolls_back_leaves_nothing_in_the_committers_caches() {
    let store = Store::memory(config()).unwrap();
    with_schema(&store);
    replicate_books(&store);
    let mut remote = remote();
    let (doc, genesis) = remote
        .create("Books", &json!({"name": "Dune", "rating": 1.0}))
        .unwrap();
    ingest_applied(&store, &genesis);
    let r = store
        .commit(Mutation::AckOutbox {
            peer: peer(1),
            doc_id: doc,
            heads: vec![genesis.cid()],
        })
        .unwrap();
    assert_eq!(r.committed, Committed::Meta { changed: true });
    let renamed = remote.update(doc, &json!({"name": "Dune II"})).unwrap();
    let rated = remote.update(doc, &json!({"rating": 5.0})).unwrap();
    store
        .memory_backend()
        .fail_commit_after_writes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The batch applies `renamed` (state and block written, and cached), then fails.
    let r = store.commit(Mutation::Ingest {
        block: renamed.clone(),
    });
    assert!(matches!(
        r,
        Err(CommitError::Storage(StorageError::Injected))
    ));
    // `renamed` is not applied: its child waits for it.
    let r = store
        .commit(Mutation::Ingest {
            block: rated.clone(),
        })
        .unwrap();
    assert_eq!(
        r.committed,
        Committed::Ingested {
            outcome: hypha_crdt::Outcome::Pending {
                missing: vec![renamed.cid()]
            }
        }
    );
    // A local write merges into the state before `renamed`.
    store
        .commit(Mutation::Update {
            doc_id: doc,
            patch: json!({"likes": 1}),
        })
        .unwrap();
    let document = store.document(&doc).unwrap().unwrap();
    assert_eq!(
        (&document["name"], &document["likes"]),
        (&json!("Dune"), &json!(1))
    );
    // The outbox counts the document once: the failed batch's entry is not counted.
    let outbox = store.outbox(&peer(1), 10).unwrap();
    assert_eq!((outbox.documents, outbox.len), (vec![doc], 1));
    assert_sync_index_current(&store);
    // Delivered again, `renamed` applies and releases its child.
    assert_eq!(
        ingest_applied(&store, &renamed),
        vec![renamed.cid(), rated.cid()]
    );
    let document = store.document(&doc).unwrap().unwrap();
    assert_eq!(
        (&document["name"], &document["rating"], &document["likes"]),
        (&json!("Dune II"), &json!(5.0), &json!(1))
    );
    assert_eq!(store.state(&doc).unwrap().unwrap().heads.len(), 2);
    assert_sync_index_current(&store);
}

#[test]
fn root_deltas_spread_over_threads_add_up() {
    let c = hypha_crdt::CollectionId::derive("hypha", "Books");
    let other = hypha_crdt::CollectionId::derive("hypha", "Other");
    let pairs: Vec<_> = (0..300u16)
        .map(|i| {
            let b = i.to_be_bytes();
            let doc = DocId::from_bytes([b[0], b[1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            let before = (i % 2 == 0).then_some(ItemHash([b[1]; 32]));
            (
                if i % 5 == 0 { other } else { c },
                doc,
                before,
                ItemHash([7; 32]),
            )
        })
        .collect();
    let all = crate::sync::deltas(
        &pairs,
        &mut crate::sync::Points::default(),
        Default::default(),
    );
    let one_by_one = crate::sync::deltas(
        &pairs[..10],
        &mut crate::sync::Points::default(),
        Default::default(),
    );
    let mut sequential = std::collections::BTreeMap::new();
    for (c, d, before, latest) in &pairs {
        sequential
            .entry(*c)
            .or_insert_with(hypha_crdt::sync_index::RootDelta::new)
            .change(d, before.as_ref(), Some(latest));
    }
    assert_eq!(all, sequential);
    assert_eq!(one_by_one.len(), 2);
    // A second batch replacing the items the first one wrote takes their points from the
    // cache; the deltas are the same as computed afresh.
    let mut points = crate::sync::Points::default();
    crate::sync::deltas(&pairs, &mut points, Default::default());
    let next: Vec<_> = pairs
        .iter()
        .map(|(c, d, _, latest)| (*c, *d, Some(*latest), ItemHash([9; 32])))
        .collect();
    assert_eq!(
        crate::sync::deltas(&next, &mut points, Default::default()),
        crate::sync::deltas(
            &next,
            &mut crate::sync::Points::default(),
            Default::default()
        )
    );
}

#[test]
fn sync_index_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path, config()).unwrap();
    with_schema(&store);
    for i in 0..50 {
        let (doc, _) = create(&store, &format!("b{i}"));
        if i % 3 == 0 {
            store
                .commit(Mutation::Update {
                    doc_id: doc,
                    patch: json!({"likes": 1}),
                })
                .unwrap();
        }
    }
    let c = books(&store);
    let (root, items, sketch) = (
        store.sync_root(&c),
        store.sync_items(&c, None, usize::MAX),
        store.sync_sketch(&c, 0),
    );
    store.close();
    let store = Store::open(&path, config()).unwrap();
    assert_eq!(store.sync_root(&c), root);
    assert_eq!(store.sync_items(&c, None, usize::MAX), items);
    assert_eq!(store.sync_sketch(&c, 0), sketch);
    assert_sync_index_current(&store);
}

#[test]
fn hot_documents_are_remembered_in_order_and_replaced_whole() {
    for (store, _dir) in stores() {
        with_schema(&store);
        assert!(store.hot_documents().unwrap().is_empty());
        let (a, _) = create(&store, "a");
        let (b, _) = create(&store, "b");
        let hot = vec![(b, books(&store)), (a, books(&store))];
        store
            .commit(Mutation::SetHotDocuments {
                documents: hot.clone(),
            })
            .unwrap();
        assert_eq!(store.hot_documents().unwrap(), hot);
        store
            .commit(Mutation::SetHotDocuments {
                documents: vec![(a, books(&store))],
            })
            .unwrap();
        assert_eq!(store.hot_documents().unwrap(), vec![(a, books(&store))]);
        let too_many = vec![(a, books(&store)); crate::MAX_HOT_DOCUMENTS + 1];
        let refused = store.commit(Mutation::SetHotDocuments {
            documents: too_many,
        });
        assert!(matches!(refused, Err(CommitError::Limit { .. })));
        assert_eq!(
            store.hot_documents().unwrap().len(),
            1,
            "a refused set writes nothing"
        );
    }
}
