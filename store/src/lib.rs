//! The durable store of Hypha: blocks, document states, pending blocks and node metadata in one
//! redb file (or in memory, for tests and the simulator), written by group-committed
//! transactions.
//!
//! The store does no networking and reads no clock: times it keeps (a peer's `last_seen`) are
//! inputs. It does not hold the node's private key either; the [`hypha_crdt::Author`] that makes
//! local blocks is handed to it at open.
//!
//! # Durability contract
//!
//! Every change is a [`Mutation`], committed in **one** write transaction, all or nothing:
//! a local create/update/delete commits its block, the document's new state and heads, the
//! collection index entry, its sync-index item and its collection's new sync root, every
//! outbox entry it causes and the author's nonce sequence number together; a received block
//! commits with every pending block it releases and all of their outbox entries and sync
//! items. [`Ticket::wait`] (and [`Store::commit`]) returns only once the
//! transaction is **durable** — fsynced, surviving `kill -9` and power loss. That moment is
//! the replication ack point: a replicator target acknowledges a push only after it (DESIGN
//! §4), and the API answers a write only after it.
//!
//! Before that a transaction may be **visible** ([`Stage::Visible`], from
//! [`Ticket::wait_until`]): committed and seen by every read, not yet fsynced, so a crash can
//! still lose it — whole, never a part of it. A node acts on that stage for blocks received
//! from peers, which are owed no acknowledgement and come back by head exchange if a crash
//! loses them: the document is readable on the receiver (about 0.1 ms) without waiting for the
//! fsync (0.5–0.7 ms of a 10-page commit on the disk where it was measured). Whoever acted on a
//! visible read and then promises durability first passes a [`Mutation::Barrier`].
//!
//! A mutation that is refused (unknown collection, invalid JSON, a block the merge rejects, a
//! limit) writes nothing and fails alone. A storage failure rolls back its whole batch and
//! fails every mutation in it.
//!
//! Every block's bytes are re-hashed against its CID when written (an assertion: the bytes
//! come from a [`hypha_crdt::VerifiedBlock`]) and again whenever they are read; a read whose
//! bytes do not match is [`ReadError::Corrupted`], never data.
//!
//! # Group commit
//!
//! [`Store::submit`] puts a mutation on a bounded queue and returns a [`Ticket`] at once.
//! One committer thread takes whatever is queued — up to [`Config::with_max_batch`] mutations —
//! and runs each in the same write transaction (tables opened once per batch). A batch that
//! holds a received block and took all the queue held commits with `Durability::None`
//! (visible: its tickets learn [`Stage::Visible`]), then an empty transaction commits with
//! `Durability::Immediate` (one fsync) and the tickets learn [`Stage::Durable`]. Any other
//! batch — local writes and metadata only, or a full batch under load — commits with
//! `Durability::Immediate` at once, as one transaction. At most one batch is ever visible and
//! not durable. Concurrent writers therefore share fsyncs: [`Stats::commits`] counts them and
//! [`Receipt::commit`] says which one carried a mutation. When the queue is full, [`Store::submit`] blocks (back-pressure) and
//! [`Store::try_submit`] returns [`CommitError::Busy`].
//!
//! # What the committer keeps in memory
//!
//! Besides the schemas, the replicators and the nonce sequence, the committer keeps bounded
//! caches of what it wrote lately, so that under load the merge rarely reads the B-trees:
//! - the decoded states of the documents written most recently (at most 16,384 documents and
//!   4 MiB of encoded state in each of two generations);
//! - what it knows of the blocks applied most recently, by CID (16,384 in each of two
//!   generations): a new block's parents are almost always among them;
//! - every replicator's outbox size and catch-up marker;
//! - the sync-index points of recent items (16,384 in each of two generations).
//!
//! Each cache is write-through: it changes in the same step as the write it mirrors, so it
//! never holds what the transaction does not. A batch that rolls back empties all of them but
//! the points (a point is a pure function of its item). Two generations (not an LRU) keep a
//! working set that fits in one of them even when it is written in a cycle. Under load they
//! cut the committer's own work per received block by about a third (the
//! `ingest_vs_redb_ratio` benchmark, README).
//!
//! # Outboxes
//!
//! For every block applied — local, received, or released from pending — each replicator whose
//! scope holds the block's collection or document gets the entry `(peer, docID)`: at most one
//! per document, since the current heads are read at push time. When a peer's outbox holds
//! [`Config::with_max_outbox_per_peer`] entries and one more is due, its entries collapse into
//! a *catch-up* marker: the replicator catches the peer up by head exchange and then clears the
//! marker ([`Mutation::ClearCatchUp`]); until then no entries are added. An entry is dropped
//! by [`Mutation::AckOutbox`] only if the acknowledged heads are still the document's heads, so
//! a block committed while a push was in flight is never lost from the outbox. Setting a replicator
//! whose scope is new sets the marker as well. The outbox hook lives in the merge's
//! `put_applied`, so the cascade of released pending blocks is covered.
//!
//! # Sync index
//!
//! The store keeps the [sync index](hypha_crdt::sync_index) of every collection current: each
//! block the merge applies (local, received, or released from pending) writes its
//! document's item — the hash of its new heads — into `sync_items`, and the batch writes the
//! new root of each collection it changed into `sync_roots`, in the same transaction. The
//! index is held in memory for head exchange ([`Store::sync_root`], [`Store::sync_sketch`],
//! [`Store::sync_items`], [`Store::sync_item`], [`Store::sync_collections`]); the committer
//! applies a batch's changes to it once the batch is committed (visible) and before answering
//! its tickets, so a rolled-back batch never shows there. (A batch whose durable commit then
//! fails stays there until the store is opened again: redb refuses every later write, and
//! the reopen rebuilds the index from the file.) Deleted documents keep their items.
//!
//! At open the in-memory index is rebuilt from one scan of `sync_items`, taking each root from
//! `sync_roots` rather than recomputing it: recomputing costs one hash-to-curve per document
//! (12 s per 10⁶ documents where it was measured), the rebuild 0.36 s (`cargo bench -p
//! hypha-crdt --bench sync_index`: `hs_root_recompute_ms_per_1m`, `hs_index_rebuild_ms_per_1m`;
//! the whole open, redb scan included, is `hs_store_open_ms_per_1m` of `--bench ingest`,
//! 0.6–0.9 s per 10⁶ extrapolated from 10⁴). The
//! price is one root write per collection per batch and up to two hash-to-curve maps per
//! changed document per batch — one for a new document, and one for a document whose old item
//! the committer hashed recently (it keeps the points of the latest 16–32 Ki items) — spread
//! over the cores for big batches. [`Store::verify_sync_index`] checks persisted items, roots
//! and the in-memory copy against the documents.
//!
//! # Limits
//!
//! | what | default | why |
//! |---|---|---|
//! | queue ([`Config::with_queue_capacity`]) | 4,096 mutations | bounds memory; full → back-pressure |
//! | batch ([`Config::with_max_batch`]) | 1,024 mutations | bounds a transaction's size and the latency of its waiters |
//! | outbox per peer ([`Config::with_max_outbox_per_peer`]) | 10,000 documents | past it a head exchange is cheaper than per-document pushes |
//! | pending blocks ([`hypha_crdt::Limits`]) | 100,000 | from the merge |
//! | replicators / scope per replicator | [`MAX_REPLICATORS`] / [`MAX_REPLICATOR_SCOPE`] | bounded metadata |
//! | subscriptions / remembered peers | [`MAX_SUBSCRIPTIONS`] / [`MAX_PEERS`] | bounded metadata |
//! | peer key / addresses | [`MAX_PEER_KEY_LEN`] bytes / [`MAX_ADDRESSES`] × [`MAX_ADDRESS_LEN`] bytes | bounded records |
//!
//! # On-disk layout
//!
//! One redb file; every table maps bytes to bytes. Integers are big-endian; `cid` is a CID in
//! binary form (36 bytes for a block: CIDv1, dag-cbor, sha2-256), `doc` a docID's 16 UUID
//! bytes, `peer` a [`PeerKey`]'s bytes.
//!
//! ```text
//! table            key                                 value
//! blocks           cid                                 doc[16] ‖ priority u64 ‖ block bytes (DAG-CBOR)
//! pending          cid                                 n u16 ‖ n × parent cid[36] ‖ block bytes
//! waiting          parent cid[36] ‖ child cid[36]      (empty)          pending child waits on parent
//! states           doc[16]                             DocState as DAG-CBOR (heads, height, fields…)
//! collection_docs  collection cid[36] ‖ doc[16]        deleted u8
//! schema           collection name (UTF-8)             len u16 ‖ namespace ‖ canonical SDL
//! replicators      peer                                nc u32 ‖ nc × (len u8 ‖ collection cid)
//!                                                      ‖ nd u32 ‖ nd × doc[16] ‖ addresses
//! subscriptions    0 ‖ collection cid | 1 ‖ doc[16]    (empty)
//! outbox           len u8 ‖ peer ‖ doc[16]             (empty)
//! outbox_meta      peer                                entries u64 ‖ catch_up u8
//! peers            peer                                last_seen u64 ‖ addresses
//! sync_items       collection cid[36] ‖ doc[16]        item[32] = SHA-256("hypha/sync-item/v1\0"
//!                                                      ‖ doc ‖ each head cid, sorted)
//! sync_roots       collection cid[36]                  digest[32] ‖ count u64
//!                                                      (compressed Ristretto255 sum of the
//!                                                      collection's item points; no entry = empty)
//! meta             "format_version"                    u32 (currently 2)
//!                  "nonce_seq"                         u64, the author's next nonce sequence
//!
//! addresses = n u16 ‖ n × (len u16 ‖ bytes)
//! ```
//!
//! Every document with a state has exactly one `sync_items` entry, under its collection, and
//! each `sync_roots` entry is the [`Root`](hypha_crdt::sync_index::Root) of its collection's
//! entries. Version 2 added those two tables; a version-1 file is migrated when opened (its
//! sync index built from the states, one transaction). A file of any other `format_version` is
//! refused with [`OpenError::FormatVersion`].
//!
//! # Example
//!
//! ```
//! use hypha_crdt::Author;
//! use hypha_store::{Committed, Config, Mutation, PeerKey, Replicator, Store};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("hypha.redb"), Config::new(Author::unsigned([7; 32])))?;
//! store.commit(Mutation::AddSchema { sdl: "type Books { name: String likes: Int @crdt(type: pncounter) }".into() })?;
//! let books = store.collection("Books")?.unwrap().id();
//! let peer = PeerKey(b"peer-1".to_vec());
//! let replicator = Replicator { collections: [books].into(), ..Replicator::default() };
//! store.commit(Mutation::SetReplicator { peer: peer.clone(), replicator })?;
//! store.commit(Mutation::ClearCatchUp { peer: peer.clone() })?;
//!
//! // Durable once `commit` returns: block, state, heads, index and outbox entry together.
//! let receipt = store.commit(Mutation::Create { collection: "Books".into(), document: json!({"name": "Dune"}) })?;
//! let Committed::Local { block, .. } = receipt.committed else { unreachable!() };
//! let doc = block.doc_id();
//! assert_eq!(store.state(&doc)?.unwrap().heads, vec![block.cid()]);
//! assert_eq!(store.outbox(&peer, 10)?.documents, vec![doc]);
//!
//! // Many writers share fsyncs: submit first, wait later.
//! let tickets: Vec<_> = (0..10)
//!     .map(|_| store.submit(Mutation::Update { doc_id: doc, patch: json!({"likes": 1}) }))
//!     .collect();
//! for t in tickets { t.wait()?; }
//! assert_eq!(store.document(&doc)?.unwrap()["likes"], 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod committer;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod layout;
mod meta;
mod mutation;
mod read;
mod recent;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use hypha_crdt::{Author, Limits};

