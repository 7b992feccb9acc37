//! The system under measurement: one real lan manager and one real master
//! serving the test service, with the lan manager's production timings
//! except a short `--stable-ms`, so a child that ran over a second and is
//! killed counts as a stable service and is restarted at once.

use super::probe::first_free;
use super::BenchError;
use crate::harness::{
    AdminClient, LanManager, LanOptions, Master, MasterOptions, Timings, START_DEADLINE,
};
use crate::ports::port_block;
use allex_protocol::config::PortStarts;
use allex_protocol::{LanStatus, Need, Protocol};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

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
    pub admin: AdminClient,
}

impl System {
    /// Starts both with room for `capacity` children and waits until the
    /// lan manager lists the master as connected.
    pub fn start(capacity: usize) -> Result<System, BenchError> {
        let (lan, admin) = start_lan()?;
        let (opts, _) = master_options(&lan, capacity)?;
        let master = Master::start(&opts)?;
        let mut sys = System { lan, master, admin };
        sys.wait_connected()?;
        Ok(sys)
    }

    /// Starts the lan manager, stores `needs` in it while no master is
    /// there, then starts the master. Returns the system, the moment the
    /// master was started and the ports it will hand out, child by child.
    pub fn start_with_needs(needs: Vec<Need>) -> Result<(System, Instant, Vec<u16>), BenchError> {
        let n = needs.len();
        let (lan, admin) = start_lan()?;
        AdminClient::add_all(lan.addr(), None, needs, 32)?;
        let (opts, ranges) = master_options(&lan, n)?;
        let ports = interleave(&ranges, n);
        let t0 = Instant::now();
        let master = Master::start(&opts)?;
        Ok((System { lan, master, admin }, t0, ports))
    }

    fn wait_connected(&mut self) -> Result<(), BenchError> {
        let name = self.master.name().to_string();
        self.poll_status(&format!("master {name} connected"), |st| {
            st.masters.iter().any(|m| m.name == name && m.connected)
        })
        .map(drop)
    }

    /// The ports the master will hand to its next `n` children (the first
    /// `n` free ports of each range), child by child: tcp, http, ws.
    pub fn expected_ports(&self, n: usize) -> Vec<u16> {
        let ranges = Protocol::ALL.map(|p| self.master.port_range(p));
        interleave(&ranges, n)
    }

    /// Asks the lan manager for its status until `done` holds; returns that
    /// status and the moment it was answered.
    pub fn poll_status(
        &mut self,
        what: &str,
        mut done: impl FnMut(&LanStatus) -> bool,
    ) -> Result<(LanStatus, Instant), BenchError> {
        let start = Instant::now();
        loop {
            let st = match self.admin.status() {
                Ok(st) => st,
                // The lan manager drops an admin session idle for a minute
                // (a long --idle-secs window): open a fresh one.
                Err(e) => {
                    tracing::debug!(error = %e, "admin session lost; reconnecting");
                    self.admin = AdminClient::connect(self.lan.addr(), None, START_DEADLINE)?;
                    self.admin.status()?
                }
            };
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

/// The lan manager with the bench's timings, and an admin session to it.
fn start_lan() -> Result<(LanManager, AdminClient), BenchError> {
    let timings = Timings {
        stable: STABLE,
        ..Timings::production()
    };
    let lan = LanManager::start(LanOptions {
        timings,
        ..LanOptions::default()
    })?;
    let admin = AdminClient::connect(lan.addr(), None, START_DEADLINE)?;
    Ok((lan, admin))
}

/// A master with room for `capacity` children, its three ranges chosen here
/// so the ports it will hand out are known before it starts.
fn master_options(
    lan: &LanManager,
    capacity: usize,
) -> Result<(MasterOptions, [RangeInclusive<u32>; 3]), BenchError> {
    let size = u16::try_from(capacity + capacity / 4 + 32)
        .ok()
        .filter(|s| *s <= u16::MAX / 3)
        .ok_or_else(|| BenchError::Other(format!("{capacity} children need too many ports")))?;
    let block = port_block(3 * size);
    let starts = PortStarts {
        tcp: block,
        http: block + size,
        ws: block + 2 * size,
    };
    let mut opts = MasterOptions::new(lan.addr());
    opts.portrangesize = size;
    opts.portrangestart = Some(starts);
    let range = |s: u16| u32::from(s)..=u32::from(s) + u32::from(size) - 1;
    Ok((
        opts,
        [range(starts.tcp), range(starts.http), range(starts.ws)],
    ))
}

/// The first `n` free ports of each range, child by child: tcp, http, ws.
fn interleave(ranges: &[RangeInclusive<u32>; 3], n: usize) -> Vec<u16> {
    let per: Vec<Vec<u16>> = ranges.iter().map(|r| first_free(r.clone(), n)).collect();
    let len = per.iter().map(Vec::len).min().unwrap_or(0);
    (0..len)
        .flat_map(|i| per.iter().map(move |v| v[i]))
        .collect()
}
