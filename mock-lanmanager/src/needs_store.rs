//! The lan manager's files under `<dir>/.allexlanmanager`, written atomically.
//!
//! `needs` is the operator's list (AllexJS format), never written but when
//! missing; `needs.overlay` extends it and `needs.runtime` holds what was
//! changed while running (the only needs file the lan manager writes);
//! `generation` reserves blocks of generation numbers so none is ever reused
//! across restarts without an fsync per grant; `running` is an advisory record
//! of which master ran which need, read after a restart to hold those needs
//! for their master during the settle period.

use allex_protocol::layers::{Layers, RuntimeEntry, Source};
use allex_protocol::subnets::Subnets;
use allex_protocol::FileError;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        cause: io::Error,
    },
    /// The needs file does not parse; the lan manager refuses to start on it.
    #[error(transparent)]
    BadNeeds(#[from] FileError),
    /// The identity file is not a JSON object of names to secret hashes.
    #[error("{}: {message}", path.display())]
    BadMasters {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// This lan manager lost the etcd election; the write was not made.
    #[error("not the leader any more: the write was not made")]
    NotLeader,
    /// etcd refused or did not answer (`--store etcd://`).
    #[error("etcd {what}: {message}")]
    Etcd {
        /// The key or the operation.
        what: String,
        /// What the client said.
        message: String,
    },
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
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Where a need ran before a restart, as remembered in the `running` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningHint {
    /// The master that ran it.
    pub master: String,
    /// The generation it ran under.
    pub generation: Generation,
    /// Where it served, once it did: a restarted lan manager probes these
    /// ports before handing the need to others, as it does past a grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Seen>,
}

/// Where a service served: its master's address and its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The master's advertise address.
    pub address: String,
    /// The service's ports.
    pub ports: allex_protocol::Ports,
}

/// One line of the running journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JournalEntry {
    instance: InstanceName,
    hint: Option<RunningHint>,
}

/// The changes journal `text` holds, in order: each need now running as a
/// hint, or no longer running (`None`).
pub fn journal_entries(
    text: &str,
) -> Result<Vec<(InstanceName, Option<RunningHint>)>, serde_json::Error> {
    text.lines()
        .map(|line| serde_json::from_str::<JournalEntry>(line).map(|e| (e.instance, e.hint)))
        .collect()
}

/// Applies the journal `text` (lines from [`Store::journal_line`]) on top of
/// a snapshot's `hints`, up to the first line that does not parse, whose
/// error is returned: everything after a torn line is lost with it.
pub fn replay_journal(
    hints: &mut HashMap<InstanceName, RunningHint>,
    text: &str,
) -> Result<(), serde_json::Error> {
    for line in text.lines() {
        let entry: JournalEntry = serde_json::from_str(line)?;
        match entry.hint {
            Some(h) => hints.insert(entry.instance, h),
            None => hints.remove(&entry.instance),
        };
    }
    Ok(())
}

/// Paths of the lan manager's files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    needs: PathBuf,
    overlay: PathBuf,
    runtime: PathBuf,
    running: PathBuf,
    journal: PathBuf,
    generation: PathBuf,
    masters: PathBuf,
}

impl Store {
    /// Uses `<workdir>/.allexlanmanager`, creating it when missing.
    pub fn open(workdir: &Path) -> Result<Store, StoreError> {
        let dir = workdir.join(".allexlanmanager");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        sweep_dead_temp_files(&dir);
        Ok(Store {
            needs: dir.join("needs"),
            overlay: dir.join("needs.overlay"),
            runtime: dir.join("needs.runtime"),
            running: dir.join("running"),
            journal: dir.join("running.journal"),
            generation: dir.join("generation"),
            masters: dir.join("masters"),
            dir,
        })
    }

    /// The needs file's path.
    pub fn needs_path(&self) -> &Path {
        &self.needs
    }

    /// The overlay layer's path (`needs.overlay`).
    pub fn overlay_path(&self) -> &Path {
        &self.overlay
    }

    /// The runtime layer's path (`needs.runtime`).
    pub fn runtime_path(&self) -> &Path {
        &self.runtime
    }

