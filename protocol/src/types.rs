//! Small value types that several messages and status reports share.

use crate::generation::Generation;
use crate::names::InstanceName;
use crate::need::Need;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One of the three protocols a service can listen on; one port each.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain TCP.
    Tcp,
    /// HTTP.
    Http,
    /// WebSocket.
    Ws,
}

impl Protocol {
    /// All protocols, in the order ports are reserved and reported.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Http, Protocol::Ws];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Ws => "ws",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ports of one service; a protocol the service does not declare has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Ports {
    /// TCP port, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u16>,
    /// HTTP port, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<u16>,
    /// WebSocket port, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<u16>,
}

impl Ports {
    /// The port of one protocol.
    pub fn get(&self, p: Protocol) -> Option<u16> {
        crate::PerProtocol::from(*self)[p]
    }

    /// Sets the port of one protocol.
    pub fn set(&mut self, p: Protocol, port: Option<u16>) {
        let mut map = crate::PerProtocol::from(*self);
        map[p] = port;
        *self = map.into();
    }

    /// Every declared (protocol, port) pair.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        Protocol::ALL
            .into_iter()
            .filter_map(|p| self.get(p).map(|port| (p, port)))
    }
}

/// How many ports each protocol's range still has free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PortCounts {
    /// Free TCP ports.
    pub tcp: u32,
    /// Free HTTP ports.
    pub http: u32,
    /// Free WebSocket ports.
    pub ws: u32,
}

impl PortCounts {
    /// The count of one protocol.
    pub fn get(&self, p: Protocol) -> u32 {
        crate::PerProtocol::from(*self)[p]
    }
}

/// How a child ended: an exit code or the signal that killed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ExitInfo {
    /// Exit code, when the child exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number, when a signal killed the child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the master stopped it itself, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DownReason>,
}

/// Why a master stopped a child on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum DownReason {
    /// Its health check failed `failures` times in a row.
    Unhealthy,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason == Some(DownReason::Unhealthy) {
            f.write_str("unhealthy: ")?;
        }
        match (self.code, self.signal) {
            (_, Some(s)) => write!(f, "killed by signal {s}"),
            (Some(c), None) => write!(f, "exited with code {c}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// What a master can serve: its catalogue and its free ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Capacity {
    /// Module names in the master's catalogue.
    pub modules: Vec<String>,
    /// Free ports per protocol.
    pub free: PortCounts,
}

/// One child a master runs, as told to the lan manager at hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct InventoryEntry {
    /// The need's instance name.
    pub instancename: InstanceName,
    /// The module the child runs.
    pub modulename: String,
    /// The generation of the grant the child was spawned under.
    pub generation: Generation,
    /// The child's pid.
    pub pid: u32,
    /// The child's ports.
    pub ports: Ports,
}

/// Where a running service can be reached, as answered to a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ServiceLocation {
    /// The service's instance name.
    pub instancename: InstanceName,
    /// The module it runs.
    pub modulename: String,
    /// The address its master advertises.
    pub address: String,
    /// Its ports.
    pub ports: Ports,
}

/// Where a child stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Spawned; the lan manager has not listed it as running yet.
    Starting,
    /// The child said it is ready over the master's socket.
    Ready,
    /// The lan manager checked its ports and lists it as running.
    Running,
    /// A stop was ordered; waiting for it to exit.
    Stopping,
}

/// One child in `allexmaster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ChildStatus {
    /// Instance name.
    pub instancename: InstanceName,
    /// Module name.
    pub modulename: String,
    /// Pid (also its process group).
    pub pid: u32,
    /// Reserved ports.
    pub ports: Ports,
    /// Life state.
    pub state: ChildState,
    /// Whether it said it is ready over the master's socket.
    pub ready: bool,
    /// Milliseconds since it was spawned.
    pub uptime_ms: u64,
    /// Grant generation it runs under (0 when spawned without a lan manager).
    pub generation: Generation,
    /// Its health check's last result, when it has a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
}

