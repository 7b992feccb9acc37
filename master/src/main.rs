//! The `allexmaster` binary: parse arguments, run.

use allex_master::cli::{Cli, Command};
use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Not a command for people: the spawner's step between fork and a
    // `sockets: inherit` service (see `spawner::listen_exec`).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(allex_master::spawner::LISTEN_EXEC) {
        let Some(program) = argv.get(2) else {
            eprintln!(
                "allexmaster: {} needs a program",
                allex_master::spawner::LISTEN_EXEC
            );
            return ExitCode::from(127);
        };
        let e = allex_master::spawner::listen_exec(program, &argv[3..]);
        eprintln!("allexmaster: cannot run {program}: {e}");
        return ExitCode::from(127);
    }
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
        Command::Run => tokio::runtime::Builder::new_current_thread()
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
        Command::Logs {
            instance,
            follow,
            lines,
        } => logs(cli.config.as_deref(), &instance, follow, lines),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allexmaster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `allexmaster logs`: the runtime directory from the config, then the tail.
fn logs(
    config: Option<&std::path::Path>,
    instance: &str,
    follow: bool,
    lines: usize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let cfg = allex_master::config::load_or_default(config)?;
    let rt = &cfg.runtimedirectory;
    if !follow && !allex_master::tail::exists(rt, instance) {
        anyhow::bail!(
            "no log of {instance} in {}: it has not run on this master (or its logs were retired)",
            rt.join(allex_master::logs::LOG_DIR).display()
        );
    }
    let mut out = std::io::stdout().lock();
    let never = std::sync::atomic::AtomicBool::new(false);
    match allex_master::tail::run(rt, instance, lines, follow, &never, &mut out) {
        // The reader went (`| head`): that ends a follow, it is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("reading the log of {instance}")),
    }
}
