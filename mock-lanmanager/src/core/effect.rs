//! What the core asks the driver to do: sends, timers, checks, disk writes.
//!
//! Effects are executed in the order they were emitted; disk writes in
//! particular run one after another on one writer, so a journal append can
//! never be overtaken by the snapshot that would cut it.

use super::input::Timer;
use crate::needs_store::RunningHint;
use allex_protocol::events::EventKind;
use allex_protocol::layers::RuntimeEntry;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{ErrorCode, LanToAdmin, Ports, Protocol};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Identifies one accepted connection.
pub type ConnId = u64;

/// Identifies one admin request until it is answered.
pub type ReqId = u64;

/// What one round of connects says about a service whose master is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// At least one declared port accepted: something still serves there.
    Answers,
    /// Every declared port was refused: the host answered, nothing listens.
    Refused,
    /// No answer at all (timeouts, unreachable), or refused only in part.
    Silent,
}

/// One service of a disconnected master to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessTarget {
    /// Instance name.
    pub instance: InstanceName,
    /// The generation it holds.
    pub generation: Generation,
    /// Where it serves.
    pub address: String,
    /// Its declared ports.
    pub ports: Vec<(Protocol, u16)>,
}

/// A file write; each one that matters reports back with an input.
///
/// The running journal and snapshot go to one writer, the fsynced store
/// files (needs, identities, generations) to another, each in order: a
/// grant waits for its journal line, and must not wait behind an fsync.
#[derive(Debug, Clone)]
pub enum Write {
    /// Replace `needs.runtime` (never `needs`); answered by `Input::NeedsWritten`.
    Runtime(Vec<RuntimeEntry>),
    /// Read and check the three needs files; answered by `Input::NeedsRead`.
    /// Done by the same writer, after every write asked for before it, so a
    /// reload never reads a runtime layer older than the core's.
    ReadNeeds,
    /// Replace the identity file; answered by `Input::MastersWritten`.
    Masters(BTreeMap<String, String>),
    /// Reserve generations below `bound`; answered by `Input::GenerationWritten`.
    Generation(u64),
    /// Append lines to the running journal; answered by
    /// `Input::JournalWritten` with the same `seq`. Grants wait for it.
    Journal {
        /// The lines.
        lines: Vec<u8>,
        /// Numbers the appends, in order.
        seq: u64,
    },
    /// Replace the running snapshot and empty the journal it covers; when
    /// `ack` is set the driver answers that waiter once it is done.
    Running {
        /// Which need runs (or is awaited) on which master.
        hints: HashMap<InstanceName, RunningHint>,
        /// The flush waiter to answer afterwards.
        ack: Option<u64>,
    },
}

impl Write {
    /// Whether this write goes to the running journal's writer.
    pub fn is_running(&self) -> bool {
        matches!(self, Write::Journal { .. } | Write::Running { .. })
    }
}

/// One thing for the driver to do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Queue a frame on a connection; a full queue drops the connection,
    /// which comes back as `Input::MasterGone`.
    Send {
        /// The connection.
        conn: ConnId,
        /// The encoded frame.
        frame: Utf8Bytes,
    },
    /// Tell the master on `conn` that `instance` is no longer open. Said
    /// apart from [`Effect::Send`] so the driver can merge the notices that
    /// follow one another on a connection into one `needs_taken` frame: a
    /// burst of grants would otherwise be 99 frames per grant with 100 masters.
    Taken {
        /// The connection.
        conn: ConnId,
        /// The need no longer open.
        instance: InstanceName,
    },
    /// Send an error frame and close the connection with the same reason.
    Refuse {
        /// The connection.
        conn: ConnId,
        /// The error code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the peer.
        reason: String,
    },
    /// Ping `old` and report after `wait` whether it answered, as
    /// `Input::ProbeDone { master, conn, .. }`.
    ProbeLink {
        /// The master name.
        master: String,
        /// The connection whose liveness is in doubt.
        old: ConnId,
        /// The parked connection waiting for the answer.
        conn: ConnId,
        /// How long the old link has to answer.
        wait: Duration,
    },
    /// Publish a state change on the event stream; the driver numbers it.
    Event {
        /// When it happened (the input's wall-clock time).
        unix_ms: u64,
        /// What happened.
        kind: EventKind,
    },
    /// Answer an admin request.
    Reply {
        /// The request.
        req: ReqId,
        /// The answer.
        answer: LanToAdmin,
    },
    /// Deliver `timer` as an input at `at`.
    Timer {
        /// When.
        at: Instant,
        /// What.
        timer: Timer,
    },
    /// Connect to every declared port until all accept or `timeout` passes;
    /// answered by `Input::CheckDone`.
    CheckPorts {
        /// Instance name.
        instance: InstanceName,
        /// The generation checked.
        generation: Generation,
        /// Where.
        address: String,
        /// The protocols the need declares.
        protocols: Vec<Protocol>,
        /// The ports reported.
        ports: Ports,
        /// How long the check may take.
        timeout: Duration,
    },
    /// After `delay`, connect once to each target; answered by `Input::Liveness`.
    ProbeLiveness {
        /// The disconnected master.
        master: String,
        /// The disconnection this round belongs to.
        epoch: u64,
        /// Its services.
        targets: Vec<LivenessTarget>,
        /// Pause before the round.
        delay: Duration,
    },
    /// Write to disk, in order with every other write.
    Write(Write),
}
