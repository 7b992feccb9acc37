//! The simulator's only source of chance: SplitMix64 (the generator of
//! `allex-sim random`), so a seed is the whole story and the same seed draws
//! the same numbers on every machine.

use crate::ops::SplitMix;

/// A seedable generator with the draws the simulator needs.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix);

impl Rng {
    /// A generator whose draws depend only on `seed` and `stream`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(SplitMix::new(
            seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407),
        ));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// An index below `n` (n > 0).
    pub fn pick(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}
