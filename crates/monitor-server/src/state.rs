//! The state every task of one server shares: the hub, the counters, the partial-frame
//! budget, the live settings. The server creates it; connections and handlers use it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{watch, Semaphore};

use crate::auth::Auth;
use crate::budget::ByteBudget;
use crate::cluster::Cluster;
use crate::config::{AuthConfig, Settings};
use crate::hub::{Hub, HubSettings};
use crate::registry::Registry;
use crate::stats::Stats;
use crate::tls::ReloadableAcceptor;

/// State shared by every task of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) hub: Hub,
    pub(crate) stats: Arc<Stats>,
    /// Bytes of large partial frames, all connections together (`max_buffered_bytes`).
    pub(crate) budget: ByteBudget,
    pub(crate) settings: watch::Sender<Arc<Settings>>,
    next_id: AtomicU64,
    /// Why a background task failed, once one has (the server then shuts down).
    pub(crate) failure: Mutex<Option<String>>,
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Who may do what; replaced whole on a reload.
    auth: RwLock<Arc<Auth>>,
    /// Every open connection.
    pub(crate) registry: Registry,
    /// When the server started, for its uptime.
    pub(crate) started: std::time::Instant,
    /// The listeners, as the admin API shows them.
    pub(crate) listeners: Vec<ListenerInfo>,
    /// The sampled time from a report's arrival to its push being written.
    pub(crate) push_latency: prometheus_client::metrics::histogram::Histogram,
    /// The TLS listeners' acceptors, by listener name, for reloads.
    pub(crate) acceptors: Vec<(String, Arc<ReloadableAcceptor>)>,
    /// This node's cluster, with `[cluster]`: reports are offered to it once published
    /// here.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl Shared {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    pub(crate) fn settings_receiver(&self) -> watch::Receiver<Arc<Settings>> {
        self.settings.subscribe()
    }

    /// The state every connection of a server shares, for `settings`.
    pub(crate) fn new(
        settings: Settings,
        auth: &AuthConfig,
        acceptors: Vec<(String, Arc<ReloadableAcceptor>)>,
        listeners: Vec<ListenerInfo>,
        stats: Arc<Stats>,
        cluster: Option<Arc<Cluster>>,
    ) -> Shared {
        Shared {
            hub: Hub::new(Arc::clone(&stats), hub_settings(&settings)),
            stats,
            budget: ByteBudget::new(settings.max_buffered_bytes),
            connection_slots: Arc::new(Semaphore::new(settings.max_connections)),
            settings: watch::channel(Arc::new(settings)).0,
            next_id: AtomicU64::new(1),
            failure: Mutex::new(None),
            auth: RwLock::new(Arc::new(Auth::from_config(auth))),
            registry: Registry::default(),
            started: std::time::Instant::now(),
            listeners,
            push_latency: crate::stats::push_latency_histogram(),
            acceptors,
            cluster,
        }
    }

    /// The authentication table of the moment.
    pub(crate) fn auth(&self) -> Arc<Auth> {
        Arc::clone(&self.auth.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every open connection, by id order.
    pub(crate) fn clients(&self) -> Vec<crate::registry::ClientInfo> {
        let topics: std::collections::HashMap<_, _> =
            self.hub.subscriptions().into_iter().collect();
        let mut all: Vec<_> = self
            .registry
            .snapshot()
            .iter()
            .map(|entry| entry.info(topics.get(&entry.id).map(|t| &t[..])))
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Replaces the authentication table (a reload), and closes the connections whose
    /// grant it no longer gives (a token removed, rotated or changed). Returns how many.
    pub(crate) fn set_auth(&self, auth: Auth) -> usize {
        let auth = Arc::new(auth);
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&auth);
        let closed = self.registry.kill_where(
            |grant| !auth.still_grants(grant),
            "its token (or [auth.mtls]) was removed or changed at a reload",
        );
        Stats::add(&self.stats.auth_closed_at_reload, closed as u64);
        closed
    }

    /// Applies reloaded settings: to the hub and the budget at once, to each connection at
    /// its next event.
    pub(crate) fn apply(&self, settings: Settings) {
        self.budget.set_limit(settings.max_buffered_bytes);
        if let Some(cluster) = &self.cluster {
            cluster.set_max_frame_len(settings.max_frame_len);
        }
        self.hub.configure(hub_settings(&settings));
        self.settings.send_replace(Arc::new(settings));
    }
}

/// What the hub takes of the settings.
fn hub_settings(settings: &Settings) -> HubSettings {
    HubSettings {
        compress_threshold: settings.compress_threshold,
        slow_consumer: settings.slow_consumer,
    }
}

/// A connection's place under `max_connections` and in `connections_open`: both are
/// given back when it is dropped, however the connection's task ends.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    stats: Arc<Stats>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnSlot {
    /// Takes a place, if one is left.
    pub(crate) fn take(shared: &Shared) -> Option<ConnSlot> {
        let permit = Arc::clone(&shared.connection_slots)
            .try_acquire_owned()
            .ok()?;
        Stats::add(&shared.stats.connections_open, 1);
        Some(ConnSlot {
            stats: Arc::clone(&shared.stats),
            _permit: Some(permit),
        })
    }

    /// A place outside `max_connections`, for tests of a connection alone.
    #[cfg(test)]
    pub(crate) fn unlimited(shared: &Shared) -> ConnSlot {
        Stats::add(&shared.stats.connections_open, 1);
        ConnSlot {
            stats: Arc::clone(&shared.stats),
            _permit: None,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.stats
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A listener as `/api/status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ListenerInfo {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) kind: &'static str,
}
