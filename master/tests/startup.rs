//! Starting the master: config file, runtime directory and socket checks, status CLI.

mod common;

use allex_protocol::DEFAULT_CONFIG_TEXT;
use allex_testkit::{wait_until, Proc, Stderr};
use common::fake_lan::{FakeLan, Options};
use common::{master_bin, need, SOON};
use serde_json::json;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

fn run_master(dir: &std::path::Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(master_bin());
    cmd.args(args).current_dir(dir);
    Proc::spawn("allexmaster", cmd, Stderr::File(dir.join("stderr"))).unwrap()
}

fn stderr_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
}

#[test]
fn missing_config_is_created_with_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    // No --config: the file is looked for in the working directory.
    let _master = run_master(dir.path(), &[]);
    let path = dir.path().join("allexmasterconfig.json");
    let text = wait_until(
        "the default config to be written",
        SOON,
        || match std::fs::read_to_string(&path) {
            Ok(t) if t == DEFAULT_CONFIG_TEXT => Ok(t),
            other => Err(other.map_err(|e| e.to_string())),
        },
    )
    .unwrap();
    assert_eq!(text, DEFAULT_CONFIG_TEXT);
}

#[test]
fn a_mistyped_config_path_is_an_error_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allexmastercofnig.json");
    let master = run_master(dir.path(), &["run", "--config", path.to_str().unwrap()]);
    let status = master.wait_exit(SOON).unwrap();
    assert!(!status.success());
    let err = stderr_of(dir.path());
    assert!(
        err.contains(&format!("{}: no such config file", path.display())),
        "{err}"
    );
    assert!(!path.exists(), "the seed was written to the mistyped path");
    assert!(!dir.path().join("allexmasterconfig.json").exists());
}

#[test]
fn bad_config_exits_non_zero_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        "{\n  \"lanmanageraddress\": \"127.0.0.1\",\n  \"portrangestart\": { \"tcp\": 15000, \"http\": 15500, \"ws\": 17000 }\n}\n",
    )
    .unwrap();
    let master = run_master(dir.path(), &["run", "--config", path.to_str().unwrap()]);
    let status = master.wait_exit(SOON).unwrap();
    assert!(!status.success());
    let err = stderr_of(dir.path());
    let want = format!("{}:3:", path.display());
    assert!(err.contains(&want), "stderr does not name {want}: {err}");
    assert!(err.contains("overlaps"), "{err}");
    assert!(master
        .lines()
        .iter()
        .all(|l| !l.starts_with("allexmaster ready")));
}

#[test]
fn socket_is_owner_only_and_a_second_master_is_refused() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    let meta = std::fs::metadata(m.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(m.socket(), m.runtime_dir().join("allexmachinemanager"));
    // Same config, same runtime directory: the live socket says a master runs there.
    let second = run_master(m.dir(), &["--config", "allexmasterconfig.json"]);
    let status = second.wait_exit(SOON).unwrap();
    assert!(!status.success());
    let err = stderr_of(m.dir());
    assert!(err.contains("another allexmaster is running"), "{err}");
    // The first master still answers.
    assert_eq!(m.status().unwrap().pid, m.pid().unwrap());
}

#[test]
fn stale_socket_is_replaced() {
    let lan = FakeLan::start(Options::default());
    let mut first = common::start(lan.addr.port(), 2);
    let (dir, socket) = (first.dir().to_path_buf(), first.socket().to_path_buf());
    first.kill().unwrap();
    assert!(socket.exists(), "a SIGKILLed master leaves its socket file");
    let again = run_master(&dir, &["--config", "allexmasterconfig.json"]);
    again
        .wait_for_line(|l| l.starts_with("allexmaster ready socket="), SOON)
        .unwrap_or_else(|e| panic!("{e}: {}", stderr_of(&dir)));
    let out = Command::new(master_bin())
        .args(["status", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let st: allex_protocol::MasterStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st.pid, again.pid());
}

#[test]
fn world_writable_runtime_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("open");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cfg = common::config_json(&dir.path().join("rt"), 1, 2, 1000);
    cfg["runtimedirectory"] = json!(rt);
    let path = dir.path().join("allexmasterconfig.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let master = run_master(dir.path(), &[]);
    assert!(!master.wait_exit(SOON).unwrap().success());
    let err = stderr_of(dir.path());
    assert!(err.contains("writable by every user"), "{err}");
    assert!(!rt.join("allexmachinemanager").exists());
}

#[test]
fn status_table_lists_children_and_free_ports() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 3);
    lan.offer(vec![need("Table1", json!({})), need("Table2", json!({}))]);
    wait_until("two children", SOON, || {
        let st = m.status().unwrap();
        if st.children.len() == 2 {
            Ok(())
        } else {
            Err(Box::new(st))
        }
    })
    .unwrap();
    let out = Command::new(master_bin())
        .args(["status", "--socket"])
        .arg(m.socket())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("free ports: tcp 1 http 1 ws 1"), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("Table")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("testsvc")
            && rows[0].contains(&format!("tcp={}", m.config().portrangestart.tcp)),
        "{text}"
    );
    // Without a master the status command fails with a clear message.
    let gone = Command::new(master_bin())
        .args(["status", "--socket"])
        .arg(m.dir().join("nothing"))
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("is allexmaster running?"));
}

