//! `allex-sim`: drives real lan managers and masters through scenarios.

use allex_sim::cli::Cli;
use clap::Parser;

fn main() -> std::process::ExitCode {
    allex_sim::logging::init();
    allex_sim::cli::run(Cli::parse())
}
