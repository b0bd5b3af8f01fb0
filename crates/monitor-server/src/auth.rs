//! Who may do what (spec §6): tokens, known by the SHA-256 of their text, and the identity
//! of a verified client certificate (mutual TLS), each granting topic patterns to subscribe
//! to and to report under.
//!
//! The configuration holds hashes, never tokens. A presented token is hashed and compared
//! with every configured hash in constant time (`subtle`), all of them every time, so the
//! time taken says nothing about which hash came close. Tokens are never logged; outcomes
//! are, with the token's name.

use std::sync::Arc;

use monitor_proto::message::topic::TopicPattern;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{parse_sha256_hex, AuthConfig};

/// What an authenticated connection may do, and who granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name, or `"mtls"` for a verified client certificate.
    pub name: Arc<str>,
    /// Patterns it may subscribe to.
    pub subscribe: Vec<TopicPattern>,
    /// Patterns it may report under.
    pub report: Vec<TopicPattern>,
    /// Whether it may use the admin API's guarded endpoints.
    pub admin: bool,
    /// The SHA-256 of the token that granted it (none for mutual TLS): a token rotated
    /// under the same name is another grant.
    token_sha256: Option<[u8; 32]>,
}

impl Grant {
    /// Whether a subscription to `topics` (`[]`: every report) is allowed as a whole: every
    /// requested pattern must lie within a granted one. A subscription only partly allowed
    /// is refused, never silently narrowed. `Err` names the first pattern refused.
    pub fn may_subscribe(&self, topics: &[TopicPattern]) -> Result<(), String> {
        const EVERYTHING: &[TopicPattern] = &[TopicPattern::Any];
        let wanted = if topics.is_empty() {
            EVERYTHING
        } else {
            topics
        };
        match wanted
            .iter()
            .find(|want| !self.subscribe.iter().any(|g| covers(g, want)))
        {
            None => Ok(()),
            Some(TopicPattern::Any) if topics.is_empty() => {
                Err("subscribe to every report (no topics)".to_owned())
            }
            Some(refused) => Err(format!("subscribe to \"{refused}\"")),
        }
    }

    /// Whether a report with this `code` (`None`: no string code) is allowed.
    pub fn may_report(&self, code: Option<&str>) -> bool {
        self.report.iter().any(|g| g.matches(code))
    }
}

/// Whether every code `want` matches is matched by `granted`.
fn covers(granted: &TopicPattern, want: &TopicPattern) -> bool {
    match (granted, want) {
        (TopicPattern::Any, _) => true,
        (_, TopicPattern::Any) => false,
        (TopicPattern::Prefix(g), TopicPattern::Prefix(w) | TopicPattern::Exact(w)) => {
            w.starts_with(&**g)
        }
        (TopicPattern::Exact(g), TopicPattern::Exact(w)) => g == w,
        (TopicPattern::Exact(_), TopicPattern::Prefix(_)) => false,
    }
}

#[derive(Debug)]
struct TokenEntry {
    hash: [u8; 32],
    grant: Arc<Grant>,
}

/// The authentication table of a running server, built from `[auth]`; replaced whole on
/// a reload.
#[derive(Debug, Default)]
pub struct Auth {
    required: bool,
    tokens: Vec<TokenEntry>,
    mtls: Option<Arc<Grant>>,
}

/// The outcome of presenting a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// It is a configured token: the connection gets this grant.
    Granted(Arc<Grant>),
    /// It is not.
    Unknown,
    /// No tokens are configured and none are required: tokens mean nothing here.
    NotConfigured,
}

impl Auth {
    /// The table `[auth]` describes. The config was validated: a hash that is not 64 hex
    /// digits cannot get here, but would simply never match.
    pub fn from_config(config: &AuthConfig) -> Auth {
        let grant = |name: &str,
                     subscribe: &[String],
                     report: &[String],
                     admin: bool,
                     token_sha256: Option<[u8; 32]>| Grant {
            name: name.into(),
            subscribe: subscribe.iter().map(|p| TopicPattern::parse(p)).collect(),
            report: report.iter().map(|p| TopicPattern::parse(p)).collect(),
            admin,
            token_sha256,
        };
        Auth {
            required: config.required,
            tokens: config
                .tokens
                .iter()
                .map(|t| {
                    let hash = parse_sha256_hex(&t.token_sha256).unwrap_or([0; 32]);
                    TokenEntry {
                        hash,
                        grant: Arc::new(grant(
                            &t.name,
                            &t.subscribe,
                            &t.report,
                            t.admin,
                            Some(hash),
                        )),
                    }
                })
                .collect(),
            mtls: config
                .mtls
                .as_ref()
                .map(|m| Arc::new(grant("mtls", &m.subscribe, &m.report, m.admin, None))),
        }
    }

    /// Whether a connection must authenticate before it subscribes or reports.
    pub fn required(&self) -> bool {
        self.required
    }

    /// What a verified client certificate may do (`[auth.mtls]`); without that table a
    /// certificate grants nothing beyond what an anonymous client may do.
    pub fn mtls(&self) -> Option<&Arc<Grant>> {
        self.mtls.as_ref()
    }

