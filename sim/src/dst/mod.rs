//! `allex-sim dst`: the real lan manager and master state machines under a
//! simulated clock, network, processes and disk, in one thread.
//!
//! A seed fixes everything: the faults (drawn from one stream), the delays
//! and the children's behaviour (another), and the order of events (one
//! queue, ties broken by the order they were queued). The invariants are
//! checked after every event; a failure is replayed with its faults only,
//! shrunk by dropping faults while it still fails, and printed with its
//! seed so that `allex-sim dst --seed S` shows it again.

pub mod command;
pub mod ops;
pub mod rng;
pub mod world;

pub use ops::{Op, TimedOp};
pub use world::{Config, Outcome, Violation, World};

use std::fmt::Write as _;

/// Runs one seed, drawing its faults.
pub fn run(cfg: &Config, tail: usize) -> Outcome {
    World::new(cfg.clone(), None, tail).run()
}

/// Runs `cfg`'s seed with exactly `ops` as its faults and the fault phase
/// ending at `end_ms`.
pub fn replay(cfg: &Config, ops: &[TimedOp], end_ms: u64, tail: usize) -> Outcome {
    World::new(cfg.clone(), Some((ops, end_ms)), tail).run()
}

/// A failing run cut down to fewer faults that still break the same promise.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The faults left.
    pub ops: Vec<TimedOp>,
    /// Where the fault phase ends.
    pub end_ms: u64,
    /// What breaks with them.
    pub violation: Violation,
    /// Replays tried.
    pub tries: u32,
}

/// Drops faults while the replay still breaks the same invariant, and pulls
/// the end of the fault phase in to the failure; at most `budget` replays.
///
/// First every fault older than a window before the failure goes (the
/// window doubling from half a second until the failure comes back), since
/// what breaks is mostly made by the last few faults; then chunks of what
/// is left (halves, quarters, down to single faults).
pub fn shrink(cfg: &Config, failed: &Outcome, budget: u32) -> Option<Shrunk> {
    let first = failed.violation.clone()?;
    let kind = first.kind;
    // The violation of a replay of `ops`, if it is the same kind as the first.
    let again = |ops: &[TimedOp], end_ms: u64| {
        replay(cfg, ops, end_ms, 0)
            .violation
            .filter(|v| v.kind == kind)
    };
    let mut ops: Vec<TimedOp> = failed
        .ops
        .iter()
        .filter(|o| o.at_ms <= first.at_ms)
        .cloned()
        .collect();
    let mut end_ms = failed.fault_end_ms.min(first.at_ms + 1);
    let mut violation = first.clone();
    let mut tries = 1;
    match again(&ops, end_ms) {
        Some(v) => violation = v,
        None => {
            // Ending the fault phase early changed the outcome: keep the end.
            end_ms = failed.fault_end_ms;
            ops = failed.ops.clone();
        }
    }
    let failed_at = violation.at_ms;
    let mut window = 500;
    while tries < budget && ops.first().is_some_and(|o| o.at_ms + window < failed_at) {
        let trial: Vec<TimedOp> = ops
            .iter()
            .filter(|o| o.at_ms + window >= failed_at)
            .cloned()
            .collect();
        tries += 1;
        if let Some(v) = again(&trial, end_ms) {
            ops = trial;
            violation = v;
            break;
        }
        window *= 2;
    }
    let mut chunk = ops.len().div_ceil(2).max(1);
    while tries < budget {
        let mut i = 0;
        let mut progressed = false;
        while i < ops.len() && tries < budget {
            let mut trial = ops.clone();
            let to = (i + chunk).min(trial.len());
            trial.drain(i..to);
            tries += 1;
            match again(&trial, end_ms) {
                Some(v) => {
                    ops = trial;
                    violation = v;
                    progressed = true;
                }
                None => i += chunk,
            }
        }
        if chunk == 1 && !progressed {
            break;
        }
        if !progressed {
            chunk = chunk.div_ceil(2);
        }
    }
    Some(Shrunk {
        ops,
        end_ms,
        violation,
        tries,
    })
}

/// The trace of a run: its faults, its size and its digest. Two runs of
/// one seed print the same bytes.
pub fn trace(cfg: &Config, out: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "seed {} masters {} needs {} steps {}",
        cfg.seed, cfg.masters, cfg.needs, cfg.steps
    );
    for o in &out.ops {
        let _ = writeln!(s, "  {:>8}ms {}", o.at_ms, o.op);
    }
    let _ = writeln!(
        s,
        "events {} simulated {} ms, faults until {} ms, digest {:016x}",
        out.events, out.sim_ms, out.fault_end_ms, out.digest
    );
    match &out.violation {
        None => s.push_str("ok: every invariant held, and it converged\n"),
        Some(v) => {
            let _ = writeln!(s, "FAILED at {} ms: {}: {}", v.at_ms, v.kind, v.detail);
        }
    }
    s
}
