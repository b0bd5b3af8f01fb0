//! Listeners, the accept loops, and the shutdown sequence.
//!
//! [`Server`] binds and runs; below it, one file per concern:
//! - `handle`: [`ServerHandle`], to control a running server from other tasks (stats,
//!   shutdown, live reload).
//! - `accept`: the accept loops, from an accepted socket to its connection task.
//! - `listen`: binding the listeners, and the addresses they bound ([`BoundAddress`]).
//! - `supervise`: background tasks whose panic shuts the server down in order.
//! - `error`: [`ServerError`].

mod accept;
mod error;
mod handle;
mod listen;
mod supervise;

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

use monitor_proto::Address;

use crate::admin::metrics::Metrics;
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::state::Shared;
use crate::stats::Stats;
use accept::accept_loop;
pub use error::ServerError;
pub use handle::ServerHandle;
pub use listen::BoundAddress;
use listen::{BoundListener, Listener};
use supervise::{supervised, watch};

/// A server with its listeners bound, ready to [`run`](Server::run).
///
/// # Example
/// ```no_run
/// # async fn example() -> Result<(), monitor_server::ServerError> {
/// use monitor_server::{Config, Server};
/// let server = Server::bind(Config::default()).await?;
/// let handle = server.handle();
/// tokio::spawn(async move {
///     tokio::signal::ctrl_c().await.ok();
///     handle.shutdown();
/// });
/// server.run().await;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listeners: Vec<BoundListener>,
    /// The admin API's listener, when it is on.
    admin: Option<(TcpListener, std::net::SocketAddr)>,
    shared: Arc<Shared>,
    token: CancellationToken,
    config: Arc<Mutex<Config>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.local_addrs())
            .finish()
    }
}

impl Server {
    /// Binds every listener of `config`. A Unix socket path left by an earlier run is
    /// replaced; one that a running server still accepts on makes the bind fail.
    ///
    /// # Errors
    /// [`ServerError::Bind`] naming the listener that failed.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let (listeners, acceptors) = listen::bind_all(&config.listeners).await?;
        let listeners_info = listeners.iter().map(BoundListener::info).collect();
        let admin = match (&config.admin.enabled, &config.admin.address) {
            (true, Address::Tcp { host, port }) => {
                let listener =
                    TcpListener::bind((host.as_str(), *port))
                        .await
                        .map_err(|source| ServerError::Admin {
                            address: config.admin.address.clone(),
                            source,
                        })?;
                let local = listener.local_addr().map_err(|source| ServerError::Admin {
                    address: config.admin.address.clone(),
                    source,
                })?;
                info!(address = %local, "admin API listening");
                Some((listener, local))
            }
            _ => None,
        };
        let stats = Arc::new(Stats::default());
        let cluster = match &config.cluster {
            Some(cluster) => {
                // By default a node is named after its host and its first TCP port, as
                // bound (a port of 0 in the config is the real one here).
                let port = listeners.iter().find_map(|l| match l.address {
                    BoundAddress::Tcp(addr) => Some(addr.port()),
                    BoundAddress::Unix(_) => None,
                });
                let node_id = cluster
                    .node_id
                    .clone()
                    .unwrap_or_else(|| crate::cluster::default_node_id(port));
                Some(crate::cluster::Cluster::new(
                    cluster,
                    node_id,
                    config.server.max_frame_len,
                    Arc::clone(&stats),
                )?)
            }
            None => None,
        };
        let shared = Arc::new(Shared::new(
            config.server.clone(),
            &config.auth,
            acceptors,
            listeners_info,
            stats,
            cluster,
        ));
        Ok(Server {
            listeners,
            admin,
            shared,
            token: CancellationToken::new(),
            config: Arc::new(Mutex::new(config)),
        })
    }

    /// The address the admin API actually bound, when it is on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// The addresses actually bound, in listener order.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        self.listeners.iter().map(|l| l.address.clone()).collect()
    }

    /// A handle for stats, shutdown and reload.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
            admin: self.admin_addr(),
            token: self.token.clone(),
            config: Arc::clone(&self.config),
        }
    }

    /// Serves until [`ServerHandle::shutdown`], then drains and returns.
    pub async fn run(self) {
        // Every connection's task, WebSocket subscribers' included: the drain waits for them.
        let tracker = TaskTracker::new();
        let mut unix_paths = Vec::new();
        // The admin API outlives the drain, so that `/healthz` can say 503 during it.
        let admin_stop = CancellationToken::new();
        let admin_task = self.admin.map(|(listener, _)| {
            let state = Arc::new(AdminState {
                metrics: Metrics::new(&self.shared),
                shared: Arc::clone(&self.shared),
                draining: self.token.clone(),
                tracker: tracker.clone(),
                listener_name: "admin".into(),
                allowed_origins: self
                    .config
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .admin
                    .allowed_origins
                    .clone(),
            });
            tokio::spawn(supervised(
                "admin API",
                admin::serve(listener, state, admin_stop.clone()),
                Arc::clone(&self.shared),
                self.token.clone(),
            ))
        });
        for l in self.listeners {
            if let Listener::Unix(_, path) = &l.listener {
                unix_paths.push(path.clone());
            }
            tracker.spawn(supervised(
                "accept loop",
                accept_loop(
                    l,
                    Arc::clone(&self.shared),
                    self.token.clone(),
                    tracker.clone(),
                ),
                Arc::clone(&self.shared),
                self.token.clone(),
            ));
        }
        // The cluster's tasks end with `run`: stopped in order after the drain, or aborted
        // if `run` is dropped (a node that dies leaves its presence to expire).
        let cluster_stop = CancellationToken::new();
        let cluster_tasks: Vec<AbortOnDropHandle<()>> = match &self.shared.cluster {
            Some(cluster) => crate::cluster::tasks::spawn(cluster, &self.shared, &cluster_stop)
                .into_iter()
                .map(|(name, task)| {
                    AbortOnDropHandle::new(tokio::spawn(watch(
                        name,
                        AbortOnDropHandle::new(task),
                        Arc::clone(&self.shared),
                        self.token.clone(),
                    )))
                })
                .collect(),
            None => Vec::new(),
        };
        self.token.cancelled().await;
        // The accept loops stop on the token; each connection on its own switch.
        self.shared.registry.shut_down();
        let drain = self.shared.settings.borrow().drain_timeout_secs;
        info!(
            open = self.shared.stats.connections_open.load(Relaxed),
            drain_timeout_secs = drain,
            "shutting down: accepting no more connections, delivering queued pushes"
        );
        tracker.close();
        // Connections stop at the drain deadline; allow for their final flush and close.
        let grace = Duration::from_secs(drain) + Duration::from_secs(5);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                open = self.shared.stats.connections_open.load(Relaxed),
                "connections still open after the drain timeout; exiting anyway"
            );
        }
        for path in unix_paths {
            let _ = std::fs::remove_file(path);
        }
        // Queued reports go out to the cluster, and the presence is removed.
        cluster_stop.cancel();
        let deadline = tokio::time::Instant::now() + CLUSTER_STOP_TIMEOUT;
        for task in cluster_tasks {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        admin_stop.cancel();
        if let Some(task) = admin_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        info!("shutdown complete");
    }
}

/// How long the cluster's tasks may take to stop: the publisher's flush, then the
/// presence's removal, each bounded on its own.
const CLUSTER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
