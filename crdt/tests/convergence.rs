//! The merge laws, by property: for three or more concurrent writers making random edits,
//! increments and deletes (with partial syncs between them), every permutation and duplication
//! of block delivery yields the same state and heads, counters equal the exact sum of the
//! increments made, and pending blocks resolve in any arrival order.

use hypha_crdt::{Author, DocId, Outcome, Replica, VerifiedBlock, parse_sdl};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    SetName(u8),
    SetAge(i64),
    Increment(i64),
    Delete,
    /// Writer `from` sends all its blocks to the acting writer.
    Sync {
        from: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::SetName),
        4 => (-1000i64..1000).prop_map(Op::SetAge),
        4 => (-50i64..50).prop_map(Op::Increment),
        1 => Just(Op::Delete),
        3 => (0usize..8).prop_map(|from| Op::Sync { from }),
    ]
}

fn schema() -> Vec<hypha_crdt::Collection> {
    parse_sdl(
        "hypha",
        "type T { name: String age: Int points: Int @crdt(type: pncounter) }",
    )
    .unwrap()
}

struct Run {
    doc: DocId,
    /// Every block made, in the order it was made (a causal order).
    blocks: Vec<VerifiedBlock>,
    /// The exact sum of every increment made, including the initial value.
    expected_points: i64,
}

/// Plays a script of `writers` concurrent writers. Unsigned, they all start from one genesis
/// block; signed, each creates the document itself (one genesis block per author, unsynced).
fn play(writers: usize, signed: bool, script: &[(usize, Op)]) -> Run {
    let author = |i: usize| {
        if signed {
            Author::signing(hypha_crdt::SigningKey::from_bytes(&[i as u8 + 1; 32]))
        } else {
            Author::unsigned([i as u8; 32])
        }
    };
    let mut replicas: Vec<Replica> = (0..writers)
        .map(|i| Replica::new(schema(), author(i)))
        .collect();
    let initial = json!({"name": "n", "age": 0, "points": 5});
    let mut blocks = Vec::new();
    let mut made_by: Vec<usize> = Vec::new();
    let (doc, genesis) = replicas[0].create("T", &initial).unwrap();
    for (i, r) in replicas.iter_mut().enumerate().skip(1) {
        if signed {
            let (_, own) = r.create("T", &initial).unwrap();
            blocks.push(own);
            made_by.push(i);
        } else {
            r.ingest(&genesis).unwrap();
        }
    }
    blocks.insert(0, genesis);
    made_by.insert(0, 0);
    let mut expected_points = 5;
    for (who, op) in script {
        let who = who % writers;
        let made = match op {
            Op::SetName(n) => replicas[who].update(doc, &json!({"name": format!("n{n}")})),
            Op::SetAge(a) => replicas[who].update(doc, &json!({"age": a})),
            Op::Increment(i) => replicas[who].update(doc, &json!({"points": i})),
            Op::Delete => replicas[who].delete(doc),
            Op::Sync { from } => {
                let from = from % writers;
                for (block, _) in blocks.iter().zip(&made_by).filter(|(_, by)| **by == from) {
                    replicas[who].ingest(block).unwrap();
                }
                continue;
            }
        };
        // Updating a deleted document is refused; that is part of the contract.
        let Ok(block) = made else {
            assert!(replicas[who].state(doc).unwrap().deleted);
            continue;
        };
        if let Op::Increment(i) = op {
            expected_points += i;
        }
        // Unsigned writers making the same change from the same heads make the same block
        // (concurrent deletes, say): content addressing makes it one block.
        if blocks.iter().any(|b| b.cid() == block.cid()) {
            continue;
        }
        blocks.push(block);
        made_by.push(who);
    }
    Run {
        doc,
        blocks,
        expected_points,
    }
}

/// A deterministic shuffle (Fisher–Yates over a xorshift stream).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn deliver(blocks: &[VerifiedBlock]) -> Replica {
    let mut replica = Replica::new(schema(), Author::unsigned([0xee; 32]));
    for block in blocks {
        // Through the wire form, so decoding and verification are part of the law.
        replica.apply(block.bytes()).unwrap();
    }
    replica
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_delivery_order_and_duplication_converges(
        writers in 3usize..6,
        signed in any::<bool>(),
        script in proptest::collection::vec((0usize..8, op()), 1..40),
        seeds in proptest::collection::vec(any::<u64>(), 3),
        duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
    ) {
        let run = play(writers, signed, &script);
        let reference = deliver(&run.blocks);
        let state = reference.state(run.doc).unwrap();
        prop_assert_eq!(state.blocks as usize, run.blocks.len());
        prop_assert!(reference.dag().pending().next().is_none());
        if !state.deleted {
            let points = reference.read(run.doc).unwrap()["points"].as_i64().unwrap();
            prop_assert_eq!(points, run.expected_points);
        }
        for seed in seeds {
            let mut order = run.blocks.clone();
            for index in &duplicates {
                order.push(index.get(&run.blocks).clone());
            }
            shuffle(&mut order, seed);
            let other = deliver(&order);
            prop_assert_eq!(other.state(run.doc), reference.state(run.doc));
            prop_assert_eq!(other.read(run.doc), reference.read(run.doc));
            prop_assert!(other.dag().pending().next().is_none());
        }
    }

    #[test]
    fn reverse_order_waits_then_resolves_at_once(
        script in proptest::collection::vec((0usize..8, op()), 1..30),
    ) {
        let run = play(3, false, &script);
        let mut replica = Replica::new(schema(), Author::unsigned([0xee; 32]));
        let (genesis, rest) = run.blocks.split_first().unwrap();
        for block in rest.iter().rev() {
            let outcome = replica.ingest(block).unwrap();
            prop_assert!(matches!(outcome, Outcome::Pending { .. }), "{outcome:?}");

        }
        let Outcome::Applied { applied, .. } = replica.ingest(genesis).unwrap() else {
            panic!("genesis must apply");
        };
        prop_assert_eq!(applied.len(), run.blocks.len());
        let reference = deliver(&run.blocks);
        prop_assert_eq!(replica.state(run.doc), reference.state(run.doc));
    }
}

#[test]
fn pending_reports_the_missing_ancestors() {
    let run = play(
        1,
        false,
        &[(0, Op::SetAge(1)), (0, Op::SetAge(2)), (0, Op::SetAge(3))],
    );
    let mut replica = Replica::new(schema(), Author::unsigned([0xee; 32]));
    // Only the newest block: its parent is missing.
    let Outcome::Pending { missing } = replica.ingest(&run.blocks[3]).unwrap() else {
        panic!()
    };
    assert_eq!(missing, vec![run.blocks[2].cid()]);
    // With the newest two, the missing ancestor moves back one step.
    let Outcome::Pending { missing } = replica.ingest(&run.blocks[2]).unwrap() else {
        panic!()
    };
    assert_eq!(missing, vec![run.blocks[1].cid()]);
    assert_eq!(replica.ingest(&run.blocks[3]).unwrap(), Outcome::Duplicate);
}
