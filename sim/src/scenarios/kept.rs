//! Services the master keeps an eye and a hand on: sockets it holds across
//! a service's deaths (`sockets: inherit`), health checks that replace a
//! service that hangs, and cgroups that take a service's daemons with it.

use super::{cluster_options, expect, running_map, Scenario, ScenarioOptions};
use crate::harness::{testsvc_spec, ClusterOptions, HarnessError};
use allex_protocol::config::SocketsMode;
use allex_protocol::{InstanceName, Need, Protocol};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Catalogue entries beside `testsvc`: one whose sockets the master holds,
/// one under an http check.
fn with_entries(opts: &ScenarioOptions) -> ClusterOptions {
    let mut c = cluster_options(opts);
    c.masters = 1;
    if let Ok(spec) = testsvc_spec(500) {
        c.master.services.insert(
            "keeper".into(),
            allex_protocol::ServiceSpec {
                sockets: Some(SocketsMode::Inherit),
                ..spec.clone()
            },
        );
        c.master.services.insert(
            "checked".into(),
            allex_protocol::ServiceSpec {
                check: serde_json::from_value(serde_json::json!({
                    "type": "http", "intervalms": 200, "timeoutms": 200, "failures": 2
                }))
                .ok(),
                ..spec
            },
        );
    }
    c
}

fn need(module: &str, name: &str, protocols: Vec<Protocol>) -> Result<Need, HarnessError> {
    let mut n = Need::new(
        module,
        InstanceName::new(name).map_err(|e| HarnessError::Expectation(e.to_string()))?,
    );
    n.protocols = Some(protocols);
    Ok(n)
}

fn sigkill_or_stop(pid: u32, sig: Signal) -> Result<(), HarnessError> {
    kill(Pid::from_raw(pid as i32), sig)
        .map_err(|e| HarnessError::Expectation(format!("{sig} to {pid}: {e}")))
}

/// Three SIGKILLs of a service whose sockets the master holds: a client
/// connecting every millisecond is never refused.
pub fn inherited_sockets() -> Scenario {
    Scenario {
        name: "inherited-sockets",
        about: "a service whose sockets the master holds is killed three times; no connection is refused",
        cluster: with_entries,
        run: |r| {
            r.step("add a need of the keeper entry", |r| {
                r.cluster
                    .need_add(&need("keeper", "kept0", vec![Protocol::Tcp])?)
            })?;
            let mut rec = r.step("wait until it runs", |r| {
                Ok(r.wait_all_running(&["kept0".to_string()])?["kept0"].clone())
            })?;
            let port = rec
                .ports
                .tcp
                .ok_or_else(|| HarnessError::Expectation("no tcp port".into()))?;
            let stop = Arc::new(AtomicBool::new(false));
            let refused = Arc::new(AtomicU64::new(0));
            let client = {
                let (stop, refused) = (stop.clone(), refused.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                })
            };
            for i in 0..3 {
                let old = rec.clone();
                rec = r.step(&format!("SIGKILL {i}: it runs again on the same port"), |r| {
                    sigkill_or_stop(old.pid, Signal::SIGKILL)?;
                    r.cluster.wait_lan("a new pid", r.deadline(), |st| {
                        match running_map(st).get("kept0") {
                            Some(x) if x.pid != old.pid && x.ports == old.ports => Ok(x.clone()),
                            other => Err(format!("{other:?}")),
                        }
                    })
                })?;
            }
            stop.store(true, Ordering::Relaxed);
            let _ = client.join();
            r.step("no connection was refused", |_| {
                let n = refused.load(Ordering::Relaxed);
                expect(n == 0, || format!("{n} connections refused"))
            })?;
            Ok(())
        },
    }
}

