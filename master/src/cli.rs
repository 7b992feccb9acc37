//! Command-line arguments of `allexmaster`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// allexmaster: runs services for the allex lan manager on this machine.
#[derive(Debug, Parser)]
#[command(name = "allexmaster", version, about)]
pub struct Cli {
    /// What to do; `run` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Path of the config file; without it, `allexmasterconfig.json` in the
    /// working directory (which `run` writes with the default seed when missing).
    /// A path given here must exist.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master (the default).
    Run,
    /// Show what the running master holds: children and free ports.
    Status {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// The master's socket; default `<runtimedirectory>/allexmachinemanager` from the config.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Print a service's output from its log here (the config's runtime directory).
    Logs {
        /// The instance whose output to print.
        instance: allex_protocol::InstanceName,
        /// Keep printing what it writes, across log rotations, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
    },
}
