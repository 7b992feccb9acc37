//! One WebSocket connection: opening checks, decoding, forwarding, writing.
//!
//! The connection task never decides anything about needs: it checks the
//! opening frame (version, token), answers heartbeats and undecodable frames
//! itself, and forwards everything else to the state owner. Its writer drains
//! a bounded queue, so a peer that never reads is dropped instead of growing
//! memory or slowing anyone else.

use crate::driver::Event;
use crate::leadership::Role;
use crate::outbox::{ConnId, KillSwitch, Outbox, OutboxReceiver};
use crate::ratelimit::{Bucket, RateLimit, Verdict};
use crate::settings::Settings;
use allex_protocol::events::LanEvent;
use allex_protocol::frame::{decode_text, encode, MAX_TO_LAN_FRAME};
use allex_protocol::{
    AdminToLan, DecodeError, ErrorCode, LanToAdmin, LanToMaster, MasterHello, MasterToLan, Opening,
    ProtocolVersion, PROTOCOL_VERSION,
};
use allex_tls::Io;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Frames above this size are not even buffered: the connection is closed.
///
/// Between [`MAX_TO_LAN_FRAME`] and this, a frame is refused with
/// `frame_too_large` and the session goes on.
pub const HARD_FRAME_LIMIT: usize = 4 * MAX_TO_LAN_FRAME;

/// Longest a master name may be; names show up in logs and status.
const MAX_MASTER_NAME: usize = 512;

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// An admin session is dropped after this long without a request.
const ADMIN_IDLE: Duration = Duration::from_secs(60);

/// Frames written before one flush.
const WRITE_BATCH: usize = 512;

type Ws = WebSocketStream<Box<dyn Io>>;

/// What every connection task shares.
#[derive(Debug)]
pub struct ConnContext {
    /// The lan manager's settings.
    pub settings: Arc<Settings>,
    /// The state owner's inbox.
    pub events: mpsc::Sender<Event>,
    /// The event stream, which followers read without the state owner.
    pub hub: Arc<crate::events::EventHub>,
    /// Whether this lan manager leads; a follower refuses every session.
    pub role: tokio::sync::watch::Receiver<crate::leadership::Role>,
}

/// The WebSocket limits of the lan manager's side.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(allex_protocol::frame::WS_READ_BUFFER)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT))
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve(stream: TcpStream, peer: SocketAddr, id: ConnId, ctx: Arc<ConnContext>) {
    let hello_timeout = ctx.settings.hello_timeout;
    // The handshake counts against the hello timeout: a client that never
    // finishes one is dropped like one that never says hello.
    let (stream, client_cert): (Box<dyn Io>, _) = match &ctx.settings.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let acceptor = allex_tls::TlsAcceptor::from(tls.config.clone());
            match tokio::time::timeout(hello_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    (Box::new(tls), cert)
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let ws = match tokio::time::timeout(
        hello_timeout,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "websocket handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return;
        }
    };
    let (sink, mut stream) = ws.split();
    let kill = Arc::new(KillSwitch::default());
    let (outbox, rx) = Outbox::new(id, kill.clone());
    let writer = tokio::spawn(write_loop(sink, rx, kill.clone()));

    let first = tokio::select! {
        r = tokio::time::timeout(hello_timeout, next_text(&mut stream)) => r,
        _ = kill.killed() => Ok(Err(None)),
    };
    let opening = match first {
        Err(_) => Err(("no opening frame in time".to_string(), None)),
        Ok(Err(None)) => Err(("closed before the opening frame".to_string(), None)),
        Ok(Err(Some(e))) => Err((e.to_string(), Some(e))),
        Ok(Ok(text)) => decode_text::<Opening>(&text, MAX_TO_LAN_FRAME).map_err(|e| match e {
            // A request before the hello (`status` from an old client):
            // say what is missing rather than that the type is unknown.
            DecodeError::UnknownType(t) => (
                format!("{t:?} is only answered after hello or admin_hello"),
                None,
            ),
            e => (e.to_string(), Some(e)),
        }),
    };
    match opening {
        // A hello that parses but holds a bad value (an instance name in
        // its inventory that could escape a directory) is refused as such.
        Err((why, Some(DecodeError::Invalid(_)))) => {
            tracing::debug!(%peer, "refusing an invalid opening frame: {why}");
            outbox.refuse(ErrorCode::Invalid, why);
        }
        Err((why, _)) => {
            tracing::debug!(%peer, "refusing connection without hello: {why}");
            outbox.refuse(
                ErrorCode::HelloRequired,
                format!("the first frame must be hello or admin_hello: {why}"),
            );
        }
        Ok(Opening::Hello(_)) if !from_allowed_subnet(&ctx.settings, peer) => {
            tracing::warn!(%peer, "refusing a master from outside .allexlanmanager/subnets");
            outbox.refuse(
                ErrorCode::AddressRefused,
                format!(
                    "{} is not in this lan manager's subnets file",
                    peer.ip().to_canonical()
                ),
            );
        }
        Ok(Opening::Hello(hello)) => {
            if admit(
                ctx.settings.token.as_deref(),
                &outbox,
                hello.version,
                hello.token.as_deref(),
            ) && leads(&ctx, &outbox)
            {
                match certified(&ctx.settings, &hello, client_cert.as_ref()) {
                    Some(certified) => {
                        let out = outbox.clone();
                        master_session(hello, certified, peer, &mut stream, out, &kill, &ctx).await;
                    }
                    None => outbox.refuse(
                        ErrorCode::IdentityMismatch,
                        format!(
                            "this lan manager asks masters for a client certificate for their \
                             name, and none for {:?} was presented",
                            hello.master
                        ),
                    ),
                }
            }
        }
        Ok(Opening::AdminHello { version, token }) => {
            if admit(
                ctx.settings.admin_token(),
                &outbox,
                version,
                token.as_deref(),
            ) && leads(&ctx, &outbox)
            {
                admin_session(&mut stream, &outbox, &kill, &ctx).await;
            }
        }
    }
    finish(kill, outbox, stream, writer).await;
}

