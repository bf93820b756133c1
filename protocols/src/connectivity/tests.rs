//! The connectivity core driven by hand in virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// The start of a test's virtual time; only differences from it matter.
#[allow(clippy::disallowed_methods)] // The one clock read: an arbitrary origin.
fn epoch() -> Instant {
    Instant::now()
}

const SEED: u64 = 7;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn core(config: Config) -> Connectivity<u8> {
    Connectivity::new(config, SEED)
}

fn addr(peer: u8) -> Vec<Address> {
    vec![vec![b'a', peer]]
}

fn drain(c: &mut Connectivity<u8>) -> Vec<Command<u8>> {
    std::iter::from_fn(|| c.poll_command()).collect()
}

fn dialed(commands: &[Command<u8>]) -> Vec<u8> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Dial { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

/// Fires the core's timer: returns when it fired and what it emitted.
fn fire(c: &mut Connectivity<u8>) -> (Instant, Vec<Command<u8>>) {
    let at = c.poll_timeout().expect("a timer is armed");
    c.handle_timeout(at);
    (at, drain(c))
}

fn assert_jittered(wait: Duration, backoff: Duration) {
    let (low, high) = (backoff.mul_f64(0.8), backoff.mul_f64(1.2));
    assert!(
        low <= wait && wait <= high,
        "waited {wait:?}, expected {backoff:?} ± 20 %"
    );
}

#[test]
fn configured_peer_is_dialed_at_once() {
    let now = epoch();
    let mut c = core(Config::default());
    assert!(c.want(1, addr(1), Reason::Configured, now));
    assert_eq!(
        drain(&mut c),
        vec![Command::Dial {
            peer: 1,
            addresses: addr(1)
        }]
    );
    assert_eq!(
        c.poll_timeout(),
        Some(now + secs(30)),
        "the dial's deadline"
    );
    c.handle_connected(1, Path::Direct, false, now);
    assert!(c.is_connected(&1));
    assert_eq!(c.path(&1), Some(Path::Direct));
    assert_eq!(c.poll_timeout(), None, "nothing left to do");
}

#[test]
fn connected_peer_is_not_dialed() {
    let now = epoch();
    let mut c = core(Config::default());
    c.handle_connected(1, Path::Direct, true, now);
    c.want(1, addr(1), Reason::Remembered, now);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.connected().copied().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn redial_backs_off_doubling_to_the_cap() {
    let mut now = epoch();
    let mut c = core(Config::default());
    c.want(1, addr(1), Reason::Configured, now);
    assert_eq!(dialed(&drain(&mut c)), vec![1]);
    let mut backoff = secs(1);
    for _ in 0..14 {
        c.handle_dial_failed(1, now);
        assert!(drain(&mut c).is_empty(), "no redial before the backoff");
        let (at, commands) = fire(&mut c);
        assert_jittered(at - now, backoff);
        assert_eq!(dialed(&commands), vec![1]);
        now = at;
        backoff = (backoff * 2).min(secs(300));
    }
    assert_eq!(backoff, secs(300), "the cap was reached");
    let stats = c.stats();
    assert_eq!((stats.dial_failures, stats.redials), (14, 14));
}

#[test]
fn connect_resets_backoff() {
    let mut now = epoch();
    let mut c = core(Config::default());
    c.want(1, addr(1), Reason::Replicator, now);
    drain(&mut c);
    for _ in 0..6 {
        c.handle_dial_failed(1, now);
        now = fire(&mut c).0;
    }
    c.handle_connected(1, Path::Direct, false, now);
    now += secs(3600);
    c.handle_disconnected(1, now);
    assert!(!c.is_connected(&1));
    let (at, commands) = fire(&mut c);
    assert_jittered(at - now, secs(1));
    assert_eq!(dialed(&commands), vec![1]);
    c.handle_dial_failed(1, at);
    let (next, _) = fire(&mut c);
    assert_jittered(next - at, secs(2));
}

#[test]
fn best_effort_peer_given_up_after_max_attempts() {
    let mut now = epoch();
    let mut c = core(Config::default().with_max_attempts_best_effort(3));
    c.want(1, addr(1), Reason::Provider, now);
    drain(&mut c);
    c.handle_dial_failed(1, now);
    now = fire(&mut c).0;
    c.handle_dial_failed(1, now);
    now = fire(&mut c).0;
    assert!(c.is_wanted(&1));
    c.handle_dial_failed(1, now);
    assert!(!c.is_wanted(&1), "forgotten after the third failure");
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.stats().given_up, 1);
}

#[test]
fn replicator_peer_retried_forever() {
    let mut now = epoch();
    let mut c = core(Config::default().with_max_attempts_best_effort(1));
    c.want(1, addr(1), Reason::Replicator, now);
    c.want(1, addr(1), Reason::Remembered, now);
    drain(&mut c);
    for _ in 0..50 {
        c.handle_dial_failed(1, now);
        let (at, commands) = fire(&mut c);
        assert_eq!(dialed(&commands), vec![1]);
        assert!(at - now <= secs(360), "the wait stays capped");
        now = at;
    }
    c.unwant(1, Reason::Replicator, now);
    c.handle_dial_failed(1, now);
    assert!(!c.is_wanted(&1), "best effort alone, it is given up");
}

#[test]
fn dial_timeout_counts_as_failure() {
    let now = epoch();
    let mut c = core(Config::default().with_dial_timeout(secs(10)));
    c.want(1, addr(1), Reason::Configured, now);
    drain(&mut c);
    let (at, commands) = fire(&mut c);
    assert_eq!(at, now + secs(10));
    assert!(
        commands.is_empty(),
        "no redial at the very instant it failed"
    );
    assert_eq!((c.stats().dial_failures, c.stats().dial_timeouts), (1, 1));
    c.handle_dial_failed(1, at);
    assert_eq!(
        c.stats().dial_failures,
        1,
        "a late failure is not counted twice"
    );
    let (redial, commands) = fire(&mut c);
    assert_jittered(redial - at, secs(1));
    assert_eq!(dialed(&commands), vec![1]);
}

#[test]
fn dials_in_flight_are_capped() {
    let now = epoch();
    let mut c = core(Config::default().with_max_dials_in_flight(2));
    for peer in 1..=5 {
        c.want(peer, addr(peer), Reason::Configured, now);
    }
    assert_eq!(dialed(&drain(&mut c)), vec![1, 2]);
    assert_eq!(c.stats().dials_in_flight, 2);
    c.handle_connected(1, Path::Direct, false, now);
    assert_eq!(
        dialed(&drain(&mut c)),
        vec![3],
        "a freed slot dials the next"
    );
    c.handle_dial_failed(2, now);
    assert_eq!(dialed(&drain(&mut c)), vec![4]);
}

#[test]
fn repeated_want_keeps_the_backoff_and_new_addresses_dial_at_once() {
    let now = epoch();
    let mut c = core(Config::default());
    c.want(1, addr(1), Reason::Remembered, now);
    drain(&mut c);
    c.handle_dial_failed(1, now);
    c.want(1, addr(1), Reason::Remembered, now);
    assert!(drain(&mut c).is_empty(), "nothing new: the backoff stands");
    let other = vec![vec![b'b', 1]];
    c.want(1, other.clone(), Reason::Remembered, now);
    let expected = vec![other[0].clone(), addr(1)[0].clone()];
    assert_eq!(
        drain(&mut c),
        vec![Command::Dial {
            peer: 1,
            addresses: expected
        }],
        "a new address is worth a dial, most recent first"
    );
}

#[test]
fn addresses_are_bounded_and_deduplicated() {
    let now = epoch();
    let config = Config::default()
        .with_max_addresses_per_peer(3)
        .with_max_address_bytes(4);
    let mut c = core(config);
    let addresses = vec![
        vec![1],
        vec![1],
        vec![],
        vec![9; 5],
        vec![2],
        vec![3],
        vec![4],
    ];
    c.want(1, addresses, Reason::Configured, now);
    assert_eq!(
        drain(&mut c),
        vec![Command::Dial {
            peer: 1,
            addresses: vec![vec![1], vec![2], vec![3]]
        }]
    );
}

#[test]
fn wanted_set_is_bounded() {
    let now = epoch();
    let mut c = core(Config::default().with_max_wanted(3));
    for peer in 1..=3 {
        assert!(c.want(peer, addr(peer), Reason::Provider, now));
    }
    c.handle_connected(1, Path::Direct, false, now);
    c.handle_dial_failed(3, now);
    assert!(
        !c.want(4, addr(4), Reason::Remembered, now),
        "best effort is refused"
    );
    assert!(
        c.want(2, addr(2), Reason::Remembered, now),
        "a known peer still fits"
    );
    assert!(
        c.want(5, addr(5), Reason::Configured, now),
        "configured always fits"
    );
    assert!(
        !c.is_wanted(&3),
        "the unconnected peer with most failures made room"
    );
    assert!(c.want(6, addr(6), Reason::Replicator, now));
    assert!(c.want(7, addr(7), Reason::Replicator, now));
    assert!(
        c.want(8, addr(8), Reason::Configured, now),
        "fits past the bound"
    );
    let stats = c.stats();
    assert_eq!(stats.wanted, 4, "1, 2 and 3 evicted; 5 to 8 kept");
    assert_eq!((stats.wants_refused, stats.evicted), (1, 3));
}

#[test]
fn private_node_reserves_on_relays() {
    let now = epoch();
    let mut c = core(Config::default());
    for relay in [10, 11, 12] {
        assert!(c.add_relay(relay, addr(relay), now));
    }
    c.handle_connected(12, Path::Direct, false, now);
    assert!(
        drain(&mut c).is_empty(),
        "reachability unknown: no reservation"
    );
    c.handle_reachability(Reachability::Private, now);
    assert_eq!(
        drain(&mut c),
        vec![
            Command::ReserveRelay {
                relay: 12,
                addresses: addr(12)
            },
            Command::ReserveRelay {
                relay: 10,
                addresses: addr(10)
            },
        ],
        "the connected relay first, then in order, max_relays of them"
    );
    c.handle_relay_reserved(12, now);
    c.handle_relay_reserved(10, now);
    assert_eq!(c.stats().reserved_relays, 2);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn public_node_cancels_reservations() {
    let now = epoch();
    let mut c = core(Config::default());
    c.add_relay(10, addr(10), now);
    c.add_relay(11, addr(11), now);
    c.handle_reachability(Reachability::Private, now);
    drain(&mut c);
    c.handle_relay_reserved(10, now);
    c.handle_reachability(Reachability::Public, now);
    assert_eq!(
        drain(&mut c),
        vec![
            Command::CancelReservation { relay: 10 },
            Command::CancelReservation { relay: 11 },
        ]
    );
    c.handle_relay_reserved(11, now);
    assert_eq!(
        drain(&mut c),
        vec![Command::CancelReservation { relay: 11 }],
        "a late reservation is cancelled too"
    );
    c.handle_reachability(Reachability::Private, now);
    assert_eq!(drain(&mut c).len(), 2, "private again: both reserved again");
}

#[test]
fn relay_loss_reserves_elsewhere() {
    let now = epoch();
    let mut c = core(Config::default());
    for relay in [10, 11, 12] {
        c.add_relay(relay, addr(relay), now);
    }
    c.handle_reachability(Reachability::Private, now);
    drain(&mut c);
    c.handle_relay_reserved(10, now);
    c.handle_relay_reserved(11, now);
    c.handle_connected(10, Path::Direct, false, now);
    c.handle_disconnected(10, now);
    assert_eq!(
        drain(&mut c),
        vec![Command::ReserveRelay {
            relay: 12,
            addresses: addr(12)
        }],
        "the lost slot moves to another relay at once"
    );
    c.handle_relay_failed(12, now);
    assert!(
        drain(&mut c).is_empty(),
        "every other relay is busy or backing off"
    );
    let (at, commands) = fire(&mut c);
    assert_jittered(at - now, secs(1));
    let [Command::ReserveRelay { relay, .. }] = commands.as_slice() else {
        panic!("one reservation when the first backoff ends: {commands:?}");
    };
    assert!([10, 12].contains(relay), "a relay that failed comes back");
    assert_eq!(c.stats().reservations_failed, 2);
}

#[test]
fn unanswered_reservation_times_out() {
    let now = epoch();
    let mut c = core(Config::default().with_max_relays(1));
    c.add_relay(10, addr(10), now);
    c.add_relay(11, addr(11), now);
    c.handle_reachability(Reachability::Private, now);
    drain(&mut c);
    let (at, commands) = fire(&mut c);
    assert_eq!(at, now + secs(30));
    assert_eq!(
        commands,
        vec![Command::ReserveRelay {
            relay: 11,
            addresses: addr(11)
        }]
    );
}

#[test]
fn relayed_connection_triggers_one_hole_punch() {
    let now = epoch();
    let mut c = core(Config::default());
    let relayed = Path::Relayed { relay: 10 };
    c.handle_connected(1, relayed, true, now);
    assert_eq!(drain(&mut c), vec![Command::HolePunch { peer: 1 }]);
    c.handle_connected(1, relayed, true, now);
    assert!(
        drain(&mut c).is_empty(),
        "a second report is not a second punch"
    );
    c.handle_hole_punch(1, false, now);
    assert!(drain(&mut c).is_empty(), "no retry storm");
    assert_eq!(c.path(&1), Some(relayed), "a failed punch stays relayed");
    let (at, commands) = fire(&mut c);
    assert_eq!(at, now + secs(300), "the one retry, after backoff_max");
    assert_eq!(commands, vec![Command::HolePunch { peer: 1 }]);
    c.handle_hole_punch(1, false, at);
    assert_eq!(
        c.poll_timeout(),
        None,
        "then never again on this connection"
    );

    c.handle_connected(2, relayed, true, at);
    assert_eq!(drain(&mut c), vec![Command::HolePunch { peer: 2 }]);
    c.handle_hole_punch(2, true, at);
    assert_eq!(c.path(&2), Some(Path::Direct));
    c.handle_connected(2, relayed, true, at);
    assert_eq!(c.path(&2), Some(Path::Direct), "never downgraded");

    c.handle_connected(3, relayed, false, at);
    assert!(drain(&mut c).is_empty(), "the side that accepted punches");
    c.handle_connected(3, Path::Direct, false, at);
    assert_eq!(
        c.path(&3),
        Some(Path::Direct),
        "the other side's punch upgrades it"
    );
    let stats = c.stats();
    assert_eq!((stats.hole_punches, stats.hole_punches_ok), (3, 1));
    assert_eq!(stats.hole_punches_failed, 2);
}

#[test]
fn follow_provides_and_refreshes() {
    let now = epoch();
    let mut c = core(Config::default());
    let key = b"books".to_vec();
    assert!(c.follow(key.clone(), now));
    let both = vec![
        Command::Provide { key: key.clone() },
        Command::FindProviders { key: key.clone() },
    ];
    assert_eq!(drain(&mut c), both);
    assert!(c.follow(key.clone(), now));
    assert!(
        drain(&mut c).is_empty(),
        "following twice is following once"
    );
    c.handle_timeout(now + secs(599));
    assert!(drain(&mut c).is_empty());
    let (at, commands) = fire(&mut c);
    assert_eq!(at, now + secs(600));
    assert_eq!(commands, both);
    c.unfollow(&key, at);
    assert_eq!(drain(&mut c), vec![Command::StopProviding { key }]);
    assert_eq!(c.poll_timeout(), None, "no more refreshes");
}

#[test]
fn find_providers_is_rate_limited() {
    let now = epoch();
    let mut c = core(Config::default());
    let key = b"books/shard-3".to_vec();
    assert!(c.find_providers(key.clone(), now));
    assert_eq!(
        drain(&mut c),
        vec![Command::FindProviders { key: key.clone() }]
    );
    assert!(!c.find_providers(key.clone(), now + secs(29)));
    assert!(drain(&mut c).is_empty());
    assert!(c.find_providers(key.clone(), now + secs(30)));
    assert_eq!(drain(&mut c).len(), 1);
    assert_eq!(c.poll_timeout(), None, "a one-off lookup arms no timer");
    assert_eq!((c.stats().finds, c.stats().finds_limited), (2, 1));
}

#[test]
fn providers_are_wanted_up_to_the_per_lookup_cap() {
    let now = epoch();
    let mut c = core(Config::default().with_max_providers_per_lookup(3));
    let key = b"books".to_vec();
    c.handle_providers(&key, vec![(1, addr(1))], now);
    assert!(!c.is_wanted(&1), "an answer to no lookup is ignored");
    c.find_providers(key.clone(), now);
    drain(&mut c);
    c.handle_providers(&key, vec![(1, addr(1)), (2, addr(2))], now);
    c.handle_providers(&key, vec![(3, addr(3)), (4, addr(4))], now);
    assert_eq!(dialed(&drain(&mut c)), vec![1, 2, 3]);
    assert!(!c.is_wanted(&4), "past the cap for this lookup");
    assert_eq!(c.stats().providers_ignored, 2);
}

#[test]
fn full_queue_defers_decisions_without_losing_them() {
    let now = epoch();
    let mut c = core(Config::default().with_max_queued_commands(2));
    for peer in 1..=3 {
        c.want(peer, addr(peer), Reason::Configured, now);
    }
    c.unfollow(b"never followed", now);
    c.follow(b"k".to_vec(), now);
    assert_eq!(c.stats().queued_commands, 2);
    assert_eq!(c.poll_timeout(), Some(now), "come back at once");
    let mut all = drain(&mut c);
    for _ in 0..4 {
        c.handle_timeout(now);
        all.extend(drain(&mut c));
    }
    assert_eq!(dialed(&all), vec![1, 2, 3]);
    assert_eq!(all.len(), 5, "three dials, then the provide and the lookup");
    assert_eq!(c.poll_timeout(), Some(now + secs(30)));
}

#[test]
fn same_seed_same_commands() {
    fn run(seed: u64, start: Instant) -> Vec<(Instant, Vec<Command<u8>>)> {
        let mut now = start;
        let mut c = Connectivity::new(Config::default(), seed);
        let mut trace = Vec::new();
        for peer in 0..6 {
            c.want(peer, addr(peer), Reason::Replicator, now);
        }
        c.add_relay(10, addr(10), now);
        c.add_relay(11, addr(11), now);
        c.handle_reachability(Reachability::Private, now);
        c.follow(b"k".to_vec(), now);
        trace.push((now, drain(&mut c)));
        for step in 0..40u8 {
            match step % 4 {
                0 => c.handle_dial_failed(step % 6, now),
                1 => c.handle_relay_failed(10 + step % 2, now),
                2 => c.handle_connected(step % 6, Path::Relayed { relay: 10 }, true, now),
                _ => c.handle_disconnected(step % 6, now),
            }
            trace.push((now, drain(&mut c)));
            if let Some(at) = c.poll_timeout() {
                now = at;
                c.handle_timeout(now);
                trace.push((now, drain(&mut c)));
            }
        }
        trace
    }
    let start = epoch();
    assert_eq!(run(SEED, start), run(SEED, start));
    assert_ne!(
        run(SEED, start),
        run(SEED + 1, start),
        "the seed drives the jitter"
    );
}

#[test]
fn early_timeout_is_noop() {
    let now = epoch();
    let mut c = core(Config::default());
    c.want(1, addr(1), Reason::Configured, now);
    c.follow(b"k".to_vec(), now);
    drain(&mut c);
    c.handle_dial_failed(1, now);
    let due = c.poll_timeout().unwrap();
    c.handle_timeout(now);
    c.handle_timeout(due - Duration::from_millis(1));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(due));
    c.handle_timeout(due);
    assert_eq!(dialed(&drain(&mut c)), vec![1]);
    c.handle_timeout(due);
    assert!(drain(&mut c).is_empty(), "a repeated call does nothing");
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_going_backwards_panics() {
    let now = epoch();
    let mut c = core(Config::default());
    c.handle_timeout(now + secs(1));
    c.handle_timeout(now);
}

/// One input of the property test, over a handful of peers, keys and relays.
#[derive(Debug, Clone)]
enum Op {
    Want(u8, Reason),
    Unwant(u8, Reason),
    Connected(u8, Option<u8>, bool),
    Disconnected(u8),
    DialFailed(u8),
    Reachability(Reachability),
    AddRelay(u8),
    RelayReserved(u8),
    RelayFailed(u8),
    Follow(u8),
    Unfollow(u8),
    FindProviders(u8),
    Providers(u8, Vec<u8>),
    HolePunch(u8, bool),
    Advance(u64),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0u8..8;
    let relay = 8u8..11;
    let key = 0u8..3;
    let reason = prop_oneof![
        Just(Reason::Configured),
        Just(Reason::Replicator),
        Just(Reason::Remembered),
        Just(Reason::Provider),
    ];
    let reachability = prop_oneof![
        Just(Reachability::Private),
        Just(Reachability::Public),
        Just(Reachability::Unknown),
    ];
    prop_oneof![
        (peer.clone(), reason.clone()).prop_map(|(p, r)| Op::Want(p, r)),
        (peer.clone(), reason).prop_map(|(p, r)| Op::Unwant(p, r)),
        (0u8..11, proptest::option::of(relay.clone()), any::<bool>())
            .prop_map(|(p, r, i)| Op::Connected(p, r, i)),
        (0u8..11).prop_map(Op::Disconnected),
        peer.clone().prop_map(Op::DialFailed),
        reachability.prop_map(Op::Reachability),
        relay.clone().prop_map(Op::AddRelay),
        relay.clone().prop_map(Op::RelayReserved),
        relay.prop_map(Op::RelayFailed),
        key.clone().prop_map(Op::Follow),
        key.clone().prop_map(Op::Unfollow),
        key.clone().prop_map(Op::FindProviders),
        (key, proptest::collection::vec(peer.clone(), 0..6))
            .prop_map(|(k, ps)| Op::Providers(k, ps)),
        (peer, any::<bool>()).prop_map(|(p, s)| Op::HolePunch(p, s)),
        (0u64..20_000).prop_map(Op::Advance),
        Just(Op::Timeout),
    ]
}

/// What the driver saw: dials not yet answered, the connections it reported, and the peers
/// wanted for a reason that always fits.
#[derive(Default)]
struct Model {
    dials: BTreeMap<u8, Instant>,
    connected: BTreeSet<u8>,
    forever: BTreeMap<u8, BTreeSet<Reason>>,
}

const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

fn small_config() -> Config {
    Config::default()
        .with_backoff_min(Duration::from_millis(100))
        .with_backoff_max(secs(2))
        .with_max_attempts_best_effort(2)
        .with_max_wanted(4)
        .with_max_dials_in_flight(2)
        .with_dial_timeout(DIAL_TIMEOUT)
        .with_provider_refresh(secs(10))
        .with_lookup_interval(secs(1))
        .with_max_keys(2)
        .with_max_providers_per_lookup(3)
        .with_max_relays(1)
        .with_max_known_relays(2)
        .with_max_queued_commands(4)
}

fn apply(c: &mut Connectivity<u8>, model: &mut Model, op: Op, now: &mut Instant) {
    match op {
        Op::Want(p, r) => {
            if !r.is_best_effort() {
                model.forever.entry(p).or_default().insert(r);
            }
            c.want(p, addr(p), r, *now);
        }
        Op::Unwant(p, r) => {
            if let Some(reasons) = model.forever.get_mut(&p) {
                reasons.remove(&r);
                if reasons.is_empty() {
                    model.forever.remove(&p);
                }
            }
            c.unwant(p, r, *now);
        }
        Op::Connected(p, relay, inbound) => {
            let path = relay.map_or(Path::Direct, |relay| Path::Relayed { relay });
            model.dials.remove(&p);
            model.connected.insert(p);
            c.handle_connected(p, path, inbound, *now);
        }
        Op::Disconnected(p) => {
            model.connected.remove(&p);
            c.handle_disconnected(p, *now);
        }
        Op::DialFailed(p) => {
            model.dials.remove(&p);
            c.handle_dial_failed(p, *now);
        }
        Op::Reachability(r) => c.handle_reachability(r, *now),
        Op::AddRelay(r) => {
            c.add_relay(r, addr(r), *now);
        }
        Op::RelayReserved(r) => c.handle_relay_reserved(r, *now),
        Op::RelayFailed(r) => c.handle_relay_failed(r, *now),
        Op::Follow(k) => {
            c.follow(vec![k], *now);
        }
        Op::Unfollow(k) => c.unfollow(&[k], *now),
        Op::FindProviders(k) => {
            c.find_providers(vec![k], *now);
        }
        Op::Providers(k, peers) => {
            let providers = peers.into_iter().map(|p| (p, addr(p))).collect();
            c.handle_providers(&[k], providers, *now);
        }
        Op::HolePunch(p, ok) => c.handle_hole_punch(p, ok, *now),
        Op::Advance(ms) => *now += Duration::from_millis(ms),
        Op::Timeout => {
            if let Some(at) = c.poll_timeout() {
                *now = (*now).max(at);
            }
            c.handle_timeout(*now);
        }
    }
    // A dial the core forgot (unwanted, given up, timed out) is no longer its dial.
    model
        .dials
        .retain(|p, deadline| c.is_wanted(p) && *deadline > *now);
}

/// Drains the queue, checking every dial against what the driver knows.
fn check_commands(c: &mut Connectivity<u8>, model: &mut Model, now: Instant) {
    while let Some(command) = c.poll_command() {
        if let Command::Dial { peer, .. } = command {
            assert!(
                !model.dials.contains_key(&peer),
                "two dials in flight to {peer}"
            );
            assert!(!model.connected.contains(&peer), "dialed connected {peer}");
            model.dials.insert(peer, now + DIAL_TIMEOUT);
        }
    }
}

proptest! {
    #[test]
    fn random_inputs_keep_the_invariants(
        ops in proptest::collection::vec((op(), any::<bool>()), 1..200),
        seed in any::<u64>(),
    ) {
        let mut c = Connectivity::new(small_config(), seed);
        let mut model = Model::default();
        let mut now = epoch();
        for (op, drain_now) in ops {
            // The driver executes what was emitted before time moves on or it reports what
            // became of a dial; in between, commands may pile up.
            let drain_now = drain_now
                || matches!(
                    op,
                    Op::Advance(_) | Op::Timeout | Op::Connected(..) | Op::DialFailed(_)
                );
            if drain_now {
                check_commands(&mut c, &mut model, now);
            }
            apply(&mut c, &mut model, op, &mut now);
            let stats = c.stats();
            prop_assert!(stats.queued_commands <= 4, "queue bounded: {stats:?}");
            prop_assert!(stats.dials_in_flight <= 2, "dials bounded: {stats:?}");
            prop_assert!(
                stats.wanted <= model.forever.len().max(4),
                "wanted set bounded: {stats:?}"
            );
            for peer in model.forever.keys() {
                prop_assert!(c.is_wanted(peer), "configured and replicator peers stay wanted");
            }
            if !drain_now {
                continue;
            }
            check_commands(&mut c, &mut model, now);
            // After draining, the timer points to the future, or to now while decisions wait
            // for room; a few rounds at `now` clear those: no busy loop.
            for _ in 0..20 {
                if c.poll_timeout().is_none_or(|at| at > now) {
                    break;
                }
                c.handle_timeout(now);
                check_commands(&mut c, &mut model, now);
            }
            prop_assert!(c.poll_timeout().is_none_or(|at| at > now), "a busy loop at {now:?}");
            let reserved = c.stats().reserved_relays;
            match c.reachability() {
                Reachability::Public => prop_assert_eq!(reserved, 0),
                Reachability::Private => prop_assert!(reserved <= 1),
                Reachability::Unknown => {}
            }
        }
    }
}
