//! `allex-sim lan`: a lan manager and three masters on four hosts of a
//! private namespace LAN (see [`crate::netns`]), driven through the promises
//! that only show across machines: own advertise addresses, port checks over
//! the bridge, `ipaddress` placement, a cut host whose needs move after the
//! grace period without ever running twice, and a cross-host lookup.
//!
//! The steps are public so the end-to-end tests run them one by one; the
//! subcommand runs them all with a printed timeline and a verdict.

use crate::harness::{HarnessError, LanManager, LanOptions, Master, MasterOptions, Timings};
use crate::netns::{Host, NetnsError, TestLan};
use crate::wait::{read_port_banner, wait_until, WaitError};
use allex_protocol::InstanceName;
use allex_protocol::{LanStatus, Need, RunningService, ServiceLocation};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many masters the LAN has; host 0 is the lan manager's, host `i+1` master `i`'s.
pub const MASTERS: usize = 3;

/// The module every need runs: `allex-testsvc`.
const MODULE: &str = "testsvc";

/// Why the LAN scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum LanModeError {
    /// The namespace LAN could not be built or changed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A component failed to start or answer.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// Something did not happen in time.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// A promise was observed broken.
    #[error("{0}")]
    Broken(String),
}

/// Knobs of the LAN scenario.
#[derive(Debug, Clone)]
pub struct LanModeOptions {
    /// The lan manager's timings; grace and heartbeat matter most here.
    pub timings: Timings,
    /// Longest wait for any one expected outcome.
    pub deadline: Duration,
    /// Print timeline entries to stdout as they happen.
    pub echo: bool,
    /// Run the control link over TLS: a throwaway CA, a certificate for the
    /// lan manager's LAN address, masters verifying it with `tlsca`.
    pub tls: bool,
}

impl Default for LanModeOptions {
    fn default() -> Self {
        LanModeOptions {
            timings: Timings {
                // Small enough for a quick test, long enough that the
                // "not before the grace period" check has something to measure.
                grace: Duration::from_millis(2000),
                ..Timings::default()
            },
            deadline: Duration::from_secs(30),
            echo: false,
            tls: false,
        }
    }
}

/// What happened when, relative to the start of the run.
pub struct Timeline {
    start: Instant,
    echo: bool,
    entries: Mutex<Vec<(Duration, String)>>,
}

impl Timeline {
    fn new(echo: bool) -> Self {
        Timeline {
            start: Instant::now(),
            echo,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Records an entry (and prints it when echoing).
    pub fn note(&self, what: impl Into<String>) {
        let what = what.into();
        let at = self.start.elapsed();
        tracing::debug!(at_ms = at.as_millis() as u64, "{what}");
        if self.echo {
            println!("[{:>7.3}s] {what}", at.as_secs_f64());
        }
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((at, what));
    }

    /// The entries so far, formatted one per line.
    pub fn render(&self) -> String {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(at, what)| format!("[{:>7.3}s] {what}\n", at.as_secs_f64()))
            .collect()
    }
}

/// The LAN with its lan manager and masters running; everything goes on drop.
pub struct LanSetup {
    // Field order is drop order: processes go before the namespaces they run in.
    masters: Vec<Master>,
    lanmanager: LanManager,
    net: TestLan,
    opts: LanModeOptions,
    /// The CA and certificates of a TLS run; they must outlive the processes.
    _pki: Option<allex_testkit::pki::Pki>,
    /// What happened so far.
    pub timeline: Timeline,
}

/// A need for the test service, optionally restricted to `ipaddress`.
pub fn testsvc_need(instance: InstanceName, ipaddress: Option<String>) -> Need {
    Need {
        modulename: MODULE.into(),
        instancename: instance,
        propertyhash: serde_json::Map::new(),
        ipaddress,
        protocols: None,
        extra: Default::default(),
    }
}

fn running<'a>(status: &'a LanStatus, instance: &str) -> Vec<&'a RunningService> {
    status
        .running
        .iter()
        .filter(|r| r.instancename == instance)
        .collect()
}

fn ports_of(r: &RunningService) -> Vec<u16> {
    [r.ports.tcp, r.ports.http, r.ports.ws]
        .into_iter()
        .flatten()
        .collect()
}

