//! The simulated world: one lan manager core, M master cores, the links
//! between them, the children, the disk and the clock, in one thread.
//!
//! Everything that happens is an [`Ev`] in one queue ordered by simulated
//! time and then by the order it was queued, so a seed fixes the whole run.
//! The cores are the real ones; this file plays their drivers: it executes
//! their effects against the simulated network, processes and disk and
//! feeds the results back as inputs.

use super::ops::{Op, TimedOp};
use super::rng::Rng;
use allex_lanmanager::core::{self as lan, Holding};
use allex_lanmanager::needs_store::{replay_journal, RunningHint, GENERATION_BLOCK};
use allex_lanmanager::Settings;
use allex_master::core as mcore;
use allex_master::ports::PortOffice;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{
    ExitInfo, InventoryEntry, LanToMaster, MasterConfig, MasterHello, MasterToLan, Need, Ports,
    Protocol, PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Simulated microseconds since the start.
type Us = u64;

const MS: Us = 1_000;
/// The lan manager's heartbeat; three silent ones drop a link.
const HEARTBEAT: Us = 250 * MS;
const LINK_TIMEOUT: Us = 3 * HEARTBEAT;
const GRACE_MS: u64 = 3_000;
const FENCE_MS: u64 = 1_000;
const STOP_TIMEOUT_MS: u64 = 300;
/// A record whose process died this long ago should be gone by now: the
/// longest path is a partitioned master (link timeout, then the grace).
const DEAD_RECORD_BOUND: Us = 6_000 * MS;
/// After a frozen master thaws it fences and stops what it ran; until then
/// its children may run beside replacements (a frozen process cannot act).
const THAW_EXCUSE: Us = (FENCE_MS + STOP_TIMEOUT_MS + 500) * MS;
/// How long the world runs without new faults before convergence is checked.
const QUIESCE: Us = 20_000 * MS;

/// What the simulator is asked to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed.
    pub seed: u64,
    /// Events in the fault phase (when the faults are generated).
    pub steps: u64,
    /// Masters.
    pub masters: usize,
    /// Needs.
    pub needs: usize,
}

/// A broken promise, with when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated ms.
    pub at_ms: u64,
    /// Which invariant, in a few words (used to compare shrunk runs).
    pub kind: &'static str,
    /// The details.
    pub detail: String,
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Events handled.
    pub events: u64,
    /// Simulated ms at the end.
    pub sim_ms: u64,
    /// A hash of every event handled and its time: equal runs, equal digest.
    pub digest: u64,
    /// The faults applied, in order.
    pub ops: Vec<TimedOp>,
    /// When the fault phase ended, in simulated ms.
    pub fault_end_ms: u64,
    /// The first broken promise, if any.
    pub violation: Option<Violation>,
    /// The last events, when asked for.
    pub tail: Vec<String>,
}

#[derive(Debug)]
enum Ev {
    Lan { inc: u64, input: lan::Input },
    Master { m: usize, input: mcore::Input },
    ToLan { conn: u64, msg: MasterToLan },
    ToPeer { conn: u64, msg: LanToMaster },
    FinAtPeer { conn: u64 },
    FinAtLan { conn: u64 },
    Connect { m: usize },
    Beat { conn: u64, lan_side: bool },
    DiskDone { inc: u64, q: usize },
    Op(usize),
    LanRestart { inc: u64 },
    Listen { pid: u32 },
    Die { pid: u32, exit: ExitInfo },
    CheckPoll { inc: u64, check: PortCheck },
    Liveness { inc: u64, probe: Box<LivenessProbe> },
}

impl Ev {
    fn kind(&self) -> u64 {
        match self {
            Ev::Lan { .. } => 1,
            Ev::Master { m, .. } => 2 | ((*m as u64) << 8),
            Ev::ToLan { conn, .. } => 3 | (conn << 8),
            Ev::ToPeer { conn, .. } => 4 | (conn << 8),
            Ev::FinAtPeer { .. } => 5,
            Ev::FinAtLan { .. } => 6,
            Ev::Connect { .. } => 7,
            Ev::Beat { .. } => 8,
            Ev::DiskDone { .. } => 9,
            Ev::Op(i) => 10 | ((*i as u64) << 8),
            Ev::LanRestart { .. } => 11,
            Ev::Listen { pid } => 12 | (u64::from(*pid) << 8),
            Ev::Die { pid, .. } => 13 | (u64::from(*pid) << 8),
            Ev::CheckPoll { .. } => 14,
            Ev::Liveness { .. } => 15,
        }
    }
}

/// The name of need `i`: `n` and digits, which always pass the name check.
fn need_name(i: usize) -> InstanceName {
    InstanceName::new(format!("n{i}")).unwrap_or_else(|_| allex_protocol::instance!("n"))
}

#[derive(Debug)]
struct PortCheck {
    instance: InstanceName,
    generation: Generation,
    ip: Option<IpAddr>,
    ports: Ports,
    deadline: Us,
}

#[derive(Debug)]
struct LivenessProbe {
    master: String,
    epoch: u64,
    targets: Vec<lan::LivenessTarget>,
}

