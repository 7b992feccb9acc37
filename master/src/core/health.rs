//! Health checks: probes are due on a grid (multiples of their interval
//! from one origin), so every child of one interval shares a tick: one
//! timer and one batch of probes per tick, whatever the number of children.
//! After `failures` failures in a row the child is stopped and its `down`
//! says `unhealthy`, and its need comes back like after any other death.

use super::*;
use allex_protocol::health::{CheckKind, HealthCheck};
use allex_protocol::types::HealthStatus;

/// A child's check and how it stands.
#[derive(Debug, Clone)]
pub(super) struct Health {
    /// Shared with each probe job, so a tick clones no check.
    pub(super) check: std::sync::Arc<HealthCheck>,
    failures: u32,
    last: Option<Result<(), String>>,
    /// Set when the check stopped the child: its `down` says so.
    pub(super) unhealthy: bool,
}

impl Health {
    /// The need's own check, else the catalogue entry's.
    pub(super) fn for_child(
        need: Option<HealthCheck>,
        entry: Option<&HealthCheck>,
    ) -> Option<Health> {
        need.or_else(|| entry.cloned()).map(|check| Health {
            check: std::sync::Arc::new(check),
            failures: 0,
            last: None,
            unhealthy: false,
        })
    }

    /// What `allexmaster status` shows of it.
    pub(super) fn status(&self) -> HealthStatus {
        HealthStatus {
            passing: matches!(self.last, Some(Ok(()))),
            failures: self.failures,
            last: match &self.last {
                None => "not checked yet".into(),
                Some(Ok(())) => "ok".into(),
                Some(Err(e)) => e.clone(),
            },
        }
    }
}

/// The port a check probes: the http port for `http` (else the first),
/// the first declared port for `tcp`, none for `exec`.
fn probed_port(kind: CheckKind, ports: &Ports) -> Option<u16> {
    let first = ports.iter().next().map(|(_, p)| p);
    match kind {
        CheckKind::Exec => None,
        CheckKind::Http => ports.http.or(first),
        CheckKind::Tcp => first,
    }
}

/// The first point of the grid `epoch + k * interval` at or after `earliest`.
fn on_grid(epoch: Instant, interval: Duration, earliest: Instant) -> Instant {
    let step = interval.as_nanos().max(1);
    let since = earliest.saturating_duration_since(epoch).as_nanos();
    let k = since.div_ceil(step);
    let nanos = u64::try_from(k.saturating_mul(step)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(nanos)
}

impl State {
    /// Arms the first probe of a child that just got its pid.
    pub(super) fn start_checks(&mut self, instance: &InstanceName, pid: u32) {
        let Some(interval) = self
            .children
            .get(instance)
            .and_then(|c| c.health.as_ref())
            .map(|h| Duration::from_millis(h.check.intervalms))
        else {
            return;
        };
        self.schedule_probe(instance.clone(), pid, interval);
    }

    /// Puts the child's next probe on the first tick of its interval's grid
    /// at least half an interval away: a steady child is probed exactly
    /// every interval, a new one within 0.5 to 1.5 intervals.
    fn schedule_probe(&mut self, instance: InstanceName, pid: u32, interval: Duration) {
        let at = on_grid(self.checks_epoch, interval, self.now + interval / 2);
        let due = self.checks_due.entry(at).or_default();
        if due.is_empty() {
            self.fx.push(Effect::Timer {
                at,
                timer: Timer::HealthTick,
            });
        }
        due.push((instance, pid));
    }

    /// A tick: every probe due by now, of children still there and not
    /// stopping, goes to the driver as one batch.
    pub(super) fn on_health_tick(&mut self) {
        let later = self
            .checks_due
            .split_off(&(self.now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.checks_due, later);
        let jobs: Vec<ProbeJob> = due
            .into_values()
            .flatten()
            .filter_map(|(instance, pid)| {
                let c = self.children.get(&instance)?;
                if c.pid() != Some(pid) || c.state == ChildState::Stopping {
                    return None;
                }
                let check = c.health.as_ref()?.check.clone();
                let port = probed_port(check.kind, &c.ports);
                Some(ProbeJob {
                    instance,
                    pid,
                    check,
                    port,
                })
            })
            .collect();
        if !jobs.is_empty() {
            self.fx.push(Effect::Probes(jobs));
        }
    }

    /// A probe ended: the count moves, the next one is armed, or the child
    /// is stopped once the failures in a row reach the threshold.
    pub(super) fn on_probe_done(
        &mut self,
        instance: InstanceName,
        pid: u32,
        result: Result<(), String>,
    ) {
        let Some(c) = self.children.get_mut(&instance) else {
            return;
        };
        if c.pid() != Some(pid) || c.state == ChildState::Stopping {
            return;
        }
        let generation = c.generation;
        let Some(h) = c.health.as_mut() else { return };
        let changed = h.last.as_ref().map(Result::is_ok) != Some(result.is_ok());
        match &result {
            Ok(()) => {
                if h.failures > 0 {
                    tracing::info!(%instance, pid, "health check passes again");
                }
                h.failures = 0;
            }
            Err(why) => {
                h.failures = h.failures.saturating_add(1);
                tracing::warn!(%instance, pid, failures = h.failures, threshold = h.check.failures, "health check failed: {why}");
            }
        }
        h.last = Some(result);
        let interval = Duration::from_millis(h.check.intervalms);
        let unhealthy = h.failures >= h.check.failures;
        if changed {
            // Told on each change only: a passing service costs no message.
            let health = h.status();
            self.send(MasterToLan::Health {
                instancename: instance.clone(),
                generation,
                health,
            });
        }
        if unhealthy {
            if let Some(h) = self
                .children
                .get_mut(&instance)
                .and_then(|c| c.health.as_mut())
            {
                h.unhealthy = true;
            }
            tracing::warn!(%instance, pid, "unhealthy: stopping the child");
            self.stop_child(&instance, false);
        } else {
            self.schedule_probe(instance, pid, interval);
        }
    }
}