    /// Reads and checks the three needs files; a missing `needs` is created
    /// as `[]`, missing layers are empty, a bad file is an error naming its
    /// `file:line:column`.
    pub fn load_layers(&self) -> Result<Layers, StoreError> {
        let needs = match fs::read_to_string(&self.needs) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomic(&self.needs, b"[]\n").map_err(io_err(&self.needs))?;
                "[]".to_string()
            }
            Err(e) => return Err(io_err(&self.needs)(e)),
        };
        let read_layer = |path: &Path| match fs::read_to_string(path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        };
        let overlay = read_layer(&self.overlay)?;
        let runtime = read_layer(&self.runtime)?;
        Ok(Layers::parse(
            Source {
                path: &self.needs,
                text: &needs,
            },
            source(&self.overlay, overlay.as_deref()),
            source(&self.runtime, runtime.as_deref()),
        )?)
    }

    /// Reads `subnets` (a JSON array of addresses and CIDRs); `None` when
    /// there is none, an error naming `file:line:column` when it is bad.
    pub fn load_subnets(&self) -> Result<Option<Subnets>, StoreError> {
        let path = self.dir.join("subnets");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Subnets::parse(&path, &text)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Replaces `needs.runtime`; when this returns Ok the new layer is on disk.
    pub fn write_runtime(&self, runtime: &[RuntimeEntry]) -> Result<(), StoreError> {
        let text = Layers {
            runtime: runtime.to_vec(),
            ..Layers::default()
        }
        .runtime_text();
        write_atomic(&self.runtime, text.as_bytes()).map_err(io_err(&self.runtime))
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

    /// Master identities: name -> SHA-256 of the secret first seen for it.
    ///
    /// A missing file means none is bound yet; an unreadable one is an error,
    /// because starting without it would let anyone claim any name.
    pub fn load_masters(&self) -> Result<BTreeMap<String, String>, StoreError> {
        match fs::read_to_string(&self.masters) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::BadMasters {
                path: self.masters.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_err(&self.masters)(e)),
        }
    }

    /// Replaces the identity file; durable when this returns Ok.
    pub fn write_masters(&self, masters: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let mut text = serde_json::to_string_pretty(masters).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        write_atomic(&self.masters, text.as_bytes()).map_err(io_err(&self.masters))
    }

    /// Reserves every generation below `bound`; durable when this returns Ok.
    pub fn write_generation(&self, bound: u64) -> Result<(), StoreError> {
        write_atomic(&self.generation, format!("{bound}\n").as_bytes())
            .map_err(io_err(&self.generation))
    }

    /// Which need ran on which master before a restart; advisory, so faults only log.
    ///
    /// The snapshot (`running`) is read first, then every change appended to the
    /// journal (`running.journal`) since that snapshot is replayed on top of it.
    pub fn load_running(&self) -> HashMap<InstanceName, RunningHint> {
        let mut hints: HashMap<InstanceName, RunningHint> = match fs::read_to_string(&self.running) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %self.running.display(), "ignoring unreadable running file: {e}");
                HashMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %self.running.display(), "ignoring running file: {e}");
                HashMap::new()
            }
        };
        match fs::read_to_string(&self.journal) {
            Ok(text) => {
                // Only a power loss can cut a line; what follows it is lost too.
                if let Err(e) = replay_journal(&mut hints, &text) {
                    tracing::warn!(path = %self.journal.display(), "ignoring the journal's torn tail: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.journal.display(), "ignoring running journal: {e}")
            }
        }
        hints
    }

    /// Opens the running journal for appending; each change costs one write, no fsync.
    ///
    /// A SIGKILLed lan manager loses nothing it wrote (the page cache survives
    /// the process), which closes the window a debounced snapshot alone leaves.
    pub fn open_running_journal(&self) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
    }

    /// One journal line: `instance` now runs as `hint`, or no longer runs (`None`).
    pub fn journal_line(instance: &InstanceName, hint: Option<&RunningHint>) -> Vec<u8> {
        let entry = JournalEntry {
            instance: instance.clone(),
            hint: hint.cloned(),
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Replaces the snapshot with `running` and empties the journal it covers.
    ///
    /// Called from the state owner, so no change can slip in between the two.
    pub fn compact_running(
        &self,
        running: &HashMap<InstanceName, RunningHint>,
        journal: &File,
    ) -> Result<(), StoreError> {
        self.write_running(running)?;
        journal.set_len(0).map_err(io_err(&self.journal))
    }

    /// Records which need runs on which master.
    ///
    /// Replaced whole (a reader sees the old file or the new one) but not
    /// fsynced: it holds what its journal held, and the journal's lines are
    /// not fsynced either (they survive a killed lan manager in the page
    /// cache, not a power loss). An fsync here made every grant queued behind
    /// the snapshot wait for the disk: the single-kill p99 of the bench.
    pub fn write_running(
        &self,
        running: &HashMap<InstanceName, RunningHint>,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_vec(running).unwrap_or_else(|_| b"{}".to_vec());
        replace(&self.running, &text).map_err(io_err(&self.running))
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn source<'a>(path: &'a Path, text: Option<&'a str>) -> Option<Source<'a>> {
    text.map(|text| Source { path, text })
}

/// Removes temp files a killed lan manager left mid-write (`.<name>.tmp.<pid>.<seq>`),
/// so that crashes do not fill the disk; a live writer's files are left alone.
fn sweep_dead_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, rest)) = name.split_once(".tmp.") else {
            continue;
        };
        if !name.starts_with('.') {
            continue;
        }
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a temp file left by a crash")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), "cannot remove a stale temp file: {e}")
                }
            }
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
///
/// Temp file in the same directory, fsync, rename over the target, fsync the
/// directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, true)
}

