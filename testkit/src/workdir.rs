//! Scratch directories and logs of the components a test starts.
//!
//! `ALLEX_SIM_STDERR=inherit` shows the components' logs on the terminal
//! instead of keeping them in files in their directories;
//! `ALLEX_SIM_KEEP=1` keeps those directories after the test.

use crate::error::HarnessError;
use crate::process::Stderr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a component may take to start, and a CLI call to answer.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// Where a component's stderr goes: a log file in its directory, unless
/// `ALLEX_SIM_STDERR=inherit`.
pub fn stderr_for(log: &Path) -> Stderr {
    match std::env::var("ALLEX_SIM_STDERR").as_deref() {
        Ok("inherit") => Stderr::Inherit,
        Ok("null") => Stderr::Null,
        _ => Stderr::File(log.to_path_buf()),
    }
}

/// A fresh temporary directory with a short path: Unix socket paths must
/// stay under 108 bytes, and TMPDIR can be long.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, HarnessError> {
    let base = if Path::new("/tmp").is_dir() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|source| HarnessError::Io {
            what: format!("creating a temporary directory in {}", base.display()),
            source,
        })?;
    Ok(dir)
}

/// Keeps `dir` on disk when `ALLEX_SIM_KEEP` is set, for post-mortems.
pub fn maybe_keep(dir: tempfile::TempDir) {
    if std::env::var_os("ALLEX_SIM_KEEP").is_some() {
        let path = dir.keep();
        eprintln!("allex-sim: kept {}", path.display());
    }
}

/// The last `n` lines of a log file without colour codes, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            strip_ansi(&lines[lines.len().saturating_sub(n)..].join("\n"))
        }
        Err(_) => String::new(),
    }
}

/// Removes terminal colour sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "time  INFO x"
        );
    }
}
