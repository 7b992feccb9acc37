//! What each `allexlanmanager` subcommand does: run the lan manager, or
//! send one request to a running one and print its answer.

use crate::cli::{Cli, Command, ConnectArgs, MasterAction, NeedAction, RunArgs};
use crate::{admin, status, Server};
use allex_protocol::{AdminToLan, LanToAdmin};
use anyhow::{bail, Context, Result};
use std::io::Write;

/// Carries out the parsed command line; must run inside a tokio runtime.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Need { action }) => need(action).await,
        Some(Command::Master {
            action: MasterAction::Forget { name, conn },
        }) => done(&conn, AdminToLan::MasterForget { name }).await,
        Some(Command::Master {
            action: MasterAction::Drain { name, conn },
        }) => done(&conn, AdminToLan::MasterDrain { name }).await,
        Some(Command::Master {
            action: MasterAction::Undrain { name, conn },
        }) => done(&conn, AdminToLan::MasterUndrain { name }).await,
        Some(Command::Master {
            action: MasterAction::List { json, conn },
        }) => {
            let st = admin::status(&conn.endpoint()?).await?;
            print_out(&if json {
                serde_json::to_string_pretty(&st.masters)? + "\n"
            } else {
                status::masters_table(&st.masters) + "\n"
            })
        }
        Some(Command::Logs {
            name,
            follow,
            lines,
            conn,
        }) => {
            let mut out = std::io::stdout();
            let printed = admin::logs(&conn.endpoint()?, name, lines, follow, |data| {
                out.write_all(data.as_bytes())
                    .and_then(|_| out.flush())
                    .map_err(|e| admin::AdminError::Link(format!("cannot write to stdout: {e}")))
            })
            .await;
            Ok(printed?)
        }
        Some(Command::Events {
            follow,
            json,
            since,
            conn,
        }) => events(conn, follow, json, since).await,
        Some(Command::Status { json, conn }) => {
            let st = admin::status(&conn.endpoint()?).await?;
            let text = if json {
                serde_json::to_string_pretty(&st)? + "\n"
            } else {
                status::render(&st, crate::driver::now().unix_ms)
            };
            print_out(&text)
        }
    }
}

/// Prints events as they come, one per line, flushed each, so a pipe
/// (`| grep running`) sees each at once.
async fn events(conn: ConnectArgs, follow: bool, json: bool, since: Option<u64>) -> Result<()> {
    let mut out = std::io::stdout();
    admin::events(&conn.endpoint()?, since, follow, |e| {
        let text = if json {
            serde_json::to_string(&e).unwrap_or_default()
        } else {
            crate::event_text::line(&e)
        };
        writeln!(out, "{text}")
            .and_then(|_| out.flush())
            .map_err(|e| admin::AdminError::Link(format!("cannot write to stdout: {e}")))
    })
    .await?;
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    settings.check().map_err(anyhow::Error::msg)?;
    if settings.token.is_none() && !listens_on_loopback_only(&settings.listen) {
        tracing::warn!(
            listen = %settings.listen,
            "listening beyond loopback without a token: anyone who reaches this port can \
             add and remove needs; set --token or ALLEX_TOKEN, or listen on an internal address"
        );
    }
    let server = Server::start(settings)
        .await
        .context("the lan manager cannot start")?;
    let addr = server
        .local_addr()
        .context("cannot read the bound address")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "allexlanmanager listening on {addr}").context("cannot write to stdout")?;
    if let Some(http) = server.http_addr() {
        writeln!(out, "allexlanmanager http on http://{http}/")
            .context("cannot write to stdout")?;
    }
    out.flush().context("cannot flush stdout")?;
    drop(out);
    let events = server.events();
    // Watched before READY=1, so a manager's SIGTERM right after it is a
    // clean stop rather than the default death.
    let shutdown = shutdown_signal()?;
    // Serving from here: the listeners are bound and the state owner runs.
    tell_service_manager("READY=1");
    let candidate = server.candidate();
    if candidate.is_some() {
        tokio::spawn(announce_leadership(server.role()));
    }
    let role = server.role();
    tokio::select! {
        r = server.run() => r.context("the lan manager stopped")?,
        () = shutdown => {
            tell_service_manager("STOPPING=1");
            // A follower has no core to flush: nothing it holds is its own.
            if *role.borrow() == crate::leadership::Role::Leader {
                tracing::info!("stopping: recording which needs run where");
                crate::server::flush(&events).await;
            }
            if let Some(c) = candidate {
                c.resign().await;
            }
        }
    }
    Ok(())
}

/// Prints `allexlanmanager leads` once elected, for scripts and tests that
/// wait for a leader the way they wait for the listening line.
async fn announce_leadership(mut role: tokio::sync::watch::Receiver<crate::leadership::Role>) {
    if role
        .wait_for(|r| *r == crate::leadership::Role::Leader)
        .await
        .is_ok()
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "allexlanmanager leads");
        let _ = out.flush();
    }
}

/// Tells systemd (`Type=notify`) how we stand; a manager that cannot be
/// told is logged, not fatal.
fn tell_service_manager(state: &str) {
    if let Err(e) = allex_protocol::sd_notify::notify(state) {
        tracing::warn!(error = %e, state, "cannot tell the service manager");
    }
}

/// Whether `listen` (`ADDR:PORT`) binds loopback addresses only.
fn listens_on_loopback_only(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

/// Watches SIGTERM and SIGINT now; the future resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn need(action: NeedAction) -> Result<()> {
    let (conn, req) = match action {
        NeedAction::Add {
            module,
            instance,
            propertyhash,
            ipaddress,
            protocols,
            conn,
        } => {
            let need = admin::build_need(
                &module,
                &instance,
                propertyhash.as_deref(),
                ipaddress.as_deref(),
                protocols.as_deref(),
            )?;
            (conn, AdminToLan::NeedAdd { need })
        }
        NeedAction::Remove { name, conn } => (conn, AdminToLan::NeedRemove { instancename: name }),
        NeedAction::Restart { name, conn } => {
            (conn, AdminToLan::NeedRestart { instancename: name })
        }
        NeedAction::Disable { name, conn } => {
            (conn, AdminToLan::NeedDisable { instancename: name })
        }
        NeedAction::Enable { name, conn } => (conn, AdminToLan::NeedEnable { instancename: name }),
        NeedAction::Reload { conn } => (conn, AdminToLan::NeedReload),
        NeedAction::List { json, conn } => {
            let st = admin::status(&conn.endpoint()?).await?;
            return print_out(&if json {
                serde_json::to_string_pretty(&st.needs)? + "\n"
            } else {
                status::needs_table(&st.needs) + "\n"
            });
        }
    };
    done(&conn, req).await
}

/// Sends one change request and prints its acknowledgement.
async fn done(conn: &ConnectArgs, req: AdminToLan) -> Result<()> {
    match admin::request(&conn.endpoint()?, req).await? {
        LanToAdmin::Done { message } => print_out(&format!("{message}\n")),
        other => bail!("unexpected answer from the lan manager: {other:?}"),
    }
}

/// Writes to stdout, turning a closed pipe into an error instead of a panic.
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
