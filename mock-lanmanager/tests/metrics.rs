//! `GET /metrics`: the Prometheus figures move as the system does.

mod common;

use allex_protocol::{LanToMaster, MasterToLan};
use common::*;
use tokio_tungstenite::tungstenite::Message;

/// The value of the sample `name` (with its labels, as written) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test]
async fn the_figures_follow_needs_masters_claims_checks_deaths_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions {
        // Open to scrapers even with a token.
        token: Some("s3cret".into()),
        ..LanOptions::patient(dir.path())
    })
    .unwrap();
    let scrape = || {
        let a = lm.http().unwrap().with_token(None).get("/metrics").unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        a.body
    };
    let t = scrape();
    assert_eq!(sample(&t, r#"allex_lan_needs{state="open"}"#), 2.0);
    assert_eq!(sample(&t, "allex_lan_running_services"), 0.0);
    assert_eq!(sample(&t, "allex_lan_masters_connected"), 0.0);

    let mut h1 = hello("m1", &["svc"], Vec::new());
    h1.token = Some("s3cret".into());
    let mut m1 = FakeMaster::connect_with(lm.addr(), h1).await;
    let mut h2 = hello("m2", &["svc"], Vec::new());
    h2.token = Some("s3cret".into());
    let mut m2 = FakeMaster::connect_with(lm.addr(), h2).await;
    let svc = listening();
    let g = m1.run_service("A0", 500, svc.ports).await;
    assert!(matches!(
        m2.claim("A0").await,
        LanToMaster::ClaimRefused { .. }
    ));
    let t = scrape();
    assert_eq!(sample(&t, "allex_lan_masters_connected"), 2.0);
    assert_eq!(sample(&t, "allex_lan_running_services"), 1.0);
    assert_eq!(sample(&t, r#"allex_lan_needs{state="running"}"#), 1.0);
    assert_eq!(sample(&t, r#"allex_lan_needs{state="open"}"#), 1.0);
    assert_eq!(sample(&t, "allex_lan_claims_granted_total"), 1.0);
    assert_eq!(sample(&t, "allex_lan_claims_refused_total"), 1.0);
    assert_eq!(
        sample(&t, r#"allex_lan_port_checks_total{result="passed"}"#),
        1.0
    );
    assert_eq!(sample(&t, "allex_lan_port_check_seconds_count"), 1.0);

    // A death on its own, and the need running again: one recovery timed.
    m1.down("A0", g, 500, 60_000, false).await;
    m1.run_service("A0", 501, svc.ports).await;
    // Two refused frames: junk, and a report for a need nobody has.
    m2.send_raw(Message::text("{not json")).await;
    m2.send(&MasterToLan::SpawnFailed {
        instancename: allex_protocol::instance!("Nobody"),
        generation: allex_protocol::Generation(1),
        reason: "x".into(),
    })
    .await;
    m2.drain().await;
    let t = scrape();
    assert_eq!(sample(&t, r#"allex_lan_deaths_total{cause="exit"}"#), 1.0);
    assert_eq!(sample(&t, "allex_lan_recovery_seconds_count"), 1.0);
    assert_eq!(sample(&t, "allex_lan_claims_granted_total"), 2.0);
    assert_eq!(
        sample(&t, r#"allex_lan_frames_refused_total{code="malformed"}"#),
        1.0
    );
    let refused: f64 = t
        .lines()
        .filter(|l| l.starts_with("allex_lan_frames_refused_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(refused >= 2.0, "{t}");
}
