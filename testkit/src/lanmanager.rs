//! [`LanManager`]: a real `allexlanmanager` process in its own directory.

use crate::bins::binary;
use crate::error::HarnessError;
use crate::process::{run_with_deadline, Output, Proc};
use crate::timings::Timings;
use crate::workdir::{log_tail, maybe_keep, stderr_for, temp_dir, START_DEADLINE};
use allex_protocol::{LanStatus, Need};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How to start a [`LanManager`].
#[derive(Debug, Clone, Default)]
pub struct LanOptions {
    /// Timing flags.
    pub timings: Timings,
    /// Shared secret (`--token`), also used by the CLI calls.
    pub token: Option<String>,
    /// Port on 127.0.0.1 to listen on; 0 lets the kernel pick.
    pub port: u16,
    /// Extra arguments after `run`.
    pub extra_args: Vec<String>,
    /// Extra arguments of every CLI call the kit makes (`--tls-ca FILE`).
    pub cli_args: Vec<String>,
    /// Address to listen on instead of 127.0.0.1.
    pub listen_ip: Option<std::net::IpAddr>,
    /// Network namespace to run it (and its CLI calls) in, via `ip netns exec`.
    pub netns: Option<String>,
    /// Its directory, for tests that write its files first; it is kept when
    /// the lan manager is dropped. A fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// `RUST_LOG` for the process; inherited when `None`.
    pub log_filter: Option<String>,
    /// `--http`: `None` is a kernel-chosen port on 127.0.0.1 (never the
    /// fixed default, so parallel tests do not meet), `Some("off")` none.
    pub http: Option<String>,
}

impl LanOptions {
    /// A lan manager in `dir` whose timers do not fire during a test
    /// ([`Timings::patient`]), for tests that drive every step themselves.
    pub fn patient(dir: &Path) -> LanOptions {
        LanOptions {
            timings: Timings::patient(),
            dir: Some(dir.to_path_buf()),
            ..LanOptions::default()
        }
    }

    /// [`LanOptions::patient`] with the timers `edit` shortens, for a test
    /// about one timer: `patient_with(dir, |t| t.grace = ms(300))`.
    pub fn patient_with(dir: &Path, edit: impl FnOnce(&mut Timings)) -> LanOptions {
        let mut opts = LanOptions::patient(dir);
        edit(&mut opts.timings);
        opts
    }
}

/// Where a lan manager's files live: its own temporary directory, removed
/// when it is dropped, or one a test gave it.
enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

/// A running `allexlanmanager run` over a temporary directory.
pub struct LanManager {
    proc: Option<Proc>,
    addr: SocketAddr,
    http: Option<SocketAddr>,
    opts: LanOptions,
    log: PathBuf,
    // Declared last so the process dies before its directory goes.
    dir: Option<Dir>,
}

impl LanManager {
    /// Starts a lan manager and waits for its `listening on` line.
    pub fn start(opts: LanOptions) -> Result<LanManager, HarnessError> {
        let dir = match &opts.dir {
            Some(d) => Dir::Given(d.clone()),
            None => Dir::Temp(temp_dir("allexlan")?),
        };
        let log = match &dir {
            Dir::Temp(t) => t.path().join("allexlanmanager.log"),
            Dir::Given(d) => d.join(format!("allexlanmanager-{}.log", std::process::id())),
        };
        let mut lan = LanManager {
            proc: None,
            addr: SocketAddr::new(
                opts.listen_ip
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                opts.port,
            ),
            http: None,
            opts,
            log,
            dir: Some(dir),
        };
        lan.spawn(lan.addr.port())?;
        Ok(lan)
    }

