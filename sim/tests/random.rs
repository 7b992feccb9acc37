//! Generated operation sequences against the real binaries: invariants after
//! every operation, convergence after repair. A failure names its seed;
//! replay it with `allex-sim random --seed N --steps 25`.

use allex_sim::ops::Op;
use allex_sim::scenarios::{run_ops, run_seed, ScenarioOptions};

fn generated(seed: u64) {
    let opts = ScenarioOptions {
        masters: 3,
        ..ScenarioOptions::default()
    };
    if let Err(e) = run_seed(&opts, seed, 25) {
        panic!("seed {seed}: {e}");
    }
}

#[test]
fn generated_run_seed_1_keeps_the_invariants_and_converges() {
    generated(1);
}

#[test]
fn generated_run_seed_2_keeps_the_invariants_and_converges() {
    generated(2);
}

#[test]
fn generated_run_seed_3_keeps_the_invariants_and_converges() {
    generated(3);
}

#[test]
fn a_hand_written_sequence_of_every_fault_converges() {
    let opts = ScenarioOptions {
        masters: 2,
        ..ScenarioOptions::default()
    };
    let add = |i: u32| Op::AddNeed {
        instance: format!("h{i}"),
        crash_after_ms: None,
    };
    let ops = vec![
        add(0),
        add(1),
        Op::AddNeed {
            instance: "loop".into(),
            crash_after_ms: Some(100),
        },
        Op::KillChild {
            instance: "h0".into(),
        },
        Op::CutLink { master: 0 },
        add(2),
        // Past the grace: master 0's needs move to master 1.
        Op::Pause { ms: 2500 },
        Op::FreezeLink { master: 1 },
        Op::RestartLan { graceful: false },
        Op::RestoreLink { master: 0 },
        Op::KillMaster { master: 1 },
        Op::RemoveNeed {
            instance: "h1".into(),
        },
        Op::RestartMaster { master: 1 },
        Op::RestartLan { graceful: true },
        add(3),
    ];
    let report = run_ops(&opts, &ops).unwrap_or_else(|e| panic!("{e}"));
    eprint!("{report}");
    assert_eq!(report.steps.len(), ops.len() + 1);
}
