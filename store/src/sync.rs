//! The sync index inside the store: persisted with every commit, held in memory for head
//! exchange.
//!
//! Each write transaction that applies a block writes its document's new item
//! (`ItemHash::of(doc, heads)`) into `sync_items` ([`record`], from the merge's
//! `put_applied`, so released pending blocks are covered), and at the end of the batch the
//! root of every collection it touched into `sync_roots` ([`finish`]): items and roots commit
//! with the blocks, all or nothing. The root's hash-to-curve work is done once per document
//! per batch (a document changed many times in one batch costs two points, not two per
//! change), skips the old item's point when the committer computed it recently ([`Points`]),
//! and runs on the machine's other cores while the batch runs ([`Batch::start`]), the rest
//! spread over the cores at the end of a big batch. Only once the transaction
//! is durable does the committer apply the same changes to the in-memory [`SyncIndex`]
//! ([`Shared::apply`]), reusing the root deltas; a batch that rolls back never reaches it.
//! At open the index is rebuilt from one scan of `sync_items` with the roots read from
//! `sync_roots` ([`load`]): no hash-to-curve.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::mpsc::{Sender, channel};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{Scope, ScopedJoinHandle};

use hypha_crdt::sync_index::{
    CollectionIndex, Iblt, ItemHash, ItemPoint, Root, RootDelta, SyncIndex,
};
use hypha_crdt::{Cid, CollectionId, DocId};

use crate::backend::{ReadTx, WriteTx};
use crate::error::{ReadError, StorageError};
use crate::layout::{self, Table};
use crate::mutation::read_state;
use crate::recent::Recent;

/// Below this many changed documents a batch's root deltas are computed on the committer
/// thread alone (a thread costs tens of microseconds; a point about ten).
const PARALLEL_MIN: usize = 64;
/// The most threads a batch's root deltas are spread over.
const MAX_THREADS: usize = 8;
/// From this many mutations in a batch, threads compute its points while it runs.
const AHEAD_MIN_JOBS: usize = 16;
/// Items handed to a thread computing points ahead at a time: one wake-up of a sleeping
/// thread (a futex call, about a microsecond) per item cost the committer a tenth of its time
/// under load; per chunk it is noise. The items of a chunk not yet full when the batch ends
/// go to the threads then.
const AHEAD_CHUNK: usize = 32;
/// Entries in each generation of the committer's cache of item points ([`Points`]).
const POINT_CACHE: usize = 16_384;
/// Up to this many items, opening a store checks (in debug builds) that every persisted
/// root is what its items hash to.
const CHECK_ROOTS_UP_TO: usize = 10_000;

/// The in-memory index, written by the committer after each durable batch and read by any
/// thread.
#[derive(Debug, Default)]
pub(crate) struct Shared(RwLock<SyncIndex>);

impl Shared {
    pub(crate) fn new(index: SyncIndex) -> Shared {
        Shared(RwLock::new(index))
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SyncIndex> {
        // Writers only apply changes that are computed in full beforehand; a panic in the
        // middle of one is a bug that stops the committer, and readers may still read.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SyncIndex> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a durable batch's changes.
    pub(crate) fn apply(&self, prepared: Vec<Prepared>) {
        if prepared.is_empty() {
            return;
        }
        let mut index = self.write();
        for p in prepared {
            index.apply(p.collection, p.changes, &p.delta);
        }
    }
}

/// The sync-index work of the committer: the changes of the batch being run (per collection
/// and document, the item before the batch — `None`: the document had none — and the
/// latest), the threads computing their points ahead, and the points of recent items, kept
/// across batches.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    changes: BTreeMap<CollectionId, BTreeMap<DocId, (Option<ItemHash>, ItemHash)>>,
    ahead: Vec<Sender<Vec<(DocId, ItemHash)>>>,
    /// Items not yet handed to a thread (fewer than [`AHEAD_CHUNK`]).
    chunk: Vec<(DocId, ItemHash)>,
    next: usize,
    points: Points,
}

/// A point computed for a document's item.
type Computed = ((DocId, ItemHash), ItemPoint);

/// The threads computing a batch's points while the committer runs it, and what they made.
pub(crate) struct Ahead<'scope> {
    handles: Vec<ScopedJoinHandle<'scope, Vec<Computed>>>,
}

