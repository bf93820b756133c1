//! Blocks: one per mutation of one document, deterministic DAG-CBOR, addressed by CIDv1.
//!
//! # Format
//!
//! A block is a DAG-CBOR map (keys in canonical length-first order, as DAG-CBOR requires):
//!
//! ```text
//! {
//!   "delta": {
//!     "docID": "bae-…",                      text
//!     "fields": { name: op, … },             see below
//!     "status": "active" | "deleted",
//!     "priority": u64,                       document height: 1 + highest parent priority
//!     "collection": bytes,                   CollectionId (a raw CIDv1, binary form)
//!     "schemaVersion": bytes,                SchemaVersionId (a dag-cbor CIDv1, binary form)
//!   },
//!   "heads": [link, …],                      the parents, sorted by CID bytes, no duplicates
//!   "author": bytes(32),                     optional: Ed25519 public key
//!   "signature": bytes(64),                  optional: Ed25519 over the CID of the block
//! }                                          without "signature"
//!
//! op = { "crdt": "lww", "value": any, "priority": u64 }
//!    | { "crdt": "pcounter" | "pncounter", "nonce": u64, "value": int64 }
//! ```
//!
//! The CID is CIDv1, codec dag-cbor (0x71), sha2-256, of exactly these bytes, so any IPLD
//! tool decodes a block and recomputes its CID. Decoding is strict: a block that does not
//! re-encode to the very same bytes is [`BlockError::NonCanonical`], so one logical block has
//! one CID. (The decoder proves this while it reads, without re-encoding: see `codec.rs`.)
//!
//! # Signatures
//!
//! `"signature"` is the longest key, so in canonical order it is always the last entry. The
//! unsigned form of a signed block is therefore the signed bytes with the map header changed
//! from 4 to 3 entries and the last 76 bytes (the `"signature"` key and its 64-byte value)
//! cut off. Signing and verifying hash those bytes directly; nothing is re-encoded.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use ipld_core::ipld::Ipld;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cid::{Cid, dag_cbor_cid, is_block_cid};
use crate::document::DocId;
use crate::schema::{CollectionId, CrdtType, MAX_NAME_LEN, SchemaVersionId};

/// The largest encoded block accepted, in bytes (1 MiB).
pub const MAX_BLOCK_BYTES: usize = 1 << 20;
/// The most parents one block may name. Bounds the fan-out of any DAG walk.
pub const MAX_LINKS: usize = 1024;
/// The most field operations one block may carry.
pub const MAX_FIELDS: usize = 1024;
pub use crate::codec::MAX_NESTING;

/// Whether a block leaves its document active or deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// The document exists.
    Active,
    /// The document is deleted. Deletes are final.
    Deleted,
}

/// One field's change in a block.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOp {
    /// A last-writer-wins write.
    Lww {
        /// The field priority: 1 + the highest priority of this field the author knew.
        priority: u64,
        /// The new value; `Null` clears the field.
        value: Ipld,
    },
    /// A counter increment, counted once per block.
    Counter {
        /// `PCounter` (increments ≥ 0) or `PnCounter`.
        crdt: CrdtType,
        /// The increment.
        value: i64,
        /// Makes otherwise identical increments from different authors distinct blocks. 0 on
        /// create.
        nonce: u64,
    },
}

/// The change a block makes to its document.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The document.
    pub doc_id: DocId,
    /// The document's collection.
    pub collection: CollectionId,
    /// The field set the author's schema declared.
    pub schema_version: SchemaVersionId,
    /// The document priority (height): 1 + the highest parent priority.
    pub priority: u64,
    /// Active, or deleted.
    pub status: Status,
    /// The changed fields.
    pub fields: BTreeMap<String, FieldOp>,
}

/// An Ed25519 public key that signed a block.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthorKey(pub [u8; 32]);

impl fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A block: a delta, its parents, and optionally its author's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The parents: the document's heads when the block was made, sorted, no duplicates.
    pub heads: Vec<Cid>,
    /// The change.
    pub delta: Delta,
    /// The author, present exactly when `signature` is.
    pub author: Option<AuthorKey>,
    /// Ed25519 signature by `author` over the CID of the block without this field.
    pub signature: Option<[u8; 64]>,
}

