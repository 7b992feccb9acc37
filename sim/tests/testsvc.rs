//! allex-testsvc and the process/wait helpers, over real processes and sockets.

use allex_protocol::frame::{decode_text, encode, MAX_LOCAL_FRAME};
use allex_protocol::local::{LocalReply, LocalRequest};
use allex_protocol::spawn::SpawnInfo;
use allex_protocol::types::{Ports, ServiceLocation};
use allex_sim::process::{Proc, ProcError, Stderr};
use allex_sim::wait::{read_port_banner, wait_port_accepts, wait_port_closed, Banner};
use allex_sim::{binary, ports::free_port};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// A testsvc command with a hand-made ALLEX_SPAWN; `None` ports are left unset.
fn testsvc(instance: &str, props: Value, ports: [Option<u16>; 3]) -> Command {
    let info = SpawnInfo {
        modulename: "testsvc".into(),
        instancename: allex_protocol::InstanceName::new(instance).unwrap(),
        propertyhash: props.as_object().cloned().unwrap_or_default(),
        tcpport: ports[0],
        httpport: ports[1],
        wsport: ports[2],
        masterpid: std::process::id(),
    };
    let mut cmd = Command::new(binary("allex-testsvc").unwrap());
    cmd.env("ALLEX_SPAWN", serde_json::to_string(&info).unwrap())
        .env("ALLEX_MODULE", "testsvc")
        .env("ALLEX_INSTANCE", instance)
        .env_remove("ALLEX_MASTER_SOCKET");
    for (var, port) in ["ALLEX_TCP_PORT", "ALLEX_HTTP_PORT", "ALLEX_WS_PORT"]
        .iter()
        .zip(ports)
    {
        match port {
            Some(p) => cmd.env(var, p.to_string()),
            None => cmd.env_remove(var),
        };
    }
    cmd
}

/// The port the service reports for `proto` on stdout.
fn listening(p: &Proc, proto: &str) -> SocketAddr {
    let prefix = format!("listening {proto} ");
    let line = p.wait_for_line(|l| l.starts_with(&prefix), T).unwrap();
    let port: u16 = line[prefix.len()..].parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn every_port_answers_with_the_instance_and_pid() {
    let p = Proc::spawn(
        "svc",
        testsvc("Time", json!({}), [Some(0), Some(0), Some(0)]),
        Stderr::Inherit,
    )
    .unwrap();
    let want = Banner {
        instance: "Time".into(),
        pid: p.pid(),
    };
    for proto in ["tcp", "http", "ws"] {
        let addr = listening(&p, proto);
        wait_port_accepts(addr, T).unwrap();
        assert_eq!(read_port_banner(addr), Some(want.clone()), "{proto}");
    }
    let mut raw = String::new();
    TcpStream::connect(listening(&p, "http"))
        .unwrap()
        .read_to_string(&mut raw)
        .unwrap();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw:?}");
    assert!(
        raw.ends_with(&format!("\r\n\r\nallex-testsvc Time {}\n", p.pid())),
        "{raw:?}"
    );
}

#[test]
fn an_http_client_that_sends_a_request_gets_the_whole_reply() {
    let p = Proc::spawn(
        "svc",
        testsvc("Web", json!({}), [None, Some(0), None]),
        Stderr::Inherit,
    )
    .unwrap();
    let addr = listening(&p, "http");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.contains(&format!("allex-testsvc Web {}", p.pid())),
        "{raw:?}"
    );
}

#[test]
fn listen_knob_limits_the_ports_and_never_listen_binds_none() {
    let (tcp, http) = (free_port().unwrap(), free_port().unwrap());
    let p = Proc::spawn(
        "svc",
        testsvc(
            "Only",
            json!({"listen": ["http"]}),
            [Some(tcp), Some(http), None],
        ),
        Stderr::Inherit,
    )
    .unwrap();
    let addr = listening(&p, "http");
    assert_eq!(addr.port(), http);
    assert_eq!(read_port_banner(addr).map(|b| b.pid), Some(p.pid()));
    assert!(
        TcpStream::connect(("127.0.0.1", tcp)).is_err(),
        "tcp port must stay closed"
    );
    assert!(!p.lines().iter().any(|l| l.starts_with("listening tcp")));

    let port = free_port().unwrap();
    let q = Proc::spawn(
        "svc",
        testsvc(
            "Mute",
            json!({"never_listen": true, "crash_after_ms": 300}),
            [Some(port), None, None],
        ),
        Stderr::Inherit,
    )
    .unwrap();
    q.wait_exit(T).unwrap();
    assert!(
        !q.lines().iter().any(|l| l.starts_with("listening")),
        "{:?}",
        q.lines()
    );
}