impl Ahead<'_> {
    /// No thread: `finish` computes every point.
    pub(crate) fn none() -> Ahead<'static> {
        Ahead {
            handles: Vec::new(),
        }
    }
}

impl Batch {
    /// Starts a batch of `jobs` mutations. With at least [`AHEAD_MIN_JOBS`] of them and a core
    /// to spare, threads in `scope` compute the points of the items the batch writes while
    /// the committer runs it, so the hash-to-curve work overlaps the merge and storage work
    /// instead of following it.
    pub(crate) fn start<'scope>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        jobs: usize,
    ) -> Ahead<'scope> {
        self.reset();
        let spare = cores() - 1;
        let threads = if jobs >= AHEAD_MIN_JOBS {
            spare.min(MAX_THREADS)
        } else {
            0
        };
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = channel::<Vec<(DocId, ItemHash)>>();
            let worker = move || {
                rx.into_iter()
                    .flatten()
                    .map(|(d, i)| ((d, i), ItemPoint::of(&d, &i)))
                    .collect()
            };
            // A thread that cannot start leaves its share to `finish`.
            if let Ok(handle) = std::thread::Builder::new()
                .name("hypha-store-root".into())
                .spawn_scoped(scope, worker)
            {
                self.ahead.push(tx);
                handles.push(handle);
            }
        }
        Ahead { handles }
    }

    /// Closes the channels to the threads computing points ahead, so they end.
    pub(crate) fn stop_ahead(&mut self) {
        self.ahead.clear();
        self.chunk.clear();
    }

    /// Forgets the batch being run (the point cache stays).
    pub(crate) fn reset(&mut self) {
        self.changes.clear();
        self.stop_ahead();
        self.next = 0;
    }

    /// Hands `(doc, item)` to a thread computing points ahead, if there is one, once a chunk
    /// of them is ready.
    fn ask_ahead(&mut self, doc: DocId, item: ItemHash) {
        if self.ahead.is_empty() {
            return;
        }
        self.chunk.push((doc, item));
        if self.chunk.len() >= AHEAD_CHUNK {
            self.send_chunk();
        }
    }

    /// Hands the items gathered so far to the next thread computing points ahead.
    fn send_chunk(&mut self) {
        if self.ahead.is_empty() || self.chunk.is_empty() {
            return;
        }
        let at = self.next % self.ahead.len();
        self.next = self.next.wrapping_add(1);
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(AHEAD_CHUNK));
        // A thread that died leaves its share to `finish`.
        let _ = self.ahead[at].send(chunk);
    }
}

/// One collection's changes of a committed batch, ready for the in-memory index.
#[derive(Debug)]
pub(crate) struct Prepared {
    collection: CollectionId,
    changes: Vec<(DocId, Option<ItemHash>)>,
    delta: RootDelta,
}

/// Where [`record`] learns a document's item before the batch.
pub(crate) enum Before<'h> {
    /// The heads the document had (`None`: it had no state): its item is their hash, since
    /// every state's item is (what [`verify`] checks). Saves reading `sync_items`.
    Heads(Option<&'h [Cid]>),
    /// Read it from `sync_items`.
    Stored,
}