    /// Checks a presented token against every configured one, in constant time.
    pub fn check_token(&self, token: &str) -> TokenCheck {
        if self.tokens.is_empty() && !self.required {
            return TokenCheck::NotConfigured;
        }
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Arc<Grant>> = None;
        for entry in &self.tokens {
            // Every entry is compared, whatever matched before.
            let equal: bool = entry.hash.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(&entry.grant);
            }
        }
        match found {
            Some(grant) => TokenCheck::Granted(Arc::clone(grant)),
            None => TokenCheck::Unknown,
        }
    }

    /// Whether `grant`, held by a connection, still stands in this table (a reload that
    /// removed or changed it closes that connection).
    pub fn still_grants(&self, grant: &Grant) -> bool {
        if &*grant.name == "mtls" {
            return self.mtls.as_deref() == Some(grant);
        }
        self.tokens.iter().any(|t| *t.grant == *grant)
    }
}

/// The config line for a token: its SHA-256 in lowercase hex.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GrantConfig, TokenConfig};

    fn patterns(p: &[&str]) -> Vec<TopicPattern> {
        p.iter().map(|p| TopicPattern::parse(p)).collect()
    }

    fn grant(subscribe: &[&str], report: &[&str]) -> Grant {
        Grant {
            name: "t".into(),
            subscribe: patterns(subscribe),
            report: patterns(report),
            admin: false,
            token_sha256: None,
        }
    }

    #[test]
    fn a_subscription_is_allowed_only_as_a_whole() {
        let g = grant(&["host.*", "db.slow"], &[]);
        assert!(g.may_subscribe(&patterns(&["host.*"])).is_ok());
        assert!(g
            .may_subscribe(&patterns(&["host.cpu", "host.disk.*"]))
            .is_ok());
        assert!(g.may_subscribe(&patterns(&["db.slow"])).is_ok());
        assert_eq!(
            g.may_subscribe(&patterns(&["host.*", "db.*"])),
            Err("subscribe to \"db.*\"".to_owned()),
            "partly allowed is refused, not narrowed"
        );
        assert!(g.may_subscribe(&patterns(&["db.slowest"])).is_err());
        assert!(g.may_subscribe(&patterns(&["hos*"])).is_err());
        assert_eq!(
            g.may_subscribe(&[]),
            Err("subscribe to every report (no topics)".to_owned())
        );
        assert!(g.may_subscribe(&patterns(&["*"])).is_err());
        let all = grant(&["*"], &[]);
        assert!(all.may_subscribe(&[]).is_ok() && all.may_subscribe(&patterns(&["*"])).is_ok());
        let none = grant(&[], &[]);
        assert!(none.may_subscribe(&patterns(&["x"])).is_err());
    }

    #[test]
    fn reports_need_a_matching_pattern() {
        let g = grant(&[], &["host.health"]);
        assert!(g.may_report(Some("host.health")));
        assert!(!g.may_report(Some("host.healthy")));
        assert!(!g.may_report(None));
        assert!(grant(&[], &["*"]).may_report(None));
        assert!(!grant(&[], &[]).may_report(Some("x")));
    }

    fn config(required: bool, tokens: &[(&str, &str)]) -> AuthConfig {
        AuthConfig {
            required,
            tokens: tokens
                .iter()
                .map(|(name, token)| TokenConfig {
                    name: (*name).into(),
                    token_sha256: hash_token(token),
                    subscribe: vec!["host.*".into()],
                    report: vec![],
                    admin: false,
                })
                .collect(),
            mtls: Some(GrantConfig {
                subscribe: vec!["*".into()],
                report: vec!["*".into()],
                admin: false,
            }),
        }
    }

    #[test]
    fn tokens_are_known_by_their_hash() {
        let auth = Auth::from_config(&config(true, &[("dash", "s3cret"), ("agents", "a")]));
        match auth.check_token("s3cret") {
            TokenCheck::Granted(g) => assert_eq!(&*g.name, "dash"),
            other => panic!("{other:?}"),
        }
        assert_eq!(auth.check_token("s3cre"), TokenCheck::Unknown);
        assert_eq!(auth.check_token(""), TokenCheck::Unknown);
        let open = Auth::from_config(&AuthConfig::default());
        assert_eq!(open.check_token("anything"), TokenCheck::NotConfigured);
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_reload_keeps_only_grants_that_still_stand() {
        let old = Auth::from_config(&config(true, &[("dash", "s3cret"), ("agents", "a")]));
        let TokenCheck::Granted(dash) = old.check_token("s3cret") else {
            panic!()
        };
        let TokenCheck::Granted(agents) = old.check_token("a") else {
            panic!()
        };
        let new = Auth::from_config(&config(true, &[("agents", "a")]));
        assert!(!new.still_grants(&dash), "removed");
        assert!(new.still_grants(&agents), "kept");
        let rotated = Auth::from_config(&config(true, &[("agents", "b")]));
        assert!(!rotated.still_grants(&agents), "its token changed");
        let mtls = Arc::clone(old.mtls().unwrap());
        assert!(new.still_grants(&mtls));
        assert!(!Auth::from_config(&AuthConfig::default()).still_grants(&mtls));
    }
}
