//! One need's life with a master: claim, grant deadline, spawned, port check,
//! running, down, and the crash-loop delay.

use super::*;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::Protocol;

impl State {
    pub(super) fn start_check(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        pid: u32,
        ports: Ports,
    ) {
        let Some(address) = self.masters.get(master).map(|m| m.address.clone()) else {
            return;
        };
        let Some(protocols) = self.needs.get(instance).map(|e| e.need.protocols()) else {
            return;
        };
        self.set_slot(
            instance,
            Slot::Checking {
                master: master.to_string(),
                generation,
                pid,
                ports,
                address: address.clone(),
            },
        );
        self.fx.push(Effect::CheckPorts {
            instance: instance.clone(),
            generation,
            address,
            protocols,
            ports,
            timeout: self.settings.check_timeout,
        });
    }

    pub(super) fn on_claim(
        &mut self,
        master: &str,
        instance: &InstanceName,
        ports: Option<allex_protocol::Ports>,
    ) {
        let ip = self.masters.get(master).and_then(|m| m.ip);
        let refusal = match self.needs.get(instance) {
            _ if self.is_draining(master) => Some(format!("{master} is draining")),
            None => Some("no such need".to_string()),
            Some(e) => match &e.slot {
                Slot::Open if !allows(&e.need, ip) => Some(format!(
                    "{} does not allow this master's address",
                    restriction(&e.need)
                )),
                Slot::Open => None,
                Slot::Claimed { master: m, .. } | Slot::Checking { master: m, .. } => {
                    Some(format!("held by {m}"))
                }
                Slot::Running(r) => Some(format!("running on {}", r.master)),
                Slot::Backoff { .. } => Some("waiting out its crash-loop delay".to_string()),
                Slot::Closed => Some("disabled (closed)".to_string()),
                Slot::Settling { master: m, .. } => {
                    Some(format!("held for {m} after a lan manager restart"))
                }
                Slot::Stopping { master: m, .. } => {
                    Some(format!("waiting for {m} to confirm it stopped"))
                }
            },
        };
        let generation = match refusal {
            None => match self.generations.take() {
                Some(g) => Ok(g),
                None => Err("storage: cannot reserve a generation number".to_string()),
            },
            Some(r) => Err(r),
        };
        let generation = match generation {
            Ok(g) => g,
            Err(reason) => {
                self.event(EventKind::ClaimRefused {
                    instancename: instance.clone(),
                    master: master.to_string(),
                    reason: reason.clone(),
                });
                self.send_to(
                    master,
                    &LanToMaster::ClaimRefused {
                        instancename: instance.clone(),
                        reason,
                    },
                );
                return;
            }
        };
        let Some(need) = self.needs.get(instance).map(|e| e.need.clone()) else {
            return;
        };
        self.set_slot(
            instance,
            Slot::Claimed {
                master: master.to_string(),
                generation,
                ports: ports.filter(|p| p.iter().next().is_some()),
            },
        );
        // AllexJS `timeout`: the need's own deadline to get running.
        let deadline = need.timeout().unwrap_or(self.settings.claim_timeout);
        // Sent once the journal says who holds it: a lan manager killed
        // before that restarts holding the need for this master, never
        // granting it to a second one while the first spawns it.
        self.running
            .hold_grant(master, need, generation, deadline.as_millis() as u64);
        self.after(
            deadline,
            Timer::ClaimDeadline {
                instance: instance.clone(),
                generation,
            },
        );
    }

    /// Refuses a report that does not match the need's current holder and generation.
    pub(super) fn refuse_report(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        stop_it: bool,
    ) {
        let current = self
            .needs
            .get(instance)
            .and_then(|e| e.slot.holder())
            .map(|(m, g)| (m.to_string(), g));
        match current {
            Some((holder, g)) if g == generation && holder != master => {
                self.error_to(
                    master,
                    ErrorCode::NotYours,
                    format!("{instance} generation {generation} is held by {holder}, not by you"),
                );
            }
            _ => {
                self.error_to(
                    master,
                    ErrorCode::Stale,
                    format!("{instance} generation {generation} is not current"),
                );
                if stop_it {
                    self.stop(master, instance, generation, "stale generation");
                }
            }
        }
    }

