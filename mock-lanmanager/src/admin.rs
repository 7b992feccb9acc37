//! The admin client: `need add|remove` and `status` talk to the running lan manager.

use allex_protocol::events::LanEvent;
use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::InstanceName;
use allex_protocol::{
    AdminToLan, ErrorCode, LanStatus, LanToAdmin, Need, Protocol, PROTOCOL_VERSION,
};
use allex_tls::Io;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use thiserror::Error;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Where an admin command goes and what it presents.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// `--connect`: one address or a comma-separated list.
    pub connect: String,
    /// The admin token (or the one shared token), when the lan manager asks for one.
    pub token: Option<String>,
    /// TLS (`--tls-ca`, `wss://`): how the lan manager is verified.
    pub tls: Option<std::sync::Arc<allex_tls::ClientConfig>>,
}

/// How long an admin command waits for the lan manager.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin command failed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The lan manager cannot be reached.
    #[error("cannot reach the lan manager at {addr}: {message}")]
    Connect {
        /// Where it was looked for.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The lan manager refused the request; nothing changed.
    #[error("refused ({code}): {message}")]
    Refused {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The link broke or carried something unexpected.
    #[error("lan manager link: {0}")]
    Link(String),
    /// The lan manager there follows another (etcd election).
    #[error("{addr} follows {}", match leader {
        Some(l) => format!("the leader at {l}: run the command with --connect {l}, or list every lan manager (--connect A,B,C)"),
        None => "and no leader is elected yet: try again in a few seconds".to_string(),
    })]
    NotLeader {
        /// The follower asked.
        addr: String,
        /// The leader it named.
        leader: Option<String>,
    },
    /// The lan manager did not answer in time.
    #[error("the lan manager did not answer within {0:?}")]
    Timeout(Duration),
    /// The command line holds a bad value.
    #[error("{0}")]
    Usage(String),
}

/// Builds a need from `need add` options, checking it like the lan manager does.
pub fn build_need(
    module: &str,
    instance: &InstanceName,
    propertyhash: Option<&str>,
    ipaddress: Option<&str>,
    protocols: Option<&str>,
) -> Result<Need, AdminError> {
    let mut need = Need::new(module, instance.clone());
    if let Some(text) = propertyhash {
        need.propertyhash = serde_json::from_str(text)
            .map_err(|e| AdminError::Usage(format!("--propertyhash must be a JSON object: {e}")))?;
    }
    need.ipaddress = ipaddress.map(str::to_string);
    if let Some(list) = protocols {
        let mut ps = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let p = Protocol::ALL
                .into_iter()
                .find(|p| p.as_str() == word)
                .ok_or_else(|| {
                    AdminError::Usage(format!("unknown protocol {word:?}; use tcp, http, ws"))
                })?;
            ps.push(p);
        }
        need.protocols = Some(ps);
    }
    need.validate()
        .map_err(|e| AdminError::Usage(e.to_string()))?;
    Ok(need)
}

/// Sends one admin request and returns the answer; a refusal is an error.
pub async fn request(ep: &Endpoint, req: AdminToLan) -> Result<LanToAdmin, AdminError> {
    tokio::time::timeout(ADMIN_TIMEOUT, request_inner(ep, req))
        .await
        .map_err(|_| AdminError::Timeout(ADMIN_TIMEOUT))?
}

/// The lan manager's default port, used when `--connect` names only a host.
pub const DEFAULT_PORT: u16 = 23552;

/// `--connect`: each of `HOST`, `HOST:PORT`, `IPV6` or `[IPV6]:PORT`,
/// separated by commas, as `host:port`; a port that is not a number is an
/// error rather than a connection attempt.
pub fn connect_list(connect: &str) -> Result<Vec<String>, AdminError> {
    let pairs = allex_protocol::config::lan_addresses(connect, DEFAULT_PORT)
        .map_err(|e| AdminError::Usage(format!("--connect {e}")))?;
    Ok(pairs
        .into_iter()
        .map(|(host, port)| match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]:{port}"),
            Err(_) => format!("{host}:{port}"),
        })
        .collect())
}