    fn spawn(&mut self, port: u16) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let mut cmd = self.command()?;
            cmd.arg("run")
                .arg("--listen")
                .arg(SocketAddr::new(self.addr.ip(), port).to_string())
                .arg("--dir")
                .arg(self.dir())
                .args(self.opts.timings.args())
                .arg("--http")
                .arg(match (&self.opts.http, self.http) {
                    (Some(h), _) => h.clone(),
                    // A restart keeps the HTTP address, as it keeps the other.
                    (None, Some(addr)) => addr.to_string(),
                    (None, None) => "127.0.0.1:0".into(),
                })
                .args(&self.opts.extra_args)
                .env_remove("ALLEX_TOKEN");
            if let Some(Dir::Temp(t)) = &self.dir {
                cmd.current_dir(t.path());
            }
            if let Some(f) = &self.opts.log_filter {
                cmd.env("RUST_LOG", f);
            }
            if let Some(t) = &self.opts.token {
                cmd.arg("--token").arg(t);
            }
            if let Some(Dir::Given(d)) = &self.dir {
                // The log lives in the given directory, which a first run may
                // be about to create.
                std::fs::create_dir_all(d).map_err(|source| HarnessError::Io {
                    what: format!("creating {}", d.display()),
                    source,
                })?;
            }
            let proc = Proc::spawn("allexlanmanager", cmd, stderr_for(&self.log))?;
            let remaining = START_DEADLINE.saturating_sub(started.elapsed());
            match proc.wait_for_line(
                |l| l.starts_with("allexlanmanager listening on "),
                remaining,
            ) {
                Ok(line) => {
                    let text = line
                        .trim_start_matches("allexlanmanager listening on ")
                        .trim();
                    self.addr = text.parse().map_err(|_| HarnessError::Start {
                        what: "allexlanmanager".into(),
                        detail: format!("unparsable listening line {line:?}"),
                        log: log_tail(&self.log, 20),
                    })?;
                    if self.opts.http.as_deref() != Some("off") {
                        self.http = Some(Self::http_line(&proc, &self.log)?);
                    }
                    self.proc = Some(proc);
                    return Ok(());
                }
                // A restart on a fixed port can race the old socket's release: retry.
                Err(e) if port != 0 && started.elapsed() < START_DEADLINE => {
                    tracing::debug!(error = %e, port, "lan manager did not listen; retrying");
                    drop(proc);
                    std::thread::sleep(crate::wait::POLL);
                }
                Err(e) => {
                    return Err(HarnessError::Start {
                        what: "allexlanmanager".into(),
                        detail: e.to_string(),
                        log: log_tail(&self.log, 20),
                    })
                }
            }
        }
    }

    /// The HTTP address from the `http on http://ADDR/` line, printed right
    /// after the listening line.
    fn http_line(proc: &Proc, log: &Path) -> Result<SocketAddr, HarnessError> {
        const PREFIX: &str = "allexlanmanager http on http://";
        let line = proc.wait_for_line(|l| l.starts_with(PREFIX), START_DEADLINE)?;
        line[PREFIX.len()..]
            .trim_end_matches('/')
            .parse()
            .map_err(|_| HarnessError::Start {
                what: "allexlanmanager".into(),
                detail: format!("unparsable http line {line:?}"),
                log: log_tail(log, 20),
            })
    }

    /// `allexlanmanager`, inside the namespace when one is set.
    fn command(&self) -> Result<Command, HarnessError> {
        let bin = binary("allexlanmanager")?;
        Ok(match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        })
    }

    /// The shared secret it was started with.
    pub fn token(&self) -> Option<&str> {
        self.opts.token.as_deref()
    }

    /// The address masters and CLIs connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its HTTP server listens, unless started with `--http off`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// An HTTP client of its HTTP server, with its token as the bearer.
    pub fn http(&self) -> Result<crate::http::HttpClient, HarnessError> {
        let addr = self
            .http
            .ok_or_else(|| HarnessError::NotRunning("allexlanmanager's HTTP server".into()))?;
        Ok(crate::http::HttpClient::new(addr, self.opts.token.clone()))
    }

    /// Its working directory (needs live in `.allexlanmanager/needs` under it).
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(Dir::Temp(t)) => t.path(),
            Some(Dir::Given(d)) => d,
            None => Path::new("/nonexistent"),
        }
    }

    /// The needs file (the operator's; the lan manager never rewrites it).
    pub fn needs_path(&self) -> PathBuf {
        self.dir().join(".allexlanmanager").join("needs")
    }

    /// The runtime layer, `needs.runtime`: what admin changes wrote.
    pub fn runtime_path(&self) -> PathBuf {
        self.dir().join(".allexlanmanager").join("needs.runtime")
    }

    /// The overlay layer, `needs.overlay`.
    pub fn overlay_path(&self) -> PathBuf {
        self.dir().join(".allexlanmanager").join("needs.overlay")
    }

    /// The needs in effect as the three files on disk say now (the merge a
    /// restarted lan manager would start from); panics on a bad file.
    pub fn needs_on_disk(&self) -> Vec<allex_protocol::Need> {
        effective_needs(&self.dir().join(".allexlanmanager"))
    }

    /// Its stderr log file (empty when logs are inherited).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it logged so far (empty when logs are inherited).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The running process, if any.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// CPU time the process used so far, in milliseconds (0 once it is gone).
    pub fn cpu_ms(&self) -> u64 {
        self.pid().map_or(0, crate::procscan::cpu_ms)
    }

    /// Waits for it to exit on its own; SIGKILL after `deadline`.
    pub fn wait_exit(
        &mut self,
        deadline: Duration,
    ) -> Result<std::process::ExitStatus, HarnessError> {
        let Some(p) = self.proc.take() else {
            return Err(HarnessError::NotRunning("allexlanmanager".into()));
        };
        match p.wait_exit(deadline) {
            Ok(status) => Ok(status),
            Err(e) => {
                p.kill_now()?;
                Err(e.into())
            }
        }
    }

    /// Waits for its `allexlanmanager leads` line (`--store etcd://`: it won
    /// the election and serves).
    pub fn wait_leading(&self, deadline: Duration) -> Result<(), HarnessError> {
        let Some(p) = &self.proc else {
            return Err(HarnessError::NotRunning("allexlanmanager".into()));
        };
        p.wait_for_line(|l| l == "allexlanmanager leads", deadline)
            .map(drop)
            .map_err(|e| HarnessError::Start {
                what: "allexlanmanager (leadership)".into(),
                detail: e.to_string(),
                log: log_tail(&self.log, 20),
            })
    }

    /// Whether it has printed `allexlanmanager leads` (without waiting).
    pub fn leads(&self) -> bool {
        self.wait_leading(Duration::ZERO).is_ok()
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// Runs `allexlanmanager <args> --connect <addr> [--token T]` and returns
    /// its output whatever the exit status, for tests of refusals.
    pub fn cli(&self, args: &[&str]) -> Result<Output, HarnessError> {
        let mut cmd = self.command()?;
        cmd.args(args)
            .args(&self.opts.cli_args)
            .arg("--connect")
            .arg(self.addr.to_string())
            .env_remove("ALLEX_TOKEN");
        if let Some(t) = &self.opts.token {
            cmd.arg("--token").arg(t);
        }
        Ok(run_with_deadline("allexlanmanager", cmd, START_DEADLINE)?)
    }

    fn cli_ok(&self, args: &[&str]) -> Result<Output, HarnessError> {
        let out = self.cli(args)?;
        if !out.status.success() {
            return Err(HarnessError::Cli {
                command: format!("allexlanmanager {}", args.join(" ")),
                status: out.status,
                stderr: out.stderr,
            });
        }
        Ok(out)
    }

    /// Adds a need through `allexlanmanager need add`.
    pub fn need_add(&self, need: &Need) -> Result<(), HarnessError> {
        let props = serde_json::Value::Object(need.propertyhash.clone()).to_string();
        let mut args = vec![
            "need",
            "add",
            "--module",
            &need.modulename,
            "--instance",
            &need.instancename,
            "--propertyhash",
            &props,
        ];
        if let Some(a) = &need.ipaddress {
            args.extend(["--ipaddress", a.as_str()]);
        }
        let protocols = need
            .protocols
            .as_ref()
            .map(|ps| ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(","));
        if let Some(p) = &protocols {
            args.extend(["--protocols", p.as_str()]);
        }
        self.cli_ok(&args).map(drop)
    }

    /// Removes a need through `allexlanmanager need remove`.
    pub fn need_remove(&self, instance: &str) -> Result<(), HarnessError> {
        self.cli_ok(&["need", "remove", instance]).map(drop)
    }

    /// Asks `allexlanmanager status --json`.
    pub fn status(&self) -> Result<LanStatus, HarnessError> {
        let out = self.cli_ok(&["status", "--json"])?;
        serde_json::from_str(out.stdout.trim()).map_err(|source| HarnessError::Parse {
            command: "allexlanmanager status --json".into(),
            source,
            stdout: out.stdout,
        })
    }

    /// Asks for the status over the admin protocol directly, without the
    /// CLI: cheaper in polling loops. Inside a network namespace the address
    /// is unreachable from here, so that case goes through the CLI.
    pub fn status_direct(&self) -> Result<LanStatus, HarnessError> {
        if self.opts.netns.is_some() {
            return self.status();
        }
        crate::admin::AdminClient::connect(self.addr, self.opts.token.as_deref(), START_DEADLINE)?
            .status()
    }

    /// Sends `signal` to the lan manager's process group.
    pub fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        match &self.proc {
            Some(p) => Ok(p.kill(signal)?),
            None => Err(HarnessError::NotRunning("allexlanmanager".into())),
        }
    }

    /// Kills it with SIGKILL and reaps it; the directory stays.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(p) = self.proc.take() {
            p.kill_now()?;
        }
        Ok(())
    }

    /// Sends `signal` and waits for it to exit (SIGKILL after `deadline`).
    pub fn stop(&mut self, signal: Signal, deadline: Duration) -> Result<(), HarnessError> {
        if let Some(p) = self.proc.take() {
            p.kill(signal)?;
            if p.wait_exit(deadline).is_err() {
                p.kill_now()?;
            }
        }
        Ok(())
    }

    /// Kills it (SIGKILL, a crash) if it runs and starts it again on the
    /// same address and directory.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill()?;
        self.spawn(self.addr.port())
    }

    /// Stops it with SIGTERM (a clean shutdown) and starts it again on the
    /// same address and directory.
    pub fn restart_graceful(&mut self) -> Result<(), HarnessError> {
        self.stop(Signal::SIGTERM, START_DEADLINE)?;
        self.spawn(self.addr.port())
    }
}

