//! The link to the lan manager: claims, capacity, reconnects, queued reports, lookups.

mod common;

use allex_protocol::Generation;
use allex_protocol::{LanToMaster, MasterToLan, Need, Ports, Protocol, ServiceLocation};
use allex_testkit::wait_until;
use common::fake_lan::{FakeLan, Options, Seen};
use common::{need, spawned, spawned_all, SOON};
use serde_json::json;
use std::time::Duration;

/// The instance names of the children a status lists, in its order.
fn child_names(st: &allex_protocol::MasterStatus) -> Vec<&str> {
    st.children
        .iter()
        .map(|c| c.instancename.as_str())
        .collect()
}

#[test]
fn down_during_a_link_outage_is_queued_and_the_hello_omits_the_dead_child() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 4);
    lan.offer(vec![need("A", json!({})), need("B", json!({}))]);
    let both = spawned_all(&lan, &["A", "B"]);
    let ((gen_a, pid_a, _), (gen_b, pid_b, ports_b)) = (both["A"], both["B"]);
    lan.unlisten();
    lan.wait("the link to close", SOON, |e| {
        matches!(e, Seen::Closed).then_some(())
    });
    wait_until("the master to notice the outage", SOON, || {
        let st = m.status().unwrap();
        if st.connected {
            Err(Box::new(st))
        } else {
            Ok(())
        }
    })
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_a as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        "A to be gone from status while B keeps running",
        SOON,
        || {
            let st = m.status().unwrap();
            let names = child_names(&st);
            if names == ["B"] && st.children[0].pid == pid_b {
                Ok(())
            } else {
                Err(Box::new(st))
            }
        },
    )
    .unwrap();
    lan.listen();
    let inventory = lan.wait_msg("hello after reconnect", SOON, |m| match m {
        MasterToLan::Hello(h) => Some(h.inventory.clone()),
        _ => None,
    });
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    assert_eq!(
        (
            inventory[0].instancename.as_str(),
            inventory[0].generation,
            inventory[0].pid,
            inventory[0].ports
        ),
        ("B", gen_b, pid_b, ports_b)
    );
    let (generation, pid, exit, ordered) = lan.wait_msg("queued down of A", SOON, |m| match m {
        MasterToLan::Down {
            instancename,
            generation,
            pid,
            exit,
            ordered,
            ..
        } if instancename == "A" => Some((*generation, *pid, *exit, *ordered)),
        _ => None,
    });
    assert_eq!(
        (generation, pid, exit.signal, ordered),
        (gen_a, pid_a, Some(9), false)
    );
    assert!(m.status().unwrap().connected);
}

#[test]
fn a_silent_lan_manager_is_dropped_and_reconnected() {
    let lan = FakeLan::start(Options {
        echo: false,
        heartbeat_ms: 100,
        ..Options::default()
    });
    let _m = common::start(lan.addr.port(), 2);
    lan.wait_msg("hello", SOON, |m| {
        matches!(m, MasterToLan::Hello(_)).then_some(())
    });
    // No echo and nothing else: after three heartbeats the master gives up on the link.
    lan.wait(
        "the master to drop the silent link",
        Duration::from_secs(5),
        |e| matches!(e, Seen::Closed).then_some(()),
    );
    lan.wait_msg("a fresh hello", Duration::from_secs(5), |m| {
        matches!(m, MasterToLan::Hello(_)).then_some(())
    });
}

