//! Link cuts, grace, reconnection, lan manager restarts and settling.

mod common;

use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{ErrorCode, InventoryEntry, LanToMaster, MasterToLan, NeedState, Ports};
use common::*;

fn inv(instance: &str, generation: Generation, pid: u32, ports: Ports) -> InventoryEntry {
    InventoryEntry {
        instancename: allex_protocol::InstanceName::new(instance).unwrap(),
        modulename: "svc".into(),
        generation,
        pid,
        ports,
    }
}

fn stops(msgs: &[LanToMaster]) -> Vec<(InstanceName, Generation)> {
    msgs.iter()
        .filter_map(|m| match m {
            LanToMaster::Stop {
                instancename,
                generation,
                ..
            } => Some((instancename.clone(), *generation)),
            _ => None,
        })
        .collect()
}

fn opened(msgs: &[LanToMaster]) -> Vec<InstanceName> {
    msgs.iter()
        .filter_map(|m| match m {
            LanToMaster::NeedOpen { need } => Some(need.instancename.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn reconnect_within_grace_keeps_the_service_and_reconciles_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let svc = listening();
    let g = m1.run_service("A0", 100, svc.ports).await;
    let other = listening();
    let g_other = m2.run_service("A1", 200, other.ports).await;
    m1.close().await;
    let st = eventually("m1 listed as disconnected", || {
        let st = lm.status().unwrap();
        st.masters
            .iter()
            .any(|m| m.name == "m1" && !m.connected)
            .then_some(st)
    })
    .await;
    assert_eq!(st.running.len(), 2, "services stay listed within the grace");
    assert!(opened(&m2.drain().await).is_empty());

    let inventory = vec![
        inv("A0", g, 100, svc.ports),
        inv("A1", g_other, 999, other.ports),
        inv("Gone", Generation(7), 300, svc.ports),
    ];
    let mut m1 = FakeMaster::connect_with(lm.addr(), hello("m1", &["svc"], inventory)).await;
    let mut got = stops(&m1.drain().await);
    got.sort();
    assert_eq!(
        got,
        vec![
            (allex_protocol::instance!("A1"), g_other),
            (allex_protocol::instance!("Gone"), Generation(7))
        ]
    );
    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), 2);
    let a0 = st.running.iter().find(|r| r.instancename == "A0").unwrap();
    assert_eq!((a0.master.as_str(), a0.generation, a0.pid), ("m1", g, 100));
    assert!(st.masters.iter().all(|m| m.connected));
}

#[tokio::test]
async fn a_gone_masters_refused_service_moves_at_once_and_the_stale_copy_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    // A grace far beyond the test: the move must come from the evidence.
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.grace = ms(600000)
    }))
    .unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let svc = listening();
    let ports = svc.ports;
    let g1 = m1.run_service("A0", 100, ports).await;
    m2.expect("need_taken", |x| matches!(x, LanToMaster::NeedTaken { .. }))
        .await;
    m1.close().await;
    // Still answering: kept while its master is away.
    let st = eventually("m1 listed as disconnected", || {
        let st = lm.status().unwrap();
        st.masters
            .iter()
            .any(|m| m.name == "m1" && !m.connected)
            .then_some(st)
    })
    .await;
    assert_eq!(st.running.len(), 1);
    // Nothing listens any more: every port refuses, so it is released.
    drop(svc);
    m2.expect(
        "need_open once its ports refuse",
        |x| matches!(x, LanToMaster::NeedOpen { need } if need.instancename == "A0"),
    )
    .await;
    assert!(lm
        .log()
        .contains("every port of a disconnected master's service refuses"));
    let svc2 = listening();
    let g2 = m2.run_service("A0", 200, svc2.ports).await;
    assert!(g2 > g1);
    let m1 = FakeMaster::connect_with(
        lm.addr(),
        hello("m1", &["svc"], vec![inv("A0", g1, 100, ports)]),
    )
    .await;
    let mut m1 = m1;
    assert_eq!(
        stops(&m1.drain().await),
        vec![(allex_protocol::instance!("A0"), g1)]
    );
    // Its confirmation changes nothing.
    m1.down("A0", g1, 100, 5, true).await;
    m1.drain().await;
    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), 1);
    assert_eq!(
        (st.running[0].master.as_str(), st.running[0].generation),
        ("m2", g2)
    );
}

