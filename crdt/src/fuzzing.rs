//! Bodies of the cargo-fuzz targets in `fuzz/`, as plain functions so they build and run in
//! ordinary tests too (regression replay). Enabled by the `fuzzing` feature.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::json;

use crate::{Author, Collection, Replica, VerifiedBlock, parse_sdl};

/// Decoding arbitrary bytes never panics; whatever decodes is canonical and round-trips; and
/// the decoder's proof of canonical form agrees with re-encoding and comparing bytes.
pub fn decode_block(data: &[u8]) {
    if let Ok(decoded) = crate::codec::decode_block(data) {
        let re_encoded = crate::codec::encode_block(&decoded.block).ok();
        assert_eq!(
            decoded.canonical,
            re_encoded.as_deref() == Some(data),
            "the canonical-form proof agrees with re-encoding"
        );
    }
    let Ok(block) = VerifiedBlock::decode(data, None) else {
        return;
    };
    assert_eq!(
        block.block().to_bytes().ok().as_deref(),
        Some(data),
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
    let schema = schema();
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
    let reordered = reorder(&mut input, made.iter().map(|(_, b)| b).collect());
    let reference = deliver(&schema, &mut made.iter().map(|(_, b)| b));
    let other = deliver(&schema, &mut reordered.into_iter());
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

fn schema() -> Vec<Collection> {
    parse_sdl(
        "hypha",
        "type T { name: String age: Int points: Int @crdt(type: pncounter) }",
    )
    .expect("static schema parses")
}

/// `blocks` in an order the input chooses, some duplicated.
fn reorder<'a>(
    input: &mut Unstructured<'_>,
    mut order: Vec<&'a VerifiedBlock>,
) -> Vec<&'a VerifiedBlock> {
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
    reordered
}

/// A fresh replica given `blocks`, every one of which must be accepted.
fn deliver(schema: &[Collection], blocks: &mut dyn Iterator<Item = &VerifiedBlock>) -> Replica {
    let mut replica = Replica::new(schema.to_vec(), Author::unsigned([9; 32]));
    for block in blocks {
        replica
            .apply(block.bytes())
            .expect("valid blocks are never refused");
    }
    replica
}

/// One step of a [`merge_model`] script: a step of [`merge_order`]'s (whose `Sync` delivers
/// everything the sender made), or a partial sync.
#[derive(Debug, Arbitrary)]
pub enum ModelOp {
    /// A write, delete or full sync.
    Do(Op),
    /// Writer `to` receives some of the blocks writer `from` made (those whose index bit is
    /// set in `mask`), newest first when `reverse`: parents may be missing, so blocks wait as
    /// pending.
    Partial {
        /// Sender.
        from: u8,
        /// Receiver.
        to: u8,
        /// Which of the sender's blocks (by index, modulo 32).
        mask: u32,
        /// Deliver newest first.
        reverse: bool,
    },
}

/// What the model remembers of one LWW write.
struct Write {
    priority: u64,
    cbor: Vec<u8>,
    json: serde_json::Value,
}

/// The model's winner: the highest field priority, then the greater canonical CBOR bytes.
fn wins(new: &Write, old: &Write) -> bool {
    (new.priority, &new.cbor) > (old.priority, &old.cbor)
}

/// A canonical CBOR head: major type and argument, shortest form.
fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
        _ => [vec![m | 27], n.to_be_bytes().to_vec()].concat(),
    }
}

