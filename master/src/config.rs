//! Loading `allexmasterconfig.json`, writing the seed when it is missing.

use allex_protocol::{FileError, MasterConfig, DEFAULT_CONFIG_TEXT};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but is wrong; the message names file, line and column.
    #[error(transparent)]
    File(#[from] FileError),
    /// The missing file could not be written.
    #[error("{}: cannot write the default config: {source}", path.display())]
    WriteDefault {
        /// The config path.
        path: PathBuf,
        /// The fault.
        source: std::io::Error,
    },
}

/// Loads the config at `path`; a missing file is created with the seed's text first.
pub fn load_or_create(path: &Path) -> Result<MasterConfig, ConfigError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            tracing::info!(path = %path.display(), "config file missing: writing the default");
            file.write_all(DEFAULT_CONFIG_TEXT.as_bytes())
                .map_err(|source| ConfigError::WriteDefault {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(ConfigError::WriteDefault {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    Ok(MasterConfig::load(path)?)
}

/// Loads the config at `path` if it exists, else the seed (for read-only CLI commands).
pub fn load_or_default(path: &Path) -> Result<MasterConfig, ConfigError> {
    if path.exists() {
        Ok(MasterConfig::load(path)?)
    } else {
        Ok(MasterConfig::parse(path, DEFAULT_CONFIG_TEXT)?)
    }
}

/// The name the lan manager knows this master by: config `name`, else `<hostname>:<runtimedirectory>`.
pub fn master_name(cfg: &MasterConfig) -> String {
    if let Some(name) = &cfg.name {
        return name.clone();
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", cfg.runtimedirectory.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gets_the_seed_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allexmasterconfig.json");
        let cfg = load_or_create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), DEFAULT_CONFIG_TEXT);
        assert_eq!(cfg.lanmanageraddress, "127.0.0.1");
    }

    #[test]
    fn existing_file_is_not_overwritten_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{\n  \"lanmanageraddress\": 7\n}\n").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:", path.display())), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"lanmanageraddress\": 7\n}\n"
        );
    }
}