#[tokio::test]
async fn past_the_grace_a_service_that_still_answers_stays_and_its_master_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm =
        LanManager::start(LanOptions::patient_with(dir.path(), |t| t.grace = ms(300))).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let svc = listening();
    let g1 = m1.run_service("A0", 100, svc.ports).await;
    m2.drain().await;
    m1.close().await;
    eventually("the grace to end", || {
        lm.log().contains("grace over").then_some(())
    })
    .await;
    // The lan manager kept checking: the service serves, so it stays.
    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), 1, "{st:?}");
    assert_eq!(
        (st.running[0].master.as_str(), st.running[0].pid),
        ("m1", 100)
    );
    assert!(
        opened(&m2.drain().await).is_empty(),
        "the need was offered again"
    );
    let mut m1 = FakeMaster::connect_with(
        lm.addr(),
        hello("m1", &["svc"], vec![inv("A0", g1, 100, svc.ports)]),
    )
    .await;
    assert!(stops(&m1.drain().await).is_empty());
    let st = lm.status().unwrap();
    assert_eq!(
        (st.running[0].master.as_str(), st.running[0].generation),
        ("m1", g1)
    );
}

#[tokio::test]
async fn restart_holds_running_needs_for_their_master_and_adopts_its_inventory() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 3));
    let mut lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let a = listening();
    let b = listening();
    let ga = m1.run_service("A0", 100, a.ports).await;
    let gb = m1.run_service("A1", 101, b.ports).await;
    // SIGKILL right after `running`: the journal, not the debounced snapshot,
    // must already say who runs what.
    lm.kill().unwrap();
    drop(m1);

    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let snapshot = m2.drain().await;
    let offered: Vec<InstanceName> = snapshot
        .iter()
        .filter_map(|x| match x {
            LanToMaster::Needs { needs } => Some(
                needs
                    .iter()
                    .map(|n| n.instancename.clone())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(offered, vec!["A2"], "needs that were running are held back");
    let st = lm.status().unwrap();
    let states: Vec<(NeedState, Option<&str>)> = st
        .needs
        .iter()
        .map(|n| (n.state, n.master.as_deref()))
        .collect();
    assert_eq!(
        states,
        vec![
            (NeedState::Settling, Some("m1")),
            (NeedState::Settling, Some("m1")),
            (NeedState::Open, None)
        ]
    );
    match m2.claim("A0").await {
        LanToMaster::ClaimRefused { reason, .. } => assert!(reason.contains("m1"), "{reason}"),
        x => panic!("{x:?}"),
    }

    // m1 comes back still running A0; A1 died while the lan manager was away.
    let mut m1 = FakeMaster::connect_with(
        lm.addr(),
        hello("m1", &["svc"], vec![inv("A0", ga, 100, a.ports)]),
    )
    .await;
    // A1 is missing from the inventory, but a master may be spawning what
    // no inventory shows yet: it is told to stop A1, and A1 is held until
    // it confirms (a real master answers at once, with pid 0).
    m1.expect("stop of what the inventory lacks", |x| {
        matches!(x, LanToMaster::Stop { instancename, generation, .. } if instancename == "A1" && *generation == gb)
    })
    .await;
    m1.expect("running for the adopted service", |x| {
        matches!(x, LanToMaster::Running { instancename, generation } if instancename == "A0" && *generation == ga)
    })
    .await;
    m1.down("A1", gb, 0, 0, true).await;
    m2.expect(
        "need_open of the service that died",
        |x| matches!(x, LanToMaster::NeedOpen { need } if need.instancename == "A1"),
    )
    .await;
    let g = m2.grant("A1").await;
    assert!(g > gb, "generations are not reused across restarts");
    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), 1);
    assert_eq!(
        (
            st.running[0].instancename.as_str(),
            st.running[0].generation
        ),
        ("A0", ga)
    );
}

