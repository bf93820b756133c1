//! The sans-IO connectivity state machine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::clock::Monotonic;
use crate::rng::SplitMix64;

/// A peer's address, opaque to the core: multiaddr bytes in the node, whatever the network
/// model uses in the simulator (a relayed address included: the core never looks inside).
pub type Address = Vec<u8>;

/// Why a peer is wanted. A peer may be wanted for several reasons at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Named by the operator (`--peers`, `p2p connect`): redialed forever.
    Configured,
    /// A replicator target: redialed forever.
    Replicator,
    /// Remembered from an earlier connection, inbound ones included: best effort.
    Remembered,
    /// A DHT provider of a key the node follows or looked up: best effort.
    Provider,
}

impl Reason {
    /// Whether a peer wanted for this reason alone is given up after
    /// [`Config::with_max_attempts_best_effort`] failed dials in a row, and may be refused or
    /// evicted when the wanted set is full.
    pub fn is_best_effort(self) -> bool {
        matches!(self, Reason::Remembered | Reason::Provider)
    }
}

/// How a connection reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path<P> {
    /// A direct connection.
    Direct,
    /// A circuit through `relay`; hole punching may upgrade it to [`Path::Direct`].
    Relayed {
        /// The relay carrying the circuit.
        relay: P,
    },
}

/// Whether other nodes can dial this one directly (AutoNAT in the node, the NAT model in the
/// simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reachability {
    /// Behind a NAT or firewall: keep relay reservations.
    Private,
    /// Publicly dialable: no reservations needed.
    Public,
    /// Not known yet: keep the reservations there are, make no new ones.
    Unknown,
}

/// A decision for the driver to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<P> {
    /// Drop the reservation on `relay` (or the request for one).
    CancelReservation {
        /// The relay.
        relay: P,
    },
    /// Dial `peer`, trying `addresses` (most recently learnt first); when empty, use what the
    /// driver knows (peer store, DHT). Answer with [`Connectivity::handle_connected`] or
    /// [`Connectivity::handle_dial_failed`].
    Dial {
        /// The peer.
        peer: P,
        /// Its known addresses.
        addresses: Vec<Address>,
    },
    /// Ask the DHT for providers of `key`; answer with [`Connectivity::handle_providers`].
    FindProviders {
        /// A collection or shard key.
        key: Vec<u8>,
    },
    /// Try to upgrade the relayed connection with `peer` to a direct one; answer with
    /// [`Connectivity::handle_hole_punch`]. The node's DCUtR does this on its own and may
    /// ignore it; the simulator's network model executes it.
    HolePunch {
        /// The peer.
        peer: P,
    },
    /// Announce this node in the DHT as a provider of `key`.
    Provide {
        /// A collection or shard key.
        key: Vec<u8>,
    },
    /// Reserve a slot on `relay` so that other peers can reach this node through it; answer with [`Connectivity::handle_relay_reserved`] or
    /// [`Connectivity::handle_relay_failed`].
    ReserveRelay {
        /// The relay.
        relay: P,
        /// Its known addresses.
        addresses: Vec<Address>,
    },
    /// Stop announcing this node as a provider of `key`.
    StopProviding {
        /// A collection or shard key.
        key: Vec<u8>,
    },
}

/// Counters since the core was created, and gauges of its present state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Gauge: peers connected (whether wanted or not).
    pub connected: usize,
    /// Gauge: dials in flight.
    pub dials_in_flight: usize,
    /// Gauge: commands waiting in [`Connectivity::poll_command`].
    pub queued_commands: usize,
    /// Gauge: relays holding a reservation for this node.
    pub reserved_relays: usize,
    /// Gauge: peers in the wanted set.
    pub wanted: usize,

    /// [`Command::Dial`]s emitted.
    pub dials: u64,
    /// Dials that failed or timed out.
    pub dial_failures: u64,
    /// Dials that timed out (also counted in `dial_failures`).
    pub dial_timeouts: u64,
    /// Best-effort peers evicted from a full wanted set to make room for a configured or
    /// replicator peer.
    pub evicted: u64,
    /// [`Command::FindProviders`] emitted.
    pub finds: u64,
    /// One-off lookups refused by the rate limit or the bound on remembered lookups.
    pub finds_limited: u64,
    /// Follows refused because [`Config::with_max_keys`] keys are followed.
    pub follows_refused: u64,
    /// Best-effort peers given up after too many failed dials in a row.
    pub given_up: u64,
    /// [`Command::HolePunch`]es emitted.
    pub hole_punches: u64,
    /// Hole punches reported failed (or unanswered within the dial timeout).
    pub hole_punches_failed: u64,
    /// Hole punches reported successful.
    pub hole_punches_ok: u64,
    /// Providers not wanted: past the per-lookup cap, or for a key not looked up.
    pub providers_ignored: u64,
    /// [`Command::Provide`]s emitted.
    pub provides: u64,
    /// Dials of a peer after a failed dial or a disconnection (also counted in `dials`).
    pub redials: u64,
    /// Relays refused because [`Config::with_max_known_relays`] are known.
    pub relays_refused: u64,
    /// [`Command::CancelReservation`]s emitted.
    pub reservations_cancelled: u64,
    /// Reservations that failed, timed out or were lost with their relay's connection.
    pub reservations_failed: u64,
    /// Reservations reported made.
    pub reservations_ok: u64,
    /// [`Command::ReserveRelay`]s emitted.
    pub reservations_requested: u64,
    /// Best-effort wants refused because the wanted set was full.
    pub wants_refused: u64,
}

