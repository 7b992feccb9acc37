//! Validation of module and instance names.
//!
//! Names end up in file names under the runtime directory (logs, sockets) and
//! in log lines, so anything that could escape a directory or forge a log line
//! is refused before it is stored anywhere.

use thiserror::Error;

/// Longest accepted module or instance name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("{kind} is empty")]
    Empty {
        /// What the name names (module name, instance name, ...).
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{kind} is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        /// What the name names.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9_.-]`.
    #[error("{kind} {shown} holds the character {bad:?}; only letters, digits, '_', '-' and '.' are allowed")]
    BadChar {
        /// What the name names.
        kind: &'static str,
        /// The name, escaped so that it is safe to print.
        shown: String,
        /// The first refused character.
        bad: char,
    },
    /// The name starts with a dot (hidden files, `.` and `..`).
    #[error("{kind} {shown} starts with '.'")]
    LeadingDot {
        /// What the name names.
        kind: &'static str,
        /// The name, escaped so that it is safe to print.
        shown: String,
    },
}

/// Checks a name for use as a module or instance name; `kind` names it in errors.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            len: name.len(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(NameError::BadChar {
            kind,
            shown: format!("{name:?}"),
            bad,
        });
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot {
            kind,
            shown: format!("{name:?}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for n in ["Time", "allex_timeservice", "svc-1.2", "a"] {
            assert_eq!(validate_name("instance name", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn hostile_names_fail() {
        let long = "a".repeat(4096);
        for n in [
            "",
            "../x",
            "/",
            "a/b",
            "..",
            ".",
            ".hidden",
            "a\0b",
            "a\nb",
            "a\x1b[31m",
            "ä",
            "a b",
            &long,
        ] {
            assert!(validate_name("instance name", n).is_err(), "{n:?}");
        }
    }
}
