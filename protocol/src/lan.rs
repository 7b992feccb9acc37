//! Messages on the WebSocket link to the lan manager: masters and admin CLIs.
//!
//! One JSON message per WebSocket text frame, tagged by `type`. The first
//! frame a client sends is its [`Opening`]: a master's `hello` or an admin
//! CLI's `admin_hello`; both carry the protocol version and the token.

use crate::generation::Generation;
use crate::names::InstanceName;
use crate::need::Need;
use crate::types::{Capacity, ExitInfo, InventoryEntry, LanStatus, Ports, ServiceLocation};
use crate::version::ProtocolVersion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A master's opening message: who it is, what it can serve, what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MasterHello {
    /// The protocol version the master speaks.
    pub version: ProtocolVersion,
    /// The shared secret, when the lan manager requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The master's stable name; a restarted master comes back under the same name.
    pub master: String,
    /// The master's own secret (`allexmaster.secret`): the lan manager binds
    /// the name to the first secret it sees, so nobody else can speak for it.
    pub secret: String,
    /// The master's pid, for operators.
    pub pid: u32,
    /// The address its services are reached on, which the port check uses.
    pub advertiseaddress: String,
    /// What it can serve right now.
    pub capacity: Capacity,
    /// What it runs right now, with generations, so the lan manager can reconcile.
    pub inventory: Vec<InventoryEntry>,
}

