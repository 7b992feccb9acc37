//! The lan manager's driver: the thin runtime around the pure core.
//!
//! It owns what the core may not touch: the connections' outboxes, the
//! admin requests' reply channels, timers, port checks and the files. Each
//! outside event and each completion becomes one [`Input`]; the core's
//! [`Effect`]s are executed in the order they come, and a send that finds
//! its connection gone or full is fed back as `MasterGone` before the next
//! input, so the core never keeps a master it cannot reach.

use crate::core::{ConnId, Effect, Input, Now, ReqId, State, Write};
use crate::events::EventHub;
use crate::log_relay::{LogPiece, LogRelay};
use crate::outbox::{mono_us, Outbox};
use crate::portcheck::{check_ports, probe_service};
use crate::storage::Storage;
use allex_protocol::InstanceName;
use allex_protocol::{AdminToLan, LanToAdmin, LanToMaster, MasterHello, MasterToLan};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Capacity of the driver's inbox from connections; senders wait when it is full.
pub const EVENT_QUEUE: usize = 64 * 1024;

/// How long one liveness connect may take before the port counts as silent.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(500);

/// What connection tasks (and the embedding program) send the driver.
#[derive(Debug)]
pub enum Event {
    /// A master's hello passed version and token checks.
    MasterHello {
        /// The hello.
        hello: MasterHello,
        /// Its client certificate is for its name (`--tls-client-ca`): that is its identity.
        certified: bool,
        /// Its connection's outgoing queue.
        outbox: Outbox,
        /// Where the connection comes from.
        peer: SocketAddr,
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
    /// An admin session asks for a service's output; the answer is the
    /// request's id, or why it cannot be asked.
    LogsOpen {
        /// Instance name.
        instancename: InstanceName,
        /// How many of the last lines first.
        lines: u32,
        /// Keep sending what it writes.
        follow: bool,
        /// Where the output goes.
        chunks: mpsc::Sender<LogPiece>,
        /// The request's id, or why not.
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// The reader of a log request went.
    LogsClose {
        /// The request's id.
        id: u64,
    },
    /// Re-read the needs files and apply their difference (SIGHUP, an edit).
    Reload,
    /// Write the `running` file now and answer (before a clean shutdown).
    FlushNow {
        /// Answered once the file is written (or could not be).
        done: oneshot::Sender<()>,
    },
}

/// A completion from the driver's own helpers (timers, checks, the disk).
// Short-lived on one channel; boxing every input would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Done {
    /// Feed this to the core.
    Input(Input),
    /// The running snapshot asked for by a flush is written.
    Flushed(u64),
}

/// The current time, read once per input.
pub fn now() -> Now {
    Now {
        at: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

/// Inputs handled in one batch at most, so a flood cannot keep one batch
/// (and the frames it holds back) going forever.
const BATCH: usize = 256;

/// Runs the core: executes its effects and feeds it what happens.
pub struct Driver {
    core: State,
    outboxes: HashMap<ConnId, Outbox>,
    replies: HashMap<ReqId, oneshot::Sender<LanToAdmin>>,
    flushes: HashMap<u64, oneshot::Sender<()>>,
    next_id: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// The writer of the fsynced store files (needs, identities, generations).
    store: std::sync::mpsc::Sender<Write>,
    /// The writer of the running journal and snapshot: grants wait for it,
    /// so it never queues behind the store's fsyncs.
    journal: std::sync::mpsc::Sender<Write>,
    /// Where the core's events go to their followers.
    hub: Arc<EventHub>,
    /// Log requests under way, from masters to admin sessions.
    logs: LogRelay,
    /// Taken notices not yet sent, per connection, in order (see [`Effect::Taken`]).
    taken: HashMap<ConnId, Vec<InstanceName>>,
    /// Where port checks run: a thread of their own, so that a burst of
    /// thousands of connects does not take the state owner's thread.
    checks: tokio::runtime::Handle,
}

/// A one-thread runtime for port checks, or the current one when no thread
/// can be started.
fn checks_runtime() -> tokio::runtime::Handle {
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = built.and_then(|rt| {
        std::thread::Builder::new()
            .name("allex-checks".into())
            .spawn(move || {
                let _ = tx.send(rt.handle().clone());
                // Runs the checks spawned onto it until the process ends.
                rt.block_on(std::future::pending::<()>());
            })
    });
    match started.ok().and_then(|_| rx.recv().ok()) {
        Some(h) => h,
        None => {
            tracing::warn!("no thread for port checks; they share the state owner's");
            tokio::runtime::Handle::current()
        }
    }
}

impl Driver {
    /// Wraps a core and starts the disk writer; `initial` are the effects
    /// the core's construction asked for.
    ///
    /// Must be called inside a tokio runtime.
    pub fn new(
        core: State,
        store: Box<dyn Storage>,
        initial: Vec<Effect>,
        hub: Arc<EventHub>,
    ) -> Driver {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let journal = spawn_disk_writer(store.fork(), done_tx.clone(), "allex-journal");
        let store = spawn_disk_writer(store, done_tx.clone(), "allex-store");
        let mut driver = Driver {
            core,
            outboxes: HashMap::new(),
            replies: HashMap::new(),
            flushes: HashMap::new(),
            next_id: 0,
            done_tx,
            done_rx,
            store,
            journal,
            hub,
            logs: LogRelay::default(),
            taken: HashMap::new(),
            checks: checks_runtime(),
        };
        let mut fed = VecDeque::new();
        for effect in initial {
            driver.execute(effect, &mut fed);
        }
        driver.feed_all(fed);
        driver
    }

    /// Handles events and completions until every event sender is gone.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        loop {
            let input = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.accept(ev),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => self.done(done),
            };
            let mut queue: VecDeque<Input> = input.into_iter().collect();
            // What else is already waiting goes in the same batch, so the
            // taken notices of a burst merge (see `flush_taken`).
            while queue.len() < BATCH {
                let more = match events.try_recv() {
                    Ok(ev) => self.accept(ev),
                    Err(_) => match self.done_rx.try_recv() {
                        Ok(done) => self.done(done),
                        Err(_) => break,
                    },
                };
                queue.extend(more);
            }
            if !queue.is_empty() {
                self.feed_all(queue);
            }
        }
    }

