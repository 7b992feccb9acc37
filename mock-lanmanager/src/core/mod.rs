//! The lan manager's core: needs, claims, running services, masters and
//! their identities, as a state machine that does no I/O.
//!
//! [`State::handle`] takes one [`Input`] and the time it is handled at and
//! returns the [`Effect`]s to carry out; the driver (`driver.rs`) owns the
//! sockets, timers and files, executes the effects in order and turns every
//! completion into the next input. The simulator (`allex-sim dst`) is a
//! second driver. Nothing here reads a clock, spawns a task or touches a file,
//! so every transition can be tested and replayed without a runtime.

mod admin;
mod claims;
mod drain;
mod effect;
mod generations;
mod input;
mod masters;
mod needs;
mod running;
mod slot;
mod status;

use allex_protocol::Generation;
use allex_protocol::InstanceName;
pub use effect::{ConnId, Effect, Liveness, LivenessTarget, ReqId, Write};
pub use input::{Input, Now, Timer};
use slot::{Record, Slot};
pub use status::Holding;

use crate::backoff::retry_delay;
use crate::needs_store::RunningHint;
use crate::settings::Settings;
use admin::AdminChange;
use allex_protocol::events::EventKind;
use allex_protocol::frame::encode;
use allex_protocol::layers::{Layers, Origin};
use allex_protocol::{
    AdminToLan, Capacity, ErrorCode, InventoryEntry, LanStatus, LanToAdmin, LanToMaster,
    MasterHello, MasterSummary, MasterToLan, Need, NeedState, NeedStatus, Ports, RunningService,
    ServiceLocation, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;

/// Maps and sets with a fixed hasher, so the same inputs give the same
/// iteration order (and so the same effects, in the same order) in every
/// run: the deterministic simulator's byte-identical traces rely on it.
/// Keys are need names and the names of token-checked peers, not floods
/// chosen by an attacker, so a randomly keyed hasher would buy nothing.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, Fixed>;
/// See [`HashMap`].
pub(crate) type HashSet<K> = std::collections::HashSet<K, Fixed>;
/// The fixed hasher of [`HashMap`] and [`HashSet`].
pub(crate) type Fixed = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// How long changes to the advisory `running` file are batched.
const RUNNING_FLUSH_DELAY: Duration = Duration::from_millis(1000);

#[derive(Debug)]
struct NeedEntry {
    need: Need,
    slot: Slot,
    failures: u32,
    /// The needs files it comes from.
    origin: Origin,
}

#[derive(Debug)]
struct MasterEntry {
    address: String,
    ip: Option<IpAddr>,
    /// Where its current (or last) connection comes from.
    peer: SocketAddr,
    capacity: Capacity,
    modules: HashSet<String>,
    /// Its connection while connected.
    conn: Option<ConnId>,
    epoch: u64,
    /// Disconnected past its grace; kept only for services that still answer.
    grace_over: bool,
    /// While disconnected: services whose last liveness round got an answer.
    answering: HashSet<InstanceName>,
    /// It said it is shutting down: its children's exits are not failures.
    leaving: bool,
}

impl MasterEntry {
    fn serves(&self, need: &Need) -> bool {
        self.modules.contains(&need.modulename) && allows(need, self.ip)
    }
}

fn allows(need: &Need, ip: Option<IpAddr>) -> bool {
    match ip {
        _ if !need.restricted() => true,
        Some(ip) => need.allows(ip),
        None => false,
    }
}

/// Why a need leaves its holder, which decides its failure count and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Died soon after start, failed its port check or could not be spawned.
    Failure,
    /// Ran long enough to count as stable.
    Stable,
    /// Not the service's fault (lapsed claim, master gone, settle over).
    Neutral,
}

fn text(msg: &LanToMaster) -> Utf8Bytes {
    Utf8Bytes::from(encode(msg))
}

