//! The merge: how blocks become document state, in any delivery order.
//!
//! # Contract
//!
//! A document's state is a pure function of the *set* of its applied blocks; the order and
//! duplication of delivery never matter:
//! - **LWW field**: the write with the highest field priority wins; on equal priority, the
//!   write whose canonical CBOR value bytes compare greater (bytewise) wins.
//! - **Counters**: the sum of the increments of all applied blocks, each block counted once
//!   (its CID is its identity). A document may have several genesis blocks (the same document
//!   created concurrently by different authors); they all carry the same fields, because the
//!   docID is derived from them, so the initial value is counted once.
//! - **Delete**: once any applied block deletes the document it stays deleted.
//! - **Heads**: applied blocks that no applied block names as a parent. **Height**: the highest
//!   applied priority.
//!
//! A block is applied only once all its parents are applied. Until then it waits as pending
//! (bounded by [`Limits::max_pending`]) and [`Outcome::Pending`] reports the CIDs that are
//! missing. When a block is applied, every pending block it completes is applied too, in the
//! same call, iteratively.
//!
//! Before a block is applied its claims are checked against its parents: they must belong to
//! the same document and collection, its priority must be exactly 1 + the highest parent
//! priority, and each field priority must lie in 1..=priority ([`Rejection`]).
//!
//! State is read and written through [`DagStore`], the seam to storage: the memory
//! [`MemoryDag`](crate::MemoryDag) implements it with maps, and `hypha-store` implements it
//! inside one redb write transaction, so a block, the state it produces and the pending
//! blocks it releases commit together.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use ipld_core::ipld::Ipld;
use serde::{Deserialize, Serialize};

use crate::block::{FieldOp, Status, VerifiedBlock};
use crate::cid::Cid;
use crate::document::DocId;
use crate::schema::{Collection, CollectionId, CrdtType};

/// The merged state of one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocState {
    /// The document.
    pub doc_id: DocId,
    /// Its collection.
    pub collection: CollectionId,
    /// Applied blocks that no applied block names as a parent, sorted.
    pub heads: Vec<Cid>,
    /// The highest applied priority.
    pub height: u64,
    /// Whether an applied block deleted the document.
    pub deleted: bool,
    /// How many blocks have been applied.
    pub blocks: u64,
    /// Per field, whatever was written to it. Fields unknown to the local schema are kept.
    pub fields: BTreeMap<String, FieldState>,
}

/// What one field holds, whatever type the local schema gives it.
///
/// Peers may declare a field differently (the collection is identified by name only), so a
/// field keeps both the LWW winner and the counter sum; reading picks per the local schema.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FieldState {
    /// The winning LWW write, if any.
    pub lww: Option<LwwWrite>,
    /// The sum of all counter increments, if any (i128: the sum of i64s cannot overflow it).
    #[serde(
        with = "i128_as_bytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub counter: Option<i128>,
}

/// Bytes that are not an encoded [`DocState`], or a state that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document state encoding: {0}")]
pub struct StateCodecError(String);

/// A winning LWW write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LwwWrite {
    /// Its field priority.
    pub priority: u64,
    /// Its value.
    pub value: Ipld,
}

impl DocState {
    /// The state of a document before any block.
    pub fn empty(doc_id: DocId, collection: CollectionId) -> DocState {
        DocState {
            doc_id,
            collection,
            heads: Vec::new(),
            height: 0,
            deleted: false,
            blocks: 0,
            fields: BTreeMap::new(),
        }
    }

