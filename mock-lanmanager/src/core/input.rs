//! What the core reacts to: everything the driver observed, as data.

use super::effect::{ConnId, ReqId};
use crate::core::Liveness;
use allex_protocol::layers::Layers;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{AdminToLan, MasterHello, MasterToLan};
use std::net::SocketAddr;
use std::time::Instant;

/// The time an input is handled at: the driver reads the clocks, never the core.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for deadlines and delays.
    pub at: Instant,
    /// Wall-clock milliseconds since the Unix epoch, for records shown to people.
    pub unix_ms: u64,
}

/// A timer the core set with [`super::Effect::Timer`], back when it is due.
///
/// Timers are never cancelled: each carries the generation or epoch it was
/// set for, so one that outlived its purpose finds nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// A grant's deadline passed.
    ClaimDeadline {
        /// Instance name.
        instance: InstanceName,
        /// The grant it was set for.
        generation: Generation,
    },
    /// A need's retry delay is over.
    BackoffOver {
        /// Instance name.
        instance: InstanceName,
        /// The backoff it was set for.
        epoch: u64,
    },
    /// A disconnected master's grace is over.
    GraceOver {
        /// The master.
        master: String,
        /// The disconnection it was set for.
        epoch: u64,
    },
    /// The settle period after a restart is over.
    SettleOver,
    /// Time to write the advisory `running` snapshot.
    FlushRunning,
}

/// Everything that can change the lan manager's state.
#[derive(Debug)]
pub enum Input {
    /// A master's hello passed the connection's version and token checks.
    MasterHello {
        /// The hello.
        hello: MasterHello,
        /// A verified client certificate names it: it may take the name
        /// over from another secret.
        certified: bool,
        /// Its connection.
        conn: ConnId,
        /// Where the connection comes from.
        peer: SocketAddr,
    },
    /// A message from a master after its hello (heartbeats stay in the connection).
    FromMaster {
        /// The connection it came on.
        conn: ConnId,
        /// The message.
        msg: MasterToLan,
    },
    /// A master's connection ended (or the driver could not queue to it).
    MasterGone {
        /// The connection.
        conn: ConnId,
    },
    /// The old link of a parked hello's name was pinged; did it answer in time?
    ProbeDone {
        /// The master name.
        master: String,
        /// The parked (new) connection.
        conn: ConnId,
        /// The old link answered the ping.
        answered: bool,
    },
    /// An admin request; answered with [`super::Effect::Reply`] under `req`.
    Admin {
        /// The request's id, chosen by the driver.
        req: ReqId,
        /// The request.
        request: AdminToLan,
    },
    /// A timer is due.
    Timer(Timer),
    /// A port check ended.
    CheckDone {
        /// Instance name.
        instance: InstanceName,
        /// The generation checked.
        generation: Generation,
        /// Ok, or which port did not accept.
        result: Result<(), String>,
    },
    /// One liveness round over a disconnected master's services ended.
    Liveness {
        /// The master.
        master: String,
        /// The disconnection it was started for.
        epoch: u64,
        /// Instance, generation and what its ports said.
        results: Vec<(InstanceName, Generation, Liveness)>,
    },
    /// The needs file asked for by the oldest pending [`super::Write::Needs`] was written (or not).
    NeedsWritten {
        /// Ok, or the storage error.
        result: Result<(), String>,
    },
    /// The needs files asked for by [`super::Effect::ReadNeeds`] (or by the
    /// driver itself, on SIGHUP or a change to one of them) were read.
    NeedsRead {
        /// The parsed layers, or the first fault with its `file:line:column`.
        result: Result<Layers, String>,
    },
    /// The identity file asked for by the oldest pending [`super::Write::Masters`] was written (or not).
    MastersWritten {
        /// Ok, or the storage error.
        result: Result<(), String>,
    },
    /// A [`super::Write::Generation`] reservation was made durable (or not).
    GenerationWritten {
        /// The bound it reserved up to.
        bound: u64,
        /// Ok, or the storage error.
        result: Result<(), String>,
    },
    /// The journal append numbered `seq` reached the file (or not).
    JournalWritten {
        /// The append's number.
        seq: u64,
        /// Ok, or the error.
        result: Result<(), String>,
    },
    /// Write the `running` snapshot now (before a clean shutdown); the driver
    /// answers `ack` once the disk has done it.
    FlushNow {
        /// The driver's handle for the waiter.
        ack: u64,
    },
}
