//! The WebSocket link to the lan manager, reconnecting with capped backoff.
//!
//! The link task owns the socket and its liveness (heartbeats, the 3-missed
//! rule); what the messages mean is the state task's business, so every frame
//! except heartbeats is handed to it as an [`Event`].

use crate::beat::Beat;
use crate::driver::Event;
use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::{LanToMaster, MasterToLan};
use allex_tls::Io;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// First reconnect delay; doubled per failure up to the configured cap.
const BACKOFF_START: Duration = Duration::from_millis(50);
/// How long the lan manager has to welcome a hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long TCP connect plus WebSocket handshake may take; a link that
/// accepts and then says nothing must not hold the reconnect loop forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A link with no frame for this many heartbeat units is treated as cut.
const MISSED_HEARTBEATS: u32 = 3;
/// Heartbeat units between two beats the master sends.
const BEAT_UNITS: u32 = 2;

/// Where the lan managers are and how patiently to reconnect.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Each lan manager's host and WebSocket port, in the order tried; one
    /// leads at a time (etcd), and a follower names it.
    pub targets: Vec<(String, u16)>,
    /// Cap of the reconnect backoff.
    pub reconnect_max: Duration,
    /// TLS (`tlsca`, `wss://`): how the lan manager is verified, and the
    /// client certificate presented when one is configured.
    pub tls: Option<std::sync::Arc<allex_tls::ClientConfig>>,
}

/// Longest pause between two rounds while followers name no reachable leader
/// (an election under way): the new leader is found within this of winning.
const FOLLOW_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Which lan manager to dial next: the leader a follower named, else the
/// next one of the list.
#[derive(Debug)]
struct Targets {
    list: Vec<(String, u16)>,
    next: usize,
    named: Option<(String, u16)>,
}

impl Targets {
    fn new(list: Vec<(String, u16)>) -> Targets {
        Targets {
            list,
            next: 0,
            named: None,
        }
    }

    /// The target to dial now.
    fn pick(&mut self) -> (String, u16) {
        if let Some(t) = self.named.take() {
            return t;
        }
        let t = self.list[self.next % self.list.len().max(1)].clone();
        self.next = (self.next + 1) % self.list.len().max(1);
        t
    }

    /// Whether the next pick starts the list again (a whole round failed).
    fn round_done(&self) -> bool {
        self.named.is_none() && self.next == 0
    }
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connect and handshake took over {0:?}")]
    ConnectTimeout(Duration),
    #[error("a frame could not be sent within {0:?}")]
    SendTimeout(Duration),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the lan manager closed the link")]
    Closed,
    #[error("no welcome within {0:?}")]
    NoWelcome(Duration),
    #[error("no frame for {0:?} ({MISSED_HEARTBEATS} heartbeats)")]
    Silent(Duration),
    #[error("the master is shutting down")]
    Shutdown,
    #[error("the heartbeat timer failed: {0}")]
    Timer(std::io::Error),
    #[error("that lan manager follows; the leader is {}", .0.as_deref().unwrap_or("not elected yet"))]
    NotLeader(Option<String>),
}

