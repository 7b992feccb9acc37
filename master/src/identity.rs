//! The master's secret: created on first start, kept owner-only in the
//! runtime directory, presented in every hello so that the lan manager can
//! tell this master from anything else that says its name.

use rand::Rng;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The secret's file name inside the runtime directory.
pub const SECRET_FILE: &str = "allexmaster.secret";

/// Why the secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The secret file.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// Other users may read it: it is no secret any more.
    #[error("{}: readable or writable by other users (mode {mode:o}); remove it to create a new identity, then run `allexlanmanager master forget NAME`", path.display())]
    Exposed {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It does not hold a secret of the expected shape.
    #[error("{}: not a secret written by allexmaster", path.display())]
    Malformed {
        /// The secret file.
        path: PathBuf,
    },
}

/// Reads `<runtimedir>/allexmaster.secret`, creating it (mode 0600) on first start.
pub fn load_or_create(runtimedir: &Path) -> Result<String, IdentityError> {
    let path = runtimedir.join(SECRET_FILE);
    let io = |cause| IdentityError::Io {
        path: path.clone(),
        cause,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            let bytes: [u8; 32] = rand::rng().random();
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            tracing::info!(path = %path.display(), "created this master's secret");
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed { path, mode });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    let secret = text.trim();
    if secret.len() < 16 || secret.len() > 256 || secret.chars().any(|c| c.is_control()) {
        return Err(IdentityError::Malformed { path });
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        assert_eq!(first.len(), 64);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("readable or writable by other users"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), first);
    }
}