/// Bounds, backoffs and timeouts; see the module docs for the defaults and why.
#[derive(Debug, Clone)]
pub struct Config {
    backoff_min: Duration,
    backoff_max: Duration,
    max_attempts_best_effort: u32,
    max_wanted: usize,
    max_dials_in_flight: usize,
    dial_timeout: Duration,
    provider_refresh: Duration,
    lookup_interval: Duration,
    max_keys: usize,
    max_providers_per_lookup: usize,
    max_relays: usize,
    max_known_relays: usize,
    max_addresses_per_peer: usize,
    max_address_bytes: usize,
    max_queued_commands: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            max_attempts_best_effort: 8,
            max_wanted: 1024,
            max_dials_in_flight: 16,
            dial_timeout: Duration::from_secs(30),
            provider_refresh: Duration::from_secs(10 * 60),
            lookup_interval: Duration::from_secs(30),
            max_keys: 1024,
            max_providers_per_lookup: 20,
            max_relays: 2,
            max_known_relays: 32,
            max_addresses_per_peer: 32,
            max_address_bytes: 512,
            max_queued_commands: 4096,
        }
    }
}

impl Config {
    /// The first wait before a redial, and the wait after a disconnection; it doubles with
    /// every failed dial in a row up to [`with_backoff_max`](Config::with_backoff_max), and
    /// every wait is jittered by ±20 %. Default 1 s.
    pub fn with_backoff_min(mut self, backoff: Duration) -> Config {
        self.backoff_min = backoff;
        self
    }

    /// The longest wait between redials (before jitter); raised to
    /// [`with_backoff_min`](Config::with_backoff_min) if below it. Also the wait before the
    /// one retry of a failed hole punch. Default 5 min.
    pub fn with_backoff_max(mut self, backoff: Duration) -> Config {
        self.backoff_max = backoff;
        self
    }

    /// Failed dials in a row after which a peer wanted only for best-effort reasons
    /// ([`Reason::is_best_effort`]) is forgotten. At least 1. Default 8 (with the default
    /// backoff, about two minutes of waits between dials).
    pub fn with_max_attempts_best_effort(mut self, n: u32) -> Config {
        self.max_attempts_best_effort = n.max(1);
        self
    }

    /// Most peers in the wanted set; past it best-effort wants are refused, and a configured
    /// or replicator want evicts a best-effort peer (or, if there is none, still fits).
    /// At least 1. Default 1,024.
    pub fn with_max_wanted(mut self, n: usize) -> Config {
        self.max_wanted = n.max(1);
        self
    }

    /// Most dials in flight; due dials wait for a free slot. At least 1. Default 16.
    pub fn with_max_dials_in_flight(mut self, n: usize) -> Config {
        self.max_dials_in_flight = n.max(1);
        self
    }

    /// How long a dial, a reservation request or a hole punch may go unanswered before it
    /// counts as failed. Default 30 s.
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Config {
        self.dial_timeout = timeout;
        self
    }

    /// How often a followed key is provided and looked up again. Default 10 min.
    pub fn with_provider_refresh(mut self, interval: Duration) -> Config {
        self.provider_refresh = interval;
        self
    }

    /// The shortest time between two lookups of one key by
    /// [`Connectivity::find_providers`]. Default 30 s.
    pub fn with_lookup_interval(mut self, interval: Duration) -> Config {
        self.lookup_interval = interval;
        self
    }

    /// Most keys followed, and most keys whose last lookup is remembered. At least 1.
    /// Default 1,024.
    pub fn with_max_keys(mut self, n: usize) -> Config {
        self.max_keys = n.max(1);
        self
    }

    /// Most providers wanted from one lookup, however many answers the driver reports.
    /// Default 20 (Kademlia's replication factor).
    pub fn with_max_providers_per_lookup(mut self, n: usize) -> Config {
        self.max_providers_per_lookup = n;
        self
    }

    /// How many relays a private node keeps a reservation on; 0 turns reservations off.
    /// Default 2.
    pub fn with_max_relays(mut self, n: usize) -> Config {
        self.max_relays = n;
        self
    }

    /// Most relays known; past it [`Connectivity::add_relay`] refuses new ones. Default 32.
    pub fn with_max_known_relays(mut self, n: usize) -> Config {
        self.max_known_relays = n;
        self
    }

    /// Most addresses kept per peer or relay, the most recently learnt first. At least 1.
    /// Default 32.
    pub fn with_max_addresses_per_peer(mut self, n: usize) -> Config {
        self.max_addresses_per_peer = n.max(1);
        self
    }

    /// Longest address kept; longer ones are dropped. Default 512 bytes (a relayed multiaddr
    /// with two peer IDs and a DNS name fits).
    pub fn with_max_address_bytes(mut self, n: usize) -> Config {
        self.max_address_bytes = n;
        self
    }

    /// Most commands waiting in [`Connectivity::poll_command`]; past it decisions wait for
    /// room (see [`Connectivity::poll_timeout`]). At least 2. Default 4,096.
    pub fn with_max_queued_commands(mut self, n: usize) -> Config {
        self.max_queued_commands = n.max(2);
        self
    }
}