    /// The document as JSON fields, as `collection` (the local schema) reads them: undeclared
    /// fields and values of another type are left out, counters read as their sum (clamped to
    /// the Int range), and null fields are left out.
    pub fn read(&self, collection: &Collection) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for field in collection.fields() {
            let Some(state) = self.fields.get(&field.name) else {
                continue;
            };
            let value = match field.crdt {
                CrdtType::Lww => state
                    .lww
                    .as_ref()
                    .and_then(|w| crate::document::to_json(field.kind, &w.value)),
                CrdtType::PCounter | CrdtType::PnCounter => state
                    .counter
                    .map(|sum| (sum.clamp(i64::MIN.into(), i64::MAX.into()) as i64).into()),
            };
            match value {
                Some(serde_json::Value::Null) | None => {}
                Some(value) => {
                    out.insert(field.name.clone(), value);
                }
            }
        }
        out
    }

    /// The state as DAG-CBOR (the shape its `Serialize` impl gives), for storage.
    ///
    /// # Errors
    /// Only for a state holding a value DAG-CBOR cannot (states made by the merge never do).
    pub fn to_bytes(&self) -> Result<Vec<u8>, StateCodecError> {
        crate::codec::encode_state(self).map_err(|e| StateCodecError(e.to_owned()))
    }

    /// Reads a state written by [`to_bytes`](DocState::to_bytes).
    ///
    /// # Errors
    /// [`StateCodecError`] for bytes that are not such a state.
    pub fn from_bytes(bytes: &[u8]) -> Result<DocState, StateCodecError> {
        crate::codec::check_nesting(bytes, crate::codec::MAX_NESTING + 2)
            .map_err(|e| StateCodecError(e.to_owned()))?;
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| StateCodecError(e.to_string()))
    }

    /// The next priority of field `name`: 1 + the highest this replica knows.
    pub fn next_field_priority(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .and_then(|f| f.lww.as_ref())
            .map_or(0, |w| w.priority)
            + 1
    }

    /// Applies a block whose parents are all applied and whose claims were checked.
    fn apply(&mut self, block: &VerifiedBlock) {
        let cid = block.cid();
        let b = block.block();
        self.heads.retain(|h| b.heads.binary_search(h).is_err());
        if let Err(at) = self.heads.binary_search(&cid) {
            self.heads.insert(at, cid);
        }
        self.height = self.height.max(b.delta.priority);
        self.deleted |= b.delta.status == Status::Deleted;
        // Every genesis block of a document carries the same fields (its docID is derived
        // from them), so concurrent creates by different authors count initial counter values
        // once. Any applied block means a genesis was applied before it.
        let repeated_genesis = b.heads.is_empty() && self.blocks > 0;
        self.blocks += 1;
        for (name, op) in &b.delta.fields {
            let state = match self.fields.get_mut(name) {
                Some(state) => state,
                None => self.fields.entry(name.clone()).or_default(),
            };
            match op {
                FieldOp::Lww { priority, value } => {
                    let wins = match &state.lww {
                        None => true,
                        Some(current) => lww_wins(*priority, value, current),
                    };
                    if wins {
                        state.lww = Some(LwwWrite {
                            priority: *priority,
                            value: value.clone(),
                        });
                    }
                }
                FieldOp::Counter { value, .. } => {
                    let counted = state.counter.get_or_insert(0);
                    if !repeated_genesis {
                        *counted += i128::from(*value);
                    }
                }
            }
        }
    }
}

/// Whether a write of `value` at `priority` beats `current`.
fn lww_wins(priority: u64, value: &Ipld, current: &LwwWrite) -> bool {
    match priority.cmp(&current.priority) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        // Ties are rare (concurrent writes at one priority): only then are the values encoded.
        std::cmp::Ordering::Equal => canonical_bytes(value) > canonical_bytes(&current.value),
    }
}

fn canonical_bytes(value: &Ipld) -> Vec<u8> {
    // invariant: values come from verified blocks, which encoded them before.
    serde_ipld_dagcbor::to_vec(value).expect("a verified value encodes")
}

/// What applying (ingesting) a block did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The block was applied, with every pending block it completed.
    Applied {
        /// The document.
        doc_id: DocId,
        /// Its heads afterwards.
        heads: Vec<Cid>,
        /// The blocks applied, in the order they were applied (the ingested one first).
        applied: Vec<Cid>,
        /// Pending blocks that were released and then refused.
        rejected: Vec<(Cid, Rejection)>,
    },
    /// The block waits for missing ancestors.
    Pending {
        /// Ancestors that are neither applied nor pending: what to fetch.
        missing: Vec<Cid>,
    },
    /// The block was already applied or pending; nothing changed.
    Duplicate,
}

