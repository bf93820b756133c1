//! Seed sweeps: one random run per seed, everything drawn from it.
//!
//! A seed draws the number of hosts, their NATs (a public relay joins whenever a host is
//! behind a NAT), link latency, fsync latency, a connected topology of configured peers
//! (`--peers`: wanted again after every restart), who follows which
//! collection, replicators, and a schedule of writes and faults: symmetric, one-way and
//! dropping partitions, loss bursts on single links, heals, crashes (unsynced writes lost),
//! clean stops (the host stays offline until a later start), restarts, and swizzle-clogs (a
//! host's links held one by one, released in random order); some links get a higher latency
//! ceiling than the rest. The **safety phase** runs that schedule with the durability, scope and bound
//! checkers after every action. The **liveness phase** heals everything, starts every host,
//! and must reach quiescence within [`LIVENESS_BUDGET`], after which every checker runs,
//! convergence included.

use std::io::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::net::{HostSpec, Nat};
use crate::rng::Rng;
use crate::world::{Options, PartitionMode, World};

/// Virtual time the liveness phase may take to converge.
pub const LIVENESS_BUDGET: Duration = Duration::from_secs(2 * 3600);

const ITEMS: &str = "type Items { Name: String  Value: Int }";
const NOTES: &str = "type Notes { Text: String  Rev: Int }";

/// What a sweep draws from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hosts per run, inclusive bounds.
    pub nodes: (u64, u64),
    /// Virtual time of the safety phase.
    pub safety: Duration,
    /// Run every seed twice and compare event-log hashes.
    pub check_determinism: bool,
    /// Deliberate faults in every coordinator (to see the checkers catch them).
    pub faults: hypha_protocols::node::Faults,
    /// Keep and print every seed's whole event log.
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nodes: (2, 7),
            safety: Duration::from_secs(600),
            check_determinism: false,
            faults: hypha_protocols::node::Faults::default(),
            trace: false,
        }
    }
}

/// One seed's run.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Hosts.
    pub nodes: usize,
    /// The NAT mix, as `public/cone/symmetric` counts.
    pub nats: (usize, usize, usize),
    /// No failure.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
    /// Virtual time the liveness phase took to converge: from healing to the last document
    /// change (quiescence also waits for an anti-entropy round).
    pub converge: Option<Duration>,
    /// Faults injected.
    pub faults: u64,
    /// Writes made.
    pub writes: u64,
    /// Records sent.
    pub messages: u64,
    /// Event-log hash.
    pub hash: u64,
    /// The whole event log, with [`Config::trace`].
    pub log: Vec<String>,
    /// Wall time.
    pub wall: Duration,
}

/// The options a sweep seed runs with.
pub fn options(seed: u64, config: &Config) -> Options {
    let mut r = Rng::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let n = r.range(config.nodes.0, config.nodes.1) as usize;
    let mut o = Options::seeded(seed, n);
    let mut hosts = Vec::new();
    for _ in 0..n {
        let nat = match r.below(100) {
            0..60 => Nat::Public,
            60..85 => Nat::Cone,
            _ => Nat::Symmetric,
        };
        hosts.push(HostSpec {
            nat,
            relay: false,
            hot_docs: if r.chance(0.3) { 16 } else { 0 },
        });
    }
    if hosts.iter().any(|h| h.nat != Nat::Public) {
        hosts[0].nat = Nat::Public;
        hosts[0].relay = true;
    }
    o.hosts = hosts;
    let lo = r.range(1, 5);
    o.latency = (
        Duration::from_millis(lo),
        Duration::from_millis(lo + r.range(0, 40)),
    );
    let f = r.range(1, 10);
    o.fsync = (
        Duration::from_millis(f),
        Duration::from_millis(f + r.range(0, 30)),
    );
    o.tick = Duration::from_millis(20);
    o.anti_entropy = Duration::from_secs(r.range(10, 60));
    o.wait_budget = LIVENESS_BUDGET;
    o.max_outbox_per_peer = if r.chance(0.2) {
        r.range(2, 20)
    } else {
        10_000
    };
    o.faults = config.faults;
    o.trace = config.trace;
    o
}

