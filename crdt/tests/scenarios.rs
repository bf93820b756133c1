//! SCENARIOS.md A5, A8, G2 and G3 as pure merge tests: "concurrently" means each replica
//! writes without seeing the others' writes; "wait" means every replica has every block.

use hypha_crdt::{Author, DocId, Replica, SigningKey, VerifiedBlock, parse_sdl};
use serde_json::{Value, json};

/// `n` replicas of `sdl`, unsigned, each with its own replica identity.
fn replicas(sdl: &str, n: u8) -> Vec<Replica> {
    let schema = parse_sdl("hypha", sdl).unwrap();
    (0..n)
        .map(|i| Replica::new(schema.clone(), Author::unsigned([i; 32])))
        .collect()
}

/// "all create": every replica creates the document itself; all get the same docID. Signed
/// replicas make distinct genesis blocks, which are exchanged.
fn all_create(nodes: &mut [Replica], json: Value) -> DocId {
    let made: Vec<(DocId, VerifiedBlock)> = nodes
        .iter_mut()
        .map(|n| n.create("Users", &json).unwrap())
        .collect();
    assert!(
        made.windows(2).all(|w| w[0].0 == w[1].0),
        "same document, same docID"
    );
    let genesis: Vec<VerifiedBlock> = made.iter().map(|(_, b)| b.clone()).collect();
    exchange(nodes, &genesis);
    made[0].0
}

/// Delivers every block made to every replica.
fn exchange(nodes: &mut [Replica], made: &[VerifiedBlock]) {
    for node in nodes.iter_mut() {
        for block in made {
            node.apply(block.bytes()).unwrap();
        }
    }
}

fn age(node: &Replica, doc: DocId, field: &str) -> Value {
    node.read(doc).unwrap()[field].clone()
}

const U: &str = "type Users { Name: String  Age: Int }";

#[test]
fn a5_concurrent_equal_priority_writes_converge_to_greater_bytes() {
    let mut n = replicas(U, 2);
    let doc = all_create(&mut n, json!({"Name": "John", "Age": 21}));
    let a = n[0].update(doc, &json!({"Age": 60})).unwrap();
    let b = n[1].update(doc, &json!({"Age": 45})).unwrap();
    exchange(&mut n, &[a, b]);
    assert_eq!(age(&n[0], doc, "Age"), 60);
    assert_eq!(age(&n[1], doc, "Age"), 60);
    assert_eq!(n[0].state(doc), n[1].state(doc));
}

#[test]
fn a8_concurrent_sequences_converge_to_the_last_greatest() {
    let mut n = replicas(U, 2);
    let doc = all_create(&mut n, json!({"Name": "John", "Age": 21}));
    let mut made = Vec::new();
    for (node, ages) in [(0, [60, 61, 62]), (1, [45, 46, 47])] {
        for age in ages {
            made.push(n[node].update(doc, &json!({"Age": age})).unwrap());
        }
    }
    exchange(&mut n, &made);
    assert_eq!(age(&n[0], doc, "Age"), 62);
    assert_eq!(age(&n[1], doc, "Age"), 62);
    assert_eq!(
        n[0].state(doc).unwrap().heads.len(),
        2,
        "two concurrent branches"
    );
    assert_eq!(n[0].state(doc), n[1].state(doc));
}

#[test]
fn g2_concurrent_increments_are_both_counted() {
    let sdl = "type Users { Name: String  Age: Int @crdt(type: pncounter) }";
    let mut n = replicas(sdl, 2);
    let doc = all_create(&mut n, json!({"Name": "John", "Age": 0}));
    let a = n[0].update(doc, &json!({"Age": 45})).unwrap();
    let b = n[1].update(doc, &json!({"Age": 45})).unwrap();
    assert_ne!(a.cid(), b.cid(), "identical increments are distinct blocks");
    exchange(&mut n, &[a, b]);
    assert_eq!(age(&n[0], doc, "Age"), 90);
    assert_eq!(age(&n[1], doc, "Age"), 90);
}