#[test]
fn crash_after_ms_exits_with_the_code() {
    let p = Proc::spawn(
        "svc",
        testsvc(
            "Crash",
            json!({"crash_after_ms": 200, "exit_code": 7}),
            [Some(0), None, None],
        ),
        Stderr::Inherit,
    )
    .unwrap();
    let addr = listening(&p, "tcp");
    assert_eq!(read_port_banner(addr).map(|b| b.pid), Some(p.pid()));
    let status = p.wait_exit(T).unwrap();
    assert_eq!(status.code(), Some(7));
    wait_port_closed(addr, T).unwrap();
}

#[test]
fn exit_at_once_exits_with_the_default_code_before_listening() {
    let p = Proc::spawn(
        "svc",
        testsvc("Gone", json!({"exit_at_once": true}), [Some(0), None, None]),
        Stderr::Inherit,
    )
    .unwrap();
    assert_eq!(p.wait_exit(T).unwrap().code(), Some(1));
    p.wait_for_line(|l| l == "exiting 1", T).unwrap();
    assert!(!p.lines().iter().any(|l| l.starts_with("listening")));
}

#[test]
fn ignore_sigterm_survives_sigterm_but_not_sigkill() {
    let p = Proc::spawn(
        "svc",
        testsvc(
            "Stubborn",
            json!({"ignore_sigterm": true}),
            [Some(0), None, None],
        ),
        Stderr::Inherit,
    )
    .unwrap();
    let addr = listening(&p, "tcp");
    p.kill(Signal::SIGTERM).unwrap();
    match p.wait_exit(Duration::from_millis(500)) {
        Err(ProcError::StillRunning { .. }) => {}
        other => panic!("SIGTERM should be ignored, got {other:?}"),
    }
    assert_eq!(read_port_banner(addr).map(|b| b.pid), Some(p.pid()));
    p.kill(Signal::SIGKILL).unwrap();
    assert_eq!(p.wait_exit(T).unwrap().signal(), Some(9));

    // Without the knob SIGTERM ends it, so the test above can tell the difference.
    let q = Proc::spawn(
        "svc",
        testsvc("Meek", json!({}), [Some(0), None, None]),
        Stderr::Inherit,
    )
    .unwrap();
    listening(&q, "tcp");
    q.kill(Signal::SIGTERM).unwrap();
    assert_eq!(q.wait_exit(T).unwrap().signal(), Some(15));
}

#[test]
fn spam_bytes_reach_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr.log");
    let p = Proc::spawn(
        "svc",
        testsvc(
            "Loud",
            json!({"spam_bytes": 25_000, "exit_at_once": true}),
            [None, None, None],
        ),
        Stderr::File(err.clone()),
    )
    .unwrap();
    p.wait_for_line(|l| l == "exiting 1", T).unwrap();
    let spam: usize = p
        .lines()
        .iter()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b == b'x'))
        .map(|l| l.len() + 1)
        .sum();
    assert_eq!(spam, 25_000);
    p.wait_exit(T).unwrap();
    let logged = std::fs::read_to_string(&err).unwrap();
    let xs: usize = logged
        .lines()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b == b'x'))
        .map(|l| l.len() + 1)
        .sum();
    assert_eq!(xs, 25_000);
}