/// The first frame on the lan manager's socket; decides the session's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Opening {
    /// A master.
    Hello(MasterHello),
    /// An admin CLI (`allexlanmanager need ...`, `status`).
    AdminHello {
        /// The protocol version the CLI speaks.
        version: ProtocolVersion,
        /// The shared secret, when required.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

/// Master -> lan manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MasterToLan {
    /// Opens the session (first frame only).
    Hello(MasterHello),
    /// Asks to satisfy an open need; answered by `grant` or `claim_refused`.
    Claim {
        /// The need's instance name.
        instancename: InstanceName,
        /// The ports this master reserved for it, so that while its link is
        /// down the lan manager can tell a service spawned from the grant
        /// (its `spawned` lost with the link) from one that never started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ports: Option<Ports>,
    },
    /// The child for a grant is spawned; the lan manager port-checks it next.
    Spawned {
        /// Instance name.
        instancename: InstanceName,
        /// The grant's generation.
        generation: Generation,
        /// The child's pid.
        pid: u32,
        /// The ports reserved for it, one per declared protocol.
        ports: Ports,
    },
    /// A grant could not be acted on (ports gone, exec failed); the need reopens.
    SpawnFailed {
        /// Instance name.
        instancename: InstanceName,
        /// The grant's generation.
        generation: Generation,
        /// Why, for the log.
        reason: String,
    },
    /// A child ended: by itself, or because a stop was ordered (`ordered`).
    Down {
        /// Instance name.
        instancename: InstanceName,
        /// The generation it ran under.
        generation: Generation,
        /// Its pid.
        pid: u32,
        /// Exit code or signal.
        exit: ExitInfo,
        /// True when the master stopped it on an order (the stop's confirmation).
        ordered: bool,
        /// How long it ran, so the lan manager can tell a crash loop.
        uptime_ms: u64,
    },
    /// Free ports or catalogue changed.
    Capacity(Capacity),
    /// A child's health check started or stopped passing (sent on each change,
    /// not on each probe).
    Health {
        /// Instance name.
        instancename: InstanceName,
        /// The generation it runs under.
        generation: Generation,
        /// Where its check stands.
        health: crate::types::HealthStatus,
    },
    /// A child asked where a service runs; answered by `lookup_result`.
    Lookup {
        /// Correlates the answer.
        id: u64,
        /// The service's instance name.
        instancename: InstanceName,
    },
    /// Liveness; the lan manager echoes it.
    Heartbeat {
        /// Sequence number, echoed back.
        seq: u64,
    },
    /// The master is shutting down: the `down`s that follow are its own
    /// stops, not deaths, and count against no need's crash-loop budget.
    Leaving,
    /// Part of a service's output, answering `logs`.
    LogChunk {
        /// The request's id.
        id: u64,
        /// The output (invalid UTF-8 replaced).
        data: String,
    },
    /// The end of a `logs` answer: all sent, or why not.
    LogsEnd {
        /// The request's id.
        id: u64,
        /// Why it ended early (no log, cancelled), when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Lan manager -> master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LanToMaster {
    /// The hello was accepted; stop orders for unwanted inventory follow.
    Welcome {
        /// The lan manager's protocol version.
        version: ProtocolVersion,
        /// How long the lan manager keeps a disconnected master's services.
        grace_ms: u64,
        /// How often the master should send a heartbeat.
        heartbeat_ms: u64,
        /// When set, a master that hears nothing from the lan manager for
        /// this long stops its own children (before the grace hands them on).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence_ms: Option<u64>,
    },
    /// Every open need, replacing what the master knew.
    Needs {
        /// The open needs.
        #[cfg_attr(
            test,
            proptest(
                strategy = "proptest::collection::vec(proptest::prelude::any::<Need>(), 0..3)"
            )
        )]
        needs: Vec<Need>,
    },
    /// A need became open (added, or its service died).
    NeedOpen {
        /// The need.
        need: Need,
    },
    /// A need is no longer open (claimed by someone, or removed).
    NeedTaken {
        /// Instance name.
        instancename: InstanceName,
    },
    /// Several needs are no longer open: a `need_taken` for each, in order,
    /// in one frame (a burst of grants to others tells every master).
    NeedsTaken {
        /// Instance names.
        instancenames: Vec<InstanceName>,
    },
    /// The claim is granted: spawn within the deadline and report `spawned`.
    Grant {
        /// The need.
        need: Need,
        /// Identifies this grant; every later report must carry it.
        generation: Generation,
        /// Milliseconds the master has to report `spawned`.
        deadline_ms: u64,
    },
    /// The claim lost (someone else holds the need, or it is gone).
    ClaimRefused {
        /// Instance name.
        instancename: InstanceName,
        /// Why.
        reason: String,
    },
    /// The port check passed: the service is listed as running.
    Running {
        /// Instance name.
        instancename: InstanceName,
        /// Generation.
        generation: Generation,
    },
    /// The port check failed; the master stops the child and frees its ports.
    Rejected {
        /// Instance name.
        instancename: InstanceName,
        /// Generation.
        generation: Generation,
        /// Why (which port did not accept).
        reason: String,
    },
    /// Stop this child (need removed, or the need belongs to someone else now).
    Stop {
        /// Instance name.
        instancename: InstanceName,
        /// The generation to stop; a different generation is left alone.
        generation: Generation,
        /// Why.
        reason: String,
    },
    /// Answer to `lookup`.
    LookupResult {
        /// The lookup's id.
        id: u64,
        /// Where it runs, when it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<ServiceLocation>,
    },
    /// Echo of the master's heartbeat.
    Heartbeat {
        /// The master's sequence number.
        seq: u64,
    },
    /// Asks for a service's output: its last `lines` lines, then, with
    /// `follow`, what it writes until `logs_cancel`; answered by
    /// `log_chunk`s and one `logs_end`.
    Logs {
        /// Numbers the request on this link.
        id: u64,
        /// Instance name.
        instancename: InstanceName,
        /// How many of the last lines first.
        lines: u32,
        /// Keep sending what it writes.
        follow: bool,
    },
    /// Ends a `logs` request (its reader went).
    LogsCancel {
        /// The request's id.
        id: u64,
    },
    /// A request was refused; the session goes on unless the lan manager closes it.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// With `not_leader`: the `host:port` the leader is reached on, when one leads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<String>,
    },
}

