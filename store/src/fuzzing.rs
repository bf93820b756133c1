//! The store opened on any redb [`StorageBackend`](redb::StorageBackend), and the body of the
//! `store_io_errors` cargo-fuzz target, as a plain function so ordinary tests replay committed
//! inputs too. Enabled by the `fuzzing` feature.
//!
//! [`open_on`] is [`Store::open`] with a backend in place of a path: the same format check,
//! migration and committer, so a backend that injects I/O errors exercises exactly the code a
//! node runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arbitrary::{Arbitrary, Unstructured};
use hypha_crdt::{Author, Replica, VerifiedBlock, parse_sdl};
use serde_json::json;

use crate::{
    CommitError, Committed, Config, Mutation, OpenError, PeerKey, PeerRecord, Store, open_error,
};

/// Opens the store on `backend`, creating it when the backend is empty, as [`Store::open`]
/// does for a file. `name` stands for the path in errors.
///
/// # Errors
/// As [`Store::open`].
pub fn open_on(
    backend: impl redb::StorageBackend,
    name: &str,
    config: Config,
) -> Result<Store, OpenError> {
    let path = std::path::PathBuf::from(name);
    let db = redb::Builder::new()
        .create_with_backend(backend)
        .map_err(|e| open_error(&path, e))?;
    Store::from_redb(db, config, path)
}

/// The bytes of a simulated disk: what was written, and what the last `sync_data` made
/// durable.
#[derive(Debug, Default)]
struct Disk {
    written: Vec<u8>,
    synced: Vec<u8>,
}

/// Which operations fail, and when.
#[derive(Debug, Default)]
struct Fault {
    /// Operations of the chosen kinds left before the first failure.
    countdown: AtomicU64,
    /// Bit 0 write, 1 sync, 2 read, 3 set_len.
    kinds: AtomicU64,
    armed: AtomicBool,
    /// Once tripped, every later operation of those kinds fails too.
    sticky: bool,
    /// A failing write writes its first half first.
    torn: bool,
    tripped: AtomicBool,
}

/// A redb backend over a shared [`Disk`] that fails the operations a [`Fault`] picks.
#[derive(Debug, Clone)]
struct Faulty {
    disk: Arc<Mutex<Disk>>,
    fault: Arc<Fault>,
}

const WRITE: u64 = 1;
const SYNC: u64 = 2;
const READ: u64 = 4;
const SET_LEN: u64 = 8;

impl Faulty {
    /// A backend over an empty disk that fails what `fault` picks.
    fn new(fault: Arc<Fault>) -> Faulty {
        Faulty {
            disk: Arc::default(),
            fault,
        }
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A power loss: what was written since the last `sync_data` is gone.
    fn lose_power(&self) {
        let mut disk = self.disk();
        disk.written = disk.synced.clone();
    }

    /// Opens (or creates) the store on this disk, as every run here does.
    fn open(&self) -> Result<Store, OpenError> {
        let config = Config::new(Author::unsigned([1; 32])).with_namespace(NAMESPACE);
        open_on(self.clone(), "fuzz", config)
    }

    /// Whether this operation of `kind` fails.
    fn fails(&self, kind: u64) -> bool {
        let f = &self.fault;
        if !f.armed.load(Ordering::SeqCst) || f.kinds.load(Ordering::SeqCst) & kind == 0 {
            return false;
        }
        if f.tripped.load(Ordering::SeqCst) {
            return f.sticky;
        }
        if f.countdown.load(Ordering::SeqCst) == 0 {
            f.tripped.store(true, Ordering::SeqCst);
            return true;
        }
        f.countdown.fetch_sub(1, Ordering::SeqCst);
        false
    }
}

fn injected() -> std::io::Error {
    std::io::Error::other("injected I/O error")
}

impl redb::StorageBackend for Faulty {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.disk().written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        if self.fails(READ) {
            return Err(injected());
        }
        let disk = self.disk();
        let start = usize::try_from(offset).map_err(|_| injected())?;
        let source = disk
            .written
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.fails(SET_LEN) {
            return Err(injected());
        }
        let len = usize::try_from(len).map_err(|_| injected())?;
        self.disk().written.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fails(SYNC) {
            return Err(injected());
        }
        let mut disk = self.disk();
        disk.synced = disk.written.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let fail = self.fails(WRITE);
        let data = if fail && self.fault.torn {
            &data[..data.len() / 2]
        } else if fail {
            return Err(injected());
        } else {
            data
        };
        let start = usize::try_from(offset).map_err(|_| injected())?;
        let mut disk = self.disk();
        if disk.written.len() < start + data.len() {
            disk.written.resize(start + data.len(), 0);
        }
        disk.written[start..start + data.len()].copy_from_slice(data);
        if fail {
            return Err(injected());
        }
        Ok(())
    }
}

