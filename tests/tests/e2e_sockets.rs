//! `sockets: inherit` over the real binaries: the master binds the
//! service's port and keeps it across the service's deaths, so a client
//! connecting every millisecond is never refused while it is SIGKILLed and
//! replaced; the replacement gets the same socket through `LISTEN_FDS`.

use allex_e2e::{ok, wait_listed, DEADLINE};
use allex_sim::harness::{LanManager, LanOptions, Master, MasterOptions};
use allex_sim::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Kills of the service in a row.
const KILLS: usize = 5;

/// A lan manager and a master whose `testsvc` entry inherits its sockets.
fn inheriting() -> (LanManager, Master) {
    let lm = ok(LanManager::start(LanOptions::default()));
    let m = ok(Master::start_edited(
        &MasterOptions::new(lm.addr()),
        |cfg| {
            cfg["services"]["testsvc"]["sockets"] = json!("inherit");
        },
    ));
    (lm, m)
}

#[test]
fn a_port_held_by_the_master_never_refuses_across_kills() {
    let (lm, m) = inheriting();
    let mut need = allex_protocol::Need::new(
        "testsvc",
        allex_protocol::InstanceName::new("Kept").unwrap(),
    );
    need.protocols = Some(vec![allex_protocol::Protocol::Tcp]);
    ok(lm.need_add(&need));
    let mut rec = wait_listed(&lm, "Kept", None);
    let port = rec.ports.tcp.unwrap();
    assert!(
        m.log().contains("holding the service's sockets"),
        "{}",
        m.log()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (tried, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, tried, refused) = (stop.clone(), tried.clone(), refused.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    for _ in 0..KILLS {
        kill(Pid::from_raw(rec.pid as i32), Signal::SIGKILL).unwrap();
        rec = wait_listed(&lm, "Kept", Some(rec.pid));
        assert_eq!(rec.ports.tcp, Some(port), "the same port every time");
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (tried, refused) = (
        tried.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert!(tried > 0);
    assert_eq!(refused, 0, "{refused} of {tried} connections refused");
    // The need leaves this master: the socket goes with it.
    ok(lm.need_remove("Kept"));
    wait_until(
        "the port is closed",
        DEADLINE,
        || match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap();
}

#[test]
fn a_service_that_says_ready_on_notify_socket_is_listed_running() {
    let (lm, m) = inheriting();
    // Ready only through sd_notify, never on the master's socket.
    let mut need = allex_protocol::Need::new(
        "testsvc",
        allex_protocol::InstanceName::new("Notified").unwrap(),
    );
    need.propertyhash = json!({"no_ready": true, "notify": true})
        .as_object()
        .unwrap()
        .clone();
    ok(lm.need_add(&need));
    wait_listed(&lm, "Notified", None);
    let child = ok(m.status())
        .children
        .into_iter()
        .find(|c| c.instancename == "Notified")
        .unwrap();
    assert!(child.ready, "{child:?}");
}
