//! Claims, port checks, deaths and crash loops, driven by fake masters.

mod common;

use allex_protocol::{LanToMaster, MasterToLan, Need, NeedState, Ports, Protocol};
use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn is_open(m: &LanToMaster, inst: &str) -> bool {
    matches!(m, LanToMaster::NeedOpen { need } if need.instancename == inst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_racing_for_50_needs_each_need_is_granted_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "N", 50));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    // Both masters hold the full snapshot before either claims.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let race = |name: &'static str| {
        let addr = lm.addr();
        let start = start.clone();
        tokio::spawn(async move {
            let mut m = FakeMaster::connect(addr, name, &["svc"]).await;
            let snapshot = m
                .expect("needs", |x| matches!(x, LanToMaster::Needs { .. }))
                .await;
            let LanToMaster::Needs { needs } = snapshot else {
                unreachable!()
            };
            assert_eq!(needs.len(), 50);
            start.wait().await;
            for n in &needs {
                m.send(&MasterToLan::Claim {
                    instancename: n.instancename.clone(),
                    ports: None,
                })
                .await;
            }
            let mut answers = HashMap::new();
            while answers.len() < 50 {
                match m.recv().await {
                    LanToMaster::Grant {
                        need, generation, ..
                    } => {
                        assert!(answers
                            .insert(need.instancename, Some(generation))
                            .is_none());
                    }
                    LanToMaster::ClaimRefused { instancename, .. } => {
                        assert!(answers.insert(instancename, None).is_none());
                    }
                    _ => {}
                }
            }
            answers
        })
    };
    let (a, b) = (race("m1"), race("m2"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut generations = Vec::new();
    for i in 0..50 {
        let inst = format!("N{i}");
        let (ga, gb) = (a[inst.as_str()], b[inst.as_str()]);
        assert!(ga.is_some() != gb.is_some(), "{inst}: m1 {ga:?} m2 {gb:?}");
        generations.push(ga.or(gb).unwrap());
    }
    generations.sort();
    generations.dedup();
    assert_eq!(generations.len(), 50, "generations are never reused");
    let st = lm.status().unwrap();
    assert!(st.needs.iter().all(|n| n.state == NeedState::Claimed));
}

#[tokio::test]
async fn claim_deadline_lapse_stops_the_grant_and_reopens_only_once_the_master_confirms() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.claim_timeout = ms(200)
    }))
    .unwrap();
    let mut m1 = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut m2 = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let g = m1.grant("A0").await;
    m2.expect(
        "need_taken",
        |x| matches!(x, LanToMaster::NeedTaken { instancename } if instancename == "A0"),
    )
    .await;
    // The grant lapses: m1 may still be spawning, so it is told to stop and
    // the need stays with it until it says the process is gone.
    m1.expect("stop of the lapsed grant", |x| {
        matches!(x, LanToMaster::Stop { instancename, generation, .. } if instancename == "A0" && *generation == g)
    })
    .await;
    // A report that crossed the stop is not listed: the stop stands.
    let svc = listening();
    m1.spawned("A0", g, 100, svc.ports).await;
    match m2.claim("A0").await {
        LanToMaster::ClaimRefused { reason, .. } => assert!(reason.contains("m1"), "{reason}"),
        other => panic!("a second master got a need whose first process may run: {other:?}"),
    }
    assert!(lm.status().unwrap().running.is_empty());
    m1.down("A0", g, 100, 50, true).await;
    m2.expect("need_open once m1 confirmed", |x| is_open(x, "A0"))
        .await;
    let st = lm.status().unwrap();
    assert!(st.running.is_empty());
    assert_eq!(st.needs[0].state, NeedState::Open);
}

