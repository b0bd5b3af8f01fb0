//! Configuration: the TOML file, its defaults, and the command-line overrides.

use std::fmt;
use std::path::{Path, PathBuf};

use monitor_proto::Address;
use serde::{Deserialize, Serialize};

/// The whole configuration: `[server]` settings and one or more `[[listener]]`s.
///
/// Every key is optional; [`Config::default`] is what `monitor-server` runs with when given
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limits and policies.
    pub server: Settings,
    /// Where to accept connections.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Who may do what (off unless configured).
    pub auth: AuthConfig,
    /// The admin HTTP listener.
    pub admin: AdminConfig,
    /// How the server logs.
    pub log: LogConfig,
    /// Clustering over Redis (off unless configured: a single node needs no Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: several nodes sharing their reports through a Redis channel
/// (`docs/cluster.md`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `unix:///path/to/redis.sock`. Without a password in the URL,
    /// `MONITOR_REDIS_PASSWORD` is used when set. Printed with the password redacted.
    #[serde(serialize_with = "serialize_redacted")]
    pub redis: String,
    /// This node's name on the channel and in the cluster's client list: at most 64
    /// bytes, printable ASCII without spaces. Default: the host name and the first TCP
    /// listener's bound port (`web-1:9503`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The Redis pub/sub channel the nodes share; presence keys are named after it
    /// (`<channel>:presence:<node_id>`, `<channel>:nodes`), so clusters with different
    /// channels can share a Redis.
    pub channel: String,
    /// How long a node's client list outlives its last refresh (it refreshes every third
    /// of this): a node that died leaves the cluster's list within this time.
    pub presence_ttl_secs: u64,
    /// Bytes of reports waiting to be published to Redis; when full, reports are still
    /// delivered locally and the overflow is counted (`cluster_overflow`). Reports
    /// received from Redis and not yet delivered have the same bound.
    pub max_outgoing_bytes: usize,
    /// PEM file of the CAs that sign the Redis server's certificate (`rediss://`);
    /// default: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: "redis://127.0.0.1:6379".into(),
            node_id: None,
            channel: "monitor:reports".into(),
            presence_ttl_secs: 15,
            max_outgoing_bytes: 16 * 1024 * 1024,
            tls_ca: None,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &redact_url(&self.redis))
            .field("node_id", &self.node_id)
            .field("channel", &self.channel)
            .field("presence_ttl_secs", &self.presence_ttl_secs)
            .field("max_outgoing_bytes", &self.max_outgoing_bytes)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// Most bytes of a node id: it goes on every message the node publishes.
pub const MAX_NODE_ID_LEN: usize = 64;
/// Longest `presence_ttl_secs`: one day.
pub const MAX_PRESENCE_TTL_SECS: u64 = 86_400;

/// Why `id` cannot be a node id, if it cannot: 1 to [`MAX_NODE_ID_LEN`] bytes of
/// printable ASCII without spaces, so that it is one word of a message's header line.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return Err(format!(
            "`{}` must be 1 to {MAX_NODE_ID_LEN} bytes",
            id.escape_debug()
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`{}` must be printable ASCII without spaces",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// `url` with its password, if any, replaced by `****`: what logs and printed configs
/// show.
pub fn redact_url(url: &str) -> String {
    // scheme://[user[:password]@]host...: the userinfo ends at the last `@` before the
    // path.
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    // Without a `:`, the userinfo is a user name alone.
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    let user = &userinfo[..colon];
    format!("{}{user}:****{}", &url[..start], &rest[at..])
}

fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

impl ClusterConfig {
    /// Checks the `[cluster]` values.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let scheme = self.redis.split("://").next().unwrap_or_default();
        if !self.redis.contains("://")
            || !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix")
        {
            return invalid(
                "cluster.redis",
                format!(
                    "`{}`: expected redis://host:port, rediss://host:port or unix:///path",
                    redact_url(&self.redis)
                ),
            );
        }
        if redis::IntoConnectionInfo::into_connection_info(self.redis.as_str()).is_err() {
            return invalid(
                "cluster.redis",
                format!("`{}` is not a Redis URL", redact_url(&self.redis)),
            );
        }
        if let Some(id) = &self.node_id {
            if let Err(reason) = check_node_id(id) {
                return invalid("cluster.node_id", reason);
            }
        }
        if self.channel.is_empty()
            || self.channel.len() > 256
            || !self.channel.bytes().all(|b| b.is_ascii_graphic())
        {
            return invalid(
                "cluster.channel",
                "must be 1 to 256 bytes of printable ASCII without spaces".into(),
            );
        }
        if self.presence_ttl_secs == 0 || self.presence_ttl_secs > MAX_PRESENCE_TTL_SECS {
            return invalid(
                "cluster.presence_ttl_secs",
                format!("must be from 1 to {MAX_PRESENCE_TTL_SECS}"),
            );
        }
        if self.tls_ca.is_some() && scheme != "rediss" {
            return invalid("cluster.tls_ca", "is for a rediss:// (TLS) URL".into());
        }
        Ok(())
    }
}

