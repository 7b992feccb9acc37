//! The link between masters and the lan manager failing.

use super::{cluster_options, expect, running_map, Scenario};
use crate::harness::HarnessError;
use crate::wait::wait_until;
use serde_json::json;
use std::collections::BTreeMap;

fn pids(run: &BTreeMap<String, allex_protocol::RunningService>) -> BTreeMap<String, u32> {
    run.iter().map(|(k, v)| (k.clone(), v.pid)).collect()
}

/// A clean lan manager restart restarts no service.
pub fn lan_restart() -> Scenario {
    Scenario {
        name: "lan-restart",
        about: "the lan manager restarts cleanly (SIGTERM); masters report back and no service restarts",
        cluster: cluster_options,
        run: |r| lan_comes_back(r, true),
    }
}

/// A lan manager crash restarts no service either, once it has recorded what runs.
pub fn lan_crash() -> Scenario {
    Scenario {
        name: "lan-crash",
        about: "the lan manager is SIGKILLed after recording what runs; after restart no service restarts",
        cluster: cluster_options,
        run: |r| lan_comes_back(r, false),
    }
}

fn lan_comes_back(r: &mut super::Run, graceful: bool) -> Result<(), HarnessError> {
    let n = r.opts.needs;
    let names = r.step("add needs", |r| r.add_needs("lr", n, json!({})))?;
    let before = r.step("wait until all run", |r| r.wait_all_running(&names))?;
    if !graceful {
        // The lan manager records what runs shortly after the fact (its
        // advisory `running` file); a crash inside that window is not
        // what this scenario is about, so wait until the record is written.
        r.step("wait until the lan manager has recorded what runs", |r| {
            let path = r
                .cluster
                .lan()
                .dir()
                .join(".allexlanmanager")
                .join("running");
            wait_until("the running file to list every need", r.deadline(), || {
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                match names.iter().find(|n| !text.contains(&format!("\"{n}\""))) {
                    None => Ok(()),
                    Some(missing) => Err(format!("{missing} missing")),
                }
            })?;
            Ok(())
        })?;
    }
    let how = if graceful {
        "restart the lan manager with SIGTERM"
    } else {
        "kill the lan manager with SIGKILL and start it again"
    };
    r.step(how, |r| r.cluster.restart_lan_with(graceful))?;
    r.step("the same pids run again once masters report back", |r| {
        let after = r.wait_all_running(&names)?;
        expect(pids(&after) == pids(&before), || {
            format!("before {:?} after {:?}", pids(&before), pids(&after))
        })
    })?;
    Ok(())
}

/// A short cut, within the grace: nothing moves, nothing restarts.
pub fn link_blip() -> Scenario {
    Scenario {
        name: "link-blip",
        about: "a master's link is cut for less than the grace; its services stay put",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.proxies = true;
            c.masters = 1;
            c
        },
        run: |r| {
            let n = r.opts.needs;
            let names = r.step("add needs", |r| r.add_needs("blip", n, json!({})))?;
            let before = r.step("wait until all run", |r| r.wait_all_running(&names))?;
            r.step("cut the link until both sides notice", |r| {
                let proxy = r
                    .cluster
                    .proxy(0)
                    .ok_or_else(|| HarnessError::Expectation("no proxy".into()))?;
                proxy.cut();
                wait_until("the master to see the cut", r.deadline(), || {
                    match r.cluster.master(0).status_direct() {
                        Ok(st) if !st.connected => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                })?;
                Ok(())
            })?;
            r.step(
                "restore it; the master reconnects and the same pids run",
                |r| {
                    if let Some(p) = r.cluster.proxy(0) {
                        p.restore();
                    }
                    r.cluster.wait_master_connected(0, r.deadline())?;
                    let after = r.wait_all_running(&names)?;
                    expect(pids(&after) == pids(&before), || {
                        format!("before {:?} after {:?}", pids(&before), pids(&after))
                    })
                },
            )?;
            Ok(())
        },
    }
}

/// A cut past the grace: the services still answer, so nothing moves.
pub fn link_cut_takeover() -> Scenario {
    Scenario {
        name: "link-cut",
        about: "a master's link is cut past the grace; its services still answer, so its needs stay where they serve, none runs twice, and nothing restarts when it returns",
        cluster: takeover_cluster,
        run: |r| takeover(r, false),
    }
}

/// A silent partition: only heartbeats can tell; then as for a cut.
pub fn link_freeze_takeover() -> Scenario {
    Scenario {
        name: "link-freeze",
        about: "a master's link goes silent without closing past the grace; heartbeats notice, its answering services stay put and none runs twice",
        cluster: takeover_cluster,
        run: |r| takeover(r, true),
    }
}

fn takeover_cluster(o: &super::ScenarioOptions) -> crate::harness::ClusterOptions {
    let mut c = cluster_options(o);
    c.proxies = true;
    c.masters = 1;
    c
}

