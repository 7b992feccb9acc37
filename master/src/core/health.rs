//! Health checks: one timer per child in the driver's timer wheel, one
//! short task per probe; after `failures` failures in a row the child is
//! stopped and its `down` says `unhealthy`, and its need comes back like
//! after any other death.

use super::*;
use allex_protocol::health::{CheckKind, HealthCheck};
use allex_protocol::types::HealthStatus;

/// A child's check and how it stands.
#[derive(Debug, Clone)]
pub(super) struct Health {
    pub(super) check: HealthCheck,
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
            check,
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
        self.after(
            interval,
            Timer::HealthCheck {
                instance: instance.clone(),
                pid,
            },
        );
    }

    /// A probe is due: asked of the driver unless the child went or stops.
    pub(super) fn on_health_timer(&mut self, instance: &InstanceName, pid: u32) {
        let Some(c) = self.children.get(instance) else {
            return;
        };
        if c.pid() != Some(pid) || c.state == ChildState::Stopping {
            return;
        }
        let Some(h) = &c.health else { return };
        let check = h.check.clone();
        let port = probed_port(check.kind, &c.ports);
        self.fx.push(Effect::Probe {
            instance: instance.clone(),
            pid,
            check,
            port,
        });
    }

    /// A probe ended: the count moves, the next one is armed, or the child
    /// is stopped once the failures in a row reach the threshold.
    pub(super) fn on_probe_done(
        &mut self,
        instance: &InstanceName,
        pid: u32,
        result: Result<(), String>,
    ) {
        let Some(c) = self.children.get_mut(instance) else {
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
        let status = h.status();
        let unhealthy = h.failures >= h.check.failures;
        if changed {
            // Told on each change only: a passing service costs no message.
            self.send(MasterToLan::Health {
                instancename: instance.clone(),
                generation,
                health: status,
            });
        }
        if unhealthy {
            if let Some(h) = self
                .children
                .get_mut(instance)
                .and_then(|c| c.health.as_mut())
            {
                h.unhealthy = true;
            }
            tracing::warn!(%instance, pid, "unhealthy: stopping the child");
            self.stop_child(instance, false);
        } else {
            self.after(
                interval,
                Timer::HealthCheck {
                    instance: instance.clone(),
                    pid,
                },
            );
        }
    }
}