pub use crate::committer::{Receipt, Stage, Ticket};
pub use crate::error::{CommitError, OpenError, ReadError, StorageError};
pub use crate::meta::{
    MAX_ADDRESS_LEN, MAX_ADDRESSES, MAX_PEER_KEY_LEN, MAX_REPLICATOR_SCOPE, Outbox, PeerKey,
    PeerRecord, Replicator, Subscription, Subscriptions,
};
pub use crate::mutation::{
    Committed, MAX_DROP_PENDING, MAX_HOT_DOCUMENTS, MAX_PEERS, MAX_REPLICATORS, MAX_SUBSCRIPTIONS,
    Mutation,
};
pub use crate::read::Stats;

use crate::backend::Backend;
use crate::committer::{Counters, Job};
use crate::layout::{FORMAT_VERSION, FORMAT_VERSION_V1, META_FORMAT, Table};
use crate::mutation::{Cache, Context};

/// The on-disk format version this build reads and writes.
pub const STORE_FORMAT_VERSION: u32 = FORMAT_VERSION;

/// The longest network namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Config {
    author: Author,
    namespace: String,
    limits: Limits,
    max_outbox_per_peer: u64,
    max_batch: usize,
    queue_capacity: usize,
}

impl Config {
    /// A configuration whose local blocks are made by `author` (its nonce sequence is taken
    /// from the store, not from `author`).
    pub fn new(author: Author) -> Config {
        Config {
            author,
            namespace: "hypha".to_owned(),
            limits: Limits::default(),
            max_outbox_per_peer: 10_000,
            max_batch: 1024,
            queue_capacity: 4096,
        }
    }

