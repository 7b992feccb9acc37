//! Raw WebSockets to a lan manager, for tests that send what no well-behaved
//! peer would (and the one way every client of the kit opens a link).

use crate::wait::SOON;
use allex_protocol::frame::MAX_FROM_LAN_FRAME;
use futures_util::StreamExt;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client to the lan manager.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to the lan manager that accepts its largest frames (a needs
/// snapshot), without Nagle's delay.
pub async fn connect_lan(addr: SocketAddr) -> Result<Ws, tungstenite::Error> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FROM_LAN_FRAME))
        .max_frame_size(Some(MAX_FROM_LAN_FRAME));
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), Some(config), true)
            .await?;
    Ok(ws)
}

/// A WebSocket to the lan manager from the local address `source` (such
/// as 127.0.0.2, to come from somewhere else than 127.0.0.1); panics when it
/// cannot (tests).
pub async fn raw_from(addr: SocketAddr, source: std::net::IpAddr) -> Ws {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .and_then(|s| s.bind(SocketAddr::new(source, 0)).map(|()| s))
    .unwrap_or_else(|e| panic!("cannot bind {source}: {e}"));
    let stream = socket
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect from {source} to {addr}: {e}"));
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FROM_LAN_FRAME))
        .max_frame_size(Some(MAX_FROM_LAN_FRAME));
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/"),
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .unwrap_or_else(|e| panic!("no WebSocket from {source} to {addr}: {e}"));
    ws
}

/// Opens a raw WebSocket to the lan manager; panics when it cannot (tests).
pub async fn raw(addr: SocketAddr) -> Ws {
    connect_lan(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot open a WebSocket to {addr}: {e}"))
}

/// What the peer did next on a raw socket.
#[derive(Debug)]
pub enum Next {
    /// A text frame.
    Text(String),
    /// The peer closed, with the close reason.
    Closed(String),
}

/// The next text frame or the close, within [`SOON`]; panics when neither comes.
pub async fn next(ws: &mut Ws) -> Next {
    loop {
        let m = tokio::time::timeout(SOON, ws.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the lan manager within {SOON:?}"));
        match m {
            Some(Ok(Message::Text(t))) => return Next::Text(t.to_string()),
            Some(Ok(Message::Close(f))) => {
                return Next::Closed(f.map(|f| f.reason.to_string()).unwrap_or_default())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Next::Closed(format!("error: {e}")),
            None => return Next::Closed(String::new()),
        }
    }
}
