//! [`Cluster`]: one lan manager and several masters, optionally each behind its own proxy.

use super::{HarnessError, LanManager, LanOptions, Master, MasterOptions};
use crate::invariants::{self, MasterView, Observation, Ranges};
use crate::proxy::Proxy;
use crate::wait::wait_until;
use allex_protocol::{LanStatus, Need, NeedState, Protocol, RunningService};
use std::net::SocketAddr;
use std::time::Duration;

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many masters to start.
    pub masters: usize,
    /// Put a [`Proxy`] between each master and the lan manager.
    pub proxies: bool,
    /// The lan manager's options.
    pub lan: LanOptions,
    /// Template for every master; its `lan` (and `token`, when the lan
    /// manager has one) is filled in per master.
    pub master: MasterOptions,
    /// Wait until the lan manager lists every master as connected.
    pub wait_connected: bool,
    /// Lan managers: more than one runs them all on a real etcd the
    /// cluster starts (`--store etcd://`), one leading; masters list them all.
    pub lan_managers: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            masters: 1,
            proxies: false,
            lan: LanOptions::default(),
            master: MasterOptions::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            wait_connected: true,
            lan_managers: 1,
        }
    }
}

/// The lease TTL of a cluster's lan managers on etcd, in seconds.
pub const LEASE_TTL_S: u64 = 2;

/// How long a cluster waits for a lan manager to lead: a lease and an election.
pub const LEAD_DEADLINE: Duration = Duration::from_secs(20);

/// Starts the cluster's lan managers: one on its files, or several on a
/// real etcd started for them, returned with the leader first.
fn start_lans(
    opts: &ClusterOptions,
) -> Result<
    (
        LanManager,
        Vec<LanManager>,
        Option<allex_testkit::etcd::Etcd>,
    ),
    HarnessError,
> {
    if opts.lan_managers <= 1 {
        return Ok((LanManager::start(opts.lan.clone())?, Vec::new(), None));
    }
    if opts.proxies {
        return Err(HarnessError::Expectation(
            "proxies in front of several lan managers are not supported".into(),
        ));
    }
    let etcd = allex_testkit::etcd::Etcd::start()?;
    let mut lan_opts = opts.lan.clone();
    lan_opts.extra_args.extend([
        "--store".to_string(),
        etcd.store_arg(),
        "--lease-ttl".to_string(),
        LEASE_TTL_S.to_string(),
    ]);
    let mut lans = Vec::new();
    for _ in 0..opts.lan_managers {
        lans.push(LanManager::start(lan_opts.clone())?);
    }
    let leader = wait_until("a lan manager to lead", LEAD_DEADLINE, || {
        lans.iter()
            .position(LanManager::leads)
            .ok_or("none leads yet")
    })
    .map_err(|e| HarnessError::Expectation(e.to_string()))?;
    let first = lans.remove(leader);
    Ok((first, lans, Some(etcd)))
}

/// A lan manager with its masters.
pub struct Cluster {
    // Masters go first: their children must die before anything else.
    masters: Vec<Master>,
    proxies: Vec<Option<Proxy>>,
    lan: LanManager,
    /// The lan managers that follow (etcd); one of them leads after the leader dies.
    standbys: Vec<LanManager>,
    // After every lan manager: they use it until they die.
    etcd: Option<allex_testkit::etcd::Etcd>,
    template: MasterOptions,
    use_proxies: bool,
    /// Every master started, for the samplers' process scans.
    watched: super::Watched,
}

/// How long cluster-level waits take at most unless told otherwise.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(20);