/// Runs one seed.
pub fn run_seed(seed: u64, config: &Config, base: Options) -> SeedOutcome {
    #[allow(clippy::disallowed_methods)] // Wall time for the report only.
    let wall = std::time::Instant::now();
    let mut r = Rng::new(seed ^ 0x0ddb_a11c_0ffe_e000);
    let nats = (
        base.hosts.iter().filter(|h| h.nat == Nat::Public).count(),
        base.hosts.iter().filter(|h| h.nat == Nat::Cone).count(),
        base.hosts
            .iter()
            .filter(|h| h.nat == Nat::Symmetric)
            .count(),
    );
    let mut w = World::new(base);
    let n = w.ids().count() as u16;
    let mut failures = Vec::new();
    let fail = |f: String, failures: &mut Vec<String>| {
        if failures.len() < 20 {
            failures.push(f);
        }
    };
    // Some links are slower than the rest.
    for _ in 0..r.below(u64::from(n)) {
        let (a, b) = (r.below(u64::from(n)) as u16, r.below(u64::from(n)) as u16);
        if a != b {
            w.set_link_max_latency(a, b, Duration::from_millis(r.range(20, 300)));
        }
    }
    // Setup: schema, topology, follows, replicators.
    for i in 0..n {
        if let Err(e) = w.schema(i, ITEMS).and_then(|()| w.schema(i, NOTES)) {
            fail(format!("setup: schema on n{i}: {e}"), &mut failures);
        }
    }
    for i in 1..n {
        let j = r.below(u64::from(i)) as u16;
        w.configure_peer(i, j);
    }
    for _ in 0..r.below(u64::from(n)) {
        let (a, b) = (r.below(u64::from(n)) as u16, r.below(u64::from(n)) as u16);
        if a != b {
            w.configure_peer(a, b);
        }
    }
    for i in 0..n {
        let mut colls = Vec::new();
        if r.chance(0.7) {
            colls.push("Items");
        }
        if r.chance(0.3) {
            colls.push("Notes");
        }
        if let Err(e) = w.follow_collections(i, &colls) {
            fail(format!("setup: follow on n{i}: {e}"), &mut failures);
        }
    }
    for _ in 0..r.range(1, 3) {
        let (a, b) = (r.below(u64::from(n)) as u16, r.below(u64::from(n)) as u16);
        if a != b {
            let colls: &[&str] = if r.chance(0.5) {
                &["Items"]
            } else {
                &["Items", "Notes"]
            };
            if let Err(e) = w.set_replicator(a, b, colls, &[]) {
                fail(format!("setup: replicator n{a}→n{b}: {e}"), &mut failures);
            }
        }
    }
    // Safety phase.
    let end = w.elapsed() + config.safety;
    let (mut faults, mut writes, mut docs) = (0u64, 0u64, 0u64);
    while w.elapsed() < end && failures.len() < 20 {
        let i = r.below(u64::from(n)) as u16;
        match r.below(100) {
            0..55 => {
                if !w.is_running(i) {
                    continue;
                }
                let coll = if r.chance(0.7) { "Items" } else { "Notes" };
                let held: Vec<_> = w
                    .docs_held(i)
                    .into_iter()
                    .filter(|(_, c)| c == coll)
                    .map(|(d, _)| d)
                    .filter(|d| {
                        w.with_store(i, |s| s.state(d).ok().flatten().is_some_and(|s| !s.deleted))
                    })
                    .collect();
                let result = if held.is_empty() || r.chance(0.3) {
                    docs += 1;
                    let doc = if coll == "Items" {
                        json!({"Name": format!("item{docs}"), "Value": r.below(1000)})
                    } else {
                        json!({"Text": format!("note{docs}"), "Rev": 0})
                    };
                    w.create(i, coll, doc).map(drop)
                } else {
                    let d = held[r.below(held.len() as u64) as usize];
                    if r.chance(0.05) {
                        w.delete(i, d)
                    } else if coll == "Items" {
                        w.update(i, d, json!({"Value": r.below(1000)}))
                    } else {
                        w.update(i, d, json!({"Rev": r.below(1000)}))
                    }
                };
                // A host that crashes meanwhile fails its write: that is the point.
                if let Err(e) = result
                    && w.is_running(i)
                {
                    fail(format!("write on n{i}: {e}"), &mut failures);
                }
                writes += 1;
            }
            55..63 => {
                faults += 1;
                let group: Vec<u16> = (0..n).filter(|_| r.chance(0.5)).collect();
                let rest: Vec<u16> = (0..n).filter(|h| !group.contains(h)).collect();
                let mode = match r.below(3) {
                    0 => PartitionMode::Hold,
                    1 => PartitionMode::Drop,
                    _ => PartitionMode::OneWay,
                };
                if !group.is_empty() && !rest.is_empty() {
                    w.partition(&group, &rest, mode);
                }
            }
            63..75 => w.heal(),
            75..80 => {
                faults += 1;
                w.crash(i);
            }
            80..84 => {
                faults += 1;
                w.stop(i);
                // A long offline period: the host stays down while the others go on.
            }
            84..92 => w.start(i),
            92..95 => {
                faults += 1;
                w.restart(i);
            }
            95..97 => {
                // A loss burst on one link: everything sent across it for a moment is lost.
                faults += 1;
                let o = r.below(u64::from(n)) as u16;
                if o != i && !w.partitioned() {
                    w.partition(&[i], &[o], PartitionMode::Drop);
                    w.run_for(Duration::from_millis(r.range(50, 3000)));
                    w.heal();
                }
            }
            _ => {
                // Swizzle-clog: hold host i's links one by one, then release them in a random
                // order.
                faults += 1;
                let mut others: Vec<u16> = (0..n).filter(|&h| h != i).collect();
                for &o in &others {
                    w.partition(&[i], &[o], PartitionMode::Hold);
                    w.run_for(Duration::from_millis(r.range(100, 3000)));
                }
                shuffle(&mut r, &mut others);
                for o in others {
                    w.release(i, o);
                    w.run_for(Duration::from_millis(r.range(100, 3000)));
                }
            }
        }
        w.run_for(Duration::from_millis(r.range(100, 5_000)));
        for v in w.check_durable() {
            fail(format!("safety: {v}"), &mut failures);
        }
    }
    // Liveness phase.
    w.heal();
    for i in 0..n {
        w.start(i);
    }
    w.note(format_args!("liveness phase"));
    let start = w.elapsed();
    let converge = match w.wait() {
        Ok(()) => Some(w.last_change().saturating_sub(start)),
        Err(e) => {
            fail(format!("liveness: {e}"), &mut failures);
            None
        }
    };
    for v in w.check() {
        let text = format!("liveness: {v}");
        if !failures.contains(&text) {
            fail(text, &mut failures);
        }
    }
    // Violations found earlier (inside waits) are reported too.
    for v in w.violations() {
        let text = format!("{v}");
        if !failures.iter().any(|f| f.ends_with(&text)) {
            fail(format!("safety: {text}"), &mut failures);
        }
    }
    SeedOutcome {
        seed,
        nodes: usize::from(n),
        nats,
        passed: failures.is_empty(),
        failures,
        converge,
        faults,
        writes,
        messages: w.traffic().messages,
        hash: w.log().hash(),
        log: if config.trace {
            w.log().tail()
        } else {
            Vec::new()
        },
        wall: wall.elapsed(),
    }
}

