//! The environment a spawned service sees.

use crate::names::InstanceName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `ALLEX_SPAWN`: JSON of [`SpawnInfo`].
pub const ENV_SPAWN: &str = "ALLEX_SPAWN";
/// `sd_listen_fds(3)`: how many listening sockets start at fd 3.
pub const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
/// `sd_listen_fds(3)`: the pid they are meant for.
pub const ENV_LISTEN_PID: &str = "LISTEN_PID";
/// `sd_listen_fds_with_names(3)`: their names, `:`-separated (`tcp:http:ws`).
pub const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first descriptor `sd_listen_fds(3)` hands over.
pub const LISTEN_FDS_START: i32 = 3;
/// Module name.
pub const ENV_MODULE: &str = "ALLEX_MODULE";
/// Instance name.
pub const ENV_INSTANCE: &str = "ALLEX_INSTANCE";
/// Reserved TCP port (absent when the need does not declare tcp).
pub const ENV_TCP_PORT: &str = "ALLEX_TCP_PORT";
/// Reserved HTTP port.
pub const ENV_HTTP_PORT: &str = "ALLEX_HTTP_PORT";
/// Reserved WebSocket port.
pub const ENV_WS_PORT: &str = "ALLEX_WS_PORT";
/// Path of the master's Unix socket.
pub const ENV_MASTER_SOCKET: &str = "ALLEX_MASTER_SOCKET";
/// The runtime directory.
pub const ENV_RUNTIMEDIRECTORY: &str = "ALLEX_RUNTIMEDIRECTORY";

/// What `ALLEX_SPAWN` holds, as AllexJS hands it to a spawned service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SpawnInfo {
    /// Module name.
    pub modulename: String,
    /// Instance name.
    pub instancename: InstanceName,
    /// The need's properties.
    #[cfg_attr(test, proptest(strategy = "crate::need::arb::property_hash()"))]
    pub propertyhash: serde_json::Map<String, serde_json::Value>,
    /// TCP port, or null when not declared.
    pub tcpport: Option<u16>,
    /// HTTP port, or null.
    pub httpport: Option<u16>,
    /// WebSocket port, or null.
    pub wsport: Option<u16>,
    /// The master's pid.
    pub masterpid: u32,
}

impl SpawnInfo {
    /// Reads `ALLEX_SPAWN` from this process's environment.
    pub fn from_env() -> Result<SpawnInfo, SpawnEnvError> {
        let text = std::env::var(ENV_SPAWN).map_err(|_| SpawnEnvError::Missing)?;
        serde_json::from_str(&text).map_err(|e| SpawnEnvError::Invalid(e.to_string()))
    }
}

/// Why `ALLEX_SPAWN` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnEnvError {
    /// Not started by a master.
    #[error("ALLEX_SPAWN is not set: this process was not started by allexmaster")]
    Missing,
    /// Set but not the expected JSON.
    #[error("ALLEX_SPAWN is not valid: {0}")]
    Invalid(String),
}
