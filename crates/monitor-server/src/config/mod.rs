//! Configuration: the TOML file, its defaults, and the command-line overrides.
//!
//! One file per concern, each only using those below it:
//! - `file`: [`Config`], the whole file: reading and printing TOML, the defaults, and the
//!   checks of every table in order, with those that span two tables.
//! - `diff`: live reload: [`Config::diff`] and [`ConfigDiff`], what a running server
//!   applies at once and what needs a restart.
//! - `settings`: the `[server]` table ([`Settings`], [`SlowConsumer`], [`SchedPolicy`]) and
//!   its bounds.
//! - `listener`: `[[listener]]` ([`ListenerConfig`]).
//! - `auth`: `[auth]` ([`AuthConfig`], [`TokenConfig`], [`GrantConfig`]).
//! - `admin`: `[admin]` ([`AdminConfig`]); `log`: `[log]` ([`LogConfig`]).
//! - `cluster`: `[cluster]` ([`ClusterConfig`]), node ids and the Redis URL's redaction.
//! - `error`: [`ConfigError`], which every check reports through.
//!
//! The command-line overrides are applied by `crate::cli` on a loaded [`Config`].

mod admin;
mod auth;
mod cluster;
mod diff;
mod error;
mod file;
mod listener;
mod log;
mod settings;

pub use admin::AdminConfig;
pub(crate) use auth::parse_sha256_hex;
pub use auth::{AuthConfig, GrantConfig, TokenConfig};
pub use cluster::{
    check_node_id, redact_url, ClusterConfig, MAX_NODE_ID_LEN, MAX_PRESENCE_TTL_SECS,
};
pub use diff::ConfigDiff;
pub use error::ConfigError;
pub use file::Config;
pub use listener::ListenerConfig;
pub use log::{LogConfig, LogFormat};
pub use settings::{
    SchedPolicy, Settings, SlowConsumer, MAX_TIMEOUT_SECS, MAX_WORKERS, SMALL_FRAME_LEN,
};
