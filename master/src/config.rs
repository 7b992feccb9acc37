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
    /// A config named on the command line does not exist.
    #[error("{}: no such config file (the default seed is written only for ./{} when no --config is given)", path.display(), allex_protocol::config::CONFIG_FILE_NAME)]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// Both names of the config exist: which one is meant is not ours to guess.
    #[error("both {} and {} exist: remove one (AllexJS reads the second)", plain.display(), hidden.display())]
    Both {
        /// `allexmasterconfig.json`.
        plain: PathBuf,
        /// `.allexmasterconfig.json`.
        hidden: PathBuf,
    },
    /// The missing file could not be written.
    #[error("{}: cannot write the default config: {cause}", path.display())]
    WriteDefault {
        /// The config path.
        path: PathBuf,
        /// The fault.
        cause: std::io::Error,
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
                .map_err(|cause| ConfigError::WriteDefault {
                    path: path.to_path_buf(),
                    cause,
                })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(cause) => {
            return Err(ConfigError::WriteDefault {
                path: path.to_path_buf(),
                cause,
            })
        }
    }
    Ok(MasterConfig::load(path)?)
}

/// The config for `run`: a path given must exist; without one, the default
/// file in the working directory, written with the seed when missing.
pub fn load_for_run(given: Option<&Path>) -> Result<MasterConfig, ConfigError> {
    let mut cfg = match given {
        Some(path) => load_existing(path)?,
        None => load_or_create(&default_path(Path::new("."))?)?,
    };
    with_env_token(&mut cfg);
    Ok(cfg)
}

/// The token from `ALLEX_TOKEN` when the config names none (neither `token`
/// nor `tokenfile`), so it need not be written anywhere; and a warning for
/// a token file others may read.
pub fn with_env_token(cfg: &mut MasterConfig) {
    if let Some(file) = &cfg.tokenfile {
        if allex_protocol::config::readable_by_others(file) {
            tracing::warn!(path = %file.display(), "the token file is readable by other users: chmod 600 it");
        }
    }
    if cfg.token.is_none() {
        cfg.token = std::env::var(ENV_TOKEN).ok().filter(|t| !t.is_empty());
    }
}

/// The environment variable a token may come from instead of the config.
pub const ENV_TOKEN: &str = "ALLEX_TOKEN";

/// The config in `dir`: `allexmasterconfig.json` or, as AllexJS names it,
/// `.allexmasterconfig.json`; both existing is refused; neither gives the
/// first name, for the seed.
pub fn default_path(dir: &Path) -> Result<PathBuf, ConfigError> {
    let plain = dir.join(allex_protocol::config::CONFIG_FILE_NAME);
    let hidden = dir.join(allex_protocol::config::ALLEXJS_CONFIG_FILE_NAME);
    match (plain.exists(), hidden.exists()) {
        (true, true) => Err(ConfigError::Both { plain, hidden }),
        (false, true) => Ok(hidden),
        _ => Ok(plain),
    }
}

fn load_existing(path: &Path) -> Result<MasterConfig, ConfigError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::Missing {
            path: path.to_path_buf(),
        }),
        _ => Ok(MasterConfig::load(path)?),
    }
}

/// The config for read-only commands (`status`): a path given must exist;
/// without one, the default file if it exists, else the seed. Never writes.
pub fn load_or_default(given: Option<&Path>) -> Result<MasterConfig, ConfigError> {
    match given {
        Some(path) => load_existing(path),
        None => {
            let path = default_path(Path::new("."))?;
            if path.exists() {
                Ok(MasterConfig::load(&path)?)
            } else {
                Ok(MasterConfig::parse(&path, DEFAULT_CONFIG_TEXT)?)
            }
        }
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
    fn the_config_is_found_under_either_name_and_both_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("allexmasterconfig.json");
        let hidden = dir.path().join(".allexmasterconfig.json");
        assert_eq!(
            default_path(dir.path()).unwrap(),
            plain,
            "neither: the seed's name"
        );
        std::fs::write(&hidden, DEFAULT_CONFIG_TEXT).unwrap();
        assert_eq!(default_path(dir.path()).unwrap(), hidden);
        std::fs::write(&plain, DEFAULT_CONFIG_TEXT).unwrap();
        let e = default_path(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("allexmasterconfig.json") && e.contains(".allexmasterconfig.json"),
            "{e}"
        );
        std::fs::remove_file(&hidden).unwrap();
        assert_eq!(default_path(dir.path()).unwrap(), plain);
    }

    #[test]
    fn lanmanagerportcorrection_shifts_the_port_and_is_checked() {
        let text = |c: i64| {
            DEFAULT_CONFIG_TEXT.replacen(
                '{',
                &format!("{{\n  \"lanmanagerportcorrection\": {c},"),
                1,
            )
        };
        let cfg = MasterConfig::parse(Path::new("c.json"), &text(10)).unwrap();
        assert_eq!(cfg.lanmanager_port(), cfg.lanmanagerport + 10);
        let e = MasterConfig::parse(Path::new("c.json"), &text(-70000)).unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(e.message.contains("outside 1..=65535"), "{e}");
    }

    #[test]
    fn missing_file_gets_the_seed_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allexmasterconfig.json");
        let cfg = load_or_create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), DEFAULT_CONFIG_TEXT);
        assert_eq!(cfg.lanmanageraddress, "127.0.0.1");
    }

    #[test]
    fn a_missing_file_named_on_the_command_line_is_an_error_and_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.json");
        let e = load_for_run(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("typo.json: no such config file"), "{e}");
        assert!(!path.exists());
        let e = load_or_default(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("no such config file"), "{e}");
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
