//! The advisory `running` record: which need runs (or is awaited) on which
//! master, so a restarted lan manager holds those needs for their masters.
//!
//! Every change is appended to the journal when the input that made it ends;
//! the snapshot is rewritten at most once a second and empties the journal.
//! Both are writes the driver runs in order on one writer. A grant is sent
//! only once the journal line naming its holder is written (the page cache
//! survives the process), so a killed lan manager never forgets a grant a
//! master may be acting on.

use super::slot::{slot_hint, Slot};
use super::{Effect, Release, State, Write};
use crate::needs_store::{RunningHint, Store};
use allex_protocol::events::EventKind;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{LanToMaster, Need};
use std::collections::{HashMap, VecDeque};

/// What is not yet journaled or snapshotted.
#[derive(Debug, Default)]
pub(super) struct RunningJournal {
    /// The snapshot is behind the journal.
    dirty: bool,
    /// A flush timer is set.
    flush_armed: bool,
    /// Instances whose hint changed during this input.
    changed: Vec<InstanceName>,
    /// The number of the last journal append asked for.
    seq: u64,
    /// Grants waiting for their journal append, oldest first.
    held: VecDeque<HeldGrant>,
}

/// A grant decided and journaled but not yet sent.
#[derive(Debug)]
struct HeldGrant {
    /// The journal append it waits for.
    seq: u64,
    master: String,
    need: Need,
    generation: Generation,
    deadline_ms: u64,
}

impl RunningJournal {
    /// Notes that `instance`'s hint changed.
    pub(super) fn changed(&mut self, instance: &InstanceName) {
        self.dirty = true;
        self.changed.push(instance.clone());
    }

    /// Keeps the grant of `need` to `master` until this input's journal
    /// append is written.
    pub(super) fn hold_grant(
        &mut self,
        master: &str,
        need: Need,
        generation: Generation,
        deadline_ms: u64,
    ) {
        self.held.push_back(HeldGrant {
            seq: self.seq + 1,
            master: master.to_string(),
            need,
            generation,
            deadline_ms,
        });
    }

    /// Whether a flush timer should be set now (and notes that it is).
    pub(super) fn wants_flush(&mut self) -> bool {
        if self.dirty && !self.flush_armed {
            self.flush_armed = true;
            return true;
        }
        false
    }
}

impl State {
    /// Which need runs (or is held) for which master, for the `running` file.
    fn running_hints(&self) -> HashMap<InstanceName, RunningHint> {
        self.needs
            .iter()
            .filter_map(|(i, e)| slot_hint(&e.slot).map(|h| (i.clone(), h)))
            .collect()
    }

    pub(super) fn on_flush_running(&mut self) {
        self.running.flush_armed = false;
        if self.running.dirty {
            self.compact_running(None);
        }
    }

    /// Asks for the snapshot of running hints (which empties the journal).
    pub(super) fn compact_running(&mut self, ack: Option<u64>) {
        self.running.dirty = false;
        let hints = self.running_hints();
        self.fx.push(Effect::Write(Write::Running { hints, ack }));
    }

    /// Appends the running hints of the instances changed by this input.
    pub(super) fn journal_running_changes(&mut self) {
        if self.running.changed.is_empty() {
            return;
        }
        self.running.seq += 1;
        let seq = self.running.seq;
        let mut changed = std::mem::take(&mut self.running.changed);
        changed.sort_unstable();
        changed.dedup();
        let mut buf = Vec::new();
        for instance in &changed {
            let hint = self.needs.get(instance).and_then(|e| slot_hint(&e.slot));
            buf.extend(Store::journal_line(instance, hint.as_ref()));
        }
        self.fx
            .push(Effect::Write(Write::Journal { lines: buf, seq }));
    }

    /// Journal append `seq` ended: send the grants it covers, or take them
    /// back if it failed (the need waits out a retry delay and is offered again).
    pub(super) fn on_journal_written(&mut self, seq: u64, result: Result<(), String>) {
        while self.running.held.front().is_some_and(|h| h.seq <= seq) {
            let Some(HeldGrant {
                master,
                need,
                generation,
                deadline_ms,
                ..
            }) = self.running.held.pop_front()
            else {
                break;
            };
            let instance = need.instancename.clone();
            let still = matches!(
                self.needs.get(&instance).map(|e| &e.slot),
                Some(Slot::Claimed { master: m, generation: g, .. }) if *m == master && *g == generation
            );
            if !still {
                continue;
            }
            match &result {
                Ok(()) => self.send_to(
                    &master,
                    &LanToMaster::Grant {
                        need,
                        generation,
                        deadline_ms,
                    },
                ),
                Err(e) => {
                    tracing::error!(master, %instance, %generation, "cannot journal a grant: {e}");
                    self.event(EventKind::ClaimRefused {
                        instancename: instance.clone(),
                        master: master.clone(),
                        reason: format!("storage: cannot journal the grant: {e}"),
                    });
                    self.send_to(
                        &master,
                        &LanToMaster::ClaimRefused {
                            instancename: instance.clone(),
                            reason: format!("storage: cannot journal the grant: {e}"),
                        },
                    );
                    self.release(&instance, Release::Failure);
                }
            }
        }
    }
}
