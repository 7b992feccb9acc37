//! Protocol versioning: a peer on another major version is refused at hello.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A protocol version; minor versions only add optional fields and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ProtocolVersion {
    /// Incompatible changes bump this; peers must agree on it.
    pub major: u16,
    /// Compatible additions bump this.
    pub minor: u16,
}

/// The version this build speaks.
/// 2.0: `hello` carries the master's `secret` (a first-round master is refused with
/// `version_mismatch`, which says what is wrong, instead of a missing field).
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 2, minor: 0 };

impl ProtocolVersion {
    /// Whether a peer speaking `other` can be served by this build.
    pub fn compatible_with(&self, other: &ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
