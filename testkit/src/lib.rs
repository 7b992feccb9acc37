//! allex-testkit: the one set of test pieces every crate of allex-rs uses.
//!
//! Real `allexlanmanager` and `allexmaster` processes in their own
//! directories ([`LanManager`], [`Master`]), a fake master that speaks the
//! real protocol over a real WebSocket ([`FakeMaster`]), one admin client
//! ([`AdminClient`]), real listening ports, and waiting with deadlines.
//! Everything is killed when dropped, so tests run in parallel and leave no
//! process behind, even when they panic.
//!
//! It depends on the protocol crate alone, so the lan manager's and the
//! master's own tests take it without depending on each other.
//!
//! The crate README follows.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod admin;
pub mod bins;
pub mod browser;
pub mod cgroups;
pub mod error;
pub mod etcd;
pub mod fake_master;
pub mod http;
pub mod lanmanager;
pub mod link;
pub mod master;
pub mod pki;
pub mod ports;
pub mod process;
pub mod procscan;
pub mod proxy;
pub mod skip;
pub mod timings;
pub mod wait;
pub mod workdir;

pub use admin::AdminClient;
pub use bins::binary;
pub use error::HarnessError;
pub use fake_master::{hello, FakeMaster, FakeMasterError};
pub use http::{HttpAnswer, HttpClient};
pub use lanmanager::{LanManager, LanOptions};
pub use master::{testsvc_spec, Inherited, Master, MasterOptions};
pub use ports::{port_block, AcceptingPorts, Listening};
pub use process::{Proc, Stderr};
pub use proxy::Proxy;
pub use skip::skip;
pub use timings::Timings;
pub use wait::{read_port_banner, wait_port_accepts, wait_until, Banner, SOON};
pub use workdir::{log_tail, START_DEADLINE};
