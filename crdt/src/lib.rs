//! The Merkle-CRDT core of Hypha: schemas, documents, content-addressed blocks and the merge.
//!
//! This crate does no IO, reads no clock and draws no randomness: it turns inputs (SDL, JSON,
//! block bytes, keys) into outputs (collections, blocks, document states). Storage is reached
//! through the [`DagStore`] and [`BlockSource`] traits, which `hypha-store` implements on
//! redb transactions and [`MemoryDag`] implements on maps.
//!
//! # Model
//!
//! - A **collection** is declared in GraphQL SDL ([`parse_sdl`]); its identity depends on the
//!   namespace and its name only ([`CollectionId`]).
//! - A **document** is a JSON object validated against its collection; its [`DocId`] is
//!   derived from its initial content, so the same document created on two replicas is the
//!   same document.
//! - Every mutation is one **block** ([`Block`]): deterministic DAG-CBOR, addressed by CIDv1
//!   (dag-cbor, sha2-256), naming the document's heads as parents, optionally signed with
//!   Ed25519. [`VerifiedBlock`] is a block whose bytes, CID and signature were checked.
//! - The **merge** ([`ingest`]) applies a block once all its ancestors are present and keeps
//!   document state a pure function of the set of blocks (see [`merge`] for the contract).
//!
//! # Example
//!
//! ```
//! use hypha_crdt::{Author, Replica, parse_sdl};
//! use serde_json::json;
//!
//! let schema = parse_sdl("hypha", "type Users { name: String age: Int }").unwrap();
//! let mut n0 = Replica::new(schema.clone(), Author::unsigned([0; 32]));
//! let mut n1 = Replica::new(schema, Author::unsigned([1; 32]));
//! let (doc, genesis) = n0.create("Users", &json!({"name": "John", "age": 21})).unwrap();
//! n1.apply(genesis.bytes()).unwrap();
//! // Concurrent writes at the same priority: the greater CBOR value bytes win everywhere.
//! let a = n0.update(doc, &json!({"age": 60})).unwrap();
//! let b = n1.update(doc, &json!({"age": 45})).unwrap();
//! n0.apply(b.bytes()).unwrap();
//! n1.apply(a.bytes()).unwrap();
//! assert_eq!(n0.read(doc), n1.read(doc));
//! assert_eq!(n0.read(doc).unwrap()["age"], 60);
//! assert_eq!(n0.state(doc).unwrap().heads, n1.state(doc).unwrap().heads);
//! ```

mod author;
pub mod block;
pub mod cid;
mod codec;
pub mod document;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod history;
mod memory;
pub mod merge;
pub mod schema;
pub mod sync_index;

pub use crate::author::{Author, MutationError};
pub use crate::block::{AuthorKey, Block, BlockError, Delta, FieldOp, Status, VerifiedBlock};
pub use crate::cid::Cid;
pub use crate::document::{DocId, DocumentError, ParseDocIdError};
pub use crate::history::{BlockSource, HistoryError, history};
pub use crate::memory::{MemoryDag, Replica, ReplicaError};
pub use crate::merge::{
    AppliedMeta, DagStore, DocState, FieldState, IngestError, Limits, LwwWrite, Outcome, Rejection,
    StateCodecError, ingest,
};
pub use crate::schema::{
    Collection, CollectionId, CrdtType, Field, Kind, SchemaError, SchemaVersionId, parse_sdl,
};
pub use crate::sync_index::{CollectionIndex, ItemHash, Root, SyncIndex};

pub use ed25519_dalek::SigningKey;
pub use ipld_core::ipld::Ipld;
