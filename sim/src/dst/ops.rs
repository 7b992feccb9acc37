//! The faults the simulator injects, each at a simulated time.

use super::rng::Rng;
use std::fmt;

/// One fault, applied at its time; the durations end it by themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Close master `m`'s link at once on both ends (a reset).
    CutLink(usize),
    /// Drop every frame between master `m`'s host and the lan manager for `ms`.
    Partition(usize, u64),
    /// Hold every frame on master `m`'s link for `ms`, then deliver them in order.
    HoldLink(usize, u64),
    /// Stop master `m`'s process (SIGSTOP) for `ms`; its children run on.
    FreezeMaster(usize, u64),
    /// Stop the lan manager's process for `ms`.
    FreezeLan(u64),
    /// Kill the lan manager; it starts again after `ms` from what is on disk.
    CrashLan(u64),
    /// Every disk write takes 20..200 ms for `ms`.
    SlowDisk(u64),
    /// Every disk write fails (disk full) for `ms`.
    FullDisk(u64),
    /// Kill one live child (the `n`th, modulo how many live).
    KillChild(usize),
    /// The next `count` spawns of need `n` die within 50 ms.
    CrashLoop(usize, u32),
    /// A hello under master `m`'s name with another secret and a made-up
    /// inventory of what the lan manager lists for `m`.
    Impostor(usize),
    /// A second connection with master `m`'s name and secret from another
    /// address, while `m` is connected and answering.
    Twin(usize),
}

impl Op {
    /// A random fault for `masters` masters and `needs` needs.
    pub fn random(rng: &mut Rng, masters: usize, needs: usize) -> Op {
        let m = rng.pick(masters);
        match rng.range(0, 99) {
            0..=9 => Op::CutLink(m),
            10..=19 => Op::Partition(m, rng.range(100, 4_000)),
            20..=27 => Op::HoldLink(m, rng.range(50, 2_000)),
            28..=37 => Op::FreezeMaster(m, rng.range(100, 3_000)),
            38..=43 => Op::FreezeLan(rng.range(100, 3_000)),
            44..=51 => Op::CrashLan(rng.range(50, 1_000)),
            52..=57 => Op::SlowDisk(rng.range(100, 3_000)),
            58..=63 => Op::FullDisk(rng.range(100, 3_000)),
            64..=77 => Op::KillChild(rng.pick(64)),
            78..=83 => Op::CrashLoop(rng.pick(needs), rng.range(1, 6) as u32),
            84..=91 => Op::Impostor(m),
            _ => Op::Twin(m),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CutLink(m) => write!(f, "cut_link m{m}"),
            Op::Partition(m, ms) => write!(f, "partition m{m} {ms}ms"),
            Op::HoldLink(m, ms) => write!(f, "hold_link m{m} {ms}ms"),
            Op::FreezeMaster(m, ms) => write!(f, "freeze_master m{m} {ms}ms"),
            Op::FreezeLan(ms) => write!(f, "freeze_lan {ms}ms"),
            Op::CrashLan(ms) => write!(f, "crash_lan restart_after={ms}ms"),
            Op::SlowDisk(ms) => write!(f, "slow_disk {ms}ms"),
            Op::FullDisk(ms) => write!(f, "full_disk {ms}ms"),
            Op::KillChild(n) => write!(f, "kill_child #{n}"),
            Op::CrashLoop(n, c) => write!(f, "crash_loop n{n} x{c}"),
            Op::Impostor(m) => write!(f, "impostor m{m}"),
            Op::Twin(m) => write!(f, "twin m{m}"),
        }
    }
}

/// A fault and when it happens, in simulated milliseconds from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOp {
    /// When, in ms.
    pub at_ms: u64,
    /// What.
    pub op: Op,
}
