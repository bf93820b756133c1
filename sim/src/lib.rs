//! Hypha's deterministic network simulator: many Hypha nodes as [turmoil] hosts, under
//! partitions, crashes, offline periods and NAT, reproducible from one seed.
//!
//! ```sh
//! hypha-sim list                          # the built-in scenarios
//! hypha-sim run A11 --seed 7 [--trace]    # one scenario: timeline and report
//! hypha-sim sweep --seeds 1..200          # random topologies, workloads and fault schedules
//! ```
//!
//! # The model
//!
//! - **Hosts.** Each host is a turmoil host running Hypha's real coordinator
//!   ([`hypha_protocols::node::Node`], peers numbered `u16`) over a memory store
//!   ([`hypha_store::Store::memory`]). Its software (`net::software`) listens on turmoil TCP,
//!   runs the coordinator's timer, executes its commands and feeds it what arrives. Every
//!   core's seed derives from the run's seed, the host number and its incarnation. Time is
//!   turmoil's: the coordinators get a fixed base instant plus turmoil's virtual elapsed time,
//!   never a wall clock.
//! - **Transport.** One turmoil TCP connection per pair of hosts carries every stream
//!   protocol (backfill, replicator, head exchange) and gossip, as records
//!   `len u32 ‖ kind u8 ‖ body`, the kind naming the protocol: the coordinator's frames travel
//!   unchanged. A handshake names the dialer; when two hosts dial each other at once, the
//!   connection dialed by the lower-numbered host wins. Turmoil's TCP does not retransmit, so
//!   a segment dropped by a partition stalls the stream for good: hosts send a keepalive every
//!   5 s and close a connection silent for 20 s (the role libp2p's ping plays in the node); the
//!   coordinator's connectivity core then redials with backoff.
//! - **Links.** Latency is drawn per message between [`Options::latency`] bounds (default
//!   1–10 ms) and quantised to turmoil's tick ([`Options::tick`], default 10 ms). A held
//!   partition ([`PartitionMode::Hold`]) stalls traffic and delivers it on heal; a dropping one
//!   ([`PartitionMode::Drop`]) loses it (a burst of loss: the connections time out); a one-way
//!   one ([`PartitionMode::OneWay`]) drops one direction. `concurrently` in a scenario is a held
//!   partition of every host from every other. Swizzle-clogging (sweeps) holds one host's
//!   links one by one and releases them in a random order.
//! - **Durability.** A [`Command::Persist`](hypha_protocols::node::Command::Persist) waits in
//!   the host's disk queue for a simulated fsync (default 2–20 ms, in order) before it is
//!   committed to the store and its result given to the coordinator. A crash
//!   ([`World::crash`]) drops the host's turmoil runtime and its disk queue: unsynced writes
//!   are lost, and whatever was acknowledged was already in the store. A clean stop
//!   ([`World::stop`]) lets the queue drain first. Restarts build a new coordinator over the
//!   same store. A persist the coordinator wants reported once only *visible* (a received
//!   block) waits for the fsync too: the memory store cannot lose a visible commit in a crash,
//!   so the simulator never shows one early (the store's own tests cover that window).
//! - **Gossip (the stand-in for gossipsub).** A publish goes to every connected host that
//!   joined the topic; a receiver hands it to its coordinator and, on an `Accept` verdict,
//!   forwards it to its own connected hosts on the topic. Duplicates are suppressed by
//!   (topic, message id), remembering the last 65,536 ids per host. Who joined which topic is
//!   read from the other hosts directly: gossipsub's subscription announcements, mesh
//!   maintenance and scoring are not modelled.
//! - **DHT.** A provider lookup finds the hosts providing the key among those reachable from
//!   the asker over live connections.
//! - **NAT.** Each host is [`Nat::Public`], [`Nat::Cone`] or [`Nat::Symmetric`]. A NATed host
//!   refuses direct dials; it learns the scenario's relay hosts at boot, is told it is private,
//!   and keeps a reservation on a relay (its coordinator issues `ReserveRelay`). Others reach it
//!   through its relayed address: records cross two links (dialer → relay → target), so a
//!   partition of the relay cuts them. The side that accepted a relayed connection asks for a
//!   hole punch; it succeeds (a direct connection replaces the circuit) when neither side is
//!   symmetric (cone–cone, cone–public), and fails otherwise, leaving the circuit in place.
//!   A relay that goes down takes its circuits with it at once.
//!
//! # Checkers
//!
//! Judged against an independent model of who follows, wrote, synced and replicates what,
//! built from the actions taken (see [`Checker`]): no acknowledged write lost (local writes
//! and replicator acknowledgements), nothing owed to an offline replicator target forgotten,
//! nothing held where nothing entitles it, every outbox and disk queue within bounds — after
//! every scenario step, crash, stop and wait — and convergence after a wait with the network
//! healed. Each is shown able to fail: the tests switch on
//! [`Faults`](hypha_protocols::node::Faults) (`follow_everything`, `ignore_replicator_scope`,
//! `ack_before_persist`, `drop_outbox_on_restart`) and the sweep catches each within a few
//! seeds.
//!
//! # Quiescence
//!
//! [`World::wait`] is SCENARIOS.md's `wait`: every running host idle (no persists, fetches,
//! pushes or head-exchange sessions in flight), its disk queue, outboxes and pending set empty,
//! every running peer it wants connected (when no partition is in force), the network silent
//! for [`Options::quiet`] (500 ms), and an anti-entropy round completed on every running host
//! since the wait began. It fails with [`NotQuiescent`] past [`Options::wait_budget`].
//!
//! # Bounds and defaults
//!
//! | bound | default |
//! |---|---|
//! | record size | the wire's frame cap plus 1 KiB, checked before allocating |
//! | bytes queued per connection | 64 MiB (past it the connection is closed as too slow) |
//! | gossip ids remembered per host | 65,536 |
//! | connect and handshake timeout | 5 s |
//! | keepalive, idle timeout | 5 s, 20 s |
//! | a wait's virtual time ([`Options::wait_budget`]) | 6 h (sweeps: 2 h) |
//! | a write's wait for its fsync | 60 s of virtual time |
//! | event-log lines kept (all are hashed) | 2,000 (all with `--trace`) |
//! | anti-entropy interval ([`Options::anti_entropy`]) | 15 s (the node's default is 60 s; scenarios may set it) |
//! | hosts per scenario | 1–64 |
//!
//! # Determinism
//!
//! Everything random comes from the seed (turmoil's network through `Builder::rng_seed`, the
//! cores, the disk, the sweeps' draws); hosts run one at a time on one thread; every map is
//! ordered; every `select!` is biased. The event log records each delivery, persist,
//! connection and coordinator event with its virtual time; its hash ([`EventLog::hash`]) is
//! the same for every run of a seed (`--check-determinism`, and the determinism tests).
//!
//! # Limits
//!
//! Hosts speak Hypha's frames over turmoil TCP, not libp2p: the real Swarm (noise, yamux,
//! gossipsub, Kademlia, relay v2, DCUtR) is not deterministic under turmoil and is replaced by
//! the models above. Turmoil advances in fixed ticks, so simulated time costs wall time even
//! when idle; the 24-hour offline scenario uses 0.5 s ticks.
//!
//! Coordinator bugs the sweeps found and that are not fixed yet are ignored tests in
//! `tests/known_issues.rs`, each with the seed or scenario that shows it.
//!
//! [turmoil]: https://docs.rs/turmoil

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
