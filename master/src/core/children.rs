//! The children's lifecycle: grant -> spawn -> (running) -> stop -> exit.

use super::{Child, Effect, Phase, SpawnPlan, State, Timer};
use allex_protocol::spawn::SpawnInfo;
use allex_protocol::Generation;
use allex_protocol::InstanceName;
use allex_protocol::{ChildState, ExitInfo, MasterToLan, Need, Ports};
use std::collections::BTreeSet;
use std::time::Duration;

/// A child that dies sooner than this after its start is crash-looping.
const QUICK_DEATH_MS: u64 = 10_000;

/// How long after a child's exit the logs of gone instances are swept.
const LOG_SWEEP_DELAY: Duration = Duration::from_secs(1);

/// First delay before re-claiming an instance whose spawn failed.
const SPAWN_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest such delay.
const SPAWN_RETRY_CAP: Duration = Duration::from_secs(30);

impl State {
    pub(super) fn grant(&mut self, need: Need, generation: Generation) {
        let instance = need.instancename.clone();
        self.open.remove(&instance);
        let claimed = self.claims.remove(&instance);
        let fail = |this: &mut State, reason: String, claimed: Option<Ports>| {
            tracing::warn!(%instance, %generation, %reason, "cannot act on grant");
            if let Some(p) = claimed {
                this.release_ports(&p);
            }
            this.send_report(MasterToLan::SpawnFailed {
                instancename: instance.clone(),
                generation,
                reason,
            });
        };
        if self.shutting_down {
            return fail(self, "the master is shutting down".into(), claimed);
        }
        if let Err(e) = need.validate() {
            return fail(self, e.to_string(), claimed);
        }
        let Some(spec) = self.cfg.services.get(&need.modulename).cloned() else {
            self.hold_back(&instance);
            return fail(
                self,
                format!(
                    "module {} is not in this master's catalogue",
                    need.modulename
                ),
                claimed,
            );
        };
        if let Some(c) = self.children.get(&instance) {
            if c.generation == generation {
                return;
            }
            let reason = format!("instance already runs here as generation {}", c.generation);
            return fail(self, reason, claimed);
        }
        let protocols = need.protocols();
        let ports = match claimed {
            Some(p)
                if p.iter()
                    .map(|(proto, _)| proto)
                    .eq(protocols.iter().copied()) =>
            {
                p
            }
            other => {
                if let Some(p) = other {
                    self.release_ports(&p);
                }
                match self.ports.reserve(&protocols) {
                    Ok(p) => p,
                    Err(e) => {
                        self.note_exhausted(&e);
                        return fail(self, e.to_string(), None);
                    }
                }
            }
        };
        let info = SpawnInfo {
            modulename: need.modulename.clone(),
            instancename: instance.clone(),
            propertyhash: need.propertyhash.clone(),
            tcpport: ports.tcp,
            httpport: ports.http,
            wsport: ports.ws,
            masterpid: self.pid,
        };
        let need_check = need.check();
        let plan = SpawnPlan {
            instance: instance.clone(),
            generation,
            spec: spec.clone(),
            info,
            ports,
            socket: self.socket.clone(),
            runtimedir: self.cfg.runtimedirectory.clone(),
            logmaxbytes: self.cfg.logmaxbytes,
            inherit_sockets: spec.sockets.is_some(),
        };
        self.children.insert(
            instance.clone(),
            // A need's own `check` overrides its catalogue entry's.
            Child {
                module: need.modulename.clone(),
                need,
                generation,
                phase: Phase::Spawning,
                ports,
                started: self.now,
                state: ChildState::Starting,
                ready: false,
                stop: None,
                stopsignal: spec.stopsignal.number(),
                stoptimeout: Duration::from_millis(spec.stoptimeoutms),
                health: super::health::Health::for_child(need_check, spec.check.as_ref()),
                inherit: spec.sockets.is_some(),
                reported: false,
            },
        );
        self.fx.push(Effect::Spawn(Box::new(plan)));
        self.capacity_changed();
    }