/// `[admin]`: the admin HTTP API, metrics and dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve it (`false` turns it off).
    pub enabled: bool,
    /// Where: loopback by default, never a public address unless configured so.
    pub address: Address,
    /// Origins (`https://ops.example.com`) whose pages may open `/ws`, besides the admin
    /// listener's own (the dashboard). A browser request from any other origin is
    /// refused, so that a page on another site cannot read the reports through an
    /// operator's browser.
    pub allowed_origins: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            address: Address::Tcp {
                host: "127.0.0.1".into(),
                port: 9600,
            },
            allowed_origins: Vec::new(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal (never under `NO_COLOR`).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: Settings::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            listeners: vec![ListenerConfig::default()],
            cluster: None,
        }
    }
}

/// Largest `idle_timeout_secs` and `drain_timeout_secs`: one year. Deadlines are
/// computed as `Instant + timeout`, which must not overflow.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;
/// Frames up to this size (64 KiB) never wait for the `max_buffered_bytes` budget, so
/// ordinary clients are not slowed by connections that hold large partial frames.
pub const SMALL_FRAME_LEN: usize = 64 * 1024;
/// Largest `workers`: each is an OS thread, and idle workers scan each other's queues.
pub const MAX_WORKERS: usize = 1024;

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A connection that sends no complete frame for this long is closed.
    pub idle_timeout_secs: u64,
    /// A TLS handshake not done this long after the connection was accepted is cut off.
    pub tls_handshake_timeout_secs: u64,
    /// Largest frame accepted, header included; larger ones close the connection after
    /// their first 12 bytes.
    pub max_frame_len: u32,
    /// Largest size a compressed body may inflate to.
    pub max_inflated_len: usize,
    /// Server bodies longer than this are compressed.
    pub compress_threshold: usize,
    /// Connections over this number are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Pushes queued per subscriber before the slow-consumer policy applies.
    pub subscriber_queue: usize,
    /// Bytes of push bodies queued per subscriber before the slow-consumer policy
    /// applies; an empty queue always takes one push, so a subscriber holds at most this
    /// plus one push.
    pub subscriber_queue_bytes: usize,
    /// A connection whose socket has not taken a byte of its pending output for this long
    /// is closed (a subscriber that stopped reading), and counted.
    pub write_timeout_secs: u64,
    /// Most topic patterns in one subscription; more is a malformed subscribe.
    pub max_topics: usize,
    /// Longest topic pattern, in bytes; longer is a malformed subscribe.
    pub max_topic_len: usize,
    /// Server-wide budget for the bytes of incomplete frames larger than 64 KiB: a
    /// connection whose frame would need more than is left stops reading (TCP
    /// backpressure) until the budget frees up. Smaller frames never wait for it.
    pub max_buffered_bytes: usize,
    /// A frame still incomplete this long after its first bytes arrived closes its
    /// connection.
    pub frame_timeout_secs: u64,
    /// What happens to a subscriber whose queue is full.
    pub slow_consumer: SlowConsumer,
    /// Allow the legacy key exchange (the key travels in the clear).
    pub legacy_key_exchange: bool,
    /// On shutdown, how long to keep delivering what is already queued.
    pub drain_timeout_secs: u64,
    /// Runtime worker threads; 0 means one per CPU (see [`Settings::worker_threads`]).
    /// Read at start only.
    pub workers: usize,
    /// The CPU scheduling policy of the runtime's worker threads (Linux). Read at start
    /// only.
    pub sched_policy: SchedPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_timeout_secs: 120,
            tls_handshake_timeout_secs: 10,
            max_frame_len: monitor_proto::codec::DEFAULT_MAX_FRAME_LEN,
            max_inflated_len: monitor_proto::message::DEFAULT_MAX_INFLATED_LEN,
            compress_threshold: monitor_proto::message::DEFAULT_COMPRESS_THRESHOLD,
            max_connections: 100_000,
            subscriber_queue: 8192,
            subscriber_queue_bytes: 8 * 1024 * 1024,
            write_timeout_secs: 10,
            max_topics: monitor_proto::message::topic::DEFAULT_MAX_TOPICS,
            max_topic_len: monitor_proto::message::topic::DEFAULT_MAX_TOPIC_LEN,
            max_buffered_bytes: 256 * 1024 * 1024,
            frame_timeout_secs: 30,
            slow_consumer: SlowConsumer::Drop,
            legacy_key_exchange: false,
            drain_timeout_secs: 5,
            workers: 0,
            sched_policy: SchedPolicy::Batch,
        }
    }
}