#[test]
fn exhausted_range_stops_claims_says_so_once_and_recovers() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 1);
    lan.offer(vec![
        need("X1", json!({})),
        need("X2", json!({})),
        need("X3", json!({})),
    ]);
    let mut claims = Vec::new();
    let free = lan.wait_msg("capacity with no free port", SOON, |msg| match msg {
        MasterToLan::Claim { instancename, .. } => {
            claims.push(instancename.clone());
            None
        }
        MasterToLan::Capacity(c) => Some(c.free),
        _ => None,
    });
    assert_eq!(claims, ["X1"], "only the need that has ports is claimed");
    assert_eq!(free.tcp, 0);
    let (_, pid, _) = spawned(&lan, "X1");
    lan.open(need("X4", json!({})));
    let st = wait_until("status to show exhaustion", SOON, || {
        let st = m.status().unwrap();
        if st.exhausted.contains(&Protocol::Tcp) {
            Ok(st)
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
    assert_eq!(st.children.len(), 1);
    // A range of one port held by the one child: every protocol is exhausted,
    // not only the one whose reservation failed first.
    assert_eq!(st.exhausted, Protocol::ALL.to_vec());
    assert_eq!((st.free.tcp, st.free.http, st.free.ws), (0, 0, 0));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The freed ports serve the next open need at once.
    let next = lan.wait_msg("a claim once ports are free", SOON, |msg| match msg {
        MasterToLan::Claim { instancename, .. } => Some(instancename.clone()),
        _ => None,
    });
    assert!(["X2", "X3", "X4"].contains(&next.as_str()), "{next}");
    spawned(&lan, &next);
    let warnings = m.log().matches("not claiming needs").count();
    assert_eq!(
        warnings,
        2,
        "one warning per exhaustion episode:\n{}",
        m.log()
    );
}

#[test]
fn only_servable_needs_are_claimed() {
    let lan = FakeLan::start(Options::default());
    let _m = common::start(lan.addr.port(), 3);
    let mut foreign = Need::new("not_in_catalogue", allex_protocol::instance!("a_foreign"));
    foreign.protocols = Some(vec![Protocol::Tcp]);
    let mut elsewhere = need("b_elsewhere", json!({}));
    elsewhere.ipaddress = Some("10.250.0.0/16".into());
    let mut here = need("c_here", json!({}));
    here.ipaddress = Some("127.0.0.0/8".into());
    here.protocols = Some(vec![Protocol::Http]);
    lan.offer(vec![foreign, elsewhere, here]);
    // Claims go out in name order within one snapshot, so the first claim tells all.
    let first = lan.wait_msg("first claim", SOON, |msg| match msg {
        MasterToLan::Claim { instancename, .. } => Some(instancename.clone()),
        _ => None,
    });
    assert_eq!(first, "c_here");
    let (_, _, ports) = spawned(&lan, "c_here");
    assert_eq!((ports.tcp, ports.ws), (None, None));
    assert!(ports.http.is_some());
}

#[test]
fn spawn_failure_is_reported_and_frees_the_ports() {
    let lan = FakeLan::start(Options::default());
    let m = common::start_with(lan.addr.port(), 2, 1000, |cfg| {
        cfg["services"]["broken"] = json!({ "command": "/nonexistent/allex-nothing" });
    });
    lan.offer(vec![Need::new(
        "broken",
        allex_protocol::instance!("Broken"),
    )]);
    let reason = lan.wait_msg("spawn_failed", SOON, |msg| match msg {
        MasterToLan::SpawnFailed {
            instancename,
            reason,
            ..
        } if instancename == "Broken" => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("/nonexistent/allex-nothing"), "{reason}");
    let st = m.status().unwrap();
    assert!(st.children.is_empty());
    assert_eq!((st.free.tcp, st.free.http, st.free.ws), (2, 2, 2));
    // The need reopens at once; the master holds back instead of looping.
    let reopened = std::time::Instant::now();
    lan.open(Need::new("broken", allex_protocol::instance!("Broken")));
    lan.wait_msg("a second claim", SOON, |msg| match msg {
        MasterToLan::Claim { instancename, .. } if instancename == "Broken" => Some(()),
        _ => None,
    });
    let waited = reopened.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "re-claimed after {waited:?}"
    );
}

#[test]
fn a_child_lookup_is_forwarded_and_answered() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need("Asker", json!({ "lookup": "Time" }))]);
    let id = lan.wait_msg("lookup", SOON, |msg| match msg {
        MasterToLan::Lookup { id, instancename } if instancename == "Time" => Some(*id),
        _ => None,
    });
    let location = ServiceLocation {
        instancename: allex_protocol::instance!("Time"),
        modulename: "allex_timeservice".into(),
        address: "10.1.2.3".into(),
        ports: Ports {
            tcp: Some(15001),
            http: None,
            ws: None,
        },
    };
    lan.send(LanToMaster::LookupResult {
        id,
        location: Some(location),
    });
    // The child prints the answer on stdout, which the master keeps in its log.
    let log = m.runtime_dir().join("logs/Asker.log");
    wait_until("the child to print the lookup answer", SOON, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("lookup Time") && text.contains("10.1.2.3") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .unwrap();
}

