//! Shared test pieces: a fake lan manager and a master under test.
#![allow(dead_code)]

pub mod fake_lan;

use allex_protocol::{Generation, InstanceName};
use allex_protocol::{MasterStatus, Need, Protocol};
use allex_sim::{Proc, Stderr};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// Generous deadline for events that normally take milliseconds.
pub const SOON: Duration = Duration::from_secs(10);

/// The allexmaster binary cargo built for these tests.
pub fn master_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_allexmaster"))
}

/// The test service, which lives in the sim crate and must be built first.
pub fn testsvc() -> PathBuf {
    allex_sim::binary("allex-testsvc").unwrap_or_else(|e| {
        panic!("{e}\nbuild it first: cargo build -p allex-sim --bin allex-testsvc")
    })
}

/// A need for the `testsvc` module with knobs in its propertyhash.
pub fn need(instance: &str, knobs: Value) -> Need {
    let mut n = Need::new(
        "testsvc",
        allex_protocol::InstanceName::new(instance).unwrap(),
    );
    if let Value::Object(map) = knobs {
        n.propertyhash = map;
    }
    n
}

/// Whether a pid no longer runs (gone, or a zombie nobody reaped yet).
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// A running allexmaster with its own directory, runtime directory and port ranges.
pub struct TestMaster {
    /// Holds config, runtime directory and stderr log.
    pub dir: TempDir,
    /// The process (killed on drop).
    pub proc: Proc,
    /// Its socket.
    pub socket: PathBuf,
    /// Range starts: tcp, http, ws.
    pub starts: [u16; 3],
    /// Range size.
    pub size: u16,
}

/// What a master inherits from whoever starts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inherited {
    /// Signals set to SIG_IGN, as `nohup` or a shell's `trap '' SIG` do.
    pub ignored: &'static [i32],
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: Option<(u64, u64)>,
}

impl TestMaster {
    /// The config for a master talking to the lan manager on `lan_port`.
    pub fn config(dir: &Path, lan_port: u16, size: u16, stoptimeoutms: u64) -> (Value, [u16; 3]) {
        let base = allex_sim::port_block(size * 3);
        let starts = [base, base + size, base + 2 * size];
        let cfg = json!({
            "lanmanageraddress": "127.0.0.1",
            "lanmanagerport": lan_port,
            "portrangestart": { "tcp": starts[0], "http": starts[1], "ws": starts[2] },
            "portrangesize": size,
            "runtimedirectory": dir.join("rt"),
            "reconnectmaxms": 200,
            "logmaxbytes": 4096,
            "services": {
                "testsvc": { "command": testsvc(), "stoptimeoutms": stoptimeoutms }
            }
        });
        (cfg, starts)
    }

    /// Starts a master on the fake lan manager's port with `size` ports per protocol.
    pub fn start(lan_port: u16, size: u16) -> TestMaster {
        Self::start_with(lan_port, size, 3000, |_| {})
    }

    /// Like [`start`](Self::start), with the stop timeout and a config edit.
    pub fn start_with(
        lan_port: u16,
        size: u16,
        stoptimeoutms: u64,
        edit: impl FnOnce(&mut Value),
    ) -> TestMaster {
        Self::start_inheriting(lan_port, size, stoptimeoutms, edit, Inherited::default())
    }

    /// Like [`start_with`](Self::start_with), started the way `inherited` says.
    pub fn start_inheriting(
        lan_port: u16,
        size: u16,
        stoptimeoutms: u64,
        edit: impl FnOnce(&mut Value),
        inherited: Inherited,
    ) -> TestMaster {
        let dir = tempfile::tempdir().unwrap();
        let (mut cfg, starts) = Self::config(dir.path(), lan_port, size, stoptimeoutms);
        edit(&mut cfg);
        let path = dir.path().join("allexmasterconfig.json");
        std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
        let mut cmd = Command::new(master_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path());
        cmd.env("RUST_LOG", "allex_master=debug");
        {
            use std::os::unix::process::CommandExt;
            let Inherited { ignored, nofile } = inherited;
            // SAFETY: signal(2) and setrlimit(2) are async-signal-safe;
            // nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    for s in ignored {
                        libc::signal(*s, libc::SIG_IGN);
                    }
                    if let Some((soft, hard)) = nofile {
                        let lim = libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let proc = Proc::spawn(
            "allexmaster",
            cmd,
            Stderr::File(dir.path().join("master.stderr")),
        )
        .unwrap();
        let line = proc
            .wait_for_line(|l| l.starts_with("allexmaster ready socket="), SOON)
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\nstderr: {}",
                    std::fs::read_to_string(dir.path().join("master.stderr")).unwrap_or_default()
                )
            });
        let socket = PathBuf::from(line.trim_start_matches("allexmaster ready socket="));
        TestMaster {
            dir,
            proc,
            socket,
            starts,
            size,
        }
    }

    /// The master's stderr so far, for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.stderr")).unwrap_or_default()
    }

    /// `allexmaster status [--json]` over the socket; its stdout, which must succeed.
    fn status_stdout(&self, json: bool) -> Vec<u8> {
        let mut cmd = Command::new(master_bin());
        cmd.arg("status");
        if json {
            cmd.arg("--json");
        }
        let out = cmd.arg("--socket").arg(&self.socket).output().unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `allexmaster status --json` over the socket, parsed.
    pub fn status(&self) -> MasterStatus {
        serde_json::from_slice(&self.status_stdout(true)).unwrap()
    }

    /// `allexmaster status` as the table an operator reads.
    pub fn status_text(&self) -> String {
        String::from_utf8_lossy(&self.status_stdout(false)).into_owned()
    }

    /// Whether `port` of protocol `p` lies in this master's range.
    pub fn in_range(&self, p: Protocol, port: u16) -> bool {
        let start = self.starts[Protocol::ALL.iter().position(|x| *x == p).unwrap()];
        (start..start + self.size).contains(&port)
    }

    /// The runtime directory.
    pub fn runtimedir(&self) -> PathBuf {
        self.dir.path().join("rt")
    }
}

/// Waits until every instance in `names` was reported spawned, in any order.
/// Waits for the `spawned` report of `instance`: (generation, pid, ports).
pub fn spawned(
    lan: &fake_lan::FakeLan,
    instance: &str,
) -> (Generation, u32, allex_protocol::Ports) {
    lan.wait_msg(&format!("spawned {instance}"), SOON, |m| match m {
        allex_protocol::MasterToLan::Spawned {
            instancename,
            generation,
            pid,
            ports,
        } if instancename == instance => Some((*generation, *pid, *ports)),
        _ => None,
    })
}

pub fn spawned_all(
    lan: &fake_lan::FakeLan,
    names: &[&str],
) -> std::collections::HashMap<InstanceName, (Generation, u32, allex_protocol::Ports)> {
    let mut got = std::collections::HashMap::new();
    while got.len() < names.len() {
        let (name, v) = lan.wait_msg("the next spawned", SOON, |m| match m {
            allex_protocol::MasterToLan::Spawned {
                instancename,
                generation,
                pid,
                ports,
            } if names.contains(&instancename.as_str()) => {
                Some((instancename.clone(), (*generation, *pid, *ports)))
            }
            _ => None,
        });
        got.insert(name, v);
    }
    got
}
