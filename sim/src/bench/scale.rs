//! Figure 4, lan manager scale: V virtual masters (the real protocol over
//! real WebSockets, real listening ports, no processes) and K needs.

use super::footprint::memory;
use super::{ms, BenchError};
use crate::harness::AdminClient;
use crate::harness::{LanManager, LanOptions, Timings};
use crate::virtual_master::{hello, serve, AcceptingPorts, FakeMaster, Progress};
use allex_protocol::InstanceName;
use allex_protocol::Need;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Longest a scale run may take.
const SCALE_DEADLINE: Duration = Duration::from_secs(300);

/// What one scale run measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Scale {
    /// Whether the lan manager kept its state in etcd (else in its files).
    pub etcd: bool,
    /// Virtual masters.
    pub masters: usize,
    /// Needs.
    pub needs: usize,
    /// Whether every master claimed every need (racing) or only its share.
    pub racing: bool,
    /// From the first connect until the last need was listed as running.
    pub running_ms: f64,
    /// Frames both ways per second over that time.
    pub messages_per_s: f64,
    /// Frames both ways in all.
    pub messages: u64,
    /// The lan manager's RSS after the run, in KiB.
    pub lan_rss_kib: u64,
    /// The lan manager's PSS after the run, in KiB.
    pub lan_pss_kib: u64,
    /// The lan manager's RSS [`SETTLE_AFTER`] later, in KiB.
    pub lan_rss_settled_kib: u64,
}

/// How long after the burst the settled RSS is read: past the lan
/// manager's next running snapshot (due within a second).
pub const SETTLE_AFTER: Duration = Duration::from_millis(2500);

/// The share of needs master `idx` of `masters` claims when not racing.
fn share(need: &Need, idx: usize, masters: usize) -> bool {
    let n: usize = need
        .instancename
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    n % masters == idx
}

/// Adds `needs` needs to a fresh lan manager (on its files, or on a fresh
/// etcd of its own) before any master connects, then connects `masters`
/// virtual masters at once and times them until every need is running.
pub fn run(
    rt: &Runtime,
    masters: usize,
    needs: usize,
    racing: bool,
    on_etcd: bool,
) -> Result<Scale, BenchError> {
    let etcd = match on_etcd {
        true => Some(allex_testkit::etcd::Etcd::start()?),
        false => None,
    };
    let lan = LanManager::start(LanOptions {
        timings: Timings {
            check_timeout: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(60),
            ..Timings::production()
        },
        extra_args: etcd
            .iter()
            .flat_map(|e| ["--store".to_string(), e.store_arg()])
            .collect(),
        ..LanOptions::default()
    })?;
    if etcd.is_some() {
        lan.wait_leading(crate::harness::LEAD_DEADLINE)?;
    }
    let addr = lan.addr();
    let pid = lan
        .proc()
        .map(|p| p.pid())
        .ok_or_else(|| BenchError::Other("the lan manager is not running".into()))?;
    let list = (0..needs)
        .map(|i| Ok(Need::new("testsvc", InstanceName::new(format!("v{i}"))?)))
        .collect::<Result<Vec<Need>, BenchError>>()?;
    AdminClient::add_all(addr, None, list, 128)?;
    let masters = masters.max(1);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let result = rt.block_on(async move {
        let mut ports = Vec::with_capacity(masters);
        for _ in 0..masters {
            ports.push(
                AcceptingPorts::bind(ip)
                    .await
                    .map_err(|source| BenchError::Io {
                        what: format!("binding service ports on {ip}"),
                        source,
                    })?,
            );
        }
        let progress = Progress::new(needs);
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(masters);
        for (idx, p) in ports.iter().enumerate() {
            let progress = progress.clone();
            let served = p.ports;
            tasks.push(tokio::spawn(async move {
                let mut h = hello(&format!("vm{idx}"), &["testsvc"], Vec::new());
                h.advertiseaddress = ip.to_string();
                let vm = FakeMaster::try_connect(addr, h).await?;
                serve(
                    vm,
                    served,
                    move |n| racing || share(n, idx, masters),
                    progress,
                )
                .await
            }));
        }
        let mut messages = 0;
        let joined = tokio::time::timeout(SCALE_DEADLINE, async {
            for t in tasks {
                let stats = t
                    .await
                    .map_err(|e| BenchError::Other(format!("virtual master task: {e}")))??;
                messages += stats.sent + stats.received;
            }
            Ok::<(), BenchError>(())
        })
        .await;
        progress.stop();
        match joined {
            Err(_) => Err(BenchError::Timeout(format!(
                "{} of {needs} needs running after {SCALE_DEADLINE:?}",
                progress.running()
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => {
                let end = progress.finished_at().unwrap_or_else(Instant::now);
                drop(ports);
                Ok((ms(end - t0), messages))
            }
        }
    });
    let (running_ms, messages) = result?;
    let mem = memory(pid)?;
    // The lan manager hands freed heap back after its next running
    // snapshot, at most a second after the burst's last change.
    std::thread::sleep(SETTLE_AFTER);
    let settled = memory(pid)?;
    drop(lan);
    drop(etcd);
    Ok(Scale {
        etcd: on_etcd,
        masters,
        needs,
        racing,
        running_ms,
        messages_per_s: messages as f64 / (running_ms / 1000.0).max(1e-9),
        messages,
        lan_rss_kib: mem.rss_kib,
        lan_pss_kib: mem.pss_kib,
        lan_rss_settled_kib: settled.rss_kib,
    })
}
