//! `[auth]`: the tokens and the mutual-TLS grant ([`AuthConfig`], [`TokenConfig`],
//! [`GrantConfig`]) as configured, and their checks. `crate::auth` turns them into what
//! each connection may do.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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

impl AuthConfig {
    /// Checks the `[auth]` values: named, distinct tokens with valid hashes, grant patterns
    /// no longer than `max_topic_len`, and someone able to authenticate when it is
    /// required.
    pub(super) fn validate(&self, max_topic_len: usize) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let mut names = std::collections::HashSet::new();
        for t in &self.tokens {
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
        let grants = self
            .tokens
            .iter()
            .flat_map(|t| t.subscribe.iter().chain(&t.report))
            .chain(
                self.mtls
                    .iter()
                    .flat_map(|m| m.subscribe.iter().chain(&m.report)),
            );
        for pattern in grants {
            if pattern.len() > max_topic_len {
                return invalid(
                    "auth",
                    format!("pattern `{pattern}` is longer than max_topic_len {max_topic_len}"),
                );
            }
        }
        if self.required && self.tokens.is_empty() && self.mtls.is_none() {
            return invalid(
                "auth.required",
                "no [[auth.token]] and no [auth.mtls]: no client could authenticate".into(),
            );
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_strictly() {
        assert_eq!(parse_sha256_hex(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_sha256_hex(&"ab".repeat(31)), None);
        assert_eq!(parse_sha256_hex(&"zz".repeat(32)), None);
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }
}