/// Keeps the wanted peers connected, finds providers of followed keys, and keeps relay
/// reservations while the node is private.
///
/// # Driving it
///
/// Commands are [`want`](Connectivity::want), [`unwant`](Connectivity::unwant),
/// [`follow`](Connectivity::follow), [`unfollow`](Connectivity::unfollow),
/// [`find_providers`](Connectivity::find_providers) and
/// [`add_relay`](Connectivity::add_relay); inputs are the `handle_*` methods, each with the
/// current time. After every command or input, drain
/// [`poll_command`](Connectivity::poll_command) and execute what it returns, then re-arm the
/// timer at [`poll_timeout`](Connectivity::poll_timeout) and call
/// [`handle_timeout`](Connectivity::handle_timeout) when it fires. Commands come out in a
/// deterministic order: within one input, a one-off lookup, then releases (stop providing,
/// cancel reservations), dials, reservations, hole punches and refreshes.
///
/// # Panics
///
/// When time goes backwards between inputs.
pub struct Connectivity<P> {
    config: Config,
    rng: SplitMix64,
    wanted: BTreeMap<P, Wanted>,
    connections: BTreeMap<P, Connection<P>>,
    relays: BTreeMap<P, Relay>,
    reachability: Reachability,
    /// Followed keys, with the time of their next provide and lookup.
    follows: BTreeMap<Vec<u8>, Instant>,
    /// Unfollowed keys whose `StopProviding` waits for room in the queue.
    stopping: BTreeSet<Vec<u8>>,
    lookups: BTreeMap<Vec<u8>, Lookup>,
    commands: VecDeque<Command<P>>,
    /// Set when a decision waited for room in the queue: the driver should come back at once.
    starved: bool,
    stats: Stats,
    clock: Monotonic,
}

impl<P: Copy + Ord + fmt::Debug> Connectivity<P> {
    /// A core with `config`; `seed` drives the backoff jitter, so one seed gives one sequence
    /// of commands and timeouts.
    pub fn new(mut config: Config, seed: u64) -> Connectivity<P> {
        config.backoff_max = config.backoff_max.max(config.backoff_min);
        Connectivity {
            config,
            rng: SplitMix64::new(seed),
            wanted: BTreeMap::new(),
            connections: BTreeMap::new(),
            relays: BTreeMap::new(),
            reachability: Reachability::Unknown,
            follows: BTreeMap::new(),
            stopping: BTreeSet::new(),
            lookups: BTreeMap::new(),
            commands: VecDeque::new(),
            starved: false,
            stats: Stats::default(),
            clock: Monotonic::default(),
        }
    }

    /// Wants `peer` connected for `reason`, at `addresses` (added to those known, most recent
    /// first). A peer neither connected nor being dialed is dialed at once when it is new to
    /// the set, or when the want brings a new reason or address; a repeated want changes
    /// nothing, so it cannot cut a backoff short.
    ///
    /// Returns `false` when the want is refused: a best-effort `reason` for a peer not yet
    /// wanted while [`Config::with_max_wanted`] peers are. A configured or replicator want
    /// always fits; when the set is full it evicts the best-effort peer least worth keeping
    /// (not connected, most failed dials).
    pub fn want(&mut self, peer: P, addresses: Vec<Address>, reason: Reason, now: Instant) -> bool {
        self.advance(now);
        let connected = self.connections.contains_key(&peer);
        let (max_count, max_bytes) = (
            self.config.max_addresses_per_peer,
            self.config.max_address_bytes,
        );
        let admitted = if let Some(wanted) = self.wanted.get_mut(&peer) {
            let new_reason = wanted.reasons.insert(reason);
            let new_address = merge(&mut wanted.addresses, addresses, max_count, max_bytes);
            let waiting = matches!(wanted.dial, DialState::Due(_));
            if (new_reason || new_address) && waiting {
                wanted.dial = DialState::Due(now);
            }
            true
        } else if self.make_room(reason) {
            let mut known = Vec::new();
            merge(&mut known, addresses, max_count, max_bytes);
            let dial = if connected {
                DialState::Idle
            } else {
                DialState::Due(now)
            };
            let wanted = Wanted {
                reasons: BTreeSet::from([reason]),
                addresses: known,
                failures: 0,
                backoff: self.config.backoff_min,
                dial,
                redial: false,
            };
            self.wanted.insert(peer, wanted);
            true
        } else {
            self.stats.wants_refused += 1;
            false
        };
        self.drive(now);
        admitted
    }

    /// No longer wants `peer` for `reason`. With no reason left it leaves the set (a dial not
    /// yet polled is withdrawn, one in flight is forgotten, and the connection, if any, is
    /// left to the driver); so does a
    /// peer left with best-effort reasons only while configured and replicator peers hold
    /// the set past [`Config::with_max_wanted`].
    pub fn unwant(&mut self, peer: P, reason: Reason, now: Instant) {
        self.advance(now);
        let over = self.wanted.len() > self.config.max_wanted;
        if let Some(wanted) = self.wanted.get_mut(&peer) {
            wanted.reasons.remove(&reason);
            if wanted.reasons.is_empty() {
                self.forget(peer);
            } else if over && wanted.is_best_effort() {
                self.forget(peer);
                self.stats.evicted += 1;
            }
        }
        self.drive(now);
    }