    pub(super) fn spawned(
        &mut self,
        instance: InstanceName,
        generation: Generation,
        result: Result<u32, String>,
    ) {
        self.spawned_inner(instance, generation, result);
        self.settle_early_ready();
    }

    pub(super) fn spawned_inner(
        &mut self,
        instance: InstanceName,
        generation: Generation,
        result: Result<u32, String>,
    ) {
        let Some(c) = self.children.get_mut(&instance) else {
            return;
        };
        if c.generation != generation || c.pid().is_some() {
            return;
        }
        match result {
            Ok(pid) => {
                c.phase = Phase::Live { pid };
                c.started = self.now;
                let ports = c.ports;
                let stop = c.stop;
                // The ports of an inherited socket accept before the
                // service does: it is reported once it said it is ready.
                let wait = c.inherit && !c.ready;
                self.by_pid.insert(pid, instance.clone());
                self.spawn_failures.remove(&instance);
                self.start_checks(&instance, pid);
                let n = self.quick_deaths.get(&instance).copied().unwrap_or(0) + 1;
                allex_protocol::log_repeated!(n, info, %instance, %generation, pid, ?ports, "child spawned");
                self.kept.remove(&instance);
                if !wait {
                    self.report_spawned(&instance);
                }
                if let Some(ordered) = stop {
                    self.stop_child(&instance, ordered);
                }
            }
            Err(reason) => {
                let ports = c.ports;
                let inherit = c.inherit;
                self.children.remove(&instance);
                self.kept.remove(&instance);
                if inherit {
                    self.fx.push(Effect::ReleaseSockets {
                        instance: instance.clone(),
                    });
                }
                tracing::warn!(%instance, %generation, %reason, "spawn failed");
                self.hold_back(&instance);
                self.release_ports(&ports);
                self.send_report(MasterToLan::SpawnFailed {
                    instancename: instance,
                    generation,
                    reason,
                });
                self.capacity_changed();
            }
        }
    }

    /// Tells the lan manager a child runs (once per child).
    pub(super) fn report_spawned(&mut self, instance: &InstanceName) {
        let Some(c) = self.children.get_mut(instance) else {
            return;
        };
        let Some(pid) = c.pid() else { return };
        if c.reported {
            return;
        }
        c.reported = true;
        let (generation, ports) = (c.generation, c.ports);
        self.send_report(MasterToLan::Spawned {
            instancename: instance.clone(),
            generation,
            pid,
            ports,
        });
    }

    /// The lan manager ordered `generation` of `instance` stopped. What
    /// does not run here under that generation is confirmed stopped at
    /// once (a `down` with pid 0): the lan manager holds the need until it
    /// hears that, so it is never placed twice.
    pub(super) fn order_stop(&mut self, instance: &InstanceName, generation: Generation) {
        match self.children.get(instance) {
            Some(c) if c.generation == generation => return self.stop_child(instance, true),
            Some(c) => tracing::info!(
                %instance,
                %generation,
                running = %c.generation,
                "stop for another generation: confirmed, nothing of it runs here"
            ),
            None => tracing::info!(
                %instance,
                %generation,
                "stop for an instance not running here: confirmed"
            ),
        }
        if !self.children.contains_key(instance) {
            self.release_kept(instance);
        }
        self.send_report(MasterToLan::Down {
            instancename: instance.clone(),
            generation,
            pid: 0,
            exit: ExitInfo::default(),
            ordered: true,
            uptime_ms: 0,
        });
    }

