//! Claims: which open needs this master asks for, holding their ports
//! meanwhile, and when it looks again after ports ran out or a spawn failed.

use super::*;
use allex_protocol::InstanceName;

/// How often an exhausted master probes its ranges again.
const EXHAUSTED_RETRY: Duration = Duration::from_secs(1);

impl State {
    pub(super) fn drop_claim(&mut self, instance: &str) {
        if let Some(ports) = self.claims.remove(instance) {
            // Kept ports stay held until the need leaves this master.
            if !self.kept.contains_key(instance) {
                self.release_ports(&ports);
            }
        }
    }

    /// The need of kept sockets left this master: ports and sockets go.
    pub(super) fn release_kept(&mut self, instance: &InstanceName) {
        if let Some(ports) = self.kept.remove(instance) {
            tracing::info!(%instance, "its need left this master: closing the sockets kept for it");
            self.release_ports(&ports);
            self.fx.push(Effect::ReleaseSockets {
                instance: instance.clone(),
            });
        }
    }

    /// Claims an open need if this master can serve it, holding its ports
    /// meanwhile; returns the protocol whose range ran out, if one did.
    pub(super) fn try_claim(
        &mut self,
        instance: &InstanceName,
        blocked: &BTreeSet<Protocol>,
    ) -> Option<Protocol> {
        if self.shutting_down || !self.welcomed() {
            return None;
        }
        if self.claims.contains_key(instance) || self.children.contains_key(instance) {
            return None;
        }
        if self.children.len() + self.claims.len() >= self.max_children {
            if !self.fd_exhausted {
                self.fd_exhausted = true;
                tracing::warn!(
                    limit = self.fdlimit,
                    children = self.children.len(),
                    "descriptor limit reached: claiming no more needs until a child ends"
                );
            }
            return None;
        }
        let need = self.open.get(instance)?;
        if !self.cfg.services.contains_key(&need.modulename) || need.validate().is_err() {
            return None;
        }
        if let Some(addr) = self.advertise {
            if !need.allows(addr) {
                return None;
            }
        }
        if let Some((_, until)) = self.spawn_failures.get(instance) {
            if self.now < *until {
                return None;
            }
        }
        let protocols = need.protocols();
        if protocols.iter().any(|p| blocked.contains(p)) {
            return None;
        }
        if let Some(ports) = self.kept.get(instance).copied() {
            // Its sockets are still held here: the same ports again.
            self.claims.insert(instance.clone(), ports);
            self.send(MasterToLan::Claim {
                instancename: instance.clone(),
                ports: Some(ports),
            });
            return None;
        }
        let pins = PerProtocol::from_fn(|p| need.pinned_port(p));
        match self.ports.reserve_pinned(&protocols, &pins) {
            Ok(ports) => {
                for p in &protocols {
                    if self.exhausted.remove(p) {
                        tracing::info!("{p} ports are free again");
                    }
                }
                self.pin_refusals.remove(instance);
                self.claims.insert(instance.clone(), ports);
                self.send(MasterToLan::Claim {
                    instancename: instance.clone(),
                    ports: Some(ports),
                });
                None
            }
            Err(e @ (PortError::PinnedOutside { .. } | PortError::PinnedTaken { .. })) => {
                // Left to the other masters; said once, shown in status.
                let why = e.to_string();
                if self.pin_refusals.get(instance) != Some(&why) {
                    tracing::info!(%instance, "not claiming: {why}");
                }
                let taken = matches!(e, PortError::PinnedTaken { .. });
                self.pin_refusals.insert(instance.clone(), why);
                if taken && !self.retry_scheduled {
                    // Another process may let the port go without telling us.
                    self.retry_scheduled = true;
                    self.after(EXHAUSTED_RETRY, Timer::RetryClaims);
                }
                None
            }
            Err(e) => {
                self.note_exhausted(&e);
                match e {
                    PortError::Exhausted { protocol, .. } => Some(protocol),
                    _ => None,
                }
            }
        }
    }

    pub(super) fn note_exhausted(&mut self, e: &PortError) {
        let PortError::Exhausted { protocol, .. } = e else {
            return;
        };
        if self.exhausted.insert(*protocol) {
            tracing::warn!(error = %e, "not claiming needs that want {protocol} ports until one is free");
        }
        // Ports taken by other processes come back without telling us, so
        // look again now and then; one timer at a time, never a spin.
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            self.after(EXHAUSTED_RETRY, Timer::RetryClaims);
        }
    }

    pub(super) fn release_ports(&mut self, ports: &Ports) {
        self.ports.release(ports);
        let mut freed = false;
        for (p, _) in ports.iter() {
            if self.exhausted.remove(&p) {
                tracing::info!("{p} ports are free again");
                freed = true;
            }
        }
        if freed {
            self.claim_open_needs();
        }
    }

    /// One pass over the open needs; once a protocol runs out in this pass,
    /// needs that want it are skipped instead of probing the range again.
    pub(super) fn claim_open_needs(&mut self) {
        let names: Vec<InstanceName> = self.open.keys().cloned().collect();
        let mut blocked = BTreeSet::new();
        for name in names {
            if let Some(p) = self.try_claim(&name, &blocked) {
                blocked.insert(p);
            }
        }
    }
}
