//! The descriptor budget: the soft RLIMIT_NOFILE is raised to the hard one
//! at start, and children are only taken on while their descriptors fit
//! under it with a reserve left for the control socket, the link and the
//! status CLI (which otherwise fails with "no complete reply").

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept free for the master's own work: the Unix socket and its
/// clients, the WebSocket link, log files being rotated, the spawner's pipes.
pub const RESERVE: u64 = 64;

/// Descriptors one child costs the master: its output pipe, its pidfd, and
/// its log file while it writes.
pub const PER_CHILD: u64 = 3;

/// Raises the soft descriptor limit to the hard one; returns the limit now in force.
pub fn raise() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    Ok(()) => {
                        tracing::info!(from = soft, to = hard, "raised the descriptor limit");
                        return hard;
                    }
                    Err(e) => {
                        tracing::warn!(soft, hard, error = %e, "cannot raise the descriptor limit")
                    }
                }
            }
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the descriptor limit; assuming 1024");
            1024
        }
    }
}

/// How many children fit under `limit` descriptors.
pub fn max_children(limit: u64) -> usize {
    usize::try_from(limit.saturating_sub(RESERVE) / PER_CHILD).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept() {
        assert_eq!(max_children(1024), 320);
        assert_eq!(max_children(10), 0);
        assert!(max_children(u64::MAX) > 1 << 40);
    }
}
