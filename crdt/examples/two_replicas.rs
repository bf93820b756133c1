//! Two replicas edit the same documents while apart, exchange their blocks in a scrambled
//! order, and converge.
//!
//! Run with `cargo run -p hypha-crdt --example two_replicas`.

use hypha_crdt::{Author, Outcome, Replica, SigningKey, VerifiedBlock, parse_sdl};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sdl =
        "type Books { name: String rating: Float pages: Int likes: Int @crdt(type: pncounter) }";
    let schema = parse_sdl("hypha", sdl)?;
    // Each replica signs its blocks with its own Ed25519 key (fixed here to be reproducible).
    let mut alice = Replica::new(
        schema.clone(),
        Author::signing(SigningKey::from_bytes(&[1; 32])),
    );
    let mut bob = Replica::new(schema, Author::signing(SigningKey::from_bytes(&[2; 32])));

    // Both create the same book independently: same content, same docID.
    let book = json!({"name": "The Hobbit", "rating": 4.5, "pages": 310, "likes": 0});
    let (doc, a0) = alice.create("Books", &book)?;
    let (same, b0) = bob.create("Books", &book)?;
    assert_eq!(doc, same);
    println!("created {doc} on both replicas");

    // Apart, they edit: concurrent writes to one field, increments of a counter, and a
    // second document that only Alice has.
    let mut from_alice: Vec<VerifiedBlock> = vec![a0];
    from_alice.push(alice.update(doc, &json!({"rating": 4.8}))?);
    from_alice.push(alice.update(doc, &json!({"likes": 3}))?);
    let (second, created) = alice.create("Books", &json!({"name": "Dune", "pages": 412}))?;
    from_alice.push(created);
    from_alice.push(alice.update(second, &json!({"rating": 4.2}))?);
    let mut from_bob: Vec<VerifiedBlock> = vec![b0];
    from_bob.push(bob.update(doc, &json!({"rating": 3.9, "pages": 320}))?);
    from_bob.push(bob.update(doc, &json!({"likes": 2}))?);

    // Exchange, newest first: blocks wait as pending until their parents arrive.
    for block in from_alice.iter().rev() {
        let outcome = bob.apply(block.bytes())?;
        print_outcome("bob", block, &outcome);
    }
    for block in from_bob.iter().rev() {
        let outcome = alice.apply(block.bytes())?;
        print_outcome("alice", block, &outcome);
    }

    for (name, replica) in [("alice", &alice), ("bob", &bob)] {
        for id in [doc, second] {
            let state = replica.state(id).ok_or("missing document")?;
            println!(
                "{name}: {id} = {} (height {}, {} heads)",
                serde_json::Value::Object(replica.read(id).ok_or("unreadable")?),
                state.height,
                state.heads.len()
            );
        }
    }
    assert_eq!(alice.state(doc), bob.state(doc));
    assert_eq!(alice.state(second), bob.state(second));
    assert_eq!(alice.read(doc).ok_or("unreadable")?["likes"], 5);
    println!("converged: both replicas hold the same heads and state");
    Ok(())
}

fn print_outcome(to: &str, block: &VerifiedBlock, outcome: &Outcome) {
    println!(
        "{to} <- {} (priority {}): {outcome}",
        block.cid(),
        block.block().delta.priority
    );
}
