//! [`FakeMaster`]: the master's side of the lan manager protocol over a real
//! WebSocket, driven by a test or a benchmark instead of by children.
//!
//! Tests use the plain methods, which panic with the master's name and what
//! was awaited, because a test has nothing better to do with a broken link.
//! Benchmarks and long-running drivers use the `try_` methods, which return
//! a [`FakeMasterError`] instead.

use crate::link::{connect_lan, next, Next, Ws};
use crate::wait::SOON;
use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::{
    Capacity, ErrorCode, ExitInfo, Generation, InstanceName, InventoryEntry, LanToMaster,
    MasterHello, MasterToLan, PortCounts, Ports, PROTOCOL_VERSION,
};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Why a fake master's session failed.
#[derive(Debug, thiserror::Error)]
pub enum FakeMasterError {
    /// The WebSocket could not be opened or broke.
    #[error("{name}: link: {message}")]
    Link {
        /// The fake master's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The lan manager refused the hello.
    #[error("{name}: hello refused ({code:?}): {message}")]
    Refused {
        /// The fake master's name.
        name: String,
        /// The refusal's code.
        code: ErrorCode,
        /// The refusal's message.
        message: String,
    },
    /// The lan manager sent something the protocol does not allow here.
    #[error("{name}: unexpected from the lan manager: {message}")]
    Unexpected {
        /// The fake master's name.
        name: String,
        /// What arrived.
        message: String,
    },
}

/// A hello as a master serving `modules` with plenty of free ports, holding
/// `inventory`, would send from 127.0.0.1.
pub fn hello(name: &str, modules: &[&str], inventory: Vec<InventoryEntry>) -> MasterHello {
    MasterHello {
        version: PROTOCOL_VERSION,
        token: None,
        master: name.to_string(),
        // One stable secret per name, so a reconnect is the same master.
        secret: format!("test-secret-of-{name}"),
        pid: std::process::id(),
        advertiseaddress: "127.0.0.1".into(),
        capacity: Capacity {
            modules: modules.iter().map(|m| m.to_string()).collect(),
            free: PortCounts {
                tcp: 60_000,
                http: 60_000,
                ws: 60_000,
            },
        },
        inventory,
    }
}

/// One fake master's session with the lan manager.
pub struct FakeMaster {
    /// Its name.
    pub name: String,
    ws: Ws,
    heartbeat: Duration,
    next_lookup: u64,
    sent: u64,
    received: u64,
}

impl FakeMaster {
    /// Connects, says `hello` and waits for the welcome; a refusal is an error.
    pub async fn try_connect(
        addr: SocketAddr,
        hello: MasterHello,
    ) -> Result<FakeMaster, FakeMasterError> {
        let name = hello.master.clone();
        let ws = connect_lan(addr).await.map_err(|e| FakeMasterError::Link {
            name: name.clone(),
            message: e.to_string(),
        })?;
        let mut m = FakeMaster {
            name: name.clone(),
            ws,
            heartbeat: Duration::from_secs(2),
            next_lookup: 1,
            sent: 0,
            received: 0,
        };
        m.try_send(&MasterToLan::Hello(hello)).await?;
        match m.try_recv().await? {
            Some(LanToMaster::Welcome { heartbeat_ms, .. }) => {
                m.heartbeat = Duration::from_millis(heartbeat_ms.max(10));
                Ok(m)
            }
            Some(LanToMaster::Error { code, message, .. }) => Err(FakeMasterError::Refused {
                name,
                code,
                message,
            }),
            other => Err(FakeMasterError::Unexpected {
                name,
                message: format!("expected welcome, got {other:?}"),
            }),
        }
    }

    /// Connects as master `name` serving `modules` with an empty inventory.
    pub async fn connect(addr: SocketAddr, name: &str, modules: &[&str]) -> FakeMaster {
        FakeMaster::connect_with(addr, hello(name, modules, Vec::new())).await
    }