    /// Follows a provider `key` (a collection or shard topic): provides it and looks up its
    /// providers now and every [`Config::with_provider_refresh`]. Following a followed key
    /// does nothing.
    ///
    /// Returns `false` when [`Config::with_max_keys`] keys are followed.
    pub fn follow(&mut self, key: Vec<u8>, now: Instant) -> bool {
        self.advance(now);
        let followed = if self.follows.contains_key(&key) {
            true
        } else if self.stopping.remove(&key) {
            // Its StopProviding was never emitted: the record simply stays.
            self.follows.insert(key, now);
            true
        } else if self.follows.len() + self.stopping.len() < self.config.max_keys {
            self.follows.insert(key, now);
            true
        } else {
            self.stats.follows_refused += 1;
            false
        };
        self.drive(now);
        followed
    }

    /// Stops following `key`: emits [`Command::StopProviding`] and ends its refreshes.
    pub fn unfollow(&mut self, key: &[u8], now: Instant) {
        self.advance(now);
        if let Some((key, _)) = self.follows.remove_entry(key) {
            self.stopping.insert(key);
        }
        self.drive(now);
    }

    /// Looks up the providers of `key` once (the node publishes to it, or needs blocks of
    /// it); the providers found become wanted with [`Reason::Provider`].
    ///
    /// Returns `false`, emitting nothing, when `key` was looked up less than
    /// [`Config::with_lookup_interval`] ago (a followed key's refresh counts), when
    /// [`Config::with_max_keys`] recent lookups are remembered, or when the command queue is
    /// full.
    pub fn find_providers(&mut self, key: Vec<u8>, now: Instant) -> bool {
        self.advance(now);
        let interval = self.config.lookup_interval;
        let recent = self
            .lookups
            .get(&key)
            .is_some_and(|l| now < l.at + interval);
        let found = !recent && self.has_room() && self.remember_lookup(&key, now, false);
        if found {
            self.stats.finds += 1;
            self.commands.push_back(Command::FindProviders { key });
        } else {
            self.stats.finds_limited += 1;
        }
        self.drive(now);
        found
    }

    /// Knows `relay` as a circuit relay (a `--relay-addr` relay, or a relay-capable peer
    /// found); while the node is private it may reserve a slot on it. Knowing it already adds
    /// the addresses.
    ///
    /// Returns `false` when [`Config::with_max_known_relays`] relays are known.
    pub fn add_relay(&mut self, relay: P, addresses: Vec<Address>, now: Instant) -> bool {
        self.advance(now);
        let (max_count, max_bytes) = (
            self.config.max_addresses_per_peer,
            self.config.max_address_bytes,
        );
        let added = if let Some(known) = self.relays.get_mut(&relay) {
            merge(&mut known.addresses, addresses, max_count, max_bytes);
            true
        } else if self.relays.len() < self.config.max_known_relays {
            let mut known = Vec::new();
            merge(&mut known, addresses, max_count, max_bytes);
            let state = Relay {
                addresses: known,
                failures: 0,
                backoff: self.config.backoff_min,
                reservation: Reservation::None { retry_at: None },
            };
            self.relays.insert(relay, state);
            true
        } else {
            self.stats.relays_refused += 1;
            false
        };
        self.drive(now);
        added
    }

    /// `peer` is connected over `path`; `inbound` when it dialed this node.
    ///
    /// Ends any dial of it and resets its backoff. It does not make the peer wanted: the
    /// coordinator decides what to remember and says so with [`want`](Connectivity::want). A
    /// peer that reached this node over a relay is sent one [`Command::HolePunch`] (as in
    /// DCUtR, the side that accepted the relayed connection starts the upgrade). Reported
    /// again with [`Path::Direct`], a relayed peer's path is upgraded; a relayed report never
    /// downgrades a direct path.
    pub fn handle_connected(&mut self, peer: P, path: Path<P>, inbound: bool, now: Instant) {
        self.advance(now);
        let punch = match path {
            Path::Relayed { .. } if inbound => Punch::Due {
                at: now,
                retry: false,
            },
            _ => Punch::Idle,
        };
        match self.connections.get_mut(&peer) {
            Some(connection) => match (connection.path, path) {
                (_, Path::Direct) => *connection = Connection { path, punch },
                (Path::Relayed { .. }, Path::Relayed { .. }) => connection.path = path,
                (Path::Direct, Path::Relayed { .. }) => {}
            },
            None => {
                self.connections.insert(peer, Connection { path, punch });
            }
        }
        if let Some(wanted) = self.wanted.get_mut(&peer) {
            wanted.failures = 0;
            wanted.backoff = self.config.backoff_min;
            wanted.dial = DialState::Idle;
            wanted.redial = false;
        }
        self.drive(now);
    }

    /// `peer`'s last connection closed. A wanted peer is redialed after its backoff (after a
    /// connection, [`Config::with_backoff_min`] with jitter); a reservation on it as a relay
    /// is lost and made elsewhere.
    pub fn handle_disconnected(&mut self, peer: P, now: Instant) {
        self.advance(now);
        if self.connections.remove(&peer).is_some()
            && self
                .wanted
                .get(&peer)
                .is_some_and(|w| w.dial == DialState::Idle)
        {
            self.schedule_redial(peer, now);
        }
        if self
            .relays
            .get(&peer)
            .is_some_and(|r| r.reservation.is_active())
        {
            self.relay_lost(peer, now);
        }
        self.drive(now);
    }