/// One address of [`connect_list`].
pub fn with_default_port(addr: &str) -> Result<String, AdminError> {
    let mut list = connect_list(addr)?;
    match (list.pop(), list.is_empty()) {
        (Some(one), true) => Ok(one),
        _ => Err(AdminError::Usage(format!(
            "--connect {addr:?}: expected one address"
        ))),
    }
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// TCP to `addr` (`host:port`), then TLS when `ep` asks for it.
async fn open(addr: &str, ep: &Endpoint) -> Result<Box<dyn Io>, AdminError> {
    let connect_err = |message: String| AdminError::Connect {
        addr: addr.to_string(),
        message,
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| connect_err(format!("{e}; is allexlanmanager running there?")))?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &ep.tls else {
        return Ok(Box::new(tcp));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = allex_tls::server_name(host).map_err(|e| connect_err(e.to_string()))?;
    let tls = allex_tls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| connect_err(format!("TLS: {e}")))?;
    Ok(Box::new(tls))
}

/// An admin session with the lan manager that leads among `connect`: each
/// address in turn, straight to the leader a follower names. Given a single
/// address, a follower's answer is the error, naming the leader.
async fn session(ep: &Endpoint) -> Result<Ws, AdminError> {
    let list = connect_list(&ep.connect)?;
    let follow = list.len() > 1;
    let mut queue: std::collections::VecDeque<String> = list.into();
    let mut hops = 0;
    let mut last = None;
    while let Some(addr) = queue.pop_front() {
        match session_at(&addr, ep).await {
            Ok(ws) => return Ok(ws),
            Err(AdminError::NotLeader {
                leader: Some(leader),
                ..
            }) if follow && hops < 3 => {
                hops += 1;
                tracing::debug!(follower = %addr, %leader, "following the leader");
                queue.push_front(with_default_port(&leader)?);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| AdminError::Usage("--connect names no address".into())))
}

/// An admin session at one address: connected, said `admin_hello`, welcomed.
async fn session_at(addr: &str, ep: &Endpoint) -> Result<Ws, AdminError> {
    let token = ep.token.clone();
    let url = format!("ws://{addr}/");
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FROM_LAN_FRAME))
        .max_frame_size(Some(MAX_FROM_LAN_FRAME));
    let io = open(addr, ep).await?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(config))
        .await
        .map_err(|e| AdminError::Connect {
            addr: addr.to_string(),
            message: match e {
                tokio_tungstenite::tungstenite::Error::Io(io) => {
                    format!("{io}; is it a TLS port (--tls-ca) or a plain one?")
                }
                other => other.to_string(),
            },
        })?;
    let link = |e: tokio_tungstenite::tungstenite::Error| AdminError::Link(e.to_string());
    let hello = AdminToLan::AdminHello {
        version: PROTOCOL_VERSION,
        token,
    };
    ws.send(Message::text(encode(&hello))).await.map_err(link)?;
    match next_reply(&mut ws).await? {
        LanToAdmin::AdminWelcome { .. } => Ok(ws),
        LanToAdmin::Error {
            code: ErrorCode::NotLeader,
            leader,
            ..
        } => Err(AdminError::NotLeader {
            addr: addr.to_string(),
            leader,
        }),
        other => Err(unexpected(other)),
    }
}

async fn request_inner(ep: &Endpoint, req: AdminToLan) -> Result<LanToAdmin, AdminError> {
    let mut ws = session(ep).await?;
    let link = |e: tokio_tungstenite::tungstenite::Error| AdminError::Link(e.to_string());
    ws.send(Message::text(encode(&req))).await.map_err(link)?;
    let answer = next_reply(&mut ws).await?;
    let _ = ws.close(None).await;
    match answer {
        LanToAdmin::Error { code, message, .. } => Err(AdminError::Refused { code, message }),
        other => Ok(other),
    }
}

