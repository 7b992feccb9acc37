//! The link proxy over real sockets: forwarding, cut, reset, freeze, delay, retarget.

use allex_sim::proxy::{Mode, Proxy};
use allex_sim::wait_until;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A line echo server that prefixes every answer with `tag` and counts accepts.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

fn echo(tag: &'static str) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(w, "{tag} {line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    Echo { addr, accepted }
}

struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

fn connect(addr: SocketAddr) -> Client {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    Client {
        w: s.try_clone().unwrap(),
        r: BufReader::new(s),
    }
}

impl Client {
    fn ask(&mut self, q: &str) -> std::io::Result<String> {
        writeln!(self.w, "{q}")?;
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }

    /// Reads until the proxy closes us; panics if it stays open past `T`.
    fn expect_closed(&mut self) {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => {}
            Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {}
            other => panic!("connection still open: {other:?} {line:?}"),
        }
    }

    /// Asserts nothing arrives within `window` (used only for "must not happen" checks).
    fn expect_silence(&mut self, window: Duration) {
        self.r.get_ref().set_read_timeout(Some(window)).unwrap();
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            other => panic!("expected silence, got {other:?} {line:?}"),
        }
        self.r.get_ref().set_read_timeout(Some(T)).unwrap();
    }
}

#[test]
fn forwards_both_ways_and_counts_connections() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    let mut c = connect(proxy.addr());
    assert_eq!(c.ask("hello").unwrap(), "A hello");
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.active(), 1);
    drop(c);
    wait_until("the proxy to notice the close", T, || {
        match proxy.active() {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .unwrap();
}

#[test]
fn cut_drops_current_and_blackholes_new_until_restore() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    let mut before = connect(proxy.addr());
    assert_eq!(before.ask("one").unwrap(), "A one");

    proxy.cut();
    assert_eq!(proxy.mode(), Mode::Blackhole);
    before.expect_closed();

    let mut held = connect(proxy.addr());
    writeln!(held.w, "lost").unwrap();
    held.expect_silence(Duration::from_millis(300));
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "nothing reached the target"
    );

    proxy.restore();
    held.expect_closed();
    let mut after = connect(proxy.addr());
    assert_eq!(after.ask("two").unwrap(), "A two");
}

#[test]
fn cut_reset_closes_new_connections_at_once() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    proxy.cut_reset();
    let mut c = connect(proxy.addr());
    c.expect_closed();
    proxy.restore();
    assert_eq!(connect(proxy.addr()).ask("x").unwrap(), "A x");
}

#[test]
fn drop_connections_closes_current_but_keeps_accepting() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    let mut c = connect(proxy.addr());
    assert_eq!(c.ask("one").unwrap(), "A one");
    proxy.drop_connections();
    c.expect_closed();
    assert_eq!(connect(proxy.addr()).ask("two").unwrap(), "A two");
}

#[test]
fn freeze_holds_traffic_without_closing_and_restore_delivers_it() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    let mut c = connect(proxy.addr());
    assert_eq!(c.ask("one").unwrap(), "A one");
    proxy.freeze();
    writeln!(c.w, "two").unwrap();
    c.expect_silence(Duration::from_millis(300));
    proxy.restore();
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "A two");
}

#[test]
fn delay_adds_latency_each_way() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    let mut c = connect(proxy.addr());
    assert_eq!(c.ask("warm").unwrap(), "A warm");
    proxy.set_delay(Duration::from_millis(150));
    let t = Instant::now();
    assert_eq!(c.ask("slow").unwrap(), "A slow");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    proxy.set_delay(Duration::ZERO);
    assert_eq!(c.ask("fast").unwrap(), "A fast");
}

#[test]
fn set_target_sends_new_connections_elsewhere() {
    let (a, b) = (echo("A"), echo("B"));
    let proxy = Proxy::start(a.addr).unwrap();
    let mut old = connect(proxy.addr());
    assert_eq!(old.ask("x").unwrap(), "A x");
    proxy.set_target(b.addr);
    assert_eq!(proxy.target(), b.addr);
    assert_eq!(connect(proxy.addr()).ask("y").unwrap(), "B y");
    assert_eq!(
        old.ask("z").unwrap(),
        "A z",
        "current connections keep their target"
    );
}

#[tokio::test]
async fn works_inside_a_tokio_test_and_stops_on_drop() {
    let server = echo("A");
    let proxy = Proxy::start(server.addr).unwrap();
    let addr = proxy.addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    s.write_all(b"hi\n").await.unwrap();
    let mut r = tokio::io::BufReader::new(&mut s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "A hi\n");
    drop(proxy);
    let mut line = String::new();
    let n = tokio::time::timeout(T, r.read_line(&mut line))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed when the proxy is dropped");
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens after drop"
    );
}
