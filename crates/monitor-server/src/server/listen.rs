//! Binding the listeners: TCP, TLS (its certificates read first) and Unix sockets, and the
//! addresses they actually bound.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tracing::info;

use monitor_proto::Address;

use super::error::ServerError;
use crate::config::ListenerConfig;
use crate::state::ListenerInfo;
use crate::tls::ReloadableAcceptor;

/// The address a listener actually bound (with the real port when the config said 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddress {
    /// A TCP listener.
    Tcp(std::net::SocketAddr),
    /// A Unix socket listener.
    Unix(PathBuf),
}

impl fmt::Display for BoundAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundAddress::Tcp(a) => write!(f, "{a}"),
            BoundAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A bound listener socket, by kind.
pub(super) enum Listener {
    Tcp(TcpListener),
    /// A TCP listener whose connections start with a TLS handshake.
    Tls(TcpListener, Arc<ReloadableAcceptor>),
    Unix(UnixListener, PathBuf),
}

/// A listener of the config, bound.
pub(super) struct BoundListener {
    pub(super) name: String,
    pub(super) listener: Listener,
    pub(super) address: BoundAddress,
}

/// The TLS listeners' acceptors, by listener name, for reloads.
pub(super) type Acceptors = Vec<(String, Arc<ReloadableAcceptor>)>;

/// Binds every listener of `configs`, in order, and returns them with the TLS listeners'
/// acceptors. A Unix socket path left by an earlier run is replaced; one that a running
/// server still accepts on makes the bind fail.
pub(super) async fn bind_all(
    configs: &[ListenerConfig],
) -> Result<(Vec<BoundListener>, Acceptors), ServerError> {
    let mut listeners = Vec::new();
    let mut acceptors = Vec::new();
    for l in configs {
        let bind_err = |source| ServerError::Bind {
            name: l.name.clone(),
            address: l.address.clone(),
            source,
        };
        let (listener, address) = match &l.address {
            Address::Tcp { host, port } => {
                // Certificates are read before binding: a listener that cannot serve
                // TLS does not take the port.
                let tls = if l.is_tls() {
                    let acceptor =
                        ReloadableAcceptor::new(l).map_err(|source| ServerError::Tls {
                            name: l.name.clone(),
                            source,
                        })?;
                    Some(Arc::new(acceptor))
                } else {
                    None
                };
                // A host name binds the first of its addresses that works.
                let listener = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(bind_err)?;
                let local = listener.local_addr().map_err(bind_err)?;
                let listener = match tls {
                    Some(acceptor) => {
                        acceptors.push((l.name.clone(), Arc::clone(&acceptor)));
                        Listener::Tls(listener, acceptor)
                    }
                    None => Listener::Tcp(listener),
                };
                (listener, BoundAddress::Tcp(local))
            }
            Address::Unix(path) => {
                remove_stale_socket(path);
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                (
                    Listener::Unix(listener, path.clone()),
                    BoundAddress::Unix(path.clone()),
                )
            }
        };
        let kind = match &listener {
            Listener::Tcp(_) => "tcp",
            Listener::Tls(_, a) if a.mutual => "tls (mutual)",
            Listener::Tls(..) => "tls",
            Listener::Unix(..) => "unix",
        };
        info!(listener = %l.name, address = %address, kind, "listening");
        listeners.push(BoundListener {
            name: l.name.clone(),
            listener,
            address,
        });
    }
    Ok((listeners, acceptors))
}

impl BoundListener {
    /// What the admin API and the status show of this listener.
    pub(super) fn info(&self) -> ListenerInfo {
        ListenerInfo {
            name: self.name.clone(),
            address: self.address.to_string(),
            kind: match &self.listener {
                Listener::Tcp(_) => "tcp",
                Listener::Tls(..) => "tls",
                Listener::Unix(..) => "unix",
            },
        }
    }
}

/// Removes a socket file left by a server that is gone. A socket that still accepts
/// connections belongs to a running server: it is left alone, and binding fails.
fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && std::fs::remove_file(path).is_ok() {
            info!(path = %path.display(), "removed a stale socket file");
        }
    }
}
