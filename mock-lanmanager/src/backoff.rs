//! Retry delay of a need whose service keeps dying soon after start.

use std::time::Duration;

/// Delay before a need is offered again after `failures` quick deaths in a row.
///
/// The first quick death reopens the need at once, because one crash is
/// ordinary and recovery latency matters; from the second on the delay is
/// `base` doubling per failure, capped at `cap`.
pub fn retry_delay(failures: u32, base: Duration, cap: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let shift = (failures - 2).min(31);
    base.saturating_mul(1u32 << shift).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_then_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_millis(1000);
        let d: Vec<u64> = (0..8)
            .map(|f| retry_delay(f, base, cap).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![0, 0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(retry_delay(u32::MAX, base, cap), cap);
    }
}
