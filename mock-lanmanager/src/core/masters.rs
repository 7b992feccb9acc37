//! Masters coming and going: identity, hello, inventory reconciliation,
//! grace, the liveness probes of a disconnected master's services, settle,
//! and the messages a connected master sends that are not about one claim.

use super::*;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use sha2::{Digest, Sha256};

/// How long a connected master's old link has to answer a ping before a
/// new connection under its name may replace it.
const PROBE_WAIT: Duration = Duration::from_millis(1000);

/// Pause between two liveness rounds over a disconnected master's services.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(250);

/// The same past the grace: by then the services that still answer are
/// kept for as long as their master is frozen or cut off, which can be
/// long, so they are checked less often.
const LIVENESS_INTERVAL_PAST_GRACE: Duration = Duration::from_secs(1);

/// The epoch of probes of settling needs, which no master's epoch reaches
/// (masters count theirs up from 1).
const SETTLE_EPOCH: u64 = u64::MAX;

/// What the identity file keeps of a secret: its SHA-256, so the file alone
/// does not let anyone speak for a master.
fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// A hello waiting for the old link of its name to answer a ping or not.
#[derive(Debug)]
pub(super) struct Parked {
    hello: MasterHello,
    conn: ConnId,
    peer: SocketAddr,
    old: ConnId,
}

/// An identity-file write under way, and what waits for it to be durable.
#[derive(Debug)]
pub(super) enum IdentityWrite {
    /// A new name's first hello: admitted once its binding is on disk.
    Bind {
        hello: MasterHello,
        conn: ConnId,
        peer: SocketAddr,
        /// The connection ended while the binding was written: the name
        /// is bound, but nobody is admitted on a dead connection.
        gone: bool,
    },
    /// `master forget`: answered once the name is gone from disk.
    Forget {
        name: String,
        hash: String,
        req: ReqId,
    },
}

impl State {
    pub(super) fn on_hello(
        &mut self,
        hello: MasterHello,
        certified: bool,
        conn: ConnId,
        peer: SocketAddr,
    ) {
        let name = hello.master.clone();
        let hash = secret_hash(&hello.secret);
        let binding = self
            .identity_writes
            .iter()
            .any(|w| matches!(w, IdentityWrite::Bind { hello: h, .. } if h.master == name));
        match self.identities.get(&name) {
            // A certificate for the name (`--tls-client-ca`) proves it: a
            // new secret under it is bound anew instead of refused.
            Some(bound) if *bound != hash && (!certified || binding) => {
                tracing::warn!(master = %name, %peer, "refused: the name is bound to another secret");
                self.refuse_hello(
                    &name,
                    conn,
                    ErrorCode::IdentityMismatch,
                    format!(
                        "master name {name} is bound to another secret; if this is a new \
                         machine or runtime directory for that name, run \
                         `allexlanmanager master forget {name}` first"
                    ),
                );
                return;
            }
            // Same secret while its binding is still being written: it is
            // a second connection for a name not admitted yet.
            Some(_) if binding => {
                self.refuse_in_use(&name, conn, Some(peer));
                return;
            }
            Some(bound) if *bound == hash => {}
            _ => {
                // Bound (in memory at once, so a rival secret is refused
                // meanwhile) and admitted once the binding is durable.
                self.identities.insert(name.clone(), hash);
                self.write_identities(IdentityWrite::Bind {
                    hello,
                    conn,
                    peer,
                    gone: false,
                });
                return;
            }
        }
        self.hello_of_known(hello, conn, peer);
    }

    /// Writes the identity file for `why`; `on_masters_written` finishes it.
    pub(super) fn write_identities(&mut self, why: IdentityWrite) {
        self.identity_writes.push_back(why);
        self.fx
            .push(Effect::Write(Write::Masters(self.identities.clone())));
    }

