//! Active replication: a source pushes a document's heads with their blocks to a replicator
//! peer, which acknowledges only once its commit is durable.
//!
//! # Message sequence
//!
//! ```text
//! source                                                 target
//!   │ Push { id, collection, doc, heads, blocks }          │  verify every block (CID, then
//!   │─────────────────────────────────────────────────────▶│  signature); allow list; quota
//!   │                                                      │  ── Event::Received ──▶ coordinator:
//!   │                                                      │     collection known? ingest the
//!   │                                                      │     blocks; ancestors missing?
//!   │        (backfill of missing ancestors, one RTT)      │     backfill them from the source
//!   │◀─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ▶│     (only when history is missing)
//!   │                                                      │  every head applied and durable
//!   │ Ack { id, DURABLE }                                  │  ◀── Replicator::respond
//!   │◀─────────────────────────────────────────────────────│
//!   │  coordinator drops the outbox entry (if the heads did not move on meanwhile)
//! ```
//!
//! A push carries the blocks of the document's current heads only: the target already holds
//! the history in the common case (earlier pushes), and when it does not, it fetches exactly
//! the missing blocks by backfill from the source in one round trip. Other answers:
//! `UNAUTHORIZED` (the target has an allow list of sources and this one is not on it),
//! `UNKNOWN_COLLECTION` (retried later: the target may add the schema), `BUSY` (over the
//! source's quota), `MISSING` (history could not be completed), `REJECTED` (a block is
//! invalid).
//!
//! # Retries
//!
//! Every failure — a refusal, a timeout, a disconnect with pushes in flight, a failed dial —
//! schedules the peer's next attempt after the next of `retry_intervals` (default 30 s
//! doubling to 32 min, then every 32 min); a durable ack resets the schedule, and so does a
//! (re)connection, which makes the peer ready at once. [`Event::Ready`] tells the coordinator
//! that a peer may be pushed to again; the outbox itself is persistent and lives in the store,
//! so nothing owed is lost across restarts of either side.
//!
//! # Bounds and defaults ([`Config`])
//!
//! | bound | default | why |
//! |---|---|---|
//! | pushes in flight per target (`max_in_flight`) | 16 | pipelines acks without unbounded state |
//! | push timeout (`push_timeout`) | 60 s | the target may backfill history and fsync first |
//! | retry intervals (`retry_intervals`) | 30 s × 2ⁿ up to 32 min | an offline target costs little |
//! | unanswered pushes per source (`max_inbound_per_source`) | 16 | past it, `BUSY` |
//! | bytes per source (`quota_bytes` per `quota_window`) | 64 MiB per 60 s, token bucket | a stranger cannot fill the disk at line rate |
//! | sources with quota state (`max_sources`) | 4,096 | the bucket map is bounded; idle full buckets are dropped first |
//! | frame size (`max_frame_bytes`) | [`DEFAULT_MAX_FRAME_BYTES`](crate::wire::DEFAULT_MAX_FRAME_BYTES) | a push of head blocks that does not fit sends fewer; the target backfills the rest |
//!
//! # Loss, duplication, hostile peers
//!
//! A lost push or ack times out and is retried; a duplicated push is ingested twice, which
//! the merge makes a no-op, and acknowledged twice, the second ack being for no push in
//! flight ([`Violation::UnexpectedAck`], counted but harmless). A push whose blocks do not
//! verify or belong to another document is answered `REJECTED` and reported as
//! [`Event::PeerMisbehaved`].

mod core;

pub use self::core::{
    Config, Event, Failure, InboundId, PushError, PushId, Refusal, Replicator, Stats, Status,
    Transmit, Violation,
};

#[cfg(test)]
mod tests;
