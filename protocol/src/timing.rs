//! The lan manager's production timings, in milliseconds: its CLI's
//! defaults, and what the simulator and test kits start "production" lan
//! managers with. Here, not in the lan manager crate, so that every crate can
//! take them without depending on it.

/// How long a disconnected master keeps its services.
pub const GRACE_MS: u64 = 30_000;
/// How long a restarted lan manager holds needs that were running.
pub const SETTLE_MS: u64 = 10_000;
/// How long a master has to report `spawned` after a grant.
pub const CLAIM_TIMEOUT_MS: u64 = 10_000;
/// How long the port check keeps trying.
pub const CHECK_TIMEOUT_MS: u64 = 5_000;
/// First retry delay of a crash-looping need.
pub const BACKOFF_BASE_MS: u64 = 200;
/// Longest retry delay of a crash-looping need.
pub const BACKOFF_CAP_MS: u64 = 30_000;
/// Uptime after which a service is stable.
pub const STABLE_MS: u64 = 10_000;
/// Heartbeat interval: each heartbeat wakes both ends, so it is also the idle cost.
pub const HEARTBEAT_MS: u64 = 5_000;
/// How long a new connection may take to send its opening frame.
pub const HELLO_TIMEOUT_MS: u64 = 5_000;
