//! The state owner: one task holds children, ports, needs and the link queue.
//!
//! Everything else (the link, the socket server, the spawner, child waiters,
//! timers) sends it [`Event`]s; it never waits on I/O itself, so one event
//! costs microseconds and 200 grants are turned into spawn jobs at once.
//! The children's lifecycle lives in `children.rs`, socket requests in `local.rs`.

mod children;
mod local;

use crate::child_handle::ChildHandle;
use crate::config::master_name;
use crate::ports::{PortError, PortOffice};
use crate::spawner::{Spawner, Started};
use allex_protocol::{
    Capacity, ChildState, ChildStatus, ExitInfo, InventoryEntry, LanToMaster, LocalReply,
    LocalRequest, MasterConfig, MasterHello, MasterStatus, MasterToLan, Need, PortCounts, Ports,
    Protocol, PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// How long a child's lookup waits for the lan manager's answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long changes of the free-port counts are gathered into one report.
const CAPACITY_REPORT_DELAY: Duration = Duration::from_millis(500);

/// How often an exhausted master probes its ranges again.
const EXHAUSTED_RETRY: Duration = Duration::from_secs(1);

/// What the state task reacts to.
#[derive(Debug)]
pub enum Event {
    /// A WebSocket to the lan manager is open; the hello goes out on `out`.
    LinkUp {
        /// Local address of the TCP connection (the default advertise address).
        local: IpAddr,
        /// Frames to send on this connection.
        out: UnboundedSender<MasterToLan>,
    },
    /// A message from the lan manager.
    LinkMessage(LanToMaster),
    /// The link is gone; the link task reconnects.
    LinkDown {
        /// Messages handed to the link that never reached the socket.
        unsent: Vec<MasterToLan>,
    },
    /// A request on the master's Unix socket.
    Local {
        /// The request.
        req: LocalRequest,
        /// The peer's pid from the socket credentials.
        peer_pid: Option<u32>,
        /// Where the reply goes.
        reply: oneshot::Sender<LocalReply>,
    },
    /// The spawner started a child, or could not.
    Spawned {
        /// Instance name.
        instance: String,
        /// Grant generation.
        generation: u64,
        /// The child, or why it failed.
        result: Result<Started, String>,
    },
    /// A child ended (observed by its parent, at once).
    Exited {
        /// Instance name.
        instance: String,
        /// Grant generation.
        generation: u64,
        /// Its pid.
        pid: u32,
        /// Exit code or signal.
        exit: ExitInfo,
    },
    /// A stopped child's grace ran out: SIGKILL it.
    StopTimeout {
        /// Instance name.
        instance: String,
        /// Its pid.
        pid: u32,
    },
    /// Time to check whether the lan manager has been silent for the fence time.
    FenceCheck,
    /// Time to delete logs of instances that no longer run here.
    SweepLogs,
    /// A log sweep ended; `next` is when the oldest kept stale log expires.
    LogsSwept {
        /// Files deleted.
        deleted: usize,
        /// Until the next expiry, if a stale log is left.
        next: Option<Duration>,
    },
    /// Ports were exhausted: probe again, since another process may have let some go.
    RetryClaims,
    /// Time to tell the lan manager the free-port counts, if they changed.
    ReportCapacity,
    /// A lookup got no answer in time.
    LookupTimeout {
        /// The lookup's id.
        id: u64,
    },
    /// Stop every child and end.
    Shutdown,
}

struct Child {
    module: String,
    /// The need it was granted for, to claim it again at once if it dies.
    need: Need,
    generation: u64,
    /// Spawning, or live with a pid.
    phase: Phase,
    ports: Ports,
    started: Instant,
    state: ChildState,
    ready: bool,
    /// Set once a stop was decided; `true` when the lan manager ordered it.
    stop: Option<bool>,
    stopsignal: i32,
    stoptimeout: Duration,
}

/// Where a child is in its life, as far as the master knows it.
enum Phase {
    /// The spawner is starting it: no pid yet, nothing to signal, not
    /// reported; a stop decided meanwhile waits for the pid.
    Spawning,
    /// Started, with its pid (until its exit is reported).
    Live {
        /// Its pid, also its process group's id.
        pid: u32,
        /// Signals it by pidfd and its group while unreaped; `None` only in
        /// state tests that spawn nothing.
        handle: Option<Arc<ChildHandle>>,
    },
}

impl Child {
    /// Its pid, once started.
    fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Spawning => None,
            Phase::Live { pid, .. } => Some(pid),
        }
    }

    /// Signals the child's process group (and the child by pidfd), never a
    /// process that merely got a recycled pid.
    fn signal_group(&self, sig: i32) {
        if let Phase::Live {
            handle: Some(h), ..
        } = &self.phase
        {
            h.signal_group(sig);
        }
    }
}