/// Why a well-formed block was refused by the merge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The priorities the block claims do not follow from its parents.
    #[error("block claims priority {claimed}, its parents allow {expected}")]
    PriorityMismatch {
        /// What the block claims (document priority, or the offending field priority).
        claimed: u64,
        /// What its parents allow.
        expected: u64,
    },
    /// A parent belongs to another document.
    #[error("a parent belongs to another document")]
    ForeignParent,
    /// The block names another collection than the document's.
    #[error("block names another collection than its document's")]
    CollectionMismatch,
    /// The pending set is full.
    #[error("pending set is full ({max} blocks)")]
    PendingFull {
        /// The limit.
        max: usize,
    },
}

/// Bounds of the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most blocks that may wait for ancestors at once. Default 100,000: enough for a long
    /// history arriving newest-first, small enough to bound memory and disk.
    pub max_pending: usize,
    /// The most ancestors a missing-report walk visits. Default 10,000.
    pub max_walk: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pending: 100_000,
            max_walk: 10_000,
        }
    }
}

/// What the merge knows of an applied block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedMeta {
    /// Its document.
    pub doc_id: DocId,
    /// Its document priority.
    pub priority: u64,
}

/// The storage the merge reads and writes; one implementation per backend.
///
/// Every method sees the writes of the ones before it (a transaction in `hypha-store`). The
/// merge takes a document's state out with [`take_state`](DagStore::take_state) and always
/// hands it back: applied through [`put_applied`](DagStore::put_applied), or unchanged through
/// [`restore_state`](DagStore::restore_state) when it refuses the block. A backend that reads
/// a copy (a database) may treat `take_state` as a read and `restore_state` as a no-op; one
/// that holds states in memory moves them out and back, so nothing is cloned.
pub trait DagStore {
    /// A storage failure.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What is known of `cid` if it is applied.
    fn applied(&self, cid: &Cid) -> Result<Option<AppliedMeta>, Self::Error>;
    /// The parents of `cid` if it is pending.
    fn pending_parents(&self, cid: &Cid) -> Result<Option<Vec<Cid>>, Self::Error>;
    /// How many blocks are pending.
    fn pending_len(&self) -> Result<usize, Self::Error>;
    /// Takes the state of `doc` out, if any block of it was applied.
    fn take_state(&mut self, doc: &DocId) -> Result<Option<DocState>, Self::Error>;
    /// Gives back a state taken by [`take_state`](DagStore::take_state), unchanged.
    fn restore_state(&mut self, state: DocState) -> Result<(), Self::Error>;
    /// Records `block` as applied and `state` as its document's state.
    fn put_applied(&mut self, block: &VerifiedBlock, state: DocState) -> Result<(), Self::Error>;
    /// Records `block` as pending, waiting for `waiting_on` (its parents not applied).
    fn put_pending(&mut self, block: &VerifiedBlock, waiting_on: &[Cid])
    -> Result<(), Self::Error>;
    /// Removes and returns the CIDs of the pending blocks that wait for `parent`.
    fn take_waiting(&mut self, parent: &Cid) -> Result<Vec<Cid>, Self::Error>;
    /// Removes pending block `cid` and returns it.
    fn take_pending(&mut self, cid: &Cid) -> Result<Option<VerifiedBlock>, Self::Error>;
}

/// An ingest that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum IngestError<E: std::error::Error + 'static> {
    /// The merge refused the block; nothing was written.
    #[error(transparent)]
    Rejected(Rejection),
    /// Storage failed; the caller must abort the transaction.
    #[error("storage failed during merge")]
    Store(#[source] E),
}

impl<E: std::error::Error + 'static> From<Failure<E>> for IngestError<E> {
    fn from(failure: Failure<E>) -> IngestError<E> {
        match failure {
            Failure::Rejected(r) => IngestError::Rejected(r),
            Failure::Store(e) => IngestError::Store(e),
        }
    }
}

