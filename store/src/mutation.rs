//! Mutations and the logic that runs each one inside a write transaction, written once over
//! the [`WriteTx`] seam for both backends.

use std::collections::BTreeMap;

use hypha_crdt::cid::{CidBytes, dag_cbor_cid};
use hypha_crdt::{
    AppliedMeta, Author, Cid, Collection, CollectionId, DagStore, DocId, DocState, IngestError,
    Limits, Outcome, Status, VerifiedBlock, ingest, parse_sdl,
};

use crate::backend::{ReadTx, WriteTx, scan_prefix};
use crate::error::{CommitError, StorageError};
use crate::layout::{self, META_NONCE_SEQ, SUB_COLLECTION, SUB_DOCUMENT, Table};
use crate::meta::{
    MAX_ADDRESS_LEN, MAX_ADDRESSES, MAX_PEER_KEY_LEN, MAX_REPLICATOR_SCOPE, PeerKey, PeerRecord,
    Replicator, Subscription,
};
use crate::recent::Recent;
use crate::sync;

/// The most replicators a node may have.
pub const MAX_REPLICATORS: usize = 1024;
/// The most subscriptions (collections plus documents) a node may have.
pub const MAX_SUBSCRIPTIONS: usize = 100_000;
/// The most remembered peers.
pub const MAX_PEERS: usize = 100_000;

/// One change to the store, committed in one transaction, all or nothing.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Creates a document in the collection named `collection` (a local block).
    Create {
        /// The collection's name.
        collection: String,
        /// The document, a JSON object.
        document: serde_json::Value,
    },
    /// Updates fields of a document (counter fields: increments; a local block).
    Update {
        /// The document.
        doc_id: DocId,
        /// The fields to change, a JSON object.
        patch: serde_json::Value,
    },
    /// Deletes a document (a local block).
    Delete {
        /// The document.
        doc_id: DocId,
    },
    /// Ingests a block received from a peer (applied, or parked as pending).
    Ingest {
        /// The block, already verified.
        block: VerifiedBlock,
    },
    /// Adds (or replaces, by name) the collections that `sdl` declares.
    AddSchema {
        /// GraphQL SDL.
        sdl: String,
    },
    /// Sets (or replaces) a replicator. A new replicator, or one whose scope grew, gets the
    /// catch-up marker, so it is first brought up to date by head exchange (DESIGN §4).
    SetReplicator {
        /// The peer.
        peer: PeerKey,
        /// Its scope and addresses.
        replicator: Replicator,
    },
    /// Deletes a replicator with its outbox.
    DeleteReplicator {
        /// The peer.
        peer: PeerKey,
    },
    /// Follows a collection or document.
    Subscribe(Subscription),
    /// Stops following a collection or document.
    Unsubscribe(Subscription),
    /// Drops an outbox entry once the peer acknowledged a durable commit of the document at
    /// `heads`. If the document's heads moved on since the push was made, the entry stays
    /// (the newer blocks still need pushing) and `changed` is false.
    AckOutbox {
        /// The peer.
        peer: PeerKey,
        /// The document.
        doc_id: DocId,
        /// The heads that were pushed and acknowledged.
        heads: Vec<Cid>,
    },
    /// Clears a peer's catch-up marker. Submit it when the head exchange that catches the
    /// peer up *starts* (it reads heads after this commit), so nothing committed later is
    /// missed: later blocks add outbox entries again.
    ClearCatchUp {
        /// The peer.
        peer: PeerKey,
    },
    /// Remembers a peer's addresses (replacing earlier ones).
    RememberPeer {
        /// The peer.
        peer: PeerKey,
        /// Its addresses and when it was seen.
        record: PeerRecord,
    },
    /// Forgets a peer's addresses.
    ForgetPeer {
        /// The peer.
        peer: PeerKey,
    },
    /// Replaces the remembered hot documents (the node's LRU, least recently used first), so
    /// a restart follows them again. At most [`MAX_HOT_DOCUMENTS`].
    SetHotDocuments {
        /// The documents with their collections.
        documents: Vec<(DocId, CollectionId)>,
    },
    /// Evicts blocks from the pending set (orphans whose parents never came). A CID that is
    /// not pending (applied meanwhile, or never stored) is skipped. At most
    /// [`MAX_DROP_PENDING`] per mutation.
    DropPending {
        /// The pending blocks.
        cids: Vec<Cid>,
    },
    /// Writes nothing; durable once everything committed before it is durable, answered
    /// [`Committed::Meta`] with `changed: false`. What a caller that acted on a
    /// [`Stage::Visible`](crate::Stage::Visible) read waits for before it promises
    /// durability: a replicator target that finds a pushed block already held (received over
    /// pubsub a moment ago, visible but perhaps not yet durable) submits one before it
    /// acknowledges. It costs no transaction when nothing is visible and not durable.
    Barrier,
}

