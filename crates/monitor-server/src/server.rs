//! Listeners, the accept loops, and the shutdown sequence.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{error, info, warn};

use monitor_proto::Address;

use crate::admin::metrics::Metrics;
use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigDiff, ConfigError};
use crate::conn;
use crate::registry::{ClientInfo, Kind, Origin};
use crate::state::ListenerInfo;
use crate::state::{ConnSlot, Shared};
use crate::stats::{Stats, StatsSnapshot};
use crate::tls::{ReloadableAcceptor, TlsError};

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

enum Listener {
    Tcp(TcpListener),
    /// A TCP listener whose connections start with a TLS handshake.
    Tls(TcpListener, Arc<ReloadableAcceptor>),
    Unix(UnixListener, PathBuf),
}

struct BoundListener {
    name: String,
    listener: Listener,
    address: BoundAddress,
}

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

/// Controls a running server from other tasks: stats, shutdown, live reconfiguration.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    admin: Option<std::net::SocketAddr>,
    token: CancellationToken,
    config: Arc<Mutex<Config>>,
}

impl ServerHandle {
    /// The address the admin API bound, when it is on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
    }

    /// The server's counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// This node's id in its cluster, with `[cluster]`.
    pub fn cluster_node_id(&self) -> Option<String> {
        self.shared.cluster.as_ref().map(|c| c.node_id().to_owned())
    }

    /// With `[cluster]`: whether this node is connected to the cluster's Redis, both
    /// publishing and subscribed (the `cluster_up` gauge).
    pub fn cluster_up(&self) -> Option<bool> {
        self.shared
            .cluster
            .as_ref()
            .map(|c| crate::cluster::up_gauge(c) == 1)
    }

    /// Number of subscribed connections.
    pub fn subscribers(&self) -> usize {
        self.shared.hub.subscriber_count()
    }

    /// What each subscriber's queue holds now (pushes and bytes not yet written), by
    /// connection id.
    pub fn queue_depths(&self) -> Vec<(u64, crate::queue::QueueDepth)> {
        self.shared.hub.queue_depths()
    }

    /// Every open connection, by id order. Built from copies of references: neither the
    /// registry nor the hub is locked across the listing, and fan-out never waits for it.
    pub fn connections(&self) -> Vec<ClientInfo> {
        self.shared.clients()
    }

    /// Closes connection `id`, logging `why`; whether it was open.
    pub fn close_connection(&self, id: u64, why: &str) -> bool {
        self.shared.registry.kill(id, why.to_owned())
    }

    /// Bytes of the `max_buffered_bytes` budget that connections hold now for the large
    /// frames they are reading.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// Runs `task` in the background for this server. If it panics, the panic is logged
    /// and the server shuts down in order: a process that lost, say, its signal handler
    /// or an accept loop is worse than one that stops cleanly.
    pub fn spawn_supervised<F>(&self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(supervised(
            name,
            task,
            Arc::clone(&self.shared),
            self.token.clone(),
        ));
    }

    /// Why the server stopped on its own, if a background task failed (see
    /// [`ServerHandle::spawn_supervised`]).
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a graceful shutdown: stop accepting, stop reading, deliver what is queued
    /// (bounded by `drain_timeout_secs`), close. [`Server::run`] returns when done.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Applies the settings of `new` that can change live (limits, timeouts, the legacy
    /// switch, the slow-consumer policy, `[auth]`) to every connection, and reads every
    /// TLS listener's certificate files again; returns what changed, what needs a restart
    /// (listeners, `max_connections`, `subscriber_queue`, `workers`, `sched_policy`), and
    /// what failed (a certificate that cannot be used: the listener keeps the old one).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if `new` does not validate; nothing is applied then.
    pub fn reload(&self, new: Config) -> Result<ConfigDiff, ConfigError> {
        new.validate()?;
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut diff = current.diff(&new);
        let mut live = new.server.clone();
        live.keep_restart_only(&current.server);
        current.server = live.clone();
        self.shared.apply(live);
        for (name, acceptor) in &self.shared.acceptors {
            let Some(listener) = new.listeners.iter().find(|l| &l.name == name && l.is_tls())
            else {
                continue;
            };
            match acceptor.reload(listener) {
                Ok(()) => diff
                    .applied
                    .push(format!("listener {name}: certificates read again")),
                Err(e) => diff
                    .failed
                    .push(format!("{e}; listener {name} keeps its certificate")),
            }
        }
        let mut kept = current.listeners.clone();
        for l in &mut kept {
            if let Some(fresh) = new
                .listeners
                .iter()
                .find(|n| n.name == l.name && n.address == l.address)
            {
                l.tls_cert.clone_from(&fresh.tls_cert);
                l.tls_key.clone_from(&fresh.tls_key);
                l.tls_client_ca.clone_from(&fresh.tls_client_ca);
            }
        }
        current.listeners = kept;
        current.auth = new.auth.clone();
        let closed = self
            .shared
            .set_auth(crate::auth::Auth::from_config(&new.auth));
        if closed > 0 {
            diff.applied.push(format!(
                "auth: {closed} connection(s) closed: their token was removed or changed"
            ));
        }
        Ok(diff)
    }
}

impl Server {
    /// Binds every listener of `config`. A Unix socket path left by an earlier run is
    /// replaced; one that a running server still accepts on makes the bind fail.
    ///
    /// # Errors
    /// [`ServerError::Bind`] naming the listener that failed.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let mut listeners = Vec::new();
        let mut acceptors = Vec::new();
        for l in &config.listeners {
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
        let listeners_info = listeners
            .iter()
            .map(|l: &BoundListener| ListenerInfo {
                name: l.name.clone(),
                address: l.address.to_string(),
                kind: match &l.listener {
                    Listener::Tcp(_) => "tcp",
                    Listener::Tls(..) => "tls",
                    Listener::Unix(..) => "unix",
                },
            })
            .collect();
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

/// Runs `task` as its own tokio task and waits for it; a panic is logged and cancels
/// `token` (the server's shutdown).
async fn supervised<F>(name: &'static str, task: F, shared: Arc<Shared>, token: CancellationToken)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    watch(
        name,
        AbortOnDropHandle::new(tokio::spawn(task)),
        shared,
        token,
    )
    .await;
}

/// Waits for a task; a panic is logged and cancels `token` (the server's shutdown).
/// Dropping the wait aborts the task.
async fn watch(
    name: &'static str,
    task: AbortOnDropHandle<()>,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    if let Err(e) = task.await {
        if e.is_panic() {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            error!(task = name, panic = %message, "background task panicked: shutting down");
            shared
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| format!("{name} panicked: {message}"));
            token.cancel();
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

async fn accept_loop(
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
