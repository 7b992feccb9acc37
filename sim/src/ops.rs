//! Operations on a cluster, for generated scenarios: each is applied to a
//! real cluster, and one that does not apply right now (removing a need
//! that was never added, killing a dead master) does nothing. [`Model`]
//! tracks what they asked for, to check the lan manager against.

use crate::harness::{Cluster, HarnessError, Timings};
use crate::virtual_master::{impostor_hello_blocking, ImpostorOutcome};
use allex_protocol::InstanceName;
use allex_protocol::{LanStatus, Need};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// [`Op::AddMaster`] does nothing once the cluster has this many masters.
pub const MAX_MASTERS: usize = 4;

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
    /// A master is restarted with only `size` ports per protocol, so needs
    /// run out of ports (its first ports stay; the repair restores the size).
    ShrinkPorts {
        /// Master index.
        master: usize,
        /// Ports per protocol range.
        size: u16,
    },
    /// One more master joins (up to [`MAX_MASTERS`]).
    AddMaster,
    /// A master is frozen (SIGSTOP) for `ms`, then runs on (SIGCONT): its
    /// link and socket stop answering meanwhile, its children keep serving.
    FreezeMaster {
        /// Master index.
        master: usize,
        /// How long, in milliseconds (past the grace, it must keep its needs).
        ms: u64,
    },
    /// The lan manager is frozen (SIGSTOP) for `ms`, then runs on (SIGCONT).
    FreezeLan {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// A stranger says hello under a master's name with a secret of its
    /// own; it must be refused and change nothing.
    Impostor {
        /// Index of the master whose name it takes.
        master: usize,
    },
    /// A second master process starts under a master's name (a cloned
    /// config), runs a moment and is stopped; it must be refused.
    DuplicateName {
        /// Index of the master whose name it takes.
        master: usize,
    },
    /// A master's link holds every frame for `ms`, then is cut: reports
    /// made meanwhile (spawns finishing, deaths) meet a reconnect.
    HoldLink {
        /// Master index.
        master: usize,
        /// How long frames are held, in milliseconds.
        ms: u64,
    },
    /// Time passes with nothing done, so graces, backoffs and heartbeats
    /// run out between operations (simulated time, not synchronisation).
    Pause {
        /// How long, in milliseconds.
        ms: u64,
    },
}

impl Op {
    /// The same operation with its master index taken modulo the `n`
    /// masters that exist, so that every master-targeted operation hits one
    /// (a generated index past the end would otherwise do nothing), and a
    /// sequence still replays the same way.
    pub fn on_existing(&self, n: usize) -> Op {
        let mut op = self.clone();
        let n = n.max(1);
        match &mut op {
            Op::KillMaster { master }
            | Op::RestartMaster { master }
            | Op::CutLink { master }
            | Op::FreezeLink { master }
            | Op::RestoreLink { master }
            | Op::ShrinkPorts { master, .. }
            | Op::FreezeMaster { master, .. }
            | Op::Impostor { master }
            | Op::DuplicateName { master }
            | Op::HoldLink { master, .. } => *master %= n,
            Op::AddNeed { .. }
            | Op::RemoveNeed { .. }
            | Op::KillChild { .. }
            | Op::RestartLan { .. }
            | Op::AddMaster
            | Op::Pause { .. }
            | Op::FreezeLan { .. } => {}
        }
        op
    }
}

/// What the operations asked for so far: the needs that should exist.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Needs added and not removed, with their crash knob.
    pub needs: BTreeMap<String, Option<u64>>,
    /// Crash-looping needs: when each was added, and how many operations
    /// since could have killed its service early (each may cost a failure
    /// that did not wait for `crash_after_ms`).
    pub loops: BTreeMap<String, (Instant, u32)>,
    /// Masters whose port ranges were shrunk, with their original size.
    pub shrunk: BTreeMap<usize, u16>,
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

    fn disturbed(&mut self, instance: Option<&str>) {
        for (name, (_, kills)) in self.loops.iter_mut() {
            if instance.is_none_or(|i| i == name) {
                *kills += 1;
            }
        }
    }

    /// Checks the lan manager against what the operations asked for: it
    /// lists exactly the needs acknowledged and not removed (none lost across
    /// restarts, none invented), and every crash-looping need has failed no
    /// more often than its backoff allows.
    pub fn check(&self, cluster: &Cluster, timings: &Timings) -> Result<(), HarnessError> {
        // Both promises are about persistent state, so a short retry only
        // rides out a status call that races a restart.
        cluster.wait_lan(
            "the lan manager to match the operations",
            Duration::from_secs(2),
            |st| self.check_status(st, timings),
        )
    }

    /// [`Model::check`] over one status of the lan manager.
    pub fn check_status(&self, st: &LanStatus, timings: &Timings) -> Result<(), String> {
        let listed: BTreeSet<&str> = st
            .needs
            .iter()
            .map(|n| n.need.instancename.as_str())
            .collect();
        let wanted: BTreeSet<&str> = self.needs.keys().map(String::as_str).collect();
        if listed != wanted {
            return Err(format!(
                "NeedsDiffer: the lan manager lists needs {listed:?}, the acknowledged operations left {wanted:?}"
            ));
        }
        for n in &st.needs {
            let name = &n.need.instancename;
            let (Some(Some(crash_ms)), Some((added, kills))) =
                (self.needs.get(name.as_str()), self.loops.get(name.as_str()))
            else {
                continue;
            };
            let window = added.elapsed();
            let allowed = max_failures(window, Duration::from_millis(*crash_ms), timings)
                + 2
                + u64::from(*kills);
            if u64::from(n.failures) > allowed {
                let hot = window.as_millis() as u64 / (*crash_ms).max(1);
                return Err(format!(
                    "CrashLoopSpins: {name} (dies after {crash_ms} ms) failed {} times in {} ms; \
                     backoff allows at most {allowed}, a hot loop would give about {hot}",
                    n.failures,
                    window.as_millis()
                ));
            }
        }
        Ok(())
    }
}