fn takeover(r: &mut super::Run, silent: bool) -> Result<(), HarnessError> {
    let n = r.opts.needs;
    let names = r.step("add needs on the only master", |r| {
        r.add_needs("cut", n, json!({}))
    })?;
    let before = r.step("wait until all run", |r| r.wait_all_running(&names))?;
    r.step("start a second master", |r| {
        r.cluster.add_master(|_| {}).map(drop)
    })?;
    let old = r.cluster.master(0).name().to_string();
    // Watch the processes and the running list through the whole cut and back.
    let sampler = r.cluster.sampler();
    let log_from = std::fs::read_to_string(r.cluster.lan().log_path())
        .map(|t| t.len())
        .unwrap_or(0);
    let what = if silent {
        "freeze the first master's link until the grace is over"
    } else {
        "cut the first master off until the grace is over"
    };
    r.step(what, |r| {
        if let Some(p) = r.cluster.proxy(0) {
            if silent {
                p.freeze();
            } else {
                p.cut();
            }
        }
        let log = r.cluster.lan().log_path().to_path_buf();
        wait_until("the lan manager to end the grace", r.deadline(), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text
                .get(log_from..)
                .is_some_and(|t| t.contains("grace over"))
            {
                Ok(())
            } else {
                Err("no grace over in its log yet")
            }
        })?;
        Ok(())
    })?;
    r.step(
        "past the grace the needs stay where they still answer; the second master runs none",
        |r| {
            let st = r.cluster.lan_status()?;
            let now = running_map(&st);
            expect(pids(&now) == pids(&before), || {
                format!(
                    "the running list changed: {:?} -> {:?}",
                    pids(&before),
                    pids(&now)
                )
            })?;
            let second = r.cluster.master(1).children_alive();
            expect(second.is_empty(), || {
                format!("the second master runs copies: {second:?}")
            })?;
            expect(now.values().all(|s| s.master == old), || {
                format!("a need moved: {now:?}")
            })
        },
    )?;
    r.step("restore the link; nothing restarts", |r| {
        if let Some(p) = r.cluster.proxy(0) {
            p.restore();
        }
        r.cluster.wait_master_connected(0, r.deadline())?;
        let after = r.wait_all_running(&names)?;
        expect(pids(&after) == pids(&before), || {
            format!(
                "services restarted: {:?} -> {:?}",
                pids(&before),
                pids(&after)
            )
        })
    })?;
    r.step(
        "no sample showed a need with two live processes or a record without one",
        |_| {
            let log = sampler.finish();
            expect(log.samples > 0 && log.clean(), || {
                format!(
                    "{} samples ({} failed), duplicates: {:?}, phantoms: {:?}",
                    log.samples, log.failures, log.duplicates, log.phantoms
                )
            })
        },
    )?;
    Ok(())
}

/// Three lan managers on etcd lose their leader: a follower leads within
/// the lease and the masters follow it without a restart.
pub fn lan_failover() -> Scenario {
    Scenario {
        name: "lan-failover",
        about: "three lan managers on etcd; the leader is SIGKILLed, a follower leads within the lease, masters follow it and no service restarts",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.lan_managers = 3;
            // The settle period spans the lease and the masters' reconnect.
            c.lan.timings.settle = std::time::Duration::from_secs(20);
            c.lan.timings.grace = std::time::Duration::from_secs(20);
            c
        },
        run: |r| {
            let n = r.opts.needs;
            let names = r.step("add needs through the leader", |r| {
                r.add_needs("fo", n, json!({}))
            })?;
            let before = r.step("wait until all run", |r| r.wait_all_running(&names))?;
            r.step("a follower refuses, naming the leader", |r| {
                let leader = r.cluster.lan().addr().to_string();
                let out = r.cluster.standbys()[0].cli(&["status"])?;
                expect(
                    !out.status.success()
                        && out
                            .stderr
                            .contains(&format!("follows the leader at {leader}")),
                    || format!("a follower answered: {out:?}"),
                )
            })?;
            let took = r.step("SIGKILL the leader: a follower leads", |r| {
                r.cluster.kill_leader()
            })?;
            tracing::info!(ms = took.as_millis() as u64, "a follower leads");
            r.step("the masters follow it; the same pids run", |r| {
                for i in 0..r.cluster.masters().len() {
                    r.cluster.wait_master_connected(i, r.deadline())?;
                }
                let after = r.wait_all_running(&names)?;
                expect(pids(&after) == pids(&before), || {
                    format!("before {:?} after {:?}", pids(&before), pids(&after))
                })
            })?;
            let more = r.step("a need added through the new leader runs", |r| {
                r.add_needs("fonew", 1, json!({}))
            })?;
            r.step("wait until it runs", |r| r.wait_all_running(&more).map(drop))?;
            Ok(())
        },
    }
}
