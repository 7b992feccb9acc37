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
use allex_protocol::InstanceName;
use allex_protocol::{LanStatus, Need, RunningService};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The module name the demo's catalogue serves.
pub const DEMO_MODULE: &str = "allex_testsvc";
/// The instance the demo adds.
pub const DEMO_INSTANCE: &str = "Demo";

/// [`DEMO_INSTANCE`] as the instance name it is.
fn demo_instance() -> InstanceName {
    allex_protocol::instance!("Demo")
}
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
    /// The Ctrl-C handler could not be installed.
    #[error("cannot handle Ctrl-C: {0}")]
    Signal(std::io::Error),
}

/// Runs the demo; returns once the service ran and the user pressed Ctrl-C
/// (or at once with `once`), after every process it started is gone.
pub fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    if opts.build {
        build_binaries()?;
    }
    let bins = Bins {
        lan: binary("allexlanmanager")?,
        master: binary("allexmaster")?,
    };
    binary("allex-testsvc")?;
    if opts.port != 0 {
        // The lan manager would only say so in its log; say it plainly.
        TcpListener::bind(("127.0.0.1", opts.port)).map_err(|source| DemoError::PortTaken {
            port: opts.port,
            source,
        })?;
    }
    // From here on the demo owns processes in their own process groups, which
    // the terminal's Ctrl-C does not reach: it must live to stop them.
    install_stop_handlers()?;

    // The HTTP server beside the WebSocket port, as the defaults put it
    // (23552 and 23553), or a kernel-chosen one when the demo's port is.
    let http = match opts.port {
        0 => "127.0.0.1:0".to_string(),
        p => format!("127.0.0.1:{}", p.saturating_add(1)),
    };
    let lan = LanManager::start(LanOptions {
        timings: Timings::production(),
        port: opts.port,
        http: Some(http),
        ..LanOptions::default()
    })?;
    println!(
        "lan manager  listening on {} (pid {}), needs in {}",
        lan.addr(),
        lan.proc().map_or(0, |p| p.pid()),
        lan.needs_path().display()
    );
    println!("             log: {}", lan.log_path().display());
    if let Some(http) = lan.http_addr() {
        println!(
            "dashboard    http://{http}/  (also /servicestatus, /v1/needs, /v1/events, /metrics)"
        );
    }
    let master = Master::start(&demo_master(lan.addr()))?;
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

    let shown = show(&lan, &master, &bins, opts.once);
    if stop_requested() {
        println!("stopping everything");
    }
    // The master first, so its children go before the lan manager notices.
    drop(master);
    drop(lan);
    println!("done: every process the demo started is gone");
    shown
}

/// The binaries whose commands the demo prints.
struct Bins {
    lan: PathBuf,
    master: PathBuf,
}

/// The demo master: catalogue `allex_testsvc`, the seed's port ranges.
fn demo_master(lan: SocketAddr) -> MasterOptions {
    let mut m = MasterOptions::new(lan);
    m.name = Some("demo".into());
    m.portrangesize = 1000;
    m.portrangestart = Some(PortStarts {
        tcp: 15000,
        http: 16000,
        ws: 17000,
    });
    m.testsvc_modules = vec![DEMO_MODULE.into()];
    m.reconnectmaxms = 2000;
    m
}