    /// A dial of `peer` failed. The next waits twice as long, up to
    /// [`Config::with_backoff_max`]; a best-effort peer is given up after
    /// [`Config::with_max_attempts_best_effort`] failures in a row. A failure of a dial the
    /// core has no dial in flight for (the driver's own, or one that already timed out) is
    /// ignored.
    pub fn handle_dial_failed(&mut self, peer: P, now: Instant) {
        self.advance(now);
        let dialing = self
            .wanted
            .get(&peer)
            .is_some_and(|w| matches!(w.dial, DialState::InFlight { .. }));
        if dialing {
            self.dial_failed(peer, now);
        }
        self.drive(now);
    }

    /// The node's reachability changed. [`Reachability::Private`] reserves slots on up to
    /// [`Config::with_max_relays`] known relays (connected ones first), and keeps that many
    /// reserved; [`Reachability::Public`] cancels them all; [`Reachability::Unknown`] keeps
    /// what there is and makes no new ones.
    pub fn handle_reachability(&mut self, reachability: Reachability, now: Instant) {
        self.advance(now);
        self.reachability = reachability;
        self.drive(now);
    }

    /// `relay` holds a reservation for this node; its backoff resets. A reservation the core
    /// no longer wants (the node became public, or enough relays answered first) is
    /// cancelled; one on a relay it does not know is ignored.
    pub fn handle_relay_reserved(&mut self, relay: P, now: Instant) {
        self.advance(now);
        if let Some(state) = self.relays.get_mut(&relay)
            && state.reservation != Reservation::Reserved
        {
            state.reservation = Reservation::Reserved;
            state.failures = 0;
            state.backoff = self.config.backoff_min;
            self.stats.reservations_ok += 1;
        }
        self.drive(now);
    }

    /// A reservation on `relay` failed or was lost: another relay is tried at once, and this
    /// one again after its backoff.
    pub fn handle_relay_failed(&mut self, relay: P, now: Instant) {
        self.advance(now);
        if self
            .relays
            .get(&relay)
            .is_some_and(|r| r.reservation.is_active())
        {
            self.relay_lost(relay, now);
        }
        self.drive(now);
    }

    /// Providers of `key` were found: each becomes wanted with [`Reason::Provider`], up to
    /// [`Config::with_max_providers_per_lookup`] per lookup over all the answers to it, and
    /// within the wanted set's bound. Answers for a key not looked up (or whose lookup was
    /// forgotten to make room for newer ones) are ignored. The driver leaves this node out.
    pub fn handle_providers(
        &mut self,
        key: &[u8],
        providers: Vec<(P, Vec<Address>)>,
        now: Instant,
    ) {
        self.advance(now);
        let budget = self.lookups.get(key).map_or(0, |l| l.budget);
        let take = budget.min(providers.len());
        self.stats.providers_ignored += (providers.len() - take) as u64;
        if let Some(lookup) = self.lookups.get_mut(key) {
            lookup.budget -= take;
        }
        for (peer, addresses) in providers.into_iter().take(take) {
            self.want(peer, addresses, Reason::Provider, now);
        }
        self.drive(now);
    }

    /// The hole punch with `peer` ended. Success makes its path [`Path::Direct`]. After a
    /// failure (a symmetric NAT, say) the connection stays relayed and is punched once more
    /// after [`Config::with_backoff_max`], then never again while it lasts: at most two
    /// attempts per relayed connection, however often they fail. A failure of a punch the
    /// core has not asked for (the other side's), or reported late or twice, changes nothing.
    pub fn handle_hole_punch(&mut self, peer: P, succeeded: bool, now: Instant) {
        self.advance(now);
        if let Some(connection) = self.connections.get_mut(&peer) {
            match (succeeded, connection.punch) {
                (true, _) => {
                    if connection.path != Path::Direct {
                        self.stats.hole_punches_ok += 1;
                    }
                    *connection = Connection {
                        path: Path::Direct,
                        punch: Punch::Idle,
                    };
                }
                (false, Punch::InFlight { retry, .. }) => {
                    self.stats.hole_punches_failed += 1;
                    connection.punch = Punch::after_failure(retry, now, self.config.backoff_max);
                }
                (false, Punch::Idle | Punch::Due { .. }) => {}
            }
        }
        self.drive(now);
    }

