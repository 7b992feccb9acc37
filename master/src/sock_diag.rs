//! The machine's listening TCP sockets in one netlink request
//! (`sock_diag(7)`): how a tick of `tcp` health checks answers for every
//! child at once, instead of a connect and a close per child.
//!
//! A `tcp` check passes when a socket listens on the port on an address a
//! local connect reaches (the wildcard or loopback) and its accept queue has
//! room. That is exactly when a connect to 127.0.0.1 would be accepted by the
//! kernel: a listener whose queue is full drops the SYN, one that is absent
//! refuses it.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why the dump failed (the caller falls back to connecting).
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// A system call on the netlink socket failed.
    #[error("sock_diag {what}: {source}")]
    Io {
        /// Which call.
        what: &'static str,
        /// The fault.
        source: std::io::Error,
    },
    /// The kernel answered with an error or something unreadable.
    #[error("sock_diag: {0}")]
    Answer(String),
}

/// One port's best listener: the least full accept queue of its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Connections waiting to be accepted.
    pub waiting: u32,
    /// The backlog (`listen(2)`'s, capped by `somaxconn`).
    pub backlog: u32,
}

/// The listening sockets a local connect reaches, by port.
#[derive(Debug, Default, Clone)]
pub struct Listening(HashMap<u16, Queue>);

impl Listening {
    /// Reads them from the kernel: the IPv4 listeners, and the IPv6 ones
    /// only when one of `ports` is not among them (a service on `[::]`).
    pub fn read(ports: &[u16]) -> Result<Listening, DiagError> {
        let mut out = Listening(HashMap::with_capacity(ports.len() + 16));
        let sock = open()?;
        // One buffer for every datagram of the dump, not zeroed each time.
        let mut buf = Vec::with_capacity(64 * 1024);
        dump(&sock, libc::AF_INET as u8, &mut buf, &mut out)?;
        if ports.iter().any(|p| !out.0.contains_key(p)) {
            dump(&sock, libc::AF_INET6 as u8, &mut buf, &mut out)?;
        }
        Ok(out)
    }

    /// The `tcp` check of `port`: Ok, or why it fails.
    pub fn check(&self, port: u16) -> Result<(), String> {
        match self.0.get(&port) {
            None => Err(format!("tcp port {port}: nothing listens")),
            Some(q) if q.backlog > 0 && q.waiting > q.backlog => Err(format!(
                "tcp port {port}: accept queue full ({} waiting, backlog {})",
                q.waiting, q.backlog
            )),
            Some(_) => Ok(()),
        }
    }

    fn add(&mut self, port: u16, q: Queue) {
        let room = |q: &Queue| i64::from(q.backlog) - i64::from(q.waiting);
        let e = self.0.entry(port).or_insert(q);
        if room(&q) > room(e) {
            *e = q;
        }
    }

    /// The table from what a test lists.
    #[cfg(test)]
    fn from_entries(entries: impl IntoIterator<Item = (u16, Queue)>) -> Listening {
        let mut l = Listening::default();
        for (p, q) in entries {
            l.add(p, q);
        }
        l
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` without attributes.
const MSG_LEN: usize = 72;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> DiagError {
    move |source| DiagError::Io { what, source }
}

fn open() -> Result<OwnedFd, DiagError> {
    // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io("socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn dump(
    sock: &OwnedFd,
    family: u8,
    buf: &mut Vec<u8>,
    out: &mut Listening,
) -> Result<(), DiagError> {
    let mut req = [0u8; NLMSG_HDR + REQ_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let body = &mut req[NLMSG_HDR..];
    body[0] = family;
    body[1] = libc::IPPROTO_TCP as u8;
    body[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // SAFETY: send(2) reads `req.len()` bytes from a live buffer.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io("send")(std::io::Error::last_os_error()));
    }
    loop {
        buf.clear();
        // SAFETY: recv(2) writes at most `capacity` bytes into the spare
        // capacity of a live buffer; only what it wrote is made visible.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.capacity(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io("recv")(e));
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Err(DiagError::Answer(
                "the dump ended without NLMSG_DONE".into(),
            ));
        }
        // SAFETY: the kernel initialised the first `n` bytes, n <= capacity.
        unsafe { buf.set_len(n.min(buf.capacity())) };
        if parse(buf, out)? {
            return Ok(());
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads one datagram of netlink messages into `out`; true at `NLMSG_DONE`.
fn parse(mut b: &[u8], out: &mut Listening) -> Result<bool, DiagError> {
    let short = || DiagError::Answer("a truncated message".into());
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0).ok_or_else(short)? as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR || len > b.len() {
            return Err(short());
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = u32_at(b, NLMSG_HDR).map_or(0, |e| -(e as i32));
                return Err(DiagError::Answer(
                    std::io::Error::from_raw_os_error(errno).to_string(),
                ));
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                let m = b.get(NLMSG_HDR..NLMSG_HDR + MSG_LEN).ok_or_else(short)?;
                let family = m[0];
                // id.sport is big-endian; id.src is 16 bytes from offset 8.
                let port = u16::from_be_bytes([m[4], m[5]]);
                let src = &m[8..24];
                if reachable_locally(family, src) {
                    let waiting = u32_at(m, 56).ok_or_else(short)?;
                    let backlog = u32_at(m, 60).ok_or_else(short)?;
                    out.add(port, Queue { waiting, backlog });
                }
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let step = (len + 3) & !3;
        b = b.get(step..).unwrap_or(&[]);
    }
    Ok(false)
}

/// Whether a connect to 127.0.0.1 (or ::1) reaches a listener bound to `src`.
fn reachable_locally(family: u8, src: &[u8]) -> bool {
    if i32::from(family) == libc::AF_INET {
        src[..4] == [0, 0, 0, 0] || src[0] == 127
    } else {
        let a: [u8; 16] = src.try_into().unwrap_or([0xff; 16]);
        let ip = std::net::Ipv6Addr::from(a);
        ip.is_unspecified()
            || ip.is_loopback()
            || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_seen_and_a_closed_port_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let wide = std::net::TcpListener::bind("[::]:0").unwrap();
        let port6 = wide.local_addr().unwrap().port();
        let table = Listening::read(&[port, port6]).unwrap();
        assert_eq!(table.check(port), Ok(()));
        assert_eq!(table.check(port6), Ok(()));
        drop(l);
        let table = Listening::read(&[port]).unwrap();
        assert!(table.check(port).unwrap_err().contains("nothing listens"));
    }

    #[test]
    fn a_full_accept_queue_fails_and_the_roomiest_listener_counts() {
        let full = Queue {
            waiting: 5,
            backlog: 4,
        };
        let room = Queue {
            waiting: 0,
            backlog: 4,
        };
        let t = Listening::from_entries([(80, full)]);
        assert!(t.check(80).unwrap_err().contains("accept queue full"));
        let t = Listening::from_entries([(80, full), (80, room)]);
        assert_eq!(t.check(80), Ok(()));
    }
}
