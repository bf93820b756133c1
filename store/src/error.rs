//! Errors, one enum per operation.

use std::path::PathBuf;
use std::sync::Arc;

use hypha_crdt::{Cid, DocId, MutationError, Rejection, SchemaError};

/// A failure of the storage below the store: redb, or a record that does not decode.
///
/// Cheap to clone, because one failed commit fails every mutation of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// A stored block's bytes do not hash to its CID.
    #[error("block {cid} is corrupted: its bytes do not hash to its cid")]
    Corrupted {
        /// The CID the block is stored under.
        cid: Cid,
    },
    /// A record does not decode.
    #[error("a record in table {table} is corrupted")]
    CorruptedRecord {
        /// The table.
        table: &'static str,
    },
    /// redb failed.
    #[error("redb failed")]
    Redb(#[source] Arc<redb::Error>),
    /// A fault injected by a test through the memory backend.
    #[error("injected storage fault")]
    Injected,
}

impl StorageError {
    pub(crate) fn redb(e: impl Into<redb::Error>) -> StorageError {
        StorageError::Redb(Arc::new(e.into()))
    }
}

/// Why a store could not be opened. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (or another handle in this one) has the file open.
    #[error("store at {path} is locked: another process has it open")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a redb database, or its pages fail their checksums.
    #[error("store at {path} is corrupt or not a hypha store")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The process may not read or write the file.
    #[error("no permission to open store at {path}")]
    PermissionDenied {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file was written by another format version of the store.
    #[error("store at {path} has format version {found}, this build reads version {expected}")]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The file is a redb database without the store's format record.
    #[error("store at {path} is a redb file without a hypha format record")]
    NotAStore {
        /// The file.
        path: PathBuf,
    },
    /// Any other I/O or storage failure.
    #[error("cannot open store at {path}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: StorageError,
    },
    /// The committer thread could not be started.
    #[error("cannot start the committer thread of store at {path}")]
    Thread {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a mutation was not committed.
///
/// Every variant but [`CommitError::Storage`] and [`CommitError::Closed`] means that this
/// mutation was refused and wrote nothing; the other mutations of its batch are unaffected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// No collection of that name in the schema.
    #[error("collection {0:?} not found")]
    UnknownCollection(String),
    /// No such document.
    #[error("document {0} not found")]
    UnknownDocument(DocId),
    /// The local mutation does not fit its collection.
    #[error("mutation refused")]
    Mutation(#[source] MutationError),
    /// The merge refused the block.
    #[error("block refused by the merge")]
    Rejected(#[source] Rejection),
    /// The SDL does not parse.
    #[error("schema refused")]
    Schema(#[source] SchemaError),
    /// An argument breaks a documented limit.
    #[error("limit exceeded: {what} is {size}, at most {max}")]
    Limit {
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The queue is full ([`crate::Store::try_submit`] only).
    #[error("the commit queue is full")]
    Busy,
    /// Storage failed: the batch is not acknowledged and the store rolled it back in memory.
    /// Whether it is on disk is unknown when the failure came at the final sync: the disk may
    /// have written it anyway, and a restart then finds it (the fuzz target `store_io_errors`
    /// shows this). What an acknowledged commit wrote is always durable; what a failed one
    /// wrote is either wholly there after a restart or not at all, never torn.
    #[error(
        "storage failed; the batch is not acknowledged (rolled back, though a failed final sync may have left it on disk)"
    )]
    Storage(#[source] StorageError),
    /// The store is shutting down, or its committer thread stopped.
    #[error("the store is closed")]
    Closed,
}

/// Why a read failed. "Not found" is `Ok(None)`, not an error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// A stored block's bytes do not hash to its CID; it is never returned as data.
    #[error("block {cid} is corrupted: its bytes do not hash to its cid")]
    Corrupted {
        /// The CID the block is stored under.
        cid: Cid,
    },
    /// A block reached by a history walk is not stored.
    #[error("block {0} is not stored")]
    Missing(Cid),
    /// Storage failed.
    #[error("storage failed")]
    Storage(#[source] StorageError),
}

impl From<StorageError> for ReadError {
    fn from(e: StorageError) -> ReadError {
        match e {
            StorageError::Corrupted { cid } => ReadError::Corrupted { cid },
            e => ReadError::Storage(e),
        }
    }
}
