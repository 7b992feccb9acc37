//! Issue 8: a real LAN. A lan manager and three masters on four network
//! namespaces joined by a bridge, each with its own address on a private
//! 198.18.x.0/24 that exists only inside the namespaces.
//!
//! Needs root and iproute2; without them every test prints why it skips and
//! returns. Each test builds its own LAN (own namespaces, own bridge, own
//! processes) and removes it on drop, also when it fails.

use allex_sim::lan_mode::{LanModeError, LanModeOptions, LanSetup};
use allex_sim::netns::{self, TestLan};
use allex_sim::procscan;
use allex_sim::wait::wait_until;
use std::time::Duration;

/// Whether this machine can build a namespace LAN; prints why `test` skips when not.
fn can_build_lan(test: &str) -> bool {
    match netns::available() {
        Ok(()) => true,
        Err(e) => {
            allex_sim::skip(
                test,
                &format!("{e}; namespace LAN tests need root and iproute2 (`ip`)"),
            );
            false
        }
    }
}

/// A started LAN, or `None` (with the reason printed) when this machine cannot build one.
fn lan_or_skip(test: &str) -> Option<LanSetup> {
    lan_with_or_skip(test, LanModeOptions::default())
}

/// Like [`lan_or_skip`], with options of its own.
fn lan_with_or_skip(test: &str, opts: LanModeOptions) -> Option<LanSetup> {
    if !can_build_lan(test) {
        return None;
    }
    match LanSetup::start(opts) {
        Ok(s) => Some(s),
        Err(e) => panic!("the namespace LAN did not come up: {e}"),
    }
}

/// Fails the test with the step's error and everything that happened before it.
fn step(setup: &LanSetup, what: &str, result: Result<(), LanModeError>) {
    if let Err(e) = result {
        panic!("{what}: {e}\n--- timeline ---\n{}", setup.timeline.render());
    }
}

#[test]
fn masters_advertise_their_lan_addresses_and_ipaddress_places_needs() {
    let Some(lan) = lan_or_skip("masters_advertise_their_lan_addresses_and_ipaddress_places_needs")
    else {
        return;
    };
    step(&lan, "own addresses", lan.check_addresses());
    // Pins by bare address, /32 and a /31 covering two hosts; a CIDR with no
    // host stays open; every port answers across the bridge with the listed pid.
    step(&lan, "placement", lan.check_placement());
}

#[test]
fn over_tls_masters_on_other_hosts_connect_and_serve() {
    let test = "over_tls_masters_on_other_hosts_connect_and_serve";
    let Some(lan) = lan_with_or_skip(
        test,
        LanModeOptions {
            tls: true,
            ..LanModeOptions::default()
        },
    ) else {
        return;
    };
    // Every master connected over TLS (start waits for that); the same
    // placement checks hold across the bridge.
    step(&lan, "own addresses", lan.check_addresses());
    step(&lan, "placement", lan.check_placement());
}

#[test]
fn cut_host_needs_move_after_grace_and_its_stale_copies_stop_on_return() {
    let Some(lan) =
        lan_or_skip("cut_host_needs_move_after_grace_and_its_stale_copies_stop_on_return")
    else {
        return;
    };
    step(&lan, "placement", lan.check_placement());
    step(&lan, "cut and return", lan.check_cut_and_return());
}

#[test]
fn with_fencing_a_cut_host_stops_its_children_before_the_others_start_theirs() {
    let mut opts = LanModeOptions::default();
    // Heartbeats every 500 ms, fence after 1.2 s, grace 2 s: the cut host
    // stops its copies about 0.8 s before the lan manager hands them on.
    opts.timings.fence = Some(Duration::from_millis(1200));
    let Some(lan) = lan_with_or_skip(
        "with_fencing_a_cut_host_stops_its_children_before_the_others_start_theirs",
        opts,
    ) else {
        return;
    };
    step(&lan, "placement", lan.check_placement());
    // The sampler scans every host's processes during the cut and return and
    // fails on any sample with two live processes of one need.
    step(&lan, "fenced cut and return", lan.check_cut_and_return());
}

#[test]
fn service_finds_a_service_on_another_host_through_its_master() {
    let Some(lan) = lan_or_skip("service_finds_a_service_on_another_host_through_its_master")
    else {
        return;
    };
    step(&lan, "lookup", lan.check_lookup());
}

#[test]
fn test_lan_exists_only_in_namespaces_and_is_removed_even_after_a_panic() {
    if !can_build_lan("test_lan_exists_only_in_namespaces_and_is_removed_even_after_a_panic") {
        return;
    }
    let root_addresses = || {
        let out = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let mut made = Vec::new();
    let mut subnet = String::new();
    let mut pid = 0;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = TestLan::new(2).unwrap();
        made = net.netns_names();
        subnet = net.subnet();
        let listed = netns::namespaces().unwrap();
        for n in &made {
            assert!(listed.contains(n), "{n} not in `ip netns list`: {listed:?}");
        }
        // The hosts reach each other over the bridge...
        let (a, b) = (net.host(0), net.host(1));
        let listener = b
            .run_in(|| std::net::TcpListener::bind((b.address, 0)).unwrap())
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        a.run_in(|| std::net::TcpStream::connect((b.address, port)).unwrap())
            .unwrap();
        // ...but the subnet is nowhere in the namespace the test runs in.
        let prefix = subnet.trim_end_matches("0/24");
        assert!(
            !root_addresses().contains(prefix),
            "{subnet} leaked into the caller's namespace"
        );
        // A process on a host that nothing else owns: only the LAN's own
        // cleanup can end it (a std Child is not killed on drop).
        let child = a
            .command("sleep")
            .arg("600")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        pid = child.id();
        assert!(procscan::is_alive(pid));
        let _keep = (child, net);
        panic!("a failing test");
    }));
    assert!(outcome.is_err(), "the closure was meant to panic");
    assert!(!made.is_empty());
    let listed = netns::namespaces().unwrap();
    for n in &made {
        assert!(!listed.contains(n), "{n} survived the panic: {listed:?}");
    }
    wait_until(
        "the host's process to be gone",
        Duration::from_secs(10),
        || {
            if procscan::is_alive(pid) {
                Err(format!("pid {pid} alive"))
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
}

#[test]
fn allex_sim_lan_prints_a_timeline_and_a_passing_verdict() {
    if !can_build_lan("allex_sim_lan_prints_a_timeline_and_a_passing_verdict") {
        return;
    }
    let bin = allex_sim::binary("allex-sim").unwrap();
    let out = allex_sim::process::run_with_deadline(
        "allex-sim lan",
        {
            let mut c = std::process::Command::new(bin);
            c.arg("lan");
            c
        },
        Duration::from_secs(240),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "allex-sim lan failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    for want in [
        "advertises its own address",
        "moved to",
        "stale copies",
        "never a record without its process",
        "Finder printed: lookup Target",
        "verdict: PASS",
    ] {
        assert!(out.stdout.contains(want), "no {want:?} in:\n{}", out.stdout);
    }
    // It cleaned up: no test namespace outlives the process that made it.
    let leaked = netns::orphaned().unwrap();
    assert!(leaked.is_empty(), "namespaces left behind: {leaked:?}");
}