#[test]
fn the_socket_answers_strangers_and_garbage_without_harm() {
    use allex_protocol::client::{ClientError, MasterClient};
    use allex_protocol::ErrorCode;
    use std::io::{BufRead, BufReader, Write};
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    // The test process is no child of the master: its `ready` is refused.
    let mut client = MasterClient::connect(m.socket()).unwrap();
    match client.ready() {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::NotYours),
        other => panic!("stranger's ready answered {other:?}"),
    }
    // A garbage line gets an error reply and the connection stays usable.
    let mut raw = std::os::unix::net::UnixStream::connect(m.socket()).unwrap();
    raw.write_all(b"this is not json\n{\"type\":\"lookup\",\"instancename\":\"../etc\"}\n{\"type\":\"status\"}\n").unwrap();
    let mut lines = BufReader::new(raw).lines();
    let first: allex_protocol::LocalReply =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(
        matches!(
            first,
            allex_protocol::LocalReply::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{first:?}"
    );
    let second: allex_protocol::LocalReply =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(
        matches!(
            second,
            allex_protocol::LocalReply::Error {
                code: ErrorCode::Invalid,
                ..
            }
        ),
        "{second:?}"
    );
    let third: allex_protocol::LocalReply =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(
        matches!(third, allex_protocol::LocalReply::Status { .. }),
        "{third:?}"
    );
    // Without a lan manager a lookup of an unknown service answers "nowhere".
    lan.unlisten();
    wait_until("the link to drop", SOON, || {
        if m.status().unwrap().connected {
            Err(())
        } else {
            Ok(())
        }
    })
    .unwrap();
    assert_eq!(
        client.lookup(&allex_protocol::instance!("Time")).unwrap(),
        None
    );
}

#[test]
fn sigterm_stops_every_child_and_exits_cleanly() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 3);
    lan.offer(vec![need("T1", json!({})), need("T2", json!({}))]);
    let pids: Vec<u32> = common::spawned_all(&lan, &["T1", "T2"])
        .values()
        .map(|v| v.1)
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = m.proc().unwrap().wait_exit(SOON).unwrap();
    assert!(status.success(), "{status:?}: {}", m.log());
    assert!(pids.iter().all(|p| common::pid_gone(*p)));
    assert!(
        !m.socket().exists(),
        "the socket file is removed on a clean exit"
    );
}

#[test]
fn status_help_does_not_promise_to_write_a_config() {
    let out = std::process::Command::new(common::master_bin())
        .args(["status", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("which `run` writes with the default seed"),
        "{help}"
    );
    assert!(
        !help.contains("written with the default seed when missing)"),
        "{help}"
    );
}

#[test]
fn it_tells_systemd_on_an_abstract_socket_when_it_serves_and_when_it_stops() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let lan = FakeLan::start(Options::default());
    let name = format!("allex-notify-test-{}", std::process::id());
    let manager =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    manager.set_read_timeout(Some(SOON)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config_json(&dir.path().join("rt"), lan.addr.port(), 2, 1000);
    let path = dir.path().join("allexmasterconfig.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut cmd = Command::new(master_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", format!("@{name}"));
    let m = Proc::spawn("allexmaster", cmd, Stderr::Null).unwrap();
    let mut buf = [0u8; 64];
    let n = manager.recv(&mut buf).expect("no READY=1 from the master");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: its socket answers a status.
    let line = m
        .wait_for_line(|l| l.starts_with("allexmaster ready socket="), SOON)
        .unwrap();
    let socket = line.trim_start_matches("allexmaster ready socket=");
    let mut client =
        allex_protocol::client::MasterClient::connect(std::path::Path::new(socket)).unwrap();
    assert_eq!(client.status().unwrap().pid, m.pid());
    m.kill(nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = manager
        .recv(&mut buf)
        .expect("no STOPPING=1 from the master");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(m.wait_exit(SOON).unwrap().success());
}
