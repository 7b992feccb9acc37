//! The master's Unix socket: `<runtimedirectory>/allexmachinemanager`.
//!
//! Checks on the runtime directory, kept pragmatic so the default `/tmp`
//! works: it is created 0700 when missing; it is refused when owned by
//! another user other than root (that user could swap our socket), and when
//! it is writable by others without the sticky bit (anyone could unlink and
//! replace our socket). `/tmp` is root-owned and sticky, so it passes. The
//! socket itself is created under umask 0177 and chmod'ed 0600, so only our
//! user can connect whatever the directory allows, and a peer whose
//! credentials (SO_PEERCRED) name another user than ours or root is refused
//! even if the socket's mode was loosened later.

use crate::driver::Event;
use allex_protocol::frame::{read_line_frame, write_line_frame, FrameError, MAX_LOCAL_FRAME};
use allex_protocol::local::MASTER_SOCKET_NAME;
use allex_protocol::{LocalReply, LocalRequest};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The runtime directory is unusable or unsafe.
    #[error("runtime directory {}: {problem}", path.display())]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A master already answers on the socket.
    #[error("another allexmaster is running on {} (its socket accepts connections); refusing to start", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Binding failed.
    #[error("cannot listen on {}: {cause}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The fault.
        cause: std::io::Error,
    },
}

/// The master socket's path in a runtime directory.
pub fn socket_path(runtimedir: &Path) -> PathBuf {
    runtimedir.join(MASTER_SOCKET_NAME)
}