/// Adds the need, shows it running and the status reports, then follows
/// the running list unless `once`; returns early when a stop is requested.
fn show(lan: &LanManager, master: &Master, bins: &Bins, once: bool) -> Result<(), DemoError> {
    let addr = lan.addr();
    let connected = wait_step("the master to connect", || {
        let st = lan.status().map_err(|e| e.to_string())?;
        match st.masters.iter().find(|m| m.name == master.name()) {
            Some(m) if m.connected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })?;
    if connected.is_none() {
        return Ok(());
    }
    lan.need_add(&Need::new(DEMO_MODULE, demo_instance()))?;
    println!(
        "need added   {{\"modulename\":\"{DEMO_MODULE}\",\"instancename\":\"{DEMO_INSTANCE}\"}}"
    );
    let Some(rec) = wait_step("Demo to be listed as running", || {
        let st = lan.status().map_err(|e| e.to_string())?;
        running(&st)
            .remove(DEMO_INSTANCE)
            .ok_or_else(|| format!("{:?}", st.needs))
    })?
    else {
        return Ok(());
    };
    println!();
    print_running(&rec);

    println!("\n$ allexlanmanager status --connect {addr}");
    print!("{}", lan.cli(&["status"])?.stdout);
    let socket = master.socket().display().to_string();
    println!("\n$ allexmaster status --socket {socket}");
    print!("{}", master.cli(&["status", "--socket", &socket])?.stdout);

    let lanbin = bins.lan.display();
    println!("\nTry, in another terminal:");
    println!("  {lanbin} need add --module {DEMO_MODULE} --instance Demo2 --connect {addr}");
    println!("  {lanbin} need remove Demo2 --connect {addr}");
    println!("  {lanbin} status --connect {addr}");
    println!("  {} status --socket {socket}", bins.master.display());
    println!(
        "  kill -9 {}    # the master sees it die and a new Demo starts",
        rec.pid
    );
    if let Some(tcp) = rec.ports.tcp {
        println!("  nc 127.0.0.1 {tcp}    # the service names itself and its pid");
    }
    if once {
        println!("\n--once: stopping everything");
        return Ok(());
    }
    println!("\nFollowing the running list; Ctrl-C stops everything.");
    follow(lan);
    Ok(())
}

/// Waits for `check` like [`wait_until`], but gives up quietly (`None`)
/// when a stop is requested.
fn wait_step<T>(
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<Option<T>, DemoError> {
    let out = wait_until(what, STEP_DEADLINE, || {
        if stop_requested() {
            return Ok(None);
        }
        check().map(Some)
    })
    .map_err(HarnessError::from)?;
    Ok(out)
}

/// Set by SIGINT, SIGTERM or SIGHUP.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Turns Ctrl-C, SIGTERM and SIGHUP into a stop request the demo acts on.
fn install_stop_handlers() -> Result<(), DemoError> {
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| DemoError::Signal(std::io::Error::from(e)))?;
    }
    Ok(())
}

/// The running list by instance name.
fn running(st: &LanStatus) -> BTreeMap<String, RunningService> {
    st.running
        .iter()
        .map(|r| (r.instancename.to_string(), r.clone()))
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

/// Prints every change of the running list until a stop is requested.
fn follow(lan: &LanManager) {
    let mut last: BTreeMap<String, (u32, String)> = BTreeMap::new();
    while !stop_requested() {
        match lan.status() {
            Ok(st) => {
                let now: BTreeMap<String, (u32, String)> = st
                    .running
                    .iter()
                    .map(|r| (r.instancename.to_string(), (r.pid, r.master.clone())))
                    .collect();
                for (name, (pid, master)) in &now {
                    match last.get(name) {
                        Some((old, _)) if old == pid => {}
                        Some((old, _)) => {
                            println!("{name}: now pid {pid} on {master} (was {old})")
                        }
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
            Err(e) => println!("status failed: {e}"),
        }
        // A display refresh, not a synchronisation: a stop is seen within 50 ms.
        for _ in 0..10 {
            if stop_requested() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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
    let mut args = vec![
        "build",
        "-p",
        "allex-master",
        "-p",
        "allex-lanmanager",
        "-p",
        "allex-sim",
        "--bins",
    ];
    if release {
        args.push("--release");
    }
    println!(
        "building allexmaster, allexlanmanager and allex-testsvc: cargo {}",
        args.join(" ")
    );
    let mut cmd = Command::new(&cargo);
    cmd.args(&args);
    // `cargo run --manifest-path` may start us outside the workspace.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if workspace.join("Cargo.toml").is_file() {
        cmd.current_dir(workspace);
    }
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
