//! The event stream: every kind of state change, numbered without gaps, the
//! same over `allexlanmanager events` and `GET /v1/events`, with `since`
//! and `--follow`.

mod common;

use allex_protocol::events::{EventKind, LanEvent};
use allex_protocol::{ErrorCode, LanToMaster};
use allex_testkit::process::{Proc, Stderr};
use common::*;
use serde_json::Value;

/// Every event so far, through the CLI.
fn events(lm: &LanManager, extra: &[&str]) -> Vec<LanEvent> {
    let mut args = vec!["events", "--json"];
    args.extend_from_slice(extra);
    let out = lm.cli(&args).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until an event of type `kind` about `subject` (an instance or a
/// master name) is in the stream; returns it.
async fn wait_event(lm: &LanManager, kind: &str, subject: &str) -> LanEvent {
    eventually(&format!("a {kind} event for {subject}"), || {
        events(lm, &[]).into_iter().find(|e| {
            let v = serde_json::to_value(e).unwrap();
            e.kind.name() == kind && (v["instancename"] == subject || v["master"] == subject)
        })
    })
    .await
}

#[tokio::test]
async fn every_state_change_is_one_numbered_event() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.grace = ms(300);
        t.check_timeout = ms(300);
    }))
    .unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    wait_event(&lm, "master_connected", "m1").await;
    let http = lm.http().unwrap();
    let add = |name: &str| {
        let body = format!(r#"{{"modulename":"svc","instancename":"{name}"}}"#);
        assert_eq!(http.post("/v1/needs", &body).unwrap().status, 201);
    };

    // A need's life: added, claimed, spawned, running, down, opened (the
    // first quick death retries at once).
    add("A");
    wait_event(&lm, "need_added", "A").await;
    let svc = listening();
    let g = m.run_service("A", 4100, svc.ports).await;
    m.down("A", g, 4100, 5, false).await;
    wait_event(&lm, "opened", "A").await;

    // A failed port check: rejected; the second failure in a row backs off.
    let g2 = m.grant("A").await;
    m.spawned("A", g2, 4101, dead_ports()).await;
    m.expect("rejected", |msg| {
        matches!(msg, LanToMaster::Rejected { .. })
    })
    .await;
    wait_event(&lm, "rejected", "A").await;
    m.down("A", g2, 4101, 5, true).await;
    let backoff = wait_event(&lm, "backoff", "A").await;
    assert!(
        matches!(backoff.kind, EventKind::Backoff { failures: 2, delay_ms, .. } if delay_ms > 0),
        "{backoff:?}"
    );

    // Removing a running need stops it.
    add("C");
    let c = listening();
    m.run_service("C", 4200, c.ports).await;
    assert_eq!(http.delete("/v1/needs/C").unwrap().status, 200);
    wait_event(&lm, "need_removed", "C").await;
    let stopping = wait_event(&lm, "stopping", "C").await;
    assert!(
        matches!(&stopping.kind, EventKind::Stopping { reason, .. } if reason.contains("removed")),
        "{stopping:?}"
    );

    // A hello under m1's name with another secret is refused.
    let mut impostor = hello("m1", &["svc"], Vec::new());
    impostor.secret = "another-secret-for-m1".into();
    let refused = FakeMaster::try_connect(lm.addr(), impostor).await;
    assert!(refused.is_err());
    let r = wait_event(&lm, "master_refused", "m1").await;
    assert!(
        matches!(
            r.kind,
            EventKind::MasterRefused {
                code: ErrorCode::IdentityMismatch,
                ..
            }
        ),
        "{r:?}"
    );

    // The master goes with a service running: disconnected, then expired.
    add("B");
    let b = listening();
    m.run_service("B", 4300, b.ports).await;
    m.close().await;
    wait_event(&lm, "master_disconnected", "m1").await;
    wait_event(&lm, "master_expired", "m1").await;

    let all = events(&lm, &[]);
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "numbered without gaps"
    );
    let kinds: std::collections::BTreeSet<&str> = all.iter().map(|e| e.kind.name()).collect();
    for kind in [
        "need_added",
        "need_removed",
        "opened",
        "claimed",
        "spawned",
        "running",
        "rejected",
        "stopping",
        "down",
        "backoff",
        "master_connected",
        "master_refused",
        "master_disconnected",
        "master_expired",
    ] {
        assert!(kinds.contains(kind), "no {kind} event in {all:#?}");
    }
    // A's life, in order.
    let of_a: Vec<&str> = all
        .iter()
        .filter(|e| serde_json::to_value(e).unwrap()["instancename"] == "A")
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(
        of_a,
        [
            "need_added",
            "claimed",
            "spawned",
            "running",
            "down",
            "opened",
            "claimed",
            "spawned",
            "rejected",
            "down",
            "backoff",
            "opened"
        ]
    );

    // The HTTP stream carries the same events; since starts after its number.
    let k = all.len() / 2;
    let rest = all.len() - k;
    let streamed = http.sse(&format!("/v1/events?since={k}"), rest).unwrap();
    let cli_rest: Vec<Value> = events(&lm, &["--since", &k.to_string()])
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(streamed, cli_rest);
    assert_eq!(streamed[0]["seq"], k as u64 + 1);
    let bad = http.get("/v1/events?since=soon").unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
}

