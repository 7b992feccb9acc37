//! Figure 8, lan manager failover: three lan managers on a real etcd
//! (2 s lease) and a real master listing them all; the leader is SIGKILLed
//! and the successor is timed until it leads, until the master is back on
//! it, and until a need added through it runs.

use super::{ms, BenchError};
use crate::harness::{Cluster, ClusterOptions, Timings};
use allex_protocol::{InstanceName, Need};
use std::time::{Duration, Instant};

/// How long any one step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// What one failover measured, each from the leader's SIGKILL.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Failover {
    /// Until a follower printed `allexlanmanager leads`.
    pub leads_ms: f64,
    /// Until the new leader listed the master connected.
    pub reconnected_ms: f64,
    /// Until a need added through the new leader was listed running.
    pub placed_ms: f64,
}

/// Runs `runs` failovers, each on a fresh cluster, and returns each.
pub fn run(runs: usize) -> Result<Vec<Failover>, BenchError> {
    (0..runs).map(|_| once()).collect()
}

fn once() -> Result<Failover, BenchError> {
    let mut opts = ClusterOptions {
        masters: 1,
        lan_managers: 3,
        ..ClusterOptions::default()
    };
    opts.lan.timings = Timings {
        // Long enough to span the lease and the masters' reconnect.
        settle: Duration::from_secs(30),
        grace: Duration::from_secs(30),
        ..Timings::production()
    };
    // The config file's default cap, as an operator's master has it.
    opts.master.reconnectmaxms = 5000;
    let mut c = Cluster::start(opts)?;
    let first = Need::new("testsvc", InstanceName::new("before")?);
    c.need_add(&first)?;
    c.wait_running("before", STEP_DEADLINE)?;
    let killed = Instant::now();
    let leads = c.kill_leader()?;
    c.need_add(&Need::new("testsvc", InstanceName::new("after")?))?;
    let name = c.master(0).name().to_string();
    let (mut reconnected, mut placed) = (None, None);
    c.wait_lan(
        "the master back and the new need running",
        STEP_DEADLINE,
        |st| {
            if reconnected.is_none() && st.masters.iter().any(|m| m.name == name && m.connected) {
                reconnected = Some(killed.elapsed());
            }
            if placed.is_none() && st.running.iter().any(|r| r.instancename == "after") {
                placed = Some(killed.elapsed());
            }
            match (reconnected, placed) {
                (Some(r), Some(p)) => Ok((r, p)),
                _ => Err(format!("reconnected {reconnected:?}, placed {placed:?}")),
            }
        },
    )
    .map(|(r, p)| Failover {
        leads_ms: ms(leads),
        reconnected_ms: ms(r),
        placed_ms: ms(p),
    })
    .map_err(BenchError::from)
}
