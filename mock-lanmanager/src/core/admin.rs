//! Admin requests: need add and remove (written to disk before they are
//! acknowledged, concurrent ones in one write), master forget and status.

use super::*;
use allex_protocol::InstanceName;

#[derive(Debug)]
pub(super) enum AdminChange {
    Add(Need, ReqId),
    Remove(InstanceName, ReqId),
}

impl AdminChange {
    pub(super) fn instance(&self) -> &str {
        match self {
            AdminChange::Add(n, _) => &n.instancename,
            AdminChange::Remove(i, _) => i,
        }
    }
}

impl State {
    pub(super) fn on_admin(&mut self, req: ReqId, request: AdminToLan) {
        match request {
            AdminToLan::Status => {
                self.reply(
                    req,
                    LanToAdmin::Status {
                        status: self.status(),
                    },
                );
            }
            AdminToLan::NeedAdd { need } => {
                if let Err(e) = need.validate() {
                    self.reply(req, admin_error(ErrorCode::Invalid, e.to_string()));
                } else if self.will_exist(&need.instancename) {
                    let msg = format!("need {} already exists", need.instancename);
                    self.reply(req, admin_error(ErrorCode::Duplicate, msg));
                } else {
                    self.pending.push(AdminChange::Add(need, req));
                    self.start_write();
                }
            }
            AdminToLan::NeedRemove { instancename } => {
                if self.will_exist(&instancename) {
                    self.pending.push(AdminChange::Remove(instancename, req));
                    self.start_write();
                } else {
                    let msg = format!("no need {instancename}");
                    self.reply(req, admin_error(ErrorCode::Unknown, msg));
                }
            }
            AdminToLan::NeedRestart { instancename } => self.on_restart(req, &instancename),
            AdminToLan::MasterDrain { name } => self.on_drain(req, &name),
            AdminToLan::MasterUndrain { name } => self.on_undrain(req, &name),
            AdminToLan::MasterForget { name } => match self.identities.remove(&name) {
                None => {
                    let msg = format!("no master {name} is bound");
                    self.reply(req, admin_error(ErrorCode::Unknown, msg));
                }
                Some(hash) => {
                    self.write_identities(masters::IdentityWrite::Forget { name, hash, req })
                }
            },
            // Streamed by the connection, never by the core.
            AdminToLan::Events { .. } | AdminToLan::Logs { .. } => {
                let msg = "events are answered by the connection".to_string();
                self.reply(req, admin_error(ErrorCode::Invalid, msg));
            }
            AdminToLan::AdminHello { .. } => {
                let msg = "admin_hello is only the first frame".to_string();
                self.reply(req, admin_error(ErrorCode::Invalid, msg));
            }
        }
    }

    /// `need restart`: the holder is told to stop, the slot waits for its
    /// `down` as a neutral release (so the need opens at once, with no
    /// failure counted), and a need backing off is offered now.
    fn on_restart(&mut self, req: ReqId, instance: &InstanceName) {
        let Some(e) = self.needs.get(instance) else {
            let msg = format!("no need {instance}");
            return self.reply(req, admin_error(ErrorCode::Unknown, msg));
        };
        let answer = match &e.slot {
            Slot::Claimed { master, generation }
            | Slot::Checking {
                master, generation, ..
            } => Ok(Some((master.clone(), *generation))),
            Slot::Running(r) => Ok(Some((r.master.clone(), r.generation))),
            Slot::Backoff { .. } => Ok(None),
            Slot::Open => Err(format!("need {instance} is not running; it is open")),
            Slot::Stopping { master, .. } => Err(format!(
                "need {instance} is already being stopped on {master}"
            )),
            Slot::Settling { master, .. } => Err(format!(
                "need {instance} is held for {master} after a lan manager restart; retry once it settles"
            )),
        };
        match answer {
            Err(msg) => self.reply(req, admin_error(ErrorCode::Invalid, msg)),
            Ok(None) => {
                tracing::info!(%instance, "restart: offered at once instead of backing off");
                if let Some(e) = self.needs.get_mut(instance) {
                    e.failures = 0;
                }
                self.set_slot(instance, Slot::Open);
                let message = format!("need {instance} offered again");
                self.reply(req, LanToAdmin::Done { message });
            }
            Ok(Some((master, generation))) => {
                tracing::info!(%instance, master, %generation, "restart ordered");
                self.stop(&master, instance, generation, "restarted by the operator");
                self.set_slot(
                    instance,
                    Slot::Stopping {
                        master: master.clone(),
                        generation,
                        why: Release::Neutral,
                    },
                );
                let message = format!(
                    "need {instance} restarting: {master} stops it, then it is offered again"
                );
                self.reply(req, LanToAdmin::Done { message });
            }
        }
    }

