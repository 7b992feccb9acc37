//! proptest strategies over operation sequences, so a failing sequence
//! shrinks to a short one that still breaks a promise.
//!
//! Instance names come from a small pool, so removals and kills often name a
//! need that exists; an operation that does not apply right now does nothing
//! (see [`crate::ops::apply`]), which keeps every shrunk sequence valid.

use crate::ops::Op;
use proptest::prelude::*;

/// Instance names the strategies draw from.
pub const INSTANCES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

/// How long a crash-looping service lives, in ms: short enough to loop many
/// times in a case, long enough that a hot loop and a backoff differ.
const CRASH_AFTER_MS: std::ops::RangeInclusive<u64> = 50..=400;

fn instance() -> impl Strategy<Value = String> {
    prop::sample::select(&INSTANCES[..]).prop_map(str::to_string)
}

/// One operation on a cluster of `masters` masters (indices up to
/// `masters`, so an added master is a target too).
pub fn op(masters: usize) -> impl Strategy<Value = Op> {
    let m = 0..=masters.max(1);
    prop_oneof![
        6 => (instance(), prop::option::weighted(0.15, CRASH_AFTER_MS))
            .prop_map(|(instance, crash_after_ms)| Op::AddNeed { instance, crash_after_ms }),
        2 => instance().prop_map(|instance| Op::RemoveNeed { instance }),
        3 => instance().prop_map(|instance| Op::KillChild { instance }),
        1 => m.clone().prop_map(|master| Op::KillMaster { master }),
        2 => m.clone().prop_map(|master| Op::RestartMaster { master }),
        2 => m.clone().prop_map(|master| Op::CutLink { master }),
        1 => m.clone().prop_map(|master| Op::FreezeLink { master }),
        2 => m.clone().prop_map(|master| Op::RestoreLink { master }),
        1 => (m.clone(), 1u16..=2).prop_map(|(master, size)| Op::ShrinkPorts { master, size }),
        1 => Just(Op::AddMaster),
        1 => (200u64..=2500).prop_map(|ms| Op::Pause { ms }),
        1 => any::<bool>().prop_map(|graceful| Op::RestartLan { graceful }),
        1 => (m.clone(), 200u64..=3000).prop_map(|(master, ms)| Op::FreezeMaster { master, ms }),
        1 => (200u64..=3000).prop_map(|ms| Op::FreezeLan { ms }),
        1 => m.clone().prop_map(|master| Op::Impostor { master }),
        1 => m.clone().prop_map(|master| Op::DuplicateName { master }),
        1 => (m.clone(), 200u64..=1200).prop_map(|(master, ms)| Op::HoldLink { master, ms }),
    ]
}

/// Sequences of `len` operations on a cluster of `masters` masters.
pub fn ops(masters: usize, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(masters), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn sequences_have_the_asked_length_and_name_pool_instances_and_masters_in_reach() {
        let mut runner = TestRunner::deterministic();
        let strategy = ops(2, 3..12);
        for _ in 0..200 {
            let v = strategy.new_tree(&mut runner).unwrap().current();
            assert!((3..12).contains(&v.len()), "{}", v.len());
            for op in &v {
                match op {
                    Op::AddNeed {
                        instance,
                        crash_after_ms,
                    } => {
                        assert!(INSTANCES.contains(&instance.as_str()));
                        if let Some(ms) = crash_after_ms {
                            assert!(CRASH_AFTER_MS.contains(ms));
                        }
                    }
                    Op::KillMaster { master } | Op::ShrinkPorts { master, .. } => {
                        assert!(*master <= 2)
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_sequence_round_trips_through_json_for_replay() {
        let mut runner = TestRunner::deterministic();
        let v = ops(2, 5..6).new_tree(&mut runner).unwrap().current();
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Op>>(&text).unwrap(), v);
    }
}
