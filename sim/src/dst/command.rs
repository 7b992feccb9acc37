//! The `allex-sim dst` command: run seeds, report, shrink what fails.

use super::{run, shrink, trace, Config};
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;

/// Options of `allex-sim dst`.
#[derive(Debug, Args)]
pub struct DstArgs {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events per seed in the fault phase (a quiet phase follows).
    #[arg(long, default_value_t = 100_000)]
    pub steps: u64,
    /// Masters.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Needs.
    #[arg(long, default_value_t = 8)]
    pub needs: usize,
    /// Seeds to run: seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Print this many events before a failure (of the shrunk replay).
    #[arg(long, default_value_t = 0)]
    pub tail: usize,
    /// Most replays spent shrinking one failure.
    #[arg(long, default_value_t = 300)]
    pub shrink_budget: u32,
    /// Print every seed's trace, not only the failing ones.
    #[arg(long)]
    pub verbose: bool,
}

/// Runs the seeds; fails if any seed breaks an invariant.
pub fn main(args: DstArgs) -> ExitCode {
    let started = Instant::now();
    let mut events = 0u64;
    let mut failed = Vec::new();
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let cfg = Config {
            seed,
            steps: args.steps,
            masters: args.masters.max(1),
            needs: args.needs.max(1),
        };
        let out = run(&cfg, 0);
        events += out.events;
        if out.violation.is_none() {
            if args.verbose || args.seeds == 1 {
                print!("{}", trace(&cfg, &out));
            }
            continue;
        }
        print!("{}", trace(&cfg, &out));
        failed.push(seed);
        if args.shrink_budget == 0 && args.tail > 0 {
            let again = run(&cfg, args.tail);
            println!("last {} events (heartbeats left out):", again.tail.len());
            for line in &again.tail {
                println!("  {line}");
            }
            continue;
        }
        if let Some(s) = shrink(&cfg, &out, args.shrink_budget) {
            println!(
                "shrunk in {} replays to {} fault(s), fault phase ending at {} ms:",
                s.tries,
                s.ops.len(),
                s.end_ms
            );
            for o in &s.ops {
                println!("  {:>8}ms {}", o.at_ms, o.op);
            }
            println!(
                "  -> at {} ms: {}: {}",
                s.violation.at_ms, s.violation.kind, s.violation.detail
            );
            if args.tail > 0 {
                let again = super::replay(&cfg, &s.ops, s.end_ms, args.tail);
                println!(
                    "last {} events of the shrunk replay (heartbeats left out):",
                    again.tail.len()
                );
                for line in &again.tail {
                    println!("  {line}");
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{} seed(s), {} failed{}; {} events in {:.2} s: {:.0} events/s, {:.0} seeds/min",
        args.seeds,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (seeds {failed:?})")
        },
        events,
        secs,
        events as f64 / secs,
        args.seeds as f64 * 60.0 / secs
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