    /// The oldest identity write ended: admit or refuse, answer or restore.
    pub(super) fn on_masters_written(&mut self, result: Result<(), String>) {
        let Some(why) = self.identity_writes.pop_front() else {
            return;
        };
        match (why, result) {
            (
                IdentityWrite::Bind {
                    hello,
                    conn,
                    peer,
                    gone,
                },
                Ok(()),
            ) => {
                tracing::info!(master = %hello.master, "bound the master name to its secret");
                if !gone {
                    self.hello_of_known(hello, conn, peer);
                }
            }
            (IdentityWrite::Bind { hello, conn, .. }, Err(e)) => {
                let name = hello.master;
                self.identities.remove(&name);
                tracing::error!(master = %name, "cannot record the master's identity: {e}");
                self.refuse_hello(
                    &name,
                    conn,
                    ErrorCode::Storage,
                    format!("cannot record this master's identity: {e}"),
                );
            }
            (IdentityWrite::Forget { name, req, .. }, Ok(())) => {
                tracing::info!(master = %name, "identity forgotten");
                self.reply(
                    req,
                    LanToAdmin::Done {
                        message: format!(
                            "forgot master {name}: the next master to say hello under this name is bound to it"
                        ),
                    },
                );
            }
            (IdentityWrite::Forget { name, hash, req }, Err(e)) => {
                self.identities.insert(name, hash);
                self.reply(
                    req,
                    LanToAdmin::Error {
                        code: ErrorCode::Storage,
                        message: e,
                        leader: None,
                    },
                );
            }
        }
    }

    /// A hello whose name is bound to its secret: admit it, or first make
    /// sure the link its name is connected on is dead.
    fn hello_of_known(&mut self, hello: MasterHello, conn: ConnId, peer: SocketAddr) {
        let name = hello.master.clone();
        let live = self
            .masters
            .get(&name)
            .and_then(|m| m.conn)
            .filter(|old| *old != conn);
        if let Some(old) = live {
            if self.parked.contains_key(&name) {
                let from = self.masters.get(&name).map(|m| m.peer);
                self.refuse_in_use(&name, conn, from);
                return;
            }
            // Only a link known dead may be replaced: a live one answers the
            // ping (its WebSocket layer does, even when its master is busy).
            self.parked.insert(
                name.clone(),
                Parked {
                    hello,
                    conn,
                    peer,
                    old,
                },
            );
            self.fx.push(Effect::ProbeLink {
                master: name,
                old,
                conn,
                wait: PROBE_WAIT,
            });
            return;
        }
        self.admit(hello, conn, peer);
    }

    /// Refuses a hello, and says so on the event stream.
    fn refuse_hello(&mut self, name: &str, conn: ConnId, code: ErrorCode, message: String) {
        self.event(EventKind::MasterRefused {
            master: name.to_string(),
            code,
            reason: message.clone(),
        });
        self.fx.push(Effect::Refuse {
            conn,
            code,
            message,
        });
    }

    fn refuse_in_use(&mut self, name: &str, conn: ConnId, from: Option<SocketAddr>) {
        let from = from.map_or_else(|| "elsewhere".to_string(), |a| a.to_string());
        tracing::error!(
            master = %name,
            first = %from,
            "refused a second connection for a connected, answering master name"
        );
        self.refuse_hello(
            name,
            conn,
            ErrorCode::NameInUse,
            format!(
                "master name {name} is connected from {from} and answering; \
                 give each master its own name (config key `name`)"
            ),
        );
    }

    /// The old link had its chance to answer: keep it and refuse the new
    /// connection, or drop it as dead and admit the new one.
    pub(super) fn on_probe_done(&mut self, master: &str, conn: ConnId, answered: bool) {
        if self.parked.get(master).map(|p| p.conn) != Some(conn) {
            return;
        }
        let Some(p) = self.parked.remove(master) else {
            return;
        };
        let old = self
            .masters
            .get(master)
            .and_then(|m| m.conn.map(|c| (c, m.peer)))
            .filter(|(c, _)| *c == p.old);
        match old {
            Some((_, from)) if answered => self.refuse_in_use(master, p.conn, Some(from)),
            Some((old, _)) => {
                tracing::info!(master, "the old link did not answer a ping: replacing it");
                self.fx.push(Effect::Close {
                    conn: old,
                    reason: "replaced: this link did not answer a ping".into(),
                });
                self.conns.remove(&old);
                self.admit(p.hello, p.conn, p.peer);
            }
            // The old link is gone; but if the name connected again
            // meanwhile on a link of its own, that one is the live master.
            None => match self
                .masters
                .get(master)
                .and_then(|m| m.conn.map(|c| (c, m.peer)))
            {
                Some((_, from)) => self.refuse_in_use(master, p.conn, Some(from)),
                None => self.admit(p.hello, p.conn, p.peer),
            },
        }
    }