/// The most pending blocks one [`Mutation::DropPending`] evicts.
pub const MAX_DROP_PENDING: usize = 100_000;

/// The most hot documents remembered.
pub const MAX_HOT_DOCUMENTS: usize = 100_000;

/// What a durable mutation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// A local mutation made `block` and applied it (publish it, DESIGN §4).
    Local {
        /// The new block.
        block: VerifiedBlock,
        /// What the merge did.
        outcome: Outcome,
    },
    /// A received block was ingested.
    Ingested {
        /// What the merge did.
        outcome: Outcome,
    },
    /// A metadata change; `changed` is false when it changed nothing (for instance acking an
    /// entry that is not there).
    Meta {
        /// Whether anything changed.
        changed: bool,
    },
}

/// How a mutation failed inside a batch.
pub(crate) enum Failure {
    /// Refused before writing anything: only this mutation fails.
    Refused(CommitError),
    /// Storage failed, possibly after writes: the whole batch must roll back.
    Abort(StorageError),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        Failure::Abort(e)
    }
}

/// Documents' states in each generation of [`Cache::states`].
pub(crate) const STATE_CACHE_ENTRIES: usize = 16_384;
/// Encoded bytes of states in each generation of [`Cache::states`] (decoded, a state takes
/// about two to three times its encoding).
pub(crate) const STATE_CACHE_BYTES: usize = 4 << 20;
/// Applied blocks in each generation of [`Cache::applied`] (about 100 bytes an entry).
pub(crate) const APPLIED_CACHE_ENTRIES: usize = 16_384;

/// What the committer keeps decoded between mutations. It mirrors committed data, and is
/// reloaded (the [`Recent`] caches emptied) whenever a batch rolls back.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    pub(crate) collections: BTreeMap<CollectionId, Collection>,
    pub(crate) replicators: BTreeMap<PeerKey, Replicator>,
    pub(crate) nonce_seq: u64,
    /// The states of the documents written most recently, decoded: the merge takes a state
    /// from here instead of reading and decoding it (a tenth of an ingest's cost), and puts
    /// the new one back as it writes it. Write-through: the only writer of `states` is
    /// `put_applied`, which updates both.
    pub(crate) states: Recent<DocId, DocState>,
    /// What is known of the blocks applied most recently: a new block's parents are almost
    /// always among them, so checking them costs no B-tree lookup. Blocks are never removed
    /// once applied, so an entry stays true as long as its batch commits.
    pub(crate) applied: Recent<Cid, AppliedMeta>,
    /// The peers' outbox sizes and catch-up markers.
    pub(crate) outbox_meta: OutboxMetas,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            collections: BTreeMap::new(),
            replicators: BTreeMap::new(),
            nonce_seq: 0,
            states: Recent::new(STATE_CACHE_ENTRIES, STATE_CACHE_BYTES),
            applied: Recent::new(APPLIED_CACHE_ENTRIES, usize::MAX),
            outbox_meta: OutboxMetas::default(),
        }
    }
}

