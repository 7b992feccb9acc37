//! Services the master keeps an eye and a hand on: sockets it holds across
//! a service's deaths (`sockets: inherit`) and health checks that replace a
//! service that hangs.

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
