//! Watching ports and processes with a tight retry loop: the loop is the
//! measurement, so its pause is kept far below the figures it times.

use super::BenchError;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Pause between two rounds of connect attempts; the resolution of every
/// "ports accept" figure. Longer than the rounds themselves, so the prober
/// takes a small share of a CPU from the system it measures.
pub const SWEEP_PAUSE: Duration = Duration::from_micros(200);

/// Connects to `ports` on 127.0.0.1, in order, until every one has accepted
/// once; returns the moment the last one did.
///
/// Each round walks the list from the first port that has not accepted yet
/// and stops at the first refusal: services come up roughly in the order
/// they were started, so a round costs about one refused connect instead of
/// one per pending port, while every port is still seen accepting.
pub fn wait_all_accept(ports: &[u16], deadline: Duration) -> Result<Instant, BenchError> {
    let start = Instant::now();
    let mut next = 0;
    loop {
        while next < ports.len() && accepts(ports[next]) {
            next += 1;
        }
        let now = Instant::now();
        if next == ports.len() {
            return Ok(now);
        }
        if now - start > deadline {
            return Err(BenchError::Timeout(format!(
                "{} of {} ports still refuse after {deadline:?} (first: {})",
                ports.len() - next,
                ports.len(),
                ports[next]
            )));
        }
        std::thread::sleep(SWEEP_PAUSE);
    }
}

/// Whether a connection to `port` on 127.0.0.1 is accepted now.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

/// Whether any thread of `pid` still runs. A SIGKILLed process's leader can
/// show as a zombie while its other threads are still exiting and still hold
/// its sockets, so the leader's state alone is not enough.
fn any_thread_alive(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            stat.rfind(')').is_none_or(|i| {
                !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X'))
            })
        })
    })
}

/// Waits until every thread of `pid` has exited, so its sockets are closed
/// (a zombie counts as gone).
pub fn wait_dead(pid: u32, deadline: Duration) -> Result<(), BenchError> {
    let start = Instant::now();
    while any_thread_alive(pid) {
        if start.elapsed() > deadline {
            return Err(BenchError::Timeout(format!(
                "pid {pid} still alive after {deadline:?}"
            )));
        }
        std::thread::sleep(SWEEP_PAUSE);
    }
    Ok(())
}

/// The first `n` ports of `range` that can be bound on 0.0.0.0 right now:
/// the ports a master's port office will hand out, in order.
pub fn first_free(range: std::ops::RangeInclusive<u32>, n: usize) -> Vec<u16> {
    range
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, *p))).is_ok())
        .take(n)
        .collect()
}
