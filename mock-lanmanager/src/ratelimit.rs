//! Per-connection token bucket: a peer that floods the lan manager is told
//! `rate_limited`, its excess frames are dropped, and it is closed when it
//! keeps going, so one peer can never starve the state owner or the others.

use std::time::{Duration, Instant};

/// How fast a peer may send, and how much burst it may have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Frames per second refilled.
    pub per_second: f64,
    /// Frames a peer may send at once after being quiet.
    pub burst: f64,
}

impl RateLimit {
    /// Masters: far above what a real master sends (its claims are bounded
    /// by its free ports), far below what would hurt the others.
    pub const MASTER: RateLimit = RateLimit {
        per_second: 5000.0,
        burst: 20000.0,
    };
    /// Admin CLIs: one request in flight at a time, so they are paced to
    /// this rate (their next frame is read later) rather than refused. A status
    /// costs O(needs), so this bounds what a token holder can make us do; it is
    /// high enough that a benchmark polling status sees sub-millisecond steps.
    pub const ADMIN: RateLimit = RateLimit {
        per_second: 2000.0,
        burst: 4000.0,
    };
}

/// What to do with one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Pass,
    /// Drop it and tell the peer `rate_limited` (first drop of an episode).
    Warn,
    /// Drop it silently (the peer was told already).
    Drop,
    /// The peer kept flooding after the warning: close the connection.
    Close,
}

/// One connection's bucket.
#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
    /// Frames dropped since the bucket was last full.
    dropped: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            tokens: limit.burst,
            last: Instant::now(),
            dropped: 0,
        }
    }

    /// Accounts for one frame arriving now.
    pub fn take(&mut self) -> Verdict {
        self.take_at(Instant::now())
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.limit.per_second).min(self.limit.burst);
    }

    /// Takes a token for a frame about to be read and returns how long to
    /// wait first; for peers that are paced instead of refused.
    pub fn pace(&mut self) -> Duration {
        self.pace_at(Instant::now())
    }

    fn pace_at(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.per_second)
        }
    }

    fn take_at(&mut self, now: Instant) -> Verdict {
        self.refill(now);
        // A peer that calmed down until its bucket refilled starts a new episode.
        if self.tokens >= self.limit.burst {
            self.dropped = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Pass;
        }
        self.dropped += 1;
        if self.dropped == 1 {
            Verdict::Warn
        } else if self.dropped as f64 > self.limit.burst {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn burst_passes_then_warns_once_then_drops_then_closes() {
        let t0 = Instant::now();
        let mut b = Bucket::new(SMALL);
        let verdicts: Vec<Verdict> = (0..12).map(|_| b.take_at(t0)).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Pass; 5]);
        assert_eq!(verdicts[5], Verdict::Warn);
        assert_eq!(&verdicts[6..10], &[Verdict::Drop; 4]);
        assert_eq!(verdicts[10], Verdict::Close);
    }

    #[test]
    fn a_peer_that_slows_down_is_served_again_and_forgiven() {
        let t0 = Instant::now();
        let mut b = Bucket::new(SMALL);
        for _ in 0..7 {
            b.take_at(t0);
        }
        // One refill interval later one frame passes.
        assert_eq!(b.take_at(t0 + Duration::from_millis(100)), Verdict::Pass);
        // After a full refill the episode is over: the next flood is warned again.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..5 {
            assert_eq!(b.take_at(later), Verdict::Pass);
        }
        assert_eq!(b.take_at(later), Verdict::Warn);
    }

    #[test]
    fn pacing_spaces_frames_after_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(SMALL);
        for _ in 0..5 {
            assert_eq!(b.pace_at(t0), Duration::ZERO);
        }
        assert_eq!(b.pace_at(t0), Duration::from_millis(100));
        // The peer waited as told: the next frame waits one interval again.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.pace_at(t1), Duration::from_millis(100));
    }
}