    /// The network namespace schemas are declared in. Default `"hypha"`; at most
    /// [`MAX_NAMESPACE_LEN`] bytes (longer ones are cut).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Config {
        let mut namespace = namespace.into();
        while namespace.len() > MAX_NAMESPACE_LEN {
            namespace.pop();
        }
        self.namespace = namespace;
        self
    }

    /// The merge's limits. Default [`Limits::default`] (100,000 pending blocks).
    pub fn with_limits(mut self, limits: Limits) -> Config {
        self.limits = limits;
        self
    }

    /// How many documents a peer's outbox holds before it collapses into the catch-up marker.
    /// Default 10,000: beyond that a head exchange is cheaper than per-document pushes, and the
    /// outbox stays a few hundred KiB per peer.
    pub fn with_max_outbox_per_peer(mut self, max: u64) -> Config {
        self.max_outbox_per_peer = max;
        self
    }

    /// The most mutations in one transaction (one fsync). Default 1,024: large enough that
    /// fsync cost is shared widely, small enough to bound the transaction's memory and the
    /// wait of its first mutation. At least 1.
    pub fn with_max_batch(mut self, max: usize) -> Config {
        self.max_batch = max.max(1);
        self
    }

    /// How many mutations may wait in the queue. Default 4,096. At least 1.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Config {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The merge's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many documents a peer's outbox holds before it collapses into the catch-up marker.
    pub fn max_outbox_per_peer(&self) -> u64 {
        self.max_outbox_per_peer
    }

    /// The most mutations in one transaction.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// How many mutations may wait in the queue.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
}

