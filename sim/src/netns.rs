//! A private test LAN made of Linux network namespaces.
//!
//! Each host is a namespace with one veth interface, `eth0`, plugged into a
//! bridge that lives in a namespace of its own, so no address of the test
//! subnet exists outside the namespaces and no packet leaves the machine.
//! Everything made here is removed on drop, also when a test panics; what a
//! killed test process left behind is swept by the next [`TestLan::new`].

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The test subnet's first two octets; 198.18.0.0/15 is reserved for
/// benchmarking network devices (RFC 2544), so it never clashes with a real LAN.
const SUBNET_PREFIX: [u8; 2] = [198, 18];

/// Every namespace this module makes starts with this, followed by the pid
/// of the process that made it, so stale ones can be told apart from live ones.
const NAME_PREFIX: &str = "allexns";

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Why the test LAN could not be built, changed or entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("network namespaces need root; running as uid {0}")]
    NotRoot(u32),
    /// The `ip` command (iproute2) is not installed.
    #[error("the `ip` command (iproute2) is not available: {0}")]
    NoIp(std::io::Error),
    /// Root, but making a namespace failed (e.g. a container without CAP_SYS_ADMIN).
    #[error("cannot make a network namespace: {0}")]
    Unsupported(String),
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A LAN of this many hosts does not fit a /24.
    #[error("a test LAN holds 1 to 250 hosts, not {0}")]
    Size(usize),
    /// Entering a namespace from a thread failed.
    #[error("entering namespace {netns}: {source}")]
    Enter {
        /// The namespace.
        netns: String,
        /// The fault.
        source: std::io::Error,
    },
}

/// Whether this process can build a namespace LAN; `Err` says why not.
///
/// Being root is not always enough (a container may withhold
/// CAP_SYS_ADMIN), so the first call makes and removes a namespace.
pub fn available() -> Result<(), NetnsError> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return Err(NetnsError::NotRoot(uid.as_raw()));
    }
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        let name = format!("{NAME_PREFIX}{}probe", std::process::id());
        ip(&["netns", "add", &name]).map_err(|e| e.to_string())?;
        ip(&["netns", "del", &name])
            .map(drop)
            .map_err(|e| e.to_string())
    });
    match probe {
        Ok(()) => Ok(()),
        Err(why) => Err(NetnsError::Unsupported(why.clone())),
    }
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::NoIp)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The names of all namespaces `ip netns` knows.
pub fn namespaces() -> Result<Vec<String>, NetnsError> {
    // `ip netns list` appends "(id: N)" to some names; the first word is the name.
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The pid of the process that made a test namespace, from its name.
fn maker(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
    pid.parse().ok()
}

/// Test namespaces whose maker no longer runs: left behind by a process
/// killed before it could clean up (or by a bug in the cleanup).
pub fn orphaned() -> Result<Vec<String>, NetnsError> {
    Ok(namespaces()?
        .into_iter()
        .filter(|n| maker(n).is_some_and(|pid| !crate::procscan::is_alive(pid)))
        .collect())
}

/// SIGKILLs every process still running in namespace `name`, then deletes it.
fn remove(name: &str) -> Result<(), NetnsError> {
    // A process left inside would keep the namespace (and its links) alive
    // after the name is gone, out of reach of any later cleanup.
    let pids = ip(&["netns", "pids", name]).unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    ip(&["netns", "del", name]).map(drop)
}

/// Removes [`orphaned`] namespaces and what still runs in them.
fn sweep_stale() {
    let Ok(names) = orphaned() else { return };
    for name in names {
        match remove(&name) {
            Ok(_) => tracing::info!(netns = %name, "removed a stale test namespace"),
            Err(e) => tracing::warn!(netns = %name, "removing a stale test namespace: {e}"),
        }
    }
}

/// One host of the test LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name.
    pub netns: String,
    /// The host's address on the test subnet.
    pub address: Ipv4Addr,
}

impl Host {
    /// A command that runs `program` inside this host's namespace; `ip`
    /// execs the program, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }

    /// Runs `f` on a thread that joined this host's network namespace, so
    /// the sockets `f` opens live on this host (the caller's thread and
    /// every other thread stay where they are).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let path = std::path::Path::new(NETNS_DIR).join(&self.netns);
        let enter_err = |source| NetnsError::Enter {
            netns: self.netns.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(enter_err)?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| enter_err(std::io::Error::from(e)))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// A bridge and a number of host namespaces on a private /24; removed on drop.
pub struct TestLan {
    bridge: String,
    hosts: Vec<Host>,
    third: u8,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestLan {
    /// Builds a LAN of `count` hosts, addressed .1, .2, ... on a fresh /24.
    pub fn new(count: usize) -> Result<TestLan, NetnsError> {
        if count == 0 || count > 250 {
            return Err(NetnsError::Size(count));
        }
        available()?;
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{NAME_PREFIX}{pid}x{n}");
        // Each LAN has its own bridge, so LANs cannot see each other whatever
        // their subnets; a varied /24 just keeps logs of parallel runs apart.
        let third = ((pid as usize * 7 + n as usize) % 250 + 1) as u8;
        let mut lan = TestLan {
            bridge: format!("{tag}b"),
            hosts: Vec::with_capacity(count),
            third,
        };
        // From here on an early return drops `lan`, which removes what was made.
        ip(&["netns", "add", &lan.bridge])?;
        ip(&["-n", &lan.bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.bridge, "link", "set", "br0", "up"])?;
        for i in 0..count {
            let netns = format!("{tag}h{i}");
            ip(&["netns", "add", &netns])?;
            let address = lan.address(i as u8 + 1);
            lan.hosts.push(Host {
                netns: netns.clone(),
                address,
            });
            let port = format!("p{i}");
            // Both ends are born inside their namespaces, so nothing ever
            // appears in the caller's namespace, not even for a moment.
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &netns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.bridge,
            ])?;
            ip(&[
                "-n",
                &lan.bridge,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        }
        tracing::info!(bridge = %lan.bridge, subnet = %lan.subnet(), hosts = count, "test LAN up");
        Ok(lan)
    }

    /// The address `.last` on this LAN's /24.
    pub fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.third, last)
    }

    /// The /24 the hosts live on, e.g. `198.18.3.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/24", self.address(0))
    }

    /// The hosts, in address order (host `i` has address `.i+1`).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Every namespace of this LAN, the bridge's included.
    pub fn netns_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts.iter().map(|h| h.netns.clone()).collect();
        names.push(self.bridge.clone());
        names
    }

    /// Cuts (`up = false`) or restores host `i`'s only link.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), NetnsError> {
        let h = &self.hosts[i];
        ip(&[
            "-n",
            &h.netns,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
        .map(drop)
    }
}

impl Drop for TestLan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the peer.
        for name in self.netns_names() {
            if let Err(e) = remove(&name) {
                tracing::warn!("removing test namespace {name}: {e}");
            }
        }
    }
}
