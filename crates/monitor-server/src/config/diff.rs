//! Live reload: [`Config::diff`] sorts the changes between two configurations into those a
//! running server applies at once and those that need a restart ([`ConfigDiff`]).

use std::path::PathBuf;

use super::auth::TokenConfig;
use super::file::Config;

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

impl Config {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{SchedPolicy, SlowConsumer};

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
