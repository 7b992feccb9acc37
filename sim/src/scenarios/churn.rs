//! Needs coming and going on healthy masters.

use super::{cluster_options, expect, Scenario};
use crate::harness::HarnessError;
use serde_json::json;

/// Needs spread over the masters and all run once.
pub fn basic() -> Scenario {
    Scenario {
        name: "basic",
        about: "needs are added and each runs exactly once, ports checked",
        cluster: cluster_options,
        run: |r| {
            let n = r.opts.needs;
            let names = r.step("add needs", |r| r.add_needs("basic", n, json!({})))?;
            r.step("wait until all run", |r| r.wait_all_running(&names))?;
            Ok(())
        },
    }
}

/// Several masters race for needs added at once.
pub fn race() -> Scenario {
    Scenario {
        name: "race",
        about: "four or more masters race for the same needs; each need has one winner",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.masters = o.masters.max(4);
            c
        },
        run: |r| {
            let n = r.opts.needs.max(8);
            let names = r.step("add needs while every master watches", |r| {
                r.add_needs("race", n, json!({}))
            })?;
            let running = r.step("wait until all run", |r| r.wait_all_running(&names))?;
            r.step("every need runs once across all masters", |r| {
                let obs = r.cluster.observe()?;
                let children: usize = obs
                    .masters
                    .iter()
                    .filter_map(|m| m.status.as_ref())
                    .map(|s| s.children.len())
                    .sum();
                expect(children == running.len(), || {
                    format!("{children} children for {} needs", running.len())
                })
            })?;
            Ok(())
        },
    }
}

/// Removing a need stops its service.
pub fn need_remove() -> Scenario {
    Scenario {
        name: "need-remove",
        about: "an operator removes running needs; their services stop and free their ports",
        cluster: cluster_options,
        run: |r| {
            let n = r.opts.needs.max(2);
            let names = r.step("add needs", |r| r.add_needs("rm", n, json!({})))?;
            let running = r.step("wait until all run", |r| r.wait_all_running(&names))?;
            let victim = &names[0];
            let pid = running[victim].pid;
            r.step("remove one need", |r| r.cluster.need_remove(victim))?;
            r.step("its service stops and the others stay", |r| {
                crate::wait::wait_until("the removed service to stop", r.deadline(), || {
                    if crate::procscan::is_alive(pid) {
                        Err(format!("pid {pid} alive"))
                    } else {
                        Ok(())
                    }
                })?;
                let st = r.cluster.lan_status()?;
                expect(
                    !st.needs.iter().any(|x| &x.need.instancename == victim)
                        && st.running.len() == names.len() - 1,
                    || format!("after removal: {st:?}"),
                )
            })?;
            Ok::<(), HarnessError>(())
        },
    }
}
