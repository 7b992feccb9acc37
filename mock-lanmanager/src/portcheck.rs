//! The port check: a service counts as running only once every declared port accepts.

use allex_protocol::{Ports, Protocol};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest pause between two connection attempts to one port.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Connects to every port in `ports` for `protocols` at `address` until `timeout`.
///
/// Retries start at 1 ms and double up to 50 ms, so a service that starts
/// listening a moment after it was reported is found quickly.
pub async fn check_ports(
    address: &str,
    protocols: &[Protocol],
    ports: Ports,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut targets = Vec::new();
    for p in protocols {
        match ports.get(*p) {
            Some(port) => targets.push((*p, port)),
            None => {
                return Err(format!(
                    "no {p} port reported for a service that declares {p}"
                ))
            }
        }
    }
    let checks = targets
        .into_iter()
        .map(|(p, port)| check_one(address, p, port, deadline));
    let results = futures_util::future::join_all(checks).await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

async fn check_one(address: &str, p: Protocol, port: u16, deadline: Instant) -> Result<(), String> {
    let mut pause = Duration::from_millis(1);
    let mut last_error;
    loop {
        let attempt = tokio::time::timeout_at(deadline, TcpStream::connect((address, port))).await;
        match attempt {
            Ok(Ok(stream)) => {
                // Reset instead of a FIN handshake: nothing is left in
                // TIME_WAIT, which thousands of checks would otherwise fill.
                let _ = stream.set_zero_linger();
                return Ok(());
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "timed out".into(),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "{p} port {address}:{port} did not accept: {last_error}"
            ));
        }
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

pub use crate::core::Liveness;

/// Connects once to each port of a service, all at once, and sums up.
pub async fn probe_service(
    address: &str,
    ports: &[(Protocol, u16)],
    timeout: Duration,
) -> Liveness {
    let probes = ports.iter().map(|(_, port)| async move {
        match tokio::time::timeout(timeout, TcpStream::connect((address, *port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_zero_linger();
                Liveness::Answers
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Liveness::Refused,
            _ => Liveness::Silent,
        }
    });
    let verdicts = futures_util::future::join_all(probes).await;
    if verdicts.contains(&Liveness::Answers) {
        Liveness::Answers
    } else if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Liveness::Refused) {
        Liveness::Refused
    } else {
        Liveness::Silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listening_port_passes_and_closed_port_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().port();
        let closed = {
            let c = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            c.local_addr().unwrap().port()
        };
        let ports = Ports {
            tcp: Some(open),
            http: None,
            ws: None,
        };
        check_ports(
            "127.0.0.1",
            &[Protocol::Tcp],
            ports,
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        let bad = Ports {
            tcp: Some(open),
            http: Some(closed),
            ws: None,
        };
        let e = check_ports(
            "127.0.0.1",
            &[Protocol::Tcp, Protocol::Http],
            bad,
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(e.contains(&format!("http port 127.0.0.1:{closed}")), "{e}");
        let e = check_ports(
            "127.0.0.1",
            &[Protocol::Ws],
            ports,
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert!(e.contains("no ws port"), "{e}");
        let t = Duration::from_millis(500);
        let mixed = [(Protocol::Tcp, open), (Protocol::Http, closed)];
        assert_eq!(
            probe_service("127.0.0.1", &mixed, t).await,
            Liveness::Answers
        );
        let refused = [(Protocol::Http, closed)];
        assert_eq!(
            probe_service("127.0.0.1", &refused, t).await,
            Liveness::Refused
        );
    }
}
