//! The edges a new user meets first, as the user sees them.

mod common;

use allex_protocol::{ErrorCode, LanToMaster};
use common::*;
use futures_util::SinkExt;
use std::process::Command;
use tokio_tungstenite::tungstenite::Message;

fn run_to_exit(dir: &std::path::Path, listen: &str) -> String {
    let out = Command::new(binary())
        .args(["run", "--listen", listen, "--dir"])
        .arg(dir)
        .env_remove("ALLEX_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_taken_port_and_a_bad_port_are_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = run_to_exit(dir.path(), &addr);
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    let err = run_to_exit(dir.path(), "127.0.0.1:abc");
    assert_eq!(err.matches("invalid port value").count(), 1, "{err}");
}

#[test]
fn the_log_has_no_colour_codes_when_stderr_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    lm.status().unwrap();
    let log = lm.log();
    assert!(log.contains("needs loaded"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file: {log:?}"
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    assert!(
        !lm.log().contains("without a token"),
        "loopback warned about"
    );
    drop(lm);
    let mut cmd = Command::new(binary());
    cmd.args(["run", "--listen", "0.0.0.0:0", "--dir"])
        .arg(dir.path())
        .env_remove("ALLEX_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("WARN"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap_or_default();
    assert!(
        line.contains("listening beyond loopback without a token"),
        "{line}"
    );
}

#[test]
fn connect_needs_a_real_port_and_says_where_it_looked() {
    let out = Command::new(binary())
        .args(["status", "--connect", "127.0.0.1:abc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--connect 127.0.0.1:abc: expected HOST or HOST:PORT"),
        "{err}"
    );
    // A port nobody listens on: refused, with a hint, said once.
    let port = dead_ports().tcp.unwrap();
    let out = Command::new(binary())
        .args(["status", "--connect", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(err.contains("is allexlanmanager running there?"), "{err}");
}

#[tokio::test]
async fn a_request_before_admin_hello_is_told_to_say_hello() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut ws = raw(lm.addr()).await;
    ws.send(Message::text(r#"{"type":"status"}"#))
        .await
        .unwrap();
    match next(&mut ws).await {
        Next::Text(t) => match serde_json::from_str::<LanToMaster>(&t).unwrap() {
            LanToMaster::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::HelloRequired);
                assert!(
                    message.contains("\"status\" is only answered after hello or admin_hello"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        },
        Next::Closed(why) => panic!("closed without an error: {why}"),
    }
}

#[test]
fn it_tells_systemd_when_it_serves_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(SOON)).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(["run", "--listen", "127.0.0.1:0", "--http", "off", "--dir"])
        .arg(dir.path())
        .env("NOTIFY_SOCKET", &path)
        .env_remove("ALLEX_TOKEN");
    let lm =
        allex_testkit::Proc::spawn("allexlanmanager", cmd, allex_testkit::Stderr::Null).unwrap();
    let mut buf = [0u8; 64];
    let n = manager
        .recv(&mut buf)
        .expect("no READY=1 from the lan manager");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: the listening line is out and the port answers.
    let line = lm
        .wait_for_line(|l| l.starts_with("allexlanmanager listening on "), SOON)
        .unwrap();
    let addr: std::net::SocketAddr = line["allexlanmanager listening on ".len()..]
        .parse()
        .unwrap();
    std::net::TcpStream::connect(addr).unwrap();
    lm.kill(nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = manager
        .recv(&mut buf)
        .expect("no STOPPING=1 from the lan manager");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(lm.wait_exit(SOON).unwrap().success());
}
