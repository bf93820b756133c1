//! Passive replication over pubsub: topic naming and sharding, what a node follows, and the
//! update message.
//!
//! This module holds the pure parts of passive replication; the coordinator
//! ([`crate::node`]) decides when to publish and what to do with a received update, and the
//! driver moves messages through gossipsub (the node) or the simulator's gossip overlay.
//!
//! # Topics
//!
//! The seed's design — one topic per document — makes a node that follows many documents join
//! as many topics, which gossipsub does not scale to. Hypha publishes every commit to two
//! topics:
//!
//! ```text
//! /hypha/<namespace>/pubsub/1/<collection-id>              the collection topic
//! /hypha/<namespace>/pubsub/1/<collection-id>/shard/<n>    the document's shard topic, n < 64
//! ```
//!
//! A node that follows a collection joins its collection topic; a node that follows single
//! documents joins their shard topics and drops updates of the shard's other documents by
//! docID. So whatever the number of documents followed, a node joins at most
//! [`SHARD_COUNT`] + 1 topics per collection. The shard of a document is the first four bytes
//! of its docID (which come from a hash, so shards fill evenly), big-endian, modulo
//! [`SHARD_COUNT`]. The count and the hash are part of the scheme, whose version
//! ([`SCHEME_VERSION`]) is in every topic name: changing either makes a new version, never a
//! silent split of the network.
//!
//! # Messages
//!
//! Each gossipsub message is one [`Update`]: the docID, the collection, the new block's CID,
//! the block itself when it is at most `max_inline_bytes` (else the follower fetches it by
//! backfill), and the document's heads after the block. The gossipsub message id is the
//! block's CID on its topic ([`message_id`]; DESIGN says the CID alone, but each commit goes
//! to two topics and gossipsub refuses to publish one id twice), so duplicates — the same
//! block published by several nodes, or republished when it arrives by push or backfill — are
//! suppressed by gossipsub's duplicate cache.
//!
//! # Validation
//!
//! A receiver checks what it can before gossipsub forwards the message ([`Update::decode`]):
//! the message decodes, the CIDs are CIDs, and an inline block hashes to the announced CID,
//! verifies its signature and belongs to the named document and collection; the coordinator
//! also checks the message came on its collection's or document's topic. A valid message
//! of a document the node does not follow is accepted — forwarded for the peers that follow it
//! — and dropped locally.

mod follow;

use hypha_crdt::{Cid, CollectionId, DocId, VerifiedBlock};

pub use self::follow::{Follows, HotDocs, TopicChange};
use crate::generated::hypha::pubsub::v1 as pb;
use crate::wire::{self, DecodeError, decode_message};

/// The version of the topic scheme (names, shard count and shard hash).
pub const SCHEME_VERSION: u32 = 1;

/// Shard topics per collection.
pub const SHARD_COUNT: u32 = 64;

/// The default largest block carried inline in an update: 32 KiB, half of gossipsub's default
/// maximum message size, so an update always fits in one message.
pub const DEFAULT_MAX_INLINE_BYTES: usize = 32 * 1024;

/// The most heads an update may list (a document's heads are its concurrent branches).
pub const MAX_UPDATE_HEADS: usize = hypha_crdt::block::MAX_LINKS;

/// The collection topic of `collection` in `namespace`.
pub fn collection_topic(namespace: &str, collection: &CollectionId) -> String {
    format!(
        "/hypha/{namespace}/pubsub/{SCHEME_VERSION}/{}",
        collection.0
    )
}

/// The shard of `doc`: the first four bytes of its docID, big-endian, modulo [`SHARD_COUNT`].
pub fn shard_of(doc: &DocId) -> u32 {
    let b = doc.to_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % SHARD_COUNT
}

/// The shard topic number `shard` of `collection`.
pub fn shard_topic(namespace: &str, collection: &CollectionId, shard: u32) -> String {
    format!(
        "/hypha/{namespace}/pubsub/{SCHEME_VERSION}/{}/shard/{shard}",
        collection.0
    )
}

/// The shard topic that carries the updates of `doc`.
pub fn document_topic(namespace: &str, collection: &CollectionId, doc: &DocId) -> String {
    shard_topic(namespace, collection, shard_of(doc))
}

