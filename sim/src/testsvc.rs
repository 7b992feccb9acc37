//! `allex-testsvc`: a service for tests whose behaviour is set by its need's propertyhash.
//!
//! Every accepted connection gets the banner `allex-testsvc <instance> <pid>`
//! (inside a minimal HTTP/1.0 response on the http port) and is closed, so a
//! checker can tell which process owns a port. Stdout carries one line per
//! milestone (`listening <proto> <port>`, `ready`, `lookup <name> <json>`) for
//! tests that watch it.

use allex_protocol::client::MasterClient;
use allex_protocol::spawn::{
    SpawnInfo, ENV_HTTP_PORT, ENV_MASTER_SOCKET, ENV_TCP_PORT, ENV_WS_PORT,
};
use allex_protocol::types::Protocol;
use allex_protocol::InstanceName;
use serde_json::{Map, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

/// Why the test service cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TestsvcError {
    /// `ALLEX_SPAWN` is missing or invalid.
    #[error(transparent)]
    Spawn(#[from] allex_protocol::spawn::SpawnEnvError),
    /// A propertyhash knob has the wrong type.
    #[error("propertyhash.{knob} must be {expected}")]
    Knob {
        /// The knob.
        knob: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// An `ALLEX_*_PORT` variable is not a port.
    #[error("{var}={text:?} is not a port")]
    PortVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        text: String,
    },
    /// The `setsid_grandchild` could not be started.
    #[error("starting the setsid grandchild: {0}")]
    Grandchild(std::io::Error),
    /// A port could not be bound.
    #[error("binding the {protocol} port {port}: {source}")]
    Bind {
        /// Protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
        /// The fault.
        source: std::io::Error,
    },
    /// SIGTERM could not be ignored.
    #[error("ignoring SIGTERM: {0}")]
    Signal(nix::errno::Errno),
}

/// First word of the banner every connection gets (the kit reads it back).
pub use allex_testkit::wait::BANNER_PREFIX;

/// The behaviour knobs read from the propertyhash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knobs {
    /// Exit with `exit_code` this many ms after start.
    pub crash_after_ms: Option<u64>,
    /// Exit with `exit_code` at once.
    pub exit_at_once: bool,
    /// Exit code for `crash_after_ms` and `exit_at_once`.
    pub exit_code: i32,
    /// Keep running on SIGTERM.
    pub ignore_sigterm: bool,
    /// Bind no port at all.
    pub never_listen: bool,
    /// Listen only on these protocols (of those with a port); all when absent.
    pub listen: Option<Vec<Protocol>>,
    /// Wait this long before binding.
    pub delay_listen_ms: u64,
    /// Bytes written to stdout and to stderr at start.
    pub spam_bytes: u64,
    /// Print a numbered `tick N` line on stdout every this many ms, for
    /// tests that follow a log across its rotations.
    pub tick_ms: Option<u64>,
    /// Instance to look up through the master, printing the answer.
    pub lookup: Option<InstanceName>,
    /// Do not tell the master we are ready.
    pub no_ready: bool,
    /// Say `READY=1` on `NOTIFY_SOCKET` once listening, as `sd_notify(3)` does.
    pub notify: bool,
    /// Start a `sleep` that leaves our process group and session (`setsid`)
    /// and keeps our stdout and stderr: a service that forks a daemon.
    pub setsid_grandchild: bool,
    /// Start a daemon the way daemons start: a shell forks `setsid sleep`
    /// and exits, so the daemon is in its own session and no child of ours,
    /// with an empty environment, so no `ALLEX_*` variable ties it to us
    /// (only its cgroup does). Its pid is printed as `daemon PID`.
    pub double_fork: bool,
}

impl Knobs {
    /// Reads the knobs, refusing values of the wrong type so a typo in a test shows.
    pub fn from_propertyhash(ph: &Map<String, Value>) -> Result<Knobs, TestsvcError> {
        let wrong = |knob, expected| TestsvcError::Knob { knob, expected };
        let uint = |k: &'static str| -> Result<Option<u64>, TestsvcError> {
            match ph.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| wrong(k, "a non-negative integer")),
            }
        };
        let flag = |k: &'static str| -> Result<bool, TestsvcError> {
            match ph.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(v) => v.as_bool().ok_or_else(|| wrong(k, "a boolean")),
            }
        };
        let exit_code = match ph.get("exit_code") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .ok_or_else(|| wrong("exit_code", "an integer"))?,
        };
        let listen = match ph.get("listen") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<Protocol>>(v.clone())
                    .map_err(|_| wrong("listen", "an array of \"tcp\", \"http\", \"ws\""))?,
            ),
        };
        let lookup = match ph.get("lookup") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                InstanceName::new(s.as_str()).map_err(|_| wrong("lookup", "an instance name"))?,
            ),
            Some(_) => return Err(wrong("lookup", "an instance name")),
        };
        Ok(Knobs {
            crash_after_ms: uint("crash_after_ms")?,
            exit_at_once: flag("exit_at_once")?,
            exit_code,
            ignore_sigterm: flag("ignore_sigterm")?,
            never_listen: flag("never_listen")?,
            listen,
            delay_listen_ms: uint("delay_listen_ms")?.unwrap_or(0),
            spam_bytes: uint("spam_bytes")?.unwrap_or(0),
            tick_ms: uint("tick_ms")?,
            lookup,
            no_ready: flag("no_ready")?,
            notify: flag("notify")?,
            setsid_grandchild: flag("setsid_grandchild")?,
            double_fork: flag("double_fork")?,
        })
    }
}

