//! The generation of a grant: which run of a need a message is about.
//!
//! Every grant gets a generation the lan manager never handed out before, so
//! a late `spawned` or `down` from an earlier run can be told from news about
//! the current one. A newtype, rather than a bare `u64`, keeps generations
//! apart from pids, sequence numbers and counts they sit beside; on the wire
//! it is the plain number.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A grant's generation number; on the wire a plain unsigned integer.
///
/// The number is public: any `u64` is a generation, and tests match on it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(transparent)]
pub struct Generation(pub u64);

impl Generation {
    /// Its number, for files and logs that hold it raw.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The one after it, or `None` at the end of the number space.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }
}

/// The schema is `u64`'s, inlined, so the committed schemas describe the
/// field, not the type.
impl JsonSchema for Generation {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        u64::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        u64::json_schema(generator)
    }
}

impl From<u64> for Generation {
    fn from(n: u64) -> Generation {
        Generation(n)
    }
}

impl From<Generation> for u64 {
    fn from(g: Generation) -> u64 {
        g.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_a_plain_number_on_the_wire() {
        let g = Generation(42);
        assert_eq!(serde_json::to_string(&g).ok().as_deref(), Some("42"));
        let back: Result<Generation, _> = serde_json::from_str("42");
        assert_eq!(back.ok(), Some(g));
        assert!(serde_json::from_str::<Generation>("-1").is_err());
        assert!(serde_json::from_str::<Generation>("\"42\"").is_err());
    }

    #[test]
    fn next_refuses_to_wrap() {
        assert_eq!(Generation(1).next(), Some(Generation(2)));
        assert_eq!(Generation(u64::MAX).next(), None);
    }
}
