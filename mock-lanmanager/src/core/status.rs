//! What `status` shows: every need with its state, the running services
//! and the masters, built from the state at the time of the request.

use super::*;
use allex_protocol::Generation;
use allex_protocol::InstanceName;

impl State {
    pub(super) fn status(&self) -> LanStatus {
        let now = self.now.at;
        let mut services: HashMap<&str, u32> = HashMap::default();
        let mut needs = Vec::with_capacity(self.order.len());
        let mut running = Vec::new();
        for instance in &self.order {
            let Some(e) = self.needs.get(instance) else {
                continue;
            };
            let (state, master, retry_in_ms) = match &e.slot {
                Slot::Open => (NeedState::Open, None, None),
                Slot::Closed => (NeedState::Closed, None, None),
                Slot::Claimed { master, .. }
                | Slot::Checking { master, .. }
                | Slot::Stopping { master, .. } => (NeedState::Claimed, Some(master.clone()), None),
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
                        health: r.health.clone(),
                    });
                    (NeedState::Running, Some(r.master.clone()), None)
                }
                Slot::Backoff { until, .. } => (
                    NeedState::Backoff,
                    None,
                    Some(until.saturating_duration_since(now).as_millis() as u64),
                ),
                Slot::Settling { master, .. } => (NeedState::Settling, Some(master.clone()), None),
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
                layer: e.origin.to_string(),
            });
        }
        let mut masters: Vec<MasterSummary> = self
            .masters
            .iter()
            .map(|(name, m)| MasterSummary {
                name: name.clone(),
                address: m.address.clone(),
                connected: m.conn.is_some(),
                peer: m.conn.map(|_| m.peer.to_string()),
                capacity: m.capacity.clone(),
                services: services.get(name.as_str()).copied().unwrap_or(0),
                draining: self.draining.contains_key(name),
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

/// One need as an outside checker sees it (the deterministic simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding<'a> {
    /// Nobody holds it.
    Free,
    /// Granted, being checked, or being stopped: `master` holds
    /// `generation`, not listed.
    Held {
        /// The holder.
        master: &'a str,
        /// The grant.
        generation: Generation,
        /// Which: `claimed`, `checking` or `stopping`.
        phase: &'static str,
    },
    /// Listed as running.
    Running {
        /// Its master.
        master: &'a str,
        /// Its generation.
        generation: Generation,
        /// Its pid as reported.
        pid: u32,
    },
}

impl State {
    /// Every need and who holds it, in file order: what invariants are checked on.
    pub fn holdings(&self) -> impl Iterator<Item = (&InstanceName, Holding<'_>)> {
        self.order.iter().filter_map(|i| {
            let e = self.needs.get(i)?;
            let h = match &e.slot {
                Slot::Running(r) => Holding::Running {
                    master: &r.master,
                    generation: r.generation,
                    pid: r.pid,
                },
                slot => match slot.holder() {
                    Some((master, generation)) => Holding::Held {
                        master,
                        generation,
                        phase: match slot {
                            Slot::Claimed { .. } => "claimed",
                            Slot::Checking { .. } => "checking",
                            _ => "stopping",
                        },
                    },
                    None => Holding::Free,
                },
            };
            Some((i, h))
        })
    }
}
