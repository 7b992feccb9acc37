//! One lan manager and one master over real processes: a need becomes a
//! reachable service, a killed child comes back, a service that never
//! listens is refused, and `allexmaster status` tells the truth.

use allex_e2e::{
    assert_serves, cluster, need, ok, ppid, running_map, wait_all_running, wait_dead, Watch,
    DEADLINE,
};
use allex_protocol::{ChildState, NeedState, Protocol};
use allex_sim::harness::Timings;
use allex_sim::procscan;
use allex_sim::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn need_runs_with_every_port_answering_as_the_listed_pid() {
    let c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    ok(c.need_add(&need("Web", json!({}))));
    let run = wait_all_running(&c, &watch, &["Web".to_string()]);
    let rec = &run["Web"];

    // All three protocols are declared by default, each on its own port
    // from the master's ranges.
    for p in Protocol::ALL {
        let port = rec.ports.get(p).unwrap_or_else(|| panic!("no {p} port"));
        assert!(
            c.master(0).port_range(p).contains(&u32::from(port)),
            "{p} port {port} outside the master's range"
        );
    }
    assert_serves(rec);

    // The pid is a real child of the master the record names.
    assert_eq!(rec.master, c.master(0).name());
    assert_eq!(ppid(rec.pid), c.master(0).pid(), "pid {} parent", rec.pid);
    let st = ok(c.master(0).status());
    let child = st
        .children
        .iter()
        .find(|ch| ch.instancename == "Web")
        .unwrap_or_else(|| panic!("master does not list Web: {st:?}"));
    assert_eq!((child.pid, child.ports), (rec.pid, rec.ports));
}