impl Settings {
    /// How many runtime worker threads to start, if set; `None` (for `workers = 0`)
    /// leaves it to tokio: one per CPU, or `TOKIO_WORKER_THREADS`.
    ///
    /// On a machine shared with the clients, fewer workers than CPUs can cost less CPU
    /// per push; docs/performance.md has the measurements behind this default.
    pub fn worker_threads(&self) -> Option<usize> {
        (self.workers > 0).then_some(self.workers)
    }

    /// Keeps the running values of the settings that need a restart (those
    /// [`Config::diff`] lists under `needs_restart`): a reload applies the rest.
    pub(crate) fn keep_restart_only(&mut self, running: &Settings) {
        self.max_connections = running.max_connections;
        self.subscriber_queue = running.subscriber_queue;
        self.subscriber_queue_bytes = running.subscriber_queue_bytes;
        self.workers = running.workers;
        self.sched_policy = running.sched_policy;
    }

    /// The message codec settings these imply. Room for a frame is reserved at once only
    /// up to [`SMALL_FRAME_LEN`]: a larger frame's buffer grows once the connection has its
    /// share of `max_buffered_bytes`.
    pub(crate) fn codec_builder(&self) -> monitor_proto::message::ServerCodecBuilder {
        let mut b = monitor_proto::ServerCodec::builder();
        b.max_frame_len(self.max_frame_len)
            .max_inflated_len(self.max_inflated_len)
            .compress_threshold(self.compress_threshold)
            .max_reserve(SMALL_FRAME_LEN);
        b
    }

    /// The topic limits of a subscription.
    pub(crate) fn topic_limits(&self) -> monitor_proto::message::topic::TopicLimits {
        monitor_proto::message::topic::TopicLimits::new()
            .with_max_topics(self.max_topics)
            .with_max_topic_len(self.max_topic_len)
    }
}

/// The policy for a subscriber that does not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Drop the push for that subscriber, and count it.
    Drop,
    /// Close that subscriber's connection.
    Disconnect,
}

impl fmt::Display for SlowConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlowConsumer::Drop => "drop",
            SlowConsumer::Disconnect => "disconnect",
        })
    }
}

/// The CPU scheduling policy of the runtime's worker threads.
///
/// A fan-out server's workers wake each other all the time: the worker that reads a report
/// wakes the subscribers' tasks, and an idle worker is unparked to take some of them. On a
/// CPU shared by two workers, the woken one preempts the waker under the default policy,
/// and they ping-pong (13,000 context switches a second at 100 subscribers and 2000
/// reports/s, against 1,600 under `SCHED_BATCH`). Under `SCHED_BATCH` a woken thread
/// never preempts the one running; it still gets its fair share of CPU.
/// docs/performance.md ("Scheduling policy of the workers") has the measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SchedPolicy {
    /// `SCHED_BATCH` for each worker thread that runs under the default policy
    /// (`SCHED_OTHER`). A policy chosen when starting the server (`chrt`, systemd's
    /// `CPUSchedulingPolicy`) is kept. Ignored outside Linux.
    Batch,
    /// Leave the worker threads under the policy the process was started with.
    Inherit,
}

