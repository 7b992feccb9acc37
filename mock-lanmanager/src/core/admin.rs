//! Admin requests: need add and remove (written to disk before they are
//! acknowledged, concurrent ones in one write), master forget and status.

use super::*;
use allex_protocol::InstanceName;

#[derive(Debug)]
pub(super) enum AdminChange {
    Add(Need, ReqId),
    Remove(InstanceName, ReqId),
    /// `need disable` (true) or `need enable` (false).
    Close(InstanceName, bool, ReqId),
}

impl AdminChange {
    pub(super) fn instance(&self) -> &str {
        match self {
            AdminChange::Add(n, _) => &n.instancename,
            AdminChange::Remove(i, _) | AdminChange::Close(i, _, _) => i,
        }
    }

    fn req(&self) -> ReqId {
        match self {
            AdminChange::Add(_, r) | AdminChange::Remove(_, r) | AdminChange::Close(_, _, r) => *r,
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
            AdminToLan::NeedDisable { instancename } => self.on_close(req, instancename, true),
            AdminToLan::NeedEnable { instancename } => self.on_close(req, instancename, false),
            AdminToLan::NeedReload => {
                if self.reloads.is_empty() {
                    self.fx.push(Effect::Write(Write::ReadNeeds));
                }
                self.reloads.push(Some(req));
            }
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
            Slot::Claimed { master, generation, .. }
            | Slot::Checking {
                master, generation, ..
            } => Ok(Some((master.clone(), *generation))),
            Slot::Running(r) => Ok(Some((r.master.clone(), r.generation))),
            Slot::Backoff { .. } => Ok(None),
            Slot::Open => Err(format!("need {instance} is not running; it is open")),
            Slot::Closed => Err(format!(
                "need {instance} is disabled; `need enable {instance}` runs it again"
            )),
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
                self.leave_holder(instance, "restarted by the operator");
                let message = format!(
                    "need {instance} restarting: {master} stops it, then it is offered again"
                );
                self.reply(req, LanToAdmin::Done { message });
            }
        }
    }

    /// `need disable`/`enable`: recorded in `needs.runtime`, applied once written.
    fn on_close(&mut self, req: ReqId, instance: InstanceName, closed: bool) {
        if self.will_exist(&instance) {
            self.pending.push(AdminChange::Close(instance, closed, req));
            self.start_write();
        } else {
            let msg = format!("no need {instance}");
            self.reply(req, admin_error(ErrorCode::Unknown, msg));
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

    /// Writes every queued change in one write of `needs.runtime`, unless
    /// a write is under way; the operator's `needs` is never written.
    pub(super) fn start_write(&mut self) {
        if !self.inflight.is_empty() || self.pending.is_empty() {
            return;
        }
        self.inflight = std::mem::take(&mut self.pending);
        let mut trial = self.layers.clone();
        for change in &self.inflight {
            match change {
                AdminChange::Add(n, _) => trial.add(n.clone()),
                AdminChange::Remove(i, _) => trial.remove(i),
                AdminChange::Close(i, closed, _) => trial.set_closed(i, *closed),
            }
        }
        self.writing = trial.runtime.clone();
        self.fx.push(Effect::Write(Write::Runtime(trial.runtime)));
    }

    pub(super) fn on_needs_written(&mut self, result: Result<(), String>) {
        let changes = std::mem::take(&mut self.inflight);
        let runtime = std::mem::take(&mut self.writing);
        match result {
            Err(e) => {
                tracing::error!("needs.runtime not written: {e}");
                for change in changes {
                    let msg = format!("not written, nothing changed: {e}");
                    self.reply(change.req(), admin_error(ErrorCode::Storage, msg));
                }
            }
            Ok(()) => {
                self.layers.runtime = runtime;
                self.apply_layers();
                for change in changes {
                    let message = match &change {
                        AdminChange::Add(n, _) => format!("need {} added", n.instancename),
                        AdminChange::Remove(i, _) => format!("need {i} removed"),
                        AdminChange::Close(i, true, _) => {
                            format!("need {i} disabled: kept, not run")
                        }
                        AdminChange::Close(i, false, _) => format!("need {i} enabled"),
                    };
                    self.reply(change.req(), LanToAdmin::Done { message });
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
    LanToAdmin::Error {
        code,
        message,
        leader: None,
    }
}
