//! Logs of instances that no longer run here: kept for `logretentionms` and
//! within `logretentionbytes` together, then deleted, so that `need remove`
//! frees the runtime disk in the end and crash-looped names do not pile up.

use crate::logs::LOG_DIR;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One log file of an instance that is not running.
struct Stale {
    path: std::path::PathBuf,
    modified: SystemTime,
    bytes: u64,
}

/// What a sweep did, and when the next file expires.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Files deleted.
    pub deleted: usize,
    /// How long until the oldest remaining stale file expires, if any is left.
    pub next: Option<Duration>,
}

/// The instance a log file belongs to: `<instance>.log` or `<instance>.log.1`.
fn instance_of(name: &str) -> Option<&str> {
    name.strip_suffix(".log")
        .or_else(|| name.strip_suffix(".log.1"))
}

/// Deletes the logs under `<runtimedir>/logs` of instances not in `live`
/// that are older than `keep` or beyond `max_bytes` together (oldest first).
pub fn sweep(runtimedir: &Path, live: &HashSet<&str>, keep: Duration, max_bytes: u64) -> Sweep {
    let dir = runtimedir.join(LOG_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Sweep::default();
    };
    let mut stale: Vec<Stale> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let instance = instance_of(name.to_str()?)?;
            if live.contains(instance) {
                return None;
            }
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| Stale {
                path: e.path(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                bytes: meta.len(),
            })
        })
        .collect();
    // Newest first: what is kept within the byte budget is the most recent.
    stale.sort_by_key(|f| std::cmp::Reverse(f.modified));
    let now = SystemTime::now();
    let mut kept_bytes = 0u64;
    let mut out = Sweep::default();
    for f in stale {
        let age = now.duration_since(f.modified).unwrap_or_default();
        let over = kept_bytes.saturating_add(f.bytes) > max_bytes;
        if age >= keep || over {
            match std::fs::remove_file(&f.path) {
                Ok(()) => out.deleted += 1,
                Err(e) => {
                    tracing::debug!(path = %f.path.display(), error = %e, "cannot delete an old log")
                }
            }
        } else {
            kept_bytes += f.bytes;
            let left = keep - age;
            out.next = Some(out.next.map_or(left, |n| n.min(left)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: usize) {
        std::fs::write(dir.join(LOG_DIR).join(name), vec![b'x'; bytes]).unwrap();
    }

    #[test]
    fn live_logs_stay_stale_ones_go_by_age_and_by_bytes_oldest_first() {
        let rt = tempfile::tempdir().unwrap();
        std::fs::create_dir(rt.path().join(LOG_DIR)).unwrap();
        write(rt.path(), "Live.log", 100);
        write(rt.path(), "Old.log", 100);
        write(rt.path(), "Old.log.1", 100);
        std::thread::sleep(Duration::from_millis(20));
        write(rt.path(), "New.log", 100);
        write(rt.path(), "notes.txt", 10);
        let live: HashSet<&str> = ["Live"].into_iter().collect();
        // Within age and bytes: nothing goes, and the next expiry is known.
        let s = sweep(rt.path(), &live, Duration::from_secs(60), 1 << 20);
        assert_eq!(s.deleted, 0);
        assert!(s.next.is_some_and(|n| n <= Duration::from_secs(60)));
        // Over the byte budget: the oldest stale files go, the newest stays.
        let s = sweep(rt.path(), &live, Duration::from_secs(60), 150);
        assert_eq!(s.deleted, 2);
        let left: HashSet<String> = std::fs::read_dir(rt.path().join(LOG_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let want: HashSet<String> = ["Live.log", "New.log", "notes.txt"]
            .map(String::from)
            .into();
        assert_eq!(left, want);
        // Past the age: every stale log goes, the live one never.
        let s = sweep(rt.path(), &live, Duration::ZERO, 1 << 20);
        assert_eq!((s.deleted, s.next), (1, None));
        assert!(rt.path().join(LOG_DIR).join("Live.log").exists());
    }
}
