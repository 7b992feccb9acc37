//! A child's stdout and stderr, kept in a size-bounded, rotated log file.
//!
//! `<runtimedirectory>/logs/<instance>.log` grows to `logmaxbytes`, then is
//! renamed to `<instance>.log.1` (replacing the older one) and started afresh,
//! so one instance never holds more than twice the limit on disk.

use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Name of the log directory inside the runtime directory.
pub const LOG_DIR: &str = "logs";

/// The log file of one instance (the name is validated before it gets here).
pub fn log_path(runtimedir: &Path, instance: &str) -> PathBuf {
    runtimedir.join(LOG_DIR).join(format!("{instance}.log"))
}

/// A rotating log shared by a child's stdout and stderr pumps.
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    inner: Mutex<Option<(tokio::fs::File, u64)>>,
}

impl RotatingLog {
    /// A log at `path` that rotates when it would pass `max` bytes.
    pub fn new(path: PathBuf, max: u64) -> RotatingLog {
        RotatingLog {
            path,
            max: max.max(1),
            inner: Mutex::new(None),
        }
    }

    async fn open(&self) -> std::io::Result<(tokio::fs::File, u64)> {
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        let len = file.metadata().await?.len();
        Ok((file, len))
    }

    /// Appends bytes, rotating first when they would pass the limit.
    pub async fn write(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.inner.lock().await;
        while !bytes.is_empty() {
            let (file, len) = match guard.as_mut() {
                Some(open) => open,
                None => guard.insert(self.open().await?),
            };
            if *len >= self.max {
                file.flush().await?;
                let mut rotated = self.path.clone().into_os_string();
                rotated.push(".1");
                tokio::fs::rename(&self.path, &rotated).await?;
                *guard = None;
                let fresh = tokio::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&self.path)
                    .await?;
                *guard = Some((fresh, 0));
                continue;
            }
            let room = usize::try_from(self.max - *len).unwrap_or(usize::MAX);
            let take = bytes.len().min(room);
            file.write_all(&bytes[..take]).await?;
            *len += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Flushes buffered bytes to the file.
    pub async fn flush(&self) -> std::io::Result<()> {
        if let Some((file, _)) = self.inner.lock().await.as_mut() {
            file.flush().await?;
        }
        Ok(())
    }
}

/// Copies a child's pipe into the log until the pipe closes.
pub async fn pump<R: AsyncRead + Unpin>(mut pipe: R, log: std::sync::Arc<RotatingLog>) {
    // Most services say little: start small and grow only for a chatty one,
    // so that hundreds of quiet children do not each pin 2 x 16 KiB here.
    let mut buf = vec![0u8; 512];
    let mut warned = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                // Keep draining the pipe even when the log fails, so the child
                // never blocks on a full pipe; say so once, not per chunk.
                if let Err(e) = log.write(&buf[..n]).await {
                    if !warned {
                        tracing::warn!(path = %log.path.display(), error = %e, "cannot write child log; dropping its output");
                        warned = true;
                    }
                }
                if n == buf.len() && buf.len() < 16 * 1024 {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "child pipe read failed");
                break;
            }
        }
    }
    if let Err(e) = log.flush().await {
        tracing::warn!(path = %log.path.display(), error = %e, "cannot flush child log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "svc");
        let log = RotatingLog::new(path.clone(), 100);
        for _ in 0..25 {
            log.write(&[b'x'; 33]).await.unwrap();
        }
        log.flush().await.unwrap();
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("logs/svc.log.1"))
            .unwrap()
            .len();
        assert!(now <= 100 && old == 100, "now {now} old {old}");
        assert_eq!((25 * 33) % 100, now as usize % 100);
    }
}