/// Runs the link forever: connect, session, backoff, again; with several
/// lan managers, each in turn, straight to the leader a follower names.
pub async fn run(cfg: LinkConfig, events: UnboundedSender<Event>) {
    let mut targets = Targets::new(if cfg.targets.is_empty() {
        vec![(
            "127.0.0.1".to_string(),
            allex_protocol::config::DEFAULT_LANMANAGER_PORT,
        )]
    } else {
        cfg.targets.clone()
    });
    let mut backoff = BACKOFF_START;
    // A refusal or failure that repeats on every retry is logged once.
    let mut last_refusal: Option<String> = None;
    let mut last_end: Option<String> = None;
    // Hops to a named leader since the last welcome: bounds a loop of
    // followers naming each other during an election.
    let mut hops = 0usize;
    // Whether a lan manager of this round answered as a follower: then
    // one lives and an election is under way, so retry soon.
    let mut heard_follower = false;
    loop {
        let mut welcomed = false;
        let mut up = false;
        let mut unsent = Vec::new();
        let target = targets.pick();
        let end = session(
            &target,
            cfg.tls.as_ref(),
            &events,
            &mut up,
            &mut welcomed,
            &mut unsent,
            &mut last_refusal,
        )
        .await;
        if up && events.send(Event::LinkDown { unsent }).is_err() {
            return;
        }
        if matches!(end, SessionEnd::Shutdown) {
            return;
        }
        if welcomed {
            backoff = BACKOFF_START;
            last_refusal = None;
            last_end = None;
            hops = 0;
        }
        let (host, port) = &target;
        heard_follower |= matches!(end, SessionEnd::NotLeader(_));
        if let SessionEnd::NotLeader(Some(leader)) = &end {
            match allex_protocol::config::lan_address(leader, *port) {
                Ok(named) if named != target && hops <= targets.list.len() => {
                    tracing::info!(follower = %format!("{host}:{port}"), %leader, "following the leader");
                    hops += 1;
                    targets.named = Some(named);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%leader, "a follower named an unusable leader: {e}"),
            }
        }
        if !targets.round_done() {
            continue;
        }
        let cap = if std::mem::take(&mut heard_follower) {
            FOLLOW_BACKOFF_MAX
        } else {
            cfg.reconnect_max.max(BACKOFF_START)
        };
        backoff = backoff.min(cap);
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        let text = end.to_string();
        if last_end.as_deref() == Some(text.as_str()) {
            tracing::debug!(error = %end, retry_in = ?jittered, "link to {host}:{port} ended again");
        } else {
            tracing::info!(error = %end, retry_in = ?jittered, "link to {host}:{port} ended");
            last_end = Some(text);
        }
        tokio::time::sleep(jittered).await;
        backoff = (backoff * 2).min(cap);
        hops = 0;
    }
}

async fn session(
    target: &(String, u16),
    tls: Option<&std::sync::Arc<allex_tls::ClientConfig>>,
    events: &UnboundedSender<Event>,
    up: &mut bool,
    welcomed: &mut bool,
    unsent: &mut Vec<MasterToLan>,
    last_refusal: &mut Option<String>,
) -> SessionEnd {
    let (mut ws, local) = match tokio::time::timeout(CONNECT_TIMEOUT, connect(target, tls)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(end)) => return end,
        Err(_) => return SessionEnd::ConnectTimeout(CONNECT_TIMEOUT),
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<MasterToLan>();
    if events.send(Event::LinkUp { local, out: out_tx }).is_err() {
        return SessionEnd::Shutdown;
    }
    *up = true;
    let end = drive(&mut ws, &mut out_rx, events, welcomed, unsent, last_refusal).await;
    // Whatever the state task queued and the socket never took goes back to
    // it, so no `down` report is lost with the connection.
    out_rx.close();
    while let Ok(msg) = out_rx.try_recv() {
        unsent.push(msg);
    }
    end
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

async fn connect(
    (host, port): &(String, u16),
    tls: Option<&std::sync::Arc<allex_tls::ClientConfig>>,
) -> Result<(Ws, std::net::IpAddr), SessionEnd> {
    let tcp = TcpStream::connect((host.as_str(), *port))
        .await
        .map_err(SessionEnd::Connect)?;
    let local = tcp.local_addr().map_err(SessionEnd::Connect)?.ip();
    let _ = tcp.set_nodelay(true);
    // The welcome's heartbeat is not known yet; the lan managers' default is
    // what the kernel's probes are timed on.
    let heartbeat = Duration::from_millis(allex_protocol::timing::HEARTBEAT_MS);
    if let Err(e) = allex_protocol::keepalive::arm(&tcp, heartbeat) {
        tracing::debug!(error = %e, "no TCP keepalive on the link");
    }
    let tcp: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = allex_tls::server_name(host).map_err(|e| SessionEnd::Tls(e.to_string()))?;
            let tls = allex_tls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| SessionEnd::Tls(e.to_string()))?;
            Box::new(tls)
        }
    };
    let url = match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("ws://[{v6}]:{port}/"),
        Err(_) => format!("ws://{host}:{port}/"),
    };
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(allex_protocol::frame::WS_READ_BUFFER)
        .max_message_size(Some(MAX_FROM_LAN_FRAME));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_cfg)).await?;
    Ok((ws, local))
}