/// G2 when both nodes run with the same seed: their nonce sequences are identical (both start
/// at 0 and advance in step), yet the increments stay distinct because nonces are bound to
/// the author. This holds signed and unsigned.
#[test]
fn g2_same_seed_still_counts_both() {
    let sdl = "type Users { Name: String  Age: Int @crdt(type: pncounter) }";
    let schema = parse_sdl("hypha", sdl).unwrap();
    for signed in [false, true] {
        let author = |i: u8| {
            let author = if signed {
                Author::signing(SigningKey::from_bytes(&[i + 1; 32]))
            } else {
                Author::unsigned([i + 1; 32])
            };
            author.with_nonce_seq(7)
        };
        let mut n = vec![
            Replica::new(schema.clone(), author(0)),
            Replica::new(schema.clone(), author(1)),
        ];
        let doc = all_create(&mut n, json!({"Name": "John", "Age": 10}));
        // Signed creates are distinct genesis blocks; the initial value counts once.
        assert_eq!(
            n[0].state(doc).unwrap().heads.len(),
            1 + usize::from(signed)
        );
        assert_eq!(age(&n[0], doc, "Age"), 10, "signed: {signed}");
        let a = n[0].update(doc, &json!({"Age": 45})).unwrap();
        let b = n[1].update(doc, &json!({"Age": 45})).unwrap();
        exchange(&mut n, &[a, b]);
        assert_eq!(age(&n[0], doc, "Age"), 100, "signed: {signed}");
        assert_eq!(age(&n[1], doc, "Age"), 100, "signed: {signed}");
    }
}

#[test]
fn g1_pcounter_refuses_negative_increments() {
    let sdl = "type Users { name: String  points: Int @crdt(type: pcounter) }";
    let mut n = replicas(sdl, 1);
    let (doc, _) = n[0]
        .create("Users", &json!({"name": "Shahzad", "points": 10}))
        .unwrap();
    n[0].update(doc, &json!({"points": 10})).unwrap();
    let err = n[0].update(doc, &json!({"points": -1})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field points is a pcounter and cannot be decremented (got -1)"
    );
    assert_eq!(age(&n[0], doc, "points"), 20);
}

#[test]
fn g3_concurrent_writes_to_different_fields_all_survive() {
    let sdl = "type Users { name: String  age: Int  score: Int }";
    let mut n = replicas(sdl, 3);
    let doc = all_create(&mut n, json!({"name": "John", "age": 21, "score": 0}));
    let made = vec![
        n[0].update(doc, &json!({"name": "Jane"})).unwrap(),
        n[1].update(doc, &json!({"age": 45})).unwrap(),
        n[2].update(doc, &json!({"score": 100})).unwrap(),
    ];
    exchange(&mut n, &made);
    for node in &n {
        assert_eq!(
            node.read(doc).unwrap(),
            json!({"name": "Jane", "age": 45, "score": 100})
                .as_object()
                .unwrap()
                .clone()
        );
    }
}

#[test]
fn delete_wins_and_a_later_update_never_undeletes() {
    let mut n = replicas(U, 2);
    let doc = all_create(&mut n, json!({"Name": "John", "Age": 43}));
    let delete = n[0].delete(doc).unwrap();
    let update = n[1].update(doc, &json!({"Age": 44})).unwrap();
    exchange(&mut n, &[delete, update]);
    for node in &n {
        assert!(node.state(doc).unwrap().deleted);
    }
    // The peer cannot write to it any more either.
    assert!(n[1].update(doc, &json!({"Age": 45})).is_err());
}

#[test]
fn fields_unknown_to_the_local_schema_are_kept_and_appear_later() {
    let wide = parse_sdl(
        "hypha",
        "type Users { Name: String Age: Int Email: String }",
    )
    .unwrap();
    let narrow = parse_sdl("hypha", U).unwrap();
    let mut writer = Replica::new(wide.clone(), Author::unsigned([1; 32]));
    let (doc, genesis) = writer
        .create("Users", &json!({"Name": "J", "Email": "j@x"}))
        .unwrap();
    let mut old = Replica::new(narrow, Author::unsigned([2; 32]));
    old.apply(genesis.bytes()).unwrap();
    assert_eq!(old.read(doc).unwrap().get("Email"), None);
    // The same blocks read through a schema that gained the field.
    let mut upgraded = Replica::new(wide, Author::unsigned([2; 32]));
    for cid in old.dag().states()[&doc].heads.clone() {
        let block = hypha_crdt::BlockSource::block(old.dag(), &cid)
            .unwrap()
            .unwrap();
        upgraded.apply(block.bytes()).unwrap();
    }
    assert_eq!(upgraded.read(doc).unwrap()["Email"], "j@x");
}