impl Cluster {
    /// Starts the lan manager, then the masters, and waits until they are connected.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, HarnessError> {
        let (lan, standbys, etcd) = start_lans(&opts)?;
        let mut template = opts.master.clone();
        if template.token.is_none() {
            template.token = opts.lan.token.clone();
        }
        let mut cluster = Cluster {
            masters: Vec::new(),
            proxies: Vec::new(),
            lan,
            standbys,
            etcd,
            template,
            use_proxies: opts.proxies,
            watched: super::Watched::default(),
        };
        for _ in 0..opts.masters {
            cluster.add_master_unwaited(|_| {})?;
        }
        if opts.wait_connected {
            for i in 0..cluster.masters.len() {
                cluster.wait_master_connected(i, CLUSTER_DEADLINE)?;
            }
        }
        Ok(cluster)
    }

    /// Starts one more master from the template, changed by `customize`;
    /// returns its index once the lan manager lists it as connected.
    pub fn add_master(
        &mut self,
        customize: impl FnOnce(&mut MasterOptions),
    ) -> Result<usize, HarnessError> {
        let i = self.add_master_unwaited(customize)?;
        self.wait_master_connected(i, CLUSTER_DEADLINE)?;
        Ok(i)
    }

    /// Starts a master from the template, changed by `customize`, that is
    /// not part of the cluster (not watched, not repaired); it stops when dropped.
    pub fn start_detached_master(
        &self,
        customize: impl FnOnce(&mut MasterOptions),
    ) -> Result<Master, HarnessError> {
        let mut opts = self.template.clone();
        opts.lan = self.lan.addr();
        customize(&mut opts);
        Master::start(&opts)
    }

    /// Like [`Cluster::add_master`], without waiting for it to connect
    /// (for a master the lan manager is expected to refuse).
    pub fn add_master_unwaited(
        &mut self,
        customize: impl FnOnce(&mut MasterOptions),
    ) -> Result<usize, HarnessError> {
        let proxy = if self.use_proxies {
            Some(Proxy::start(self.lan.addr())?)
        } else {
            None
        };
        let mut opts = self.template.clone();
        opts.lan = proxy.as_ref().map_or(self.lan.addr(), Proxy::addr);
        opts.more_lans = self.standbys.iter().map(LanManager::addr).collect();
        customize(&mut opts);
        let master = Master::start(&opts)?;
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((
                master.name().to_string(),
                master.runtime_dir().display().to_string(),
            ));
        self.masters.push(master);
        self.proxies.push(proxy);
        Ok(self.masters.len() - 1)
    }

    /// The lan manager.
    pub fn lan(&self) -> &LanManager {
        &self.lan
    }

    /// The lan manager, to kill or restart it.
    pub fn lan_mut(&mut self) -> &mut LanManager {
        &mut self.lan
    }

    /// Master `i`.
    pub fn master(&self, i: usize) -> &Master {
        &self.masters[i]
    }

    /// Master `i`, to kill or restart it.
    pub fn master_mut(&mut self, i: usize) -> &mut Master {
        &mut self.masters[i]
    }

    /// All masters.
    pub fn masters(&self) -> &[Master] {
        &self.masters
    }

    /// The index of the master the lan manager knows as `name`.
    pub fn master_index(&self, name: &str) -> Option<usize> {
        self.masters.iter().position(|m| m.name() == name)
    }

    /// The proxy in front of master `i`, when the cluster has proxies.
    pub fn proxy(&self, i: usize) -> Option<&Proxy> {
        self.proxies.get(i).and_then(Option::as_ref)
    }

    /// Adds a need through the lan manager's CLI.
    pub fn need_add(&self, need: &Need) -> Result<(), HarnessError> {
        self.lan.need_add(need)
    }

    /// Removes a need through the lan manager's CLI.
    pub fn need_remove(&self, instance: &str) -> Result<(), HarnessError> {
        self.lan.need_remove(instance)
    }

    /// Starts sampling, in the background, the live processes of every
    /// master of this cluster (also those added later) and the running list.
    pub fn sampler(&self) -> super::Sampler {
        super::Sampler::start(
            std::iter::once(&self.lan)
                .chain(&self.standbys)
                .map(LanManager::addr)
                .collect(),
            self.lan.token().map(str::to_string),
            self.watched.clone(),
        )
    }

    /// The lan manager's status.
    pub fn lan_status(&self) -> Result<LanStatus, HarnessError> {
        self.lan.status()
    }

    /// Polls the lan manager's status (over the admin protocol, not the CLI)
    /// until `check` accepts it; a failing call counts as an observation.
    pub fn wait_lan<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&LanStatus) -> Result<T, String>,
    ) -> Result<T, HarnessError> {
        Ok(wait_until(what, deadline, || {
            match self.lan.status_direct() {
                Ok(st) => check(&st),
                Err(e) => Err(format!("status failed: {e}")),
            }
        })?)
    }

    /// Waits until `instance` is listed as running, and returns its record.
    pub fn wait_running(
        &self,
        instance: &str,
        deadline: Duration,
    ) -> Result<RunningService, HarnessError> {
        self.wait_lan(&format!("{instance} to run"), deadline, |st| {
            st.running
                .iter()
                .find(|r| r.instancename == instance)
                .cloned()
                .ok_or_else(|| describe_need(st, instance))
        })
    }

    /// Waits until the need `instance` is in `state`.
    pub fn wait_need_state(
        &self,
        instance: &str,
        state: NeedState,
        deadline: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_lan(
            &format!("{instance} to be {state:?}"),
            deadline,
            |st| match st.needs.iter().find(|n| n.need.instancename == instance) {
                Some(n) if n.state == state => Ok(()),
                _ => Err(describe_need(st, instance)),
            },
        )
    }

    /// Waits until the lan manager lists master `i` as connected.
    pub fn wait_master_connected(&self, i: usize, deadline: Duration) -> Result<(), HarnessError> {
        let name = self.masters[i].name().to_string();
        self.wait_lan(
            &format!("master {name} to connect"),
            deadline,
            |st| match st.masters.iter().find(|m| m.name == name) {
                Some(m) if m.connected => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
    }

    /// Takes one observation: the lan manager's status, then each master's.
    pub fn observe(&self) -> Result<Observation, HarnessError> {
        let lan = self.lan.status_direct()?;
        let mut masters = Vec::new();
        for m in &self.masters {
            let status = if m.is_running() {
                Some(m.status_direct()?)
            } else {
                None
            };
            masters.push(MasterView {
                name: m.name().to_string(),
                status,
                children_alive: m.children_alive(),
            });
        }
        Ok(Observation { lan, masters })
    }

    /// Each master's port ranges, by name.
    pub fn ranges(&self) -> Ranges {
        self.masters
            .iter()
            .map(|m| {
                let r = Protocol::ALL
                    .into_iter()
                    .map(|p| (p, m.port_range(p)))
                    .collect();
                (m.name().to_string(), r)
            })
            .collect()
    }

    /// Checks the invariants until they hold, for at most `deadline`:
    /// reports in flight may break them briefly, a real fault persists.
    pub fn check_invariants(&self, deadline: Duration) -> Result<Observation, HarnessError> {
        let ranges = self.ranges();
        Ok(wait_until("the invariants to hold", deadline, || {
            let obs = self.observe().map_err(|e| vec![e.to_string()])?;
            let violations = invariants::check(&obs, &ranges);
            if violations.is_empty() {
                Ok(obs)
            } else {
                Err(violations
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>())
            }
        })?)
    }

    /// The last `n` lines of every component's log, for failure reports.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = format!(
            "\n--- allexlanmanager {} ---\n{}",
            self.lan.log_path().display(),
            super::log_tail(self.lan.log_path(), n)
        );
        for m in &self.masters {
            out.push_str(&format!(
                "\n--- allexmaster {} {} ---\n{}",
                m.name(),
                m.log_path().display(),
                super::log_tail(m.log_path(), n)
            ));
        }
        out.push_str("\n(ALLEX_SIM_KEEP=1 keeps these directories)");
        out
    }

    /// Restarts the lan manager on the same address and directory: SIGTERM
    /// first when `graceful`, else SIGKILL (a crash).
    pub fn restart_lan_with(&mut self, graceful: bool) -> Result<(), HarnessError> {
        if graceful {
            self.lan.restart_graceful()?;
        } else {
            self.lan.restart()?;
        }
        for p in self.proxies.iter().flatten() {
            p.set_target(self.lan.addr());
        }
        Ok(())
    }

    /// The lan managers that follow the leader (on etcd).
    pub fn standbys(&self) -> &[LanManager] {
        &self.standbys
    }

    /// The etcd the lan managers share, when there are several.
    pub fn etcd(&self) -> Option<&allex_testkit::etcd::Etcd> {
        self.etcd.as_ref()
    }

    /// SIGKILLs the leading lan manager and waits until a standby leads;
    /// returns how long that took. The dead one is gone from the cluster.
    pub fn kill_leader(&mut self) -> Result<Duration, HarnessError> {
        if self.standbys.is_empty() {
            return Err(HarnessError::Expectation(
                "kill_leader needs lan_managers > 1".into(),
            ));
        }
        self.lan.kill()?;
        let killed = std::time::Instant::now();
        let next = wait_until("a standby to lead", LEAD_DEADLINE, || {
            self.standbys
                .iter()
                .position(LanManager::leads)
                .ok_or("none leads yet")
        })
        .map_err(|e| HarnessError::Expectation(e.to_string()))?;
        let took = killed.elapsed();
        let next = self.standbys.remove(next);
        // The dead one keeps its place in the masters' lists; it stays
        // killed, so they skip it.
        let dead = std::mem::replace(&mut self.lan, next);
        self.standbys.push(dead);
        Ok(took)
    }

    /// Kills (SIGKILL) and restarts the lan manager on the same address and directory.
    pub fn restart_lan(&mut self) -> Result<(), HarnessError> {
        self.lan.restart()?;
        for p in self.proxies.iter().flatten() {
            p.set_target(self.lan.addr());
        }
        Ok(())
    }
}

/// A need's state and the running list, for timeout messages.
fn describe_need(st: &LanStatus, instance: &str) -> String {
    match st.needs.iter().find(|n| n.need.instancename == instance) {
        Some(n) => format!(
            "need {instance} is {:?} (master {:?}, failures {}, retry in {:?} ms)",
            n.state, n.master, n.failures, n.retry_in_ms
        ),
        None => format!(
            "no need {instance}; needs: {:?}",
            st.needs
                .iter()
                .map(|n| &n.need.instancename)
                .collect::<Vec<_>>()
        ),
    }
}