    /// A writer's or helper's completion as an input, if it is one.
    fn done(&mut self, done: Done) -> Option<Input> {
        match done {
            Done::Input(input) => Some(input),
            Done::Flushed(ack) => {
                if let Some(w) = self.flushes.remove(&ack) {
                    let _ = w.send(());
                }
                None
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Turns an outside event into the core's input, keeping its channels.
    fn accept(&mut self, ev: Event) -> Option<Input> {
        Some(match ev {
            Event::MasterHello {
                hello,
                certified,
                outbox,
                peer,
            } => {
                let conn = outbox.id;
                self.outboxes.insert(conn, outbox);
                Input::MasterHello {
                    hello,
                    certified,
                    conn,
                    peer,
                }
            }
            // Log output is relayed here, not decided on by the core.
            Event::FromMaster {
                conn,
                msg: MasterToLan::LogChunk { id, data },
            } => {
                self.logs.chunk(conn, id, data, self.outboxes.get(&conn));
                return None;
            }
            Event::FromMaster {
                conn,
                msg: MasterToLan::LogsEnd { id, error },
            } => {
                self.logs.end(conn, id, error);
                return None;
            }
            Event::FromMaster { conn, msg } => Input::FromMaster { conn, msg },
            Event::MasterGone { conn } => {
                self.outboxes.remove(&conn);
                self.logs.gone(conn);
                Input::MasterGone { conn }
            }
            Event::LogsOpen {
                instancename,
                lines,
                follow,
                chunks,
                reply,
            } => {
                let answer = match self.core.serving_conn(&instancename) {
                    None => Err(format!("{instancename} is not running")),
                    Some((master, conn)) => match self.outboxes.get(&conn) {
                        None => Err(format!("{master} is not connected")),
                        Some(outbox) => self
                            .logs
                            .open(outbox, instancename, lines, follow, chunks)
                            .ok_or_else(|| format!("the link to {master} is gone")),
                    },
                };
                let _ = reply.send(answer);
                return None;
            }
            Event::LogsClose { id } => {
                let outboxes = &self.outboxes;
                self.logs.close(id, |c| outboxes.get(&c).cloned());
                return None;
            }
            Event::Admin { request, reply } => {
                let req = self.id();
                self.replies.insert(req, reply);
                Input::Admin { req, request }
            }
            Event::Reload => {
                if self.store.send(Write::ReadNeeds).is_err() {
                    tracing::error!("the disk writer is gone; the needs are not reloaded");
                }
                return None;
            }
            Event::FlushNow { done } => {
                let ack = self.id();
                self.flushes.insert(ack, done);
                Input::FlushNow { ack }
            }
        })
    }

    /// Feeds inputs one at a time, each with the inputs its effects caused
    /// (a dead connection) queued behind it.
    fn feed_all(&mut self, mut queue: VecDeque<Input>) {
        while let Some(input) = queue.pop_front() {
            let effects = self.core.handle(now(), input);
            for effect in effects {
                self.execute(effect, &mut queue);
            }
        }
        let conns: Vec<ConnId> = self.taken.keys().copied().collect();
        for conn in conns {
            self.flush_taken(conn, &mut queue);
        }
        // What a failed flush queued (a dead connection) is fed now.
        if !queue.is_empty() {
            self.feed_all(queue);
        }
    }

    /// Sends the taken notices gathered for `conn`, as one frame.
    fn flush_taken(&mut self, conn: ConnId, fed: &mut VecDeque<Input>) {
        let Some(mut names) = self.taken.remove(&conn) else {
            return;
        };
        let msg = if names.len() == 1 {
            LanToMaster::NeedTaken {
                instancename: names.swap_remove(0),
            }
        } else {
            LanToMaster::NeedsTaken {
                instancenames: names,
            }
        };
        self.send(
            conn,
            Utf8Bytes::from(allex_protocol::frame::encode(&msg)),
            fed,
        );
    }

    fn send(&mut self, conn: ConnId, frame: Utf8Bytes, fed: &mut VecDeque<Input>) {
        let sent = self.outboxes.get(&conn).is_some_and(|o| o.send(frame));
        if !sent
            && !fed
                .iter()
                .any(|i| matches!(i, Input::MasterGone { conn: c } if *c == conn))
        {
            fed.push_back(Input::MasterGone { conn });
        }
    }

    fn later(&self, input: Input) {
        let _ = self.done_tx.send(Done::Input(input));
    }

    fn execute(&mut self, effect: Effect, fed: &mut VecDeque<Input>) {
        match effect {
            Effect::Send { conn, frame } => {
                // Every frame to a connection after the notices before it.
                self.flush_taken(conn, fed);
                self.send(conn, frame, fed);
            }
            Effect::Taken { conn, instance } => self.taken.entry(conn).or_default().push(instance),
            Effect::Refuse {
                conn,
                code,
                message,
            } => {
                self.flush_taken(conn, fed);
                if let Some(o) = self.outboxes.get(&conn) {
                    o.refuse_uncounted(code, message);
                }
            }
            Effect::Close { conn, reason } => {
                self.flush_taken(conn, fed);
                if let Some(o) = self.outboxes.get(&conn) {
                    o.kill(reason);
                }
            }
            Effect::ProbeLink {
                master,
                old,
                conn,
                wait,
            } => {
                let Some(old) = self.outboxes.get(&old).cloned() else {
                    self.later(Input::ProbeDone {
                        master,
                        conn,
                        answered: false,
                    });
                    return;
                };
                let since = mono_us();
                old.ping();
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let answered = old.last_heard() > since;
                    let _ = tx.send(Done::Input(Input::ProbeDone {
                        master,
                        conn,
                        answered,
                    }));
                });
            }
            Effect::Event { unix_ms, kind } => {
                let event = self.hub.publish(unix_ms, kind);
                crate::metrics::metrics().observe(&event);
            }
            Effect::Reply { req, answer } => {
                if let Some(reply) = self.replies.remove(&req) {
                    let _ = reply.send(answer);
                }
            }
            Effect::Timer { at, timer } => {
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    let _ = tx.send(Done::Input(Input::Timer(timer)));
                });
            }
            Effect::CheckPorts {
                instance,
                generation,
                address,
                protocols,
                ports,
                timeout,
            } => {
                let tx = self.done_tx.clone();
                self.checks.spawn(async move {
                    let started = Instant::now();
                    let result = check_ports(&address, &protocols, ports, timeout).await;
                    crate::metrics::metrics().port_check(result.is_ok(), started.elapsed());
                    let _ = tx.send(Done::Input(Input::CheckDone {
                        instance,
                        generation,
                        result,
                    }));
                });
            }
            Effect::ProbeLiveness {
                master,
                epoch,
                targets,
                delay,
            } => {
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let rounds = targets.into_iter().map(|t| async move {
                        let verdict = probe_service(&t.address, &t.ports, LIVENESS_TIMEOUT).await;
                        (t.instance, t.generation, verdict)
                    });
                    let results = futures_util::future::join_all(rounds).await;
                    let _ = tx.send(Done::Input(Input::Liveness {
                        master,
                        epoch,
                        results,
                    }));
                });
            }
            Effect::Write(write) => {
                let writer = if write.is_running() {
                    &self.journal
                } else {
                    &self.store
                };
                if writer.send(write).is_err() {
                    tracing::error!("the disk writer is gone; a write was dropped");
                }
            }
        }
    }
}

