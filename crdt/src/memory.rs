//! An in-memory replica: the merge over maps, for tests, examples, benchmarks and the
//! simulator's model.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::author::{Author, MutationError};
use crate::block::{BlockError, VerifiedBlock};
use crate::cid::Cid;
use crate::document::DocId;
use crate::history::BlockSource;
use crate::merge::{
    AppliedMeta, DagStore, DocState, IngestError, Limits, Outcome, Rejection, ingest,
};
use crate::schema::{Collection, CollectionId};

/// Blocks, states and the pending set held in ordered maps.
///
/// Applied blocks are kept as their bytes and the merge's facts about them, keyed by the
/// 32-byte digest of their CID (every block CID is CIDv1 dag-cbor sha2-256, so the digest
/// identifies it): ~320 bytes per block rather than a decoded block (the bytes are shared with
/// the [`VerifiedBlock`] they came in, so keeping them copies nothing), and a hash table whose
/// lookups stay O(1) as the history grows (a B-tree's cost per lookup grew by a third from the
/// 1,000th block to the 100,000th, `w3_flatness_ratio`). The table is never iterated, so its
/// order cannot reach any output; the hash is the digest's first 8 bytes, which SHA-256 makes
/// uniform (a peer aiming blocks at one bucket must brute-force digest prefixes).
#[derive(Debug, Clone, Default)]
pub struct MemoryDag {
    #[allow(clippy::disallowed_types)] // Never iterated: see above.
    applied: std::collections::HashMap<Digest, (AppliedMeta, Arc<[u8]>), BuildDigestHasher>,
    pending: BTreeMap<Cid, VerifiedBlock>,
    waiting: BTreeMap<Cid, Vec<Cid>>,
    states: BTreeMap<DocId, DocState>,
}

/// The key of an applied block, or `None` for a CID no block can have.
fn key(cid: &Cid) -> Option<Digest> {
    if !crate::cid::is_block_cid(cid) {
        return None;
    }
    cid.hash().digest().try_into().ok().map(Digest)
}

/// A block CID's sha2-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest([u8; 32]);

impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a [`Digest`]'s 8 bytes through as the hash.
#[derive(Debug, Clone, Copy, Default)]
struct BuildDigestHasher;

