//! Clean children and the edges a new user meets, over the real binaries.

use allex_e2e::{add_needs, cluster, ok, wait_all_running, Watch, DEADLINE};
use allex_protocol::NeedState;
use allex_sim::harness::{Cluster, ClusterOptions, Timings};
use allex_sim::wait::wait_until;
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn a_master_with_a_wrong_token_says_so_once_and_shows_it_in_status() {
    let mut opts = ClusterOptions {
        masters: 1,
        proxies: true,
        wait_connected: false,
        ..ClusterOptions::default()
    };
    opts.lan.token = Some("the-right-token".into());
    opts.master.token = Some("a-wrong-token".into());
    let c = Cluster::start(opts).unwrap_or_else(|e| panic!("{e}"));
    let st = wait_until("the refusal to show in status", DEADLINE, || {
        match c.master(0).status() {
            Ok(st)
                if st
                    .refused
                    .as_deref()
                    .is_some_and(|r| r.starts_with("bad_token")) =>
            {
                Ok(st)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!st.connected);
    // Several retries later, the master has said it once.
    wait_until("a few retries", DEADLINE, || {
        let n = c.proxy(0).map_or(0, |p| p.accepted());
        if n >= 4 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let log = std::fs::read_to_string(c.master(0).log_path()).unwrap_or_default();
    assert_eq!(log.matches("refused the hello").count(), 1, "{log}");
    assert!(
        log.matches("ended").count() <= 2,
        "one line per retry: {log}"
    );
    let table = c.master(0).cli(&["status"]).map(|o| o.stdout);
    assert!(
        table
            .as_deref()
            .is_ok_and(|t| t.contains("lan manager refused (bad_token")),
        "{table:?}"
    );
}

#[test]
fn a_master_stopped_with_sigterm_puts_no_need_into_backoff() {
    // Young services: every one of them is far from the 1 s "stable" mark.
    let t = Timings {
        stable: std::time::Duration::from_secs(60),
        ..Timings::default()
    };
    let c = cluster(1, false, 60, t);
    let watch = Watch::new();
    let names = add_needs(&c, "term", 50);
    wait_all_running(&c, &watch, &names);
    ok(c.master(0).signal(Signal::SIGTERM));
    let exit = c.master(0).proc().map(|p| p.wait_exit(DEADLINE));
    assert!(matches!(exit, Some(Ok(s)) if s.success()), "{exit:?}");
    let st = watch.wait(&c, "every need to be released", |st| {
        if st.running.is_empty() {
            Ok(st.clone())
        } else {
            Err(format!("{} still running", st.running.len()))
        }
    });
    let hurt: Vec<_> = st
        .needs
        .iter()
        .filter(|n| n.state == NeedState::Backoff || n.failures > 0)
        .map(|n| (n.need.instancename.clone(), n.state, n.failures))
        .collect();
    assert!(hurt.is_empty(), "needs counted as crashing: {hurt:?}");
    let log = std::fs::read_to_string(c.lan().log_path()).unwrap_or_default();
    assert!(log.contains("master shutting down"), "{log}");
}

#[test]
fn the_processes_own_logs_stay_small_while_200_needs_crash_loop() {
    let mut opts = ClusterOptions {
        masters: 1,
        ..ClusterOptions::default()
    };
    opts.master.portrangesize = 220;
    let crasher: allex_protocol::ServiceSpec =
        serde_json::from_value(serde_json::json!({ "command": "/bin/false" })).unwrap();
    opts.master.services.insert("crasher".into(), crasher);
    let c = Cluster::start(opts).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..200 {
        let mut n = allex_protocol::Need::new(
            "crasher",
            allex_protocol::InstanceName::new(format!("loop{i:03}")).unwrap(),
        );
        n.protocols = Some(vec![allex_protocol::Protocol::Tcp]);
        ok(c.need_add(&n));
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let logs = || size(c.lan().log_path()) + size(c.master(0).log_path());
    let restarts = |st: &allex_protocol::LanStatus| -> u64 {
        st.needs.iter().map(|n| u64::from(n.failures)).sum()
    };
    // Once every need has looped a while, measure for as many restarts again.
    let first = c
        .wait_lan("1000 restarts", Duration::from_secs(120), |st| {
            let n = restarts(st);
            if n >= 1000 {
                Ok(n)
            } else {
                Err(format!("{n} restarts"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let before = logs();
    let second = c
        .wait_lan("3000 more restarts", Duration::from_secs(180), |st| {
            let n = restarts(st);
            if n >= first + 3000 {
                Ok(n)
            } else {
                Err(format!("{n} restarts"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let grown = logs() - before;
    let per_restart = grown / (second - first);
    eprintln!(
        "{} restarts grew the two logs by {grown} bytes: {per_restart} bytes per restart",
        second - first
    );
    // Unsummarised, each restart wrote four lines (spawned, died, down,
    // delaying), about 1.2 KB; summarised, far less than one line per
    // restart is left: a handful per need, growing with the log of its count.
    assert!(per_restart < 250, "{per_restart} bytes per restart");
}
