//! The master's core: children, ports, claims and the link session, as a
//! state machine that does no I/O.
//!
//! [`State::handle`] takes one [`Input`] and the time it is handled at and
//! returns the [`Effect`]s to carry out; the driver (`driver.rs`) owns the
//! link, the socket's reply channels, the spawner, the children's pidfds
//! and the timers. The one call out is the port office's probe (can this
//! port be bound?), injected so the simulator can answer it.

mod capacity;
mod children;
mod claims;
mod effect;
mod health;
mod input;
mod local;
mod reload;
mod session;
mod status;

pub use effect::{Effect, ProbeJob, ReqId, SpawnPlan};
pub use input::{Input, ProbeResult, Timer};

use crate::ports::{PortError, PortOffice};
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{
    Capacity, ChildState, ChildStatus, InventoryEntry, LanToMaster, LocalReply, MasterConfig,
    MasterHello, MasterStatus, MasterToLan, Need, PerProtocol, PortCounts, Ports, Protocol,
    PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, BTreeSet};

/// Maps with a fixed hasher, so the same inputs give the same
/// iteration order (and so the same effects, in the same order) in every
/// run: the deterministic simulator's byte-identical traces rely on it.
/// Keys are need names and the names of token-checked peers, not floods
/// chosen by an attacker, so a randomly keyed hasher would buy nothing;
/// foldhash rather than SipHash, since a tick of health checks alone looks
/// up hundreds of names.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, Fixed>;
/// The fixed hasher of [`HashMap`].
pub(crate) type Fixed = foldhash::fast::FixedState;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a child's lookup waits for the lan manager's answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

struct Child {
    module: String,
    /// The need it was granted for, to claim it again at once if it dies.
    need: Need,
    generation: Generation,
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
    /// Its health check and how it stands, when it has one.
    health: Option<health::Health>,
    /// Its entry says `sockets: inherit`: `spawned` waits for its `ready`.
    inherit: bool,
    /// `spawned` was sent for it.
    reported: bool,
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

