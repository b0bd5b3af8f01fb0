//! The `[server]` table: limits, timeouts and policies ([`Settings`], [`SlowConsumer`],
//! [`SchedPolicy`]), their defaults and bounds, their checks, and what the connections
//! derive from them (codec and topic limits).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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
    /// [`Config::diff`](super::Config::diff) lists under `needs_restart`): a reload
    /// applies the rest.
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

    /// Checks every `[server]` value's range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > MAX_TIMEOUT_SECS {
            return invalid(
                "server.idle_timeout_secs",
                format!("must be from 1 to {MAX_TIMEOUT_SECS} (one year)"),
            );
        }
        if self.drain_timeout_secs > MAX_TIMEOUT_SECS {
            return invalid(
                "server.drain_timeout_secs",
                format!("must be at most {MAX_TIMEOUT_SECS} (one year)"),
            );
        }
        if (self.max_frame_len as usize) < monitor_proto::HEADER_LEN {
            return invalid(
                "server.max_frame_len",
                format!("{} is less than the 45-byte header", self.max_frame_len),
            );
        }
        if self.max_inflated_len == 0 {
            return invalid("server.max_inflated_len", "must be at least 1".into());
        }
        if self.max_connections == 0 || self.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return invalid(
                "server.max_connections",
                format!("must be from 1 to {}", tokio::sync::Semaphore::MAX_PERMITS),
            );
        }
        if self.workers > MAX_WORKERS {
            return invalid(
                "server.workers",
                format!("must be at most {MAX_WORKERS} (0 means one per CPU)"),
            );
        }
        if self.subscriber_queue == 0 {
            return invalid("server.subscriber_queue", "must be at least 1".into());
        }
        if self.subscriber_queue_bytes == 0 {
            return invalid("server.subscriber_queue_bytes", "must be at least 1".into());
        }
        for (key, secs) in [
            (
                "server.tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
            ("server.write_timeout_secs", self.write_timeout_secs),
            ("server.frame_timeout_secs", self.frame_timeout_secs),
        ] {
            if secs == 0 || secs > MAX_TIMEOUT_SECS {
                return invalid(
                    key,
                    format!("must be from 1 to {MAX_TIMEOUT_SECS} (one year)"),
                );
            }
        }
        if self.max_topics == 0 {
            return invalid("server.max_topics", "must be at least 1".into());
        }
        if self.max_topic_len == 0 {
            return invalid("server.max_topic_len", "must be at least 1".into());
        }
        if self.max_buffered_bytes < self.max_frame_len as usize {
            return invalid(
                "server.max_buffered_bytes",
                format!(
                    "{} is less than max_frame_len {}: a frame of that size could never be read",
                    self.max_buffered_bytes, self.max_frame_len
                ),
            );
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::Config;

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
}
