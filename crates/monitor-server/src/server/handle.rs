//! [`ServerHandle`]: what other tasks control a running server with: its counters and
//! connections, background tasks under its supervision, shutdown, and live reload.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::supervise::supervised;
use crate::config::{Config, ConfigDiff, ConfigError};
use crate::registry::ClientInfo;
use crate::state::Shared;
use crate::stats::StatsSnapshot;

/// Controls a running server from other tasks: stats, shutdown, live reconfiguration.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) admin: Option<std::net::SocketAddr>,
    pub(super) token: CancellationToken,
    pub(super) config: Arc<Mutex<Config>>,
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
    /// (bounded by `drain_timeout_secs`), close. [`Server::run`](super::Server::run)
    /// returns when done.
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
