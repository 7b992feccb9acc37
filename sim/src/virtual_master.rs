//! Virtual masters: the master's side of the lan manager protocol over a real
//! WebSocket, with real listening ports, but without spawning processes.
//!
//! They let one process stand in for a hundred machines when measuring the
//! lan manager alone (`allex-sim bench`, figure 4). A virtual master answers
//! every grant with a `spawned` report naming ports it really listens on, so
//! the lan manager's port check does its real work; only the child is missing.

use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::InstanceName;
use allex_protocol::{
    Capacity, LanToMaster, MasterHello, MasterToLan, Need, PortCounts, Ports, PROTOCOL_VERSION,
};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a virtual master stopped.
#[derive(Debug, thiserror::Error)]
pub enum VirtualMasterError {
    /// The WebSocket could not be opened or broke.
    #[error("{name}: link: {message}")]
    Link {
        /// The virtual master's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The lan manager sent something the protocol does not allow here.
    #[error("{name}: unexpected from the lan manager: {message}")]
    Unexpected {
        /// The virtual master's name.
        name: String,
        /// What arrived.
        message: String,
    },
    /// A local port could not be bound.
    #[error("binding a service port on {ip}: {source}")]
    Bind {
        /// The address.
        ip: IpAddr,
        /// The fault.
        source: std::io::Error,
    },
}

/// Real listening ports, one per protocol, that accept and drop every
/// connection; the accept loops end when this is dropped.
pub struct AcceptingPorts {
    /// The ports.
    pub ports: Ports,
    tasks: Vec<JoinHandle<()>>,
}

impl AcceptingPorts {
    /// Binds one port per protocol on `ip` (kernel-chosen) and accepts on each.
    pub async fn bind(ip: IpAddr) -> Result<AcceptingPorts, VirtualMasterError> {
        let mut ports = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let l = TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|source| VirtualMasterError::Bind { ip, source })?;
            let port = l
                .local_addr()
                .map_err(|source| VirtualMasterError::Bind { ip, source })?
                .port();
            ports.push(port);
            tasks.push(tokio::spawn(async move {
                // An accept error (fd pressure) is transient: the checker retries.
                while let Ok((c, _)) = l.accept().await {
                    drop(c);
                }
            }));
        }
        Ok(AcceptingPorts {
            ports: Ports {
                tcp: Some(ports[0]),
                http: Some(ports[1]),
                ws: Some(ports[2]),
            },
            tasks,
        })
    }
}