/// The gossipsub message id of an update on `topic`: the topic, a zero byte, then the block's
/// CID as the message names it. A node publishes each block on two topics, and gossipsub
/// refuses to publish one id twice, so the id is the CID per topic; duplicates on one topic —
/// the same block published by several nodes, or republished — share it. Bytes that do not
/// decode get the id of their own bytes (they are rejected by validation anyway).
pub fn message_id(topic: &str, data: &[u8]) -> Vec<u8> {
    let cid = decode_message::<pb::Update>(data)
        .map(|m| m.cid)
        .unwrap_or_else(|_| data.to_vec());
    let mut id = Vec::with_capacity(topic.len() + 1 + cid.len());
    id.extend_from_slice(topic.as_bytes());
    id.push(0);
    id.extend_from_slice(&cid);
    id
}

/// A validated pubsub update.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The document.
    pub doc_id: DocId,
    /// Its collection.
    pub collection: CollectionId,
    /// The new block's CID (the gossipsub message id).
    pub cid: Cid,
    /// The block, when it travelled inline: verified against `cid`.
    pub block: Option<VerifiedBlock>,
    /// The document's heads after the block.
    pub heads: Vec<Cid>,
}

/// Why a pubsub message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The message does not decode.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// The inline block does not verify against the announced CID.
    #[error("inline block is invalid: {0}")]
    BadBlock(hypha_crdt::BlockError),
    /// The inline block belongs to another document or collection than announced.
    #[error("inline block belongs to another document or collection than announced")]
    Mismatch,
    /// The update arrived on a topic that is neither its collection's nor its document's.
    #[error("update published on a topic that is not its collection's or document's")]
    WrongTopic,
}

impl Update {
    /// The update announcing `block`, with the document's `heads` after it; the block is inline
    /// when it is at most `max_inline_bytes` long.
    pub fn new(block: &VerifiedBlock, heads: Vec<Cid>, max_inline_bytes: usize) -> Update {
        let delta = &block.block().delta;
        let inline = block.bytes().len() <= max_inline_bytes;
        Update {
            doc_id: delta.doc_id,
            collection: delta.collection,
            cid: block.cid(),
            block: inline.then(|| block.clone()),
            heads,
        }
    }

    /// The message's bytes (protobuf, unframed: gossipsub frames its own messages).
    pub fn encode(&self) -> Vec<u8> {
        use quick_protobuf::{MessageWrite, Writer};
        let message = pb::Update {
            doc_id: self.doc_id.to_bytes().to_vec(),
            collection_id: self.collection.0.to_bytes(),
            cid: self.cid.to_bytes(),
            block: self
                .block
                .as_ref()
                .map(|b| b.bytes().to_vec())
                .unwrap_or_default(),
            heads: self.heads.iter().map(|c| c.to_bytes()).collect(),
        };
        let mut out = Vec::with_capacity(message.get_size());
        // invariant: writing into a Vec cannot fail.
        message
            .write_message(&mut Writer::new(&mut out))
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Decodes and validates a received message: everything a node can check without its
    /// store.
    ///
    /// # Errors
    /// [`Invalid`]: the message is malformed, or its inline block does not verify or does not
    /// match what the message announces.
    pub fn decode(bytes: &[u8]) -> Result<Update, Invalid> {
        let m = decode_message::<pb::Update>(bytes)?;
        let bad = |what: &str| Invalid::Malformed(DecodeError(what.to_owned()));
        let doc_id = wire::doc_id(&m.doc_id)?;
        let collection = wire::collection_id(&m.collection_id)?;
        let cid =
            Cid::try_from(m.cid.as_slice()).map_err(|_| bad("a block id that is not a CID"))?;
        if m.heads.len() > MAX_UPDATE_HEADS {
            return Err(bad("too many heads"));
        }
        let heads = wire::cids(&m.heads)?;
        let block = if m.block.is_empty() {
            None
        } else {
            let block = VerifiedBlock::decode(&m.block, Some(&cid)).map_err(Invalid::BadBlock)?;
            let delta = &block.block().delta;
            if delta.doc_id != doc_id || delta.collection != collection {
                return Err(Invalid::Mismatch);
            }
            Some(block)
        };
        Ok(Update {
            doc_id,
            collection,
            cid,
            block,
            heads,
        })
    }
}

#[cfg(test)]
mod tests;
