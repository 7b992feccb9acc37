//! Health checks: what a catalogue entry (or a need, overriding it) asks
//! the master to probe, how often, and after how many failures in a row the
//! child is stopped and reported down as `unhealthy`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a service is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connection to its first port is accepted.
    Tcp,
    /// `GET path` on its http port (else its first port) answers 2xx or 3xx.
    Http,
    /// `command` exits 0.
    Exec,
}

/// A health check, as written in a catalogue entry's or a need's `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp`, `http` or `exec`.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// The HTTP path (`http`); `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The program and its arguments (`exec`), run without a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Milliseconds between the end of one probe and the next.
    #[serde(default = "default_interval")]
    pub intervalms: u64,
    /// Milliseconds a probe may take before it counts as failed.
    #[serde(default = "default_timeout")]
    pub timeoutms: u64,
    /// Failures in a row that stop the child.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

fn default_interval() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    2_000
}
fn default_failures() -> u32 {
    3
}

impl HealthCheck {
    /// What is wrong with it, if anything: the field and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !(10..=86_400_000).contains(&self.intervalms) {
            return Some(("intervalms", "must be from 10 to 86400000"));
        }
        if !(1..=600_000).contains(&self.timeoutms) {
            return Some(("timeoutms", "must be from 1 to 600000"));
        }
        if self.failures == 0 {
            return Some(("failures", "must be at least 1"));
        }
        match self.kind {
            CheckKind::Exec if self.command.first().is_none_or(|c| c.is_empty()) => {
                Some(("command", "an exec check needs a program to run"))
            }
            CheckKind::Http if self.path.as_deref().is_some_and(|p| !p.starts_with('/')) => {
                Some(("path", "must start with /"))
            }
            _ => None,
        }
    }

    /// The HTTP path probed.
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let c: HealthCheck = serde_json::from_str(r#"{"type":"http"}"#).unwrap();
        assert_eq!((c.intervalms, c.timeoutms, c.failures), (10_000, 2_000, 3));
        assert_eq!(c.http_path(), "/");
        assert_eq!(c.problem(), None);
        let exec: HealthCheck = serde_json::from_str(r#"{"type":"exec"}"#).unwrap();
        assert_eq!(exec.problem().map(|p| p.0), Some("command"));
        let fast: HealthCheck = serde_json::from_str(r#"{"type":"tcp","intervalms":1}"#).unwrap();
        assert_eq!(fast.problem().map(|p| p.0), Some("intervalms"));
        assert!(serde_json::from_str::<HealthCheck>(r#"{"type":"tcp","port":1}"#).is_err());
    }
}
