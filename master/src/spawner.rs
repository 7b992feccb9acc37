//! Starting children from a few long-lived threads.
//!
//! Children get `PR_SET_PDEATHSIG(SIGKILL)` so that none outlives a master
//! killed with SIGKILL. Linux fires that signal when the *thread* that forked
//! the child exits, so every fork happens on these dedicated threads, which
//! live as long as the master (they end only when the state owner drops the
//! [`Spawner`] at shutdown), and never on a short-lived blocking thread.
//!
//! Each fork copies the master's descriptor table and the child closes it all
//! again at exec, so the master keeps as few descriptors per child as it can:
//! the child's stdout and stderr share one pipe, whose read end and the
//! child's pidfd are all it holds while the child is quiet (the log file is
//! closed when idle). Every descriptor is opened close-on-exec, so none leaks
//! into a child.

use crate::cgroups::{ServiceGroup, Tree};
use crate::child_handle::ChildHandle;
use crate::driver::Event;
use crate::logs::{log_path, pump, RotatingLog};
use allex_protocol::spawn::{
    ENV_HTTP_PORT, ENV_INSTANCE, ENV_LISTEN_FDNAMES, ENV_LISTEN_FDS, ENV_MASTER_SOCKET, ENV_MODULE,
    ENV_RUNTIMEDIRECTORY, ENV_SPAWN, ENV_TCP_PORT, ENV_WS_PORT,
};
use allex_protocol::{ExitInfo, Protocol};
use std::os::fd::{AsRawFd, OwnedFd};

/// The hidden `allexmaster` subcommand that sets `LISTEN_PID` to its own
/// pid and execs the service (see [`listen_exec`]).
pub const LISTEN_EXEC: &str = "__listen-exec";

/// `allexmaster __listen-exec PROGRAM ARGS...`: runs in the forked child,
/// with the held sockets at fd 3 onwards, and becomes the service.
pub fn listen_exec(program: &str, args: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(program)
        .args(args)
        .env(
            allex_protocol::spawn::ENV_LISTEN_PID,
            std::process::id().to_string(),
        )
        .exec()
}
use crate::clone_exec::{Exec, Forked};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe::Receiver;
use tokio::sync::mpsc::UnboundedSender;

/// How long the output pump goes on after its child exited: what the child
/// wrote is read, but a process that left the child's group (`setsid`) and
/// holds the pipe cannot keep the master's descriptor and task forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// A child that was started: its pid and the handle that signals and reaps it.
#[derive(Debug, Clone)]
pub struct Started {
    /// The pid.
    pub pid: u32,
    /// Signals by pidfd; `None` only for tests that spawn nothing.
    pub handle: Option<Arc<ChildHandle>>,
}

pub use crate::core::SpawnPlan;

type Job = Box<dyn FnOnce() + Send>;

/// Forks run in parallel on this many threads, so a burst of grants (a cold
/// start of hundreds of services) is not serialised behind one fork at a time.
const SPAWNER_THREADS: usize = 4;

/// Handle of the spawner thread.
pub struct Spawner {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Where each child gets a cgroup of its own; `None`: process groups only.
    tree: Option<Arc<Tree>>,
    /// Reaped children whose cgroups are to be removed once empty.
    removals: std::sync::mpsc::Sender<Arc<ChildHandle>>,
}

/// Signals whose disposition is SIG_IGN right now.
pub fn ignored_signals() -> Vec<libc::c_int> {
    (1..=libc::SIGRTMAX())
        .filter(|s| *s != libc::SIGKILL && *s != libc::SIGSTOP)
        .filter(|s| {
            // SAFETY: sigaction(2) with a null new action only reads the
            // current one into `old`, a zeroed sigaction being valid.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::sigaction(*s, std::ptr::null(), &mut old) };
            rc == 0 && old.sa_sigaction == libc::SIG_IGN
        })
        .collect()
}

