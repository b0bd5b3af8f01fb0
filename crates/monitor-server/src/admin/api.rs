//! The admin API's endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use monitor_proto::message::reply;
use monitor_proto::message::request::Report;
use serde::{Deserialize, Serialize};

use super::{authorize, envelope, refusal, AdminState, Need};
use crate::hub::Wakes;
use crate::stats::{Stats, StatsSnapshot};

/// `GET /healthz`: 200 `ok` while serving, 503 once the shutdown has begun.
pub(super) async fn healthz(State(state): State<Arc<AdminState>>) -> Response {
    if state.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// `GET /api/status`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) version: &'static str,
    pub(crate) uptime_secs: u64,
    pub(crate) draining: bool,
    pub(crate) listeners: Vec<crate::state::ListenerInfo>,
    /// Open connections, and by role.
    pub(crate) connections: BTreeMap<&'static str, u64>,
    pub(crate) subscribers: usize,
    pub(crate) counters: StatsSnapshot,
    /// Bytes of large partial frames held now (`max_buffered_bytes`).
    pub(crate) buffered_bytes: usize,
    /// Log lines that could not be written.
    pub(crate) log_lines_dropped: u64,
    /// This node in its cluster, with `[cluster]` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<crate::cluster::ClusterStatus>,
}

/// `GET /api/status`.
pub(super) async fn status(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state.shared, &headers, Need::Token) {
        return refused.into_response();
    }
    let shared = &state.shared;
    let mut connections = BTreeMap::new();
    for client in shared.clients() {
        *connections.entry(client.role).or_insert(0) += 1;
    }
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: shared.started.elapsed().as_secs(),
        draining: state.draining.is_cancelled(),
        listeners: shared.listeners.clone(),
        connections: {
            let open = connections.values().sum();
            connections.insert("open", open);
            connections
        },
        subscribers: shared.hub.subscriber_count(),
        counters: shared.stats.snapshot(),
        buffered_bytes: shared.budget.used(),
        log_lines_dropped: crate::logging::lines_dropped(),
        cluster: shared.cluster.as_ref().map(|c| c.status()),
    };
    axum::Json(status).into_response()
}

/// `GET /api/clients` filters.
#[derive(Debug, Deserialize)]
pub(super) struct ClientFilter {
    role: Option<String>,
    code: Option<String>,
    /// `cluster`: every node's clients (from Redis), each with its `node`; otherwise
    /// this node's.
    scope: Option<String>,
}

impl ClientFilter {
    fn keeps(&self, role: &str, code: Option<&str>) -> bool {
        let role_ok = self.role.as_deref().is_none_or(|want| {
            // `subscriber` also matches `subscriber+reporter`, and so on.
            role == want || role.split('+').any(|r| r == want)
        });
        role_ok && self.code.as_deref().is_none_or(|want| code == Some(want))
    }
}

/// `GET /api/clients[?role=…][&code=…]` (an admin token, when authentication is on).
pub(super) async fn clients(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(filter): Query<ClientFilter>,
) -> Response {
    if let Err(refused) = authorize(&state.shared, &headers, Need::Admin) {
        return refused.into_response();
    }
    match filter.scope.as_deref() {
        None | Some("node") => {}
        Some("cluster") => return cluster_clients(&state, &filter).await,
        Some(other) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!("scope `{other}`: expected `node` or `cluster`"),
            )
        }
    }
    let clients: Vec<_> = state
        .shared
        .clients()
        .into_iter()
        .filter(|c| filter.keeps(c.role, c.code.as_deref()))
        .collect();
    axum::Json(clients).into_response()
}