/// Ingests a verified block: applies it if its parents are applied (then every pending block
/// it completes), or parks it as pending.
///
/// # Errors
/// [`IngestError::Rejected`] when the block breaks a rule that involves its parents or the
/// pending set is full; [`IngestError::Store`] when storage fails. Either way nothing was
/// written for this block (pending blocks it released and that were refused are dropped and
/// reported in [`Outcome::Applied::rejected`] instead).
pub fn ingest<S: DagStore>(
    store: &mut S,
    block: &VerifiedBlock,
    limits: &Limits,
) -> Result<Outcome, IngestError<S::Error>> {
    let cid = block.cid();
    let store_err = IngestError::Store;
    if store.applied(&cid).map_err(store_err)?.is_some()
        || store.pending_parents(&cid).map_err(store_err)?.is_some()
    {
        return Ok(Outcome::Duplicate);
    }
    let max_parent = match parents_applied(store, &block.block().heads).map_err(store_err)? {
        Parents::Applied(facts) => {
            if !facts.all_of(block.doc_id()) {
                return Err(IngestError::Rejected(Rejection::ForeignParent));
            }
            facts.max_priority
        }
        Parents::Missing(waiting_on) => {
            if store.pending_len().map_err(store_err)? >= limits.max_pending {
                let max = limits.max_pending;
                return Err(IngestError::Rejected(Rejection::PendingFull { max }));
            }
            store.put_pending(block, &waiting_on).map_err(store_err)?;
            let missing = missing_ancestors(store, &waiting_on, limits).map_err(store_err)?;
            return Ok(Outcome::Pending { missing });
        }
    };
    let mut heads = apply_checked(store, block, max_parent)?;
    let doc_id = block.doc_id();
    let mut applied = vec![cid];
    let mut rejected = Vec::new();
    // The block itself is released first; a queue is allocated only if it completes others.
    let mut released: VecDeque<Cid> = VecDeque::new();
    let mut first = Some(cid);
    while let Some(parent) = first.take().or_else(|| released.pop_front()) {
        for child in store.take_waiting(&parent).map_err(store_err)? {
            let Some(parents) = store.pending_parents(&child).map_err(store_err)? else {
                continue;
            };
            let Parents::Applied(facts) = parents_applied(store, &parents).map_err(store_err)?
            else {
                continue;
            };
            // invariant: pending_parents just returned Some for it.
            let Some(pending) = store.take_pending(&child).map_err(store_err)? else {
                continue;
            };
            let result = if facts.all_of(pending.doc_id()) {
                apply_checked(store, &pending, facts.max_priority)
            } else {
                Err(Failure::Rejected(Rejection::ForeignParent))
            };
            match result {
                Ok(h) => {
                    if pending.doc_id() == doc_id {
                        heads = h;
                    }
                    applied.push(child);
                    released.push_back(child);
                }
                Err(Failure::Rejected(r)) => rejected.push((child, r)),
                Err(Failure::Store(e)) => return Err(IngestError::Store(e)),
            }
        }
    }
    Ok(Outcome::Applied {
        doc_id,
        heads,
        applied,
        rejected,
    })
}

enum Failure<E> {
    Rejected(Rejection),
    Store(E),
}

enum Parents {
    /// Every parent is applied.
    Applied(ParentFacts),
    /// These parents are not applied.
    Missing(Vec<Cid>),
}

/// What the checks need to know of a block's applied parents.
struct ParentFacts {
    /// The highest parent priority (0 for none).
    max_priority: u64,
    /// The document of the parents (`None` for none).
    doc: Option<DocId>,
    /// Whether the parents belong to more than one document.
    mixed: bool,
}

impl ParentFacts {
    /// Whether every parent belongs to `doc`.
    fn all_of(&self, doc: DocId) -> bool {
        !self.mixed && self.doc.is_none_or(|p| p == doc)
    }
}

