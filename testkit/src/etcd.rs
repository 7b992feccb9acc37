//! A real etcd for tests: its own temporary data directory and loopback
//! ports, killed when dropped.

use crate::error::HarnessError;
use crate::process::{Proc, Stderr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian's `etcd-server` puts the binary.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// How long etcd may take to serve its first request.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running single-member etcd.
pub struct Etcd {
    proc: Option<Proc>,
    client_port: u16,
    log: PathBuf,
    // Declared last so the process dies before its data goes.
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Whether the etcd binary is installed (`.ci/run` installs it as root).
    pub fn available() -> bool {
        Path::new(ETCD_BIN).is_file()
    }

    /// Starts etcd on two free loopback ports and waits until its client
    /// port answers a request.
    pub fn start() -> Result<Etcd, HarnessError> {
        let dir = crate::workdir::temp_dir("allexetcd")?;
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let client_port = crate::ports::free_port().map_err(io("a port for etcd"))?;
        let peer_port = crate::ports::free_port().map_err(io("a port for etcd"))?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = dir.path().join("etcd.log");
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg("--name")
            .arg("allex-test")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("allex-test={peer}"));
        let proc = Proc::spawn("etcd", cmd, Stderr::File(log.clone()))?;
        let etcd = Etcd {
            proc: Some(proc),
            client_port,
            log,
            _dir: dir,
        };
        // Serving once /health says so (its HTTP gateway on the client port).
        let http = crate::http::HttpClient::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], client_port)),
            None,
        );
        crate::wait::wait_until("etcd to serve", START_DEADLINE, || {
            match http.get("/health") {
                Ok(r) if r.body.contains("true") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .map_err(|e| HarnessError::Start {
            what: "etcd".into(),
            detail: e.to_string(),
            log: std::fs::read_to_string(&etcd.log).unwrap_or_default(),
        })?;
        Ok(etcd)
    }

    /// `host:port` of its client port.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The `--store` argument for a lan manager on it.
    pub fn store_arg(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.proc.take();
        if std::thread::panicking() {
            eprintln!(
                "--- etcd log ---\n{}",
                crate::workdir::log_tail(&self.log, 60)
            );
        }
    }
}
