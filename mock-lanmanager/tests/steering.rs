//! Steering: `need restart`, `need list` and `master list`, over the real
//! binary with fake masters.

mod common;

use allex_protocol::{LanToMaster, MasterSummary, NeedState, NeedStatus};
use common::*;

#[tokio::test]
async fn a_restarted_need_is_stopped_then_offered_at_once_without_counting_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g = m.run_service("A0", 700, svc.ports).await;

    let out = lm.cli(&["need", "restart", "A0"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("restarting"), "{}", out.stdout);
    let stop = m
        .expect("stop", |msg| matches!(msg, LanToMaster::Stop { .. }))
        .await;
    assert!(
        matches!(&stop, LanToMaster::Stop { instancename, generation, reason }
            if instancename == "A0" && *generation == g && reason.contains("restarted")),
        "{stop:?}"
    );
    // Stopped before it is offered anywhere: not listed, not open yet.
    let st = lm.status().unwrap();
    assert!(st.running.is_empty(), "{st:?}");
    assert!(st
        .needs
        .iter()
        .all(|n| n.need.instancename != "A0" || n.state != NeedState::Open));
    m.down("A0", g, 700, 50, true).await;
    m.expect(
        "need_open A0",
        |msg| matches!(msg, LanToMaster::NeedOpen { need } if need.instancename == "A0"),
    )
    .await;
    let g2 = m.run_service("A0", 701, svc.ports).await;
    assert!(g2 > g);
    let a0 = lm
        .status()
        .unwrap()
        .needs
        .into_iter()
        .find(|n| n.need.instancename == "A0")
        .unwrap();
    assert_eq!(a0.failures, 0, "a restart is not a crash: {a0:?}");

    // The same over HTTP.
    let http = lm.http().unwrap();
    let a = http.post("/v1/needs/A0/restart", "").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    m.expect(
        "stop",
        |msg| matches!(msg, LanToMaster::Stop { generation, .. } if *generation == g2),
    )
    .await;
}

#[tokio::test]
async fn restarting_what_does_not_run_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let before = lm.status().unwrap();
    for (name, words) in [("A0", "not running"), ("Nobody", "no need Nobody")] {
        let out = lm.cli(&["need", "restart", name]).unwrap();
        assert!(!out.status.success(), "{name}: {out:?}");
        assert!(out.stderr.contains(words), "{name}: {}", out.stderr);
    }
    let out = lm.cli(&["need", "restart", "../x"]).unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("instance"), "{}", out.stderr);
    let http = lm.http().unwrap();
    assert_eq!(
        http.post("/v1/needs/Nobody/restart", "").unwrap().status,
        404
    );
    assert_eq!(http.post("/v1/needs/A0/restart", "").unwrap().status, 400);
    assert_eq!(
        http.post("/v1/needs/A0/frobnicate", "").unwrap().status,
        404
    );
    assert_eq!(lm.status().unwrap(), before);
}

#[tokio::test]
async fn need_list_and_master_list_show_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "a-master-with-a-long-name", &["svc"]).await;
    let svc = listening();
    m.run_service("A0", 800, svc.ports).await;

    let table = lm.cli(&["need", "list"]).unwrap().stdout;
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("INSTANCE") && header.contains("STATE"),
        "{table}"
    );
    let a0 = table.lines().find(|l| l.contains("A0")).unwrap();
    assert!(
        a0.contains("running") && a0.contains("a-master-with-a-long-name"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("A1") && l.contains("open")),
        "{table}"
    );
    let json: Vec<NeedStatus> =
        serde_json::from_str(&lm.cli(&["need", "list", "--json"]).unwrap().stdout).unwrap();
    assert_eq!(json, lm.status().unwrap().needs);

    let table = lm.cli(&["master", "list"]).unwrap().stdout;
    let row = table
        .lines()
        .find(|l| l.contains("a-master-with-a-long-name"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("yes") && row.contains("127.0.0.1"), "{table}");
    // Columns are sized to their content: the header's columns line up with the row's.
    let header = table.lines().next().unwrap();
    assert_eq!(header.find("ADDRESS"), row.find("127.0.0.1"), "{table}");
    let json: Vec<MasterSummary> =
        serde_json::from_str(&lm.cli(&["master", "list", "--json"]).unwrap().stdout).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0].services, 1);

    // status shows the uptime, not epoch milliseconds.
    let status = lm.cli(&["status"]).unwrap().stdout;
    let running = status
        .lines()
        .find(|l| l.contains("A0") && l.contains("since"))
        .unwrap();
    assert!(running.contains(" UTC)"), "{status}");
}

#[tokio::test]
async fn a_drained_master_hands_its_services_over_one_at_a_time_and_takes_no_new_need() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g0 = m1.run_service("A0", 900, svc.ports).await;
    let g1 = m1.run_service("A1", 901, svc.ports).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;

    let out = lm.cli(&["master", "drain", "m1"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("2 services"), "{}", out.stdout);
    let table = lm.cli(&["master", "list"]).unwrap().stdout;
    assert!(
        table
            .lines()
            .any(|l| l.contains("m1") && l.contains("draining")),
        "{table}"
    );

    // One at a time: A0 is stopped, A1 keeps running until A0 runs on m2.
    let first = m1
        .expect("the first stop", |m| matches!(m, LanToMaster::Stop { .. }))
        .await;
    let LanToMaster::Stop {
        instancename: moved,
        ..
    } = first
    else {
        unreachable!()
    };
    assert_eq!(moved, "A0");
    assert!(
        m1.drain()
            .await
            .iter()
            .all(|m| !matches!(m, LanToMaster::Stop { .. })),
        "a second service was stopped before the first one moved"
    );
    // Nothing is offered before the stop is confirmed: no need runs twice.
    assert!(m2
        .drain()
        .await
        .iter()
        .all(|m| !matches!(m, LanToMaster::NeedOpen { .. })));
    m1.down("A0", g0, 900, 10_000, true).await;
    m2.expect(
        "A0 offered",
        |m| matches!(m, LanToMaster::NeedOpen { need } if need.instancename == "A0"),
    )
    .await;
    // The drained master may not take it back.
    assert!(matches!(
        m1.claim("A0").await,
        LanToMaster::ClaimRefused { reason, .. } if reason.contains("draining")
    ));
    let svc2 = listening();
    m2.run_service("A0", 950, svc2.ports).await;
    m1.expect("the second stop", |m| {
        matches!(m, LanToMaster::Stop { instancename, generation, .. } if instancename == "A1" && *generation == g1)
    })
    .await;
    m1.down("A1", g1, 901, 10_000, true).await;
    m2.expect(
        "A1 offered",
        |m| matches!(m, LanToMaster::NeedOpen { need } if need.instancename == "A1"),
    )
    .await;
    m2.run_service("A1", 951, svc2.ports).await;
    eventually("the master_drained event", || {
        let out = lm.cli(&["events", "--json"]).unwrap();
        out.stdout
            .contains(r#""type":"master_drained""#)
            .then_some(())
    })
    .await;
    let st = lm.status().unwrap();
    assert!(st.running.iter().all(|r| r.master == "m2"), "{st:?}");

    // Undrained, it takes needs again.
    let out = lm.cli(&["master", "undrain", "m1"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    lm.need_add(&need("svc", "New")).unwrap();
    m1.expect(
        "New offered",
        |m| matches!(m, LanToMaster::NeedOpen { need } if need.instancename == "New"),
    )
    .await;
    m1.run_service("New", 902, svc.ports).await;
    let out = lm.cli(&["master", "drain", "nobody"]).unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("no master nobody"), "{}", out.stderr);
}