fn shuffle(r: &mut Rng, v: &mut [u16]) {
    for i in (1..v.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// The command that replays `seed` alone with `config`.
pub fn replay_command(seed: u64, config: &Config) -> String {
    let nodes = if config.nodes.0 == config.nodes.1 {
        config.nodes.0.to_string()
    } else {
        format!("{}..{}", config.nodes.0, config.nodes.1)
    };
    let f = config.faults;
    let faults: String = [
        (f.follow_everything, "follow-everything"),
        (f.ignore_replicator_scope, "ignore-replicator-scope"),
        (f.ack_before_persist, "ack-before-persist"),
        (f.drop_outbox_on_restart, "drop-outbox-on-restart"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| format!(" --fault {name}"))
    .collect();
    format!(
        "cargo run --release -p hypha-sim -- sweep --seeds {seed}..{seed} --nodes {nodes} --minutes {}{faults}",
        config.safety.as_secs() / 60
    )
}

/// Runs seeds `from..=to`, with a progress line on stderr, then prints a table and the
/// replay command of each failing seed. Returns whether every seed passed.
pub fn run_cli((from, to): (u64, u64), config: &Config) -> bool {
    println!("seeds {from}..{to}");
    #[allow(clippy::disallowed_methods)] // Wall time for the progress line only.
    let started = std::time::Instant::now();
    let total = to - from + 1;
    let mut outcomes = Vec::new();
    let mut failed = 0u64;
    for (k, seed) in (from..=to).enumerate() {
        let mut out = run_seed(seed, config, options(seed, config));
        if config.check_determinism {
            let again = run_seed(seed, config, options(seed, config));
            if again.hash != out.hash {
                out.passed = false;
                out.failures.push(format!(
                    "determinism: event-log hash {:016x} then {:016x}",
                    out.hash, again.hash
                ));
            }
        }
        if !out.passed {
            failed += 1;
        }
        for line in &out.log {
            println!("{}", line.replace(" n65535 ", " "));
        }
        let done = k as u64 + 1;
        let width = 30;
        let filled = (done * width / total) as usize;
        eprint!(
            "\r[{}{}] {done}/{total} seeds, {failed} failed, {:.0} s",
            "#".repeat(filled),
            "-".repeat(width as usize - filled),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        outcomes.push(out);
    }
    eprintln!();
    println!(
        "{:>8} {:>5} {:>9} {:>6} {:>6} {:>9} {:>10} {:>7}  result",
        "seed", "nodes", "p/c/s", "writes", "faults", "messages", "converge", "wall"
    );
    for o in &outcomes {
        println!(
            "{:>8} {:>5} {:>9} {:>6} {:>6} {:>9} {:>10} {:>6.2}s  {}",
            o.seed,
            o.nodes,
            format!("{}/{}/{}", o.nats.0, o.nats.1, o.nats.2),
            o.writes,
            o.faults,
            o.messages,
            o.converge
                .map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
            o.wall.as_secs_f64(),
            if o.passed { "ok" } else { "FAILED" }
        );
    }
    println!(
        "{} seeds, {} passed, {failed} failed, {:.1} s wall",
        total,
        total - failed,
        started.elapsed().as_secs_f64()
    );
    for o in outcomes.iter().filter(|o| !o.passed) {
        println!("\nseed {} failed:", o.seed);
        for f in &o.failures {
            println!("  {f}");
        }
        println!("  replay: {}", replay_command(o.seed, config));
    }
    failed == 0
}
