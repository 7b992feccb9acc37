//! The lan manager over HTTP (`--http`): the AllexJS monitor, the JSON API
//! and the admin commands.
//!
//! Every request becomes the same [`AdminToLan`] the WebSocket admin path
//! sends and goes to the same state owner through [`Event::Admin`], so the
//! checks and the write-before-acknowledge are one implementation behind
//! both; this module only maps paths to requests and answers to status codes.

use crate::connection::token_matches;
use crate::driver::Event;
use crate::events::EventHub;
use crate::leadership::Role;
use allex_protocol::monitor::{self, MonitorView};
use allex_protocol::{AdminToLan, ErrorCode, InstanceName, LanStatus, LanToAdmin, Need};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// The default `--http` address: loopback, beside the WebSocket port.
pub const DEFAULT_HTTP: &str = "127.0.0.1:23553";

/// What every HTTP handler shares.
#[derive(Clone)]
pub struct HttpContext {
    /// Into the state owner.
    pub events: mpsc::Sender<Event>,
    /// The shared secret, when one is set.
    pub token: Option<Arc<str>>,
    /// The event stream.
    pub hub: Arc<EventHub>,
    /// Whether this lan manager leads; a follower answers only `/metrics`.
    pub role: tokio::sync::watch::Receiver<Role>,
}

/// Serves HTTP on `listener` until the process ends; over TLS with `tls`,
/// each handshake within `handshake_timeout`.
pub async fn serve(
    listener: TcpListener,
    ctx: HttpContext,
    tls: Option<std::sync::Arc<allex_tls::ServerConfig>>,
    handshake_timeout: std::time::Duration,
) {
    let result = match tls {
        None => axum::serve(listener, router(ctx)).await,
        Some(config) => {
            let acceptor = allex_tls::TlsAcceptor::from(config);
            match crate::tls_listener::TlsListener::new(listener, acceptor, handshake_timeout) {
                Ok(l) => axum::serve(l, router(ctx)).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}

/// Every endpoint of the spec's "The lan manager over HTTP" that is served.
pub fn router(ctx: HttpContext) -> Router {
    // The AllexJS monitor is read-only and open, as in AllexJS, and so is
    // /metrics, for scrapers; everything else needs the token when one is set.
    let open = Router::new()
        .route("/running", get(running))
        .route("/pending", get(pending))
        .route("/servicestatus", get(servicestatus))
        .route("/", get(dashboard));
    let guarded = Router::new()
        .route("/v1/needs", get(needs).post(need_add))
        .route("/v1/needs/{name}", axum::routing::delete(need_remove))
        .route("/v1/needs/{name}/{action}", post(need_action))
        .route("/v1/running", get(running_services))
        .route("/v1/masters", get(masters))
        .route("/v1/events", get(events))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), bearer));
    let metrics = Router::new().route("/metrics", get(prometheus));
    open.merge(guarded)
        .route_layer(middleware::from_fn_with_state(ctx.clone(), leader_only))
        .merge(metrics)
        .fallback(|| async { not_found() })
        .with_state(ctx)
}

/// A follower answers 503 `not_leader` with the leader's address (in the
/// body and in `X-Allex-Leader`), since it holds none of the state.
async fn leader_only(State(ctx): State<HttpContext>, req: Request, next: Next) -> Response {
    let leader = match &*ctx.role.borrow() {
        Role::Leader => None,
        Role::Follower { leader } => Some(leader.clone()),
    };
    let Some(leader) = leader else {
        return next.run(req).await;
    };
    let message = match &leader {
        Some(l) => format!("this lan manager follows; the leader is at {l}"),
        None => "this lan manager follows and no leader is elected yet".to_string(),
    };
    let body = json!({ "error": ErrorCode::NotLeader, "message": message, "leader": leader });
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    if let Some(v) = leader.and_then(|l| header::HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert("x-allex-leader", v);
    }
    r
}

/// Refuses a request without `Authorization: Bearer TOKEN` when a token is set.
async fn bearer(State(ctx): State<HttpContext>, req: Request, next: Next) -> Response {
    let Some(expected) = &ctx.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token_matches(Some(expected), given) {
        return next.run(req).await;
    }
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        ErrorCode::BadToken,
        "wrong or missing token: send Authorization: Bearer TOKEN",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// An error answer: `{"error": CODE, "message": TEXT}`, CODE the admin
/// protocol's error code, or `unavailable`/`internal` for the HTTP layer's own.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    code: String,
    message: String,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

fn problem(status: StatusCode, code: impl std::fmt::Display, message: &str) -> Problem {
    Problem {
        status,
        code: code.to_string(),
        message: message.to_string(),
    }
}

fn not_found() -> Problem {
    problem(
        StatusCode::NOT_FOUND,
        ErrorCode::Unknown,
        "no such endpoint",
    )
}

/// What every handler answers.
type Answer = Result<Response, Problem>;

/// The HTTP status of an admin error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Duplicate => StatusCode::CONFLICT,
        ErrorCode::Unknown => StatusCode::NOT_FOUND,
        ErrorCode::Storage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::BadToken => StatusCode::UNAUTHORIZED,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// One admin request through the state owner, as the WebSocket path sends it.
async fn admin(ctx: &HttpContext, request: AdminToLan) -> Result<LanToAdmin, Problem> {
    let unavailable = || {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the lan manager is shutting down",
        )
    };
    let (reply, answer) = oneshot::channel();
    ctx.events
        .send(Event::Admin { request, reply })
        .await
        .map_err(|_| unavailable())?;
    answer.await.map_err(|_| unavailable())
}

