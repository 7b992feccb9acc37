//! Issue 5: property-tested operation sequences over real processes and real
//! sockets. proptest generates sequences of operations (needs added and
//! removed, children and masters killed, links cut and frozen, port ranges
//! shrunk, masters added, the lan manager restarted); each case runs on a
//! fresh cluster (one lan manager, two masters behind proxies) with the
//! invariants and the model check after every operation, then repairs every
//! fault and expects every stable need to run exactly once. A failing case
//! shrinks to a short sequence, printed as an `allex-sim replay` command.
//!
//! `ALLEX_PROPTEST_CASES` (default 10) sets the number of cases,
//! `ALLEX_PROPTEST_SHRINK_ITERS` (default 24) bounds shrinking, since every
//! shrink step starts a cluster; `ALLEX_PROPTEST_DEADLINE_MS` (default
//! 15000) bounds each wait, and so how long a failing case takes. Failures are not persisted to the source
//! tree: the printed sequence is the regression to replay.

use allex_sim::ops::Op;
use allex_sim::scenarios::{run_ops, ScenarioOptions};
use allex_sim::strategy;
use proptest::prelude::*;
use std::time::Duration;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: env_u32("ALLEX_PROPTEST_CASES", 10),
        max_shrink_iters: env_u32("ALLEX_PROPTEST_SHRINK_ITERS", 24),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs one generated sequence; the error says which step broke which
/// promise, and how to replay the sequence.
fn run_case(ops: &[Op]) -> Result<(), String> {
    let json = serde_json::to_string(ops).map_err(|e| e.to_string())?;
    eprintln!("case: {json}");
    let opts = ScenarioOptions {
        masters: 2,
        deadline: Duration::from_millis(env_u32("ALLEX_PROPTEST_DEADLINE_MS", 15_000).into()),
        ..ScenarioOptions::default()
    };
    match run_ops(&opts, ops) {
        Ok(report) => {
            eprint!("{report}");
            Ok(())
        }
        Err(e) => Err(format!(
            "{e}\n\nreplay: cargo run -q -p allex-sim -- replay --masters 2 '{json}'"
        )),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_operation_sequence_keeps_the_invariants_and_converges(
        ops in strategy::ops(2, 1..12)
    ) {
        if let Err(e) = run_case(&ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
