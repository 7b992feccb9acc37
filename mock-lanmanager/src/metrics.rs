//! `GET /metrics`: the lan manager's Prometheus metrics.
//!
//! Counters and histograms follow the event stream (the driver hands each
//! event to [`LanMetrics::observe`]) and the places that refuse frames or
//! check ports; the gauges (needs by state, running services, masters) are
//! read from a status at scrape time, so they can never drift from it.

use allex_protocol::events::{EventKind, LanEvent};
use allex_protocol::{ErrorCode, InstanceName, LanStatus, NeedState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// A need state, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// A port check's outcome, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// Why a service died, as a label: `ordered` (asked to stop), `signal`
/// (killed by one), `exit` (ended on its own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

/// An error code, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// Every metric of the lan manager.
pub struct LanMetrics {
    registry: Registry,
    needs: Family<StateLabel, Gauge>,
    running: Gauge,
    masters_connected: Gauge,
    claims_granted: Counter,
    claims_refused: Counter,
    port_checks: Family<ResultLabel, Counter>,
    port_check_seconds: Histogram,
    deaths: Family<CauseLabel, Counter>,
    recovery_seconds: Histogram,
    frames_refused: Family<CodeLabel, Counter>,
    events: Counter,
    health_failing: Counter,
    /// When each instance last died on its own, to time it back to running.
    died_at: Mutex<HashMap<InstanceName, u64>>,
}

/// The process's metrics: one lan manager per process, and every part of
/// it (driver, connections, HTTP) counts into the same registry.
pub fn metrics() -> &'static LanMetrics {
    static METRICS: LazyLock<LanMetrics> = LazyLock::new(LanMetrics::new);
    &METRICS
}

const STATES: [(NeedState, &str); 6] = [
    (NeedState::Open, "open"),
    (NeedState::Claimed, "claimed"),
    (NeedState::Running, "running"),
    (NeedState::Backoff, "backoff"),
    (NeedState::Settling, "settling"),
    (NeedState::Closed, "closed"),
];

impl LanMetrics {
    fn new() -> LanMetrics {
        let mut registry = Registry::with_prefix("allex_lan");
        let m = LanMetrics {
            needs: Family::default(),
            running: Gauge::default(),
            masters_connected: Gauge::default(),
            claims_granted: Counter::default(),
            claims_refused: Counter::default(),
            port_checks: Family::default(),
            // 1 ms to about 33 s.
            port_check_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            deaths: Family::default(),
            // 10 ms to about 5.5 min.
            recovery_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            frames_refused: Family::default(),
            events: Counter::default(),
            health_failing: Counter::default(),
            died_at: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register("needs", "Needs by state", m.needs.clone());
        registry.register(
            "running_services",
            "Services listed as running",
            m.running.clone(),
        );
        registry.register(
            "masters_connected",
            "Masters whose link is up",
            m.masters_connected.clone(),
        );
        registry.register("claims_granted", "Claims granted", m.claims_granted.clone());
        registry.register("claims_refused", "Claims refused", m.claims_refused.clone());
        registry.register(
            "port_checks",
            "Port checks of spawned services, by result",
            m.port_checks.clone(),
        );
        registry.register(
            "port_check_seconds",
            "Time from a spawned report to its port check's verdict",
            m.port_check_seconds.clone(),
        );
        registry.register(
            "deaths",
            "Service deaths by cause (ordered, signal, exit)",
            m.deaths.clone(),
        );
        registry.register(
            "recovery_seconds",
            "Time from a service's unordered death to its need running again",
            m.recovery_seconds.clone(),
        );
        registry.register(
            "frames_refused",
            "Frames and hellos refused, by error code",
            m.frames_refused.clone(),
        );
        registry.register("events", "Events published", m.events.clone());
        registry.register(
            "health_failing",
            "Times a running service's health check started failing",
            m.health_failing.clone(),
        );
        LanMetrics { registry, ..m }
    }

    /// Counts what an event says.
    pub fn observe(&self, e: &LanEvent) {
        self.events.inc();
        match &e.kind {
            EventKind::Claimed { .. } => {
                self.claims_granted.inc();
            }
            EventKind::ClaimRefused { .. } => {
                self.claims_refused.inc();
            }
            EventKind::FrameRefused { code, .. } | EventKind::MasterRefused { code, .. } => {
                self.frame_refused(*code)
            }
            EventKind::Down {
                instancename,
                exit,
                ordered,
                ..
            } => {
                let cause = if *ordered {
                    "ordered"
                } else if exit.reason == Some(allex_protocol::types::DownReason::Unhealthy) {
                    "unhealthy"
                } else if exit.signal.is_some() {
                    "signal"
                } else {
                    "exit"
                };
                self.deaths
                    .get_or_create(&CauseLabel {
                        cause: cause.into(),
                    })
                    .inc();
                if !*ordered {
                    self.died().insert(instancename.clone(), e.unix_ms);
                }
            }
            EventKind::Running { instancename, .. } => {
                if let Some(at) = self.died().remove(instancename) {
                    let ms = e.unix_ms.saturating_sub(at);
                    self.recovery_seconds.observe(ms as f64 / 1000.0);
                }
            }
            EventKind::NeedRemoved { instancename } => {
                self.died().remove(instancename);
            }
            EventKind::Health { passing: false, .. } => {
                self.health_failing.inc();
            }
            _ => {}
        }
    }

    fn died(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceName, u64>> {
        self.died_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a refused frame (or hello, or admin request).
    pub fn frame_refused(&self, code: ErrorCode) {
        self.frames_refused
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts a port check's verdict and how long it took.
    pub fn port_check(&self, passed: bool, took: Duration) {
        let result = if passed { "passed" } else { "failed" };
        self.port_checks
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        self.port_check_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges set from `status`.
    pub fn render(&self, status: &LanStatus) -> String {
        for (state, label) in STATES {
            let n = status.needs.iter().filter(|n| n.state == state).count();
            self.needs
                .get_or_create(&StateLabel {
                    state: label.into(),
                })
                .set(n as i64);
        }
        self.running.set(status.running.len() as i64);
        self.masters_connected
            .set(status.masters.iter().filter(|m| m.connected).count() as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