impl Spawner {
    /// Starts the spawner threads inside the current tokio runtime; with a
    /// `tree`, each child is started in a cgroup of its own under it.
    pub fn start(tree: Option<Arc<Tree>>) -> std::io::Result<Spawner> {
        cloexec_inherited();
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..SPAWNER_THREADS {
            let (handle, rx) = (handle.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("allex-spawner-{i}"))
                .spawn(move || {
                    let _rt = handle.enter();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        let (removals, removed) = std::sync::mpsc::channel::<Arc<ChildHandle>>();
        std::thread::Builder::new()
            .name("allex-cgroups".into())
            .spawn(move || {
                for handle in removed {
                    if let Some(g) = handle.group() {
                        g.remove();
                    }
                }
            })?;
        let ignored = ignored_signals();
        if !ignored.is_empty() {
            tracing::info!(
                ?ignored,
                "signals ignored by whoever started the master; children get them back at their defaults"
            );
        }
        Ok(Spawner {
            jobs: tx,
            tree,
            removals,
        })
    }

    /// Starts a child; reports `Event::Spawned` and later `Event::Exited` on `events`.
    pub fn spawn(
        &self,
        plan: SpawnPlan,
        listen: Vec<(Protocol, OwnedFd)>,
        events: UnboundedSender<Event>,
    ) {
        let failed = events.clone();
        let (instance, generation) = (plan.instance.clone(), plan.generation);
        let tree = self.tree.clone();
        let removals = self.removals.clone();
        let job: Job =
            Box::new(move || spawn_now(plan, &listen, tree.as_deref(), removals, events));
        if self.jobs.send(job).is_err() {
            let _ = failed.send(Event::Spawned {
                instance,
                generation,
                result: Err("the spawner thread is gone".into()),
            });
        }
    }
}

/// Marks every descriptor above stderr close-on-exec, so that what the
/// master inherited without that flag (from a shell, a supervisor or a test
/// runner) is not handed down to every child, which would hold it for its
/// whole life; the master's own descriptors are opened close-on-exec already.
fn cloexec_inherited() {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors in the range; it touches no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table instead.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::c_int>().ok())
        .filter(|fd| *fd > 2)
    {
        // SAFETY: fcntl(2) on a descriptor number only reads and sets its
        // flags; a number that is no longer open just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// The child of `plan`, ready to fork: its program (the master's own binary
/// in front when it inherits sockets), arguments and environment.
fn build_exec(
    plan: &SpawnPlan,
    listen: &[(Protocol, OwnedFd)],
    output: std::io::PipeWriter,
) -> std::io::Result<Exec> {
    let spec = &plan.spec;
    let mut env: BTreeMap<OsString, Option<OsString>> = BTreeMap::new();
    let mut set = |k: &str, v: Option<OsString>| {
        env.insert(OsString::from(k), v);
    };
    let mut args: Vec<OsString> = Vec::with_capacity(spec.args.len() + 1);
    let program = if listen.is_empty() {
        OsString::from(&spec.command)
    } else {
        // LISTEN_PID must name the service's own pid, known only after the
        // fork: the master's own binary sets it and execs the service, which
        // keeps that pid.
        args.push(OsString::from(LISTEN_EXEC));
        args.push(OsString::from(&spec.command));
        let names: Vec<&str> = listen.iter().map(|(p, _)| p.as_str()).collect();
        set(ENV_LISTEN_FDS, Some(listen.len().to_string().into()));
        set(ENV_LISTEN_FDNAMES, Some(names.join(":").into()));
        std::env::current_exe()?.into_os_string()
    };
    args.extend(spec.args.iter().map(OsString::from));
    for (k, v) in &spec.env {
        set(k, Some(v.into()));
    }
    set(
        ENV_SPAWN,
        Some(allex_protocol::frame::encode(&plan.info).into()),
    );
    set(ENV_MODULE, Some((&plan.info.modulename).into()));
    set(ENV_INSTANCE, Some(plan.instance.as_str().into()));
    set(
        ENV_MASTER_SOCKET,
        Some(plan.socket.clone().into_os_string()),
    );
    set(
        ENV_RUNTIMEDIRECTORY,
        Some(plan.runtimedir.clone().into_os_string()),
    );
    set(
        "NOTIFY_SOCKET",
        Some(
            plan.runtimedir
                .join(crate::notify::NOTIFY_SOCKET_NAME)
                .into_os_string(),
        ),
    );
    for (name, p) in [
        (ENV_TCP_PORT, Protocol::Tcp),
        (ENV_HTTP_PORT, Protocol::Http),
        (ENV_WS_PORT, Protocol::Ws),
    ] {
        set(name, plan.ports.get(p).map(|p| p.to_string().into()));
    }
    Exec::new(
        &program,
        &args,
        &env,
        spec.cwd.as_deref(),
        OwnedFd::from(output),
        listen.iter().map(|(_, fd)| fd.as_raw_fd()).collect(),
    )
}

/// A new cgroup for a child of `plan`, or `None` (logged) when the tree
/// cannot make one: the child then runs in the master's group, as without
/// cgroups, rather than not at all.
fn new_group(tree: Option<&Tree>, plan: &SpawnPlan) -> Option<(ServiceGroup, OwnedFd)> {
    match tree?.create(plan.instance.as_str(), plan.spec.limits.as_ref()) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(instance = %plan.instance, error = %e, "no cgroup of its own for this child; what it forks outside its process group may outlive it");
            None
        }
    }
}

fn spawn_now(
    plan: SpawnPlan,
    listen: &[(Protocol, OwnedFd)],
    tree: Option<&Tree>,
    removals: std::sync::mpsc::Sender<Arc<ChildHandle>>,
    events: UnboundedSender<Event>,
) {
    let (instance, generation) = (plan.instance.clone(), plan.generation);
    let (mut group, cgroup_dir) = new_group(tree, &plan).unzip();
    // Created close-on-exec: a child forked at the same moment on another
    // spawner thread must not inherit this one's pipe (it would hold the pipe
    // open past this child's exit).
    let started = std::io::pipe().and_then(|(reader, writer)| {
        // Registered before the fork, so nothing can fail once a child runs.
        let output = Receiver::from_owned_fd(OwnedFd::from(reader))?;
        let mut exec = build_exec(&plan, listen, writer)?;
        if let Some(dir) = &cgroup_dir {
            exec = exec.in_cgroup(dir.as_raw_fd());
        }
        // The exec (and with it our copy of the write end) is gone once
        // this returns, so the pipe reports end-of-file once the child's
        // group is.
        let Forked { pid, pidfd } = exec.spawn()?;
        drop(cgroup_dir);
        let handle = Arc::new(ChildHandle::new(pid, pidfd, group.take()));
        // SAFETY: the AsyncFd owns a clone of the Arc, so the pidfd stays
        // open and the same for the AsyncFd's whole life.
        let exited =
            match unsafe { AsyncFd::register_with_interest(handle.clone(), Interest::READABLE) } {
                Ok(fd) => fd,
                Err(e) => {
                    // Never lose track of a running child: kill and reap it.
                    handle.signal(libc::SIGKILL);
                    let _ = handle.reap();
                    return Err(std::io::Error::other(format!(
                        "cannot watch the child's pidfd: {e}"
                    )));
                }
            };
        Ok((pid, (handle, exited), output))
    });
    let (pid, (handle, exited), output) = match started {
        Ok(started) => started,
        Err(e) => {
            if let Some(g) = group {
                g.remove();
            }
            let _ = events.send(Event::Spawned {
                instance,
                generation,
                result: Err(format!("cannot start {}: {e}", plan.spec.command)),
            });
            return;
        }
    };
    let _ = events.send(Event::Spawned {
        instance: instance.clone(),
        generation,
        result: Ok(Started {
            pid,
            handle: Some(handle.clone()),
        }),
    });
    // After the report, so the spawn is not delayed; on this spawner thread,
    // so the two async workers never stall on creating a file.
    let mut log = RotatingLog::new(log_path(&plan.runtimedir, &plan.instance), plan.logmaxbytes);
    log.open_early();
    // One task per child: its output pump and its waiter run side by side.
    // `down` is reported at exit, not when the pipe closes (a grandchild may
    // keep it open a little longer).
    let wait = async move {
        let exit = match exited.readable().await {
            Ok(_) => handle.reap(),
            Err(e) => Err(e),
        };
        let exit = exit.unwrap_or_else(|e| {
            tracing::error!(%instance, pid, error = %e, "cannot wait for child");
            ExitInfo::default()
        });
        drop(exited);
        let _ = events.send(Event::Exited {
            instance,
            generation,
            pid,
            exit,
        });
        // The reap killed the group; it is removed once empty, after the
        // death is reported, on the one thread that removes groups (not a
        // blocking-pool thread, whose creation would delay the report).
        if handle.group().is_some() {
            let _ = removals.send(handle);
        }
    };
    tokio::spawn(async move {
        let pump = pump(output, log);
        tokio::pin!(pump, wait);
        tokio::select! {
            () = &mut pump => wait.await,
            () = &mut wait => {
                // Whatever the child wrote is in the pipe already.
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, pump).await;
            }
        }
    });
}