impl Cache {
    pub(crate) fn load(tx: &(impl ReadTx + ?Sized)) -> Result<Cache, StorageError> {
        let mut cache = Cache::default();
        tx.scan(Table::Schema, &[], None, &mut |_, v| {
            for c in parse_stored_schema(v)? {
                cache.collections.insert(c.id(), c);
            }
            Ok(true)
        })?;
        tx.scan(Table::Replicators, &[], None, &mut |k, v| {
            cache
                .replicators
                .insert(PeerKey(k.to_vec()), layout::decode_replicator(v)?);
            Ok(true)
        })?;
        cache.nonce_seq = match tx.get(Table::Meta, META_NONCE_SEQ)? {
            Some(v) => layout::u64_be(&v, Table::Meta)?,
            None => 0,
        };
        Ok(cache)
    }
}

pub(crate) fn parse_stored_schema(value: &[u8]) -> Result<Vec<Collection>, StorageError> {
    let (namespace, sdl) = layout::decode_schema(value)?;
    parse_sdl(namespace, sdl).map_err(|_| Table::Schema.corrupted())
}

/// What the committer needs besides the transaction.
pub(crate) struct Context {
    pub(crate) cache: Cache,
    pub(crate) author: Author,
    pub(crate) namespace: String,
    pub(crate) limits: Limits,
    pub(crate) max_outbox: u64,
    /// The sync-index work of the batch being run.
    pub(crate) sync: sync::Batch,
}

