//! Startup (files, state owner) and the accept loop.

use crate::connection::{self, ConnContext};
use crate::core::{Startup, State};
use crate::driver::{self, Driver, Event, EVENT_QUEUE};
use crate::events::EventHub;
use crate::http;
use crate::needs_store::{Store, StoreError, GENERATION_BLOCK};
use crate::settings::Settings;
use crate::storage::{EtcdStorage, FileStorage, Storage, StoreKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Why the lan manager cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A file under `.allexlanmanager` is unreadable, unwritable or bad.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The thread reading the store at start failed.
    #[error("the store's loader failed: {0}")]
    Loader(String),
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
fn load(
    kind: StoreKind,
    files: Store,
    rt: tokio::runtime::Handle,
) -> Result<(Box<dyn Storage>, Startup), StoreError> {
    let mut storage: Box<dyn Storage> = match kind {
        StoreKind::Files => Box::new(FileStorage::new(files)),
        StoreKind::Etcd { endpoints, prefix } => {
            Box::new(EtcdStorage::connect(rt, &endpoints, &prefix)?)
        }
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

/// A lan manager that has read its files and is listening.
pub struct Server {
    listener: TcpListener,
    http: Option<TcpListener>,
    ctx: Arc<ConnContext>,
}

impl Server {
    /// Reads the needs (refusing a bad file), starts the state owner and binds.
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
        let kind = settings.store.clone();
        let rt = tokio::runtime::Handle::current();
        // Off the runtime's workers: etcd answers are waited for.
        let (storage, startup) = tokio::task::spawn_blocking(move || load(kind, store, rt))
            .await
            .map_err(|e| StartError::Loader(e.to_string()))??;
        if settings.store != StoreKind::Files && settings.watch_needs {
            tracing::info!(
                "needs in etcd: `need reload` and SIGHUP re-read them; no file is watched"
            );
            settings.watch_needs = false;
        }
        let settings = Arc::new(settings);
        let needs = startup.layers.effective();
        tracing::info!(
            needs = needs.len(),
            settling = startup.hints.keys().filter(|k| needs.iter().any(|n| &n.need.instancename == *k)).count(),
            path = %storage.describe(),
            "needs loaded"
        );
        let listener =
            TcpListener::bind(&settings.listen)
                .await
                .map_err(|cause| StartError::Bind {
                    addr: settings.listen.clone(),
                    cause,
                })?;
        let http = bind_http(&settings).await?;
        let (events, inbox) = mpsc::channel(EVENT_QUEUE);
        let (core, initial) = State::new(settings.clone(), startup, driver::now());
        let hub = Arc::new(EventHub::default());
        let driver = Driver::new(core, storage, initial, hub.clone());
        tokio::spawn(driver.run(inbox));
        Ok(Server {
            listener,
            http,
            ctx: Arc::new(ConnContext {
                settings,
                events,
                hub,
            }),
        })
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

    /// Accepts connections (WebSocket and HTTP) forever.
    pub async fn run(self) {
        if let Some(listener) = self.http {
            let ctx = http::HttpContext {
                events: self.ctx.events.clone(),
                hub: self.ctx.hub.clone(),
                token: self.ctx.settings.token.as_deref().map(Arc::from),
            };
            tokio::spawn(http::serve(listener, ctx));
        }
        tokio::spawn(crate::reload::watch(
            self.ctx
                .settings
                .watch_needs
                .then(|| self.ctx.settings.dir.join(".allexlanmanager")),
            self.ctx.events.clone(),
        ));
        let mut next_id: u64 = 0;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    next_id += 1;
                    tokio::spawn(connection::serve(stream, peer, next_id, self.ctx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
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
