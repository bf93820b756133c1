//! Simulator speed (DESIGN §8): virtual seconds per wall second for 10 and for 32 hosts under
//! a steady write workload, and seeds per minute of a default sweep.
//!
//! - `sim_speed_10_nodes`, `sim_speed_32_nodes`: hosts connected in a ring with chords, every
//!   one following the collection, each host writing once every 10 virtual seconds on average
//!   (1 write/s in all at 10 hosts, 3.2 at 32; every write is merged by every host), for 10
//!   virtual minutes (HYPHA_BENCH_SCALE scales the duration);
//! - `sim_speed_10_nodes_heavy`: the same at 5 writes/s in all, for reference;
//! - `sweep_seeds_per_min`: `hypha-sim sweep` with its defaults (2–7 hosts, 10 virtual minutes
//!   of faults, then liveness) over 20 seeds (scaled, at least 2).
//!
//! `cargo bench -p hypha-sim --bench sim`; `HYPHA_BENCH_SCALE=0.05` shrinks it.

// A benchmark reads the clock.
#![allow(clippy::disallowed_methods)]

#[path = "../../crdt/benches/report.rs"]
mod report;

use std::time::{Duration, Instant};

use hypha_sim::sweep;
use hypha_sim::{Options, World};
use serde_json::json;

fn speed(nodes: u16, every: Duration, virtual_time: Duration) -> (f64, u64, u64) {
    let mut w = World::new(Options::seeded(7, usize::from(nodes)));
    for i in 0..nodes {
        w.schema(i, "type Items { Name: String  Value: Int }")
            .expect("schema");
    }
    for i in 0..nodes {
        w.connect(i, (i + 1) % nodes);
        if nodes > 4 {
            w.connect(i, (i + nodes / 2) % nodes);
        }
        w.follow_collections(i, &["Items"]).expect("follow");
    }
    w.run_for(Duration::from_secs(2));
    let started = Instant::now();
    let t0 = w.elapsed();
    let mut k: u64 = 0;
    let mut docs = Vec::new();
    while w.elapsed() - t0 < virtual_time {
        let i = (k.wrapping_mul(0x9e37_79b9) % u64::from(nodes)) as u16;
        if k.is_multiple_of(4) || docs.is_empty() {
            let d = w
                .create(i, "Items", json!({"Name": format!("i{k}"), "Value": k}))
                .expect("create");
            docs.push(d);
        } else {
            let d = docs[(k as usize * 7) % docs.len()];
            w.update(i, d, json!({"Value": k})).expect("update");
        }
        k += 1;
        w.run_for(every);
    }
    w.wait().expect("quiescent");
    let simulated = w.elapsed() - t0;
    let wall = started.elapsed();
    assert!(w.check().is_empty(), "{:?}", w.violations());
    (
        simulated.as_secs_f64() / wall.as_secs_f64(),
        k,
        w.traffic().messages,
    )
}

fn main() {
    let scale: f64 = std::env::var("HYPHA_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut report = report::Report::new();
    let minutes = Duration::from_secs_f64((600.0 * scale).max(10.0));
    for (nodes, every, name) in [
        (10u16, Duration::from_millis(1000), "sim_speed_10_nodes"),
        (32, Duration::from_millis(312), "sim_speed_32_nodes"),
        (10, Duration::from_millis(200), "sim_speed_10_nodes_heavy"),
    ] {
        let (x, writes, messages) = speed(nodes, every, minutes);
        println!(
            "{nodes} hosts, {:.0} virtual s, {writes} writes, {messages} records: {x:.0}x real time",
            minutes.as_secs_f64()
        );
        report.add(name, x, "x");
    }
    let seeds = ((20.0 * scale) as u64).max(2);
    let config = sweep::Config::default();
    let started = Instant::now();
    let mut failed = 0;
    for seed in 1..=seeds {
        if !sweep::run_seed(seed, &config, sweep::options(seed, &config)).passed {
            failed += 1;
        }
    }
    let per_min = seeds as f64 / started.elapsed().as_secs_f64() * 60.0;
    println!("sweep: {seeds} seeds ({failed} failed) at {per_min:.0} seeds/min");
    assert_eq!(
        failed, 0,
        "sweep seeds failed; replay them with hypha-sim sweep"
    );
    report.add("sweep_seeds_per_min", per_min, "seeds/min");
    report.finish("sim");
}