struct Link {
    out: UnboundedSender<MasterToLan>,
    welcomed: bool,
}

/// Everything the master holds; owned by the state task.
pub struct State {
    cfg: MasterConfig,
    name: String,
    socket: PathBuf,
    events: UnboundedSender<Event>,
    spawner: Spawner,
    ports: PortOffice,
    children: HashMap<String, Child>,
    by_pid: HashMap<u32, String>,
    link: Option<Link>,
    advertise: Option<IpAddr>,
    /// This master's secret, presented in every hello.
    secret: String,
    /// Reports (`spawned`, `spawn_failed`, `down`) made while no link was
    /// welcomed, in order; sent right after the next `welcome`, less what
    /// that hello's inventory already says.
    reports: Vec<MasterToLan>,
    /// Why the lan manager refused the last hello, until a welcome.
    refused: Option<String>,
    /// Fencing time the lan manager asked for in its last welcome.
    fence: Option<Duration>,
    /// When the lan manager was last heard from (any frame).
    last_heard: Instant,
    fence_armed: bool,
    /// Children were stopped by fencing; cleared by the next welcome.
    fenced: bool,
    /// The descriptor limit in force, and how many children fit under it.
    fdlimit: u64,
    max_children: usize,
    /// The limit was reached (logged once per episode).
    fd_exhausted: bool,
    /// When the next log sweep is due, if one is armed.
    sweep_at: Option<Instant>,
    /// Quick deaths in a row per instance, to summarise crash loops in the log.
    quick_deaths: HashMap<String, u32>,
    open: BTreeMap<String, Need>,
    claims: HashMap<String, Ports>,
    lookups: HashMap<u64, oneshot::Sender<LocalReply>>,
    next_lookup: u64,
    exhausted: BTreeSet<Protocol>,
    last_capacity: Option<(BTreeSet<Protocol>, [bool; 3])>,
    /// Free-port counts the lan manager was last told.
    sent_free: Option<PortCounts>,
    /// A coalesced capacity report is due.
    capacity_report_armed: bool,
    retry_scheduled: bool,
    /// `ready` from pids not known yet: a child can speak before the
    /// spawner's report of its pid has reached this task.
    early_ready: Vec<(u32, oneshot::Sender<LocalReply>)>,
    /// Instances whose spawn failed: failures in a row, and not claimed before when.
    spawn_failures: HashMap<String, (u32, Instant)>,
    shutting_down: bool,
}