/// A block together with its canonical bytes and CID, checked to belong together.
///
/// The only ways to get one are [`Block::encode`], [`Block::sign`] and [`VerifiedBlock::decode`],
/// so holding one means: the bytes are canonical DAG-CBOR, the CID is theirs, the structure is
/// valid, and the signature (if any) verifies.
///
/// Cloning is cheap (a reference count): blocks are shared between the merge, stores and
/// protocol queues without copying their bytes.
#[derive(Debug, Clone)]
pub struct VerifiedBlock(std::sync::Arc<Verified>);

#[derive(Debug)]
struct Verified {
    cid: Cid,
    /// Shared so that a store keeping the bytes takes a reference, not a copy.
    bytes: std::sync::Arc<[u8]>,
    block: Block,
}

impl PartialEq for VerifiedBlock {
    /// Two verified blocks are equal when their CIDs are: the CID was checked to be the hash
    /// of the bytes, and the block was decoded from them.
    fn eq(&self, other: &VerifiedBlock) -> bool {
        self.0.cid == other.0.cid
    }
}

impl Eq for VerifiedBlock {}

impl VerifiedBlock {
    fn new(cid: Cid, bytes: std::sync::Arc<[u8]>, block: Block) -> VerifiedBlock {
        VerifiedBlock(std::sync::Arc::new(Verified { cid, bytes, block }))
    }
}

/// Why bytes are not a valid block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Larger than [`MAX_BLOCK_BYTES`].
    #[error("block of {size} bytes is larger than the limit of {max}")]
    BlockTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes hash to another CID than the one they were fetched under.
    #[error("block bytes hash to {actual}, not to the expected {expected}")]
    CidMismatch {
        /// The CID asked for.
        expected: Box<Cid>,
        /// The CID of the bytes.
        actual: Box<Cid>,
    },
    /// Not a DAG-CBOR block of the expected shape.
    #[error("malformed block: {0}")]
    Malformed(String),
    /// Valid DAG-CBOR that is not the canonical encoding of its content.
    #[error("block is not canonically encoded")]
    NonCanonical,
    /// The signature does not verify against the author's key.
    #[error("block signature does not verify")]
    SignatureInvalid,
}

fn malformed(msg: impl Into<String>) -> BlockError {
    BlockError::Malformed(msg.into())
}

impl Block {
    /// Encodes the block unsigned.
    ///
    /// # Errors
    /// [`BlockError`] when the block breaks a structural rule or a limit.
    pub fn encode(mut self) -> Result<VerifiedBlock, BlockError> {
        self.author = None;
        self.signature = None;
        self.validate()?;
        let bytes = encode_checked(&self)?;
        Ok(VerifiedBlock::new(dag_cbor_cid(&bytes), bytes.into(), self))
    }

