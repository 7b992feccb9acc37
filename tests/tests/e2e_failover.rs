//! Several masters, a restarting lan manager, cut links and dead masters:
//! every need ends up running exactly once, and nothing restarts that did
//! not have to.

use allex_e2e::{
    add_needs, assert_serves, cluster, lan_log_len, ok, pids, running_map, wait_all_running,
    wait_lan_log, Sampler, Watch, DEADLINE,
};
use allex_sim::harness::{Cluster, Timings};
use allex_sim::procscan;
use allex_sim::wait::wait_until;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Live children of master `i`, by scanning /proc for its environment.
fn alive(c: &Cluster, i: usize) -> BTreeSet<u32> {
    c.master(i).children_alive().into_iter().collect()
}

/// Waits until every need in `names` runs on master `master`.
fn wait_all_on(
    c: &Cluster,
    watch: &Watch,
    names: &[String],
    master: &str,
) -> BTreeMap<String, allex_protocol::RunningService> {
    watch.wait(c, &format!("every need to run on {master}"), |st| {
        let m = running_map(st);
        let pending: Vec<_> = names
            .iter()
            .filter(|n| m.get(*n).is_none_or(|r| r.master != master))
            .collect();
        if pending.is_empty() {
            Ok(m)
        } else {
            Err(format!("not moved: {pending:?}"))
        }
    })
}

#[test]
fn two_masters_racing_for_50_needs_run_each_exactly_once() {
    // Each master could hold all 50 alone, so both claim every need.
    let c = cluster(2, false, 60, Timings::default());
    let watch = Watch::new();
    let sampler = Sampler::start(&c);
    let names = add_needs(&c, "race", 50);
    let run = wait_all_running(&c, &watch, &names);
    assert_eq!(run.len(), 50);

    // Every record's pid is a live child of the master it names, per that
    // master's own `allexmaster status`, and no master runs an extra copy.
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..2 {
        let m = c.master(i);
        let st = ok(m.status());
        let listed: BTreeSet<u32> = st.children.iter().map(|ch| ch.pid).collect();
        assert_eq!(
            alive(&c, i),
            listed,
            "{}: live children vs status",
            m.name()
        );
        for ch in &st.children {
            held.entry(ch.instancename.to_string())
                .or_default()
                .push(m.name().to_string());
        }
        for r in run.values().filter(|r| r.master == m.name()) {
            assert!(
                st.children
                    .iter()
                    .any(|ch| ch.instancename == r.instancename && ch.pid == r.pid),
                "{r:?} not among {}'s children",
                m.name()
            );
            assert!(procscan::is_alive(r.pid), "{r:?} dead");
        }
    }
    let twice: Vec<_> = held.iter().filter(|(_, ms)| ms.len() != 1).collect();
    assert!(twice.is_empty(), "held by several masters: {twice:?}");
    assert_eq!(held.len(), 50);
    sampler.finish();
}

