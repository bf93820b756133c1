//! Bodies of the cargo-fuzz targets in `fuzz/`, as plain functions so they build and run in
//! ordinary tests too (regression replay). Enabled by the `fuzzing` feature.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::json;

use crate::{Author, Replica, VerifiedBlock, parse_sdl};

/// Decoding arbitrary bytes never panics; whatever decodes is canonical and round-trips.
pub fn decode_block(data: &[u8]) {
    let Ok(block) = VerifiedBlock::decode(data, None) else {
        return;
    };
    assert_eq!(
        block.bytes(),
        data,
        "a decoded block is its own canonical encoding"
    );
    let again = VerifiedBlock::decode(block.bytes(), Some(&block.cid()));
    assert_eq!(again.as_ref(), Ok(&block), "decoding is stable");
}

/// One step of a [`merge_order`] script.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// Writer `who` sets the string field.
    SetName {
        /// Which writer.
        who: u8,
        /// The value (a small alphabet, so ties happen).
        value: u8,
    },
    /// Writer `who` sets the integer field.
    SetAge {
        /// Which writer.
        who: u8,
        /// The value.
        value: i16,
    },
    /// Writer `who` increments the counter.
    Increment {
        /// Which writer.
        who: u8,
        /// The increment.
        by: i16,
    },
    /// Writer `who` deletes the document.
    Delete {
        /// Which writer.
        who: u8,
    },
    /// Writer `to` receives every block writer `from` made so far.
    Sync {
        /// Sender.
        from: u8,
        /// Receiver.
        to: u8,
    },
}

/// Three writers run a script from one genesis block; the blocks they made are then delivered
/// to fresh replicas in the made order and in a fuzzer-chosen order with duplicates. Both must
/// end with the same state, nothing pending, and the counter must be the exact sum.
pub fn merge_order(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(script) = Vec::<Op>::arbitrary(&mut input) else {
        return;
    };
    let schema = parse_sdl(
        "hypha",
        "type T { name: String age: Int points: Int @crdt(type: pncounter) }",
    )
    .expect("static schema parses");
    let mut writers: Vec<Replica> = (0..3u8)
        .map(|i| Replica::new(schema.clone(), Author::unsigned([i; 32])))
        .collect();
    let (doc, genesis) = writers[0]
        .create("T", &json!({"name": "", "points": 0}))
        .expect("create");
    for w in &mut writers[1..] {
        w.ingest(&genesis).expect("genesis applies");
    }
    let mut made: Vec<(usize, VerifiedBlock)> = vec![(0, genesis)];
    let mut sum = 0i64;
    for op in script.iter().take(64) {
        let (who, result) = match *op {
            Op::SetName { who, value } => {
                let w = usize::from(who % 3);
                (
                    w,
                    writers[w].update(doc, &json!({"name": format!("{}", value % 4)})),
                )
            }
            Op::SetAge { who, value } => {
                let w = usize::from(who % 3);
                (w, writers[w].update(doc, &json!({"age": value})))
            }
            Op::Increment { who, by } => {
                let w = usize::from(who % 3);
                let result = writers[w].update(doc, &json!({"points": by}));
                if result.is_ok() {
                    sum += i64::from(by);
                }
                (w, result)
            }
            Op::Delete { who } => {
                let w = usize::from(who % 3);
                (w, writers[w].delete(doc))
            }
            Op::Sync { from, to } => {
                let (from, to) = (usize::from(from % 3), usize::from(to % 3));
                for (_, block) in made.iter().filter(|(by, _)| *by == from) {
                    writers[to]
                        .ingest(block)
                        .expect("a writer's own blocks apply");
                }
                continue;
            }
        };
        if let Ok(block) = result
            && made.iter().all(|(_, b)| b.cid() != block.cid())
        {
            made.push((who, block));
        }
    }
    let mut order: Vec<&VerifiedBlock> = made.iter().map(|(_, b)| b).collect();
    let mut reordered = Vec::new();
    while let Ok(index) = input.choose_index(order.len().max(1)) {
        if order.is_empty() {
            break;
        }
        let block = order.swap_remove(index);
        reordered.push(block);
        if input.arbitrary::<bool>().unwrap_or(false) {
            reordered.push(block);
        }
    }
    reordered.extend(order);
    let deliver = |blocks: &mut dyn Iterator<Item = &VerifiedBlock>| {
        let mut replica = Replica::new(schema.clone(), Author::unsigned([9; 32]));
        for block in blocks {
            replica
                .apply(block.bytes())
                .expect("valid blocks are never refused");
        }
        replica
    };
    let reference = deliver(&mut made.iter().map(|(_, b)| b));
    let other = deliver(&mut reordered.into_iter());
    assert_eq!(
        reference.state(doc),
        other.state(doc),
        "delivery order changed the state"
    );
    assert_eq!(other.dag().pending().count(), 0, "blocks left pending");
    let state = reference.state(doc).expect("document exists");
    if !state.deleted {
        let points = reference.read(doc).expect("readable")["points"].as_i64();
        assert_eq!(points, Some(sum), "counter is not the exact sum");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_run_on_simple_inputs() {
        super::decode_block(&[]);
        super::decode_block(&[0xa2, 0x00]);
        super::merge_order(&[]);
        super::merge_order(&[7; 300]);
        super::merge_order(&(0..=255).collect::<Vec<u8>>());
    }
}
