//! Floods and impossible reports: refused with a typed error, nothing changes,
//! everyone else is still served.

mod common;

use allex_protocol::frame::{encode, MAX_FROM_LAN_FRAME};
use allex_protocol::{ErrorCode, LanToMaster, MasterToLan, NeedState, Ports, Protocol};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Opens a master that sends lookups as fast as it can; returns the error
/// codes it was told and the close reason.
async fn flood(addr: std::net::SocketAddr, name: String) -> (Vec<ErrorCode>, String) {
    let mut ws = raw(addr).await;
    ws.send(Message::text(encode(&MasterToLan::Hello(hello(
        &name,
        &["svc"],
        vec![],
    )))))
    .await
    .unwrap();
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        let lookup = Message::text(encode(&MasterToLan::Lookup {
            id: 7,
            instancename: allex_protocol::instance!("A0"),
        }));
        for _ in 0..1_000_000u32 {
            if sink.feed(lookup.clone()).await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
    });
    let mut codes = Vec::new();
    let reason = loop {
        match tokio::time::timeout(SOON, stream.next()).await {
            Err(_) => panic!("{name}: flooding was never stopped"),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(LanToMaster::Error { code, .. }) =
                    allex_protocol::frame::decode_text(&t, MAX_FROM_LAN_FRAME)
                {
                    codes.push(code);
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => {
                break f.map(|f| f.reason.to_string()).unwrap_or_default()
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => break format!("error: {e}"),
            Ok(None) => break String::new(),
        }
    };
    sender.abort();
    (codes, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_master_is_rate_limited_and_closed_while_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 3));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut good = FakeMaster::connect(lm.addr(), "good", &["svc"]).await;
    let before = lm.status().unwrap();

    let floods: Vec<_> = (0..3)
        .map(|i| tokio::spawn(flood(lm.addr(), format!("flood{i}"))))
        .collect();
    // Every round trip of the well-behaved master completes during the flood
    // (each within `drain`'s deadline); how fast is the benchmark's business.
    let mut trips = 0;
    while trips < 5 || !floods.iter().all(|f| f.is_finished()) {
        good.drain().await;
        trips += 1;
    }
    for f in floods {
        let (codes, reason) = f.await.unwrap();
        assert_eq!(
            codes,
            vec![ErrorCode::RateLimited, ErrorCode::RateLimited],
            "told once when limited, once when closed"
        );
        assert!(reason.contains("rate_limited"), "close reason {reason:?}");
    }
    // The floods changed no need, and the good master still gets its grant.
    let after = lm.status().unwrap();
    assert_eq!(after.needs, before.needs);
    assert!(after.running.is_empty());
    good.grant("A0").await;
    assert!(lm.log().contains("kept flooding"), "{}", lm.log());
}

#[tokio::test]
async fn spawned_with_an_impossible_pid_or_undeclared_ports_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = allex_protocol::Need::new("svc", allex_protocol::instance!("T"));
    n.protocols = Some(vec![Protocol::Tcp]);
    write_needs(dir.path(), &[n]);
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let g = m.grant("T").await;
    let live = listening();
    let tcp_only = Ports {
        tcp: live.ports.tcp,
        http: None,
        ws: None,
    };
    let bad: Vec<(u32, Ports, &str)> = vec![
        (0, tcp_only, "pid 0"),
        (100, Ports::default(), "no tcp port"),
        (
            100,
            Ports {
                tcp: Some(0),
                ..Ports::default()
            },
            "tcp port 0",
        ),
        (100, live.ports, "http port"),
    ];
    for (pid, ports, why) in bad {
        m.spawned("T", g, pid, ports).await;
        match m
            .expect("error", |x| matches!(x, LanToMaster::Error { .. }))
            .await
        {
            LanToMaster::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::Invalid, "{message}");
                assert!(message.contains(why), "{why:?} not in {message:?}");
            }
            _ => unreachable!(),
        }
        let st = lm.status().unwrap();
        assert_eq!(st.needs[0].state, NeedState::Claimed, "{st:?}");
        assert!(st.running.is_empty(), "{st:?}");
    }
    assert!(
        lm.log().contains("pid 0 is no process"),
        "refusals are logged"
    );
    // The claim still stands: the true report is checked and runs.
    m.spawned("T", g, 100, tcp_only).await;
    m.expect(
        "running",
        |x| matches!(x, LanToMaster::Running { generation, .. } if *generation == g),
    )
    .await;
    let st = lm.status().unwrap();
    assert_eq!((st.running[0].pid, st.running[0].ports), (100, tcp_only));
}

#[tokio::test]
async fn a_fast_admin_client_is_paced_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut ws = raw(lm.addr()).await;
    ws.send(Message::text(encode(
        &allex_protocol::AdminToLan::AdminHello {
            version: allex_protocol::PROTOCOL_VERSION,
            token: None,
        },
    )))
    .await
    .unwrap();
    assert!(matches!(next(&mut ws).await, Next::Text(t) if t.contains("admin_welcome")));
    // The burst (4000) and then 2000 more at 2000 per second: at least a second.
    let status = Message::text(encode(&allex_protocol::AdminToLan::Status));
    let started = Instant::now();
    let limit = allex_lanmanager::ratelimit::RateLimit::ADMIN;
    let count = (limit.burst + limit.per_second) as usize;
    for i in 0..count {
        ws.send(status.clone()).await.unwrap();
        match next(&mut ws).await {
            Next::Text(t) => assert!(t.contains("\"type\":\"status\""), "request {i}: {t}"),
            Next::Closed(r) => panic!("request {i}: closed: {r}"),
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not paced: {took:?}");
}
