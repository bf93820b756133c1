//! DAG backfill: fetch every block reachable from the heads a node wants and not from the
//! heads it has, from one peer, in one round trip.
//!
//! # Message sequence
//!
//! ```text
//! requester                                             responder
//!   │ Request { id, doc, wanted, have, max_blocks, max_bytes }
//!   │────────────────────────────────────────────────────▶│  walk back from `wanted` and `have`
//!   │                                                     │  together, highest priority first:
//!   │                                                     │  a block reached only from `wanted`
//!   │                                                     │  is sent, one reached from `have` is
//!   │                                                     │  not, and neither are its ancestors
//!   │ Response { id, blocks: oldest first, done: false }  │
//!   │◀────────────────────────────────────────────────────│  frames up to max_frame_bytes
//!   │ Response { id, blocks, done: true, status }         │
//!   │◀────────────────────────────────────────────────────│
//! ```
//!
//! Blocks arrive parents first, so the requester hands each one to the merge as it arrives
//! ([`Event::Received`]); a chain of any depth costs one round trip plus transfer, never one
//! round trip per DAG level.
//!
//! # Why the walk is exact
//!
//! A block's priority is 1 + its highest parent's (the merge refuses any other), so every
//! descendant of a block is popped from the walk's max-heap before it. When a block is
//! popped, every path from a `have` head to it has already marked it, so "reached from
//! `have`" is final. The walk stops as soon as no block reached only from `wanted` is left in
//! the heap: its cost is the difference plus the `have` side down to the lowest block sent.
//!
//! # Bounds and defaults ([`Config`])
//!
//! | bound | default | why |
//! |---|---|---|
//! | blocks per response (`max_blocks`) | 100,000 | a deep history arrives in a few requests, each bounded |
//! | bytes per response (`max_bytes`) | 8 MiB | bounds what one peer can make a requester hold, and a responder queue for a peer; a response fits the 16 MiB a connection queues per protocol |
//! | blocks a served walk may visit (`max_walk`) | 200,000 | bounds the responder's work per request |
//! | requests in flight (`max_in_flight`) | 64 | bounds requester state |
//! | frames queued for sending (`max_queued_frames`) | 1,024 | past it, requests are answered `BUSY` |
//! | request timeout (`request_timeout`) | 30 s | a stalled peer is abandoned for another |
//! | frame size (`max_frame_bytes`) | [`DEFAULT_MAX_FRAME_BYTES`](crate::wire::DEFAULT_MAX_FRAME_BYTES) | one block of the largest size fits |
//!
//! # Loss, duplication, hostile peers
//!
//! A response that never completes times out ([`Failure::TimedOut`]); the caller asks another
//! peer. A response frame for no request in flight, a block that does not verify, a block of
//! another document, more blocks or bytes than asked for, or a final frame without a status is
//! a [`Violation`]: the request fails and [`Event::PeerMisbehaved`] lets the driver lower the
//! peer's standing. Nothing a peer sends panics the core. A responder that answers "truncated"
//! forever (a deep DAG bomb) is cut off by the coordinator after `max_fetch_depth` blocks
//! (default 100,000) over one fetch's continuations: [`Violation::DepthExceeded`].

mod core;

pub use self::core::{Backfill, Config, Event, Failure, RequestId, Transmit, Violation};

#[cfg(test)]
mod tests;