impl LanSetup {
    /// Builds the LAN, starts the lan manager on host 0 and a master on each
    /// other host, and waits until all masters are connected.
    pub fn start(opts: LanModeOptions) -> Result<LanSetup, LanModeError> {
        let timeline = Timeline::new(opts.echo);
        let net = TestLan::new(MASTERS + 1)?;
        timeline.note(format!(
            "LAN {} up: {} namespaces on a bridge",
            net.subnet(),
            net.hosts().len()
        ));
        let lan_host = net.host(0);
        let pki = opts
            .tls
            .then(|| allex_testkit::pki::Pki::new("allex LAN CA"));
        let (extra_args, cli_args) = match &pki {
            None => (Vec::new(), Vec::new()),
            Some(pki) => {
                let cert = pki.issue("lan", &[&lan_host.address.to_string()], false);
                let ca = pki.ca_path().display().to_string();
                (
                    vec![
                        "--tls-cert".to_string(),
                        cert.cert.display().to_string(),
                        "--tls-key".to_string(),
                        cert.key.display().to_string(),
                    ],
                    vec!["--tls-ca".to_string(), ca],
                )
            }
        };
        let lanmanager = LanManager::start(LanOptions {
            timings: opts.timings,
            listen_ip: Some(IpAddr::V4(lan_host.address)),
            netns: Some(lan_host.netns.clone()),
            extra_args,
            cli_args,
            ..LanOptions::default()
        })?;
        if pki.is_some() {
            timeline.note("the control link is TLS, verified by a CA of this run");
        }
        timeline.note(format!(
            "lan manager listening on {} in {}",
            lanmanager.addr(),
            lan_host.netns
        ));
        let mut masters = Vec::with_capacity(MASTERS);
        for i in 0..MASTERS {
            let host = net.host(i + 1);
            let mut mo = MasterOptions::new(lanmanager.addr());
            mo.name = Some(format!("host{}", host.address.octets()[3]));
            mo.netns = Some(host.netns.clone());
            let ca = pki.as_ref().map(|p| p.ca_path());
            let m = Master::start_edited(&mo, |cfg| {
                if let Some(ca) = &ca {
                    cfg["tlsca"] = serde_json::json!(ca);
                }
            })?;
            timeline.note(format!(
                "master {} started on {} ({})",
                m.name(),
                host.address,
                host.netns
            ));
            masters.push(m);
        }
        let setup = LanSetup {
            masters,
            lanmanager,
            net,
            opts,
            _pki: pki,
            timeline,
        };
        setup.wait_status("every master connected", |s| {
            let connected = s.masters.iter().filter(|m| m.connected).count();
            if connected == MASTERS {
                Ok(())
            } else {
                Err(format!("{connected} of {MASTERS} connected"))
            }
        })?;
        setup.timeline.note("all masters connected");
        Ok(setup)
    }

    /// The namespace LAN.
    pub fn net(&self) -> &TestLan {
        &self.net
    }

    /// The lan manager.
    pub fn lanmanager(&self) -> &LanManager {
        &self.lanmanager
    }

    /// Master `i`.
    pub fn master(&self, i: usize) -> &Master {
        &self.masters[i]
    }

    /// The host master `i` runs on.
    pub fn master_host(&self, i: usize) -> &Host {
        self.net.host(i + 1)
    }

    fn master_index(&self, name: &str) -> Option<usize> {
        self.masters.iter().position(|m| m.name() == name)
    }

    /// Asks the lan manager (its CLI runs on the lan manager's host).
    pub fn status(&self) -> Result<LanStatus, LanModeError> {
        Ok(self.lanmanager.status()?)
    }

