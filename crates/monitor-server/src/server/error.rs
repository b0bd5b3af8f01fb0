//! [`ServerError`]: why the server could not be set up (a listener, the admin API, a
//! certificate, `[cluster]`).

use monitor_proto::Address;

use crate::tls::TlsError;

/// A listener that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The admin API's address cannot be bound (in use, say).
    #[error("admin API: cannot bind {address}: {source} (set [admin] address, --admin, or [admin] enabled = false)")]
    Admin {
        /// The configured address.
        address: Address,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS listener's certificate, key or client CA cannot be used.
    #[error("listener {name}: {source}")]
    Tls {
        /// The listener's name.
        name: String,
        /// Why.
        source: TlsError,
    },
    /// `[cluster]` cannot be set up (its URL, its TLS CA file).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// Binding failed (address in use, permission, ...).
    #[error("listener {name}: cannot bind {address}: {source}")]
    Bind {
        /// The listener's name.
        name: String,
        /// The configured address.
        address: Address,
        /// Why.
        source: std::io::Error,
    },
}
