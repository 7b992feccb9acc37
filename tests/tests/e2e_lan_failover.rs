//! Three lan managers on one real etcd (its own data directory and loopback
//! ports, killed on drop): one leads, the others refuse with `not_leader`
//! naming it; a SIGKILLed leader is replaced within its lease, the master
//! follows, nothing restarts and no acknowledged change is lost; a leader
//! cut off from etcd stops leading on its own and changes nothing.

use allex_e2e::{need, ok, pids, running_map, DEADLINE};
use allex_sim::harness::{LanManager, LanOptions, Master, MasterOptions, Timings};
use allex_sim::wait::wait_until;
use allex_testkit::etcd::Etcd;
use allex_testkit::proxy::Proxy;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A lease (2 s) and an election, with room for a loaded 2-core machine.
const LEAD_DEADLINE: Duration = Duration::from_secs(20);

/// A real etcd, or `None` (the test is skipped) where it is not installed.
fn etcd(test: &str) -> Option<Etcd> {
    if !Etcd::available() {
        allex_testkit::skip::skip(test, "no etcd here (.ci/run installs etcd-server as root)");
        return None;
    }
    Some(Etcd::start().unwrap_or_else(|e| panic!("{e}")))
}

/// Test timings with a settle period and grace long enough to span a failover.
fn timings() -> Timings {
    Timings {
        grace: Duration::from_secs(20),
        settle: Duration::from_secs(20),
        ..Timings::default()
    }
}

/// Three lan managers on `endpoints[i]` (etcd itself or a proxy to it).
fn three(endpoints: &[String]) -> Vec<LanManager> {
    endpoints
        .iter()
        .map(|e| {
            ok(LanManager::start(LanOptions {
                timings: timings(),
                extra_args: vec![
                    "--store".into(),
                    format!("etcd://{e}"),
                    "--lease-ttl".into(),
                    "2".into(),
                ],
                ..LanOptions::default()
            }))
        })
        .collect()
}

