//! Figure 1, cold start: N needs added to a lan manager with one master;
//! time until all their ports accept, and until all are listed as running.

use super::probe::{accepts, SWEEP_PAUSE};
use super::system::{System, SYSTEM_DEADLINE};
use super::{ms, BenchError};
use crate::harness::AdminClient;
use allex_protocol::InstanceName;
use allex_protocol::Need;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

/// How long the sweep may stay at one refusing port before it asks the
/// master whether the port was handed out at all.
const STALL: Duration = Duration::from_millis(500);

/// Like [`super::probe::wait_all_accept`] over the predicted ports, but
/// robust to a misprediction: when another process took a port between the
/// prediction and the master's reservation, the master hands out a later
/// one. Once every child is spawned and the sweep is stuck at a port no
/// child holds, the rest of the sweep follows the master's real ports (the
/// figure is then late by up to [`STALL`], and a warning says so).
fn wait_children_accept(
    sys: &System,
    mut ports: Vec<u16>,
    n: usize,
) -> Result<Instant, BenchError> {
    let start = Instant::now();
    let mut next = 0;
    let mut progress = (0, start);
    loop {
        while next < ports.len() && accepts(ports[next]) {
            next += 1;
        }
        let now = Instant::now();
        if next == ports.len() {
            return Ok(now);
        }
        if now - start > SYSTEM_DEADLINE {
            return Err(BenchError::Timeout(format!(
                "{} of {} ports still refuse after {SYSTEM_DEADLINE:?} (first: {})",
                ports.len() - next,
                ports.len(),
                ports[next]
            )));
        }
        if next != progress.0 {
            progress = (next, now);
        } else if now - progress.1 > STALL {
            progress.1 = now;
            if let Ok(st) = sys.master.status_direct() {
                let held: BTreeSet<u16> = st
                    .children
                    .iter()
                    .flat_map(|c| c.ports.iter().map(|(_, p)| p))
                    .collect();
                if st.children.len() >= n && !held.contains(&ports[next]) {
                    let seen: BTreeSet<u16> = ports[..next].iter().copied().collect();
                    tracing::warn!(
                        port = ports[next],
                        "a predicted port was not handed out (taken by another process?); following the master's ports, this figure is late by up to {STALL:?}"
                    );
                    ports.truncate(next);
                    ports.extend(held.difference(&seen));
                }
            }
        }
        std::thread::sleep(SWEEP_PAUSE);
    }
}

/// Parallel admin sessions the needs are added over.
const ADD_LINKS: usize = 32;

/// One cold start's times, from the first `need_add` sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ColdStart {
    /// Needs added.
    pub n: usize,
    /// Until the lan manager acknowledged every addition (on disk).
    pub acked_ms: f64,
    /// Until every port of every child accepted.
    pub accept_ms: f64,
    /// Until the lan manager listed every one as running.
    pub running_ms: f64,
}

/// `testsvc` needs `<prefix>0..<prefix>n`.
fn numbered_needs(n: usize, prefix: &str) -> Result<Vec<Need>, BenchError> {
    (0..n)
        .map(|i| {
            let name = InstanceName::new(format!("{prefix}{i}"))?;
            Ok(Need::new("testsvc", name))
        })
        .collect()
}

/// Stores `n` needs in a fresh lan manager with no master, then starts the
/// master and times from its start (its own start-up included) until every
/// port accepts and every need is listed as running: the cold start without
/// the disk writes of the additions. Returns the system for further figures.
pub fn run_stored(n: usize, prefix: &str) -> Result<(ColdStart, System), BenchError> {
    let needs = numbered_needs(n, prefix)?;
    let before = Instant::now();
    let (mut sys, t0, ports) = System::start_with_needs(needs)?;
    let stored = t0 - before;
    let accepted = wait_children_accept(&sys, ports, n)?;
    let (_, running) = sys.poll_status("all stored needs running", |st| {
        st.running
            .iter()
            .filter(|r| r.instancename.starts_with(prefix))
            .count()
            >= n
    })?;
    Ok((
        ColdStart {
            n,
            acked_ms: ms(stored),
            accept_ms: ms(accepted - t0),
            running_ms: ms(running - t0),
        },
        sys,
    ))
}

/// Adds `n` needs `<prefix>0..` and times them to accepting and to running.
pub fn run(sys: &mut System, n: usize, prefix: &str) -> Result<ColdStart, BenchError> {
    let ports = sys.expected_ports(n);
    if ports.len() < 3 * n {
        return Err(BenchError::Other(format!(
            "the master's ranges hold only {} free ports for {n} children",
            ports.len()
        )));
    }
    let needs = numbered_needs(n, prefix)?;
    let addr = sys.lan.addr();
    let t0 = Instant::now();
    let adding = std::thread::spawn(move || {
        AdminClient::add_all(addr, None, needs, ADD_LINKS)?;
        Ok::<Instant, BenchError>(Instant::now())
    });
    let accepted = wait_children_accept(sys, ports, n)?;
    let (_, running) = sys.poll_status("all needs running", |st| {
        st.running
            .iter()
            .filter(|r| r.instancename.starts_with(prefix))
            .count()
            >= n
    })?;
    let acked = adding
        .join()
        .map_err(|_| BenchError::Other("the need-adding thread panicked".into()))??;
    Ok(ColdStart {
        n,
        acked_ms: ms(acked - t0),
        accept_ms: ms(accepted - t0),
        running_ms: ms(running - t0),
    })
}
