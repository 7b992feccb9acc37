//! The lan manager's event stream (`GET /v1/events`, `allexlanmanager
//! events`): one JSON object per state change, numbered.

use crate::types::{ExitInfo, Ports};
use crate::{ErrorCode, Generation, InstanceName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One state change, as the stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LanEvent {
    /// Numbers the events of one lan manager run, from 1, without gaps.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch when it happened.
    pub unix_ms: u64,
    /// What happened; its `type` names it.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A need was added (acknowledged: on disk).
    NeedAdded {
        /// Instance name.
        instancename: InstanceName,
        /// Module name.
        modulename: String,
    },
    /// A need was removed (on disk); its service is being stopped.
    NeedRemoved {
        /// Instance name.
        instancename: InstanceName,
    },
    /// A need was closed (`need disable`, or `closed` in a file): kept, not run.
    NeedDisabled {
        /// Instance name.
        instancename: InstanceName,
    },
    /// A closed need was reopened.
    NeedEnabled {
        /// Instance name.
        instancename: InstanceName,
    },
    /// A need's definition changed (a reload); its service restarts with it.
    NeedChanged {
        /// Instance name.
        instancename: InstanceName,
    },
    /// The needs files were re-read and their difference applied.
    NeedsReloaded {
        /// Needs that appeared.
        added: u32,
        /// Needs that went away.
        removed: u32,
        /// Needs whose definition changed.
        changed: u32,
    },
    /// A reload was refused: a file did not parse; nothing changed.
    ReloadRefused {
        /// The fault, with its `file:line:column`.
        message: String,
    },
    /// A need is open again, offered to the masters that can serve it.
    Opened {
        /// Instance name.
        instancename: InstanceName,
    },
    /// A master's claim was granted.
    Claimed {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// The grant's generation.
        generation: Generation,
    },
    /// A master's claim was refused (held elsewhere, backing off, storage).
    ClaimRefused {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// Why.
        reason: String,
    },
    /// The master reported the service spawned; its ports are being checked.
    Spawned {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// The grant's generation.
        generation: Generation,
        /// Its pid on the master's machine.
        pid: u32,
        /// The ports it declared.
        ports: Ports,
    },
    /// Every declared port accepted: the service is listed as running.
    Running {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// The grant's generation.
        generation: Generation,
        /// Its pid on the master's machine.
        pid: u32,
        /// Where it serves.
        address: String,
        /// Its ports.
        ports: Ports,
    },
    /// Its ports did not all accept in time: the master is told to stop it.
    Rejected {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// The grant's generation.
        generation: Generation,
        /// Why.
        reason: String,
    },
    /// A master is told to stop a service; the need waits for its `down`.
    Stopping {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// The generation being stopped.
        generation: Generation,
        /// Why.
        reason: String,
    },
    /// A service's process ended.
    Down {
        /// Instance name.
        instancename: InstanceName,
        /// The master.
        master: String,
        /// The generation that ended.
        generation: Generation,
        /// Its pid (0 when it never started).
        pid: u32,
        /// How it ended.
        exit: ExitInfo,
        /// Whether it was asked to stop.
        ordered: bool,
        /// How long it ran, in milliseconds.
        uptime_ms: u64,
    },
    /// A need that died soon after start waits before it is offered again.
    Backoff {
        /// Instance name.
        instancename: InstanceName,
        /// Deaths soon after start in a row.
        failures: u32,
        /// How long until it is offered again, in milliseconds.
        delay_ms: u64,
    },
    /// A master's hello was welcomed.
    MasterConnected {
        /// The master.
        master: String,
        /// Its advertise address.
        address: String,
        /// Where its connection comes from.
        peer: String,
    },
    /// A master's hello was refused.
    MasterRefused {
        /// The name it gave.
        master: String,
        /// The refusal's code.
        code: ErrorCode,
        /// The refusal's message.
        reason: String,
    },
    /// A frame from a connected master was refused (nothing changed).
    FrameRefused {
        /// The master.
        master: String,
        /// The refusal's code.
        code: ErrorCode,
        /// The refusal's message.
        message: String,
    },
    /// An operator began draining a master.
    MasterDraining {
        /// The master.
        master: String,
        /// Services it held then.
        services: u32,
    },
    /// A running service's health check started or stopped passing.
    Health {
        /// Instance name.
        instancename: InstanceName,
        /// Its master.
        master: String,
        /// Whether it passes now.
        passing: bool,
        /// Failures in a row.
        failures: u32,
        /// What the last probe said.
        last: String,
    },
    /// A draining master runs none of the LAN's needs any more.
    MasterDrained {
        /// The master.
        master: String,
    },
    /// A drain ended: the master takes needs again.
    MasterUndrained {
        /// The master.
        master: String,
    },
    /// A master's link ended; its services are kept for the grace.
    MasterDisconnected {
        /// The master.
        master: String,
        /// How long its services are kept, in milliseconds.
        grace_ms: u64,
    },
    /// A disconnected master's grace ended: its silent services move on.
    MasterExpired {
        /// The master.
        master: String,
        /// Services handed to others.
        moved: u32,
        /// Services kept because they still answer.
        kept: u32,
    },
}

impl EventKind {
    /// The `type` this kind has on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::NeedAdded { .. } => "need_added",
            EventKind::NeedRemoved { .. } => "need_removed",
            EventKind::NeedDisabled { .. } => "need_disabled",
            EventKind::NeedEnabled { .. } => "need_enabled",
            EventKind::NeedChanged { .. } => "need_changed",
            EventKind::NeedsReloaded { .. } => "needs_reloaded",
            EventKind::ReloadRefused { .. } => "reload_refused",
            EventKind::Opened { .. } => "opened",
            EventKind::Claimed { .. } => "claimed",
            EventKind::ClaimRefused { .. } => "claim_refused",
            EventKind::Spawned { .. } => "spawned",
            EventKind::Running { .. } => "running",
            EventKind::Rejected { .. } => "rejected",
            EventKind::Stopping { .. } => "stopping",
            EventKind::Down { .. } => "down",
            EventKind::Backoff { .. } => "backoff",
            EventKind::MasterConnected { .. } => "master_connected",
            EventKind::MasterRefused { .. } => "master_refused",
            EventKind::FrameRefused { .. } => "frame_refused",
            EventKind::MasterDraining { .. } => "master_draining",
            EventKind::MasterDrained { .. } => "master_drained",
            EventKind::Health { .. } => "health",
            EventKind::MasterUndrained { .. } => "master_undrained",
            EventKind::MasterDisconnected { .. } => "master_disconnected",
            EventKind::MasterExpired { .. } => "master_expired",
        }
    }
}

/// Events for the round-trip and fuzz properties, boxed: the derived
/// strategy of sixteen variants, inlined into every message strategy that
/// holds one, overflowed a test thread's stack.
#[cfg(test)]
pub(crate) fn arbitrary_event() -> proptest::strategy::BoxedStrategy<LanEvent> {
    use proptest::prelude::*;
    (any::<u64>(), any::<u64>(), any::<EventKind>())
        .prop_map(|(seq, unix_ms, kind)| LanEvent { seq, unix_ms, kind })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_flat_object_with_seq_and_type() {
        let e = LanEvent {
            seq: 7,
            unix_ms: 1,
            kind: EventKind::Backoff {
                instancename: crate::instance!("A"),
                failures: 2,
                delay_ms: 400,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq": 7, "unix_ms": 1, "type": "backoff", "instancename": "A", "failures": 2, "delay_ms": 400})
        );
        assert_eq!(v["type"], e.kind.name());
        assert_eq!(serde_json::from_value::<LanEvent>(v).unwrap(), e);
    }
}
