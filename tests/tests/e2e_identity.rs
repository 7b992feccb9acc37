//! One at a time, for real: a master's identity, no phantom record, and the
//! evidence of the ports while a master is away (issue "One at a time").
//! Real lan manager, real masters, real `allex-testsvc` children.

use allex_e2e::{
    add_needs, cluster, lan_log_len, ok, pids, running_map, wait_all_running, wait_lan_log,
    Sampler, Watch, DEADLINE,
};
use allex_protocol::ErrorCode;
use allex_sim::harness::Timings;
use allex_sim::virtual_master::{impostor_hello_blocking, ImpostorOutcome};
use allex_sim::wait::wait_until;
use nix::sys::signal::Signal;
use std::time::Duration;

fn lan_log(c: &allex_sim::harness::Cluster) -> String {
    std::fs::read_to_string(c.lan().log_path()).unwrap_or_default()
}

#[test]
fn an_impostor_saying_a_connected_masters_name_changes_nothing() {
    let c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    let sampler = Sampler::start(&c);
    let names = add_needs(&c, "imp", 3);
    let before = wait_all_running(&c, &watch, &names);
    let name = c.master(0).name().to_string();

    // No token is set (the default): only the secret tells masters apart.
    match impostor_hello_blocking(c.lan().addr(), &name) {
        Ok(ImpostorOutcome::Refused(ErrorCode::IdentityMismatch, message)) => {
            assert!(message.contains("master forget"), "{message}");
        }
        other => panic!("the impostor was not refused for its identity: {other:?}"),
    }
    let after = running_map(&ok(c.lan_status()));
    assert_eq!(pids(&after), pids(&before), "the running list changed");
    let st = ok(c.master(0).status());
    assert!(st.connected, "the real master lost its link");
    assert_eq!(st.children.len(), 3);
    // Its link never dropped: one connection in the lan manager's log.
    let log = lan_log(&c);
    assert_eq!(log.matches("master connected").count(), 1, "{log}");
    assert!(!log.contains("master disconnected"), "{log}");
    sampler.finish();
}

#[test]
fn a_second_master_under_a_connected_name_is_refused_and_the_first_keeps_its_services() {
    let mut c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    let sampler = Sampler::start(&c);
    let names = add_needs(&c, "dup", 4);
    let before = wait_all_running(&c, &watch, &names);
    let name = c.master(0).name().to_string();

    // A cloned config: same name, a secret of its own.
    let clone = ok(c.add_master_unwaited(|o| o.name = Some(name.clone())));
    let refused = |c: &allex_sim::harness::Cluster, code: &str| {
        wait_until(
            &format!("the clone to show {code} in its status"),
            DEADLINE,
            || match c.master(clone).status() {
                Ok(st)
                    if !st.connected
                        && st.refused.as_deref().is_some_and(|r| r.starts_with(code)) =>
                {
                    Ok(st)
                }
                other => Err(format!("{other:?}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    refused(&c, "identity_mismatch");

    // A cloned machine: the secret file too. The first one still answers.
    let secret = c.master(0).runtime_dir().join("allexmaster.secret");
    let copy = c.master(clone).runtime_dir().join("allexmaster.secret");
    std::fs::copy(&secret, &copy).unwrap();
    ok(c.master_mut(clone).restart());
    let st = refused(&c, "name_in_use");
    assert!(
        st.refused
            .as_deref()
            .is_some_and(|r| r.contains("127.0.0.1:")),
        "the refusal does not say where the first one connects from: {st:?}"
    );
    let log = std::fs::read_to_string(c.master(clone).log_path()).unwrap_or_default();
    assert!(log.contains("refused the hello"), "{log}");

    // The first master's services and link are untouched, the clone runs nothing.
    let after = running_map(&ok(c.lan_status()));
    assert_eq!(pids(&after), pids(&before), "services restarted");
    assert!(after.values().all(|r| r.master == name));
    assert!(c.master(clone).children_alive().is_empty());
    let lan = lan_log(&c);
    assert_eq!(
        lan.matches("master connected").count(),
        1,
        "the first link flapped: {lan}"
    );
    sampler.finish();
}

#[test]
fn a_sigkilled_masters_services_leave_the_running_list_long_before_the_grace() {
    let t = Timings {
        grace: Duration::from_secs(300),
        ..Timings::default()
    };
    let mut c = cluster(1, false, 10, t);
    let watch = Watch::new();
    let names = add_needs(&c, "gone", 3);
    wait_all_running(&c, &watch, &names);
    ok(c.master_mut(0).kill());
    // The children die with their master; their ports refuse, which is
    // evidence enough: no record waits for the 300 s grace.
    let st = watch.wait(&c, "the dead services to leave the running list", |st| {
        if st.running.is_empty() {
            Ok(st.clone())
        } else {
            Err(format!("{} still listed", st.running.len()))
        }
    });
    assert!(st.masters.iter().all(|m| !m.connected));
    assert!(lan_log(&c).contains("every port of a disconnected master's service refuses"));
}

#[test]
fn a_master_frozen_past_the_grace_keeps_needs_that_answer_and_none_runs_twice() {
    let mut c = cluster(1, false, 10, Timings::default());
    let watch = Watch::new();
    let names = add_needs(&c, "frz", 4);
    let before = wait_all_running(&c, &watch, &names);
    ok(c.add_master(|_| {}));
    let sampler = Sampler::start(&c);
    let from = lan_log_len(&c);
    ok(c.master(0).signal(Signal::SIGSTOP));
    wait_lan_log(&c, from, "grace over");
    let during = running_map(&ok(c.lan_status()));
    assert_eq!(
        pids(&during),
        pids(&before),
        "needs moved off a frozen master whose services answer"
    );
    assert!(
        c.master(1).children_alive().is_empty(),
        "the second master started copies"
    );

    ok(c.master(0).signal(Signal::SIGCONT));
    ok(c.wait_master_connected(0, DEADLINE));
    let after = wait_all_running(&c, &watch, &names);
    assert_eq!(pids(&after), pids(&before), "services restarted");
    sampler.finish();
}
