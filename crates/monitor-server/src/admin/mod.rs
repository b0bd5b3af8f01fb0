//! The admin HTTP listener (axum, on the server's own runtime): health, status, the list
//! of clients and closing one, Prometheus metrics, and publishing a report over HTTP for
//! applications that do not speak the binary protocol.
//!
//! Nothing here holds the hub's lock, or a connection's, across an `.await` or a loop over
//! subscribers: listings are built from copies of references, and counters are read as
//! the connections published them (in batches). With `[auth] required = true`, every
//! endpoint but `/healthz` needs `Authorization: Bearer <token>` (`docs/admin.md`).

pub(crate) mod api;
pub(crate) mod dashboard;
pub(crate) mod metrics;
mod ws;

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use bytes::Bytes;
use monitor_proto::message::reply;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{Grant, TokenCheck};
use crate::state::Shared;
use crate::stats::Stats;

/// What the admin handlers share.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub(crate) shared: Arc<Shared>,
    /// The server's shutdown: `/healthz` answers 503 once it has begun.
    pub(crate) draining: CancellationToken,
    pub(crate) metrics: metrics::Metrics,
    /// The server's connection tasks, which WebSocket subscribers join.
    pub(crate) tracker: tokio_util::task::TaskTracker,
    /// The name WebSocket subscribers' listener is shown with (`admin`).
    pub(crate) listener_name: Arc<str>,
    /// `[admin] allowed_origins`.
    pub(crate) allowed_origins: Vec<String>,
}

/// The admin API's routes.
pub(crate) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/api/status", get(api::status))
        .route("/api/clients", get(api::clients))
        .route("/api/clients/{id}", delete(api::close_client))
        .route("/api/report", post(api::report))
        .route("/metrics", get(api::metrics))
        .route("/ws", get(ws::upgrade))
        .merge(dashboard::routes())
        .with_state(state)
}

/// HTTP connections the admin listener serves at once (WebSocket subscribers, once
/// upgraded, count under `max_connections` instead). More wait in the listen backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 64;
/// How long an HTTP connection that has stopped may take to finish its request.
const HTTP_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the admin API on `listener` until `stop` is cancelled.
///
/// Each connection is bounded like a binary-protocol one: at most
/// [`MAX_HTTP_CONNECTIONS`] at once, and a request's headers (on a new or a kept-alive
/// connection) must arrive within `frame_timeout_secs`, so that a client holding
/// connections open without finishing its requests cannot take the listener.
/// (`axum::serve` has neither bound, hence hyper's builder here.)
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let app = router(Arc::clone(&state));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        // A place first: at the limit, connections wait in the backlog.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API: accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = std::time::Duration::from_millis(10);
        let _ = stream.set_nodelay(true);
        let header_timeout =
            std::time::Duration::from_secs(state.shared.settings.borrow().frame_timeout_secs);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let mut app = app.clone();
                // A Router is always ready: no `poll_ready` is needed before `call`.
                tower_service::Service::call(&mut app, request)
            },
        );
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(HTTP_CLOSE_GRACE, connection).await {
                        Ok(served) => served,
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = %e, "admin API: connection ended");
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(HTTP_CLOSE_GRACE, connections.wait()).await;
}

/// What an endpoint needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any valid token (when authentication is required).
    Token,
    /// A token with `admin = true`.
    Admin,
}

/// An answer in the protocol's reply envelope, with an HTTP status.
pub(crate) fn envelope(status: StatusCode, json: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// A refusal: `{"errCode":-1,"msg":<msg>,"data":null}`.
pub(crate) fn refusal(status: StatusCode, msg: &str) -> Response {
    let mut response = envelope(status, reply::error(msg));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// A request refused by [`authorize`]: 401 or 403, and why.
#[derive(Debug)]
pub(crate) struct Denied {
    status: StatusCode,
    msg: String,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        refusal(self.status, &self.msg)
    }
}

/// Who the caller is, if it must (or chose to) say: `Ok(None)` when authentication is not
/// required and no token was given. 401 for a missing or wrong token, 403 when the
/// token may not do what `need` says.
pub(crate) fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    need: Need,
) -> Result<Option<Arc<Grant>>, Denied> {
    let unauthorized = || Denied {
        status: StatusCode::UNAUTHORIZED,
        msg: "unauthorized".to_owned(),
    };
    let auth = shared.auth();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let grant = match presented {
        None if auth.required() => {
            Stats::add(&shared.stats.auth_unauthorized, 1);
            return Err(unauthorized());
        }
        None => return Ok(None),
        Some(token) => match auth.check_token(token) {
            TokenCheck::Granted(grant) => grant,
            TokenCheck::NotConfigured => return Ok(None),
            TokenCheck::Unknown => {
                Stats::add(&shared.stats.auth_unauthorized, 1);
                tracing::warn!("admin API: unauthorized (a token that is not configured)");
                return Err(unauthorized());
            }
        },
    };
    if need == Need::Admin && !grant.admin {
        Stats::add(&shared.stats.auth_forbidden, 1);
        return Err(Denied {
            status: StatusCode::FORBIDDEN,
            msg: format!("forbidden: token {} is not an admin token", grant.name),
        });
    }
    Ok(Some(grant))
}
