//! Hostile orders from the lan manager, hostile clients on the Unix socket,
//! and a runtime directory that is unsafe or disappears.

mod common;

use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{LanToMaster, LocalReply, MasterToLan, Need};
use allex_testkit::{wait_until, Proc, Stderr};
use common::fake_lan::{FakeLan, Options};
use common::{master_bin, need, pid_gone, spawned, SOON};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Command;

/// One request line on the socket and its reply.
fn ask(stream: &mut UnixStream, line: &[u8]) -> LocalReply {
    stream.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

/// Waits until the child is marked ready (its `ready` reached the master).
fn wait_ready(m: &common::Master, instance: &str) {
    wait_until(&format!("{instance} ready"), SOON, || {
        let st = m.status().unwrap();
        match st.children.iter().find(|c| c.instancename == instance) {
            Some(c) if c.ready => Ok(()),
            _ => Err(Box::new(st)),
        }
    })
    .unwrap();
}

#[test]
fn a_grant_outside_the_catalogue_is_refused_and_stray_stops_change_nothing() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need("Keep", json!({}))]);
    let (generation, pid, _) = spawned(&lan, "Keep");

    // An order nobody claimed, for a module this master does not have: it
    // must not become a command, a file or a child.
    let mut evil = Need::new("sh", allex_protocol::instance!("Evil"));
    evil.propertyhash
        .insert("command".into(), json!("touch /tmp/allex-pwned"));
    lan.send(LanToMaster::Grant {
        need: evil,
        generation: Generation(4242),
        deadline_ms: 1000,
    });
    let reason = lan.wait_msg("spawn_failed", SOON, |msg| match msg {
        MasterToLan::SpawnFailed {
            instancename,
            generation: Generation(4242),
            reason,
        } if instancename == "Evil" => Some(reason.clone()),
        _ => None,
    });
    assert!(
        reason.contains("not in this master's catalogue"),
        "{reason}"
    );

    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Nobody"),
        generation,
        reason: "unknown instance".into(),
    });
    lan.send(LanToMaster::Stop {
        instancename: allex_protocol::instance!("Keep"),
        generation: Generation(generation.get() + 1),
        reason: "another generation".into(),
    });
    lan.send(LanToMaster::Rejected {
        instancename: allex_protocol::instance!("Keep"),
        generation: Generation(generation.get().wrapping_add(1000)),
        reason: "stale rejection".into(),
    });
    wait_until("the stray orders to be logged", SOON, || {
        let log = m.log();
        (log.contains("stop for an instance not running here: confirmed")
            && log
                .matches("stop for another generation: confirmed")
                .count()
                >= 2)
            .then_some(())
            .ok_or(())
    })
    .unwrap();
    let st = m.status().unwrap();
    assert_eq!(st.children.len(), 1, "{st:?}");
    assert_eq!(
        (st.children[0].instancename.as_str(), st.children[0].pid),
        ("Keep", pid)
    );
    assert!(!pid_gone(pid));
    assert!(!m.runtime_dir().join("logs/Evil.log").exists());
    // Each stray order is confirmed with pid 0 (nothing of it runs here);
    // no down names the child that runs.
    let downs: Vec<(InstanceName, Generation, u32)> = lan
        .drain()
        .into_iter()
        .filter_map(|s| match s {
            common::fake_lan::Seen::Msg(MasterToLan::Down {
                instancename,
                generation,
                pid,
                ..
            }) => Some((instancename, generation, pid)),
            _ => None,
        })
        .collect();
    assert!(
        downs.iter().all(|(_, _, p)| *p == 0),
        "a stray order stopped a child: {downs:?}"
    );
    assert!(
        downs.contains(&(allex_protocol::instance!("Nobody"), generation, 0))
            && downs.contains(&(
                allex_protocol::instance!("Keep"),
                Generation(generation.get() + 1),
                0
            ))
            && downs.contains(&(
                allex_protocol::instance!("Keep"),
                Generation(generation.get().wrapping_add(1000)),
                0
            )),
        "{downs:?}"
    );
}

