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
        .merge(dashboard::routes())
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin API stopped");
    }
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
