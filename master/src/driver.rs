//! The master's driver: the thin runtime around the pure core.
//!
//! It owns what the core may not touch: the current link's sender, the
//! socket requests' reply channels, the spawner, each child's pidfd handle
//! and the timers. Each outside event and each completion becomes one
//! [`Input`]; the core's [`Effect`]s are executed in the order they come.

use crate::child_handle::ChildHandle;
use crate::core::{Effect, Input, ReqId, State};
use crate::spawner::{Spawner, Started};
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{ExitInfo, LanToMaster, LocalReply, LocalRequest, MasterToLan};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// What the link, the socket server, the spawner and the driver's own
/// helpers send the driver.
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
        instance: InstanceName,
        /// Grant generation.
        generation: Generation,
        /// The child, or why it failed.
        result: Result<Started, String>,
    },
    /// A child ended (observed by its parent, at once).
    Exited {
        /// Instance name.
        instance: InstanceName,
        /// Grant generation.
        generation: Generation,
        /// Its pid.
        pid: u32,
        /// Exit code or signal.
        exit: ExitInfo,
    },
    /// Stop every child and end.
    Shutdown,
    /// A timer or a log sweep of the driver's own is done.
    Done(Input),
    /// SIGHUP re-read the config: the new one, or why it was refused.
    ConfigReloaded(Result<allex_protocol::MasterConfig, String>),
}

/// The process group of `pid`, for a `ready` from a child's descendant.
fn process_group(pid: Option<u32>) -> Option<u32> {
    let raw = libc::pid_t::try_from(pid?).ok()?;
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(raw))).ok()?;
    u32::try_from(pgid.as_raw()).ok()
}

/// Counts a batch's results in the master's metrics.
fn count_probes(results: &[crate::core::ProbeResult]) {
    let passed = results.iter().filter(|r| r.result.is_ok()).count() as u64;
    crate::metrics::metrics().probes(passed, results.len() as u64 - passed);
}

/// Runs the core: executes its effects and feeds it what happens.
pub struct Driver {
    core: State,
    events: UnboundedSender<Event>,
    spawner: Spawner,
    link: Option<UnboundedSender<MasterToLan>>,
    replies: HashMap<ReqId, oneshot::Sender<LocalReply>>,
    /// Pidfd handles of started, unreaped children by pid.
    handles: HashMap<u32, Arc<ChildHandle>>,
    /// The lan manager's log requests under way.
    logs: crate::log_stream::LogStreams,
    /// When each spawn under way was handed to the spawner, for its latency.
    spawning: HashMap<(InstanceName, Generation), Instant>,
    /// Sockets held for `sockets: inherit` entries, by instance.
    held: HashMap<InstanceName, crate::held_sockets::Held>,
    next_req: ReqId,
}

impl Driver {
    /// Wraps a core; `events` is the sender of the driver's own inbox.
    pub fn new(core: State, spawner: Spawner, events: UnboundedSender<Event>) -> Driver {
        Driver {
            core,
            events,
            spawner,
            link: None,
            replies: HashMap::new(),
            handles: HashMap::new(),
            spawning: HashMap::new(),
            logs: Default::default(),
            held: HashMap::new(),
            next_req: 0,
        }
    }

    /// Copies of the sockets held for `instance` on `ports`, bound now when
    /// none are held (or they are held on other ports).
    fn sockets_for(
        &mut self,
        instance: &InstanceName,
        ports: &allex_protocol::Ports,
    ) -> std::io::Result<Vec<(allex_protocol::Protocol, std::os::fd::OwnedFd)>> {
        if self.held.get(instance).is_none_or(|h| h.ports != *ports) {
            self.held.remove(instance);
            let held = crate::held_sockets::Held::bind(ports)?;
            tracing::info!(%instance, ?ports, "holding the service's sockets");
            self.held.insert(instance.clone(), held);
        }
        match self.held.get(instance) {
            Some(h) => h.copies(),
            None => Err(std::io::Error::other("no sockets held")),
        }
    }

    /// Runs until shutdown has stopped every child; children still there
    /// `shutdown_grace` after the shutdown began are SIGKILLed.
    pub async fn run(mut self, mut rx: UnboundedReceiver<Event>, shutdown_grace: Duration) {
        let start = self.core.start();
        self.execute_all(start);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if self.core.finished() {
                break;
            }
            let ev = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        let left = self.core.live_pids();
                        tracing::warn!(
                            left = left.len(),
                            "children did not stop in time; killing them"
                        );
                        for pid in left {
                            if let Some(h) = self.handles.get(&pid) {
                                h.signal_group(libc::SIGKILL);
                            }
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
            if let Some(input) = self.accept(ev) {
                self.feed(input);
            }
        }
    }