    /// Milliseconds since it started (since the grant while spawning).
    fn uptime_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

/// The current link to the lan manager.
struct Link {
    welcomed: bool,
}

/// Everything the master holds; owned by the state task.
pub struct State {
    cfg: MasterConfig,
    name: String,
    socket: PathBuf,
    /// This master's pid, shown in hello and status.
    pid: u32,
    ports: PortOffice,
    /// The time of the input being handled.
    now: Instant,
    /// Effects of the input being handled, in order.
    fx: Vec<Effect>,
    children: HashMap<InstanceName, Child>,
    by_pid: HashMap<u32, InstanceName>,
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
    /// Children were stopped by fencing; cleared by the next word from the lan manager.
    fenced: bool,
    /// The descriptor limit in force, and how many children fit under it.
    fdlimit: u64,
    max_children: usize,
    /// The cgroup directory the children's groups are in, for the status.
    cgroup: Option<String>,
    /// The origin of the health checks' grid: a probe of interval I is due
    /// at a multiple of I from here, so children of one interval share ticks.
    checks_epoch: Instant,
    /// Probes due, by tick: one timer per tick, whatever the number of children.
    checks_due: BTreeMap<Instant, Vec<(InstanceName, u32)>>,
    /// The limit was reached (logged once per episode).
    fd_exhausted: bool,
    /// When the next log sweep is due, if one is armed.
    sweep_at: Option<Instant>,
    /// Quick deaths in a row per instance, to summarise crash loops in the log.
    quick_deaths: HashMap<InstanceName, u32>,
    open: BTreeMap<InstanceName, Need>,
    claims: HashMap<InstanceName, Ports>,
    lookups: HashMap<u64, ReqId>,
    next_lookup: u64,
    exhausted: BTreeSet<Protocol>,
    last_capacity: Option<(BTreeSet<Protocol>, PerProtocol<bool>)>,
    /// Free-port counts the lan manager was last told.
    sent_free: Option<PortCounts>,
    /// A coalesced capacity report is due.
    capacity_report_armed: bool,
    retry_scheduled: bool,
    /// Ports (and the sockets the driver holds on them) kept for needs of
    /// `sockets: inherit` entries whose child died: the need stays on this
    /// master, so its replacement gets the same sockets.
    kept: HashMap<InstanceName, Ports>,
    /// Open needs this master leaves to others because of the port they pin, and why.
    pin_refusals: BTreeMap<InstanceName, String>,
    /// `ready` from pids not known yet: a child can speak before the
    /// spawner's report of its pid has reached this task.
    early_ready: Vec<(u32, Option<u32>, ReqId)>,
    /// Instances whose spawn failed: failures in a row, and not claimed before when.
    spawn_failures: HashMap<InstanceName, (u32, Instant)>,
    shutting_down: bool,
}

impl State {
    /// A state with no children, named `name`, started at `now`.
    pub fn new(
        cfg: MasterConfig,
        name: String,
        secret: String,
        socket: PathBuf,
        pid: u32,
        ports: PortOffice,
        now: Instant,
    ) -> State {
        State {
            name,
            advertise: cfg.advertiseaddress,
            cfg,
            socket,
            pid,
            ports,
            now,
            fx: Vec::new(),
            children: HashMap::default(),
            by_pid: HashMap::default(),
            link: None,
            secret,
            reports: Vec::new(),
            refused: None,
            fence: None,
            last_heard: now,
            fence_armed: false,
            fenced: false,
            fdlimit: u64::MAX,
            max_children: usize::MAX,
            cgroup: None,
            checks_epoch: now,
            checks_due: BTreeMap::new(),
            fd_exhausted: false,
            sweep_at: None,
            quick_deaths: HashMap::default(),
            open: BTreeMap::new(),
            claims: HashMap::default(),
            lookups: HashMap::default(),
            next_lookup: 1,
            exhausted: BTreeSet::new(),
            last_capacity: None,
            sent_free: None,
            capacity_report_armed: false,
            retry_scheduled: false,
            pin_refusals: BTreeMap::new(),
            kept: HashMap::default(),
            early_ready: Vec::new(),
            spawn_failures: HashMap::default(),
            shutting_down: false,
        }
    }

    /// The runtime directory (children's logs live under it).
    pub fn runtimedir(&self) -> &std::path::Path {
        &self.cfg.runtimedirectory
    }

    /// Sets the descriptor limit the children must fit under.
    pub fn with_fdlimit(mut self, limit: u64) -> State {
        self.fdlimit = limit;
        self.max_children = crate::fdlimit::max_children(limit);
        self
    }

    /// Names the cgroup directory the driver starts children in (status only).
    pub fn with_cgroup(mut self, dir: Option<String>) -> State {
        self.cgroup = dir;
        self
    }

    /// The effects to start with: a sweep of logs left by an earlier start.
    pub fn start(&mut self) -> Vec<Effect> {
        self.arm_sweep(Duration::ZERO);
        std::mem::take(&mut self.fx)
    }

    /// Shutting down and every child is gone: the driver may end.
    pub fn finished(&self) -> bool {
        self.shutting_down && self.children.is_empty()
    }

    /// One child's generation and pid (`None` while spawning), if it is here.
    pub fn child(&self, instance: &str) -> Option<(Generation, Option<u32>)> {
        self.children.get(instance).map(|c| (c.generation, c.pid()))
    }

    /// The pids of the children started and not yet reaped.
    pub fn live_pids(&self) -> Vec<u32> {
        self.children.values().filter_map(Child::pid).collect()
    }