/// Who an event happens to: a frozen process handles nothing until it thaws.
#[derive(Clone, Copy)]
enum Target {
    Lan,
    Master(usize),
    World,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnKind {
    Real(usize),
    Impostor(usize),
    Twin(usize),
}

#[derive(Debug)]
struct Conn {
    kind: ConnKind,
    lan_inc: u64,
    lan_open: bool,
    peer_open: bool,
    hello_seen: bool,
    lan_heard: Us,
    peer_heard: Us,
    to_lan_last: Us,
    to_peer_last: Us,
    /// Its own chance (frame delays), so faults elsewhere do not shift it.
    rng: Rng,
}

struct SimMaster {
    core: mcore::State,
    /// Its own chance (reconnect jitter).
    rng: Rng,
    /// Connections it opened so far (keys each one's chance).
    conns_opened: u64,
    /// Spawns so far per instance (keys each child's chance).
    spawns: BTreeMap<InstanceName, u64>,
    name: String,
    secret: String,
    ip: IpAddr,
    conn: Option<u64>,
    frozen_until: Us,
    partition_until: Us,
    hold_until: Us,
    backoff: Us,
    /// The last time it was frozen, cut off or held.
    disturbed_at: Us,
    /// Its children may run beside replacements until then (a legitimate
    /// takeover of its name while it was away).
    excused_until: Us,
    /// A twin hello was sent at this time and not answered yet.
    twin_at: Option<Us>,
    /// Last hello it sent, for impostors to copy.
    capacity: Option<allex_protocol::Capacity>,
}

#[derive(Debug)]
struct Proc {
    master: usize,
    instance: InstanceName,
    generation: Generation,
    ip: IpAddr,
    ports: Ports,
    alive: bool,
    listening: bool,
    ignores_term: bool,
    /// From when it hangs (as if SIGSTOPped): alive, its port still bound,
    /// but deaf to its health check and to every signal but SIGKILL.
    hangs_at: Option<Us>,
    died_at: Us,
    /// When its parent learns its pid: its exit cannot be seen before.
    known_at: Us,
    /// Its own chance (how fast it dies when signalled).
    rng: Rng,
}

#[derive(Default)]
struct Disk {
    /// The operator's `needs`, never written by the lan manager.
    needs: Vec<Need>,
    /// `needs.runtime`: what admin changes wrote.
    runtime: Vec<allex_protocol::layers::RuntimeEntry>,
    masters: BTreeMap<String, String>,
    generation: u64,
    running: HashMap<InstanceName, RunningHint>,
    journal: String,
    /// The two writers: the store's fsynced files, and the running journal.
    queue: [VecDeque<lan::Write>; 2],
    busy: [bool; 2],
    slow_until: Us,
    full_until: Us,
}

struct LanNode {
    core: Option<lan::State>,
    inc: u64,
    frozen_until: Us,
}

/// The whole simulated world.
pub struct World {
    cfg: Config,
    settings: Arc<Settings>,
    /// Chance in the environment (delays, children's behaviour).
    rng: Rng,
    /// Chance in the faults.
    op_rng: Rng,
    base: Instant,
    now: Us,
    seq: u64,
    queue: BTreeMap<(Us, u64), Ev>,
    events: u64,
    digest: u64,
    lan: LanNode,
    masters: Vec<SimMaster>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    procs: BTreeMap<u32, Proc>,
    listeners: BTreeMap<(IpAddr, u16), u32>,
    next_pid: u32,
    disk: Disk,
    crash_loop: BTreeMap<InstanceName, u32>,
    granted: BTreeSet<Generation>,
    ops: Vec<TimedOp>,
    /// Replaying a fixed list of faults (shrinking) rather than drawing them.
    replay: bool,
    fault_end: Option<Us>,
    quiet: bool,
    violation: Option<Violation>,
    tail: Option<(usize, VecDeque<String>)>,
}

/// The simulated services' http check interval: often enough that a hung
/// service is replaced within a run, rarely enough not to flood the trace.
const CHECK_INTERVAL_MS: u64 = 1_000;

fn master_config(ip: IpAddr) -> MasterConfig {
    let text = format!(
        r#"{{
        "lanmanageraddress": "10.0.0.1",
        "advertiseaddress": "{ip}",
        "portrangestart": {{ "tcp": 20000, "http": 21000, "ws": 22000 }},
        "portrangesize": 32,
        "services": {{ "svc": {{ "command": "/nonexistent/svc", "stoptimeoutms": {STOP_TIMEOUT_MS},
            "check": {{ "type": "http", "intervalms": {CHECK_INTERVAL_MS}, "timeoutms": 200, "failures": 2 }} }} }}
    }}"#
    );
    // The text is fixed above; a parse error is a bug of this file.
    MasterConfig::parse(std::path::Path::new("dst.json"), &text)
        .unwrap_or_else(|e| panic!("the simulator's master config does not parse: {e}"))
}

fn lan_settings() -> Settings {
    let ms = Duration::from_millis;
    Settings {
        grace: ms(GRACE_MS),
        settle: ms(2_000),
        claim_timeout: ms(1_000),
        check_timeout: ms(500),
        backoff_base: ms(50),
        backoff_cap: ms(2_000),
        stable: ms(2_000),
        heartbeat: Duration::from_micros(HEARTBEAT),
        hello_timeout: ms(1_000),
        fence: Some(ms(FENCE_MS)),
        ..Settings::default()
    }
}

