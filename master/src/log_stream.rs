//! `logs` requests from the lan manager (`allexlanmanager logs NAME`): the
//! same tail as `allexmaster logs`, on a thread of its own, sent back over
//! the link in `log_chunk` frames and ended by `logs_end`.
//!
//! The driver answers these itself: they read files and send frames, which
//! the pure core does not do, and decide nothing about children.

use crate::tail;
use allex_protocol::{InstanceName, MasterToLan};
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// The log requests under way, by the lan manager's id.
#[derive(Default)]
pub struct LogStreams {
    running: HashMap<u64, Arc<AtomicBool>>,
}

/// Sends what the tail writes as `log_chunk` frames; fails once cancelled
/// or once the link is gone, which ends the tail.
struct LinkWriter {
    id: u64,
    link: UnboundedSender<MasterToLan>,
    cancel: Arc<AtomicBool>,
}

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let chunk = MasterToLan::LogChunk {
            id: self.id,
            data: String::from_utf8_lossy(buf).into_owned(),
        };
        self.link
            .send(chunk)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogStreams {
    /// Starts answering request `id` over `link`.
    pub fn start(
        &mut self,
        id: u64,
        runtimedir: PathBuf,
        instance: InstanceName,
        lines: u32,
        follow: bool,
        link: UnboundedSender<MasterToLan>,
    ) {
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(old) = self.running.insert(id, cancel.clone()) {
            old.store(true, Ordering::Relaxed);
        }
        let spawned = std::thread::Builder::new()
            .name(format!("allex-logs-{id}"))
            .spawn(move || {
                let end = |error: Option<String>| {
                    let _ = link.send(MasterToLan::LogsEnd { id, error });
                };
                if !follow && !tail::exists(&runtimedir, &instance) {
                    return end(Some(format!("no log of {instance} on this master")));
                }
                let mut out = LinkWriter {
                    id,
                    link: link.clone(),
                    cancel: cancel.clone(),
                };
                let lines = usize::try_from(lines).unwrap_or(usize::MAX);
                match tail::run(&runtimedir, &instance, lines, follow, &cancel, &mut out) {
                    Ok(()) => end(None),
                    Err(_) if cancel.load(Ordering::Relaxed) => end(Some("cancelled".into())),
                    Err(e) => end(Some(format!("reading the log of {instance}: {e}"))),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a log reader");
        }
    }

    /// Ends request `id` (its reader went).
    pub fn cancel(&mut self, id: u64) {
        if let Some(c) = self.running.remove(&id) {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Ends every request: the link they answer on is gone.
    pub fn cancel_all(&mut self) {
        for (_, c) in self.running.drain() {
            c.store(true, Ordering::Relaxed);
        }
    }
}
