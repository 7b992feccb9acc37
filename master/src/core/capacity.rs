//! Capacity reports: the modules this master serves and its free ports,
//! told at once when exhaustion starts or ends, coalesced otherwise.

use super::*;

/// How long changes of the free-port counts are gathered into one report.
const CAPACITY_REPORT_DELAY: Duration = Duration::from_millis(500);

impl State {
    pub(super) fn capacity(&self) -> Capacity {
        Capacity {
            modules: self.cfg.services.keys().cloned().collect(),
            free: self.free(),
        }
    }

    /// Free ports per protocol; an exhausted protocol counts none, even when
    /// the ports it could not bind belong to other processes.
    pub(super) fn free(&self) -> PortCounts {
        let mut free = PerProtocol::from(self.ports.free_counts());
        for p in &self.exhausted {
            free[*p] = 0;
        }
        free.into()
    }

    pub(super) fn capacity_key(&self) -> (BTreeSet<Protocol>, PerProtocol<bool>) {
        let free = PerProtocol::from(self.free());
        (self.exhausted.clone(), free.map(|_, n| n == 0))
    }

    /// Tells the lan manager about free ports: at once when exhaustion starts
    /// or ends (it changes what we can claim), otherwise coalesced to one
    /// report per [`CAPACITY_REPORT_DELAY`], so a burst of spawns costs one
    /// message and an idle master none.
    pub(super) fn capacity_changed(&mut self) {
        if !self.welcomed() {
            return;
        }
        if self.last_capacity.as_ref() != Some(&self.capacity_key()) {
            self.send_capacity();
        } else if self.sent_free != Some(self.free()) && !self.capacity_report_armed {
            self.capacity_report_armed = true;
            self.after(CAPACITY_REPORT_DELAY, Timer::ReportCapacity);
        }
    }

    pub(super) fn send_capacity(&mut self) {
        self.last_capacity = Some(self.capacity_key());
        let cap = self.capacity();
        self.sent_free = Some(cap.free);
        self.send(MasterToLan::Capacity(cap));
    }
}
