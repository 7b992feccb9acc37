//! The master spawns, supervises and stops real children on the fake lan manager's orders.

mod common;

use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{ChildState, ExitInfo, LanToMaster, MasterToLan, Need, Protocol};
use allex_testkit::{read_port_banner, wait_until};
use common::fake_lan::{FakeLan, Options};
use common::{need, pid_gone, spawned, spawned_all, Inherited, SOON};
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn down(lan: &FakeLan, instance: &str, deadline: Duration) -> (Generation, u32, ExitInfo, bool) {
    lan.wait_msg(&format!("down {instance}"), deadline, |m| match m {
        MasterToLan::Down {
            instancename,
            generation,
            pid,
            exit,
            ordered,
            ..
        } if instancename == instance => Some((*generation, *pid, *exit, *ordered)),
        _ => None,
    })
}

fn assert_banner(port: u16, instance: &str, pid: u32) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(
        &format!("{instance} (pid {pid}) to answer on {port}"),
        SOON,
        || match read_port_banner(addr) {
            Some(b) if b.instance == instance && b.pid == pid => Ok(()),
            other => Err(other),
        },
    )
    .unwrap();
}

#[test]
fn n_children_listen_on_distinct_ports_from_the_ranges() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 10);
    let names: Vec<String> = (0..5).map(|i| format!("svc{i}")).collect();
    lan.offer(names.iter().map(|n| need(n, json!({}))).collect());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let all = spawned_all(&lan, &refs);
    let mut seen_ports = HashSet::new();
    let mut pids = Vec::new();
    for n in &names {
        let (_, pid, ports) = all[n.as_str()];
        for p in Protocol::ALL {
            let port = ports
                .get(p)
                .unwrap_or_else(|| panic!("{n} got no {p} port"));
            assert!(
                m.in_range(p, port),
                "{n}: {p} port {port} outside its range"
            );
            assert!(seen_ports.insert(port), "port {port} handed out twice");
            assert_banner(port, n, pid);
        }
        pids.push(pid);
    }
    // Status lists exactly what runs, and every child said ready over the socket.
    let st = wait_until("every child ready in status", SOON, || {
        let st = m.status().unwrap();
        if st.children.iter().all(|c| c.ready) {
            Ok(st)
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
    let listed: Vec<(String, u32)> = st
        .children
        .iter()
        .map(|c| (c.instancename.to_string(), c.pid))
        .collect();
    let want: Vec<(String, u32)> = names.iter().cloned().zip(pids.iter().copied()).collect();
    assert_eq!(listed, want);
    assert!(st.connected);
    assert_eq!(st.free.tcp, 5);
    assert!(st.children.iter().all(|c| c.state == ChildState::Ready));
    // The child's environment carries the spec's variables, seen through the children's logs.
    let log = std::fs::read_to_string(m.runtime_dir().join("logs/svc0.log")).unwrap_or_default();
    assert!(log.contains("svc0"), "svc0 log: {log:?}");
}

#[test]
fn sigkilled_child_is_reported_with_its_signal_and_its_ports_are_reused() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 1);
    lan.offer(vec![need("A", json!({}))]);
    let (gen_a, pid_a, ports_a) = spawned(&lan, "A");
    assert_banner(ports_a.tcp.unwrap(), "A", pid_a);
    // With one port per protocol the second need cannot be claimed while A runs.
    lan.open(need("B", json!({})));
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_a as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (generation, pid, exit, ordered) = down(&lan, "A", SOON);
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "down took {:?}",
        killed.elapsed()
    );
    assert_eq!(
        (generation, pid, exit.signal, ordered),
        (gen_a, pid_a, Some(9), false)
    );
    // The freed ports go to the next child: B, which waited, or A again,
    // which the master claims right behind its `down` (whichever it handles
    // first; this fake lan manager grants every claim).
    let (next, pid_next, ports_next) = lan.wait_msg("the next spawned", SOON, |m| match m {
        MasterToLan::Spawned {
            instancename,
            pid,
            ports,
            ..
        } => Some((instancename.clone(), *pid, *ports)),
        _ => None,
    });
    assert!(["A", "B"].contains(&next.as_str()), "{next}");
    assert_ne!(pid_next, pid_a);
    assert_eq!(ports_next, ports_a, "the freed ports go to the next child");
    assert_banner(ports_next.http.unwrap(), &next, pid_next);
    let st = m.status().unwrap();
    assert_eq!(st.children.len(), 1);
    assert_eq!(st.children[0].instancename, next);
}

