//! [`Master`]: a real `allexmaster` process with its own runtime directory and ports.

use crate::bins::binary;
use crate::error::HarnessError;
use crate::ports::port_block;
use crate::process::{run_with_deadline, Output, Proc};
use crate::workdir::{log_tail, maybe_keep, stderr_for, temp_dir, START_DEADLINE};
use allex_protocol::config::{MasterConfig, PortStarts, ServiceSpec, StopSignal, CONFIG_FILE_NAME};
use allex_protocol::types::Protocol;
use allex_protocol::MasterStatus;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

/// The catalogue entry that runs `allex-testsvc`, stopped with SIGTERM after
/// which it has `stop_timeout_ms` before SIGKILL.
pub fn testsvc_spec(stop_timeout_ms: u64) -> Result<ServiceSpec, HarnessError> {
    Ok(ServiceSpec {
        command: binary("allex-testsvc")?.display().to_string(),
        args: Vec::new(),
        cwd: None,
        env: BTreeMap::new(),
        stopsignal: StopSignal::Term,
        stoptimeoutms: stop_timeout_ms,
        check: None,
        sockets: None,
        limits: None,
    })
}

/// How to start a [`Master`].
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// The name the lan manager knows it by; unique per process when `None`.
    pub name: Option<String>,
    /// Where its lan manager listens (a proxy's address to put one in between).
    pub lan: SocketAddr,
    /// Further lan managers on the same etcd, listed after `lan` in
    /// `lanmanageraddress`; the master follows whichever leads.
    pub more_lans: Vec<SocketAddr>,
    /// Ports per protocol range; the three ranges come from one [`port_block`].
    pub portrangesize: u16,
    /// Explicit first ports, instead of a fresh block.
    pub portrangestart: Option<PortStarts>,
    /// Module names served by `allex-testsvc` (default: just `testsvc`).
    pub testsvc_modules: Vec<String>,
    /// Other catalogue entries.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Stop timeout of the testsvc entries, in ms.
    pub stop_timeout_ms: u64,
    /// Shared secret presented to the lan manager.
    pub token: Option<String>,
    /// `advertiseaddress`, when set.
    pub advertiseaddress: Option<IpAddr>,
    /// Cap of the reconnect backoff, in ms.
    pub reconnectmaxms: u64,
    /// Log rotation size of children's output, in bytes.
    pub logmaxbytes: Option<u64>,
    /// Network namespace to run it in, via `ip netns exec`.
    pub netns: Option<String>,
    /// `RUST_LOG` for the process; inherited when `None`.
    pub log_filter: Option<String>,
    /// Signal dispositions and limits it inherits from whoever starts it.
    pub inherited: Inherited,
    /// Write the config under this name in the master's directory and let
    /// the master find it there (no `--config`), as an operator's does.
    pub config_file_name: Option<&'static str>,
}

/// What a master inherits from whoever starts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inherited {
    /// Signals set to SIG_IGN, as `nohup` or a shell's `trap '' SIG` do.
    pub ignored: &'static [Signal],
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: Option<(u64, u64)>,
}

impl MasterOptions {
    /// Defaults for a master of the lan manager at `lan`.
    pub fn new(lan: SocketAddr) -> Self {
        MasterOptions {
            name: None,
            lan,
            more_lans: Vec::new(),
            portrangesize: 20,
            portrangestart: None,
            testsvc_modules: vec!["testsvc".into()],
            services: BTreeMap::new(),
            stop_timeout_ms: 1000,
            token: None,
            advertiseaddress: None,
            reconnectmaxms: 500,
            logmaxbytes: None,
            netns: None,
            log_filter: None,
            inherited: Inherited::default(),
            config_file_name: None,
        }
    }

