//! The state owner: one task holds needs, claims, running services, masters
//! and timers, and changes them only in answer to an [`Event`].
//!
//! Connection tasks decode and forward; port checks, timers and file writes
//! run in their own tasks and report back with an event, so the owner never
//! waits on the network or the disk and every decision is taken in one place,
//! in order. Timers are one sleeping task each that sends an event; an event
//! carries the generation or epoch it was armed for, so a timer that outlived
//! its purpose finds nothing to do.

mod admin;
mod claims;
mod masters;
mod slot;

use slot::{slot_hint, Record, Slot};

use crate::backoff::retry_delay;
use crate::needs_store::{RunningHint, Store, GENERATION_BLOCK};
use crate::outbox::{ConnId, Outbox};
use crate::portcheck::{check_ports, Liveness};
use crate::settings::Settings;
use admin::AdminChange;
use allex_protocol::frame::encode;
use allex_protocol::{
    AdminToLan, Capacity, ErrorCode, InventoryEntry, LanStatus, LanToAdmin, LanToMaster,
    MasterHello, MasterSummary, MasterToLan, Need, NeedState, NeedStatus, Ports, RunningService,
    ServiceLocation, PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Capacity of the state owner's inbox; senders wait when it is full.
pub const EVENT_QUEUE: usize = 64 * 1024;

/// How long changes to the advisory `running` file are batched.
const RUNNING_FLUSH_DELAY: Duration = Duration::from_millis(1000);

/// Everything that can change the state.
#[derive(Debug)]
pub enum Event {
    /// A master's hello passed version and token checks.
    MasterHello {
        /// The hello.
        hello: MasterHello,
        /// Its connection's outgoing queue.
        outbox: Outbox,
        /// Where the connection comes from.
        peer: SocketAddr,
    },
    /// A parked hello's ping of the old link under its name is due.
    ProbeOver {
        /// The master name.
        master: String,
        /// The parked (new) connection.
        conn: ConnId,
    },
    /// One liveness round over a disconnected master's services ended.
    Liveness {
        /// The master.
        master: String,
        /// The disconnection it was started for.
        epoch: u64,
        /// Instance, generation and what its ports said.
        results: Vec<(String, u64, Liveness)>,
    },
    /// A message from a master after its hello (heartbeats stay in the connection).
    FromMaster {
        /// The connection it came on.
        conn: ConnId,
        /// The message.
        msg: MasterToLan,
    },
    /// A master's connection ended.
    MasterGone {
        /// The connection.
        conn: ConnId,
    },
    /// An admin request; the answer goes to `reply`.
    Admin {
        /// The request.
        request: AdminToLan,
        /// Where the answer goes.
        reply: oneshot::Sender<LanToAdmin>,
    },
    /// A grant's deadline passed.
    ClaimDeadline {
        /// Instance name.
        instance: String,
        /// The grant it was armed for.
        generation: u64,
    },
    /// A port check ended.
    CheckDone {
        /// Instance name.
        instance: String,
        /// The generation checked.
        generation: u64,
        /// Ok, or which port did not accept.
        result: Result<(), String>,
    },
    /// A need's retry delay is over.
    BackoffOver {
        /// Instance name.
        instance: String,
        /// The backoff it was armed for.
        epoch: u64,
    },
    /// A disconnected master's grace is over.
    GraceOver {
        /// The master.
        master: String,
        /// The disconnection it was armed for.
        epoch: u64,
    },
    /// The settle period after a restart is over.
    SettleOver,
    /// A batch of needs-file changes was written (or not).
    NeedsWritten {
        /// Ok, or the storage error.
        result: Result<(), String>,
    },
    /// Time to write the advisory `running` file.
    FlushRunning,
    /// Write the `running` file now and answer (before a clean shutdown).
    FlushNow {
        /// Answered once the file is written (or could not be).
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
struct NeedEntry {
    need: Need,
    slot: Slot,
    failures: u32,
}

#[derive(Debug)]
struct MasterEntry {
    address: String,
    ip: Option<IpAddr>,
    /// Where its current (or last) connection comes from.
    peer: SocketAddr,
    capacity: Capacity,
    modules: HashSet<String>,
    outbox: Option<Outbox>,
    epoch: u64,
    /// Disconnected past its grace; kept only for services that still answer.
    grace_over: bool,
    /// While disconnected: services whose last liveness round got an answer.
    answering: HashSet<String>,
    /// It said it is shutting down: its children's exits are not failures.
    leaving: bool,
}

impl MasterEntry {
    fn serves(&self, need: &Need) -> bool {
        self.modules.contains(&need.modulename) && allows(need, self.ip)
    }
}

fn allows(need: &Need, ip: Option<IpAddr>) -> bool {
    match (&need.ipaddress, ip) {
        (None, _) => true,
        (Some(_), Some(ip)) => need.allows(ip),
        (Some(_), None) => false,
    }
}

/// Why a need leaves its holder, which decides its failure count and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Died soon after start, failed its port check or could not be spawned.
    Failure,
    /// Ran long enough to count as stable.
    Stable,
    /// Not the service's fault (lapsed claim, master gone, settle over).
    Neutral,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn text(msg: &LanToMaster) -> Utf8Bytes {
    Utf8Bytes::from(encode(msg))
}

/// What the state owner starts from, read from disk before listening.
#[derive(Debug)]
pub struct Startup {
    /// The needs, in file order.
    pub needs: Vec<Need>,
    /// Which needs ran on which master before the restart.
    pub hints: HashMap<String, RunningHint>,
    /// The first generation to hand out.
    pub next_generation: u64,
    /// Generations below this are reserved on disk.
    pub generation_bound: u64,
    /// Master names and the hash of the secret each is bound to.
    pub identities: BTreeMap<String, String>,
}

/// The state owned by the single state task.
pub struct State {
    settings: Arc<Settings>,
    store: Store,
    events: mpsc::Sender<Event>,
    needs: HashMap<String, NeedEntry>,
    order: Vec<String>,
    masters: HashMap<String, MasterEntry>,
    conns: HashMap<ConnId, String>,
    /// Name -> hash of its secret, as on disk in `masters`.
    identities: BTreeMap<String, String>,
    /// Hellos waiting to learn whether the old link of their name is dead.
    parked: HashMap<String, masters::Parked>,
    next_generation: u64,
    generation_bound: u64,
    epoch: u64,
    running_dirty: bool,
    running_flush_armed: bool,
    /// Instances whose running hint changed in this event; journaled when it ends.
    running_changed: Vec<String>,
    /// The running journal (append-only); `None` when it cannot be opened.
    journal: Option<std::fs::File>,
    pending: Vec<AdminChange>,
    inflight: Vec<AdminChange>,
    dead: Vec<ConnId>,
    snapshot_cache: HashMap<(Vec<String>, Option<IpAddr>), Utf8Bytes>,
}

impl State {
    /// Builds the state; needs that ran before a restart start out settling.
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        startup: Startup,
        events: mpsc::Sender<Event>,
    ) -> State {
        let mut needs = HashMap::new();
        let mut order = Vec::new();
        let mut settling = 0usize;
        for need in startup.needs {
            let slot = match startup.hints.get(&need.instancename) {
                Some(h) => {
                    settling += 1;
                    Slot::Settling {
                        master: h.master.clone(),
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
                },
            );
        }
        let journal = match store.open_running_journal() {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("cannot open the running journal; restarts may move services: {e}");
                None
            }
        };
        let state = State {
            journal,
            settings,
            store,
            events,
            needs,
            order,
            masters: HashMap::new(),
            conns: HashMap::new(),
            identities: startup.identities,
            parked: HashMap::new(),
            next_generation: startup.next_generation.max(1),
            generation_bound: startup.generation_bound,
            epoch: 0,
            running_dirty: false,
            running_flush_armed: false,
            running_changed: Vec::new(),
            pending: Vec::new(),
            inflight: Vec::new(),
            dead: Vec::new(),
            snapshot_cache: HashMap::new(),
        };
        if settling > 0 {
            tracing::info!(
                settling,
                settle_ms = state.settings.settle.as_millis() as u64,
                "holding needs that were running for their masters"
            );
            state.after(state.settings.settle, Event::SettleOver);
        }
        state
    }

    /// Handles events until every sender is gone.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<Event>) {
        while let Some(event) = inbox.recv().await {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::MasterHello {
                hello,
                outbox,
                peer,
            } => self.on_hello(hello, outbox, peer),
            Event::ProbeOver { master, conn } => self.on_probe_over(&master, conn),
            Event::Liveness {
                master,
                epoch,
                results,
            } => self.on_liveness(&master, epoch, results),
            Event::FromMaster { conn, msg } => self.on_master_message(conn, msg),
            Event::MasterGone { conn } => self.on_gone(conn),
            Event::Admin { request, reply } => self.on_admin(request, reply),
            Event::ClaimDeadline {
                instance,
                generation,
            } => self.on_claim_deadline(&instance, generation),
            Event::CheckDone {
                instance,
                generation,
                result,
            } => self.on_check_done(&instance, generation, result),
            Event::BackoffOver { instance, epoch } => self.on_backoff_over(&instance, epoch),
            Event::GraceOver { master, epoch } => self.on_grace_over(&master, epoch),
            Event::SettleOver => self.on_settle_over(),
            Event::NeedsWritten { result } => self.on_needs_written(result),
            Event::FlushRunning => self.on_flush_running(),
            Event::FlushNow { done } => {
                self.journal_running_changes();
                self.compact_running();
                let _ = done.send(());
            }
        }
        while let Some(conn) = self.dead.pop() {
            self.on_gone(conn);
        }
        self.journal_running_changes();
        if self.running_dirty && !self.running_flush_armed {
            self.running_flush_armed = true;
            self.after(RUNNING_FLUSH_DELAY, Event::FlushRunning);
        }
    }

    /// Sends `event` to the state owner after `delay`.
    fn after(&self, delay: Duration, event: Event) {
        let tx = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(event).await;
        });
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    // ----- sending -----

    fn send_to(&mut self, master: &str, msg: &LanToMaster) {
        let Some(outbox) = self.masters.get(master).and_then(|m| m.outbox.as_ref()) else {
            return;
        };
        if !outbox.send(text(msg)) {
            self.dead.push(outbox.id);
        }
    }

    fn error_to(&mut self, master: &str, code: ErrorCode, message: String) {
        tracing::warn!(master, %code, "refused: {message}");
        self.send_to(master, &LanToMaster::Error { code, message });
    }

    fn stop(&mut self, master: &str, instance: &str, generation: u64, reason: &str) {
        let n = self.needs.get(instance).map_or(0, |e| e.failures) + 1;
        allex_protocol::log_repeated!(n, info, master, instance, generation, "stop: {reason}");
        self.send_to(
            master,
            &LanToMaster::Stop {
                instancename: instance.to_string(),
                generation,
                reason: reason.to_string(),
            },
        );
    }

    /// Tells every connected master that can serve the need, except `except`.
    fn broadcast(&mut self, instance: &str, msg: &LanToMaster, except: Option<&str>) {
        let Some(entry) = self.needs.get(instance) else {
            return;
        };
        let frame = text(msg);
        for (name, m) in &self.masters {
            if Some(name.as_str()) == except || !m.serves(&entry.need) {
                continue;
            }
            if let Some(outbox) = &m.outbox {
                if !outbox.send(frame.clone()) {
                    self.dead.push(outbox.id);
                }
            }
        }
    }

    fn broadcast_open(&mut self, instance: &str) {
        let Some(entry) = self.needs.get(instance) else {
            return;
        };
        let msg = LanToMaster::NeedOpen {
            need: entry.need.clone(),
        };
        self.broadcast(instance, &msg, None);
    }

    fn broadcast_taken(&mut self, instance: &str, except: Option<&str>) {
        let msg = LanToMaster::NeedTaken {
            instancename: instance.to_string(),
        };
        self.broadcast(instance, &msg, except);
    }

    /// The `needs` frame for a master, shared by masters that serve the same.
    ///
    /// Masters connecting together (a cold start, a lan manager restart) get
    /// the same list, so it is built and encoded once until the open set changes.
    fn snapshot_for(&mut self, master: &str) -> Utf8Bytes {
        let Some(m) = self.masters.get(master) else {
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

    fn send_frame_to(&mut self, master: &str, frame: Utf8Bytes) {
        let Some(outbox) = self.masters.get(master).and_then(|m| m.outbox.as_ref()) else {
            return;
        };
        if !outbox.send(frame) {
            self.dead.push(outbox.id);
        }
    }

    // ----- generations -----

    /// Hands out a generation never used before, reserving a block on disk when needed.
    fn take_generation(&mut self) -> Option<u64> {
        if self.next_generation == u64::MAX {
            // Only a hostile inventory can get here; refuse rather than wrap.
            tracing::error!("generation numbers exhausted");
            return None;
        }
        if self.next_generation >= self.generation_bound {
            let bound = self.next_generation.saturating_add(GENERATION_BLOCK);
            if let Err(e) = self.store.write_generation(bound) {
                tracing::error!("cannot reserve generations: {e}");
                return None;
            }
            self.generation_bound = bound;
        }
        let g = self.next_generation;
        self.next_generation += 1;
        Some(g)
    }

    /// Keeps future generations above one a master reports.
    fn saw_generation(&mut self, g: u64) {
        if g >= self.next_generation {
            self.next_generation = g.saturating_add(1);
        }
    }

    // ----- need transitions -----

    /// Frees a need from its holder; it reopens now or after its retry delay.
    fn release(&mut self, instance: &str, why: Release) {
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
                instance,
                delay_ms = delay.as_millis() as u64,
                "crash loop: delaying the need"
            );
            self.set_slot(
                instance,
                Slot::Backoff {
                    until: Instant::now() + delay,
                    epoch,
                },
            );
            self.after(
                delay,
                Event::BackoffOver {
                    instance: instance.to_string(),
                    epoch,
                },
            );
        }
    }

    /// Which need runs (or is held) for which master, for the `running` file.
    fn running_hints(&self) -> HashMap<String, RunningHint> {
        self.needs
            .iter()
            .filter_map(|(i, e)| slot_hint(&e.slot).map(|h| (i.clone(), h)))
            .collect()
    }

    fn on_flush_running(&mut self) {
        self.running_flush_armed = false;
        if self.running_dirty {
            self.compact_running();
        }
    }

    /// Writes the snapshot of running hints and empties the journal.
    ///
    /// Synchronous on purpose: a change journaled while a snapshot was being
    /// written elsewhere could otherwise be cut from the journal unrecorded.
    fn compact_running(&mut self) {
        self.running_dirty = false;
        let hints = self.running_hints();
        let result = match &self.journal {
            Some(journal) => self.store.compact_running(&hints, journal),
            None => self.store.write_running(&hints),
        };
        if let Err(e) = result {
            tracing::warn!("cannot write the running file: {e}");
        }
    }

    /// Appends the running hints of the instances changed by this event.
    fn journal_running_changes(&mut self) {
        if self.running_changed.is_empty() {
            return;
        }
        let mut changed = std::mem::take(&mut self.running_changed);
        changed.sort_unstable();
        changed.dedup();
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        for instance in &changed {
            let hint = self.needs.get(instance).and_then(|e| slot_hint(&e.slot));
            buf.extend(Store::journal_line(instance, hint.as_ref()));
        }
        use std::io::Write;
        if let Err(e) = journal.write_all(&buf) {
            tracing::warn!("cannot append to the running journal: {e}");
        }
    }
}
