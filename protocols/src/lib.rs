//! Hypha's replication protocols as sans-IO state machines — not built yet.
//!
//! This crate will hold the cores that the simulator and the node both drive (see DESIGN.md
//! §4): the wire framing, connectivity, passive replication over pubsub, active replication
//! (replicator push/ack), DAG backfill, head exchange, and `node.rs`, the coordinator that ties
//! them together; with the `libp2p` feature, thin `NetworkBehaviour`s around them.
//!
//! Today it is an empty crate: it exists so the workspace has its final shape. Nothing here
//! works yet, and nothing pretends to.
