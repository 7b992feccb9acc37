//! Figures 6 and 7 (issue 16): connections refused while a service is
//! SIGKILLed again and again, for a plain entry and for one whose sockets
//! the master keeps (`sockets: inherit`), with the time until a connection
//! is served again; and the master's CPU with services under health checks.

use super::footprint::cpu_ns;
use super::{ms, quantile, BenchError};
use crate::harness::{LanManager, LanOptions, Master, MasterOptions, Timings};
use allex_protocol::{InstanceName, Need, Protocol};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one step may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// A killed service ran this long first: past `--stable-ms`, so no kill
/// counts towards a crash loop.
const UPTIME: Duration = Duration::from_millis(600);
/// The lan manager's `--stable-ms` here.
const STABLE: Duration = Duration::from_millis(500);

/// One run of figure 6.
#[derive(Debug, Clone, Copy)]
pub struct KillsRun {
    /// Whether the entry said `sockets: inherit`.
    pub inherit: bool,
    /// SIGKILLs.
    pub kills: usize,
    /// Connection attempts, one per millisecond.
    pub attempts: u64,
    /// Of them, refused.
    pub refused: u64,
    /// Median time from a kill to the first connection served again.
    pub served_again_ms: f64,
    /// The slowest of those.
    pub served_again_max_ms: f64,
}

/// What one connection attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Served,
    Refused,
    Other,
}

fn lan() -> Result<LanManager, BenchError> {
    Ok(LanManager::start(LanOptions {
        timings: Timings {
            stable: STABLE,
            ..Timings::production()
        },
        ..LanOptions::default()
    })?)
}

fn tcp_need(name: &str) -> Result<Need, BenchError> {
    let mut n = Need::new("testsvc", InstanceName::new(name)?);
    n.protocols = Some(vec![Protocol::Tcp]);
    Ok(n)
}

/// The running record of `name`, once its pid is not `not`.
fn wait_running(
    lan: &LanManager,
    name: &str,
    not: Option<u32>,
) -> Result<allex_protocol::RunningService, BenchError> {
    let end = Instant::now() + DEADLINE;
    loop {
        let st = lan.status()?;
        if let Some(r) = st
            .running
            .iter()
            .find(|r| r.instancename == name && Some(r.pid) != not)
        {
            return Ok(r.clone());
        }
        if Instant::now() > end {
            return Err(BenchError::Timeout(format!("{name} running again")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs one service `kills` times while a client connects every millisecond.
pub fn kills(inherit: bool, kills: usize) -> Result<KillsRun, BenchError> {
    let lan = lan()?;
    let m = Master::start_edited(&MasterOptions::new(lan.addr()), |cfg| {
        if inherit {
            cfg["services"]["testsvc"]["sockets"] = serde_json::json!("inherit");
        }
    })?;
    lan.need_add(&tcp_need("Target")?)?;
    let mut rec = wait_running(&lan, "Target", None)?;
    let port = rec
        .ports
        .tcp
        .ok_or_else(|| BenchError::Other("no tcp port".into()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, Outcome)>>> = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let outcome = match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                    Err(_) => Outcome::Other,
                    Ok(mut s) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut b = [0u8; 1];
                        match s.read(&mut b) {
                            Ok(1) => Outcome::Served,
                            _ => Outcome::Other,
                        }
                    }
                };
                if let Ok(mut v) = seen.lock() {
                    v.push((at, outcome));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut killed_at = Vec::with_capacity(kills);
    for _ in 0..kills {
        std::thread::sleep(UPTIME);
        let pid = nix::unistd::Pid::from_raw(rec.pid as i32);
        killed_at.push(Instant::now());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| BenchError::Other(format!("kill {}: {e}", rec.pid)))?;
        rec = wait_running(&lan, "Target", Some(rec.pid))?;
    }
    std::thread::sleep(UPTIME);
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    drop(m);
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    let refused = seen.iter().filter(|(_, o)| *o == Outcome::Refused).count() as u64;
    // From each kill to the first connection, started after it, that was served.
    let again: Vec<f64> = killed_at
        .iter()
        .filter_map(|k| {
            seen.iter()
                .find(|(at, o)| at >= k && *o == Outcome::Served)
                .map(|(at, _)| ms(*at - *k))
        })
        .collect();
    Ok(KillsRun {
        inherit,
        kills,
        attempts: seen.len() as u64,
        refused,
        served_again_ms: quantile(&again, 0.5),
        served_again_max_ms: quantile(&again, 1.0),
    })
}

/// One run of figure 7.
#[derive(Debug, Clone, Copy)]
pub struct ChecksRun {
    /// Services under checks.
    pub services: usize,
    /// Their check interval; `None`: no checks (the baseline).
    pub interval_ms: Option<u64>,
    /// The master's CPU over the window, scaled to 30 s.
    pub master_cpu_ms_per_30s: f64,
}

/// `services` services with a tcp check every `interval_ms` (none: the
/// same services unchecked, the baseline); the master's CPU over `window`
/// once all run, scaled to 30 s.
pub fn checks(
    services: usize,
    interval_ms: Option<u64>,
    window: Duration,
) -> Result<ChecksRun, BenchError> {
    let lan = lan()?;
    let m = Master::start_edited(
        &MasterOptions {
            portrangesize: u16::try_from(services + 10).unwrap_or(u16::MAX),
            ..MasterOptions::new(lan.addr())
        },
        |cfg| {
            if let Some(ms) = interval_ms {
                cfg["services"]["testsvc"]["check"] =
                    serde_json::json!({"type": "tcp", "intervalms": ms});
            }
        },
    )?;
    let needs = (0..services)
        .map(|i| tcp_need(&format!("c{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    crate::harness::AdminClient::add_all(lan.addr(), None, needs, 32)?;
    let end = Instant::now() + DEADLINE;
    while lan.status()?.running.len() < services {
        if Instant::now() > end {
            return Err(BenchError::Timeout("every checked service running".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = m
        .pid()
        .ok_or_else(|| BenchError::Other("the master is not running".into()))?;
    // Past the spawns, into the steady probing.
    std::thread::sleep(Duration::from_millis(2 * interval_ms.unwrap_or(1000)));
    let c0 = cpu_ns(pid)?;
    std::thread::sleep(window);
    let c1 = cpu_ns(pid)?;
    let per_30s = (c1.saturating_sub(c0)) as f64 / 1e6 * 30.0 / window.as_secs_f64().max(1e-9);
    Ok(ChecksRun {
        services,
        interval_ms,
        master_cpu_ms_per_30s: per_30s,
    })
}
