//! Runs the health probes of one tick (`tcp`, `http`, `exec`) within their
//! timeouts, on the runtime: no thread per check, and nothing left running
//! after it. All `tcp` probes of a tick are answered by one `sock_diag` dump
//! of the listening sockets; `http` and `exec` probes run side by side.

use crate::core::{ProbeJob, ProbeResult};
use allex_protocol::health::{CheckKind, HealthCheck};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answers the `tcp` probes of a tick at once from one dump of the
/// listening sockets (a few hundred microseconds for hundreds of children,
/// cheap enough to run on the state owner); gives the jobs back when the
/// dump is not possible here (a seccomp filter, an odd kernel).
pub fn tcp_now(jobs: Vec<ProbeJob>) -> Result<Vec<ProbeResult>, Vec<ProbeJob>> {
    let ports: Vec<u16> = jobs.iter().filter_map(|j| j.port).collect();
    match crate::sock_diag::Listening::read(&ports) {
        Ok(table) => Ok(jobs
            .into_iter()
            .map(|j| {
                let result = match j.port {
                    Some(port) => table.check(port),
                    None => Err("the service declares no port".into()),
                };
                ProbeResult {
                    instance: j.instance,
                    pid: j.pid,
                    result,
                }
            })
            .collect()),
        Err(e) => {
            tracing::debug!(error = %e, "no sock_diag; tcp checks connect instead");
            Err(jobs)
        }
    }
}

/// Runs probes that need a conversation or a process (`http`, `exec`, and
/// `tcp` without sock_diag) side by side; a result for every job.
pub async fn run_each(jobs: Vec<ProbeJob>) -> Vec<ProbeResult> {
    let each = jobs.into_iter().map(|j| async move {
        let result = run(&j.check, j.port).await;
        ProbeResult {
            instance: j.instance,
            pid: j.pid,
            result,
        }
    });
    futures_util::future::join_all(each).await
}

/// Probes once: Ok, or why it failed.
pub async fn run(check: &HealthCheck, port: Option<u16>) -> Result<(), String> {
    let limit = Duration::from_millis(check.timeoutms);
    match tokio::time::timeout(limit, probe(check, port)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", check.timeoutms)),
    }
}

async fn probe(check: &HealthCheck, port: Option<u16>) -> Result<(), String> {
    match check.kind {
        CheckKind::Tcp => {
            let port = port.ok_or("the service declares no port")?;
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| format!("tcp port {port}: {e}"))
        }
        CheckKind::Http => {
            let port = port.ok_or("the service declares no port")?;
            http(port, check.http_path()).await
        }
        CheckKind::Exec => exec(&check.command).await,
    }
}

async fn http(port: u16, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("http port {port}: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("http port {port}: {e}"))?;
    // The status line is all we need; 64 bytes hold it.
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match s.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("http port {port}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path} on port {port}: not an HTTP answer"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} on port {port} answered {status}"))
    }
}

async fn exec(command: &[String]) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no command")?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A probe that times out is dropped, and its process with it.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: &str, extra: serde_json::Value) -> HealthCheck {
        let mut v = serde_json::json!({"type": kind, "timeoutms": 300});
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn each_kind_passes_and_fails_for_the_right_reason() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /health ");
                    let line = if ok {
                        "HTTP/1.0 200 OK"
                    } else {
                        "HTTP/1.0 503 Busy"
                    };
                    let _ = s.write_all(format!("{line}\r\n\r\n").as_bytes()).await;
                });
            }
        });
        assert_eq!(
            run(&check("tcp", serde_json::json!({})), Some(port)).await,
            Ok(())
        );
        let h = check("http", serde_json::json!({"path": "/health"}));
        assert_eq!(run(&h, Some(port)).await, Ok(()));
        let bad = check("http", serde_json::json!({"path": "/other"}));
        assert!(run(&bad, Some(port)).await.unwrap_err().contains("503"));
        let dead = allex_testkit_free_port();
        assert!(run(&check("tcp", serde_json::json!({})), Some(dead))
            .await
            .is_err());
        assert_eq!(
            run(
                &check("exec", serde_json::json!({"command": ["true"]})),
                None
            )
            .await,
            Ok(())
        );
        assert!(run(
            &check("exec", serde_json::json!({"command": ["false"]})),
            None
        )
        .await
        .is_err());
        let slow = check("exec", serde_json::json!({"command": ["sleep", "5"]}));
        assert!(run(&slow, None)
            .await
            .unwrap_err()
            .contains("within 300 ms"));
    }

    /// A port nothing listens on: bound, then let go.
    fn allex_testkit_free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }
}
