//! Tables and the byte layouts of their keys and values (documented in the crate docs).

use hypha_crdt::cid::CidBytes;
use hypha_crdt::sync_index::{ItemHash, Root};
use hypha_crdt::{AppliedMeta, Cid, CollectionId, DocId};

use crate::error::StorageError;
use crate::meta::{PeerKey, PeerRecord, Replicator};

/// The tables of the store. Every table maps bytes to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    Blocks,
    Pending,
    Waiting,
    States,
    CollectionDocs,
    Schema,
    Replicators,
    Subscriptions,
    Outbox,
    OutboxMeta,
    Peers,
    Meta,
    SyncItems,
    SyncRoots,
}

impl Table {
    pub(crate) const ALL: [Table; 14] = [
        Table::Blocks,
        Table::Pending,
        Table::Waiting,
        Table::States,
        Table::CollectionDocs,
        Table::Schema,
        Table::Replicators,
        Table::Subscriptions,
        Table::Outbox,
        Table::OutboxMeta,
        Table::Peers,
        Table::Meta,
        Table::SyncItems,
        Table::SyncRoots,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The redb table name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Blocks => "blocks",
            Table::Pending => "pending",
            Table::Waiting => "waiting",
            Table::States => "states",
            Table::CollectionDocs => "collection_docs",
            Table::Schema => "schema",
            Table::Replicators => "replicators",
            Table::Subscriptions => "subscriptions",
            Table::Outbox => "outbox",
            Table::OutboxMeta => "outbox_meta",
            Table::Peers => "peers",
            Table::Meta => "meta",
            Table::SyncItems => "sync_items",
            Table::SyncRoots => "sync_roots",
        }
    }

    pub(crate) fn corrupted(self) -> StorageError {
        StorageError::CorruptedRecord { table: self.name() }
    }
}

/// The on-disk format version this build reads and writes. Version 2 added the sync index
/// (`sync_items`, `sync_roots`); a version-1 file is migrated at open.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The version before the sync index, migrated at open.
pub(crate) const FORMAT_VERSION_V1: u32 = 1;
/// Meta key of the format version (u32 big-endian).
pub(crate) const META_FORMAT: &[u8] = b"format_version";
/// Meta key of the author's next nonce sequence number (u64 big-endian).
pub(crate) const META_NONCE_SEQ: &[u8] = b"nonce_seq";
/// Meta key of the hot documents, least recently used first: (docID 16 bytes ‖ collection CID
/// length u8 ‖ collection CID) repeated.
pub(crate) const META_HOT_DOCS: &[u8] = b"hot_documents";

/// Length of a block CID (CIDv1, dag-cbor, sha2-256) in binary form.
pub(crate) const BLOCK_CID_LEN: usize = 36;
/// Length of a docID in binary form.
pub(crate) const DOC_ID_LEN: usize = 16;

pub(crate) fn u64_be(bytes: &[u8], table: Table) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| table.corrupted())?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn cid_from(bytes: &[u8], table: Table) -> Result<Cid, StorageError> {
    Cid::try_from(bytes).map_err(|_| table.corrupted())
}

pub(crate) fn doc_from(bytes: &[u8], table: Table) -> Result<DocId, StorageError> {
    let bytes: [u8; DOC_ID_LEN] = bytes.try_into().map_err(|_| table.corrupted())?;
    Ok(DocId::from_bytes(bytes))
}

// ---- blocks: cid → doc_id[16] ‖ priority u64 BE ‖ block bytes ----

pub(crate) const BLOCK_HEADER_LEN: usize = DOC_ID_LEN + 8;

pub(crate) fn encode_block(doc: DocId, priority: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_HEADER_LEN + bytes.len());
    out.extend_from_slice(&doc.to_bytes());
    out.extend_from_slice(&priority.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

pub(crate) fn decode_block_meta(value: &[u8]) -> Result<(AppliedMeta, &[u8]), StorageError> {
    if value.len() < BLOCK_HEADER_LEN {
        return Err(Table::Blocks.corrupted());
    }
    let doc_id = doc_from(&value[..DOC_ID_LEN], Table::Blocks)?;
    let priority = u64_be(&value[DOC_ID_LEN..BLOCK_HEADER_LEN], Table::Blocks)?;
    Ok((AppliedMeta { doc_id, priority }, &value[BLOCK_HEADER_LEN..]))
}

// ---- pending: cid → n u16 BE ‖ n parents of 36 bytes (the ones it waits on) ‖ block bytes ----
// The parents are the block's heads, so the merge can read them without decoding the block.

pub(crate) fn encode_pending(parents: &[Cid], bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + parents.len() * BLOCK_CID_LEN + bytes.len());
    // invariant: a block has at most MAX_LINKS (1024) parents.
    out.extend_from_slice(&(parents.len() as u16).to_be_bytes());
    for parent in parents {
        out.extend_from_slice(&parent.to_bytes());
    }
    out.extend_from_slice(bytes);
    out
}

