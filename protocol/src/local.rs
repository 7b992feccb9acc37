//! Messages on the master's Unix socket, `<runtimedirectory>/allexmachinemanager`.
//!
//! Children and the `allexmaster status` CLI speak newline-delimited JSON;
//! every request gets exactly one reply, in order. A child is identified by
//! the socket's peer credentials, never by what it claims to be.

use crate::lan::ErrorCode;
use crate::names::InstanceName;
use crate::types::{MasterStatus, ServiceLocation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// File name of the master's socket inside the runtime directory.
pub const MASTER_SOCKET_NAME: &str = "allexmachinemanager";

/// Child or CLI -> master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LocalRequest {
    /// The calling child is ready to serve (the peer's pid says which child).
    Ready,
    /// Where does the service with this instance name run?
    Lookup {
        /// Instance name.
        instancename: InstanceName,
    },
    /// What the master holds, for `allexmaster status`.
    Status,
}

/// Master -> child or CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LocalReply {
    /// The request was carried out.
    Ack,
    /// Answer to `lookup`; absent when the service does not run.
    Location {
        /// Where it runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<ServiceLocation>,
    },
    /// Answer to `status`.
    Status {
        /// The master's state.
        status: MasterStatus,
    },
    /// The request was refused.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}
