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
pub mod cli;
pub mod demo;
pub mod dst;
pub mod harness;
pub mod invariants;
pub mod lan_mode;
pub mod logging;
pub mod netns;
pub mod ops;
pub mod scenarios;
pub mod strategy;
pub mod testsvc;
pub mod virtual_master;

// The kit's pieces under the paths scenarios and tests have always used.
pub use allex_testkit::{
    binary, port_block, read_port_banner, wait_port_accepts, wait_until, Banner, Proc, Proxy,
    Stderr,
};
pub use allex_testkit::{bins, ports, process, procscan, proxy, skip, wait};