/// Creates the runtime directory if needed and refuses an unsafe one.
pub fn check_runtime_dir(dir: &Path) -> Result<(), SocketError> {
    let fail = |problem: String| SocketError::RuntimeDir {
        path: dir.to_path_buf(),
        problem,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create: {e}")))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("cannot restrict to 0700: {e}")))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| fail(format!("cannot stat: {e}")))?;
    if !meta.is_dir() {
        return Err(fail("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(fail(format!(
            "is owned by uid {}, not by this user (uid {me}) or root",
            meta.uid()
        )));
    }
    let mode = meta.mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(fail(format!(
            "is writable by every user without the sticky bit (mode {:o}); anyone could replace the master's socket",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// How long a master on the socket has to answer a status request.
const IN_USE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a master holds the socket at `path`: it accepts a connection
/// and does not close it unanswered. A connect alone is not enough: a child
/// of a master just SIGKILLed may still hold a copy of the listening socket
/// between its fork and exec (moving into its cgroup can take milliseconds),
/// so the kernel queues the connection and then resets it when that child
/// dies. An answer, or none within the patience (a stopped master still
/// holds its runtime directory), counts as in use; end-of-file or a reset
/// means the holder is gone.
fn answers(path: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    if stream.set_read_timeout(Some(IN_USE_PATIENCE)).is_err() {
        return true;
    }
    let mut line = allex_protocol::frame::encode(&allex_protocol::LocalRequest::Status);
    line.push('\n');
    if stream.write_all(line.as_bytes()).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Binds the master socket owner-only, replacing a stale socket file.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let bind_err = |cause| SocketError::Bind {
        path: path.to_path_buf(),
        cause,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if answers(path) {
            return Err(SocketError::InUse {
                path: path.to_path_buf(),
            });
        }
        tracing::info!(path = %path.display(), "replacing a stale master socket");
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    // The umask makes the socket owner-only from its first moment; the chmod
    // after it is a second line in case the umask was not honoured.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// How often the socket file is checked when no inotify event came: a safety
/// net for events inotify cannot see, rare enough to cost nothing idle.
const GUARD_FALLBACK: std::time::Duration = std::time::Duration::from_secs(30);

/// How long after a removal event the master waits before it recreates.
const GUARD_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// How often a failed recreation is retried.
const GUARD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Watches the runtime directory for the socket (or the directory) going away.
///
/// Event-driven, so an idle master does not wake up to look; `None` when
/// inotify is unavailable, and then only the fallback timer looks.
fn watch_runtime_dir(runtimedir: &Path) -> Option<inotify::EventStream<Vec<u8>>> {
    use inotify::{Inotify, WatchMask};
    let result = Inotify::init().and_then(|ino| {
        ino.watches().add(
            runtimedir,
            WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF,
        )?;
        ino.into_event_stream(vec![0u8; 4096])
    });
    match result {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!("cannot watch the runtime directory with inotify ({e}); checking every {GUARD_FALLBACK:?}");
            None
        }
    }
}

/// Serves the socket forever and puts it back when it disappears.
///
/// An operator (or a `/tmp` cleaner) removing the runtime directory must not
/// cut the children off from their master: the children keep running, so the
/// master recreates the directory (0700, with the same checks as at start)
/// and a fresh socket at the same path, and says so in its log. Connections
/// already open are unaffected.
pub async fn serve_guarded(
    runtimedir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
    events: UnboundedSender<Event>,
) {
    use futures_util::StreamExt;
    let mut bound = file_id(&path);
    let mut server = tokio::spawn(serve(listener, events.clone()));
    let mut complained = false;
    let mut watch = watch_runtime_dir(&runtimedir);
    loop {
        let wait = if complained {
            GUARD_RETRY
        } else {
            GUARD_FALLBACK
        };
        match watch.as_mut() {
            // Watched: no timer at all, so an idle master does not wake for it.
            Some(stream) if !complained => {
                if stream.next().await.is_none() {
                    watch = None;
                }
                // Let a `rm -rf` of the directory finish first: a socket
                // recreated under it would make its final rmdir fail.
                tokio::time::sleep(GUARD_SETTLE).await;
            }
            Some(stream) => {
                tokio::select! {
                    event = stream.next() => {
                        if event.is_none() {
                            watch = None;
                        }
                        tokio::time::sleep(GUARD_SETTLE).await;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            None => tokio::time::sleep(wait).await,
        }
        let now = file_id(&path);
        if now.is_some() && now == bound {
            continue;
        }
        if !complained {
            tracing::warn!(path = %path.display(), "the master socket was removed; recreating the runtime directory and the socket");
        }
        match check_runtime_dir(&runtimedir).and_then(|()| bind(&path)) {
            Ok(listener) => {
                server.abort();
                bound = file_id(&path);
                server = tokio::spawn(serve(listener, events.clone()));
                complained = false;
                // The old watch died with the old directory.
                watch = watch_runtime_dir(&runtimedir);
                tracing::warn!(path = %path.display(), "master socket recreated");
            }
            Err(e) => {
                if !complained {
                    tracing::error!(
                        "cannot recreate the master socket (retrying every {GUARD_RETRY:?}): {e}"
                    );
                }
                complained = true;
            }
        }
    }
}

/// Device and inode of a file, to tell our socket from a replacement.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Accepts connections forever, one task per connection.
pub async fn serve(listener: UnixListener, events: UnboundedSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, events.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the master socket failed");
                // Out of file descriptors is the usual cause; give others a moment.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, events: UnboundedSender<Event>) {
    let cred = stream.peer_cred().ok();
    let peer_pid = cred
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok());
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    // The socket is 0600 already; this is the second line for a socket whose
    // mode was loosened after the fact: only our user (and root) may talk.
    let me = nix::unistd::geteuid().as_raw();
    if let Some(uid) = cred.map(|c| c.uid()).filter(|u| *u != me && *u != 0) {
        tracing::warn!(?peer_pid, uid, "refused a connection from another user");
        // Its first request is read (and ignored) so that the answer, not a
        // broken pipe, is what the peer sees.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            read_line_frame::<_, LocalRequest>(&mut read, MAX_LOCAL_FRAME),
        )
        .await;
        let reply = LocalReply::Error {
            code: allex_protocol::ErrorCode::NotYours,
            message: format!("uid {uid} is not the master's user (uid {me}); connection refused"),
        };
        let _ = write_line_frame(&mut write, &reply).await;
        return;
    }
    loop {
        let reply = match read_line_frame::<_, LocalRequest>(&mut read, MAX_LOCAL_FRAME).await {
            Ok(None) => return,
            Ok(Some(req)) => {
                let (tx, rx) = oneshot::channel();
                if events
                    .send(Event::Local {
                        req,
                        peer_pid,
                        reply: tx,
                    })
                    .is_err()
                {
                    return;
                }
                match rx.await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
            Err(FrameError::Decode(e)) => LocalReply::Error {
                code: e.code(),
                message: e.to_string(),
            },
            Err(FrameError::TooLarge { max }) => {
                // The rest of the stream cannot be framed again: say why, then close.
                tracing::warn!(
                    ?peer_pid,
                    "frame over {max} bytes on the master socket; closing"
                );
                let reply = LocalReply::Error {
                    code: allex_protocol::ErrorCode::FrameTooLarge,
                    message: format!("frame over {max} bytes; closing the connection"),
                };
                let _ = write_line_frame(&mut write, &reply).await;
                return;
            }
            Err(e) => {
                tracing::debug!(?peer_pid, error = %e, "master socket connection dropped");
                return;
            }
        };
        if write_line_frame(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Waits (poll, bounded) until `l` has a connection queued.
    fn wait_queued(l: &std::os::unix::net::UnixListener) {
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd that lives across the call.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
    }

    #[tokio::test]
    async fn a_socket_whose_holder_dies_unanswered_is_stale_and_a_silent_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        // The holder goes away with the connection queued: stale.
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let asking = {
            let path = path.clone();
            std::thread::spawn(move || answers(&path))
        };
        wait_queued(&l);
        drop(l);
        assert!(
            !asking.join().unwrap(),
            "a dead holder's socket counts as in use"
        );
        // Nothing listens on the file any more: stale, and bind replaces it.
        assert!(!answers(&path));
        let listener = bind(&path).unwrap();
        // A holder that lives but never answers (a stopped master): in use.
        assert!(answers(&path));
        assert!(matches!(bind(&path), Err(SocketError::InUse { .. })));
        drop(listener);
    }
}
