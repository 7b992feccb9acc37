//! Generation numbers: every grant gets one never used before, across
//! restarts, without an fsync per grant.
//!
//! Blocks are reserved on disk ahead of use: once half the reserved block is
//! spent, the next reservation is written (by the driver, off the state
//! owner), so a grant only waits for the disk when a whole half-block is
//! handed out faster than one file write.

use crate::needs_store::GENERATION_BLOCK;
use allex_protocol::Generation;

/// The generation counter and what of it is durable.
#[derive(Debug)]
pub(super) struct Generations {
    next: u64,
    /// Every generation below this is reserved on disk.
    bound: u64,
    /// A reservation up to this bound is being written.
    reserving: Option<u64>,
    /// The last reservation failed: try again only when a grant asks.
    failed: bool,
}

impl Generations {
    /// Starts at `next`; `bound` is what the disk already holds.
    pub(super) fn new(next: u64, bound: u64) -> Generations {
        Generations {
            next: next.max(1),
            bound,
            reserving: None,
            failed: false,
        }
    }

    /// Hands out a generation never used before, if one is reserved.
    pub(super) fn take(&mut self) -> Option<Generation> {
        self.failed = false;
        if self.next == u64::MAX {
            // Only a hostile inventory can get here; refuse rather than wrap.
            tracing::error!("generation numbers exhausted");
            return None;
        }
        if self.next >= self.bound {
            return None;
        }
        let g = self.next;
        self.next += 1;
        Some(Generation(g))
    }

    /// Keeps future generations above one a master reports.
    pub(super) fn saw(&mut self, g: Generation) {
        let g = g.get();
        if g >= self.next {
            self.next = g.saturating_add(1);
        }
    }

    /// The bound to reserve up to now, if a reservation is due and none is under way.
    pub(super) fn wants_reservation(&mut self) -> Option<u64> {
        let due = self.next.saturating_add(GENERATION_BLOCK / 2) >= self.bound;
        if !due || self.reserving.is_some() || self.failed || self.next == u64::MAX {
            return None;
        }
        let bound = self.next.saturating_add(GENERATION_BLOCK);
        self.reserving = Some(bound);
        Some(bound)
    }

    /// A reservation's write ended.
    pub(super) fn written(&mut self, bound: u64, result: Result<(), String>) {
        if self.reserving == Some(bound) {
            self.reserving = None;
        }
        match result {
            Ok(()) => self.bound = self.bound.max(bound),
            Err(e) => {
                tracing::error!("cannot reserve generations: {e}");
                self.failed = true;
            }
        }
    }
}