    fn admit(&mut self, hello: MasterHello, conn: ConnId, peer: SocketAddr) {
        let name = hello.master.clone();
        let epoch = self.next_epoch();
        let ip = hello.advertiseaddress.parse::<IpAddr>().ok();
        let modules: HashSet<String> = hello.capacity.modules.iter().cloned().collect();
        tracing::info!(
            master = %name,
            address = %hello.advertiseaddress,
            %peer,
            inventory = hello.inventory.len(),
            "master connected"
        );
        self.event(EventKind::MasterConnected {
            master: name.clone(),
            address: hello.advertiseaddress.clone(),
            peer: peer.to_string(),
        });
        self.conns.insert(conn, name.clone());
        self.masters.insert(
            name.clone(),
            MasterEntry {
                address: hello.advertiseaddress.clone(),
                ip,
                peer,
                capacity: hello.capacity.clone(),
                modules,
                conn: Some(conn),
                epoch,
                grace_over: false,
                answering: HashSet::default(),
                leaving: false,
            },
        );
        self.send_to(
            &name,
            &LanToMaster::Welcome {
                version: PROTOCOL_VERSION,
                grace_ms: self.settings.grace.as_millis() as u64,
                heartbeat_ms: self.settings.heartbeat.as_millis() as u64,
                fence_ms: self.settings.fence.map(|f| f.as_millis() as u64),
            },
        );
        self.reconcile(&name, &hello.inventory);
        let snapshot = self.snapshot_for(&name);
        self.send_frame_to(&name, snapshot);
    }

