//! The accept loops: one per listener, from an accepted socket to its connection task
//! (`max_connections`, the TLS handshake in the connection's own task).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::listen::{BoundListener, Listener};
use crate::conn;
use crate::registry::{Kind, Origin};
use crate::state::{ConnSlot, Shared};
use crate::stats::Stats;

/// Accepts on `l` until `token` is cancelled, and spawns each connection's task on
/// `tracker`.
pub(super) async fn accept_loop(
    l: BoundListener,
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(10);
    let listener_name: Arc<str> = l.name.as_str().into();
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            accepted = accept(&l.listener) => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                shared.stats.connections_accepted.fetch_add(1, Relaxed);
                let Some(slot) = ConnSlot::take(&shared) else {
                    shared.stats.connections_refused.fetch_add(1, Relaxed);
                    warn!(listener = %l.name, peer = %peer, "max_connections reached: connection closed");
                    drop(stream);
                    continue;
                };
                let shared = Arc::clone(&shared);
                let origin = Origin {
                    peer: peer.into_boxed_str(),
                    listener: Arc::clone(&listener_name),
                    kind: Kind::Tcp,
                    client_cert: false,
                };
                // A task per kind of stream, each as small as its own state: a TLS
                // session's is kilobytes, and plain connections must not pay for it.
                match stream {
                    Accepted::Tcp(s) => {
                        tracker.spawn(conn::serve(s, origin, shared, slot));
                    }
                    Accepted::Unix(s) => {
                        let origin = Origin {
                            kind: Kind::Unix,
                            ..origin
                        };
                        tracker.spawn(conn::serve(s, origin, shared, slot));
                    }
                    Accepted::Tls(s, acceptor) => {
                        let origin = Origin {
                            kind: Kind::Tls,
                            ..origin
                        };
                        let token = token.clone();
                        tracker.spawn(serve_tls(s, acceptor, origin, shared, slot, token));
                    }
                }
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                warn!(listener = %l.name, error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A connection to a TLS listener: the handshake, in the connection's own task and cut
/// off at its timeout (never in the accept loop), then the protocol over TLS.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    mut origin: Origin,
    shared: Arc<Shared>,
    slot: ConnSlot,
    token: CancellationToken,
) {
    let limit = shared.settings.borrow().tls_handshake_timeout_secs;
    let handshake = tokio::time::timeout(Duration::from_secs(limit), acceptor.accept(stream));
    let reason = tokio::select! {
        () = token.cancelled() => return,
        done = handshake => match done {
            Ok(Ok(tls)) => {
                // Only a verified certificate gets this far on a mutual-TLS listener.
                origin.client_cert = tls.get_ref().1.peer_certificates().is_some();
                return conn::serve(tls, origin, shared, slot).await;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no handshake in {limit} s (tls_handshake_timeout_secs)"),
        },
    };
    Stats::add(&shared.stats.tls_handshake_failures, 1);
    warn!(listener = %origin.listener, peer = %origin.peer, reason = %reason, "TLS handshake failed");
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    /// A TCP connection to a TLS listener, with the acceptor of the moment.
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Accepted, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            // Pushes are small and latency matters: no Nagle delay.
            stream.set_nodelay(true)?;
            Ok((Accepted::Tcp(stream), peer.to_string()))
        }
        Listener::Tls(l, acceptor) => {
            let (stream, peer) = l.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Accepted::Tls(stream, acceptor.acceptor()), peer.to_string()))
        }
        Listener::Unix(l, path) => {
            let (stream, _) = l.accept().await?;
            Ok((Accepted::Unix(stream), format!("unix:{}", path.display())))
        }
    }
}