/// Looks each parent up once: either all are applied (with the facts the checks need) or
/// some are missing.
fn parents_applied<S: DagStore>(store: &S, parents: &[Cid]) -> Result<Parents, S::Error> {
    let mut missing = Vec::new();
    let mut max_priority = 0;
    let mut doc: Option<DocId> = None;
    let mut mixed = false;
    for parent in parents {
        match store.applied(parent)? {
            None => missing.push(*parent),
            Some(meta) => {
                max_priority = max_priority.max(meta.priority);
                mixed |= doc.is_some_and(|d| d != meta.doc_id);
                doc = Some(meta.doc_id);
            }
        }
    }
    if !missing.is_empty() {
        return Ok(Parents::Missing(missing));
    }
    Ok(Parents::Applied(ParentFacts {
        max_priority,
        doc,
        mixed,
    }))
}

/// Checks a block's claims against its parents' highest priority, applies it and stores the
/// result; returns the document's new heads.
fn apply_checked<S: DagStore>(
    store: &mut S,
    block: &VerifiedBlock,
    max_parent: u64,
) -> Result<Vec<Cid>, Failure<S::Error>> {
    let b = block.block();
    let expected = max_parent + 1;
    let claimed = b.delta.priority;
    if claimed != expected {
        return Err(Failure::Rejected(Rejection::PriorityMismatch {
            claimed,
            expected,
        }));
    }
    for op in b.delta.fields.values() {
        if let FieldOp::Lww { priority, .. } = op
            && *priority > expected
        {
            let claimed = *priority;
            return Err(Failure::Rejected(Rejection::PriorityMismatch {
                claimed,
                expected,
            }));
        }
    }
    let state = store.take_state(&b.delta.doc_id).map_err(Failure::Store)?;
    let mut state = state.unwrap_or_else(|| DocState::empty(b.delta.doc_id, b.delta.collection));
    if state.collection != b.delta.collection {
        store.restore_state(state).map_err(Failure::Store)?;
        return Err(Failure::Rejected(Rejection::CollectionMismatch));
    }
    state.apply(block);
    let heads = state.heads.clone();
    store.put_applied(block, state).map_err(Failure::Store)?;
    Ok(heads)
}

/// The ancestors reachable from `from` through pending blocks that are neither applied nor
/// pending: what must be fetched. Visits at most `limits.max_walk` blocks.
fn missing_ancestors<S: DagStore>(
    store: &S,
    from: &[Cid],
    limits: &Limits,
) -> Result<Vec<Cid>, S::Error> {
    let mut missing = BTreeSet::new();
    let mut seen: BTreeSet<Cid> = from.iter().copied().collect();
    let mut stack: Vec<Cid> = from.to_vec();
    while let Some(cid) = stack.pop() {
        if seen.len() > limits.max_walk {
            break;
        }
        match store.pending_parents(&cid)? {
            None => {
                if store.applied(&cid)?.is_none() {
                    missing.insert(cid);
                }
            }
            Some(parents) => {
                for parent in parents {
                    if seen.insert(parent) {
                        stack.push(parent);
                    }
                }
            }
        }
    }
    Ok(missing.into_iter().collect())
}

