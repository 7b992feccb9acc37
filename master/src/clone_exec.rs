//! Starting a child with clone3(2): straight into its cgroup, with its pidfd.
//!
//! std's `Command` can do neither. A child it forks enters its cgroup by
//! writing to `cgroup.procs`, which takes the kernel's cgroup-wide
//! threadgroup lock for writing and so waits out an RCU grace period: up
//! to 30 ms measured on an idle 2-CPU machine, on a restart's critical path
//! (`perf sched` showed the child asleep in that write, woken by
//! `rcu_preempt`). `CLONE_INTO_CGROUP` places the child at fork under the
//! read side of that lock, and `CLONE_PIDFD` hands back its pidfd at once.
//!
//! Everything the child needs is built before the fork ([`Exec::new`]): in
//! the child, between clone and exec, only async-signal-safe system calls
//! run and nothing is allocated. An exec that fails reports its errno over
//! a close-on-exec pipe, as std does, so a spawn error names its cause.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `struct clone_args` of clone3(2), as the kernel lays it out (v2, with `cgroup`).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
#[cfg(target_arch = "x86_64")]
const CLONE_VM: u64 = 0x100;
#[cfg(target_arch = "x86_64")]
const CLONE_VFORK: u64 = 0x4000;
/// The stack the child runs on until exec (a few small frames).
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 * 1024;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Where the child's descriptors 3 and up (`LISTEN_FDS`) start.
const LISTEN_START: RawFd = allex_protocol::spawn::LISTEN_FDS_START;

/// Sources are moved at least this high before being put in place, so no
/// `dup2` onto 0..=2 or 3.. overwrites a source still to be moved.
const HIGH_FD: RawFd = 64;

/// A program and everything its child gets, ready to fork.
pub struct Exec {
    program: CString,
    /// Keeps the strings `argv_ptrs` points into alive.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    stdin: OwnedFd,
    output: OwnedFd,
    listen: Vec<RawFd>,
    cgroup: Option<RawFd>,
}

/// A started child: its pid and its pidfd.
#[derive(Debug)]
pub struct Forked {
    /// The pid (also its process group's id).
    pub pid: u32,
    /// The pidfd, close-on-exec.
    pub pidfd: OwnedFd,
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a program, argument or environment variable holds a NUL byte",
        )
    })
}

/// `program` as execve(2) takes it: with a `/` as it is, else the first
/// executable file of that name on `path` (the child's `PATH`).
fn resolve(program: &OsStr, path: Option<&OsStr>) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        let Ok(c) = cstring(candidate.as_os_str().as_bytes().to_vec()) else {
            continue;
        };
        // SAFETY: access(2) reads the NUL-terminated path only.
        let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        if executable && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

