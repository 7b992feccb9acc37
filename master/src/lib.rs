//! allexmaster: spawns and supervises services on one machine for the lan manager.
//!
//! Every decision is taken by a pure state machine ([`core::State`]) that
//! does no I/O; its driver ([`driver::Driver`]) executes what it asks for
//! (sends, spawns, signals, timers, log sweeps) and feeds back what
//! happens. The link ([`link`]), the Unix socket server ([`socket`]), the
//! spawner threads ([`spawner`]) and child waiters send the driver
//! [`driver::Event`]s.

#![warn(missing_docs)]

pub mod beat;
pub mod cgroups;
pub mod child_handle;
pub mod cli;
pub mod clone_exec;
pub mod config;
pub mod core;
pub mod daemon;
pub mod driver;
pub mod fdlimit;
pub mod held_sockets;
pub mod identity;
pub mod link;
pub mod log_stream;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod ports;
pub mod probe;
pub mod retention;
pub mod sock_diag;
pub mod socket;
pub mod spawner;
pub mod status;
pub mod tail;