    /// The config file these options describe.
    pub fn config(&self, runtime: &Path) -> Result<MasterConfig, HarnessError> {
        let size = self.portrangesize.max(1);
        let starts = match self.portrangestart {
            Some(s) => s,
            None => {
                let block = port_block(size.saturating_mul(3));
                PortStarts {
                    tcp: block,
                    http: block + size,
                    ws: block + 2 * size,
                }
            }
        };
        let mut services = self.services.clone();
        for m in &self.testsvc_modules {
            services.insert(m.clone(), testsvc_spec(self.stop_timeout_ms)?);
        }
        let name = self.name.clone().unwrap_or_else(|| {
            format!(
                "m{}-{}",
                std::process::id(),
                NEXT_NAME.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut cfg: MasterConfig = serde_json::from_str(allex_protocol::DEFAULT_CONFIG_TEXT)
            .map_err(|source| HarnessError::Parse {
                command: "the default config".into(),
                source,
                stdout: allex_protocol::DEFAULT_CONFIG_TEXT.into(),
            })?;
        cfg.lanmanageraddress = std::iter::once(self.lan.ip().to_string())
            .chain(self.more_lans.iter().map(SocketAddr::to_string))
            .collect::<Vec<_>>()
            .join(",");
        cfg.lanmanagerport = self.lan.port();
        cfg.portrangestart = starts;
        cfg.portrangesize = size;
        cfg.advertiseaddress = self.advertiseaddress;
        cfg.runtimedirectory = runtime.to_path_buf();
        cfg.services = services;
        cfg.token = self.token.clone();
        cfg.name = Some(name);
        cfg.reconnectmaxms = self.reconnectmaxms;
        if let Some(b) = self.logmaxbytes {
            cfg.logmaxbytes = b;
        }
        Ok(cfg)
    }
}

/// A running `allexmaster run` with its own runtime directory as cwd.
pub struct Master {
    proc: Option<Proc>,
    config: MasterConfig,
    /// The file as written, which an edit may have taken beyond `config`.
    config_text: String,
    config_path: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    netns: Option<String>,
    log_filter: Option<String>,
    inherited: Inherited,
    /// Whether `--config` names the file (else the master finds it in its cwd).
    explicit_config: bool,
    /// The cgroup directories its starts recorded, removed on drop (the
    /// runtime directory's record may be gone by then).
    cgroups: Vec<PathBuf>,
    // Declared last so the process dies before its directory goes.
    dir: Option<tempfile::TempDir>,
}

impl Master {
    /// Writes the config and starts the master, waiting for its ready line.
    pub fn start(opts: &MasterOptions) -> Result<Master, HarnessError> {
        Master::start_edited(opts, |_| {})
    }

    /// Like [`start`](Self::start), with the config file's JSON edited
    /// first, for fields and values the options do not cover (including
    /// ones the master must refuse or ignore).
    pub fn start_edited(
        opts: &MasterOptions,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Result<Master, HarnessError> {
        let dir = temp_dir("allexm")?;
        // The runtime directory sits below the one holding the config and
        // the log, so a test may remove it and still read what the master said.
        let config = opts.config(&dir.path().join("rt"))?;
        let mut m = Master {
            proc: None,
            config_text: String::new(),
            config_path: dir
                .path()
                .join(opts.config_file_name.unwrap_or(CONFIG_FILE_NAME)),
            explicit_config: opts.config_file_name.is_none(),
            cgroups: Vec::new(),
            socket: config
                .runtimedirectory
                .join(allex_protocol::local::MASTER_SOCKET_NAME),
            log: dir.path().join("allexmaster.log"),
            netns: opts.netns.clone(),
            log_filter: opts.log_filter.clone(),
            inherited: opts.inherited,
            config,
            dir: Some(dir),
        };
        let mut json = serde_json::to_value(&m.config).map_err(|source| HarnessError::Parse {
            command: "serialising the master config".into(),
            source,
            stdout: String::new(),
        })?;
        edit(&mut json);
        // The edited file is what the master reads; `config` follows it
        // when it still is a config.
        if let Ok(edited) = serde_json::from_value::<MasterConfig>(json.clone()) {
            m.config = edited;
        }
        m.write_text(&json)?;
        m.spawn()?;
        Ok(m)
    }

    fn write_config(&mut self) -> Result<(), HarnessError> {
        let json = serde_json::to_value(&self.config).map_err(|source| HarnessError::Parse {
            command: "serialising the master config".into(),
            source,
            stdout: String::new(),
        })?;
        self.write_text(&json)
    }

    fn write_text(&mut self, json: &serde_json::Value) -> Result<(), HarnessError> {
        let text = serde_json::to_string_pretty(json).map_err(|source| HarnessError::Parse {
            command: "serialising the master config".into(),
            source,
            stdout: String::new(),
        })?;
        std::fs::write(&self.config_path, &text).map_err(|source| HarnessError::Io {
            what: format!("writing {}", self.config_path.display()),
            source,
        })?;
        self.config_text = text;
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary("allexmaster")?);
                c
            }
            None => Command::new(binary("allexmaster")?),
        };
        cmd.arg("run").current_dir(self.dir());
        if self.explicit_config {
            cmd.arg("--config").arg(&self.config_path);
        }
        if let Some(f) = &self.log_filter {
            cmd.env("RUST_LOG", f);
        }
        inherit(&mut cmd, self.inherited);
        let proc = Proc::spawn("allexmaster", cmd, stderr_for(&self.log))?;
        match proc.wait_for_line(
            |l| l.starts_with("allexmaster ready socket="),
            START_DEADLINE,
        ) {
            Ok(line) => {
                self.socket = PathBuf::from(line.trim_start_matches("allexmaster ready socket="));
                self.proc = Some(proc);
                // Written before the ready line.
                if let Some(dir) = crate::cgroups::recorded(self.runtime_dir()) {
                    if !self.cgroups.contains(&dir) {
                        self.cgroups.push(dir);
                    }
                }
                Ok(())
            }
            Err(e) => Err(HarnessError::Start {
                what: format!("allexmaster {}", self.name()),
                detail: e.to_string(),
                log: log_tail(&self.log, 20),
            }),
        }
    }

    /// The name the lan manager knows it by.
    pub fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or("")
    }