impl World {
    /// A world for `cfg`; `plan` replays given faults instead of drawing them.
    pub fn new(cfg: Config, plan: Option<(&[TimedOp], u64)>, tail: usize) -> World {
        let base = Instant::now();
        let mut masters = Vec::new();
        for m in 0..cfg.masters {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + m as u8));
            let ports = PortOffice::new(
                allex_protocol::PerProtocol {
                    tcp: 20000,
                    http: 21000,
                    ws: 22000,
                },
                32,
                Box::new(|_, _| true),
            );
            let name = format!("m{m}");
            let core = mcore::State::new(
                master_config(ip),
                name.clone(),
                format!("secret-of-{name}-0123456789"),
                PathBuf::from("/nonexistent/dst.sock"),
                1000 + m as u32,
                ports,
                base,
            );
            masters.push(SimMaster {
                core,
                rng: Rng::new(cfg.seed, key(&[3, m as u64])),
                conns_opened: 0,
                spawns: BTreeMap::new(),
                secret: format!("secret-of-{name}-0123456789"),
                name,
                ip,
                conn: None,
                frozen_until: 0,
                partition_until: 0,
                hold_until: 0,
                backoff: 50 * MS,
                disturbed_at: 0,
                excused_until: 0,
                twin_at: None,
                capacity: None,
            });
        }
        let needs = (0..cfg.needs)
            .map(|i| {
                let mut n = Need::new("svc", need_name(i));
                n.protocols = Some(if i % 3 == 2 {
                    vec![Protocol::Tcp, Protocol::Http]
                } else {
                    vec![Protocol::Tcp]
                });
                n
            })
            .collect();
        let (ops, fault_end, replay) = match plan {
            Some((ops, end_ms)) => (ops.to_vec(), Some(end_ms * MS), true),
            None => (Vec::new(), None, false),
        };
        let mut w = World {
            rng: Rng::new(cfg.seed, 1),
            op_rng: Rng::new(cfg.seed, 2),
            settings: Arc::new(lan_settings()),
            cfg,
            base,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            events: 0,
            digest: 0xcbf2_9ce4_8422_2325,
            lan: LanNode {
                core: None,
                inc: 0,
                frozen_until: 0,
            },
            masters,
            conns: BTreeMap::new(),
            next_conn: 1,
            procs: BTreeMap::new(),
            listeners: BTreeMap::new(),
            next_pid: 10_000,
            disk: Disk {
                needs,
                runtime: Vec::new(),
                ..Disk::default()
            },
            crash_loop: BTreeMap::new(),
            granted: BTreeSet::new(),
            ops,
            replay,
            fault_end,
            quiet: false,
            violation: None,
            tail: (tail > 0).then(|| (tail, VecDeque::new())),
        };
        w.start_lan();
        for m in 0..w.masters.len() {
            let fx = w.masters[m].core.start();
            w.master_effects(m, fx);
            let at = w.rng.range(0, 20) * MS;
            w.push(at, Ev::Connect { m });
        }
        if w.replay {
            for i in 0..w.ops.len() {
                let at = w.ops[i].at_ms * MS;
                w.push(at, Ev::Op(i));
            }
        } else {
            w.schedule_next_op();
        }
        w
    }

    /// Runs to the end: the fault phase, then quiet until convergence is checked.
    pub fn run(mut self) -> Outcome {
        while let Some(((at, seq), ev)) = self.queue.pop_first() {
            if self.violation.is_some() {
                break;
            }
            self.now = at;
            if let Some(until) = self.frozen_until(self.target(&ev)) {
                // A stopped process handles it when it thaws, in the same order.
                self.queue.insert((until, seq), ev);
                continue;
            }
            self.events += 1;
            self.digest =
                (self.digest ^ at ^ ev.kind().rotate_left(32)).wrapping_mul(0x100_0000_01b3);
            let chatter = matches!(
                ev,
                Ev::Beat { .. }
                    | Ev::ToLan {
                        msg: MasterToLan::Heartbeat { .. },
                        ..
                    }
                    | Ev::ToPeer {
                        msg: LanToMaster::Heartbeat { .. },
                        ..
                    }
            );
            if let (Some((n, tail)), false) = (&mut self.tail, chatter) {
                if tail.len() == *n {
                    tail.pop_front();
                }
                let mut line = format!("{:>10.3}ms ", at as f64 / 1000.0);
                let _ = write!(line, "{ev:?}");
                line.truncate(400);
                tail.push_back(line);
            }
            self.handle(ev);
            self.check();
            match self.fault_end {
                None if self.events >= self.cfg.steps => self.fault_end = Some(self.now),
                _ => {}
            }
            if let Some(end) = self.fault_end {
                if !self.quiet && self.now >= end {
                    self.quiet = true;
                }
                if self.now >= end + QUIESCE {
                    self.converged();
                    break;
                }
            }
        }
        Outcome {
            events: self.events,
            sim_ms: self.now / MS,
            digest: self.digest,
            fault_end_ms: self.fault_end.unwrap_or(self.now) / MS,
            ops: self.ops,
            violation: self.violation,
            tail: self.tail.map(|(_, t)| t.into()).unwrap_or_default(),
        }
    }

    fn push(&mut self, at: Us, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    fn fail(&mut self, kind: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                at_ms: self.now / MS,
                kind,
                detail,
            });
        }
    }

    fn target(&self, ev: &Ev) -> Target {
        let conn_master = |conn: &u64| match self.conns.get(conn).map(|c| c.kind) {
            Some(ConnKind::Real(m)) => Target::Master(m),
            _ => Target::World,
        };
        match ev {
            Ev::Lan { .. }
            | Ev::ToLan { .. }
            | Ev::FinAtLan { .. }
            | Ev::DiskDone { .. }
            | Ev::CheckPoll { .. }
            | Ev::Liveness { .. } => Target::Lan,
            Ev::Beat { lan_side: true, .. } => Target::Lan,
            Ev::Beat { conn, .. } | Ev::ToPeer { conn, .. } | Ev::FinAtPeer { conn } => {
                conn_master(conn)
            }
            Ev::Master { m, .. } | Ev::Connect { m } => Target::Master(*m),
            Ev::Op(_) | Ev::LanRestart { .. } | Ev::Listen { .. } | Ev::Die { .. } => Target::World,
        }
    }

    fn frozen_until(&self, t: Target) -> Option<Us> {
        let until = match t {
            Target::Lan => self.lan.frozen_until,
            Target::Master(m) => self.masters[m].frozen_until,
            Target::World => return None,
        };
        (until > self.now).then_some(until)
    }

    fn lan_now(&self) -> lan::Now {
        lan::Now {
            at: self.base + Duration::from_micros(self.now),
            unix_ms: 1_700_000_000_000 + self.now / MS,
        }
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn us(&self, at: Instant) -> Us {
        at.saturating_duration_since(self.base).as_micros() as Us
    }

    // ----- faults -----

    fn schedule_next_op(&mut self) {
        if self.replay || self.fault_end.is_some() {
            return;
        }
        let gap = self.op_rng.range(20, 800) * MS;
        let op = Op::random(&mut self.op_rng, self.cfg.masters, self.cfg.needs);
        let at = self.now + gap;
        self.ops.push(TimedOp { at_ms: at / MS, op });
        let i = self.ops.len() - 1;
        self.push(at, Ev::Op(i));
    }

    fn apply_op(&mut self, i: usize) {
        if self.quiet {
            return;
        }
        let op = self.ops[i].op.clone();
        self.schedule_next_op();
        let now = self.now;
        match op {
            Op::CutLink(m) => {
                if let Some(conn) = self.masters[m].conn {
                    self.masters[m].disturbed_at = now;
                    self.close_lan_side(conn, false);
                    self.close_peer_side(conn, false);
                }
            }
            Op::Partition(m, ms) => {
                let s = &mut self.masters[m];
                s.partition_until = s.partition_until.max(now + ms * MS);
                s.disturbed_at = now;
            }
            Op::HoldLink(m, ms) => {
                let s = &mut self.masters[m];
                s.hold_until = s.hold_until.max(now + ms * MS);
                s.disturbed_at = now;
            }
            Op::FreezeMaster(m, ms) => {
                let s = &mut self.masters[m];
                s.frozen_until = s.frozen_until.max(now + ms * MS);
                s.disturbed_at = now;
            }
            Op::FreezeLan(ms) => {
                if self.lan.core.is_some() {
                    self.lan.frozen_until = self.lan.frozen_until.max(now + ms * MS);
                }
            }
            Op::CrashLan(ms) => self.crash_lan(ms * MS),
            Op::SlowDisk(ms) => self.disk.slow_until = self.disk.slow_until.max(now + ms * MS),
            Op::FullDisk(ms) => self.disk.full_until = self.disk.full_until.max(now + ms * MS),
            Op::KillChild(n) => {
                let live: Vec<u32> = self
                    .procs
                    .iter()
                    .filter(|(_, p)| p.alive)
                    .map(|(pid, _)| *pid)
                    .collect();
                if !live.is_empty() {
                    let pid = live[n % live.len()];
                    self.die(pid, exit_signal(9));
                }
            }
            Op::CrashLoop(n, count) => {
                *self.crash_loop.entry(need_name(n)).or_insert(0) += count;
            }
            Op::Impostor(m) => self.impostor(m),
            Op::Twin(m) => self.twin(m),
        }
    }

    fn impostor(&mut self, m: usize) {
        let name = self.masters[m].name.clone();
        // Before the name is bound, the first hello binds it: that is no impostor.
        if !self.disk.masters.contains_key(&name) {
            return;
        }
        let Some(capacity) = self.masters[m].capacity.clone() else {
            return;
        };
        let mut inventory = Vec::new();
        if let Some(core) = &self.lan.core {
            for (instance, h) in core.holdings() {
                if let Holding::Running {
                    master,
                    generation,
                    pid,
                } = h
                {
                    if master == name {
                        let ports = self.procs.get(&pid).map(|p| p.ports).unwrap_or_default();
                        inventory.push(InventoryEntry {
                            instancename: instance.clone(),
                            modulename: "svc".into(),
                            generation,
                            pid: pid + 1_000_000,
                            ports,
                        });
                    }
                }
            }
        }
        let hello = MasterHello {
            version: PROTOCOL_VERSION,
            token: None,
            master: name,
            secret: "an-impostor-guessing-the-secret".into(),
            pid: 4242,
            advertiseaddress: self.masters[m].ip.to_string(),
            capacity,
            inventory,
        };
        self.scripted(ConnKind::Impostor(m), hello);
    }

    fn twin(&mut self, m: usize) {
        let s = &self.masters[m];
        let healthy = s.conn.is_some_and(|c| {
            self.conns
                .get(&c)
                .is_some_and(|c| c.lan_open && c.peer_open)
        }) && s.frozen_until <= self.now
            && s.partition_until <= self.now
            && s.hold_until <= self.now
            && self.lan.core.is_some()
            && self.lan.frozen_until <= self.now;
        let Some(capacity) = s.capacity.clone() else {
            return;
        };
        if !healthy || s.twin_at.is_some() {
            return;
        }
        let hello = MasterHello {
            version: PROTOCOL_VERSION,
            token: None,
            master: s.name.clone(),
            secret: s.secret.clone(),
            pid: 4343,
            advertiseaddress: "10.0.1.99".into(),
            capacity,
            inventory: Vec::new(),
        };
        self.masters[m].twin_at = Some(self.now);
        self.scripted(ConnKind::Twin(m), hello);
    }

    /// A connection that says one hello and nothing else.
    fn scripted(&mut self, kind: ConnKind, hello: MasterHello) {
        if self.lan.core.is_none() {
            return;
        }
        let conn = self.open_conn(kind);
        self.send_to_lan(conn, MasterToLan::Hello(hello));
    }

    fn crash_lan(&mut self, restart_after: Us) {
        if self.lan.core.take().is_none() {
            return;
        }
        self.lan.inc += 1;
        self.lan.frozen_until = 0;
        // What the writer had not finished is lost with the process.
        self.disk.queue = Default::default();
        self.disk.busy = [false; 2];
        let conns: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.lan_open)
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.lan_open = false;
            }
            // The kernel resets the connection: the peer hears it if it can.
            self.net(conn, Ev::FinAtPeer { conn });
        }
        let inc = self.lan.inc;
        self.push(self.now + restart_after, Ev::LanRestart { inc });
    }

    fn start_lan(&mut self) {
        if self.disk.full_until > self.now {
            // The generation reservation at start fails: the supervisor retries.
            let inc = self.lan.inc;
            self.push(self.now + 100 * MS, Ev::LanRestart { inc });
            return;
        }
        let mut hints = self.disk.running.clone();
        let _ = replay_journal(&mut hints, &self.disk.journal);
        let next_generation = self.disk.generation.max(1);
        let generation_bound = next_generation.saturating_add(GENERATION_BLOCK);
        self.disk.generation = generation_bound;
        let startup = lan::Startup {
            layers: self.disk_layers(),
            hints,
            next_generation,
            generation_bound,
            identities: self.disk.masters.clone(),
        };
        let (core, fx) = lan::State::new(self.settings.clone(), startup, self.lan_now());
        self.lan.core = Some(core);
        self.lan_effects(fx);
    }

    /// The needs files as the simulated disk holds them.
    fn disk_layers(&self) -> allex_protocol::layers::Layers {
        allex_protocol::layers::Layers {
            base: self.disk.needs.clone(),
            overlay: Vec::new(),
            runtime: self.disk.runtime.clone(),
        }
    }

    // ----- the network -----

    fn open_conn(&mut self, kind: ConnKind) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        let (who, ordinal) = match kind {
            ConnKind::Real(m) => {
                self.masters[m].conns_opened += 1;
                (m as u64, self.masters[m].conns_opened)
            }
            ConnKind::Impostor(m) | ConnKind::Twin(m) => (1_000 + m as u64, conn),
        };
        let rng = Rng::new(self.cfg.seed, key(&[4, who, ordinal]));
        self.conns.insert(
            conn,
            Conn {
                kind,
                lan_inc: self.lan.inc,
                lan_open: true,
                peer_open: true,
                hello_seen: false,
                lan_heard: self.now,
                peer_heard: self.now,
                to_lan_last: 0,
                to_peer_last: 0,
                rng,
            },
        );
        self.push(
            self.now + HEARTBEAT,
            Ev::Beat {
                conn,
                lan_side: true,
            },
        );
        if matches!(kind, ConnKind::Real(_)) {
            self.push(
                self.now + HEARTBEAT,
                Ev::Beat {
                    conn,
                    lan_side: false,
                },
            );
        }
        conn
    }

    /// Puts `ev` on the wire of `conn`: late while partitioned or held (TCP
    /// retransmits; only a connection that dies loses what it carried),
    /// never overtaking an earlier frame in the same direction.
    fn net(&mut self, conn: u64, ev: Ev) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let host = match c.kind {
            ConnKind::Real(m) => Some(m),
            _ => None,
        };
        let held = match host {
            Some(m) => self.masters[m]
                .hold_until
                .max(self.masters[m].partition_until),
            None => 0,
        };
        let to_lan = matches!(ev, Ev::ToLan { .. } | Ev::FinAtLan { .. });
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let delay = c.rng.range(100, 2_000);
        let last = if to_lan {
            &mut c.to_lan_last
        } else {
            &mut c.to_peer_last
        };
        let mut at = (self.now + delay).max(*last);
        if held > self.now {
            at = at.max(held + delay);
        }
        *last = at;
        self.push(at, ev);
    }

    fn send_to_lan(&mut self, conn: u64, msg: MasterToLan) {
        self.net(conn, Ev::ToLan { conn, msg });
    }

    /// The lan manager's end of `conn` closes; the peer hears of it if `tell`.
    fn close_lan_side(&mut self, conn: u64, tell: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.lan_open || c.lan_inc != self.lan.inc {
            return;
        }
        c.lan_open = false;
        let inc = self.lan.inc;
        self.push(
            self.now,
            Ev::Lan {
                inc,
                input: lan::Input::MasterGone { conn },
            },
        );
        if tell {
            self.net(conn, Ev::FinAtPeer { conn });
        }
    }

    /// The master's end of `conn` closes; it reconnects after its backoff.
    fn close_peer_side(&mut self, conn: u64, tell: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.peer_open {
            return;
        }
        c.peer_open = false;
        let kind = c.kind;
        if tell {
            self.net(conn, Ev::FinAtLan { conn });
        }
        if let ConnKind::Real(m) = kind {
            if self.masters[m].conn == Some(conn) {
                self.masters[m].conn = None;
                self.master_input(m, mcore::Input::LinkDown { unsent: Vec::new() });
                let b = self.masters[m].backoff;
                let wait = b / 2 + self.masters[m].rng.range(0, b / 2);
                self.masters[m].backoff = (b * 2).min(1_000 * MS);
                self.push(self.now + wait, Ev::Connect { m });
            }
        }
    }

    // ----- handling events -----

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Lan { inc, input } => {
                if inc == self.lan.inc {
                    self.lan_input(input);
                }
            }
            Ev::Master { m, input } => self.master_input(m, input),
            Ev::ToLan { conn, msg } => self.at_lan(conn, msg),
            Ev::ToPeer { conn, msg } => self.at_peer(conn, msg),
            Ev::FinAtPeer { conn } => self.close_peer_side(conn, false),
            Ev::FinAtLan { conn } => self.close_lan_side(conn, false),
            Ev::Connect { m } => self.connect(m),
            Ev::Beat { conn, lan_side } => self.beat(conn, lan_side),
            Ev::DiskDone { inc, q } => {
                if inc == self.lan.inc {
                    self.disk_done(q);
                }
            }
            Ev::Op(i) => self.apply_op(i),
            Ev::LanRestart { inc } => {
                if inc == self.lan.inc && self.lan.core.is_none() {
                    self.start_lan();
                }
            }
            Ev::Listen { pid } => {
                if let Some(p) = self.procs.get_mut(&pid) {
                    if p.alive {
                        p.listening = true;
                        let (ip, ports) = (p.ip, p.ports);
                        for (_, port) in ports.iter() {
                            self.listeners.insert((ip, port), pid);
                        }
                    }
                }
            }
            Ev::Die { pid, exit } => self.die(pid, exit),
            Ev::CheckPoll { inc, check } => {
                if inc == self.lan.inc {
                    self.check_poll(check);
                }
            }
            Ev::Liveness { inc, probe } => {
                if inc == self.lan.inc {
                    self.liveness(*probe);
                }
            }
        }
    }

    fn connect(&mut self, m: usize) {
        if self.masters[m].conn.is_some() {
            return;
        }
        let reachable = self.lan.core.is_some() && self.masters[m].partition_until <= self.now;
        if !reachable {
            let b = self.masters[m].backoff;
            let wait = b / 2 + self.masters[m].rng.range(0, b / 2);
            self.masters[m].backoff = (b * 2).min(1_000 * MS);
            self.push(self.now + wait, Ev::Connect { m });
            return;
        }
        let conn = self.open_conn(ConnKind::Real(m));
        self.masters[m].conn = Some(conn);
        let local = self.masters[m].ip;
        self.master_input(m, mcore::Input::LinkUp { local });
    }

    fn beat(&mut self, conn: u64, lan_side: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if lan_side {
            if !c.lan_open || c.lan_inc != self.lan.inc || self.lan.core.is_none() {
                return;
            }
            if self.now.saturating_sub(c.lan_heard) > LINK_TIMEOUT {
                self.close_lan_side(conn, true);
                return;
            }
            self.net(
                conn,
                Ev::ToPeer {
                    conn,
                    msg: LanToMaster::Heartbeat { seq: 0 },
                },
            );
        } else {
            if !c.peer_open {
                return;
            }
            if self.now.saturating_sub(c.peer_heard) > LINK_TIMEOUT {
                self.close_peer_side(conn, true);
                return;
            }
            self.send_to_lan(conn, MasterToLan::Heartbeat { seq: 0 });
        }
        self.push(self.now + HEARTBEAT, Ev::Beat { conn, lan_side });
    }

    fn at_lan(&mut self, conn: u64, msg: MasterToLan) {
        let inc = self.lan.inc;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.lan_open || c.lan_inc != inc || self.lan.core.is_none() {
            return;
        }
        c.lan_heard = self.now;
        let input = if !c.hello_seen {
            let MasterToLan::Hello(hello) = msg else {
                return;
            };
            c.hello_seen = true;
            let ip = hello
                .advertiseaddress
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let peer = SocketAddr::new(ip, 40_000 + (conn % 20_000) as u16);
            lan::Input::MasterHello {
                hello,
                certified: false,
                conn,
                peer,
            }
        } else if matches!(msg, MasterToLan::Heartbeat { .. }) {
            return;
        } else {
            lan::Input::FromMaster { conn, msg }
        };
        self.lan_input(input);
    }

    fn at_peer(&mut self, conn: u64, msg: LanToMaster) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.peer_open {
            return;
        }
        c.peer_heard = self.now;
        let kind = c.kind;
        match kind {
            ConnKind::Real(m) => {
                if self.masters[m].conn != Some(conn) {
                    return;
                }
                if matches!(msg, LanToMaster::Welcome { .. }) {
                    self.masters[m].backoff = 50 * MS;
                }
                self.master_input(m, mcore::Input::LinkMessage(msg));
            }
            ConnKind::Impostor(m) => {
                if matches!(msg, LanToMaster::Welcome { .. }) {
                    self.fail(
                        "impostor admitted",
                        format!("a hello under m{m}'s name with another secret was welcomed"),
                    );
                }
            }
            ConnKind::Twin(m) => match msg {
                LanToMaster::Welcome { .. } => {
                    // Legitimate: the original was away when its link was
                    // pinged (else the close was flagged). Its children may
                    // run beside replacements until it is back and fenced.
                    let s = &mut self.masters[m];
                    s.excused_until = self.now + (GRACE_MS + 2_000) * MS;
                    s.twin_at = None;
                    self.close_peer_side(conn, true);
                }
                LanToMaster::Error { .. } => self.masters[m].twin_at = None,
                _ => {}
            },
        }
    }

    // ----- the lan manager's driver -----

    fn lan_input(&mut self, input: lan::Input) {
        let now = self.lan_now();
        let Some(core) = self.lan.core.as_mut() else {
            return;
        };
        let fx = core.handle(now, input);
        self.lan_effects(fx);
    }

    fn lan_effects(&mut self, fx: Vec<lan::Effect>) {
        let inc = self.lan.inc;
        for e in fx {
            // The driver may merge taken notices; one frame each is the
            // same thing in order, and what the simulated network carries.
            let e = match e {
                lan::Effect::Taken { conn, instance } => lan::Effect::Send {
                    conn,
                    frame: allex_protocol::frame::encode(&LanToMaster::NeedTaken {
                        instancename: instance,
                    })
                    .into(),
                },
                other => other,
            };
            match e {
                lan::Effect::Send { conn, frame } => {
                    let open = self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| c.lan_open && c.lan_inc == inc);
                    if !open {
                        self.push(
                            self.now,
                            Ev::Lan {
                                inc,
                                input: lan::Input::MasterGone { conn },
                            },
                        );
                        continue;
                    }
                    let msg: LanToMaster = match serde_json::from_str(frame.as_str()) {
                        Ok(m) => m,
                        Err(e) => {
                            self.fail("undecodable frame", format!("{e}: {}", frame.as_str()));
                            continue;
                        }
                    };
                    if let LanToMaster::Grant {
                        generation, need, ..
                    } = &msg
                    {
                        if !self.granted.insert(*generation) {
                            self.fail(
                                "generation reused",
                                format!(
                                    "generation {generation} granted again (for {})",
                                    need.instancename
                                ),
                            );
                        }
                    }
                    self.net(conn, Ev::ToPeer { conn, msg });
                }
                lan::Effect::Refuse {
                    conn,
                    code,
                    message,
                } => {
                    if self.conns.get(&conn).is_some_and(|c| c.lan_open) {
                        let msg = LanToMaster::Error {
                            code,
                            message,
                            leader: None,
                        };
                        self.net(conn, Ev::ToPeer { conn, msg });
                        self.close_lan_side(conn, true);
                    }
                }
                lan::Effect::Close { conn, reason } => {
                    if let Some(ConnKind::Real(m)) = self.conns.get(&conn).map(|c| c.kind) {
                        let s = &self.masters[m];
                        if let Some(t) = s.twin_at {
                            if s.disturbed_at < t && s.frozen_until <= self.now {
                                self.fail(
                                    "live master replaced",
                                    format!("m{m}'s answering link was closed for a second hello under its name: {reason}"),
                                );
                            }
                        }
                    }
                    self.close_lan_side(conn, true);
                }
                lan::Effect::ProbeLink {
                    master,
                    old,
                    conn,
                    wait,
                } => {
                    let answered = self.conns.get(&old).is_some_and(|c| {
                        c.lan_open
                            && c.peer_open
                            && match c.kind {
                                ConnKind::Real(m) => {
                                    let s = &self.masters[m];
                                    s.frozen_until <= self.now
                                        && s.partition_until <= self.now
                                        && s.hold_until <= self.now
                                }
                                _ => false,
                            }
                    });
                    let at = self.now + wait.as_micros() as Us;
                    self.push(
                        at,
                        Ev::Lan {
                            inc,
                            input: lan::Input::ProbeDone {
                                master,
                                conn,
                                answered,
                            },
                        },
                    );
                }
                // Made a Send above.
                lan::Effect::Reply { .. }
                | lan::Effect::Event { .. }
                | lan::Effect::Taken { .. } => {}
                lan::Effect::Timer { at, timer } => {
                    let at = self.us(at);
                    self.push(
                        at,
                        Ev::Lan {
                            inc,
                            input: lan::Input::Timer(timer),
                        },
                    );
                }
                lan::Effect::CheckPorts {
                    instance,
                    generation,
                    address,
                    ports,
                    timeout,
                    ..
                } => {
                    let check = PortCheck {
                        instance,
                        generation,
                        ip: address.parse().ok(),
                        ports,
                        deadline: self.now + timeout.as_micros() as Us,
                    };
                    let at = self.now + self.rng.range(100, 1_000);
                    self.push(at, Ev::CheckPoll { inc, check });
                }
                lan::Effect::ProbeLiveness {
                    master,
                    epoch,
                    targets,
                    delay,
                } => {
                    let at = self.now + delay.as_micros() as Us + self.rng.range(100, 2_000);
                    let probe = Box::new(LivenessProbe {
                        master,
                        epoch,
                        targets,
                    });
                    self.push(at, Ev::Liveness { inc, probe });
                }
                lan::Effect::Write(w) => {
                    let q = usize::from(w.is_running());
                    self.disk.queue[q].push_back(w);
                    self.disk_next(q);
                }
            }
        }
    }

    fn host_cut_off(&self, ip: Option<IpAddr>) -> bool {
        self.masters
            .iter()
            .any(|s| Some(s.ip) == ip && s.partition_until > self.now)
    }

    fn check_poll(&mut self, check: PortCheck) {
        let cut = self.host_cut_off(check.ip);
        let missing = check.ports.iter().find(|(_, port)| {
            cut || !check
                .ip
                .is_some_and(|ip| self.listeners.contains_key(&(ip, *port)))
        });
        let inc = self.lan.inc;
        match missing {
            None => self.lan_input(lan::Input::CheckDone {
                instance: check.instance,
                generation: check.generation,
                result: Ok(()),
            }),
            Some((p, port)) if self.now >= check.deadline => {
                self.lan_input(lan::Input::CheckDone {
                    instance: check.instance,
                    generation: check.generation,
                    result: Err(format!("{p} port {port} did not accept")),
                })
            }
            Some(_) => {
                let at = (self.now + 50 * MS).min(check.deadline);
                self.push(at, Ev::CheckPoll { inc, check });
            }
        }
    }

    fn liveness(&mut self, probe: LivenessProbe) {
        let results = probe
            .targets
            .iter()
            .map(|t| {
                let ip: Option<IpAddr> = t.address.parse().ok();
                let verdict = if self.host_cut_off(ip) {
                    lan::Liveness::Silent
                } else {
                    let answering = t.ports.iter().filter(|(_, port)| {
                        ip.is_some_and(|ip| self.listeners.contains_key(&(ip, *port)))
                    });
                    if answering.count() > 0 {
                        lan::Liveness::Answers
                    } else {
                        lan::Liveness::Refused
                    }
                };
                (t.instance.clone(), t.generation, verdict)
            })
            .collect();
        self.lan_input(lan::Input::Liveness {
            master: probe.master,
            epoch: probe.epoch,
            results,
        });
    }

    fn disk_next(&mut self, q: usize) {
        let Some(head) = self.disk.queue[q].front() else {
            return;
        };
        if self.disk.busy[q] {
            return;
        }
        self.disk.busy[q] = true;
        // A journal append lands in the page cache; everything else fsyncs.
        let latency = if matches!(head, lan::Write::Journal { .. }) {
            self.rng.range(5, 100)
        } else if self.disk.slow_until > self.now {
            self.rng.range(20, 200) * MS
        } else {
            self.rng.range(50, 1_000)
        };
        let inc = self.lan.inc;
        self.push(self.now + latency, Ev::DiskDone { inc, q });
    }

    fn disk_done(&mut self, q: usize) {
        self.disk.busy[q] = false;
        let Some(w) = self.disk.queue[q].pop_front() else {
            return;
        };
        let full = self.disk.full_until > self.now;
        let result = if full {
            Err("No space left on device (os error 28)".to_string())
        } else {
            Ok(())
        };
        let input = match w {
            lan::Write::Runtime(runtime) => {
                if !full {
                    self.disk.runtime = runtime;
                }
                Some(lan::Input::NeedsWritten { result })
            }
            lan::Write::ReadNeeds => Some(lan::Input::NeedsRead {
                result: Ok(self.disk_layers()),
            }),
            lan::Write::Masters(m) => {
                if !full {
                    self.disk.masters = m;
                }
                Some(lan::Input::MastersWritten { result })
            }
            lan::Write::Generation(bound) => {
                if !full {
                    self.disk.generation = self.disk.generation.max(bound);
                }
                Some(lan::Input::GenerationWritten { bound, result })
            }
            lan::Write::Journal { lines, seq } => {
                if !full {
                    self.disk.journal.push_str(&String::from_utf8_lossy(&lines));
                }
                Some(lan::Input::JournalWritten { seq, result })
            }
            lan::Write::Running { hints, .. } => {
                if !full {
                    self.disk.running = hints;
                    self.disk.journal.clear();
                }
                None
            }
        };
        if let Some(input) = input {
            self.lan_input(input);
        }
        self.disk_next(q);
    }

    // ----- the masters' driver -----

    fn master_input(&mut self, m: usize, input: mcore::Input) {
        let now = self.instant();
        let fx = self.masters[m].core.handle(now, input);
        self.master_effects(m, fx);
    }

    fn master_effects(&mut self, m: usize, fx: Vec<mcore::Effect>) {
        for e in fx {
            match e {
                mcore::Effect::Send(msg) => {
                    if let MasterToLan::Hello(h) = &msg {
                        self.masters[m].capacity = Some(h.capacity.clone());
                    }
                    match self.masters[m].conn {
                        Some(conn) if self.conns.get(&conn).is_some_and(|c| c.peer_open) => {
                            self.send_to_lan(conn, msg)
                        }
                        _ => self.push(
                            self.now,
                            Ev::Master {
                                m,
                                input: mcore::Input::Unsent(msg),
                            },
                        ),
                    }
                }
                mcore::Effect::Spawn(plan) => self.spawn(m, *plan),
                mcore::Effect::Signal { pid, signal } => self.signal(pid, signal),
                mcore::Effect::Probes(jobs) => self.probe(m, jobs),
                // The simulated services hold no sockets of the master's.
                mcore::Effect::Reply { .. } | mcore::Effect::ReleaseSockets { .. } => {}
                mcore::Effect::Timer { at, timer } => {
                    let at = self.us(at);
                    self.push(
                        at,
                        Ev::Master {
                            m,
                            input: mcore::Input::Timer(timer),
                        },
                    );
                }
                mcore::Effect::SweepLogs { .. } => self.push(
                    self.now + MS,
                    Ev::Master {
                        m,
                        input: mcore::Input::LogsSwept {
                            deleted: 0,
                            next: None,
                        },
                    },
                ),
            }
        }
    }

    fn spawn(&mut self, m: usize, plan: mcore::SpawnPlan) {
        let n = self.masters[m]
            .spawns
            .entry(plan.instance.clone())
            .or_insert(0);
        *n += 1;
        let mut rng = Rng::new(
            self.cfg.seed,
            key(&[5, m as u64, name_key(&plan.instance), *n]),
        );
        let at = self.now + rng.range(200, 3_000);
        if !self.quiet && rng.chance(3) {
            let input = mcore::Input::Spawned {
                instance: plan.instance,
                generation: plan.generation,
                result: Err("exec failed: no such file".into()),
            };
            self.push(at, Ev::Master { m, input });
            return;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        let crash = match self.crash_loop.get_mut(&plan.instance) {
            Some(n) if *n > 0 && !self.quiet => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let wild = !self.quiet;
        let never_listens = wild && rng.chance(5);
        let dies = crash || (wild && rng.chance(12));
        let ignores_term = wild && rng.chance(10);
        let hangs_at = (wild && rng.chance(10)).then(|| self.now + rng.range(200, 8_000) * MS);
        if !never_listens {
            let listen_at = self.now + rng.range(100, 20_000);
            self.push(listen_at, Ev::Listen { pid });
        }
        if dies {
            let after = if crash {
                rng.range(5, 50)
            } else {
                rng.range(50, 3_000)
            };
            self.push(
                self.now + after * MS,
                Ev::Die {
                    pid,
                    exit: ExitInfo {
                        code: Some(1),
                        signal: None,
                        reason: None,
                    },
                },
            );
        }
        self.procs.insert(
            pid,
            Proc {
                master: m,
                instance: plan.instance.clone(),
                generation: plan.generation,
                ip: self.masters[m].ip,
                ports: plan.ports,
                alive: true,
                listening: false,
                ignores_term,
                hangs_at,
                died_at: 0,
                known_at: at,
                rng,
            },
        );
        let input = mcore::Input::Spawned {
            instance: plan.instance,
            generation: plan.generation,
            result: Ok(pid),
        };
        self.push(at, Ev::Master { m, input });
    }

    /// Answers a tick's health probes a millisecond later: a service
    /// passes while it lives, listens and does not hang.
    fn probe(&mut self, m: usize, jobs: Vec<mcore::ProbeJob>) {
        let now = self.now;
        let results = jobs
            .into_iter()
            .map(|j| {
                let result = match self.procs.get(&j.pid) {
                    Some(p) if p.hangs_at.is_some_and(|t| t <= now) => {
                        Err("no answer within 200 ms".to_string())
                    }
                    Some(p) if p.alive && p.listening => Ok(()),
                    _ => Err("connection refused".to_string()),
                };
                mcore::ProbeResult {
                    instance: j.instance,
                    pid: j.pid,
                    result,
                }
            })
            .collect();
        self.push(
            now + MS,
            Ev::Master {
                m,
                input: mcore::Input::ProbesDone(results),
            },
        );
    }

    fn signal(&mut self, pid: u32, signal: i32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.alive {
            return;
        }
        let hung = p.hangs_at.is_some_and(|t| t <= self.now);
        let after = if signal == 9 {
            p.rng.range(10, 200)
        } else if p.ignores_term || hung {
            return;
        } else {
            p.rng.range(1_000, 20_000)
        };
        self.push(
            self.now + after,
            Ev::Die {
                pid,
                exit: exit_signal(signal),
            },
        );
    }

    fn die(&mut self, pid: u32, exit: ExitInfo) {
        let now = self.now;
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.alive {
            return;
        }
        p.alive = false;
        p.died_at = now;
        if p.listening {
            for (_, port) in p.ports.iter() {
                if self.listeners.get(&(p.ip, port)) == Some(&pid) {
                    self.listeners.remove(&(p.ip, port));
                }
            }
        }
        let (m, instance, generation, known_at) =
            (p.master, p.instance.clone(), p.generation, p.known_at);
        // The parent learns at once (pidfd), but only of a pid it knows;
        // a frozen parent when it thaws.
        self.push(
            (now + 100).max(known_at + 1),
            Ev::Master {
                m,
                input: mcore::Input::Exited {
                    instance,
                    generation,
                    pid,
                    exit,
                },
            },
        );
    }

    // ----- invariants -----

    fn excused(&self, m: usize) -> bool {
        let s = &self.masters[m];
        s.frozen_until + THAW_EXCUSE > self.now && s.frozen_until > 0 || s.excused_until > self.now
    }

    fn check(&mut self) {
        let mut broken: Option<(&'static str, String)> = None;
        if let Some(core) = &self.lan.core {
            for (instance, h) in core.holdings() {
                let Holding::Running {
                    master,
                    generation,
                    pid,
                } = h
                else {
                    continue;
                };
                match self.procs.get(&pid) {
                    Some(p)
                        if self.masters[p.master].name == master
                            && p.instance == *instance
                            && p.generation == generation =>
                    {
                        // A frozen lan manager cannot learn anything: the
                        // bound runs from when it could have.
                        let since = p.died_at.max(self.lan.frozen_until);
                        if !p.alive && self.now > since + DEAD_RECORD_BOUND {
                            broken = Some((
                                "record outlives its process",
                                format!(
                                    "{instance} is listed on {master} as pid {pid}, dead for {} ms (awake for {} ms of them)",
                                    (self.now - p.died_at) / MS,
                                    (self.now - since) / MS
                                ),
                            ));
                        }
                    }
                    _ => {
                        broken = Some((
                            "phantom record",
                            format!(
                                "{instance} is listed on {master} generation {generation} as pid {pid}, which that master never ran for it"
                            ),
                        ))
                    }
                }
                if broken.is_some() {
                    break;
                }
            }
        }
        if broken.is_none() {
            let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
            for (pid, p) in &self.procs {
                if !p.alive || self.excused(p.master) {
                    continue;
                }
                if let Some(other) = seen.insert(&p.instance, *pid) {
                    let o = &self.procs[&other];
                    broken = Some((
                        "two live processes",
                        format!(
                            "{} runs as pid {other} (m{} generation {}) and pid {pid} (m{} generation {})",
                            p.instance, o.master, o.generation, p.master, p.generation
                        ),
                    ));
                    break;
                }
            }
        }
        if let Some((kind, detail)) = broken {
            self.fail(kind, detail);
        }
    }

    /// After the quiet period every need runs, listed, on a live process.
    fn converged(&mut self) {
        let Some(core) = &self.lan.core else {
            self.fail("no convergence", "the lan manager is not running".into());
            return;
        };
        let mut problems = Vec::new();
        for (instance, h) in core.holdings() {
            match h {
                Holding::Running { pid, .. } if self.procs.get(&pid).is_some_and(|p| p.alive) => {}
                other => {
                    let on: Vec<String> = self
                        .masters
                        .iter()
                        .filter_map(|s| {
                            let (g, pid) = s.core.child(instance)?;
                            Some(format!("{} runs generation {g} pid {pid:?}", s.name))
                        })
                        .collect();
                    problems.push(format!("{instance}: {other:?} [{}]", on.join(", ")))
                }
            }
        }
        if !problems.is_empty() {
            self.fail(
                "no convergence",
                format!(
                    "{} s after the last fault: {}",
                    QUIESCE / 1_000_000,
                    problems.join("; ")
                ),
            );
        }
    }
}

/// A stream number for one entity of the world (a master, a connection, a
/// child), so its chance does not shift when faults elsewhere change.
fn key(parts: &[u64]) -> u64 {
    parts.iter().fold(0x51_7cc1_b727_220a, |h, p| {
        (h ^ p).wrapping_mul(0x100_0000_01b3).rotate_left(17)
    })
}

/// A number for a name, for [`key`].
fn name_key(name: &str) -> u64 {
    key(&name.bytes().map(u64::from).collect::<Vec<_>>())
}

fn exit_signal(signal: i32) -> ExitInfo {
    ExitInfo {
        code: None,
        signal: Some(signal),
        reason: None,
    }
}