/// Records in `tx` (and in `batch`) that `doc` of `collection` now has `heads`. `before` is
/// asked only for the document's first change in the batch.
pub(crate) fn record(
    tx: &mut dyn WriteTx,
    batch: &mut Batch,
    collection: CollectionId,
    doc: DocId,
    heads: &[Cid],
    before: Before<'_>,
) -> Result<(), StorageError> {
    let item = ItemHash::of(&doc, heads);
    let key = layout::sync_item_key(collection, doc);
    let docs = batch.changes.entry(collection).or_default();
    match docs.get_mut(&doc) {
        // Changed again in this batch: its latest point is left to `finish`, so a document
        // changed many times costs one point, not one per change.
        Some((_, latest)) => *latest = item,
        None => {
            let before = match before {
                Before::Heads(heads) => {
                    let derived = heads.map(|heads| ItemHash::of(&doc, heads));
                    debug_assert_eq!(
                        derived,
                        stored_item(tx, &key)?,
                        "a state's item is the hash of its heads"
                    );
                    derived
                }
                Before::Stored => stored_item(tx, &key)?,
            };
            docs.insert(doc, (before, item));
            if let Some(before) = before
                && batch.points.get(&doc, &before).is_none()
            {
                batch.ask_ahead(doc, before);
            }
            batch.ask_ahead(doc, item);
        }
    }
    tx.put(Table::SyncItems, &key, &item.0)?;
    Ok(())
}

fn stored_item(tx: &dyn WriteTx, key: &[u8]) -> Result<Option<ItemHash>, StorageError> {
    match tx.get(Table::SyncItems, key)? {
        Some(v) => Ok(Some(layout::decode_item(&v)?)),
        None => Ok(None),
    }
}

/// Ends a batch: writes the new root of every collection it changed into `tx` and returns
/// what the in-memory index must apply once `tx` is durable. Empties `batch`.
pub(crate) fn finish(
    tx: &mut dyn WriteTx,
    batch: &mut Batch,
    ahead: Ahead<'_>,
) -> Result<Vec<Prepared>, StorageError> {
    batch.send_chunk();
    batch.stop_ahead();
    let mut known = Known::default();
    for handle in ahead.handles {
        // A thread that died leaves its share to `deltas`.
        if let Ok(points) = handle.join() {
            known.extend(points);
        }
    }
    let changes = std::mem::take(&mut batch.changes);
    let pairs: Vec<(CollectionId, DocId, Option<ItemHash>, ItemHash)> = changes
        .iter()
        .flat_map(|(c, docs)| {
            docs.iter()
                .filter(|(_, (before, latest))| *before != Some(*latest))
                .map(|(d, (before, latest))| (*c, *d, *before, *latest))
        })
        .collect();
    let mut deltas = deltas(&pairs, &mut batch.points, known);
    let mut prepared = Vec::with_capacity(changes.len());
    for (collection, docs) in changes {
        let delta = deltas.remove(&collection).unwrap_or_default();
        if delta.is_empty() {
            continue;
        }
        let key = collection.0.to_bytes();
        let old = match tx.get(Table::SyncRoots, &key)? {
            Some(v) => layout::decode_root(&v)?,
            None => Root::EMPTY,
        };
        let new = delta
            .apply(&old)
            .map_err(|_| Table::SyncRoots.corrupted())?;
        if new.count == 0 {
            tx.remove(Table::SyncRoots, &key)?;
        } else {
            tx.put(Table::SyncRoots, &key, &new.to_bytes())?;
        }
        let changes = docs
            .into_iter()
            .filter(|(_, (before, latest))| *before != Some(*latest))
            .map(|(d, (_, latest))| (d, Some(latest)))
            .collect();
        prepared.push(Prepared {
            collection,
            changes,
            delta,
        });
    }
    Ok(prepared)
}

/// Points known for items, by document and item: looked up only, never iterated.
pub(crate) type Known = HashMap<(DocId, ItemHash), ItemPoint, crate::recent::RandomState>;