impl State {
    /// A state with no children; `events` is the sender of the task's own queue.
    pub fn new(
        cfg: MasterConfig,
        secret: String,
        socket: PathBuf,
        events: UnboundedSender<Event>,
        spawner: Spawner,
        ports: PortOffice,
    ) -> State {
        State {
            name: master_name(&cfg),
            advertise: cfg.advertiseaddress,
            cfg,
            socket,
            events,
            spawner,
            ports,
            children: HashMap::new(),
            by_pid: HashMap::new(),
            link: None,
            secret,
            reports: Vec::new(),
            refused: None,
            fence: None,
            last_heard: Instant::now(),
            fence_armed: false,
            fenced: false,
            fdlimit: u64::MAX,
            max_children: usize::MAX,
            fd_exhausted: false,
            sweep_at: None,
            quick_deaths: HashMap::new(),
            open: BTreeMap::new(),
            claims: HashMap::new(),
            lookups: HashMap::new(),
            next_lookup: 1,
            exhausted: BTreeSet::new(),
            last_capacity: None,
            sent_free: None,
            capacity_report_armed: false,
            retry_scheduled: false,
            early_ready: Vec::new(),
            spawn_failures: HashMap::new(),
            shutting_down: false,
        }
    }

    /// Sets the descriptor limit the children must fit under.
    pub fn with_fdlimit(mut self, limit: u64) -> State {
        self.fdlimit = limit;
        self.max_children = crate::fdlimit::max_children(limit);
        self
    }