async fn status(ctx: &HttpContext) -> Result<LanStatus, Problem> {
    match admin(ctx, AdminToLan::Status).await? {
        LanToAdmin::Status { status } => Ok(status),
        other => Err(unexpected(other)),
    }
}

fn unexpected(answer: LanToAdmin) -> Problem {
    match answer {
        LanToAdmin::Error { code, message, .. } => problem(status_of(code), code, &message),
        other => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("unexpected answer {other:?}"),
        ),
    }
}

/// A change's answer: `ok` with its message, or the error with its status.
fn done(answer: LanToAdmin, ok: StatusCode) -> Answer {
    match answer {
        LanToAdmin::Done { message } => {
            Ok((ok, Json(json!({ "message": message }))).into_response())
        }
        other => Err(unexpected(other)),
    }
}

async fn monitor_view(ctx: &HttpContext, view: MonitorView) -> Answer {
    let st = status(ctx).await?;
    Ok(Json(monitor::records(&st, view)).into_response())
}

async fn running(State(ctx): State<HttpContext>) -> Answer {
    monitor_view(&ctx, MonitorView::Running).await
}

async fn pending(State(ctx): State<HttpContext>) -> Answer {
    monitor_view(&ctx, MonitorView::Pending).await
}

async fn servicestatus(State(ctx): State<HttpContext>) -> Answer {
    monitor_view(&ctx, MonitorView::All).await
}

async fn needs(State(ctx): State<HttpContext>) -> Answer {
    Ok(Json(status(&ctx).await?.needs).into_response())
}

async fn running_services(State(ctx): State<HttpContext>) -> Answer {
    Ok(Json(status(&ctx).await?.running).into_response())
}

async fn masters(State(ctx): State<HttpContext>) -> Answer {
    Ok(Json(status(&ctx).await?.masters).into_response())
}

async fn need_add(
    State(ctx): State<HttpContext>,
    body: Result<Json<Need>, JsonRejection>,
) -> Answer {
    let Json(need) =
        body.map_err(|e| problem(StatusCode::BAD_REQUEST, ErrorCode::Invalid, &e.body_text()))?;
    let answer = admin(&ctx, AdminToLan::NeedAdd { need }).await?;
    done(answer, StatusCode::CREATED)
}

/// The instance name in a path, or the answer refusing it.
fn instance(name: &str) -> Result<InstanceName, Problem> {
    InstanceName::new(name)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, ErrorCode::Invalid, &e.to_string()))
}

async fn need_remove(State(ctx): State<HttpContext>, Path(name): Path<String>) -> Answer {
    let instancename = instance(&name)?;
    let answer = admin(&ctx, AdminToLan::NeedRemove { instancename }).await?;
    done(answer, StatusCode::OK)
}

async fn need_action(
    State(ctx): State<HttpContext>,
    Path((name, action)): Path<(String, String)>,
) -> Answer {
    let instancename = instance(&name)?;
    match action.as_str() {
        "restart" => {
            let answer = admin(&ctx, AdminToLan::NeedRestart { instancename }).await?;
            done(answer, StatusCode::OK)
        }
        "disable" => {
            let answer = admin(&ctx, AdminToLan::NeedDisable { instancename }).await?;
            done(answer, StatusCode::OK)
        }
        "enable" => {
            let answer = admin(&ctx, AdminToLan::NeedEnable { instancename }).await?;
            done(answer, StatusCode::OK)
        }
        _ => Err(not_found()),
    }
}

/// `?since=SEQ` of `/v1/events`.
#[derive(Debug, serde::Deserialize)]
struct EventsQuery {
    since: Option<u64>,
}

/// Server-sent events: the kept events after `since` (or after the
/// `Last-Event-ID` a reconnecting `EventSource` sends), then every new one.
/// Each is one `data:` JSON object with `id:` its number; a follower that
/// falls behind by more than the hub keeps is cut off, never waited for.
async fn events(
    State(ctx): State<HttpContext>,
    headers: axum::http::HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Answer {
    let Query(q) = query.map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
            &format!("since must be an event number: {}", e.body_text()),
        )
    })?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let sub = ctx.hub.subscribe(q.since.or(last_id));
    let backlog = stream::iter(sub.backlog);
    let live = stream::unfold(sub.live, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((e, rx)),
            // Lagged or closed: end the stream; the client resumes with since.
            Err(_) => None,
        }
    });
    let frames = backlog.chain(live).map(|e| {
        Ok::<_, std::convert::Infallible>(
            SseEvent::default()
                .id(e.seq.to_string())
                .data(serde_json::to_string(&*e).unwrap_or_default()),
        )
    });
    Ok(Sse::new(frames)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The Prometheus text exposition.
async fn prometheus(State(ctx): State<HttpContext>) -> Answer {
    // A follower holds no state: its counters, and no needs or masters.
    let leads = *ctx.role.borrow() == Role::Leader;
    let st = match leads {
        true => status(&ctx).await?,
        false => LanStatus::default(),
    };
    let text = crate::metrics::metrics().render(&st);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The dashboard: one page, embedded in the binary, with no external assets.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything it needs is in the page and this origin's API.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}
