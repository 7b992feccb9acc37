//! allex-lanmanager: keeps the needs of the LAN and the services running for
//! them, and hands needs to the masters that connect over WebSocket.
//!
//! Every decision is taken by a pure state machine ([`core::State`]) that
//! does no I/O; its driver ([`driver::Driver`]) executes what it asks for
//! (sends, timers, port checks, file writes) and feeds back what happens.
//! Connection tasks ([`connection`]) only decode, check and forward.

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod connection;
pub mod core;
pub mod driver;
pub mod event_text;
pub mod events;
pub mod http;
pub mod leadership;
pub mod log_relay;
pub mod metrics;
pub mod needs_store;
pub mod outbox;
pub mod portcheck;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod settings;
pub mod status;
pub mod storage;
pub mod tls_listener;

pub use server::{Server, StartError};
pub use settings::Settings;