    /// Runs until shutdown has stopped every child.
    pub async fn run(mut self, mut rx: UnboundedReceiver<Event>, shutdown_grace: Duration) {
        // Logs left by instances of an earlier start.
        self.arm_sweep(Duration::ZERO);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if self.shutting_down && self.children.is_empty() {
                break;
            }
            let ev = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        tracing::warn!(
                            left = self.children.len(),
                            "children did not stop in time; killing them"
                        );
                        for c in self.children.values() {
                            c.signal_group(libc::SIGKILL);
                        }
                        break;
                    }
                },
                None => rx.recv().await,
            };
            let Some(ev) = ev else { break };
            if matches!(ev, Event::Shutdown) && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + shutdown_grace);
            }
            self.handle(ev);
        }
    }

    /// Applies one event.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::LinkUp { local, out } => self.link_up(local, out),
            Event::LinkMessage(msg) => self.lan_message(msg),
            Event::LinkDown { unsent } => self.link_down(unsent),
            Event::Local {
                req,
                peer_pid,
                reply,
            } => self.local(req, peer_pid, reply),
            Event::Spawned {
                instance,
                generation,
                result,
            } => self.spawned(instance, generation, result),
            Event::Exited {
                instance,
                generation,
                pid,
                exit,
            } => self.exited(instance, generation, pid, exit),
            Event::StopTimeout { instance, pid } => {
                if let Some(c) = self.children.get(&instance) {
                    if c.pid() == Some(pid) {
                        tracing::warn!(%instance, pid, "child ignored its stop signal; sending SIGKILL");
                        c.signal_group(libc::SIGKILL);
                    }
                }
            }
            Event::LookupTimeout { id } => {
                if let Some(reply) = self.lookups.remove(&id) {
                    let _ = reply.send(LocalReply::Location { location: None });
                }
            }
            Event::RetryClaims => {
                self.retry_scheduled = false;
                self.claim_open_needs();
                self.capacity_changed();
            }
            Event::ReportCapacity => {
                self.capacity_report_armed = false;
                if self.welcomed() && self.sent_free != Some(self.free()) {
                    self.send_capacity();
                }
            }
            Event::FenceCheck => self.fence_check(),
            Event::SweepLogs => self.sweep_logs(),
            Event::LogsSwept { deleted, next } => {
                if deleted > 0 {
                    tracing::info!(deleted, "deleted logs of instances that no longer run here");
                }
                if let Some(next) = next {
                    self.arm_sweep(next);
                }
            }
            Event::Shutdown => self.shutdown(),
        }
    }

    /// Fencing: after the fence time without a word from the lan manager,
    /// stop every child, because past the grace the lan manager hands
    /// their needs to other masters and we must not run them beside those.
    fn fence_check(&mut self) {
        self.fence_armed = false;
        let Some(fence) = self.fence else { return };
        if self.fenced || self.shutting_down {
            return;
        }
        let silent = self.last_heard.elapsed();
        if silent < fence {
            self.arm_fence(fence - silent);
            return;
        }
        self.fenced = true;
        tracing::error!(
            fence_ms = fence.as_millis() as u64,
            children = self.children.len(),
            "fenced: no word from the lan manager for the fence time; stopping every child"
        );
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            self.stop_child(&name, true);
        }
    }

    /// Arms a log sweep `after` from now, unless one is due sooner.
    pub(super) fn arm_sweep(&mut self, after: Duration) {
        let at = Instant::now() + after;
        if self.sweep_at.is_some_and(|t| t <= at) {
            return;
        }
        self.sweep_at = Some(at);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(Event::SweepLogs);
        });
    }

    /// Deletes expired logs of instances not running here, off this task.
    fn sweep_logs(&mut self) {
        match self.sweep_at {
            Some(t) if Instant::now() >= t => self.sweep_at = None,
            _ => return,
        }
        let live: Vec<String> = self.children.keys().cloned().collect();
        let rt = self.cfg.runtimedirectory.clone();
        let keep = Duration::from_millis(self.cfg.logretentionms);
        let max = self.cfg.logretentionbytes;
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let live = live.iter().map(String::as_str).collect();
            let s = crate::retention::sweep(&rt, &live, keep, max);
            let _ = events.send(Event::LogsSwept {
                deleted: s.deleted,
                next: s.next,
            });
        });
    }

    fn arm_fence(&mut self, after: Duration) {
        if self.fence_armed {
            return;
        }
        self.fence_armed = true;
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(Event::FenceCheck);
        });
    }

    fn welcomed(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.welcomed)
    }

    /// Sends on a welcomed link; otherwise the message is moot (the next
    /// hello's inventory and the lan manager's needs snapshot replace it).
    fn send(&mut self, msg: MasterToLan) {
        match &self.link {
            Some(link) if link.welcomed => {
                let _ = link.out.send(msg);
            }
            _ => tracing::debug!(?msg, "link down: message not sent"),
        }
    }

    /// Sends a report about a child on a welcomed link, or keeps it for
    /// the next welcome: what a child did must reach the lan manager.
    fn send_report(&mut self, msg: MasterToLan) {
        match &self.link {
            Some(link) if link.welcomed => {
                if let Err(e) = link.out.send(msg) {
                    self.reports.push(e.0);
                }
            }
            _ => self.reports.push(msg),
        }
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            modules: self.cfg.services.keys().cloned().collect(),
            free: self.free(),
        }
    }

    /// Free ports per protocol; an exhausted protocol counts none, even when
    /// the ports it could not bind belong to other processes.
    fn free(&self) -> PortCounts {
        let mut free = self.ports.free_counts();
        for p in &self.exhausted {
            match p {
                Protocol::Tcp => free.tcp = 0,
                Protocol::Http => free.http = 0,
                Protocol::Ws => free.ws = 0,
            }
        }
        free
    }

    fn link_up(&mut self, local: IpAddr, out: UnboundedSender<MasterToLan>) {
        let advertise = self.cfg.advertiseaddress.unwrap_or(local);
        self.advertise = Some(advertise);
        let inventory = self
            .children
            .iter()
            .filter_map(|(name, c)| {
                Some(InventoryEntry {
                    instancename: name.clone(),
                    modulename: c.module.clone(),
                    generation: c.generation,
                    pid: c.pid()?,
                    ports: c.ports,
                })
            })
            .collect();
        // A `spawned` kept for this link is said by the inventory already.
        let children = &self.children;
        self.reports.retain(|m| match m {
            MasterToLan::Spawned {
                instancename,
                generation,
                pid,
                ..
            } => !children
                .get(instancename)
                .is_some_and(|c| c.generation == *generation && c.pid() == Some(*pid)),
            _ => true,
        });
        let hello = MasterToLan::Hello(MasterHello {
            version: PROTOCOL_VERSION,
            token: self.cfg.token.clone(),
            master: self.name.clone(),
            secret: self.secret.clone(),
            pid: std::process::id(),
            advertiseaddress: advertise.to_string(),
            capacity: self.capacity(),
            inventory,
        });
        tracing::info!(%advertise, children = self.children.len(), "link up: sending hello");
        let _ = out.send(hello);
        self.link = Some(Link {
            out,
            welcomed: false,
        });
    }

    fn link_down(&mut self, unsent: Vec<MasterToLan>) {
        if self.link.take().is_some() {
            tracing::warn!("link to the lan manager is down; children keep running");
        }
        // Unsent reports are older than any kept since, so they go first.
        let mut reports: Vec<MasterToLan> = unsent
            .into_iter()
            .filter(|m| {
                matches!(
                    m,
                    MasterToLan::Down { .. }
                        | MasterToLan::Spawned { .. }
                        | MasterToLan::SpawnFailed { .. }
                )
            })
            .collect();
        reports.append(&mut self.reports);
        self.reports = reports;
        self.open.clear();
        let claims: Vec<Ports> = self.claims.drain().map(|(_, p)| p).collect();
        for ports in claims {
            self.release_ports(&ports);
        }
        for (_, reply) in self.lookups.drain() {
            let _ = reply.send(LocalReply::Location { location: None });
        }
        self.last_capacity = None;
        self.sent_free = None;
    }

    fn lan_message(&mut self, msg: LanToMaster) {
        self.last_heard = Instant::now();
        match msg {
            LanToMaster::Welcome {
                heartbeat_ms,
                fence_ms,
                ..
            } => {
                tracing::info!(heartbeat_ms, ?fence_ms, "welcomed by the lan manager");
                if let Some(why) = self.refused.take() {
                    tracing::info!("accepted again after: {why}");
                }
                self.fence = fence_ms.map(Duration::from_millis);
                if self.fenced {
                    tracing::info!("fencing over: the lan manager answers again");
                    self.fenced = false;
                }
                if let Some(fence) = self.fence {
                    self.arm_fence(fence);
                }
                if let Some(link) = &mut self.link {
                    link.welcomed = true;
                    let queued = std::mem::take(&mut self.reports);
                    for msg in queued {
                        self.send_report(msg);
                    }
                }
                self.last_capacity = Some(self.capacity_key());
                // The hello carried the capacity of this moment.
                self.sent_free = Some(self.free());
            }
            LanToMaster::Needs { needs } => {
                self.open = needs
                    .into_iter()
                    .map(|n| (n.instancename.clone(), n))
                    .collect();
                // A snapshot replaces what we knew: claims on needs it no longer lists are moot.
                let moot: Vec<String> = self
                    .claims
                    .keys()
                    .filter(|k| !self.open.contains_key(*k))
                    .cloned()
                    .collect();
                for name in moot {
                    self.drop_claim(&name);
                }
                self.claim_open_needs();
                self.capacity_changed();
            }
            LanToMaster::NeedOpen { need } => {
                let name = need.instancename.clone();
                self.open.insert(name.clone(), need);
                self.try_claim(&name, &BTreeSet::new());
                self.capacity_changed();
            }
            LanToMaster::NeedTaken { instancename } => {
                self.open.remove(&instancename);
                self.drop_claim(&instancename);
            }
            LanToMaster::ClaimRefused {
                instancename,
                reason,
            } => {
                tracing::debug!(instance = %instancename, %reason, "claim refused");
                self.open.remove(&instancename);
                self.drop_claim(&instancename);
            }
            LanToMaster::Grant {
                need, generation, ..
            } => self.grant(need, generation),
            LanToMaster::Running {
                instancename,
                generation,
            } => match self.children.get_mut(&instancename) {
                Some(c) if c.generation == generation && c.stop.is_none() => {
                    c.state = ChildState::Running;
                    let n = self.quick_deaths.get(&instancename).copied().unwrap_or(0) + 1;
                    allex_protocol::log_repeated!(n, info, instance = %instancename, generation, "listed as running");
                }
                _ => {
                    tracing::debug!(instance = %instancename, generation, "running for no such child")
                }
            },
            LanToMaster::Rejected {
                instancename,
                generation,
                reason,
            } => {
                tracing::warn!(instance = %instancename, generation, %reason, "port check failed; stopping");
                self.order_stop(&instancename, generation);
            }
            LanToMaster::Stop {
                instancename,
                generation,
                reason,
            } => {
                tracing::info!(instance = %instancename, generation, %reason, "stop ordered");
                self.order_stop(&instancename, generation);
            }
            LanToMaster::LookupResult { id, location } => {
                if let Some(reply) = self.lookups.remove(&id) {
                    let _ = reply.send(LocalReply::Location { location });
                }
            }
            LanToMaster::Heartbeat { .. } => {}
            LanToMaster::Error { code, message } if !self.welcomed() => {
                // The link logs the refusal; status shows it until a welcome.
                self.refused = Some(format!("{code}: {message}"));
            }
            LanToMaster::Error { code, message } => {
                tracing::warn!(%code, %message, "the lan manager refused a message");
            }
        }
    }

    fn drop_claim(&mut self, instance: &str) {
        if let Some(ports) = self.claims.remove(instance) {
            self.release_ports(&ports);
        }
    }

    /// Claims an open need if this master can serve it, holding its ports
    /// meanwhile; returns the protocol whose range ran out, if one did.
    fn try_claim(&mut self, instance: &str, blocked: &BTreeSet<Protocol>) -> Option<Protocol> {
        if self.shutting_down || !self.welcomed() {
            return None;
        }
        if self.claims.contains_key(instance) || self.children.contains_key(instance) {
            return None;
        }
        if self.children.len() + self.claims.len() >= self.max_children {
            if !self.fd_exhausted {
                self.fd_exhausted = true;
                tracing::warn!(
                    limit = self.fdlimit,
                    children = self.children.len(),
                    "descriptor limit reached: claiming no more needs until a child ends"
                );
            }
            return None;
        }
        let need = self.open.get(instance)?;
        if !self.cfg.services.contains_key(&need.modulename) || need.validate().is_err() {
            return None;
        }
        if let Some(addr) = self.advertise {
            if !need.allows(addr) {
                return None;
            }
        }
        if let Some((_, until)) = self.spawn_failures.get(instance) {
            if Instant::now() < *until {
                return None;
            }
        }
        let protocols = need.protocols();
        if protocols.iter().any(|p| blocked.contains(p)) {
            return None;
        }
        match self.ports.reserve(&protocols) {
            Ok(ports) => {
                for p in &protocols {
                    if self.exhausted.remove(p) {
                        tracing::info!("{p} ports are free again");
                    }
                }
                self.claims.insert(instance.to_string(), ports);
                self.send(MasterToLan::Claim {
                    instancename: instance.to_string(),
                });
                None
            }
            Err(e) => {
                self.note_exhausted(&e);
                let PortError::Exhausted { protocol, .. } = e;
                Some(protocol)
            }
        }
    }

    fn note_exhausted(&mut self, e: &PortError) {
        let PortError::Exhausted { protocol, .. } = e;
        if self.exhausted.insert(*protocol) {
            tracing::warn!(error = %e, "not claiming needs that want {protocol} ports until one is free");
        }
        // Ports taken by other processes come back without telling us, so
        // look again now and then; one timer at a time, never a spin.
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(EXHAUSTED_RETRY).await;
                let _ = events.send(Event::RetryClaims);
            });
        }
    }

    fn release_ports(&mut self, ports: &Ports) {
        self.ports.release(ports);
        let mut freed = false;
        for (p, _) in ports.iter() {
            if self.exhausted.remove(&p) {
                tracing::info!("{p} ports are free again");
                freed = true;
            }
        }
        if freed {
            self.claim_open_needs();
        }
    }

    /// One pass over the open needs; once a protocol runs out in this pass,
    /// needs that want it are skipped instead of probing the range again.
    fn claim_open_needs(&mut self) {
        let names: Vec<String> = self.open.keys().cloned().collect();
        let mut blocked = BTreeSet::new();
        for name in names {
            if let Some(p) = self.try_claim(&name, &blocked) {
                blocked.insert(p);
            }
        }
    }

    fn capacity_key(&self) -> (BTreeSet<Protocol>, [bool; 3]) {
        let f = self.free();
        (self.exhausted.clone(), [f.tcp == 0, f.http == 0, f.ws == 0])
    }

    /// Tells the lan manager about free ports: at once when exhaustion starts
    /// or ends (it changes what we can claim), otherwise coalesced to one
    /// report per [`CAPACITY_REPORT_DELAY`], so a burst of spawns costs one
    /// message and an idle master none.
    fn capacity_changed(&mut self) {
        if !self.welcomed() {
            return;
        }
        if self.last_capacity.as_ref() != Some(&self.capacity_key()) {
            self.send_capacity();
        } else if self.sent_free != Some(self.free()) && !self.capacity_report_armed {
            self.capacity_report_armed = true;
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CAPACITY_REPORT_DELAY).await;
                let _ = events.send(Event::ReportCapacity);
            });
        }
    }

    fn send_capacity(&mut self) {
        self.last_capacity = Some(self.capacity_key());
        let cap = self.capacity();
        self.sent_free = Some(cap.free);
        self.send(MasterToLan::Capacity(cap));
    }

    /// What `allexmaster status` shows.
    pub fn status(&self) -> MasterStatus {
        let mut children: Vec<ChildStatus> = self
            .children
            .iter()
            .filter_map(|(name, c)| Some((name, c, c.pid()?)))
            .map(|(name, c, pid)| ChildStatus {
                instancename: name.clone(),
                modulename: c.module.clone(),
                pid,
                ports: c.ports,
                state: c.state,
                ready: c.ready,
                uptime_ms: u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                generation: c.generation,
            })
            .collect();
        children.sort_by(|a, b| a.instancename.cmp(&b.instancename));
        let free = self.free();
        // A range whose every port our children hold is exhausted too, even
        // before a reservation has failed on it.
        let exhausted = Protocol::ALL
            .into_iter()
            .filter(|p| self.exhausted.contains(p) || free.get(*p) == 0)
            .collect();
        MasterStatus {
            master: self.name.clone(),
            pid: std::process::id(),
            advertiseaddress: self.advertise.map(|a| a.to_string()),
            connected: self.welcomed(),
            refused: self.refused.clone(),
            fenced: self.fenced,
            fdlimit: self.fdlimit,
            fd_exhausted: self.children.len() + self.claims.len() >= self.max_children,
            children,
            free,
            exhausted,
        }
    }

    fn shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!(
            children = self.children.len(),
            "shutting down: stopping every child"
        );
        // Said first, so the lan manager takes the downs that follow for
        // what they are: our own stops, not a crash loop.
        self.send(MasterToLan::Leaving);
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            self.stop_child(&name, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allex_protocol::lan::ErrorCode;
    use allex_protocol::PROTOCOL_VERSION;

    fn config() -> MasterConfig {
        let text = r#"{
            "lanmanageraddress": "127.0.0.1",
            "portrangestart": { "tcp": 41000, "http": 41100, "ws": 41200 },
            "portrangesize": 4,
            "services": { "svc": { "command": "/nonexistent/allex-test" } }
        }"#;
        MasterConfig::parse(std::path::Path::new("t.json"), text).unwrap()
    }

    fn state() -> (
        State,
        UnboundedReceiver<Event>,
        UnboundedReceiver<MasterToLan>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let ports = PortOffice::new([41000, 41100, 41200], 4, Box::new(|_, _| true));
        let mut st = State::new(
            config(),
            "0123456789abcdef0123".into(),
            PathBuf::from("/nonexistent/sock"),
            tx,
            Spawner::start().unwrap(),
            ports,
        );
        let (out, lan) = tokio::sync::mpsc::unbounded_channel();
        st.handle(Event::LinkUp {
            local: IpAddr::from([127, 0, 0, 1]),
            out,
        });
        st.handle(Event::LinkMessage(LanToMaster::Welcome {
            version: PROTOCOL_VERSION,
            grace_ms: 1000,
            heartbeat_ms: 1000,
            fence_ms: None,
        }));
        (st, rx, lan)
    }

    // Pids above the kernel's largest pid_max (2^22), so no signal can reach a real process.
    fn ready(st: &mut State, pid: u32) -> oneshot::Receiver<LocalReply> {
        let (reply, rx) = oneshot::channel();
        st.handle(Event::Local {
            req: LocalRequest::Ready,
            peer_pid: Some(pid),
            reply,
        });
        rx
    }

    #[tokio::test]
    async fn a_ready_that_outruns_the_spawn_report_is_answered_once_the_pid_is_known() {
        let (mut st, _events, _lan) = state();
        st.handle(Event::LinkMessage(LanToMaster::Grant {
            need: Need::new("svc", "Early"),
            generation: 5,
            deadline_ms: 1000,
        }));
        let mut early = ready(&mut st, 4_300_001);
        assert!(
            early.try_recv().is_err(),
            "answered before the pid was known"
        );
        st.handle(Event::Spawned {
            instance: "Early".into(),
            generation: 5,
            result: Ok(Started {
                pid: 4_300_001,
                handle: None,
            }),
        });
        assert_eq!(early.try_recv().unwrap(), LocalReply::Ack);
        let s = st.status();
        assert!(s.children[0].ready);
        assert_eq!(s.children[0].state, ChildState::Ready);
        // With nothing left spawning, a stranger is refused at once.
        let mut stranger = ready(&mut st, 4_300_002);
        assert!(matches!(
            stranger.try_recv().unwrap(),
            LocalReply::Error {
                code: ErrorCode::NotYours,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_stale_exit_report_changes_nothing() {
        let (mut st, _events, mut lan) = state();
        st.handle(Event::LinkMessage(LanToMaster::Grant {
            need: Need::new("svc", "Solo"),
            generation: 2,
            deadline_ms: 1000,
        }));
        st.handle(Event::Spawned {
            instance: "Solo".into(),
            generation: 2,
            result: Ok(Started {
                pid: 4_300_010,
                handle: None,
            }),
        });
        // An exit of another generation or pid is not this child's.
        for (generation, pid) in [(1, 4_300_010), (2, 4_300_011)] {
            st.handle(Event::Exited {
                instance: "Solo".into(),
                generation,
                pid,
                exit: ExitInfo::default(),
            });
        }
        assert_eq!(st.status().children.len(), 1);
        let sent: Vec<MasterToLan> = std::iter::from_fn(|| lan.try_recv().ok()).collect();
        assert!(
            sent.iter().all(|m| !matches!(m, MasterToLan::Down { .. })),
            "{sent:?}"
        );
        st.handle(Event::Exited {
            instance: "Solo".into(),
            generation: 2,
            pid: 4_300_010,
            exit: ExitInfo {
                code: Some(0),
                signal: None,
            },
        });
        assert!(st.status().children.is_empty());
        assert!(matches!(
            lan.try_recv().unwrap(),
            MasterToLan::Down {
                generation: 2,
                ordered: false,
                ..
            }
        ));
        // Right behind the `down`, the master claims the need again: the child's
        // ports went back to the office and the claim holds one of them.
        assert_eq!(
            lan.try_recv().unwrap(),
            MasterToLan::Claim {
                instancename: "Solo".into()
            }
        );
        assert_eq!(st.status().free.tcp, 3);
    }
}