impl fmt::Display for SchedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchedPolicy::Batch => "batch",
            SchedPolicy::Inherit => "inherit",
        })
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for the logs (the PHP server had `server`, `server2`, ...).
    #[serde(default = "default_listener_name")]
    pub name: String,
    /// `host:port` (the host may be a name, e.g. `localhost:9503`), or
    /// `unix:/path/to/socket`.
    pub address: Address,
    /// PEM file of the certificate chain: with `tls_key`, this is a TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CAs that sign client certificates: every client must then present
    /// one they signed (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ListenerConfig {
    /// A plain listener on `address`.
    pub fn new(name: impl Into<String>, address: Address) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }

    /// Whether this is a TLS listener.
    pub fn is_tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// The `[auth]` table (spec §6): off unless configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Connections must authenticate (a token, or a verified client certificate) before
    /// they subscribe or report.
    pub required: bool,
    /// The tokens, by name.
    #[serde(rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
    /// What any verified client certificate may do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<GrantConfig>,
}

/// One `[[auth.token]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for the logs and the admin API; the token itself is never logged.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits (`monitor-server hash-token` prints it).
    pub token_sha256: String,
    /// Topic patterns it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topic patterns it may report under.
    #[serde(default)]
    pub report: Vec<String>,
    /// Whether it may use the admin API's guarded endpoints.
    #[serde(default)]
    pub admin: bool,
}

/// `[auth.mtls]`: what a verified client certificate may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrantConfig {
    /// Topic patterns it may subscribe to.
    pub subscribe: Vec<String>,
    /// Topic patterns it may report under.
    pub report: Vec<String>,
    /// Whether it may use the admin API's guarded endpoints.
    pub admin: bool,
}

fn default_listener_name() -> String {
    "server".into()
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig::new(
            default_listener_name(),
            Address::Tcp {
                host: "0.0.0.0".into(),
                port: 9503,
            },
        )
    }
}