impl Exec {
    /// Prepares `program` with `args`; the environment is this process's
    /// with `env` applied (`None` removes a variable). `output` becomes the
    /// child's stdout and stderr, `/dev/null` its stdin; `listen` become its
    /// descriptors 3 onwards. Every signal starts at its default.
    pub fn new(
        program: &OsStr,
        args: &[OsString],
        env: &BTreeMap<OsString, Option<OsString>>,
        cwd: Option<&Path>,
        output: OwnedFd,
        listen: Vec<RawFd>,
    ) -> io::Result<Exec> {
        let mut vars: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        for (k, v) in env {
            match v {
                Some(v) => vars.insert(k.clone(), v.clone()),
                None => vars.remove(k),
            };
        }
        let resolved = resolve(
            program,
            vars.get(OsStr::new("PATH")).map(OsString::as_os_str),
        )?;
        let program_c = cstring(resolved.into_os_string().into_vec())?;
        let mut argv = vec![cstring(program.as_bytes().to_vec())?];
        for a in args {
            argv.push(cstring(a.as_bytes().to_vec())?);
        }
        let envp: Vec<CString> = vars
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                cstring(kv)
            })
            .collect::<io::Result<_>>()?;
        let pointers = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let stdin = OwnedFd::from(std::fs::File::open("/dev/null")?);
        Ok(Exec {
            program: program_c,
            argv_ptrs: pointers(&argv),
            _argv: argv,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            cwd: cwd
                .map(|c| cstring(c.as_os_str().as_bytes().to_vec()))
                .transpose()?,
            stdin,
            output,
            listen,
            cgroup: None,
        })
    }

    /// Starts the child in the cgroup whose directory `dir` is open on.
    pub fn in_cgroup(mut self, dir: RawFd) -> Exec {
        self.cgroup = Some(dir);
        self
    }

    /// Forks and execs; returns once the exec succeeded (or why it did not,
    /// the child then reaped). The child gets its own process group, dies
    /// with the thread that calls this (`PR_SET_PDEATHSIG`), and is in its
    /// cgroup from its first instruction on.
    pub fn spawn(self) -> io::Result<Forked> {
        let (report_r, report_w) = std::io::pipe()?;
        let (report_r, report_w) = (OwnedFd::from(report_r), OwnedFd::from(report_w));
        let master = nix::unistd::getpid().as_raw();
        let mut pidfd: libc::c_int = -1;
        let mut args = CloneArgs {
            flags: CLONE_PIDFD,
            pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        if let Some(dir) = self.cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = dir as u64;
        }
        // Blocked across the clone, so no handler of the master's runs in
        // a child that shares its memory; the child sets every handler back
        // to the default before it unblocks them.
        // SAFETY: sigfillset/pthread_sigmask write only into these locals.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let mut pid = self.clone_child(&args, report_w.as_raw_fd(), master, false);
        if pid < 0 && self.cgroup.is_some() && errno() != libc::ENOSYS {
            // A kernel before 5.7 knows clone3 but not CLONE_INTO_CGROUP:
            // the child writes itself into `cgroup.procs` instead.
            args.flags &= !CLONE_INTO_CGROUP;
            args.cgroup = 0;
            pid = self.clone_child(&args, report_w.as_raw_fd(), master, true);
        }
        let mut by_fork = false;
        if pid < 0 && errno() == libc::ENOSYS {
            // clone3 filtered (some container seccomp profiles): fork(2),
            // then pidfd_open(2) on the unreaped child.
            by_fork = true;
            // SAFETY: the child runs only async-signal-safe calls until exec or _exit.
            pid = i64::from(unsafe { libc::fork() });
            if pid == 0 {
                // SAFETY: in the freshly forked child; `self` was fully
                // built before the fork and is only read.
                unsafe { self.child(report_w.as_raw_fd(), master, self.cgroup.is_some()) }
            }
        }
        let clone_error = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 {
            return Err(clone_error);
        }
        drop(report_w);
        let pid_t = pid as libc::pid_t;
        let pidfd = if by_fork {
            match crate::child_handle::pidfd_open(pid as u32) {
                Ok(fd) => fd,
                Err(e) => {
                    // Without a pidfd the child cannot be watched: it must
                    // not run at all (it may be past exec already).
                    // SAFETY: kill(2) on our own unreaped child.
                    unsafe { libc::kill(pid_t, libc::SIGKILL) };
                    reap_failed(pid_t);
                    return Err(e);
                }
            }
        } else {
            // SAFETY: clone3 just handed us this descriptor; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(pidfd) }
        };
        let mut buf = [0u8; 4];
        let n = loop {
            // SAFETY: read(2) into a 4-byte buffer we own.
            let n = unsafe { libc::read(report_r.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            break n;
        };
        if n == 0 {
            return Ok(Forked {
                pid: pid as u32,
                pidfd,
            });
        }
        reap_failed(pid_t);
        if n == 4 {
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)))
        } else {
            Err(io::Error::other(
                "the child failed before exec and said nothing",
            ))
        }
    }

    /// Clones the child, which runs [`Exec::child`]; returns its pid, or -1
    /// with errno set.
    ///
    /// On x86_64 the child shares the master's memory and runs on a stack of
    /// its own until it execs, the master's thread waiting meanwhile
    /// (`CLONE_VM | CLONE_VFORK`, as glibc's posix_spawn does): no page
    /// table is copied at the clone and none torn down at the exec, which
    /// measured 0.4 ms of every spawn. Elsewhere it is a plain fork.
    fn clone_child(
        &self,
        args: &CloneArgs,
        report: RawFd,
        master: libc::pid_t,
        enter_by_write: bool,
    ) -> i64 {
        let child = ChildArgs {
            exec: self,
            report,
            master,
            enter_by_write,
        };
        #[cfg(target_arch = "x86_64")]
        {
            let mut stack = vec![0u8; CHILD_STACK];
            let args = CloneArgs {
                flags: args.flags | CLONE_VM | CLONE_VFORK,
                stack: stack.as_mut_ptr() as u64,
                stack_size: (CHILD_STACK & !15) as u64,
                ..*args
            };
            // SAFETY: the child runs `child_entry` on `stack`, which lives
            // until this returns, and the parent is suspended until the
            // child execs or exits (CLONE_VFORK), so nothing the child reads
            // changes under it.
            unsafe { clone3_vfork(&args, child_entry, std::ptr::addr_of!(child).cast()) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let pid = clone3(args);
            if pid == 0 {
                // SAFETY: in the freshly forked child, on a copy of this stack.
                unsafe { child_entry(std::ptr::addr_of!(child).cast()) }
            }
            pid
        }
    }

    /// The child's side, up to exec: never returns.
    ///
    /// # Safety
    /// Only in the child of a fork; makes async-signal-safe calls only.
    unsafe fn child(&self, report: RawFd, master: libc::pid_t, enter_by_write: bool) -> ! {
        let fail = |report: RawFd| -> ! {
            // SAFETY: errno location, write(2) and _exit(2) are async-signal-safe.
            unsafe {
                let e = *libc::__errno_location();
                libc::write(report, (&e as *const i32).cast(), 4);
                libc::_exit(127)
            }
        };
        // SAFETY (the whole block): plain system calls on integers and on
        // memory built before the fork.
        unsafe {
            let report = match libc::fcntl(report, libc::F_DUPFD_CLOEXEC, HIGH_FD) {
                -1 => report,
                high => high,
            };
            // Every signal at its default and none blocked, whatever the
            // master inherited or installed: exec would keep what is
            // ignored, and a handler must not run in a child that shares
            // the master's memory.
            for sig in 1..=libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if libc::setpgid(0, 0) != 0 {
                fail(report);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                fail(report);
            }
            // The master may have died between fork and prctl; then the
            // death signal would never come, so give up now.
            if libc::getppid() != master {
                *libc::__errno_location() = libc::ESRCH;
                fail(report);
            }
            if enter_by_write {
                if let Some(dir) = self.cgroup {
                    let procs = libc::openat(
                        dir,
                        c"cgroup.procs".as_ptr(),
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    );
                    if procs < 0 || libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                        fail(report);
                    }
                }
            }
            // Every source out of the way of every target first.
            let high = |fd: RawFd| -> RawFd {
                let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD);
                if h < 0 {
                    fail(report);
                }
                h
            };
            let stdin = high(self.stdin.as_raw_fd());
            let output = high(self.output.as_raw_fd());
            let mut listen = [0 as RawFd; 8];
            let count = self.listen.len().min(listen.len());
            for (slot, fd) in listen.iter_mut().zip(&self.listen) {
                *slot = high(*fd);
            }
            // dup2 leaves the targets without close-on-exec.
            for (from, to) in [(stdin, 0), (output, 1), (output, 2)] {
                if libc::dup2(from, to) < 0 {
                    fail(report);
                }
            }
            for (i, fd) in listen.iter().take(count).enumerate() {
                if libc::dup2(*fd, LISTEN_START + i as RawFd) < 0 {
                    fail(report);
                }
            }
            if let Some(cwd) = &self.cwd {
                if libc::chdir(cwd.as_ptr()) != 0 {
                    fail(report);
                }
            }
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
            fail(report)
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// clone3(2) with fork semantics (no shared memory, no new stack): returns
/// twice, 0 in the child.
#[cfg(not(target_arch = "x86_64"))]
fn clone3(args: &CloneArgs) -> i64 {
    // SAFETY: the kernel reads `args` (its size given) and writes the pidfd
    // where `args.pidfd` points, a live local of the caller. Without
    // CLONE_VM the child runs on a copy of this stack, as after fork(2).
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// What the child's entry point needs, passed by pointer through the clone.
struct ChildArgs<'a> {
    exec: &'a Exec,
    report: RawFd,
    master: libc::pid_t,
    enter_by_write: bool,
}

/// The child's first frame after the clone.
///
/// # Safety
/// `arg` points at a live [`ChildArgs`]; only in the child.
unsafe extern "C" fn child_entry(arg: *const libc::c_void) -> ! {
    // SAFETY: per the contract, a live ChildArgs the parent keeps alive.
    let a = unsafe { &*arg.cast::<ChildArgs>() };
    // SAFETY: in the child.
    unsafe { a.exec.child(a.report, a.master, a.enter_by_write) }
}

/// clone3(2) with a stack of the child's own: the child calls `entry(arg)`
/// there and never returns; the parent gets the pid (or -1, errno set).
///
/// # Safety
/// `args` must name a stack (and CLONE_VM|CLONE_VFORK, so the parent waits
/// while the child uses its memory); `entry` must never return.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vfork(
    args: &CloneArgs,
    entry: unsafe extern "C" fn(*const libc::c_void) -> !,
    arg: *const libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: per the contract. The kernel starts the child with rsp at the
    // top of the given stack (16-byte aligned), so the call leaves it as the
    // ABI expects; r12 and r13 survive the syscall in both processes.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // The raw syscall returns -errno; callers read errno.
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = (-ret) as i32 };
        return -1;
    }
    ret
}