#[test]
fn sigkilled_child_runs_again_under_a_new_pid() {
    let c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    ok(c.need_add(&need("Phoenix", json!({}))));
    let old = wait_all_running(&c, &watch, &["Phoenix".to_string()])["Phoenix"].clone();
    assert_serves(&old);

    kill(Pid::from_raw(old.pid as i32), Signal::SIGKILL).unwrap();

    let new = watch.wait(
        &c,
        "Phoenix to run under a new pid",
        |st| match running_map(st).remove("Phoenix") {
            Some(r) if r.pid != old.pid => Ok(r),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        new.generation > old.generation,
        "{new:?} after {old:?}: a new instance must carry a newer generation"
    );
    // The master reaped the old child: it is not even a zombie.
    assert!(!procscan::is_alive(old.pid), "old pid {} alive", old.pid);
    assert_serves(&new);
}

#[test]
fn service_that_never_listens_is_rejected_and_stopped_then_retried() {
    let t = Timings {
        check_timeout: std::time::Duration::from_millis(800),
        ..Timings::default()
    };
    let c = cluster(1, false, 10, t);
    let watch = Watch::new();
    ok(c.need_add(&need("Mute", json!({"never_listen": true}))));

    // The master spawns it; note the pid.
    let first = wait_until("the master to spawn Mute", DEADLINE, || {
        let st = c.master(0).status_direct().map_err(|e| e.to_string())?;
        st.children
            .iter()
            .find(|ch| ch.instancename == "Mute")
            .map(|ch| ch.pid)
            .ok_or_else(|| format!("{:?}", st.children))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(procscan::is_alive(first));

    // The port check fails, the master is told to stop it, and it is gone.
    wait_dead(first, "the never-listening child");

    // The need is tried again, and a crash-looping need backs off: wait
    // until it has failed repeatedly and been seen waiting out its delay.
    let mut backoff_seen = false;
    watch
        .wait(&c, "Mute to fail twice and back off", |st| {
            if st.running.iter().any(|r| r.instancename == "Mute") {
                return Ok(Err("Mute listed as running".to_string()));
            }
            let n = st
                .needs
                .iter()
                .find(|n| n.need.instancename == "Mute")
                .ok_or("need lost")?;
            backoff_seen |= n.state == NeedState::Backoff;
            if n.failures >= 2 && backoff_seen {
                Ok(Ok(()))
            } else {
                Err(format!("{:?}, {} failures", n.state, n.failures))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));

    // Removing the need ends the retries and leaves no child behind.
    ok(c.need_remove("Mute"));
    wait_until("no child of the master left", DEADLINE, || {
        match c.master(0).children_alive() {
            v if v.is_empty() => Ok(()),
            v => Err(v),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn master_status_json_lists_exactly_what_runs() {
    let c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    // Ports some unrelated process holds in the range are not free; count
    // from what the master offers before it runs anything.
    let idle = ok(c.master(0).status());
    assert!(idle.children.is_empty(), "{idle:?}");
    ok(c.need_add(&need("Alpha", json!({}))));
    ok(c.need_add(&need("Beta", json!({}))));
    let mut tcp_only = need("Gamma", json!({}));
    tcp_only.protocols = Some(vec![Protocol::Tcp]);
    ok(c.need_add(&tcp_only));
    let names: Vec<String> = ["Alpha", "Beta", "Gamma"].map(String::from).into();
    let run = wait_all_running(&c, &watch, &names);
    assert!(run["Gamma"].ports.http.is_none() && run["Gamma"].ports.ws.is_none());

    // What the master says (through `allexmaster status --json`) matches the
    // lan manager's records and the processes really alive, once every
    // child has been told it is running.
    let st = wait_until("every child in state running", DEADLINE, || {
        let st = c.master(0).status().map_err(|e| e.to_string())?;
        if st.children.len() == 3 && st.children.iter().all(|ch| ch.state == ChildState::Running) {
            Ok(st)
        } else {
            Err(format!("{:?}", st.children))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let listed: BTreeMap<_, _> = st
        .children
        .iter()
        .map(|ch| (ch.instancename.clone(), (ch.pid, ch.ports)))
        .collect();
    let recorded: BTreeMap<_, _> = run
        .values()
        .map(|r| (r.instancename.clone(), (r.pid, r.ports)))
        .collect();
    assert_eq!(listed, recorded);
    let alive: BTreeSet<u32> = c.master(0).children_alive().into_iter().collect();
    let listed_pids: BTreeSet<u32> = st.children.iter().map(|ch| ch.pid).collect();
    assert_eq!(alive, listed_pids, "live children vs status");
    assert!(st.connected);
    // Three services take a tcp port, two take an http and a ws port.
    assert_eq!(
        (st.free.tcp, st.free.http, st.free.ws),
        (idle.free.tcp - 3, idle.free.http - 2, idle.free.ws - 2)
    );
    // The lan manager's view of the master's free ports catches up (the
    // master reports changed counts, coalesced).
    let name = c.master(0).name().to_string();
    c.wait_lan(
        "the lan manager to know the master's free ports",
        DEADLINE,
        |lan| match lan.masters.iter().find(|m| m.name == name) {
            Some(m) if m.capacity.free == st.free => Ok(()),
            other => Err(format!("{other:?} vs {:?}", st.free)),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The human table names every child and its pid.
    let out = ok(c.master(0).cli(&[
        "status",
        "--socket",
        &c.master(0).socket().display().to_string(),
    ]));
    assert!(out.status.success(), "{out:?}");
    for ch in &st.children {
        assert!(
            out.stdout.contains(ch.instancename.as_str())
                && out.stdout.contains(&ch.pid.to_string()),
            "{} / {} missing from:\n{}",
            ch.instancename,
            ch.pid,
            out.stdout
        );
    }

    // Removing a need stops its child, and status stops listing it.
    let beta = run["Beta"].pid;
    ok(c.need_remove("Beta"));
    wait_dead(beta, "Beta's child");
    let st = wait_until("status to drop Beta", DEADLINE, || {
        let st = c.master(0).status().map_err(|e| e.to_string())?;
        if st.children.iter().any(|ch| ch.instancename == "Beta") {
            Err(format!("{:?}", st.children))
        } else {
            Ok(st)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let left: BTreeSet<_> = st.children.iter().map(|ch| ch.pid).collect();
    assert_eq!(left, [run["Alpha"].pid, run["Gamma"].pid].into());
}