/// The store: reads from any thread, writes through the group-committing queue.
///
/// `Store` is `Send + Sync`; share it with an `Arc`. Dropping it (or [`Store::close`]) lets
/// the committer finish every queued mutation, then stops it.
pub struct Store {
    backend: Arc<Backend>,
    queue: Option<SyncSender<Job>>,
    committer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    sync: Arc<sync::Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.backend {
            Backend::Redb(_) => "redb",
            Backend::Memory(_) => "memory",
        };
        f.debug_struct("Store").field("backend", &kind).finish()
    }
}

impl Store {
    /// Opens the store file at `path`, creating it (with the current format version) if it
    /// does not exist or is empty.
    ///
    /// # Errors
    /// [`OpenError`], naming `path`: [`OpenError::Locked`] when another process (or handle)
    /// has it open, [`OpenError::Corrupt`] for a file that is not a redb database or fails its
    /// checks, [`OpenError::PermissionDenied`], [`OpenError::FormatVersion`] for a store of
    /// another version, [`OpenError::NotAStore`] for a foreign redb file.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let db = backend::redb_open(&path).map_err(|e| open_error(&path, e))?;
        Store::from_redb(db, config, path)
    }

    /// A store on an opened redb database: its format checked (and a v1 store migrated),
    /// then the committer started. `path` names it in errors.
    pub(crate) fn from_redb(
        db: redb::Database,
        config: Config,
        path: PathBuf,
    ) -> Result<Store, OpenError> {
        let migrate = init_format(&db, &path)?;
        let backend = Backend::Redb(db);
        if migrate {
            migrate_v1(&backend).map_err(|source| OpenError::Storage {
                path: path.clone(),
                source,
            })?;
        }
        Store::start(backend, config, path)
    }

    /// A store in memory with the same API and semantics; "durable" means committed.
    ///
    /// # Errors
    /// [`OpenError::Thread`] if the committer thread cannot be started.
    pub fn memory(config: Config) -> Result<Store, OpenError> {
        Store::start(
            Backend::Memory(Box::default()),
            config,
            PathBuf::from(":memory:"),
        )
    }

    fn start(backend: Backend, config: Config, path: PathBuf) -> Result<Store, OpenError> {
        let (cache, index) = backend
            .read(|tx| Ok((Cache::load(tx)?, sync::load(tx)?)))
            .map_err(|source| OpenError::Storage {
                path: path.clone(),
                source,
            })?;
        let index = Arc::new(sync::Shared::new(index));
        let cx = Context {
            cache,
            author: config.author,
            namespace: config.namespace,
            limits: config.limits,
            max_outbox: config.max_outbox_per_peer,
            sync: sync::Batch::default(),
        };
        let backend = Arc::new(backend);
        let counters = Arc::new(Counters::default());
        let (queue, rx) = sync_channel(config.queue_capacity);
        let committer = {
            let backend = Arc::clone(&backend);
            let counters = Arc::clone(&counters);
            let index = Arc::clone(&index);
            let max_batch = config.max_batch;
            std::thread::Builder::new()
                .name("hypha-store-committer".into())
                .spawn(move || committer::run(backend, cx, rx, max_batch, counters, index))
                .map_err(|source| OpenError::Thread { path, source })?
        };
        Ok(Store {
            backend,
            queue: Some(queue),
            committer: Some(committer),
            counters,
            sync: index,
        })
    }

    /// Queues `mutation` and returns at once with a ticket; blocks only while the queue is full
    /// (back-pressure).
    pub fn submit(&self, mutation: Mutation) -> Ticket {
        let Some(queue) = &self.queue else {
            return Ticket::failed(CommitError::Closed);
        };
        let (job, ticket) = Job::new(mutation);
        match queue.send(job) {
            Ok(()) => ticket,
            Err(_) => Ticket::failed(CommitError::Closed),
        }
    }

    /// Queues `mutation` like [`Store::submit`], and calls `notify` once it reaches `until`
    /// or fails, instead of returning a [`Ticket`] to wait on: for an event loop, which must
    /// not block on a ticket, without a thread to wait for it (one wake-up less per result).
    /// `notify` is called exactly once — with [`CommitError::Closed`] if the store closed
    /// first — on the committer thread, so it must only hand the result on (into a channel
    /// that wakes the loop, say): every other mutation waits while it runs. Blocks only while
    /// the queue is full (back-pressure).
    pub fn submit_notify(
        &self,
        mutation: Mutation,
        until: Stage,
        notify: impl FnOnce(Result<Receipt, CommitError>) + Send + 'static,
    ) {
        let job = Job::notify(mutation, until, Box::new(notify));
        if let Some(queue) = &self.queue {
            // A closed queue hands the job back: dropping it calls `notify` with `Closed`.
            let _ = queue.send(job);
        }
    }

    /// Queues `mutation` without blocking.
    ///
    /// # Errors
    /// [`CommitError::Busy`] when the queue is full, [`CommitError::Closed`] after close.
    pub fn try_submit(&self, mutation: Mutation) -> Result<Ticket, CommitError> {
        let Some(queue) = &self.queue else {
            return Err(CommitError::Closed);
        };
        let (job, ticket) = Job::new(mutation);
        match queue.try_send(job) {
            Ok(()) => Ok(ticket),
            Err(TrySendError::Full(_)) => Err(CommitError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(CommitError::Closed),
        }
    }

    /// Submits `mutation` and waits until it is durable.
    ///
    /// # Errors
    /// As [`Ticket::wait`].
    pub fn commit(&self, mutation: Mutation) -> Result<Receipt, CommitError> {
        self.submit(mutation).wait()
    }

    /// Commits everything queued, stops the committer and closes the file.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.queue = None;
        if let Some(handle) = self.committer.take() {
            // A panicked committer already failed its waiters (their tickets report Closed).
            let _ = handle.join();
        }
    }

    #[cfg(test)]
    fn memory_backend(&self) -> &backend::Memory {
        match &*self.backend {
            Backend::Memory(m) => m,
            // invariant: only called by tests on memory stores.
            Backend::Redb(_) => unreachable!("not a memory store"),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            OpenError::PermissionDenied { path, source: io }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            OpenError::Corrupt {
                path,
                source: Arc::new(redb::StorageError::Io(io).into()),
            }
        }
        e @ (redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
        | redb::DatabaseError::UpgradeRequired(_)
        | redb::DatabaseError::RepairAborted) => OpenError::Corrupt {
            path,
            source: Arc::new(e.into()),
        },
        e => OpenError::Storage {
            path,
            source: StorageError::redb(e),
        },
    }
}