#[test]
fn child_output_is_kept_in_a_bounded_rotated_log() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need("Chatty", json!({ "spam_bytes": 20000 }))]);
    spawned(&lan, "Chatty");
    let dir = m.runtime_dir().join("logs");
    // Rotation renames the full log away and then creates the fresh one, so
    // wait until both are there.
    let now = wait_until("the log to rotate", SOON, || {
        let len = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).ok();
        match (len("Chatty.log.1"), len("Chatty.log")) {
            (Some(4096), Some(now)) => Ok(now),
            other => Err(other),
        }
    })
    .unwrap();
    assert!(now <= 4096, "current log is {now} bytes");
}

#[test]
fn a_grant_with_a_hostile_name_is_dropped_without_touching_the_disk() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.wait_msg("hello", SOON, |msg| {
        matches!(msg, MasterToLan::Hello(_)).then_some(())
    });
    // The name is checked where the frame is decoded, so the grant never
    // reaches the master's state: no child, no log file, no report.
    let good = LanToMaster::Grant {
        need: need("x", json!({})),
        generation: Generation(99),
        deadline_ms: 1000,
    };
    let bad = allex_protocol::frame::encode(&good).replace("\"x\"", "\"../../escape\"");
    assert!(bad.contains("../../escape"), "{bad}");
    lan.send_raw(bad);
    // The link goes on: a good grant after it is acted on, and it is the only one.
    lan.send(good);
    let first = lan.wait_msg("the first report", SOON, |msg| match msg {
        MasterToLan::Spawned { .. } | MasterToLan::SpawnFailed { .. } => Some(msg.clone()),
        _ => None,
    });
    assert!(
        matches!(&first, MasterToLan::Spawned { instancename, generation: Generation(99), .. } if instancename == "x"),
        "{first:?}"
    );
    assert!(!m.dir().join("escape.log").exists());
    let st = m.status().unwrap();
    assert_eq!(child_names(&st), vec!["x"]);
}

#[test]
fn a_lan_manager_that_accepts_but_never_answers_is_retried() {
    // A socket that accepts and then stays silent, like a frozen network path.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _m = common::start(silent.local_addr().unwrap().port(), 2);
    silent.set_nonblocking(true).unwrap();
    let mut held = Vec::new();
    let started = std::time::Instant::now();
    wait_until(
        "a second connection attempt",
        Duration::from_secs(8),
        || {
            while let Ok((conn, _)) = silent.accept() {
                held.push(conn);
            }
            if held.len() >= 2 {
                Ok(())
            } else {
                Err(held.len())
            }
        },
    )
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried before the handshake timeout"
    );
}