#[tokio::test]
async fn needs_of_a_master_that_does_not_come_back_open_after_the_settle_period_once_they_stop_answering(
) {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let mut lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let a = listening();
    m1.run_service("A0", 100, a.ports).await;
    let running_file = dir.path().join(".allexlanmanager/running");
    eventually("running file lists A0", || {
        std::fs::read_to_string(&running_file)
            .ok()?
            .contains("A0")
            .then_some(())
    })
    .await;
    lm.kill().unwrap();
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.settle = ms(3000)
    }))
    .unwrap();
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    // Within the settle period A0 is held for m1: not offered, not claimable.
    match m2.recv().await {
        LanToMaster::Needs { needs } => {
            assert!(needs.iter().all(|n| n.instancename != "A0"), "{needs:?}")
        }
        other => panic!("expected the needs snapshot, got {other:?}"),
    }
    assert_eq!(lm.status().unwrap().needs[0].state, NeedState::Settling);
    match m2.claim("A0").await {
        LanToMaster::ClaimRefused { reason, .. } => {
            assert!(reason.contains("held for m1"), "{reason}")
        }
        other => panic!("claimed a settling need: {other:?}"),
    }
    // Past the settle period A0's ports are probed. They still answer (its
    // listener lives), so m1 may only be cut off: A0 stays held for it.
    eventually("the settle period's probe", || {
        lm.log()
            .contains("probing those seen serving")
            .then_some(())
    })
    .await;
    assert_eq!(lm.status().unwrap().needs[0].state, NeedState::Settling);
    // Once they stop answering, A0 is handed on.
    drop(a);
    m2.expect(
        "need_open once A0 no longer answers",
        |x| matches!(x, LanToMaster::NeedOpen { need } if need.instancename == "A0"),
    )
    .await;
    m2.grant("A0").await;
    assert!(lm.log().contains("does not answer: handing it to others"));
}

#[tokio::test]
async fn an_open_need_found_in_an_inventory_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let a = listening();
    let mut m1 = FakeMaster::connect_with(
        lm.addr(),
        hello(
            "m1",
            &["svc"],
            vec![inv("A0", Generation(500), 100, a.ports)],
        ),
    )
    .await;
    m1.expect("running", |x| {
        matches!(
            x,
            LanToMaster::Running {
                generation: Generation(500),
                ..
            }
        )
    })
    .await;
    // Later grants stay above every generation seen.
    lm.need_add(&need("svc", "B")).unwrap();
    assert!(m1.grant("B").await > Generation(500));
}

#[tokio::test]
async fn heartbeats_are_echoed_and_a_silent_link_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.heartbeat = ms(100)
    }))
    .unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    m.send(&MasterToLan::Heartbeat { seq: 41 }).await;
    m.expect("echo", |x| matches!(x, LanToMaster::Heartbeat { seq: 41 }))
        .await;
    let t = std::time::Instant::now();
    while m.recv_opt().await.is_some() {}
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let st = lm.status().unwrap();
    assert!(!st.masters[0].connected);
}

