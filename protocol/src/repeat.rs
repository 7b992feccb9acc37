//! Summarising repeated events in the processes' own logs: the 1st, 2nd,
//! 4th, 8th... occurrence of the same event for the same need is logged at
//! its level with the count, the others at debug. A crash loop of 30 s
//! steps then writes a handful of lines a day per need, not thousands.

/// Whether the `n`th occurrence of an event is logged at its own level.
pub fn loud(n: u32) -> bool {
    n <= 1 || n.is_power_of_two()
}

/// `tracing::$level!` for the `n`th repeat of an event when [`loud`], else
/// `tracing::debug!`; both with a `repeated = n` field. The caller's crate
/// must depend on `tracing`.
#[macro_export]
macro_rules! log_repeated {
    ($n:expr, $level:ident, $($arg:tt)+) => {{
        let n: u32 = $n;
        if $crate::repeat::loud(n) {
            tracing::$level!(repeated = n, $($arg)+);
        } else {
            tracing::debug!(repeated = n, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_are_loud() {
        let loud: Vec<u32> = (0..=40).filter(|n| loud(*n)).collect();
        assert_eq!(loud, [0, 1, 2, 4, 8, 16, 32]);
    }
}