impl std::hash::BuildHasher for BuildDigestHasher {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Digest` is hashed with this hasher, through `write_u64`; stay correct anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl MemoryDag {
    /// An empty DAG.
    pub fn new() -> MemoryDag {
        MemoryDag::default()
    }

    /// All document states, by docID.
    pub fn states(&self) -> &BTreeMap<DocId, DocState> {
        &self.states
    }

    /// How many blocks are applied.
    pub fn applied_len(&self) -> usize {
        self.applied.len()
    }

    /// The CIDs of the pending blocks.
    pub fn pending(&self) -> impl Iterator<Item = &Cid> {
        self.pending.keys()
    }
}

impl DagStore for MemoryDag {
    type Error = Infallible;

    fn applied(&self, cid: &Cid) -> Result<Option<AppliedMeta>, Infallible> {
        Ok(key(cid)
            .and_then(|k| self.applied.get(&k))
            .map(|(meta, _)| *meta))
    }

    fn pending_parents(&self, cid: &Cid) -> Result<Option<Vec<Cid>>, Infallible> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        Ok(self.pending.get(cid).map(|b| b.block().heads.clone()))
    }

    fn pending_len(&self) -> Result<usize, Infallible> {
        Ok(self.pending.len())
    }

    /// Leaves an empty state of the same document in the entry, which `restore_state` or
    /// `put_applied` overwrites right after (the merge calls one of them after every take):
    /// removing the entry and inserting it again would free and allocate a B-tree node on
    /// each block of a document that is alone in the map — a fifth of merging a branch
    /// (`cargo bench -p hypha-crdt --bench merge`, W2).
    fn take_state(&mut self, doc: &DocId) -> Result<Option<DocState>, Infallible> {
        Ok(self.states.get_mut(doc).map(|state| {
            let empty = DocState::empty(state.doc_id, state.collection);
            std::mem::replace(state, empty)
        }))
    }

    fn restore_state(&mut self, state: DocState) -> Result<(), Infallible> {
        self.states.insert(state.doc_id, state);
        Ok(())
    }

    fn put_applied(&mut self, block: &VerifiedBlock, state: DocState) -> Result<(), Infallible> {
        let meta = AppliedMeta {
            doc_id: block.doc_id(),
            priority: block.block().delta.priority,
        };
        // invariant: a verified block's CID is a block CID.
        let key = key(&block.cid()).expect("verified blocks have block CIDs");
        self.applied.insert(key, (meta, block.shared_bytes()));
        // In place when the entry exists (`take_state` left it): a B-tree insert would move
        // the state in and the placeholder out through `mem::replace`.
        match self.states.get_mut(&state.doc_id) {
            Some(slot) => *slot = state,
            None => {
                self.states.insert(state.doc_id, state);
            }
        }
        Ok(())
    }

    fn put_pending(&mut self, block: &VerifiedBlock, waiting_on: &[Cid]) -> Result<(), Infallible> {
        for parent in waiting_on {
            self.waiting.entry(*parent).or_default().push(block.cid());
        }
        self.pending.insert(block.cid(), block.clone());
        Ok(())
    }

    fn take_waiting(&mut self, parent: &Cid) -> Result<Vec<Cid>, Infallible> {
        if self.waiting.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.waiting.remove(parent).unwrap_or_default())
    }

    fn take_pending(&mut self, cid: &Cid) -> Result<Option<VerifiedBlock>, Infallible> {
        Ok(self.pending.remove(cid))
    }
}

impl BlockSource for MemoryDag {
    type Error = BlockError;

    /// Decodes and verifies the stored bytes again (blocks are kept as bytes).
    fn block(&self, cid: &Cid) -> Result<Option<VerifiedBlock>, BlockError> {
        let Some((_, bytes)) = key(cid).and_then(|k| self.applied.get(&k)) else {
            return Ok(None);
        };
        VerifiedBlock::decode(bytes, Some(cid)).map(Some)
    }
}

/// Why a [`Replica`] operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicaError {
    /// No such collection in the replica's schema.
    #[error("collection {0:?} not found")]
    UnknownCollection(String),
    /// No such document.
    #[error("document {0} not found")]
    UnknownDocument(DocId),
    /// The mutation was refused.
    #[error(transparent)]
    Mutation(#[from] MutationError),
    /// Received bytes are not a valid block.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The merge refused a block.
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

/// A whole replica in memory: a schema, an author and a [`MemoryDag`].
///
/// ```
/// use hypha_crdt::{Author, Replica, parse_sdl};
/// use serde_json::json;
///
/// let users = parse_sdl("hypha", "type Users { name: String age: Int }").unwrap();
/// let mut a = Replica::new(users.clone(), Author::unsigned([1; 32]));
/// let mut b = Replica::new(users, Author::unsigned([2; 32]));
/// let (doc, genesis) = a.create("Users", &json!({"name": "John", "age": 21})).unwrap();
/// let update = a.update(doc, &json!({"age": 22})).unwrap();
/// // Delivery order does not matter: the update waits until its parent arrives.
/// b.apply(update.bytes()).unwrap();
/// b.apply(genesis.bytes()).unwrap();
/// assert_eq!(b.read(doc).unwrap()["age"], 22);
/// ```
#[derive(Debug, Clone)]
pub struct Replica {
    collections: BTreeMap<CollectionId, Collection>,
    author: Author,
    dag: MemoryDag,
    limits: Limits,
}

impl Replica {
    /// A replica with these collections.
    pub fn new(collections: impl IntoIterator<Item = Collection>, author: Author) -> Replica {
        Replica {
            collections: collections.into_iter().map(|c| (c.id(), c)).collect(),
            author,
            dag: MemoryDag::new(),
            limits: Limits::default(),
        }
    }

