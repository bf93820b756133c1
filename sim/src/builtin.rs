//! The built-in scenarios: every story of SCENARIOS.md, the NAT stories and the offline
//! queue, embedded from `sim/scenarios/*.toml`.

use crate::scenario::{Scenario, ScenarioError};

/// (name, TOML text) of every built-in scenario.
pub const BUILTIN: &[(&str, &str)] = &[
    ("A1", include_str!("../scenarios/a1.toml")),
    ("A10", include_str!("../scenarios/a10.toml")),
    ("A11", include_str!("../scenarios/a11.toml")),
    ("A2", include_str!("../scenarios/a2.toml")),
    ("A3", include_str!("../scenarios/a3.toml")),
    ("A4", include_str!("../scenarios/a4.toml")),
    ("A5", include_str!("../scenarios/a5.toml")),
    ("A6", include_str!("../scenarios/a6.toml")),
    ("A7", include_str!("../scenarios/a7.toml")),
    ("A8", include_str!("../scenarios/a8.toml")),
    ("A9", include_str!("../scenarios/a9.toml")),
    ("B1", include_str!("../scenarios/b1.toml")),
    ("C1", include_str!("../scenarios/c1.toml")),
    ("C2", include_str!("../scenarios/c2.toml")),
    ("D1", include_str!("../scenarios/d1.toml")),
    ("D2", include_str!("../scenarios/d2.toml")),
    ("E1", include_str!("../scenarios/e1.toml")),
    ("E10", include_str!("../scenarios/e10.toml")),
    ("E2", include_str!("../scenarios/e2.toml")),
    ("E3", include_str!("../scenarios/e3.toml")),
    ("E4", include_str!("../scenarios/e4.toml")),
    ("E5", include_str!("../scenarios/e5.toml")),
    ("E6", include_str!("../scenarios/e6.toml")),
    ("E7", include_str!("../scenarios/e7.toml")),
    ("E8", include_str!("../scenarios/e8.toml")),
    ("E9", include_str!("../scenarios/e9.toml")),
    ("F1", include_str!("../scenarios/f1.toml")),
    ("F2", include_str!("../scenarios/f2.toml")),
    ("F3", include_str!("../scenarios/f3.toml")),
    ("F4", include_str!("../scenarios/f4.toml")),
    ("F5", include_str!("../scenarios/f5.toml")),
    ("G1", include_str!("../scenarios/g1.toml")),
    ("G1P", include_str!("../scenarios/g1p.toml")),
    ("G2", include_str!("../scenarios/g2.toml")),
    ("G3", include_str!("../scenarios/g3.toml")),
    ("H1", include_str!("../scenarios/h1.toml")),
    ("I1-OFF", include_str!("../scenarios/i1-off.toml")),
    ("I1", include_str!("../scenarios/i1.toml")),
    ("J1", include_str!("../scenarios/j1.toml")),
    ("NAT-PUNCH", include_str!("../scenarios/nat-punch.toml")),
    (
        "NAT-RELAY-PARTITION",
        include_str!("../scenarios/nat-relay-partition.toml"),
    ),
    ("NAT-RELAYED", include_str!("../scenarios/nat-relayed.toml")),
    (
        "NAT-SYMMETRIC",
        include_str!("../scenarios/nat-symmetric.toml"),
    ),
    (
        "OFFLINE-QUEUE",
        include_str!("../scenarios/offline-queue.toml"),
    ),
];

/// The built-in scenario named `name` (case-insensitive).
///
/// # Errors
/// A parse error of the embedded file (a bug, caught by the tests).
pub fn builtin(name: &str) -> Option<Result<Scenario, ScenarioError>> {
    BUILTIN
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, text)| Scenario::parse(n, text))
}
