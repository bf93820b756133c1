//! Every built-in scenario (SCENARIOS.md, NAT, offline queue) passes with its own seed.

use hypha_sim::{BUILTIN, builtin};

fn run(name: &str) {
    let s = builtin(name).expect("built in").expect("parses");
    let out = s.run(s.options(s.seed));
    assert!(
        out.passed,
        "{name} failed (seed {}):\n{}\n--- log tail ---\n{}",
        out.seed,
        out.failures.join("\n"),
        out.log[out.log.len().saturating_sub(60)..].join("\n")
    );
}

#[test]
fn every_builtin_parses() {
    for (name, _) in BUILTIN {
        builtin(name)
            .expect("listed")
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

macro_rules! scenarios {
    ($($f:ident => $name:literal,)*) => {$(
        #[test]
        fn $f() {
            run($name);
        }
    )*};
}

scenarios! {
    a1 => "A1", a2 => "A2", a3 => "A3", a4 => "A4", a5 => "A5", a6 => "A6", a7 => "A7",
    a8 => "A8", a9 => "A9", a10 => "A10", a11 => "A11", b1 => "B1", c1 => "C1", c2 => "C2",
    d1 => "D1", d2 => "D2", e1 => "E1", e2 => "E2", e3 => "E3", e4 => "E4", e5 => "E5",
    e6 => "E6", e7 => "E7", e8 => "E8", e9 => "E9", e10 => "E10", f1 => "F1", f2 => "F2",
    f3 => "F3", f4 => "F4", f5 => "F5", g1 => "G1", g1_pcounter => "G1P", g2 => "G2",
    g3 => "G3", h1 => "H1", i1 => "I1", i1_off => "I1-OFF", j1 => "J1",
    nat_relayed => "NAT-RELAYED", nat_punch => "NAT-PUNCH", nat_symmetric => "NAT-SYMMETRIC",
    nat_relay_partition => "NAT-RELAY-PARTITION", offline_queue => "OFFLINE-QUEUE",
}
