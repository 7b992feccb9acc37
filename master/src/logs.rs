//! A child's output (stdout and stderr on one pipe), kept in a size-bounded,
//! rotated log file.
//!
//! `<runtimedirectory>/logs/<instance>.log` grows to `logmaxbytes`, then is
//! renamed to `<instance>.log.1` (replacing the older one) and started afresh,
//! so one instance never holds more than twice the limit on disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::unix::pipe::Receiver;

/// Name of the log directory inside the runtime directory.
pub const LOG_DIR: &str = "logs";

/// A log file silent this long is closed (and its read buffer freed), so that
/// hundreds of quiet children hold no descriptor and no buffer in the master;
/// it is reopened on the next output.
const IDLE_CLOSE: Duration = Duration::from_secs(2);

/// Idle closes are due on whole multiples of this since the master started,
/// so that children which spoke together (a cold start) are closed together
/// in one wake-up instead of one wake-up each.
const CLOSE_GRID: Duration = Duration::from_secs(1);

/// When a log silent from now on is closed: [`IDLE_CLOSE`] from now, rounded
/// up to the [`CLOSE_GRID`].
fn close_due(now: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let since = (now + IDLE_CLOSE).saturating_duration_since(epoch);
    let grid = CLOSE_GRID.as_nanos();
    let ticks = since.as_nanos().div_ceil(grid);
    let rounded = u64::try_from(ticks.saturating_mul(grid)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(rounded)
}

/// First read buffer; doubles while reads fill it, up to [`MAX_BUF`].
const MIN_BUF: usize = 512;
/// Largest read buffer of a chatty child.
const MAX_BUF: usize = 16 * 1024;

/// The log file of one instance (the name is validated before it gets here).
pub fn log_path(runtimedir: &Path, instance: &str) -> PathBuf {
    runtimedir.join(LOG_DIR).join(format!("{instance}.log"))
}

/// A rotating log, owned by its child's pump.
///
/// Writes go straight to the file: appending a chunk to a local file lands
/// in the page cache in microseconds, cheaper than a blocking-pool hop per
/// chunk (which also grew a thread per chatty child during a cold start).
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    open: Option<(File, u64)>,
}

impl RotatingLog {
    /// A log at `path` that rotates when it would pass `max` bytes.
    pub fn new(path: PathBuf, max: u64) -> RotatingLog {
        RotatingLog {
            path,
            max: max.max(1),
            open: None,
        }
    }

    fn open(&self) -> std::io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }

    /// Opens (creating) the file now, on the calling thread, so that the
    /// costly part (a directory entry and an inode) is not paid on the async
    /// runtime; a failure is left to the first write to report.
    pub fn open_early(&mut self) {
        if self.open.is_none() {
            self.open = self.open().ok();
        }
    }

    /// Whether the file is open now.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Closes the file; the next write reopens it.
    pub fn close(&mut self) {
        self.open = None;
    }

    /// Appends bytes, rotating first when they would pass the limit.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let (file, len) = match self.open.as_mut() {
                Some(open) => open,
                None => self.open.insert(self.open()?),
            };
            if *len >= self.max {
                self.open = None;
                let mut rotated = self.path.clone().into_os_string();
                rotated.push(".1");
                std::fs::rename(&self.path, &rotated)?;
                let fresh = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&self.path)?;
                self.open = Some((fresh, 0));
                continue;
            }
            let room = usize::try_from(self.max - *len).unwrap_or(usize::MAX);
            let take = bytes.len().min(room);
            file.write_all(&bytes[..take])?;
            *len += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }
}

/// Copies a child's output pipe into its log until every writer has closed it.
pub async fn pump(pipe: Receiver, mut log: RotatingLog) {
    // Empty while idle: most services say little, and hundreds of quiet
    // children should not each pin a buffer here.
    let mut buf: Vec<u8> = Vec::new();
    let mut warned = false;
    loop {
        let readable = if log.is_open() {
            let due = close_due(Instant::now());
            match tokio::time::timeout_at(due.into(), pipe.readable()).await {
                Ok(r) => r,
                Err(_) => {
                    log.close();
                    buf = Vec::new();
                    continue;
                }
            }
        } else {
            pipe.readable().await
        };
        if let Err(e) = readable {
            tracing::debug!(error = %e, "child pipe failed");
            break;
        }
        if buf.is_empty() {
            buf.resize(MIN_BUF, 0);
        }
        match pipe.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Keep draining the pipe even when the log fails, so the child
                // never blocks on a full pipe; say so once, not per chunk.
                match log.write(&buf[..n]) {
                    Ok(()) => crate::metrics::metrics().log_written(n),
                    Err(e) if !warned => {
                        tracing::warn!(path = %log.path.display(), error = %e, "cannot write child log; dropping its output");
                        warned = true;
                    }
                    Err(_) => {}
                }
                if n == buf.len() && buf.len() < MAX_BUF {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(error = %e, "child pipe read failed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "svc");
        let mut log = RotatingLog::new(path.clone(), 100);
        for i in 0..25 {
            log.write(&[b'x'; 33]).unwrap();
            // Reopening (after an idle close) carries on from the file's length.
            if i % 7 == 0 {
                log.close();
            }
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("logs/svc.log.1"))
            .unwrap()
            .len();
        assert!(now <= 100 && old == 100, "now {now} old {old}");
        assert_eq!((25 * 33) % 100, now as usize % 100);
    }

    #[test]
    fn idle_closes_fall_on_the_grid() {
        let a = close_due(Instant::now());
        let b = close_due(Instant::now() + Duration::from_millis(300));
        let c = close_due(Instant::now() + CLOSE_GRID);
        assert!(a >= Instant::now() + IDLE_CLOSE - Duration::from_millis(50));
        assert!(b >= a && b <= a + CLOSE_GRID);
        assert!(
            c > a
                && c.duration_since(a)
                    .as_nanos()
                    .is_multiple_of(CLOSE_GRID.as_nanos())
        );
    }

    #[tokio::test]
    async fn pump_keeps_both_streams_and_closes_the_file_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "svc");
        let (mut tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
        let log = RotatingLog::new(path.clone(), 1 << 20);
        let task = tokio::spawn(pump(rx, log));
        tx.write_all(b"one\n").await.unwrap();
        // The open log file shows up among our descriptors until it idles out.
        let target = std::fs::canonicalize(dir.path())
            .unwrap()
            .join("logs/svc.log");
        let holds_log = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .any(|p| p == target)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !holds_log() {
            assert!(std::time::Instant::now() < deadline, "log never opened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline =
            std::time::Instant::now() + IDLE_CLOSE + CLOSE_GRID + Duration::from_secs(10);
        while holds_log() {
            assert!(std::time::Instant::now() < deadline, "idle log kept open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx.write_all(b"two\n").await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }
}
