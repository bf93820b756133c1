// Automatically generated mod.rs
pub mod backfill;
pub mod head_sync;
pub mod pubsub;
pub mod replicator;