/// Closes a session: its last frames flushed, the peer's close awaited.
async fn finish(
    kill: Arc<KillSwitch>,
    outbox: Outbox,
    mut stream: SplitStream<Ws>,
    writer: tokio::task::JoinHandle<()>,
) {
    kill.kill("closing");
    drop(outbox);
    // Closing a socket with unread input makes the kernel send a reset, which
    // can destroy our error and close frames before the peer reads them. So
    // read and discard what the peer still sends until it answers the close
    // (or a moment passes), and only then drop the connection.
    let drain = async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::join!(writer, tokio::time::timeout(CLOSE_FLUSH, drain));
}

/// With `--tls-client-ca`, whether the hello's master name is the one its
/// verified client certificate is for: `Some(true)` (the certificate is its
/// identity), `None` (refused). Without it, `Some(false)`.
fn certified(
    settings: &Settings,
    hello: &MasterHello,
    cert: Option<&rustls_pki_types::CertificateDer<'static>>,
) -> Option<bool> {
    if !settings.tls.as_ref().is_some_and(|t| t.client_certs) {
        return Some(false);
    }
    cert.filter(|c| allex_tls::certificate_is_for(c, &hello.master))
        .map(|_| true)
}

fn error_frame(code: ErrorCode, message: &str) -> Utf8Bytes {
    crate::metrics::metrics().frame_refused(code);
    // Masters and admin CLIs share the error message's shape.
    Utf8Bytes::from(encode(&LanToMaster::Error {
        code,
        message: message.to_string(),
        leader: None,
    }))
}

/// Whether a master may connect from `peer` (no subnets file: from anywhere).
fn from_allowed_subnet(settings: &Settings, peer: SocketAddr) -> bool {
    settings
        .subnets
        .as_ref()
        .is_none_or(|s| s.allows(peer.ip()))
}

/// Checks version and token of an opening frame; refuses and closes on a mismatch.
fn admit(
    expected: Option<&str>,
    outbox: &Outbox,
    version: ProtocolVersion,
    token: Option<&str>,
) -> bool {
    if !PROTOCOL_VERSION.compatible_with(&version) {
        outbox.refuse(ErrorCode::VersionMismatch,
            format!("protocol version {version} is not supported; this lan manager speaks {PROTOCOL_VERSION}"),
        );
        return false;
    }
    if !token_matches(expected, token) {
        outbox.refuse(ErrorCode::BadToken, "wrong or missing token".into());
        return false;
    }
    true
}

