//! Command line: `run` (the default), `need add|remove` and `status`.

use crate::settings::{defaults, Settings};
use allex_protocol::InstanceName;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// The allex lan manager: keeps the needs of the LAN and hands them to masters.
#[derive(Debug, Parser)]
#[command(
    name = "allexlanmanager",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; without a subcommand the lan manager runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run`, accepted without the subcommand too.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lan manager (the default).
    Run(RunArgs),
    /// Add or remove a need on the running lan manager.
    Need {
        /// add or remove.
        #[command(subcommand)]
        action: NeedAction,
    },
    /// Manage master identities on the running lan manager.
    Master {
        /// forget.
        #[command(subcommand)]
        action: MasterAction,
    },
    /// Print a service's output, streamed from the master that runs it.
    Logs {
        /// The need's instance name.
        name: InstanceName,
        /// Keep printing what it writes, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Print the lan manager's events (state changes), oldest kept first.
    Events {
        /// Keep printing new events until interrupted.
        #[arg(long)]
        follow: bool,
        /// Print one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Only events numbered above SEQ.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Show needs, running services and masters of the running lan manager.
    Status {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// `need` subcommands.
#[derive(Debug, Subcommand)]
pub enum NeedAction {
    /// Add a need; done once it is on disk.
    Add {
        /// Module to run.
        #[arg(long = "module")]
        module: String,
        /// Unique instance name of the need.
        #[arg(long = "instance")]
        instance: InstanceName,
        /// JSON object handed to the service in ALLEX_SPAWN.
        #[arg(long)]
        propertyhash: Option<String>,
        /// Address or CIDR range a master must advertise to take the need.
        #[arg(long)]
        ipaddress: Option<String>,
        /// Protocols the service listens on, comma separated (tcp,http,ws); all when absent.
        #[arg(long)]
        protocols: Option<String>,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove a need and stop its service; done once it is on disk.
    Remove {
        /// Instance name of the need.
        name: InstanceName,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Stop a need's service and offer the need again at once (not counted
    /// as a crash).
    Restart {
        /// Instance name of the need.
        name: InstanceName,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Close a need (AllexJS `closed: true`): kept, not run; its service
    /// stops. Recorded in `needs.runtime`; done once it is on disk.
    Disable {
        /// Instance name of the need.
        name: InstanceName,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Reopen a closed need; done once `needs.runtime` is on disk.
    Enable {
        /// Instance name of the need.
        name: InstanceName,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Re-read `needs`, `needs.overlay` and `needs.runtime` and apply the
    /// difference (as SIGHUP or an edit of one of them does); a bad file
    /// changes nothing and is named with its line and column.
    Reload {
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List the needs with their state, master and the files they come from.
    List {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// `master` subcommands.
#[derive(Debug, Subcommand)]
pub enum MasterAction {
    /// Drop the secret bound to a master name, so that the next master to say
    /// hello under it (a rebuilt machine) is accepted and bound instead.
    Forget {
        /// The master's name.
        name: String,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Move a master's services to other masters, one at a time (each
    /// stopped before it starts elsewhere); it takes no new need.
    Drain {
        /// The master's name.
        name: String,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// End a drain: the master takes needs again.
    Undrain {
        /// The master's name.
        name: String,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List the masters: address, link, services and free ports.
    List {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the lan manager runs.
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// How an admin command reaches the running lan manager.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Address and port of the running lan manager; with several on etcd,
    /// a comma-separated list (`A:P,B:P,C:P`), and the leader is found.
    #[arg(
        long,
        default_value = "127.0.0.1:23552",
        value_name = "HOST:PORT[,...]"
    )]
    pub connect: String,
    /// Shared secret, when the lan manager requires one (the admin token
    /// when it has one). Visible in `ps`: prefer --token-file or ALLEX_TOKEN.
    #[arg(long, env = "ALLEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (its first line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Talk TLS, verifying the lan manager's certificate with this CA (PEM);
    /// a `wss://` address talks TLS verified by the system's CAs.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl ConnectArgs {
    /// Where to go and what to present; a token file that cannot be read is an error.
    pub fn endpoint(&self) -> Result<crate::admin::Endpoint, crate::admin::AdminError> {
        Ok(crate::admin::Endpoint {
            connect: self.connect.clone(),
            token: one_token(self.token.as_deref(), self.token_file.as_deref())
                .map_err(crate::admin::AdminError::Usage)?,
            tls: (self.tls_ca.is_some() || self.connect.contains("wss://"))
                .then(|| allex_tls::client_config(self.tls_ca.as_deref(), None))
                .transpose()
                .map_err(|e| crate::admin::AdminError::Usage(e.to_string()))?,
        })
    }
}

