//! What `allexmaster status` shows.

use super::*;

impl State {
    /// What `allexmaster status` shows.
    pub fn status(&self) -> MasterStatus {
        let mut children: Vec<ChildStatus> = self
            .children
            .iter()
            .filter_map(|(name, c)| Some((name, c, c.pid()?)))
            .map(|(name, c, pid)| ChildStatus {
                instancename: name.clone(),
                modulename: c.module.clone(),
                pid,
                ports: c.ports,
                state: c.state,
                ready: c.ready,
                uptime_ms: c.uptime_ms(self.now),
                generation: c.generation,
                health: c.health.as_ref().map(|h| h.status()),
            })
            .collect();
        children.sort_by(|a, b| a.instancename.cmp(&b.instancename));
        let free = self.free();
        // A range whose every port our children hold is exhausted too, even
        // before a reservation has failed on it.
        let exhausted = Protocol::ALL
            .into_iter()
            .filter(|p| self.exhausted.contains(p) || free.get(*p) == 0)
            .collect();
        MasterStatus {
            master: self.name.clone(),
            pid: self.pid,
            advertiseaddress: self.advertise.map(|a| a.to_string()),
            connected: self.welcomed(),
            refused: self.refused.clone(),
            fenced: self.fenced,
            fdlimit: self.fdlimit,
            fd_exhausted: self.children.len() + self.claims.len() >= self.max_children,
            children,
            free,
            exhausted,
            declined: self
                .pin_refusals
                .iter()
                .filter(|(name, _)| self.open.contains_key(*name))
                .map(|(n, why)| (n.clone(), why.clone()))
                .collect(),
            cgroup: self.cgroup.clone(),
        }
    }
}
