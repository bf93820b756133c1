//! Hypha's deterministic network simulator.
//!
//! (Crate docs are completed below the module list.)

mod check;
mod log;
mod net;
mod rng;
mod world;

pub use check::{Checker, Violation};
pub use log::EventLog;
pub use net::{HostSpec, Nat, Traffic};
pub use world::{NotQuiescent, Options, PartitionMode, World};