/// The token given once: `--token`/`ALLEX_TOKEN`, or `--token-file`.
fn one_token(
    given: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    let given = given.filter(|t| !t.is_empty());
    match (given, file) {
        (Some(_), Some(f)) => Err(format!(
            "a token is given twice: --token-file {} and --token or ALLEX_TOKEN; keep one",
            f.display()
        )),
        (Some(t), None) => Ok(Some(t.to_string())),
        (None, Some(f)) => {
            if allex_protocol::config::readable_by_others(f) {
                tracing::warn!(path = %f.display(), "the token file is readable by other users: chmod 600 it");
            }
            allex_protocol::config::read_token_file(f).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// Options of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address and port to listen on for masters and admin commands.
    #[arg(long, default_value = "0.0.0.0:23552")]
    pub listen: String,
    /// Working directory; needs live in DIR/.allexlanmanager/needs.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Shared secret masters (and admin commands, without an admin token)
    /// must present. Visible in `ps`: prefer --token-file or ALLEX_TOKEN.
    #[arg(long, env = "ALLEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding that token (its first line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A file holding the admin token: then only it may change needs and
    /// masters (WebSocket admin sessions and HTTP), and the other token
    /// only lets masters serve.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Milliseconds a disconnected master keeps its services.
    #[arg(long, default_value_t = defaults::GRACE_MS)]
    pub grace_ms: u64,
    /// Milliseconds a restarted lan manager holds running needs for their masters.
    #[arg(long, default_value_t = defaults::SETTLE_MS)]
    pub settle_ms: u64,
    /// Milliseconds a master has to report `spawned` after a grant.
    #[arg(long, default_value_t = defaults::CLAIM_TIMEOUT_MS)]
    pub claim_timeout_ms: u64,
    /// Milliseconds the port check keeps trying.
    #[arg(long, default_value_t = defaults::CHECK_TIMEOUT_MS)]
    pub check_timeout_ms: u64,
    /// First retry delay of a crash-looping need, in milliseconds.
    #[arg(long, default_value_t = defaults::BACKOFF_BASE_MS)]
    pub backoff_base_ms: u64,
    /// Longest retry delay of a crash-looping need, in milliseconds.
    #[arg(long, default_value_t = defaults::BACKOFF_CAP_MS)]
    pub backoff_cap_ms: u64,
    /// Milliseconds of uptime after which a service counts as stable.
    #[arg(long, default_value_t = defaults::STABLE_MS)]
    pub stable_ms: u64,
    /// Heartbeat interval in milliseconds; a link silent for three is dropped.
    /// Each heartbeat wakes both ends, so this is also the idle cost; at 5 s a
    /// dead link is noticed in 15 s, well inside the 30 s grace.
    #[arg(long, default_value_t = defaults::HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Milliseconds a new connection may take to send its opening frame.
    #[arg(long, default_value_t = defaults::HELLO_TIMEOUT_MS)]
    pub hello_timeout_ms: u64,
    /// Fencing: a master that hears nothing from the lan manager for this many
    /// milliseconds stops its own children. Shorter than the grace; off by default.
    #[arg(long)]
    pub fence_ms: Option<u64>,
    /// Address and port of the HTTP server (AllexJS monitor, JSON API,
    /// metrics, dashboard), or `off` [default: 127.0.0.1:23553].
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub http: Option<String>,
    /// Do not watch the needs files for edits (a filesystem without inotify);
    /// SIGHUP and `need reload` still re-read them.
    #[arg(long)]
    pub no_watch: bool,
    /// Where the needs, running records, generations and master identities
    /// live: `files` (under `.allexlanmanager`) or `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(
        long,
        default_value = "files",
        value_name = "files|etcd://HOST:PORT,..."
    )]
    pub store: String,
    /// The etcd key prefix everything is kept under.
    #[arg(long, default_value = "/allex", value_name = "PREFIX")]
    pub store_prefix: String,
    /// On etcd: the `HOST:PORT` masters reach this lan manager on; followers
    /// name it to masters and CLIs [default: the bound address, or the
    /// address that routes to etcd when listening on a wildcard].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Serve WebSocket and HTTP over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Masters must present a client certificate signed by this CA (PEM)
    /// and made out to their master name; it is then their identity.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// On etcd: seconds of the leader's lease; a dead leader is replaced
    /// within about this long.
    #[arg(long, default_value_t = crate::settings::DEFAULT_LEASE_TTL_S, value_name = "SECONDS")]
    pub lease_ttl: u64,
}

impl RunArgs {
    /// The settings these options describe, or why `--store` cannot be used.
    pub fn settings(&self) -> Result<Settings, String> {
        let ms = Duration::from_millis;
        Ok(Settings {
            listen: self.listen.clone(),
            dir: self.dir.clone(),
            token: one_token(self.token.as_deref(), self.token_file.as_deref())?,
            admin_token: match &self.admin_token_file {
                Some(f) => Some(one_token(None, Some(f))?.unwrap_or_default()),
                None => None,
            },
            grace: ms(self.grace_ms),
            settle: ms(self.settle_ms),
            claim_timeout: ms(self.claim_timeout_ms),
            check_timeout: ms(self.check_timeout_ms),
            backoff_base: ms(self.backoff_base_ms),
            backoff_cap: ms(self.backoff_cap_ms),
            stable: ms(self.stable_ms),
            heartbeat: ms(self.heartbeat_ms.max(1)),
            hello_timeout: ms(self.hello_timeout_ms),
            fence: self.fence_ms.map(ms),
            http: match self.http.as_deref() {
                Some("off") => None,
                Some(addr) => Some(addr.to_string()),
                None => Some(crate::http::DEFAULT_HTTP.into()),
            },
            http_required: self.http.is_some(),
            watch_needs: !self.no_watch,
            subnets: None,
            store: crate::storage::StoreKind::parse(&self.store, &self.store_prefix)?,
            advertise: self.advertise.clone(),
            lease_ttl: Duration::from_secs(self.lease_ttl),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::settings::Tls {
                    config: allex_tls::server_config(cert, key, self.tls_client_ca.as_deref())
                        .map_err(|e| e.to_string())?,
                    client_certs: self.tls_client_ca.is_some(),
                }),
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_flags_mean_run() {
        let cli = Cli::try_parse_from([
            "allexlanmanager",
            "--listen",
            "127.0.0.1:0",
            "--grace-ms",
            "5",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.settings().unwrap().grace, Duration::from_millis(5));
        let cli = Cli::try_parse_from(["allexlanmanager", "run", "--dir", "/x"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run(a)) if a.dir.as_os_str() == "/x"));
    }
}