mod i128_as_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<i128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_bytes(&v.to_be_bytes()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
        let bytes: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        bytes
            .map(|b| {
                let b: [u8; 16] = b.as_slice().try_into().map_err(serde::de::Error::custom)?;
                Ok(i128::from_be_bytes(b))
            })
            .transpose()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied { applied, .. } => write!(f, "applied {} block(s)", applied.len()),
            Outcome::Pending { missing } => write!(f, "pending, {} missing", missing.len()),
            Outcome::Duplicate => f.write_str("duplicate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::block::Block;
    use crate::{Author, MemoryDag, Replica, parse_sdl};

    fn users() -> Collection {
        parse_sdl("hypha", "type Users { name: String age: Int }")
            .unwrap()
            .remove(0)
    }

    /// A genesis block and an update on top of it, made by a normal replica.
    fn history() -> (VerifiedBlock, VerifiedBlock) {
        let mut r = Replica::new([users()], Author::unsigned([1; 32]));
        let (doc, genesis) = r.create("Users", &json!({"name": "a", "age": 1})).unwrap();
        let update = r.update(doc, &json!({"age": 2})).unwrap();
        (genesis, update)
    }

    fn tampered(block: &VerifiedBlock, change: impl FnOnce(&mut Block)) -> VerifiedBlock {
        let mut b = block.block().clone();
        change(&mut b);
        b.encode().unwrap()
    }

    fn ingest_all(blocks: &[&VerifiedBlock]) -> Result<Outcome, Rejection> {
        let mut dag = MemoryDag::new();
        let mut last = Ok(Outcome::Duplicate);
        for block in blocks {
            last = ingest(&mut dag, block, &Limits::default()).map_err(|e| match e {
                IngestError::Rejected(r) => r,
                IngestError::Store(never) => match never {},
            });
        }
        last
    }

    #[test]
    fn priority_must_follow_from_parents() {
        let (genesis, update) = history();
        let skip = tampered(&update, |b| b.delta.priority = 5);
        assert_eq!(
            ingest_all(&[&genesis, &skip]),
            Err(Rejection::PriorityMismatch {
                claimed: 5,
                expected: 2
            })
        );
        let field = tampered(&update, |b| {
            b.delta.fields.insert(
                "age".into(),
                FieldOp::Lww {
                    priority: 3,
                    value: Ipld::Integer(9),
                },
            );
        });
        assert_eq!(
            ingest_all(&[&genesis, &field]),
            Err(Rejection::PriorityMismatch {
                claimed: 3,
                expected: 2
            })
        );
    }

    #[test]
    fn a_refused_block_released_from_pending_is_reported_and_dropped() {
        let (genesis, update) = history();
        let skip = tampered(&update, |b| b.delta.priority = 5);
        let mut dag = MemoryDag::new();
        let limits = Limits::default();
        assert!(matches!(
            ingest(&mut dag, &skip, &limits).unwrap(),
            Outcome::Pending { .. }
        ));
        let Outcome::Applied {
            applied, rejected, ..
        } = ingest(&mut dag, &genesis, &limits).unwrap()
        else {
            panic!("genesis applies");
        };
        assert_eq!(applied, vec![genesis.cid()]);
        assert_eq!(
            rejected,
            vec![(
                skip.cid(),
                Rejection::PriorityMismatch {
                    claimed: 5,
                    expected: 2
                }
            )]
        );
        assert_eq!(dag.pending().count(), 0);
    }

    #[test]
    fn parents_must_belong_to_the_same_document() {
        let (genesis, update) = history();
        let mut r = Replica::new([users()], Author::unsigned([1; 32]));
        let (_, other) = r.create("Users", &json!({"name": "b"})).unwrap();
        let foreign = tampered(&update, |b| b.heads = vec![other.cid()]);
        assert_eq!(
            ingest_all(&[&genesis, &other, &foreign]),
            Err(Rejection::ForeignParent)
        );
    }

    #[test]
    fn collection_must_match_the_document() {
        let (genesis, update) = history();
        let bears = crate::schema::CollectionId::derive("hypha", "Bears");
        let moved = tampered(&update, |b| b.delta.collection = bears);
        assert_eq!(
            ingest_all(&[&genesis, &moved]),
            Err(Rejection::CollectionMismatch)
        );
    }

    #[test]
    fn pending_set_is_bounded() {
        let (_, update) = history();
        let mut dag = MemoryDag::new();
        let limits = Limits {
            max_pending: 0,
            ..Limits::default()
        };
        let err = ingest(&mut dag, &update, &limits).unwrap_err();
        assert!(matches!(
            err,
            IngestError::Rejected(Rejection::PendingFull { max: 0 })
        ));
        assert_eq!(dag.pending().count(), 0, "a refused block writes nothing");
    }

    #[test]
    fn duplicates_change_nothing() {
        let (genesis, update) = history();
        assert_eq!(
            ingest_all(&[&genesis, &update, &update]),
            Ok(Outcome::Duplicate)
        );
        assert_eq!(ingest_all(&[&update, &update]), Ok(Outcome::Duplicate));
    }
}