/// The most quick deaths a need can have in `window` when each run lasts at
/// least `life` and the lan manager waits its backoff between them (the
/// first retry is immediate, then `base` doubling up to `cap`).
pub fn max_failures(window: Duration, life: Duration, timings: &Timings) -> u64 {
    let mut spent = Duration::ZERO;
    let mut failures = 0u64;
    loop {
        let delay = if failures <= 1 {
            Duration::ZERO
        } else {
            let shift = (failures - 2).min(31) as u32;
            timings
                .backoff_base
                .saturating_mul(1u32 << shift)
                .min(timings.backoff_cap)
        };
        spent += delay + life.max(Duration::from_millis(1));
        if spent > window {
            return failures;
        }
        failures += 1;
    }
}

/// Applies `op` to the cluster and the model (on an existing master, see
/// [`Op::on_existing`]).
pub fn apply(cluster: &mut Cluster, model: &mut Model, op: &Op) -> Result<(), HarnessError> {
    let op = &op.on_existing(cluster.masters().len());
    match op {
        Op::AddNeed {
            instance,
            crash_after_ms,
        } => {
            if model.needs.contains_key(instance) {
                return Ok(());
            }
            let mut need = Need::new("testsvc", InstanceName::new(instance.as_str())?);
            if let Some(ms) = crash_after_ms {
                need.propertyhash
                    .insert("crash_after_ms".into(), (*ms).into());
            }
            let added = Instant::now();
            cluster.need_add(&need)?;
            model.needs.insert(instance.clone(), *crash_after_ms);
            if crash_after_ms.is_some() {
                model.loops.insert(instance.clone(), (added, 0));
            }
        }
        Op::RemoveNeed { instance } => {
            if model.needs.remove(instance).is_some() {
                model.loops.remove(instance);
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
                    model.disturbed(Some(instance));
                    let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
                }
            }
        }
        Op::KillMaster { master } => {
            if *master < cluster.masters().len() {
                model.disturbed(None);
                cluster.master_mut(*master).kill()?;
            }
        }
        Op::RestartMaster { master } => {
            if *master < cluster.masters().len() {
                model.disturbed(None);
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
        Op::ShrinkPorts { master, size } => {
            if *master < cluster.masters().len() {
                model.disturbed(None);
                let m = cluster.master_mut(*master);
                let original = m.config().portrangesize;
                model.shrunk.entry(*master).or_insert(original);
                m.set_port_range_size(*size)?;
                m.restart()?;
            }
        }
        Op::AddMaster => {
            if cluster.masters().len() < MAX_MASTERS {
                cluster.add_master(|_| {})?;
            }
        }
        Op::RestartLan { graceful } => {
            model.disturbed(None);
            cluster.restart_lan_with(*graceful)?
        }
        Op::Pause { ms } => std::thread::sleep(std::time::Duration::from_millis(*ms)),
        Op::FreezeMaster { master, ms } => {
            if *master < cluster.masters().len() && cluster.master(*master).is_running() {
                let m = cluster.master(*master);
                m.signal(Signal::SIGSTOP)?;
                std::thread::sleep(Duration::from_millis(*ms));
                m.signal(Signal::SIGCONT)?;
            }
        }
        Op::FreezeLan { ms } => {
            cluster.lan().signal(Signal::SIGSTOP)?;
            std::thread::sleep(Duration::from_millis(*ms));
            cluster.lan().signal(Signal::SIGCONT)?;
        }
        Op::Impostor { master } => {
            if *master < cluster.masters().len() {
                let name = cluster.master(*master).name().to_string();
                let outcome = impostor_hello_blocking(cluster.lan().addr(), &name)
                    .map_err(|e| HarnessError::Expectation(format!("impostor hello: {e}")))?;
                if outcome == ImpostorOutcome::Welcomed {
                    return Err(HarnessError::Expectation(format!(
                        "ImpostorWelcomed: a hello under {name} with another secret was accepted"
                    )));
                }
            }
        }
        Op::DuplicateName { master } => {
            if *master < cluster.masters().len() {
                let name = cluster.master(*master).name().to_string();
                let clone = cluster.start_detached_master(|o| o.name = Some(name.clone()))?;
                crate::wait::wait_until(
                    "the clone to be refused",
                    Duration::from_secs(10),
                    || match clone.status() {
                        Ok(st) if st.refused.is_some() => Ok(()),
                        Ok(st) if st.connected => Err(format!(
                            "DuplicateAccepted: a second master under {name} was welcomed"
                        )),
                        other => Err(format!("{other:?}")),
                    },
                )?;
                // Dropping it stops it; it never ran anything.
            }
        }
        Op::HoldLink { master, ms } => {
            if let Some(p) = cluster.proxy(*master) {
                p.freeze();
                std::thread::sleep(Duration::from_millis(*ms));
                p.cut_reset();
                p.restore();
            }
        }
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
            95..=97 => Some(match rng.below(8) {
                0 | 1 => Op::FreezeMaster {
                    master,
                    ms: 200 + rng.below(2800),
                },
                2 | 3 => Op::FreezeLan {
                    ms: 200 + rng.below(2800),
                },
                4 => Op::Impostor { master },
                5 => Op::DuplicateName { master },
                6 => Op::HoldLink {
                    master,
                    ms: 200 + rng.below(1000),
                },
                _ => Op::RestartLan {
                    graceful: rng.below(2) == 0,
                },
            }),
            98 => Some(Op::ShrinkPorts {
                master,
                size: 1 + rng.below(2) as u16,
            }),
            _ => Some(Op::AddMaster),
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

    #[test]
    fn master_indices_wrap_onto_existing_masters() {
        assert_eq!(
            Op::CutLink { master: 5 }.on_existing(2),
            Op::CutLink { master: 1 }
        );
        assert_eq!(
            Op::HoldLink { master: 2, ms: 9 }.on_existing(2),
            Op::HoldLink { master: 0, ms: 9 }
        );
        assert_eq!(Op::AddMaster.on_existing(0), Op::AddMaster);
    }

    #[test]
    fn backoff_allows_far_fewer_failures_than_a_hot_loop() {
        let t = Timings::default();
        let life = Duration::from_millis(50);
        assert_eq!(max_failures(Duration::from_millis(40), life, &t), 0);
        assert_eq!(max_failures(Duration::from_millis(100), life, &t), 2);
        // 50 ms runs with 0, 50, 100, 200, 400, 800, 1000... ms between them.
        let n = max_failures(Duration::from_secs(5), life, &t);
        assert!((7..=9).contains(&n), "{n}");
        assert!(n * 10 < 5000 / 50);
    }

    fn status(needs: &[(&str, u32)]) -> LanStatus {
        LanStatus {
            needs: needs
                .iter()
                .map(|(name, failures)| allex_protocol::NeedStatus {
                    need: Need::new("testsvc", InstanceName::new(*name).unwrap()),
                    state: allex_protocol::NeedState::Backoff,
                    master: None,
                    retry_in_ms: None,
                    failures: *failures,
                    layer: String::new(),
                })
                .collect(),
            running: Vec::new(),
            masters: Vec::new(),
        }
    }

    #[test]
    fn the_model_check_catches_a_lost_need_and_a_spinning_crash_loop() {
        let t = Timings::default();
        let mut model = Model::default();
        model.needs.insert("a".into(), None);
        model.needs.insert("loop".into(), Some(100));
        model.loops.insert("loop".into(), (Instant::now(), 0));
        assert_eq!(
            model.check_status(&status(&[("a", 0), ("loop", 1)]), &t),
            Ok(())
        );
        let lost = model.check_status(&status(&[("loop", 1)]), &t).unwrap_err();
        assert!(lost.starts_with("NeedsDiffer"), "{lost}");
        let extra = model
            .check_status(&status(&[("a", 0), ("loop", 1), ("b", 0)]), &t)
            .unwrap_err();
        assert!(extra.starts_with("NeedsDiffer"), "{extra}");
        // Just added: a hot loop's 20 failures cannot have happened yet.
        let spun = model
            .check_status(&status(&[("a", 0), ("loop", 20)]), &t)
            .unwrap_err();
        assert!(spun.starts_with("CrashLoopSpins"), "{spun}");
    }
}