/// `GET /api/clients?scope=cluster`: every live node's clients, as their nodes last
/// wrote them to Redis (at most a third of `presence_ttl_secs` old), each with its
/// `node`. A listing cut short by its bounds says so in `X-Monitor-Truncated: true`.
async fn cluster_clients(state: &AdminState, filter: &ClientFilter) -> Response {
    let Some(cluster) = &state.shared.cluster else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "scope=cluster: this server is not in a cluster ([cluster] is not configured)",
        );
    };
    match crate::cluster::presence::list(cluster).await {
        Ok(listing) => {
            let rows: Vec<_> = listing
                .rows
                .into_iter()
                .filter(|row| {
                    let text = |key| row.get(key).and_then(serde_json::Value::as_str);
                    filter.keeps(text("role").unwrap_or_default(), text("code"))
                })
                .collect();
            let mut response = axum::Json(rows).into_response();
            if listing.truncated {
                response.headers_mut().insert(
                    "x-monitor-truncated",
                    header::HeaderValue::from_static("true"),
                );
            }
            response
        }
        Err(e) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cluster: cannot read the client lists from redis: {e}"),
        ),
    }
}

/// `DELETE /api/clients/{id}`: closes that connection, logged with who asked.
pub(super) async fn close_client(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    let grant = match authorize(&state.shared, &headers, Need::Admin) {
        Ok(grant) => grant,
        Err(refused) => return refused.into_response(),
    };
    let who = match &grant {
        Some(grant) => format!("token {} from {caller}", grant.name),
        None => caller.to_string(),
    };
    if state
        .shared
        .registry
        .kill(id, format!("closed through the admin API by {who}"))
    {
        tracing::info!(id, by = %who, "admin API: connection closed on request");
        envelope(
            StatusCode::OK,
            reply::success(&serde_json::json!({ "closed": id })),
        )
    } else {
        refusal(StatusCode::NOT_FOUND, &format!("no open connection {id}"))
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub(super) async fn metrics(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state.shared, &headers, Need::Token) {
        return refused.into_response();
    }
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => refusal(StatusCode::INTERNAL_SERVER_ERROR, &format!("metrics: {e}")),
    }
}

/// `POST /api/report`: a JSON object, published exactly like a type-7 report. 413 for a
/// body over the report limit before it is read whole; 400 with the message the binary
/// protocol gives for a body that is not one JSON object, or whose push is too large;
/// 403 outside the token's report grants.
pub(super) async fn report(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let grant = match authorize(&state.shared, &headers, Need::Token) {
        Ok(grant) => grant,
        Err(refused) => return refused.into_response(),
    };
    let settings = state.shared.settings.borrow().clone();
    // What a report frame may carry over the binary protocol.
    let limit = (settings.max_frame_len as usize).saturating_sub(monitor_proto::HEADER_LEN);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, &too_large(limit));
    }
    // A body that trickles in is cut off like a partial frame.
    let within = std::time::Duration::from_secs(settings.frame_timeout_secs);
    let bytes = match tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return refusal(StatusCode::PAYLOAD_TOO_LARGE, &too_large(limit)),
        Err(_) => {
            Stats::add(&state.shared.stats.frame_timeouts, 1);
            return refusal(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive in {} s (frame_timeout_secs)",
                    settings.frame_timeout_secs
                ),
            );
        }
    };
    let report = match Report::parse(bytes) {
        Ok(report) => report,
        Err(e) => {
            let kind = crate::stats::ProtocolErrorKind::of_body(&e);
            state.shared.stats.protocol_error(kind);
            return refusal(StatusCode::BAD_REQUEST, &crate::cmd::malformed(&e));
        }
    };
    if let Some(grant) = &grant {
        if !grant.may_report(report.code.as_deref()) {
            Stats::add(&state.shared.stats.auth_forbidden, 1);
            let what = match &report.code {
                Some(code) => format!("report under \"{code}\""),
                None => "report without a code".to_owned(),
            };
            return refusal(StatusCode::FORBIDDEN, &format!("forbidden: {what}"));
        }
    }
    let mut wakes = Wakes::default();
    let published = crate::cmd::publish(&state.shared, &settings, &report, &mut wakes);
    wakes.wake_all();
    match published {
        Ok(published) => envelope(StatusCode::OK, published.ack()),
        Err(too_large) => refusal(StatusCode::BAD_REQUEST, &too_large),
    }
}

fn too_large(limit: usize) -> String {
    format!("report too large: the body is over {limit} bytes (max_frame_len less the header)")
}
