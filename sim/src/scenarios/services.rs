//! What a running service sees: lookups through its master, bounded logs.

use super::{cluster_options, expect, running_map, Scenario};
use crate::harness::HarnessError;
use crate::wait::wait_until;
use allex_protocol::ServiceLocation;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// A service asks its master where another runs and gets the lan manager's answer.
pub fn lookup() -> Scenario {
    Scenario {
        name: "lookup",
        about: "a service looks another up through its master and gets its address and ports",
        cluster: cluster_options,
        run: |r| {
            r.step("add the target", |r| r.add_needs("target", 1, json!({})))?;
            let target = r.step("wait until it runs", |r| {
                r.wait_all_running(&["target0".to_string()])
            })?;
            r.step("add a client that looks the target up", |r| {
                r.add_needs("client", 1, json!({"lookup": "target0"}))
            })?;
            r.step("the client logs the target's location", |r| {
                let running = r.wait_all_running(&["client0".to_string()])?;
                let master = r
                    .cluster
                    .master_index(&running["client0"].master)
                    .ok_or_else(|| HarnessError::Expectation("unknown master".into()))?;
                let dir = r.cluster.master(master).runtime_dir().to_path_buf();
                let line = wait_until("the client's lookup line in its log", r.deadline(), || {
                    files_under(&dir)
                        .iter()
                        .filter_map(|f| std::fs::read_to_string(f).ok())
                        .find_map(|t| {
                            t.lines()
                                .find(|l| l.starts_with("lookup target0 "))
                                .map(str::to_string)
                        })
                        .ok_or("no lookup line yet")
                })?;
                let got: Option<ServiceLocation> =
                    serde_json::from_str(&line["lookup target0 ".len()..]).map_err(|e| {
                        HarnessError::Expectation(format!("bad lookup line {line:?}: {e}"))
                    })?;
                let want = &target["target0"];
                expect(
                    got.as_ref().is_some_and(|g| {
                        g.instancename == "target0"
                            && g.address == want.address
                            && g.ports == want.ports
                    }),
                    || format!("lookup answered {got:?}, the lan manager runs {want:?}"),
                )?;
                let still = running_map(&r.cluster.lan_status()?);
                expect(still.contains_key("target0"), || "target stopped".into())
            })?;
            Ok(())
        },
    }
}

/// A service that writes megabytes cannot fill the disk: its log is bounded.
pub fn log_bounded() -> Scenario {
    Scenario {
        name: "log-bounded",
        about: "a service writing 2 MB to stdout and stderr leaves logs bounded by logmaxbytes",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.masters = 1;
            c.master.logmaxbytes = Some(64 * 1024);
            // The service spams before it listens: on a loaded machine that
            // can outlast the fast test check timeout.
            c.lan.timings.check_timeout = std::time::Duration::from_secs(10);
            c
        },
        run: |r| {
            let names = r.step("add a service that spams 2 MB", |r| {
                r.add_needs("spam", 1, json!({"spam_bytes": 1_000_000}))
            })?;
            r.step("it runs, and its logs stay bounded", |r| {
                r.wait_all_running(&names)?;
                let master = r.cluster.master(0);
                let dir = master.runtime_dir().to_path_buf();
                let own = [
                    master.log_path().to_path_buf(),
                    master.config_path().to_path_buf(),
                ];
                // `ready` is printed after the spam, so once it is logged all spam went through.
                wait_until("the service's ready line in its log", r.deadline(), || {
                    let seen = files_under(&dir)
                        .iter()
                        .filter(|f| !own.contains(f))
                        .any(|f| {
                            std::fs::read_to_string(f)
                                .is_ok_and(|t| t.lines().any(|l| l == "ready"))
                        });
                    if seen {
                        Ok(())
                    } else {
                        Err("not yet")
                    }
                })?;
                let total: u64 = files_under(&dir)
                    .iter()
                    .filter(|f| !own.contains(f))
                    .filter_map(|f| std::fs::metadata(f).ok())
                    .map(|m| m.len())
                    .sum();
                expect(total <= 3 * 64 * 1024, || {
                    format!("{total} bytes of logs for logmaxbytes 65536")
                })
            })?;
            Ok(())
        },
    }
}
