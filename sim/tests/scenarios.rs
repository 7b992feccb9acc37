//! Every scenario against the real binaries, invariants checked after each step.

use allex_sim::scenarios::{find, ScenarioOptions};

fn run(name: &str) {
    let scenario = find(name).unwrap_or_else(|| panic!("no scenario {name}"));
    match scenario.run(&ScenarioOptions::default()) {
        Ok(report) => eprint!("{report}"),
        Err(e) => panic!("scenario {name}: {e}"),
    }
}

#[test]
fn basic() {
    run("basic");
}

#[test]
fn race() {
    run("race");
}

#[test]
fn need_remove() {
    run("need-remove");
}

#[test]
fn child_crash() {
    run("child-crash");
}

#[test]
fn crash_loop() {
    run("crash-loop");
}

#[test]
fn master_crash() {
    run("master-crash");
}

#[test]
fn lan_restart() {
    run("lan-restart");
}

#[test]
fn lan_crash() {
    run("lan-crash");
}

#[test]
fn lan_failover() {
    run("lan-failover");
}

#[test]
fn link_blip() {
    run("link-blip");
}

#[test]
fn link_cut() {
    run("link-cut");
}

#[test]
fn link_freeze() {
    run("link-freeze");
}

#[test]
fn port_exhaustion() {
    run("port-exhaustion");
}

#[test]
fn ipaddress() {
    run("ipaddress");
}

#[test]
fn never_listens() {
    run("never-listens");
}

#[test]
fn stop_timeout() {
    run("stop-timeout");
}

#[test]
fn lookup() {
    run("lookup");
}

#[test]
fn log_bounded() {
    run("log-bounded");
}

#[test]
fn bad_input() {
    run("bad-input");
}

#[test]
fn inherited_sockets() {
    run("inherited-sockets");
}

#[test]
fn unhealthy() {
    run("unhealthy");
}

#[test]
fn forked_daemon() {
    run("forked-daemon");
}

#[test]
fn every_scenario_has_a_test() {
    let names: Vec<&str> = allex_sim::scenarios::all().iter().map(|s| s.name).collect();
    let here = include_str!("scenarios.rs");
    for n in names {
        assert!(
            here.contains(&format!("run(\"{n}\")")),
            "scenario {n} has no test"
        );
    }
}
