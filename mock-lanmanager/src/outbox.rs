//! The bounded outgoing queue of one connection, and the switch that drops it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages a connection may have queued before it counts as not reading.
pub const OUTBOX_CAPACITY: usize = 16 * 1024;

/// Bytes a connection may have queued before it counts as not reading; room
/// for one largest snapshot and then some.
pub const OUTBOX_BYTES: usize = allex_protocol::frame::MAX_FROM_LAN_FRAME + (32 << 20);

pub use crate::core::ConnId;

/// Tells a connection task to close, with the reason for its peer.
#[derive(Debug)]
pub struct KillSwitch {
    reason: watch::Sender<Option<String>>,
}

impl Default for KillSwitch {
    fn default() -> Self {
        KillSwitch {
            reason: watch::channel(None).0,
        }
    }
}

impl KillSwitch {
    /// Asks the connection to close; the first reason given wins.
    pub fn kill(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.reason.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once `kill` was called; returns the reason.
    pub async fn killed(&self) -> String {
        let mut rx = self.reason.subscribe();
        // The sender lives in self, so it cannot be gone while we wait.
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => String::new(),
        };
        reason
    }

    /// The reason, when killed.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }
}

/// Microseconds since the first call in this process: a cheap clock that
/// fits in an atomic, for "when did this peer last say anything". Fine
/// enough that a frame heard before a probe starts is never taken for an
/// answer to it (with milliseconds, a reconnect within the same
/// millisecond as the old link's last frame looked like a pong).
pub fn mono_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The sending side of a connection, held by the state owner.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The connection it writes to.
    pub id: ConnId,
    tx: mpsc::Sender<Message>,
    queued: Arc<AtomicUsize>,
    kill: Arc<KillSwitch>,
    /// [`mono_us`] of the last frame the peer sent (pongs included); 0 for never.
    last_rx: Arc<AtomicU64>,
}

/// The receiving side, drained by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
}

impl OutboxReceiver {
    /// The next frame; None once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        let t = self.rx.recv().await?;
        self.queued.fetch_sub(t.len(), Ordering::Relaxed);
        Some(t)
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        let t = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(t.len(), Ordering::Relaxed);
        Some(t)
    }
}

impl Outbox {
    /// A new outbox and the receiver its connection's writer drains.
    pub fn new(id: ConnId, kill: Arc<KillSwitch>) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                id,
                tx,
                queued: queued.clone(),
                kill,
                last_rx: Arc::new(AtomicU64::new(mono_us())),
            },
            OutboxReceiver { rx, queued },
        )
    }

    /// Records that the peer sent something just now.
    pub fn heard(&self) {
        self.last_rx.store(mono_us(), Ordering::Relaxed);
    }

    /// [`mono_us`] of the last frame from the peer.
    pub fn last_heard(&self) -> u64 {
        self.last_rx.load(Ordering::Relaxed)
    }

    /// Sends a WebSocket ping: a live peer's WebSocket layer answers with a
    /// pong, which [`Outbox::heard`] records, whatever the peer's own logic does.
    pub fn ping(&self) -> bool {
        self.push(Message::Ping(Default::default()))
    }

    /// Queues one frame without waiting; a full queue drops the connection.
    ///
    /// Returns false when the connection is gone or was dropped for not reading.
    pub fn send(&self, text: Utf8Bytes) -> bool {
        self.push(Message::Text(text))
    }

    fn push(&self, msg: Message) -> bool {
        let len = msg.len();
        if self.queued.load(Ordering::Relaxed) + len > OUTBOX_BYTES {
            return self.overflow();
        }
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.queued.fetch_add(len, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow(),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn overflow(&self) -> bool {
        tracing::warn!(
            conn = self.id,
            "outgoing queue full; dropping the connection"
        );
        self.kill
            .kill("outgoing queue full: the peer does not read");
        false
    }

    /// Sends an error frame and closes the connection with the same reason:
    /// how a peer is told why it is refused.
    pub fn refuse(&self, code: allex_protocol::ErrorCode, message: String) {
        crate::metrics::metrics().frame_refused(code);
        self.refuse_uncounted(code, message);
    }

    /// [`Outbox::refuse`] for a refusal the core decided, which its
    /// `master_refused` event counts already.
    pub fn refuse_uncounted(&self, code: allex_protocol::ErrorCode, message: String) {
        self.send(Utf8Bytes::from(allex_protocol::frame::encode(
            &allex_protocol::LanToMaster::Error {
                code,
                message: message.clone(),
                leader: None,
            },
        )));
        self.kill(format!("{code}: {message}"));
    }

    /// Refuses a peer of a follower, naming the leader it should go to.
    pub fn refuse_not_leader(&self, leader: Option<String>) {
        let code = allex_protocol::ErrorCode::NotLeader;
        crate::metrics::metrics().frame_refused(code);
        let message = match &leader {
            Some(l) => format!("this lan manager follows; the leader is at {l}"),
            None => "this lan manager follows and no leader is elected yet; try again shortly"
                .to_string(),
        };
        self.send(Utf8Bytes::from(allex_protocol::frame::encode(
            &allex_protocol::LanToMaster::Error {
                code,
                message: message.clone(),
                leader,
            },
        )));
        self.kill(format!("{code}: {message}"));
    }

    /// Closes the connection with a reason.
    pub fn kill(&self, reason: impl Into<String>) {
        self.kill.kill(reason);
    }
}
