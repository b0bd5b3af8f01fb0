//! `[log]`: how the server writes its log lines ([`LogFormat`]).

use serde::{Deserialize, Serialize};

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
