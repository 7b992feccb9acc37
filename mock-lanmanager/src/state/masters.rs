//! Masters coming and going: hello, inventory reconciliation, grace, settle,
//! and the messages a connected master sends that are not about one claim.

use super::*;

impl State {
    pub(super) fn on_hello(&mut self, hello: MasterHello, outbox: Outbox) {
        let name = hello.master.clone();
        let epoch = self.next_epoch();
        let ip = hello.advertiseaddress.parse::<IpAddr>().ok();
        let modules: HashSet<String> = hello.capacity.modules.iter().cloned().collect();
        if let Some(old) = self.masters.get(&name).and_then(|m| m.outbox.clone()) {
            if old.id != outbox.id {
                tracing::info!(master = %name, "a newer connection of this master replaces the old one");
                old.kill("replaced by a newer connection of the same master");
                self.conns.remove(&old.id);
            }
        }
        tracing::info!(
            master = %name,
            address = %hello.advertiseaddress,
            inventory = hello.inventory.len(),
            "master connected"
        );
        self.conns.insert(outbox.id, name.clone());
        self.masters.insert(
            name.clone(),
            MasterEntry {
                address: hello.advertiseaddress.clone(),
                ip,
                capacity: hello.capacity.clone(),
                modules,
                outbox: Some(outbox),
                epoch,
            },
        );
        self.send_to(
            &name,
            &LanToMaster::Welcome {
                version: PROTOCOL_VERSION,
                grace_ms: self.settings.grace.as_millis() as u64,
                heartbeat_ms: self.settings.heartbeat.as_millis() as u64,
            },
        );
        self.reconcile(&name, &hello.inventory);
        let snapshot = self.snapshot_for(&name);
        self.send_frame_to(&name, snapshot);
    }

    /// Keeps what the master runs where it is still wanted and its own, stops the rest.
    pub(super) fn reconcile(&mut self, master: &str, inventory: &[InventoryEntry]) {
        let mut reported: HashSet<&str> = HashSet::new();
        for item in inventory {
            self.saw_generation(item.generation);
            if !reported.insert(item.instancename.as_str()) {
                self.stop(
                    master,
                    &item.instancename,
                    item.generation,
                    "reported twice",
                );
                continue;
            }
            self.reconcile_one(master, item);
        }
        // What we list for this master but it no longer runs has ended meanwhile.
        let gone: Vec<(String, bool)> = self
            .needs
            .iter()
            .filter(|(i, _)| !reported.contains(i.as_str()))
            .filter_map(|(i, e)| match &e.slot {
                Slot::Running(r) if r.master == master => Some((i.clone(), true)),
                Slot::Checking { master: m, .. } if m == master => Some((i.clone(), true)),
                Slot::Settling { master: m } if m == master => Some((i.clone(), false)),
                _ => None,
            })
            .collect();
        for (instance, was_held) in gone {
            if was_held {
                tracing::info!(
                    master,
                    instance,
                    "service missing from the master's inventory"
                );
            }
            self.release(&instance, Release::Neutral);
        }
    }

    pub(super) fn reconcile_one(&mut self, master: &str, item: &InventoryEntry) {
        let instance = item.instancename.as_str();
        let ip = self.masters.get(master).and_then(|m| m.ip);
        let Some(e) = self.needs.get(instance) else {
            self.stop(master, instance, item.generation, "the need was removed");
            return;
        };
        if e.need.modulename != item.modulename {
            self.stop(
                master,
                instance,
                item.generation,
                "the need runs another module",
            );
            return;
        }
        let adoptable = allows(&e.need, ip);
        match &e.slot {
            Slot::Running(r) if r.master == master && r.generation == item.generation => {
                if r.pid != item.pid {
                    self.start_check(master, instance, item.generation, item.pid, item.ports);
                }
            }
            Slot::Checking {
                master: m,
                generation,
                ..
            } if m == master && *generation == item.generation => {}
            Slot::Claimed {
                master: m,
                generation,
            } if m == master && *generation == item.generation => {
                // Its `spawned` report was lost with the link.
                self.start_check(master, instance, item.generation, item.pid, item.ports);
            }
            Slot::Open | Slot::Backoff { .. } | Slot::Settling { .. } if adoptable => {
                let was_open = matches!(e.slot, Slot::Open);
                tracing::info!(
                    master,
                    instance,
                    generation = item.generation,
                    "adopting a running service"
                );
                self.start_check(master, instance, item.generation, item.pid, item.ports);
                if was_open {
                    self.broadcast_taken(instance, Some(master));
                }
            }
            Slot::Open | Slot::Backoff { .. } | Slot::Settling { .. } => {
                self.stop(
                    master,
                    instance,
                    item.generation,
                    "ipaddress does not allow this master",
                );
            }
            _ => {
                self.stop(
                    master,
                    instance,
                    item.generation,
                    "another master or a newer generation holds the need",
                );
            }
        }
    }

