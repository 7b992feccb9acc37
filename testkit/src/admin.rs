//! The one admin client of the lan manager's WebSocket port: blocking, so
//! polling loops need not start an `allexlanmanager status` process per
//! poll and benchmarks can add thousands of needs from plain threads.

use crate::error::HarnessError;
use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::{AdminToLan, InstanceName, LanStatus, LanToAdmin, Need, PROTOCOL_VERSION};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// An open admin session.
pub struct AdminClient {
    ws: WebSocket<TcpStream>,
}

fn link(addr: SocketAddr, detail: impl std::fmt::Display) -> HarnessError {
    HarnessError::Io {
        what: format!("admin session with {addr}"),
        source: std::io::Error::other(detail.to_string()),
    }
}

impl AdminClient {
    /// Connects, says `admin_hello` and waits for the welcome.
    pub fn connect(
        addr: SocketAddr,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<AdminClient, HarnessError> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| link(addr, e))?;
        // One small frame per request: Nagle's delay would be most of a poll.
        stream
            .set_nodelay(true)
            .and_then(|_| stream.set_read_timeout(Some(timeout)))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| link(addr, e))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FROM_LAN_FRAME))
            .max_frame_size(Some(MAX_FROM_LAN_FRAME));
        let (ws, _) =
            tungstenite::client::client_with_config(format!("ws://{addr}/"), stream, Some(config))
                .map_err(|e| link(addr, e))?;
        let mut client = AdminClient { ws };
        match client.call(&AdminToLan::AdminHello {
            version: PROTOCOL_VERSION,
            token: token.map(str::to_string),
        })? {
            LanToAdmin::AdminWelcome { .. } => Ok(client),
            other => Err(link(addr, format!("unexpected welcome: {other:?}"))),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.ws
            .get_ref()
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Sends one request and returns the answer (`error` answers included).
    pub fn call(&mut self, req: &AdminToLan) -> Result<LanToAdmin, HarnessError> {
        let addr = self.addr();
        self.ws
            .send(Message::text(encode(req)))
            .map_err(|e| link(addr, e))?;
        loop {
            match self.ws.read().map_err(|e| link(addr, e))? {
                Message::Text(t) => {
                    return decode_text(&t, MAX_FROM_LAN_FRAME).map_err(|e| link(addr, e))
                }
                Message::Close(f) => return Err(link(addr, format!("closed: {f:?}"))),
                _ => continue,
            }
        }
    }

    /// Asks for the lan manager's status.
    pub fn status(&mut self) -> Result<LanStatus, HarnessError> {
        match self.call(&AdminToLan::Status)? {
            LanToAdmin::Status { status } => Ok(status),
            other => Err(link(self.addr(), format!("unexpected answer: {other:?}"))),
        }
    }
}

impl AdminClient {
    /// Adds a need; returns once the lan manager has it on disk.
    pub fn need_add(&mut self, need: Need) -> Result<(), HarnessError> {
        match self.call(&AdminToLan::NeedAdd { need })? {
            LanToAdmin::Done { .. } => Ok(()),
            other => Err(link(self.addr(), format!("need_add answered {other:?}"))),
        }
    }

    /// Removes a need; returns once the removal is on disk.
    pub fn need_remove(&mut self, instancename: InstanceName) -> Result<(), HarnessError> {
        match self.call(&AdminToLan::NeedRemove { instancename })? {
            LanToAdmin::Done { .. } => Ok(()),
            other => Err(link(self.addr(), format!("need_remove answered {other:?}"))),
        }
    }

    /// Adds `needs` over `links` parallel sessions, so that the lan manager
    /// can put concurrent additions into one disk write, as it would for
    /// many operators; returns when every one is acknowledged.
    pub fn add_all(
        addr: SocketAddr,
        token: Option<&str>,
        needs: Vec<Need>,
        links: usize,
    ) -> Result<(), HarnessError> {
        let links = links.clamp(1, needs.len().max(1));
        let mut shares: Vec<Vec<Need>> = vec![Vec::new(); links];
        for (i, n) in needs.into_iter().enumerate() {
            shares[i % links].push(n);
        }
        std::thread::scope(|scope| {
            let workers: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    scope.spawn(move || {
                        let mut client = AdminClient::connect(addr, token, ADD_TIMEOUT)?;
                        share.into_iter().try_for_each(|n| client.need_add(n))
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| link(addr, "a need-adding thread panicked"))?
            })
        })
    }
}

/// How long one admin request of [`AdminClient::add_all`] may take: a disk
/// write under load.
const ADD_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for AdminClient {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