    /// The block's canonical DAG-CBOR bytes as it stands, without the structural checks or
    /// the signing of [`encode`](Block::encode) and [`sign`](Block::sign); its CID is
    /// [`dag_cbor_cid`] of them. For tools and measurements; blocks
    /// that travel are made by `encode` or `sign`.
    ///
    /// # Errors
    /// [`BlockError`] when a value cannot be DAG-CBOR or the block is too large.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BlockError> {
        encode_checked(self)
    }

    /// Encodes the block signed by `key`.
    ///
    /// # Errors
    /// [`BlockError`] when the block breaks a structural rule or a limit.
    pub fn sign(mut self, key: &SigningKey) -> Result<VerifiedBlock, BlockError> {
        self.author = Some(AuthorKey(key.verifying_key().to_bytes()));
        self.signature = None;
        self.validate()?;
        let unsigned = encode_checked(&self)?;
        let signature = key.sign(&dag_cbor_cid(&unsigned).to_bytes()).to_bytes();
        let mut bytes = Vec::with_capacity(unsigned.len() + SIGNATURE_ENTRY_LEN);
        bytes.push(MAP_4);
        bytes.extend_from_slice(&unsigned[1..]);
        bytes.extend_from_slice(&SIGNATURE_ENTRY_PREFIX);
        bytes.extend_from_slice(&signature);
        check_size(bytes.len())?;
        self.signature = Some(signature);
        debug_assert_eq!(
            serde_ipld_dagcbor::to_vec(&self).ok().as_deref(),
            Some(&bytes[..])
        );
        Ok(VerifiedBlock::new(dag_cbor_cid(&bytes), bytes.into(), self))
    }

    /// Checks the rules that need no other block: sorted distinct block-CID parents, limits,
    /// priorities ≥ 1, valid field names and counter increments, and
    /// for a genesis block (no parents): priority 1, active, LWW priorities 1, and a docID
    /// derived from its fields.
    fn validate(&self) -> Result<(), BlockError> {
        let delta = &self.delta;
        if self.heads.len() > MAX_LINKS {
            return Err(malformed(format!(
                "{} parents, more than {MAX_LINKS}",
                self.heads.len()
            )));
        }
        if let Some(bad) = self.heads.iter().find(|c| !is_block_cid(c)) {
            return Err(malformed(format!(
                "parent {bad} is not a dag-cbor sha2-256 CIDv1"
            )));
        }
        // All parents share the CID prefix, so their binary order is their digests' order.
        if !self
            .heads
            .windows(2)
            .all(|w| w[0].hash().digest() < w[1].hash().digest())
        {
            return Err(malformed("parents are not sorted and distinct"));
        }
        if delta.priority == 0 {
            return Err(malformed("priority 0"));
        }
        if delta.fields.len() > MAX_FIELDS {
            let n = delta.fields.len();
            return Err(malformed(format!("{n} fields, more than {MAX_FIELDS}")));
        }
        for (name, op) in &delta.fields {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(malformed("a field name is empty or too long"));
            }
            match op {
                FieldOp::Lww { priority: 0, .. } => {
                    return Err(malformed(format!("field {name}: priority 0")));
                }
                FieldOp::Lww { .. } => {}
                FieldOp::Counter {
                    crdt: CrdtType::Lww,
                    ..
                } => {
                    return Err(malformed(format!("field {name}: counter op of type lww")));
                }
                FieldOp::Counter {
                    crdt: CrdtType::PCounter,
                    value,
                    ..
                } if *value < 0 => {
                    return Err(malformed(format!(
                        "field {name}: negative pcounter increment"
                    )));
                }
                FieldOp::Counter { .. } => {}
            }
        }
        if delta.status == Status::Deleted && !delta.fields.is_empty() {
            return Err(malformed("a delete changes no field"));
        }
        if self.heads.is_empty() {
            self.validate_genesis()?;
        }
        Ok(())
    }

    fn validate_genesis(&self) -> Result<(), BlockError> {
        let delta = &self.delta;
        if delta.priority != 1 || delta.status != Status::Active {
            return Err(malformed(
                "a block without parents must be an active create at priority 1",
            ));
        }
        let mut values = BTreeMap::new();
        for (name, op) in &delta.fields {
            let value = match op {
                FieldOp::Lww { priority: 1, value } => value.clone(),
                FieldOp::Counter {
                    value, nonce: 0, ..
                } => Ipld::Integer((*value).into()),
                _ => {
                    return Err(malformed(format!(
                        "field {name}: create ops need priority 1, nonce 0"
                    )));
                }
            };
            values.insert(name.clone(), value);
        }
        if DocId::derive(delta.collection, &values) != delta.doc_id {
            return Err(malformed("docID is not derived from the created fields"));
        }
        Ok(())
    }
}

impl VerifiedBlock {
    /// Decodes and verifies `bytes`; with `expected`, also that they hash to that CID.
    ///
    /// Checks, in order: size, CID, DAG-CBOR shape, structure, canonical encoding, signature.
    ///
    /// # Errors
    /// [`BlockError`]: the first check that failed.
    pub fn decode(bytes: &[u8], expected: Option<&Cid>) -> Result<VerifiedBlock, BlockError> {
        check_size(bytes.len())?;
        let cid = dag_cbor_cid(bytes);
        if let Some(expected) = expected.filter(|e| **e != cid) {
            let (expected, actual) = (Box::new(*expected), Box::new(cid));
            return Err(BlockError::CidMismatch { expected, actual });
        }
        let crate::codec::Decoded { block, canonical } = crate::codec::decode_block(bytes)
            .map_err(|e| malformed(e.chars().take(200).collect::<String>()))?;
        block.validate()?;
        if block.author.is_some() != block.signature.is_some() {
            return Err(malformed("author and signature must come together"));
        }
        // The decoder proved whether the bytes are the block's canonical encoding.
        if !canonical {
            return Err(BlockError::NonCanonical);
        }
        if let (Some(author), Some(signature)) = (&block.author, &block.signature) {
            let key =
                VerifyingKey::from_bytes(&author.0).map_err(|_| BlockError::SignatureInvalid)?;
            let signature = ed25519_dalek::Signature::from_bytes(signature);
            let mut unsigned = Vec::with_capacity(bytes.len() - SIGNATURE_ENTRY_LEN);
            unsigned.push(MAP_3);
            unsigned.extend_from_slice(&bytes[1..bytes.len() - SIGNATURE_ENTRY_LEN]);
            let message = dag_cbor_cid(&unsigned).to_bytes();
            key.verify_strict(&message, &signature)
                .map_err(|_| BlockError::SignatureInvalid)?;
        }
        Ok(VerifiedBlock::new(cid, bytes.into(), block))
    }

