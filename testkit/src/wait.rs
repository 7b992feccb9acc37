//! Waiting on events with a deadline instead of sleeping, and reading testsvc banners.

use std::fmt::Debug;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long to pause between two checks of a condition.
pub const POLL: Duration = Duration::from_millis(25);

/// Generous deadline for one event that normally takes milliseconds: long
/// enough for a loaded 2-core CI machine, short enough to fail a hung test.
pub const SOON: Duration = Duration::from_secs(10);

/// A condition that did not come true in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last observation: {last}")]
pub struct WaitError {
    /// What was awaited.
    pub what: String,
    /// How long we waited.
    pub waited: Duration,
    /// The last thing the check saw.
    pub last: String,
}

/// Retries `check` until it returns `Ok`, or fails after `deadline` naming
/// `what` and the last `Err` observation.
pub fn wait_until<T, E: Debug>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, WaitError> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= deadline {
            return Err(WaitError {
                what: what.to_string(),
                waited: start.elapsed(),
                last: format!("{last:?}"),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The async twin of [`wait_until`], for checks that await.
pub async fn wait_until_async<T, E: Debug, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= deadline {
            return Err(WaitError {
                what: what.to_string(),
                waited: start.elapsed(),
                last: format!("{last:?}"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Retries `check` until it returns `Some`, for [`SOON`]; panics naming
/// `what` otherwise. For async tests, which have nothing to do with a miss.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    eventually_async(what, || std::future::ready(check())).await
}

/// Like [`eventually`], with an async check.
pub async fn eventually_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let found = wait_until_async(what, SOON, || {
        let fut = check();
        async move { fut.await.ok_or("not yet") }
    })
    .await;
    match found {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Waits until a TCP connection to `addr` is accepted.
pub fn wait_port_accepts(addr: SocketAddr, deadline: Duration) -> Result<(), WaitError> {
    wait_until(&format!("{addr} to accept"), deadline, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Waits until nothing accepts connections on `addr` any more.
pub fn wait_port_closed(addr: SocketAddr, deadline: Duration) -> Result<(), WaitError> {
    wait_until(
        &format!("{addr} to refuse"),
        deadline,
        || match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => Err("still accepts"),
            Err(_) => Ok(()),
        },
    )
}

/// What an `allex-testsvc` says on one of its ports: its instance name and pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    /// The instance name.
    pub instance: String,
    /// The pid of the process that accepted the connection.
    pub pid: u32,
}

/// First word of the banner `allex-testsvc` sends on every connection.
pub const BANNER_PREFIX: &str = "allex-testsvc";

/// Connects to `addr` and reads the testsvc banner, HTTP-wrapped or not;
/// `None` when nothing answers or the answer is not a banner.
pub fn read_port_banner(addr: SocketAddr) -> Option<Banner> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = Vec::new();
    // The service closes after the banner; cap the read so a stranger cannot stall us.
    let _ = (&mut stream).take(64 * 1024).read_to_end(&mut buf);
    parse_banner(&String::from_utf8_lossy(&buf))
}

/// Finds the `allex-testsvc <instance> <pid>` line in a reply.
pub fn parse_banner(text: &str) -> Option<Banner> {
    text.lines().find_map(|line| {
        let mut parts = line.trim_end().split(' ');
        if parts.next()? != BANNER_PREFIX {
            return None;
        }
        let instance = parts.next()?.to_string();
        let pid = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Banner { instance, pid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_parses_plain_and_http() {
        let want = Some(Banner {
            instance: "Time".into(),
            pid: 42,
        });
        assert_eq!(parse_banner("allex-testsvc Time 42\n"), want);
        assert_eq!(
            parse_banner("HTTP/1.0 200 OK\r\nContent-Length: 22\r\n\r\nallex-testsvc Time 42\n"),
            want
        );
        assert_eq!(parse_banner("allex-testsvc Time x\n"), None);
        assert_eq!(parse_banner("hello\n"), None);
    }

    #[test]
    fn wait_until_names_what_and_last_observation() {
        let mut n = 0;
        let e = wait_until("the answer", Duration::from_millis(60), || {
            n += 1;
            Err::<(), _>(format!("saw {n}"))
        })
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("the answer"), "{msg}");
        assert!(msg.contains(&format!("saw {n}")), "{msg}");
        assert!(n >= 2, "retried only {n} times");
    }
}
