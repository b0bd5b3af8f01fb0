//! `[cluster]`: the Redis that several nodes share ([`ClusterConfig`]), its checks, the node
//! id's rules, and the redaction that keeps the Redis password out of logs and printed
//! configs.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::Config;

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
}
