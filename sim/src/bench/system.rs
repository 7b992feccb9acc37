//! The system under measurement: one real lan manager and one real master
//! serving the test service, with the lan manager's production timings
//! except a short `--stable-ms`, so a child that ran over a second and is
//! killed counts as a stable service and is restarted at once.

use super::admin_link::AdminLink;
use super::probe::first_free;
use super::BenchError;
use crate::harness::{LanManager, LanOptions, Master, MasterOptions, Timings};
use allex_protocol::{LanStatus, Protocol};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// How long a system may take to come up or to answer.
pub const SYSTEM_DEADLINE: Duration = Duration::from_secs(120);

/// Pause between two status polls; with the round trip, the resolution of
/// every "listed running" figure.
pub const STATUS_PAUSE: Duration = Duration::from_micros(200);

/// Uptime after which the lan manager counts a service as stable.
pub const STABLE: Duration = Duration::from_millis(500);

/// A lan manager and one master connected to it.
pub struct System {
    /// The lan manager process.
    pub lan: LanManager,
    /// The master process.
    pub master: Master,
    /// An admin session for status polling.
    pub admin: AdminLink,
}

impl System {
    /// Starts both with room for `capacity` children and waits until the
    /// lan manager lists the master as connected.
    pub fn start(rt: &Runtime, capacity: usize) -> Result<System, BenchError> {
        let timings = Timings {
            stable: STABLE,
            ..Timings::production()
        };
        let lan = LanManager::start(LanOptions {
            timings,
            ..LanOptions::default()
        })?;
        let mut opts = MasterOptions::new(lan.addr());
        opts.portrangesize = u16::try_from(capacity + capacity / 4 + 32)
            .map_err(|_| BenchError::Other(format!("{capacity} children need too many ports")))?;
        let master = Master::start(&opts)?;
        let mut admin = rt.block_on(AdminLink::connect(lan.addr()))?;
        let name = master.name().to_string();
        let start = Instant::now();
        loop {
            let st = rt.block_on(admin.status())?;
            if st.masters.iter().any(|m| m.name == name && m.connected) {
                break;
            }
            if start.elapsed() > SYSTEM_DEADLINE {
                return Err(BenchError::Timeout(format!(
                    "master {name} never connected to the lan manager"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(System { lan, master, admin })
    }

    /// The ports the master will hand to its next `n` children (the first
    /// `n` free ports of each range), child by child: tcp, http, ws.
    pub fn expected_ports(&self, n: usize) -> Vec<u16> {
        let per: Vec<Vec<u16>> = Protocol::ALL
            .into_iter()
            .map(|p| first_free(self.master.port_range(p), n))
            .collect();
        let len = per.iter().map(Vec::len).min().unwrap_or(0);
        (0..len)
            .flat_map(|i| per.iter().map(move |v| v[i]))
            .collect()
    }

    /// Asks the lan manager for its status until `done` holds; returns that
    /// status and the moment it was answered.
    pub fn poll_status(
        &mut self,
        rt: &Runtime,
        what: &str,
        mut done: impl FnMut(&LanStatus) -> bool,
    ) -> Result<(LanStatus, Instant), BenchError> {
        let start = Instant::now();
        loop {
            let st = rt.block_on(self.admin.status())?;
            let now = Instant::now();
            if done(&st) {
                return Ok((st, now));
            }
            if now - start > SYSTEM_DEADLINE {
                return Err(BenchError::Timeout(format!(
                    "{what}: not after {SYSTEM_DEADLINE:?} ({} running)",
                    st.running.len()
                )));
            }
            // Each status is built by the lan manager's state task: leave it
            // room for the work being measured.
            std::thread::sleep(STATUS_PAUSE);
        }
    }

    /// The lan manager's pid.
    pub fn lan_pid(&self) -> Result<u32, BenchError> {
        self.lan
            .proc()
            .map(|p| p.pid())
            .ok_or_else(|| BenchError::Other("the lan manager is not running".into()))
    }

    /// The master's pid.
    pub fn master_pid(&self) -> Result<u32, BenchError> {
        self.master
            .pid()
            .ok_or_else(|| BenchError::Other("the master is not running".into()))
    }
}
