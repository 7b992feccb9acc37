//! The `allex-sim bench` subcommand: flags, run, table, JSON.

use super::{run_bench, BenchConfig};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `allex-sim bench`; any size flag overrides the preset.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Small sizes, 3 kills, 1 s idle window, 4 x 100 scale run, no targets:
    /// a smoke run of a few seconds, even in a debug build.
    #[arg(long)]
    pub quick: bool,
    /// Also write the report as JSON to this file (`-` for stdout, instead of the table).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Cold-start sizes N, comma-separated (default 50,200,1000).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub sizes: Option<Vec<usize>>,
    /// N of the recovery and footprint figures (default 200).
    #[arg(long, value_name = "N")]
    pub recovery_n: Option<usize>,
    /// Single kills to take the median and p99 over (default 50).
    #[arg(long, value_name = "K")]
    pub kills: Option<usize>,
    /// Idle window of the CPU figure, in seconds (default 30).
    #[arg(long, value_name = "SECS")]
    pub idle_secs: Option<f64>,
    /// Virtual masters of the lan manager scale figure (default 100; 0 skips it).
    #[arg(long, value_name = "V")]
    pub virtual_masters: Option<usize>,
    /// Needs of the lan manager scale figure (default 10000).
    #[arg(long, value_name = "K")]
    pub scale_needs: Option<usize>,
    /// Also run the scale figure with every virtual master claiming every need.
    #[arg(long)]
    pub racing: bool,
    /// Followers of the event-stream figure (default 10; 0 skips it).
    #[arg(long, value_name = "F")]
    pub event_followers: Option<usize>,
    /// Needs added during the event-stream figure (default 10000).
    #[arg(long, value_name = "K")]
    pub event_needs: Option<usize>,
    /// Leader SIGKILLs of the failover figure (default 5; 0 skips them).
    #[arg(long, value_name = "K")]
    pub failovers: Option<usize>,
    /// Only these figures, comma-separated (1-3 run together; default all).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub figures: Option<Vec<u8>>,
}

impl BenchArgs {
    /// The configuration these flags ask for.
    pub fn config(&self) -> BenchConfig {
        let mut c = if self.quick {
            BenchConfig::quick()
        } else {
            BenchConfig::full()
        };
        if let Some(s) = &self.sizes {
            c.sizes = s.clone();
        }
        if let Some(n) = self.recovery_n {
            c.recovery_n = n;
        }
        if let Some(k) = self.kills {
            c.kills = k;
        }
        if let Some(s) = self.idle_secs {
            c.idle = Duration::from_secs_f64(s.max(0.0));
        }
        if let Some(v) = self.virtual_masters {
            c.virtual_masters = v;
        }
        if let Some(k) = self.scale_needs {
            c.scale_needs = k;
        }
        c.racing |= self.racing;
        if let Some(f) = self.event_followers {
            c.event_followers = f;
        }
        if let Some(k) = self.event_needs {
            c.event_needs = k;
        }
        if let Some(k) = self.failovers {
            c.failovers = k;
        }
        if let Some(f) = &self.figures {
            let has = |n: u8| f.contains(&n);
            if !(has(1) || has(2) || has(3)) {
                c.sizes.clear();
                c.recovery_n = 0;
            }
            // Figure 8's scale row is held against figure 4's, so it runs both.
            if !has(4) && !has(8) {
                c.virtual_masters = 0;
            }
            if !has(5) {
                c.event_followers = 0;
            }
            if !has(6) {
                c.socket_kills = 0;
            }
            if !has(7) {
                c.checked_services = 0;
            }
            if !has(8) {
                c.etcd_scale = false;
                c.failovers = 0;
            }
        }
        c
    }
}

/// Runs the bench and prints the table; exit 0 whether or not targets are
/// met (a benchmark is not a test), non-zero when it could not measure.
pub fn main(args: BenchArgs) -> ExitCode {
    let cfg = args.config();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = match run_bench(&cfg, command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("allex-sim bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if !to_stdout {
        print!("{report}");
    }
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("allex-sim bench: encoding the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if to_stdout {
            println!("{text}");
        } else if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("allex-sim bench: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