/// Sends one frame, giving up when the peer stops taking data.
async fn send(ws: &mut Ws, msg: &MasterToLan, limit: Duration) -> Result<(), SessionEnd> {
    match tokio::time::timeout(limit, ws.send(Message::text(encode(msg)))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SessionEnd::Ws(e)),
        Err(_) => Err(SessionEnd::SendTimeout(limit)),
    }
}

async fn drive(
    ws: &mut Ws,
    out_rx: &mut mpsc::UnboundedReceiver<MasterToLan>,
    events: &UnboundedSender<Event>,
    welcomed: &mut bool,
    unsent: &mut Vec<MasterToLan>,
    last_refusal: &mut Option<String>,
) -> SessionEnd {
    let mut heartbeat: Option<Duration> = None;
    // Heartbeat answers matter to the core only for fencing.
    let mut forward_beats = false;
    let mut seq: u64 = 0;
    let mut last_rx = Instant::now();
    let no_welcome_by = tokio::time::Instant::now() + WELCOME_TIMEOUT;
    let mut beat: Option<Beat> = None;
    loop {
        if let (Some(every), None) = (heartbeat, &beat) {
            // One beat every two heartbeat units: each one wakes both ends,
            // and the silence that ends the link stays three units. With
            // fencing, every unit, as the fence may be as short as two.
            let units = if forward_beats { 1 } else { BEAT_UNITS };
            match Beat::every(every * units) {
                Ok(b) => beat = Some(b),
                Err(e) => return SessionEnd::Timer(e),
            }
        }
        let tick = async {
            match beat.as_mut() {
                Some(b) => b.tick().await,
                None => {
                    tokio::time::sleep_until(no_welcome_by).await;
                    Ok(())
                }
            }
        };
        tokio::select! {
            out = out_rx.recv() => {
                let Some(msg) = out else { return SessionEnd::Shutdown };
                let limit = heartbeat.map_or(WELCOME_TIMEOUT, |every| every * MISSED_HEARTBEATS);
                if let Err(end) = send(ws, &msg, limit).await {
                    unsent.push(msg);
                    return end;
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    None => return SessionEnd::Closed,
                    Some(Err(e)) => return SessionEnd::Ws(e),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => return SessionEnd::Closed,
                    Some(Ok(Message::Binary(_))) => {
                        tracing::warn!("binary frame from the lan manager ignored");
                        last_rx = Instant::now();
                        continue;
                    }
                    Some(Ok(_)) => { last_rx = Instant::now(); continue; }
                };
                last_rx = Instant::now();
                let msg: LanToMaster = match decode_text(text.as_str(), MAX_FROM_LAN_FRAME) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable frame from the lan manager ignored");
                        continue;
                    }
                };
                match &msg {
                    LanToMaster::Error { code: allex_protocol::ErrorCode::NotLeader, leader, .. } if !*welcomed => {
                        return SessionEnd::NotLeader(leader.clone());
                    }
                    LanToMaster::Welcome { heartbeat_ms, fence_ms, .. } => {
                        *welcomed = true;
                        heartbeat = Some(Duration::from_millis((*heartbeat_ms).max(10)));
                        forward_beats = fence_ms.is_some();
                    }
                    LanToMaster::Heartbeat { .. } if !forward_beats => continue,
                    LanToMaster::Error { code, message, .. } if !*welcomed => {
                        let text = format!("{code}: {message}");
                        if last_refusal.as_deref() != Some(text.as_str()) {
                            tracing::error!(%code, %message, "the lan manager refused the hello; retrying with backoff");
                            *last_refusal = Some(text);
                        }
                    }
                    _ => {}
                }
                if events.send(Event::LinkMessage(msg)).is_err() {
                    return SessionEnd::Shutdown;
                }
            }
            ticked = tick => {
                if let Err(e) = ticked {
                    return SessionEnd::Timer(e);
                }
                let Some(every) = heartbeat else {
                    return SessionEnd::NoWelcome(WELCOME_TIMEOUT);
                };
                // Checked at each beat: the answer to the last one is due
                // well before the next, so no timer of its own is needed.
                let silent = every * MISSED_HEARTBEATS;
                if last_rx.elapsed() >= silent {
                    return SessionEnd::Silent(silent);
                }
                seq += 1;
                if let Err(end) = send(ws, &MasterToLan::Heartbeat { seq }, silent).await {
                    return end;
                }
            }
        }
    }
}