/// Runs one mutation in `tx`. On [`Failure::Refused`] nothing was written.
pub(crate) fn run(
    tx: &mut dyn WriteTx,
    cx: &mut Context,
    mutation: &Mutation,
) -> Result<Committed, Failure> {
    match mutation {
        Mutation::Create {
            collection,
            document,
        } => {
            let Some(c) = cx
                .cache
                .collections
                .values()
                .find(|c| c.name() == collection)
            else {
                return Err(Failure::Refused(CommitError::UnknownCollection(
                    collection.clone(),
                )));
            };
            let mut author = cx.author.clone().with_nonce_seq(cx.cache.nonce_seq);
            let block = author
                .create(c, document)
                .map_err(|e| Failure::Refused(CommitError::Mutation(e)))?;
            local(tx, cx, author, block)
        }
        Mutation::Update { doc_id, patch } => {
            let (c, state) = target(tx, cx, *doc_id)?;
            let mut author = cx.author.clone().with_nonce_seq(cx.cache.nonce_seq);
            let block = author
                .update(c, &state, patch)
                .map_err(|e| Failure::Refused(CommitError::Mutation(e)))?;
            local(tx, cx, author, block)
        }
        Mutation::Delete { doc_id } => {
            let (c, state) = target(tx, cx, *doc_id)?;
            let mut author = cx.author.clone().with_nonce_seq(cx.cache.nonce_seq);
            let block = author
                .delete(c, &state)
                .map_err(|e| Failure::Refused(CommitError::Mutation(e)))?;
            local(tx, cx, author, block)
        }
        Mutation::Ingest { block } => {
            let outcome = merge(tx, cx, block)?;
            Ok(Committed::Ingested { outcome })
        }
        Mutation::AddSchema { sdl } => add_schema(tx, cx, sdl),
        Mutation::Barrier => Ok(Committed::Meta { changed: false }),
        Mutation::SetReplicator { peer, replicator } => set_replicator(tx, cx, peer, replicator),
        Mutation::DeleteReplicator { peer } => delete_replicator(tx, cx, peer),
        Mutation::Subscribe(sub) => {
            let key = subscription_key(sub);
            if tx.get(Table::Subscriptions, &key)?.is_some() {
                return Ok(Committed::Meta { changed: false });
            }
            check_count(tx, Table::Subscriptions, "subscriptions", MAX_SUBSCRIPTIONS)?;
            tx.put(Table::Subscriptions, &key, &[])?;
            Ok(Committed::Meta { changed: true })
        }
        Mutation::Unsubscribe(sub) => {
            let changed = tx.remove(Table::Subscriptions, &subscription_key(sub))?;
            Ok(Committed::Meta { changed })
        }
        Mutation::AckOutbox {
            peer,
            doc_id,
            heads,
        } => {
            check_peer(peer)?;
            let current = read_state(tx, doc_id)?.map(|state| state.heads);
            let changed = current.as_ref() == Some(heads)
                && tx.remove(Table::Outbox, &layout::outbox_key(peer, *doc_id))?;
            if changed {
                let metas = &mut cx.cache.outbox_meta;
                let (n, catch_up) = metas.get(tx, peer)?;
                metas.set(tx, peer, n.saturating_sub(1), catch_up)?;
            }
            Ok(Committed::Meta { changed })
        }
        Mutation::ClearCatchUp { peer } => {
            check_peer(peer)?;
            let metas = &mut cx.cache.outbox_meta;
            let (n, catch_up) = metas.get(tx, peer)?;
            if catch_up {
                metas.set(tx, peer, n, false)?;
            }
            Ok(Committed::Meta { changed: catch_up })
        }
        Mutation::RememberPeer { peer, record } => {
            check_peer(peer)?;
            check_addresses(&record.addresses)?;
            if tx.get(Table::Peers, &peer.0)?.is_none() {
                check_count(tx, Table::Peers, "remembered peers", MAX_PEERS)?;
            }
            tx.put(Table::Peers, &peer.0, &layout::encode_peer(record))?;
            Ok(Committed::Meta { changed: true })
        }
        Mutation::ForgetPeer { peer } => {
            let changed = tx.remove(Table::Peers, &peer.0)?;
            Ok(Committed::Meta { changed })
        }
        Mutation::DropPending { cids } => {
            if cids.len() > MAX_DROP_PENDING {
                return Err(limit(
                    "pending blocks dropped",
                    cids.len(),
                    MAX_DROP_PENDING,
                ));
            }
            let mut changed = false;
            for cid in cids {
                let key = cid.to_bytes();
                let Some(v) = tx.get(Table::Pending, &key)? else {
                    continue;
                };
                let (parents, _) = layout::decode_pending(&v)?;
                for parent in &parents {
                    tx.remove(Table::Waiting, &layout::waiting_key(parent, cid))?;
                }
                tx.remove(Table::Pending, &key)?;
                changed = true;
            }
            Ok(Committed::Meta { changed })
        }
        Mutation::SetHotDocuments { documents } => {
            if documents.len() > MAX_HOT_DOCUMENTS {
                return Err(limit("hot documents", documents.len(), MAX_HOT_DOCUMENTS));
            }
            let mut value = Vec::with_capacity(documents.len() * 53);
            for (doc, collection) in documents {
                let cid = collection.0.to_bytes();
                value.extend_from_slice(&doc.to_bytes());
                // invariant: a collection CID is a CIDv1 raw sha2-256, 36 bytes.
                value.push(u8::try_from(cid.len()).expect("a CID is short"));
                value.extend_from_slice(&cid);
            }
            tx.put(Table::Meta, layout::META_HOT_DOCS, &value)?;
            Ok(Committed::Meta { changed: true })
        }
    }
}

/// Ingests a local block and persists the author's nonce sequence with it.
fn local(
    tx: &mut dyn WriteTx,
    cx: &mut Context,
    author: Author,
    block: VerifiedBlock,
) -> Result<Committed, Failure> {
    let outcome = merge(tx, cx, &block)?;
    if author.nonce_seq() != cx.cache.nonce_seq {
        tx.put(
            Table::Meta,
            META_NONCE_SEQ,
            &author.nonce_seq().to_be_bytes(),
        )?;
        cx.cache.nonce_seq = author.nonce_seq();
    }
    Ok(Committed::Local { block, outcome })
}

