//! What a master may take and how it lets go: address restrictions,
//! failed port checks, stop timeouts.

use super::{cluster_options, expect, running_map, Scenario};
use crate::harness::HarnessError;
use crate::wait::wait_until;
use allex_protocol::{Need, NeedState};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Instant;

/// A need restricted to another address is left alone.
pub fn ipaddress() -> Scenario {
    Scenario {
        name: "ipaddress",
        about:
            "a need restricted to an address no master advertises stays open; a matching one runs",
        cluster: cluster_options,
        run: |r| {
            r.step("add a need for 10.255.255.1 and one for 127.0.0.0/8", |r| {
                let mut far = Need::new("testsvc", allex_protocol::instance!("far"));
                far.ipaddress = Some("10.255.255.1".into());
                r.cluster.need_add(&far)?;
                let mut near = Need::new("testsvc", allex_protocol::instance!("near"));
                near.ipaddress = Some("127.0.0.0/8".into());
                r.cluster.need_add(&near)
            })?;
            r.step("the matching one runs while the other stays open", |r| {
                r.wait_all_running(&["near".to_string()])?;
                let st = r.cluster.lan_status()?;
                let far = st.needs.iter().find(|n| n.need.instancename == "far");
                expect(far.is_some_and(|n| n.state == NeedState::Open), || {
                    format!("far is {far:?}")
                })
            })?;
            Ok(())
        },
    }
}

/// A service that never listens is never listed as running, and is replaced.
pub fn never_listens() -> Scenario {
    Scenario {
        name: "never-listens",
        about: "a service that never opens its ports fails the port check: stopped, never listed running, tried again",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.masters = 1;
            c
        },
        run: |r| {
            r.step("add a need whose service never listens", |r| {
                r.add_needs("mute", 1, json!({"never_listen": true}))
            })?;
            r.step("two attempts are made and none is listed running", |r| {
                let mut pids = BTreeSet::new();
                let master = r.cluster.master(0);
                // The inner Err is a fault that ends the wait at once; the outer one retries.
                wait_until("a second attempt", r.deadline(), || {
                    let st = r.cluster.lan_status().map_err(|e| e.to_string())?;
                    if running_map(&st).contains_key("mute0") {
                        return Ok(Err("listed as running".to_string()));
                    }
                    let ms = master.status_direct().map_err(|e| e.to_string())?;
                    let here: Vec<_> = ms.children.iter().filter(|c| c.instancename == "mute0").collect();
                    if here.len() > 1 {
                        return Ok(Err(format!("{} copies at once", here.len())));
                    }
                    pids.extend(here.iter().map(|c| c.pid));
                    if pids.len() >= 2 {
                        Ok(Ok(()))
                    } else {
                        Err(format!("attempts so far: {pids:?}"))
                    }
                })?
                .map_err(HarnessError::Expectation)
            })?;
            r.step("removing it frees every port", |r| {
                r.cluster.need_remove("mute0")?;
                let size = r.cluster.master(0).config().portrangesize as u32;
                wait_until("all ports free", r.deadline(), || {
                    match r.cluster.master(0).status_direct() {
                        Ok(st) if st.children.is_empty() && st.free.tcp == size && st.free.http == size && st.free.ws == size => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                })?;
                Ok(())
            })?;
            Ok(())
        },
    }
}

/// A service ignoring SIGTERM is SIGKILLed after its stop timeout.
pub fn stop_timeout() -> Scenario {
    Scenario {
        name: "stop-timeout",
        about:
            "a removed service that ignores SIGTERM is killed after its stop timeout, not before",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.masters = 1;
            c.master.stop_timeout_ms = 800;
            c
        },
        run: |r| {
            let names = r.step("add a need whose service ignores SIGTERM", |r| {
                r.add_needs("stubborn", 1, json!({"ignore_sigterm": true}))
            })?;
            let pid =
                r.step("wait until it runs", |r| r.wait_all_running(&names))?["stubborn0"].pid;
            r.step("remove it: it dies, no sooner than the stop timeout", |r| {
                let t = Instant::now();
                r.cluster.need_remove("stubborn0")?;
                wait_until("the service to die", r.deadline(), || {
                    if crate::procscan::is_alive(pid) {
                        Err(pid)
                    } else {
                        Ok(())
                    }
                })?;
                let took = t.elapsed();
                expect(took.as_millis() >= 700, || {
                    format!("died after {took:?}: SIGTERM was not ignored or no grace was given")
                })
            })?;
            Ok(())
        },
    }
}
