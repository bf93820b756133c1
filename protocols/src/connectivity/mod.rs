//! Connectivity: keep the wanted peers connected, find the providers of what the node
//! follows, and stay reachable from behind a NAT.
//!
//! The core decides and a driver executes: the node with libp2p (swarm dials, Kademlia,
//! circuit relay v2, DCUtR, AutoNAT), the simulator in its network model. It holds no
//! connection and sends no byte; its outputs are [`Command`]s.
//!
//! - **Wanted peers.** The set the node "wants to stay connected to" (DESIGN.md §4): peers
//!   configured with `--peers`, replicator targets, peers the coordinator remembers from
//!   earlier connections (inbound ones included), and DHT providers. Each is wanted for one
//!   or more [`Reason`]s. A wanted peer that is not connected is dialed at once, then redialed
//!   with exponential backoff. Configured and replicator peers are redialed forever;
//!   remembered peers and providers are *best effort*, forgotten after a number of failed dials
//!   in a row.
//! - **Providers.** A followed key (a collection or a shard topic) is provided, and its
//!   providers looked up, when it is followed and at every refresh; the coordinator also looks
//!   keys up once when it publishes or needs blocks, at most once per lookup interval per key.
//!   Providers found become wanted peers.
//! - **Relays and hole punching.** While the node is private it keeps reservations on a few
//!   known relays, moving to another relay when one is lost; when it becomes public it cancels
//!   them. A peer that reaches the node over a relay is asked for a hole punch, which upgrades
//!   the connection to a direct one where both NATs allow it.
//!
//! # Driving it
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use hypha_protocols::connectivity::{Command, Config, Connectivity, Reason};
//!
//! let mut core = Connectivity::<u16>::new(Config::default(), 42);
//! let now = Instant::now(); // the driver's clock; the core never reads one
//! core.want(7, vec![b"/ip4/10.0.0.7/tcp/9171".to_vec()], Reason::Configured, now);
//! while let Some(command) = core.poll_command() {
//!     if let Command::Dial { peer, .. } = command {
//!         // The driver dials; here the dial fails at once.
//!         core.handle_dial_failed(peer, now);
//!     }
//! }
//! // The redial is due after backoff_min (1 s) ± 20 %.
//! let at = core.poll_timeout().expect("a redial is scheduled");
//! assert!(at >= now + Duration::from_millis(800) && at <= now + Duration::from_millis(1200));
//! core.handle_timeout(at);
//! assert!(matches!(core.poll_command(), Some(Command::Dial { peer: 7, .. })));
//! ```
//!
//! # Redial with backoff
//!
//! ```text
//!                   slot free: emit Dial
//!  want() ─▶ Due(t) ─────────────────────▶ InFlight ── handle_connected ──▶ Connected
//!              ▲                              │                           failures = 0
//!              │          handle_dial_failed, │                           b = backoff_min
//!              │      or dial_timeout passes  ▼                               │
//!              │                        failures += 1                         │
//!              │                              │ best effort and               │
//!              │                              ├─ failures = max_attempts ─▶ given up
//!              │                              ▼                           (forgotten)
//!              └── t = now + b ± 20 %, then b = min(2b, backoff_max) ◀────────┘
//!                                                             handle_disconnected
//! ```
//!
//! With the defaults, a peer that keeps failing is redialed after about 1, 2, 4 … 256 s,
//! then every 5 min: forever if configured or a replicator target, or until the 8th failure
//! (after about two minutes of waits) if best effort. A connection resets the backoff, so
//! after a disconnection the first redial comes after about 1 s. Dials wait for one of
//! `max_dials_in_flight` slots, the longest waiting first.
//!
//! # Relay reservation and hole-punch upgrade
//!
//! ```text
//!  this node (private)                 relay R                         peer X
//!    │ handle_reachability(Private)       │                               │
//!    │ ReserveRelay { R } ───────────────▶│ (on up to max_relays relays,  │
//!    │◀─── handle_relay_reserved(R) ──────│  connected ones first)        │
//!    │                                    │◀──── X dials the circuit ─────│
//!    │◀════════════ relayed connection ═══╪═══════════════════════════════│
//!    │ handle_connected(X, Relayed { R }, inbound)                        │
//!    │ HolePunch { X } ─────── synchronised direct dials (DCUtR) ────────▶│
//!    │◀════════════════════ direct connection ═══════════════════════════▶│
//!    │ handle_hole_punch(X, true): path Direct                            │
//!    │                                                                    │
//!    │ handle_hole_punch(X, false): stays relayed; one more HolePunch after backoff_max,
//!    │   then none while this connection lasts
//!    │ handle_relay_failed(R) or handle_disconnected(R): ReserveRelay on another relay
//!    │   at once, R again after its backoff
//!    │ handle_reachability(Public): CancelReservation on every relay
//! ```
//!
//! As in DCUtR, the side that accepted the relayed connection starts the hole punch, so one
//! relayed connection yields one [`Command::HolePunch`], not two. The node's DCUtR punches on
//! its own and may ignore the command (it still reports the outcome); the simulator executes
//! it. A peer that can only be reached through a relay is dialed at its relayed address:
//! addresses are opaque to the core, so it needs no separate command for that.
//!
//! # Bounds and defaults ([`Config`])
//!
//! | bound | default | why |
//! |---|---|---|
//! | first and shortest redial wait (`backoff_min`) | 1 s | a dropped connection comes back quickly |
//! | longest redial wait (`backoff_max`) | 5 min | an unreachable peer costs one dial per 5 min; also the wait before the one hole-punch retry |
//! | jitter on every wait | ±20 % | peers that failed together do not redial together |
//! | failed dials before a best-effort peer is forgotten (`max_attempts_best_effort`) | 8 | about two minutes of waits (1 + 2 + … + 64 s): enough for a restart, not for a peer gone for good |
//! | wanted peers (`max_wanted`) | 1,024 | past it best-effort wants are refused; configured and replicator wants evict a best-effort peer, or fit anyway |
//! | dials in flight (`max_dials_in_flight`) | 16 | a restart with many wanted peers does not dial them all at once |
//! | dial, reservation and hole-punch timeout (`dial_timeout`) | 30 s | an unanswered attempt counts as failed |
//! | provide and lookup refresh of followed keys (`provider_refresh`) | 10 min | provider records stay fresh, new providers are found |
//! | shortest time between one-off lookups of a key (`lookup_interval`) | 30 s | publishing in a burst costs one DHT walk, not one per commit |
//! | followed keys, and remembered lookups (`max_keys`) | 1,024 | each costs a refresh |
//! | providers wanted per lookup (`max_providers_per_lookup`) | 20 | Kademlia's replication factor; a hostile DHT answer cannot fill the wanted set |
//! | reservations kept while private (`max_relays`) | 2 | one relay may fail without the node becoming unreachable |
//! | known relays (`max_known_relays`) | 32 | relay-capable peers found are many; a few suffice |
//! | addresses per peer (`max_addresses_per_peer`) | 32 | the most recently learnt are kept |
//! | address length (`max_address_bytes`) | 512 B | a relayed multiaddr with two peer IDs and a DNS name fits |
//! | queued commands (`max_queued_commands`) | 4,096 | past it decisions wait for room and [`Connectivity::poll_timeout`] says come back at once |
//!
//! Connections are tracked as the driver reports them, one entry per connected peer, so the
//! driver's connection limit bounds them.
//!
//! # Loss, duplication, restarts
//!
//! Every attempt the driver never answers times out after `dial_timeout` and counts as
//! failed; an answer that comes after that, or twice, is ignored. A repeated `want` changes
//! nothing, so it cannot cut a backoff short; one that brings a new reason or address dials at
//! once. The core keeps no durable state: after a restart the coordinator wants its peers
//! and follows its keys again.

mod core;

pub use self::core::{Address, Command, Config, Connectivity, Path, Reachability, Reason, Stats};

#[cfg(test)]
mod tests;
