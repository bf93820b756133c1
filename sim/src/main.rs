//! `hypha-sim`: run Hypha's deterministic network simulator from the command line.
//!
//! ```sh
//! hypha-sim list                                   # the built-in scenarios
//! hypha-sim run A11 --seed 7 --trace               # one scenario (built-in name or .toml file)
//! hypha-sim sweep --seeds 1..200                   # random topologies, workloads and faults
//! hypha-sim sweep --seeds 42..42 --nodes 5         # replay one sweep seed
//! ```
//!
//! The seed is printed first; exit status is non-zero when anything fails.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hypha_sim::{BUILTIN, Scenario, builtin, sweep};

#[derive(Parser)]
#[command(
    name = "hypha-sim",
    about = "Hypha's deterministic network simulator",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lists the built-in scenarios.
    List,
    /// Runs one scenario: a built-in name (see `list`) or a TOML file.
    Run {
        /// Built-in name or path to a scenario file.
        scenario: String,
        /// Seed (default: the scenario's own).
        #[arg(long)]
        seed: Option<u64>,
        /// Print the whole event log.
        #[arg(long)]
        trace: bool,
        /// Run twice and compare the event-log hashes.
        #[arg(long)]
        check_determinism: bool,
    },
    /// Runs random scenarios, one per seed: a safety phase with faults, then a liveness phase
    /// with the network healed.
    Sweep {
        /// Seeds, `A..B` inclusive.
        #[arg(long, default_value = "1..20")]
        seeds: String,
        /// Hosts per run, `A..B` inclusive (2..7 by default); a single number fixes it.
        #[arg(long, default_value = "2..7")]
        nodes: String,
        /// Virtual minutes of the safety phase.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Run each seed twice and compare the event-log hashes.
        #[arg(long)]
        check_determinism: bool,
        /// Print each seed's whole event log (for replaying one seed).
        #[arg(long)]
        trace: bool,
        /// Break the coordinator on purpose, to see a checker catch it: follow-everything,
        /// ignore-replicator-scope, ack-before-persist or drop-outbox-on-restart.
        #[arg(long)]
        fault: Vec<String>,
    },
}

fn range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (a, b.trim_start_matches('=')),
        None => (s, s),
    };
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: expected A..B"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: expected A..B"))?;
    if a > b {
        return Err(format!("`{s}`: empty range"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::List => {
            for (name, text) in BUILTIN {
                let desc = Scenario::parse(name, text)
                    .map(|s| s.description)
                    .unwrap_or_else(|e| format!("(does not parse: {e})"));
                println!("{name:<20} {desc}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Run {
            scenario,
            seed,
            trace,
            check_determinism,
        } => run(&scenario, seed, trace, check_determinism),
        Cmd::Sweep {
            seeds,
            nodes,
            minutes,
            check_determinism,
            fault,
            trace,
        } => {
            let mut faults = hypha_protocols::node::Faults::default();
            for f in &fault {
                match f.as_str() {
                    "follow-everything" => faults.follow_everything = true,
                    "ignore-replicator-scope" => faults.ignore_replicator_scope = true,
                    "ack-before-persist" => faults.ack_before_persist = true,
                    "drop-outbox-on-restart" => faults.drop_outbox_on_restart = true,
                    other => {
                        eprintln!("error: unknown fault `{other}`");
                        return ExitCode::from(2);
                    }
                }
            }
            let (seeds, nodes) = match (range(&seeds), range(&nodes)) {
                (Ok(s), Ok(n)) => (s, n),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if nodes.0 < 2 || nodes.1 > 64 {
                eprintln!("error: --nodes must lie within 2..64");
                return ExitCode::from(2);
            }
            let config = sweep::Config {
                nodes,
                safety: Duration::from_secs(minutes * 60),
                check_determinism,
                faults,
                trace,
            };
            if sweep::run_cli(seeds, &config) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(name: &str, seed: Option<u64>, trace: bool, check_determinism: bool) -> ExitCode {
    let parsed = match builtin(name) {
        Some(p) => p,
        None => match std::fs::read_to_string(name) {
            Ok(text) => Scenario::parse(name, &text),
            Err(e) => {
                eprintln!(
                    "error: `{name}` is no built-in scenario (see `hypha-sim list`) and cannot be read: {e}"
                );
                return ExitCode::from(2);
            }
        },
    };
    let s = match parsed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = seed.unwrap_or(s.seed);
    println!("seed {seed}");
    println!("scenario {}: {}", s.name, s.description);
    let mut options = s.options(seed);
    options.trace = trace;
    let out = s.run(options.clone());
    let timeline: Vec<&String> = if trace {
        out.log.iter().collect()
    } else {
        out.log.iter().filter(|l| l.contains(" n65535 ")).collect()
    };
    println!("--- timeline ---");
    for l in timeline {
        println!("{}", l.replace(" n65535 ", " "));
    }
    println!("--- report ---");
    println!("passed              {}", out.passed);
    println!(
        "converged           {}",
        out.converge.is_some() && out.passed
    );
    match out.converge {
        Some(d) => println!(
            "time to converge    {:.3} s (virtual: from the last wait's start to the last document change)",
            d.as_secs_f64()
        ),
        None => println!("time to converge    - (no wait)"),
    }
    println!("virtual time        {:.3} s", out.simulated.as_secs_f64());
    println!("messages            {}", out.messages);
    println!("bytes               {}", out.bytes);
    println!(
        "frames              backfill {}, replicator {}, head exchange {}; gossip {}",
        out.frames[0], out.frames[1], out.frames[2], out.gossip
    );
    println!("head-exchange       {} sessions", out.head_sync_sessions);
    println!("backfill            {} requests", out.backfill_requests);
    println!(
        "hole punches        {} direct, {} stayed relayed",
        out.punches.0, out.punches.1
    );
    println!("wall time           {:.3} s", out.wall.as_secs_f64());
    println!("event log           {:016x}", out.log_hash);
    let mut ok = out.passed;
    for f in &out.failures {
        println!("FAIL {f}");
    }
    if check_determinism {
        let again = s.run(options);
        let same = again.log_hash == out.log_hash;
        println!(
            "determinism         {} ({:016x} vs {:016x})",
            if same {
                "same event log"
            } else {
                "DIFFERENT event logs"
            },
            out.log_hash,
            again.log_hash
        );
        ok &= same;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