/// The fault plan and mutations of one [`store_io_errors`] run.
#[derive(Debug, Arbitrary)]
struct Plan {
    /// Operations of the chosen kinds that succeed before the first failure.
    after: u16,
    /// Which kinds fail (see [`Fault::kinds`]); 0 picks writes.
    kinds: u8,
    sticky: bool,
    torn: bool,
    /// Reopen on what the last `sync_data` made durable (a power loss) rather than on every
    /// byte written (a process crash).
    power_loss: bool,
    ops: Vec<Op>,
}

/// One mutation, or a restart.
#[derive(Debug, Arbitrary)]
enum Op {
    Create {
        name: u8,
        points: i8,
    },
    Update {
        doc: u8,
        points: i8,
        name: u8,
    },
    Delete {
        doc: u8,
    },
    /// A block made elsewhere (pending until its parents arrive, when they are not here).
    Ingest {
        block: u8,
    },
    Remember {
        peer: u8,
        address: u8,
    },
    Subscribe {
        doc: u8,
    },
    /// Closes the store and opens it again on the same bytes, the fault still armed.
    Restart,
}

const SDL: &str = "type T { name: String points: Int @crdt(type: pncounter) }";
const NAMESPACE: &str = "hypha";

/// What the store acknowledged as durable.
#[derive(Default)]
struct Acked {
    schema: bool,
    blocks: Vec<VerifiedBlock>,
    peers: Vec<(PeerKey, PeerRecord)>,
}

/// Blocks made by another replica: a create, updates, a delete.
fn foreign_blocks() -> Vec<VerifiedBlock> {
    let schema = parse_sdl(NAMESPACE, SDL).expect("static schema parses");
    let mut other = Replica::new(schema, Author::unsigned([9; 32]));
    let (doc, genesis) = other
        .create("T", &json!({"name": "x", "points": 0}))
        .expect("create");
    let mut blocks = vec![genesis];
    for i in 0..6 {
        blocks.push(other.update(doc, &json!({"points": i})).expect("update"));
    }
    blocks.push(other.delete(doc).expect("delete"));
    blocks
}

/// Runs arbitrary mutations on a store whose backend fails one chosen operation (or every one
/// after it). Every failure must be a typed error, never a panic; after reopening on the same
/// bytes with the fault off, every mutation that was acknowledged is there, the store
/// verifies, and new commits work.
pub fn store_io_errors(data: &[u8]) {
    if let Ok(plan) = Plan::arbitrary(&mut Unstructured::new(data)) {
        run_plan(&plan);
    }
}

