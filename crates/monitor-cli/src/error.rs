//! This crate's one error type: the library's errors, and what only the command line's
//! own work (its settings, the load generator) can fail with.

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting out of range, named by its field (`subscribers`, `size`, ...); the
    /// command line names the flag that sets it instead.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// What the client library failed with: connecting, a handshake, the wire protocol,
    /// a refused report.
    #[error(transparent)]
    Client(#[from] monitor_client::Error),

    /// A WebSocket subscriber of the load generator (`monitor-client bench --ws`) could
    /// not connect or subscribe, short of a refused subscription
    /// ([`monitor_client::Error::SubscribeRefused`], with the server's reason).
    #[error("WebSocket subscriber, {url}: {reason}")]
    WebSocket {
        /// The URL it connected to.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The load generator could not run (`monitor-client bench`).
    #[error("bench: {reason}")]
    Bench {
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Config`] for `field`.
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }

    /// The field at fault and why, if this is a configuration error, this crate's or the
    /// library's.
    pub fn config_field(&self) -> Option<(&'static str, &str)> {
        match self {
            Error::Config { field, reason }
            | Error::Client(monitor_client::Error::Config { field, reason }) => {
                Some((field, reason))
            }
            _ => None,
        }
    }
}

impl From<monitor_proto::Error> for Error {
    fn from(e: monitor_proto::Error) -> Error {
        Error::Client(e.into())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
