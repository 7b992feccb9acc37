//! The lan manager over HTTP: the AllexJS monitor, the JSON API and the
//! admin commands, over the real binary with a fake master and real ports.

mod common;

use allex_protocol::{LanStatus, MasterSummary, NeedStatus, RunningService};
use common::*;
use serde_json::{json, Value};

/// A lan manager with a fake master running `Up` on real ports and `Waiting` open.
async fn with_one_running(
    dir: &std::path::Path,
    token: Option<&str>,
) -> (LanManager, FakeMaster, Listening) {
    let mut n = needs("svc", "Up", 1);
    n[0].instancename = allex_protocol::instance!("Up");
    n[0].propertyhash = json!({"k": "v"}).as_object().unwrap().clone();
    let mut waiting = need("svc", "Waiting");
    waiting.ipaddress = Some("10.0.0.0/8".into());
    n.push(waiting);
    write_needs(dir, &n);
    let lm = LanManager::start(LanOptions {
        token: token.map(str::to_string),
        ..LanOptions::patient(dir)
    })
    .unwrap();
    let mut h = hello("m1", &["svc"], Vec::new());
    h.token = token.map(str::to_string);
    let mut m = FakeMaster::connect_with(lm.addr(), h).await;
    let svc = listening();
    m.run_service("Up", 4321, svc.ports).await;
    (lm, m, svc)
}

#[tokio::test]
async fn the_allexjs_monitor_lists_running_and_pending_needs_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (lm, _m, svc) = with_one_running(dir.path(), None).await;
    let http = lm.http().unwrap();

    let running = http.get("/running").unwrap();
    assert_eq!(running.status, 200, "{running:?}");
    let running: Value = running.json().unwrap();
    assert_eq!(
        running,
        json!([{
            "instancename": "Up",
            "modulename": "svc",
            "propertyhash": {"k": "v"},
            "ipaddress": "127.0.0.1",
            "tcpport": svc.ports.tcp,
            "httpport": svc.ports.http,
            "wsport": svc.ports.ws,
            "status": "running",
        }])
    );
    let pending: Value = http.get("/pending").unwrap().json().unwrap();
    assert_eq!(
        pending,
        json!([{
            "instancename": "Waiting",
            "modulename": "svc",
            "propertyhash": {},
            "ipaddress": "10.0.0.0/8",
            "tcpport": null,
            "httpport": null,
            "wsport": null,
            "status": "pending",
        }])
    );
    let all: Vec<Value> = http.get("/servicestatus").unwrap().json().unwrap();
    assert_eq!(all, [running[0].clone(), pending[0].clone()]);
}

#[tokio::test]
async fn the_json_api_serves_what_status_json_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (lm, _m, _svc) = with_one_running(dir.path(), None).await;
    let http = lm.http().unwrap();
    let st = lm.status().unwrap();
    let needs: Vec<NeedStatus> = http.get("/v1/needs").unwrap().json().unwrap();
    let running: Vec<RunningService> = http.get("/v1/running").unwrap().json().unwrap();
    let masters: Vec<MasterSummary> = http.get("/v1/masters").unwrap().json().unwrap();
    assert_eq!(
        LanStatus {
            needs,
            running,
            masters
        },
        st
    );
    assert_eq!(st.running.len(), 1, "{st:?}");
    assert_eq!(st.masters[0].name, "m1");
}

