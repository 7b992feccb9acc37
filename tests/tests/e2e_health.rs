//! Health checks over the real binaries: a service that stops answering
//! (SIGSTOPped, its port still open) is stopped by its master after its
//! failures in a row, reported down as `unhealthy`, and runs again.

use allex_e2e::{ok, wait_listed, DEADLINE};
use allex_sim::harness::{LanManager, LanOptions, Master, MasterOptions};
use allex_sim::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

#[test]
fn a_hung_service_is_stopped_as_unhealthy_and_replaced() {
    let lm = ok(LanManager::start(LanOptions::default()));
    let (interval, timeout, failures, stop) = (200u64, 200u64, 2u64, 500u64);
    let m = ok(Master::start_edited(
        &MasterOptions {
            stop_timeout_ms: stop,
            ..MasterOptions::new(lm.addr())
        },
        |cfg| {
            cfg["services"]["testsvc"]["check"] = json!({
                "type": "http", "path": "/", "intervalms": interval,
                "timeoutms": timeout, "failures": failures
            })
        },
    ));
    let name = allex_protocol::InstanceName::new("Sick").unwrap();
    ok(lm.need_add(&allex_protocol::Need::new("testsvc", name)));
    let first = wait_listed(&lm, "Sick", None);
    let passing = wait_until("the check passes", DEADLINE, || {
        let st = m.status().map_err(|e| e.to_string())?;
        let h = st
            .children
            .iter()
            .find(|c| c.instancename == "Sick")
            .and_then(|c| c.health.clone());
        match h {
            Some(h) if h.passing => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    assert_eq!((passing.failures, passing.last.as_str()), (0, "ok"));
    // The lan manager shows what the master reported.
    wait_until("the lan manager shows it passing", DEADLINE, || {
        let st = lm.status().map_err(|e| e.to_string())?;
        match st
            .running
            .iter()
            .find(|r| r.instancename == "Sick")
            .and_then(|r| r.health.clone())
        {
            Some(h) if h.passing => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();

    // Hung with its port open: the kernel still accepts, nothing answers.
    kill(Pid::from_raw(first.pid as i32), Signal::SIGSTOP).unwrap();
    // Within its interval times its threshold, the probes' timeouts and
    // its stop timeout (slack for a loaded machine on top).
    let bound = std::time::Duration::from_millis(failures * (interval + timeout) + stop + 5000);
    let second = wait_until("Sick is replaced", bound, || {
        let st = lm.status().map_err(|e| e.to_string())?;
        st.running
            .iter()
            .find(|r| r.instancename == "Sick" && r.pid != first.pid)
            .cloned()
            .ok_or(format!("{st:?}"))
    })
    .unwrap();
    assert_ne!(second.pid, first.pid);
    let events = ok(lm.cli(&["events", "--json"])).stdout;
    let unhealthy = events.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["type"] == "down" && v["instancename"] == "Sick" && v["exit"]["reason"] == "unhealthy"
    });
    assert!(unhealthy, "{events}");
    let failing = events.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["type"] == "health" && v["instancename"] == "Sick" && v["passing"] == false
    });
    assert!(failing, "{events}");
    let metrics = ok(lm.http()).get("/metrics").unwrap().body;
    assert!(
        metrics.contains("allex_lan_deaths_total{cause=\"unhealthy\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("allex_lan_health_failing_total 0"),
        "{metrics}"
    );
    assert!(
        m.log().contains("unhealthy: stopping the child"),
        "{}",
        m.log()
    );
    // The hung process is gone (SIGKILL after the stop timeout).
    wait_until("the hung process is gone", DEADLINE, || {
        match kill(Pid::from_raw(first.pid as i32), None) {
            Err(_) => Ok(()),
            Ok(()) => Err("still there"),
        }
    })
    .unwrap();
}
