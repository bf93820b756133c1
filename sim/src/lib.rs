//! Hypha's deterministic network simulator — not built yet.
//!
//! This crate will run many Hypha nodes as turmoil hosts under partitions, crashes, offline
//! periods and NAT, reproducibly from one seed, with checkers for convergence, durability and
//! replication scope (see DESIGN.md §6 and SCENARIOS.md), and the `hypha-sim` binary.
//!
//! Today it is an empty crate: it exists so the workspace has its final shape. Nothing here
//! works yet, and nothing pretends to.
