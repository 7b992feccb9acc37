//! Kernel keepalives on the master's link: a dead path (a cable pulled, a
//! host powered off) is found by the kernel, which probes an idle connection
//! and times out unacknowledged data, without waking either process. The
//! heartbeat is left to find what the kernel cannot: a frozen peer.

use std::time::Duration;

/// How long after the last traffic a dead path is reported, for a heartbeat
/// unit `heartbeat`: probes start one unit after the last packet and the
/// connection fails one more unit later (five probes, or the user timeout).
pub fn dead_path_after(heartbeat: Duration) -> Duration {
    let (idle, interval, probes) = timings(heartbeat);
    idle + interval * probes
}

fn timings(heartbeat: Duration) -> (Duration, Duration, u32) {
    // The kernel counts keepalive times in whole seconds.
    let idle = heartbeat.max(Duration::from_secs(1));
    let interval = (heartbeat / 5).max(Duration::from_secs(1));
    (idle, interval, 5)
}

/// Arms keepalive probes and a matching `TCP_USER_TIMEOUT` on `stream`.
pub fn arm(stream: &tokio::net::TcpStream, heartbeat: Duration) -> std::io::Result<()> {
    let (idle, interval, probes) = timings(heartbeat);
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(probes),
    )?;
    sock.set_tcp_user_timeout(Some(idle + interval * probes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_gets_probes_and_a_user_timeout_of_two_heartbeats() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        arm(&c, Duration::from_secs(5)).unwrap();
        let s = socket2::SockRef::from(&c);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(5));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(1));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 5);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(10)));
        assert_eq!(
            dead_path_after(Duration::from_secs(5)),
            Duration::from_secs(10)
        );
    }
}
