//! Children and masters dying.

use super::{cluster_options, expect, running_map, Scenario};
use crate::harness::HarnessError;
use crate::ops::max_failures;
use crate::wait::wait_until;
use allex_protocol::NeedState;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::time::Duration;

/// A child killed by a signal comes back under a new pid.
pub fn child_crash() -> Scenario {
    Scenario {
        name: "child-crash",
        about: "a child killed with SIGKILL is reported at once and its need runs again",
        cluster: cluster_options,
        run: |r| {
            let names = r.step("add needs", |r| r.add_needs("crash", 2, json!({})))?;
            let before = r.step("wait until all run", |r| r.wait_all_running(&names))?;
            let victim = before[&names[0]].clone();
            r.step("SIGKILL one child", |_| {
                kill(Pid::from_raw(victim.pid as i32), Signal::SIGKILL)
                    .map_err(|e| HarnessError::Expectation(format!("kill {}: {e}", victim.pid)))
            })?;
            r.step(
                "its need runs again under a new pid; the other is untouched",
                |r| {
                    let after = r.cluster.wait_lan("a new instance", r.deadline(), |st| {
                        let m = running_map(st);
                        match m.get(&names[0]) {
                            Some(x) if x.pid != victim.pid && x.generation > victim.generation => {
                                Ok(m)
                            }
                            other => Err(format!("{other:?}")),
                        }
                    })?;
                    expect(after[&names[1]].pid == before[&names[1]].pid, || {
                        "the other service was restarted".into()
                    })
                },
            )?;
            Ok(())
        },
    }
}

/// A service that keeps crashing is retried with a growing delay.
pub fn crash_loop() -> Scenario {
    Scenario {
        name: "crash-loop",
        about: "a crash-looping need backs off instead of restarting in a hot loop",
        cluster: cluster_options,
        run: |r| {
            let added = std::time::Instant::now();
            r.step("add a need whose service dies after 100 ms", |r| {
                r.add_needs("loop", 1, json!({"crash_after_ms": 100, "exit_code": 3}))
            })?;
            let seen = r.step("it fails repeatedly and backs off", |r| {
                let mut backoff_seen = false;
                let failures = r.cluster.wait_lan("three failures", r.deadline(), |st| {
                    let n = st
                        .needs
                        .iter()
                        .find(|n| n.need.instancename == "loop0")
                        .ok_or("need missing")?;
                    backoff_seen |= n.state == NeedState::Backoff;
                    if n.failures >= 3 && backoff_seen {
                        Ok(n.failures)
                    } else {
                        Err(format!("{:?} failures {}", n.state, n.failures))
                    }
                })?;
                Ok(failures)
            })?;
            r.step(
                "over 3 s it fails no more often than its backoff allows, far below a hot loop",
                |r| {
                    let life = Duration::from_millis(100);
                    let window = Duration::from_secs(3);
                    let timings = r.opts.timings;
                    // Every observation is checked; the wait only ends the window.
                    let spun = r.cluster.wait_lan("a 3 s window", r.deadline(), |st| {
                        let failures = st
                            .needs
                            .iter()
                            .find(|n| n.need.instancename == "loop0")
                            .map_or(0, |n| u64::from(n.failures));
                        let elapsed = added.elapsed();
                        let allowed = max_failures(elapsed, life, &timings) + 2;
                        if failures > allowed {
                            Ok(Some(format!(
                                "{failures} failures in {} ms, backoff allows {allowed}",
                                elapsed.as_millis()
                            )))
                        } else if elapsed >= window {
                            Ok(None)
                        } else {
                            Err(format!("{failures} failures so far"))
                        }
                    })?;
                    if let Some(msg) = spun {
                        return Err(HarnessError::Expectation(msg));
                    }
                    let hot = window.as_millis() / life.as_millis();
                    let allowed = max_failures(window, life, &timings) + 2;
                    expect(u128::from(allowed) * 2 <= hot, || {
                        format!("backoff bound {allowed} is not far below a hot loop's {hot}")
                    })
                },
            )?;
            r.step("removing it ends the loop", |r| {
                r.cluster.need_remove("loop0")?;
                let st = r.cluster.lan_status()?;
                expect(st.needs.is_empty(), || format!("{st:?}"))?;
                wait_until("no child left", r.deadline(), || {
                    let n: usize = r
                        .cluster
                        .masters()
                        .iter()
                        .map(|m| m.children_alive().len())
                        .sum();
                    if n == 0 {
                        Ok(())
                    } else {
                        Err(n)
                    }
                })?;
                tracing::info!(failures = seen, "crash loop ended");
                Ok(())
            })?;
            Ok(())
        },
    }
}

/// A master killed with SIGKILL: no child survives, others take its needs after the grace.
pub fn master_crash() -> Scenario {
    Scenario {
        name: "master-crash",
        about: "a master is SIGKILLed: its children die with it and another master takes over",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.masters = o.masters.max(2);
            c
        },
        run: |r| {
            let n = r.opts.needs.max(2);
            let names = r.step("add needs", |r| r.add_needs("mc", n, json!({})))?;
            let before = r.step("wait until all run", |r| r.wait_all_running(&names))?;
            let victim_name = before[&names[0]].master.clone();
            let victim = r.cluster.master_index(&victim_name).ok_or_else(|| {
                HarnessError::Expectation(format!("unknown master {victim_name}"))
            })?;
            r.step("SIGKILL the master of the first need", |r| {
                r.cluster.master_mut(victim).kill()?;
                wait_until("its children to die", r.deadline(), || {
                    match r.cluster.master(victim).children_alive() {
                        v if v.is_empty() => Ok(()),
                        v => Err(v),
                    }
                })?;
                Ok(())
            })?;
            r.step("every need runs on the surviving masters", |r| {
                r.cluster.wait_lan("needs to move", r.deadline(), |st| {
                    let m = running_map(st);
                    let bad: Vec<_> = names
                        .iter()
                        .filter(|x| m.get(*x).is_none_or(|s| s.master == victim_name))
                        .collect();
                    if bad.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("not moved: {bad:?}"))
                    }
                })
            })?;
            Ok(())
        },
    }
}
