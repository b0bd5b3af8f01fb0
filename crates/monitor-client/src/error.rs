//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a client call can fail with.
///
/// Variants carry the values that explain them (addresses, limits, the server's message),
/// never keys or report bodies. [`Error::is_retryable`] tells connection trouble (the
/// client retries it by itself) from a refusal or a misuse (retrying will not help).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field at fault (`heartbeat_interval`, `server`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A server address that is not `host:port`, `tls://host:port` or `unix:/path`.
    #[error(transparent)]
    BadAddress(#[from] monitor_proto::address::AddressError),

    /// Opening the connection failed (refused, unreachable, no such socket, ...).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The server address.
        address: String,
        /// Why.
        source: std::io::Error,
    },

    /// Opening the connection took longer than `connect_timeout`: nothing answered at that
    /// address (a host that is down or unreachable, a firewall that drops packets).
    #[error("{address} unreachable: no connection within {after:?} (connect_timeout)")]
    ConnectTimeout {
        /// The server address.
        address: String,
        /// The configured `connect_timeout`.
        after: Duration,
    },

    /// The connection was made, but the server did not answer a handshake step (TLS,
    /// authentication, key exchange, subscribe or first heartbeat) within
    /// `connect_timeout`: something listens there but does not speak the protocol, or the
    /// server is stuck.
    #[error("connected to {address}, but the server did not answer the {step} within {after:?} (connect_timeout)")]
    HandshakeTimeout {
        /// The server address.
        address: String,
        /// The step that got no answer: `"TLS handshake"`, `"authentication"`, `"key
        /// exchange"`, `"subscribe"` or `"heartbeat"`.
        step: &'static str,
        /// The configured `connect_timeout`, counted from the start of the attempt.
        after: Duration,
    },

    /// The server closed the connection during a handshake.
    #[error("the server closed the connection during the {during}")]
    ClosedDuringHandshake {
        /// Which step: `"TLS handshake"`, `"authentication"`, `"key exchange"`,
        /// `"subscribe"` or `"heartbeat"`.
        during: &'static str,
    },

    /// A TLS file of the config cannot be used: missing, unreadable, or not holding what
    /// it should. Reported when the client starts, before it connects.
    #[error("TLS: {what} {}: {reason}", path.display())]
    TlsFile {
        /// Which file.
        what: TlsFileKind,
        /// The file, as configured.
        path: PathBuf,
        /// What is wrong with it (`no such file`, `no certificate in it`, ...).
        reason: String,
    },

    /// TLS with the server failed for a reason a retry will not fix: its certificate is
    /// not trusted or not for its name, it requires a client certificate (mutual TLS) or
    /// refused the one given, or it does not speak TLS. Not retried.
    #[error("TLS with {address} failed: {reason}")]
    Tls {
        /// The server address.
        address: String,
        /// What went wrong, and where to look.
        reason: String,
    },

    /// The server refused this client's token (`errCode: -1`, `msg: "unauthorized"`) and
    /// closed the connection. Not retried: the token is wrong, or no longer configured.
    #[error("unauthorized: the server refused the token (at the {during} step)")]
    Unauthorized {
        /// The step that presented it: `"authentication"`, `"key exchange"` or
        /// `"subscribe"`.
        during: &'static str,
    },

    /// The wire protocol failed: an I/O error, a bad frame from the server, or a body that
    /// did not decrypt or inflate.
    #[error(transparent)]
    Proto(#[from] monitor_proto::Error),

    /// The server refused the key exchange, or its answer was unusable.
    #[error("key exchange failed: {reason}")]
    KeyExchange {
        /// The server's `msg`, or what was wrong with its reply.
        reason: String,
    },

    /// The server refused the subscription (`errCode: -1` in the type-6 acknowledgement),
    /// e.g. `forbidden: …` when the token does not grant it. Not retried.
    #[error("subscribe refused by the server: {msg}")]
    SubscribeRefused {
        /// The server's `msg`.
        msg: String,
    },

    /// The server refused a report (`errCode: -1` in its type-8 acknowledgement), e.g.
    /// `forbidden: …` when the token does not grant its code. The connection stays open
    /// and later reports are not affected.
    #[error("report refused by the server: {msg}")]
    ReportRefused {
        /// The server's `msg`.
        msg: String,
    },

    /// A reply the client could not understand (not a reply envelope, or unexpected data).
    #[error("unexpected reply from the server: {reason}")]
    BadReply {
        /// What was wrong with it.
        reason: String,
    },

    /// No acknowledgement within `ack_timeout`. The outcome is unknown: the report may
    /// still be delivered later (see `docs/client.md`).
    #[error("no acknowledgement within {after:?}")]
    AckTimeout {
        /// The configured `ack_timeout`.
        after: Duration,
    },

    /// The reporter's buffer of unsent reports is full (the server is unreachable or slower
    /// than the caller); the report was not taken.
    #[error("report buffer full ({capacity} reports waiting); report not taken")]
    BufferFull {
        /// The configured `buffer_size`.
        capacity: usize,
    },

    /// A report that is not a JSON object (the protocol requires one).
    #[error("a report must be a JSON object: {reason}")]
    NotAnObject {
        /// What it is instead, or the JSON error.
        reason: String,
    },

    /// A report too large for the server's `max_frame_len`; it was not sent.
    #[error(
        "report of {len} bytes does not fit max_report_frame_len {max} (with the 45-byte header)"
    )]
    ReportTooLarge {
        /// The body's length.
        len: usize,
        /// The configured limit, header included.
        max: u32,
    },

    /// A report written to a connection that dropped before its acknowledgement, under
    /// [`Delivery::AtMostOnce`](crate::Delivery::AtMostOnce): the server may or may not
    /// have received it, and it is not sent again.
    #[error("connection lost before the acknowledgement; the report may or may not have been delivered: {reason}")]
    MaybeLost {
        /// Why the connection dropped.
        reason: String,
    },

    /// The client gave up: `max_attempts` connection attempts in a row failed.
    /// `last_error` says how the last one failed: refused, unreachable, or connected but
    /// not answered.
    #[error("gave up after {}: {last_error}", failed_attempts(*attempts))]
    Unreachable {
        /// Attempts made in a row.
        attempts: u32,
        /// The last attempt's error.
        last_error: String,
    },

    /// The client's background task (which owns the connection) stopped before it was
    /// done: it panicked, or it was dropped unfinished because its Tokio runtime shut down.
    /// The client is unusable from then on: the receiver's stream yields this once and ends;
    /// the reporter fails every report it held, and every later call, with it.
    #[error("the {task}'s background task stopped: {reason}")]
    BackgroundTask {
        /// `"push receiver"` or `"reporter"`.
        task: &'static str,
        /// What happened: the panic message, or that the task was dropped unfinished.
        reason: String,
    },

    /// The client was closed (or dropped) before this could complete.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// A copy of an error that stops a client for good, for each report or call it
    /// fails; `None` for errors that do not stop one (those carrying an I/O error
    /// among them, which cannot be copied).
    pub(crate) fn stop_copy(&self) -> Option<Error> {
        Some(match self {
            Error::Unreachable {
                attempts,
                last_error,
            } => Error::Unreachable {
                attempts: *attempts,
                last_error: last_error.clone(),
            },
            Error::BackgroundTask { task, reason } => Error::BackgroundTask {
                task,
                reason: reason.clone(),
            },
            Error::Unauthorized { during } => Error::Unauthorized { during },
            Error::Tls { address, reason } => Error::Tls {
                address: address.clone(),
                reason: reason.clone(),
            },
            Error::TlsFile { what, path, reason } => Error::TlsFile {
                what: *what,
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::KeyExchange { reason } => Error::KeyExchange {
                reason: reason.clone(),
            },
            Error::Config { field, reason } => Error::Config {
                field,
                reason: reason.clone(),
            },
            _ => return None,
        })
    }

    /// Whether the failure is about the connection, which the client retries by itself
    /// (connecting, a timeout, a dropped connection), rather than a refusal or a misuse.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::HandshakeTimeout { .. }
            | Error::ClosedDuringHandshake { .. }
            | Error::AckTimeout { .. }
            | Error::BufferFull { .. } => true,
            Error::Proto(e) => e.fault() == monitor_proto::Fault::Io,
            _ => false,
        }
    }
}

