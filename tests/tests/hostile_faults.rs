//! Storage faults under the real lan manager: a full disk and a read-only
//! disk refuse the change and keep the old needs file; a lan manager
//! SIGKILLed while changes stream in always leaves the old or the new file,
//! never a torn one, and never loses an acknowledged need.

use allex_sim::harness::{LanManager, LanOptions, Timings};
use allex_sim::process::run_with_deadline;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// A lan manager with the contract's timings in `dir` (killed with its group on drop).
fn start_lan(dir: &Path) -> LanManager {
    LanManager::start(LanOptions {
        timings: Timings::production(),
        dir: Some(dir.to_path_buf()),
        log_filter: Some("warn".into()),
        ..LanOptions::default()
    })
    .unwrap()
}

/// `allexlanmanager need add` against `addr`; Ok on exit 0, Err(stderr) otherwise.
fn need_add(addr: &str, instance: &str, propertyhash: &str) -> Result<(), String> {
    let bin = allex_sim::binary("allexlanmanager").unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "need",
        "add",
        "--module",
        "svc",
        "--instance",
        instance,
        "--propertyhash",
        propertyhash,
        "--connect",
        addr,
    ])
    .env_remove("ALLEX_TOKEN")
    .env("RUST_LOG", "error");
    let out = run_with_deadline("need add", cmd, DEADLINE).unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(out.stderr)
    }
}

/// The needs in effect as the files beside `file` (`needs.runtime`) say.
fn names(file: &Path) -> BTreeSet<String> {
    allex_testkit::lanmanager::effective_needs(file.parent().unwrap())
        .into_iter()
        .map(|n| n.instancename.into_string())
        .collect()
}

/// A small tmpfs mounted on a directory; unmounted on drop, even after a panic.
struct Tmpfs {
    dir: PathBuf,
    /// Whether a read-only bind mount lies on top of the tmpfs.
    read_only: std::cell::Cell<bool>,
}

impl Tmpfs {
    /// Mounts, or says why it cannot (not root, no mount permission in a container).
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
            read_only: std::cell::Cell::new(false),
        })
    }

    /// Makes the directory read-only for every new open, the way a disk that
    /// went read-only behaves. A read-only bind mount on top, because a plain
    /// `remount,ro` is refused (EBUSY) while the lan manager holds a file open
    /// for writing (its running journal), as it would be on a real disk.
    fn make_read_only(&self) {
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(&self.dir)
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "bind mount failed");
        self.read_only.set(true);
        let ok = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "read-only bind remount failed");
    }

    /// Takes the read-only bind mount away again.
    fn make_writable(&self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "umount of the read-only bind failed");
        self.read_only.set(false);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a process still holding a file cannot keep the mount alive.
        if self.read_only.get() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Starts a lan manager whose `.allexlanmanager` is a 256 KiB tmpfs with
/// one need `A` in it; None (test skipped) when mounting is not possible.
fn on_small_disk(test: &str, root: &Path) -> Option<(Tmpfs, LanManager, PathBuf)> {
    let fs = match Tmpfs::mount(&root.join(".allexlanmanager"), "256k") {
        Ok(fs) => fs,
        Err(why) => {
            allex_sim::skip(test, &format!("cannot mount a tmpfs ({})", why.trim()));
            return None;
        }
    };
    let lm = start_lan(root);
    need_add(&lm.addr().to_string(), "A", "{}").unwrap();
    let file = root.join(".allexlanmanager/needs.runtime");
    Some((fs, lm, file))
}

fn assert_storage_refusal(result: Result<(), String>, what: &str) {
    let err = result
        .err()
        .unwrap_or_else(|| panic!("{what}: need add was acknowledged"));
    assert!(err.contains("storage"), "{what}: {err}");
}

#[test]
fn a_full_disk_refuses_the_change_and_keeps_the_old_needs_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fs, lm, file)) = on_small_disk("disk full", dir.path()) else {
        return;
    };
    let old = std::fs::read(&file).unwrap();
    // Fill every last page of the disk.
    let filler = dir.path().join(".allexlanmanager/filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        use std::io::Write;
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            break;
        }
    }
    drop(f);
    assert_storage_refusal(need_add(&lm.addr().to_string(), "B", "{}"), "disk full");
    assert_eq!(std::fs::read(&file).unwrap(), old, "the old file is intact");
    assert_eq!(names(&file), BTreeSet::from(["A".to_string()]));
    // Nothing changed in memory either: with room again, B is new, not a duplicate.
    std::fs::remove_file(&filler).unwrap();
    need_add(&lm.addr().to_string(), "B", "{}").unwrap();
    assert_eq!(names(&file), BTreeSet::from(["A".into(), "B".into()]));
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    drop(lm);
}