#[tokio::test]
async fn ports_that_do_not_accept_are_rejected_and_the_need_reopens_once_stopped() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.check_timeout = ms(300)
    }))
    .unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let g = m.grant("A0").await;
    let half = listening();
    let dead = dead_ports();
    let ports = Ports {
        tcp: half.ports.tcp,
        http: dead.http,
        ws: half.ports.ws,
    };
    let started = Instant::now();
    m.spawned("A0", g, 100, ports).await;
    match m
        .expect("rejected", |x| matches!(x, LanToMaster::Rejected { .. }))
        .await
    {
        LanToMaster::Rejected {
            generation, reason, ..
        } => {
            assert_eq!(generation, g);
            assert!(
                reason.contains(&format!("http port 127.0.0.1:{}", dead.http.unwrap())),
                "{reason}"
            );
        }
        _ => unreachable!(),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "gave up before the deadline"
    );
    // Held until the master says the rejected process is gone.
    assert_eq!(lm.status().unwrap().needs[0].state, NeedState::Claimed);
    m.down("A0", g, 100, 300, true).await;
    m.expect("need_open", |x| is_open(x, "A0")).await;
    let st = lm.status().unwrap();
    assert!(st.running.is_empty());
    assert_eq!(st.needs[0].state, NeedState::Open);
}

#[tokio::test]
async fn checked_service_runs_is_found_by_lookup_and_down_reopens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut tcp_only = Need::new("svc", allex_protocol::instance!("T"));
    tcp_only.protocols = Some(vec![Protocol::Tcp]);
    write_needs(
        dir.path(),
        &[Need::new("svc", allex_protocol::instance!("A")), tcp_only],
    );
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut watcher = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    let svc = listening();
    let g = m.run_service("A", 4711, svc.ports).await;
    let t = listening();
    let only_tcp = Ports {
        tcp: t.ports.tcp,
        ..Ports::default()
    };
    m.run_service("T", 4712, only_tcp).await;

    let st = lm.status().unwrap();
    let r = st.running.iter().find(|r| r.instancename == "A").unwrap();
    assert_eq!(
        (r.master.as_str(), r.address.as_str(), r.pid, r.generation),
        ("m1", "127.0.0.1", 4711, g)
    );
    assert_eq!(r.ports, svc.ports);
    assert!(r.since_unix_ms > 0);

    watcher
        .send(&MasterToLan::Lookup {
            id: 7,
            instancename: allex_protocol::instance!("A"),
        })
        .await;
    match watcher
        .expect("lookup", |x| {
            matches!(x, LanToMaster::LookupResult { id: 7, .. })
        })
        .await
    {
        LanToMaster::LookupResult {
            location: Some(loc),
            ..
        } => {
            assert_eq!((loc.address.as_str(), loc.ports), ("127.0.0.1", svc.ports));
        }
        x => panic!("{x:?}"),
    }

    watcher.drain().await;
    m.down("A", g, 4711, 5, false).await;
    watcher
        .expect("need_open at once", |x| is_open(x, "A"))
        .await;
    watcher
        .send(&MasterToLan::Lookup {
            id: 8,
            instancename: allex_protocol::instance!("A"),
        })
        .await;
    match watcher
        .expect("lookup", |x| {
            matches!(x, LanToMaster::LookupResult { id: 8, .. })
        })
        .await
    {
        LanToMaster::LookupResult { location, .. } => assert!(location.is_none()),
        _ => unreachable!(),
    }
    assert_eq!(lm.status().unwrap().running.len(), 1);
}

