//! A need's slot: where it stands (open, claimed, being checked, running,
//! waiting out a crash-loop delay, held for its master after a restart),
//! and the one function that changes it, so that what depends on the slot
//! (the cached `needs` snapshot, the running journal, the `need_open` and
//! `need_taken` broadcasts) can never fall out of step with it.

use super::{Release, State};
use crate::needs_store::{RunningHint, Seen};
use allex_protocol::events::EventKind;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::Ports;
use std::time::Instant;

/// A port-checked running service.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) master: String,
    pub(super) generation: Generation,
    pub(super) pid: u32,
    pub(super) ports: Ports,
    pub(super) address: String,
    pub(super) since_unix_ms: u64,
    /// Its health check, as its master last reported it.
    pub(super) health: Option<allex_protocol::types::HealthStatus>,
}

/// Where one need stands.
#[derive(Debug, Clone)]
pub(super) enum Slot {
    Open,
    Claimed {
        master: String,
        generation: Generation,
        /// The ports the master reserved, when its claim said (so a service
        /// spawned from this grant can be probed while the master is away).
        ports: Option<Ports>,
    },
    Checking {
        master: String,
        generation: Generation,
        pid: u32,
        ports: Ports,
        address: String,
    },
    Running(Record),
    Backoff {
        until: Instant,
        epoch: u64,
    },
    /// Held for `master` after a restart: the running file said it ran
    /// (or was granted) `generation` there; its next hello decides. Past
    /// the settle period, a need `seen` serving is kept while its ports answer.
    Settling {
        master: String,
        generation: Generation,
        seen: Option<Seen>,
    },
    /// `master` was told to stop `generation` (its check failed, its grant
    /// lapsed, or it ran it unasked); held until it confirms with `down`,
    /// so the need never runs twice. `why` decides the failure count then.
    Stopping {
        master: String,
        generation: Generation,
        why: Release,
    },
    /// AllexJS `closed: true`: kept, offered to no master.
    Closed,
}

impl Slot {
    pub(super) fn holder(&self) -> Option<(&str, Generation)> {
        match self {
            Slot::Claimed {
                master, generation, ..
            }
            | Slot::Checking {
                master, generation, ..
            }
            | Slot::Stopping {
                master, generation, ..
            } => Some((master, *generation)),
            Slot::Running(r) => Some((&r.master, r.generation)),
            _ => None,
        }
    }
}

impl Slot {
    /// The master a restarted lan manager holds this need for, if it does.
    pub(super) fn settling_for(&self) -> Option<&str> {
        match self {
            Slot::Settling { master, .. } => Some(master),
            _ => None,
        }
    }
}

/// What the running file records for a slot: who runs it, or is awaited to.
pub(super) fn slot_hint(slot: &Slot) -> Option<RunningHint> {
    let hint = |master: &String, generation: &Generation, seen: Option<Seen>| {
        Some(RunningHint {
            master: master.clone(),
            generation: *generation,
            seen,
        })
    };
    let seen = |address: &String, ports: &Ports| {
        Some(Seen {
            address: address.clone(),
            ports: *ports,
        })
    };
    match slot {
        Slot::Running(r) => hint(&r.master, &r.generation, seen(&r.address, &r.ports)),
        Slot::Checking {
            master,
            generation,
            address,
            ports,
            ..
        } => hint(master, generation, seen(address, ports)),
        Slot::Settling {
            master,
            generation,
            seen,
        } => hint(master, generation, seen.clone()),
        // Everything else a master may run a process for, so that a
        // restarted lan manager holds the need for it instead of granting
        // it again.
        Slot::Claimed {
            master, generation, ..
        }
        | Slot::Stopping {
            master, generation, ..
        } => hint(master, generation, None),
        Slot::Open | Slot::Backoff { .. } | Slot::Closed => None,
    }
}

/// The event of a move from `old` to `new`, when the move is one an
/// operator follows (settling and stopping are told where they start).
fn slot_event(
    instance: &InstanceName,
    old: &Slot,
    new: &Slot,
    failures: u32,
    now: Instant,
) -> Option<EventKind> {
    let instancename = instance.clone();
    Some(match new {
        Slot::Open if !matches!(old, Slot::Open) => EventKind::Opened { instancename },
        Slot::Claimed {
            master, generation, ..
        } => EventKind::Claimed {
            instancename,
            master: master.clone(),
            generation: *generation,
        },
        Slot::Checking {
            master,
            generation,
            pid,
            ports,
            ..
        } => EventKind::Spawned {
            instancename,
            master: master.clone(),
            generation: *generation,
            pid: *pid,
            ports: *ports,
        },
        Slot::Running(r) => EventKind::Running {
            instancename,
            master: r.master.clone(),
            generation: r.generation,
            pid: r.pid,
            address: r.address.clone(),
            ports: r.ports,
        },
        Slot::Backoff { until, .. } => EventKind::Backoff {
            instancename,
            failures,
            delay_ms: u64::try_from(until.saturating_duration_since(now).as_millis())
                .unwrap_or(u64::MAX),
        },
        Slot::Open | Slot::Settling { .. } | Slot::Stopping { .. } | Slot::Closed => return None,
    })
}

impl State {
    /// Moves `instance` to `slot`; returns the slot it left. The snapshot
    /// cache is dropped when the need enters or leaves `Open`, the running
    /// journal gets a line when who runs it (or is awaited to) changes, a
    /// need that opens is offered to every master that can serve it, and
    /// one that leaves `Open` for a holder is withdrawn from the others.
    /// A closed need that would open closes instead, so that every path
    /// back to `Open` (a `down`, a delay over, a settle over) honours it.
    pub(super) fn set_slot(&mut self, instance: &InstanceName, slot: Slot) -> Option<Slot> {
        let e = self.needs.get_mut(instance)?;
        let slot = match slot {
            Slot::Open if e.need.closed() => Slot::Closed,
            slot => slot,
        };
        let old = std::mem::replace(&mut e.slot, slot);
        let was_open = matches!(old, Slot::Open);
        let is_open = matches!(e.slot, Slot::Open);
        let hint_changed = slot_hint(&old) != slot_hint(&e.slot);
        let holder = e.slot.holder().map(|(m, _)| m.to_string());
        if was_open != is_open {
            self.snapshot_cache.clear();
        }
        if hint_changed {
            self.running.changed(instance);
        }
        if let Some(kind) = slot_event(instance, &old, &e.slot, e.failures, self.now.at) {
            self.event(kind);
        }
        if is_open && !was_open {
            self.broadcast_open(instance);
        } else if was_open {
            match holder {
                Some(holder) => self.broadcast_taken(instance, Some(&holder)),
                // Closed: withdrawn from every master.
                None => self.broadcast_taken(instance, None),
            }
        }
        Some(old)
    }
}
