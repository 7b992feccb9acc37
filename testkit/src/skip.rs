//! Tests that cannot run on this machine say so, the same way everywhere,
//! and where they must run (CI runs as root) a skip is a failure.

use std::io::Write;

/// Environment variable that turns every skip into a failure (`1`).
pub const NO_SKIP_ENV: &str = "ALLEX_NO_SKIP";

/// Environment variable naming a file every skip is appended to, so that
/// a runner that captures test output can still count and show them.
pub const SKIP_LOG_ENV: &str = "ALLEX_SKIP_LOG";

/// Records that `test` did not run because of `why`: prints
/// `SKIPPED <test>: <why>` and appends it to `$ALLEX_SKIP_LOG`; panics
/// instead when `ALLEX_NO_SKIP=1`.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    if std::env::var_os(NO_SKIP_ENV).is_some_and(|v| v == "1") {
        panic!("{line} ({NO_SKIP_ENV}=1: a skip is a failure here)");
    }
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
