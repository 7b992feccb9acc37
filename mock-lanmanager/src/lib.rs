//! allex-lanmanager: keeps the needs of the LAN and the services running for
//! them, and hands needs to the masters that connect over WebSocket.
//!
//! One task ([`state::State`]) owns every decision; connection tasks
//! ([`connection`]) only decode, check and forward; port checks, timers and
//! file writes run in their own tasks and report back with events.

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod connection;
pub mod needs_store;
pub mod outbox;
pub mod portcheck;
pub mod ratelimit;
pub mod server;
pub mod settings;
pub mod state;
pub mod status;

pub use server::{Server, StartError};
pub use settings::Settings;
