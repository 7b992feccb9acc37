//! `allexlanmanager`: parse the command line, run it.

use allex_lanmanager::cli::Cli;
use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // One line naming the cause chain (a bad needs file: `file:line:column:`),
    // not a Debug dump with a backtrace.
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allexlanmanager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(allex_lanmanager::commands::execute(cli));
    // A deposed leader's writer may be waiting on a frozen etcd link: do
    // not wait for it to end the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