    /// Turns an outside event into the core's input, keeping its channels;
    /// `None` for what the driver answers itself (log requests).
    fn accept(&mut self, ev: Event) -> Option<Input> {
        Some(match ev {
            Event::LinkUp { local, out } => {
                self.link = Some(out);
                Input::LinkUp { local }
            }
            Event::LinkMessage(LanToMaster::Logs {
                id,
                instancename,
                lines,
                follow,
            }) => {
                if let Some(link) = &self.link {
                    let rt = self.core.runtimedir().to_path_buf();
                    self.logs
                        .start(id, rt, instancename, lines, follow, link.clone());
                }
                return None;
            }
            Event::LinkMessage(LanToMaster::LogsCancel { id }) => {
                self.logs.cancel(id);
                return None;
            }
            Event::LinkMessage(msg) => Input::LinkMessage(msg),
            Event::LinkDown { unsent } => {
                self.link = None;
                self.logs.cancel_all();
                Input::LinkDown { unsent }
            }
            Event::Local {
                req,
                peer_pid,
                reply,
            } => {
                self.next_req += 1;
                let id = self.next_req;
                self.replies.insert(id, reply);
                Input::Local {
                    req: id,
                    request: req,
                    peer_pid,
                    peer_group: process_group(peer_pid),
                }
            }
            Event::Spawned {
                instance,
                generation,
                result,
            } => {
                if let Some(at) = self.spawning.remove(&(instance.clone(), generation)) {
                    crate::metrics::metrics().spawned(result.is_ok(), at.elapsed());
                }
                Input::Spawned {
                    instance,
                    generation,
                    result: result.map(|Started { pid, handle }| {
                        if let Some(h) = handle {
                            self.handles.insert(pid, h);
                        }
                        pid
                    }),
                }
            }
            Event::Exited {
                instance,
                generation,
                pid,
                exit,
            } => {
                self.handles.remove(&pid);
                crate::metrics::metrics().exited(exit.signal.is_some());
                Input::Exited {
                    instance,
                    generation,
                    pid,
                    exit,
                }
            }
            Event::Shutdown => Input::Shutdown,
            Event::ConfigReloaded(result) => Input::ConfigReloaded(result),
            Event::Done(input) => input,
        })
    }

    /// Feeds one input, then the inputs its effects caused.
    fn feed(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let effects = self.core.handle(Instant::now(), input);
            for effect in effects {
                if let Some(back) = self.execute(effect) {
                    queue.push_back(back);
                }
            }
        }
    }

    fn execute_all(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if let Some(back) = self.execute(effect) {
                self.feed(back);
            }
        }
    }

    /// Carries out one effect; returns an input it caused at once, if any.
    fn execute(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Send(msg) => match &self.link {
                Some(out) => out.send(msg).err().map(|e| Input::Unsent(e.0)),
                None => Some(Input::Unsent(msg)),
            },
            Effect::Spawn(plan) => {
                self.spawning
                    .insert((plan.instance.clone(), plan.generation), Instant::now());
                let listen = if plan.inherit_sockets {
                    match self.sockets_for(&plan.instance, &plan.ports) {
                        Ok(fds) => fds,
                        Err(e) => {
                            return Some(Input::Spawned {
                                instance: plan.instance.clone(),
                                generation: plan.generation,
                                result: Err(e.to_string()),
                            })
                        }
                    }
                } else {
                    Vec::new()
                };
                self.spawner.spawn(*plan, listen, self.events.clone());
                None
            }
            Effect::ReleaseSockets { instance } => {
                self.held.remove(&instance);
                None
            }
            Effect::Signal { pid, signal } => {
                if let Some(h) = self.handles.get(&pid) {
                    h.signal_group(signal);
                }
                None
            }
            Effect::Reply { req, reply } => {
                if let Some(tx) = self.replies.remove(&req) {
                    let _ = tx.send(reply);
                }
                None
            }
            Effect::Timer { at, timer } => {
                let events = self.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    let _ = events.send(Event::Done(Input::Timer(timer)));
                });
                None
            }
            Effect::Probes(jobs) => {
                let (tcp, mut slow): (Vec<_>, Vec<_>) = jobs
                    .into_iter()
                    .partition(|j| j.check.kind == allex_protocol::health::CheckKind::Tcp);
                let now = match crate::probe::tcp_now(tcp) {
                    Ok(results) => results,
                    Err(jobs) => {
                        slow.extend(jobs);
                        Vec::new()
                    }
                };
                if !slow.is_empty() {
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let results = crate::probe::run_each(slow).await;
                        count_probes(&results);
                        let _ = events.send(Event::Done(Input::ProbesDone(results)));
                    });
                }
                if now.is_empty() {
                    None
                } else {
                    count_probes(&now);
                    Some(Input::ProbesDone(now))
                }
            }
            Effect::SweepLogs {
                runtimedir,
                live,
                keep,
                max_bytes,
            } => {
                let events = self.events.clone();
                tokio::task::spawn_blocking(move || {
                    let live = live.iter().map(InstanceName::as_str).collect();
                    let s = crate::retention::sweep(&runtimedir, &live, keep, max_bytes);
                    let _ = events.send(Event::Done(Input::LogsSwept {
                        deleted: s.deleted,
                        next: s.next,
                    }));
                });
                None
            }
        }
    }
}
