//! Hostile or broken peers get an error or a close with a reason, and change nothing.

mod common;

use allex_protocol::frame::{encode, MAX_TO_LAN_FRAME};
use allex_protocol::Generation;
use allex_protocol::{AdminToLan, ErrorCode, LanToMaster, MasterToLan, NeedState, ProtocolVersion};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn error_code(text: &str) -> ErrorCode {
    match serde_json::from_str::<LanToMaster>(text) {
        Ok(LanToMaster::Error { code, .. }) => code,
        other => panic!("expected an error, got {other:?} from {text}"),
    }
}

/// Expects an error frame with `code`, then a close whose reason names it.
async fn refused_and_closed(ws: &mut Ws, code: ErrorCode) {
    match next(ws).await {
        Next::Text(t) => assert_eq!(error_code(&t), code, "{t}"),
        Next::Closed(r) => panic!("closed without an error first: {r}"),
    }
    match next(ws).await {
        Next::Closed(reason) => assert!(reason.contains(&code.to_string()), "{reason}"),
        Next::Text(t) => panic!("still talking after a refusal: {t}"),
    }
}

#[tokio::test]
async fn wrong_token_and_another_major_version_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    // The token goes in as a plain flag: the kit's CLI calls must not know it.
    let lm = LanManager::start(LanOptions {
        extra_args: vec!["--token".into(), "s3cret".into()],
        ..LanOptions::patient(dir.path())
    })
    .unwrap();

    let mut ws = raw(lm.addr()).await;
    let h = hello("m1", &["svc"], vec![]);
    ws.send(Message::text(encode(&MasterToLan::Hello(h.clone()))))
        .await
        .unwrap();
    refused_and_closed(&mut ws, ErrorCode::BadToken).await;

    let mut ws = raw(lm.addr()).await;
    let mut wrong = h.clone();
    wrong.token = Some("s3cre".into());
    ws.send(Message::text(encode(&MasterToLan::Hello(wrong))))
        .await
        .unwrap();
    refused_and_closed(&mut ws, ErrorCode::BadToken).await;

    let mut ws = raw(lm.addr()).await;
    let mut future = h.clone();
    future.token = Some("s3cret".into());
    future.version = ProtocolVersion { major: 3, minor: 0 };
    ws.send(Message::text(encode(&MasterToLan::Hello(future))))
        .await
        .unwrap();
    refused_and_closed(&mut ws, ErrorCode::VersionMismatch).await;

    let out = lm.cli(&["status"]).unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("bad_token"), "{out:?}");
    let out = lm.cli(&["status", "--json", "--token", "s3cret"]).unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut good = h;
    good.token = Some("s3cret".into());
    let mut m = FakeMaster::connect_with(lm.addr(), good).await;
    m.grant("A0").await;
}

#[tokio::test]
async fn a_connection_without_hello_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient_with(dir.path(), |t| {
        t.hello_timeout = Some(ms(200))
    }))
    .unwrap();
    let mut silent = raw(lm.addr()).await;
    refused_and_closed(&mut silent, ErrorCode::HelloRequired).await;

    let mut early = raw(lm.addr()).await;
    early
        .send(Message::text(encode(&MasterToLan::Claim {
            instancename: allex_protocol::instance!("A"),
            ports: None,
        })))
        .await
        .unwrap();
    refused_and_closed(&mut early, ErrorCode::HelloRequired).await;

    let mut binary = raw(lm.addr()).await;
    binary.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    refused_and_closed(&mut binary, ErrorCode::HelloRequired).await;
    assert!(lm.status().unwrap().masters.is_empty());
}

