//! Timing and storage settings of a running lan manager.

use std::path::PathBuf;
use std::time::Duration;

/// The production timings, in milliseconds (kept in the protocol crate, so
/// every crate and test kit can take them without depending on this one).
pub use allex_protocol::timing as defaults;

/// Everything a lan manager needs to know to run, already parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address and port to listen on (`0.0.0.0:23552` by default).
    pub listen: String,
    /// Working directory; needs live in `<dir>/.allexlanmanager/needs`.
    pub dir: PathBuf,
    /// Shared secret masters (and admin CLIs, without `admin_token`) must present, when set.
    pub token: Option<String>,
    /// The admin token (`--admin-token-file`): when set, only it opens admin
    /// sessions and the HTTP API, and `token` only lets masters serve.
    pub admin_token: Option<String>,
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
    /// When set, masters stop their own children after this long without
    /// a word from the lan manager (told to them in `welcome`).
    pub fence: Option<Duration>,
    /// Where the HTTP server listens; `None` is `--http off`.
    pub http: Option<String>,
    /// Whether the operator named the HTTP address: then failing to bind it
    /// stops the start; the default address, when taken, only warns.
    pub http_required: bool,
    /// Whether edits of the needs files are picked up without a SIGHUP.
    pub watch_needs: bool,
    /// `.allexlanmanager/subnets`, read at start: where masters may connect
    /// from (127.0.0.1 always); `None` when there is no such file.
    pub subnets: Option<allex_protocol::subnets::Subnets>,
    /// Where the durable state lives (`--store`).
    pub store: crate::storage::StoreKind,
    /// On etcd: the `host:port` masters reach this lan manager on, which
    /// followers name to them (`--advertise`); the bound address when `None`.
    pub advertise: Option<String>,
    /// On etcd: the TTL of the lease a leader holds (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// TLS on the WebSocket and HTTP ports (`--tls-cert`, `--tls-key`).
    pub tls: Option<Tls>,
}

/// The lan manager's TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Its certificate and key, and the client CA when one is given.
    pub config: std::sync::Arc<allex_tls::ServerConfig>,
    /// `--tls-client-ca`: a master must present a certificate for its name.
    pub client_certs: bool,
}

/// The default `--lease-ttl`: a dead leader is replaced within about this long.
pub const DEFAULT_LEASE_TTL_S: u64 = 2;

impl Default for Settings {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Settings {
            listen: "0.0.0.0:23552".into(),
            dir: PathBuf::from("."),
            token: None,
            admin_token: None,
            grace: ms(defaults::GRACE_MS),
            settle: ms(defaults::SETTLE_MS),
            claim_timeout: ms(defaults::CLAIM_TIMEOUT_MS),
            check_timeout: ms(defaults::CHECK_TIMEOUT_MS),
            backoff_base: ms(defaults::BACKOFF_BASE_MS),
            backoff_cap: ms(defaults::BACKOFF_CAP_MS),
            stable: ms(defaults::STABLE_MS),
            heartbeat: ms(defaults::HEARTBEAT_MS),
            hello_timeout: ms(defaults::HELLO_TIMEOUT_MS),
            fence: None,
            http: Some(crate::http::DEFAULT_HTTP.into()),
            http_required: false,
            watch_needs: true,
            subnets: None,
            store: crate::storage::StoreKind::Files,
            advertise: None,
            lease_ttl: Duration::from_secs(DEFAULT_LEASE_TTL_S),
            tls: None,
        }
    }
}

impl Settings {
    /// Why these settings cannot work together, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if let Some(fence) = self.fence {
            if fence >= self.grace {
                return Err(format!(
                    "--fence-ms {} must be shorter than --grace-ms {}: a master must stop its \
                     children before its needs are handed to others",
                    fence.as_millis(),
                    self.grace.as_millis()
                ));
            }
            if fence < self.heartbeat.saturating_mul(2) {
                return Err(format!(
                    "--fence-ms {} must be at least two heartbeats (--heartbeat-ms {}), or a \
                     healthy master could fence itself between two of them",
                    fence.as_millis(),
                    self.heartbeat.as_millis()
                ));
            }
        }
        Ok(())
    }

    /// The token an admin session or HTTP request must present.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref().or(self.token.as_deref())
    }

    /// A link with no message for this long is treated as cut.
    pub fn link_timeout(&self) -> Duration {
        self.heartbeat.saturating_mul(3)
    }
}
