//! allex-e2e: end-to-end tests of allex-rs over the real binaries
//! (`allexlanmanager`, `allexmaster`, `allex-testsvc`), driven through the
//! allex-sim harness. This library holds the few checks the tests share;
//! the tests live in `tests/e2e_*.rs`.
//!
//! Build the binaries first: `cargo build --workspace` (the harness finds
//! them next to the test executable and says so when they are missing).

#![warn(missing_docs)]

use allex_protocol::{LanStatus, Need, RunningService};
use allex_sim::harness::{Cluster, ClusterOptions, HarnessError, Timings};
use allex_sim::procscan;
use allex_sim::wait::{read_port_banner, wait_until, Banner};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
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

/// `s` as an instance name; a test's names are its own, so a bad one is the test's bug.
pub fn name(s: &str) -> allex_protocol::InstanceName {
    allex_protocol::InstanceName::new(s).unwrap_or_else(|e| panic!("test instance name: {e}"))
}

/// A `testsvc` need with these properties (a JSON object).
pub fn need(instance: &str, props: serde_json::Value) -> Need {
    let mut n = Need::new(MODULE, name(instance));
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
/// Waits until `name` is listed running under a pid other than `not`; returns its record.
pub fn wait_listed(
    lm: &allex_sim::harness::LanManager,
    name: &str,
    not: Option<u32>,
) -> RunningService {
    wait_until(&format!("{name} running"), DEADLINE, || {
        let st = lm.status().map_err(|e| e.to_string())?;
        st.running
            .iter()
            .find(|r| r.instancename == name && Some(r.pid) != not)
            .cloned()
            .ok_or(format!("{st:?}"))
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The running services of a status, by instance name.
pub fn running_map(st: &LanStatus) -> BTreeMap<String, RunningService> {
    st.running
        .iter()
        .map(|r| (r.instancename.to_string(), r.clone()))
        .collect()
}

/// Instance -> pid of a running map.
pub fn pids(run: &BTreeMap<String, RunningService>) -> BTreeMap<String, u32> {
    run.iter().map(|(k, v)| (k.clone(), v.pid)).collect()
}

/// Polls the lan manager through a test's waits. Safety (never two live
/// processes of a need, never a record without its process) is the
/// [`Sampler`]'s job, which looks at the real processes.
#[derive(Default)]
pub struct Watch {
    samples: Mutex<usize>,
}

impl Watch {
    /// A watch with no samples yet.
    pub fn new() -> Self {
        Watch::default()
    }

    /// Polls the lan manager until `check` accepts a status.
    pub fn wait<T>(
        &self,
        c: &Cluster,
        what: &str,
        mut check: impl FnMut(&LanStatus) -> Result<T, String>,
    ) -> T {
        c.wait_lan(what, DEADLINE, |st| {
            *self.samples.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            check(st)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// How many statuses were taken.
    pub fn samples(&self) -> usize {
        *self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Samples, for as long as it lives, the live processes of every master of
/// a cluster and the lan manager's running list (the harness's
/// [`allex_sim::harness::Sampler`]); [`Sampler::finish`] fails the test when
/// any sample had a need running as two live processes, or a record that
/// stayed listed without its process.
pub struct Sampler {
    inner: Option<allex_sim::harness::Sampler>,
}

impl Sampler {
    /// Starts sampling `c` (masters added later are watched too).
    pub fn start(c: &Cluster) -> Sampler {
        Sampler {
            inner: Some(c.sampler()),
        }
    }

    /// Stops sampling; fails on any safety violation or too few samples.
    pub fn finish(mut self) {
        // A fast test may end before the sampler's fifth round: wait for
        // it (on the sampler's own count, with a deadline), then stop.
        if let Some(s) = &self.inner {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while s.so_far().samples < 5 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        let log = self.inner.take().map(|s| s.finish()).unwrap_or_default();
        assert!(log.samples >= 5, "only {} samples", log.samples);
        assert!(
            log.duplicates.is_empty(),
            "needs with two live processes in {} of {} samples: {:?}",
            log.duplicates.len(),
            log.samples,
            log.duplicates.iter().take(5).collect::<Vec<_>>()
        );
        assert!(
            log.phantoms.is_empty(),
            "running records without their process: {:?}",
            log.phantoms
        );
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
            instance: rec.instancename.to_string(),
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

/// How long the lan manager's log is now, to wait for what it logs next.
pub fn lan_log_len(c: &Cluster) -> usize {
    std::fs::read_to_string(c.lan().log_path()).map_or(0, |t| t.len())
}

/// Waits until the lan manager logs `needle` after byte `from` of its log.
pub fn wait_lan_log(c: &Cluster, from: usize, needle: &str) {
    wait_until(
        &format!("the lan manager to log {needle:?}"),
        DEADLINE,
        || {
            let log = std::fs::read_to_string(c.lan().log_path()).unwrap_or_default();
            match log.get(from..) {
                Some(t) if t.contains(needle) => Ok(()),
                _ => Err("not yet"),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Unwraps a harness result with its message (which carries log tails).
pub fn ok<T>(r: Result<T, HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}
