//! Clustering over Redis: several nodes, one fan-out (`docs/cluster.md`).
//!
//! ```text
//! report on node A ─► A's hub (local subscribers, at once)
//!                  └► A's outgoing queue (bytes bounded) ─► publisher task ─► PUBLISH (pipelined)
//!                                                                               │ Redis channel
//! node B: push sender (bounded) ◄─ RESP3 subscription ◄──────────────────────────┘
//!         └► deliver task: check the header and the sequence, parse, B's hub
//! ```
//!
//! Two Redis connections per node, each a [`ConnectionManager`] that reconnects by
//! itself: one publishes (and keeps the presence), one is subscribed, so that a slow
//! subscription never holds up publishing. Neither is needed for local delivery: while
//! Redis is away a node serves its own subscribers, counts what it could not publish,
//! logs the change of state once, and retries with backoff.
//!
//! The hub and the connections know nothing of this module: publishing a report
//! (`crate::cmd::publish`, for type-7 reports and `POST /api/report`) calls
//! [`Cluster::offer`] after the local fan-out, and the deliver task fans out what arrives
//! through the same checks, locally only (`crate::cmd::publish_here`).
//!
//! [`Cluster`] is what the server's shared state holds; [`tasks`] starts the tasks that
//! use that state, so that this file depends on neither.

mod incoming;
pub(crate) mod presence;
mod publisher;
mod subscriber;
pub(crate) mod tasks;
pub(crate) mod wire;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::config::{redact_url, ClusterConfig};
use crate::stats::Stats;

/// Each attempt to connect to Redis gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command (or a pipeline) Redis has not answered within this long fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Our own bound on any one Redis operation, reconnection included: nothing waits longer.
const OP_TIMEOUT: Duration = Duration::from_secs(8);
/// An idle link is checked (PING) this often, so that a lost Redis shows within it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// The first wait before trying a lost Redis again; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Messages the incoming queue holds at most (it is bounded in bytes too).
const INCOMING_MESSAGES: usize = 8192;
/// At shutdown, how long the publisher may take to send what is queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Rejections and overflows are logged at most once in this long (with a count).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A cluster that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL, or the TLS settings, cannot make a Redis client.
    #[error("cluster.redis `{url}`: {reason}")]
    Client {
        /// The URL, its password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// `tls_ca` cannot be read.
    #[error("cluster.tls_ca {path}: {source}")]
    TlsCa {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The two Redis links of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// The publishing connection (and presence).
    Publish,
    /// The subscribed connection.
    Subscribe,
}

impl Link {
    fn as_str(self) -> &'static str {
        match self {
            Link::Publish => "publish",
            Link::Subscribe => "subscribe",
        }
    }
}

/// A link's state: not tried yet, up, or down.
const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// This node's place in a cluster: what every connection and task of the server uses.
pub(crate) struct Cluster {
    node_id: Arc<str>,
    /// This node's start time, unix ms: the epoch of its messages.
    epoch: u64,
    channel: String,
    /// `<channel>:presence:`, followed by a node id: a node's presence hash.
    presence_prefix: String,
    /// This node's: `<channel>:presence:<node_id>`.
    presence_key: String,
    /// `<channel>:nodes`.
    nodes_key: String,
    /// The Redis URL, password redacted: what the logs and the status show.
    redis_shown: String,
    presence_ttl: Duration,
    stats: Arc<Stats>,
    outgoing: publisher::Outgoing,
    publish_link: AtomicU8,
    subscribe_link: AtomicU8,
    publish_conn: ConnectionManager,
    subscribe_conn: ConnectionManager,
    incoming: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Bytes of the messages in the incoming queue (bounded like the outgoing one).
    incoming_bytes: Arc<AtomicUsize>,
    /// Set when the subscribed connection reports it was closed (a RESP3 push).
    disconnected: Arc<Disconnected>,
    /// The longest message taken from the channel: `max_frame_len` and a header line.
    max_message_len: Arc<AtomicUsize>,
    rejections: RateLimited,
    /// One cluster-wide client listing at a time: each may hold up to
    /// `presence::MAX_LISTED_BYTES`, and the admin API serves many connections at once.
    listing: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("redis", &self.redis_shown)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// A disconnection of the subscribed connection, for its keeper task.
#[derive(Debug, Default)]
struct Disconnected {
    flag: AtomicBool,
    notify: Notify,
}

/// What `/api/status` shows of the cluster.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterStatus {
    pub(crate) node_id: String,
    pub(crate) redis: String,
    pub(crate) channel: String,
    /// Both links up: reports go out and come in.
    pub(crate) up: bool,
    pub(crate) publishing: bool,
    pub(crate) subscribed: bool,
    /// Bytes waiting to be published.
    pub(crate) outgoing_bytes: usize,
    /// Bytes received and not yet delivered.
    pub(crate) incoming_bytes: usize,
}

