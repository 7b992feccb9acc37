//! The lan manager's files under `<dir>/.allexlanmanager`, written atomically.
//!
//! `needs` is the operator's list (AllexJS format) and must survive anything;
//! `generation` reserves blocks of generation numbers so none is ever reused
//! across restarts without an fsync per grant; `running` is an advisory record
//! of which master ran which need, read after a restart to hold those needs
//! for their master during the settle period.

use allex_protocol::{FileError, Need, NeedsFile};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Generation numbers reserved on disk at a time.
pub const GENERATION_BLOCK: u64 = 1 << 16;

/// Why a file could not be read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O operation on a path failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The needs file does not parse; the lan manager refuses to start on it.
    #[error(transparent)]
    BadNeeds(#[from] FileError),
    /// The generation file holds something other than a number.
    #[error("{}: not a generation number: {text:?}", path.display())]
    BadGeneration {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a need ran before a restart, as remembered in the `running` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningHint {
    /// The master that ran it.
    pub master: String,
    /// The generation it ran under.
    pub generation: u64,
}

/// Paths of the lan manager's files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    needs: PathBuf,
    running: PathBuf,
    generation: PathBuf,
}

impl Store {
    /// Uses `<workdir>/.allexlanmanager`, creating it when missing.
    pub fn open(workdir: &Path) -> Result<Store, StoreError> {
        let dir = workdir.join(".allexlanmanager");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Store {
            needs: dir.join("needs"),
            running: dir.join("running"),
            generation: dir.join("generation"),
            dir,
        })
    }

    /// The needs file's path.
    pub fn needs_path(&self) -> &Path {
        &self.needs
    }

    /// Reads the needs; a missing file is created as `[]`, a bad one is an error.
    pub fn load_needs(&self) -> Result<Vec<Need>, StoreError> {
        match fs::read_to_string(&self.needs) {
            Ok(text) => Ok(NeedsFile::parse(&self.needs, &text)?.0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomic(&self.needs, b"[]\n").map_err(io_err(&self.needs))?;
                Ok(Vec::new())
            }
            Err(e) => Err(io_err(&self.needs)(e)),
        }
    }

    /// Replaces the needs file; when this returns Ok the new list is on disk.
    pub fn write_needs(&self, needs: &[Need]) -> Result<(), StoreError> {
        let text = NeedsFile(needs.to_vec()).to_text();
        write_atomic(&self.needs, text.as_bytes()).map_err(io_err(&self.needs))
    }

    /// The highest generation bound reserved so far (0 when none).
    pub fn load_generation(&self) -> Result<u64, StoreError> {
        match fs::read_to_string(&self.generation) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| StoreError::BadGeneration {
                    path: self.generation.clone(),
                    text: text.chars().take(64).collect(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&self.generation)(e)),
        }
    }

    /// Reserves every generation below `bound`; durable when this returns Ok.
    pub fn write_generation(&self, bound: u64) -> Result<(), StoreError> {
        write_atomic(&self.generation, format!("{bound}\n").as_bytes())
            .map_err(io_err(&self.generation))
    }

    /// Which need ran on which master before a restart; advisory, so faults only log.
    pub fn load_running(&self) -> HashMap<String, RunningHint> {
        match fs::read_to_string(&self.running) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %self.running.display(), "ignoring unreadable running file: {e}");
                HashMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %self.running.display(), "ignoring running file: {e}");
                HashMap::new()
            }
        }
    }

    /// Records which need runs on which master.
    pub fn write_running(&self, running: &HashMap<String, RunningHint>) -> Result<(), StoreError> {
        let text = serde_json::to_vec(running).unwrap_or_else(|_| b"{}".to_vec());
        write_atomic(&self.running, &text).map_err(io_err(&self.running))
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
///
/// Temp file in the same directory, fsync, rename over the target, fsync the
/// directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    // Unique per write: two writes of the same file may overlap in time.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{seq}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_needs_file_is_created_empty_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.load_needs().unwrap(), vec![]);
        assert_eq!(fs::read_to_string(s.needs_path()).unwrap(), "[]\n");
        let needs = vec![Need::new("m", "A"), Need::new("m", "B")];
        s.write_needs(&needs).unwrap();
        assert_eq!(s.load_needs().unwrap(), needs);
        let leftovers: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn write_into_missing_directory_fails_and_keeps_nothing() {
        let d = tempfile::tempdir().unwrap();
        let e = write_atomic(&d.path().join("nope/needs"), b"[]").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn generation_and_running_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.load_generation().unwrap(), 0);
        s.write_generation(65536).unwrap();
        assert_eq!(s.load_generation().unwrap(), 65536);
        let mut r = HashMap::new();
        r.insert(
            "A".to_string(),
            RunningHint {
                master: "m1".into(),
                generation: 3,
            },
        );
        s.write_running(&r).unwrap();
        assert_eq!(s.load_running(), r);
        fs::write(d.path().join(".allexlanmanager/running"), "garbage").unwrap();
        assert!(s.load_running().is_empty());
    }
}