    /// Runs what is due: dials, reservations and hole punches that timed out fail, and due
    /// redials, reservations, hole punches and refreshes are emitted. Early or repeated calls
    /// do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.drive(now);
    }

    /// The next command to execute.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command<P>> {
        self.commands.pop_front()
    }

    /// When [`handle_timeout`](Connectivity::handle_timeout) is next due: the earliest dial,
    /// reservation or hole-punch deadline, redial (while a dial slot is free), relay retry
    /// (while the node is private and short of reservations), hole punch or refresh. It is the
    /// time of the last input when a decision waited for room in a full command queue.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.starved {
            return self.clock.last();
        }
        let slots = self.dials_in_flight() < self.config.max_dials_in_flight;
        let dials = self.wanted.values().filter_map(|w| match w.dial {
            DialState::Idle => None,
            DialState::Due(at) => slots.then_some(at),
            DialState::InFlight { deadline } => Some(deadline),
        });
        let short = self.reachability == Reachability::Private
            && self.active_reservations() < self.config.max_relays;
        let relays = self.relays.values().filter_map(|r| match r.reservation {
            Reservation::None { retry_at } => retry_at.filter(|_| short),
            Reservation::Requested { deadline } => Some(deadline),
            Reservation::Reserved => None,
        });
        let punches = self.connections.values().filter_map(|c| match c.punch {
            Punch::Idle => None,
            Punch::Due { at, .. } => Some(at),
            Punch::InFlight { deadline, .. } => Some(deadline),
        });
        let refreshes = self.follows.values().copied();
        dials.chain(relays).chain(punches).chain(refreshes).min()
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &P) -> bool {
        self.connections.contains_key(peer)
    }

    /// The connected peers, in order.
    pub fn connected(&self) -> impl Iterator<Item = &P> {
        self.connections.keys()
    }

    /// How `peer` is connected, if it is.
    pub fn path(&self, peer: &P) -> Option<Path<P>> {
        self.connections.get(peer).map(|c| c.path)
    }

    /// Whether `peer` is in the wanted set, for any reason.
    pub fn is_wanted(&self, peer: &P) -> bool {
        self.wanted.contains_key(peer)
    }

    /// The node's last reported reachability.
    pub fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        Stats {
            connected: self.connections.len(),
            dials_in_flight: self.dials_in_flight(),
            queued_commands: self.commands.len(),
            reserved_relays: self
                .relays
                .values()
                .filter(|r| r.reservation == Reservation::Reserved)
                .count(),
            wanted: self.wanted.len(),
            ..self.stats.clone()
        }
    }

    fn advance(&mut self, now: Instant) {
        self.clock.advance(now);
    }

    /// Brings the commands in line with the state: what timed out fails, then releases,
    /// dials, reservations, hole punches and refreshes are emitted while the queue has room.
    fn drive(&mut self, now: Instant) {
        self.starved = false;
        self.expire(now);
        self.stop_providing();
        self.cancel_reservations();
        self.dial(now);
        self.reserve(now);
        self.punch(now);
        self.refresh(now);
    }

    fn expire(&mut self, now: Instant) {
        let dials: Vec<P> = self
            .wanted
            .iter()
            .filter(|(_, w)| matches!(w.dial, DialState::InFlight { deadline } if deadline <= now))
            .map(|(p, _)| *p)
            .collect();
        for peer in dials {
            self.stats.dial_timeouts += 1;
            self.dial_failed(peer, now);
        }
        let relays: Vec<P> = self
            .relays
            .iter()
            .filter(|(_, r)| {
                matches!(r.reservation, Reservation::Requested { deadline } if deadline <= now)
            })
            .map(|(p, _)| *p)
            .collect();
        for relay in relays {
            self.relay_lost(relay, now);
        }
        let backoff_max = self.config.backoff_max;
        for connection in self.connections.values_mut() {
            if let Punch::InFlight { deadline, retry } = connection.punch
                && deadline <= now
            {
                self.stats.hole_punches_failed += 1;
                connection.punch = Punch::after_failure(retry, now, backoff_max);
            }
        }
    }

    fn stop_providing(&mut self) {
        while let Some(key) = self.stopping.first().cloned() {
            if !self.has_room() {
                return;
            }
            self.stopping.remove(&key);
            self.commands.push_back(Command::StopProviding { key });
        }
    }

    /// Cancels every reservation when the node is public, and those past
    /// [`Config::with_max_relays`] when it is private (reserved ones are kept first).
    fn cancel_reservations(&mut self) {
        let keep = match self.reachability {
            Reachability::Private => self.config.max_relays,
            Reachability::Public => 0,
            Reachability::Unknown => return,
        };
        let mut active: Vec<(bool, P)> = self
            .relays
            .iter()
            .filter(|(_, r)| r.reservation.is_active())
            .map(|(p, r)| (r.reservation != Reservation::Reserved, *p))
            .collect();
        active.sort();
        for (_, relay) in active.into_iter().skip(keep) {
            if !self.has_room() {
                return;
            }
            if let Some(state) = self.relays.get_mut(&relay) {
                state.reservation = Reservation::None { retry_at: None };
            }
            self.stats.reservations_cancelled += 1;
            self.commands
                .push_back(Command::CancelReservation { relay });
        }
    }

    /// Dials due peers, the longest waiting first, while a dial slot is free.
    fn dial(&mut self, now: Instant) {
        let free = self
            .config
            .max_dials_in_flight
            .saturating_sub(self.dials_in_flight());
        if free == 0 {
            return;
        }
        let mut due: Vec<(Instant, P)> = self
            .wanted
            .iter()
            .filter_map(|(p, w)| match w.dial {
                DialState::Due(at) if at <= now => Some((at, *p)),
                _ => None,
            })
            .collect();
        due.sort();
        for (_, peer) in due.into_iter().take(free) {
            if !self.has_room() {
                return;
            }
            // invariant: `due` was collected from `wanted` just above, and nothing removed it.
            let wanted = self.wanted.get_mut(&peer).expect("due peers are wanted");
            wanted.dial = DialState::InFlight {
                deadline: now + self.config.dial_timeout,
            };
            self.stats.dials += 1;
            if wanted.redial {
                self.stats.redials += 1;
            }
            let addresses = wanted.addresses.clone();
            self.commands.push_back(Command::Dial { peer, addresses });
        }
    }

    /// While the node is private, requests reservations on eligible relays until
    /// [`Config::with_max_relays`] are active: connected relays first, then those that failed
    /// least, then in peer order.
    fn reserve(&mut self, now: Instant) {
        if self.reachability != Reachability::Private {
            return;
        }
        let missing = self
            .config
            .max_relays
            .saturating_sub(self.active_reservations());
        if missing == 0 {
            return;
        }
        let mut eligible: Vec<(bool, u32, P)> = self
            .relays
            .iter()
            .filter(|(_, r)| {
                matches!(r.reservation, Reservation::None { retry_at }
                    if retry_at.is_none_or(|at| at <= now))
            })
            .map(|(p, r)| (!self.connections.contains_key(p), r.failures, *p))
            .collect();
        eligible.sort();
        for (_, _, relay) in eligible.into_iter().take(missing) {
            if !self.has_room() {
                return;
            }
            // invariant: `eligible` was collected from `relays` just above.
            let state = self
                .relays
                .get_mut(&relay)
                .expect("eligible relays are known");
            state.reservation = Reservation::Requested {
                deadline: now + self.config.dial_timeout,
            };
            self.stats.reservations_requested += 1;
            let addresses = state.addresses.clone();
            self.commands
                .push_back(Command::ReserveRelay { relay, addresses });
        }
    }

    fn punch(&mut self, now: Instant) {
        let deadline = now + self.config.dial_timeout;
        let mut room = self
            .config
            .max_queued_commands
            .saturating_sub(self.commands.len());
        for (peer, connection) in &mut self.connections {
            let Punch::Due { at, retry } = connection.punch else {
                continue;
            };
            if at > now {
                continue;
            }
            if room == 0 {
                self.starved = true;
                return;
            }
            room -= 1;
            connection.punch = Punch::InFlight { deadline, retry };
            self.stats.hole_punches += 1;
            self.commands.push_back(Command::HolePunch { peer: *peer });
        }
    }

    /// Provides and looks up the followed keys whose refresh is due.
    fn refresh(&mut self, now: Instant) {
        let due: Vec<Vec<u8>> = self
            .follows
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            if self
                .config
                .max_queued_commands
                .saturating_sub(self.commands.len())
                < 2
            {
                self.starved = true;
                return;
            }
            self.follows
                .insert(key.clone(), now + self.config.provider_refresh);
            self.remember_lookup(&key, now, true);
            self.stats.provides += 1;
            self.stats.finds += 1;
            self.commands
                .push_back(Command::Provide { key: key.clone() });
            self.commands.push_back(Command::FindProviders { key });
        }
    }

    /// Whether one more command fits; when not, the decision waits and the driver is told to
    /// come back at once.
    fn has_room(&mut self) -> bool {
        let room = self.commands.len() < self.config.max_queued_commands;
        if !room {
            self.starved = true;
        }
        room
    }

    /// Records a lookup of `key`, giving it a fresh budget of providers. When the record is
    /// full, lookups older than the lookup interval are forgotten; if that is not enough, a
    /// refresh (`force`) forgets the oldest, and a one-off lookup is refused.
    fn remember_lookup(&mut self, key: &[u8], now: Instant, force: bool) -> bool {
        if !self.lookups.contains_key(key) && self.lookups.len() >= self.config.max_keys {
            let interval = self.config.lookup_interval;
            self.lookups.retain(|_, l| now < l.at + interval);
            if self.lookups.len() >= self.config.max_keys {
                if !force {
                    return false;
                }
                let oldest = self
                    .lookups
                    .iter()
                    .min_by_key(|(_, l)| l.at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.lookups.remove(&oldest);
                }
            }
        }
        let lookup = Lookup {
            at: now,
            budget: self.config.max_providers_per_lookup,
        };
        self.lookups.insert(key.to_vec(), lookup);
        true
    }

    /// Whether a want for `reason` of a peer not yet wanted fits, evicting a best-effort peer
    /// when a configured or replicator want meets a full set.
    fn make_room(&mut self, reason: Reason) -> bool {
        if self.wanted.len() < self.config.max_wanted {
            return true;
        }
        if reason.is_best_effort() {
            return false;
        }
        let victim = self
            .wanted
            .iter()
            .filter(|(_, w)| w.is_best_effort())
            .min_by_key(|(p, w)| (self.connections.contains_key(p), Reverse(w.failures), **p))
            .map(|(p, _)| *p);
        if let Some(victim) = victim {
            self.forget(victim);
            self.stats.evicted += 1;
        }
        true
    }

    fn dial_failed(&mut self, peer: P, now: Instant) {
        self.stats.dial_failures += 1;
        let max_attempts = self.config.max_attempts_best_effort;
        let Some(wanted) = self.wanted.get_mut(&peer) else {
            return;
        };
        wanted.failures = wanted.failures.saturating_add(1);
        if wanted.is_best_effort() && wanted.failures >= max_attempts {
            self.forget(peer);
            self.stats.given_up += 1;
            return;
        }
        self.schedule_redial(peer, now);
    }

    /// Takes `peer` out of the wanted set, withdrawing its dial if still queued.
    fn forget(&mut self, peer: P) {
        self.wanted.remove(&peer);
        self.commands
            .retain(|c| !matches!(c, Command::Dial { peer: p, .. } if *p == peer));
    }

    /// Waits the peer's backoff (jittered), then doubles it up to the cap.
    fn schedule_redial(&mut self, peer: P, now: Instant) {
        let backoff_max = self.config.backoff_max;
        let Some(wanted) = self.wanted.get_mut(&peer) else {
            return;
        };
        let wait = self.rng.jitter(wanted.backoff);
        wanted.backoff = wanted.backoff.saturating_mul(2).min(backoff_max);
        wanted.dial = DialState::Due(now + wait);
        wanted.redial = true;
    }

    /// A reservation failed, timed out or died with its relay's connection: that relay waits
    /// its backoff, and [`drive`](Self::drive) reserves on another.
    fn relay_lost(&mut self, relay: P, now: Instant) {
        let backoff_max = self.config.backoff_max;
        let Some(state) = self.relays.get_mut(&relay) else {
            return;
        };
        let wait = self.rng.jitter(state.backoff);
        state.backoff = state.backoff.saturating_mul(2).min(backoff_max);
        state.failures = state.failures.saturating_add(1);
        state.reservation = Reservation::None {
            retry_at: Some(now + wait),
        };
        self.stats.reservations_failed += 1;
    }

    fn dials_in_flight(&self) -> usize {
        self.wanted
            .values()
            .filter(|w| matches!(w.dial, DialState::InFlight { .. }))
            .count()
    }

    fn active_reservations(&self) -> usize {
        self.relays
            .values()
            .filter(|r| r.reservation.is_active())
            .count()
    }
}