    /// Its config as written.
    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// Its config file's text, as written.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// Its config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its directory: the config file, the log, and the runtime directory
    /// `rt` unless an edit moved it; also its working directory.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(d) => d.path(),
            None => Path::new("/nonexistent"),
        }
    }

    /// Its runtime directory (socket, children's logs, state).
    pub fn runtime_dir(&self) -> &Path {
        &self.config.runtimedirectory
    }

    /// Its Unix socket, as announced in its ready line.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its stderr log file (empty when logs are inherited).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it logged so far (empty when logs are inherited).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The inclusive port range of one protocol.
    pub fn port_range(&self, p: Protocol) -> std::ops::RangeInclusive<u32> {
        self.config.port_range(p)
    }

    /// Whether `port` of protocol `p` lies in its range.
    pub fn in_range(&self, p: Protocol, port: u16) -> bool {
        self.port_range(p).contains(&u32::from(port))
    }

    /// The running process, if any.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// Runs `allexmaster <args> --config <path>` and returns its output
    /// whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> Result<Output, HarnessError> {
        let mut cmd = Command::new(binary("allexmaster")?);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir());
        Ok(run_with_deadline("allexmaster", cmd, START_DEADLINE)?)
    }

    /// Runs `allexmaster <args> --socket <socket>`; its output, which must
    /// say success.
    fn cli_socket_ok(&self, args: &[&str]) -> Result<Output, HarnessError> {
        let socket = self.socket.display().to_string();
        let mut args = args.to_vec();
        args.extend(["--socket", socket.as_str()]);
        let out = self.cli(&args)?;
        if !out.status.success() {
            return Err(HarnessError::Cli {
                command: format!("allexmaster {}", args.join(" ")),
                status: out.status,
                stderr: out.stderr,
            });
        }
        Ok(out)
    }

    /// `allexmaster status` as the table an operator reads.
    pub fn status_text(&self) -> Result<String, HarnessError> {
        Ok(self.cli_socket_ok(&["status"])?.stdout)
    }

    /// Asks `allexmaster status --json --socket <socket>`.
    pub fn status(&self) -> Result<MasterStatus, HarnessError> {
        let out = self.cli_socket_ok(&["status", "--json"])?;
        serde_json::from_str(out.stdout.trim()).map_err(|source| HarnessError::Parse {
            command: "allexmaster status --json".into(),
            source,
            stdout: out.stdout,
        })
    }

    /// Asks the socket directly, without the CLI: cheaper in polling loops.
    pub fn status_direct(&self) -> Result<MasterStatus, HarnessError> {
        let mut client =
            allex_protocol::client::MasterClient::connect(&self.socket).map_err(|e| {
                HarnessError::Io {
                    what: format!("connecting to {}", self.socket.display()),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        client.status().map_err(|e| HarnessError::Io {
            what: format!("status over {}", self.socket.display()),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Sends `signal` to the master's process group (not its children's groups).
    pub fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        match &self.proc {
            Some(p) => Ok(p.kill(signal)?),
            None => Err(HarnessError::NotRunning(format!(
                "allexmaster {}",
                self.name()
            ))),
        }
    }

    /// Kills it with SIGKILL and reaps it; its directory stays.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(p) = self.proc.take() {
            p.kill_now()?;
        }
        Ok(())
    }

    /// Kills it if it runs and starts it again with the same config and directory.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill()?;
        self.spawn()
    }

    /// Live processes spawned by this master (found by the environment it
    /// gives them), whether or not the master still runs.
    pub fn children_alive(&self) -> Vec<u32> {
        use crate::procscan::pids_with_env;
        use allex_protocol::spawn::{ENV_MASTER_SOCKET, ENV_RUNTIMEDIRECTORY};
        let mut pids = pids_with_env(ENV_MASTER_SOCKET, &self.socket.display().to_string());
        pids.extend(pids_with_env(
            ENV_RUNTIMEDIRECTORY,
            &self.runtime_dir().display().to_string(),
        ));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sets the ports per protocol range, keeping the first ports; takes
    /// effect at the next (re)start.
    pub fn set_port_range_size(&mut self, size: u16) -> Result<(), HarnessError> {
        self.config.portrangesize = size.max(1);
        self.write_config()
    }

    /// Points it at another lan manager address; takes effect at the next (re)start.
    pub fn set_lan(&mut self, lan: SocketAddr) -> Result<(), HarnessError> {
        self.config.lanmanageraddress = lan.ip().to_string();
        self.config.lanmanagerport = lan.port();
        self.write_config()
    }
}

/// Sets up `cmd` to start with what `inherited` says.
fn inherit(cmd: &mut Command, inherited: Inherited) {
    use std::os::unix::process::CommandExt;
    let Inherited { ignored, nofile } = inherited;
    if ignored.is_empty() && nofile.is_none() {
        return;
    }
    // SAFETY: the hook runs between fork and exec, where only
    // async-signal-safe calls are allowed: sigaction(2) and setrlimit(2)
    // are, and nothing here allocates.
    unsafe {
        cmd.pre_exec(move || {
            for s in ignored {
                nix::sys::signal::signal(*s, nix::sys::signal::SigHandler::SigIgn)
                    .map_err(std::io::Error::from)?;
            }
            if let Some((soft, hard)) = nofile {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    soft,
                    hard,
                )
                .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.proc.take();
        if std::thread::panicking() {
            eprintln!(
                "--- allexmaster {} log ---\n{}",
                self.name(),
                log_tail(&self.log, 60)
            );
        }
        // The master should take its children down with it; make sure anyway,
        // so a faulty master cannot leak processes out of a test.
        crate::procscan::kill_all(&self.children_alive());
        for dir in &self.cgroups {
            crate::cgroups::remove_dir(dir);
        }
        if let Some(dir) = self.dir.take() {
            maybe_keep(dir);
        }
    }
}