impl Drop for AcceptingPorts {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A hello as a master serving `modules` with plenty of free ports would send.
pub fn hello(name: &str, modules: &[&str], advertiseaddress: IpAddr) -> MasterHello {
    MasterHello {
        version: PROTOCOL_VERSION,
        token: None,
        master: name.to_string(),
        // One stable secret per name, so a reconnect is the same master.
        secret: format!("test-secret-of-{name}"),
        pid: std::process::id(),
        advertiseaddress: advertiseaddress.to_string(),
        capacity: Capacity {
            modules: modules.iter().map(|m| m.to_string()).collect(),
            free: PortCounts {
                tcp: 60_000,
                http: 60_000,
                ws: 60_000,
            },
        },
        inventory: Vec::new(),
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One virtual master's session with the lan manager.
pub struct VirtualMaster {
    name: String,
    ws: Ws,
    heartbeat: Duration,
    /// Frames sent, shared with whoever counts the traffic.
    pub sent: Arc<AtomicU64>,
    /// Frames received.
    pub received: Arc<AtomicU64>,
}

impl VirtualMaster {
    /// Connects to the lan manager at `addr`, says `hello` and waits for the welcome.
    pub async fn connect(
        addr: SocketAddr,
        hello: MasterHello,
    ) -> Result<VirtualMaster, VirtualMasterError> {
        let name = hello.master.clone();
        let link = |e: tokio_tungstenite::tungstenite::Error| VirtualMasterError::Link {
            name: name.clone(),
            message: e.to_string(),
        };
        let ws = connect_lan(addr).await.map_err(link)?;
        let mut vm = VirtualMaster {
            name: name.clone(),
            ws,
            heartbeat: Duration::from_secs(2),
            sent: Arc::default(),
            received: Arc::default(),
        };
        vm.send(&MasterToLan::Hello(hello)).await?;
        match vm.recv().await? {
            Some(LanToMaster::Welcome { heartbeat_ms, .. }) => {
                vm.heartbeat = Duration::from_millis(heartbeat_ms.max(10));
                Ok(vm)
            }
            other => Err(VirtualMasterError::Unexpected {
                name,
                message: format!("expected welcome, got {other:?}"),
            }),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &MasterToLan) -> Result<(), VirtualMasterError> {
        self.ws
            .send(Message::text(encode(msg)))
            .await
            .map_err(|e| VirtualMasterError::Link {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The next message; `None` when the lan manager closed the link.
    pub async fn recv(&mut self) -> Result<Option<LanToMaster>, VirtualMasterError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    return decode_text(&t, MAX_FROM_LAN_FRAME).map(Some).map_err(|e| {
                        VirtualMasterError::Unexpected {
                            name: self.name.clone(),
                            message: e.to_string(),
                        }
                    });
                }
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(VirtualMasterError::Link {
                        name: self.name.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// Plays a master until `progress` reaches its target: claims every
    /// open need `wants` accepts, answers each grant with `spawned` on
    /// `ports`, counts `running` orders into `progress`, and keeps the
    /// heartbeat going.
    pub async fn serve(
        mut self,
        ports: Ports,
        wants: impl Fn(&Need) -> bool,
        progress: Arc<Progress>,
    ) -> Result<ServeStats, VirtualMasterError> {
        let mut stats = ServeStats::default();
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = progress.stop.subscribe();
        let mut seq = 0;
        // Fake pids, far from real ones.
        let mut pid = 1_000_000;
        while !*stop.borrow() {
            let msg = tokio::select! {
                m = self.recv() => m?,
                _ = beat.tick() => {
                    seq += 1;
                    self.send(&MasterToLan::Heartbeat { seq }).await?;
                    continue;
                }
                _ = stop.changed() => continue,
            };
            let Some(msg) = msg else {
                return Err(VirtualMasterError::Link {
                    name: self.name.clone(),
                    message: "closed by the lan manager".into(),
                });
            };
            match msg {
                LanToMaster::Needs { needs } => {
                    for n in needs.iter().filter(|n| wants(n)) {
                        self.claim(&n.instancename, &mut stats).await?;
                    }
                }
                LanToMaster::NeedOpen { need } if wants(&need) => {
                    self.claim(&need.instancename, &mut stats).await?;
                }
                LanToMaster::Grant {
                    need, generation, ..
                } => {
                    stats.granted += 1;
                    pid += 1;
                    self.send(&MasterToLan::Spawned {
                        instancename: need.instancename,
                        generation,
                        pid,
                        ports,
                    })
                    .await?;
                }
                LanToMaster::ClaimRefused { .. } => stats.refused += 1,
                LanToMaster::Running { .. } => {
                    stats.running += 1;
                    progress.one_running();
                }
                LanToMaster::Rejected {
                    instancename,
                    reason,
                    ..
                } => {
                    return Err(VirtualMasterError::Unexpected {
                        name: self.name.clone(),
                        message: format!("{instancename} rejected: {reason}"),
                    })
                }
                LanToMaster::Error { code, message } => {
                    return Err(VirtualMasterError::Unexpected {
                        name: self.name.clone(),
                        message: format!("error {code}: {message}"),
                    })
                }
                _ => {}
            }
        }
        stats.sent = self.sent.load(Ordering::Relaxed);
        stats.received = self.received.load(Ordering::Relaxed);
        let _ = self.ws.close(None).await;
        Ok(stats)
    }

    async fn claim(
        &mut self,
        instancename: &InstanceName,
        stats: &mut ServeStats,
    ) -> Result<(), VirtualMasterError> {
        stats.claimed += 1;
        self.send(&MasterToLan::Claim {
            instancename: instancename.clone(),
        })
        .await
    }
}

/// How many services the virtual masters got listed as running, and when
/// the last one of the target was.
#[derive(Debug)]
pub struct Progress {
    running: AtomicUsize,
    target: usize,
    finished_at: OnceLock<Instant>,
    stop: watch::Sender<bool>,
}

impl Progress {
    /// Progress towards `target` services running.
    pub fn new(target: usize) -> Arc<Progress> {
        Arc::new(Progress {
            running: AtomicUsize::new(0),
            target,
            finished_at: OnceLock::new(),
            stop: watch::Sender::new(target == 0),
        })
    }

    fn one_running(&self) {
        if self.running.fetch_add(1, Ordering::AcqRel) + 1 >= self.target {
            let _ = self.finished_at.set(Instant::now());
            self.stop.send_replace(true);
        }
    }

    /// Services listed as running so far.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// When the target was reached.
    pub fn finished_at(&self) -> Option<Instant> {
        self.finished_at.get().copied()
    }

    /// Tells every virtual master to stop serving (when the run is abandoned).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// What one virtual master did in [`VirtualMaster::serve`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeStats {
    /// Claims sent.
    pub claimed: u64,
    /// Grants received.
    pub granted: u64,
    /// Claims refused.
    pub refused: u64,
    /// Services listed as running.
    pub running: u64,
    /// Frames sent in all.
    pub sent: u64,
    /// Frames received in all.
    pub received: u64,
}

/// A WebSocket to the lan manager that accepts its largest frames (a needs
/// snapshot), without Nagle's delay; shared by virtual masters and the bench's
/// admin link.
pub async fn connect_lan(
    addr: SocketAddr,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FROM_LAN_FRAME))
        .max_frame_size(Some(MAX_FROM_LAN_FRAME));
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), Some(config), true)
            .await?;
    Ok(ws)
}

/// What a hello from an impostor got: the lan manager's refusal, or a welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpostorOutcome {
    /// Refused with this code and message.
    Refused(allex_protocol::ErrorCode, String),
    /// Welcomed: the lan manager took it for the master it names.
    Welcomed,
}

/// Says hello as master `name` with a secret of its own and an empty
/// inventory, as a stranger on the LAN could; closes the link right after.
pub async fn impostor_hello(
    addr: SocketAddr,
    name: &str,
) -> Result<ImpostorOutcome, VirtualMasterError> {
    let mut h = hello(name, &["testsvc"], IpAddr::from([127, 0, 0, 1]));
    h.secret = format!("impostor-{}-of-{name}", std::process::id());
    let link = |e: tokio_tungstenite::tungstenite::Error| VirtualMasterError::Link {
        name: name.to_string(),
        message: e.to_string(),
    };
    let mut ws = connect_lan(addr).await.map_err(link)?;
    ws.send(Message::text(encode(&MasterToLan::Hello(h))))
        .await
        .map_err(link)?;
    while let Some(frame) = ws.next().await {
        let Message::Text(t) = frame.map_err(link)? else {
            continue;
        };
        match decode_text::<LanToMaster>(&t, MAX_FROM_LAN_FRAME) {
            Ok(LanToMaster::Welcome { .. }) => return Ok(ImpostorOutcome::Welcomed),
            Ok(LanToMaster::Error { code, message }) => {
                return Ok(ImpostorOutcome::Refused(code, message))
            }
            _ => continue,
        }
    }
    Err(VirtualMasterError::Unexpected {
        name: name.to_string(),
        message: "closed without a welcome or a refusal".into(),
    })
}

/// [`impostor_hello`] on a runtime of its own, for synchronous callers.
pub fn impostor_hello_blocking(
    addr: SocketAddr,
    name: &str,
) -> Result<ImpostorOutcome, VirtualMasterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VirtualMasterError::Unexpected {
            name: name.to_string(),
            message: format!("cannot start a runtime: {e}"),
        })?;
    rt.block_on(impostor_hello(addr, name))
}