/// A service that hangs (SIGSTOP) fails its http check, is stopped as
/// unhealthy and runs again.
pub fn unhealthy() -> Scenario {
    Scenario {
        name: "unhealthy",
        about: "a hung service fails its health check, is stopped as unhealthy and replaced",
        cluster: with_entries,
        run: |r| {
            r.step("add a need of the checked entry", |r| {
                r.cluster
                    .need_add(&need("checked", "checked0", vec![Protocol::Http])?)
            })?;
            let rec = r.step("wait until it runs", |r| {
                Ok(r.wait_all_running(&["checked0".to_string()])?["checked0"].clone())
            })?;
            r.step("SIGSTOP it; it is replaced", |r| {
                sigkill_or_stop(rec.pid, Signal::SIGSTOP)?;
                r.cluster.wait_lan("a replacement", r.deadline(), |st| {
                    match running_map(st).get("checked0") {
                        Some(x) if x.pid != rec.pid => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                })
            })?;
            Ok(())
        },
    }
}

/// The daemon pid a `double_fork` test service printed into its log.
fn daemon_of(r: &super::Run, instance: &str) -> Result<u32, HarnessError> {
    let log = r
        .cluster
        .master(0)
        .runtime_dir()
        .join("logs")
        .join(format!("{instance}.log"));
    crate::wait::wait_until(
        "the daemon's pid in the service's log",
        r.deadline(),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .find_map(|l| l.strip_prefix("daemon ")?.trim().parse::<u32>().ok())
                .ok_or("not yet")
        },
    )
    .map_err(|e| HarnessError::Expectation(e.to_string()))
}

fn wait_gone(r: &super::Run, pid: u32) -> Result<(), HarnessError> {
    crate::wait::wait_until(&format!("pid {pid} to be gone"), r.deadline(), || {
        if crate::procscan::is_alive(pid) {
            Err("alive")
        } else {
            Ok(())
        }
    })
    .map_err(|e| HarnessError::Expectation(e.to_string()))
}

/// A service double-forks a daemon into its own session; the need is
/// removed and the daemon goes with the service's cgroup. Then a master
/// SIGKILL leaves such a daemon behind, and its next start kills it.
pub fn forked_daemon() -> Scenario {
    Scenario {
        name: "forked-daemon",
        about: "a daemon a service double-forked goes with need remove, and after a master SIGKILL with its next start",
        cluster: with_entries,
        run: |r| {
            let cgroups = r.step("the master runs its children in cgroups", |r| {
                Ok(r.cluster.master(0).status()?.cgroup.is_some())
            })?;
            if !cgroups {
                crate::skip::skip("forked-daemon", "no usable cgroup v2 here");
                return Ok(());
            }
            let mut forker = need("testsvc", "forker0", vec![Protocol::Tcp])?;
            forker.propertyhash = serde_json::json!({ "double_fork": true })
                .as_object()
                .cloned()
                .unwrap_or_default();
            r.step("add a need whose service double-forks a daemon", |r| {
                r.cluster.need_add(&forker)
            })?;
            let rec = r.step("wait until it runs", |r| {
                Ok(r.wait_all_running(&["forker0".to_string()])?["forker0"].clone())
            })?;
            let daemon = r.step("find its daemon", |r| daemon_of(r, "forker0"))?;
            r.step("remove the need: service and daemon are gone", |r| {
                r.cluster.need_remove("forker0")?;
                wait_gone(r, rec.pid)?;
                wait_gone(r, daemon)
            })?;
            forker.instancename = InstanceName::new("forker1")
                .map_err(|e| HarnessError::Expectation(e.to_string()))?;
            r.step("add it again under another name", |r| r.cluster.need_add(&forker))?;
            let rec = r.step("wait until it runs", |r| {
                Ok(r.wait_all_running(&["forker1".to_string()])?["forker1"].clone())
            })?;
            let daemon = r.step("find its daemon", |r| daemon_of(r, "forker1"))?;
            r.step("SIGKILL the master: its daemon is left", |r| {
                r.cluster.master_mut(0).kill()?;
                wait_gone(r, rec.pid)?;
                expect(crate::procscan::is_alive(daemon), || {
                    "the daemon died with the master; nothing left to test".into()
                })
            })?;
            r.step("start the master again: it kills what was left", |r| {
                r.cluster.master_mut(0).restart()?;
                wait_gone(r, daemon)
            })?;
            Ok(())
        },
    }
}
