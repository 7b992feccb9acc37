//! The event stream's hub: numbers what the core publishes, keeps a bounded
//! history for `since`, and fans out to followers without ever waiting for
//! one (a follower that falls behind is dropped instead).

use allex_protocol::events::{EventKind, LanEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Events kept for `since` (the spec asks for at least the last 10,000).
pub const HISTORY: usize = 10_000;

/// Events a follower may be behind before it is dropped.
pub const FOLLOWER_LAG: usize = 4096;

/// Numbers, keeps and fans out the lan manager's events.
pub struct EventHub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<LanEvent>>,
}

struct Inner {
    next_seq: u64,
    history: VecDeque<Arc<LanEvent>>,
}

/// What a new follower gets: the kept events after its `since`, then the
/// live ones, with nothing missed or doubled between the two.
pub struct Subscription {
    /// Kept events after `since`, oldest first.
    pub backlog: Vec<Arc<LanEvent>>,
    /// Every event published after the backlog.
    pub live: broadcast::Receiver<Arc<LanEvent>>,
    /// The oldest kept event's number, to tell a client that asked for
    /// more than is kept.
    pub oldest: Option<u64>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("next_seq", &self.next_seq())
            .finish_non_exhaustive()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            inner: Mutex::new(Inner {
                next_seq: 1,
                history: VecDeque::with_capacity(HISTORY),
            }),
            tx: broadcast::channel(FOLLOWER_LAG).0,
        }
    }
}

impl EventHub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the history whole: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers `kind` and hands it to the history and every follower; never
    /// waits. Returns the numbered event.
    pub fn publish(&self, unix_ms: u64, kind: EventKind) -> Arc<LanEvent> {
        let mut inner = self.lock();
        let event = Arc::new(LanEvent {
            seq: inner.next_seq,
            unix_ms,
            kind,
        });
        inner.next_seq += 1;
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No follower is not an error; a full one lags and is dropped by its reader.
        let _ = self.tx.send(event.clone());
        event
    }

    /// The kept events after `since` (all kept ones when `None`) and the live feed.
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let inner = self.lock();
        // Subscribing under the lock: nothing published can fall between
        // the backlog and the feed.
        let live = self.tx.subscribe();
        let after = since.unwrap_or(0);
        Subscription {
            backlog: inner
                .history
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect(),
            live,
            oldest: inner.history.front().map(|e| e.seq),
        }
    }

    /// The number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allex_protocol::instance;

    fn opened() -> EventKind {
        EventKind::Opened {
            instancename: instance!("A"),
        }
    }

    #[test]
    fn since_gives_what_came_after_and_the_feed_continues_without_a_gap() {
        let hub = EventHub::default();
        for _ in 0..5 {
            hub.publish(1, opened());
        }
        let mut sub = hub.subscribe(Some(3));
        assert_eq!(
            sub.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        hub.publish(1, opened());
        assert_eq!(sub.live.try_recv().unwrap().seq, 6);
    }

    #[test]
    fn the_history_is_bounded_and_a_lagging_follower_is_told() {
        let hub = EventHub::default();
        let mut slow = hub.subscribe(None).live;
        for _ in 0..HISTORY + 10 {
            hub.publish(1, opened());
        }
        let sub = hub.subscribe(None);
        assert_eq!(sub.backlog.len(), HISTORY);
        assert_eq!(sub.oldest, Some(11));
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