/// What the core starts from, read from disk before listening.
#[derive(Debug)]
pub struct Startup {
    /// The three needs files, parsed and checked.
    pub layers: Layers,
    /// Which needs ran on which master before the restart.
    pub hints: std::collections::HashMap<InstanceName, RunningHint>,
    /// The first generation to hand out.
    pub next_generation: u64,
    /// Generations below this are reserved on disk.
    pub generation_bound: u64,
    /// Master names and the hash of the secret each is bound to.
    pub identities: BTreeMap<String, String>,
}

/// The lan manager's whole state; changed only by [`State::handle`].
pub struct State {
    settings: Arc<Settings>,
    /// The time of the input being handled.
    now: Now,
    /// Effects of the input being handled, in order.
    fx: Vec<Effect>,
    needs: HashMap<InstanceName, NeedEntry>,
    order: Vec<InstanceName>,
    masters: HashMap<String, MasterEntry>,
    conns: HashMap<ConnId, String>,
    /// Name -> hash of its secret, as on disk in `masters`.
    identities: BTreeMap<String, String>,
    /// Identity-file writes under way, oldest first, and what waits on each.
    identity_writes: std::collections::VecDeque<masters::IdentityWrite>,
    /// Hellos waiting to learn whether the old link of their name is dead.
    parked: HashMap<String, masters::Parked>,
    generations: generations::Generations,
    epoch: u64,
    running: running::RunningJournal,
    /// The needs files as last read or written; the needs in effect are their merge.
    layers: Layers,
    pending: Vec<AdminChange>,
    inflight: Vec<AdminChange>,
    /// The runtime layer being written for `inflight`.
    writing: Vec<allex_protocol::layers::RuntimeEntry>,
    /// Reload requests waiting for the files to be read.
    reloads: Vec<Option<ReqId>>,
    /// Masters being drained, by name (kept across their reconnects).
    draining: HashMap<String, drain::Drain>,
    snapshot_cache: HashMap<(Vec<String>, Option<IpAddr>), Utf8Bytes>,
}

impl State {
    /// Builds the state; needs that ran before a restart start out settling
    /// (the returned effects set the settle timer).
    pub fn new(settings: Arc<Settings>, startup: Startup, now: Now) -> (State, Vec<Effect>) {
        let mut needs = HashMap::default();
        let mut order = Vec::new();
        let mut settling = 0usize;
        for layered in startup.layers.effective() {
            let need = layered.need;
            let slot = match startup.hints.get(&need.instancename) {
                _ if need.closed() => Slot::Closed,
                Some(h) => {
                    settling += 1;
                    Slot::Settling {
                        master: h.master.clone(),
                        generation: h.generation,
                        seen: h.seen.clone(),
                    }
                }
                None => Slot::Open,
            };
            order.push(need.instancename.clone());
            needs.insert(
                need.instancename.clone(),
                NeedEntry {
                    need,
                    slot,
                    failures: 0,
                    origin: layered.origin,
                },
            );
        }
        let mut state = State {
            settings,
            now,
            fx: Vec::new(),
            needs,
            order,
            masters: HashMap::default(),
            conns: HashMap::default(),
            identities: startup.identities,
            identity_writes: Default::default(),
            parked: HashMap::default(),
            generations: generations::Generations::new(
                startup.next_generation,
                startup.generation_bound,
            ),
            epoch: 0,
            running: running::RunningJournal::default(),
            layers: startup.layers,
            pending: Vec::new(),
            inflight: Vec::new(),
            writing: Vec::new(),
            reloads: Vec::new(),
            draining: HashMap::default(),
            snapshot_cache: HashMap::default(),
        };
        if settling > 0 {
            tracing::info!(
                settling,
                settle_ms = state.settings.settle.as_millis() as u64,
                "holding needs that were running for their masters"
            );
            state.after(state.settings.settle, Timer::SettleOver);
        }
        let fx = std::mem::take(&mut state.fx);
        (state, fx)
    }