#[tokio::test]
async fn needs_added_and_removed_over_http_are_on_disk_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let http = lm.http().unwrap();

    let added = http
        .post(
            "/v1/needs",
            r#"{"modulename":"svc","instancename":"A","propertyhash":{"x":1}}"#,
        )
        .unwrap();
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!(added.json::<Value>().unwrap()["message"], "need A added");
    // Acknowledged: already on disk, and offered to the master.
    let on_disk = lm.needs_on_disk();
    assert_eq!(on_disk.len(), 1);
    assert_eq!(on_disk[0].propertyhash["x"], 1);
    m.expect("need_open A", |msg| {
        matches!(msg, allex_protocol::LanToMaster::NeedOpen { need } if need.instancename == "A")
    })
    .await;

    let removed = http.delete("/v1/needs/A").unwrap();
    assert_eq!(removed.status, 200, "{removed:?}");
    assert!(lm.needs_on_disk().is_empty());
    let again = http.delete("/v1/needs/A").unwrap();
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(again.json::<Value>().unwrap()["error"], "unknown");
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 1));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let http = lm.http().unwrap();
    let file = std::fs::read(lm.needs_path()).unwrap();
    let before = lm.status().unwrap();
    let cases: [(&str, &str, &str, u16, &str, &str); 9] = [
        (
            "POST",
            "/v1/needs",
            r#"{"modulename":"svc","instancename":"A0"}"#,
            409,
            "duplicate",
            "already exists",
        ),
        (
            "POST",
            "/v1/needs",
            r#"{"modulename":"svc","instancename":"../x"}"#,
            400,
            "invalid",
            "instancename",
        ),
        (
            "POST",
            "/v1/needs",
            r#"{"modulename":"svc""#,
            400,
            "invalid",
            "EOF",
        ),
        (
            "POST",
            "/v1/needs",
            r#"{"instancename":"B"}"#,
            400,
            "invalid",
            "modulename",
        ),
        ("DELETE", "/v1/needs/..", "", 400, "invalid", "instance"),
        (
            "POST",
            "/v1/needs",
            r#"{"modulename":"svc","instancename":"B","tcpport":0}"#,
            400,
            "invalid",
            "tcpport",
        ),
        (
            "POST",
            "/v1/needs/Nope/disable",
            "",
            404,
            "unknown",
            "no need Nope",
        ),
        (
            "POST",
            "/v1/needs/Nope/enable",
            "",
            404,
            "unknown",
            "no need Nope",
        ),
        ("GET", "/v1/nothing", "", 404, "unknown", "no such endpoint"),
    ];
    for (method, path, body, status, code, words) in cases {
        let a = match method {
            "POST" => http.post(path, body),
            "DELETE" => http.delete(path),
            _ => http.get(path),
        }
        .unwrap();
        assert_eq!(a.status, status, "{method} {path} {body}: {a:?}");
        let v: Value = a.json().unwrap();
        assert_eq!(v["error"], code, "{method} {path} {body}: {a:?}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(words), "{method} {path} {body}: {message}");
    }
    assert_eq!(std::fs::read(lm.needs_path()).unwrap(), file);
    assert!(!lm.runtime_path().exists(), "nothing was written");
    assert_eq!(lm.status().unwrap(), before);
}

#[tokio::test]
async fn with_a_token_the_api_needs_the_bearer_and_the_monitor_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (lm, _m, _svc) = with_one_running(dir.path(), Some("s3cret")).await;
    let http = lm.http().unwrap();
    for path in ["/v1/needs", "/v1/running", "/v1/masters"] {
        assert_eq!(http.get(path).unwrap().status, 200, "{path}");
        for bad in [None, Some("s3cre"), Some("s3cret2")] {
            let a = http.with_token(bad).get(path).unwrap();
            assert_eq!(a.status, 401, "{path} with {bad:?}: {a:?}");
            assert_eq!(a.json::<Value>().unwrap()["error"], "bad_token");
        }
    }
    let refused = http
        .with_token(None)
        .post("/v1/needs", r#"{"modulename":"svc","instancename":"B"}"#)
        .unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(
        lm.status().unwrap().needs.len(),
        2,
        "the refused add changed nothing"
    );
    for path in ["/running", "/pending", "/servicestatus"] {
        assert_eq!(
            http.with_token(None).get(path).unwrap().status,
            200,
            "{path}"
        );
    }
}

#[test]
fn a_named_http_address_that_is_taken_stops_the_start_and_off_serves_none() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = LanManager::start(LanOptions {
        http: Some(addr.to_string()),
        ..LanOptions::patient(dir.path())
    })
    .err()
    .expect("started on a taken --http address")
    .to_string();
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");

    let lm = LanManager::start(LanOptions {
        http: Some("off".into()),
        ..LanOptions::patient(dir.path())
    })
    .unwrap();
    assert!(lm.http_addr().is_none());
    assert!(lm
        .proc()
        .unwrap()
        .lines()
        .iter()
        .all(|l| !l.contains("http on")));
}