#[test]
fn child_ignoring_sigterm_is_killed_after_its_stop_timeout() {
    let lan = FakeLan::start(Options::default());
    let _m = common::start_with(lan.addr.port(), 2, 400, |_| {});
    lan.offer(vec![need("Stubborn", json!({ "ignore_sigterm": true }))]);
    let (generation, pid, ports) = spawned(&lan, "Stubborn");
    // Listening comes after the SIGTERM handler is set, so the banner says it is armed.
    assert_banner(ports.ws.unwrap(), "Stubborn", pid);
    // A stop for another generation or instance stops nothing here: it is
    // confirmed at once with pid 0, so the lan manager can free the need.
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Stubborn"),
        generation: Generation(generation.get() + 7),
        reason: "stale".into(),
    });
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Nobody"),
        generation,
        reason: "unknown".into(),
    });
    let (g, p, _, ordered) = down(&lan, "Stubborn", SOON);
    assert_eq!((g, p, ordered), (Generation(generation.get() + 7), 0, true));
    let (g, p, _, ordered) = down(&lan, "Nobody", SOON);
    assert_eq!((g, p, ordered), (generation, 0, true));
    assert!(
        !pid_gone(pid),
        "the child of the current generation runs on"
    );
    let stopped = Instant::now();
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Stubborn"),
        generation,
        reason: "test".into(),
    });
    // The need comes back while the old child is still stopping: it is
    // claimed once the old child is gone, not before.
    lan.open(need("Stubborn", json!({})));
    let (g, p, exit, ordered) = down(&lan, "Stubborn", SOON);
    let took = stopped.elapsed();
    assert_eq!((g, p, ordered), (generation, pid, true));
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert!(
        took >= Duration::from_millis(400),
        "killed before the stop timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    lan.wait_msg("the reopened need claimed", SOON, |msg| match msg {
        MasterToLan::Claim { instancename, .. } if instancename == "Stubborn" => Some(()),
        _ => None,
    });
    spawned(&lan, "Stubborn");
}

/// Whether `sig` is in the SigIgn mask of `/proc/<pid>/status`.
fn ignores(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (sig - 1)) != 0
}

#[test]
fn a_nohup_master_stops_a_sighup_child_with_sighup() {
    let lan = FakeLan::start(Options::default());
    // As `nohup allexmaster` and a shell with `trap '' QUIT` leave it.
    let m = common::start_inheriting(
        lan.addr.port(),
        2,
        5000,
        |cfg| cfg["services"]["testsvc"]["stopsignal"] = json!("SIGHUP"),
        Inherited {
            ignored: &[
                nix::sys::signal::Signal::SIGHUP,
                nix::sys::signal::Signal::SIGQUIT,
            ],
            nofile: None,
        },
    );
    assert!(
        ignores(m.pid().unwrap(), libc::SIGHUP),
        "the master does not ignore SIGHUP"
    );
    lan.offer(vec![need("Hup", json!({}))]);
    let (generation, pid, ports) = spawned(&lan, "Hup");
    assert_banner(ports.ws.unwrap(), "Hup", pid);
    assert!(
        !ignores(pid, libc::SIGHUP),
        "the child inherited an ignored SIGHUP"
    );
    assert!(
        !ignores(pid, libc::SIGQUIT),
        "the child inherited an ignored SIGQUIT"
    );
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Hup"),
        generation,
        reason: "test".into(),
    });
    let (_, p, exit, ordered) = down(&lan, "Hup", SOON);
    assert_eq!((p, ordered), (pid, true));
    // Stopped by its stop signal, not SIGKILLed after the 5 s timeout.
    assert_eq!(exit.signal, Some(libc::SIGHUP), "{exit:?}");
}

#[test]
fn rejected_child_is_stopped_with_sigterm_and_confirmed_as_ordered() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need("R", json!({}))]);
    let (generation, pid, ports) = spawned(&lan, "R");
    assert_banner(ports.tcp.unwrap(), "R", pid);
    lan.send(LanToMaster::Rejected {
        instancename: allex_protocol::instance!("R"),
        generation,
        reason: "port check failed".into(),
    });
    let (_, _, exit, ordered) = down(&lan, "R", SOON);
    assert!(ordered);
    assert_eq!(exit.signal, Some(15), "{exit:?}");
    assert_eq!(m.status().unwrap().free.tcp, 2);
}

