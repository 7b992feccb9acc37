//! `GET /metrics` on `metricsaddress`: the master's Prometheus metrics.
//!
//! Spawn latency, deaths and log bytes are counted where they happen (the
//! driver and the log pumps); children and free ports are read from a
//! status at scrape time, so they can never drift from `allexmaster status`.

use allex_protocol::{LocalReply, LocalRequest, MasterStatus, Protocol};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::driver::Event;

/// A protocol, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: String,
}

/// Why a child ended, as a label: `signal`, `exit`, or `spawn_failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

/// Every metric of the master.
pub struct MasterMetrics {
    registry: Registry,
    children: Gauge,
    free_ports: Family<ProtocolLabel, Gauge>,
    spawn_seconds: Histogram,
    deaths: Family<CauseLabel, Counter>,
    log_bytes: Counter,
    probes: Family<ResultLabel, Counter>,
}

/// A health probe's result, as a label: `passed` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The process's metrics: one master per process.
pub fn metrics() -> &'static MasterMetrics {
    static METRICS: LazyLock<MasterMetrics> = LazyLock::new(MasterMetrics::new);
    &METRICS
}

impl MasterMetrics {
    fn new() -> MasterMetrics {
        let mut registry = Registry::with_prefix("allex_master");
        let children = Gauge::default();
        let free_ports = Family::<ProtocolLabel, Gauge>::default();
        // 100 µs to about 3 s.
        let spawn_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let deaths = Family::<CauseLabel, Counter>::default();
        let log_bytes = Counter::default();
        let probes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "health_probes",
            "Health probes run, by result (passed, failed)",
            probes.clone(),
        );
        registry.register("children", "Children running or starting", children.clone());
        registry.register("free_ports", "Free ports by protocol", free_ports.clone());
        registry.register(
            "spawn_seconds",
            "Time from a grant's spawn to the child's start (or its failure)",
            spawn_seconds.clone(),
        );
        registry.register(
            "deaths",
            "Children ended, by cause (signal, exit, spawn_failed)",
            deaths.clone(),
        );
        registry.register(
            "log_bytes_written",
            "Bytes of children's output written to their logs",
            log_bytes.clone(),
        );
        MasterMetrics {
            registry,
            children,
            free_ports,
            spawn_seconds,
            deaths,
            log_bytes,
            probes,
        }
    }

    /// Counts the results of one tick's probes (one label lookup each, not
    /// one per probe: a tick may hold hundreds).
    pub fn probes(&self, passed: u64, failed: u64) {
        for (n, result) in [(passed, "passed"), (failed, "failed")] {
            if n > 0 {
                self.probes
                    .get_or_create(&ResultLabel {
                        result: result.into(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Counts a spawn's outcome and how long it took.
    pub fn spawned(&self, ok: bool, took: Duration) {
        self.spawn_seconds.observe(took.as_secs_f64());
        if !ok {
            self.death("spawn_failed");
        }
    }

    /// Counts a child that ended: by a signal, or exiting.
    pub fn exited(&self, by_signal: bool) {
        self.death(if by_signal { "signal" } else { "exit" });
    }

    fn death(&self, cause: &str) {
        self.deaths
            .get_or_create(&CauseLabel {
                cause: cause.into(),
            })
            .inc();
    }

    /// Counts bytes written to a child's log.
    pub fn log_written(&self, bytes: usize) {
        self.log_bytes.inc_by(bytes as u64);
    }

    /// The text exposition, with the gauges set from `status`.
    pub fn render(&self, status: &MasterStatus) -> String {
        self.children.set(status.children.len() as i64);
        for p in Protocol::ALL {
            self.free_ports
                .get_or_create(&ProtocolLabel {
                    protocol: p.as_str().into(),
                })
                .set(i64::from(status.free.get(p)));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener`, reading the status from the driver.
pub async fn serve(listener: TcpListener, events: UnboundedSender<Event>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(events);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}

async fn scrape(State(events): State<UnboundedSender<Event>>) -> Response {
    let (reply, answer) = oneshot::channel();
    let asked = events.send(Event::Local {
        req: LocalRequest::Status,
        peer_pid: None,
        reply,
    });
    match (asked, answer.await) {
        (Ok(()), Ok(LocalReply::Status { status })) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics().render(&status),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down\n",
        )
            .into_response(),
    }
}