fn unexpected(reply: LanToAdmin) -> AdminError {
    match reply {
        LanToAdmin::Error { code, message, .. } => AdminError::Refused { code, message },
        other => AdminError::Link(format!("unexpected answer: {}", encode(&other))),
    }
}

async fn next_reply<S>(ws: &mut S) -> Result<LanToAdmin, AdminError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return decode_text(&t, MAX_FROM_LAN_FRAME)
                    .map_err(|e| AdminError::Link(e.to_string()))
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(AdminError::Link(format!(
                    "closed by the lan manager: {why}"
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(AdminError::Link(e.to_string())),
            None => return Err(AdminError::Link("closed by the lan manager".into())),
        }
    }
}

/// Hands each kept event after `since` to `each`, then, with `follow`,
/// every new one until the lan manager goes (or `each` fails).
pub async fn events(
    ep: &Endpoint,
    since: Option<u64>,
    follow: bool,
    mut each: impl FnMut(LanEvent) -> Result<(), AdminError>,
) -> Result<(), AdminError> {
    let mut ws = tokio::time::timeout(ADMIN_TIMEOUT, session(ep))
        .await
        .map_err(|_| AdminError::Timeout(ADMIN_TIMEOUT))??;
    let req = AdminToLan::Events { since, follow };
    ws.send(Message::text(encode(&req)))
        .await
        .map_err(|e| AdminError::Link(e.to_string()))?;
    loop {
        match next_reply(&mut ws).await? {
            LanToAdmin::Event { event } => each(event)?,
            LanToAdmin::Done { .. } if !follow => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// Hands each piece of `instance`'s output, from its master, to `each`;
/// with `follow`, until the lan manager or the master ends it.
pub async fn logs(
    ep: &Endpoint,
    instancename: InstanceName,
    lines: u32,
    follow: bool,
    mut each: impl FnMut(String) -> Result<(), AdminError>,
) -> Result<(), AdminError> {
    let mut ws = tokio::time::timeout(ADMIN_TIMEOUT, session(ep))
        .await
        .map_err(|_| AdminError::Timeout(ADMIN_TIMEOUT))??;
    let req = AdminToLan::Logs {
        instancename,
        lines,
        follow,
    };
    ws.send(Message::text(encode(&req)))
        .await
        .map_err(|e| AdminError::Link(e.to_string()))?;
    loop {
        match next_reply(&mut ws).await? {
            LanToAdmin::Log { data } => each(data)?,
            LanToAdmin::Done { .. } => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// Asks for the status.
pub async fn status(ep: &Endpoint) -> Result<LanStatus, AdminError> {
    match request(ep, AdminToLan::Status).await? {
        LanToAdmin::Status { status } => Ok(status),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_options_are_checked() {
        let n = build_need(
            "m",
            &allex_protocol::instance!("A"),
            Some(r#"{"x":1}"#),
            Some("10.0.0.0/8"),
            Some("tcp, ws"),
        )
        .unwrap();
        assert_eq!(n.protocols, Some(vec![Protocol::Tcp, Protocol::Ws]));
        assert_eq!(n.propertyhash["x"], 1);
        let a = allex_protocol::instance!("A");
        for (props, address, protocols) in [
            (Some("[1]"), None, None),
            (None, Some("nope"), None),
            (None, None, Some("udp")),
        ] {
            assert!(build_need("m", &a, props, address, protocols).is_err());
        }
    }

    #[test]
    fn a_bare_host_gets_the_default_port_and_a_bad_port_is_refused() {
        assert_eq!(with_default_port("10.0.0.5").unwrap(), "10.0.0.5:23552");
        assert_eq!(
            with_default_port("lan.example").unwrap(),
            "lan.example:23552"
        );
        assert_eq!(with_default_port("::1").unwrap(), "[::1]:23552");
        assert_eq!(with_default_port("[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(with_default_port("h:1234").unwrap(), "h:1234");
        let e = with_default_port("127.0.0.1:abc").unwrap_err().to_string();
        assert!(e.contains("a port from 1 to 65535"), "{e}");
    }
}
