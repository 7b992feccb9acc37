//! The advisory `running` record: which need runs (or is awaited) on which
//! master, so a restarted lan manager holds those needs for their masters.
//!
//! Every change is appended to the journal when the input that made it ends;
//! the snapshot is rewritten at most once a second and empties the journal.
//! Both are writes the driver runs in order on one writer.

use super::slot::slot_hint;
use super::{Effect, State, Write};
use crate::needs_store::{RunningHint, Store};
use std::collections::HashMap;

/// What is not yet journaled or snapshotted.
#[derive(Debug, Default)]
pub(super) struct RunningJournal {
    /// The snapshot is behind the journal.
    dirty: bool,
    /// A flush timer is set.
    flush_armed: bool,
    /// Instances whose hint changed during this input.
    changed: Vec<String>,
}

impl RunningJournal {
    /// Notes that `instance`'s hint changed.
    pub(super) fn changed(&mut self, instance: &str) {
        self.dirty = true;
        self.changed.push(instance.to_string());
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
    fn running_hints(&self) -> HashMap<String, RunningHint> {
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
        let mut changed = std::mem::take(&mut self.running.changed);
        changed.sort_unstable();
        changed.dedup();
        let mut buf = Vec::new();
        for instance in &changed {
            let hint = self.needs.get(instance).and_then(|e| slot_hint(&e.slot));
            buf.extend(Store::journal_line(instance, hint.as_ref()));
        }
        self.fx.push(Effect::Write(Write::Journal(buf)));
    }
}