#[tokio::test]
async fn reports_on_other_masters_services_or_stale_generations_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let a = listening();
    let g = m1.run_service("A0", 100, a.ports).await;

    m2.down("A0", g, 100, 5, false).await;
    m2.expect("not_yours", |x| {
        matches!(
            x,
            LanToMaster::Error {
                code: ErrorCode::NotYours,
                ..
            }
        )
    })
    .await;
    m1.down("A0", Generation(g.0 + 1000), 100, 5, false).await;
    m1.expect("stale generation", |x| {
        matches!(
            x,
            LanToMaster::Error {
                code: ErrorCode::Stale,
                ..
            }
        )
    })
    .await;
    m1.down("A0", g, 999, 5, false).await;
    m1.expect("stale pid", |x| {
        matches!(
            x,
            LanToMaster::Error {
                code: ErrorCode::Stale,
                ..
            }
        )
    })
    .await;
    m2.spawned("A0", g, 5, a.ports).await;
    m2.expect("not_yours", |x| {
        matches!(
            x,
            LanToMaster::Error {
                code: ErrorCode::NotYours,
                ..
            }
        )
    })
    .await;
    m2.send(&MasterToLan::SpawnFailed {
        instancename: allex_protocol::instance!("A0"),
        generation: g,
        reason: "x".into(),
    })
    .await;
    m2.expect("not_yours", |x| {
        matches!(
            x,
            LanToMaster::Error {
                code: ErrorCode::NotYours,
                ..
            }
        )
    })
    .await;

    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), 1);
    assert_eq!(
        (
            st.running[0].master.as_str(),
            st.running[0].pid,
            st.running[0].generation
        ),
        ("m1", 100, g)
    );
    assert_eq!(st.needs[0].failures, 0);
}

#[tokio::test]
async fn sigterm_records_running_needs_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let mut lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let a = listening();
    let g = m1.run_service("A0", 100, a.ports).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &lm.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = lm.wait_exit(SOON).unwrap();
    assert!(status.success(), "{status:?}");
    let hints: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".allexlanmanager/running")).unwrap(),
    )
    .unwrap();
    assert_eq!(hints["A0"]["master"], "m1");
    assert_eq!(hints["A0"]["generation"], g.0);
}

#[tokio::test]
async fn fencing_is_told_in_welcome_and_must_be_shorter_than_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let err = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.grace = ms(1000);
        t.fence = Some(ms(1000));
    }))
    .err()
    .expect("a fence as long as the grace was accepted")
    .to_string();
    assert!(
        err.contains("--fence-ms 1000 must be shorter than --grace-ms 1000"),
        "{err}"
    );
    let err = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.grace = ms(9000);
        t.heartbeat = ms(1000);
        t.fence = Some(ms(1500));
    }))
    .err()
    .expect("a fence shorter than two heartbeats was accepted")
    .to_string();
    assert!(err.contains("at least two heartbeats"), "{err}");

    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.grace = ms(9000);
        t.heartbeat = ms(1000);
        t.fence = Some(ms(3000));
    }))
    .unwrap();
    let mut ws = raw(lm.addr()).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        allex_protocol::frame::encode(&MasterToLan::Hello(hello("m1", &["svc"], Vec::new()))),
    ))
    .await
    .unwrap();
    match next(&mut ws).await {
        Next::Text(t) => match serde_json::from_str::<LanToMaster>(&t).unwrap() {
            LanToMaster::Welcome { fence_ms, .. } => assert_eq!(fence_ms, Some(3000)),
            other => panic!("expected welcome, got {other:?}"),
        },
        Next::Closed(why) => panic!("closed: {why}"),
    }
}

#[tokio::test]
async fn a_claim_of_a_master_that_is_away_waits_for_its_return_not_for_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.claim_timeout = ms(200)
    }))
    .unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let g = m1.grant("A0").await;
    m1.close().await;
    eventually("the deadline to pass while m1 is away", || {
        lm.log()
            .contains("claim deadline passed while its master is away")
            .then_some(())
    })
    .await;
    // Not reopened: m1 may have spawned it, and a second copy must not start.
    assert!(opened(&m2.drain().await).is_empty());
    assert_eq!(lm.status().unwrap().needs[0].state, NeedState::Claimed);
    let svc = listening();
    let mut m1 = FakeMaster::connect_with(
        lm.addr(),
        hello("m1", &["svc"], vec![inv("A0", g, 100, svc.ports)]),
    )
    .await;
    m1.expect(
        "running of the claimed generation",
        |x| matches!(x, LanToMaster::Running { generation, .. } if *generation == g),
    )
    .await;
}
