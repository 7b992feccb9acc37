//! What the master's core reacts to, as data.

use super::effect::ReqId;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{ExitInfo, LanToMaster, LocalRequest, MasterToLan};
use std::net::IpAddr;
use std::time::Duration;

/// A timer the core set with [`super::Effect::Timer`], back when it is due.
///
/// Timers are never cancelled: each says what it was set for, and one that
/// outlived its purpose finds nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// A stopped child's grace ran out: SIGKILL it if it is still that pid.
    StopTimeout {
        /// Instance name.
        instance: InstanceName,
        /// Its pid.
        pid: u32,
    },
    /// A tick of the health checks: every probe due by now goes out in one batch.
    HealthTick,
    /// Time to check whether the lan manager has been silent for the fence time.
    FenceCheck,
    /// Time to delete logs of instances that no longer run here.
    SweepLogs,
    /// Ports were exhausted or a spawn failed: look at the open needs again.
    RetryClaims,
    /// Time to tell the lan manager the free-port counts, if they changed.
    ReportCapacity,
    /// A lookup got no answer in time.
    LookupTimeout {
        /// The lookup's id.
        id: u64,
    },
}

/// Everything that can change the master's state.
#[derive(Debug)]
pub enum Input {
    /// A WebSocket to the lan manager is open; the hello goes out on it.
    LinkUp {
        /// Local address of the TCP connection (the default advertise address).
        local: IpAddr,
    },
    /// A message from the lan manager.
    LinkMessage(LanToMaster),
    /// The link is gone; the link task reconnects.
    LinkDown {
        /// Messages handed to the link that never reached the socket.
        unsent: Vec<MasterToLan>,
    },
    /// A message the driver could not hand to the link any more.
    Unsent(MasterToLan),
    /// A request on the master's Unix socket; answered by `Effect::Reply`.
    Local {
        /// The request's id, chosen by the driver.
        req: ReqId,
        /// The request.
        request: LocalRequest,
        /// The peer's pid from the socket credentials.
        peer_pid: Option<u32>,
        /// That pid's process group, read by the driver.
        peer_group: Option<u32>,
    },
    /// The spawner started a child (its pid), or could not.
    Spawned {
        /// Instance name.
        instance: InstanceName,
        /// Grant generation.
        generation: Generation,
        /// The pid, or why it failed.
        result: Result<u32, String>,
    },
    /// A child ended (observed by its parent, at once).
    Exited {
        /// Instance name.
        instance: InstanceName,
        /// Grant generation.
        generation: Generation,
        /// Its pid.
        pid: u32,
        /// Exit code or signal.
        exit: ExitInfo,
    },
    /// A timer is due.
    Timer(Timer),
    /// A log sweep ended; `next` is when the oldest kept stale log expires.
    LogsSwept {
        /// Files deleted.
        deleted: usize,
        /// Until the next expiry, if a stale log is left.
        next: Option<Duration>,
    },
    /// Stop every child and end.
    Shutdown,
    /// The probes of one `Effect::Probes` batch ended, each with its result.
    ProbesDone(Vec<ProbeResult>),
    /// The config was re-read (SIGHUP): the new one, or why it was refused.
    ConfigReloaded(Result<allex_protocol::MasterConfig, String>),
}

/// How one probe of a batch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Instance name.
    pub instance: InstanceName,
    /// The child's pid, so a result never counts for its replacement.
    pub pid: u32,
    /// Ok, or why it failed.
    pub result: Result<(), String>,
}
