//! The invariant checks catch each broken promise, against real processes and ports.

use allex_protocol::Generation;
use allex_protocol::{
    Capacity, ChildState, ChildStatus, LanStatus, MasterStatus, MasterSummary, Need, NeedState,
    NeedStatus, PortCounts, Ports, Protocol, RunningService,
};
use allex_sim::harness::{Cluster, ClusterOptions};
use allex_sim::invariants::{check, MasterView, Observation, Ranges, Violation};
use allex_sim::process::{Proc, Stderr};
use allex_sim::{binary, Banner};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A real testsvc on a kernel-picked tcp port; returns it and the port.
fn svc(instance: &str) -> (Proc, u16) {
    let spawn = serde_json::json!({
        "modulename": "testsvc", "instancename": instance, "propertyhash": {},
        "tcpport": 0, "httpport": null, "wsport": null, "masterpid": 1
    });
    let mut cmd = Command::new(binary("allex-testsvc").unwrap());
    cmd.env("ALLEX_SPAWN", spawn.to_string())
        .env("ALLEX_TCP_PORT", "0")
        .env_remove("ALLEX_HTTP_PORT")
        .env_remove("ALLEX_WS_PORT")
        .env_remove("ALLEX_MASTER_SOCKET");
    let p = Proc::spawn(instance, cmd, Stderr::Null).unwrap();
    let line = p
        .wait_for_line(|l| l.starts_with("listening tcp "), T)
        .unwrap();
    let port = line["listening tcp ".len()..].parse().unwrap();
    (p, port)
}

fn record(instance: &str, master: &str, pid: u32, port: u16) -> RunningService {
    RunningService {
        instancename: allex_protocol::InstanceName::new(instance).unwrap(),
        modulename: "testsvc".into(),
        master: master.into(),
        address: "127.0.0.1".into(),
        ports: Ports {
            tcp: Some(port),
            http: None,
            ws: None,
        },
        pid,
        generation: Generation(1),
        since_unix_ms: 0,
        health: None,
    }
}

fn need(instance: &str, master: &str) -> NeedStatus {
    NeedStatus {
        need: Need::new(
            "testsvc",
            allex_protocol::InstanceName::new(instance).unwrap(),
        ),
        state: NeedState::Running,
        master: Some(master.into()),
        retry_in_ms: None,
        failures: 0,
        layer: String::new(),
    }
}

fn child(instance: &str, pid: u32, port: u16) -> ChildStatus {
    ChildStatus {
        instancename: allex_protocol::InstanceName::new(instance).unwrap(),
        modulename: "testsvc".into(),
        pid,
        ports: Ports {
            tcp: Some(port),
            http: None,
            ws: None,
        },
        state: ChildState::Running,
        ready: true,
        uptime_ms: 1,
        generation: Generation(1),
        health: None,
    }
}

fn summary(name: &str, connected: bool) -> MasterSummary {
    MasterSummary {
        name: name.into(),
        address: "127.0.0.1".into(),
        connected,
        peer: None,
        capacity: Capacity::default(),
        services: 1,
        draining: false,
    }
}

fn master(name: &str, children: Vec<ChildStatus>) -> MasterView {
    MasterView {
        name: name.into(),
        status: Some(MasterStatus {
            master: name.into(),
            pid: 1,
            advertiseaddress: Some("127.0.0.1".into()),
            connected: true,
            refused: None,
            fenced: false,
            fdlimit: 1024,
            fd_exhausted: false,
            children,
            free: PortCounts::default(),
            exhausted: vec![],
            declined: Default::default(),
            cgroup: None,
        }),
        children_alive: vec![],
    }
}

#[test]
fn a_consistent_observation_passes_and_each_fault_is_named() {
    let (a, port_a) = svc("A");
    let (b, port_b) = svc("B");
    let good = Observation {
        lan: LanStatus {
            needs: vec![need("A", "m1")],
            running: vec![record("A", "m1", a.pid(), port_a)],
            masters: vec![summary("m1", true), summary("m2", true)],
        },
        masters: vec![master("m1", vec![child("A", a.pid(), port_a)])],
    };
    assert_eq!(check(&good, &Ranges::new()), vec![]);

    // The record claims A's port belongs to B's pid.
    let mut wrong_owner = good.clone();
    wrong_owner.lan.running[0].pid = b.pid();
    wrong_owner.masters[0].status.as_mut().unwrap().children[0].pid = b.pid();
    let v = check(&wrong_owner, &Ranges::new());
    assert!(
        v.contains(&Violation::PortOwnedByOther {
            instance: "A".into(),
            protocol: Protocol::Tcp,
            addr: ([127, 0, 0, 1], port_a).into(),
            pid: b.pid(),
            banner: Banner {
                instance: "A".into(),
                pid: a.pid()
            },
        }),
        "{v:?}"
    );

    // Listed twice, and the second master gave one port to two children.
    let mut twice = good.clone();
    twice.lan.running.push(record("A", "m2", b.pid(), port_b));
    twice.masters.push(master(
        "m2",
        vec![child("A", b.pid(), port_b), child("C", b.pid(), port_b)],
    ));
    let v = check(&twice, &Ranges::new());
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::ListedTwice { instance, .. } if instance == "A")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::RunsOnTwoMasters { instance, .. } if instance == "A")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::PortHeldTwice { port, .. } if *port == port_b)),
        "{v:?}"
    );

    // Out of the master's range.
    let mut ranges = Ranges::new();
    ranges.insert("m1".into(), [(Protocol::Tcp, 1..=2)].into_iter().collect());
    assert!(check(&good, &ranges)
        .iter()
        .any(|x| matches!(x, Violation::PortOutOfRange { .. })));

    // A dead pid and a silent port once the service is gone.
    let pid = a.pid();
    a.kill_now().unwrap();
    let v = check(&good, &Ranges::new());
    assert_eq!(
        v,
        vec![Violation::DeadPid {
            instance: "A".into(),
            pid
        }]
    );

    // A master that is gone but left B running.
    let gone = Observation {
        lan: LanStatus::default(),
        masters: vec![MasterView {
            name: "m3".into(),
            status: None,
            children_alive: vec![b.pid()],
        }],
    };
    assert_eq!(
        check(&gone, &Ranges::new()),
        vec![Violation::LeftBehind {
            master: "m3".into(),
            pids: vec![b.pid()]
        }]
    );
}

#[test]
fn a_cluster_running_needs_on_two_masters_keeps_the_invariants() {
    let cluster = Cluster::start(ClusterOptions {
        masters: 2,
        ..ClusterOptions::default()
    })
    .unwrap();
    for i in 0..4 {
        cluster
            .need_add(&Need::new(
                "testsvc",
                allex_protocol::InstanceName::new(format!("N{i}")).unwrap(),
            ))
            .unwrap();
    }
    for i in 0..4 {
        cluster.wait_running(&format!("N{i}"), T).unwrap();
    }
    let obs = cluster.check_invariants(T).unwrap();
    assert_eq!(obs.lan.running.len(), 4);
    let children: usize = obs
        .masters
        .iter()
        .filter_map(|m| m.status.as_ref())
        .map(|s| s.children.len())
        .sum();
    assert_eq!(children, 4);
}
