//! A scriptable fake lan manager: a real WebSocket server on 127.0.0.1 that
//! speaks the protocol's lan messages, so tests can see exactly what the
//! master sends and answer as they please.

use allex_protocol::frame::encode;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{LanToMaster, MasterToLan, Need, PROTOCOL_VERSION};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the fake saw on its socket.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A master connected (WebSocket handshake done).
    Connected,
    /// A frame from the master (heartbeats are answered, not reported).
    Msg(MasterToLan),
    /// The master's connection ended.
    Closed,
}

/// How the fake behaves on its own.
#[derive(Debug, Clone)]
pub struct Options {
    /// Answer a hello with welcome at once.
    pub auto_welcome: bool,
    /// The heartbeat interval told in welcome.
    pub heartbeat_ms: u64,
    /// Echo heartbeats.
    pub echo: bool,
    /// Grant every claim for an offered need.
    pub auto_grant: bool,
    /// Fencing time told in welcome.
    pub fence_ms: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auto_welcome: true,
            heartbeat_ms: 200,
            echo: true,
            auto_grant: true,
            fence_ms: None,
        }
    }
}

enum Cmd {
    Send(LanToMaster),
    SendRaw(String),
    Reopen(InstanceName),
    DropLink,
    Unlisten,
    Listen,
    Quit,
}

/// The fake lan manager; its server runs on its own thread.
pub struct FakeLan {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Receiver<Seen>,
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
    needs: Arc<Mutex<HashMap<InstanceName, Need>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeLan {
    /// Starts a fake lan manager on 127.0.0.1 with an OS-chosen port.
    pub fn start(opts: Options) -> FakeLan {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let (cmds, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
        let needs = Arc::new(Mutex::new(HashMap::new()));
        let server = Server {
            opts,
            addr,
            seen: seen_tx,
            needs: needs.clone(),
            granted: HashSet::new(),
            generation: Generation(0),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                server.run(listener, cmd_rx).await;
            });
        });
        FakeLan {
            addr,
            seen,
            cmds,
            needs,
            thread: Some(thread),
        }
    }

    /// Sends a message to the connected master.
    pub fn send(&self, msg: LanToMaster) {
        let _ = self.cmds.send(Cmd::Send(msg));
    }

    /// Sends a text frame as it is: what a typed message cannot hold.
    pub fn send_raw(&self, text: String) {
        let _ = self.cmds.send(Cmd::SendRaw(text));
    }

    /// Makes needs known (for auto grants) and sends them as the open-needs snapshot.
    pub fn offer(&self, needs: Vec<Need>) {
        let mut all = self.needs.lock().unwrap();
        for n in &needs {
            all.insert(n.instancename.clone(), n.clone());
        }
        drop(all);
        self.send(LanToMaster::Needs { needs });
    }

    /// Makes one need known and announces it with `need_open`.
    pub fn open(&self, need: Need) {
        self.needs
            .lock()
            .unwrap()
            .insert(need.instancename.clone(), need.clone());
        let _ = self.cmds.send(Cmd::Reopen(need.instancename.clone()));
        self.send(LanToMaster::NeedOpen { need });
    }

    /// Closes the current connection (the master will reconnect).
    pub fn drop_link(&self) {
        let _ = self.cmds.send(Cmd::DropLink);
    }

    /// Closes the connection and stops listening: connects are refused.
    pub fn unlisten(&self) {
        let _ = self.cmds.send(Cmd::Unlisten);
    }

    /// Listens again on the same address.
    pub fn listen(&self) {
        let _ = self.cmds.send(Cmd::Listen);
    }

    /// Waits for the next event `pick` accepts, skipping others; panics on timeout.
    pub fn wait<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            match self.seen.recv_timeout(left) {
                Ok(ev) => {
                    if let Some(v) = pick(&ev) {
                        return v;
                    }
                    skipped.push(ev);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("fake lan manager: no {what} within {deadline:?}; skipped {skipped:#?}")
                }
            }
        }
    }

    /// Waits for the next master message `pick` accepts.
    pub fn wait_msg<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&MasterToLan) -> Option<T>,
    ) -> T {
        self.wait(what, deadline, |ev| match ev {
            Seen::Msg(m) => pick(m),
            _ => None,
        })
    }

    /// Everything seen and not yet consumed, without waiting.
    pub fn drain(&self) -> Vec<Seen> {
        self.seen.try_iter().collect()
    }
}