/// Runs the test service; returns only on a setup error (exits are explicit).
pub fn run() -> Result<(), TestsvcError> {
    let info = SpawnInfo::from_env()?;
    let knobs = Knobs::from_propertyhash(&info.propertyhash)?;
    let pid = std::process::id();
    let banner = format!("{BANNER_PREFIX} {} {pid}\n", info.instancename);
    tracing::info!(instance = %info.instancename, pid, ?knobs, "allex-testsvc starting");
    say(&format!(
        "{BANNER_PREFIX} {} {pid} started",
        info.instancename
    ));

    if knobs.ignore_sigterm {
        // SAFETY: SIG_IGN installs no handler code, so nothing async-signal-unsafe runs.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::SigHandler::SigIgn,
            )
        }
        .map_err(TestsvcError::Signal)?;
    }
    if knobs.spam_bytes > 0 {
        spam(knobs.spam_bytes);
    }
    if let Some(ms) = knobs.tick_ms {
        std::thread::spawn(move || {
            for n in 0u64.. {
                say(&format!("tick {n}"));
                std::thread::sleep(Duration::from_millis(ms.max(1)));
            }
        });
    }
    if knobs.setsid_grandchild {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sleep");
        cmd.arg("3600");
        // SAFETY: setsid(2) is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(TestsvcError::Grandchild)?;
        say(&format!("grandchild {}", child.id()));
    }
    if knobs.double_fork {
        let out = std::process::Command::new("/bin/sh")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .arg("-c")
            .arg("setsid /bin/sleep 3600 </dev/null >/dev/null 2>&1 & echo $!")
            .output()
            .map_err(TestsvcError::Grandchild)?;
        say(&format!(
            "daemon {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    if knobs.exit_at_once {
        say(&format!("exiting {}", knobs.exit_code));
        std::process::exit(knobs.exit_code);
    }
    if let Some(ms) = knobs.crash_after_ms {
        let code = knobs.exit_code;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            say(&format!("exiting {code}"));
            std::process::exit(code);
        });
    }
    if knobs.delay_listen_ms > 0 {
        std::thread::sleep(Duration::from_millis(knobs.delay_listen_ms));
    }
    if !knobs.never_listen {
        for (proto, port) in ports(&info)? {
            if knobs.listen.as_ref().is_some_and(|l| !l.contains(&proto)) {
                continue;
            }
            let bind_err = |source| TestsvcError::Bind {
                protocol: proto,
                port,
                source,
            };
            let listener = match inherited_listener(proto) {
                Some(l) => l,
                None => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(bind_err)?,
            };
            let actual = listener.local_addr().map_err(bind_err)?.port();
            say(&format!("listening {proto} {actual}"));
            let reply = if proto == Protocol::Http {
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{banner}",
                    banner.len()
                )
            } else {
                banner.clone()
            };
            std::thread::spawn(move || serve(listener, reply));
        }
    }
    if knobs.notify {
        sd_notify_ready();
    }
    if !knobs.no_ready || knobs.lookup.is_some() {
        talk_to_master(&knobs);
    }
    loop {
        std::thread::park();
    }
}

/// The ports to listen on: the ALLEX_*_PORT variables, else ALLEX_SPAWN's.
fn ports(info: &SpawnInfo) -> Result<Vec<(Protocol, u16)>, TestsvcError> {
    let mut out = Vec::new();
    for (proto, var, fallback) in [
        (Protocol::Tcp, ENV_TCP_PORT, info.tcpport),
        (Protocol::Http, ENV_HTTP_PORT, info.httpport),
        (Protocol::Ws, ENV_WS_PORT, info.wsport),
    ] {
        let port = match std::env::var(var) {
            Ok(text) if !text.is_empty() => {
                Some(text.parse::<u16>().map_err(|_| TestsvcError::PortVar {
                    var,
                    text: text.clone(),
                })?)
            }
            _ => fallback,
        };
        if let Some(port) = port {
            out.push((proto, port));
        }
    }
    Ok(out)
}

