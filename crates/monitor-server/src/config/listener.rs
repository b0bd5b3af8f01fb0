//! `[[listener]]`: where the server accepts connections ([`ListenerConfig`]: TCP, TLS,
//! mutual TLS or a Unix socket), and the checks across the listeners.

use std::path::PathBuf;

use monitor_proto::Address;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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

/// Checks the listeners: at least one, no address twice, TLS files that go together and
/// only on TCP.
pub(super) fn validate_listeners(listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
    let invalid = |key: &str, reason: String| {
        Err(ConfigError::Invalid {
            key: key.into(),
            reason,
        })
    };
    if listeners.is_empty() {
        return invalid("listener", "at least one [[listener]] is needed".into());
    }
    let mut seen = std::collections::HashSet::new();
    for l in listeners {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::Config;

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
}