    pub(super) fn on_spawned(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        pid: u32,
        ports: Ports,
    ) {
        let Some(e) = self.needs.get(instance) else {
            self.error_to(master, ErrorCode::Unknown, format!("no need {instance}"));
            self.stop(master, instance, generation, "the need was removed");
            return;
        };
        match &e.slot {
            Slot::Claimed {
                master: m,
                generation: g,
                ..
            } if m == master && *g == generation => {
                if let Some(why) = bad_spawn_report(&e.need.protocols(), pid, ports) {
                    // The claim stays as it was: a corrected report may still
                    // come before the deadline, otherwise the deadline reopens it.
                    self.error_to(
                        master,
                        ErrorCode::Invalid,
                        format!("spawned {instance} generation {generation}: {why}"),
                    );
                    return;
                }
                self.start_check(master, instance, generation, pid, ports);
            }
            Slot::Checking {
                master: m,
                generation: g,
                ..
            } if m == master && *g == generation => {
                self.error_to(
                    master,
                    ErrorCode::Stale,
                    format!("{instance} generation {generation} was already reported"),
                );
            }
            Slot::Running(r) if r.master == master && r.generation == generation => {
                self.error_to(
                    master,
                    ErrorCode::Stale,
                    format!("{instance} generation {generation} was already reported"),
                );
            }
            // It crossed our stop on the link; that stop's `down` frees the need.
            Slot::Stopping {
                master: m,
                generation: g,
                ..
            } if m == master && *g == generation => {
                tracing::debug!(
                    master,
                    %instance,
                    %generation,
                    "spawned after its stop was sent"
                );
            }
            // A report that comes late (held on a link, or after a reconnect)
            // for a need nobody holds now: what the master runs is adopted.
            Slot::Open | Slot::Backoff { .. } | Slot::Settling { .. }
                if e.slot.settling_for().is_none_or(|m| m == master)
                    && self.masters.get(master).is_some_and(|m| m.serves(&e.need))
                    && bad_spawn_report(&e.need.protocols(), pid, ports).is_none() =>
            {
                self.generations.saw(generation);
                self.adopt(master, instance, generation, pid, ports);
            }
            _ => self.refuse_report(master, instance, generation, true),
        }
    }

    pub(super) fn on_spawn_failed(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        reason: &str,
    ) {
        let held = self.needs.get(instance).and_then(|e| match &e.slot {
            Slot::Claimed {
                master: m,
                generation: g,
                ..
            } if m == master && *g == generation => Some(Release::Failure),
            Slot::Stopping {
                master: m,
                generation: g,
                why,
            } if m == master && *g == generation => Some(*why),
            _ => None,
        });
        if let Some(why) = held {
            let n = self.needs.get(instance).map_or(0, |e| e.failures) + 1;
            allex_protocol::log_repeated!(
                n,
                warn,
                master,
                %instance,
                %generation,
                "spawn failed: {reason}"
            );
            self.release(instance, why);
        } else {
            self.refuse_report(master, instance, generation, false);
        }
    }

    pub(super) fn on_down(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        pid: u32,
        ordered: bool,
        uptime_ms: u64,
    ) {
        let stable = uptime_ms >= self.settings.stable.as_millis() as u64;
        let Some(e) = self.needs.get(instance) else {
            if !ordered {
                self.error_to(master, ErrorCode::Unknown, format!("no need {instance}"));
            }
            return;
        };
        let current = match &e.slot {
            Slot::Running(r) => Some((r.master.as_str(), r.generation, Some(r.pid))),
            Slot::Checking {
                master: m,
                generation: g,
                pid: p,
                ..
            } => Some((m.as_str(), *g, Some(*p))),
            Slot::Claimed {
                master: m,
                generation: g,
                ..
            } => Some((m.as_str(), *g, None)),
            Slot::Stopping {
                master: m,
                generation: g,
                ..
            } => Some((m.as_str(), *g, None)),
            _ => None,
        };
        let stopping = match &e.slot {
            Slot::Stopping { why, .. } => Some(*why),
            _ => None,
        };
        match current {
            Some((m, g, p)) if m == master && g == generation => {
                // An ordered stop is confirmed for the generation, whatever
                // pid we had on record: the master stopped what it ran under it.
                if !ordered && p.is_some_and(|p| p != pid) {
                    self.error_to(
                        master,
                        ErrorCode::Stale,
                        format!(
                            "{instance} generation {generation} runs as another pid than {pid}"
                        ),
                    );
                    return;
                }
                // Stops the master decided itself (shutdown, fencing) or that
                // were ordered are not the service's failures.
                let leaving = self.masters.get(master).is_some_and(|m| m.leaving);
                let why = if let Some(why) = stopping {
                    why
                } else if ordered || leaving {
                    Release::Neutral
                } else if stable {
                    Release::Stable
                } else {
                    Release::Failure
                };
                self.release(instance, why);
            }
            // The confirmation of a stop we ordered, for a generation already gone.
            _ if ordered => {
                tracing::debug!(master, %instance, %generation, "ordered stop confirmed");
            }
            _ => self.refuse_report(master, instance, generation, false),
        }
    }

    // ----- timers and checks -----

