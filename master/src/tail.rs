//! `allexmaster logs INSTANCE [--follow] [--lines N]`: a child's output
//! from its log on this machine, following it across rotations.
//!
//! The pump rotates `<instance>.log` to `<instance>.log.1` by a rename, so
//! a follower that keeps its file open reads what was written to it before
//! the rotation to the end, then moves to the new file: no line is lost or
//! printed twice while the follower keeps up with one rotation per poll.

use crate::logs::log_path;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a follower looks for more output.
const POLL: Duration = Duration::from_millis(20);

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// The last `n` lines of the instance's output (the rotated file first).
pub fn last_lines(runtimedir: &Path, instance: &str, n: usize) -> io::Result<Vec<u8>> {
    let path = log_path(runtimedir, instance);
    let mut text = Vec::new();
    for p in [rotated(&path), path.clone()] {
        match File::open(&p) {
            Ok(mut f) => {
                f.read_to_end(&mut text)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    Ok(lines[lines.len().saturating_sub(n)..].concat())
}

/// Whether the instance has a log here at all.
pub fn exists(runtimedir: &Path, instance: &str) -> bool {
    let path = log_path(runtimedir, instance);
    path.exists() || rotated(&path).exists()
}

/// Prints the last `lines` lines, then with `follow` everything written
/// after them, until `out` cannot be written (the reader went).
pub fn run(
    runtimedir: &Path,
    instance: &str,
    lines: usize,
    follow: bool,
    cancel: &AtomicBool,
    out: &mut impl Write,
) -> io::Result<()> {
    let path = log_path(runtimedir, instance);
    // Where the printed tail ends: the current file's length now.
    let mut current = open_at_end(&path)?;
    out.write_all(&last_lines(runtimedir, instance, lines)?)?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut wrote = false;
        if let Some((file, ino)) = current.as_mut() {
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                wrote = true;
            }
            // Rotated away (or removed and written anew): drain done, move on.
            let moved = std::fs::metadata(&path).map(|m| m.ino() != *ino);
            if matches!(moved, Ok(true)) {
                current = open_from_start(&path)?;
                continue;
            }
        } else {
            current = open_from_start(&path)?;
            if current.is_some() {
                continue;
            }
        }
        if wrote {
            out.flush()?;
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn open_from_start(path: &Path) -> io::Result<Option<(File, u64)>> {
    match File::open(path) {
        Ok(f) => {
            let ino = f.metadata()?.ino();
            Ok(Some((f, ino)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_at_end(path: &Path) -> io::Result<Option<(File, u64)>> {
    let opened = open_from_start(path)?;
    if let Some((mut f, ino)) = opened {
        f.seek(SeekFrom::End(0))?;
        return Ok(Some((f, ino)));
    }
    Ok(None)
}
