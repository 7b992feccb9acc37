//! The lan manager's timing knobs, small by default so tests run fast.

use std::time::Duration;

/// The lan manager's timing flags; [`Timings::default`] is the fast test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `--grace-ms`: how long a disconnected master keeps its services.
    pub grace: Duration,
    /// `--settle-ms`: how long a restarted lan manager waits for masters.
    pub settle: Duration,
    /// `--claim-timeout-ms`: how long a master has to report `spawned`.
    pub claim_timeout: Duration,
    /// `--check-timeout-ms`: how long the port check keeps trying.
    pub check_timeout: Duration,
    /// `--backoff-base-ms`: first retry delay of a crash loop.
    pub backoff_base: Duration,
    /// `--backoff-cap-ms`: longest retry delay.
    pub backoff_cap: Duration,
    /// `--stable-ms`: uptime after which a service counts as stable.
    pub stable: Duration,
    /// `--heartbeat-ms`: heartbeat interval; three missed drop the link.
    pub heartbeat: Duration,
    /// `--fence-ms`: masters stop their children after this long without
    /// the lan manager; off when `None`.
    pub fence: Option<Duration>,
    /// `--hello-timeout-ms`: how long a new link may stay silent; the
    /// binary's default when `None`.
    pub hello_timeout: Option<Duration>,
}

impl Default for Timings {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Timings {
            grace: ms(1500),
            settle: ms(1000),
            claim_timeout: ms(2000),
            check_timeout: ms(1500),
            backoff_base: ms(50),
            backoff_cap: ms(1000),
            stable: ms(1000),
            // Three missed beats drop a link: 1.5 s rides out a loaded 2-core CI box.
            heartbeat: ms(500),
            fence: None,
            hello_timeout: None,
        }
    }
}

impl Timings {
    /// The production defaults of the contract.
    pub fn production() -> Self {
        use allex_protocol::timing as defaults;
        let ms = Duration::from_millis;
        Timings {
            grace: ms(defaults::GRACE_MS),
            settle: ms(defaults::SETTLE_MS),
            claim_timeout: ms(defaults::CLAIM_TIMEOUT_MS),
            check_timeout: ms(defaults::CHECK_TIMEOUT_MS),
            backoff_base: ms(defaults::BACKOFF_BASE_MS),
            backoff_cap: ms(defaults::BACKOFF_CAP_MS),
            stable: ms(defaults::STABLE_MS),
            heartbeat: ms(defaults::HEARTBEAT_MS),
            fence: None,
            hello_timeout: None,
        }
    }

    /// Timers that do not fire within a test (a minute each), except the
    /// port check and the first retry, for tests that drive every step
    /// through fake masters and shorten the one timer they are about.
    pub fn patient() -> Self {
        let minute = Duration::from_secs(60);
        Timings {
            grace: minute,
            settle: minute,
            claim_timeout: minute,
            check_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(100),
            backoff_cap: minute,
            stable: minute,
            heartbeat: minute,
            fence: None,
            hello_timeout: Some(minute),
        }
    }

    /// The command-line flags that set these timings.
    pub fn args(&self) -> Vec<String> {
        [
            ("--grace-ms", self.grace),
            ("--settle-ms", self.settle),
            ("--claim-timeout-ms", self.claim_timeout),
            ("--check-timeout-ms", self.check_timeout),
            ("--backoff-base-ms", self.backoff_base),
            ("--backoff-cap-ms", self.backoff_cap),
            ("--stable-ms", self.stable),
            ("--heartbeat-ms", self.heartbeat),
        ]
        .into_iter()
        .chain(self.fence.map(|f| ("--fence-ms", f)))
        .chain(self.hello_timeout.map(|h| ("--hello-timeout-ms", h)))
        .flat_map(|(flag, d)| [flag.to_string(), d.as_millis().to_string()])
        .collect()
    }
}