    /// Connects with a prepared hello; panics unless welcomed within [`SOON`].
    pub async fn connect_with(addr: SocketAddr, hello: MasterHello) -> FakeMaster {
        match tokio::time::timeout(SOON, FakeMaster::try_connect(addr, hello)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("no welcome from {addr} within {SOON:?}"),
        }
    }

    /// The heartbeat interval the welcome asked for.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Frames sent and received so far, hello and welcome included.
    pub fn frames(&self) -> (u64, u64) {
        (self.sent, self.received)
    }

    fn link_error(&self, e: impl std::fmt::Display) -> FakeMasterError {
        FakeMasterError::Link {
            name: self.name.clone(),
            message: e.to_string(),
        }
    }

    /// Sends one message.
    pub async fn try_send(&mut self, msg: &MasterToLan) -> Result<(), FakeMasterError> {
        self.ws
            .send(Message::text(encode(msg)))
            .await
            .map_err(|e| self.link_error(e))?;
        self.sent += 1;
        Ok(())
    }

    /// Sends one message; panics when the link is broken.
    pub async fn send(&mut self, msg: &MasterToLan) {
        if let Err(e) = self.try_send(msg).await {
            panic!("{e}");
        }
    }

    /// Sends a raw frame; panics when the link is broken.
    pub async fn send_raw(&mut self, msg: Message) {
        if let Err(e) = self.ws.send(msg).await {
            panic!("{}: {e}", self.name);
        }
    }

