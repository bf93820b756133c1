//! Making blocks for local mutations: create, update and delete.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use ipld_core::ipld::Ipld;
use serde_json::Value as Json;

use crate::block::{Block, BlockError, Delta, FieldOp, Status, VerifiedBlock};
use crate::cid::sha256;
use crate::document::{DocId, DocumentError, validate, validate_object};
use crate::merge::DocState;
use crate::schema::{Collection, CrdtType};

/// Who makes local blocks: a replica identity, an optional signing key, and the counter that
/// makes counter nonces unique.
///
/// Nonces are the first 8 bytes of `sha256(replica ‖ seq)` for a per-replica sequence number
/// that the caller persists ([`Author::nonce_seq`]), so two replicas never produce the same
/// increment block even when they share an RNG seed and make the same change from the same
/// heads. Creates use nonce 0, so creating the same document twice is one block.
#[derive(Clone)]
pub struct Author {
    replica: [u8; 32],
    key: Option<SigningKey>,
    nonce_seq: u64,
}

impl std::fmt::Debug for Author {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Author")
            .field("replica", &crate::block::AuthorKey(self.replica))
            .field("signing", &self.key.is_some())
            .field("nonce_seq", &self.nonce_seq)
            .finish()
    }
}

/// Why a local mutation could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MutationError {
    /// The input does not fit the collection.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The resulting block breaks a limit.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The document belongs to another collection.
    #[error("document {doc_id} is not in collection {collection}")]
    WrongCollection {
        /// The document.
        doc_id: DocId,
        /// The collection named.
        collection: String,
    },
}

impl Author {
    /// An author that signs with `key`; its replica identity is the public key.
    pub fn signing(key: SigningKey) -> Author {
        Author {
            replica: key.verifying_key().to_bytes(),
            key: Some(key),
            nonce_seq: 0,
        }
    }

    /// An author that does not sign; `replica` identifies it (use the node's public key).
    pub fn unsigned(replica: [u8; 32]) -> Author {
        Author {
            replica,
            key: None,
            nonce_seq: 0,
        }
    }

    /// Continues from a persisted nonce sequence number.
    pub fn with_nonce_seq(mut self, seq: u64) -> Author {
        self.nonce_seq = seq;
        self
    }

    /// The next nonce sequence number: persist it with the block that used the last one.
    pub fn nonce_seq(&self) -> u64 {
        self.nonce_seq
    }

    /// The replica identity.
    pub fn replica(&self) -> [u8; 32] {
        self.replica
    }

    /// Whether blocks are signed.
    pub fn is_signing(&self) -> bool {
        self.key.is_some()
    }

    /// Makes the genesis block of a new document.
    ///
    /// # Errors
    /// [`MutationError`] when the JSON does not fit `collection` or the block is too large.
    pub fn create(
        &mut self,
        collection: &Collection,
        json: &Json,
    ) -> Result<VerifiedBlock, MutationError> {
        let values = validate(collection, json)?;
        let doc_id = DocId::derive(collection.id(), &values);
        let fields = values
            .into_iter()
            .filter(|(_, v)| !matches!(v, Ipld::Null))
            .map(|(name, value)| {
                let op = match (collection.field(&name).map(|f| f.crdt), &value) {
                    (Some(crdt @ (CrdtType::PCounter | CrdtType::PnCounter)), Ipld::Integer(i)) => {
                        // invariant: validate() checked counters are i64 integers.
                        FieldOp::Counter {
                            crdt,
                            value: *i as i64,
                            nonce: 0,
                        }
                    }
                    _ => FieldOp::Lww { priority: 1, value },
                };
                (name, op)
            })
            .collect();
        let delta = Delta {
            doc_id,
            collection: collection.id(),
            schema_version: collection.version(),
            priority: 1,
            status: Status::Active,
            fields,
        };
        self.finish(Block {
            heads: Vec::new(),
            delta,
            author: None,
            signature: None,
        })
    }

    /// Makes a block that updates the fields named in `patch` (a JSON object). Counter fields
    /// give an increment.
    ///
    /// # Errors
    /// [`MutationError`] when the document is deleted, the patch is empty or does not fit.
    pub fn update(
        &mut self,
        collection: &Collection,
        state: &DocState,
        patch: &Json,
    ) -> Result<VerifiedBlock, MutationError> {
        let Json::Object(object) = patch else {
            return Err(DocumentError::NotAnObject.into());
        };
        self.check_target(collection, state)?;
        let values = validate_object(collection, object)?;
        if values.is_empty() {
            return Err(DocumentError::EmptyUpdate.into());
        }
        let mut fields = BTreeMap::new();
        for (name, value) in values {
            let op = match (collection.field(&name).map(|f| f.crdt), &value) {
                (Some(crdt @ (CrdtType::PCounter | CrdtType::PnCounter)), Ipld::Integer(i)) => {
                    let nonce = self.next_nonce();
                    FieldOp::Counter {
                        crdt,
                        value: *i as i64,
                        nonce,
                    }
                }
                _ => FieldOp::Lww {
                    priority: state.next_field_priority(&name),
                    value,
                },
            };
            fields.insert(name, op);
        }
        self.child(collection, state, Status::Active, fields)
    }

    /// Makes a block that deletes the document.
    ///
    /// # Errors
    /// [`MutationError`] when the document is already deleted.
    pub fn delete(
        &mut self,
        collection: &Collection,
        state: &DocState,
    ) -> Result<VerifiedBlock, MutationError> {
        self.check_target(collection, state)?;
        self.child(collection, state, Status::Deleted, BTreeMap::new())
    }

    fn check_target(&self, collection: &Collection, state: &DocState) -> Result<(), MutationError> {
        if state.collection != collection.id() {
            let collection = collection.name().to_owned();
            return Err(MutationError::WrongCollection {
                doc_id: state.doc_id,
                collection,
            });
        }
        if state.deleted {
            return Err(DocumentError::Deleted(state.doc_id).into());
        }
        Ok(())
    }

    fn child(
        &mut self,
        collection: &Collection,
        state: &DocState,
        status: Status,
        fields: BTreeMap<String, FieldOp>,
    ) -> Result<VerifiedBlock, MutationError> {
        let delta = Delta {
            doc_id: state.doc_id,
            collection: collection.id(),
            schema_version: collection.version(),
            priority: state.height + 1,
            status,
            fields,
        };
        self.finish(Block {
            heads: state.heads.clone(),
            delta,
            author: None,
            signature: None,
        })
    }

    fn finish(&self, block: Block) -> Result<VerifiedBlock, MutationError> {
        Ok(match &self.key {
            Some(key) => block.sign(key)?,
            None => block.encode()?,
        })
    }

    fn next_nonce(&mut self) -> u64 {
        let mut input = [0u8; 40];
        input[..32].copy_from_slice(&self.replica);
        input[32..].copy_from_slice(&self.nonce_seq.to_be_bytes());
        self.nonce_seq += 1;
        let digest = sha256(&input);
        // A nonce of 0 is reserved for creates.
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
    }
}