/// Whether this lan manager leads; a follower refuses with `not_leader`,
/// naming the leader when it knows one.
fn leads(ctx: &ConnContext, outbox: &Outbox) -> bool {
    let leader = match &*ctx.role.borrow() {
        Role::Leader => return true,
        Role::Follower { leader } => leader.clone(),
    };
    outbox.refuse_not_leader(leader);
    false
}

/// Whether `given` is the shared secret (in constant time), or none is set.
pub fn token_matches(expected: Option<&str>, given: Option<&str>) -> bool {
    match expected {
        None => true,
        Some(expected) => given
            .unwrap_or("")
            .as_bytes()
            .ct_eq(expected.as_bytes())
            .into(),
    }
}

/// Why a master name is refused, if it is.
fn bad_hello(hello: &MasterHello) -> Option<String> {
    let name = &hello.master;
    if hello.secret.len() < 16
        || hello.secret.len() > 256
        || hello.secret.chars().any(char::is_control)
    {
        Some("secret must be 16 to 256 characters without control characters".into())
    } else if name.is_empty() {
        Some("master name is empty".into())
    } else if name.len() > MAX_MASTER_NAME {
        Some(format!("master name is over {MAX_MASTER_NAME} bytes"))
    } else if name.chars().any(char::is_control) {
        Some("master name holds control characters".into())
    } else if hello.advertiseaddress.is_empty()
        || hello.advertiseaddress.chars().any(char::is_control)
    {
        Some("advertiseaddress is empty or holds control characters".into())
    } else {
        None
    }
}

async fn master_session(
    hello: MasterHello,
    certified: bool,
    peer: SocketAddr,
    stream: &mut SplitStream<Ws>,
    outbox: Outbox,
    kill: &KillSwitch,
    ctx: &ConnContext,
) {
    let id = outbox.id;
    if let Some(why) = bad_hello(&hello) {
        outbox.refuse(ErrorCode::Invalid, why);
        return;
    }
    let name = hello.master.clone();
    let replies = outbox.clone();
    if ctx
        .events
        .send(Event::MasterHello {
            hello,
            certified,
            outbox,
            peer,
        })
        .await
        .is_err()
    {
        return;
    }
    let link_timeout = ctx.settings.link_timeout();
    let mut bucket = Bucket::new(RateLimit::MASTER);
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(link_timeout, stream.next()) => r,
            _ = kill.killed() => break,
        };
        let msg = match next {
            Err(_) => {
                tracing::warn!(master = %name, "no message for three heartbeat intervals; dropping the link");
                kill.kill("no heartbeat for three intervals");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(master = %name, "link failed: {e}");
                kill.kill(e.to_string());
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        replies.heard();
        if !admit_frame(&mut bucket, &msg, &replies, &name) {
            if kill.reason().is_some() {
                break;
            }
            continue;
        }
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let e = DecodeError::Binary;
                replies.send(error_frame(e.code(), &e.to_string()));
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        match decode_text::<MasterToLan>(&text, MAX_TO_LAN_FRAME) {
            Ok(MasterToLan::Heartbeat { seq }) => {
                replies.send(Utf8Bytes::from(encode(&LanToMaster::Heartbeat { seq })));
            }
            Ok(MasterToLan::Hello(_)) => {
                replies.send(error_frame(
                    ErrorCode::Invalid,
                    "hello is only the first frame",
                ));
            }
            Ok(msg) => {
                if ctx
                    .events
                    .send(Event::FromMaster { conn: id, msg })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(master = %name, error = ?e.to_string(), "refused frame");
                replies.send(error_frame(e.code(), &e.to_string()));
            }
        }
    }
    let _ = ctx.events.send(Event::MasterGone { conn: id }).await;
}