impl Drop for LanManager {
    fn drop(&mut self) {
        self.proc.take();
        if std::thread::panicking() {
            eprintln!("--- allexlanmanager log ---\n{}", log_tail(&self.log, 60));
        }
        if let Some(Dir::Temp(dir)) = self.dir.take() {
            maybe_keep(dir);
        }
    }
}

/// The needs in effect in the needs directory `dir` (`.allexlanmanager`),
/// merged from `needs`, `needs.overlay` and `needs.runtime`; panics on a bad file.
pub fn effective_needs(dir: &Path) -> Vec<allex_protocol::Need> {
    use allex_protocol::layers::{Layers, Source};
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (needs, overlay, runtime) = (read("needs"), read("needs.overlay"), read("needs.runtime"));
    let (np, op, rp) = (
        dir.join("needs"),
        dir.join("needs.overlay"),
        dir.join("needs.runtime"),
    );
    let layers = Layers::parse(
        Source {
            path: &np,
            text: needs.as_deref().unwrap_or("[]"),
        },
        overlay.as_deref().map(|text| Source { path: &op, text }),
        runtime.as_deref().map(|text| Source { path: &rp, text }),
    )
    .unwrap_or_else(|e| panic!("needs files do not parse: {e}"));
    layers.effective().into_iter().map(|l| l.need).collect()
}
