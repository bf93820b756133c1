//! The `hypha` node — not built yet.
//!
//! This crate will hold the `hypha` binary: a libp2p swarm, the redb store, the HTTP API and
//! the client CLI (see DESIGN.md §5). Until then the README's run command runs the
//! `two_replicas` example of `hypha-crdt`.
//!
//! Today it is an empty crate: it exists so the workspace has its final shape. Nothing here
//! works yet, and nothing pretends to.