#[test]
fn dropping_a_proc_kills_its_whole_group() {
    // The shell's background child shares the group; only a group kill reaches it.
    let svc = binary("allex-testsvc").unwrap();
    let cmd = testsvc("Grandchild", json!({}), [Some(0), None, None]);
    let inner_env: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(format!("{} & wait", svc.display()));
    for (k, v) in inner_env {
        sh.env(k, v);
    }
    let p = Proc::spawn("sh", sh, Stderr::Inherit).unwrap();
    let addr = listening(&p, "tcp");
    let banner = read_port_banner(addr).unwrap();
    assert_ne!(banner.pid, p.pid(), "the service is the shell's child");
    drop(p);
    wait_port_closed(addr, T).unwrap();
    allex_sim::wait_until(
        "the grandchild to be gone",
        T,
        || match nix::sys::signal::kill(nix::unistd::Pid::from_raw(banner.pid as i32), None) {
            Err(nix::errno::Errno::ESRCH) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap();
}

#[test]
fn wait_for_line_fails_clearly_when_stdout_closes() {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg("echo one; echo two");
    let p = Proc::spawn("sh", cmd, Stderr::Inherit).unwrap();
    let e = p
        .wait_for_line(|l| l == "three", T)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stdout closed") && e.contains("two"), "{e}");
    let (i, l) = p.wait_for_line_from(1, |l| l.starts_with('t'), T).unwrap();
    assert_eq!((i, l.as_str()), (1, "two"));
}

/// A stand-in master socket: answers `ready` with ack and `lookup` with
/// `location`, for `requests` requests; returns what it was asked.
fn fake_master(
    path: &std::path::Path,
    requests: usize,
    location: ServiceLocation,
) -> std::thread::JoinHandle<Vec<LocalRequest>> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let writer = conn;
        let mut seen = Vec::new();
        for _ in 0..requests {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let req: LocalRequest = decode_text(line.trim_end(), MAX_LOCAL_FRAME).unwrap();
            let reply = match &req {
                LocalRequest::Ready => LocalReply::Ack,
                LocalRequest::Lookup { .. } => LocalReply::Location {
                    location: Some(location.clone()),
                },
                LocalRequest::Status => panic!("unexpected status"),
            };
            writeln!(&writer, "{}", encode(&reply)).unwrap();
            seen.push(req);
        }
        seen
    })
}

fn time_location() -> ServiceLocation {
    ServiceLocation {
        instancename: allex_protocol::instance!("Time"),
        modulename: "timesvc".into(),
        address: "10.0.0.7".into(),
        ports: Ports {
            tcp: Some(15000),
            http: None,
            ws: None,
        },
    }
}

#[test]
fn says_ready_and_prints_lookups_over_the_master_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allexmachinemanager");
    let master = fake_master(&path, 2, time_location());
    let mut cmd = testsvc("Client", json!({"lookup": "Time"}), [None, None, None]);
    cmd.env("ALLEX_MASTER_SOCKET", &path);
    let p = Proc::spawn("svc", cmd, Stderr::Inherit).unwrap();
    p.wait_for_line(|l| l == "ready", T).unwrap();
    let line = p
        .wait_for_line(|l| l.starts_with("lookup Time "), T)
        .unwrap();
    let got: Option<ServiceLocation> = serde_json::from_str(&line["lookup Time ".len()..]).unwrap();
    assert_eq!(got, Some(time_location()));
    assert_eq!(
        master.join().unwrap(),
        vec![
            LocalRequest::Ready,
            LocalRequest::Lookup {
                instancename: allex_protocol::instance!("Time")
            }
        ]
    );
}

#[test]
fn no_ready_keeps_quiet_but_still_looks_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allexmachinemanager");
    let master = fake_master(&path, 1, time_location());
    let mut cmd = testsvc(
        "Shy",
        json!({"no_ready": true, "lookup": "Time"}),
        [None, None, None],
    );
    cmd.env("ALLEX_MASTER_SOCKET", &path);
    let p = Proc::spawn("svc", cmd, Stderr::Inherit).unwrap();
    p.wait_for_line(|l| l.starts_with("lookup Time "), T)
        .unwrap();
    assert_eq!(
        master.join().unwrap(),
        vec![LocalRequest::Lookup {
            instancename: allex_protocol::instance!("Time")
        }]
    );
    assert!(!p.lines().iter().any(|l| l == "ready"));
}

#[test]
fn delay_listen_ms_holds_the_port_back() {
    let port = free_port().unwrap();
    let started = std::time::Instant::now();
    let p = Proc::spawn(
        "svc",
        testsvc(
            "Slow",
            json!({"delay_listen_ms": 400}),
            [Some(port), None, None],
        ),
        Stderr::Inherit,
    )
    .unwrap();
    p.wait_for_line(|l| l.ends_with(" started"), T).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_port_accepts(addr, T).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(read_port_banner(addr).map(|b| b.pid), Some(p.pid()));
}

#[test]
fn a_mistyped_knob_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr.log");
    let p = Proc::spawn(
        "svc",
        testsvc(
            "Typo",
            json!({"crash_after_ms": "soon"}),
            [Some(0), None, None],
        ),
        Stderr::File(err.clone()),
    )
    .unwrap();
    assert_eq!(p.wait_exit(T).unwrap().code(), Some(1));
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(
        text.contains("propertyhash.crash_after_ms must be a non-negative integer"),
        "{text}"
    );
}
