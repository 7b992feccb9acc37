//! `allexlanmanager logs NAME`: relays a service's output from the master
//! that runs it to the admin session that asked, request by request.
//!
//! The driver keeps the routes; chunks are handed on with `try_send` into a
//! bounded queue per reader, so a slow reader is cut off (and its master
//! told to stop sending) instead of slowing the state owner.

use crate::core::ConnId;
use crate::outbox::Outbox;
use allex_protocol::frame::encode;
use allex_protocol::{InstanceName, LanToMaster};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Chunks a reader may be behind before it is cut off.
pub const READER_QUEUE: usize = 256;

/// What a reader gets.
#[derive(Debug)]
pub enum LogPiece {
    /// Output.
    Data(String),
    /// The end: all sent, or why not.
    End(Option<String>),
}

struct Route {
    conn: ConnId,
    tx: mpsc::Sender<LogPiece>,
}

/// The log requests under way.
#[derive(Default)]
pub struct LogRelay {
    next_id: u64,
    routes: HashMap<u64, Route>,
}

fn frame(msg: &LanToMaster) -> Utf8Bytes {
    Utf8Bytes::from(encode(msg))
}

impl LogRelay {
    /// Asks the master on `outbox` for `instance`'s output; returns the
    /// request's id, or `None` when the link is gone.
    pub fn open(
        &mut self,
        outbox: &Outbox,
        instance: InstanceName,
        lines: u32,
        follow: bool,
        tx: mpsc::Sender<LogPiece>,
    ) -> Option<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let ask = LanToMaster::Logs {
            id,
            instancename: instance,
            lines,
            follow,
        };
        if !outbox.send(frame(&ask)) {
            return None;
        }
        self.routes.insert(
            id,
            Route {
                conn: outbox.id,
                tx,
            },
        );
        Some(id)
    }

    /// Hands a chunk from the master on `conn` to its reader; a reader gone
    /// or too far behind ends the request (the master is told).
    pub fn chunk(&mut self, conn: ConnId, id: u64, data: String, outbox: Option<&Outbox>) {
        let Some(route) = self.routes.get(&id).filter(|r| r.conn == conn) else {
            return;
        };
        if route.tx.try_send(LogPiece::Data(data)).is_err() {
            self.routes.remove(&id);
            if let Some(o) = outbox {
                o.send(frame(&LanToMaster::LogsCancel { id }));
            }
        }
    }

    /// The master ended request `id`.
    pub fn end(&mut self, conn: ConnId, id: u64, error: Option<String>) {
        if self.routes.get(&id).is_some_and(|r| r.conn == conn) {
            if let Some(r) = self.routes.remove(&id) {
                let _ = r.tx.try_send(LogPiece::End(error));
            }
        }
    }

    /// The reader of `id` went: the master is told to stop.
    pub fn close(&mut self, id: u64, outbox: impl FnOnce(ConnId) -> Option<Outbox>) {
        if let Some(r) = self.routes.remove(&id) {
            if let Some(o) = outbox(r.conn) {
                o.send(frame(&LanToMaster::LogsCancel { id }));
            }
        }
    }

    /// The master on `conn` is gone: its readers are told.
    pub fn gone(&mut self, conn: ConnId) {
        let ids: Vec<u64> = self
            .routes
            .iter()
            .filter(|(_, r)| r.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.routes.remove(&id) {
                let _ =
                    r.tx.try_send(LogPiece::End(Some("the master's link ended".into())));
            }
        }
    }
}
