//! `allex-sim demo`: the whole system on this machine, for a first look.
//!
//! Starts a lan manager on 127.0.0.1 (port 23552 unless told otherwise), a
//! master whose catalogue maps `allex_testsvc` to the `allex-testsvc`
//! binary with the seed's port ranges, adds the need `Demo`, waits until it
//! is listed as running, shows both status reports and the commands to try
//! next, then follows the running list until Ctrl-C and cleans up.

use crate::bins::{binary, BinaryNotFound};
use crate::harness::{HarnessError, LanManager, LanOptions, Master, MasterOptions, Timings};
use crate::wait::{read_port_banner, wait_until};
use allex_protocol::config::PortStarts;
use allex_protocol::{LanStatus, Need, RunningService};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The module name the demo's catalogue serves.
pub const DEMO_MODULE: &str = "allex_testsvc";
/// The instance the demo adds.
pub const DEMO_INSTANCE: &str = "Demo";
/// How long the demo waits for any one step.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The lan manager's port on 127.0.0.1; 0 lets the kernel pick.
    pub port: u16,
    /// Exit once the service runs, instead of waiting for Ctrl-C.
    pub once: bool,
    /// Build the other binaries first (when started by `cargo run`, or when missing).
    pub build: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            port: 23552,
            once: false,
            build: true,
        }
    }
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The lan manager's port is in use.
    #[error("127.0.0.1:{port} is taken ({source}); is an allexlanmanager already running? Stop it or pick another port with --port")]
    PortTaken {
        /// The port.
        port: u16,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// `cargo build` of the other binaries failed.
    #[error("building the binaries failed: {0}")]
    Build(String),
    /// A binary is missing and was not built.
    #[error(transparent)]
    Binary(#[from] BinaryNotFound),
    /// Starting or asking a component failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// Waiting for Ctrl-C failed.
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(std::io::Error),
}

/// Runs the demo; returns once the service ran and the user pressed Ctrl-C
/// (or at once with `once`), after every process it started is gone.
pub fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    if opts.build {
        build_binaries()?;
    }
    let lanbin = binary("allexlanmanager")?;
    let masterbin = binary("allexmaster")?;
    binary("allex-testsvc")?;
    if opts.port != 0 {
        // The lan manager would only say so in its log; say it plainly.
        TcpListener::bind(("127.0.0.1", opts.port)).map_err(|source| DemoError::PortTaken {
            port: opts.port,
            source,
        })?;
    }

    let lan = LanManager::start(LanOptions {
        timings: Timings::production(),
        port: opts.port,
        ..LanOptions::default()
    })?;
    let addr = lan.addr();
    println!(
        "lan manager  listening on {addr} (pid {}), needs in {}",
        lan.proc().map_or(0, |p| p.pid()),
        lan.needs_path().display()
    );
    println!("             log: {}", lan.log_path().display());

    let mut mopts = MasterOptions::new(addr);
    mopts.name = Some("demo".into());
    mopts.portrangesize = 1000;
    mopts.portrangestart = Some(PortStarts {
        tcp: 15000,
        http: 16000,
        ws: 17000,
    });
    mopts.testsvc_modules = vec![DEMO_MODULE.into()];
    mopts.reconnectmaxms = 2000;
    let master = Master::start(&mopts)?;
    println!(
        "master       {} (pid {}), runtime dir {}",
        master.name(),
        master.pid().unwrap_or(0),
        master.runtime_dir().display()
    );
    println!(
        "             socket: {}, log: {}, children's logs: {}/logs",
        master.socket().display(),
        master.log_path().display(),
        master.runtime_dir().display()
    );
    wait_until("the master to connect", STEP_DEADLINE, || {
        let st = lan.status().map_err(|e| e.to_string())?;
        match st.masters.iter().find(|m| m.name == master.name()) {
            Some(m) if m.connected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .map_err(HarnessError::from)?;

    lan.need_add(&Need::new(DEMO_MODULE, DEMO_INSTANCE))?;
    println!(
        "need added   {{\"modulename\":\"{DEMO_MODULE}\",\"instancename\":\"{DEMO_INSTANCE}\"}}"
    );
    let rec = wait_until("Demo to be listed as running", STEP_DEADLINE, || {
        let st = lan.status().map_err(|e| e.to_string())?;
        running(&st)
            .remove(DEMO_INSTANCE)
            .ok_or_else(|| format!("{:?}", st.needs))
    })
    .map_err(HarnessError::from)?;
    println!();
    print_running(&rec);

    println!("\n$ allexlanmanager status --connect {addr}");
    print!("{}", lan.cli(&["status"])?.stdout);
    let socket = master.socket().display().to_string();
    println!("\n$ allexmaster status --socket {socket}");
    print!("{}", master.cli(&["status", "--socket", &socket])?.stdout);

    let lanbin = lanbin.display();
    println!("\nTry, in another terminal:");
    println!("  {lanbin} need add --module {DEMO_MODULE} --instance Demo2 --connect {addr}");
    println!("  {lanbin} need remove Demo2 --connect {addr}");
    println!("  {lanbin} status --connect {addr}");
    println!("  {} status --socket {socket}", masterbin.display());
    println!(
        "  kill -9 {}    # the master sees it die and a new Demo starts",
        rec.pid
    );
    if let Some(tcp) = rec.ports.tcp {
        println!("  nc 127.0.0.1 {tcp}    # the service names itself and its pid");
    }

    if opts.once {
        println!("\n--once: stopping everything");
    } else {
        println!("\nFollowing the running list; Ctrl-C stops everything.");
        follow(&lan)?;
        println!("stopping everything");
    }
    // Masters first, so their children go before the lan manager notices.
    drop(master);
    drop(lan);
    println!("done: every process the demo started is gone");
    Ok(())
}

/// The running list by instance name.
fn running(st: &LanStatus) -> BTreeMap<String, RunningService> {
    st.running
        .iter()
        .map(|r| (r.instancename.clone(), r.clone()))
        .collect()
}

/// Prints a running record and what each of its ports answers.
fn print_running(rec: &RunningService) {
    let ports: Vec<String> = rec.ports.iter().map(|(p, n)| format!("{p} {n}")).collect();
    println!(
        "{} is running: pid {} on {}, {} (generation {})",
        rec.instancename,
        rec.pid,
        rec.address,
        ports.join(", "),
        rec.generation
    );
    let Ok(ip) = rec.address.parse::<std::net::IpAddr>() else {
        return;
    };
    for (p, port) in rec.ports.iter() {
        let addr = SocketAddr::new(ip, port);
        match read_port_banner(addr) {
            Some(b) => println!(
                "  {:<4} {addr} answers: allex-testsvc {} {}",
                p.as_str(),
                b.instance,
                b.pid
            ),
            None => println!("  {:<4} {addr} does not answer", p.as_str()),
        }
    }
}

/// Prints every change of the running list until SIGINT or SIGTERM.
fn follow(lan: &LanManager) -> Result<(), DemoError> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DemoError::Signal)?;
    rt.block_on(async {
        let mut int = signal(SignalKind::interrupt()).map_err(DemoError::Signal)?;
        let mut term = signal(SignalKind::terminate()).map_err(DemoError::Signal)?;
        let mut last: BTreeMap<String, (u32, String)> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = tick.tick() => {}
            }
            // A short blocking CLI call; signals arriving meanwhile are kept
            // by tokio and seen at the next select.
            let st = match lan.status() {
                Ok(st) => st,
                Err(e) => {
                    println!("status failed: {e}");
                    continue;
                }
            };
            let now: BTreeMap<String, (u32, String)> = st
                .running
                .iter()
                .map(|r| (r.instancename.clone(), (r.pid, r.master.clone())))
                .collect();
            for (name, (pid, master)) in &now {
                match last.get(name) {
                    Some((old, _)) if old == pid => {}
                    Some((old, _)) => println!("{name}: now pid {pid} on {master} (was {old})"),
                    None => println!("{name}: running, pid {pid} on {master}"),
                }
            }
            for name in last.keys().filter(|n| !now.contains_key(*n)) {
                match st.needs.iter().find(|n| &n.need.instancename == name) {
                    Some(n) => println!("{name}: not running ({:?})", n.state),
                    None => println!("{name}: removed"),
                }
            }
            last = now;
        }
    })
}

/// Builds allexmaster, allexlanmanager and allex-testsvc when started by
/// `cargo run` (which builds only allex-sim itself) or when one is missing,
/// in the profile this binary was built in.
fn build_binaries() -> Result<(), DemoError> {
    let via_cargo = std::env::var_os("CARGO").is_some();
    let missing = ["allexmaster", "allexlanmanager", "allex-testsvc"]
        .iter()
        .any(|b| binary(b).is_err());
    if !via_cargo && !missing {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let release = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.ends_with("release")))
        .unwrap_or(false);
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "-p",
        "allex-master",
        "-p",
        "allex-lanmanager",
        "-p",
        "allex-sim",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    println!("building the binaries: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| DemoError::Build(format!("cannot run {}: {e}", cargo.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(DemoError::Build(format!(
            "cargo build exited with {status}"
        )))
    }
}
