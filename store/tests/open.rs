//! Opening, reopening and on-disk corruption of the redb store.

use hypha_crdt::Author;
use hypha_store::{
    Committed, Config, Mutation, OpenError, PeerKey, PeerRecord, ReadError, Replicator, Store,
    Subscription,
};
use redb::{ReadableDatabase as _, ReadableTable as _};
use serde_json::json;

const SDL: &str = "type Books { name: String likes: Int @crdt(type: pncounter) }";

fn config() -> Config {
    Config::new(Author::unsigned([1; 32]))
}

type Raw = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

#[test]
fn reopen_keeps_data_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let peer = PeerKey(b"peer".to_vec());
    let (doc, nonce_seq) = {
        let store = Store::open(&path, config()).unwrap();
        store
            .commit(Mutation::AddSchema { sdl: SDL.into() })
            .unwrap();
        let books = store.collection("Books").unwrap().unwrap().id();
        let rep = Replicator {
            collections: [books].into(),
            addresses: vec![b"/ip4/127.0.0.1".to_vec()],
            ..Default::default()
        };
        store
            .commit(Mutation::SetReplicator {
                peer: peer.clone(),
                replicator: rep,
            })
            .unwrap();
        store
            .commit(Mutation::ClearCatchUp { peer: peer.clone() })
            .unwrap();
        store
            .commit(Mutation::Subscribe(Subscription::Collection(books)))
            .unwrap();
        let record = PeerRecord {
            addresses: vec![b"a".to_vec()],
            last_seen: 7,
        };
        store
            .commit(Mutation::RememberPeer {
                peer: peer.clone(),
                record,
            })
            .unwrap();
        let r = store
            .commit(Mutation::Create {
                collection: "Books".into(),
                document: json!({"name": "Dune"}),
            })
            .unwrap();
        let Committed::Local { block, .. } = r.committed else {
            panic!()
        };
        store
            .commit(Mutation::Update {
                doc_id: block.doc_id(),
                patch: json!({"likes": 3}),
            })
            .unwrap();
        (block.doc_id(), store.nonce_seq().unwrap())
    };
    assert_eq!(nonce_seq, 1);
    let store = Store::open(&path, config()).unwrap();
    assert_eq!(store.nonce_seq().unwrap(), nonce_seq);
    assert_eq!(store.replicators().unwrap().len(), 1);
    assert_eq!(store.subscriptions().unwrap().collections.len(), 1);
    assert_eq!(store.outbox(&peer, 10).unwrap().documents, vec![doc]);
    assert_eq!(store.peer(&peer).unwrap().unwrap().last_seen, 7);
    assert_eq!(store.document(&doc).unwrap().unwrap()["likes"], 3);
    // The reopened committer continues the nonce sequence and the outbox hook.
    let r = store
        .commit(Mutation::Update {
            doc_id: doc,
            patch: json!({"likes": 1}),
        })
        .unwrap();
    let Committed::Local { block, .. } = r.committed else {
        panic!()
    };
    assert_eq!(store.nonce_seq().unwrap(), 2);
    assert_eq!(store.state(&doc).unwrap().unwrap().heads, vec![block.cid()]);
    assert_eq!(store.verify_blocks().unwrap(), 3);
}

#[test]
fn second_open_is_locked_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let _store = Store::open(&path, config()).unwrap();
    let err = Store::open(&path, config()).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn other_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    Store::open(&path, config()).unwrap().close();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(Raw::new("meta"))
            .unwrap()
            .insert(&b"format_version"[..], &99u32.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, config()).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::FormatVersion {
                found: 99,
                expected: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 99"));
}

#[test]
fn version_1_file_is_migrated_with_its_sync_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (books, root, items) = {
        let store = Store::open(&path, config()).unwrap();
        store
            .commit(Mutation::AddSchema { sdl: SDL.into() })
            .unwrap();
        for i in 0..20 {
            let r = store
                .commit(Mutation::Create {
                    collection: "Books".into(),
                    document: json!({"name": format!("b{i}")}),
                })
                .unwrap();
            let Committed::Local { block, .. } = r.committed else {
                panic!()
            };
            if i % 4 == 0 {
                store
                    .commit(Mutation::Delete {
                        doc_id: block.doc_id(),
                    })
                    .unwrap();
            }
        }
        let books = store.collection("Books").unwrap().unwrap().id();
        let out = (
            books,
            store.sync_root(&books),
            store.sync_items(&books, None, usize::MAX),
        );
        store.close();
        out
    };
    // Make it the file version 1 wrote: no sync tables, format version 1.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(Raw::new("sync_items")).unwrap());
        assert!(txn.delete_table(Raw::new("sync_roots")).unwrap());
        txn.open_table(Raw::new("meta"))
            .unwrap()
            .insert(&b"format_version"[..], &1u32.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path, config()).unwrap();
    assert_eq!(store.sync_root(&books), root);
    assert_eq!(store.sync_items(&books, None, usize::MAX), items);
    assert_eq!(store.verify_sync_index().unwrap(), 20);
    store.close();
    // Migrated once: the file is version 2 now.
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(Raw::new("meta")).unwrap();
    let version = meta.get(&b"format_version"[..]).unwrap().unwrap();
    assert_eq!(version.value(), &2u32.to_be_bytes()[..]);
}

#[test]
fn garbage_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, garbage).unwrap();
    let err = Store::open(&path, config()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn foreign_redb_file_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(Raw::new("other"))
            .unwrap()
            .insert(&b"k"[..], &b"v"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, config()).unwrap_err();
    assert!(matches!(err, OpenError::NotAStore { .. }), "{err:?}");
}

#[test]
fn unreadable_file_is_permission_denied() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    Store::open(&path, config()).unwrap().close();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&path).is_ok() {
        // Root (CAP_DAC_OVERRIDE) opens any file, so there is nothing to test.
        eprintln!("skipped: running as root, file permissions are not enforced");
        return;
    }
    let err = Store::open(&path, config()).unwrap_err();
    assert!(matches!(err, OpenError::PermissionDenied { .. }), "{err:?}");
}

#[test]
fn block_corrupted_on_disk_is_detected_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (doc, cid) = {
        let store = Store::open(&path, config()).unwrap();
        store
            .commit(Mutation::AddSchema { sdl: SDL.into() })
            .unwrap();
        let r = store
            .commit(Mutation::Create {
                collection: "Books".into(),
                document: json!({"name": "Dune"}),
            })
            .unwrap();
        let Committed::Local { block, .. } = r.committed else {
            panic!()
        };
        (block.doc_id(), block.cid())
    };
    {
        // Flip one byte of the stored block through redb itself (checksums stay valid).
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(Raw::new("blocks")).unwrap();
            let mut v = t
                .get(&cid.to_bytes()[..])
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let last = v.len() - 1;
            v[last] ^= 0x40;
            t.insert(&cid.to_bytes()[..], &v[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path, config()).unwrap();
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
        store.history(&doc, 5),
        Err(ReadError::Corrupted { .. })
    ));
}
