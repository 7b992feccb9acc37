//! A child's pidfd and process group: signals that can never reach a
//! process that merely inherited a recycled pid.
//!
//! The leader is signalled through its pidfd, which names that process and
//! no other for as long as the descriptor lives. Its process group is
//! signalled by number (there is no pidfd for a group), which is only safe
//! while the leader is not reaped: a zombie leader keeps its pid, and with
//! it the group's id, from being handed out again. So reaping and group
//! signals take one lock, and no group signal goes out after the reap.
//!
//! Where the child has a cgroup of its own ([`ServiceGroup`]), every signal
//! also goes to each process the group holds, and SIGKILL and the reap kill
//! the whole group: what left the process group (`setsid`) goes too.

use crate::cgroups::ServiceGroup;
use allex_protocol::ExitInfo;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The pidfd of `pid`, which must be an unreaped child of ours (so the pid
/// cannot have been reused yet).
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let raw =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
    // descriptor (close-on-exec) or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A running (or exited, not yet reaped) child of this master.
#[derive(Debug)]
pub struct ChildHandle {
    pidfd: OwnedFd,
    pid: u32,
    reaped: Mutex<bool>,
    group: Option<ServiceGroup>,
}

impl ChildHandle {
    /// The handle of a child started with its pidfd (clone3's `CLONE_PIDFD`).
    pub fn new(pid: u32, pidfd: OwnedFd, group: Option<ServiceGroup>) -> ChildHandle {
        ChildHandle {
            pidfd,
            pid,
            reaped: Mutex::new(false),
            group,
        }
    }

    /// Opens the pidfd of `pid`, which must be an unreaped child of ours
    /// (so the pid cannot have been reused yet).
    pub fn open(pid: u32, group: Option<ServiceGroup>) -> std::io::Result<ChildHandle> {
        Ok(ChildHandle::new(pid, pidfd_open(pid)?, group))
    }

    /// The child's pid (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` to the child itself, through its pidfd.
    pub fn signal(&self, sig: i32) {
        // SAFETY: pidfd_send_signal(2) with a null siginfo only signals the
        // process the descriptor names; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            tracing::debug!(pid = self.pid, sig, error = %std::io::Error::last_os_error(), "signal through pidfd failed");
        }
    }

    /// Sends `sig` to the child's whole process group while the child is not
    /// reaped, and to the child through its pidfd (in case it left the group).
    pub fn signal_group(&self, sig: i32) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            if let Ok(pgid) = libc::pid_t::try_from(self.pid) {
                // SAFETY: kill(2) with a negative pid signals a process group;
                // the lock keeps the leader unreaped, so the id is still ours.
                let rc = unsafe { libc::kill(-pgid, sig) };
                if rc != 0 {
                    tracing::debug!(pgid, sig, error = %std::io::Error::last_os_error(), "signal to process group failed");
                }
            }
            self.signal(sig);
            if let Some(g) = &self.group {
                if sig == libc::SIGKILL {
                    g.kill();
                } else {
                    g.signal(sig);
                }
            }
        }
    }

    /// The child's cgroup, when it has one.
    pub fn group(&self) -> Option<&ServiceGroup> {
        self.group.as_ref()
    }

    /// Reaps the exited child: first SIGKILLs what is left of its group
    /// (while the zombie leader still holds the group's id), then collects
    /// its exit status. Call once the pidfd is readable.
    pub fn reap(&self) -> std::io::Result<ExitInfo> {
        let mut reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if *reaped {
            return Err(std::io::Error::from_raw_os_error(libc::ECHILD));
        }
        if let Ok(pgid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: as in signal_group; the leader is a zombie, not reaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        if let Some(g) = &self.group {
            g.kill();
        }
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid(2),
        // which fills it for the child the pidfd names.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) writes only into `info`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        *reaped = true;
        // SAFETY: after a successful waitid for WEXITED, si_status is set.
        let status = unsafe { info.si_status() };
        Ok(match info.si_code {
            libc::CLD_EXITED => ExitInfo {
                code: Some(status),
                signal: None,
                reason: None,
            },
            _ => ExitInfo {
                code: None,
                signal: Some(status),
                reason: None,
            },
        })
    }
}

impl AsRawFd for ChildHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_reach_the_child_and_none_goes_out_after_the_reap() {
        let child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let h = ChildHandle::open(child.id(), None).unwrap();
        h.signal(libc::SIGTERM);
        // The pidfd becomes readable when the child exits; poll(2) waits for it.
        let mut pfd = libc::pollfd {
            fd: h.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
        let exit = h.reap().unwrap();
        assert_eq!(exit.signal, Some(libc::SIGTERM));
        assert!(h.reap().is_err(), "reaped twice");
        // After the reap the group id may belong to someone else: no signal.
        h.signal_group(libc::SIGKILL);
        drop(child);
    }
}
