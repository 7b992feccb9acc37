//! The `allexmaster` binary: parse arguments, run.

use allex_master::cli::{Cli, Command};
use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(allex_master::daemon::run(cli.config.as_deref()))),
        Command::Status { json, socket } => {
            allex_master::status::fetch(cli.config.as_deref(), socket).map(|st| {
                if json {
                    println!("{}", allex_protocol::frame::encode(&st));
                } else {
                    print!("{}", allex_master::status::render(&st));
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allexmaster: {e:#}");
            ExitCode::FAILURE
        }
    }
}