async fn admin_session(
    stream: &mut SplitStream<Ws>,
    outbox: &Outbox,
    kill: &KillSwitch,
    ctx: &ConnContext,
) {
    let reply = |msg: &LanToAdmin| outbox.send(Utf8Bytes::from(encode(msg)));
    reply(&LanToAdmin::AdminWelcome {
        version: PROTOCOL_VERSION,
    });
    let idle = ctx.settings.link_timeout().max(ADMIN_IDLE);
    let mut bucket = Bucket::new(RateLimit::ADMIN);
    loop {
        // One request is in flight at a time, so a fast admin client can
        // only queue frames in its own socket: pace it instead of refusing.
        let wait = bucket.pace();
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = kill.killed() => break,
            }
        }
        let next = tokio::select! {
            r = tokio::time::timeout(idle, stream.next()) => r,
            _ = kill.killed() => break,
        };
        let msg = match next {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                kill.kill(e.to_string());
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let e = DecodeError::Binary;
                outbox.send(error_frame(e.code(), &e.to_string()));
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let request = match decode_text::<AdminToLan>(&text, MAX_TO_LAN_FRAME) {
            Ok(r) => r,
            Err(e) => {
                outbox.send(error_frame(e.code(), &e.to_string()));
                continue;
            }
        };
        if let AdminToLan::Logs {
            instancename,
            lines,
            follow,
        } = request
        {
            if !stream_logs(stream, outbox, kill, ctx, instancename, lines, follow).await {
                break;
            }
            continue;
        }
        if let AdminToLan::Events { since, follow } = request {
            if !stream_events(stream, outbox, kill, ctx, since, follow).await {
                break;
            }
            continue;
        }
        let (tx, rx) = oneshot::channel();
        if ctx
            .events
            .send(Event::Admin { request, reply: tx })
            .await
            .is_err()
        {
            break;
        }
        match rx.await {
            Ok(answer) => {
                reply(&answer);
            }
            Err(_) => break,
        }
    }
}

/// Answers `events`: the kept ones after `since`, then `done`, or with
/// `follow` every new one until the client goes. Reads the hub, never the
/// state owner; a client that does not read fills its outbox and is dropped,
/// one that falls further behind than the hub keeps is cut off. Returns
/// whether the session goes on.
async fn stream_events(
    stream: &mut SplitStream<Ws>,
    outbox: &Outbox,
    kill: &KillSwitch,
    ctx: &ConnContext,
    since: Option<u64>,
    follow: bool,
) -> bool {
    let send = |event: &LanEvent| {
        outbox.send(Utf8Bytes::from(encode(&LanToAdmin::Event {
            event: event.clone(),
        })))
    };
    let mut sub = ctx.hub.subscribe(since);
    let sent = sub.backlog.len();
    for e in &sub.backlog {
        if !send(e) {
            return false;
        }
    }
    if !follow {
        let message = format!("{sent} events");
        return outbox.send(Utf8Bytes::from(encode(&LanToAdmin::Done { message })));
    }
    loop {
        tokio::select! {
            live = sub.live.recv() => match live {
                Ok(e) => {
                    if !send(&e) {
                        return false;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    kill.kill(format!("fell {n} events behind the event stream"));
                    return false;
                }
                Err(broadcast::error::RecvError::Closed) => return false,
            },
            // Anything but the client going ends nothing: a follower only reads.
            m = stream.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                Some(Ok(_)) => {}
            },
            _ = kill.killed() => return false,
        }
    }
}