/// Admin CLI -> lan manager (after `admin_hello`); each request gets one reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminToLan {
    /// Opens the session (first frame only).
    AdminHello {
        /// The protocol version the CLI speaks.
        version: ProtocolVersion,
        /// The shared secret, when required.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Adds a need; acknowledged once it is on disk.
    NeedAdd {
        /// The need.
        need: Need,
    },
    /// Removes a need and stops its service; acknowledged once on disk.
    NeedRemove {
        /// Instance name.
        instancename: InstanceName,
    },
    /// Stops a need's service and offers the need again at once, without
    /// counting it as a failure; acknowledged once the stop is sent.
    NeedRestart {
        /// Instance name.
        instancename: InstanceName,
    },
    /// Closes a need (AllexJS `closed: true`): it is kept but not run, and
    /// its service is stopped; acknowledged once `needs.runtime` is on disk.
    NeedDisable {
        /// Instance name.
        instancename: InstanceName,
    },
    /// Reopens a closed need; acknowledged once `needs.runtime` is on disk.
    NeedEnable {
        /// Instance name.
        instancename: InstanceName,
    },
    /// Re-reads the three needs files and applies the difference; a bad
    /// file is refused with its `file:line:column` and changes nothing.
    NeedReload,
    /// Asks for needs, running services and masters.
    Status,
    /// Drops the secret bound to a master name, so a new one may claim it.
    MasterForget {
        /// The master's name.
        name: String,
    },
    /// Streams a service's output from its master: `log` answers, then
    /// `done` (or, with `follow`, until the client goes).
    Logs {
        /// Instance name.
        instancename: InstanceName,
        /// How many of the last lines first.
        #[serde(default = "default_log_lines")]
        lines: u32,
        /// Keep sending what it writes.
        #[serde(default)]
        follow: bool,
    },
    /// Takes no new need on this master and moves its services to others,
    /// one at a time, each stopped before it starts elsewhere.
    MasterDrain {
        /// The master's name.
        name: String,
    },
    /// Ends a drain: the master takes needs again.
    MasterUndrain {
        /// The master's name.
        name: String,
    },
    /// Sends the kept events after `since` as `event` answers, then `done`;
    /// with `follow`, keeps sending new ones until the client goes instead.
    Events {
        /// Only events numbered above this (all kept ones when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// Keep the session open for new events.
        #[serde(default)]
        follow: bool,
    },
}

/// Lan manager -> admin CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LanToAdmin {
    /// The admin hello was accepted.
    AdminWelcome {
        /// The lan manager's protocol version.
        version: ProtocolVersion,
    },
    /// The request was carried out (and written to disk, for changes).
    Done {
        /// What was done.
        message: String,
    },
    /// Answer to `status`.
    Status {
        /// The state.
        status: LanStatus,
    },
    /// Part of a service's output, answering `logs`.
    Log {
        /// The output.
        data: String,
    },
    /// One event, answering `events`.
    Event {
        /// The event.
        #[cfg_attr(test, proptest(strategy = "crate::events::arbitrary_event()"))]
        event: crate::events::LanEvent,
    },
    /// The request was refused; nothing changed.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// With `not_leader`: the `host:port` the leader is reached on, when one leads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<String>,
    },
}

/// Why a peer's message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Another major protocol version.
    VersionMismatch,
    /// Wrong or missing token.
    BadToken,
    /// The first frame was not a hello, or it never came.
    HelloRequired,
    /// Not JSON.
    Malformed,
    /// An unknown `type`.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or value.
    Invalid,
    /// Over the size limit.
    FrameTooLarge,
    /// A binary frame on a text link.
    BinaryFrame,
    /// Too many messages too fast.
    RateLimited,
    /// The report names a service this master does not run.
    NotYours,
    /// The report carries an old generation or pid.
    Stale,
    /// No such need or service.
    Unknown,
    /// The need already exists.
    Duplicate,
    /// The change could not be written to disk; nothing changed.
    Storage,
    /// Another live connection already speaks for this master name.
    NameInUse,
    /// The master name is bound to another secret.
    IdentityMismatch,
    /// The connection comes from an address outside `.allexlanmanager/subnets`.
    AddressRefused,
    /// This lan manager follows another (etcd election); `leader` names it.
    NotLeader,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).ok();
        f.write_str(v.as_ref().and_then(|v| v.as_str()).unwrap_or("error"))
    }
}

fn default_log_lines() -> u32 {
    10
}

impl LanToMaster {
    /// A refusal that names no leader.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> LanToMaster {
        LanToMaster::Error {
            code,
            message: message.into(),
            leader: None,
        }
    }
}

impl LanToAdmin {
    /// A refusal that names no leader.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> LanToAdmin {
        LanToAdmin::Error {
            code,
            message: message.into(),
            leader: None,
        }
    }
}
