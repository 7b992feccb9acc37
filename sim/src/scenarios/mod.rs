//! Scenarios: a cluster driven through a story, with the invariants checked
//! after every step. `allex-sim scenario NAME` runs one; tests run them all.

mod bad_input;
mod churn;
mod claims;
mod failures;
mod kept;
mod link;
mod ports;
mod random;
mod services;

pub use random::{run_ops, run_seed};

use crate::harness::{Cluster, ClusterOptions, HarnessError, Timings};
use allex_protocol::InstanceName;
use allex_protocol::{LanStatus, Need, RunningService};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The knobs every scenario takes.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Masters to start (scenarios needing more raise it).
    pub masters: usize,
    /// Needs to add.
    pub needs: usize,
    /// The lan manager's timings.
    pub timings: Timings,
    /// Longest wait for any one expected outcome.
    pub deadline: Duration,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            masters: 2,
            needs: 4,
            timings: Timings::default(),
            deadline: Duration::from_secs(30),
        }
    }
}

/// A named scenario.
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    run: fn(&mut Run) -> Result<(), HarnessError>,
    cluster: fn(&ScenarioOptions) -> ClusterOptions,
}

/// Every scenario, in a sensible order.
pub fn all() -> Vec<Scenario> {
    vec![
        churn::basic(),
        churn::race(),
        churn::need_remove(),
        failures::child_crash(),
        failures::crash_loop(),
        failures::master_crash(),
        link::lan_restart(),
        link::lan_crash(),
        link::lan_failover(),
        link::link_blip(),
        link::link_cut_takeover(),
        link::link_freeze_takeover(),
        ports::port_exhaustion(),
        claims::ipaddress(),
        claims::never_listens(),
        claims::stop_timeout(),
        services::lookup(),
        services::log_bounded(),
        kept::inherited_sockets(),
        kept::unhealthy(),
        kept::forked_daemon(),
        bad_input::bad_input(),
    ]
}

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// One finished step.
#[derive(Debug, Clone)]
pub struct Step {
    /// What it did.
    pub what: String,
    /// How long it took, invariant check included.
    pub elapsed: Duration,
}

/// What a scenario run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario.
    pub name: String,
    /// Its steps, each followed by a passing invariant check.
    pub steps: Vec<Step>,
    /// The whole run.
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scenario {}: ok in {} ms",
            self.name,
            self.elapsed.as_millis()
        )?;
        for s in &self.steps {
            writeln!(f, "  {:>6} ms  {}", s.elapsed.as_millis(), s.what)?;
        }
        Ok(())
    }
}

impl Scenario {
    /// Starts its cluster, runs it, and reports the steps.
    pub fn run(&self, opts: &ScenarioOptions) -> Result<Report, HarnessError> {
        let started = Instant::now();
        let cluster_opts = (self.cluster)(opts);
        if cluster_opts.lan_managers > 1 && !allex_testkit::etcd::Etcd::available() {
            crate::skip::skip(
                self.name,
                "no etcd here (.ci/run installs etcd-server as root)",
            );
            return Ok(Report {
                name: self.name.to_string(),
                steps: Vec::new(),
                elapsed: started.elapsed(),
            });
        }
        let cluster = Cluster::start(cluster_opts)?;
        let mut run = Run::new(cluster, opts);
        (self.run)(&mut run)?;
        Ok(Report {
            name: self.name.to_string(),
            steps: run.steps,
            elapsed: started.elapsed(),
        })
    }
}

/// The default cluster for a scenario's options.
fn cluster_options(opts: &ScenarioOptions) -> ClusterOptions {
    let mut c = ClusterOptions {
        masters: opts.masters,
        ..ClusterOptions::default()
    };
    c.lan.timings = opts.timings;
    c
}

/// A scenario in progress.
pub struct Run {
    /// The cluster it drives.
    pub cluster: Cluster,
    /// Its options.
    pub opts: ScenarioOptions,
    steps: Vec<Step>,
    /// Watches the safety promises between and during steps.
    sampler: crate::harness::Sampler,
}

impl Run {
    /// A run over `cluster`, sampling its processes from now on.
    pub fn new(cluster: Cluster, opts: &ScenarioOptions) -> Run {
        let sampler = cluster.sampler();
        Run {
            cluster,
            opts: opts.clone(),
            steps: Vec::new(),
            sampler,
        }
    }

    /// Fails when any sample so far broke a safety promise: a need running
    /// as two live processes, or a record that outlived its process. These
    /// must hold at every moment, so they are never retried.
    fn check_safety(&self) -> Result<(), HarnessError> {
        let log = self.sampler.so_far();
        if log.clean() {
            return Ok(());
        }
        Err(HarnessError::Expectation(format!(
            "safety broken: needs with two live processes {:?}; records without their process {:?}",
            log.duplicates.iter().take(5).collect::<Vec<_>>(),
            log.phantoms
        )))
    }

    /// Runs one step, then checks the invariants; either failing names the step.
    pub fn step<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Run) -> Result<T, HarnessError>,
    ) -> Result<T, HarnessError> {
        let started = Instant::now();
        tracing::info!(step = what, "step");
        let fail = |e: HarnessError, cluster: &Cluster| HarnessError::Step {
            step: what.to_string(),
            source: Box::new(e),
            logs: cluster.log_tails(15),
        };
        let out = match f(self) {
            Ok(out) => out,
            Err(e) => return Err(fail(e, &self.cluster)),
        };
        if let Err(e) = self.check_safety() {
            return Err(fail(e, &self.cluster));
        }
        if let Err(e) = self.cluster.check_invariants(self.opts.deadline) {
            return Err(fail(e, &self.cluster));
        }
        self.steps.push(Step {
            what: what.to_string(),
            elapsed: started.elapsed(),
        });
        Ok(out)
    }

    /// The deadline for one expected outcome.
    pub fn deadline(&self) -> Duration {
        self.opts.deadline
    }

    /// Adds `testsvc` needs `<prefix>0..<prefix>n` with `props`.
    pub fn add_needs(
        &self,
        prefix: &str,
        n: usize,
        props: serde_json::Value,
    ) -> Result<Vec<String>, HarnessError> {
        let mut names = Vec::new();
        for i in 0..n {
            let name = InstanceName::new(format!("{prefix}{i}"))?;
            let mut need = Need::new("testsvc", name);
            if let serde_json::Value::Object(m) = &props {
                need.propertyhash = m.clone();
            }
            self.cluster.need_add(&need)?;
            names.push(need.instancename.into_string());
        }
        Ok(names)
    }

    /// Waits until every named need is running and returns their records.
    pub fn wait_all_running(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, RunningService>, HarnessError> {
        self.cluster
            .wait_lan("every need to run", self.deadline(), |st| {
                let map = running_map(st);
                let missing: Vec<&String> =
                    names.iter().filter(|n| !map.contains_key(*n)).collect();
                if missing.is_empty() {
                    Ok(map)
                } else {
                    Err(format!("not running: {missing:?}"))
                }
            })
    }
}

/// The running list by instance name.
pub fn running_map(st: &LanStatus) -> BTreeMap<String, RunningService> {
    st.running
        .iter()
        .map(|r| (r.instancename.to_string(), r.clone()))
        .collect()
}

/// Fails with `msg` unless `cond` holds.
fn expect(cond: bool, msg: impl FnOnce() -> String) -> Result<(), HarnessError> {
    if cond {
        Ok(())
    } else {
        Err(HarnessError::Expectation(msg()))
    }
}
