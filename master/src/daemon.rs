//! `allexmaster run`: wires the socket, the state task, the spawner and the link.

use crate::config::load_for_run;
use crate::config::master_name;
use crate::core::State;
use crate::driver::{Driver, Event};
use crate::link::{self, LinkConfig};
use crate::ports::PortOffice;
use crate::socket::{self, socket_path};
use crate::spawner::Spawner;
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the master until SIGTERM or SIGINT, then stops every child.
pub async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    // Re-read on SIGHUP from the same file.
    let config_path = match config {
        Some(p) => p.to_path_buf(),
        None => crate::config::default_path(Path::new("."))?,
    };
    let mut cfg = load_for_run(config)?;
    let fdlimit = crate::fdlimit::raise();
    socket::check_runtime_dir(&cfg.runtimedirectory)?;
    // Children may run in another working directory, so every path they get is absolute.
    let rt = std::fs::canonicalize(&cfg.runtimedirectory)
        .with_context(|| format!("runtime directory {}", cfg.runtimedirectory.display()))?;
    cfg.runtimedirectory = rt.clone();
    let secret = crate::identity::load_or_create(&rt)?;
    let sock = socket_path(&rt);
    let listener = socket::bind(&sock)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let tree = crate::cgroups::open_for(&rt, &cfg.services);
    let spawner = Spawner::start(tree.clone()).context("cannot start the spawner thread")?;
    let grace = cfg
        .services
        .values()
        .map(|s| s.stoptimeoutms)
        .max()
        .unwrap_or(0)
        .saturating_add(1000);
    let link_cfg = LinkConfig {
        targets: cfg.lanmanager_addresses(),
        tls: cfg
            .lan_tls()
            .then(|| {
                let identity = cfg.tlscert.as_deref().zip(cfg.tlskey.as_deref());
                allex_tls::client_config(cfg.tlsca.as_deref(), identity)
            })
            .transpose()
            .context("the TLS settings (tlsca, tlscert, tlskey) cannot be used")?,
        reconnect_max: Duration::from_millis(cfg.reconnectmaxms),
    };
    let ports = PortOffice::from_config(&cfg);
    let metrics_addr = cfg.metricsaddress;
    let name = master_name(&cfg);
    let pid = std::process::id();
    let now = std::time::Instant::now();
    let core = State::new(cfg, name, secret, sock.clone(), pid, ports, now)
        .with_fdlimit(fdlimit)
        .with_cgroup(tree.as_ref().map(|t| t.root().display().to_string()));
    let driver = Driver::new(core, spawner, tx.clone());
    let state_task = tokio::spawn(driver.run(rx, Duration::from_millis(grace)));
    let notify = rt.join(crate::notify::NOTIFY_SOCKET_NAME);
    if let Err(e) = crate::notify::serve(&notify, tx.clone()) {
        tracing::warn!(path = %notify.display(), "no NOTIFY_SOCKET for the children ({e}); they say ready on the master's socket");
    }
    let server = tokio::spawn(socket::serve_guarded(
        rt.clone(),
        sock.clone(),
        listener,
        tx.clone(),
    ));
    let link_task = tokio::spawn(link::run(link_cfg, tx.clone()));
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr} (metricsaddress)"))?;
            let bound = listener
                .local_addr()
                .context("cannot read the metrics address")?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "allexmaster metrics on http://{bound}/metrics")
                .and_then(|_| out.flush())
                .context("cannot write to stdout")?;
            Some(tokio::spawn(crate::metrics::serve(listener, tx.clone())))
        }
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "allexmaster ready socket={}", sock.display())
            .and_then(|_| out.flush())
            .context("cannot write the ready line to stdout")?;
    }
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    // Started with SIGHUP ignored (`nohup`): that wish is kept, and the
    // config is re-read only on a restart.
    let mut hup = if crate::spawner::ignored_signals().contains(&libc::SIGHUP) {
        tracing::info!("SIGHUP is ignored (nohup): the config is not re-read on SIGHUP");
        None
    } else {
        Some(signal(SignalKind::hangup()).context("cannot watch SIGHUP")?)
    };
    tell_service_manager("READY=1");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); break }
            _ = int.recv() => { tracing::info!("SIGINT"); break }
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!(path = %config_path.display(), "SIGHUP: re-reading the config");
                let path = config_path.clone();
                let result = tokio::task::spawn_blocking(move || {
                    allex_protocol::MasterConfig::load(&path)
                        .map(|mut c| {
                            crate::config::with_env_token(&mut c);
                            c
                        })
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("the config reader failed: {e}")));
                if tx.send(Event::ConfigReloaded(result)).is_err() {
                    break;
                }
            }
        }
    }
    tell_service_manager("STOPPING=1");
    let _ = tx.send(Event::Shutdown);
    let _ = state_task.await;
    if let Some(tree) = tree {
        // Every child was stopped; what they forked and left goes now.
        let swept = tokio::task::spawn_blocking(move || tree.remove_all())
            .await
            .unwrap_or_default();
        if swept.processes > 0 {
            tracing::info!(
                processes = swept.processes,
                "killed what the stopped services had left"
            );
        }
    }
    link_task.abort();
    server.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Err(e) = std::fs::remove_file(&sock) {
        tracing::debug!(error = %e, "cannot remove the master socket");
    }
    Ok(())
}

/// Tells systemd (`Type=notify`) how we stand; a manager that cannot be
/// told is logged, not fatal.
fn tell_service_manager(state: &str) {
    if let Err(e) = allex_protocol::sd_notify::notify(state) {
        tracing::warn!(error = %e, state, "cannot tell the service manager");
    }
}
