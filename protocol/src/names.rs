//! Validation of module and instance names, and the checked [`InstanceName`].
//!
//! Names end up in file names under the runtime directory (logs, sockets) and
//! in log lines, so anything that could escape a directory or forge a log line
//! is refused before it is stored anywhere. An instance name is checked once,
//! where it enters (a frame decoded, a file parsed, an argument given): past
//! that point the type says it is safe, and no call site checks it again.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
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

/// Whether `name` passes [`validate_name`]; usable in constants, for [`instance!`](crate::instance).
pub const fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN || b[0] == b'.' {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.') {
            return false;
        }
        i += 1;
    }
    true
}

/// An [`InstanceName`] from a string literal, checked when compiled.
///
/// `instance!("Time")` costs no runtime check and cannot fail at run time: a
/// literal that is not a valid name does not compile.
#[macro_export]
macro_rules! instance {
    ($name:literal) => {{
        const _: () = assert!(
            $crate::names::is_valid_name($name),
            "not a valid instance name"
        );
        $crate::names::InstanceName::from_checked_literal($name)
    }};
}

/// What an instance name is called in errors (the field's wire name).
pub(crate) const INSTANCE: &str = "instancename";

/// An instance name that passed [`validate_name`]: safe in a file name and a log line.
///
/// Decoding one from JSON runs the check, so a frame or file holding a bad
/// name fails to decode with the reason (a typed `invalid` for a peer, a
/// located error for a file); on the wire it is the plain string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceName(String);

/// Shown as the quoted string, like the `String` it replaced in messages.
impl fmt::Debug for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl InstanceName {
    /// Checks `name` and keeps it.
    pub fn new(name: impl Into<String>) -> Result<InstanceName, NameError> {
        let name = name.into();
        validate_name(INSTANCE, &name)?;
        Ok(InstanceName(name))
    }

    /// For [`instance!`](crate::instance), whose literal was checked when compiled.
    #[doc(hidden)]
    pub fn from_checked_literal(name: &'static str) -> InstanceName {
        debug_assert!(is_valid_name(name));
        InstanceName(name.to_string())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for InstanceName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InstanceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by instance name are looked up by `&str`.
impl Borrow<str> for InstanceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InstanceName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<InstanceName, NameError> {
        InstanceName::new(s)
    }
}

impl TryFrom<String> for InstanceName {
    type Error = NameError;

    fn try_from(s: String) -> Result<InstanceName, NameError> {
        InstanceName::new(s)
    }
}

impl TryFrom<&str> for InstanceName {
    type Error = NameError;

    fn try_from(s: &str) -> Result<InstanceName, NameError> {
        InstanceName::new(s)
    }
}

impl From<InstanceName> for String {
    fn from(n: InstanceName) -> String {
        n.0
    }
}

impl PartialEq<str> for InstanceName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for InstanceName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for InstanceName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<InstanceName> for str {
    fn eq(&self, other: &InstanceName) -> bool {
        self == other.0
    }
}

impl PartialEq<InstanceName> for &str {
    fn eq(&self, other: &InstanceName) -> bool {
        *self == other.0
    }
}

impl PartialEq<InstanceName> for String {
    fn eq(&self, other: &InstanceName) -> bool {
        *self == other.0
    }
}

impl Serialize for InstanceName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InstanceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<InstanceName, D::Error> {
        let s = String::deserialize(deserializer)?;
        InstanceName::new(s).map_err(serde::de::Error::custom)
    }
}

/// The schema is `String`'s, inlined: the committed schemas stay as they were.
impl JsonSchema for InstanceName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

/// Generates valid instance names for property tests.
#[cfg(test)]
impl proptest::arbitrary::Arbitrary for InstanceName {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<InstanceName>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
            .prop_filter_map("valid name", |s| InstanceName::new(s).ok())
            .boxed()
    }
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
    fn an_instance_name_is_checked_when_decoded() {
        let ok: Result<InstanceName, _> = serde_json::from_str(r#""Time""#);
        assert_eq!(ok.ok().map(String::from).as_deref(), Some("Time"));
        for bad in [r#""../x""#, r#""""#, r#""a\nFAKE""#, "5"] {
            assert!(serde_json::from_str::<InstanceName>(bad).is_err(), "{bad}");
        }
        let e = serde_json::from_str::<InstanceName>(r#""../x""#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(r#"instancename "../x" holds the character '/'"#),
            "{e}"
        );
        let a = InstanceName::new("A").ok();
        assert_eq!(serde_json::to_string(&a).ok().as_deref(), Some(r#""A""#));
    }

    #[test]
    fn the_const_check_agrees_with_validate_name() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let max = "a".repeat(MAX_NAME_LEN);
        for n in [
            "Time", "a", "svc-1.2", "_x", "", "..", ".h", "a/b", "a b", "ä", "a\0", &long, &max,
        ] {
            assert_eq!(is_valid_name(n), validate_name("x", n).is_ok(), "{n:?}");
        }
        assert_eq!(crate::instance!("Time").as_str(), "Time");
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