/// Builds the sync index of a version-1 file (written before it existed) and marks the file
/// as the current version, in one transaction: a crash in the middle leaves a version-1 file,
/// migrated again at the next open.
fn migrate_v1(backend: &Backend) -> Result<(), StorageError> {
    backend.write(|tx| {
        sync::rebuild(tx)?;
        tx.put(Table::Meta, META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
        Ok(())
    })
}

/// Writes the format record into a new file, or checks it in an existing one. Returns
/// whether the file is of version 1 and must be migrated.
fn init_format(db: &redb::Database, path: &Path) -> Result<bool, OpenError> {
    use redb::ReadableTable as _;
    let storage = |e: StorageError| OpenError::Storage {
        path: path.to_path_buf(),
        source: e,
    };
    let txn = db
        .begin_write()
        .map_err(|e| storage(StorageError::redb(e)))?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(|e| storage(StorageError::redb(e)))?
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    let meta_def: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new(Table::Meta.name());
    if tables.is_empty() {
        {
            let mut meta = txn
                .open_table(meta_def)
                .map_err(|e| storage(StorageError::redb(e)))?;
            meta.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes()[..])
                .map_err(|e| storage(StorageError::redb(e)))?;
        }
        txn.commit().map_err(|e| storage(StorageError::redb(e)))?;
        return backend::redb_create_tables(db)
            .map_err(storage)
            .map(|()| false);
    }
    let found = if tables.iter().any(|t| t == Table::Meta.name()) {
        let meta = txn
            .open_table(meta_def)
            .map_err(|e| storage(StorageError::redb(e)))?;
        let v = meta
            .get(META_FORMAT)
            .map_err(|e| storage(StorageError::redb(e)))?;
        v.map(|v| {
            <[u8; 4]>::try_from(v.value())
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX)
        })
    } else {
        None
    };
    let _ = txn.abort();
    match found {
        None => Err(OpenError::NotAStore {
            path: path.to_path_buf(),
        }),
        Some(FORMAT_VERSION) => backend::redb_create_tables(db)
            .map_err(storage)
            .map(|()| false),
        Some(FORMAT_VERSION_V1) => backend::redb_create_tables(db)
            .map_err(storage)
            .map(|()| true),
        Some(found) => Err(OpenError::FormatVersion {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests;