    /// Replaces the merge limits.
    pub fn with_limits(mut self, limits: Limits) -> Replica {
        self.limits = limits;
        self
    }

    /// Creates a document; returns its docID and genesis block.
    ///
    /// # Errors
    /// [`ReplicaError`] when the collection is unknown or the JSON does not fit it.
    pub fn create(
        &mut self,
        collection: &str,
        json: &Json,
    ) -> Result<(DocId, VerifiedBlock), ReplicaError> {
        let collection = collection_named(&self.collections, collection)?;
        let block = self.author.create(collection, json)?;
        self.ingest(&block)?;
        Ok((block.doc_id(), block))
    }

    /// Updates fields of a document (counters: increments); returns the new block.
    ///
    /// # Errors
    /// [`ReplicaError`] when the document is unknown or deleted, or the patch does not fit.
    pub fn update(&mut self, doc: DocId, patch: &Json) -> Result<VerifiedBlock, ReplicaError> {
        let (collection, state) = target(&self.collections, &self.dag, doc)?;
        let block = self.author.update(collection, state, patch)?;
        self.ingest(&block)?;
        Ok(block)
    }

    /// Deletes a document; returns the delete block.
    ///
    /// # Errors
    /// [`ReplicaError`] when the document is unknown or already deleted.
    pub fn delete(&mut self, doc: DocId) -> Result<VerifiedBlock, ReplicaError> {
        let (collection, state) = target(&self.collections, &self.dag, doc)?;
        let block = self.author.delete(collection, state)?;
        self.ingest(&block)?;
        Ok(block)
    }

    /// Decodes, verifies and ingests a block received from elsewhere.
    ///
    /// # Errors
    /// [`ReplicaError::Block`] for bytes that are not a valid block, [`ReplicaError::Rejected`]
    /// when the merge refuses it. Nothing changes in either case.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<Outcome, ReplicaError> {
        let block = VerifiedBlock::decode(bytes, None)?;
        self.ingest(&block)
    }

    /// Ingests a block that is already verified.
    ///
    /// # Errors
    /// [`ReplicaError::Rejected`] when the merge refuses it.
    pub fn ingest(&mut self, block: &VerifiedBlock) -> Result<Outcome, ReplicaError> {
        ingest(&mut self.dag, block, &self.limits).map_err(|e| match e {
            IngestError::Rejected(r) => ReplicaError::Rejected(r),
            IngestError::Store(never) => match never {},
        })
    }

    /// The document's fields as the local schema reads them, or `None` if unknown.
    pub fn read(&self, doc: DocId) -> Option<serde_json::Map<String, Json>> {
        let state = self.dag.states.get(&doc)?;
        Some(state.read(self.collections.get(&state.collection)?))
    }

    /// The document's merged state.
    pub fn state(&self, doc: DocId) -> Option<&DocState> {
        self.dag.states.get(&doc)
    }

    /// The underlying DAG.
    pub fn dag(&self) -> &MemoryDag {
        &self.dag
    }

    /// The author.
    pub fn author(&self) -> &Author {
        &self.author
    }
}

fn collection_named<'a>(
    collections: &'a BTreeMap<CollectionId, Collection>,
    name: &str,
) -> Result<&'a Collection, ReplicaError> {
    collections
        .values()
        .find(|c| c.name() == name)
        .ok_or_else(|| ReplicaError::UnknownCollection(name.to_owned()))
}

fn target<'a>(
    collections: &'a BTreeMap<CollectionId, Collection>,
    dag: &'a MemoryDag,
    doc: DocId,
) -> Result<(&'a Collection, &'a DocState), ReplicaError> {
    let state = dag
        .states
        .get(&doc)
        .ok_or(ReplicaError::UnknownDocument(doc))?;
    let collection = collections
        .get(&state.collection)
        .ok_or_else(|| ReplicaError::UnknownCollection(state.collection.to_string()))?;
    Ok((collection, state))
}
