//! The deterministic simulator: the same seed gives the same trace, and a
//! CI-sized batch of seeds (24 of 30,000 events) keeps every invariant (raise it with
//! `ALLEX_DST_SEEDS` and `ALLEX_DST_STEPS`).

use allex_sim::dst::{run, shrink, trace, Config};

fn env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_byte_for_byte() {
    let cfg = Config {
        seed: 7,
        steps: 20_000,
        masters: 3,
        needs: 8,
    };
    let a = run(&cfg, 50);
    let b = run(&cfg, 50);
    assert!(a.events >= cfg.steps, "ran {} events", a.events);
    assert!(!a.ops.is_empty(), "faults were injected");
    assert_eq!(trace(&cfg, &a), trace(&cfg, &b));
    assert_eq!(a.tail, b.tail, "the last events are the same too");
    let other = run(
        &Config {
            seed: 8,
            ..cfg.clone()
        },
        0,
    );
    assert_ne!(a.digest, other.digest, "another seed is another run");
}

/// Runs seeds `first, first + step, ...` below `seeds + 1`; returns the
/// report of every failure (its trace, its shrunk faults, how to replay it).
fn batch(first: u64, step: usize) -> Vec<String> {
    let seeds = env("ALLEX_DST_SEEDS", 24);
    let steps = env("ALLEX_DST_STEPS", 30_000);
    let mut failures = Vec::new();
    for seed in (first..=seeds).step_by(step) {
        let cfg = Config {
            seed,
            steps,
            masters: 3,
            needs: 8,
        };
        let out = run(&cfg, 0);
        if out.violation.is_some() {
            let mut report = trace(&cfg, &out);
            if let Some(s) = shrink(&cfg, &out, 100) {
                report.push_str(&format!("shrunk to {} fault(s):\n", s.ops.len()));
                for o in &s.ops {
                    report.push_str(&format!("  {:>8}ms {}\n", o.at_ms, o.op));
                }
                report.push_str(&format!(
                    "  -> {}: {}\n",
                    s.violation.kind, s.violation.detail
                ));
            }
            report.push_str(&format!(
                "replay: allex-sim dst --seed {seed} --steps {steps} --tail 200\n"
            ));
            failures.push(report);
        }
    }
    failures
}

// The CI-sized batch (24 seeds of 30,000 events) in two halves, which the
// test harness runs on two threads.

#[test]
fn odd_seeds_of_the_ci_batch_keep_every_invariant() {
    let failures = batch(1, 2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn even_seeds_of_the_ci_batch_keep_every_invariant() {
    let failures = batch(2, 2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