impl Cluster {
    /// A node of the cluster `config` describes, named `node_id`. Nothing connects yet:
    /// the tasks of [`tasks::spawn`] do, and a node starts (and serves locally) while
    /// Redis is down.
    pub(crate) fn new(
        config: &ClusterConfig,
        node_id: String,
        max_frame_len: u32,
        stats: Arc<Stats>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        // rustls picks its crypto provider from the process default or its features:
        // this workspace builds ring alone, and saying so here means a `rediss://`
        // connection can never stop on an ambiguous provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redis_shown = redact_url(&config.redis);
        let client_error = |reason: String| ClusterError::Client {
            url: redis_shown.clone(),
            reason,
        };
        let info = config
            .redis
            .as_str()
            .into_connection_info()
            .map_err(|e| client_error(e.to_string()))?;
        let mut settings = info.redis_settings().clone();
        if settings.password().is_none() {
            if let Ok(password) = std::env::var("MONITOR_REDIS_PASSWORD") {
                if !password.is_empty() {
                    settings = settings.set_password(password);
                }
            }
        }
        // RESP3: the subscription's messages arrive as pushes on a connection that still
        // answers commands (PING), and the manager resubscribes after a reconnection.
        let info = info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP3));
        let client = match &config.tls_ca {
            None => redis::Client::open(info),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| ClusterError::TlsCa {
                    path: path.clone(),
                    source,
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
        .map_err(|e| client_error(e.to_string()))?;

        let (tx, rx) = mpsc::channel(INCOMING_MESSAGES);
        let incoming_bytes = Arc::new(AtomicUsize::new(0));
        let disconnected = Arc::new(Disconnected::default());
        let max_message_len = Arc::new(AtomicUsize::new(
            max_frame_len as usize + wire::MAX_HEADER_LEN,
        ));
        let push_sender = incoming::PushSender {
            tx,
            bytes: Arc::clone(&incoming_bytes),
            max_bytes: config.max_outgoing_bytes,
            max_message_len: Arc::clone(&max_message_len),
            disconnected: Arc::clone(&disconnected),
            stats: Arc::clone(&stats),
            too_large: Arc::new(RateLimited::default()),
            full: Arc::new(RateLimited::default()),
        };
        let manager = |push: Option<incoming::PushSender>| {
            let mut cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                // One quick retry inside the manager; our tasks retry with their own
                // backoff (and log), so that no command waits on a long retry loop.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(100))
                .set_max_delay(Duration::from_secs(1));
            if let Some(push) = push {
                cfg = cfg
                    .set_push_sender(move |info| push.send(info))
                    .set_automatic_resubscription();
            }
            ConnectionManager::new_lazy_with_config(client.clone(), cfg)
                .map_err(|e| client_error(e.to_string()))
        };
        let publish_conn = manager(None)?;
        let subscribe_conn = manager(Some(push_sender))?;
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Arc::new(Cluster {
            presence_prefix: format!("{}:presence:", config.channel),
            presence_key: format!("{}:presence:{node_id}", config.channel),
            nodes_key: format!("{}:nodes", config.channel),
            node_id: node_id.into(),
            epoch,
            channel: config.channel.clone(),
            redis_shown,
            presence_ttl: Duration::from_secs(config.presence_ttl_secs),
            outgoing: publisher::Outgoing::new(config.max_outgoing_bytes),
            stats,
            publish_link: AtomicU8::new(STARTING),
            subscribe_link: AtomicU8::new(STARTING),
            publish_conn,
            subscribe_conn,
            incoming: Mutex::new(Some(rx)),
            incoming_bytes,
            disconnected,
            max_message_len,
            rejections: RateLimited::default(),
            listing: tokio::sync::Semaphore::new(1),
        }))
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Offers a report that was just published locally to the cluster: queued for the
    /// publisher, or counted as not published (Redis down, or the queue full). Whether
    /// it was queued while the link is up: the ack's `"cluster": true`.
    pub(crate) fn offer(&self, report: &[u8]) -> bool {
        let up = self.publish_link.load(Ordering::Acquire) == UP;
        match self.outgoing.offer(&self.node_id, self.epoch, report, up) {
            publisher::Offered::Queued => true,
            publisher::Offered::Down => {
                Stats::add(&self.stats.cluster_publish_failed, 1);
                false
            }
            publisher::Offered::Full => {
                Stats::add(&self.stats.cluster_overflow, 1);
                self.outgoing.overflows.note(|suppressed| {
                    tracing::warn!(
                        node = %self.node_id,
                        max_outgoing_bytes = self.outgoing.max_bytes,
                        suppressed,
                        "cluster: outgoing queue full; reports are delivered locally only"
                    );
                });
                false
            }
        }
    }

    /// Applies a reloaded `max_frame_len` to what the channel may bring.
    pub(crate) fn set_max_frame_len(&self, max_frame_len: u32) {
        self.max_message_len.store(
            max_frame_len as usize + wire::MAX_HEADER_LEN,
            Ordering::Relaxed,
        );
    }

    /// Whether `link` is up now.
    fn link_up(&self, link: Link) -> bool {
        self.link(link).load(Ordering::Acquire) == UP
    }

    fn link(&self, link: Link) -> &AtomicU8 {
        match link {
            Link::Publish => &self.publish_link,
            Link::Subscribe => &self.subscribe_link,
        }
    }

    /// Records `link`'s state after an attempt, and logs it only when it changed.
    fn set_link(&self, link: Link, outcome: Result<(), String>) {
        let new = if outcome.is_ok() { UP } else { DOWN };
        let old = self.link(link).swap(new, Ordering::AcqRel);
        if old == new {
            return;
        }
        match outcome {
            Ok(()) => tracing::info!(
                node = %self.node_id,
                link = link.as_str(),
                "cluster: connected to redis {}",
                self.redis_shown
            ),
            Err(reason) => tracing::warn!(
                node = %self.node_id,
                link = link.as_str(),
                "cluster: lost redis {} ({reason}); local delivery continues, retrying",
                self.redis_shown
            ),
        }
    }

    /// Counts and logs (rate-limited) a message of the channel that was dropped.
    fn reject(&self, reason: &dyn std::fmt::Display) {
        Stats::add(&self.stats.cluster_rejected, 1);
        self.rejections.note(|suppressed| {
            tracing::warn!(
                node = %self.node_id,
                suppressed,
                "cluster: message on the channel rejected: {reason}"
            );
        });
    }

    /// What `/api/status` shows.
    pub(crate) fn status(&self) -> ClusterStatus {
        let publishing = self.link_up(Link::Publish);
        let subscribed = self.link_up(Link::Subscribe);
        ClusterStatus {
            node_id: self.node_id.to_string(),
            redis: self.redis_shown.clone(),
            channel: self.channel.clone(),
            up: publishing && subscribed,
            publishing,
            subscribed,
            outgoing_bytes: self.outgoing.bytes(),
            incoming_bytes: self.incoming_bytes.load(Ordering::Relaxed),
        }
    }

    /// The cluster's counters, for tests of this module.
    #[cfg(test)]
    fn counters(&self) -> crate::stats::StatsSnapshot {
        self.stats.snapshot()
    }
}