/// Which TLS file an [`Error::TlsFile`] is about. `Display` names it in words (`CA file`,
/// `client certificate`, `client key`); [`TlsFileKind::field`] names its config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFileKind {
    /// One of [`TlsSettings::ca_files`](crate::TlsSettings::ca_files).
    Ca,
    /// [`TlsSettings::cert_file`](crate::TlsSettings::cert_file).
    ClientCert,
    /// [`TlsSettings::key_file`](crate::TlsSettings::key_file).
    ClientKey,
}

impl TlsFileKind {
    /// The [`ClientConfig`](crate::ClientConfig) field that names the file, as
    /// [`Error::Config`] names fields: `tls.ca_files`, `tls.cert_file`, `tls.key_file`.
    pub fn field(self) -> &'static str {
        match self {
            TlsFileKind::Ca => "tls.ca_files",
            TlsFileKind::ClientCert => "tls.cert_file",
            TlsFileKind::ClientKey => "tls.key_file",
        }
    }
}

impl std::fmt::Display for TlsFileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFileKind::Ca => "CA file",
            TlsFileKind::ClientCert => "client certificate",
            TlsFileKind::ClientKey => "client key",
        })
    }
}

/// [`monitor_proto::error::with_causes`]: an error and its causes, as one line.
pub(crate) use monitor_proto::error::with_causes;

fn failed_attempts(n: u32) -> String {
    match n {
        1 => "1 failed connection attempt".into(),
        n => format!("{n} failed connection attempts in a row"),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