fn talk_to_master(knobs: &Knobs) {
    if std::env::var_os(ENV_MASTER_SOCKET).is_none() {
        tracing::warn!("ALLEX_MASTER_SOCKET is not set: running without a master");
        return;
    }
    let mut master = match MasterClient::from_env() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the master");
            say(&format!("master-error {e}"));
            return;
        }
    };
    if !knobs.no_ready {
        match master.ready() {
            Ok(()) => say("ready"),
            Err(e) => {
                tracing::error!(error = %e, "ready refused");
                say(&format!("ready-error {e}"));
            }
        }
    }
    if let Some(name) = &knobs.lookup {
        match master.lookup(name) {
            Ok(loc) => {
                let json = serde_json::to_string(&loc).unwrap_or_else(|_| "null".into());
                say(&format!("lookup {name} {json}"));
            }
            Err(e) => {
                tracing::error!(error = %e, "lookup failed");
                say(&format!("lookup-error {name} {e}"));
            }
        }
    }
}

fn serve(listener: TcpListener, reply: String) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let reply = reply.clone();
                std::thread::spawn(move || answer(stream, &reply));
            }
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

fn answer(mut stream: TcpStream, reply: &str) {
    if stream.write_all(reply.as_bytes()).is_err() {
        return;
    }
    // Half-close, then drain what the peer sent: closing with unread input
    // would send a reset that can destroy the reply before the peer reads it.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 1024];
    let mut budget = 64 * 1024;
    while budget > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget -= n.min(budget),
        }
    }
}

fn spam(bytes: u64) {
    let line = [b'x'; 99];
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(100) as usize;
        let chunk: Vec<u8> = line[..n - 1].iter().copied().chain([b'\n']).collect();
        if out.write_all(&chunk).is_err() || err.write_all(&chunk).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = out.flush();
}

/// Prints one milestone line on stdout and flushes it, so watchers see it at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `READY=1` on `NOTIFY_SOCKET`, as `sd_notify(3)` sends it.
fn sd_notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        say("notify-error NOTIFY_SOCKET is not set");
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(b"READY=1\n", std::path::Path::new(&path)));
    match sent {
        Ok(_) => say("notified READY=1"),
        Err(e) => say(&format!("notify-error {e}")),
    }
}

/// The listening socket the master handed over for `proto`, as
/// `sd_listen_fds(3)` passes them: fd 3 onwards, named by `LISTEN_FDNAMES`,
/// meant for us when `LISTEN_PID` is our pid.
fn inherited_listener(proto: Protocol) -> Option<TcpListener> {
    use allex_protocol::spawn::{
        ENV_LISTEN_FDNAMES, ENV_LISTEN_FDS, ENV_LISTEN_PID, LISTEN_FDS_START,
    };
    use std::os::fd::FromRawFd;
    let pid: u32 = std::env::var(ENV_LISTEN_PID).ok()?.parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let count: usize = std::env::var(ENV_LISTEN_FDS).ok()?.parse().ok()?;
    let names = std::env::var(ENV_LISTEN_FDNAMES).unwrap_or_default();
    let index = names.split(':').position(|n| n == proto.as_str())?;
    if index >= count {
        return None;
    }
    let fd = LISTEN_FDS_START + i32::try_from(index).ok()?;
    // SAFETY: the master put a listening socket at this descriptor for us
    // (LISTEN_PID is our pid) and nothing else in this process owns it; each
    // protocol is taken once.
    Some(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn knobs(v: Value) -> Result<Knobs, TestsvcError> {
        Knobs::from_propertyhash(v.as_object().unwrap())
    }

    #[test]
    fn knobs_parse_and_default() {
        let k = knobs(json!({})).unwrap();
        assert_eq!(k.exit_code, 1);
        assert_eq!(k.listen, None);
        let k = knobs(json!({"crash_after_ms": 5, "exit_code": 3, "listen": ["http"], "lookup": "Time", "no_ready": true})).unwrap();
        assert_eq!(k.crash_after_ms, Some(5));
        assert_eq!(k.exit_code, 3);
        assert_eq!(k.listen, Some(vec![Protocol::Http]));
        assert_eq!(k.lookup.as_deref(), Some("Time"));
        assert!(k.no_ready);
    }

    #[test]
    fn wrong_knob_types_are_refused() {
        assert!(knobs(json!({"crash_after_ms": "5"})).is_err());
        assert!(knobs(json!({"ignore_sigterm": 1})).is_err());
        assert!(knobs(json!({"listen": ["udp"]})).is_err());
    }
}
