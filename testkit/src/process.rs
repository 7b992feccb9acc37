//! [`Proc`]: a real child process in its own process group, killed on drop.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a [`Proc`]'s stderr goes.
#[derive(Debug, Clone, Default)]
pub enum Stderr {
    /// Shared with the test, so `cargo test -- --nocapture` shows the logs.
    #[default]
    Inherit,
    /// Appended to this file, kept for post-mortems.
    File(PathBuf),
    /// Thrown away.
    Null,
}

/// Why a process operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The program could not be started.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The process's label.
        name: String,
        /// The fault.
        source: std::io::Error,
    },
    /// The stderr file could not be opened.
    #[error("cannot open stderr file {path}: {source}")]
    StderrFile {
        /// The file.
        path: PathBuf,
        /// The fault.
        source: std::io::Error,
    },
    /// No stdout line matched before the deadline.
    #[error("{name}: no stdout line matched within {waited:?} ({state}); last lines: {tail:?}")]
    NoLine {
        /// The process's label.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// Whether stdout is still open.
        state: &'static str,
        /// The last lines seen, for the message.
        tail: Vec<String>,
    },
    /// The process did not exit before the deadline.
    #[error("{name} (pid {pid}) still runs after {waited:?}")]
    StillRunning {
        /// The process's label.
        name: String,
        /// Its pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// Waiting on or signalling the process failed.
    #[error("{name} (pid {pid}): {source}")]
    Os {
        /// The process's label.
        name: String,
        /// Its pid.
        pid: u32,
        /// The fault.
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Captured {
    lines: Vec<String>,
    closed: bool,
}

struct Shared {
    out: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A reader thread that panicked leaves the lines intact; keep using them.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A spawned process, leader of its own process group.
///
/// Its stdout is read line by line by a thread and kept, so callers can wait
/// for a line. Dropping it sends SIGKILL to the whole group and reaps the
/// leader, so no process outlives a test even when the test panics.
pub struct Proc {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    shared: Arc<Shared>,
}

impl Proc {
    /// Starts `cmd` in a new process group with stdout captured; `name` labels errors.
    ///
    /// stdin is closed; the command's own stdout/stderr settings are replaced.
    pub fn spawn(name: &str, mut cmd: Command, stderr: Stderr) -> Result<Proc, ProcError> {
        let err_io = match &stderr {
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Null => Stdio::null(),
            Stderr::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ProcError::StderrFile {
                        path: path.clone(),
                        source,
                    })?;
                Stdio::from(f)
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_io)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| ProcError::Spawn {
            name: name.to_string(),
            source,
        })?;
        let pid = child.id();
        let shared = Arc::new(Shared {
            out: Mutex::new(Captured::default()),
            changed: Condvar::new(),
        });
        if let Some(stdout) = child.stdout.take() {
            let shared = shared.clone();
            let label = name.to_string();
            let spawned = std::thread::Builder::new()
                .name(format!("stdout-{label}"))
                .spawn(move || read_lines(stdout, &shared, &label));
            if let Err(e) = spawned {
                // Without a reader the child would block on a full pipe; refuse it.
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(ProcError::Spawn {
                    name: name.to_string(),
                    source: e,
                });
            }
        }
        tracing::debug!(name, pid, "spawned");
        Ok(Proc {
            name: name.to_string(),
            pid,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            shared,
        })
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The label given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every stdout line seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.shared.lock().lines.clone()
    }

    /// Waits for the first stdout line (from the start) that satisfies `pred`.
    pub fn wait_for_line(
        &self,
        pred: impl FnMut(&str) -> bool,
        deadline: Duration,
    ) -> Result<String, ProcError> {
        self.wait_for_line_from(0, pred, deadline).map(|(_, l)| l)
    }

    /// Waits for the first line at index `from` or later that satisfies `pred`;
    /// returns its index and text, so a caller can continue after it.
    pub fn wait_for_line_from(
        &self,
        from: usize,
        mut pred: impl FnMut(&str) -> bool,
        deadline: Duration,
    ) -> Result<(usize, String), ProcError> {
        let start = Instant::now();
        let mut next = from;
        let mut out = self.shared.lock();
        loop {
            while next < out.lines.len() {
                if pred(&out.lines[next]) {
                    return Ok((next, out.lines[next].clone()));
                }
                next += 1;
            }
            let waited = start.elapsed();
            if out.closed || waited >= deadline {
                let tail = out.lines.iter().rev().take(10).rev().cloned().collect();
                return Err(ProcError::NoLine {
                    name: self.name.clone(),
                    waited,
                    state: if out.closed {
                        "stdout closed"
                    } else {
                        "still open"
                    },
                    tail,
                });
            }
            out = self
                .shared
                .changed
                .wait_timeout(out, deadline - waited)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Sends `signal` to the whole process group; a group already gone is not an error.
    pub fn kill(&self, signal: Signal) -> Result<(), ProcError> {
        match killpg(Pid::from_raw(self.pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(ProcError::Os {
                name: self.name.clone(),
                pid: self.pid,
                source: std::io::Error::from(e),
            }),
        }
    }

    /// The exit status if the leader has exited, without waiting.
    pub fn try_exit(&self) -> Result<Option<ExitStatus>, ProcError> {
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            *exit = child.try_wait().map_err(|source| ProcError::Os {
                name: self.name.clone(),
                pid: self.pid,
                source,
            })?;
        }
        Ok(*exit)
    }

    /// Whether the leader still runs (it has not been reaped).
    pub fn is_running(&self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// Waits for the leader to exit and returns its status.
    pub fn wait_exit(&self, deadline: Duration) -> Result<ExitStatus, ProcError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if start.elapsed() >= deadline {
                return Err(ProcError::StillRunning {
                    name: self.name.clone(),
                    pid: self.pid,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the group and reaps the leader.
    pub fn kill_now(&self) -> Result<ExitStatus, ProcError> {
        self.kill(Signal::SIGKILL)?;
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = *exit {
            return Ok(status);
        }
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let status = child.wait().map_err(|source| ProcError::Os {
            name: self.name.clone(),
            pid: self.pid,
            source,
        })?;
        *exit = Some(status);
        Ok(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The group may hold grandchildren even after the leader exited.
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let reaped = self.exit.get_mut().map(|e| e.is_some()).unwrap_or(false);
        if !reaped {
            if let Ok(child) = self.child.get_mut() {
                let _ = child.wait();
            }
        }
    }
}

fn read_lines(stdout: std::process::ChildStdout, shared: &Shared, name: &str) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                while buf.last() == Some(&b'\n') || buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                tracing::trace!(name, line, "stdout");
                shared.lock().lines.push(line);
                shared.changed.notify_all();
            }
            Err(e) => {
                tracing::debug!(name, error = %e, "stdout read failed");
                break;
            }
        }
    }
    shared.lock().closed = true;
    shared.changed.notify_all();
}

/// What a short-lived command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs a short-lived command to completion, killing it (and its group) if
/// it outlives `deadline`, so a hung CLI cannot hang a test.
pub fn run_with_deadline(
    name: &str,
    mut cmd: Command,
    deadline: Duration,
) -> Result<Output, ProcError> {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| ProcError::Spawn {
        name: name.to_string(),
        source,
    })?;
    let pid = child.id();
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let os = |source| ProcError::Os {
        name: name.to_string(),
        pid,
        source,
    };
    let status = loop {
        if let Some(status) = child.try_wait().map_err(os)? {
            break status;
        }
        if start.elapsed() >= deadline {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = child.wait();
            return Err(ProcError::StillRunning {
                name: name.to_string(),
                pid,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
