//! Cleaning up after a master killed with SIGKILL: it leaves its cgroup
//! directory (named in `<runtime dir>/cgroup`) for its next start to sweep,
//! and a test that does not start it again sweeps it here.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup directory a master recorded in `runtime`, if it did.
pub fn recorded(runtime: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(runtime.join("cgroup")).ok()?;
    Some(PathBuf::from(text.trim()))
}

/// Kills what is left in a master's cgroup directory `root` and removes it.
pub fn remove_dir(root: &Path) {
    // Only a cgroup directory, never whatever a stray file names.
    if root.join("cgroup.procs").is_file() {
        remove(root);
    }
}

fn remove(dir: &Path) {
    let subs: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    for sub in &subs {
        remove(sub);
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    // rmdir succeeds once the killed processes are gone.
    let _ = crate::wait::wait_until("a killed cgroup to empty", Duration::from_secs(5), || {
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
}