impl<P: fmt::Debug> fmt::Debug for Connectivity<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connectivity")
            .field("wanted", &self.wanted.len())
            .field("connected", &self.connections.len())
            .field("relays", &self.relays.len())
            .field("reachability", &self.reachability)
            .field("follows", &self.follows.len())
            .field("queued_commands", &self.commands.len())
            .finish_non_exhaustive()
    }
}

struct Wanted {
    reasons: BTreeSet<Reason>,
    /// Most recently learnt first; at most `max_addresses_per_peer`.
    addresses: Vec<Address>,
    /// Failed dials in a row since the last connection.
    failures: u32,
    /// The wait before the next redial, before jitter.
    backoff: Duration,
    dial: DialState,
    /// Whether the next dial follows a failure or a disconnection.
    redial: bool,
}

impl Wanted {
    fn is_best_effort(&self) -> bool {
        self.reasons.iter().all(|r| r.is_best_effort())
    }
}

/// Where a wanted peer stands. `Idle` exactly when it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialState {
    Idle,
    /// To be dialed at this time, or as soon as a dial slot frees.
    Due(Instant),
    InFlight {
        deadline: Instant,
    },
}

struct Connection<P> {
    path: Path<P>,
    punch: Punch,
}

/// The hole punch of one relayed connection. `retry` marks the second and last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Punch {
    /// Nothing to do: direct, the other side's to start, or given up.
    Idle,
    Due {
        at: Instant,
        retry: bool,
    },
    InFlight {
        deadline: Instant,
        retry: bool,
    },
}