#[test]
fn oversized_and_cut_frames_and_a_thousand_clients_leave_the_socket_serving() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 4);
    lan.offer(vec![need("Before", json!({}))]);
    spawned(&lan, "Before");

    // A line over 64 KiB: told why, then closed.
    let mut big = UnixStream::connect(m.socket()).unwrap();
    let mut line = vec![b'x'; 100 << 10];
    line.push(b'\n');
    // The master may close before it read everything; that is its right.
    let _ = big.write_all(&line);
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    let first = answer.lines().next().unwrap_or_default();
    let reply: LocalReply =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert!(
        matches!(
            reply,
            LocalReply::Error {
                code: allex_protocol::ErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(
        answer.lines().count(),
        1,
        "closed after the error: {answer:?}"
    );

    // Half a frame, then gone.
    let mut cut = UnixStream::connect(m.socket()).unwrap();
    cut.write_all(b"{\"type\":\"sta").unwrap();
    drop(cut);

    // A thousand clients connected at once, every request in flight before
    // any answer is read: every one is answered.
    let mut clients: Vec<UnixStream> = (0..1000)
        .map(|i| UnixStream::connect(m.socket()).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    for c in &mut clients {
        c.write_all(b"{\"type\":\"status\"}\n").unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(SOON)).unwrap();
        let mut reply = String::new();
        BufReader::new(c).read_line(&mut reply).unwrap();
        let r: LocalReply =
            serde_json::from_str(&reply).unwrap_or_else(|e| panic!("client {i}: {e}: {reply:?}"));
        assert!(matches!(r, LocalReply::Status { .. }), "client {i}: {r:?}");
    }

    // The master still serves the lan manager and its children.
    lan.offer(vec![need("After", json!({}))]);
    spawned(&lan, "After");
    wait_ready(&m, "After");
    let mut again = UnixStream::connect(m.socket()).unwrap();
    assert!(matches!(
        ask(&mut again, b"{\"type\":\"status\"}\n"),
        LocalReply::Status { .. }
    ));
}

#[test]
fn a_runtime_directory_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        allex_testkit::skip(
            "a_runtime_directory_owned_by_another_user_is_refused",
            "chown to another user needs root",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("theirs");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    // nobody
    std::os::unix::fs::chown(&rt, Some(65534), Some(65534)).unwrap();
    let mut cfg = common::config_json(&dir.path().join("rt"), 1, 2, 1000);
    cfg["runtimedirectory"] = json!(rt);
    let path = dir.path().join("allexmasterconfig.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut cmd = Command::new(master_bin());
    cmd.arg("run").arg("--config").arg(&path);
    let stderr = dir.path().join("stderr");
    let master = Proc::spawn("allexmaster", cmd, Stderr::File(stderr.clone())).unwrap();
    let status = master.wait_exit(SOON).unwrap();
    assert!(!status.success());
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        err.contains(&rt.display().to_string()) && err.contains("is owned by uid 65534"),
        "{err}"
    );
    assert!(!rt.join("allexmachinemanager").exists());
}

#[test]
fn a_removed_runtime_directory_is_recreated_and_children_keep_running() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need("Survivor", json!({}))]);
    let (_, pid, _) = spawned(&lan, "Survivor");
    wait_ready(&m, "Survivor");
    let rt = m.runtime_dir().to_path_buf();
    let before = std::fs::metadata(m.socket()).unwrap().ino();
    std::fs::remove_dir_all(&rt).unwrap();

    wait_until(
        "the socket to be back",
        SOON,
        || match UnixStream::connect(m.socket()) {
            Ok(s) => Ok(s),
            Err(e) => Err(e.to_string()),
        },
    )
    .unwrap();
    let meta = std::fs::metadata(&rt).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700, "recreated owner-only");
    assert_ne!(std::fs::metadata(m.socket()).unwrap().ino(), before);
    assert_eq!(std::fs::metadata(m.socket()).unwrap().mode() & 0o777, 0o600);
    let st = m.status().unwrap();
    assert_eq!(st.children.len(), 1);
    assert_eq!(st.children[0].pid, pid);
    assert!(!pid_gone(pid));
    assert!(m.log().contains("master socket recreated"), "{}", m.log());
    // New children find their master on the new socket.
    lan.offer(vec![need("Newborn", json!({}))]);
    spawned(&lan, "Newborn");
    wait_ready(&m, "Newborn");
}

#[test]
fn a_peer_of_another_user_is_refused_even_when_the_socket_mode_was_loosened() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        allex_testkit::skip(
            "a_peer_of_another_user_is_refused_even_when_the_socket_mode_was_loosened",
            "connecting as another user needs root",
        );
        return;
    }
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    // Someone opened the way to the socket after the master's own checks.
    for (p, mode) in [
        (m.dir().to_path_buf(), 0o711),
        (m.runtime_dir().to_path_buf(), 0o711),
        (m.socket().to_path_buf(), 0o666),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // The build's own binary may sit under a directory nobody cannot enter
    // (a clone in a 0700 temp dir): run a copy from the test's directory.
    let bin = m.dir().join("allexmaster-for-nobody");
    std::fs::copy(master_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin)
        .args(["status", "--json", "--socket"])
        .arg(m.socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody got the status: {err}");
    assert!(err.contains("uid 65534 is not the master's user"), "{err}");
    assert!(m.log().contains("refused a connection from another user"));
    // Our own user is still served.
    assert!(m.status().unwrap().children.is_empty());
}