#[tokio::test]
async fn bad_frames_after_hello_get_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let before = lm.status().unwrap();
    let cases: Vec<(Message, ErrorCode)> = vec![
        (Message::text("{not json"), ErrorCode::Malformed),
        (
            Message::text(r#"{"type":"launch_missiles"}"#),
            ErrorCode::UnknownType,
        ),
        (
            Message::text(r#"{"type":"claim"}"#),
            ErrorCode::MissingField,
        ),
        (
            Message::text(r#"{"type":"claim","instancename":5}"#),
            ErrorCode::Invalid,
        ),
        (Message::binary(vec![0u8; 16]), ErrorCode::BinaryFrame),
        (
            Message::text(r#"{"type":"claim","instancename":"../x"}"#),
            ErrorCode::Invalid,
        ),
        (
            Message::text(
                r#"{"type":"down","instancename":"a\nFAKE LOG","generation":1,"pid":1,"exit":{},"ordered":false,"uptime_ms":1}"#,
            ),
            ErrorCode::Invalid,
        ),
        (
            Message::text(format!(
                r#"{{"type":"claim","instancename":"{}"}}"#,
                "x".repeat(MAX_TO_LAN_FRAME)
            )),
            ErrorCode::FrameTooLarge,
        ),
        (
            Message::text(encode(&MasterToLan::Hello(hello("m1", &["svc"], vec![])))),
            ErrorCode::Invalid,
        ),
    ];
    for (frame, code) in cases {
        m.send_raw(frame).await;
        match m
            .expect("error", |x| matches!(x, LanToMaster::Error { .. }))
            .await
        {
            LanToMaster::Error { code: got, .. } => assert_eq!(got, code),
            _ => unreachable!(),
        }
    }
    // The session goes on, and nothing changed.
    m.send(&MasterToLan::Heartbeat { seq: 1 }).await;
    m.expect("echo", |x| matches!(x, LanToMaster::Heartbeat { seq: 1 }))
        .await;
    assert_eq!(lm.status().unwrap(), before);
    assert_eq!(before.needs[0].state, NeedState::Open);

    // A frame far over the limit is not even buffered: the link is closed with a reason.
    if m.try_send_raw(Message::text("x".repeat(8 * MAX_TO_LAN_FRAME)))
        .await
    {
        while m.recv_opt().await.is_some() {}
    }
    let mut again = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    again.grant("A0").await;
}

#[tokio::test]
async fn bad_admin_frames_get_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut ws = raw(lm.addr()).await;
    let hello = AdminToLan::AdminHello {
        version: allex_protocol::PROTOCOL_VERSION,
        token: None,
    };
    ws.send(Message::text(encode(&hello))).await.unwrap();
    assert!(matches!(next(&mut ws).await, Next::Text(t) if t.contains("admin_welcome")));
    ws.send(Message::text(
        r#"{"type":"need_add","need":{"modulename":"m","instancename":"../x"}}"#,
    ))
    .await
    .unwrap();
    match next(&mut ws).await {
        Next::Text(t) => assert_eq!(error_code(&t), ErrorCode::Invalid, "{t}"),
        x => panic!("{x:?}"),
    }
    ws.send(Message::text(r#"{"type":"claim","instancename":"A"}"#))
        .await
        .unwrap();
    match next(&mut ws).await {
        Next::Text(t) => assert_eq!(error_code(&t), ErrorCode::UnknownType, "{t}"),
        x => panic!("{x:?}"),
    }
    assert!(lm.status().unwrap().needs.is_empty());
    assert_eq!(
        std::fs::read_to_string(lm.needs_path()).unwrap().trim(),
        "[]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_never_reads_is_dropped_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    // 1000 needs of about 1 KiB each: every snapshot is over 1 MiB.
    let mut big = needs("svc", "A", 1000);
    for n in &mut big {
        n.propertyhash
            .insert("pad".into(), serde_json::json!("p".repeat(1024)));
    }
    write_needs(dir.path(), &big);
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut deaf = raw(lm.addr()).await;
    deaf.send(Message::text(encode(&MasterToLan::Hello(hello(
        "deaf",
        &["svc"],
        vec![],
    )))))
    .await
    .unwrap();
    // Every change of catalogue earns a full snapshot. Ask for them well under
    // the rate limit, so only the outgoing queue can stop this peer, and never
    // read one.
    let flood = tokio::spawn(async move {
        let caps: Vec<Message> = [vec!["svc"], vec!["svc", "other"]]
            .iter()
            .map(|mods| {
                Message::text(encode(&MasterToLan::Capacity(allex_protocol::Capacity {
                    modules: mods.iter().map(|m| m.to_string()).collect(),
                    free: allex_protocol::PortCounts {
                        tcp: 1,
                        http: 1,
                        ws: 1,
                    },
                })))
            })
            .collect();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(2));
        for i in 0..20_000usize {
            tick.tick().await;
            if deaf.send(caps[i % 2].clone()).await.is_err() {
                return;
            }
        }
    });
    let st = eventually_async("the deaf master is dropped", || async {
        let st = lm.status().unwrap();
        st.masters
            .iter()
            .any(|m| m.name == "deaf" && !m.connected)
            .then_some(st)
    })
    .await;
    assert_eq!(st.masters.len(), 1);
    assert!(lm.log().contains("outgoing queue full"), "{}", lm.log());
    assert!(!lm.log().contains("too many messages"), "{}", lm.log());
    let mut m = FakeMaster::connect(lm.addr(), "m2", &["svc"]).await;
    m.grant("A0").await;
    flood.abort();
}

#[tokio::test]
async fn a_hello_with_hostile_names_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let entry = allex_protocol::InventoryEntry {
        instancename: allex_protocol::instance!("PLACEHOLDER"),
        modulename: "svc".into(),
        generation: Generation(1),
        pid: 1,
        ports: allex_protocol::Ports::default(),
    };
    let mut ws = raw(lm.addr()).await;
    let h = hello("m1", &["svc"], vec![entry]);
    // A typed entry cannot hold a bad name: the hostile one goes in as text.
    let text = encode(&MasterToLan::Hello(h)).replace("PLACEHOLDER", "../../etc");
    assert!(text.contains("../../etc"), "{text}");
    ws.send(Message::text(text)).await.unwrap();
    refused_and_closed(&mut ws, ErrorCode::Invalid).await;

    let mut ws = raw(lm.addr()).await;
    let h = hello("m1\n2026-01-01 INFO forged", &["svc"], vec![]);
    ws.send(Message::text(encode(&MasterToLan::Hello(h))))
        .await
        .unwrap();
    refused_and_closed(&mut ws, ErrorCode::Invalid).await;
    assert!(lm.status().unwrap().masters.is_empty());
}
