//! Startup (store, election, state owner) and the accept loop.

use crate::connection::{self, ConnContext};
use crate::core::{Startup, State};
use crate::driver::{self, Driver, Event, EVENT_QUEUE};
use crate::events::EventHub;
use crate::http;
use crate::leadership::{self, Candidate, Fence, Role};
use crate::needs_store::{Store, StoreError, GENERATION_BLOCK};
use crate::settings::Settings;
use crate::storage::{EtcdStorage, FileStorage, Storage, StoreKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Why the lan manager cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A file under `.allexlanmanager` is unreadable, unwritable or bad.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The thread reading the store at start failed.
    #[error("the store's loader failed: {0}")]
    Loader(String),
    /// etcd refused the lease or the campaign.
    #[error("this lan manager stopped leading: {0}; its supervisor should start it again, as a follower")]
    Deposed(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: String,
        /// What the OS said.
        cause: std::io::Error,
    },
}

/// Opens the store `kind` names and reads everything the core starts from,
/// reserving the next block of generations before any is handed out.
/// On etcd, `fence` is the election key every write compares.
fn load(
    kind: StoreKind,
    files: Store,
    rt: tokio::runtime::Handle,
    fence: Option<Fence>,
) -> Result<(Box<dyn Storage>, Startup), StoreError> {
    let mut storage: Box<dyn Storage> = match (kind, fence) {
        (StoreKind::Files, _) => Box::new(FileStorage::new(files)),
        (StoreKind::Etcd { endpoints, prefix }, Some(fence)) => {
            Box::new(EtcdStorage::connect(rt, &endpoints, &prefix, fence)?)
        }
        // Only a leader reads the state; without its fence, nothing is opened.
        (StoreKind::Etcd { .. }, None) => return Err(StoreError::NotLeader),
    };
    let layers = storage.load_layers()?;
    let hints = storage.load_running();
    let identities = storage.load_masters()?;
    // Everything below the stored bound may have been handed out already.
    let next_generation = storage.load_generation()?.max(1);
    let generation_bound = next_generation.saturating_add(GENERATION_BLOCK);
    storage.write_generation(generation_bound)?;
    let startup = Startup {
        layers,
        hints,
        next_generation,
        generation_bound,
        identities,
    };
    Ok((storage, startup))
}

/// What a lan manager on etcd still has to do once elected.
struct Election {
    candidate: Arc<Candidate>,
    files: Store,
    inbox: mpsc::Receiver<Event>,
}

/// A lan manager that is listening; on etcd, possibly not leading yet.
pub struct Server {
    listener: TcpListener,
    http: Option<TcpListener>,
    ctx: Arc<ConnContext>,
    election: Option<Election>,
}

