//! One seed, one run: the event log of a seed is the same every time, and differs between
//! seeds.

use std::time::Duration;

use hypha_sim::builtin;
use hypha_sim::sweep::{self, Config};

#[test]
fn a_sweep_seed_replays_to_the_same_event_log() {
    let c = Config {
        nodes: (3, 6),
        safety: Duration::from_secs(180),
        ..Config::default()
    };
    let mut hashes = Vec::new();
    for seed in [11, 12, 13] {
        let a = sweep::run_seed(seed, &c, sweep::options(seed, &c));
        let b = sweep::run_seed(seed, &c, sweep::options(seed, &c));
        assert_eq!(a.hash, b.hash, "seed {seed} replays differently");
        assert!(a.messages > 0 && a.writes > 0, "seed {seed} did something");
        hashes.push(a.hash);
    }
    hashes.dedup();
    assert_eq!(hashes.len(), 3, "different seeds, different runs");
}

#[test]
fn a_scenario_with_crashes_and_partitions_replays_to_the_same_event_log() {
    for name in ["C1", "A11", "NAT-PUNCH"] {
        let s = builtin(name).expect("built in").expect("parses");
        let a = s.run(s.options(5));
        let b = s.run(s.options(5));
        assert!(a.passed, "{name}: {:?}", a.failures);
        assert_eq!(a.log_hash, b.log_hash, "{name} replays differently");
        let c = s.run(s.options(6));
        assert_ne!(a.log_hash, c.log_hash, "{name}: another seed, another run");
    }
}