pub(crate) fn decode_pending(value: &[u8]) -> Result<(Vec<Cid>, &[u8]), StorageError> {
    let corrupt = || Table::Pending.corrupted();
    let n = usize::from(u16::from_be_bytes(
        value
            .get(..2)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ));
    let end = 2 + n * BLOCK_CID_LEN;
    let links = value.get(2..end).ok_or_else(corrupt)?;
    let parents = links
        .chunks_exact(BLOCK_CID_LEN)
        .map(|c| cid_from(c, Table::Pending))
        .collect::<Result<_, _>>()?;
    Ok((parents, &value[end..]))
}

// ---- waiting: parent cid[36] ‖ child cid[36] → () ----

pub(crate) fn waiting_key(parent: &Cid, child: &Cid) -> Vec<u8> {
    let mut key = parent.to_bytes();
    key.extend_from_slice(&child.to_bytes());
    key
}

// ---- collection_docs: collection id (raw CID, 36 bytes) ‖ doc_id[16] → deleted u8 ----

pub(crate) fn collection_doc_key(collection: CollectionId, doc: DocId) -> Vec<u8> {
    let collection = CidBytes::new(&collection.0);
    let mut key = Vec::with_capacity(collection.len() + DOC_ID_LEN);
    key.extend_from_slice(&collection);
    key.extend_from_slice(&doc.to_bytes());
    key
}

// ---- sync_items: collection id (raw CID, 36 bytes) ‖ doc_id[16] → item hash[32] ----
// ---- sync_roots: collection id (raw CID, 36 bytes) → root digest[32] ‖ count u64 BE ----

pub(crate) fn sync_item_key(collection: CollectionId, doc: DocId) -> Vec<u8> {
    collection_doc_key(collection, doc)
}

/// Splits a `sync_items` key into collection and docID.
pub(crate) fn decode_sync_item_key(key: &[u8]) -> Result<(CollectionId, DocId), StorageError> {
    let t = Table::SyncItems;
    let at = key
        .len()
        .checked_sub(DOC_ID_LEN)
        .ok_or_else(|| t.corrupted())?;
    Ok((
        CollectionId(cid_from(&key[..at], t)?),
        doc_from(&key[at..], t)?,
    ))
}

pub(crate) fn decode_item(value: &[u8]) -> Result<ItemHash, StorageError> {
    let bytes: [u8; 32] = value.try_into().map_err(|_| Table::SyncItems.corrupted())?;
    Ok(ItemHash(bytes))
}

pub(crate) fn decode_root(value: &[u8]) -> Result<Root, StorageError> {
    Root::from_bytes(value).map_err(|_| Table::SyncRoots.corrupted())
}

// ---- schema: collection name (UTF-8) → namespace len u16 BE ‖ namespace ‖ SDL ----

pub(crate) fn encode_schema(namespace: &str, sdl: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + namespace.len() + sdl.len());
    // invariant: the namespace length is checked at open (MAX_NAMESPACE_LEN).
    out.extend_from_slice(&(namespace.len() as u16).to_be_bytes());
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(sdl.as_bytes());
    out
}

pub(crate) fn decode_schema(value: &[u8]) -> Result<(&str, &str), StorageError> {
    let mut r = Reader::new(value, Table::Schema);
    let len = usize::from(r.u16()?);
    let namespace = std::str::from_utf8(r.take(len)?).map_err(|_| Table::Schema.corrupted())?;
    let sdl = std::str::from_utf8(r.rest()).map_err(|_| Table::Schema.corrupted())?;
    Ok((namespace, sdl))
}

// ---- subscriptions: kind u8 (0 collection, 1 document) ‖ id bytes → () ----

pub(crate) const SUB_COLLECTION: u8 = 0;
pub(crate) const SUB_DOCUMENT: u8 = 1;

// ---- per-peer keys: peer len u8 ‖ peer bytes ‖ … ----

