//! Hypha's deterministic network simulator.

mod builtin;
mod check;
mod log;
mod net;
mod rng;
mod scenario;
pub mod sweep;
mod world;

pub use builtin::{BUILTIN, builtin};
pub use check::{Checker, Violation};
pub use log::EventLog;
pub use net::{HostSpec, Nat, Traffic};
pub use scenario::{Outcome, Scenario, ScenarioError, parse_duration};
pub use world::{NotQuiescent, Options, PartitionMode, World};