#[tokio::test]
async fn a_follower_sees_each_new_event_as_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["events", "--follow", "--json", "--connect"])
        .arg(lm.addr().to_string())
        .env_remove("ALLEX_TOKEN");
    let follower = Proc::spawn("events --follow", cmd, Stderr::Null).unwrap();
    for name in ["F1", "F2", "F3"] {
        lm.need_add(&need("svc", name)).unwrap();
        let line = follower
            .wait_for_line(|l| l.contains(&format!(r#""instancename":"{name}""#)), SOON)
            .unwrap();
        let e: LanEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(e.kind.name(), "need_added");
    }
    assert!(follower.is_running(), "a follower keeps following");
    // The HTTP follower gets the backlog and then the live events too.
    let http = lm.http().unwrap();
    let reader = std::thread::spawn(move || http.sse("/v1/events", 4).unwrap());
    lm.need_add(&need("svc", "F4")).unwrap();
    let streamed = reader.join().unwrap();
    assert_eq!(streamed[3]["instancename"], "F4");
}

/// Sends `n` claims of needs that do not exist from a fresh master `name`
/// (each one a `claim_refused` event), reading its answers meanwhile.
async fn flood_claims(lm: &LanManager, name: &str, n: usize) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = raw(lm.addr()).await;
    let hello = allex_protocol::MasterToLan::Hello(hello(name, &["svc"], Vec::new()));
    ws.send(Message::text(allex_protocol::frame::encode(&hello)))
        .await
        .unwrap();
    // Claims before the welcome would race the hello.
    loop {
        match next(&mut ws).await {
            Next::Text(t) if t.contains("\"welcome\"") => break,
            Next::Text(_) => {}
            Next::Closed(why) => panic!("{name}: closed: {why}"),
        }
    }
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let mut refused = 0usize;
        while let Some(Ok(m)) = rx.next().await {
            if m.to_text().is_ok_and(|t| t.contains("claim_refused")) {
                refused += 1;
                if refused == n {
                    break;
                }
            }
        }
        refused
    });
    for i in 0..n {
        let claim = allex_protocol::MasterToLan::Claim {
            instancename: allex_protocol::InstanceName::new(format!("Nothing{i}")).unwrap(),
            ports: None,
        };
        tx.send(Message::text(allex_protocol::frame::encode(&claim)))
            .await
            .unwrap();
    }
    let refused = match tokio::time::timeout(SOON, reader).await {
        Ok(r) => r.unwrap(),
        Err(_) => panic!(
            "{name}: not every claim was answered within {SOON:?}; {:?}",
            lm.status_direct().map(|s| s.masters)
        ),
    };
    assert_eq!(refused, n, "{name}: every claim answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_dropped_and_never_slows_the_state_owner() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let http = lm.http_addr().unwrap();
    // A follower with a tiny receive window that reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(http).await.unwrap();
    slow.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Far more events than the hub lets a follower lag plus what the
    // kernel's buffers hold.
    const PER_MASTER: usize = 15_000;
    let names = ["f1", "f2", "f3", "f4"];
    for name in names {
        flood_claims(&lm, name, PER_MASTER).await;
    }
    // The state owner kept its pace: everything was answered, and it answers now.
    let st = lm.status_direct().unwrap();
    assert_eq!(st.masters.len(), names.len(), "{:?}", st.masters);
    // The slow follower was cut off: its stream ends, short of the last event.
    let mut body = Vec::new();
    tokio::time::timeout(SOON, slow.read_to_end(&mut body))
        .await
        .expect("the stalled follower is disconnected")
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    let got = text.matches("\ndata:").count() + usize::from(text.starts_with("data:"));
    let produced = names.len() * PER_MASTER;
    assert!(
        got > 0,
        "it was a follower: {}",
        &text[..text.len().min(400)]
    );
    assert!(
        got < produced,
        "dropped before the end: {got} of {produced}"
    );
}