/// A configuration that cannot be used; the message names the file, key or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value out of its range.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key (`server.max_frame_len`) or flag (`--max-frame-len`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key at fault.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }

    /// Checks every value's range.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        if s.idle_timeout_secs == 0 || s.idle_timeout_secs > MAX_TIMEOUT_SECS {
            return invalid(
                "server.idle_timeout_secs",
                format!("must be from 1 to {MAX_TIMEOUT_SECS} (one year)"),
            );
        }
        if s.drain_timeout_secs > MAX_TIMEOUT_SECS {
            return invalid(
                "server.drain_timeout_secs",
                format!("must be at most {MAX_TIMEOUT_SECS} (one year)"),
            );
        }
        if (s.max_frame_len as usize) < monitor_proto::HEADER_LEN {
            return invalid(
                "server.max_frame_len",
                format!("{} is less than the 45-byte header", s.max_frame_len),
            );
        }
        if s.max_inflated_len == 0 {
            return invalid("server.max_inflated_len", "must be at least 1".into());
        }
        if s.max_connections == 0 || s.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return invalid(
                "server.max_connections",
                format!("must be from 1 to {}", tokio::sync::Semaphore::MAX_PERMITS),
            );
        }
        if s.workers > MAX_WORKERS {
            return invalid(
                "server.workers",
                format!("must be at most {MAX_WORKERS} (0 means one per CPU)"),
            );
        }
        if s.subscriber_queue == 0 {
            return invalid("server.subscriber_queue", "must be at least 1".into());
        }
        if s.subscriber_queue_bytes == 0 {
            return invalid("server.subscriber_queue_bytes", "must be at least 1".into());
        }
        for (key, secs) in [
            (
                "server.tls_handshake_timeout_secs",
                s.tls_handshake_timeout_secs,
            ),
            ("server.write_timeout_secs", s.write_timeout_secs),
            ("server.frame_timeout_secs", s.frame_timeout_secs),
        ] {
            if secs == 0 || secs > MAX_TIMEOUT_SECS {
                return invalid(
                    key,
                    format!("must be from 1 to {MAX_TIMEOUT_SECS} (one year)"),
                );
            }
        }
        if s.max_topics == 0 {
            return invalid("server.max_topics", "must be at least 1".into());
        }
        if s.max_topic_len == 0 {
            return invalid("server.max_topic_len", "must be at least 1".into());
        }
        if s.max_buffered_bytes < s.max_frame_len as usize {
            return invalid(
                "server.max_buffered_bytes",
                format!(
                    "{} is less than max_frame_len {}: a frame of that size could never be read",
                    s.max_buffered_bytes, s.max_frame_len
                ),
            );
        }
        if self.listeners.is_empty() {
            return invalid("listener", "at least one [[listener]] is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for l in &self.listeners {
            if !seen.insert(&l.address) {
                return invalid("listener.address", format!("{} is listed twice", l.address));
            }
            if l.tls_cert.is_some() != l.tls_key.is_some() {
                return invalid(
                    "listener.tls_cert",
                    format!("listener {}: tls_cert and tls_key go together", l.name),
                );
            }
            if l.tls_client_ca.is_some() && !l.is_tls() {
                return invalid(
                    "listener.tls_client_ca",
                    format!("listener {}: mutual TLS needs tls_cert and tls_key", l.name),
                );
            }
            if l.is_tls() && matches!(l.address, Address::Unix(_)) {
                return invalid(
                    "listener.tls_cert",
                    format!("listener {}: TLS is for TCP listeners", l.name),
                );
            }
        }
        if self.admin.enabled && matches!(self.admin.address, Address::Unix(_)) {
            return invalid(
                "admin.address",
                "the admin API listens on TCP (host:port)".into(),
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            // One report of the largest size must fit in the queue.
            let needed = s.max_frame_len as usize + 1024;
            if cluster.max_outgoing_bytes < needed {
                return invalid(
                    "cluster.max_outgoing_bytes",
                    format!(
                        "{} is less than max_frame_len {} and a message header: the largest \
                         report could never be published",
                        cluster.max_outgoing_bytes, s.max_frame_len
                    ),
                );
            }
        }
        self.validate_auth()
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let mut names = std::collections::HashSet::new();
        for t in &a.tokens {
            if t.name.is_empty() || t.name == "mtls" {
                return invalid(
                    "auth.token.name",
                    format!("`{}`: a token needs a name, other than \"mtls\"", t.name),
                );
            }
            if !names.insert(&t.name) {
                return invalid("auth.token.name", format!("`{}` is listed twice", t.name));
            }
            if parse_sha256_hex(&t.token_sha256).is_none() {
                return invalid(
                    "auth.token.token_sha256",
                    format!(
                        "token `{}`: 64 hex digits expected (`monitor-server hash-token` \
                         prints the line)",
                        t.name
                    ),
                );
            }
        }
        let grants = a
            .tokens
            .iter()
            .flat_map(|t| t.subscribe.iter().chain(&t.report))
            .chain(
                a.mtls
                    .iter()
                    .flat_map(|m| m.subscribe.iter().chain(&m.report)),
            );
        for pattern in grants {
            if pattern.len() > self.server.max_topic_len {
                return invalid(
                    "auth",
                    format!(
                        "pattern `{pattern}` is longer than max_topic_len {}",
                        self.server.max_topic_len
                    ),
                );
            }
        }
        if a.required && a.tokens.is_empty() && a.mtls.is_none() {
            return invalid(
                "auth.required",
                "no [[auth.token]] and no [auth.mtls]: no client could authenticate".into(),
            );
        }
        Ok(())
    }

    /// Which changes from `self` to `new` can be applied to a running server, and which
    /// need a restart. Each entry is `key: old -> new`.
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        let (a, b) = (&self.server, &new.server);
        let mut diff = ConfigDiff::default();
        let mut check = |key: &str, old: String, new: String, live: bool| {
            if old != new {
                let line = format!("{key}: {old} -> {new}");
                if live {
                    diff.applied.push(line);
                } else {
                    diff.needs_restart.push(line);
                }
            }
        };
        check(
            "server.idle_timeout_secs",
            a.idle_timeout_secs.to_string(),
            b.idle_timeout_secs.to_string(),
            true,
        );
        check(
            "server.max_frame_len",
            a.max_frame_len.to_string(),
            b.max_frame_len.to_string(),
            true,
        );
        check(
            "server.max_inflated_len",
            a.max_inflated_len.to_string(),
            b.max_inflated_len.to_string(),
            true,
        );
        check(
            "server.compress_threshold",
            a.compress_threshold.to_string(),
            b.compress_threshold.to_string(),
            true,
        );
        check(
            "server.slow_consumer",
            a.slow_consumer.to_string(),
            b.slow_consumer.to_string(),
            true,
        );
        check(
            "server.legacy_key_exchange",
            a.legacy_key_exchange.to_string(),
            b.legacy_key_exchange.to_string(),
            true,
        );
        check(
            "server.drain_timeout_secs",
            a.drain_timeout_secs.to_string(),
            b.drain_timeout_secs.to_string(),
            true,
        );
        check(
            "server.tls_handshake_timeout_secs",
            a.tls_handshake_timeout_secs.to_string(),
            b.tls_handshake_timeout_secs.to_string(),
            true,
        );
        check(
            "server.write_timeout_secs",
            a.write_timeout_secs.to_string(),
            b.write_timeout_secs.to_string(),
            true,
        );
        check(
            "server.max_topics",
            a.max_topics.to_string(),
            b.max_topics.to_string(),
            true,
        );
        check(
            "server.max_topic_len",
            a.max_topic_len.to_string(),
            b.max_topic_len.to_string(),
            true,
        );
        check(
            "server.max_buffered_bytes",
            a.max_buffered_bytes.to_string(),
            b.max_buffered_bytes.to_string(),
            true,
        );
        check(
            "server.frame_timeout_secs",
            a.frame_timeout_secs.to_string(),
            b.frame_timeout_secs.to_string(),
            true,
        );
        check(
            "server.subscriber_queue_bytes",
            a.subscriber_queue_bytes.to_string(),
            b.subscriber_queue_bytes.to_string(),
            false,
        );
        check(
            "server.max_connections",
            a.max_connections.to_string(),
            b.max_connections.to_string(),
            false,
        );
        check(
            "server.subscriber_queue",
            a.subscriber_queue.to_string(),
            b.subscriber_queue.to_string(),
            false,
        );
        check(
            "server.workers",
            a.workers.to_string(),
            b.workers.to_string(),
            false,
        );
        check(
            "server.sched_policy",
            a.sched_policy.to_string(),
            b.sched_policy.to_string(),
            false,
        );
        let listeners = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| {
                    let tls = if l.tls_client_ca.is_some() {
                        " (mutual TLS)"
                    } else if l.is_tls() {
                        " (TLS)"
                    } else {
                        ""
                    };
                    format!("{}={}{tls}", l.name, l.address)
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        check("listener", listeners(self), listeners(new), false);
        let admin = |c: &Config| {
            if c.admin.enabled {
                c.admin.address.to_string()
            } else {
                "off".to_owned()
            }
        };
        check("admin", admin(self), admin(new), false);
        check(
            "log.format",
            format!("{:?}", self.log.format),
            format!("{:?}", new.log.format),
            false,
        );
        // Certificate files are read again at every reload; other paths apply live too.
        let tls_files = |c: &Config| {
            c.listeners
                .iter()
                .filter(|l| l.is_tls())
                .map(|l| {
                    let path = |p: &Option<PathBuf>| {
                        p.as_ref()
                            .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
                    };
                    format!(
                        "{}: {} {} {}",
                        l.name,
                        path(&l.tls_cert),
                        path(&l.tls_key),
                        path(&l.tls_client_ca)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        check("listener TLS files", tls_files(self), tls_files(new), true);
        check(
            "auth.required",
            self.auth.required.to_string(),
            new.auth.required.to_string(),
            true,
        );
        let mut names: Vec<&str> = self
            .auth
            .tokens
            .iter()
            .chain(&new.auth.tokens)
            .map(|t| t.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let find = |c: &Config| c.auth.tokens.iter().find(|t| t.name == name).cloned();
            let (old, now) = (find(self), find(new));
            if old != now {
                let state = |t: &Option<TokenConfig>| {
                    if t.is_some() { "present" } else { "absent" }.to_owned()
                };
                let (before, after) = match (&old, &now) {
                    (Some(_), Some(_)) => ("as was".to_owned(), "changed".to_owned()),
                    _ => (state(&old), state(&now)),
                };
                check(&format!("auth.token {name}"), before, after, true);
            }
        }
        check(
            "auth.mtls",
            format!("{:?}", self.auth.mtls),
            format!("{:?}", new.auth.mtls),
            true,
        );
        if self.cluster != new.cluster {
            // Printed with the password redacted: a change of password alone says so.
            let cluster = |c: &Config| {
                c.cluster
                    .as_ref()
                    .map_or_else(|| "off".to_owned(), |c| format!("{c:?}"))
            };
            let (old, now) = (cluster(self), cluster(new));
            diff.needs_restart.push(if old == now {
                "cluster.redis: the password changed".to_owned()
            } else {
                format!("cluster: {old} -> {now}")
            });
        }
        diff
    }
}

/// 64 hex digits (a SHA-256 in hex) as 32 bytes.
pub(crate) fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The outcome of comparing two configurations (see [`Config::diff`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Changes a running server applies at once.
    pub applied: Vec<String>,
    /// Changes that take effect only after a restart.
    pub needs_restart: Vec<String>,
    /// Changes that could not be applied, and why (a certificate that cannot be read);
    /// what was running stays.
    pub failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_sample() {
        let sample = r#"
            [server]
            idle_timeout_secs = 120
            max_frame_len = 1048576
            max_inflated_len = 8388608
            compress_threshold = 81920
            max_connections = 100000
            subscriber_queue = 8192
            subscriber_queue_bytes = 8388608
            write_timeout_secs = 10
            max_topics = 64
            max_topic_len = 256
            max_buffered_bytes = 268435456
            frame_timeout_secs = 30
            slow_consumer = "drop"
            legacy_key_exchange = false
            drain_timeout_secs = 5
            workers = 0
            sched_policy = "batch"

            [[listener]]
            name = "server"
            address = "0.0.0.0:9503"
        "#;
        assert_eq!(Config::from_toml(sample).unwrap(), Config::default());
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        let printed = Config::default().to_toml();
        assert_eq!(Config::from_toml(&printed).unwrap(), Config::default());
    }

    #[test]
    fn several_listeners_and_unix_sockets() {
        let c = Config::from_toml(
            r#"
            [[listener]]
            address = "127.0.0.1:0"
            [[listener]]
            address = "localhost:0"
            [[listener]]
            name = "local"
            address = "unix:/tmp/m.sock"
            "#,
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 3);
        assert_eq!(c.listeners[1].address.to_string(), "localhost:0");
        assert_eq!(c.listeners[2].address, Address::Unix("/tmp/m.sock".into()));
        assert_eq!(c.listeners[2].address.to_string(), "unix:/tmp/m.sock");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("[server]\nmax_frame_len = 10\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "server.max_frame_len: 10 is less than the 45-byte header"
        );
        let err = Config::from_toml("[server]\nidle_timeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        let err = Config::from_toml("[server]\nslow_consumer = \"wait\"\n").unwrap_err();
        assert!(err.to_string().contains("slow_consumer"), "{err}");
        let err = Config::from_toml("[[listener]]\naddress = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("expected host:port"), "{err}");
        let err = Config::from_toml("listener = []\n").unwrap_err();
        assert!(err.to_string().starts_with("listener:"), "{err}");
    }

    #[test]
    fn diff_splits_live_and_restart_changes() {
        let old = Config::default();
        let mut new = old.clone();
        new.server.idle_timeout_secs = 30;
        new.server.slow_consumer = SlowConsumer::Disconnect;
        new.server.max_connections = 5;
        let d = old.diff(&new);
        assert_eq!(
            d.applied,
            [
                "server.idle_timeout_secs: 120 -> 30",
                "server.slow_consumer: drop -> disconnect"
            ]
        );
        assert_eq!(d.needs_restart, ["server.max_connections: 100000 -> 5"]);
        assert_eq!(old.diff(&old), ConfigDiff::default());
    }

    #[test]
    fn cluster_is_off_unless_configured_and_checked_when_it_is() {
        assert_eq!(Config::default().cluster, None);
        assert!(!Config::default().to_toml().contains("cluster"));
        let c = Config::from_toml("[cluster]\n").unwrap();
        assert_eq!(c.cluster, Some(ClusterConfig::default()));
        let sample = r#"
            [cluster]
            redis = "redis://127.0.0.1:6379"
            channel = "monitor:reports"
            presence_ttl_secs = 15
            max_outgoing_bytes = 16777216
        "#;
        assert_eq!(
            Config::from_toml(sample).unwrap(),
            c,
            "the documented defaults"
        );
        for (toml, key) in [
            ("redis = \"http://x\"", "cluster.redis"),
            ("redis = \"redis://\"", "cluster.redis"),
            ("redis = \"127.0.0.1:6379\"", "cluster.redis"),
            ("node_id = \"a b\"", "cluster.node_id"),
            ("node_id = \"\"", "cluster.node_id"),
            ("channel = \"\"", "cluster.channel"),
            ("presence_ttl_secs = 0", "cluster.presence_ttl_secs"),
            ("max_outgoing_bytes = 1000", "cluster.max_outgoing_bytes"),
            ("tls_ca = \"/ca.pem\"", "cluster.tls_ca"),
            ("nodes = 3", "nodes"),
        ] {
            let err = Config::from_toml(&format!("[cluster]\n{toml}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let long = "n".repeat(MAX_NODE_ID_LEN + 1);
        assert!(Config::from_toml(&format!("[cluster]\nnode_id = \"{long}\"\n")).is_err());
        for url in [
            "rediss://h:6380",
            "redis://h:6379/2",
            "unix:///run/redis.sock",
            "redis://:pw@h:1",
        ] {
            Config::from_toml(&format!("[cluster]\nredis = \"{url}\"\n")).unwrap();
        }
    }

    #[test]
    fn redis_passwords_stay_out_of_logs_and_printed_configs() {
        assert_eq!(
            redact_url("redis://user:s3cret@h:6379/0"),
            "redis://user:****@h:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cret@h"), "rediss://:****@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://user@h"), "redis://user@h");
        assert_eq!(redact_url("redis://:p@ss@h"), "redis://:****@h");
        let c = Config::from_toml("[cluster]\nredis = \"redis://:s3cret@h:1\"\n").unwrap();
        assert!(!c.to_toml().contains("s3cret"), "{}", c.to_toml());
        assert!(!format!("{c:?}").contains("s3cret"));
        let mut other = c.clone();
        other.cluster.as_mut().unwrap().redis = "redis://:other@h:1".into();
        let diff = c.diff(&other);
        assert!(diff.applied.is_empty());
        assert_eq!(diff.needs_restart.len(), 1, "{diff:?}");
        assert_eq!(diff.needs_restart[0], "cluster.redis: the password changed");
        other.cluster.as_mut().unwrap().channel = "other".into();
        let diff = c.diff(&other);
        assert!(diff.needs_restart[0].starts_with("cluster: "), "{diff:?}");
        assert!(!diff.needs_restart[0].contains("s3cret"));
        assert!(!diff.needs_restart[0].contains("other@"));
    }

    #[test]
    fn hashes_parse_strictly() {
        assert_eq!(parse_sha256_hex(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_sha256_hex(&"ab".repeat(31)), None);
        assert_eq!(parse_sha256_hex(&"zz".repeat(32)), None);
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn workers_default_to_tokio_and_are_bounded() {
        let mut c = Config::default();
        assert_eq!(c.server.worker_threads(), None);
        c.server.workers = 3;
        assert_eq!(c.server.worker_threads(), Some(3));
        c.server.workers = MAX_WORKERS + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("server.workers"));
    }

    #[test]
    fn new_limits_are_checked() {
        for (toml, key) in [
            ("write_timeout_secs = 0", "server.write_timeout_secs"),
            ("frame_timeout_secs = 31536001", "server.frame_timeout_secs"),
            ("max_topics = 0", "server.max_topics"),
            ("max_topic_len = 0", "server.max_topic_len"),
            (
                "subscriber_queue_bytes = 0",
                "server.subscriber_queue_bytes",
            ),
            ("max_buffered_bytes = 1048575", "server.max_buffered_bytes"),
        ] {
            let err = Config::from_toml(&format!("[server]\n{toml}\n")).unwrap_err();
            assert!(err.to_string().starts_with(key), "{toml}: {err}");
        }
    }

    #[test]
    fn deadlines_and_permits_are_bounded() {
        let mut c = Config::default();
        c.server.idle_timeout_secs = u64::MAX;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.server.drain_timeout_secs = MAX_TIMEOUT_SECS + 1;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.server.max_connections = usize::MAX;
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_reload_keeps_exactly_what_diff_says_needs_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        let s = &mut new.server;
        s.idle_timeout_secs = 1;
        s.max_frame_len = 1000;
        s.max_inflated_len = 1000;
        s.compress_threshold = 1;
        s.max_connections = 1;
        s.subscriber_queue = 1;
        s.subscriber_queue_bytes = 1;
        s.write_timeout_secs = 1;
        s.max_topics = 1;
        s.max_topic_len = 1;
        s.max_buffered_bytes = 1000;
        s.frame_timeout_secs = 1;
        s.slow_consumer = SlowConsumer::Disconnect;
        s.legacy_key_exchange = true;
        s.drain_timeout_secs = 1;
        s.workers = 1;
        s.sched_policy = SchedPolicy::Inherit;
        let full = old.diff(&new);
        let mut kept = new.clone();
        kept.server.keep_restart_only(&old.server);
        let applied = old.diff(&kept);
        assert_eq!(applied.applied, full.applied);
        assert!(
            applied.needs_restart.is_empty(),
            "{:?}",
            applied.needs_restart
        );
    }
}
