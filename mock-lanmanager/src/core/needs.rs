//! The needs in effect: the merge of the three needs files, and the one
//! function that moves the state to a new merge by its difference, so that
//! an admin change, `need reload`, SIGHUP and an edited file all change
//! exactly what changed and leave every other need (and its service) alone.

use super::admin::admin_error;
use super::*;
use allex_protocol::layers::Layered;

/// What a move to a new merge changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Difference {
    pub(super) added: u32,
    pub(super) removed: u32,
    pub(super) changed: u32,
}

impl State {
    /// The files were re-read: their difference is applied, or, when one is
    /// bad, nothing changes and the fault is reported with its location.
    pub(super) fn on_needs_read(&mut self, result: Result<Layers, String>) {
        let waiting = std::mem::take(&mut self.reloads);
        match result {
            Err(message) => {
                tracing::error!("needs not reloaded, nothing changed: {message}");
                self.event(EventKind::ReloadRefused {
                    message: message.clone(),
                });
                for req in waiting.into_iter().flatten() {
                    let msg = format!("not reloaded, nothing changed: {message}");
                    self.reply(req, admin_error(ErrorCode::Invalid, msg));
                }
            }
            Ok(read) => {
                self.layers.base = read.base;
                self.layers.overlay = read.overlay;
                // The writer reads after every write asked for before the
                // read, so with none under way the file is what we wrote,
                // or what the operator put there since.
                if self.inflight.is_empty() {
                    self.layers.runtime = read.runtime;
                }
                let d = self.apply_layers();
                if d != Difference::default() {
                    tracing::info!(
                        added = d.added,
                        removed = d.removed,
                        changed = d.changed,
                        "needs reloaded"
                    );
                }
                if d != Difference::default() || !waiting.is_empty() {
                    self.event(EventKind::NeedsReloaded {
                        added: d.added,
                        removed: d.removed,
                        changed: d.changed,
                    });
                }
                for req in waiting.into_iter().flatten() {
                    let message = format!(
                        "needs reloaded: {} added, {} removed, {} changed",
                        d.added, d.removed, d.changed
                    );
                    self.reply(req, LanToAdmin::Done { message });
                }
            }
        }
    }

    /// Moves the needs to the merge of `self.layers`: new needs open,
    /// needs gone stop, a need closed stops and one reopened opens, a need
    /// whose definition changed restarts with it; the rest is not touched.
    pub(super) fn apply_layers(&mut self) -> Difference {
        let merged: Vec<Layered> = self.layers.effective();
        let mut d = Difference::default();
        let keep: HashSet<&InstanceName> = merged.iter().map(|l| &l.need.instancename).collect();
        let gone: Vec<InstanceName> = self
            .order
            .iter()
            .filter(|i| !keep.contains(i))
            .cloned()
            .collect();
        for instance in &gone {
            self.remove_need(instance);
            d.removed += 1;
        }
        let order: Vec<InstanceName> = merged.iter().map(|l| l.need.instancename.clone()).collect();
        for l in merged {
            let instance = l.need.instancename.clone();
            let Some(e) = self.needs.get_mut(&instance) else {
                d.added += 1;
                self.insert_need(l);
                continue;
            };
            e.origin = l.origin;
            if e.need == l.need {
                continue;
            }
            d.changed += 1;
            let was_closed = e.need.closed();
            let closed = l.need.closed();
            e.need = l.need;
            self.snapshot_cache.clear();
            match (was_closed, closed) {
                (false, true) => self.close(&instance),
                (true, false) => self.reopen(&instance),
                (true, true) => {}
                (false, false) => self.redefine(&instance),
            }
        }
        self.order = order;
        d
    }

    fn insert_need(&mut self, l: Layered) {
        let instance = l.need.instancename.clone();
        tracing::info!(%instance, module = %l.need.modulename, layer = %l.origin, "need added");
        self.event(EventKind::NeedAdded {
            instancename: instance.clone(),
            modulename: l.need.modulename.clone(),
        });
        let closed = l.need.closed();
        self.snapshot_cache.clear();
        self.order.push(instance.clone());
        self.needs.insert(
            instance.clone(),
            NeedEntry {
                need: l.need,
                slot: if closed { Slot::Closed } else { Slot::Open },
                failures: 0,
                origin: l.origin,
            },
        );
        if closed {
            self.event(EventKind::NeedDisabled {
                instancename: instance,
            });
        } else {
            self.broadcast_open(&instance);
        }
    }

    /// The need was closed: its holder is told to stop (the slot then
    /// closes on `down`), an open one is withdrawn from the masters.
    fn close(&mut self, instance: &InstanceName) {
        tracing::info!(%instance, "need closed: kept, not run");
        self.event(EventKind::NeedDisabled {
            instancename: instance.clone(),
        });
        self.leave_holder(instance, "the need was disabled");
        if let Some(e) = self.needs.get(instance) {
            if matches!(e.slot, Slot::Open | Slot::Backoff { .. }) {
                self.set_slot(instance, Slot::Closed);
            }
        }
    }

    fn reopen(&mut self, instance: &InstanceName) {
        tracing::info!(%instance, "need reopened");
        self.event(EventKind::NeedEnabled {
            instancename: instance.clone(),
        });
        if let Some(e) = self.needs.get_mut(instance) {
            if matches!(e.slot, Slot::Closed) {
                e.failures = 0;
                self.set_slot(instance, Slot::Open);
            }
        }
    }

    /// The definition changed: a service running the old one restarts (a
    /// neutral stop, as `need restart`); an open need is offered anew.
    fn redefine(&mut self, instance: &InstanceName) {
        tracing::info!(%instance, "need changed");
        self.event(EventKind::NeedChanged {
            instancename: instance.clone(),
        });
        let open = self
            .needs
            .get(instance)
            .is_some_and(|e| matches!(e.slot, Slot::Open));
        if open {
            self.broadcast_open(instance);
        } else {
            self.leave_holder(instance, "the need changed");
        }
    }

    /// Tells the master holding `instance` (claimed, checking or running)
    /// to stop it, and holds the slot until it confirms with `down`.
    pub(super) fn leave_holder(&mut self, instance: &InstanceName, reason: &str) {
        let held = self.needs.get(instance).and_then(|e| match &e.slot {
            Slot::Claimed {
                master, generation, ..
            }
            | Slot::Checking {
                master, generation, ..
            } => Some((master.clone(), *generation)),
            Slot::Running(r) => Some((r.master.clone(), r.generation)),
            _ => None,
        });
        if let Some((master, generation)) = held {
            self.stop(&master, instance, generation, reason);
            self.set_slot(
                instance,
                Slot::Stopping {
                    master,
                    generation,
                    why: Release::Neutral,
                },
            );
        }
    }
}