/// The index of the one that leads, once exactly one does (among those running).
fn leader(lans: &[LanManager]) -> usize {
    wait_until("one lan manager to lead", LEAD_DEADLINE, || {
        let leading: Vec<usize> = (0..lans.len())
            .filter(|&i| lans[i].is_running() && lans[i].leads())
            .collect();
        match leading.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("leading: {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `allexlanmanager ARGS --connect CONNECT`.
fn cli(args: &[&str], connect: &str) -> allex_testkit::process::Output {
    let bin = allex_testkit::bins::binary("allexlanmanager").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).arg("--connect").arg(connect);
    cmd.env_remove("ALLEX_TOKEN");
    allex_testkit::process::run_with_deadline("allexlanmanager", cmd, DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A master listing all three lan managers.
fn master(lans: &[LanManager]) -> Master {
    let addrs: Vec<SocketAddr> = lans.iter().map(LanManager::addr).collect();
    ok(Master::start(&MasterOptions {
        more_lans: addrs[1..].to_vec(),
        ..MasterOptions::new(addrs[0])
    }))
}

/// Waits until `lm` lists every one of `names` running and `master` connected.
fn wait_running(
    lm: &LanManager,
    names: &[&str],
    master: &str,
) -> BTreeMap<String, allex_protocol::RunningService> {
    wait_until("every need running under the leader", DEADLINE, || {
        let st = lm.status_direct().map_err(|e| e.to_string())?;
        let run = running_map(&st);
        let missing: Vec<&&str> = names.iter().filter(|n| !run.contains_key(**n)).collect();
        let connected = st.masters.iter().any(|m| m.name == master && m.connected);
        if missing.is_empty() && connected {
            Ok(run)
        } else {
            Err(format!(
                "missing {missing:?}, master connected: {connected}"
            ))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_sigkilled_leader_is_replaced_and_the_master_follows_without_a_restart() {
    let Some(etcd) =
        etcd("a_sigkilled_leader_is_replaced_and_the_master_follows_without_a_restart")
    else {
        return;
    };
    let mut lans = three(&[etcd.endpoint(), etcd.endpoint(), etcd.endpoint()]);
    let l = leader(&lans);
    let list = lans
        .iter()
        .map(|lm| lm.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");

    // A follower refuses, naming the leader; given the list, the CLI finds it.
    let f = (l + 1) % 3;
    let out = cli(&["status"], &lans[f].addr().to_string());
    assert!(!out.status.success(), "a follower answered: {}", out.stdout);
    let leader_addr = lans[l].addr().to_string();
    assert!(
        out.stderr
            .contains(&format!("follows the leader at {leader_addr}")),
        "{}",
        out.stderr
    );
    let out = cli(&["status", "--json"], &list);
    assert!(out.status.success(), "{}", out.stderr);
    // Its HTTP API says the same, with the leader in a header and the body;
    // /metrics is its own.
    let http_addr = lans[f].http_addr().unwrap_or_else(|| panic!("no HTTP"));
    let http = allex_testkit::http::HttpClient::new(http_addr, None);
    let answer = ok(http.get("/v1/needs"));
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("not_leader") && answer.body.contains(&leader_addr));
    assert_eq!(ok(http.get("/metrics")).status, 200);

    let m = master(&lans);
    for n in ["F1", "F2"] {
        ok(lans[l].need_add(&need(n, serde_json::json!({}))));
    }
    let before = pids(&wait_running(&lans[l], &["F1", "F2"], m.name()));
    // Acknowledged just before the leader dies: it must survive it.
    ok(lans[l].need_add(&need("F3", serde_json::json!({}))));
    ok(lans[l].kill());

    let next = leader(&lans);
    assert_ne!(next, l);
    let after = wait_running(&lans[next], &["F1", "F2", "F3"], m.name());
    let after_pids = pids(&after);
    for n in ["F1", "F2"] {
        assert_eq!(
            after_pids[n], before[n],
            "{n} restarted across the failover"
        );
    }
    // The master's own view: the same children, alive.
    let st = ok(m.status());
    let mut children: Vec<u32> = st.children.iter().map(|c| c.pid).collect();
    children.sort_unstable();
    let mut expected: Vec<u32> = after_pids.values().copied().collect();
    expected.sort_unstable();
    assert_eq!(children, expected);
    // The CLI with the list follows the new leader; the dead one is skipped.
    let out = cli(
        &[
            "need",
            "add",
            "--module",
            allex_e2e::MODULE,
            "--instance",
            "F4",
        ],
        &list,
    );
    assert!(out.status.success(), "{}", out.stderr);
    wait_running(&lans[next], &["F4"], m.name());
    // A follower stops cleanly on SIGTERM: it has nothing to flush.
    let follower = (0..3)
        .find(|&i| i != l && i != next)
        .unwrap_or_else(|| panic!("no follower left"));
    ok(lans[follower].signal(nix::sys::signal::Signal::SIGTERM));
    let status = ok(lans[follower].wait_exit(DEADLINE));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_leader_cut_off_from_etcd_stops_leading_and_changes_nothing() {
    let Some(etcd) = etcd("a_leader_cut_off_from_etcd_stops_leading_and_changes_nothing") else {
        return;
    };
    let target: SocketAddr = etcd.endpoint().parse().unwrap_or_else(|e| panic!("{e}"));
    let proxies: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start(target).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let endpoints: Vec<String> = proxies.iter().map(|p| p.addr().to_string()).collect();
    let mut lans = three(&endpoints);
    let l = leader(&lans);
    let m = master(&lans);
    ok(lans[l].need_add(&need("P1", serde_json::json!({}))));
    let before = pids(&wait_running(&lans[l], &["P1"], m.name()));

    // Its etcd link frozen: packets stop, no connection closes.
    proxies[l].freeze();
    let refused = lans[l].need_add(&need("Lost", serde_json::json!({})));
    assert!(
        refused.is_err(),
        "a leader cut off from etcd acknowledged a change"
    );
    let status = lans[l]
        .wait_exit(LEAD_DEADLINE)
        .unwrap_or_else(|e| panic!("the cut-off leader did not stop: {e}"));
    assert!(!status.success(), "{status:?}");
    let log = lans[l].log();
    assert!(log.contains("stopped leading"), "{log}");

    let next = leader(&lans);
    assert_ne!(next, l);
    let st = ok(lans[next].status());
    assert!(
        st.needs.iter().all(|n| n.need.instancename != "Lost"),
        "the deposed leader's change landed: {:?}",
        st.needs
    );
    let after = pids(&wait_running(&lans[next], &["P1"], m.name()));
    assert_eq!(
        after["P1"], before["P1"],
        "P1 restarted across the failover"
    );
    proxies[l].restore();
}
