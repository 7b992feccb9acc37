//! Finding the workspace's binaries (allexmaster, allexlanmanager, allex-testsvc, allex-sim).

use std::path::{Path, PathBuf};

/// Overrides where binaries are looked up.
pub const ENV_BIN_DIR: &str = "ALLEX_BIN_DIR";

/// A workspace binary that could not be found.
#[derive(Debug, thiserror::Error)]
#[error("binary {name} not found in {searched}; run `cargo build --workspace`")]
pub struct BinaryNotFound {
    /// The binary's name.
    pub name: String,
    /// The directories searched, for the message.
    pub searched: String,
}

/// Finds a workspace binary by name.
///
/// `ALLEX_BIN_DIR` wins when set. Otherwise the directories above the running
/// executable are searched, because a test executable lives in
/// `target/<profile>/deps` while the binaries sit in `target/<profile>`.
pub fn binary(name: &str) -> Result<PathBuf, BinaryNotFound> {
    let dirs = search_dirs();
    for dir in &dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(BinaryNotFound {
        name: name.to_string(),
        searched: if dirs.is_empty() {
            "(no directory: ALLEX_BIN_DIR unset and the current executable unknown)".into()
        } else {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

fn search_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_BIN_DIR) {
        return vec![PathBuf::from(dir)];
    }
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    // Two levels up covers target/debug/deps and target/debug/examples; a third
    // would leave the profile directory and could pick a stale other profile.
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(Path::to_path_buf)
        .collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_itself_and_the_fix() {
        let e = binary("no-such-allex-binary").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no-such-allex-binary"), "{msg}");
        assert!(msg.contains("cargo build --workspace"), "{msg}");
    }
}
