//! Head exchange: find which documents two peers hold at different heads, with near-minimal
//! communication, and exchange those heads; backfill then moves the blocks.
//!
//! # Message sequence
//!
//! A session goes one way. In a **pull** the initiator brings itself what the responder has
//! (a follower on connect, on subscription, as anti-entropy, or on demand); in a **push** it
//! offers the responder what it has (a replicator source catching its target up). A node that
//! wants both directions runs one session each way, concurrently.
//!
//! ```text
//! initiator A                                                      responder B
//!   │ Hello { session, mode, per collection: root (32 B), count }      │  roots equal: EQUAL
//!   │─────────────────────────────────────────────────────────────────▶│  else its sketch at the
//!   │ Sketches { per collection: EQUAL | SKETCH(level, IBLT) | TOO_DIFFERENT }  level the counts
//!   │◀─────────────────────────────────────────────────────────────────│  suggest
//!   │ A: own sketch − B's, peel → documents only A has a version of, and
//!   │    documents only B has a version of; A's side is checked against A's index
//!   │ (undecodable: SketchRequest { level + 1 } ↔ Sketches, at most twice more)
//!   │ (still undecodable, or a result that does not check out: the exact listing below)
//!   │ PULL: Want { B's documents }            PUSH: Heads { A's documents, A's heads, done }
//!   │─────────────────────────────────────────────────────────────────▶│
//!   │ PULL: Heads { B's heads per document }                           │  PUSH: B backfills what
//!   │◀─────────────────────────────────────────────────────────────────│  it lacks from A
//!   │ A backfills what it lacks from B (one round trip, blocks oldest first)
//! ```
//!
//! Equal roots end a session in one round trip of under 64 bytes each way for one collection.
//! For D differing documents among N, a pull takes 2 round trips before backfill: the sketch,
//! then the heads; its control bytes are the sketch (64 cells of ~33 bytes for up to ~20
//! differing items, growing 8× per level) plus ~50 bytes per differing document.
//!
//! # Exact listing
//!
//! When no sketch level decodes, or a decoded result does not check out, the initiator lists
//! the responder's collection exactly: eight docID ranges in parallel, pages of up to
//! `list_page` documents, each document as its docID and an 8-byte SipHash-2-4 tag of its sync
//! item under a key the initiator draws for the session. The initiator compares each page with
//! its own index and wants (pull) or offers (push) what differs.
//!
//! # Why a crafted sketch cannot make a sync wrong
//!
//! The roots are collision-resistant (an elliptic-curve multiset hash: see
//! [`hypha_crdt::sync_index`]), so equal roots mean equal sets. The sketches are unkeyed and
//! kept current incrementally, so a peer that chooses document contents could craft items that
//! make a sketch stall or peel a false item. Neither can make a session silently wrong: a
//! stalled sketch goes to the next level and then to the exact listing; every peeled item of
//! the initiator's side is checked against its own index, and every peeled item of the
//! responder's side is checked against the heads the responder then sends (their item hash
//! must carry the peeled tag) — any mismatch sends that collection to the keyed listing, whose
//! tags a peer cannot grind because the key is drawn after its items exist.
//!
//! # Bounds and defaults ([`Config`])
//!
//! | bound | default | why |
//! |---|---|---|
//! | sessions this node initiates at once (`max_sessions`) | 64 | each holds per-collection state |
//! | collections per Hello (`max_collections`) | 256 | bounds a Hello and the responder's work for it |
//! | documents per Want or Heads frame (`max_docs_per_frame`) | 4,096 | ~200 KiB of heads at most |
//! | documents wanted per session (`max_wanted`) | 100,000 | bounds initiator state; the rest comes next round |
//! | documents per listing page (`list_page`) | 32,768 | 768 KiB, under the frame cap |
//! | documents listed per session (`max_listed`) | 10,000,000 | bounds a listing's total cost |
//! | sketch cells (per level) | 64, 512, 4,096 | [`SKETCH_CELLS`] |
//! | session timeout (`session_timeout`) | 30 s without a reply | a stalled peer's session is dropped and retried next round |
//!
//! The responder keeps no state between frames: each request is answered from its index within
//! these bounds, and a request beyond them is a [`Violation`].

mod core;
mod memory;

pub use self::core::{
    Config, Event, Failure, HeadSync, Mode, SessionId, SessionStats, Stats, SyncSource, Transmit,
    Violation,
};
pub use self::memory::MemorySource;
pub use hypha_crdt::sync_index::SKETCH_CELLS;

#[cfg(test)]
mod tests;