    /// Handles one input at `now`; returns what the driver must do, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::LinkUp { local } => self.link_up(local),
            Input::LinkMessage(msg) => self.lan_message(msg),
            Input::LinkDown { unsent } => self.link_down(unsent),
            Input::Unsent(msg) => {
                if is_report(&msg) {
                    self.reports.push(msg);
                }
            }
            Input::Local {
                req,
                request,
                peer_pid,
                peer_group,
            } => self.local(req, request, peer_pid, peer_group),
            Input::Spawned {
                instance,
                generation,
                result,
            } => self.spawned(instance, generation, result),
            Input::Exited {
                instance,
                generation,
                pid,
                exit,
            } => self.exited(instance, generation, pid, exit),
            Input::Timer(timer) => self.on_timer(timer),
            Input::LogsSwept { deleted, next } => {
                if deleted > 0 {
                    tracing::info!(deleted, "deleted logs of instances that no longer run here");
                }
                if let Some(next) = next {
                    self.arm_sweep(next);
                }
            }
            Input::Shutdown => self.shutdown(),
            Input::ConfigReloaded(result) => self.on_config_reloaded(result),
            Input::ProbesDone(results) => {
                for r in results {
                    self.on_probe_done(r.instance, r.pid, r.result);
                }
            }
        }
        std::mem::take(&mut self.fx)
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::StopTimeout { instance, pid } => {
                if let Some(c) = self.children.get(&instance) {
                    if c.pid() == Some(pid) {
                        tracing::warn!(%instance, pid, "child ignored its stop signal; sending SIGKILL");
                        self.signal(pid, libc::SIGKILL);
                    }
                }
            }
            Timer::LookupTimeout { id } => {
                if let Some(req) = self.lookups.remove(&id) {
                    self.reply(req, LocalReply::Location { location: None });
                }
            }
            Timer::RetryClaims => {
                self.retry_scheduled = false;
                self.claim_open_needs();
                self.capacity_changed();
            }
            Timer::ReportCapacity => {
                self.capacity_report_armed = false;
                if self.welcomed() && self.sent_free != Some(self.free()) {
                    self.send_capacity();
                }
            }
            Timer::FenceCheck => self.fence_check(),
            Timer::SweepLogs => self.sweep_logs(),
            Timer::HealthTick => self.on_health_tick(),
        }
    }

    /// Delivers `timer` after `delay`.
    pub(super) fn after(&mut self, delay: Duration, timer: Timer) {
        let at = self.now + delay;
        self.fx.push(Effect::Timer { at, timer });
    }

    pub(super) fn reply(&mut self, req: ReqId, reply: LocalReply) {
        self.fx.push(Effect::Reply { req, reply });
    }

    pub(super) fn signal(&mut self, pid: u32, signal: i32) {
        self.fx.push(Effect::Signal { pid, signal });
    }

    /// Arms a log sweep `after` from now, unless one is due sooner.
    pub(super) fn arm_sweep(&mut self, after: Duration) {
        let at = self.now + after;
        if self.sweep_at.is_some_and(|t| t <= at) {
            return;
        }
        self.sweep_at = Some(at);
        self.after(after, Timer::SweepLogs);
    }

    /// Asks for the expired logs of instances not running here to go.
    fn sweep_logs(&mut self) {
        match self.sweep_at {
            Some(t) if self.now >= t => self.sweep_at = None,
            _ => return,
        }
        self.fx.push(Effect::SweepLogs {
            runtimedir: self.cfg.runtimedirectory.clone(),
            live: self.children.keys().cloned().collect(),
            keep: Duration::from_millis(self.cfg.logretentionms),
            max_bytes: self.cfg.logretentionbytes,
        });
    }

    pub(super) fn shutdown(&mut self) {
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
        let names: Vec<InstanceName> = self.children.keys().cloned().collect();
        for name in names {
            self.stop_child(&name, true);
        }
    }
}

/// Whether a message is a report about a child, which must reach the lan manager.
fn is_report(msg: &MasterToLan) -> bool {
    matches!(
        msg,
        MasterToLan::Down { .. } | MasterToLan::Spawned { .. } | MasterToLan::SpawnFailed { .. }
    )
}

#[cfg(test)]
mod tests;
