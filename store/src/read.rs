//! Reads: each runs in its own read transaction (a consistent snapshot).

use std::collections::BTreeMap;

use hypha_crdt::cid::dag_cbor_cid;
use hypha_crdt::{
    BlockSource, Cid, Collection, CollectionId, DocId, DocState, HistoryError, VerifiedBlock,
    history,
};

use crate::Store;
use crate::backend::{ReadTx, scan_prefix};
use crate::error::{ReadError, StorageError};
use crate::layout::{self, DOC_ID_LEN, META_NONCE_SEQ, SUB_COLLECTION, SUB_DOCUMENT, Table};
use crate::meta::{Outbox, PeerKey, PeerRecord, Replicator, Subscriptions};
use crate::mutation::{parse_stored_schema, read_state};

/// Counts of what the store holds, and of what its committer did since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Applied blocks.
    pub blocks: u64,
    /// Pending blocks (waiting for ancestors).
    pub pending: u64,
    /// Documents with a state.
    pub documents: u64,
    /// Declared collections.
    pub collections: u64,
    /// Replicators.
    pub replicators: u64,
    /// Subscriptions (collections plus documents).
    pub subscriptions: u64,
    /// Outbox entries over all peers.
    pub outbox_entries: u64,
    /// Remembered peers.
    pub peers: u64,
    /// Durable commits (fsyncs) since open: fewer than `mutations` when group commit works.
    pub commits: u64,
    /// Mutations committed since open ([`Mutation::Barrier`](crate::Mutation::Barrier)s, which
    /// write nothing, are counted in `barriers`).
    pub mutations: u64,
    /// Barriers passed since open.
    pub barriers: u64,
    /// Mutations refused since open (each wrote nothing).
    pub refused: u64,
    /// Batches rolled back by a storage failure since open.
    pub failed_batches: u64,
}

/// Applied blocks of one read transaction, re-hashed on every read.
struct Blocks<'a> {
    tx: &'a dyn ReadTx,
}

impl BlockSource for Blocks<'_> {
    type Error = StorageError;

    fn block(&self, cid: &Cid) -> Result<Option<VerifiedBlock>, StorageError> {
        read_block(self.tx, cid)
    }
}

/// The applied block `cid`: its bytes re-hashed against the CID, then decoded and verified.
fn read_block(tx: &dyn ReadTx, cid: &Cid) -> Result<Option<VerifiedBlock>, StorageError> {
    let Some(v) = tx.get(Table::Blocks, &cid.to_bytes())? else {
        return Ok(None);
    };
    let (_, bytes) = layout::decode_block_meta(&v)?;
    VerifiedBlock::decode(bytes, Some(cid))
        .map(Some)
        .map_err(|_| StorageError::Corrupted { cid: *cid })
}

/// Re-hashes `bytes` against `cid` (paired with the check on put).
fn check_hash(cid: &Cid, bytes: &[u8]) -> Result<(), StorageError> {
    if dag_cbor_cid(bytes) != *cid {
        return Err(StorageError::Corrupted { cid: *cid });
    }
    Ok(())
}

/// Serving backfill straight from the store: each read is its own transaction, re-hashed.
impl BlockSource for Store {
    type Error = ReadError;

    fn block(&self, cid: &Cid) -> Result<Option<VerifiedBlock>, ReadError> {
        Store::block(self, cid)
    }
}

impl Store {
    /// The applied block `cid`, re-hashed against its CID and verified.
    ///
    /// # Errors
    /// [`ReadError::Corrupted`] if the stored bytes do not hash to `cid` (they are never
    /// returned); [`ReadError::Storage`] if storage fails.
    pub fn block(&self, cid: &Cid) -> Result<Option<VerifiedBlock>, ReadError> {
        Ok(self.backend.read(|tx| read_block(tx, cid))?)
    }