/// The root delta of each collection's changed items. Points come from `known` (computed
/// ahead) or `points` (items the committer made recently); the others are computed, on
/// several threads when there are many, and every latest item's point is kept in `points`
/// for the next batches.
pub(crate) fn deltas(
    pairs: &[(CollectionId, DocId, Option<ItemHash>, ItemHash)],
    points: &mut Points,
    mut known: Known,
) -> BTreeMap<CollectionId, RootDelta> {
    let mut wanted = Vec::new();
    for (_, doc, before, latest) in pairs {
        for item in before.iter().chain([latest]) {
            if !known.contains_key(&(*doc, *item)) && points.get(doc, item).is_none() {
                wanted.push((*doc, *item));
            }
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    let computed = compute_points(&wanted);
    known.extend(wanted.into_iter().zip(computed));
    // invariant: every item's point was computed ahead, is cached, or was just computed; the
    // cache changes only below, after every lookup.
    let point = |doc: &DocId, item: &ItemHash, points: &Points| {
        known
            .get(&(*doc, *item))
            .copied()
            .or_else(|| points.get(doc, item))
            .expect("every point is known")
    };
    let mut out: BTreeMap<CollectionId, RootDelta> = BTreeMap::new();
    let mut latest_points = Vec::with_capacity(pairs.len());
    for (c, doc, before, latest) in pairs {
        let delta = out.entry(*c).or_default();
        if let Some(before) = before {
            delta.sub(&point(doc, before, points));
        }
        let latest_point = point(doc, latest, points);
        delta.add(&latest_point);
        latest_points.push((*doc, *latest, latest_point));
    }
    for (doc, latest, point) in latest_points {
        points.put(doc, latest, point);
    }
    out
}

/// How many threads can run at once: asked once (the standard library reads cgroup files
/// each time, tens of microseconds), then remembered.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// The points of `items`, in order, on several threads when there are many.
fn compute_points(items: &[(DocId, ItemHash)]) -> Vec<ItemPoint> {
    let compute = |part: &[(DocId, ItemHash)]| -> Vec<ItemPoint> {
        part.iter().map(|(d, i)| ItemPoint::of(d, i)).collect()
    };
    let threads = cores().min(MAX_THREADS);
    if items.len() < PARALLEL_MIN || threads < 2 {
        return compute(items);
    }
    let parts: Vec<&[(DocId, ItemHash)]> = items.chunks(items.len().div_ceil(threads)).collect();
    std::thread::scope(|s| {
        let spawned: Vec<_> = parts[1..]
            .iter()
            .map(|part| {
                let handle = std::thread::Builder::new()
                    .name("hypha-store-root".into())
                    .spawn_scoped(s, || compute(part));
                (part, handle)
            })
            .collect();
        let mut out = compute(parts[0]);
        for (part, handle) in spawned {
            // A thread that could not start (or died) leaves its part to this one.
            match handle.map(|h| h.join()) {
                Ok(Ok(points)) => out.extend(points),
                _ => out.extend(compute(part)),
            }
        }
        out
    })
}

/// The points of documents' latest items, kept by the committer across batches: replacing the
/// item of a document changed recently then costs one hash-to-curve instead of two. A
/// [`Recent`] map of [`POINT_CACHE`] entries a generation (about 250 bytes an entry, 8 MiB at
/// most), so the documents changed most recently stay. A point is a pure function of its
/// item, so this cache, unlike the committer's others, survives a batch that rolls back.
#[derive(Debug)]
pub(crate) struct Points(Recent<DocId, (ItemHash, ItemPoint)>);

impl Default for Points {
    fn default() -> Points {
        Points(Recent::new(POINT_CACHE, usize::MAX))
    }
}

impl Points {
    fn get(&self, doc: &DocId, item: &ItemHash) -> Option<ItemPoint> {
        let (cached, point) = self.0.get(doc)?;
        (cached == item).then_some(*point)
    }

    fn put(&mut self, doc: DocId, item: ItemHash, point: ItemPoint) {
        self.0.put(doc, (item, point), 1);
    }
}

/// Rebuilds the in-memory index from `sync_items` (one scan) and `sync_roots`.
pub(crate) fn load(tx: &(impl ReadTx + ?Sized)) -> Result<SyncIndex, StorageError> {
    let mut roots: BTreeMap<CollectionId, Root> = BTreeMap::new();
    tx.scan(Table::SyncRoots, &[], None, &mut |k, v| {
        let collection = CollectionId(layout::cid_from(k, Table::SyncRoots)?);
        roots.insert(collection, layout::decode_root(v)?);
        Ok(true)
    })?;
    let mut index = SyncIndex::new();
    let mut current: Option<(CollectionId, Vec<(DocId, ItemHash)>)> = None;
    let mut restore = |index: &mut SyncIndex, c: CollectionId, items: Vec<(DocId, ItemHash)>| {
        let root = roots
            .remove(&c)
            .ok_or_else(|| Table::SyncRoots.corrupted())?;
        let check = cfg!(debug_assertions) && items.len() <= CHECK_ROOTS_UP_TO;
        let restored =
            CollectionIndex::restore(items, &root).map_err(|_| Table::SyncRoots.corrupted())?;
        debug_assert!(
            !check || restored.recompute_root() == root,
            "persisted root of {c} is not its items' root"
        );
        index.insert_collection(c, restored);
        Ok::<(), StorageError>(())
    };
    tx.scan(Table::SyncItems, &[], None, &mut |k, v| {
        let (c, doc) = layout::decode_sync_item_key(k)?;
        let item = layout::decode_item(v)?;
        match &mut current {
            Some((open, items)) if *open == c => items.push((doc, item)),
            _ => {
                if let Some((done, items)) = current.replace((c, vec![(doc, item)])) {
                    restore(&mut index, done, items)?;
                }
            }
        }
        Ok(true)
    })?;
    if let Some((done, items)) = current.take() {
        restore(&mut index, done, items)?;
    }
    // A root without items must be the empty one.
    if roots.values().any(|r| *r != Root::EMPTY) {
        return Err(Table::SyncRoots.corrupted());
    }
    Ok(index)
}

/// Builds `sync_items` and `sync_roots` from the document states (migrating a file written
/// before the sync index): one hash-to-curve per document.
pub(crate) fn rebuild(tx: &mut dyn WriteTx) -> Result<u64, StorageError> {
    let mut docs = Vec::new();
    tx.scan(Table::States, &[], None, &mut |k, _| {
        docs.push(layout::doc_from(k, Table::States)?);
        Ok(true)
    })?;
    let mut batch = Batch::default();
    for doc in &docs {
        let state = read_state(tx, doc)?.ok_or_else(|| Table::States.corrupted())?;
        record(
            tx,
            &mut batch,
            state.collection,
            *doc,
            &state.heads,
            Before::Stored,
        )?;
    }
    finish(tx, &mut batch, Ahead::none())?;
    Ok(docs.len() as u64)
}

/// Checks the sync index against the documents: every state has the item its heads give in
/// `sync_items` and no other item is there; every persisted root is what its items hash to;
/// and the in-memory index holds exactly the persisted items and roots. Returns how many
/// items were checked.
pub(crate) fn verify(tx: &dyn ReadTx, memory: &SyncIndex) -> Result<u64, StorageError> {
    let items_corrupted = || Table::SyncItems.corrupted();
    let roots_corrupted = || Table::SyncRoots.corrupted();
    let mut docs = Vec::new();
    tx.scan(Table::States, &[], None, &mut |k, _| {
        docs.push(layout::doc_from(k, Table::States)?);
        Ok(true)
    })?;
    for doc in &docs {
        let state = read_state(tx, doc)?.ok_or_else(|| Table::States.corrupted())?;
        let key = layout::sync_item_key(state.collection, *doc);
        let stored = tx
            .get(Table::SyncItems, &key)?
            .ok_or_else(items_corrupted)?;
        if layout::decode_item(&stored)? != ItemHash::of(doc, &state.heads) {
            return Err(items_corrupted());
        }
    }
    if tx.len(Table::SyncItems)? != docs.len() as u64 {
        return Err(items_corrupted());
    }
    let persisted = load(tx)?;
    for (c, index) in persisted.collections() {
        let root = match tx.get(Table::SyncRoots, &c.0.to_bytes())? {
            Some(v) => layout::decode_root(&v)?,
            None => return Err(roots_corrupted()),
        };
        if index.recompute_root() != root {
            return Err(roots_corrupted());
        }
        let Some(held) = memory.collection(c) else {
            return Err(memory_mismatch());
        };
        if held.root() != root || !held.iter().eq(index.iter()) {
            return Err(memory_mismatch());
        }
        // Levels both hold must agree (a level's start depends on the size history).
        for level in 0..hypha_crdt::sync_index::SKETCH_CELLS.len() {
            if let (Some(a), Some(b)) = (held.sketch(level), index.sketch(level))
                && a != b
            {
                return Err(memory_mismatch());
            }
        }
    }
    if memory.collections().count() != persisted.collections().count() {
        return Err(memory_mismatch());
    }
    Ok(docs.len() as u64)
}

fn memory_mismatch() -> StorageError {
    StorageError::CorruptedRecord {
        table: "sync index in memory",
    }
}

/// The sync index, for head exchange: served from memory, current as of the last durable
/// batch (a batch's changes are applied before any of its tickets is answered).
impl crate::Store {
    /// Collection `collection`'s root: its items' multiset hash and count
    /// ([`Root::EMPTY`] when it holds no document). O(1).
    pub fn sync_root(&self, collection: &CollectionId) -> Root {
        self.sync.read().root(collection)
    }

    /// A copy of sketch level `level` of `collection` (see
    /// [`SKETCH_CELLS`](hypha_crdt::sync_index::SKETCH_CELLS)), or `None` when the collection
    /// is too small to keep that level, holds no document, or there is no such level.
    pub fn sync_sketch(&self, collection: &CollectionId, level: usize) -> Option<Iblt> {
        self.sync
            .read()
            .collection(collection)?
            .sketch(level)
            .cloned()
    }

    /// At most `limit` items of `collection` with a docID greater than `from` (all, for
    /// `None`), in docID order: a page of an exact listing.
    pub fn sync_items(
        &self,
        collection: &CollectionId,
        from: Option<DocId>,
        limit: usize,
    ) -> Vec<(DocId, ItemHash)> {
        self.sync
            .read()
            .collection(collection)
            .map_or_else(Vec::new, |index| index.range(from, limit))
    }

    /// `doc`'s item in `collection`: the hash of its heads, if the store holds the document.
    pub fn sync_item(&self, collection: &CollectionId, doc: &DocId) -> Option<ItemHash> {
        self.sync.read().collection(collection)?.get(doc)
    }

    /// The collections that hold at least one document, in order.
    pub fn sync_collections(&self) -> Vec<CollectionId> {
        self.sync.read().collections().map(|(c, _)| *c).collect()
    }

    /// An estimate of the memory the in-memory sync index takes, in bytes.
    pub fn sync_index_bytes(&self) -> usize {
        self.sync.read().memory_bytes()
    }

    /// Checks the sync index against the documents (one hash-to-curve per document): every
    /// document's persisted item is the hash of its heads and no other item is persisted,
    /// every persisted root is what its items hash to, and the in-memory index holds exactly
    /// the persisted items and roots. Returns how many items were checked. For tests, tools
    /// and recovery checks; call it while no mutation is in flight (the in-memory index is
    /// compared with a snapshot).
    ///
    /// # Errors
    /// [`ReadError::Storage`] with [`StorageError::CorruptedRecord`] naming `sync_items`,
    /// `sync_roots` or the in-memory index for the first mismatch.
    pub fn verify_sync_index(&self) -> Result<u64, ReadError> {
        let memory = self.sync.read();
        Ok(self.backend.read(|tx| verify(tx, &memory))?)
    }
}
