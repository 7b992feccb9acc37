//! A persistent admin WebSocket to the lan manager: adding needs and asking
//! for status without starting a CLI process per request.

use super::BenchError;
use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::{AdminToLan, LanStatus, LanToAdmin, Need, PROTOCOL_VERSION};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One admin session; requests are answered one at a time, in order.
pub struct AdminLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl AdminLink {
    /// Opens a session: `admin_hello`, then waits for `admin_welcome`.
    pub async fn connect(addr: SocketAddr) -> Result<AdminLink, BenchError> {
        let ws = crate::virtual_master::connect_lan(addr)
            .await
            .map_err(|e| BenchError::Admin(format!("connecting to {addr}: {e}")))?;
        let mut link = AdminLink { ws };
        match link
            .call(&AdminToLan::AdminHello {
                version: PROTOCOL_VERSION,
                token: None,
            })
            .await?
        {
            LanToAdmin::AdminWelcome { .. } => Ok(link),
            other => Err(BenchError::Admin(format!(
                "expected admin_welcome, got {other:?}"
            ))),
        }
    }

    async fn call(&mut self, req: &AdminToLan) -> Result<LanToAdmin, BenchError> {
        self.ws
            .send(Message::text(encode(req)))
            .await
            .map_err(|e| BenchError::Admin(e.to_string()))?;
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return decode_text(&t, MAX_FROM_LAN_FRAME)
                        .map_err(|e| BenchError::Admin(e.to_string()))
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(BenchError::Admin("closed by the lan manager".into()))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(BenchError::Admin(e.to_string())),
            }
        }
    }

    /// Adds a need; returns once the lan manager has it on disk.
    pub async fn need_add(&mut self, need: Need) -> Result<(), BenchError> {
        match self.call(&AdminToLan::NeedAdd { need }).await? {
            LanToAdmin::Done { .. } => Ok(()),
            other => Err(BenchError::Admin(format!("need_add: {other:?}"))),
        }
    }

    /// The lan manager's needs, running services and masters.
    pub async fn status(&mut self) -> Result<LanStatus, BenchError> {
        match self.call(&AdminToLan::Status).await? {
            LanToAdmin::Status { status } => Ok(status),
            other => Err(BenchError::Admin(format!("status: {other:?}"))),
        }
    }
}

/// Adds `needs` over `links` parallel sessions, so that the lan manager can
/// put concurrent additions into one disk write, as it would for many
/// operators; returns when every one is acknowledged.
pub async fn add_all(addr: SocketAddr, needs: Vec<Need>, links: usize) -> Result<(), BenchError> {
    let links = links.clamp(1, needs.len().max(1));
    let mut shares: Vec<Vec<Need>> = vec![Vec::new(); links];
    for (i, n) in needs.into_iter().enumerate() {
        shares[i % links].push(n);
    }
    let mut tasks = Vec::new();
    for share in shares {
        tasks.push(tokio::spawn(async move {
            let mut link = AdminLink::connect(addr).await?;
            for n in share {
                link.need_add(n).await?;
            }
            Ok::<(), BenchError>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Admin(format!("adding task: {e}")))??;
    }
    Ok(())
}
