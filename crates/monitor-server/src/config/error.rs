//! [`ConfigError`]: why a configuration cannot be used, naming the file, key or flag at
//! fault. Every table's checks report through it.

use std::path::PathBuf;

/// A configuration that cannot be used; the message names the file, key or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value out of its range.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key (`server.max_frame_len`) or flag (`--max-frame-len`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}
