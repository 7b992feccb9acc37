//! What the master's core asks its driver to do.

use super::input::Timer;
use allex_protocol::spawn::SpawnInfo;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{LocalReply, MasterToLan, Ports, ServiceSpec};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Identifies one request on the master's socket until it is answered.
pub type ReqId = u64;

/// Everything needed to start one child; built by the core.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    /// Instance name.
    pub instance: InstanceName,
    /// The grant's generation.
    pub generation: Generation,
    /// The catalogue entry to run.
    pub spec: ServiceSpec,
    /// What goes into `ALLEX_SPAWN`.
    pub info: SpawnInfo,
    /// The reserved ports.
    pub ports: Ports,
    /// The master's socket path.
    pub socket: PathBuf,
    /// The runtime directory.
    pub runtimedir: PathBuf,
    /// Log rotation size.
    pub logmaxbytes: u64,
    /// The entry says `sockets: inherit`: the driver binds (or reuses) the
    /// ports and the child gets them as fd 3 onwards.
    pub inherit_sockets: bool,
}

/// One thing for the driver to do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Hand a message to the current link; one it cannot take comes back
    /// as `Input::Unsent`.
    Send(MasterToLan),
    /// Start a child; answered by `Input::Spawned`, later `Input::Exited`.
    Spawn(Box<SpawnPlan>),
    /// Signal a child's process group (and the child by pidfd), never a
    /// process that merely got a recycled pid.
    Signal {
        /// The child's pid (its group's id).
        pid: u32,
        /// The signal number.
        signal: i32,
    },
    /// Answer a request on the socket.
    Reply {
        /// The request.
        req: ReqId,
        /// The answer.
        reply: LocalReply,
    },
    /// Deliver `timer` as an input at `at`.
    Timer {
        /// When.
        at: Instant,
        /// What.
        timer: Timer,
    },
    /// Close the listening sockets held for `instance` (its need left this
    /// master, or it was stopped on an order).
    ReleaseSockets {
        /// Instance name.
        instance: InstanceName,
    },
    /// Run every probe due at one tick, each within its timeout; answered
    /// by one `Input::ProbesDone`.
    Probes(Vec<ProbeJob>),
    /// Delete expired logs of instances not in `live`; answered by `Input::LogsSwept`.
    SweepLogs {
        /// The runtime directory.
        runtimedir: PathBuf,
        /// Instances that run here now.
        live: Vec<InstanceName>,
        /// How long a stale log is kept.
        keep: Duration,
        /// Most bytes of stale logs kept.
        max_bytes: u64,
    },
}

/// One health probe of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeJob {
    /// Instance name.
    pub instance: InstanceName,
    /// The child's pid.
    pub pid: u32,
    /// What to probe.
    pub check: std::sync::Arc<allex_protocol::health::HealthCheck>,
    /// The port probed (tcp and http checks).
    pub port: Option<u16>,
}
