//! allex-e2e: end-to-end tests of allex-rs over the real binaries
//! (`allexlanmanager`, `allexmaster`, `allex-testsvc`), driven through the
//! allex-sim harness. This library holds the few checks the tests share;
//! the tests live in `tests/e2e_*.rs`.
//!
//! Build the binaries first: `cargo build --workspace` (the harness finds
//! them next to the test executable and says so when they are missing).

#![warn(missing_docs)]

use allex_protocol::{LanStatus, Need, RunningService};
use allex_sim::harness::{AdminClient, Cluster, ClusterOptions, HarnessError, Timings};
use allex_sim::procscan;
use allex_sim::wait::{read_port_banner, wait_until, Banner};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long any one expected outcome may take. A failure bound, not a
/// performance claim: the machine has 2 cores shared with compilers.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The module name the harness maps to `allex-testsvc`.
pub const MODULE: &str = "testsvc";

/// A cluster of `masters` masters with the fast test timings, optionally each
/// behind its own proxy, every master with `ports` ports per protocol.
pub fn cluster(masters: usize, proxies: bool, ports: u16, timings: Timings) -> Cluster {
    let mut opts = ClusterOptions {
        masters,
        proxies,
        ..ClusterOptions::default()
    };
    opts.lan.timings = timings;
    opts.master.portrangesize = ports;
    Cluster::start(opts).unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// A `testsvc` need with these properties (a JSON object).
pub fn need(instance: &str, props: serde_json::Value) -> Need {
    let mut n = Need::new(MODULE, instance);
    if let serde_json::Value::Object(m) = props {
        n.propertyhash = m;
    }
    n
}

/// Adds `testsvc` needs `<prefix>0 .. <prefix>{n-1}` through the CLI and returns their names.
pub fn add_needs(c: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            c.need_add(&need(&name, serde_json::json!({})))
                .unwrap_or_else(|e| panic!("need add {name}: {e}"));
            name
        })
        .collect()
}

/// The running list by instance name.
pub fn running_map(st: &LanStatus) -> BTreeMap<String, RunningService> {
    st.running
        .iter()
        .map(|r| (r.instancename.clone(), r.clone()))
        .collect()
}

/// Instance -> pid of a running map.
pub fn pids(run: &BTreeMap<String, RunningService>) -> BTreeMap<String, u32> {
    run.iter().map(|(k, v)| (k.clone(), v.pid)).collect()
}

/// Instances the running list holds more than once.
pub fn listed_twice(st: &LanStatus) -> Vec<String> {
    let mut seen = BTreeSet::new();
    st.running
        .iter()
        .filter(|r| !seen.insert(r.instancename.as_str()))
        .map(|r| r.instancename.clone())
        .collect()
}

/// Watches the lan manager's running list across a whole test: every status
/// taken through [`Watch::wait`] is checked for an instance listed twice,
/// and the test fails at [`Watch::assert_clean`] if any sample had one.
#[derive(Default)]
pub struct Watch {
    samples: Mutex<usize>,
    duplicates: Mutex<Vec<(usize, Vec<String>)>>,
}

impl Watch {
    /// A watch with no samples yet.
    pub fn new() -> Self {
        Watch::default()
    }

    /// Records one status sample.
    pub fn sample(&self, st: &LanStatus) {
        let mut n = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        let twice = listed_twice(st);
        if !twice.is_empty() {
            self.duplicates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((*n, twice));
        }
    }

    /// Polls the lan manager until `check` accepts a status, sampling each one.
    pub fn wait<T>(
        &self,
        c: &Cluster,
        what: &str,
        mut check: impl FnMut(&LanStatus) -> Result<T, String>,
    ) -> T {
        c.wait_lan(what, DEADLINE, |st| {
            self.sample(st);
            check(st)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// How many samples were taken.
    pub fn samples(&self) -> usize {
        *self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails when any sample listed an instance twice.
    pub fn assert_clean(&self) {
        let d = self.duplicates.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            d.is_empty(),
            "instances listed twice (sample number, instances): {d:?} of {} samples",
            self.samples()
        );
    }
}

/// Samples the lan manager's running list over one admin WebSocket session
/// on its own thread for as long as it lives, so "never listed twice" is
/// checked at every moment the test goes through, not only at its waits.
/// A lost session (the lan manager restarting) is reopened.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    watch: Arc<Watch>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling the lan manager at `addr`.
    pub fn start(addr: SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Arc::new(Watch::new());
        let thread = {
            let (stop, watch) = (stop.clone(), watch.clone());
            std::thread::spawn(move || {
                let mut session = None;
                while !stop.load(Ordering::Relaxed) {
                    if session.is_none() {
                        session = AdminClient::connect(addr, None, Duration::from_secs(5)).ok();
                    }
                    match session.as_mut().map(AdminClient::status) {
                        Some(Ok(st)) => watch.sample(&st),
                        _ => session = None,
                    }
                    // Paced so a 2-core machine keeps room for the system under test.
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Sampler {
            stop,
            watch,
            thread: Some(thread),
        }
    }

    /// Stops sampling and fails when any sample listed an instance twice,
    /// or when there were too few samples to mean anything.
    pub fn finish(mut self) {
        self.stop_thread();
        assert!(
            self.watch.samples() >= 5,
            "only {} samples of the running list",
            self.watch.samples()
        );
        self.watch.assert_clean();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Waits until every named need is running; returns the records by name.
pub fn wait_all_running(
    c: &Cluster,
    watch: &Watch,
    names: &[String],
) -> BTreeMap<String, RunningService> {
    watch.wait(c, "every need to run", |st| {
        let map = running_map(st);
        let missing: Vec<&String> = names.iter().filter(|n| !map.contains_key(*n)).collect();
        if missing.is_empty() {
            Ok(map)
        } else {
            Err(format!("not running: {missing:?}"))
        }
    })
}

/// Connects to every declared port of `rec` at its advertised address and
/// checks each one answers with the banner of the pid the lan manager lists.
pub fn assert_serves(rec: &RunningService) {
    let ip: IpAddr = rec
        .address
        .parse()
        .unwrap_or_else(|e| panic!("record address {:?}: {e}", rec.address));
    let declared: Vec<_> = rec.ports.iter().collect();
    assert!(!declared.is_empty(), "record with no ports: {rec:?}");
    for (protocol, port) in declared {
        let addr = SocketAddr::new(ip, port);
        let want = Banner {
            instance: rec.instancename.clone(),
            pid: rec.pid,
        };
        // The port check already passed, so one answer is expected at once;
        // the retry only rides out a connection refused under load.
        wait_until(
            &format!("{protocol} port {addr} to answer as {want:?}"),
            DEADLINE,
            || match read_port_banner(addr) {
                Some(b) if b == want => Ok(()),
                other => Err(other),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Waits until `pid` is gone (exited and reaped, or a zombie).
pub fn wait_dead(pid: u32, what: &str) {
    wait_until(&format!("{what} (pid {pid}) to be gone"), DEADLINE, || {
        if procscan::is_alive(pid) {
            Err("alive")
        } else {
            Ok(())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The parent pid of a live process.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Unwraps a harness result with its message (which carries log tails).
pub fn ok<T>(r: Result<T, HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}