fn merge(
    tx: &mut dyn WriteTx,
    cx: &mut Context,
    block: &VerifiedBlock,
) -> Result<Outcome, Failure> {
    let mut dag = Dag {
        tx,
        replicators: &cx.cache.replicators,
        states: &mut cx.cache.states,
        applied: &mut cx.cache.applied,
        outbox_meta: &mut cx.cache.outbox_meta,
        taken: None,
        max_outbox: cx.max_outbox,
        sync: &mut cx.sync,
    };
    ingest(&mut dag, block, &cx.limits).map_err(|e| match e {
        IngestError::Rejected(r) => Failure::Refused(CommitError::Rejected(r)),
        IngestError::Store(e) => Failure::Abort(e),
    })
}

fn target<'c>(
    tx: &dyn WriteTx,
    cx: &'c Context,
    doc: DocId,
) -> Result<(&'c Collection, DocState), Failure> {
    let Some(state) = read_state(tx, &doc)? else {
        return Err(Failure::Refused(CommitError::UnknownDocument(doc)));
    };
    let Some(c) = cx.cache.collections.get(&state.collection) else {
        return Err(Failure::Refused(CommitError::UnknownCollection(
            state.collection.to_string(),
        )));
    };
    Ok((c, state))
}

fn add_schema(tx: &mut dyn WriteTx, cx: &mut Context, sdl: &str) -> Result<Committed, Failure> {
    let collections =
        parse_sdl(&cx.namespace, sdl).map_err(|e| Failure::Refused(CommitError::Schema(e)))?;
    let mut changed = false;
    for c in collections {
        let value = layout::encode_schema(&cx.namespace, &c.to_sdl());
        if tx.get(Table::Schema, c.name().as_bytes())?.as_deref() != Some(&value[..]) {
            tx.put(Table::Schema, c.name().as_bytes(), &value)?;
            changed = true;
        }
        cx.cache.collections.insert(c.id(), c);
    }
    Ok(Committed::Meta { changed })
}

fn set_replicator(
    tx: &mut dyn WriteTx,
    cx: &mut Context,
    peer: &PeerKey,
    replicator: &Replicator,
) -> Result<Committed, Failure> {
    check_peer(peer)?;
    check_addresses(&replicator.addresses)?;
    let scope = replicator.collections.len() + replicator.documents.len();
    if scope > MAX_REPLICATOR_SCOPE {
        return Err(limit("replicator scope", scope, MAX_REPLICATOR_SCOPE));
    }
    let old = cx.cache.replicators.get(peer);
    if old.is_none() && cx.cache.replicators.len() >= MAX_REPLICATORS {
        return Err(limit("replicators", MAX_REPLICATORS + 1, MAX_REPLICATORS));
    }
    let grew = match old {
        None => true,
        Some(old) => {
            !replicator.collections.is_subset(&old.collections)
                || !replicator.documents.is_subset(&old.documents)
        }
    };
    if old == Some(replicator) {
        return Ok(Committed::Meta { changed: false });
    }
    tx.put(
        Table::Replicators,
        &peer.0,
        &layout::encode_replicator(replicator),
    )?;
    if grew {
        let metas = &mut cx.cache.outbox_meta;
        let (n, _) = metas.get(tx, peer)?;
        metas.set(tx, peer, n, true)?;
    }
    cx.cache
        .replicators
        .insert(peer.clone(), replicator.clone());
    Ok(Committed::Meta { changed: true })
}

fn delete_replicator(
    tx: &mut dyn WriteTx,
    cx: &mut Context,
    peer: &PeerKey,
) -> Result<Committed, Failure> {
    check_peer(peer)?;
    let changed = tx.remove(Table::Replicators, &peer.0)?;
    clear_outbox(tx, peer)?;
    cx.cache.outbox_meta.remove(tx, peer)?;
    cx.cache.replicators.remove(peer);
    Ok(Committed::Meta { changed })
}

/// Removes every outbox entry of `peer` (at most the cap, so bounded).
fn clear_outbox(tx: &mut dyn WriteTx, peer: &PeerKey) -> Result<(), StorageError> {
    let mut keys = Vec::new();
    scan_prefix(
        tx,
        Table::Outbox,
        &layout::peer_prefix(peer),
        &mut |k, _| {
            keys.push(k.to_vec());
            Ok(true)
        },
    )?;
    for key in keys {
        tx.remove(Table::Outbox, &key)?;
    }
    Ok(())
}

