//! Node metadata: peers, replicators, subscriptions, outboxes.

use std::collections::BTreeSet;
use std::fmt;

use hypha_crdt::{CollectionId, DocId};

/// A peer's identity as opaque bytes (a libp2p `PeerId`'s bytes in the node, a number in the
/// simulator): the store knows nothing about the network. At most [`MAX_PEER_KEY_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey(pub Vec<u8>);

/// The longest [`PeerKey`], in bytes (a libp2p `PeerId` is at most 42).
pub const MAX_PEER_KEY_LEN: usize = 128;
/// The most addresses kept per peer or replicator.
pub const MAX_ADDRESSES: usize = 32;
/// The longest address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 1024;
/// The most collections plus documents one replicator may name.
pub const MAX_REPLICATOR_SCOPE: usize = 10_000;

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl From<&[u8]> for PeerKey {
    fn from(bytes: &[u8]) -> PeerKey {
        PeerKey(bytes.to_vec())
    }
}

/// A replicator: a peer that every block of its scope is actively pushed to (DESIGN §4).
///
/// A block is in scope when its collection is in `collections` or its document is in
/// `documents`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replicator {
    /// Collections replicated whole.
    pub collections: BTreeSet<CollectionId>,
    /// Individual documents replicated.
    pub documents: BTreeSet<DocId>,
    /// Where to dial the peer (opaque bytes, multiaddrs in the node).
    pub addresses: Vec<Vec<u8>>,
}

impl Replicator {
    /// Whether a block of `doc` in `collection` is pushed to this replicator.
    pub fn covers(&self, collection: &CollectionId, doc: &DocId) -> bool {
        self.collections.contains(collection) || self.documents.contains(doc)
    }
}

/// Something the node follows (DESIGN §4, passive replication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subscription {
    /// A whole collection (`p2p collection add`).
    Collection(CollectionId),
    /// One document (`p2p document add`).
    Document(DocId),
}

/// Everything the node follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscriptions {
    /// Followed collections.
    pub collections: BTreeSet<CollectionId>,
    /// Followed documents.
    pub documents: BTreeSet<DocId>,
}

/// A peer's remembered addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its addresses (opaque bytes, multiaddrs in the node).
    pub addresses: Vec<Vec<u8>>,
    /// When it was last seen, in the caller's clock (the store reads no clock).
    pub last_seen: u64,
}

/// What is owed to one replicator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outbox {
    /// Documents whose current heads must be pushed, in docID order (bounded by the read).
    pub documents: Vec<DocId>,
    /// How many entries the outbox holds in all.
    pub len: u64,
    /// The outbox overflowed its cap: catch the peer up by head exchange over the whole scope,
    /// then clear the marker with [`crate::Mutation::ClearCatchUp`].
    pub catch_up: bool,
}
