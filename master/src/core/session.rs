//! The link session with the lan manager: hello with the inventory,
//! welcome, the reports kept while no link is welcomed, the needs it
//! offers, and fencing when it falls silent.

use super::*;
use allex_protocol::InstanceName;

impl State {
    pub(super) fn welcomed(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.welcomed)
    }

    /// Sends on a welcomed link; otherwise the message is moot (the next
    /// hello's inventory and the lan manager's needs snapshot replace it).
    pub(super) fn send(&mut self, msg: MasterToLan) {
        if self.welcomed() {
            self.fx.push(Effect::Send(msg));
        } else {
            tracing::debug!(?msg, "link down: message not sent");
        }
    }

    /// Sends a report about a child on a welcomed link, or keeps it for
    /// the next welcome: what a child did must reach the lan manager.
    pub(super) fn send_report(&mut self, msg: MasterToLan) {
        if self.welcomed() {
            self.fx.push(Effect::Send(msg));
        } else {
            self.reports.push(msg);
        }
    }

    pub(super) fn link_up(&mut self, local: IpAddr) {
        let advertise = self.cfg.advertiseaddress.unwrap_or(local);
        self.advertise = Some(advertise);
        let inventory = self
            .children
            .iter()
            .filter_map(|(name, c)| {
                Some(InventoryEntry {
                    instancename: name.clone(),
                    modulename: c.module.clone(),
                    generation: c.generation,
                    pid: c.pid()?,
                    ports: c.ports,
                })
            })
            .collect();
        // A `spawned` kept for this link is said by the inventory already.
        let children = &self.children;
        self.reports.retain(|m| match m {
            MasterToLan::Spawned {
                instancename,
                generation,
                pid,
                ..
            } => !children
                .get(instancename)
                .is_some_and(|c| c.generation == *generation && c.pid() == Some(*pid)),
            _ => true,
        });
        let hello = MasterToLan::Hello(MasterHello {
            version: PROTOCOL_VERSION,
            token: self.cfg.token.clone(),
            master: self.name.clone(),
            secret: self.secret.clone(),
            pid: self.pid,
            advertiseaddress: advertise.to_string(),
            capacity: self.capacity(),
            inventory,
        });
        tracing::info!(%advertise, children = self.children.len(), "link up: sending hello");
        self.fx.push(Effect::Send(hello));
        self.link = Some(Link { welcomed: false });
    }

    pub(super) fn link_down(&mut self, unsent: Vec<MasterToLan>) {
        if self.link.take().is_some() {
            tracing::warn!("link to the lan manager is down; children keep running");
        }
        // Unsent reports are older than any kept since, so they go first.
        let mut reports: Vec<MasterToLan> = unsent
            .into_iter()
            .filter(|m| {
                matches!(
                    m,
                    MasterToLan::Down { .. }
                        | MasterToLan::Spawned { .. }
                        | MasterToLan::SpawnFailed { .. }
                )
            })
            .collect();
        reports.append(&mut self.reports);
        self.reports = reports;
        self.open.clear();
        let claims: Vec<Ports> = self.claims.drain().map(|(_, p)| p).collect();
        for ports in claims {
            self.release_ports(&ports);
        }
        let waiting: Vec<ReqId> = self.lookups.drain().map(|(_, req)| req).collect();
        for req in waiting {
            self.reply(req, LocalReply::Location { location: None });
        }
        self.last_capacity = None;
        self.sent_free = None;
    }

    pub(super) fn lan_message(&mut self, msg: LanToMaster) {
        self.last_heard = self.now;
        // Any word from the lan manager ends a fencing episode: the link
        // may have lived through the silence, so no welcome need follow.
        // The fence stays armed for the next silence.
        if self.fenced {
            tracing::info!("fencing over: the lan manager answers again");
            self.fenced = false;
        }
        if let Some(fence) = self.fence {
            self.arm_fence(fence);
        }
        match msg {
            LanToMaster::Welcome {
                heartbeat_ms,
                fence_ms,
                ..
            } => {
                tracing::info!(heartbeat_ms, ?fence_ms, "welcomed by the lan manager");
                if let Some(why) = self.refused.take() {
                    tracing::info!("accepted again after: {why}");
                }
                self.fence = fence_ms.map(Duration::from_millis);
                if let Some(fence) = self.fence {
                    self.arm_fence(fence);
                }
                if let Some(link) = &mut self.link {
                    link.welcomed = true;
                    let queued = std::mem::take(&mut self.reports);
                    for msg in queued {
                        self.send_report(msg);
                    }
                }
                self.last_capacity = Some(self.capacity_key());
                // The hello carried the capacity of this moment.
                self.sent_free = Some(self.free());
            }
            LanToMaster::Needs { needs } => {
                self.open = needs
                    .into_iter()
                    .map(|n| (n.instancename.clone(), n))
                    .collect();
                // A snapshot replaces what we knew: claims on needs it no longer lists are moot.
                let moot: Vec<InstanceName> = self
                    .claims
                    .keys()
                    .filter(|k| !self.open.contains_key(*k))
                    .cloned()
                    .collect();
                for name in moot {
                    self.drop_claim(&name);
                }
                self.claim_open_needs();
                self.capacity_changed();
            }
            LanToMaster::NeedOpen { need } => {
                let name = need.instancename.clone();
                self.open.insert(name.clone(), need);
                self.try_claim(&name, &BTreeSet::new());
                self.capacity_changed();
            }
            LanToMaster::NeedTaken { instancename } => self.taken(&instancename),
            LanToMaster::NeedsTaken { instancenames } => {
                for instancename in &instancenames {
                    self.taken(instancename);
                }
            }
            LanToMaster::ClaimRefused {
                instancename,
                reason,
            } => {
                tracing::debug!(instance = %instancename, %reason, "claim refused");
                self.open.remove(&instancename);
                self.drop_claim(&instancename);
            }
            LanToMaster::Grant {
                need, generation, ..
            } => self.grant(need, generation),
            LanToMaster::Running {
                instancename,
                generation,
            } => match self.children.get_mut(&instancename) {
                Some(c) if c.generation == generation && c.stop.is_none() => {
                    c.state = ChildState::Running;
                    let n = self.quick_deaths.get(&instancename).copied().unwrap_or(0) + 1;
                    allex_protocol::log_repeated!(n, info, instance = %instancename, %generation, "listed as running");
                }
                _ => {
                    tracing::debug!(instance = %instancename, %generation, "running for no such child")
                }
            },
            LanToMaster::Rejected {
                instancename,
                generation,
                reason,
            } => {
                tracing::warn!(instance = %instancename, %generation, %reason, "port check failed; stopping");
                self.order_stop(&instancename, generation);
            }
            LanToMaster::Stop {
                instancename,
                generation,
                reason,
            } => {
                tracing::info!(instance = %instancename, %generation, %reason, "stop ordered");
                self.order_stop(&instancename, generation);
            }
            LanToMaster::LookupResult { id, location } => {
                if let Some(req) = self.lookups.remove(&id) {
                    self.reply(req, LocalReply::Location { location });
                }
            }
            // The driver answers log requests itself.
            LanToMaster::Heartbeat { .. }
            | LanToMaster::Logs { .. }
            | LanToMaster::LogsCancel { .. } => {}
            LanToMaster::Error { code, message, .. } if !self.welcomed() => {
                // The link logs the refusal; status shows it until a welcome.
                self.refused = Some(format!("{code}: {message}"));
            }
            LanToMaster::Error { code, message, .. } => {
                tracing::warn!(%code, %message, "the lan manager refused a message");
            }
        }
    }

    /// A need is no longer open: forget it, and the claim on it.
    fn taken(&mut self, instance: &InstanceName) {
        self.open.remove(instance);
        self.drop_claim(instance);
        self.release_kept(instance);
    }

    /// Fencing: after the fence time without a word from the lan manager,
    /// stop every child, because past the grace the lan manager hands
    /// their needs to other masters and we must not run them beside those.
    pub(super) fn fence_check(&mut self) {
        self.fence_armed = false;
        let Some(fence) = self.fence else { return };
        if self.fenced || self.shutting_down {
            return;
        }
        let silent = self.now.saturating_duration_since(self.last_heard);
        if silent < fence {
            self.arm_fence(fence - silent);
            return;
        }
        self.fenced = true;
        tracing::error!(
            fence_ms = fence.as_millis() as u64,
            children = self.children.len(),
            "fenced: no word from the lan manager for the fence time; stopping every child"
        );
        let names: Vec<InstanceName> = self.children.keys().cloned().collect();
        for name in names {
            self.stop_child(&name, true);
        }
    }

    fn arm_fence(&mut self, after: Duration) {
        if self.fence_armed {
            return;
        }
        self.fence_armed = true;
        self.after(after, Timer::FenceCheck);
    }
}