    /// The bytes of applied block `cid`, re-hashed against its CID but not decoded: what a
    /// peer is sent.
    ///
    /// # Errors
    /// As [`Store::block`].
    pub fn block_bytes(&self, cid: &Cid) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.backend.read(|tx| {
            let Some(v) = tx.get(Table::Blocks, &cid.to_bytes())? else {
                return Ok(None);
            };
            let (_, bytes) = layout::decode_block_meta(&v)?;
            check_hash(cid, bytes)?;
            Ok(Some(bytes.to_vec()))
        })?)
    }

    /// Whether `cid` is applied or pending (a cheap membership test, no re-hash).
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn contains(&self, cid: &Cid) -> Result<bool, ReadError> {
        let key = cid.to_bytes();
        Ok(self.backend.read(|tx| {
            Ok(tx.get(Table::Blocks, &key)?.is_some() || tx.get(Table::Pending, &key)?.is_some())
        })?)
    }

    /// Whether `cid` is applied (not merely pending): a cheap membership test, no re-hash.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn is_applied(&self, cid: &Cid) -> Result<bool, ReadError> {
        let key = cid.to_bytes();
        Ok(self
            .backend
            .read(|tx| Ok(tx.get(Table::Blocks, &key)?.is_some()))?)
    }

    /// The merged state of `doc` (its heads, fields, whether deleted).
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails or the record does not decode.
    pub fn state(&self, doc: &DocId) -> Result<Option<DocState>, ReadError> {
        Ok(self.backend.read(|tx| read_state(tx, doc))?)
    }

    /// The document as JSON, as its collection in the local schema reads it; `None` if the
    /// document or its collection is unknown.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn document(
        &self,
        doc: &DocId,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ReadError> {
        Ok(self.backend.read(|tx| {
            let Some(state) = read_state(tx, doc)? else {
                return Ok(None);
            };
            let collections = read_collections(tx)?;
            Ok(collections.get(&state.collection).map(|c| state.read(c)))
        })?)
    }

    /// Up to `limit` documents of `collection` in docID order, starting after `after` (for
    /// paging); deleted documents only with `include_deleted`.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn documents(
        &self,
        collection: CollectionId,
        include_deleted: bool,
        after: Option<DocId>,
        limit: usize,
    ) -> Result<Vec<DocId>, ReadError> {
        let prefix = collection.0.to_bytes();
        let from = match after {
            Some(d) => {
                let mut k = layout::collection_doc_key(collection, d);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let end = crate::backend::prefix_end(&prefix);
        Ok(self.backend.read(|tx| {
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            tx.scan(Table::CollectionDocs, &from, end.as_deref(), &mut |k, v| {
                let doc = layout::doc_from(&k[prefix.len()..], Table::CollectionDocs)?;
                if include_deleted || v.first() == Some(&0) {
                    out.push(doc);
                }
                Ok(out.len() < limit)
            })?;
            Ok(out)
        })?)
    }

    /// The history of `doc`, newest first, at most `limit` blocks; `true` when more remain.
    ///
    /// # Errors
    /// [`ReadError::Missing`] if a block the walk reaches is not stored, [`ReadError::Corrupted`]
    /// if one fails its re-hash.
    pub fn history(
        &self,
        doc: &DocId,
        limit: usize,
    ) -> Result<(Vec<VerifiedBlock>, bool), ReadError> {
        self.backend
            .read(|tx| {
                let Some(state) = read_state(tx, doc)? else {
                    return Ok(Ok((Vec::new(), false)));
                };
                Ok(history(&Blocks { tx }, &state.heads, limit))
            })?
            .map_err(|e| match e {
                HistoryError::Missing(cid) => ReadError::Missing(cid),
                HistoryError::Store(e) => e.into(),
            })
    }

    /// The declared collections, by name.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails or a stored schema does not parse.
    pub fn collections(&self) -> Result<Vec<Collection>, ReadError> {
        Ok(self
            .backend
            .read(|tx| Ok(read_collections(tx)?.into_values().collect::<Vec<_>>()))
            .map(|mut v| {
                v.sort_by(|a, b| a.name().cmp(b.name()));
                v
            })?)
    }

    /// The collection called `name`.
    ///
    /// # Errors
    /// As [`Store::collections`].
    pub fn collection(&self, name: &str) -> Result<Option<Collection>, ReadError> {
        Ok(self.backend.read(|tx| {
            let Some(v) = tx.get(Table::Schema, name.as_bytes())? else {
                return Ok(None);
            };
            Ok(parse_stored_schema(&v)?
                .into_iter()
                .find(|c| c.name() == name))
        })?)
    }

    /// Every replicator, by peer.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn replicators(&self) -> Result<BTreeMap<PeerKey, Replicator>, ReadError> {
        Ok(self.backend.read(|tx| {
            let mut out = BTreeMap::new();
            tx.scan(Table::Replicators, &[], None, &mut |k, v| {
                out.insert(PeerKey(k.to_vec()), layout::decode_replicator(v)?);
                Ok(true)
            })?;
            Ok(out)
        })?)
    }

    /// What the node follows.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn subscriptions(&self) -> Result<Subscriptions, ReadError> {
        Ok(self.backend.read(|tx| {
            let mut out = Subscriptions::default();
            tx.scan(Table::Subscriptions, &[], None, &mut |k, _| {
                match k.split_first() {
                    Some((&SUB_COLLECTION, id)) => {
                        let cid = layout::cid_from(id, Table::Subscriptions)?;
                        out.collections.insert(CollectionId(cid));
                    }
                    Some((&SUB_DOCUMENT, id)) => {
                        out.documents
                            .insert(layout::doc_from(id, Table::Subscriptions)?);
                    }
                    _ => return Err(Table::Subscriptions.corrupted()),
                }
                Ok(true)
            })?;
            Ok(out)
        })?)
    }

    /// The outbox of `peer`: up to `limit` documents owed (docID order), the entry count and
    /// the catch-up marker.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn outbox(&self, peer: &PeerKey, limit: usize) -> Result<Outbox, ReadError> {
        Ok(self.backend.read(|tx| {
            let mut out = Outbox::default();
            if let Some(v) = tx.get(Table::OutboxMeta, &peer.0)? {
                (out.len, out.catch_up) = layout::decode_outbox_meta(&v)?;
            }
            if limit == 0 {
                return Ok(out);
            }
            scan_prefix(
                tx,
                Table::Outbox,
                &layout::peer_prefix(peer),
                &mut |k, _| {
                    if k.len() < DOC_ID_LEN {
                        return Err(Table::Outbox.corrupted());
                    }
                    let (_, doc) = layout::decode_outbox_key(k)?;
                    out.documents.push(doc);
                    Ok(out.documents.len() < limit)
                },
            )?;
            Ok(out)
        })?)
    }

    /// The remembered addresses of `peer`.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn peer(&self, peer: &PeerKey) -> Result<Option<PeerRecord>, ReadError> {
        Ok(self.backend.read(|tx| {
            tx.get(Table::Peers, &peer.0)?
                .map(|v| layout::decode_peer(&v))
                .transpose()
        })?)
    }

    /// Every remembered peer.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn peers(&self) -> Result<BTreeMap<PeerKey, PeerRecord>, ReadError> {
        Ok(self.backend.read(|tx| {
            let mut out = BTreeMap::new();
            tx.scan(Table::Peers, &[], None, &mut |k, v| {
                out.insert(PeerKey(k.to_vec()), layout::decode_peer(v)?);
                Ok(true)
            })?;
            Ok(out)
        })?)
    }

    /// The author's next nonce sequence number, as last committed.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn nonce_seq(&self) -> Result<u64, ReadError> {
        Ok(self
            .backend
            .read(|tx| match tx.get(Table::Meta, META_NONCE_SEQ)? {
                Some(v) => layout::u64_be(&v, Table::Meta),
                None => Ok(0),
            })?)
    }

    /// The remembered hot documents, least recently used first
    /// ([`Mutation::SetHotDocuments`](crate::Mutation::SetHotDocuments)).
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails or the record does not decode.
    pub fn hot_documents(&self) -> Result<Vec<(DocId, CollectionId)>, ReadError> {
        Ok(self.backend.read(|tx| {
            let Some(v) = tx.get(Table::Meta, layout::META_HOT_DOCS)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            let mut rest = v.as_slice();
            while !rest.is_empty() {
                let corrupted = || Table::Meta.corrupted();
                let (doc, tail) = rest.split_at_checked(DOC_ID_LEN).ok_or_else(corrupted)?;
                let (&len, tail) = tail.split_first().ok_or_else(corrupted)?;
                let (cid, tail) = tail
                    .split_at_checked(usize::from(len))
                    .ok_or_else(corrupted)?;
                let doc = layout::doc_from(doc, Table::Meta)?;
                let cid = layout::cid_from(cid, Table::Meta)?;
                out.push((doc, CollectionId(cid)));
                rest = tail;
            }
            Ok(out)
        })?)
    }

    /// Counts of the tables and of the committer's work since open.
    ///
    /// # Errors
    /// [`ReadError::Storage`] if storage fails.
    pub fn stats(&self) -> Result<Stats, ReadError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut stats = self.backend.read(|tx| {
            Ok(Stats {
                blocks: tx.len(Table::Blocks)?,
                pending: tx.len(Table::Pending)?,
                documents: tx.len(Table::States)?,
                collections: tx.len(Table::Schema)?,
                replicators: tx.len(Table::Replicators)?,
                subscriptions: tx.len(Table::Subscriptions)?,
                outbox_entries: tx.len(Table::Outbox)?,
                peers: tx.len(Table::Peers)?,
                ..Stats::default()
            })
        })?;
        stats.commits = self.counters.commits.load(Relaxed);
        stats.mutations = self.counters.mutations.load(Relaxed);
        stats.barriers = self.counters.barriers.load(Relaxed);
        stats.refused = self.counters.refused.load(Relaxed);
        stats.failed_batches = self.counters.failed_batches.load(Relaxed);
        Ok(stats)
    }

    /// Re-hashes every stored block (applied and pending) against its CID; returns how many
    /// were checked. Reads the whole blocks table: for tests, tools and recovery checks.
    ///
    /// # Errors
    /// [`ReadError::Corrupted`] for the first block that fails.
    pub fn verify_blocks(&self) -> Result<u64, ReadError> {
        Ok(self.backend.read(|tx| {
            let mut n = 0;
            tx.scan(Table::Blocks, &[], None, &mut |k, v| {
                let cid = layout::cid_from(k, Table::Blocks)?;
                check_hash(&cid, layout::decode_block_meta(v)?.1)?;
                n += 1;
                Ok(true)
            })?;
            tx.scan(Table::Pending, &[], None, &mut |k, v| {
                let cid = layout::cid_from(k, Table::Pending)?;
                check_hash(&cid, layout::decode_pending(v)?.1)?;
                n += 1;
                Ok(true)
            })?;
            Ok(n)
        })?)
    }
}

fn read_collections(tx: &dyn ReadTx) -> Result<BTreeMap<CollectionId, Collection>, StorageError> {
    let mut out = BTreeMap::new();
    tx.scan(Table::Schema, &[], None, &mut |_, v| {
        for c in parse_stored_schema(v)? {
            out.insert(c.id(), c);
        }
        Ok(true)
    })?;
    Ok(out)
}