fn run_plan(plan: &Plan) {
    let kinds = match u64::from(plan.kinds) & (WRITE | SYNC | READ | SET_LEN) {
        0 => WRITE,
        k => k,
    };
    let fault = Arc::new(Fault {
        countdown: AtomicU64::new(u64::from(plan.after)),
        kinds: AtomicU64::new(kinds),
        armed: AtomicBool::new(true),
        sticky: plan.sticky,
        torn: plan.torn,
        tripped: AtomicBool::new(false),
    });
    let backend = Faulty::new(Arc::clone(&fault));
    let foreign = foreign_blocks();
    let mut acked = Acked::default();
    let mut docs = Vec::new();
    // Opening may fail (typed) when the fault trips during it; so may every mutation.
    let mut store = backend.open().ok();
    // A store whose creation failed part-way may be refused later (typed), like a truncated
    // file: only a store that was created once must reopen.
    let mut created = store.is_some();
    let commit = |store: &Option<Store>, m: Mutation| -> Option<Result<Committed, CommitError>> {
        store.as_ref().map(|s| s.commit(m).map(|r| r.committed))
    };
    if let Some(Ok(_)) = commit(&store, Mutation::AddSchema { sdl: SDL.into() }) {
        acked.schema = true;
    }
    for op in plan.ops.iter().take(48) {
        let mutation = match *op {
            Op::Create { name, points } => Mutation::Create {
                collection: "T".into(),
                document: json!({"name": format!("{}", name % 8), "points": points}),
            },
            Op::Update { doc, points, name } => {
                let Some(&doc) = docs.get(usize::from(doc) % docs.len().max(1)) else {
                    continue;
                };
                Mutation::Update {
                    doc_id: doc,
                    patch: json!({"points": points, "name": format!("{name}")}),
                }
            }
            Op::Delete { doc } => {
                let Some(&doc) = docs.get(usize::from(doc) % docs.len().max(1)) else {
                    continue;
                };
                Mutation::Delete { doc_id: doc }
            }
            Op::Ingest { block } => Mutation::Ingest {
                block: foreign[usize::from(block) % foreign.len()].clone(),
            },
            Op::Remember { peer, address } => Mutation::RememberPeer {
                peer: PeerKey(vec![peer]),
                record: PeerRecord {
                    addresses: vec![vec![address; 8]],
                    last_seen: 0,
                },
            },
            Op::Subscribe { doc } => {
                let Some(&doc) = docs.get(usize::from(doc) % docs.len().max(1)) else {
                    continue;
                };
                Mutation::Subscribe(crate::Subscription::Document(doc))
            }
            Op::Restart => {
                drop(store.take());
                store = backend.open().ok();
                created |= store.is_some();
                continue;
            }
        };
        let remembered = match &mutation {
            Mutation::RememberPeer { peer, record } => Some((peer.clone(), record.clone())),
            _ => None,
        };
        let ingested = match &mutation {
            Mutation::Ingest { block } => Some(block.clone()),
            _ => None,
        };
        match commit(&store, mutation) {
            Some(Ok(Committed::Local { block, .. })) => {
                if !docs.contains(&block.doc_id()) {
                    docs.push(block.doc_id());
                }
                acked.blocks.push(block);
            }
            Some(Ok(Committed::Ingested { .. })) => {
                // Applied or parked as pending: durable either way.
                acked.blocks.extend(ingested);
            }
            Some(Ok(Committed::Meta { .. })) => acked.peers.extend(remembered),
            // Every failure is a typed `CommitError`; storage faults are `Storage` (or
            // `Closed`, once the committer stopped). A failed batch may still be on disk when
            // the final sync failed (`CommitError::Storage`'s docs): nothing is checked of it.
            Some(Err(_)) | None => {}
        }
    }
    drop(store);

    // Restart with the fault off, on the bytes a process crash or a power loss leaves.
    fault.armed.store(false, Ordering::SeqCst);
    if plan.power_loss {
        backend.lose_power();
    }
    let store = match backend.open() {
        Ok(store) => store,
        Err(e) if created => panic!("reopening after the faults failed: {e:#?}"),
        Err(_) => {
            *backend.disk() = Disk::default();
            backend.open().expect("a new store opens")
        }
    };
    let blocks = store
        .verify_blocks()
        .expect("blocks verify after the faults");
    store
        .verify_sync_index()
        .expect("the sync index verifies after the faults");
    if acked.schema {
        assert!(
            store.collection("T").expect("readable").is_some(),
            "an acknowledged schema was lost"
        );
    }
    for block in &acked.blocks {
        assert!(
            store.contains(&block.cid()).expect("readable"),
            "an acknowledged block was lost: {} ({} blocks stored)",
            block.cid(),
            blocks
        );
    }
    for (peer, record) in &acked.peers {
        // A later acknowledged record of the same peer may have replaced this one.
        let last = acked.peers.iter().rev().find(|(p, _)| p == peer);
        if last.map(|(_, r)| r) == Some(record) {
            assert_eq!(
                store.peer(peer).expect("readable").as_ref(),
                Some(record),
                "an acknowledged peer record was lost"
            );
        }
    }
    // New commits work.
    if store.collection("T").expect("readable").is_none() {
        store
            .commit(Mutation::AddSchema { sdl: SDL.into() })
            .expect("a schema commits after recovery");
    }
    let receipt = store
        .commit(Mutation::Create {
            collection: "T".into(),
            document: json!({"name": "after", "points": 1}),
        })
        .expect("a create commits after recovery");
    let Committed::Local { block, .. } = receipt.committed else {
        panic!("a create commits a local block");
    };
    store
        .commit(Mutation::Update {
            doc_id: block.doc_id(),
            patch: json!({"points": 2}),
        })
        .expect("an update commits after recovery");
    store.verify_blocks().expect("blocks verify after recovery");
    store
        .verify_sync_index()
        .expect("the sync index verifies after recovery");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stage;

    /// Every sync in turn fails once, during a run of ingests: acknowledged blocks survive.
    #[test]
    fn acknowledged_blocks_survive_a_failed_sync() {
        for after in 0..24 {
            let plan = Plan {
                after,
                kinds: SYNC as u8,
                sticky: false,
                torn: false,
                power_loss: false,
                ops: (0..8).map(|block| Op::Ingest { block }).collect(),
            };
            run_plan(&plan);
        }
    }

    /// The durable commit after a visible one fails: the mutation's ticket reports the
    /// failure, a barrier behind it fails too (it must not promise what is not on disk), and
    /// a power loss then leaves a store without it that verifies and takes new commits.
    #[test]
    fn a_visible_mutation_whose_durable_commit_fails_is_not_acknowledged() {
        let fault = Arc::new(Fault {
            kinds: AtomicU64::new(SYNC),
            ..Fault::default()
        });
        let backend = Faulty::new(Arc::clone(&fault));
        let store = backend.open().expect("opens");
        store
            .commit(Mutation::AddSchema { sdl: SDL.into() })
            .expect("schema");
        let block = foreign_blocks().remove(0);
        fault.armed.store(true, Ordering::SeqCst);
        let mut ticket = store.submit(Mutation::Ingest {
            block: block.clone(),
        });
        let visible = ticket.wait_until(Stage::Visible);
        assert!(visible.is_ok(), "visible: {visible:?}");
        assert!(matches!(ticket.wait(), Err(CommitError::Storage(_))));
        assert!(matches!(
            store.commit(Mutation::Barrier),
            Err(CommitError::Storage(_))
        ));
        drop(store);
        fault.armed.store(false, Ordering::SeqCst);
        backend.lose_power();
        let store = backend.open().expect("reopens");
        assert!(!store.contains(&block.cid()).expect("readable"));
        store.verify_blocks().expect("verifies");
        store.verify_sync_index().expect("the sync index verifies");
        store
            .commit(Mutation::Ingest { block })
            .expect("commits again");
    }

    #[test]
    fn bodies_run_on_simple_inputs() {
        super::store_io_errors(&[]);
        super::store_io_errors(&[3; 64]);
        super::store_io_errors(&(0..=255).collect::<Vec<u8>>());
    }
}
