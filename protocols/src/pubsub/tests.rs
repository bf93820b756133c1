//! Topics, shards, follows and the update message.

use hypha_crdt::{Author, Replica, parse_sdl};
use serde_json::json;

use super::*;

fn replica(signed: bool) -> Replica {
    let schema = parse_sdl("hypha", "type U { a: Int b: String }").unwrap();
    let author = if signed {
        Author::signing(hypha_crdt::SigningKey::from_bytes(&[7; 32]))
    } else {
        Author::unsigned([1; 32])
    };
    Replica::new(schema, author)
}

fn collection() -> CollectionId {
    CollectionId::derive("hypha", "U")
}

fn doc(i: u32) -> DocId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[12..].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
    DocId::from_bytes(b)
}

#[test]
fn topics_carry_namespace_scheme_and_shard() {
    let c = collection();
    let t = collection_topic("apps", &c);
    assert_eq!(t, format!("/hypha/apps/pubsub/1/{}", c.0));
    assert_eq!(shard_topic("apps", &c, 5), format!("{t}/shard/5"));
    assert_ne!(
        collection_topic("other", &c),
        t,
        "namespaces never share a topic"
    );
}

#[test]
fn shard_is_first_four_bytes_mod_count() {
    assert_eq!(shard_of(&doc(0)), 0);
    assert_eq!(shard_of(&doc(SHARD_COUNT + 3)), 3);
    for i in 0..1000 {
        assert!(shard_of(&doc(i)) < SHARD_COUNT);
    }
}

#[test]
fn following_many_documents_costs_at_most_the_shard_count() {
    let mut f = Follows::new("hypha", 0);
    let mut changes = Vec::new();
    for i in 0..10_000 {
        f.add_document(doc(i * 7919), collection(), &mut changes);
    }
    assert_eq!(f.topic_count(), SHARD_COUNT as usize);
    assert_eq!(changes.len(), SHARD_COUNT as usize);
    f.add_collection(collection(), &mut changes);
    assert_eq!(f.topic_count(), SHARD_COUNT as usize + 1);
}

#[test]
fn a_topic_is_left_only_when_nothing_needs_it() {
    let mut f = Follows::new("hypha", 0);
    let (a, b) = (doc(1), doc(1 + SHARD_COUNT));
    assert_eq!(shard_of(&a), shard_of(&b));
    let mut changes = Vec::new();
    f.add_document(a, collection(), &mut changes);
    f.add_document(b, collection(), &mut changes);
    assert_eq!(changes.len(), 1);
    f.remove_document(&a, &mut changes);
    assert_eq!(changes.len(), 1, "b still needs the shard topic");
    assert!(f.follows(&collection(), &b) && !f.follows(&collection(), &a));
    f.remove_document(&b, &mut changes);
    assert!(matches!(changes.last(), Some(TopicChange::Unsubscribe(_))));
    assert_eq!(f.topic_count(), 0);
}

#[test]
fn hot_documents_are_a_bounded_lru() {
    let mut f = Follows::new("hypha", 2);
    let mut changes = Vec::new();
    assert!(f.touch(doc(1), collection(), &mut changes));
    assert!(f.touch(doc(2), collection(), &mut changes));
    assert!(!f.touch(doc(1), collection(), &mut changes), "already hot");
    assert!(f.touch(doc(3), collection(), &mut changes));
    assert_eq!(f.hot().len(), 2);
    assert!(f.follows(&collection(), &doc(1)), "recently used stays");
    assert!(
        !f.follows(&collection(), &doc(2)),
        "least recently used is evicted"
    );
    assert_eq!(f.topic_count(), 2);
}

#[test]
fn zero_hot_documents_disables_them() {
    let mut f = Follows::new("hypha", 0);
    let mut changes = Vec::new();
    assert!(!f.touch(doc(1), collection(), &mut changes));
    assert!(changes.is_empty() && !f.follows(&collection(), &doc(1)));
}

#[test]
fn update_round_trips_inline_and_by_cid() {
    for signed in [false, true] {
        let mut r = replica(signed);
        let (d, block) = r.create("U", &json!({"a": 1})).unwrap();
        let heads = vec![block.cid()];
        let inline = Update::new(&block, heads.clone(), DEFAULT_MAX_INLINE_BYTES);
        assert!(inline.block.is_some());
        assert_eq!(Update::decode(&inline.encode()).unwrap(), inline);
        let by_cid = Update::new(&block, heads, 0);
        assert!(by_cid.block.is_none());
        let decoded = Update::decode(&by_cid.encode()).unwrap();
        assert_eq!((decoded.doc_id, decoded.cid), (d, block.cid()));
    }
}

#[test]
fn update_with_a_block_that_is_not_its_cid_is_invalid() {
    let mut r = replica(false);
    let (_, a) = r.create("U", &json!({"a": 1})).unwrap();
    let (_, b) = r.create("U", &json!({"a": 2})).unwrap();
    let mut u = Update::new(&a, vec![a.cid()], DEFAULT_MAX_INLINE_BYTES);
    u.cid = b.cid();
    assert!(matches!(
        Update::decode(&u.encode()),
        Err(Invalid::BadBlock(_))
    ));
}

#[test]
fn update_naming_another_document_is_invalid() {
    let mut r = replica(false);
    let (_, a) = r.create("U", &json!({"a": 1})).unwrap();
    let mut u = Update::new(&a, vec![a.cid()], DEFAULT_MAX_INLINE_BYTES);
    u.doc_id = doc(99);
    assert_eq!(Update::decode(&u.encode()), Err(Invalid::Mismatch));
}

#[test]
fn message_id_is_the_cid_per_topic() {
    let mut r = replica(false);
    let (_, block) = r.create("U", &json!({"a": 1})).unwrap();
    let inline = Update::new(&block, vec![block.cid()], DEFAULT_MAX_INLINE_BYTES).encode();
    let by_cid = Update::new(&block, vec![block.cid()], 0).encode();
    assert_eq!(
        message_id("t", &inline),
        message_id("t", &by_cid),
        "same block, same id"
    );
    assert_ne!(
        message_id("t", &inline),
        message_id("u", &inline),
        "one id per topic"
    );
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Update::decode(&bytes);
    }
}
