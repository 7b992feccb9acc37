//! `NOTIFY_SOCKET`, as `sd_notify(3)` expects it: a datagram socket in the
//! runtime directory where a child may say `READY=1` instead of `ready` on
//! the master's socket. The sender is known by the kernel's credentials,
//! so a child can only speak for itself.

use crate::driver::Event;
use allex_protocol::LocalRequest;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use tokio::sync::mpsc::UnboundedSender;

/// Its file name in the runtime directory.
pub const NOTIFY_SOCKET_NAME: &str = "notify";

/// Binds the socket at `path` (replacing a stale one) and reads it on a
/// thread of its own for as long as the master runs.
pub fn serve(path: &Path, events: UnboundedSender<Event>) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
    setsockopt(&sock, sockopt::PassCred, &true).map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || read(sock, events))?;
    Ok(())
}

fn read(sock: UnixDatagram, events: UnboundedSender<Event>) {
    let mut buf = [0u8; 4096];
    loop {
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (len, pid) = match recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(msg) => {
                let pid = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(cred) => u32::try_from(cred.pid()).ok(),
                        _ => None,
                    })
                });
                (msg.bytes, pid)
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET stopped reading");
                return;
            }
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        if !text.lines().any(|l| l == "READY=1") {
            continue;
        }
        let Some(pid) = pid else { continue };
        let (reply, _) = tokio::sync::oneshot::channel();
        if events
            .send(Event::Local {
                req: LocalRequest::Ready,
                peer_pid: Some(pid),
                reply,
            })
            .is_err()
        {
            return;
        }
    }
}
