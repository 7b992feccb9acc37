//! Draining a master (`master drain NAME`): it takes no new need, and its
//! services move to other masters one at a time, each stopped (its `down`
//! confirmed) before it is offered elsewhere, so a need still never runs
//! twice. `master undrain NAME` ends it.

use super::admin::admin_error;
use super::*;

/// One master being drained.
#[derive(Debug, Default)]
pub(super) struct Drain {
    /// The service moved last, until it runs elsewhere (or nowhere can).
    moving: Option<InstanceName>,
    /// Whether `master_drained` was said.
    told: bool,
}

impl State {
    pub(super) fn is_draining(&self, master: &str) -> bool {
        self.draining.contains_key(master)
    }

    pub(super) fn on_drain(&mut self, req: ReqId, name: &str) {
        if !self.masters.contains_key(name) {
            let msg = format!("no master {name} is connected or within its grace");
            return self.reply(req, admin_error(ErrorCode::Unknown, msg));
        }
        if self.is_draining(name) {
            let msg = format!("master {name} is already draining");
            return self.reply(req, LanToAdmin::Done { message: msg });
        }
        let services = self.held_by(name).len();
        tracing::info!(master = name, services, "draining");
        self.draining.insert(name.to_string(), Drain::default());
        self.event(EventKind::MasterDraining {
            master: name.to_string(),
            services: u32::try_from(services).unwrap_or(u32::MAX),
        });
        let message =
            format!("draining {name}: {services} services move to other masters one at a time");
        self.reply(req, LanToAdmin::Done { message });
    }

    pub(super) fn on_undrain(&mut self, req: ReqId, name: &str) {
        if self.draining.remove(name).is_none() {
            let msg = format!("master {name} is not draining");
            return self.reply(req, admin_error(ErrorCode::Unknown, msg));
        }
        tracing::info!(master = name, "undrained");
        self.event(EventKind::MasterUndrained {
            master: name.to_string(),
        });
        // It missed the needs opened while it drained.
        let frame = self.snapshot_for(name);
        self.send_frame_to(name, frame);
        let message = format!("{name} takes needs again");
        self.reply(req, LanToAdmin::Done { message });
    }

    /// The needs `master` holds, in the needs' order.
    pub(super) fn held_by(&self, master: &str) -> Vec<InstanceName> {
        self.order
            .iter()
            .filter(|i| {
                self.needs
                    .get(i.as_str())
                    .and_then(|e| e.slot.holder())
                    .is_some_and(|(m, _)| m == master)
            })
            .cloned()
            .collect()
    }

    /// Whether a connected master other than `except`, not draining, serves `need`.
    fn someone_else_serves(&self, need: &Need, except: &str) -> bool {
        self.masters.iter().any(|(name, m)| {
            name != except && m.conn.is_some() && !self.is_draining(name) && m.serves(need)
        })
    }

    /// Moves each draining master's next service once the last one has
    /// landed; run after every input, so no transition is missed.
    pub(super) fn advance_drains(&mut self) {
        if self.draining.is_empty() {
            return;
        }
        let names: Vec<String> = self.draining.keys().cloned().collect();
        for master in names {
            self.advance_drain(&master);
        }
    }

    fn advance_drain(&mut self, master: &str) {
        let moving = self.draining.get(master).and_then(|d| d.moving.clone());
        if let Some(i) = moving {
            let landed = match self.needs.get(&i) {
                None => true,
                Some(e) => match e.slot.holder() {
                    // Still ours: stopping, or not yet confirmed.
                    Some((m, _)) if m == master => false,
                    _ => {
                        matches!(e.slot, Slot::Running(_))
                            || !self.someone_else_serves(&e.need, master)
                    }
                },
            };
            if !landed {
                return;
            }
            if let Some(d) = self.draining.get_mut(master) {
                d.moving = None;
            }
        }
        let next = self.held_by(master).into_iter().find(|i| {
            self.needs.get(i).is_some_and(|e| {
                matches!(
                    e.slot,
                    Slot::Running(_) | Slot::Checking { .. } | Slot::Claimed { .. }
                )
            })
        });
        match next {
            Some(i) => {
                let Some((_, generation)) = self.needs.get(&i).and_then(|e| e.slot.holder()) else {
                    return;
                };
                self.stop(master, &i, generation, "moved: its master is draining");
                self.set_slot(
                    &i,
                    Slot::Stopping {
                        master: master.to_string(),
                        generation,
                        why: Release::Neutral,
                    },
                );
                if let Some(d) = self.draining.get_mut(master) {
                    d.moving = Some(i);
                }
            }
            None => {
                let held = !self.held_by(master).is_empty();
                let told = self.draining.get(master).is_some_and(|d| d.told);
                if !held && !told {
                    tracing::info!(master, "drained: it runs none of the LAN's needs");
                    if let Some(d) = self.draining.get_mut(master) {
                        d.told = true;
                    }
                    self.event(EventKind::MasterDrained {
                        master: master.to_string(),
                    });
                }
            }
        }
    }
}