/// Answers `logs`: asks the service's master through the driver, then hands
/// each chunk on as a `log` answer until the master ends (`done`, or the
/// error) or the client goes (the master is told to stop). Returns whether
/// the session goes on.
async fn stream_logs(
    stream: &mut SplitStream<Ws>,
    outbox: &Outbox,
    kill: &KillSwitch,
    ctx: &ConnContext,
    instancename: allex_protocol::InstanceName,
    lines: u32,
    follow: bool,
) -> bool {
    use crate::log_relay::{LogPiece, READER_QUEUE};
    let send = |msg: &LanToAdmin| outbox.send(Utf8Bytes::from(encode(msg)));
    let (chunks, mut rx) = tokio::sync::mpsc::channel(READER_QUEUE);
    let (reply, answer) = oneshot::channel();
    let asked = ctx
        .events
        .send(Event::LogsOpen {
            instancename,
            lines,
            follow,
            chunks,
            reply,
        })
        .await;
    let id = match (asked, answer.await) {
        (Ok(()), Ok(Ok(id))) => id,
        (Ok(()), Ok(Err(message))) => {
            return send(&LanToAdmin::Error {
                code: ErrorCode::Unknown,
                message,
                leader: None,
            })
        }
        _ => return false,
    };
    let go_on = loop {
        tokio::select! {
            piece = rx.recv() => match piece {
                Some(LogPiece::Data(data)) => {
                    if !send(&LanToAdmin::Log { data }) {
                        break false;
                    }
                }
                Some(LogPiece::End(None)) => {
                    break send(&LanToAdmin::Done { message: "end of log".into() });
                }
                Some(LogPiece::End(Some(message))) => {
                    break send(&LanToAdmin::Error { code: ErrorCode::Unknown, message, leader: None });
                }
                // Cut off: this reader fell behind its master.
                None => {
                    break send(&LanToAdmin::Error {
                        code: ErrorCode::RateLimited,
                        message: "the log came faster than it was read; cut off".into(),
                        leader: None,
                    });
                }
            },
            m = stream.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break false,
                Some(Ok(_)) => {}
            },
            _ = kill.killed() => break false,
        }
    };
    let _ = ctx.events.send(Event::LogsClose { id }).await;
    go_on
}

/// Runs one received frame through the peer's rate limit; false drops it.
///
/// Control frames (ping, pong, close) are not counted: tungstenite answers
/// pings itself and a close ends the session anyway.
fn admit_frame(bucket: &mut Bucket, msg: &Message, outbox: &Outbox, peer: &str) -> bool {
    if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
        return true;
    }
    match bucket.take() {
        Verdict::Pass => true,
        Verdict::Drop => false,
        Verdict::Warn => {
            tracing::warn!(
                peer,
                "too many messages; dropping until the peer slows down"
            );
            outbox.send(error_frame(
                ErrorCode::RateLimited,
                "too many messages: frames are dropped until you slow down; keep flooding and the link is closed",
            ));
            false
        }
        Verdict::Close => {
            tracing::warn!(peer, "kept flooding after rate_limited; closing the link");
            outbox.refuse(
                ErrorCode::RateLimited,
                "kept sending too many messages".into(),
            );
            false
        }
    }
}

/// The next text frame's content; `Err(None)` when the peer closed.
async fn next_text(stream: &mut SplitStream<Ws>) -> Result<Utf8Bytes, Option<DecodeError>> {
    loop {
        match stream.next().await {
            None | Some(Err(_)) => return Err(None),
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Binary(_))) => return Err(Some(DecodeError::Binary)),
            Some(Ok(Message::Close(_))) => return Err(None),
            Some(Ok(_)) => continue,
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: OutboxReceiver,
    kill: Arc<KillSwitch>,
) {
    loop {
        let first = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = kill.killed() => None,
        };
        let Some(first) = first else { break };
        // Let a burst (one event broadcast to every master) queue up, so it
        // goes out in one write instead of one syscall per frame.
        tokio::task::yield_now().await;
        let batch = async {
            sink.feed(first).await?;
            let mut n = 1;
            while n < WRITE_BATCH {
                match rx.try_recv() {
                    Some(t) => sink.feed(t).await?,
                    None => break,
                }
                n += 1;
            }
            sink.flush().await
        };
        // A batch that can be written goes out even when a close is pending.
        let ok = tokio::select! {
            biased;
            r = batch => r.is_ok(),
            _ = kill.killed() => false,
        };
        if !ok {
            break;
        }
    }
    let reason = kill.reason().unwrap_or_else(|| "closing".into());
    let close = async {
        // Frames queued before the close (an error that explains it) go out first.
        while let Some(t) = rx.try_recv() {
            sink.feed(t).await?;
        }
        let frame = CloseFrame {
            code: if reason == "closing" {
                CloseCode::Normal
            } else {
                CloseCode::Policy
            },
            reason: Utf8Bytes::from(truncate(&reason, 120)),
        };
        sink.send(Message::Close(Some(frame))).await
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH, close).await;
}

/// Cuts `s` to at most `max` bytes on a character boundary (close reasons are short).
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