/// The peers' outbox sizes and catch-up markers (`outbox_meta`), read through a write-through
/// cache: the merge reads one per replicator for every block it applies. At most
/// [`MAX_REPLICATORS`] peers are cached; others are read each time.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboxMetas(BTreeMap<PeerKey, (u64, bool)>);

impl OutboxMetas {
    /// `peer`'s outbox size and catch-up marker.
    fn get(&mut self, tx: &dyn WriteTx, peer: &PeerKey) -> Result<(u64, bool), StorageError> {
        if let Some(meta) = self.0.get(peer) {
            return Ok(*meta);
        }
        let meta = match tx.get(Table::OutboxMeta, &peer.0)? {
            Some(v) => layout::decode_outbox_meta(&v)?,
            None => (0, false),
        };
        self.hold(peer, meta);
        Ok(meta)
    }

    /// Writes `peer`'s outbox size and catch-up marker.
    fn set(
        &mut self,
        tx: &mut dyn WriteTx,
        peer: &PeerKey,
        n: u64,
        catch_up: bool,
    ) -> Result<(), StorageError> {
        tx.put(
            Table::OutboxMeta,
            &peer.0,
            &layout::encode_outbox_meta(n, catch_up),
        )?;
        self.hold(peer, (n, catch_up));
        Ok(())
    }

    /// Deletes `peer`'s outbox size and catch-up marker.
    fn remove(&mut self, tx: &mut dyn WriteTx, peer: &PeerKey) -> Result<(), StorageError> {
        tx.remove(Table::OutboxMeta, &peer.0)?;
        self.0.remove(peer);
        Ok(())
    }

    fn hold(&mut self, peer: &PeerKey, meta: (u64, bool)) {
        if let Some(held) = self.0.get_mut(peer) {
            *held = meta;
        } else if self.0.len() < MAX_REPLICATORS {
            self.0.insert(peer.clone(), meta);
        }
    }
}

pub(crate) fn subscription_key(sub: &Subscription) -> Vec<u8> {
    match sub {
        Subscription::Collection(c) => {
            let mut key = vec![SUB_COLLECTION];
            key.extend_from_slice(&c.0.to_bytes());
            key
        }
        Subscription::Document(d) => {
            let mut key = vec![SUB_DOCUMENT];
            key.extend_from_slice(&d.to_bytes());
            key
        }
    }
}

fn limit(what: &'static str, size: usize, max: usize) -> Failure {
    Failure::Refused(CommitError::Limit { what, size, max })
}

fn check_peer(peer: &PeerKey) -> Result<(), Failure> {
    if peer.0.is_empty() || peer.0.len() > MAX_PEER_KEY_LEN {
        return Err(limit("peer key length", peer.0.len(), MAX_PEER_KEY_LEN));
    }
    Ok(())
}

fn check_addresses(addresses: &[Vec<u8>]) -> Result<(), Failure> {
    if addresses.len() > MAX_ADDRESSES {
        return Err(limit("addresses", addresses.len(), MAX_ADDRESSES));
    }
    if let Some(a) = addresses.iter().find(|a| a.len() > MAX_ADDRESS_LEN) {
        return Err(limit("address length", a.len(), MAX_ADDRESS_LEN));
    }
    Ok(())
}

fn check_count(
    tx: &dyn WriteTx,
    table: Table,
    what: &'static str,
    max: usize,
) -> Result<(), Failure> {
    let n = tx.len(table)?;
    if n >= max as u64 {
        return Err(limit(what, max + 1, max));
    }
    Ok(())
}

/// A state's weight in [`Cache::states`]: its encoded size, about what it costs to keep.
fn state_weight(state: &DocState) -> usize {
    state.to_bytes().map_or(usize::MAX, |b| b.len())
}