    pub(super) fn stop_child(&mut self, instance: &InstanceName, ordered: bool) {
        let Some(c) = self.children.get_mut(instance) else {
            return;
        };
        // An order from the lan manager wins over our own reasons (shutdown):
        // the `down` then confirms that order.
        let ordered = ordered || c.stop == Some(true);
        let already = c.stop.is_some() && c.state == ChildState::Stopping;
        c.stop = Some(ordered);
        if already {
            return;
        }
        let Some(pid) = c.pid() else {
            // Stopped once the spawner reports the pid.
            return;
        };
        c.state = ChildState::Stopping;
        let (signal, wait) = (c.stopsignal, c.stoptimeout);
        self.signal(pid, signal);
        if signal != libc::SIGKILL {
            let instance = instance.clone();
            self.after(wait, Timer::StopTimeout { instance, pid });
        }
    }

    pub(super) fn exited(
        &mut self,
        instance: InstanceName,
        generation: Generation,
        pid: u32,
        exit: ExitInfo,
    ) {
        match self.children.get(&instance) {
            Some(c) if c.generation == generation && c.pid() == Some(pid) => {}
            _ => return,
        }
        let Some(c) = self.children.remove(&instance) else {
            return;
        };
        // What was left of its group was SIGKILLed before the reap.
        self.by_pid.remove(&pid);
        let uptime_ms = c.uptime_ms(self.now);
        let ordered = c.stop == Some(true);
        if ordered {
            tracing::info!(%instance, %generation, pid, %exit, "child stopped");
        } else {
            // A crash loop is summarised: its deaths in a row are counted
            // and only the 1st, 2nd, 4th... is logged at warn.
            let n = if uptime_ms < QUICK_DEATH_MS {
                let n = self.quick_deaths.entry(instance.clone()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            } else {
                self.quick_deaths.remove(&instance);
                1
            };
            allex_protocol::log_repeated!(n, warn, %instance, %generation, pid, %exit, uptime_ms, "child died");
        }
        let exit = ExitInfo {
            reason: c
                .health
                .as_ref()
                .filter(|h| h.unhealthy)
                .map(|_| allex_protocol::types::DownReason::Unhealthy),
            ..exit
        };
        self.send_report(MasterToLan::Down {
            instancename: instance.clone(),
            generation,
            pid,
            exit,
            ordered,
            uptime_ms,
        });
        if c.inherit && !ordered && !self.shutting_down {
            // The need stays here: its replacement gets the same sockets,
            // which accept into their backlog meanwhile.
            self.kept.insert(instance.clone(), c.ports);
        } else {
            self.release_ports(&c.ports);
            if c.inherit {
                self.fx.push(Effect::ReleaseSockets {
                    instance: instance.clone(),
                });
            }
        }
        // Its log is stale now (unless it runs again soon); sweeps are
        // gathered, so a kill-all costs one.
        self.arm_sweep(LOG_SWEEP_DELAY);
        if self.fd_exhausted && self.children.len() < self.max_children {
            self.fd_exhausted = false;
            tracing::info!("below the descriptor limit again");
            self.claim_open_needs();
        }
        // A death we did not order reopens the need at the lan manager as it
        // reads our `down`; claiming it right behind that `down`, on the same
        // link, saves the round trip through `need_open`. The lan manager
        // refuses the claim if the need waits out a crash-loop delay.
        if !ordered && !self.shutting_down && self.welcomed() {
            self.open.entry(instance.clone()).or_insert(c.need);
        }
        // The need may have reopened while this child was still stopping.
        self.try_claim(&instance, &BTreeSet::new());
        self.capacity_changed();
    }

    /// Keeps this master from claiming an instance it just failed to spawn,
    /// with a doubling delay, so a broken catalogue entry cannot turn
    /// grant -> spawn_failed -> reopen -> claim into a hot loop.
    pub(super) fn hold_back(&mut self, instance: &InstanceName) {
        let failures = self.spawn_failures.get(instance).map_or(0, |f| f.0) + 1;
        let shift = failures.saturating_sub(1).min(16);
        let delay = SPAWN_RETRY_BASE
            .saturating_mul(1 << shift)
            .min(SPAWN_RETRY_CAP);
        self.spawn_failures
            .insert(instance.clone(), (failures, self.now + delay));
        self.after(delay, Timer::RetryClaims);
    }
}
