//! Each checker can fail: a deliberate fault in the coordinator (`node::Faults`) is caught by
//! the sweep within a few seeds, and the same seeds pass without it.

use std::time::Duration;

use hypha_protocols::node::Faults;
use hypha_sim::sweep::{self, Config};

fn config() -> Config {
    Config {
        nodes: (2, 4),
        safety: Duration::from_secs(180),
        check_determinism: false,
        faults: Faults::default(),
        trace: false,
    }
}

/// The first seed in `seeds` whose run reports a failure containing `what` under `faults`.
fn caught(
    faults: Faults,
    what: &str,
    seeds: std::ops::RangeInclusive<u64>,
) -> Option<(u64, Vec<String>)> {
    let c = config();
    for seed in seeds {
        let mut o = sweep::options(seed, &c);
        o.faults = faults;
        // The violations are recorded in the safety phase; a broken coordinator may also never
        // settle, so the liveness wait is cut short to keep the test fast.
        o.wait_budget = Duration::from_secs(600);
        let out = sweep::run_seed(seed, &c, o);
        if out.failures.iter().any(|f| f.contains(what)) {
            return Some((seed, out.failures));
        }
    }
    None
}

fn clean(seed: u64) {
    let c = config();
    let out = sweep::run_seed(seed, &c, sweep::options(seed, &c));
    assert!(
        out.passed,
        "seed {seed} fails without the fault: {:?}",
        out.failures
    );
}

#[test]
fn following_everything_is_caught_by_the_scope_checker() {
    let faults = Faults {
        follow_everything: true,
        ..Faults::default()
    };
    let (seed, failures) = caught(faults, "Scope", 1..=6).expect("caught within 6 seeds");
    clean(seed);
    assert!(
        failures
            .iter()
            .any(|f| f.contains("neither wrote, follows")),
        "{failures:?}"
    );
}

#[test]
fn ignoring_the_replicator_scope_is_caught_by_the_scope_checker() {
    let faults = Faults {
        ignore_replicator_scope: true,
        ..Faults::default()
    };
    let (seed, _) = caught(faults, "Scope", 1..=6).expect("caught within 6 seeds");
    clean(seed);
}

#[test]
fn acking_before_persisting_is_caught_by_the_durability_checker() {
    let faults = Faults {
        ack_before_persist: true,
        ..Faults::default()
    };
    let (seed, failures) = caught(faults, "AckedWriteLost", 1..=6).expect("caught within 6 seeds");
    clean(seed);
    assert!(
        failures.iter().any(|f| f.contains("acknowledged")),
        "{failures:?}"
    );
}

#[test]
fn dropping_the_outbox_on_restart_is_caught_by_the_outbox_checker() {
    let faults = Faults {
        drop_outbox_on_restart: true,
        ..Faults::default()
    };
    let (seed, _) = caught(faults, "OutboxForgotten", 1..=6).expect("caught within 6 seeds");
    clean(seed);
}
