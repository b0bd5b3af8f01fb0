//! `[admin]`: where the admin HTTP API (status, metrics, dashboard) listens, and which
//! browser origins may use it.

use monitor_proto::Address;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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

impl AdminConfig {
    /// Checks the `[admin]` values: the API listens on TCP.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && matches!(self.address, Address::Unix(_)) {
            return Err(ConfigError::Invalid {
                key: "admin.address".into(),
                reason: "the admin API listens on TCP (host:port)".into(),
            });
        }
        Ok(())
    }
}