impl Drop for FakeLan {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Quit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Server {
    opts: Options,
    addr: SocketAddr,
    seen: Sender<Seen>,
    needs: Arc<Mutex<HashMap<InstanceName, Need>>>,
    granted: HashSet<InstanceName>,
    generation: Generation,
}

type Ws = WebSocketStream<TcpStream>;

async fn next_frame(
    conn: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match conn {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn accept(listener: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Server {
    async fn run(
        mut self,
        listener: TcpListener,
        mut cmds: tokio::sync::mpsc::UnboundedReceiver<Cmd>,
    ) {
        let mut listener = Some(listener);
        let mut conn: Option<Ws> = None;
        loop {
            tokio::select! {
                acc = accept(&listener) => {
                    let Ok((tcp, _)) = acc else { continue };
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        if conn.take().is_some() {
                            let _ = self.seen.send(Seen::Closed);
                        }
                        conn = Some(ws);
                        let _ = self.seen.send(Seen::Connected);
                    }
                }
                frame = next_frame(&mut conn) => {
                    match frame {
                        Some(Ok(Message::Text(t))) => {
                            let msg: MasterToLan = serde_json::from_str(t.as_str()).unwrap();
                            let replies = self.react(&msg);
                            if !matches!(msg, MasterToLan::Heartbeat { .. }) {
                                let _ = self.seen.send(Seen::Msg(msg));
                            }
                            if let Some(ws) = &mut conn {
                                for r in replies {
                                    let _ = ws.send(Message::text(encode(&r))).await;
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        None | Some(Err(_)) => {
                            conn = None;
                            let _ = self.seen.send(Seen::Closed);
                        }
                    }
                }
                cmd = cmds.recv() => {
                    match cmd {
                        None | Some(Cmd::Quit) => return,
                        Some(Cmd::Send(m)) => {
                            if let Some(ws) = &mut conn {
                                let _ = ws.send(Message::text(encode(&m))).await;
                            }
                        }
                        Some(Cmd::SendRaw(t)) => {
                            if let Some(ws) = &mut conn {
                                let _ = ws.send(Message::text(t)).await;
                            }
                        }
                        Some(Cmd::Reopen(name)) => {
                            self.granted.remove(&name);
                        }
                        Some(Cmd::DropLink) => {
                            if conn.take().is_some() {
                                let _ = self.seen.send(Seen::Closed);
                            }
                        }
                        Some(Cmd::Unlisten) => {
                            listener = None;
                            if conn.take().is_some() {
                                let _ = self.seen.send(Seen::Closed);
                            }
                        }
                        Some(Cmd::Listen) => {
                            listener = Some(TcpListener::bind(self.addr).await.unwrap());
                        }
                    }
                }
            }
        }
    }

    fn react(&mut self, msg: &MasterToLan) -> Vec<LanToMaster> {
        match msg {
            MasterToLan::Hello(_) if self.opts.auto_welcome => {
                // Like the real lan manager: welcome, then the open needs.
                let needs = self.needs.lock().unwrap();
                let mut open: Vec<Need> = needs
                    .values()
                    .filter(|n| !self.granted.contains(&n.instancename))
                    .cloned()
                    .collect();
                open.sort_by(|a, b| a.instancename.cmp(&b.instancename));
                vec![
                    LanToMaster::Welcome {
                        version: PROTOCOL_VERSION,
                        grace_ms: 1000,
                        heartbeat_ms: self.opts.heartbeat_ms,
                        fence_ms: self.opts.fence_ms,
                    },
                    LanToMaster::Needs { needs: open },
                ]
            }
            MasterToLan::Heartbeat { seq } if self.opts.echo => {
                vec![LanToMaster::Heartbeat { seq: *seq }]
            }
            MasterToLan::Claim { instancename, .. } if self.opts.auto_grant => {
                let need = self.needs.lock().unwrap().get(instancename).cloned();
                match need {
                    Some(need) => {
                        self.generation = Generation(self.generation.get() + 1);
                        self.granted.insert(instancename.clone());
                        vec![LanToMaster::Grant {
                            need,
                            generation: self.generation,
                            deadline_ms: 5000,
                        }]
                    }
                    None => vec![LanToMaster::ClaimRefused {
                        instancename: instancename.clone(),
                        reason: "unknown need".into(),
                    }],
                }
            }
            _ => Vec::new(),
        }
    }
}
