//! `allex-testsvc`: the service the master spawns in tests; see `allex_sim::testsvc`.

use std::process::ExitCode;

fn main() -> ExitCode {
    allex_sim::logging::init();
    match allex_sim::testsvc::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allex-testsvc: {e}");
            ExitCode::FAILURE
        }
    }
}
