//! Figure 2, recovery: one child SIGKILLed, until its port accepts again and
//! until it is listed as running again; then all children at once.
//!
//! The chain measured: the master reaps the child (SIGCHLD), reports `down`,
//! the lan manager reopens the need, the master claims it, gets the grant,
//! spawns, reports `spawned`, the lan manager port-checks and lists it.

use super::probe::{wait_all_accept, wait_dead};
use super::system::{System, STABLE, SYSTEM_DEADLINE};
use super::{ms, BenchError};
use allex_protocol::{LanStatus, RunningService};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a child must have run before it is killed, per the issue.
pub const MIN_UPTIME: Duration = Duration::from_millis(1100);

/// Times of the single kills.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SingleKills {
    /// Kill until the same tcp port accepts again, per kill.
    pub accept_ms: Vec<f64>,
    /// Kill until listed as running under a new pid, per kill.
    pub running_ms: Vec<f64>,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits (the children age; nothing is polled) until every running service
/// in `st` has run for at least `min`.
fn let_age(st: &LanStatus, min: Duration) {
    let youngest = st.running.iter().map(|r| r.since_unix_ms).max();
    if let Some(since) = youngest {
        let age = Duration::from_millis(now_unix_ms().saturating_sub(since));
        if age < min {
            std::thread::sleep(min - age);
        }
    }
}

fn sigkill(pid: u32) -> Result<(), BenchError> {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .map_err(|e| BenchError::Other(format!("SIGKILL {pid}: {e}")))
}

/// Kills `kills` children one after another, each one that has run over a
/// second and a different one each time (round robin), and times each
/// recovery.
pub fn single(sys: &mut System, kills: usize) -> Result<SingleKills, BenchError> {
    let (st, _) = sys.poll_status("services to kill", |st| !st.running.is_empty())?;
    let mut victims: Vec<RunningService> = st.running.clone();
    victims.sort_by(|a, b| a.instancename.cmp(&b.instancename));
    let_age(&st, MIN_UPTIME);
    let mut out = SingleKills::default();
    for k in 0..kills {
        let instance = victims[k % victims.len()].instancename.clone();
        // The current record: an earlier round may have restarted it.
        let (st, _) = sys.poll_status("the victim listed", |st| {
            st.running.iter().any(|r| r.instancename == instance)
        })?;
        let Some(victim) = st
            .running
            .iter()
            .find(|r| r.instancename == instance)
            .cloned()
        else {
            continue;
        };
        let age = Duration::from_millis(now_unix_ms().saturating_sub(victim.since_unix_ms));
        if age < MIN_UPTIME {
            std::thread::sleep(MIN_UPTIME - age);
        }
        let port = victim
            .ports
            .tcp
            .ok_or_else(|| BenchError::Other(format!("{instance} has no tcp port")))?;
        let t0 = Instant::now();
        sigkill(victim.pid)?;
        // Its listening sockets close when it exits; only then can a
        // successful connect mean the replacement.
        wait_dead(victim.pid, SYSTEM_DEADLINE)?;
        let accepted = wait_all_accept(&[port], SYSTEM_DEADLINE)?;
        let (_, running) = sys.poll_status("the replacement running", |st| {
            st.running
                .iter()
                .any(|r| r.instancename == instance && r.pid != victim.pid)
        })?;
        out.accept_ms.push(ms(accepted - t0));
        out.running_ms.push(ms(running - t0));
    }
    Ok(out)
}

/// Times of killing every child at once.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KillAll {
    /// Until every port the children held accepts again.
    pub accept_ms: f64,
    /// Until every one is listed as running again under a new pid.
    pub running_ms: f64,
}

/// SIGKILLs every child at once and times them back to accepting and to
/// running. The replacements get the same set of ports (the port office
/// hands out the lowest free ones), possibly shuffled among them, so "every
/// port accepts" is watched on the old set once every old child is gone.
pub fn all(sys: &mut System, n: usize) -> Result<KillAll, BenchError> {
    let (st, _) = sys.poll_status("every service running", |st| st.running.len() >= n)?;
    // Over --stable-ms, so no death counts towards a crash loop.
    let_age(&st, STABLE.max(MIN_UPTIME));
    let old: BTreeSet<u32> = st.running.iter().map(|r| r.pid).collect();
    let mut ports: Vec<u16> = st
        .running
        .iter()
        .flat_map(|r| r.ports.iter().map(|(_, p)| p))
        .collect();
    ports.sort_unstable();
    let t0 = Instant::now();
    for pid in &old {
        sigkill(*pid)?;
    }
    for pid in &old {
        wait_dead(*pid, SYSTEM_DEADLINE)?;
    }
    let accepted = wait_all_accept(&ports, SYSTEM_DEADLINE)?;
    let (_, running) = sys.poll_status("every service running again", |st| {
        st.running.len() >= n && st.running.iter().all(|r| !old.contains(&r.pid))
    })?;
    Ok(KillAll {
        accept_ms: ms(accepted - t0),
        running_ms: ms(running - t0),
    })
}