#[tokio::test]
async fn crash_loop_is_retried_with_a_growing_delay_that_resets_after_a_stable_run() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.backoff_base = ms(300);
        t.stable = ms(10000);
    }))
    .unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let mut delays = Vec::new();
    for round in 0..3u32 {
        let g = m.run_service("A0", 100 + round, svc.ports).await;
        let t = Instant::now();
        m.down("A0", g, 100 + round, 50, false).await;
        if round == 0 {
            // The first quick death reopens the need at once: the need_open
            // is out before a round trip ends, and no delay is armed.
            let seen = m.drain().await;
            assert!(seen.iter().any(|x| is_open(x, "A0")), "{seen:?}");
            let st = lm.status().unwrap();
            assert_eq!(st.needs[0].state, NeedState::Open, "{st:?}");
            assert_eq!(st.needs[0].retry_in_ms, None);
            delays.push(t.elapsed());
            continue;
        }
        if round == 1 {
            m.drain().await;
            let st = lm.status().unwrap();
            assert_eq!(st.needs[0].state, NeedState::Backoff, "{st:?}");
            assert_eq!(st.needs[0].failures, 2);
            assert!(st.needs[0].retry_in_ms.unwrap() <= 300);
            match m.claim("A0").await {
                LanToMaster::ClaimRefused { reason, .. } => {
                    assert!(reason.contains("crash-loop"), "{reason}")
                }
                x => panic!("claim during backoff: {x:?}"),
            }
        }
        m.expect("need_open", |x| is_open(x, "A0")).await;
        delays.push(t.elapsed());
    }
    assert!(delays[1] >= Duration::from_millis(300), "{delays:?}");
    assert!(delays[2] >= Duration::from_millis(600), "{delays:?}");
    // A stable run resets the count: the next death reopens at once.
    let g = m.run_service("A0", 200, svc.ports).await;
    m.down("A0", g, 200, 60_000, false).await;
    m.expect("need_open", |x| is_open(x, "A0")).await;
    let st = lm.status().unwrap();
    assert_eq!(
        (st.needs[0].state, st.needs[0].failures),
        (NeedState::Open, 0)
    );
    assert_eq!(st.needs[0].retry_in_ms, None);
}

#[tokio::test]
async fn spawn_failed_reopens_the_need() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let g = m.grant("A0").await;
    m.send(&MasterToLan::SpawnFailed {
        instancename: allex_protocol::instance!("A0"),
        generation: g,
        reason: "exec failed".into(),
    })
    .await;
    m.expect("need_open", |x| is_open(x, "A0")).await;
    assert_eq!(lm.status().unwrap().needs[0].failures, 1);
}

#[tokio::test]
async fn removing_a_need_stops_its_running_service() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g = m.run_service("A0", 100, svc.ports).await;
    let out = lm.cli(&["need", "remove", "A0"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    m.expect("stop", |x| {
        matches!(x, LanToMaster::Stop { instancename, generation, .. } if instancename == "A0" && *generation == g)
    })
    .await;
    // Removing an open need withdraws it from the masters' lists.
    let out = lm.cli(&["need", "remove", "A1"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    m.expect(
        "need_taken",
        |x| matches!(x, LanToMaster::NeedTaken { instancename } if instancename == "A1"),
    )
    .await;
    // The stop's confirmation is accepted quietly.
    m.down("A0", g, 100, 10, true).await;
    let rest = m.drain().await;
    assert!(
        rest.iter().all(|x| !matches!(x, LanToMaster::Error { .. })),
        "{rest:?}"
    );
    let st = lm.status().unwrap();
    assert!(st.needs.is_empty() && st.running.is_empty(), "{st:?}");
}

#[tokio::test]
async fn a_burst_of_grants_to_one_master_reaches_the_others_as_taken_in_order_and_in_few_frames() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "T", 200));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut taker = FakeMaster::connect(lm.addr(), "taker", &["svc"]).await;
    let mut watcher = FakeMaster::connect(lm.addr(), "watcher", &["svc"]).await;
    for m in [&mut taker, &mut watcher] {
        m.expect("needs", |x| matches!(x, LanToMaster::Needs { .. }))
            .await;
    }
    // All claims in one go, so the lan manager takes many in one batch.
    for i in 0..200 {
        taker
            .send(&MasterToLan::Claim {
                instancename: allex_protocol::InstanceName::new(format!("T{i}")).unwrap(),
                ports: None,
            })
            .await;
    }
    let mut taken: Vec<String> = Vec::new();
    let mut frames = 0;
    while taken.len() < 200 {
        match watcher.recv().await {
            LanToMaster::NeedTaken { instancename } => {
                frames += 1;
                taken.push(instancename.to_string());
            }
            LanToMaster::NeedsTaken { instancenames } => {
                frames += 1;
                taken.extend(instancenames.iter().map(|n| n.to_string()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<String> = (0..200).map(|i| format!("T{i}")).collect();
    assert_eq!(
        taken, expected,
        "every need taken once, in the order granted"
    );
    assert!(frames < 200, "no notice was merged: {frames} frames");
}