    /// Whether the need exists once the writes under way and queued are done.
    pub(super) fn will_exist(&self, instance: &InstanceName) -> bool {
        let mut exists = self.needs.contains_key(instance);
        for change in self.inflight.iter().chain(self.pending.iter()) {
            if change.instance() == instance {
                exists = matches!(change, AdminChange::Add(..));
            }
        }
        exists
    }

    /// Writes every queued change in one file write, unless a write is under way.
    pub(super) fn start_write(&mut self) {
        if !self.inflight.is_empty() || self.pending.is_empty() {
            return;
        }
        self.inflight = std::mem::take(&mut self.pending);
        let mut list: Vec<Need> = self
            .order
            .iter()
            .filter_map(|i| self.needs.get(i))
            .map(|e| e.need.clone())
            .collect();
        for change in &self.inflight {
            match change {
                AdminChange::Add(n, _) => list.push(n.clone()),
                AdminChange::Remove(i, _) => list.retain(|n| &n.instancename != i),
            }
        }
        self.fx.push(Effect::Write(Write::Needs(list)));
    }

    pub(super) fn on_needs_written(&mut self, result: Result<(), String>) {
        self.snapshot_cache.clear();
        let changes = std::mem::take(&mut self.inflight);
        for change in changes {
            match (change, &result) {
                (AdminChange::Add(_, req) | AdminChange::Remove(_, req), Err(e)) => {
                    tracing::error!("needs file not written: {e}");
                    self.reply(
                        req,
                        admin_error(
                            ErrorCode::Storage,
                            format!("not written, nothing changed: {e}"),
                        ),
                    );
                }
                (AdminChange::Add(need, req), Ok(())) => {
                    let instance = need.instancename.clone();
                    tracing::info!(%instance, module = %need.modulename, "need added");
                    self.event(EventKind::NeedAdded {
                        instancename: instance.clone(),
                        modulename: need.modulename.clone(),
                    });
                    self.order.push(instance.clone());
                    self.needs.insert(
                        instance.clone(),
                        NeedEntry {
                            need,
                            slot: Slot::Open,
                            failures: 0,
                        },
                    );
                    self.broadcast_open(&instance);
                    self.reply(
                        req,
                        LanToAdmin::Done {
                            message: format!("need {instance} added"),
                        },
                    );
                }
                (AdminChange::Remove(instance, req), Ok(())) => {
                    self.remove_need(&instance);
                    self.reply(
                        req,
                        LanToAdmin::Done {
                            message: format!("need {instance} removed"),
                        },
                    );
                }
            }
        }
        self.start_write();
    }

    pub(super) fn remove_need(&mut self, instance: &InstanceName) {
        self.snapshot_cache.clear();
        if !self.needs.contains_key(instance) {
            return;
        }
        tracing::info!(%instance, "need removed");
        self.event(EventKind::NeedRemoved {
            instancename: instance.clone(),
        });
        let Some(e) = self.needs.get(instance) else {
            return;
        };
        let holder = e.slot.holder().map(|(m, g)| (m.to_string(), g));
        match &e.slot {
            Slot::Open => self.broadcast_taken(instance, None),
            Slot::Running(_) | Slot::Checking { .. } => self.running.changed(instance),
            _ => {}
        }
        if let Some((master, generation)) = holder {
            self.stop(&master, instance, generation, "the need was removed");
        }
        self.needs.remove(instance);
        self.order.retain(|i| i != instance);
    }
}

pub(super) fn admin_error(code: ErrorCode, message: String) -> LanToAdmin {
    LanToAdmin::Error { code, message }
}