    /// Keeps what the master runs where it is still wanted and its own, stops
    /// the rest, and releases every record of it the inventory does not confirm.
    pub(super) fn reconcile(&mut self, master: &str, inventory: &[InventoryEntry]) {
        let mut reported: HashSet<&str> = HashSet::default();
        for item in inventory {
            self.generations.saw(item.generation);
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
        // What we list for this master but it no longer runs has ended
        // meanwhile: no record may stay without a live process behind it.
        // What was granted to it (a grant whose deadline passed while it
        // was away, a grant before a restart, a stop it has not confirmed)
        // may still be spawning, which no inventory shows: it is stopped
        // and held until the master confirms.
        let mut gone: Vec<(InstanceName, Option<Generation>)> = self
            .needs
            .iter()
            .filter(|(i, _)| !reported.contains(i.as_str()))
            .filter_map(|(i, e)| match &e.slot {
                Slot::Running(r) if r.master == master => Some((i.clone(), None)),
                Slot::Checking { master: m, .. } if m == master => Some((i.clone(), None)),
                Slot::Claimed {
                    master: m,
                    generation,
                    ..
                }
                | Slot::Settling {
                    master: m,
                    generation,
                    ..
                }
                | Slot::Stopping {
                    master: m,
                    generation,
                    ..
                } if m == master => Some((i.clone(), Some(*generation))),
                _ => None,
            })
            .collect();
        gone.sort();
        for (instance, unconfirmed) in gone {
            match unconfirmed {
                None => {
                    tracing::info!(
                        master,
                        %instance,
                        "service missing from the master's inventory: released"
                    );
                    self.release(&instance, Release::Neutral);
                }
                Some(generation) => {
                    let why = match self.needs.get(&instance).map(|e| &e.slot) {
                        Some(Slot::Stopping { why, .. }) => *why,
                        _ => Release::Neutral,
                    };
                    self.stop_and_hold(master, &instance, generation, why, "not in the inventory");
                }
            }
        }
    }

    pub(super) fn reconcile_one(&mut self, master: &str, item: &InventoryEntry) {
        let instance = &item.instancename;
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
        let (g, p) = (item.generation, item.pid);
        match &e.slot {
            Slot::Running(r) if r.master == master && r.generation == g && r.pid == p => {}
            Slot::Checking {
                master: m,
                generation,
                pid,
                ..
            } if m == master && *generation == g && *pid == p => {}
            Slot::Claimed {
                master: m,
                generation,
                ..
            } if m == master && *generation == g => {
                // Its `spawned` report was lost with the link.
                self.start_check(master, instance, g, p, item.ports);
            }
            // Told to stop before the link went: told again.
            Slot::Stopping {
                master: m,
                generation,
                ..
            } if m == master && *generation == g => {
                self.stop(
                    master,
                    instance,
                    g,
                    "stop not confirmed before the link went",
                );
            }
            slot if slot.holder().is_some_and(|(m, _)| m == master) => {
                // Our record of this master names another generation or pid
                // than the process it really runs: the record goes, and the
                // real process is checked in its place (never two).
                tracing::info!(
                    master,
                    %instance,
                    generation = %g,
                    pid = p,
                    "the master runs another generation than recorded: adopting what it runs"
                );
                self.start_check(master, instance, g, p, item.ports);
            }
            // Held after a restart for another master: that one may run it
            // (its hello has not come yet), so this copy is stopped.
            Slot::Settling { master: m, .. } if m != master => {
                self.stop(
                    master,
                    instance,
                    item.generation,
                    "held for another master after a lan manager restart",
                );
            }
            Slot::Open | Slot::Backoff { .. } | Slot::Settling { .. } if adoptable => {
                self.adopt(master, instance, g, p, item.ports);
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

    /// Takes a service a master runs without a current grant as the need's holder.
    pub(super) fn adopt(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        pid: u32,
        ports: Ports,
    ) {
        tracing::info!(master, %instance, %generation, "adopting a running service");
        self.start_check(master, instance, generation, pid, ports);
    }

    pub(super) fn on_gone(&mut self, conn: ConnId) {
        // A hello that waits (for a probe or its binding) on a connection
        // that ended is never admitted: its master would be a ghost.
        self.parked.retain(|_, p| p.conn != conn);
        for w in &mut self.identity_writes {
            if let IdentityWrite::Bind { conn: c, gone, .. } = w {
                if *c == conn {
                    *gone = true;
                }
            }
        }
        let Some(name) = self.conns.remove(&conn) else {
            return;
        };
        let epoch = self.next_epoch();
        let Some(m) = self.masters.get_mut(&name) else {
            return;
        };
        if m.conn != Some(conn) {
            return;
        }
        m.conn = None;
        m.epoch = epoch;
        m.answering.clear();
        let grace_ms = u64::try_from(self.settings.grace.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(master = %name, grace_ms, "master disconnected");
        self.event(EventKind::MasterDisconnected {
            master: name.clone(),
            grace_ms,
        });
        self.probe_liveness(&name, epoch, Duration::ZERO);
        self.after(
            self.settings.grace,
            Timer::GraceOver {
                master: name,
                epoch,
            },
        );
    }

    /// Starts one round of connects to the services a disconnected master
    /// holds: the evidence of whether they still serve.
    fn probe_liveness(&mut self, master: &str, epoch: u64, delay: Duration) {
        let master_address = self.masters.get(master).map(|m| &m.address);
        let targets: Vec<LivenessTarget> = self
            .order
            .iter()
            .filter_map(|i| {
                let e = self.needs.get(i)?;
                let (m, g, address, ports) = match &e.slot {
                    Slot::Running(r) => (&r.master, r.generation, &r.address, r.ports),
                    Slot::Checking {
                        master,
                        generation,
                        address,
                        ports,
                        ..
                    } => (master, *generation, address, *ports),
                    // Granted, its `spawned` perhaps lost with the link: a
                    // service on the claimed ports is evidence it runs.
                    Slot::Claimed {
                        master,
                        generation,
                        ports: Some(ports),
                    } => (master, *generation, master_address?, *ports),
                    _ => return None,
                };
                (m == master).then(|| LivenessTarget {
                    instance: i.clone(),
                    generation: g,
                    address: address.clone(),
                    ports: ports.iter().collect(),
                })
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        self.fx.push(Effect::ProbeLiveness {
            master: master.to_string(),
            epoch,
            targets,
            delay,
        });
    }

    /// Acts on one liveness round: a service whose every port refuses is
    /// gone (released now); past the grace, one that does not answer at all
    /// is moved, and one that answers stays where it serves.
    pub(super) fn on_liveness(
        &mut self,
        master: &str,
        epoch: u64,
        results: Vec<(InstanceName, Generation, Liveness)>,
    ) {
        if epoch == SETTLE_EPOCH {
            return self.on_settle_liveness(master, results);
        }
        let grace_over = match self.masters.get(master) {
            Some(m) if m.conn.is_none() && m.epoch == epoch => m.grace_over,
            _ => return,
        };
        for (instance, generation, verdict) in results {
            let held = self
                .needs
                .get(&instance)
                .and_then(|e| match &e.slot {
                    Slot::Running(r) => Some((r.master.as_str(), r.generation, true)),
                    Slot::Checking {
                        master, generation, ..
                    }
                    | Slot::Claimed {
                        master, generation, ..
                    } => Some((master.as_str(), *generation, false)),
                    _ => None,
                })
                .filter(|(m, g, _)| *m == master && *g == generation);
            let Some((_, _, listened)) = held else {
                continue;
            };
            let answers = verdict == Liveness::Answers;
            if let Some(m) = self.masters.get_mut(master) {
                if answers {
                    m.answering.insert(instance.clone());
                } else {
                    m.answering.remove(&instance);
                }
            }
            // A service still being checked may not listen yet: refused
            // ports say nothing about whether its process lives.
            if verdict == Liveness::Refused && listened {
                tracing::info!(
                    master,
                    %instance,
                    %generation,
                    "every port of a disconnected master's service refuses: released"
                );
                self.release(&instance, Release::Neutral);
            } else if grace_over && !answers {
                tracing::info!(
                    master,
                    %instance,
                    %generation,
                    "a disconnected master's service stopped answering: handing it to others"
                );
                self.release(&instance, Release::Neutral);
            }
        }
        self.forget_if_empty(master);
        if self.masters.contains_key(master) {
            let pause = if grace_over {
                LIVENESS_INTERVAL_PAST_GRACE
            } else {
                LIVENESS_INTERVAL
            };
            self.probe_liveness(master, epoch, pause);
        }
    }

    /// Drops a disconnected master past its grace once it holds nothing.
    fn forget_if_empty(&mut self, master: &str) {
        let done = self
            .masters
            .get(master)
            .is_some_and(|m| m.conn.is_none() && m.grace_over);
        if done && !self.holds_any(master) {
            self.masters.remove(master);
        }
    }

    fn holds_any(&self, master: &str) -> bool {
        self.needs
            .values()
            .any(|e| e.slot.holder().is_some_and(|(m, _)| m == master))
    }

    pub(super) fn on_grace_over(&mut self, master: &str, epoch: u64) {
        let answering = match self.masters.get_mut(master) {
            Some(m) if m.conn.is_none() && m.epoch == epoch => {
                m.grace_over = true;
                m.answering.clone()
            }
            _ => return,
        };
        let held = self.held_by(master);
        let (kept, moved): (Vec<InstanceName>, Vec<InstanceName>) =
            held.into_iter().partition(|i| answering.contains(i));
        tracing::info!(
            master,
            moved = moved.len(),
            kept = kept.len(),
            "grace over: handing the master's silent needs to others, keeping those that still answer"
        );
        self.event(EventKind::MasterExpired {
            master: master.to_string(),
            moved: u32::try_from(moved.len()).unwrap_or(u32::MAX),
            kept: u32::try_from(kept.len()).unwrap_or(u32::MAX),
        });
        for instance in moved {
            self.release(&instance, Release::Neutral);
        }
        self.forget_if_empty(master);
    }

    pub(super) fn on_settle_over(&mut self) {
        let settling: Vec<InstanceName> = self
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
        // A need seen serving is probed first, as past a grace: its master
        // may only be cut off from us, and handing it on would run it twice.
        let (probed, opened): (Vec<InstanceName>, Vec<InstanceName>) =
            settling.into_iter().partition(|i| {
                matches!(
                    self.needs.get(i.as_str()).map(|e| &e.slot),
                    Some(Slot::Settling { seen: Some(_), .. })
                )
            });
        if !opened.is_empty() || !probed.is_empty() {
            tracing::info!(
                opened = opened.len(),
                probed = probed.len(),
                "settle over: opening needs whose master did not come back, probing those seen serving"
            );
        }
        for instance in opened {
            self.release(&instance, Release::Neutral);
        }
        self.probe_settling(&probed, Duration::ZERO);
    }

    /// One round of connects to the services of `instances` (settling, seen
    /// serving), a round per master; answered by [`State::on_settle_liveness`].
    fn probe_settling(&mut self, instances: &[InstanceName], delay: Duration) {
        let mut by_master: BTreeMap<String, Vec<LivenessTarget>> = BTreeMap::new();
        for instance in instances {
            if let Some(Slot::Settling {
                master,
                generation,
                seen: Some(seen),
            }) = self.needs.get(instance.as_str()).map(|e| &e.slot)
            {
                by_master
                    .entry(master.clone())
                    .or_default()
                    .push(LivenessTarget {
                        instance: instance.clone(),
                        generation: *generation,
                        address: seen.address.clone(),
                        ports: seen.ports.iter().collect(),
                    });
            }
        }
        for (master, targets) in by_master {
            self.fx.push(Effect::ProbeLiveness {
                master,
                epoch: SETTLE_EPOCH,
                targets,
                delay,
            });
        }
    }

    /// A settling need whose service still answers stays held for its
    /// master, probed again a second later; one that does not is handed on.
    fn on_settle_liveness(
        &mut self,
        master: &str,
        results: Vec<(InstanceName, Generation, Liveness)>,
    ) {
        let mut again = Vec::new();
        for (instance, generation, verdict) in results {
            let held = matches!(
                self.needs.get(&instance).map(|e| &e.slot),
                Some(Slot::Settling { master: m, generation: g, .. }) if m == master && *g == generation
            );
            if !held {
                continue;
            }
            if verdict == Liveness::Answers {
                again.push(instance);
            } else {
                tracing::info!(
                    master,
                    %instance,
                    %generation,
                    "a service its master did not come back for does not answer: handing it to others"
                );
                self.release(&instance, Release::Neutral);
            }
        }
        self.probe_settling(&again, LIVENESS_INTERVAL_PAST_GRACE);
    }

    pub(super) fn on_master_message(&mut self, conn: ConnId, msg: MasterToLan) {
        let Some(master) = self.conns.get(&conn).cloned() else {
            return;
        };
        match msg {
            MasterToLan::Claim {
                instancename,
                ports,
            } => self.on_claim(&master, &instancename, ports),
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
                let n = self.needs.get(&instancename).map_or(0, |e| e.failures) + 1;
                allex_protocol::log_repeated!(n, info, master, instance = %instancename, %generation, pid, %exit, ordered, uptime_ms, "down");
                self.event(EventKind::Down {
                    instancename: instancename.clone(),
                    master: master.clone(),
                    generation,
                    pid,
                    exit,
                    ordered,
                    uptime_ms,
                });
                self.on_down(&master, &instancename, generation, pid, ordered, uptime_ms)
            }
            // Relayed by the driver; never reaches here in a running lan manager.
            MasterToLan::LogChunk { .. } | MasterToLan::LogsEnd { .. } => {}
            MasterToLan::Capacity(capacity) => self.on_capacity(&master, capacity),
            MasterToLan::Health {
                instancename,
                generation,
                health,
            } => self.on_health(&master, &instancename, generation, health),
            MasterToLan::Leaving => {
                tracing::info!(master, "master shutting down: its stops are not failures");
                if let Some(m) = self.masters.get_mut(&master) {
                    m.leaving = true;
                }
            }
            MasterToLan::Lookup { id, instancename } => {
                let location = self.lookup(&instancename);
                self.send_to(&master, &LanToMaster::LookupResult { id, location });
            }
            MasterToLan::Hello(_) | MasterToLan::Heartbeat { .. } => {}
        }
    }

    pub(super) fn lookup(&self, instance: &InstanceName) -> Option<ServiceLocation> {
        let e = self.needs.get(instance)?;
        match &e.slot {
            Slot::Running(r) => Some(ServiceLocation {
                instancename: instance.clone(),
                modulename: e.need.modulename.clone(),
                address: r.address.clone(),
                ports: r.ports,
            }),
            _ => None,
        }
    }

    /// A running service's check changed: kept on its record (status) and
    /// published; a report for anything but the running generation is stale.
    pub(super) fn on_health(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        health: allex_protocol::types::HealthStatus,
    ) {
        let Some(Slot::Running(r)) = self.needs.get_mut(instance).map(|e| &mut e.slot) else {
            return;
        };
        if r.master != master || r.generation != generation {
            return;
        }
        r.health = Some(health.clone());
        self.event(EventKind::Health {
            instancename: instance.clone(),
            master: master.to_string(),
            passing: health.passing,
            failures: health.failures,
            last: health.last,
        });
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
