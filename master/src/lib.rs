//! allexmaster: spawns and supervises services on one machine for the lan manager.
//!
//! One task ([`state::State`]) owns children, ports, needs and the link queue;
//! the link ([`link`]), the Unix socket server ([`socket`]), the spawner
//! thread ([`spawner`]) and child waiters feed it [`state::Event`]s.

#![warn(missing_docs)]

pub mod child_handle;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fdlimit;
pub mod identity;
pub mod link;
pub mod logs;
pub mod ports;
pub mod retention;
pub mod socket;
pub mod spawner;
pub mod state;
pub mod status;