    /// The master running `instance` (listed or being checked) and its
    /// connection, for relaying a request to it.
    pub fn serving_conn(&self, instance: &InstanceName) -> Option<(String, ConnId)> {
        let master = match &self.needs.get(instance)?.slot {
            Slot::Running(r) => &r.master,
            Slot::Checking { master, .. } => master,
            _ => return None,
        };
        let conn = self.masters.get(master)?.conn?;
        Some((master.clone(), conn))
    }

    /// Handles one input at `now`; returns what the driver must do, in order.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::MasterHello {
                hello,
                certified,
                conn,
                peer,
            } => self.on_hello(hello, certified, conn, peer),
            Input::ProbeDone {
                master,
                conn,
                answered,
            } => self.on_probe_done(&master, conn, answered),
            Input::Liveness {
                master,
                epoch,
                results,
            } => self.on_liveness(&master, epoch, results),
            Input::FromMaster { conn, msg } => self.on_master_message(conn, msg),
            Input::MasterGone { conn } => self.on_gone(conn),
            Input::Admin { req, request } => self.on_admin(req, request),
            Input::Timer(timer) => self.on_timer(timer),
            Input::CheckDone {
                instance,
                generation,
                result,
            } => self.on_check_done(&instance, generation, result),
            Input::NeedsWritten { result } => self.on_needs_written(result),
            Input::NeedsRead { result } => self.on_needs_read(result),
            Input::MastersWritten { result } => self.on_masters_written(result),
            Input::GenerationWritten { bound, result } => self.generations.written(bound, result),
            Input::JournalWritten { seq, result } => self.on_journal_written(seq, result),
            Input::FlushNow { ack } => {
                self.journal_running_changes();
                self.compact_running(Some(ack));
            }
        }
        self.advance_drains();
        self.journal_running_changes();
        if self.running.wants_flush() {
            self.after(RUNNING_FLUSH_DELAY, Timer::FlushRunning);
        }
        if let Some(bound) = self.generations.wants_reservation() {
            self.fx.push(Effect::Write(Write::Generation(bound)));
        }
        std::mem::take(&mut self.fx)
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ClaimDeadline {
                instance,
                generation,
            } => self.on_claim_deadline(&instance, generation),
            Timer::BackoffOver { instance, epoch } => self.on_backoff_over(&instance, epoch),
            Timer::GraceOver { master, epoch } => self.on_grace_over(&master, epoch),
            Timer::SettleOver => self.on_settle_over(),
            Timer::FlushRunning => self.on_flush_running(),
        }
    }

    /// Delivers `timer` after `delay`.
    fn after(&mut self, delay: Duration, timer: Timer) {
        let at = self.now.at + delay;
        self.fx.push(Effect::Timer { at, timer });
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    // ----- sending -----

    fn send_frame_to(&mut self, master: &str, frame: Utf8Bytes) {
        if let Some(conn) = self.masters.get(master).and_then(|m| m.conn) {
            self.fx.push(Effect::Send { conn, frame });
        }
    }

    fn send_to(&mut self, master: &str, msg: &LanToMaster) {
        self.send_frame_to(master, text(msg));
    }

    fn reply(&mut self, req: ReqId, answer: LanToAdmin) {
        self.fx.push(Effect::Reply { req, answer });
    }

    /// Publishes a state change, stamped with the input's time.
    fn event(&mut self, kind: EventKind) {
        self.fx.push(Effect::Event {
            unix_ms: self.now.unix_ms,
            kind,
        });
    }

    fn error_to(&mut self, master: &str, code: ErrorCode, message: String) {
        tracing::warn!(master, %code, "refused: {message}");
        self.event(EventKind::FrameRefused {
            master: master.to_string(),
            code,
            message: message.clone(),
        });
        self.send_to(
            master,
            &LanToMaster::Error {
                code,
                message,
                leader: None,
            },
        );
    }

    fn stop(
        &mut self,
        master: &str,
        instance: &InstanceName,
        generation: Generation,
        reason: &str,
    ) {
        let n = self.needs.get(instance).map_or(0, |e| e.failures) + 1;
        allex_protocol::log_repeated!(n, info, master, %instance, %generation, "stop: {reason}");
        self.event(EventKind::Stopping {
            instancename: instance.clone(),
            master: master.to_string(),
            generation,
            reason: reason.to_string(),
        });
        self.send_to(
            master,
            &LanToMaster::Stop {
                instancename: instance.clone(),
                generation,
                reason: reason.to_string(),
            },
        );
    }

    /// The connections of every connected master that can serve the need
    /// (none draining), except `except`.
    fn recipients(&self, instance: &InstanceName, except: Option<&str>) -> Vec<ConnId> {
        let Some(entry) = self.needs.get(instance) else {
            return Vec::new();
        };
        self.masters
            .iter()
            .filter(|(name, m)| {
                Some(name.as_str()) != except
                    && m.serves(&entry.need)
                    && !self.draining.contains_key(*name)
            })
            .filter_map(|(_, m)| m.conn)
            .collect()
    }

    /// Tells every connected master that can serve the need, except `except`.
    fn broadcast(&mut self, instance: &InstanceName, msg: &LanToMaster, except: Option<&str>) {
        let conns = self.recipients(instance, except);
        if conns.is_empty() {
            return;
        }
        let frame = text(msg);
        for conn in conns {
            self.fx.push(Effect::Send {
                conn,
                frame: frame.clone(),
            });
        }
    }

    fn broadcast_open(&mut self, instance: &InstanceName) {
        let Some(entry) = self.needs.get(instance) else {
            return;
        };
        let msg = LanToMaster::NeedOpen {
            need: entry.need.clone(),
        };
        self.broadcast(instance, &msg, None);
    }

    fn broadcast_taken(&mut self, instance: &InstanceName, except: Option<&str>) {
        for conn in self.recipients(instance, except) {
            self.fx.push(Effect::Taken {
                conn,
                instance: instance.clone(),
            });
        }
    }

    /// The `needs` frame for a master, shared by masters that serve the same.
    ///
    /// Masters connecting together (a cold start, a lan manager restart) get
    /// the same list, so it is built and encoded once until the open set changes.
    fn snapshot_for(&mut self, master: &str) -> Utf8Bytes {
        let Some(m) = self
            .masters
            .get(master)
            .filter(|_| !self.draining.contains_key(master))
        else {
            return text(&LanToMaster::Needs { needs: Vec::new() });
        };
        let mut modules: Vec<String> = m.modules.iter().cloned().collect();
        modules.sort();
        let key = (modules, m.ip);
        if let Some(frame) = self.snapshot_cache.get(&key) {
            return frame.clone();
        }
        let needs = self
            .order
            .iter()
            .filter_map(|i| self.needs.get(i))
            .filter(|e| matches!(e.slot, Slot::Open) && m.serves(&e.need))
            .map(|e| e.need.clone())
            .collect();
        let frame = text(&LanToMaster::Needs { needs });
        self.snapshot_cache.insert(key, frame.clone());
        frame
    }

    // ----- need transitions -----

    /// Frees a need from its holder; it reopens now or after its retry delay.
    fn release(&mut self, instance: &InstanceName, why: Release) {
        let settings = self.settings.clone();
        let epoch = self.next_epoch();
        let Some(e) = self.needs.get_mut(instance) else {
            return;
        };
        match why {
            Release::Failure => e.failures = e.failures.saturating_add(1),
            Release::Stable => e.failures = 0,
            Release::Neutral => {}
        }
        let delay = if why == Release::Failure {
            retry_delay(e.failures, settings.backoff_base, settings.backoff_cap)
        } else {
            Duration::ZERO
        };
        if delay.is_zero() {
            self.set_slot(instance, Slot::Open);
        } else {
            allex_protocol::log_repeated!(
                e.failures,
                info,
                %instance,
                delay_ms = delay.as_millis() as u64,
                "crash loop: delaying the need"
            );
            let until = self.now.at + delay;
            self.set_slot(instance, Slot::Backoff { until, epoch });
            self.after(
                delay,
                Timer::BackoffOver {
                    instance: instance.clone(),
                    epoch,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