impl Server {
    /// Reads the needs (refusing a bad file), starts the state owner and
    /// binds; on etcd, binds, takes a lease and leaves the state to the
    /// election [`Server::run`] enters.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn start(settings: Settings) -> Result<Server, StartError> {
        let mut settings = settings;
        let store = Store::open(&settings.dir)?;
        settings.subnets = store.load_subnets()?;
        if let Some(s) = &settings.subnets {
            tracing::info!(
                ranges = s.0.len(),
                "masters may connect only from the subnets file's ranges and 127.0.0.1"
            );
        }
        if settings.store != StoreKind::Files && settings.watch_needs {
            tracing::info!(
                "needs in etcd: `need reload` and SIGHUP re-read them; no file is watched"
            );
            settings.watch_needs = false;
        }
        let listener =
            TcpListener::bind(&settings.listen)
                .await
                .map_err(|cause| StartError::Bind {
                    addr: settings.listen.clone(),
                    cause,
                })?;
        let http = bind_http(&settings).await?;
        let (events, inbox) = mpsc::channel(EVENT_QUEUE);
        let hub = Arc::new(EventHub::default());
        let (role, election) = match settings.store.clone() {
            StoreKind::Files => {
                let settings = Arc::new(settings.clone());
                let (storage, startup) = load_blocking(StoreKind::Files, store, None).await?;
                start_core(settings, storage, startup, inbox, hub.clone());
                (watch::channel(Role::Leader).1, None)
            }
            StoreKind::Etcd { endpoints, prefix } => {
                let bound = listener.local_addr().map_err(|cause| StartError::Bind {
                    addr: settings.listen.clone(),
                    cause,
                })?;
                let advertise = settings
                    .advertise
                    .clone()
                    .unwrap_or_else(|| leadership::default_advertise(bound, &endpoints));
                let candidate =
                    Candidate::enter(&endpoints, &prefix, advertise.clone(), settings.lease_ttl)
                        .await?;
                tracing::info!(%advertise, "campaigning for leadership on etcd");
                let candidate = Arc::new(candidate);
                (
                    candidate.role(),
                    Some(Election {
                        candidate,
                        files: store,
                        inbox,
                    }),
                )
            }
        };
        Ok(Server {
            listener,
            http,
            ctx: Arc::new(ConnContext {
                settings: Arc::new(settings),
                events,
                hub,
                role,
            }),
            election,
        })
    }

    /// Whether it leads (or whom it follows), as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.ctx.role.clone()
    }

    /// The etcd candidate, for handing leadership back at a clean stop.
    pub fn candidate(&self) -> Option<Arc<Candidate>> {
        self.election.as_ref().map(|e| e.candidate.clone())
    }

    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the HTTP server bound, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A sender into the state owner, for embedding and tests.
    pub fn events(&self) -> mpsc::Sender<Event> {
        self.ctx.events.clone()
    }

    /// Accepts connections (WebSocket and HTTP) until this lan manager
    /// stops leading (etcd) or its election fails; with the file store, forever.
    pub async fn run(self) -> Result<(), StartError> {
        if let Some(listener) = self.http {
            let ctx = http::HttpContext {
                events: self.ctx.events.clone(),
                hub: self.ctx.hub.clone(),
                token: self.ctx.settings.admin_token().map(Arc::from),
                role: self.ctx.role.clone(),
            };
            tokio::spawn(http::serve(
                listener,
                ctx,
                self.ctx.settings.tls.as_ref().map(|t| t.config.clone()),
                self.ctx.settings.hello_timeout,
            ));
        }
        tokio::spawn(crate::reload::watch(
            self.ctx
                .settings
                .watch_needs
                .then(|| self.ctx.settings.dir.join(".allexlanmanager")),
            self.ctx.events.clone(),
        ));
        let accept = accept_loop(self.listener, self.ctx.clone());
        let Some(election) = self.election else {
            accept.await;
            return Ok(());
        };
        let deposition = election.candidate.deposition();
        let settings = self.ctx.settings.clone();
        let hub = self.ctx.hub.clone();
        let lead = async move {
            let fence = election.candidate.campaign().await?;
            let (storage, startup) =
                load_blocking(settings.store.clone(), election.files, Some(fence)).await?;
            start_core(settings, storage, startup, election.inbox, hub);
            election.candidate.lead();
            std::future::pending::<Result<(), StartError>>().await
        };
        tokio::select! {
            () = accept => Ok(()),
            r = lead => r,
            why = deposition.wait() => Err(StartError::Deposed(why)),
        }
    }
}

/// Reads the store on a blocking thread: etcd answers are waited for.
async fn load_blocking(
    kind: StoreKind,
    files: Store,
    fence: Option<Fence>,
) -> Result<(Box<dyn Storage>, Startup), StartError> {
    let rt = tokio::runtime::Handle::current();
    Ok(
        tokio::task::spawn_blocking(move || load(kind, files, rt, fence))
            .await
            .map_err(|e| StartError::Loader(e.to_string()))??,
    )
}

/// Starts the state owner on what the store held.
fn start_core(
    settings: Arc<Settings>,
    storage: Box<dyn Storage>,
    startup: Startup,
    inbox: mpsc::Receiver<Event>,
    hub: Arc<EventHub>,
) {
    let needs = startup.layers.effective();
    tracing::info!(
        needs = needs.len(),
        settling = startup.hints.keys().filter(|k| needs.iter().any(|n| &n.need.instancename == *k)).count(),
        path = %storage.describe(),
        "needs loaded"
    );
    let (core, initial) = State::new(settings, startup, driver::now());
    let driver = Driver::new(core, storage, initial, hub);
    tokio::spawn(driver.run(inbox));
}

/// Accepts connections forever.
async fn accept_loop(listener: TcpListener, ctx: Arc<ConnContext>) {
    let mut next_id: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                if let Err(e) = allex_protocol::keepalive::arm(&stream, ctx.settings.heartbeat) {
                    tracing::debug!(error = %e, "no TCP keepalive on a connection");
                }
                next_id += 1;
                tokio::spawn(connection::serve(stream, peer, next_id, ctx.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Binds the HTTP address: a taken address the operator named stops the
/// start; the default one only warns, so a second lan manager on a machine
/// (or a test) still runs, without HTTP.
async fn bind_http(settings: &Settings) -> Result<Option<TcpListener>, StartError> {
    let Some(addr) = &settings.http else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(cause) if settings.http_required => Err(StartError::Bind {
            addr: addr.clone(),
            cause,
        }),
        Err(cause) => {
            tracing::warn!(%addr, error = %cause, "HTTP not served: the default address is taken; pass --http ADDR:PORT or --http off");
            Ok(None)
        }
    }
}

/// Writes the advisory `running` file now; for a clean shutdown.
pub async fn flush(events: &mpsc::Sender<Event>) {
    let (done, wait) = tokio::sync::oneshot::channel();
    if events.send(Event::FlushNow { done }).await.is_ok() {
        let _ = wait.await;
    }
}
