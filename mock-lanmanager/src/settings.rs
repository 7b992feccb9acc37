//! Timing and storage settings of a running lan manager.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a lan manager needs to know to run, already parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address and port to listen on (`0.0.0.0:23552` by default).
    pub listen: String,
    /// Working directory; needs live in `<dir>/.allexlanmanager/needs`.
    pub dir: PathBuf,
    /// Shared secret masters and admin CLIs must present, when set.
    pub token: Option<String>,
    /// How long a disconnected master keeps its services.
    pub grace: Duration,
    /// How long a restarted lan manager holds needs that were running.
    pub settle: Duration,
    /// How long a master has to report `spawned` after a grant.
    pub claim_timeout: Duration,
    /// How long the port check keeps trying.
    pub check_timeout: Duration,
    /// First retry delay of a crash-looping need.
    pub backoff_base: Duration,
    /// Longest retry delay of a crash-looping need.
    pub backoff_cap: Duration,
    /// A service that ran this long is stable: its failure count resets.
    pub stable: Duration,
    /// Heartbeat interval told to masters; three silent intervals drop a link.
    pub heartbeat: Duration,
    /// How long a new connection may take to send its opening frame.
    pub hello_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "0.0.0.0:23552".into(),
            dir: PathBuf::from("."),
            token: None,
            grace: Duration::from_millis(30_000),
            settle: Duration::from_millis(10_000),
            claim_timeout: Duration::from_millis(10_000),
            check_timeout: Duration::from_millis(5_000),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_millis(30_000),
            stable: Duration::from_millis(10_000),
            heartbeat: Duration::from_millis(2_000),
            hello_timeout: Duration::from_millis(5_000),
        }
    }
}

impl Settings {
    /// A link with no message for this long is treated as cut.
    pub fn link_timeout(&self) -> Duration {
        self.heartbeat.saturating_mul(3)
    }
}