#[test]
fn lan_manager_restart_restarts_nothing_and_loses_no_need() {
    let mut c = cluster(2, false, 10, Timings::default());
    let watch = Watch::new();
    let sampler = Sampler::start(&c);
    let names = add_needs(&c, "keep", 4);
    let before = wait_all_running(&c, &watch, &names);
    let children_before: Vec<_> = (0..2).map(|i| alive(&c, i)).collect();

    // The lan manager records what runs in an advisory file, batched every
    // 100 ms; a crash before that write is a different story (the needs
    // would be handed out after the settle period), so wait for it.
    let running_file = c.lan().dir().join(".allexlanmanager").join("running");
    wait_until("the running file to list every need", DEADLINE, || {
        let text = std::fs::read_to_string(&running_file).map_err(|e| e.to_string())?;
        match names.iter().find(|n| !text.contains(&format!("\"{n}\""))) {
            None => Ok(()),
            Some(missing) => Err(format!("{missing} missing")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // SIGKILL, then start again on the same port and directory.
    ok(c.restart_lan());

    let after = wait_all_running(&c, &watch, &names);
    assert_eq!(pids(&after), pids(&before), "a service was restarted");
    for (name, r) in &after {
        assert_eq!(r.master, before[name].master, "{name} moved");
    }
    let st = ok(c.lan_status());
    let needs: BTreeSet<_> = st
        .needs
        .iter()
        .map(|n| n.need.instancename.to_string())
        .collect();
    assert_eq!(
        needs,
        names.iter().cloned().collect(),
        "needs after restart"
    );
    let children_after: Vec<_> = (0..2).map(|i| alive(&c, i)).collect();
    assert_eq!(children_after, children_before, "children changed");
    for r in after.values() {
        assert_serves(r);
    }
    sampler.finish();
}

#[test]
fn link_cut_within_the_grace_restarts_nothing() {
    let t = Timings {
        // Long enough that cut, detection and reconnect fit on a loaded machine.
        grace: Duration::from_secs(20),
        ..Timings::default()
    };
    let c = cluster(1, true, 10, t);
    let watch = Watch::new();
    let sampler = Sampler::start(&c);
    let names = add_needs(&c, "blip", 3);
    let before = wait_all_running(&c, &watch, &names);
    let children_before = alive(&c, 0);
    let proxy = c.proxy(0).expect("cluster with proxies");

    proxy.cut();
    // Both sides notice; the lan manager keeps the services listed meanwhile.
    wait_until("the master to see the cut", DEADLINE, || {
        match c.master(0).status_direct() {
            Ok(st) if !st.connected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let name = c.master(0).name().to_string();
    watch.wait(&c, "the lan manager to see the cut", |st| {
        match st.masters.iter().find(|m| m.name == name) {
            Some(m) if !m.connected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let during = running_map(&ok(c.lan_status()));
    assert_eq!(
        pids(&during),
        pids(&before),
        "services dropped within the grace"
    );

    proxy.restore();
    ok(c.wait_master_connected(0, DEADLINE));
    let after = wait_all_running(&c, &watch, &names);
    assert_eq!(pids(&after), pids(&before), "a service was restarted");
    assert_eq!(alive(&c, 0), children_before, "children changed");
    for r in after.values() {
        assert_serves(r);
    }
    sampler.finish();
}

#[test]
fn past_the_grace_a_cut_off_master_keeps_the_needs_whose_services_still_answer() {
    // On loopback a cut link leaves the services reachable: the lan manager
    // keeps checking them, so they stay where they serve instead of running
    // twice. (Services that do not answer move: the namespace LAN tests.)
    let mut c = cluster(1, true, 10, Timings::default());
    let watch = Watch::new();
    let names = add_needs(&c, "move", 3);
    let before = wait_all_running(&c, &watch, &names);
    let first = c.master(0).name().to_string();
    let old_pids = alive(&c, 0);
    let second_i = ok(c.add_master(|_| {}));
    let sampler = Sampler::start(&c);
    let from = lan_log_len(&c);
    c.proxy(0).expect("proxy").cut();
    wait_lan_log(&c, from, "grace over");
    let during = running_map(&ok(c.lan_status()));
    assert_eq!(
        pids(&during),
        pids(&before),
        "needs moved while their services answer"
    );
    assert!(during.values().all(|r| r.master == first));
    assert!(
        alive(&c, second_i).is_empty(),
        "the second master runs copies"
    );

    c.proxy(0).expect("proxy").restore();
    ok(c.wait_master_connected(0, DEADLINE));
    let after = wait_all_running(&c, &watch, &names);
    assert_eq!(pids(&after), pids(&before), "services restarted");
    assert_eq!(alive(&c, 0), old_pids, "children changed");
    for r in after.values() {
        assert_serves(r);
    }
    sampler.finish();
}

#[test]
fn sigkilled_master_leaves_no_child_and_its_needs_move() {
    let mut c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    let sampler = Sampler::start(&c);
    let names = add_needs(&c, "orphan", 3);
    let before = wait_all_running(&c, &watch, &names);
    let first = c.master(0).name().to_string();
    let old_pids = alive(&c, 0);
    assert_eq!(old_pids, before.values().map(|r| r.pid).collect());
    let second_i = ok(c.add_master(|_| {}));
    let second = c.master(second_i).name().to_string();

    ok(c.master_mut(0).kill());

    // No child outlives its master: nothing with its socket or runtime
    // directory in its environment is left.
    wait_until(
        "the dead master's children to be gone",
        DEADLINE,
        || match alive(&c, 0) {
            a if a.is_empty() => Ok(()),
            a => Err(a),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for pid in &old_pids {
        assert!(!procscan::is_alive(*pid), "pid {pid} outlived its master");
    }

    // After the grace the surviving master picks its needs up.
    let moved = wait_all_on(&c, &watch, &names, &second);
    for r in moved.values() {
        assert_ne!(r.master, first);
        assert_serves(r);
    }
    sampler.finish();
}
