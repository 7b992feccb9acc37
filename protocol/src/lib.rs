//! Wire types, files and framing shared by every allex-rs part.
//!
//! Every message on every link, the `allexmasterconfig.json` and needs-file
//! types and the framing of both links live here, so that the master, the lan
//! manager, the simulator and the CLIs cannot disagree about the wire. The
//! message flow, with the reason for each message, is written down in
//! `protocol/README.md`, included below.
#![doc = include_str!("../README.md")]

pub mod client;
pub mod config;
pub mod error;
pub mod events;
pub mod frame;
pub mod generation;
pub mod health;
pub mod keepalive;
pub mod lan;
pub mod layers;
pub mod local;
pub mod monitor;
pub mod names;
pub mod need;
pub mod per_protocol;
pub mod repeat;
pub mod schema;
pub mod sd_notify;
pub mod spawn;
pub mod subnets;
pub mod timing;
pub mod types;
pub mod version;

mod located;

pub use config::{Limits, MasterConfig, ServiceSpec, StopSignal, DEFAULT_CONFIG_TEXT};
pub use error::{DecodeError, FileError};
pub use generation::Generation;
pub use lan::{AdminToLan, ErrorCode, LanToAdmin, LanToMaster, MasterHello, MasterToLan, Opening};
pub use local::{LocalReply, LocalRequest};
pub use names::InstanceName;
pub use need::{Need, NeedsFile};
pub use per_protocol::PerProtocol;
pub use types::{
    Capacity, ChildState, ChildStatus, ExitInfo, InventoryEntry, LanStatus, MasterStatus,
    MasterSummary, NeedState, NeedStatus, PortCounts, Ports, Protocol, RunningService,
    ServiceLocation,
};
pub use version::{ProtocolVersion, PROTOCOL_VERSION};

#[cfg(test)]
mod roundtrip_tests;