    /// The block's CID.
    pub fn cid(&self) -> Cid {
        self.0.cid
    }

    /// The block's canonical bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    /// The block's canonical bytes, shared: a reference count, not a copy.
    pub fn shared_bytes(&self) -> std::sync::Arc<[u8]> {
        std::sync::Arc::clone(&self.0.bytes)
    }

    /// The decoded block.
    pub fn block(&self) -> &Block {
        &self.0.block
    }

    /// The document the block changes.
    pub fn doc_id(&self) -> DocId {
        self.0.block.delta.doc_id
    }
}

/// CBOR header of a map with 3 entries.
const MAP_3: u8 = 0xa3;
/// CBOR header of a map with 4 entries.
const MAP_4: u8 = 0xa4;
/// `"signature"` as a CBOR text string, then the header of a 64-byte byte string.
const SIGNATURE_ENTRY_PREFIX: [u8; 12] = *b"\x69signature\x58\x40";
const SIGNATURE_ENTRY_LEN: usize = SIGNATURE_ENTRY_PREFIX.len() + 64;

fn check_size(size: usize) -> Result<(), BlockError> {
    if size > MAX_BLOCK_BYTES {
        return Err(BlockError::BlockTooLarge {
            size,
            max: MAX_BLOCK_BYTES,
        });
    }
    Ok(())
}

fn encode_checked(block: &Block) -> Result<Vec<u8>, BlockError> {
    let bytes =
        crate::codec::encode_block(block).map_err(|e| malformed(format!("cannot encode: {e}")))?;
    check_size(bytes.len())?;
    Ok(bytes)
}

// ---- serde: the DAG-CBOR shape documented above ----

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = 2 + usize::from(self.author.is_some()) + usize::from(self.signature.is_some());
        let mut map = s.serialize_map(Some(len))?;
        map.serialize_entry("heads", &self.heads)?;
        map.serialize_entry("delta", &self.delta)?;
        if let Some(author) = &self.author {
            map.serialize_entry("author", serde_bytes::Bytes::new(&author.0))?;
        }
        if let Some(signature) = &self.signature {
            map.serialize_entry("signature", serde_bytes::Bytes::new(signature))?;
        }
        map.end()
    }
}

impl Serialize for Delta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(6))?;
        map.serialize_entry("docID", &self.doc_id)?;
        map.serialize_entry("fields", &self.fields)?;
        map.serialize_entry("status", self.status.name())?;
        map.serialize_entry("priority", &self.priority)?;
        map.serialize_entry(
            "collection",
            serde_bytes::Bytes::new(&self.collection.0.to_bytes()),
        )?;
        let version = self.schema_version.0.to_bytes();
        map.serialize_entry("schemaVersion", serde_bytes::Bytes::new(&version))?;
        map.end()
    }
}

impl Serialize for FieldOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        match self {
            FieldOp::Lww { priority, value } => {
                map.serialize_entry("crdt", CrdtType::Lww.name())?;
                map.serialize_entry("value", value)?;
                map.serialize_entry("priority", priority)?;
            }
            FieldOp::Counter { crdt, value, nonce } => {
                map.serialize_entry("crdt", crdt.name())?;
                map.serialize_entry("nonce", nonce)?;
                map.serialize_entry("value", value)?;
            }
        }
        map.end()
    }
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deleted => "deleted",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRepr {
    heads: Vec<Cid>,
    delta: DeltaRepr,
    #[serde(default)]
    author: Option<serde_bytes::ByteBuf>,
    #[serde(default)]
    signature: Option<serde_bytes::ByteBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeltaRepr {
    #[serde(rename = "docID")]
    doc_id: DocId,
    fields: BTreeMap<String, FieldOp>,
    status: String,
    priority: u64,
    collection: serde_bytes::ByteBuf,
    #[serde(rename = "schemaVersion")]
    schema_version: serde_bytes::ByteBuf,
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Block, D::Error> {
        let repr = BlockRepr::deserialize(d)?;
        let cid = |bytes: &[u8], what| {
            Cid::try_from(bytes).map_err(|_| de::Error::custom(format!("{what} is not a CID")))
        };
        let status = match repr.delta.status.as_str() {
            "active" => Status::Active,
            "deleted" => Status::Deleted,
            _ => return Err(de::Error::custom("status is neither active nor deleted")),
        };
        let author = match repr.author {
            None => None,
            Some(b) => Some(AuthorKey(
                b.as_slice()
                    .try_into()
                    .map_err(|_| de::Error::custom("author is not 32 bytes"))?,
            )),
        };
        let signature = match repr.signature {
            None => None,
            Some(b) => Some(
                b.as_slice()
                    .try_into()
                    .map_err(|_| de::Error::custom("signature is not 64 bytes"))?,
            ),
        };
        Ok(Block {
            heads: repr.heads,
            delta: Delta {
                doc_id: repr.delta.doc_id,
                collection: CollectionId(cid(&repr.delta.collection, "collection")?),
                schema_version: SchemaVersionId(cid(&repr.delta.schema_version, "schemaVersion")?),
                priority: repr.delta.priority,
                status,
                fields: repr.delta.fields,
            },
            author,
            signature,
        })
    }
}

impl<'de> Deserialize<'de> for FieldOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldOp, D::Error> {
        d.deserialize_map(FieldOpVisitor)
    }
}

