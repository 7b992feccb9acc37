//! Tokens from files, never on the command line, and separate rights: with
//! `--admin-token-file`, the master token only lets a master serve and the
//! admin token only opens admin sessions and the HTTP API.

mod common;

use allex_protocol::frame::encode;
use allex_protocol::{AdminToLan, ErrorCode, LanToAdmin, LanToMaster, MasterToLan};
use common::*;
use futures_util::SinkExt;
use std::path::{Path, PathBuf};
use tokio_tungstenite::tungstenite::Message;

const MASTER_TOKEN: &str = "master-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-9876543210";

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The first frame's error code after `opening`, or `None` for a welcome.
async fn opening_answer(lm: &LanManager, opening: String) -> Option<ErrorCode> {
    let mut ws = raw(lm.addr()).await;
    ws.send(Message::text(opening)).await.unwrap();
    match next(&mut ws).await {
        Next::Text(t) => match serde_json::from_str::<LanToMaster>(&t) {
            Ok(LanToMaster::Error { code, .. }) => Some(code),
            Ok(LanToMaster::Welcome { .. }) => None,
            _ => match serde_json::from_str::<LanToAdmin>(&t) {
                Ok(LanToAdmin::AdminWelcome { .. }) => None,
                other => panic!("unexpected answer {other:?}: {t}"),
            },
        },
        Next::Closed(why) => panic!("closed without an answer: {why}"),
    }
}

fn master_hello(token: &str) -> String {
    let mut h = hello("m1", &["svc"], Vec::new());
    h.token = Some(token.into());
    encode(&MasterToLan::Hello(h))
}

fn admin_hello(token: &str) -> String {
    encode(&AdminToLan::AdminHello {
        version: allex_protocol::PROTOCOL_VERSION,
        token: Some(token.into()),
    })
}

#[tokio::test]
async fn the_master_token_serves_and_only_the_admin_token_administers() {
    let dir = tempfile::tempdir().unwrap();
    let master_file = secret_file(dir.path(), "master.token", &format!("{MASTER_TOKEN}\n"));
    let admin_file = secret_file(dir.path(), "admin.token", ADMIN_TOKEN);
    let lm = LanManager::start(LanOptions {
        extra_args: vec![
            "--token-file".into(),
            master_file.display().to_string(),
            "--admin-token-file".into(),
            admin_file.display().to_string(),
        ],
        ..LanOptions::patient(dir.path())
    })
    .unwrap();

    // Neither secret is on its command line.
    let pid = lm.pid().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(MASTER_TOKEN) && !cmdline.contains(ADMIN_TOKEN));

    assert_eq!(opening_answer(&lm, master_hello(MASTER_TOKEN)).await, None);
    assert_eq!(
        opening_answer(&lm, master_hello(ADMIN_TOKEN)).await,
        Some(ErrorCode::BadToken),
        "an admin token said hello as a master"
    );
    assert_eq!(opening_answer(&lm, admin_hello(ADMIN_TOKEN)).await, None);
    assert_eq!(
        opening_answer(&lm, admin_hello(MASTER_TOKEN)).await,
        Some(ErrorCode::BadToken),
        "a master token opened an admin session"
    );

    // The CLI with the master token cannot add a need; with the admin
    // token from a file, it can.
    let add = ["need", "add", "--module", "svc", "--instance", "A"];
    let mut args: Vec<&str> = add.to_vec();
    let master_path = master_file.display().to_string();
    args.extend(["--token-file", master_path.as_str()]);
    let out = lm.cli(&args).unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("bad_token"), "{}", out.stderr);
    assert!(lm.needs_on_disk().is_empty());
    let mut args: Vec<&str> = add.to_vec();
    let admin_path = admin_file.display().to_string();
    args.extend(["--token-file", admin_path.as_str()]);
    let out = lm.cli(&args).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lm.needs_on_disk().len(), 1);

    // Over HTTP, the same split.
    let http = lm.http_addr().unwrap();
    let as_master = allex_testkit::http::HttpClient::new(http, Some(MASTER_TOKEN.into()));
    assert_eq!(as_master.get("/v1/needs").unwrap().status, 401);
    let as_admin = allex_testkit::http::HttpClient::new(http, Some(ADMIN_TOKEN.into()));
    assert_eq!(as_admin.get("/v1/needs").unwrap().status, 200);
}

#[test]
fn an_empty_token_file_or_a_token_given_twice_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = secret_file(dir.path(), "empty.token", "\n");
    let good = secret_file(dir.path(), "good.token", MASTER_TOKEN);
    let run = |extra: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(binary());
        cmd.args(["run", "--listen", "127.0.0.1:0", "--http", "off"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .env_remove("ALLEX_TOKEN");
        if let Some(t) = env {
            cmd.env("ALLEX_TOKEN", t);
        }
        allex_testkit::process::run_with_deadline("allexlanmanager run", cmd, SOON).unwrap()
    };
    let empty_arg = empty.display().to_string();
    let out = run(&["--token-file", &empty_arg], None);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("the token file is empty"),
        "{}",
        out.stderr
    );
    let missing = dir.path().join("missing.token").display().to_string();
    let out = run(&["--admin-token-file", &missing], None);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("cannot read the token file"),
        "{}",
        out.stderr
    );
    let good_arg = good.display().to_string();
    let out = run(&["--token-file", &good_arg], Some("from-the-env"));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("a token is given twice"),
        "{}",
        out.stderr
    );
    // Nothing was created by the refused starts.
    assert!(!dir.path().join(".allexlanmanager").join("needs").exists());
}