/// Like [`write_atomic`] without the fsyncs: whole for every reader and
/// after a killed process, not after a power loss.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, false)
}

fn write_via_temp(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
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
        if durable {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
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
    fn missing_needs_file_is_created_empty_and_the_runtime_layer_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.load_layers().unwrap(), Layers::default());
        assert_eq!(fs::read_to_string(s.needs_path()).unwrap(), "[]\n");
        let mut layers = Layers::default();
        layers.add(allex_protocol::Need::new(
            "m",
            allex_protocol::instance!("A"),
        ));
        layers.add(allex_protocol::Need::new(
            "m",
            allex_protocol::instance!("B"),
        ));
        s.write_runtime(&layers.runtime).unwrap();
        assert_eq!(s.load_layers().unwrap(), layers);
        assert_eq!(
            fs::read_to_string(s.needs_path()).unwrap(),
            "[]\n",
            "needs is not written"
        );
        let leftovers: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept_at_open() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(".allexlanmanager");
        fs::create_dir_all(&dir).unwrap();
        // No process has pid 4194305: above the kernel's largest pid_max.
        let dead = dir.join(".needs.tmp.4194305.7");
        let mine = dir.join(format!(".needs.tmp.{}.7", std::process::id()));
        let other = dir.join("notes.tmp.1.txt");
        for f in [&dead, &mine, &other] {
            fs::write(f, "x").unwrap();
        }
        Store::open(d.path()).unwrap();
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists());
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
            allex_protocol::instance!("A"),
            RunningHint {
                master: "m1".into(),
                generation: Generation(3),
                seen: Some(Seen {
                    address: "10.0.0.1".into(),
                    ports: allex_protocol::Ports {
                        tcp: Some(15000),
                        ..Default::default()
                    },
                }),
            },
        );
        s.write_running(&r).unwrap();
        assert_eq!(s.load_running(), r);
        fs::write(d.path().join(".allexlanmanager/running"), "garbage").unwrap();
        assert!(s.load_running().is_empty());
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    fn hint(m: &str, g: u64) -> RunningHint {
        RunningHint {
            master: m.into(),
            generation: Generation(g),
            seen: None,
        }
    }

    #[test]
    fn journal_replays_over_the_snapshot_and_compaction_empties_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let mut j = s.open_running_journal().unwrap();
        let snap: HashMap<_, _> = [(allex_protocol::instance!("A"), hint("m1", 1))].into();
        s.compact_running(&snap, &j).unwrap();
        use std::io::Write;
        j.write_all(&Store::journal_line(
            &allex_protocol::instance!("B"),
            Some(&hint("m2", 2)),
        ))
        .unwrap();
        j.write_all(&Store::journal_line(&allex_protocol::instance!("A"), None))
            .unwrap();
        let want: HashMap<_, _> = [(allex_protocol::instance!("B"), hint("m2", 2))].into();
        assert_eq!(s.load_running(), want);
        s.compact_running(&want, &j).unwrap();
        assert_eq!(
            fs::metadata(d.path().join(".allexlanmanager/running.journal"))
                .unwrap()
                .len(),
            0
        );
        j.write_all(&Store::journal_line(
            &allex_protocol::instance!("C"),
            Some(&hint("m1", 3)),
        ))
        .unwrap();
        j.write_all(b"{\"instance\":\"D\",\"hi").unwrap();
        let mut want = want;
        want.insert(allex_protocol::instance!("C"), hint("m1", 3));
        assert_eq!(s.load_running(), want, "a torn tail is ignored");
    }
}
