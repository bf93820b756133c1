// Automatically generated mod.rs
pub mod backfill;
pub mod pubsub;
pub mod replicator;
