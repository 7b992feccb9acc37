//! allex-sim: start real lan managers, masters and test services over real
//! sockets, drive them, and check the promises of the system.
//!
//! The building blocks are usable from plain `#[test]`s and from
//! `#[tokio::test]`s alike: waiting is blocking with deadlines, and the
//! proxy runs on its own thread.
//!
//! The crate README follows.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod bench;
pub mod bins;
pub mod cli;
pub mod demo;
pub mod dst;
pub mod harness;
pub mod invariants;
pub mod lan_mode;
pub mod logging;
pub mod netns;
pub mod ops;
pub mod ports;
pub mod process;
pub mod procscan;
pub mod proxy;
pub mod scenarios;
pub mod skip;
pub mod strategy;
pub mod testsvc;
pub mod virtual_master;
pub mod wait;

pub use bins::binary;
pub use ports::port_block;
pub use process::{Proc, Stderr};
pub use proxy::Proxy;
pub use skip::skip;
pub use wait::{read_port_banner, wait_port_accepts, wait_until, Banner};
