//! Why a harness operation failed.

use crate::bins::BinaryNotFound;
use crate::process::ProcError;
use crate::proxy::ProxyError;
use crate::wait::WaitError;

/// Why a harness operation failed.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// A workspace binary is missing.
    #[error(transparent)]
    Binary(#[from] BinaryNotFound),
    /// A process could not be started, waited on or signalled.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// Something did not happen in time.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// The link proxy could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A generated instance name failed the name check.
    #[error(transparent)]
    Name(#[from] allex_protocol::names::NameError),
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The fault.
        source: std::io::Error,
    },
    /// A component did not come up.
    #[error("{what} did not start: {detail}\n--- log tail ---\n{log}")]
    Start {
        /// Which component.
        what: String,
        /// What went wrong.
        detail: String,
        /// The end of its log.
        log: String,
    },
    /// A CLI call exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Cli {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// A CLI printed something that is not the expected JSON.
    #[error("`{command}` printed unexpected output ({source}): {stdout}")]
    Parse {
        /// The command line.
        command: String,
        /// The decoding fault.
        source: serde_json::Error,
        /// What it printed.
        stdout: String,
    },
    /// An expected outcome did not come about.
    #[error("{0}")]
    Expectation(String),
    /// A scenario step failed.
    #[error("step `{step}` failed: {source}{logs}")]
    Step {
        /// The step's description.
        step: String,
        /// Why.
        source: Box<HarnessError>,
        /// The ends of the components' logs (empty when not collected).
        logs: String,
    },
    /// The component is not running (it was killed and not restarted).
    #[error("{0} is not running")]
    NotRunning(String),
}

/// Debug prints the message, so that a test's `.unwrap()` shows the log
/// tail and the command line readably instead of as one escaped string.
impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
