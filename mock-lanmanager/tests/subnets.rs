//! `.allexlanmanager/subnets`: masters connect only from its ranges (and
//! 127.0.0.1); a bad file stops the start with its location.

mod common;

use allex_protocol::frame::encode;
use allex_protocol::{ErrorCode, LanToMaster, MasterToLan};
use allex_testkit::link::raw_from;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn write_subnets(dir: &std::path::Path, text: &str) {
    let d = dir.join(".allexlanmanager");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("subnets"), text).unwrap();
}

/// The first frame a hello from `source` gets.
async fn hello_from(lm: &LanManager, source: &str, name: &str) -> LanToMaster {
    let mut ws = raw_from(lm.addr(), source.parse().unwrap()).await;
    ws.send(Message::text(encode(&MasterToLan::Hello(hello(
        name,
        &["svc"],
        Vec::new(),
    )))))
    .await
    .unwrap();
    match next(&mut ws).await {
        Next::Text(t) => serde_json::from_str(&t).unwrap(),
        Next::Closed(why) => panic!("closed without a frame: {why}"),
    }
}

#[tokio::test]
async fn masters_outside_the_subnets_are_refused_and_loopback_always_allowed() {
    let dir = tempfile::tempdir().unwrap();
    write_subnets(dir.path(), r#"["10.0.0.0/8", "127.0.0.3"]"#);
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let refused = hello_from(&lm, "127.0.0.2", "far").await;
    assert!(
        matches!(&refused, LanToMaster::Error { code: ErrorCode::AddressRefused, message, .. }
            if message.contains("127.0.0.2")),
        "{refused:?}"
    );
    for (source, name) in [("127.0.0.1", "near"), ("127.0.0.3", "listed")] {
        let welcome = hello_from(&lm, source, name).await;
        assert!(
            matches!(welcome, LanToMaster::Welcome { .. }),
            "{source}: {welcome:?}"
        );
    }
    let masters: Vec<String> = lm
        .status()
        .unwrap()
        .masters
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(!masters.contains(&"far".to_string()), "{masters:?}");
}

#[tokio::test]
async fn a_bad_subnets_file_stops_the_start_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write_subnets(dir.path(), "[\n  \"10.0.0.0/8\",\n  \"10.0.0.0/99\"\n]");
    let err = match LanManager::start(LanOptions::patient(dir.path())) {
        Ok(_) => panic!("started on a bad subnets file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("subnets:3:3"), "{err}");
}
