//! What a node follows, and the topics that makes it join.

use std::collections::{BTreeMap, BTreeSet};

use hypha_crdt::{CollectionId, DocId};

use super::{collection_topic, document_topic};

/// A change of the topics a node is subscribed to, for the driver to apply to gossipsub.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TopicChange {
    /// Join the topic.
    Subscribe(String),
    /// Leave the topic.
    Unsubscribe(String),
}

/// The hot documents: a bounded LRU of the documents used most recently (local writes and
/// reads), which a node follows on top of its explicit subscriptions (DESIGN §4).
///
/// A capacity of 0 disables it. Recency is a logical tick, not a clock, so the LRU is
/// deterministic.
#[derive(Debug, Clone, Default)]
pub struct HotDocs {
    capacity: usize,
    tick: u64,
    by_doc: BTreeMap<DocId, (u64, CollectionId)>,
    by_tick: BTreeMap<u64, DocId>,
}

impl HotDocs {
    /// An empty LRU holding at most `capacity` documents.
    pub fn new(capacity: usize) -> HotDocs {
        HotDocs {
            capacity,
            ..HotDocs::default()
        }
    }

    /// Marks `doc` used. Returns whether it became hot (it was not) and the document evicted
    /// to make room, if any.
    pub fn touch(
        &mut self,
        doc: DocId,
        collection: CollectionId,
    ) -> (bool, Option<(DocId, CollectionId)>) {
        if self.capacity == 0 {
            return (false, None);
        }
        self.tick += 1;
        if let Some((tick, _)) = self.by_doc.get_mut(&doc) {
            self.by_tick.remove(tick);
            *tick = self.tick;
            self.by_tick.insert(self.tick, doc);
            return (false, None);
        }
        let mut evicted = None;
        if self.by_doc.len() >= self.capacity
            && let Some((_, old)) = self.by_tick.pop_first()
            && let Some((_, collection)) = self.by_doc.remove(&old)
        {
            evicted = Some((old, collection));
        }
        self.by_doc.insert(doc, (self.tick, collection));
        self.by_tick.insert(self.tick, doc);
        (true, evicted)
    }

    /// Bumped by every use: a changed generation means the LRU's content or order changed.
    pub fn generation(&self) -> u64 {
        self.tick
    }

    /// Whether `doc` is hot.
    pub fn contains(&self, doc: &DocId) -> bool {
        self.by_doc.contains_key(doc)
    }

    /// How many documents are hot.
    pub fn len(&self) -> usize {
        self.by_doc.len()
    }

    /// Whether no document is hot.
    pub fn is_empty(&self) -> bool {
        self.by_doc.is_empty()
    }

    /// The hot documents, least recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&DocId, &CollectionId)> {
        self.by_tick
            .values()
            .filter_map(|d| self.by_doc.get_key_value(d).map(|(d, (_, c))| (d, c)))
    }
}

/// Everything a node follows — collections, documents, hot documents — and the topics that
/// takes, reference-counted so a topic is left only when nothing needs it any more.
#[derive(Debug, Clone)]
pub struct Follows {
    namespace: String,
    collections: BTreeSet<CollectionId>,
    documents: BTreeMap<DocId, BTreeSet<CollectionId>>,
    hot: HotDocs,
    topics: BTreeMap<String, u32>,
}

impl Follows {
    /// Follows nothing yet; at most `hot_docs` hot documents (0 disables them).
    pub fn new(namespace: impl Into<String>, hot_docs: usize) -> Follows {
        Follows {
            namespace: namespace.into(),
            collections: BTreeSet::new(),
            documents: BTreeMap::new(),
            hot: HotDocs::new(hot_docs),
            topics: BTreeMap::new(),
        }
    }

    /// Whether updates of `doc` in `collection` are kept (merged) here.
    pub fn follows(&self, collection: &CollectionId, doc: &DocId) -> bool {
        self.collections.contains(collection)
            || self.documents.contains_key(doc)
            || self.hot.contains(doc)
    }

    /// Whether the node follows `collection` as a whole.
    pub fn follows_collection(&self, collection: &CollectionId) -> bool {
        self.collections.contains(collection)
    }

    /// Follows the whole of `collection`.
    pub fn add_collection(&mut self, collection: CollectionId, changes: &mut Vec<TopicChange>) {
        if self.collections.insert(collection) {
            let topic = collection_topic(&self.namespace, &collection);
            self.join(topic, changes);
        }
    }

    /// Stops following `collection` as a whole.
    pub fn remove_collection(&mut self, collection: &CollectionId, changes: &mut Vec<TopicChange>) {
        if self.collections.remove(collection) {
            let topic = collection_topic(&self.namespace, collection);
            self.leave(topic, changes);
        }
    }

    /// Follows one document: joins its shard topic in `collection`. A node asked to follow a
    /// document it does not hold yet does not know its collection, so it calls this once per
    /// collection it has; the extra shard topics cost little and go with
    /// [`remove_document`](Follows::remove_document).
    pub fn add_document(
        &mut self,
        doc: DocId,
        collection: CollectionId,
        changes: &mut Vec<TopicChange>,
    ) {
        if self.documents.entry(doc).or_default().insert(collection) {
            let topic = document_topic(&self.namespace, &collection, &doc);
            self.join(topic, changes);
        }
    }

    /// Stops following one document.
    pub fn remove_document(&mut self, doc: &DocId, changes: &mut Vec<TopicChange>) {
        for collection in self.documents.remove(doc).unwrap_or_default() {
            let topic = document_topic(&self.namespace, &collection, doc);
            self.leave(topic, changes);
        }
    }

    /// Marks `doc` used locally (a write or a read). Returns whether it became hot, so the
    /// caller can resync it.
    pub fn touch(
        &mut self,
        doc: DocId,
        collection: CollectionId,
        changes: &mut Vec<TopicChange>,
    ) -> bool {
        let (became_hot, evicted) = self.hot.touch(doc, collection);
        if became_hot {
            let topic = document_topic(&self.namespace, &collection, &doc);
            self.join(topic, changes);
        }
        if let Some((old, collection)) = evicted {
            let topic = document_topic(&self.namespace, &collection, &old);
            self.leave(topic, changes);
        }
        became_hot
    }

    /// The followed collections.
    pub fn collections(&self) -> &BTreeSet<CollectionId> {
        &self.collections
    }

    /// The followed documents.
    pub fn documents(&self) -> impl Iterator<Item = &DocId> {
        self.documents.keys()
    }

    /// The hot documents.
    pub fn hot(&self) -> &HotDocs {
        &self.hot
    }

    /// The topics joined, in order.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// How many topics are joined.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    fn join(&mut self, topic: String, changes: &mut Vec<TopicChange>) {
        let n = self.topics.entry(topic.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            changes.push(TopicChange::Subscribe(topic));
        }
    }

    fn leave(&mut self, topic: String, changes: &mut Vec<TopicChange>) {
        if let Some(n) = self.topics.get_mut(&topic) {
            *n -= 1;
            if *n == 0 {
                self.topics.remove(&topic);
                changes.push(TopicChange::Unsubscribe(topic));
            }
        }
    }
}