pub(crate) fn peer_prefix(peer: &PeerKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + peer.0.len() + DOC_ID_LEN);
    // invariant: PeerKey length is checked against MAX_PEER_KEY_LEN (< 256) before any write.
    key.push(peer.0.len() as u8);
    key.extend_from_slice(&peer.0);
    key
}

pub(crate) fn outbox_key(peer: &PeerKey, doc: DocId) -> Vec<u8> {
    let mut key = peer_prefix(peer);
    key.extend_from_slice(&doc.to_bytes());
    key
}

/// Splits an outbox key into peer and docID.
pub(crate) fn decode_outbox_key(key: &[u8]) -> Result<(PeerKey, DocId), StorageError> {
    let mut r = Reader::new(key, Table::Outbox);
    let len = usize::from(r.u8()?);
    let peer = PeerKey(r.take(len)?.to_vec());
    let doc = doc_from(r.rest(), Table::Outbox)?;
    Ok((peer, doc))
}

// ---- outbox_meta: peer → entries u64 BE ‖ catch_up u8 ----

pub(crate) fn encode_outbox_meta(entries: u64, catch_up: bool) -> [u8; 9] {
    let mut out = [0; 9];
    out[..8].copy_from_slice(&entries.to_be_bytes());
    out[8] = u8::from(catch_up);
    out
}

pub(crate) fn decode_outbox_meta(value: &[u8]) -> Result<(u64, bool), StorageError> {
    if value.len() != 9 {
        return Err(Table::OutboxMeta.corrupted());
    }
    Ok((u64_be(&value[..8], Table::OutboxMeta)?, value[8] != 0))
}

// ---- replicators: peer → collections, docs, addresses (see crate docs) ----

pub(crate) fn encode_replicator(r: &Replicator) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(r.collections.len() as u32).to_be_bytes());
    for c in &r.collections {
        let bytes = c.0.to_bytes();
        out.push(bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&(r.documents.len() as u32).to_be_bytes());
    for d in &r.documents {
        out.extend_from_slice(&d.to_bytes());
    }
    encode_addresses(&mut out, &r.addresses);
    out
}

pub(crate) fn decode_replicator(value: &[u8]) -> Result<Replicator, StorageError> {
    let t = Table::Replicators;
    let mut r = Reader::new(value, t);
    let n = r.u32()? as usize;
    let mut collections = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = usize::from(r.u8()?);
        collections.push(CollectionId(cid_from(r.take(len)?, t)?));
    }
    let n = r.u32()? as usize;
    let mut documents = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        documents.push(doc_from(r.take(DOC_ID_LEN)?, t)?);
    }
    let addresses = decode_addresses(&mut r)?;
    Ok(Replicator {
        collections: collections.into_iter().collect(),
        documents: documents.into_iter().collect(),
        addresses,
    })
}

// ---- peers: peer → last_seen u64 BE ‖ addresses ----

pub(crate) fn encode_peer(p: &PeerRecord) -> Vec<u8> {
    let mut out = p.last_seen.to_be_bytes().to_vec();
    encode_addresses(&mut out, &p.addresses);
    out
}

pub(crate) fn decode_peer(value: &[u8]) -> Result<PeerRecord, StorageError> {
    let mut r = Reader::new(value, Table::Peers);
    let last_seen = r.u64()?;
    let addresses = decode_addresses(&mut r)?;
    Ok(PeerRecord {
        addresses,
        last_seen,
    })
}

/// addresses = n u16 BE ‖ n × (len u16 BE ‖ bytes)
fn encode_addresses(out: &mut Vec<u8>, addresses: &[Vec<u8>]) {
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    for a in addresses {
        out.extend_from_slice(&(a.len() as u16).to_be_bytes());
        out.extend_from_slice(a);
    }
}

fn decode_addresses(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, StorageError> {
    let n = usize::from(r.u16()?);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = usize::from(r.u16()?);
        out.push(r.take(len)?.to_vec());
    }
    if !r.rest().is_empty() {
        return Err(r.table.corrupted());
    }
    Ok(out)
}

/// A cursor over a stored value; every short read is a corrupted record, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    table: Table,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], table: Table) -> Reader<'a> {
        Reader { bytes, table }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.bytes.len() < n {
            return Err(self.table.corrupted());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StorageError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StorageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, StorageError> {
        u64_be(self.take(8)?, self.table)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}
