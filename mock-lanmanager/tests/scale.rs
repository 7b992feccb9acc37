//! Many masters and many needs: everything ends up running, each need once, quickly.

mod common;

use allex_protocol::InstanceName;
use allex_protocol::{LanToMaster, MasterToLan, Ports};
use common::*;
use std::time::{Duration, Instant};

/// Listeners that accept and drop every connection, shared by all services.
fn accepting_ports() -> Ports {
    let mut ports = Vec::new();
    for _ in 0..3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap().port());
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
    }
    Ports {
        tcp: Some(ports[0]),
        http: Some(ports[1]),
        ws: Some(ports[2]),
    }
}

async fn run_all(masters: usize, k: usize, race: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "N", k));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let ports = accepting_ports();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for idx in 0..masters {
        let addr = lm.addr();
        tasks.push(tokio::spawn(async move {
            let name = format!("m{idx}");
            let mut m = FakeMaster::connect(addr, &name, &["svc"]).await;
            let LanToMaster::Needs { needs } = m
                .expect("needs", |x| matches!(x, LanToMaster::Needs { .. }))
                .await
            else {
                unreachable!()
            };
            let mine: Vec<InstanceName> = needs
                .into_iter()
                .map(|n| n.instancename)
                .filter(|i| race || i[1..].parse::<usize>().unwrap() % masters == idx)
                .collect();
            for i in &mine {
                m.send(&MasterToLan::Claim {
                    instancename: i.clone(),
                    ports: None,
                })
                .await;
            }
            // Every claim is answered: a grant (then running) or a refusal.
            let (mut running, mut refused, mut granted) = (0, 0, 0);
            let mut pid = 1000;
            while refused + granted < mine.len() || running < granted {
                match m.recv().await {
                    LanToMaster::Grant {
                        need, generation, ..
                    } => {
                        pid += 1;
                        granted += 1;
                        m.spawned(&need.instancename, generation, pid, ports).await;
                    }
                    LanToMaster::Running { .. } => running += 1,
                    LanToMaster::ClaimRefused {
                        instancename,
                        reason,
                    } => {
                        assert!(race, "{instancename}: {reason}");
                        refused += 1;
                    }
                    LanToMaster::Rejected { reason, .. } => panic!("rejected: {reason}"),
                    _ => {}
                }
            }
            m
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.unwrap());
    }
    let took = started.elapsed();
    eprintln!("lan manager cpu: {} ms", lm.cpu_ms());
    let st = lm.status().unwrap();
    assert_eq!(st.running.len(), k);
    let mut names: Vec<&str> = st.running.iter().map(|r| r.instancename.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), k);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_masters_bring_2000_needs_to_running() {
    let took = run_all(20, 2000, false).await;
    eprintln!("20 masters, 2000 needs: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark size; run with --release --ignored"]
async fn hundred_masters_bring_10000_needs_to_running() {
    let took = run_all(100, 10_000, false).await;
    eprintln!("100 masters, 10000 needs: {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_racing_masters_bring_500_needs_to_running_each_once() {
    let took = run_all(10, 500, true).await;
    eprintln!("10 racing masters, 500 needs: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark size; run with --release --ignored"]
async fn hundred_racing_masters_bring_10000_needs_to_running() {
    let took = run_all(100, 10_000, true).await;
    eprintln!("100 racing masters, 10000 needs: {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