#[test]
fn a_read_only_disk_refuses_the_change_and_keeps_the_old_needs_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some((fs, lm, file)) = on_small_disk("read-only", dir.path()) else {
        return;
    };
    let old = std::fs::read(&file).unwrap();
    fs.make_read_only();
    assert_storage_refusal(need_add(&lm.addr().to_string(), "B", "{}"), "read-only");
    assert_eq!(std::fs::read(&file).unwrap(), old, "the old file is intact");
    fs.make_writable();
    need_add(&lm.addr().to_string(), "B", "{}").unwrap();
    assert_eq!(names(&file), BTreeSet::from(["A".into(), "B".into()]));
    drop(lm);
}

/// Whether a write is under way (or was cut off) in the store directory.
fn has_temp_file(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".tmp."))
        })
        .unwrap_or(false)
}

/// Streams writing at once; each adds its own names in order.
const STREAMS: usize = 4;

fn stream_name(stream: usize, i: usize) -> String {
    format!("S{stream}N{i:04}")
}

#[test]
fn sigkill_while_changes_stream_in_never_tears_the_needs_file_or_loses_an_acknowledged_need() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lm");
    std::fs::create_dir(&root).unwrap();
    let file = root.join(".allexlanmanager/needs.runtime");
    // Large needs make every write long enough to be hit in the middle.
    let props = format!(r#"{{"pad":"{}"}}"#, "p".repeat(100 << 10));
    let mut acked: Vec<BTreeSet<String>> = vec![BTreeSet::new(); STREAMS];
    let mut torn_writes_seen = 0;
    for round in 0..8u32 {
        let mut lm = start_lan(&root);
        let on_disk = names(&file);
        let mut next = Vec::new();
        for (s, acked) in acked.iter().enumerate() {
            // Every acknowledged need survived the kill.
            for a in acked {
                assert!(on_disk.contains(a), "round {round}: acknowledged {a} lost");
            }
            // Each stream adds in order, so the file holds a prefix of it, with
            // at most the one in flight at the kill beyond the acknowledged ones.
            let mine: BTreeSet<String> = on_disk
                .iter()
                .filter(|n| n.starts_with(&format!("S{s}N")))
                .cloned()
                .collect();
            let prefix: BTreeSet<String> = (0..mine.len()).map(|i| stream_name(s, i)).collect();
            assert_eq!(mine, prefix, "round {round}: stream {s} is not a prefix");
            assert!(mine.len() <= acked.len() + 1, "round {round}: {mine:?}");
            next.push(mine.len());
        }

        let done = Arc::new(AtomicUsize::new(0));
        let streamers: Vec<_> = (0..STREAMS)
            .map(|s| {
                let addr = lm.addr().to_string();
                let done = done.clone();
                let props = props.clone();
                let from = next[s];
                std::thread::spawn(move || {
                    let mut ok = Vec::new();
                    for i in from.. {
                        let name = stream_name(s, i);
                        if need_add(&addr, &name, &props).is_err() {
                            break;
                        }
                        ok.push(name);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    ok
                })
            })
            .collect();
        // Kill after a varying number of acknowledgements, while the other
        // streams' changes are being written.
        let target = 1 + (round as usize % 4) * 2;
        allex_sim::wait_until("acknowledgements before the kill", DEADLINE, || {
            (done.load(Ordering::SeqCst) >= target)
                .then_some(())
                .ok_or(())
        })
        .unwrap();
        if round % 2 == 1 {
            // Aim at the middle of a write: kill as soon as a temp file shows.
            let give_up = std::time::Instant::now() + Duration::from_secs(5);
            while !has_temp_file(file.parent().unwrap()) && std::time::Instant::now() < give_up {
                std::thread::yield_now();
            }
        }
        lm.kill().unwrap();
        torn_writes_seen += usize::from(has_temp_file(file.parent().unwrap()));
        for (s, t) in streamers.into_iter().enumerate() {
            acked[s].extend(t.join().unwrap());
        }
        drop(lm);
    }
    let lm = start_lan(&root);
    let on_disk = names(&file);
    for a in acked.iter().flatten() {
        assert!(on_disk.contains(a), "acknowledged {a} lost");
    }
    assert!(on_disk.len() >= 8, "{on_disk:?}");
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files of killed writers left: {leftovers:?}"
    );
    // The aimed kills must really have cut writes short, or this proved nothing.
    assert!(
        torn_writes_seen >= 1,
        "no kill landed in the middle of a write"
    );
    eprintln!("kills that landed mid-write: {torn_writes_seen} of 8");
    drop(lm);
}