/// The `cluster_up` gauge: 1 when both links are up.
pub(crate) fn up_gauge(cluster: &Cluster) -> i64 {
    i64::from(cluster.link_up(Link::Publish) && cluster.link_up(Link::Subscribe))
}

/// The default node id: the host name and `port` (the first TCP listener's), so that
/// two nodes on one host differ.
pub(crate) fn default_node_id(port: Option<u16>) -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            let name: String = text
                .trim()
                .chars()
                .filter(char::is_ascii_graphic)
                .take(crate::config::MAX_NODE_ID_LEN - 6)
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "node".to_owned());
    match port {
        Some(port) => format!("{host}:{port}"),
        // Unix sockets only: the process id tells two nodes of one host apart.
        None => format!("{host}:pid{}", std::process::id()),
    }
}

/// A warning that may come often (a flood of bad messages, a full queue): logged at most
/// once per [`LOG_EVERY`], with the number of those not logged since.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    /// Calls `log` (with the number suppressed since the last line) if the last line is
    /// old enough; otherwise counts this one as suppressed.
    pub(crate) fn note(&self, log: impl FnOnce(u64)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < LOG_EVERY => state.1 += 1,
            _ => {
                let suppressed = std::mem::take(&mut state.1);
                state.0 = Some(now);
                drop(state);
                log(suppressed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ClusterConfig {
        ClusterConfig {
            redis: url.into(),
            ..ClusterConfig::default()
        }
    }

    #[tokio::test]
    async fn a_node_starts_without_redis_and_counts_what_it_cannot_publish() {
        // Nothing listens on port 1: the node is built (lazily) all the same.
        let cluster = Cluster::new(
            &config("redis://127.0.0.1:1"),
            "a".into(),
            1 << 20,
            Arc::default(),
        )
        .unwrap();
        assert!(!cluster.offer(br#"{"code":"x"}"#), "not queued while down");
        assert_eq!(cluster.counters().cluster_publish_failed, 1);
        assert!(!cluster.status().up);
    }

    #[tokio::test]
    async fn rediss_urls_make_a_client_with_or_without_a_ca() {
        Cluster::new(
            &config("rediss://127.0.0.1:1"),
            "a".into(),
            1 << 20,
            Arc::default(),
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("monitor-cluster-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let mut c = config("rediss://localhost:1");
        c.tls_ca = Some(ca.clone());
        Cluster::new(&c, "a".into(), 1 << 20, Arc::default()).unwrap();
        c.tls_ca = Some(dir.join("missing.pem"));
        let err = Cluster::new(&c, "a".into(), 1 << 20, Arc::default()).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn default_node_ids_are_valid() {
        for port in [Some(9503), None] {
            let id = default_node_id(port);
            crate::config::check_node_id(&id).unwrap();
        }
        assert!(default_node_id(Some(9503)).ends_with(":9503"));
    }

    #[test]
    fn rate_limited_lines_count_what_they_skip() {
        let r = RateLimited::default();
        let mut lines = Vec::new();
        for _ in 0..5 {
            r.note(|suppressed| lines.push(suppressed));
        }
        assert_eq!(lines, [0], "one line, then silence");
        r.state.lock().unwrap().0 = Some(Instant::now() - LOG_EVERY);
        r.note(|suppressed| lines.push(suppressed));
        assert_eq!(lines, [0, 4]);
    }
}
