//! A master's identity: a name bound to the secret first seen for it, one
//! live connection per name, and records only with a process behind them.

mod common;

use allex_protocol::frame::encode;
use allex_protocol::{ErrorCode, InventoryEntry, LanToMaster, MasterHello, MasterToLan, NeedState};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Sends `h` on a fresh connection; returns the error it gets and the close reason.
async fn refused_hello(addr: std::net::SocketAddr, h: &MasterHello) -> (ErrorCode, String, String) {
    let mut ws = raw(addr).await;
    ws.send(Message::text(encode(&MasterToLan::Hello(h.clone()))))
        .await
        .unwrap();
    let first = match next(&mut ws).await {
        Next::Text(t) => t,
        Next::Closed(why) => panic!("closed without an error frame: {why}"),
    };
    let (code, message) = match serde_json::from_str::<LanToMaster>(&first).unwrap() {
        LanToMaster::Error { code, message, .. } => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let reason = match next(&mut ws).await {
        Next::Closed(why) => why,
        Next::Text(t) => panic!("refused connection still talks: {t}"),
    };
    (code, message, reason)
}

fn impostor(name: &str) -> MasterHello {
    let mut h = hello(name, &["svc"], Vec::new());
    h.secret = "an-impostor-guessing-secrets".into();
    h
}

#[tokio::test]
async fn an_impostor_with_another_secret_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut real = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g = real.run_service("A0", 100, svc.ports).await;
    let before = lm.status().unwrap();

    // No token is set: without identities, this hello would take over m1.
    let (code, message, reason) = refused_hello(lm.addr(), &impostor("m1")).await;
    assert_eq!(code, ErrorCode::IdentityMismatch);
    assert!(
        message.contains("allexlanmanager master forget m1"),
        "{message}"
    );
    assert!(reason.contains("identity_mismatch"), "{reason}");

    // The real master's link, record and claims are untouched.
    let st = lm.status().unwrap();
    assert_eq!(st.running, before.running);
    assert!(st.masters.iter().any(|m| m.name == "m1" && m.connected));
    assert!(
        real.drain().await.is_empty(),
        "the real master was told something"
    );
    real.down("A0", g, 100, 5, true).await;
    eventually("A0 released by its real master", || {
        lm.status().unwrap().running.is_empty().then_some(())
    })
    .await;
    let binding = std::fs::read_to_string(dir.path().join(".allexlanmanager/masters")).unwrap();
    assert!(
        binding.contains("\"m1\"") && binding.contains("sha256:"),
        "{binding}"
    );
    assert!(
        !binding.contains("test-secret-of-m1"),
        "the secret itself is on disk"
    );
}

#[tokio::test]
async fn the_binding_survives_a_restart_and_forget_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    FakeMaster::connect(lm.addr(), "m1", &["svc"])
        .await
        .close()
        .await;
    lm.kill().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let (code, ..) = refused_hello(lm.addr(), &impostor("m1")).await;
    assert_eq!(
        code,
        ErrorCode::IdentityMismatch,
        "binding lost in a restart"
    );

    let out = lm.cli(&["master", "forget", "m1"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("forgot master m1"));
    // The next hello under the name binds the new secret, and the old one is refused.
    FakeMaster::connect_with(lm.addr(), impostor("m1"))
        .await
        .close()
        .await;
    let (code, ..) = refused_hello(lm.addr(), &hello("m1", &["svc"], Vec::new())).await;
    assert_eq!(code, ErrorCode::IdentityMismatch);
    let out = lm.cli(&["master", "forget", "nobody"]).unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("no master nobody is bound"));
}

#[tokio::test]
async fn a_second_live_connection_for_a_name_is_refused_and_the_first_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut first = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    first.run_service("A0", 100, svc.ports).await;
    let before = lm.status().unwrap();
    let from = before.masters[0]
        .peer
        .clone()
        .expect("peer of a connected master");

    // A clone: same name, same secret, and the first one still answers.
    // The first must be read meanwhile, or it could not answer the ping.
    let clone = hello("m1", &["svc"], Vec::new());
    let (refusal, seen) = tokio::join!(refused_hello(lm.addr(), &clone), async {
        let mut seen = Vec::new();
        while let Ok(m) =
            tokio::time::timeout(std::time::Duration::from_millis(2500), first.recv()).await
        {
            seen.push(m);
        }
        seen
    });
    let (code, message, _) = refusal;
    assert_eq!(code, ErrorCode::NameInUse);
    assert!(message.contains(&from), "{message} does not name {from}");
    assert!(seen.is_empty(), "the first connection was told {seen:?}");
    let st = lm.status().unwrap();
    assert_eq!(
        st.running, before.running,
        "the first master's service changed"
    );
    assert!(st
        .masters
        .iter()
        .any(|m| m.name == "m1" && m.connected && m.peer.as_deref() == Some(from.as_str())));
    assert!(!lm.log().contains("replac"), "the first link was replaced");
}

#[tokio::test]
async fn a_connection_whose_old_link_does_not_answer_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut old = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g = old.run_service("A0", 100, svc.ports).await;
    // `old` is no longer read: its socket is open but nothing answers a ping,
    // as with a machine that lost power. The master comes back with its service.
    let inventory = vec![InventoryEntry {
        instancename: allex_protocol::instance!("A0"),
        modulename: "svc".into(),
        generation: g,
        pid: 100,
        ports: svc.ports,
    }];
    let mut back = FakeMaster::connect_with(lm.addr(), hello("m1", &["svc"], inventory)).await;
    assert!(back
        .drain()
        .await
        .iter()
        .all(|m| !matches!(m, LanToMaster::Stop { .. })));
    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), 1);
    assert_eq!((st.running[0].pid, st.running[0].generation), (100, g));
    assert!(lm.log().contains("did not answer a ping"));
    drop(old);
}

#[tokio::test]
async fn a_record_the_inventory_does_not_confirm_is_released_and_what_runs_is_adopted() {
    // The impostor finding: a record with a pid nobody runs must not outlive
    // the real master's reconnect.
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let old_g = m.run_service("A0", 100, svc.ports).await;
    m.down("A0", old_g, 100, 5, false).await;
    let phantom = listening();
    let new_g = m.run_service("A0", 999_999, phantom.ports).await;
    let other = listening();
    m.run_service("A1", 300, other.ports).await;
    m.close().await;

    // It comes back saying it runs A0 under the old generation and pid, and not A1.
    let inventory = vec![InventoryEntry {
        instancename: allex_protocol::instance!("A0"),
        modulename: "svc".into(),
        generation: old_g,
        pid: 100,
        ports: svc.ports,
    }];
    let mut m = FakeMaster::connect_with(lm.addr(), hello("m1", &["svc"], inventory)).await;
    let msgs = m.drain().await;
    assert!(
        msgs.iter().all(|x| !matches!(x, LanToMaster::Stop { .. })),
        "{msgs:?}"
    );
    let st = eventually("A0 adopted as it really runs", || {
        let st = lm.status().unwrap();
        (st.running.len() == 1).then_some(st)
    })
    .await;
    assert_eq!((st.running[0].pid, st.running[0].generation), (100, old_g));
    assert_ne!(old_g, new_g);
    let a1 = st
        .needs
        .iter()
        .find(|n| n.need.instancename == "A1")
        .unwrap();
    assert_eq!(
        a1.state,
        NeedState::Open,
        "A1's record survived without its process"
    );
}