/// Where a child's health check stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct HealthStatus {
    /// Whether the last probe passed (false before the first).
    pub passing: bool,
    /// Failures in a row so far.
    pub failures: u32,
    /// What the last probe said (`ok`, or why it failed; `not checked yet`).
    pub last: String,
}

/// What `allexmaster status` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MasterStatus {
    /// The master's name, as the lan manager knows it.
    pub master: String,
    /// The master's pid.
    pub pid: u32,
    /// The address its services are advertised on, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertiseaddress: Option<String>,
    /// Whether the link to the lan manager is up.
    pub connected: bool,
    /// Why the lan manager last refused this master's hello (`name_in_use`,
    /// `identity_mismatch`, `bad_token`, ...), until it is welcomed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// True while fencing keeps this master's children stopped: it heard
    /// nothing from the lan manager for the fence time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// Its descriptor limit (the soft RLIMIT_NOFILE after raising it to the hard one).
    #[serde(default)]
    pub fdlimit: u64,
    /// True while no more children fit under the descriptor limit: it
    /// claims no needs until one ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fd_exhausted: bool,
    /// Its children.
    pub children: Vec<ChildStatus>,
    /// Free ports per protocol.
    pub free: PortCounts,
    /// Protocols whose range is exhausted.
    pub exhausted: Vec<Protocol>,
    /// Open needs this master leaves to others, and why (a pinned port it
    /// cannot bind or that is outside its range).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub declined: BTreeMap<InstanceName, String>,
    /// The cgroup v2 directory its children's groups are in; absent when
    /// children are tracked by process group only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// Where a need stands in the lan manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum NeedState {
    /// Waiting for a master to claim it.
    Open,
    /// Granted to a master, not yet port-checked.
    Claimed,
    /// Port-checked and running.
    Running,
    /// Died soon after start; waits out its retry delay.
    Backoff,
    /// Held back after a lan manager restart until masters report back.
    Settling,
    /// Closed (AllexJS `closed: true`): kept, not run.
    Closed,
}

/// One need in `allexlanmanager status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct NeedStatus {
    /// The need as stored.
    pub need: Need,
    /// Its state.
    pub state: NeedState,
    /// The master holding it, when claimed or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Milliseconds until it is offered again, when backing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// Deaths soon after start in a row.
    pub failures: u32,
    /// The needs files it comes from: `needs`, `needs+overlay`, `runtime`,
    /// `needs+runtime` (a need of `needs` changed at runtime).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub layer: String,
}

/// A running service in `allexlanmanager status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RunningService {
    /// Instance name.
    pub instancename: InstanceName,
    /// Module name.
    pub modulename: String,
    /// The master that runs it.
    pub master: String,
    /// The master's advertise address.
    pub address: String,
    /// Its port-checked ports.
    pub ports: Ports,
    /// Its pid on the master's machine.
    pub pid: u32,
    /// Grant generation.
    pub generation: Generation,
    /// Unix time in milliseconds when it was listed as running.
    pub since_unix_ms: u64,
    /// Its health check as its master last reported it, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
}

/// A master in `allexlanmanager status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MasterSummary {
    /// The master's name.
    pub name: String,
    /// Its advertise address.
    pub address: String,
    /// Whether its link is up; a disconnected master is within its grace,
    /// or past it with services that still answer.
    pub connected: bool,
    /// Where its connection comes from (`ip:port`), while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// What it serves.
    pub capacity: Capacity,
    /// Services it runs.
    pub services: u32,
    /// Being drained: it takes no new need and its services move away.
    #[serde(default)]
    pub draining: bool,
}

/// What `allexlanmanager status` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LanStatus {
    /// Every need with its state.
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::collection::vec(proptest::prelude::any::<NeedStatus>(), 0..3)"
        )
    )]
    pub needs: Vec<NeedStatus>,
    /// Port-checked running services.
    pub running: Vec<RunningService>,
    /// Connected masters and those within their grace.
    pub masters: Vec<MasterSummary>,
}
