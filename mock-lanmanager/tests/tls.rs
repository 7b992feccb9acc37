//! `--tls-cert`/`--tls-key`: WebSocket and HTTP over TLS, verified by the
//! CLI with `--tls-ca`; what a TLS port refuses (a plain client, a
//! certificate for another name or expired, a handshake that never ends,
//! while others are served); and `--tls-client-ca`, where a master's client
//! certificate must be for its name.

mod common;

use allex_protocol::frame::encode;
use allex_protocol::{ErrorCode, LanToMaster, MasterToLan};
use allex_testkit::pki::{Issued, Pki};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A lan manager serving TLS with `cert`, plus `extra` flags.
fn tls_lan(dir: &Path, cert: &Issued, extra: &[String]) -> LanManager {
    let mut args = vec![
        "--tls-cert".to_string(),
        path(&cert.cert),
        "--tls-key".to_string(),
        path(&cert.key),
    ];
    args.extend_from_slice(extra);
    LanManager::start(LanOptions {
        extra_args: args,
        ..LanOptions::patient_with(dir, |t| t.hello_timeout = Some(ms(500)))
    })
    .unwrap()
}

/// A WebSocket over TLS to `addr`, verified with `ca`, presenting `identity`.
async fn tls_ws(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&Issued>,
) -> tokio_tungstenite::WebSocketStream<allex_tls::client::TlsStream<tokio::net::TcpStream>> {
    let config = allex_tls::client_config(
        Some(ca),
        identity.map(|i| (i.cert.as_path(), i.key.as_path())),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = allex_tls::TlsConnector::from(config)
        .connect(allex_tls::server_name("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tokio_tungstenite::client_async(format!("ws://{addr}/"), tls)
        .await
        .unwrap()
        .0
}

/// The answer to a master hello for `name`: `None` for a welcome.
async fn hello_answer<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    name: &str,
) -> Option<ErrorCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let h = hello(name, &["svc"], Vec::new());
    ws.send(Message::text(encode(&MasterToLan::Hello(h))))
        .await
        .unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return match serde_json::from_str::<LanToMaster>(&t).unwrap() {
                    LanToMaster::Welcome { .. } => None,
                    LanToMaster::Error { code, .. } => Some(code),
                    other => panic!("unexpected {other:?}"),
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("no answer to the hello: {other:?}"),
        }
    }
}

/// One HTTPS GET of `path` verified with `ca`; the status line.
async fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> String {
    let config = allex_tls::client_config(Some(ca), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = allex_tls::TlsConnector::from(config)
        .connect(allex_tls::server_name("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn tls_serves_whoever_verifies_it_and_refuses_plain_and_stuck_clients() {
    let pki = Pki::new("allex test CA");
    let server = pki.issue("server", &["127.0.0.1", "localhost"], false);
    let dir = tempfile::tempdir().unwrap();
    let lm = tls_lan(dir.path(), &server, &[]);
    let ca = path(&pki.ca_path());

    // A handshake that never finishes holds nobody up, and is dropped.
    let mut stuck = tokio::net::TcpStream::connect(lm.addr()).await.unwrap();
    stuck.write_all(&[0x16, 0x03, 0x01]).await.unwrap();

    let out = lm.cli(&["status", "--json", "--tls-ca", &ca]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut ws = tls_ws(lm.addr(), &pki.ca_path(), None).await;
    assert_eq!(hello_answer(&mut ws, "m1").await, None);

    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(SOON, stuck.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a stuck handshake was kept: {closed:?}"
    );

    // A plain client against the TLS port: refused, and says so.
    let out = lm.cli(&["status"]).unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("cannot reach the lan manager"),
        "{}",
        out.stderr
    );
    // Another CA: the certificate is not trusted.
    let other = Pki::new("another CA");
    let out = lm
        .cli(&["status", "--tls-ca", &path(&other.ca_path())])
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.stderr);

    // HTTPS on the HTTP port; plain HTTP there gets no answer.
    let http = lm.http_addr().unwrap();
    let status = https_get(http, &pki.ca_path(), "/v1/needs").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let plain = allex_testkit::http::HttpClient::new(http, None).get("/v1/needs");
    assert!(
        plain.is_err(),
        "plain HTTP was answered on the TLS port: {plain:?}"
    );
}

#[test]
fn a_certificate_for_another_name_or_an_expired_one_is_refused() {
    let pki = Pki::new("allex test CA");
    let ca = path(&pki.ca_path());
    for (cert, why) in [
        (
            pki.issue("other", &["other.example"], false),
            "not valid for name",
        ),
        (
            pki.issue("expired", &["127.0.0.1"], true),
            "certificate expired",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lm = tls_lan(dir.path(), &cert, &[]);
        let out = lm.cli(&["status", "--tls-ca", &ca]).unwrap();
        assert!(!out.status.success(), "{out:?}");
        assert!(out.stderr.contains(why), "{why}: {}", out.stderr);
    }
}

#[tokio::test]
async fn with_a_client_ca_a_master_must_present_a_certificate_for_its_name() {
    let pki = Pki::new("allex test CA");
    let server = pki.issue("server", &["127.0.0.1"], false);
    let m1 = pki.issue("m1", &["m1.lan"], false);
    let dir = tempfile::tempdir().unwrap();
    let lm = tls_lan(
        dir.path(),
        &server,
        &["--tls-client-ca".into(), path(&pki.ca_path())],
    );
    let ca = pki.ca_path();

    let mut ws = tls_ws(lm.addr(), &ca, Some(&m1)).await;
    assert_eq!(hello_answer(&mut ws, "m1.lan").await, None);
    drop(ws);
    let mut ws = tls_ws(lm.addr(), &ca, Some(&m1)).await;
    assert_eq!(
        hello_answer(&mut ws, "m2.lan").await,
        Some(ErrorCode::IdentityMismatch),
        "m1's certificate spoke for m2"
    );
    let mut ws = tls_ws(lm.addr(), &ca, None).await;
    assert_eq!(
        hello_answer(&mut ws, "m1.lan").await,
        Some(ErrorCode::IdentityMismatch),
        "a master without a certificate was let in"
    );
    // Admin commands need no client certificate.
    let out = lm.cli(&["status", "--tls-ca", &path(&ca)]).unwrap();
    assert!(out.status.success(), "{out:?}");
}