impl Punch {
    /// After a failed attempt: the first is retried once after `backoff_max`, the second
    /// (`retry`) ends it.
    fn after_failure(retry: bool, now: Instant, backoff_max: Duration) -> Punch {
        if retry {
            Punch::Idle
        } else {
            Punch::Due {
                at: now + backoff_max,
                retry: true,
            }
        }
    }
}

struct Relay {
    addresses: Vec<Address>,
    /// Failed or lost reservations in a row.
    failures: u32,
    backoff: Duration,
    reservation: Reservation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reservation {
    /// None held; eligible from `retry_at` (at once when `None`).
    None {
        retry_at: Option<Instant>,
    },
    Requested {
        deadline: Instant,
    },
    Reserved,
}

impl Reservation {
    fn is_active(self) -> bool {
        matches!(self, Reservation::Requested { .. } | Reservation::Reserved)
    }
}

struct Lookup {
    at: Instant,
    /// Providers still to be taken from the answers to this lookup.
    budget: usize,
}

/// Merges `new` addresses in front of `known`, dropping empty, oversized and repeated ones,
/// keeping at most `max_count`. Returns whether an address not known before was kept.
fn merge(known: &mut Vec<Address>, new: Vec<Address>, max_count: usize, max_bytes: usize) -> bool {
    let mut merged: Vec<Address> = Vec::with_capacity(max_count.min(new.len() + known.len()));
    let mut added = false;
    for address in new {
        if merged.len() >= max_count {
            break;
        }
        if address.is_empty() || address.len() > max_bytes || merged.contains(&address) {
            continue;
        }
        added |= !known.contains(&address);
        merged.push(address);
    }
    for address in known.drain(..) {
        if merged.len() >= max_count {
            break;
        }
        if !merged.contains(&address) {
            merged.push(address);
        }
    }
    *known = merged;
    added
}

impl SplitMix64 {
    /// `wait` scaled by a factor drawn uniformly from [0.8, 1.2] (in thousandths), so that
    /// peers that failed together do not redial together.
    fn jitter(&mut self, wait: Duration) -> Duration {
        let permille = 800 + u128::from(self.next_u64() % 401);
        let nanos = wait.as_nanos() * permille / 1000;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}