    /// Polls the lan manager's status until `check` accepts it.
    pub fn wait_status<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&LanStatus) -> Result<T, String>,
    ) -> Result<T, LanModeError> {
        Ok(wait_until(what, self.opts.deadline, || {
            let s = self.lanmanager.status().map_err(|e| e.to_string())?;
            check(&s)
        })?)
    }

    fn wait_running(&self, instances: &[&str]) -> Result<LanStatus, LanModeError> {
        self.wait_status(&format!("{instances:?} running"), |s| {
            let missing: Vec<&&str> = instances
                .iter()
                .filter(|i| running(s, i).is_empty())
                .collect();
            if missing.is_empty() {
                Ok(s.clone())
            } else {
                Err(format!("not running: {missing:?}"))
            }
        })
    }

    /// Each master advertises its own host's address, as seen by itself and
    /// by the lan manager.
    pub fn check_addresses(&self) -> Result<(), LanModeError> {
        let status = self.status()?;
        for (i, m) in self.masters.iter().enumerate() {
            let want = self.master_host(i).address.to_string();
            let summary = status
                .masters
                .iter()
                .find(|s| s.name == m.name())
                .ok_or_else(|| {
                    LanModeError::Broken(format!("lan manager does not list {}", m.name()))
                })?;
            if summary.address != want {
                return Err(LanModeError::Broken(format!(
                    "lan manager lists master {} at {}, but its host is {want}",
                    m.name(),
                    summary.address
                )));
            }
            let own = m.status_direct()?;
            if own.advertiseaddress.as_deref() != Some(want.as_str()) {
                return Err(LanModeError::Broken(format!(
                    "master {} advertises {:?}, but its host is {want}",
                    m.name(),
                    own.advertiseaddress
                )));
            }
            self.timeline.note(format!(
                "master {} advertises its own address {want}",
                m.name()
            ));
        }
        Ok(())
    }

    /// The needs [`LanSetup::check_placement`] adds, each with the indices of
    /// the masters its `ipaddress` allows.
    pub fn placement_needs(&self) -> Vec<(Need, Vec<usize>)> {
        let a = |i: usize| self.master_host(i).address;
        vec![
            // A bare address, a /32 and a /31 covering two hosts.
            (
                testsvc_need(allex_protocol::instance!("PinA"), Some(a(0).to_string())),
                vec![0],
            ),
            (
                testsvc_need(
                    allex_protocol::instance!("PinB"),
                    Some(format!("{}/32", a(1))),
                ),
                vec![1],
            ),
            (
                testsvc_need(allex_protocol::instance!("PinC"), Some(a(2).to_string())),
                vec![2],
            ),
            (
                testsvc_need(
                    allex_protocol::instance!("Pair"),
                    Some(format!("{}/31", a(0))),
                ),
                vec![0, 1],
            ),
            (
                testsvc_need(allex_protocol::instance!("FreeA"), None),
                vec![0, 1, 2],
            ),
            (
                testsvc_need(allex_protocol::instance!("FreeB"), None),
                vec![0, 1, 2],
            ),
        ]
    }

    /// Adds needs restricted by `ipaddress` (and two free ones) and checks
    /// they run only on matching hosts, each record carrying its master's
    /// address, and that every port answers across the bridge with the pid
    /// the record names. A need no host matches stays open.
    pub fn check_placement(&self) -> Result<(), LanModeError> {
        let needs = self.placement_needs();
        // 198.18.x.128/25 holds none of the hosts (.1 to .4).
        let nowhere = testsvc_need(
            allex_protocol::instance!("Nowhere"),
            Some(format!("{}/25", self.net.address(128))),
        );
        for (need, _) in &needs {
            self.lanmanager.need_add(need)?;
        }
        self.lanmanager.need_add(&nowhere)?;
        self.timeline.note(format!(
            "added {} needs with ipaddress restrictions",
            needs.len() + 1
        ));
        let names: Vec<&str> = needs.iter().map(|(n, _)| n.instancename.as_str()).collect();
        let status = self.wait_running(&names)?;
        for (need, allowed) in &needs {
            let r = running(&status, &need.instancename)[0];
            let i = self.master_index(&r.master).ok_or_else(|| {
                LanModeError::Broken(format!(
                    "{} runs on unknown master {}",
                    r.instancename, r.master
                ))
            })?;
            if !allowed.contains(&i) {
                return Err(LanModeError::Broken(format!(
                    "{} (ipaddress {:?}) runs on {} at {}",
                    need.instancename, need.ipaddress, r.master, r.address
                )));
            }
            let want = self.master_host(i).address.to_string();
            if r.address != want {
                return Err(LanModeError::Broken(format!(
                    "running record of {} says {}, but its master's host is {want}",
                    r.instancename, r.address
                )));
            }
            self.timeline.note(format!(
                "{} (ipaddress {}) runs on {} at {}",
                need.instancename,
                need.ipaddress.as_deref().unwrap_or("any"),
                r.master,
                r.address
            ));
        }
        let open = status
            .needs
            .iter()
            .find(|n| n.need.instancename == "Nowhere")
            .ok_or_else(|| LanModeError::Broken("need Nowhere is not listed".into()))?;
        if open.master.is_some() || !running(&status, "Nowhere").is_empty() {
            return Err(LanModeError::Broken(format!(
                "Nowhere (ipaddress {:?}) was given to {:?}",
                nowhere.ipaddress, open.master
            )));
        }
        self.timeline.note(format!(
            "Nowhere (ipaddress {}) matches no host and stays {:?}",
            nowhere.ipaddress.as_deref().unwrap_or(""),
            open.state
        ));
        // The lan manager's port check already crossed the bridge; ask again
        // from a host that is neither, and check the pid behind every port.
        let from = self.net.host(0);
        for r in &status.running {
            self.check_banners(from, r)?;
        }
        self.timeline.note(format!(
            "every port of {} services answers from {} with the pid its record names",
            status.running.len(),
            from.address
        ));
        Ok(())
    }

    fn check_banners(&self, from: &Host, r: &RunningService) -> Result<(), LanModeError> {
        let ip: IpAddr = r.address.parse().map_err(|_| {
            LanModeError::Broken(format!("{} has address {:?}", r.instancename, r.address))
        })?;
        for port in ports_of(r) {
            let addr = SocketAddr::new(ip, port);
            let banner = from.run_in(|| read_port_banner(addr))?;
            match banner {
                Some(b) if b.instance == r.instancename && b.pid == r.pid => {}
                other => {
                    return Err(LanModeError::Broken(format!(
                        "{addr} seen from {}: expected {} pid {}, got {other:?}",
                        from.address, r.instancename, r.pid
                    )))
                }
            }
        }
        Ok(())
    }

    /// Cuts the host running `Pair` (added by [`LanSetup::check_placement`]),
    /// checks its movable needs run elsewhere only after the grace period,
    /// restores the link and checks its stale copies are stopped, with no
    /// instance ever listed twice by the lan manager.
    pub fn check_cut_and_return(&self) -> Result<(), LanModeError> {
        let before = self.status()?;
        let cut_name = running(&before, "Pair")
            .first()
            .map(|r| r.master.clone())
            .ok_or_else(|| LanModeError::Broken("Pair does not run; place needs first".into()))?;
        let cut = self
            .master_index(&cut_name)
            .ok_or_else(|| LanModeError::Broken(format!("unknown master {cut_name}")))?;
        let allowed: BTreeMap<InstanceName, Vec<usize>> = self
            .placement_needs()
            .into_iter()
            .map(|(n, a)| (n.instancename, a))
            .collect();
        let mut movable = BTreeMap::new();
        let mut pinned = Vec::new();
        for r in before.running.iter().filter(|r| r.master == cut_name) {
            let others = allowed
                .get(r.instancename.as_str())
                .is_some_and(|a| a.iter().any(|i| *i != cut));
            if others {
                movable.insert(r.instancename.to_string(), r.pid);
            } else {
                pinned.push(r.instancename.to_string());
            }
        }
        let stop = AtomicBool::new(false);
        let watched: crate::harness::Watched = std::sync::Arc::new(Mutex::new(
            self.masters
                .iter()
                .map(|m| (m.name().to_string(), m.runtime_dir().display().to_string()))
                .collect(),
        ));
        let log = std::thread::scope(|scope| {
            // Samples the real processes of every host and the running list
            // (over an admin session from the lan manager's own host) for
            // the whole cut and return.
            let sampler = scope.spawn(|| {
                self.net.host(0).run_in(|| {
                    crate::harness::sampler_loop(self.lanmanager.addr(), None, &watched, &stop)
                })
            });
            let result = self.cut_and_return(cut, &movable, &pinned);
            stop.store(true, Ordering::Relaxed);
            match sampler.join() {
                Ok(Ok(log)) => result.map(|()| log),
                Ok(Err(e)) => result.and(Err(e.into())),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        let fenced = self.opts.timings.fence.is_some();
        // A fenced host stops its children while nobody can see it: its
        // records stay listed until the grace, as the lan manager cannot
        // tell a fenced host from a cut-off one. Everyone else's must hold.
        let phantoms: Vec<_> = log
            .phantoms
            .iter()
            .filter(|p| !(fenced && p.master == cut_name))
            .collect();
        if !phantoms.is_empty() {
            return Err(LanModeError::Broken(format!(
                "running records without their process: {phantoms:?}"
            )));
        }
        if fenced && !log.duplicates.is_empty() {
            return Err(LanModeError::Broken(format!(
                "with fencing, a need ran as two live processes in {} of {} samples: {:?}",
                log.duplicates.len(),
                log.samples,
                log.duplicates.iter().take(5).collect::<Vec<_>>()
            )));
        }
        if log.samples < 10 {
            return Err(LanModeError::Broken(format!(
                "only {} samples during the cut: too few to vouch for anything",
                log.samples
            )));
        }
        self.timeline.note(if fenced {
            format!(
                "{} samples of processes and running list during cut and return: never a record without its process, never two live processes of a need",
                log.samples
            )
        } else {
            format!(
                "{} samples of processes and running list during cut and return: never a record without its process ({} samples saw the cut host's stale copies beside the moved ones, as availability first allows)",
                log.samples,
                log.duplicates.len()
            )
        });
        Ok(())
    }

    fn cut_and_return(
        &self,
        cut: usize,
        movable: &BTreeMap<String, u32>,
        pinned: &[String],
    ) -> Result<(), LanModeError> {
        let name = self.masters[cut].name().to_string();
        let host = self.master_host(cut).address;
        self.net.set_link(cut + 1, false)?;
        let cut_at = Instant::now();
        self.timeline.note(format!(
            "cut {host} (master {name}, running {movable:?} movable, {pinned:?} pinned)"
        ));
        self.wait_status(
            &format!("the lan manager to notice {name} is gone"),
            |s| match s.masters.iter().find(|m| m.name == name) {
                Some(m) if m.connected => Err("still connected".to_string()),
                _ => Ok(()),
            },
        )?;
        self.timeline.note(format!(
            "lan manager noticed the cut after {} ms",
            cut_at.elapsed().as_millis()
        ));
        let moved = self.wait_status("the cut host's needs to run elsewhere", |s| {
            let mut moved = BTreeMap::new();
            for instance in movable.keys() {
                match running(s, instance).first() {
                    Some(r) if r.master != name => {
                        moved.insert(instance.clone(), (*r).clone());
                    }
                    _ => return Err(format!("{instance} not moved yet")),
                }
            }
            Ok(moved)
        })?;
        let after = cut_at.elapsed();
        if after < self.opts.timings.grace {
            return Err(LanModeError::Broken(format!(
                "needs moved {} ms after the cut, before the {} ms grace period",
                after.as_millis(),
                self.opts.timings.grace.as_millis()
            )));
        }
        for (instance, r) in &moved {
            self.timeline.note(format!(
                "{instance} moved to {} at {} ({} ms after the cut)",
                r.master,
                r.address,
                after.as_millis()
            ));
        }
        if self.opts.timings.fence.is_some() {
            // Fencing: the cut master stopped its own copies before the grace.
            for (instance, pid) in movable {
                if crate::procscan::is_alive(*pid) {
                    return Err(LanModeError::Broken(format!(
                        "with fencing, the cut master still runs {instance} (pid {pid}) after its need moved"
                    )));
                }
            }
            self.timeline
                .note("the cut host fenced itself: its copies were gone before the others started");
        } else {
            // The cut master cannot know it was replaced: its copies keep running.
            for (instance, pid) in movable {
                if !crate::procscan::is_alive(*pid) {
                    return Err(LanModeError::Broken(format!(
                        "the cut master stopped {instance} (pid {pid}) while disconnected"
                    )));
                }
            }
            self.timeline
                .note("the cut host's stale copies still run, as it cannot know yet");
        }

        self.net.set_link(cut + 1, true)?;
        let back_at = Instant::now();
        self.timeline.note(format!("restored {host}"));
        self.wait_status(&format!("{name} to reconnect"), |s| {
            match s.masters.iter().find(|m| m.name == name) {
                Some(m) if m.connected => Ok(()),
                _ => Err("not connected".to_string()),
            }
        })?;
        self.timeline.note(format!(
            "master {name} reconnected {} ms after the link came back",
            back_at.elapsed().as_millis()
        ));
        let master = &self.masters[cut];
        wait_until(
            "the stale copies on the cut host to stop",
            self.opts.deadline,
            || {
                let st = master.status_direct().map_err(|e| e.to_string())?;
                let left: Vec<&String> = movable
                    .iter()
                    .filter(|(i, pid)| {
                        crate::procscan::is_alive(**pid)
                            || st.children.iter().any(|c| &c.instancename == *i)
                    })
                    .map(|(i, _)| i)
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still there: {left:?}"))
                }
            },
        )?;
        self.timeline.note(format!(
            "stale copies {:?} stopped on {host}",
            movable.keys().collect::<Vec<_>>()
        ));
        let pinned_refs: Vec<&str> = pinned.iter().map(String::as_str).collect();
        let status = self.wait_status("the final placement", |s| {
            for i in &pinned_refs {
                match running(s, i).as_slice() {
                    [r] if r.master == name => {}
                    other => return Err(format!("{i}: {other:?}")),
                }
            }
            Ok(s.clone())
        })?;
        for (instance, r) in &moved {
            match running(&status, instance).as_slice() {
                [now] if now.master == r.master && now.pid == r.pid => {}
                other => {
                    return Err(LanModeError::Broken(format!(
                        "{instance} should still run on {} pid {} after the return; lan manager lists {other:?}",
                        r.master, r.pid
                    )))
                }
            }
        }
        self.timeline.note(format!(
            "after the return: moved needs untouched on their new hosts, {pinned:?} on {name}"
        ));
        Ok(())
    }

    /// A service on one host asks its master where a service on another host
    /// runs, and reaches it at the answer.
    pub fn check_lookup(&self) -> Result<(), LanModeError> {
        let target_host = self.master_host(0).address;
        let finder_host = self.master_host(2);
        self.lanmanager.need_add(&testsvc_need(
            allex_protocol::instance!("Target"),
            Some(format!("{target_host}/32")),
        ))?;
        let status = self.wait_running(&["Target"])?;
        let target = running(&status, "Target")[0].clone();
        let mut finder = testsvc_need(
            allex_protocol::instance!("Finder"),
            Some(finder_host.address.to_string()),
        );
        finder
            .propertyhash
            .insert("lookup".into(), serde_json::Value::from("Target"));
        self.lanmanager.need_add(&finder)?;
        self.timeline.note(format!(
            "Target runs at {}; Finder added on {} to look it up",
            target.address, finder_host.address
        ));
        // The master keeps each child's stdout in <runtime>/logs/<instance>.log.
        let log = self.masters[2]
            .runtime_dir()
            .join("logs")
            .join("Finder.log");
        let prefix = "lookup Target ";
        let line = wait_until("Finder to print its lookup", self.opts.deadline, || {
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            text.lines()
                .find(|l| l.starts_with(prefix) || l.starts_with("lookup-error"))
                .map(str::to_string)
                .ok_or_else(|| format!("{} has no lookup line yet", log.display()))
        })?;
        self.timeline.note(format!("Finder printed: {line}"));
        let json = line
            .strip_prefix(prefix)
            .ok_or_else(|| LanModeError::Broken(format!("Finder's lookup failed: {line}")))?;
        let found: Option<ServiceLocation> = serde_json::from_str(json).map_err(|e| {
            LanModeError::Broken(format!(
                "Finder printed an unreadable location ({e}): {json}"
            ))
        })?;
        let found = found.ok_or_else(|| {
            LanModeError::Broken("Finder's master says Target does not run".into())
        })?;
        if found.address != target_host.to_string() || found.ports != target.ports {
            return Err(LanModeError::Broken(format!(
                "Finder was told {found:?}, but Target runs at {} with {:?}",
                target.address, target.ports
            )));
        }
        // What the answer is worth: the service is reachable there from the asker's host.
        self.check_banners(finder_host, &target)?;
        self.timeline.note(format!(
            "from {}, Target answers at {} with pid {}",
            finder_host.address, found.address, target.pid
        ));
        Ok(())
    }
}

/// Runs every step in order; the timeline is in the setup even on failure.
pub fn run_all(setup: &LanSetup) -> Result<(), LanModeError> {
    setup.check_addresses()?;
    setup.check_placement()?;
    setup.check_cut_and_return()?;
    setup.check_lookup()?;
    Ok(())
}

/// `allex-sim lan`: runs the scenario, prints its timeline and a verdict.
pub fn main(opts: LanModeOptions) -> std::process::ExitCode {
    use std::process::ExitCode;
    if let Err(e) = crate::netns::available() {
        eprintln!("allex-sim lan: cannot build a namespace LAN: {e} (run as root with iproute2 installed)");
        return ExitCode::from(2);
    }
    let opts = LanModeOptions { echo: true, ..opts };
    let setup = match LanSetup::start(opts) {
        Ok(s) => s,
        Err(e) => {
            println!("verdict: FAILED to set up: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run_all(&setup);
    drop(setup);
    match result {
        Ok(()) => {
            println!("verdict: PASS (namespaces, links and processes removed)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("verdict: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