struct FieldOpVisitor;

impl<'de> Visitor<'de> for FieldOpVisitor {
    type Value = FieldOp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field op map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldOp, A::Error> {
        let (mut crdt, mut value, mut priority, mut nonce) = (None, None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "crdt" => crdt = Some(map.next_value::<std::borrow::Cow<'de, str>>()?.into_owned()),
                "value" => value = Some(map.next_value::<Ipld>()?),
                "priority" => priority = Some(map.next_value::<u64>()?),
                "nonce" => nonce = Some(map.next_value::<u64>()?),
                other => return Err(de::Error::custom(format!("unknown field op key {other:?}"))),
            }
        }
        let crdt = crdt.ok_or_else(|| de::Error::missing_field("crdt"))?;
        let crdt = CrdtType::from_name(&crdt)
            .ok_or_else(|| de::Error::custom(format!("unknown crdt type {crdt:?}")))?;
        let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
        match (crdt, priority, nonce) {
            (CrdtType::Lww, Some(priority), None) => Ok(FieldOp::Lww { priority, value }),
            (CrdtType::PCounter | CrdtType::PnCounter, None, Some(nonce)) => {
                let Ipld::Integer(i) = value else {
                    return Err(de::Error::custom("counter increment is not an integer"));
                };
                let value =
                    i64::try_from(i).map_err(|_| de::Error::custom("increment out of range"))?;
                Ok(FieldOp::Counter { crdt, value, nonce })
            }
            _ => Err(de::Error::custom(
                "field op has the wrong keys for its crdt type",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_sdl;

    fn genesis() -> Block {
        let users = parse_sdl("hypha", "type Users { name: String age: Int }")
            .unwrap()
            .remove(0);
        let fields: BTreeMap<String, Ipld> = [
            ("name".to_owned(), Ipld::String("John".into())),
            ("age".to_owned(), Ipld::Integer(21)),
        ]
        .into();
        Block {
            heads: vec![],
            delta: Delta {
                doc_id: DocId::derive(users.id(), &fields),
                collection: users.id(),
                schema_version: users.version(),
                priority: 1,
                status: Status::Active,
                fields: fields
                    .into_iter()
                    .map(|(k, value)| (k, FieldOp::Lww { priority: 1, value }))
                    .collect(),
            },
            author: None,
            signature: None,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let block = genesis().encode().unwrap();
        let again = VerifiedBlock::decode(block.bytes(), Some(&block.cid())).unwrap();
        assert_eq!(again, block);
    }

    #[test]
    fn signed_round_trip_and_tamper() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let block = genesis().sign(&key).unwrap();
        let again = VerifiedBlock::decode(block.bytes(), Some(&block.cid())).unwrap();
        assert_eq!(
            again.block().author,
            Some(AuthorKey(key.verifying_key().to_bytes()))
        );
        let mut bytes = block.bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            VerifiedBlock::decode(&bytes, None),
            Err(BlockError::SignatureInvalid)
        );
        assert!(matches!(
            VerifiedBlock::decode(&bytes, Some(&block.cid())),
            Err(BlockError::CidMismatch { .. })
        ));
    }

    #[test]
    fn genesis_must_derive_its_docid() {
        let mut block = genesis();
        block.delta.fields.remove("age");
        assert!(matches!(block.encode(), Err(BlockError::Malformed(_))));
    }
}