/// Reaps a child that failed before exec (it `_exit`s at once).
fn reap_failed(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child, writing into a local.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(
        program: &str,
        args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> (io::Result<Forked>, String) {
        let (mut r, w) = std::io::pipe().unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (OsString::from(k), v.map(OsString::from)))
            .collect();
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let result = Exec::new(
            OsStr::new(program),
            &args,
            &env,
            Some(Path::new("/")),
            OwnedFd::from(w),
            Vec::new(),
        )
        .and_then(Exec::spawn);
        let mut out = String::new();
        if result.is_ok() {
            r.read_to_string(&mut out).unwrap();
        }
        (result, out)
    }

    fn wait(f: &Forked) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child.
        assert_eq!(
            unsafe { libc::waitpid(f.pid as i32, &mut status, 0) },
            f.pid as i32
        );
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_child_gets_its_args_env_cwd_and_output_and_runs_in_its_own_group() {
        let (f, out) = run(
            "sh",
            &[
                "-c",
                "echo \"$A $0 $(pwd) $(cut -d' ' -f5 /proc/$$/stat) $$\"; echo err >&2; exit 3",
                "zero",
            ],
            &[("A", Some("set")), ("HOME", None)],
        );
        let f = f.unwrap();
        assert_eq!(wait(&f), 3);
        let pid = f.pid.to_string();
        assert_eq!(out, format!("set zero / {pid} {pid}\nerr\n"));
    }

    #[test]
    fn a_program_that_cannot_run_is_an_error_naming_why() {
        let (f, _) = run("no-such-program-here", &[], &[]);
        assert_eq!(f.unwrap_err().kind(), io::ErrorKind::NotFound);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let (f, _) = run(plain.to_str().unwrap(), &[], &[]);
        assert_eq!(f.unwrap_err().raw_os_error(), Some(libc::EACCES));
    }
}