#[test]
fn running_marks_the_child_and_crash_is_reported_with_exit_code() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need(
        "C",
        json!({ "crash_after_ms": 300, "exit_code": 3 }),
    )]);
    let (generation, pid, _) = spawned(&lan, "C");
    lan.send(LanToMaster::Running {
        instancename: allex_protocol::instance!("C"),
        generation,
    });
    wait_until("C listed as running", SOON, || {
        let st = m.status().unwrap();
        match st.children.first() {
            Some(c) if c.state == ChildState::Running => Ok(()),
            _ => Err(Box::new(st)),
        }
    })
    .unwrap();
    let (_, p, exit, ordered) = down(&lan, "C", SOON);
    assert_eq!(
        (p, exit.code, exit.signal, ordered),
        (pid, Some(3), None, false)
    );
}

#[test]
fn killed_master_leaves_no_child_behind() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 5);
    lan.offer(vec![
        need("K1", json!({})),
        need("K2", json!({ "ignore_sigterm": true })),
        need("K3", json!({})),
    ]);
    let pids: Vec<u32> = spawned_all(&lan, &["K1", "K2", "K3"])
        .values()
        .map(|v| v.1)
        .collect();
    assert!(pids.iter().all(|p| !pid_gone(*p)));
    m.signal(nix::sys::signal::Signal::SIGKILL).ok();
    // Proc::kill signals the master's group only; the children have their own groups.
    m.proc().unwrap().wait_exit(SOON).unwrap();
    wait_until("every child of the killed master to die", SOON, || {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| !pid_gone(*p)).collect();
        if alive.is_empty() {
            Ok(())
        } else {
            Err(alive)
        }
    })
    .unwrap();
}

#[test]
fn a_hundred_children_start_at_once() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 120);
    lan.wait_msg("hello", SOON, |msg| {
        matches!(msg, MasterToLan::Hello(_)).then_some(())
    });
    let names: Vec<String> = (0..100).map(|i| format!("many{i:03}")).collect();
    let started = Instant::now();
    lan.offer(names.iter().map(|n| need(n, json!({}))).collect());
    let mut pids = HashSet::new();
    while pids.len() < names.len() {
        let pid = lan.wait_msg("the next spawned", SOON, |msg| match msg {
            MasterToLan::Spawned { pid, .. } => Some(*pid),
            _ => None,
        });
        assert!(pids.insert(pid));
    }
    let took = started.elapsed();
    eprintln!("100 children spawned in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(m.status().unwrap().children.len(), 100);
    assert_eq!(m.status().unwrap().free.ws, 20);
    // Every fork copies the master's descriptor table: once the children are
    // quiet the master holds two per child (the output pipe and the pidfd),
    // their log files are closed.
    let fd_dir = format!("/proc/{}/fd", m.pid().unwrap());
    wait_until("the quiet children's log files to be closed", SOON, || {
        let open = std::fs::read_dir(&fd_dir).unwrap().count();
        if open <= 2 * 100 + 40 {
            Ok(())
        } else {
            Err(open)
        }
    })
    .unwrap();
}

#[test]
fn a_process_in_the_childs_group_may_say_ready_and_dies_with_the_group() {
    let lan = FakeLan::start(Options::default());
    let svc = allex_testkit::binary("allex-testsvc").unwrap();
    let m = common::start_with(lan.addr.port(), 2, 3000, |cfg| {
        // The shell is the child; the test service is its child in the same group.
        cfg["services"]["wrapped"] = json!({
            "command": "/bin/sh",
            "args": ["-c", "\"$0\" & wait", svc],
        });
    });
    let mut n = need("Wrapped", json!({}));
    n.modulename = "wrapped".into();
    lan.offer(vec![n]);
    let (generation, shell_pid, ports) = spawned(&lan, "Wrapped");
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.tcp.unwrap()));
    let banner = wait_until("the wrapped service to answer", SOON, || {
        read_port_banner(addr).ok_or("no banner")
    })
    .unwrap();
    assert_ne!(banner.pid, shell_pid, "the service runs as a grandchild");
    wait_until(
        "the grandchild's ready to count for the child",
        SOON,
        || {
            let st = m.status().unwrap();
            match st.children.first() {
                Some(c) if c.ready && c.pid == shell_pid => Ok(()),
                _ => Err(Box::new(st)),
            }
        },
    )
    .unwrap();
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Wrapped"),
        generation,
        reason: "test".into(),
    });
    let (_, pid, _, ordered) = down(&lan, "Wrapped", SOON);
    assert_eq!((pid, ordered), (shell_pid, true));
    wait_until("the grandchild to die with its group", SOON, || {
        if pid_gone(banner.pid) {
            Ok(())
        } else {
            Err(banner.pid)
        }
    })
    .unwrap();
}