/// Hands the pages malloc keeps free back to the kernel. A burst (10,000
/// needs placed at once) grows the heap by some 100 MiB of messages and
/// buffers that are free again a moment later, and glibc keeps them; the
/// running snapshot, written at most once a second while services change
/// and so shortly after every burst, is when to give them back.
///
/// Only when much is free: a trim holds malloc's locks while it walks the
/// heap, which the state owner's allocations would wait behind.
fn return_free_memory() {
    /// Free heap below this stays with malloc.
    #[cfg(target_env = "gnu")]
    const WORTH_TRIMMING: usize = 16 << 20;
    #[cfg(target_env = "gnu")]
    // SAFETY: mallinfo2(3) only reads malloc's statistics and malloc_trim(3)
    // only releases free heap pages; both take malloc's own locks and
    // touch no memory of ours.
    unsafe {
        if libc::mallinfo2().fordblks >= WORTH_TRIMMING {
            libc::malloc_trim(0);
        }
    }
}

/// Starts a thread that writes to the store in the order asked and reports
/// each write that matters back as an input.
///
/// Each writer keeps the order the core relies on (a journal line is never
/// cut by a snapshot taken before it) and keeps fsyncs and etcd round trips
/// off the state owner.
fn spawn_disk_writer(
    mut store: Box<dyn Storage>,
    done: mpsc::UnboundedSender<Done>,
    name: &str,
) -> std::sync::mpsc::Sender<Write> {
    let (tx, rx) = std::sync::mpsc::channel::<Write>();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut waiting: Option<Write> = None;
            loop {
                let write = match waiting.take() {
                    Some(w) => w,
                    None => match rx.recv() {
                        Ok(w) => w,
                        Err(_) => break,
                    },
                };
                let write = match write {
                    // Appends queued behind this one go with it: one etcd
                    // transaction (or one file write) instead of one each.
                    // Acks are cumulative, so the last seq answers for all.
                    Write::Journal { mut lines, mut seq } => {
                        while let Ok(next) = rx.try_recv() {
                            match next {
                                Write::Journal {
                                    lines: more,
                                    seq: later,
                                } => {
                                    lines.extend_from_slice(&more);
                                    seq = later;
                                }
                                other => {
                                    waiting = Some(other);
                                    break;
                                }
                            }
                        }
                        Write::Journal { lines, seq }
                    }
                    other => other,
                };
                let reply = match write {
                    Write::Runtime(runtime) => Some(Done::Input(Input::NeedsWritten {
                        result: store.write_runtime(&runtime).map_err(|e| e.to_string()),
                    })),
                    Write::ReadNeeds => Some(Done::Input(Input::NeedsRead {
                        result: store.load_layers().map_err(|e| e.to_string()),
                    })),
                    Write::Masters(identities) => Some(Done::Input(Input::MastersWritten {
                        result: store.write_masters(&identities).map_err(|e| e.to_string()),
                    })),
                    Write::Generation(bound) => Some(Done::Input(Input::GenerationWritten {
                        bound,
                        result: store.write_generation(bound).map_err(|e| e.to_string()),
                    })),
                    Write::Journal { lines, seq } => {
                        let result = store.append_running(&lines);
                        if let Err(e) = &result {
                            tracing::warn!("cannot append to the running journal: {e}");
                        }
                        Some(Done::Input(Input::JournalWritten { seq, result }))
                    }
                    Write::Running { hints, ack } => {
                        if let Err(e) = store.compact_running(&hints) {
                            tracing::warn!("cannot write the running file: {e}");
                        }
                        drop(hints);
                        return_free_memory();
                        ack.map(Done::Flushed)
                    }
                };
                if let Some(reply) = reply {
                    if done.send(reply).is_err() {
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the disk writer: {e}");
    }
    tx
}
