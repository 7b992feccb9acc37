//! Ports for tests that run in parallel: blocks for masters' ranges, and
//! real listening ports that stand in for a service's.

use allex_protocol::Ports;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Lowest port handed out.
pub const LOW: u16 = 20000;
/// One past the highest port handed out, unless the ephemeral range starts lower.
pub const HIGH: u16 = 60000;

/// Offset of the next block from the span's start; `None` until first use.
static CURSOR: Mutex<Option<u32>> = Mutex::new(None);

/// Hands out the start of a block of `size` ports that no earlier caller in
/// this process got, placed by pid so that other test processes start
/// elsewhere, and skipping blocks in which some port is listened on right
/// now (another test process may hold a large block). Nothing is reserved:
/// code using the block must still skip ports that get taken later.
///
/// Ports stay below the kernel's ephemeral range when it leaves room, so
/// outgoing connections do not land in a block.
pub fn port_block(size: u16) -> u16 {
    let (low, high) = span();
    let span = u32::from(high - low);
    let size = u32::from(size.max(1)).min(span);
    // Knuth's multiplicative hash spreads neighbouring pids far apart.
    let origin = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut cursor = CURSOR.lock().unwrap_or_else(|p| p.into_inner());
    let mut first = None;
    for _ in 0..(span / size).max(1) {
        let mut offset = cursor.unwrap_or(origin);
        // A block never straddles the end: it restarts at the bottom instead.
        if offset + size > span {
            offset = 0;
        }
        *cursor = Some(offset + size);
        let start = low + offset as u16;
        first.get_or_insert(start);
        if all_free(start, size) {
            return start;
        }
    }
    // Everything is busy: hand out the first candidate and let the caller skip.
    first.unwrap_or(low)
}

/// Whether nothing listens on any port of the block (on any address).
fn all_free(start: u16, size: u32) -> bool {
    (0..size).all(|i| {
        u16::try_from(u32::from(start) + i)
            .is_ok_and(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok())
    })
}

fn span() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok());
    match ephemeral_low {
        Some(e) if e > LOW && e - LOW >= 5000 => (LOW, e.min(HIGH)),
        _ => (LOW, HIGH),
    }
}

/// A port that was free a moment ago (the kernel's pick for port 0 on 127.0.0.1).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Three real listening ports on 127.0.0.1, one per protocol: the kernel
/// accepts into the backlog, which is all a port check needs.
pub struct Listening {
    _listeners: Vec<std::net::TcpListener>,
    /// The ports.
    pub ports: Ports,
}

impl Listening {
    /// Binds one kernel-chosen port per protocol on 127.0.0.1.
    pub fn bind() -> std::io::Result<Listening> {
        let listeners = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let ports = three(&listeners, |l| l.local_addr())?;
        Ok(Listening {
            _listeners: listeners,
            ports,
        })
    }
}

/// [`Listening::bind`] for tests; panics when the kernel has no port to give.
pub fn listening() -> Listening {
    Listening::bind().unwrap_or_else(|e| panic!("binding three ports on 127.0.0.1: {e}"))
}

/// Three ports nobody listens on (bound, then released), for checks that must fail.
pub fn dead_ports() -> Ports {
    listening().ports
}

fn three<L>(
    listeners: &[L],
    addr: impl Fn(&L) -> std::io::Result<SocketAddr>,
) -> std::io::Result<Ports> {
    let mut p = [0u16; 3];
    for (slot, l) in p.iter_mut().zip(listeners) {
        *slot = addr(l)?.port();
    }
    Ok(Ports {
        tcp: Some(p[0]),
        http: Some(p[1]),
        ws: Some(p[2]),
    })
}

/// Real listening ports, one per protocol, that accept and drop every
/// connection (so thousands of checks never fill a backlog); the accept
/// loops end when this is dropped.
pub struct AcceptingPorts {
    /// The ports.
    pub ports: Ports,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AcceptingPorts {
    /// Binds one kernel-chosen port per protocol on `ip` and accepts on each.
    pub async fn bind(ip: IpAddr) -> std::io::Result<AcceptingPorts> {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?);
        }
        let ports = three(&listeners, |l| l.local_addr())?;
        let tasks = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(async move {
                    // An accept error (fd pressure) is transient: the checker retries.
                    while let Ok((c, _)) = l.accept().await {
                        drop(c);
                    }
                })
            })
            .collect();
        Ok(AcceptingPorts { ports, tasks })
    }
}

impl Drop for AcceptingPorts {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_with_a_listener_in_it_is_skipped() {
        let start = port_block(40);
        // The next block would start here: occupy its first port.
        let held = start + 40;
        let Ok(_listener) = std::net::TcpListener::bind(("0.0.0.0", held)) else {
            return; // taken by someone else already, which is just as good
        };
        let got = port_block(40);
        assert!(
            !(got..got + 40).contains(&held),
            "block {got}..{} holds the listened port {held}",
            got + 40
        );
    }

    #[test]
    fn blocks_in_one_process_do_not_overlap() {
        let (low, high) = span();
        let mut blocks: Vec<(u16, u16)> = (0..50)
            .map(|_| port_block(30))
            .map(|s| (s, s + 30))
            .collect();
        for (s, e) in &blocks {
            assert!(*s >= low && *e <= high, "{s}..{e} leaves {low}..{high}");
        }
        blocks.sort();
        for w in blocks.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
        }
    }
}
