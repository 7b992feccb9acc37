//! Operations on a cluster, for generated scenarios: each is applied to a
//! real cluster, and one that does not apply right now (removing a need
//! that was never added, killing a dead master) does nothing.

use crate::harness::{Cluster, HarnessError};
use allex_protocol::Need;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One thing that can happen to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// An operator adds a `testsvc` need; `crash_after_ms` makes it crash-loop.
    AddNeed {
        /// Instance name.
        instance: String,
        /// The service exits after this long, every time.
        crash_after_ms: Option<u64>,
    },
    /// An operator removes a need.
    RemoveNeed {
        /// Instance name.
        instance: String,
    },
    /// A running service is SIGKILLed.
    KillChild {
        /// Instance name.
        instance: String,
    },
    /// A master is SIGKILLed.
    KillMaster {
        /// Master index.
        master: usize,
    },
    /// A master is (re)started with its old config and directory.
    RestartMaster {
        /// Master index.
        master: usize,
    },
    /// A master's link is cut (connections dropped, new ones blackholed).
    CutLink {
        /// Master index.
        master: usize,
    },
    /// A master's link goes silent without closing.
    FreezeLink {
        /// Master index.
        master: usize,
    },
    /// A master's link works again.
    RestoreLink {
        /// Master index.
        master: usize,
    },
    /// The lan manager restarts; with SIGKILL unless `graceful`.
    RestartLan {
        /// SIGTERM instead of SIGKILL.
        graceful: bool,
    },
    /// Time passes with nothing done, so graces, backoffs and heartbeats
    /// run out between operations (simulated time, not synchronisation).
    Pause {
        /// How long, in milliseconds.
        ms: u64,
    },
}

/// What the operations asked for so far: the needs that should exist.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Needs added and not removed, with their crash knob.
    pub needs: BTreeMap<String, Option<u64>>,
}

impl Model {
    /// Needs that should end up running (those that do not crash-loop).
    pub fn stable_needs(&self) -> Vec<String> {
        self.needs
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Applies `op` to the cluster and the model.
pub fn apply(cluster: &mut Cluster, model: &mut Model, op: &Op) -> Result<(), HarnessError> {
    match op {
        Op::AddNeed {
            instance,
            crash_after_ms,
        } => {
            if model.needs.contains_key(instance) {
                return Ok(());
            }
            let mut need = Need::new("testsvc", instance.clone());
            if let Some(ms) = crash_after_ms {
                need.propertyhash
                    .insert("crash_after_ms".into(), (*ms).into());
            }
            cluster.need_add(&need)?;
            model.needs.insert(instance.clone(), *crash_after_ms);
        }
        Op::RemoveNeed { instance } => {
            if model.needs.remove(instance).is_some() {
                cluster.need_remove(instance)?;
            }
        }
        Op::KillChild { instance } => {
            let st = cluster.lan_status()?;
            if let Some(r) = st.running.iter().find(|r| &r.instancename == instance) {
                // Only our own children: a pid from a stale record may be reused.
                let ours = cluster
                    .masters()
                    .iter()
                    .any(|m| m.children_alive().contains(&r.pid));
                if ours {
                    let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
                }
            }
        }
        Op::KillMaster { master } => {
            if *master < cluster.masters().len() {
                cluster.master_mut(*master).kill()?;
            }
        }
        Op::RestartMaster { master } => {
            if *master < cluster.masters().len() {
                cluster.master_mut(*master).restart()?;
            }
        }
        Op::CutLink { master } => {
            if let Some(p) = cluster.proxy(*master) {
                p.cut();
            }
        }
        Op::FreezeLink { master } => {
            if let Some(p) = cluster.proxy(*master) {
                p.freeze();
            }
        }
        Op::RestoreLink { master } => {
            if let Some(p) = cluster.proxy(*master) {
                p.restore();
            }
        }
        Op::RestartLan { graceful } => cluster.restart_lan_with(*graceful)?,
        Op::Pause { ms } => std::thread::sleep(std::time::Duration::from_millis(*ms)),
    }
    Ok(())
}

/// A small deterministic generator (splitmix64), so a seed reproduces a run.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `steps` operations for a cluster of `masters` masters, from `seed`;
/// biased towards operations that apply (removing needs that exist).
pub fn random_ops(seed: u64, steps: usize, masters: usize) -> Vec<Op> {
    let mut rng = SplitMix::new(seed);
    let mut needs: Vec<String> = Vec::new();
    let mut next = 0usize;
    let mut ops = Vec::with_capacity(steps);
    let masters = masters.max(1) as u64;
    while ops.len() < steps {
        let roll = rng.below(100);
        let master = rng.below(masters) as usize;
        let pick = |rng: &mut SplitMix, needs: &[String]| -> Option<String> {
            if needs.is_empty() {
                None
            } else {
                Some(needs[rng.below(needs.len() as u64) as usize].clone())
            }
        };
        let op = match roll {
            0..=29 => {
                let instance = format!("r{next}");
                next += 1;
                needs.push(instance.clone());
                let crash_after_ms = (rng.below(10) == 0).then(|| 50 + rng.below(450));
                Some(Op::AddNeed {
                    instance,
                    crash_after_ms,
                })
            }
            30..=39 => pick(&mut rng, &needs).map(|instance| {
                needs.retain(|n| *n != instance);
                Op::RemoveNeed { instance }
            }),
            40..=54 => pick(&mut rng, &needs).map(|instance| Op::KillChild { instance }),
            55..=59 => Some(Op::KillMaster { master }),
            60..=69 => Some(Op::RestartMaster { master }),
            70..=77 => Some(Op::CutLink { master }),
            78..=82 => Some(Op::FreezeLink { master }),
            83..=89 => Some(Op::RestoreLink { master }),
            90..=94 => Some(Op::Pause {
                ms: 200 + rng.below(2800),
            }),
            _ => Some(Op::RestartLan {
                graceful: rng.below(2) == 0,
            }),
        };
        if let Some(op) = op {
            ops.push(op);
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_reproduces_its_ops_and_removals_name_added_needs() {
        let a = random_ops(7, 200, 3);
        assert_eq!(a, random_ops(7, 200, 3));
        assert_ne!(a, random_ops(8, 200, 3));
        let mut live = std::collections::BTreeSet::new();
        for op in &a {
            match op {
                Op::AddNeed { instance, .. } => assert!(live.insert(instance.clone())),
                Op::RemoveNeed { instance } => assert!(live.remove(instance), "{op:?}"),
                Op::KillMaster { master } | Op::CutLink { master } => assert!(*master < 3),
                _ => {}
            }
        }
    }
}
