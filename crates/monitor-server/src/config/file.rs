//! The configuration as a whole ([`Config`]): one value per table, the defaults
//! `monitor-server` runs with, reading and printing TOML, and the checks of every table in
//! order, with those that span two tables.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::admin::AdminConfig;
use super::auth::AuthConfig;
use super::cluster::ClusterConfig;
use super::error::ConfigError;
use super::listener::{validate_listeners, ListenerConfig};
use super::log::LogConfig;
use super::settings::Settings;

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
        s.validate()?;
        validate_listeners(&self.listeners)?;
        self.admin.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            // One report of the largest size must fit in the queue.
            let needed = s.max_frame_len as usize + 1024;
            if cluster.max_outgoing_bytes < needed {
                return Err(ConfigError::Invalid {
                    key: "cluster.max_outgoing_bytes".into(),
                    reason: format!(
                        "{} is less than max_frame_len {} and a message header: the largest \
                         report could never be published",
                        cluster.max_outgoing_bytes, s.max_frame_len
                    ),
                });
            }
        }
        self.auth.validate(s.max_topic_len)
    }
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
}