pub(crate) fn read_state(
    tx: &(impl ReadTx + ?Sized),
    doc: &DocId,
) -> Result<Option<DocState>, StorageError> {
    match tx.get(Table::States, &doc.to_bytes())? {
        None => Ok(None),
        Some(v) => DocState::from_bytes(&v)
            .map(Some)
            .map_err(|_| Table::States.corrupted()),
    }
}

/// The merge's view of a write transaction. `put_applied` also feeds the outboxes and the
/// sync index, so every block the merge applies — the ingested one and every pending block it
/// releases — adds its outbox entries and its document's new sync item in the same
/// transaction.
struct Dag<'a> {
    tx: &'a mut dyn WriteTx,
    replicators: &'a BTreeMap<PeerKey, Replicator>,
    states: &'a mut Recent<DocId, DocState>,
    applied: &'a mut Recent<Cid, AppliedMeta>,
    outbox_meta: &'a mut OutboxMetas,
    /// The document whose state was taken last, with the heads it had (`None`: it had no
    /// state), for its item before the batch ([`sync::Before::Heads`]).
    taken: Option<(DocId, Option<Vec<Cid>>)>,
    max_outbox: u64,
    sync: &'a mut sync::Batch,
}

impl Dag<'_> {
    /// Adds `(peer, doc)` to the peer's outbox, or collapses the outbox into the catch-up
    /// marker when it is full.
    fn add_outbox(&mut self, peer: &PeerKey, doc: DocId) -> Result<(), StorageError> {
        let (n, catch_up) = self.outbox_meta.get(self.tx, peer)?;
        if catch_up {
            // A head exchange over the whole scope is owed already; it covers this block.
            return Ok(());
        }
        let key = layout::outbox_key(peer, doc);
        // Reads before writes: an entry already owed is not rewritten (no page dirtied).
        if self.tx.get(Table::Outbox, &key)?.is_some() {
            return Ok(());
        }
        if n >= self.max_outbox {
            clear_outbox(self.tx, peer)?;
            self.outbox_meta.set(self.tx, peer, 0, true)?;
            return Ok(());
        }
        self.tx.put(Table::Outbox, &key, &[])?;
        self.outbox_meta.set(self.tx, peer, n + 1, false)?;
        Ok(())
    }
}