#[test]
fn a_spawn_that_finishes_before_the_welcome_is_reported_right_after_it() {
    let lan = FakeLan::start(Options {
        auto_welcome: false,
        auto_grant: false,
        ..Options::default()
    });
    let m = common::start(lan.addr.port(), 4);
    let welcome = || LanToMaster::Welcome {
        version: allex_protocol::PROTOCOL_VERSION,
        grace_ms: 1000,
        heartbeat_ms: 200,
        fence_ms: None,
    };
    lan.wait_msg("hello", SOON, |m| {
        matches!(m, MasterToLan::Hello(_)).then_some(())
    });
    // A grant that reaches the master while its link is up but not yet
    // welcomed (as one sent just before a cut does after the reconnect).
    lan.send(LanToMaster::Grant {
        need: need("Early", json!({})),
        generation: Generation(7),
        deadline_ms: 5000,
    });
    let pid = wait_until("the child to be spawned before any welcome", SOON, || {
        let st = m.status().unwrap();
        match st.children.iter().find(|c| c.instancename == "Early") {
            Some(c) if !st.connected => Ok(c.pid),
            _ => Err(Box::new(st)),
        }
    })
    .unwrap();
    lan.send(welcome());
    let (generation, reported) = lan.wait_msg("the kept spawned report", SOON, |msg| match msg {
        MasterToLan::Spawned {
            instancename,
            generation,
            pid,
            ..
        } if instancename == "Early" => Some((*generation, *pid)),
        _ => None,
    });
    assert_eq!((generation, reported), (Generation(7), pid));

    // Granted right before a cut: after the reconnect the child is in the
    // hello's inventory or reported right after the welcome, never both.
    lan.send(LanToMaster::Grant {
        need: need("Cut", json!({})),
        generation: Generation(8),
        deadline_ms: 5000,
    });
    lan.drop_link();
    let in_hello = lan.wait_msg("the hello after the cut", SOON, |msg| match msg {
        MasterToLan::Hello(h) => Some(h.inventory.iter().any(|i| i.instancename == "Cut")),
        _ => None,
    });
    wait_until("Cut to be spawned", SOON, || {
        let st = m.status().unwrap();
        if st.children.iter().any(|c| c.instancename == "Cut") {
            Ok(())
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
    lan.send(welcome());
    // The welcome's flush happens before the next needs snapshot is read,
    // so the claim it causes marks the end of what was flushed.
    lan.send(LanToMaster::Needs {
        needs: vec![need("Barrier", json!({}))],
    });
    let mut after = 0;
    lan.wait_msg("the claim behind the flush", SOON, |msg| match msg {
        MasterToLan::Spawned { instancename, .. } if instancename == "Cut" => {
            after += 1;
            None
        }
        MasterToLan::Claim { instancename, .. } if instancename == "Barrier" => Some(()),
        _ => None,
    });
    assert_eq!(
        usize::from(in_hello) + after,
        1,
        "Cut in the hello: {in_hello}, spawned reports after the welcome: {after}"
    );
}

#[test]
fn fencing_stops_every_child_after_the_fence_time_without_the_lan_manager() {
    let lan = FakeLan::start(Options {
        heartbeat_ms: 100,
        fence_ms: Some(600),
        ..Options::default()
    });
    let m = common::start(lan.addr.port(), 4);
    lan.offer(vec![need("F1", json!({})), need("F2", json!({}))]);
    let both = spawned_all(&lan, &["F1", "F2"]);
    assert!(!m.status().unwrap().fenced);
    // The lan manager goes away entirely: nothing arrives, no reconnect works.
    lan.unlisten();
    let st = wait_until("the master to fence itself", SOON, || {
        let st = m.status().unwrap();
        if st.fenced && st.children.is_empty() {
            Ok(st)
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
    assert!(!st.connected);
    for (_, pid, _) in both.values() {
        assert!(common::pid_gone(*pid), "pid {pid} outlived the fence");
    }
    assert!(m.log().contains("fenced: no word from the lan manager"));
    // Back: the hello says it runs nothing, its stops follow the welcome as
    // ordered downs, and it is no longer fenced.
    lan.listen();
    let inventory = lan.wait_msg("hello after the fence", SOON, |msg| match msg {
        MasterToLan::Hello(h) => Some(h.inventory.len()),
        _ => None,
    });
    assert_eq!(inventory, 0);
    for _ in 0..2 {
        let ordered = lan.wait_msg("a down of a fenced child", SOON, |msg| match msg {
            MasterToLan::Down { ordered, .. } => Some(*ordered),
            _ => None,
        });
        assert!(ordered);
    }
    wait_until("the fence to lift", SOON, || {
        let st = m.status().unwrap();
        if st.connected && !st.fenced {
            Ok(())
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
}
