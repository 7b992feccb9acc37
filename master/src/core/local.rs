//! Requests on the master's Unix socket: ready, lookup, status.

use super::{ReqId, State, Timer, LOOKUP_TIMEOUT};
use allex_protocol::lan::ErrorCode;
use allex_protocol::InstanceName;
use allex_protocol::{ChildState, LocalReply, LocalRequest, MasterToLan, ServiceLocation};

fn not_yours(pid: Option<u32>) -> LocalReply {
    LocalReply::Error {
        code: ErrorCode::NotYours,
        message: format!(
            "process {} is not a child of this master",
            pid.map_or_else(|| "?".to_string(), |p| p.to_string())
        ),
    }
}

impl State {
    /// The child that is `pid` or leads its process group `group`.
    pub(super) fn find_child_of(&self, pid: u32, group: Option<u32>) -> Option<InstanceName> {
        if let Some(name) = self.by_pid.get(&pid) {
            return Some(name.clone());
        }
        self.by_pid.get(&group?).cloned()
    }

    pub(super) fn local(
        &mut self,
        req: ReqId,
        request: LocalRequest,
        peer_pid: Option<u32>,
        group: Option<u32>,
    ) {
        match request {
            LocalRequest::Ready => match peer_pid {
                Some(pid) if self.children.values().any(|c| c.pid().is_none()) => {
                    if !self.mark_ready(pid, group) {
                        self.early_ready.push((pid, group, req));
                        return;
                    }
                    self.reply(req, LocalReply::Ack);
                }
                Some(pid) if self.mark_ready(pid, group) => {
                    self.reply(req, LocalReply::Ack);
                }
                _ => self.reply(req, not_yours(peer_pid)),
            },
            LocalRequest::Lookup { instancename } => {
                if self.welcomed() {
                    let id = self.next_lookup;
                    self.next_lookup += 1;
                    self.lookups.insert(id, req);
                    self.send(MasterToLan::Lookup { id, instancename });
                    self.after(LOOKUP_TIMEOUT, Timer::LookupTimeout { id });
                } else {
                    // Without the lan manager only this master's own services are known.
                    let location = self.local_location(&instancename);
                    self.reply(req, LocalReply::Location { location });
                }
            }
            LocalRequest::Status => {
                let status = self.status();
                self.reply(req, LocalReply::Status { status });
            }
        }
    }

    /// Marks the child owning `pid` (leader or group member) ready.
    pub(super) fn mark_ready(&mut self, pid: u32, group: Option<u32>) -> bool {
        let Some(name) = self.find_child_of(pid, group) else {
            return false;
        };
        let Some(c) = self.children.get_mut(&name) else {
            return false;
        };
        c.ready = true;
        if c.state == ChildState::Starting {
            c.state = ChildState::Ready;
        }
        tracing::info!(instance = %name, pid = ?c.pid(), "child is ready");
        if c.inherit {
            self.report_spawned(&name);
        }
        true
    }

    /// Answers early `ready`s once the pids they wait for are known.
    pub(super) fn settle_early_ready(&mut self) {
        if self.early_ready.is_empty() {
            return;
        }
        let still_spawning = self.children.values().any(|c| c.pid().is_none());
        for (pid, group, req) in std::mem::take(&mut self.early_ready) {
            if self.mark_ready(pid, group) {
                self.reply(req, LocalReply::Ack);
            } else if still_spawning {
                self.early_ready.push((pid, group, req));
            } else {
                self.reply(req, not_yours(Some(pid)));
            }
        }
    }

    pub(super) fn local_location(&self, instance: &InstanceName) -> Option<ServiceLocation> {
        let c = self.children.get(instance)?;
        if c.pid().is_none() || c.state == ChildState::Stopping {
            return None;
        }
        Some(ServiceLocation {
            instancename: instance.clone(),
            modulename: c.module.clone(),
            address: self.advertise?.to_string(),
            ports: c.ports,
        })
    }
}
