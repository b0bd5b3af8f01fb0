//! The WebSocket upgrade (`GET /ws`): refused while the server drains, for a page of a
//! foreign origin, and past `max_connections`; otherwise the socket is sized for the
//! server's limits and served as a subscriber.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use tracing::warn;

use super::serve;
use crate::admin::{refusal, AdminState};
use crate::registry::{Kind, Origin};
use crate::state::ConnSlot;
use crate::stats::Stats;

/// Bytes of messages gathered before they are written (a flush writes them anyway).
const WRITE_BUFFER: usize = 64 * 1024;
/// Read-buffer size: subscribe bodies are small, and an idle connection should not hold
/// tungstenite's default 128 KiB.
const READ_BUFFER: usize = 4 * 1024;

/// `GET /ws`: the upgrade, once the connection has a place under `max_connections`.
pub(in crate::admin) async fn upgrade(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let shared = &state.shared;
    if state.draining.is_cancelled() {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if let Err(origin) = origin_allowed(&headers, &state.allowed_origins) {
        Stats::add(&shared.stats.auth_forbidden, 1);
        warn!(peer = %peer, origin = %origin, "WebSocket refused: a cross-origin page");
        return refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "forbidden: a WebSocket from origin {origin} (add it to [admin] \
                 allowed_origins)"
            ),
        );
    }
    Stats::add(&shared.stats.connections_accepted, 1);
    let Some(slot) = ConnSlot::take(shared) else {
        Stats::add(&shared.stats.connections_refused, 1);
        warn!(peer = %peer, "max_connections reached: WebSocket refused");
        return refusal(StatusCode::SERVICE_UNAVAILABLE, "max_connections reached");
    };
    let max_message = shared.settings.borrow().max_frame_len as usize;
    let origin = Origin {
        peer: peer.to_string().into_boxed_str(),
        listener: Arc::clone(&state.listener_name),
        kind: Kind::WebSocket,
        client_cert: false,
    };
    let shared = Arc::clone(shared);
    // Tracked with the other connections, so that a shutdown waits for its drain.
    let tracker = state.tracker.clone();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Above it a send waits for the socket: one push past the gathered bytes.
        .max_write_buffer_size(WRITE_BUFFER + max_message + 1024)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| tracker.track_future(serve(socket, origin, shared, slot)))
}

/// `Ok` for a request without an `Origin` (not a browser), one from the listener's own
/// origin (its `Host`), or one from `allowed`; the origin otherwise.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let host = headers.get(header::HOST).map(|h| h.as_bytes());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if authority.is_some_and(|a| Some(a.as_bytes()) == host) || allowed.contains(&origin) {
        Ok(())
    } else {
        Err(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut headers = HeaderMap::new();
        assert!(
            origin_allowed(&headers, &[]).is_ok(),
            "no Origin: not a browser"
        );
        headers.insert(header::HOST, "127.0.0.1:9600".parse().unwrap());
        headers.insert(header::ORIGIN, "http://127.0.0.1:9600".parse().unwrap());
        assert!(
            origin_allowed(&headers, &[]).is_ok(),
            "the dashboard itself"
        );
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            origin_allowed(&headers, &[]),
            Err("https://evil.example".to_owned())
        );
        assert!(origin_allowed(&headers, &["https://evil.example".to_owned()]).is_ok());
        headers.insert(header::ORIGIN, "http://127.0.0.1:9601".parse().unwrap());
        assert!(origin_allowed(&headers, &[]).is_err(), "another port");
    }
}