    pub(super) fn on_claim_deadline(&mut self, instance: &InstanceName, generation: Generation) {
        // A need with its own `timeout` must be running by then, checked or not.
        let late = self.needs.get(instance).and_then(|e| match &e.slot {
            Slot::Checking {
                master,
                generation: g,
                ..
            } if *g == generation && e.need.timeout().is_some() => Some(master.clone()),
            _ => None,
        });
        if let Some(master) = late {
            tracing::warn!(master, %instance, %generation, "not running within the need's timeout");
            self.stop_and_hold(
                &master,
                instance,
                generation,
                Release::Failure,
                "not running within the need's timeout",
            );
            return;
        }
        let lapsed = match self.needs.get(instance).map(|e| &e.slot) {
            Some(Slot::Claimed {
                master,
                generation: g,
                ..
            }) if *g == generation => Some(master.clone()),
            _ => None,
        };
        if let Some(master) = lapsed {
            // A holder that is away may have spawned meanwhile: its next
            // hello says so, and its grace decides, not this deadline.
            let away = self
                .masters
                .get(&master)
                .is_some_and(|m| m.conn.is_none() && !m.grace_over);
            if away {
                tracing::info!(
                    master,
                    %instance,
                    %generation,
                    "claim deadline passed while its master is away: left to the grace"
                );
                return;
            }
            tracing::warn!(
                master,
                %instance,
                %generation,
                "claim lapsed: no spawned report in time"
            );
            // It may be spawning still: held until it says it stopped.
            self.stop_and_hold(
                &master,
                instance,
                generation,
                Release::Neutral,
                "claim lapsed",
            );
        }
    }

    pub(super) fn on_check_done(
        &mut self,
        instance: &InstanceName,
        generation: Generation,
        result: Result<(), String>,
    ) {
        let Some(e) = self.needs.get(instance) else {
            return;
        };
        let Slot::Checking {
            master,
            generation: g,
            pid,
            ports,
            address,
        } = &e.slot
        else {
            return;
        };
        if *g != generation {
            return;
        }
        let (master, pid, ports, address, failures) =
            (master.clone(), *pid, *ports, address.clone(), e.failures);
        match result {
            Ok(()) => {
                let n = failures + 1;
                allex_protocol::log_repeated!(n, info, master, %instance, %generation, "running");
                self.set_slot(
                    instance,
                    Slot::Running(Record {
                        master: master.clone(),
                        generation,
                        pid,
                        ports,
                        address,
                        since_unix_ms: self.now.unix_ms,
                        health: None,
                    }),
                );
                self.send_to(
                    &master,
                    &LanToMaster::Running {
                        instancename: instance.clone(),
                        generation,
                    },
                );
            }
            Err(reason) => {
                let n = failures + 1;
                allex_protocol::log_repeated!(
                    n,
                    warn,
                    master,
                    %instance,
                    %generation,
                    "port check failed: {reason}"
                );
                // The master stops it on `rejected`; its `down` frees the need.
                self.event(EventKind::Rejected {
                    instancename: instance.clone(),
                    master: master.clone(),
                    generation,
                    reason: reason.clone(),
                });
                self.send_to(
                    &master,
                    &LanToMaster::Rejected {
                        instancename: instance.clone(),
                        generation,
                        reason,
                    },
                );
                self.set_slot(
                    instance,
                    Slot::Stopping {
                        master,
                        generation,
                        why: Release::Failure,
                    },
                );
            }
        }
    }

    /// Orders `master` to stop `generation` and holds the need until its
    /// `down` says the process is gone: a need never runs twice.
    pub(super) fn stop_and_hold(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        why: Release,
        reason: &str,
    ) {
        self.stop(master, instance, generation, reason);
        self.set_slot(
            instance,
            Slot::Stopping {
                master: master.to_string(),
                generation,
                why,
            },
        );
    }

    pub(super) fn on_backoff_over(&mut self, instance: &InstanceName, epoch: u64) {
        let due = matches!(self.needs.get(instance).map(|e| &e.slot), Some(Slot::Backoff { epoch: e, .. }) if *e == epoch);
        if due {
            self.set_slot(instance, Slot::Open);
        }
    }
}

/// Why a `spawned` report cannot be true, if it cannot: a pid of 0, a port of
/// 0, a missing port for a protocol the need declares, or a port for one it
/// does not (the port check would probe a port nobody promised).
fn bad_spawn_report(protocols: &[Protocol], pid: u32, ports: Ports) -> Option<String> {
    if pid == 0 {
        return Some("pid 0 is no process".into());
    }
    for p in Protocol::ALL {
        match (protocols.contains(&p), ports.get(p)) {
            (true, None) => return Some(format!("no {p} port, which the need declares")),
            (true, Some(0)) => return Some(format!("{p} port 0")),
            (false, Some(port)) => {
                return Some(format!("{p} port {port}, which the need does not declare"))
            }
            _ => {}
        }
    }
    None
}

/// The placement constraint of a restricted need, as the operator wrote it.
fn restriction(need: &Need) -> String {
    match (&need.ipaddress, need.strategy_ip()) {
        (Some(a), Some(s)) => format!("ipaddress {a} with strategies.ip {s}"),
        (Some(a), None) => format!("ipaddress {a}"),
        (None, Some(s)) => format!("strategies.ip {s}"),
        (None, None) => "nothing".to_string(),
    }
}