    pub(super) fn on_gone(&mut self, conn: ConnId) {
        let Some(name) = self.conns.remove(&conn) else {
            return;
        };
        let epoch = self.next_epoch();
        let Some(m) = self.masters.get_mut(&name) else {
            return;
        };
        if m.outbox.as_ref().map(|o| o.id) != Some(conn) {
            return;
        }
        m.outbox = None;
        m.epoch = epoch;
        tracing::info!(master = %name, grace_ms = self.settings.grace.as_millis() as u64, "master disconnected");
        self.after(
            self.settings.grace,
            Event::GraceOver {
                master: name,
                epoch,
            },
        );
    }

    pub(super) fn on_grace_over(&mut self, master: &str, epoch: u64) {
        match self.masters.get(master) {
            Some(m) if m.outbox.is_none() && m.epoch == epoch => {}
            _ => return,
        }
        self.masters.remove(master);
        let held: Vec<String> = self
            .order
            .iter()
            .filter(|i| {
                self.needs
                    .get(i.as_str())
                    .and_then(|e| e.slot.holder())
                    .is_some_and(|(m, _)| m == master)
            })
            .cloned()
            .collect();
        tracing::info!(
            master,
            needs = held.len(),
            "grace over: handing the master's needs to others"
        );
        for instance in held {
            self.release(&instance, Release::Neutral);
        }
    }

    pub(super) fn on_settle_over(&mut self) {
        let settling: Vec<String> = self
            .order
            .iter()
            .filter(|i| {
                matches!(
                    self.needs.get(i.as_str()).map(|e| &e.slot),
                    Some(Slot::Settling { .. })
                )
            })
            .cloned()
            .collect();
        if !settling.is_empty() {
            tracing::info!(
                needs = settling.len(),
                "settle over: opening needs whose master did not come back"
            );
        }
        for instance in settling {
            self.release(&instance, Release::Neutral);
        }
    }

    pub(super) fn on_master_message(&mut self, conn: ConnId, msg: MasterToLan) {
        let Some(master) = self.conns.get(&conn).cloned() else {
            return;
        };
        match msg {
            MasterToLan::Claim { instancename } => self.on_claim(&master, &instancename),
            MasterToLan::Spawned {
                instancename,
                generation,
                pid,
                ports,
            } => self.on_spawned(&master, &instancename, generation, pid, ports),
            MasterToLan::SpawnFailed {
                instancename,
                generation,
                reason,
            } => self.on_spawn_failed(&master, &instancename, generation, &reason),
            MasterToLan::Down {
                instancename,
                generation,
                pid,
                exit,
                ordered,
                uptime_ms,
            } => {
                tracing::info!(master, instance = %instancename, generation, pid, %exit, ordered, uptime_ms, "down");
                self.on_down(&master, &instancename, generation, pid, ordered, uptime_ms)
            }
            MasterToLan::Capacity(capacity) => self.on_capacity(&master, capacity),
            MasterToLan::Lookup { id, instancename } => {
                let location = self.lookup(&instancename);
                self.send_to(&master, &LanToMaster::LookupResult { id, location });
            }
            MasterToLan::Hello(_) | MasterToLan::Heartbeat { .. } => {}
        }
    }

    pub(super) fn lookup(&self, instance: &str) -> Option<ServiceLocation> {
        let e = self.needs.get(instance)?;
        match &e.slot {
            Slot::Running(r) => Some(ServiceLocation {
                instancename: instance.to_string(),
                modulename: e.need.modulename.clone(),
                address: r.address.clone(),
                ports: r.ports,
            }),
            _ => None,
        }
    }

    pub(super) fn on_capacity(&mut self, master: &str, capacity: Capacity) {
        let Some(m) = self.masters.get_mut(master) else {
            return;
        };
        let modules: HashSet<String> = capacity.modules.iter().cloned().collect();
        let changed = modules != m.modules;
        m.modules = modules;
        m.capacity = capacity;
        if changed {
            let snapshot = self.snapshot_for(master);
            self.send_frame_to(master, snapshot);
        }
    }
}