fn cbor_text(s: &str) -> Vec<u8> {
    [cbor_head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
}

fn cbor_int(i: i64) -> Vec<u8> {
    if i >= 0 {
        cbor_head(0, i as u64)
    } else {
        cbor_head(1, (-1 - i) as u64)
    }
}

/// Three writers, each of which may create the document independently (the same fields, so
/// the same docID), run a script of writes and partial syncs (blocks arrive without their
/// parents and wait as pending); then every writer and two fresh replicas receive every
/// block, in a fuzzer-chosen order with duplicates. All must converge with nothing pending,
/// and agree with an independent model: per LWW field the write with the highest field
/// priority wins, ties broken by the greater canonical CBOR bytes (encoded here, not by the
/// crate); the counter is the sum of the increments; any delete wins.
pub fn merge_model(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(creators) = input.arbitrary::<u8>() else {
        return;
    };
    let Ok(script) = Vec::<ModelOp>::arbitrary(&mut input) else {
        return;
    };
    let schema = schema();
    let mut writers: Vec<Replica> = (0..3u8)
        .map(|i| Replica::new(schema.clone(), Author::unsigned([i; 32])))
        .collect();
    let genesis_fields = json!({"name": "", "points": 0});
    let mut made: Vec<(usize, VerifiedBlock)> = Vec::new();
    let mut doc = None;
    for (w, writer) in writers.iter_mut().enumerate() {
        if w == 0 || creators & (1 << w) != 0 {
            let (d, genesis) = writer.create("T", &genesis_fields).expect("create");
            assert!(
                doc.is_none_or(|x| x == d),
                "the docID is derived from the fields"
            );
            doc = Some(d);
            made.push((w, genesis));
        }
    }
    let doc = doc.expect("writer 0 creates");
    // Writers that did not create start from writer 0's genesis.
    for (w, writer) in writers.iter_mut().enumerate().skip(1) {
        if creators & (1 << w) == 0 {
            writer.ingest(&made[0].1).expect("genesis applies");
        }
    }
    let mut name = Write {
        priority: 1,
        cbor: cbor_text(""),
        json: json!(""),
    };
    let mut age: Option<Write> = None;
    let (mut sum, mut deleted) = (0i64, false);
    for op in script.iter().take(64) {
        let who = |w: u8| usize::from(w % 3);
        let (w, result, write) = match *op {
            ModelOp::Do(Op::SetName { who: w, value }) => {
                let v = format!("{}", value % 4);
                let r = writers[who(w)].update(doc, &json!({ "name": v }));
                (who(w), r, Some(("name", cbor_text(&v), json!(v))))
            }
            ModelOp::Do(Op::SetAge { who: w, value }) => {
                let v = i64::from(value % 3);
                let r = writers[who(w)].update(doc, &json!({ "age": v }));
                (who(w), r, Some(("age", cbor_int(v), json!(v))))
            }
            ModelOp::Do(Op::Increment { who: w, by }) => {
                let r = writers[who(w)].update(doc, &json!({ "points": by }));
                if r.is_ok() {
                    sum += i64::from(by);
                }
                (who(w), r, None)
            }
            ModelOp::Do(Op::Delete { who: w }) => {
                let r = writers[who(w)].delete(doc);
                deleted |= r.is_ok();
                (who(w), r, None)
            }
            ModelOp::Do(Op::Sync { from, to }) | ModelOp::Partial { from, to, .. } => {
                let (mask, reverse) = match *op {
                    ModelOp::Partial { mask, reverse, .. } => (mask, reverse),
                    ModelOp::Do(_) => (u32::MAX, false),
                };
                let (from, to) = (who(from), who(to));
                let mut blocks: Vec<&VerifiedBlock> = made
                    .iter()
                    .filter(|(by, _)| *by == from)
                    .map(|(_, b)| b)
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << (i % 32)) != 0)
                    .map(|(_, b)| b)
                    .collect();
                if reverse {
                    blocks.reverse();
                }
                for block in blocks {
                    writers[to]
                        .ingest(block)
                        .expect("valid blocks are never refused");
                }
                continue;
            }
        };
        let Ok(block) = result else { continue };
        if let Some((field, cbor, json)) = write {
            let Some(crate::FieldOp::Lww { priority, .. }) = block.block().delta.fields.get(field)
            else {
                panic!("a write of {field} carries an LWW op");
            };
            let new = Write {
                priority: *priority,
                cbor,
                json,
            };
            match field {
                "name" if wins(&new, &name) => name = new,
                "age" if age.as_ref().is_none_or(|old| wins(&new, old)) => age = Some(new),
                _ => {}
            }
        }
        made.push((w, block));
    }
    let all: Vec<&VerifiedBlock> = made.iter().map(|(_, b)| b).collect();
    let reordered = reorder(&mut input, all.clone());
    for w in &mut writers {
        for block in &reordered {
            w.ingest(block).expect("valid blocks are never refused");
        }
    }
    let fresh = deliver(&schema, &mut reordered.iter().copied());
    let reference = deliver(&schema, &mut all.into_iter());
    let expected = reference.state(doc).expect("document exists");
    for replica in writers.iter().chain([&fresh]) {
        assert_eq!(replica.state(doc), Some(expected), "replicas diverged");
        assert_eq!(replica.dag().pending().count(), 0, "blocks left pending");
    }
    assert_eq!(
        expected.deleted, deleted,
        "delete wins, and only a delete deletes"
    );
    if !deleted {
        let read = reference.read(doc).expect("readable");
        assert_eq!(
            read.get("name"),
            Some(&name.json),
            "LWW name disagrees with the model"
        );
        assert_eq!(
            read.get("age"),
            age.as_ref().map(|a| &a.json),
            "LWW age disagrees with the model"
        );
        assert_eq!(
            read["points"].as_i64(),
            Some(sum),
            "the counter is not the sum"
        );
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
        super::merge_model(&[]);
        super::merge_model(&[7; 300]);
        super::merge_model(&(0..=255).collect::<Vec<u8>>());
    }
}
