//! Port ranges running out.

use super::{expect, Scenario};
use crate::harness::{ClusterOptions, HarnessError};
use allex_protocol::{NeedState, Protocol};
use serde_json::json;

/// A master with two ports per protocol serves two needs; the rest wait.
pub fn port_exhaustion() -> Scenario {
    Scenario {
        name: "port-exhaustion",
        about: "a master with tiny port ranges serves what fits, reports exhaustion, and serves more when ports free up",
        cluster: |o| {
            let mut c = ClusterOptions {
                masters: 1,
                ..ClusterOptions::default()
            };
            c.lan.timings = o.timings;
            c.master.portrangesize = 2;
            c
        },
        run: |r| {
            r.step("add four needs", |r| r.add_needs("px", 4, json!({})))?;
            let running = r.step("two run, two stay open, the master says it is exhausted", |r| {
                let running = r.cluster.wait_lan("two to run and two to wait", r.deadline(), |st| {
                    let open = st.needs.iter().filter(|n| n.state == NeedState::Open).count();
                    if st.running.len() == 2 && open == 2 {
                        Ok(st.running.clone())
                    } else {
                        Err(format!("{} running", st.running.len()))
                    }
                })?;
                let st = r.cluster.master(0).status()?;
                let all_used = Protocol::ALL.iter().all(|p| st.free.get(*p) == 0);
                expect(all_used && !st.exhausted.is_empty(), || {
                    format!("free {:?}, exhausted {:?}", st.free, st.exhausted)
                })?;
                Ok(running)
            })?;
            let freed = running[0].instancename.clone();
            r.step("remove a running need; an open one takes its ports", |r| {
                r.cluster.need_remove(&freed)?;
                r.cluster.wait_lan("a waiting need to run", r.deadline(), |st| {
                    if st.running.len() == 2 && !st.running.iter().any(|x| x.instancename == freed) {
                        Ok(())
                    } else {
                        Err(format!("{:?}", st.running.iter().map(|x| &x.instancename).collect::<Vec<_>>()))
                    }
                })?;
                Ok::<(), HarnessError>(())
            })?;
            Ok(())
        },
    }
}