#[test]
fn children_get_one_output_pipe_and_no_descriptor_of_the_master() {
    let lan = FakeLan::start(Options::default());
    let m = common::start_with(lan.addr.port(), 10, 3000, |cfg| {
        // `ls` lists the shell's own descriptors, so its own do not show.
        cfg["services"]["fds"] = json!({
            "command": "/bin/sh",
            "args": ["-c", "ls -l /proc/$$/fd; echo on-stderr >&2; echo listed; exec sleep 30"],
        });
    });
    // Several at once, so the spawner threads fork concurrently: one
    // child's pipe must not leak into a sibling forked at the same moment.
    let names: Vec<String> = (0..6).map(|i| format!("Fds{i}")).collect();
    lan.offer(
        names
            .iter()
            .map(|n| {
                let mut need = need(n, json!({}));
                need.modulename = "fds".into();
                need
            })
            .collect(),
    );
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    spawned_all(&lan, &refs);
    for n in &names {
        let path = m.runtime_dir().join(format!("logs/{n}.log"));
        let log = wait_until(&format!("{n} to list its descriptors"), SOON, || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("listed") && text.contains("on-stderr") {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .unwrap();
        let fds: Vec<(u32, String)> = log
            .lines()
            .filter_map(|l| {
                let (left, target) = l.split_once(" -> ")?;
                let fd = left.rsplit(' ').next()?.parse().ok()?;
                Some((fd, target.to_string()))
            })
            .collect();
        let numbers: Vec<u32> = fds.iter().map(|f| f.0).collect();
        assert_eq!(numbers, [0, 1, 2], "{n} holds more than stdio: {log}");
        assert_eq!(fds[0].1, "/dev/null", "{n}: {log}");
        assert!(fds[1].1.starts_with("pipe:"), "{n}: {log}");
        assert_eq!(fds[1].1, fds[2].1, "{n}: stdout and stderr differ: {log}");
    }
}

/// Kills the `sleep`s a forking service left behind, also when the test fails.
struct Grandchildren(Vec<u32>);

impl Drop for Grandchildren {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn descriptors_stay_flat_over_50_cycles_of_a_service_that_forks_a_daemon() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 4);
    let fd_dir = format!("/proc/{}/fd", m.pid().unwrap());
    let open_fds = || std::fs::read_dir(&fd_dir).unwrap().count();
    let mut left = Grandchildren(Vec::new());
    // Connected and idle: what the master holds with no child at all.
    wait_until("the master to connect", SOON, || {
        if m.status().unwrap().connected {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .unwrap();
    let baseline = open_fds();
    for i in 0..50 {
        let name = format!("Fork{i}");
        lan.offer(vec![need(&name, json!({ "setsid_grandchild": true }))]);
        let (generation, pid, ports) = spawned(&lan, &name);
        assert_banner(ports.ws.unwrap(), &name, pid);
        // The daemon it forked: in another session, holding the output pipe.
        let daemon = wait_until("the daemon to show up", SOON, || {
            procscan_children_of(pid).ok_or("not yet")
        })
        .unwrap();
        left.0.push(daemon);
        lan.send(LanToMaster::Stop {
            instancename: InstanceName::new(name.clone()).unwrap(),
            generation,
            reason: "cycle".into(),
        });
        let (_, p, _, ordered) = down(&lan, &name, SOON);
        assert_eq!((p, ordered), (pid, true));
        // The master lets go of the pipe the daemon holds open (with
        // cgroups the daemon is also killed; without them it lives on).
    }
    let end = wait_until("the descriptors to come back to the baseline", SOON, || {
        let n = open_fds();
        if n <= baseline + 2 {
            Ok(n)
        } else {
            Err(n)
        }
    })
    .unwrap();
    eprintln!("descriptors before the first cycle: {baseline}, after 50: {end}");
    if m.status().unwrap().cgroup.is_some() {
        wait_until(
            "the daemons to go with their services' cgroups",
            SOON,
            || {
                let alive: Vec<u32> = left.0.iter().copied().filter(|p| !pid_gone(*p)).collect();
                if alive.is_empty() {
                    Ok(())
                } else {
                    Err(alive)
                }
            },
        )
        .unwrap();
    } else {
        assert!(
            left.0.iter().all(|p| !pid_gone(*p)),
            "without cgroups a daemon outside the group survives"
        );
    }
}

/// The first child of `pid` (found through /proc), once it has one.
fn procscan_children_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn sleeper_need(name: &str) -> Need {
    let mut n = need(name, json!({}));
    n.modulename = "sleeper".into();
    n.protocols = Some(vec![Protocol::Tcp]);
    n
}

fn sleeper_config(cfg: &mut serde_json::Value) {
    cfg["services"]["sleeper"] = json!({ "command": "/bin/sleep", "args": ["600"] });
}

#[test]
fn six_hundred_needs_run_under_a_soft_descriptor_limit_of_1024() {
    let lan = FakeLan::start(Options::default());
    let m = common::start_inheriting(
        lan.addr.port(),
        620,
        1000,
        sleeper_config,
        Inherited {
            ignored: &[],
            nofile: Some((1024, 8192)),
        },
    );
    let names: Vec<String> = (0..600).map(|i| format!("fd{i:03}")).collect();
    lan.offer(names.iter().map(|n| sleeper_need(n)).collect());
    let mut pids = HashSet::new();
    while pids.len() < names.len() {
        let pid = lan.wait_msg(
            "the next spawned",
            Duration::from_secs(60),
            |msg| match msg {
                MasterToLan::Spawned { pid, .. } => Some(*pid),
                _ => None,
            },
        );
        pids.insert(pid);
    }
    // The control socket still answers, and says what the limit is.
    let st = m.status().unwrap();
    assert_eq!(st.children.len(), 600);
    assert_eq!(
        st.fdlimit, 8192,
        "the soft limit was not raised to the hard one"
    );
    assert!(!st.fd_exhausted);
    assert!(m.log().contains("raised the descriptor limit"));
}

#[test]
fn at_the_hard_descriptor_limit_the_master_keeps_a_reserve_and_says_so() {
    let lan = FakeLan::start(Options::default());
    let m = common::start_inheriting(
        lan.addr.port(),
        200,
        1000,
        sleeper_config,
        Inherited {
            ignored: &[],
            nofile: Some((256, 256)),
        },
    );
    let names: Vec<String> = (0..150).map(|i| format!("cap{i:03}")).collect();
    lan.offer(names.iter().map(|n| sleeper_need(n)).collect());
    let fit = allex_master::fdlimit::max_children(256);
    let st = wait_until("the master to fill its descriptor budget", SOON, || {
        let st = m.status().unwrap();
        if st.children.len() == fit && st.fd_exhausted {
            Ok(st)
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
    assert_eq!(st.fdlimit, 256);
    assert!(fit < names.len());
    let table = m.status_text().unwrap();
    assert!(table.contains("descriptors: limit 256 reached"), "{table}");
    assert!(m.log().contains("descriptor limit reached"));
}

#[test]
fn a_removed_instances_logs_are_deleted_after_the_retention_and_live_ones_stay() {
    let lan = FakeLan::start(Options::default());
    let m = common::start_with(lan.addr.port(), 4, 1000, |cfg| {
        cfg["logretentionms"] = json!(300);
    });
    lan.offer(vec![need("Gone", json!({})), need("Stays", json!({}))]);
    let both = spawned_all(&lan, &["Gone", "Stays"]);
    let logs = m.runtime_dir().join("logs");
    let (gone, stays) = (logs.join("Gone.log"), logs.join("Stays.log"));
    wait_until("both logs to be written", SOON, || {
        if gone.exists() && stays.exists() {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .unwrap();
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Gone"),
        generation: both["Gone"].0,
        reason: "the need was removed".into(),
    });
    down(&lan, "Gone", SOON);
    wait_until("the removed instance's log to be deleted", SOON, || {
        if gone.exists() {
            Err("still there")
        } else {
            Ok(())
        }
    })
    .unwrap();
    assert!(stays.exists(), "a live instance's log was deleted");
    assert!(m
        .log()
        .contains("deleted logs of instances that no longer run here"));
}
