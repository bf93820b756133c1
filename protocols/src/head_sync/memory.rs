//! An in-memory [`SyncSource`]: a sync index and document heads, for tests, benchmarks and
//! embedders that keep their own documents.

use std::collections::BTreeMap;

use hypha_crdt::sync_index::{Iblt, ItemHash, Root, SyncIndex};
use hypha_crdt::{Cid, CollectionId, DocId};

use super::SyncSource;

/// Documents' heads and the sync index over them, in memory.
#[derive(Default)]
pub struct MemorySource {
    index: SyncIndex,
    heads: BTreeMap<DocId, (CollectionId, Vec<Cid>)>,
}

impl MemorySource {
    /// Nothing held.
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Holds `doc` of `collection` at `heads` (replacing what was held).
    pub fn put(&mut self, collection: CollectionId, doc: DocId, mut heads: Vec<Cid>) {
        heads.sort();
        self.index
            .set(collection, doc, Some(ItemHash::of(&doc, &heads)));
        self.heads.insert(doc, (collection, heads));
    }

    /// The index.
    pub fn index(&self) -> &SyncIndex {
        &self.index
    }
}

impl SyncSource for MemorySource {
    fn root(&self, collection: &CollectionId) -> Root {
        self.index.root(collection)
    }

    fn sketch(&self, collection: &CollectionId, level: usize) -> Option<Iblt> {
        self.index.collection(collection)?.sketch(level).cloned()
    }

    fn items(
        &self,
        collection: &CollectionId,
        after: Option<DocId>,
        limit: usize,
    ) -> Vec<(DocId, ItemHash)> {
        self.index
            .collection(collection)
            .map(|i| i.range(after, limit))
            .unwrap_or_default()
    }

    fn item(&self, collection: &CollectionId, doc: &DocId) -> Option<ItemHash> {
        self.index.collection(collection)?.get(doc)
    }

    fn heads(&self, doc: &DocId) -> Option<(CollectionId, Vec<Cid>)> {
        self.heads.get(doc).cloned()
    }

    fn collections(&self) -> Vec<CollectionId> {
        // A memory source has no schema: the collections it holds documents of.
        self.index.collections().map(|(c, _)| *c).collect()
    }
}
