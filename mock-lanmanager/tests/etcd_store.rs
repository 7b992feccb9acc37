//! `--store etcd://`: the needs, running records, generations and master
//! identities live in a real etcd (its own data directory and loopback
//! ports, killed on drop), so a lan manager started in another directory
//! on the same etcd carries on from where a SIGKILLed one stopped.

mod common;

use allex_protocol::frame::encode;
use allex_protocol::{ErrorCode, LanToMaster, MasterToLan, Need, NeedState};
use allex_testkit::etcd::Etcd;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// A real etcd, or `None` (the test is skipped) where it is not installed.
fn etcd(test: &str) -> Option<Etcd> {
    if !Etcd::available() {
        allex_testkit::skip::skip(test, "no etcd here (.ci/run installs etcd-server as root)");
        return None;
    }
    Some(Etcd::start().unwrap_or_else(|e| panic!("{e}")))
}

/// Longer than a lease TTL (2 s) plus an election, with room for a loaded machine.
const LEAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

fn on(etcd: &Etcd) -> LanOptions {
    LanOptions {
        timings: Timings::patient(),
        extra_args: vec!["--store".into(), etcd.store_arg()],
        ..LanOptions::default()
    }
}

#[tokio::test]
async fn a_lan_manager_in_another_directory_carries_on_from_the_state_in_etcd() {
    let Some(etcd) = etcd("a_lan_manager_in_another_directory_carries_on_from_the_state_in_etcd")
    else {
        return;
    };
    let mut first = LanManager::start(on(&etcd)).unwrap();
    first.wait_leading(LEAD_DEADLINE).unwrap();
    let need = Need::new("svc", allex_protocol::instance!("A"));
    first.need_add(&need).unwrap();
    let mut m1 = FakeMaster::connect(first.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g1 = m1.run_service("A", 100, svc.ports).await;
    drop(m1);
    first.kill().unwrap();

    let second = LanManager::start(on(&etcd)).unwrap();
    // The SIGKILLed one's lease lapses first.
    second.wait_leading(LEAD_DEADLINE).unwrap();
    assert_ne!(second.dir(), first.dir());
    // The need, and who ran it: held for m1 through the settle period.
    let st = second.status().unwrap();
    let a = st
        .needs
        .iter()
        .find(|n| n.need.instancename == "A")
        .unwrap_or_else(|| panic!("the need is gone: {st:?}"));
    assert_eq!(a.state, NeedState::Settling, "{a:?}");
    assert_eq!(a.master.as_deref(), Some("m1"));
    // m1's identity: another secret under its name is refused.
    let mut impostor = hello("m1", &["svc"], Vec::new());
    impostor.secret = "not-the-secret-m1-bound".into();
    let mut ws = raw(second.addr()).await;
    ws.send(Message::text(encode(&MasterToLan::Hello(impostor))))
        .await
        .unwrap();
    match next(&mut ws).await {
        Next::Text(t) => assert!(
            matches!(
                serde_json::from_str::<LanToMaster>(&t),
                Ok(LanToMaster::Error {
                    code: ErrorCode::IdentityMismatch,
                    ..
                })
            ),
            "{t}"
        ),
        Next::Closed(why) => panic!("closed without a refusal: {why}"),
    }
    // Generations go on above what the first one handed out.
    second
        .need_add(&Need::new("svc", allex_protocol::instance!("B")))
        .unwrap();
    let mut m2 = FakeMaster::connect(second.addr(), "m2", &["svc"]).await;
    let g2 = m2.grant("B").await;
    assert!(g2 > g1, "{g2:?} after {g1:?}");
    // And none of it is in the second one's files.
    let files = second.dir().join(".allexlanmanager");
    for f in ["needs", "needs.runtime", "masters", "generation", "running"] {
        assert!(!files.join(f).exists(), "{f} written beside etcd");
    }
    // A removal through one is seen by the next.
    second.need_remove("B").unwrap();
    drop(m2);
    drop(second);
    let third = LanManager::start(on(&etcd)).unwrap();
    third.wait_leading(LEAD_DEADLINE).unwrap();
    let names: Vec<String> = third
        .status()
        .unwrap()
        .needs
        .iter()
        .map(|n| n.need.instancename.to_string())
        .collect();
    assert_eq!(names, vec!["A".to_string()]);
}

#[test]
fn a_store_that_cannot_be_used_stops_the_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let run = |store: &str| {
        let mut cmd = std::process::Command::new(binary());
        cmd.args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
            "--store",
            store,
        ])
        .arg("--dir")
        .arg(dir.path());
        allex_testkit::process::run_with_deadline("allexlanmanager run", cmd, SOON).unwrap()
    };
    let out = run("etcd://no-port-here");
    assert!(!out.status.success());
    let err = out.stderr.clone();
    assert!(err.contains("\"no-port-here\" is not HOST:PORT"), "{err}");
    let out = run("zookeeper://10.0.0.1:2181");
    assert!(out.stderr.clone().contains("expected `files` or `etcd://"));
    // Nothing listens there: the start fails on etcd, naming it.
    let port = allex_testkit::ports::free_port().unwrap();
    let out = run(&format!("etcd://127.0.0.1:{port}"));
    assert!(!out.status.success());
    let err = out.stderr.clone();
    assert!(
        err.contains(&format!("etcd connect to 127.0.0.1:{port}")) || err.contains("etcd "),
        "{err}"
    );
    assert!(!dir.path().join(".allexlanmanager/needs").exists());
}
