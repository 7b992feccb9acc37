//! A TCP proxy to put between a master and the lan manager, to cut, freeze,
//! slow down or reset the link on command.
//!
//! It runs on its own thread with its own tokio runtime, so it works the
//! same under `#[test]` and `#[tokio::test]`, and blocking waits in a test
//! never starve it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// How the proxy treats traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Open,
    /// New connections are accepted and then held silent, forwarding nothing,
    /// like a network that swallows packets; they are closed at restore.
    Blackhole,
    /// New connections are closed as soon as they are accepted.
    Reset,
    /// Current connections stay open but nothing moves until restore: a
    /// silent partition that only heartbeats can notice. New ones are held too.
    Frozen,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding the listening socket failed.
    #[error("proxy cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    /// The proxy's thread or runtime could not be created.
    #[error("proxy cannot start its runtime: {0}")]
    Runtime(std::io::Error),
}

#[derive(Debug, Clone)]
struct Control {
    mode: Mode,
    delay: Duration,
    target: SocketAddr,
    /// Bumped to close every current connection.
    epoch: u64,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    active: AtomicUsize,
}

/// A running proxy; dropping it closes every connection and stops it.
pub struct Proxy {
    addr: SocketAddr,
    control: watch::Sender<Control>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 on a free port and forwards to `target`.
    pub fn start(target: SocketAddr) -> Result<Proxy, ProxyError> {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(ProxyError::Bind)?;
        let addr = std_listener.local_addr().map_err(ProxyError::Bind)?;
        std_listener
            .set_nonblocking(true)
            .map_err(ProxyError::Bind)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ProxyError::Runtime)?;
        let (control, rx) = watch::channel(Control {
            mode: Mode::Open,
            delay: Duration::ZERO,
            target,
            epoch: 0,
            shutdown: false,
        });
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, rx, thread_stats).await,
                        Err(e) => tracing::error!(error = %e, "proxy listener unusable"),
                    }
                });
            })
            .map_err(ProxyError::Runtime)?;
        tracing::debug!(%addr, %target, "proxy started");
        Ok(Proxy {
            addr,
            control,
            stats,
            thread: Some(thread),
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.control.borrow().target
    }

    /// Forwards new connections to another target (e.g. a restarted lan manager).
    pub fn set_target(&self, target: SocketAddr) {
        self.control.send_modify(|c| c.target = target);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.control.borrow().mode
    }

    /// Drops every current connection and blackholes new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.set_mode(Mode::Blackhole, true);
    }

    /// Drops every current connection and closes new ones at once until restore.
    pub fn cut_reset(&self) {
        self.set_mode(Mode::Reset, true);
    }

    /// Stops all traffic without closing anything until restore.
    pub fn freeze(&self) {
        self.set_mode(Mode::Frozen, false);
    }

    /// Back to forwarding; connections held by a cut are closed so peers reconnect.
    pub fn restore(&self) {
        let close_held = self.mode() == Mode::Blackhole;
        self.set_mode(Mode::Open, close_held);
    }

    /// Closes every current connection; new ones are still forwarded.
    pub fn drop_connections(&self) {
        self.control.send_modify(|c| c.epoch += 1);
    }

    /// Delays every chunk by `delay` in each direction (latency, not throttling).
    pub fn set_delay(&self, delay: Duration) {
        self.control.send_modify(|c| c.delay = delay);
    }

    /// Connections accepted since start, in any mode.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently forwarded to the target.
    pub fn active(&self) -> usize {
        self.stats.active.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: Mode, close_current: bool) {
        self.control.send_modify(|c| {
            c.mode = mode;
            if close_current {
                c.epoch += 1;
            }
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.send_modify(|c| c.shutdown = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, mut rx: watch::Receiver<Control>, stats: Arc<Stats>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy accept failed");
                        continue;
                    }
                };
                stats.accepted.fetch_add(1, Ordering::SeqCst);
                let ctl = rx.borrow().clone();
                tracing::debug!(%peer, mode = ?ctl.mode, "proxy accepted");
                match ctl.mode {
                    Mode::Reset => drop(client),
                    Mode::Blackhole => {
                        tokio::spawn(hold(client, rx.clone(), ctl.epoch));
                    }
                    Mode::Open | Mode::Frozen => {
                        tokio::spawn(forward(client, rx.clone(), stats.clone()));
                    }
                }
            }
            changed = rx.changed() => {
                if changed.is_err() || rx.borrow().shutdown {
                    return;
                }
            }
        }
    }
}

/// Keeps a blackholed connection open, silent, until the next epoch.
async fn hold(client: TcpStream, mut rx: watch::Receiver<Control>, epoch: u64) {
    while rx.borrow().epoch == epoch && !rx.borrow().shutdown {
        if rx.changed().await.is_err() {
            break;
        }
    }
    drop(client);
}

async fn forward(client: TcpStream, mut rx: watch::Receiver<Control>, stats: Arc<Stats>) {
    let (epoch, target) = {
        let c = rx.borrow();
        (c.epoch, c.target)
    };
    let server =
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%target, error = %e, "proxy cannot reach the target");
                return;
            }
            Err(_) => {
                tracing::debug!(%target, "proxy connect to the target timed out");
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    stats.active.fetch_add(1, Ordering::SeqCst);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(cr, sw, rx.clone());
    let down = pipe(sr, cw, rx.clone());
    let closed = async {
        loop {
            {
                let c = rx.borrow_and_update();
                if c.epoch != epoch || c.shutdown {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    // Either direction ending ends the connection: the links we carry
    // (WebSocket) never half-close on purpose.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = closed => {}
    }
    stats.active.fetch_sub(1, Ordering::SeqCst);
}

/// Copies one direction, each chunk held back by the current delay and while frozen.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<Control>,
) {
    let (tx, mut queue) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((read_at, chunk)) = queue.recv().await {
            loop {
                let (mode, delay) = {
                    let c = rx.borrow_and_update();
                    (c.mode, c.delay)
                };
                let due = read_at + delay;
                if mode == Mode::Frozen {
                    if rx.changed().await.is_err() {
                        return;
                    }
                } else if Instant::now() < due {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = rx.changed() => {}
                    }
                } else {
                    break;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer drains what the reader queued before the pipe ends.
    let _ = tokio::join!(reader, writer);
}