    /// Sends a raw frame the peer may refuse by cutting the link mid-frame;
    /// whether it went out.
    pub async fn try_send_raw(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// The next message, however long it takes; `None` when the lan manager
    /// closed the link.
    pub async fn try_recv(&mut self) -> Result<Option<LanToMaster>, FakeMasterError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    self.received += 1;
                    return decode_text(&t, MAX_FROM_LAN_FRAME).map(Some).map_err(|e| {
                        FakeMasterError::Unexpected {
                            name: self.name.clone(),
                            message: e.to_string(),
                        }
                    });
                }
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(self.link_error(e)),
            }
        }
    }

    /// The next message within [`SOON`], or `None` when the link closed.
    pub async fn recv_opt(&mut self) -> Option<LanToMaster> {
        match next(&mut self.ws).await {
            Next::Text(t) => {
                self.received += 1;
                match decode_text(&t, MAX_FROM_LAN_FRAME) {
                    Ok(m) => Some(m),
                    Err(e) => panic!("{}: undecodable frame {t:?}: {e}", self.name),
                }
            }
            Next::Closed(_) => None,
        }
    }

    /// The next message within [`SOON`]; panics when the link closed.
    pub async fn recv(&mut self) -> LanToMaster {
        match self.recv_opt().await {
            Some(m) => m,
            None => panic!("{}: link closed", self.name),
        }
    }

    /// Skips messages until one matches within [`SOON`]; returns it.
    pub async fn expect(&mut self, what: &str, f: impl Fn(&LanToMaster) -> bool) -> LanToMaster {
        let end = tokio::time::Instant::now() + SOON;
        loop {
            let Ok(m) = tokio::time::timeout_at(end, self.recv()).await else {
                panic!("{}: no {what} within {SOON:?}", self.name);
            };
            if f(&m) {
                return m;
            }
        }
    }

    /// Collects every message until a round trip through the state owner
    /// completes, so everything it sent before is in the returned list.
    pub async fn drain(&mut self) -> Vec<LanToMaster> {
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.send(&MasterToLan::Lookup {
            id,
            instancename: allex_protocol::instance!("barrier"),
        })
        .await;
        let mut seen = Vec::new();
        loop {
            let m = self.recv().await;
            if matches!(m, LanToMaster::LookupResult { id: i, .. } if i == id) {
                return seen;
            }
            seen.push(m);
        }
    }

    /// Claims a need and returns the answer (grant or claim_refused).
    pub async fn claim(&mut self, instance: &str) -> LanToMaster {
        let instancename = self.instance(instance);
        self.send(&MasterToLan::Claim {
            instancename: instancename.clone(),
            ports: None,
        })
        .await;
        self.expect("grant or refusal", move |m| match m {
            LanToMaster::Grant { need, .. } => need.instancename == instancename,
            LanToMaster::ClaimRefused {
                instancename: i, ..
            } => *i == instancename,
            _ => false,
        })
        .await
    }

    /// Claims a need and returns the generation; panics on refusal.
    pub async fn grant(&mut self, instance: &str) -> Generation {
        match self.claim(instance).await {
            LanToMaster::Grant { generation, .. } => generation,
            other => panic!("{}: claim of {instance} refused: {other:?}", self.name),
        }
    }

    /// Reports `spawned` for a grant.
    pub async fn spawned(
        &mut self,
        instance: &str,
        generation: Generation,
        pid: u32,
        ports: Ports,
    ) {
        let instancename = self.instance(instance);
        self.send(&MasterToLan::Spawned {
            instancename,
            generation,
            pid,
            ports,
        })
        .await;
    }

    /// Claims, reports spawned with `ports` and waits for `running`; returns the generation.
    pub async fn run_service(&mut self, instance: &str, pid: u32, ports: Ports) -> Generation {
        let g = self.grant(instance).await;
        self.spawned(instance, g, pid, ports).await;
        let inst = self.instance(instance);
        self.expect("running", move |m| {
            matches!(m, LanToMaster::Running { instancename, generation } if *instancename == inst && *generation == g)
        })
        .await;
        g
    }

    /// Reports `down` (exit code 1) for a service.
    pub async fn down(
        &mut self,
        instance: &str,
        generation: Generation,
        pid: u32,
        uptime_ms: u64,
        ordered: bool,
    ) {
        let instancename = self.instance(instance);
        self.send(&MasterToLan::Down {
            instancename,
            generation,
            pid,
            exit: ExitInfo {
                code: Some(1),
                signal: None,
                reason: None,
            },
            ordered,
            uptime_ms,
        })
        .await;
    }

    /// Closes the link cleanly and waits for the lan manager's side to end.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(_)) = tokio::time::timeout(SOON, self.ws.next()).await {}
    }

    /// An instance name a test spelled; panics naming it when it is not one.
    fn instance(&self, name: &str) -> InstanceName {
        match InstanceName::new(name) {
            Ok(n) => n,
            Err(e) => panic!("{}: {name:?} is not an instance name: {e}", self.name),
        }
    }
}

/// What a hello from an impostor got: the lan manager's refusal, or a welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpostorOutcome {
    /// Refused with this code and message.
    Refused(ErrorCode, String),
    /// Welcomed: the lan manager took it for the master it names.
    Welcomed,
}

/// Says hello as master `name` with a secret of its own and an empty
/// inventory, as a stranger on the LAN could; closes the link right after.
pub async fn impostor_hello(
    addr: SocketAddr,
    name: &str,
) -> Result<ImpostorOutcome, FakeMasterError> {
    let mut h = hello(name, &["testsvc"], Vec::new());
    h.secret = format!("impostor-{}-of-{name}", std::process::id());
    match FakeMaster::try_connect(addr, h).await {
        Ok(m) => {
            m.close().await;
            Ok(ImpostorOutcome::Welcomed)
        }
        Err(FakeMasterError::Refused { code, message, .. }) => {
            Ok(ImpostorOutcome::Refused(code, message))
        }
        Err(e) => Err(e),
    }
}

/// [`impostor_hello`] on a runtime of its own, for synchronous callers.
pub fn impostor_hello_blocking(
    addr: SocketAddr,
    name: &str,
) -> Result<ImpostorOutcome, FakeMasterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FakeMasterError::Link {
            name: name.to_string(),
            message: format!("cannot start a runtime: {e}"),
        })?;
    rt.block_on(impostor_hello(addr, name))
}
