//! The `allex-sim` command line.

use crate::harness::Timings;
use crate::scenarios::{self, ScenarioOptions};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// Drive real allexlanmanager and allexmaster processes through scenarios,
/// checking the system's promises after every step.
#[derive(Debug, Parser)]
#[command(name = "allex-sim", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the scenarios.
    List,
    /// Measure cold start, recovery, footprint and lan manager scale of the
    /// real binaries on this machine, beside the raw fork/exec limit.
    Bench(crate::bench::command::BenchArgs),
    /// Build a LAN of network namespaces (needs root and iproute2): a lan
    /// manager and three masters on four hosts, then show own addresses,
    /// ipaddress placement, a cut host's needs moving and a cross-host lookup.
    Lan {
        /// Longest wait for any one expected outcome, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
        /// The lan manager's grace period for a disconnected master, in milliseconds.
        #[arg(long, default_value_t = 2_000)]
        grace_ms: u64,
        /// The lan manager's heartbeat interval (three missed drop a link), in milliseconds.
        #[arg(long, default_value_t = 500)]
        heartbeat_ms: u64,
        /// Run with fencing: masters stop their children after this many
        /// milliseconds without the lan manager (shorter than the grace).
        #[arg(long)]
        fence_ms: Option<u64>,
        /// Run the control link over TLS, with a CA made for the run.
        #[arg(long)]
        tls: bool,
    },
    /// Run the real lan manager and master state machines under a simulated
    /// clock, network, processes and disk from a seed, invariants after
    /// every event; a failure is shrunk and printed with its seed.
    Dst(crate::dst::command::DstArgs),
    /// Start a lan manager, a master and one service on this machine, show
    /// them, then follow the running list until Ctrl-C.
    Demo {
        /// The lan manager's port on 127.0.0.1 (0 lets the kernel pick).
        #[arg(long, default_value_t = 23552)]
        port: u16,
        /// Exit once the service runs, after showing it.
        #[arg(long)]
        once: bool,
        /// Do not run `cargo build` for allexmaster, allexlanmanager and allex-testsvc.
        #[arg(long)]
        no_build: bool,
    },
    /// Run generated operations (needs, kills, cuts, restarts) from a seed,
    /// invariants after each, then repair everything and expect convergence.
    Random {
        /// The seed; the same seed replays the same operations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Operations per run.
        #[arg(long, default_value_t = 30)]
        steps: usize,
        /// Runs, with seeds seed, seed+1, ...
        #[arg(long, default_value_t = 1)]
        runs: u64,
        /// Masters, each behind its own proxy.
        #[arg(long, default_value_t = 3)]
        masters: usize,
        /// Longest wait for any one expected outcome, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
    },
    /// Replay an operation sequence (as printed by a failing property test or
    /// `allex-sim random`): invariants after each, then repair and convergence.
    Replay {
        /// The operations as a JSON array, e.g.
        /// `[{"op":"add_need","instance":"p0","crash_after_ms":null}]`;
        /// `@FILE` reads them from FILE.
        ops: String,
        /// Masters, each behind its own proxy.
        #[arg(long, default_value_t = 2)]
        masters: usize,
        /// Longest wait for any one expected outcome, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
    },
    /// Run one scenario by name, or `all`.
    Scenario {
        /// The scenario's name (see `allex-sim list`), or `all`.
        name: String,
        /// Masters to start (some scenarios start more).
        #[arg(long, default_value_t = 2)]
        masters: usize,
        /// Needs to add.
        #[arg(long, default_value_t = 4)]
        needs: usize,
        /// Longest wait for any one expected outcome, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
        /// Use the production timings instead of the fast test ones.
        #[arg(long)]
        production_timings: bool,
    },
}

/// Runs a parsed command line; the exit code says whether every scenario passed.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Bench(args) => crate::bench::command::main(args),
        Command::Dst(args) => crate::dst::command::main(args),
        Command::Lan {
            deadline_ms,
            grace_ms,
            heartbeat_ms,
            fence_ms,
            tls,
        } => crate::lan_mode::main(crate::lan_mode::LanModeOptions {
            timings: Timings {
                grace: Duration::from_millis(grace_ms),
                heartbeat: Duration::from_millis(heartbeat_ms),
                fence: fence_ms.map(Duration::from_millis),
                ..Timings::default()
            },
            deadline: Duration::from_millis(deadline_ms),
            echo: true,
            tls,
        }),
        Command::Demo {
            port,
            once,
            no_build,
        } => {
            let opts = crate::demo::DemoOptions {
                port,
                once,
                build: !no_build,
            };
            match crate::demo::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("allex-sim demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::List => {
            for s in scenarios::all() {
                println!("{:<16} {}", s.name, s.about);
            }
            ExitCode::SUCCESS
        }
        Command::Random {
            seed,
            steps,
            runs,
            masters,
            deadline_ms,
        } => {
            let opts = ScenarioOptions {
                masters,
                deadline: Duration::from_millis(deadline_ms),
                ..ScenarioOptions::default()
            };
            let mut failed = 0;
            for s in seed..seed.saturating_add(runs) {
                match scenarios::run_seed(&opts, s, steps) {
                    Ok(report) => print!("{report}"),
                    Err(e) => {
                        failed += 1;
                        println!("random seed={s} steps={steps}: FAILED: {e}");
                    }
                }
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Replay {
            ops,
            masters,
            deadline_ms,
        } => {
            let ops = match parse_ops(&ops) {
                Ok(ops) => ops,
                Err(e) => {
                    eprintln!("allex-sim replay: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = ScenarioOptions {
                masters,
                deadline: Duration::from_millis(deadline_ms),
                ..ScenarioOptions::default()
            };
            match scenarios::run_ops(&opts, &ops) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("replay of {} operations: FAILED: {e}", ops.len());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Scenario {
            name,
            masters,
            needs,
            deadline_ms,
            production_timings,
        } => {
            let opts = ScenarioOptions {
                masters,
                needs,
                timings: if production_timings {
                    Timings::production()
                } else {
                    Timings::default()
                },
                deadline: Duration::from_millis(deadline_ms),
            };
            let chosen = if name == "all" {
                scenarios::all()
            } else {
                match scenarios::find(&name) {
                    Some(s) => vec![s],
                    None => {
                        eprintln!("allex-sim: no scenario {name:?}; `allex-sim list` shows them");
                        return ExitCode::from(2);
                    }
                }
            };
            let mut failed = 0;
            for s in chosen {
                match s.run(&opts) {
                    Ok(report) => print!("{report}"),
                    Err(e) => {
                        failed += 1;
                        println!("scenario {}: FAILED: {e}", s.name);
                    }
                }
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Reads a JSON array of operations, inline or from `@FILE`.
fn parse_ops(arg: &str) -> Result<Vec<crate::ops::Op>, String> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?,
        None => arg.to_string(),
    };
    serde_json::from_str(&text)
        .map_err(|e| format!("the operations are not a JSON array of ops: {e}"))
}