impl DagStore for Dag<'_> {
    type Error = StorageError;

    fn applied(&self, cid: &Cid) -> Result<Option<AppliedMeta>, StorageError> {
        if let Some(meta) = self.applied.get(cid) {
            return Ok(Some(*meta));
        }
        match self.tx.get(Table::Blocks, &CidBytes::new(cid))? {
            None => Ok(None),
            Some(v) => Ok(Some(layout::decode_block_meta(&v)?.0)),
        }
    }

    fn pending_parents(&self, cid: &Cid) -> Result<Option<Vec<Cid>>, StorageError> {
        match self.tx.get(Table::Pending, &CidBytes::new(cid))? {
            None => Ok(None),
            Some(v) => Ok(Some(layout::decode_pending(&v)?.0)),
        }
    }

    fn pending_len(&self) -> Result<usize, StorageError> {
        Ok(usize::try_from(self.tx.len(Table::Pending)?).unwrap_or(usize::MAX))
    }

    /// From the cache of recent states, or a read: the transaction keeps the stored copy
    /// until `put_applied` overwrites it.
    fn take_state(&mut self, doc: &DocId) -> Result<Option<DocState>, StorageError> {
        let state = match self.states.take(doc) {
            Some(state) => Some(state),
            None => read_state(self.tx, doc)?,
        };
        self.taken = Some((*doc, state.as_ref().map(|s| s.heads.clone())));
        Ok(state)
    }

    /// Back into the cache: it is still what the table holds.
    fn restore_state(&mut self, state: DocState) -> Result<(), StorageError> {
        let weight = state_weight(&state);
        self.states.put(state.doc_id, state, weight);
        Ok(())
    }

    fn put_applied(&mut self, block: &VerifiedBlock, state: DocState) -> Result<(), StorageError> {
        let cid = block.cid();
        // Paired with the re-hash on every read (TigerStyle): the bytes written are the CID's.
        assert_eq!(
            dag_cbor_cid(block.bytes()),
            cid,
            "block bytes hash to their cid"
        );
        let b = block.block();
        let doc = b.delta.doc_id;
        let value = layout::encode_block(doc, b.delta.priority, block.bytes());
        self.tx.put(Table::Blocks, &CidBytes::new(&cid), &value)?;
        let encoded = state.to_bytes().map_err(|_| Table::States.corrupted())?;
        self.tx.put(Table::States, &doc.to_bytes(), &encoded)?;
        // Applying a block always changes the heads (the block becomes one), deleted or not:
        // deleted documents keep their items, their heads still have to be synced.
        let taken = self.taken.take();
        let before = match &taken {
            Some((taken, heads)) if *taken == doc => sync::Before::Heads(heads.as_deref()),
            _ => sync::Before::Stored,
        };
        sync::record(
            self.tx,
            self.sync,
            state.collection,
            doc,
            &state.heads,
            before,
        )?;
        // Only a genesis block (the document's first, since ancestors apply first) or a delete
        // can change the index entry; other blocks neither read nor write it, which keeps the
        // pages a batch dirties (and so the bytes each commit writes) few.
        if b.heads.is_empty() || b.delta.status == Status::Deleted {
            let key = layout::collection_doc_key(state.collection, doc);
            let flag = [u8::from(state.deleted)];
            if self.tx.get(Table::CollectionDocs, &key)?.as_deref() != Some(&flag[..]) {
                self.tx.put(Table::CollectionDocs, &key, &flag)?;
            }
        }
        let collection = state.collection;
        // A copy of the shared reference, so `add_outbox` may borrow `self` mutably.
        let replicators = self.replicators;
        for (peer, replicator) in replicators {
            if replicator.covers(&collection, &doc) {
                self.add_outbox(peer, doc)?;
            }
        }
        let meta = AppliedMeta {
            doc_id: doc,
            priority: b.delta.priority,
        };
        self.applied.put(cid, meta, 1);
        self.states.put(doc, state, encoded.len());
        Ok(())
    }

    fn put_pending(
        &mut self,
        block: &VerifiedBlock,
        waiting_on: &[Cid],
    ) -> Result<(), StorageError> {
        let cid = block.cid();
        assert_eq!(
            dag_cbor_cid(block.bytes()),
            cid,
            "block bytes hash to their cid"
        );
        let value = layout::encode_pending(&block.block().heads, block.bytes());
        self.tx.put(Table::Pending, &CidBytes::new(&cid), &value)?;
        for parent in waiting_on {
            self.tx
                .put(Table::Waiting, &layout::waiting_key(parent, &cid), &[])?;
        }
        Ok(())
    }

    fn take_waiting(&mut self, parent: &Cid) -> Result<Vec<Cid>, StorageError> {
        let prefix = CidBytes::new(parent);
        let mut keys = Vec::new();
        scan_prefix(self.tx, Table::Waiting, &prefix, &mut |k, _| {
            keys.push(k.to_vec());
            Ok(true)
        })?;
        let mut children = Vec::with_capacity(keys.len());
        for key in keys {
            children.push(layout::cid_from(&key[prefix.len()..], Table::Waiting)?);
            self.tx.remove(Table::Waiting, &key)?;
        }
        Ok(children)
    }

    fn take_pending(&mut self, cid: &Cid) -> Result<Option<VerifiedBlock>, StorageError> {
        let key = CidBytes::new(cid);
        let Some(v) = self.tx.get(Table::Pending, &key)? else {
            return Ok(None);
        };
        self.tx.remove(Table::Pending, &key)?;
        let (_, bytes) = layout::decode_pending(&v)?;
        VerifiedBlock::decode(bytes, Some(cid))
            .map(Some)
            .map_err(|_| StorageError::Corrupted { cid: *cid })
    }
}
