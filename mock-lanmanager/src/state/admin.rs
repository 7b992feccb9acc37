//! Admin requests: need add and remove (written to disk before they are
//! acknowledged, concurrent ones in one write) and status.

use super::*;

#[derive(Debug)]
pub(super) enum AdminChange {
    Add(Need, oneshot::Sender<LanToAdmin>),
    Remove(String, oneshot::Sender<LanToAdmin>),
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
    pub(super) fn on_admin(&mut self, request: AdminToLan, reply: oneshot::Sender<LanToAdmin>) {
        match request {
            AdminToLan::Status => {
                let _ = reply.send(LanToAdmin::Status {
                    status: self.status(),
                });
            }
            AdminToLan::NeedAdd { need } => {
                if let Err(e) = need.validate() {
                    let _ = reply.send(admin_error(ErrorCode::Invalid, e.to_string()));
                } else if self.will_exist(&need.instancename) {
                    let msg = format!("need {} already exists", need.instancename);
                    let _ = reply.send(admin_error(ErrorCode::Duplicate, msg));
                } else {
                    self.pending.push(AdminChange::Add(need, reply));
                    self.start_write();
                }
            }
            AdminToLan::NeedRemove { instancename } => {
                if self.will_exist(&instancename) {
                    self.pending.push(AdminChange::Remove(instancename, reply));
                    self.start_write();
                } else {
                    let msg = format!("no need {instancename}");
                    let _ = reply.send(admin_error(ErrorCode::Unknown, msg));
                }
            }
            AdminToLan::MasterForget { name } => {
                let answer = match self.identities.remove(&name) {
                    None => admin_error(ErrorCode::Unknown, format!("no master {name} is bound")),
                    Some(hash) => match self.store.write_masters(&self.identities) {
                        Ok(()) => {
                            tracing::info!(master = %name, "identity forgotten");
                            LanToAdmin::Done {
                                message: format!(
                                    "forgot master {name}: the next master to say hello under this name is bound to it"
                                ),
                            }
                        }
                        Err(e) => {
                            self.identities.insert(name, hash);
                            admin_error(ErrorCode::Storage, e.to_string())
                        }
                    },
                };
                let _ = reply.send(answer);
            }
            AdminToLan::AdminHello { .. } => {
                let msg = "admin_hello is only the first frame".to_string();
                let _ = reply.send(admin_error(ErrorCode::Invalid, msg));
            }
        }
    }

    /// Whether the need exists once the writes under way and queued are done.
    pub(super) fn will_exist(&self, instance: &str) -> bool {
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
        let store = self.store.clone();
        let tx = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let result = store.write_needs(&list).map_err(|e| e.to_string());
            let _ = tx.blocking_send(Event::NeedsWritten { result });
        });
    }

    pub(super) fn on_needs_written(&mut self, result: Result<(), String>) {
        self.snapshot_cache.clear();
        let changes = std::mem::take(&mut self.inflight);
        for change in changes {
            match (change, &result) {
                (AdminChange::Add(_, reply) | AdminChange::Remove(_, reply), Err(e)) => {
                    tracing::error!("needs file not written: {e}");
                    let _ = reply.send(admin_error(
                        ErrorCode::Storage,
                        format!("not written, nothing changed: {e}"),
                    ));
                }
                (AdminChange::Add(need, reply), Ok(())) => {
                    let instance = need.instancename.clone();
                    tracing::info!(instance, module = %need.modulename, "need added");
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
                    let _ = reply.send(LanToAdmin::Done {
                        message: format!("need {instance} added"),
                    });
                }
                (AdminChange::Remove(instance, reply), Ok(())) => {
                    self.remove_need(&instance);
                    let _ = reply.send(LanToAdmin::Done {
                        message: format!("need {instance} removed"),
                    });
                }
            }
        }
        self.start_write();
    }

    pub(super) fn remove_need(&mut self, instance: &str) {
        self.snapshot_cache.clear();
        let Some(e) = self.needs.get(instance) else {
            return;
        };
        tracing::info!(instance, "need removed");
        let holder = e.slot.holder().map(|(m, g)| (m.to_string(), g));
        match &e.slot {
            Slot::Open => self.broadcast_taken(instance, None),
            Slot::Running(_) | Slot::Checking { .. } => {
                self.running_dirty = true;
                self.running_changed.push(instance.to_string());
            }
            _ => {}
        }
        if let Some((master, generation)) = holder {
            self.stop(&master, instance, generation, "the need was removed");
        }
        self.needs.remove(instance);
        self.order.retain(|i| i != instance);
    }

    pub(super) fn status(&self) -> LanStatus {
        let now = Instant::now();
        let mut services: HashMap<&str, u32> = HashMap::new();
        let mut needs = Vec::with_capacity(self.order.len());
        let mut running = Vec::new();
        for instance in &self.order {
            let Some(e) = self.needs.get(instance) else {
                continue;
            };
            let (state, master, retry_in_ms) = match &e.slot {
                Slot::Open => (NeedState::Open, None, None),
                Slot::Claimed { master, .. } | Slot::Checking { master, .. } => {
                    (NeedState::Claimed, Some(master.clone()), None)
                }
                Slot::Running(r) => {
                    running.push(RunningService {
                        instancename: instance.clone(),
                        modulename: e.need.modulename.clone(),
                        master: r.master.clone(),
                        address: r.address.clone(),
                        ports: r.ports,
                        pid: r.pid,
                        generation: r.generation,
                        since_unix_ms: r.since_unix_ms,
                    });
                    (NeedState::Running, Some(r.master.clone()), None)
                }
                Slot::Backoff { until, .. } => (
                    NeedState::Backoff,
                    None,
                    Some(until.saturating_duration_since(now).as_millis() as u64),
                ),
                Slot::Settling { master } => (NeedState::Settling, Some(master.clone()), None),
            };
            if let Some((m, _)) = e.slot.holder() {
                *services.entry(m).or_default() += 1;
            }
            needs.push(NeedStatus {
                need: e.need.clone(),
                state,
                master,
                retry_in_ms,
                failures: e.failures,
            });
        }
        let mut masters: Vec<MasterSummary> = self
            .masters
            .iter()
            .map(|(name, m)| MasterSummary {
                name: name.clone(),
                address: m.address.clone(),
                connected: m.outbox.is_some(),
                peer: m.outbox.as_ref().map(|_| m.peer.to_string()),
                capacity: m.capacity.clone(),
                services: services.get(name.as_str()).copied().unwrap_or(0),
            })
            .collect();
        masters.sort_by(|a, b| a.name.cmp(&b.name));
        LanStatus {
            needs,
            running,
            masters,
        }
    }
}

fn admin_error(code: ErrorCode, message: String) -> LanToAdmin {
    LanToAdmin::Error { code, message }
}
