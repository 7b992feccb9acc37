//! Generated scenarios: a sequence of [`Op`]s, invariants (and the lan
//! manager against the [`Model`]) after each, then every fault repaired and
//! every stable need expected to run once.

use super::{expect, Report, Run, ScenarioOptions};
use crate::harness::{Cluster, HarnessError};
use crate::ops::{apply, random_ops, Model, Op};
use std::time::Instant;

/// Runs `ops` on a fresh cluster of `opts.masters` masters behind proxies.
pub fn run_ops(opts: &ScenarioOptions, ops: &[Op]) -> Result<Report, HarnessError> {
    let started = Instant::now();
    let mut c = super::cluster_options(opts);
    c.proxies = true;
    c.masters = opts.masters.max(1);
    let mut run = Run::new(Cluster::start(c)?, opts);
    let mut model = Model::default();
    for op in ops {
        let what = serde_json::to_string(op).unwrap_or_else(|_| format!("{op:?}"));
        run.step(&what, |r| {
            apply(&mut r.cluster, &mut model, op)?;
            model.check(&r.cluster, &r.opts.timings)
        })?;
    }
    run.step("repair every fault; every stable need runs once", |r| {
        converge(r, &model)
    })?;
    Ok(Report {
        name: "random".into(),
        steps: std::mem::take(&mut run.steps),
        elapsed: started.elapsed(),
    })
}

/// Runs `steps` operations generated from `seed`.
pub fn run_seed(opts: &ScenarioOptions, seed: u64, steps: usize) -> Result<Report, HarnessError> {
    let ops = random_ops(seed, steps, opts.masters.max(1));
    run_ops(opts, &ops).map(|mut r| {
        r.name = format!("random seed={seed} steps={steps}");
        r
    })
}

fn converge(r: &mut Run, model: &Model) -> Result<(), HarnessError> {
    for i in 0..r.cluster.masters().len() {
        if let Some(p) = r.cluster.proxy(i) {
            p.restore();
        }
        if let Some(size) = model.shrunk.get(&i) {
            r.cluster.master_mut(i).set_port_range_size(*size)?;
            r.cluster.master_mut(i).restart()?;
        } else if !r.cluster.master(i).is_running() {
            r.cluster.master_mut(i).restart()?;
        }
    }
    for i in 0..r.cluster.masters().len() {
        r.cluster.wait_master_connected(i, r.deadline())?;
    }
    let stable = model.stable_needs();
    r.wait_all_running(&stable)?;
    let st = r.cluster.lan_status()?;
    let listed: Vec<&str> = st
        .needs
        .iter()
        .map(|n| n.need.instancename.as_str())
        .collect();
    let wanted: Vec<&str> = model.needs.keys().map(String::as_str).collect();
    model.check(&r.cluster, &r.opts.timings)?;
    expect(
        listed.len() == wanted.len() && wanted.iter().all(|w| listed.contains(w)),
        || format!("the lan manager lists {listed:?}, the operations left {wanted:?}"),
    )
}
