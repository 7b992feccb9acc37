//! `allex-sim`: drives real lan managers and masters through scenarios.

use allex_sim::cli::Cli;
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The simulator runs millions of transitions whose logs would drown
    // its report; RUST_LOG turns them on.
    let dst = matches!(cli.command, allex_sim::cli::Command::Dst(_));
    if !dst || std::env::var_os("RUST_LOG").is_some() {
        allex_sim::logging::init();
    }
    allex_sim::cli::run(cli)
}
