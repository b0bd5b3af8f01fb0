//! [`ClientConfig`]: where the server is, who this client is, and every timeout, limit and
//! policy of the push receiver and the reporter; [`TlsSettings`] for a TLS server, and the
//! [`Token`] to authenticate with.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use monitor_proto::header::UUID_LEN;
use monitor_proto::{ClientCodec, Uuid};
use rand::Rng;
use rustls_pki_types::ServerName;

pub use monitor_proto::address::Endpoint;
/// An authentication token (protocol §6); `Debug` never shows it.
pub use monitor_proto::message::request::Token;
/// A certificate in DER form, as [`TlsSettings::roots`] takes it (rustls' own type).
pub use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};

/// What the reporter does with reports it wrote to a connection that dropped before their
/// acknowledgement came. `docs/client.md` discusses the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Send them again, first and in order, on the next connection. Nothing is lost while
    /// the reporter keeps trying, but a report the server received just before the drop is
    /// delivered twice.
    #[default]
    AtLeastOnce,
    /// Fail them with [`Error::MaybeLost`]. Nothing is delivered twice, but such a report
    /// may or may not have been delivered.
    AtMostOnce,
}

/// Largest frame accepted from the server by default: 16 MiB plus 64 KiB of room for the
/// push envelope and encryption around a report of up to 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024 + 64 * 1024;
/// Largest report frame sent by default: the server's default `max_frame_len` (1 MiB).
pub const DEFAULT_MAX_REPORT_FRAME_LEN: u32 = monitor_proto::codec::DEFAULT_MAX_FRAME_LEN;
/// Longest duration any field of [`ClientConfig`] accepts: one year, as the server's
/// `MAX_TIMEOUT_SECS`. The background tasks add these durations to `Instant::now()`; a
/// larger one (`Duration::MAX`) would overflow there instead of being refused here.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// TLS for the connection to the server: what to trust, the client's certificate for
/// mutual TLS, and the name the server's certificate must be for.
///
/// A client trusts only what is given here (no system store): the CA that signed the
/// server's certificate, as PEM files or as certificates in memory. Files are read when
/// a client starts ([`PushReceiver::connect`](crate::PushReceiver::connect),
/// [`Reporter::connect`](crate::Reporter::connect) or
/// [`start`](crate::Reporter::start), [`raw::connect`](crate::raw::connect)); its
/// reconnections use what was read then, so a renewed certificate needs a new client.
///
/// `Debug` shows file names and the number of roots, never key material (the key is only
/// ever named by its file).
///
/// ```
/// use monitor_client::config::TlsSettings;
/// let tls = TlsSettings::new()
///     .ca_file("/etc/monitor/ca.pem")
///     .client_cert("/etc/monitor/agent.pem", "/etc/monitor/agent.key")
///     .server_name("monitor.example");
/// assert_eq!(tls.ca_files.len(), 1);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSettings {
    /// PEM files of CA certificates to trust (each may hold several).
    pub ca_files: Vec<PathBuf>,
    /// CA certificates to trust, given in memory (DER), for a program that has them.
    pub roots: Vec<CertificateDer<'static>>,
    /// Mutual TLS: the PEM file of this client's certificate (and its chain, if any).
    pub cert_file: Option<PathBuf>,
    /// Mutual TLS: the PEM file of that certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for (a DNS name or an IP address),
    /// instead of the server address's host: for a server reached by an address its
    /// certificate does not name.
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// Nothing trusted yet, no client certificate, the address's host as the name.
    pub fn new() -> TlsSettings {
        TlsSettings::default()
    }

    /// Trusts the CA certificates in the PEM file `path`.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> TlsSettings {
        self.ca_files.push(path.into());
        self
    }

    /// Trusts `cert`, a CA certificate in DER form.
    #[must_use]
    pub fn root(mut self, cert: CertificateDer<'static>) -> TlsSettings {
        self.roots.push(cert);
        self
    }

    /// Presents the certificate in the PEM file `cert`, whose private key is in `key`
    /// (mutual TLS).
    #[must_use]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Checks the server's certificate against `name` instead of the address's host.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> TlsSettings {
        self.server_name = Some(name.into());
        self
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_files", &self.ca_files)
            .field(
                "roots",
                &format_args!("<{} certificates>", self.roots.len()),
            )
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Everything a [`PushReceiver`](crate::PushReceiver) or a [`Reporter`](crate::Reporter)
/// needs. Build one with [`ClientConfig::new`] and change the public fields.
///
/// `Debug` never shows the token (nor key material: TLS keys are only named by file).
///
/// ```
/// use std::time::Duration;
/// use monitor_client::ClientConfig;
/// use monitor_client::config::{TlsSettings, Token};
/// let mut config = ClientConfig::new("127.0.0.1:9503".parse().unwrap());
/// config.heartbeat_interval = Duration::from_secs(10);
/// config.encrypt = true;
/// config.validate().unwrap();
///
/// // Over TLS, authenticated.
/// let mut config = ClientConfig::new("tls://monitor.example:9503".parse().unwrap());
/// config.tls = Some(TlsSettings::new().ca_file("/etc/monitor/ca.pem"));
/// config.token = Some(Token::new("s3cret"));
/// config.validate().unwrap();
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server: `host:port`, `unix:/path`, or `tls://host:port`, which asks for TLS
    /// (and so for [`ClientConfig::tls`] to say what to trust).
    pub server: Endpoint,
    /// TLS: what to trust, mutual TLS, the server name. A connection runs TLS (over TCP)
    /// when this is set, or when `server` is `tls://host:port`; it then needs a CA to
    /// trust. `None` (the default) with a plain address: no TLS.
    pub tls: Option<TlsSettings>,
    /// A token to authenticate with (protocol §6): every connection sends it in a key
    /// request before it subscribes or reports. The server answers a token it does not
    /// know with "unauthorized" ([`Error::Unauthorized`], not retried). `None`, the
    /// default: no authentication (or mutual TLS's, by the client certificate).
    pub token: Option<Token>,
    /// This client's 33-byte id, carried by every frame. [`ClientConfig::new`] makes a
    /// random one shaped like the PHP clients' (32 hex characters and a letter).
    pub uuid: Uuid,
    /// A heartbeat is sent this often (default 30 s), well under the server's 120 s idle
    /// timeout. A connection from which nothing arrives for `heartbeat_interval +
    /// ack_timeout` is taken as dead and replaced.
    pub heartbeat_interval: Duration,
    /// Limit on one connection attempt: connect, key exchange, and the subscribe or first
    /// heartbeat (default 10 s).
    pub connect_timeout: Duration,
    /// How long an acknowledgement may take once its report is written (default 10 s);
    /// after that the connection is taken as dead and replaced. Also the limit of
    /// [`Reporter::report`](crate::Reporter::report).
    pub ack_timeout: Duration,
    /// First reconnection delay (default 100 ms); it doubles per failed attempt.
    pub backoff_min: Duration,
    /// Longest reconnection delay (default 30 s). Each delay is drawn at random from its
    /// upper half, so clients that lost the same server do not come back in step.
    pub backoff_max: Duration,
    /// Give up after this many failed connection attempts in a row (`None`, the default:
    /// never). Giving up ends the receiver's stream with [`Error::Unreachable`] and fails
    /// the reporter's waiting reports with it.
    pub max_attempts: Option<u32>,
    /// Reporter: reports accepted but not yet written (while disconnected, or faster than
    /// the connection) are kept up to this many (default 1024). Past it,
    /// [`Reporter::send`](crate::Reporter::send) fails with [`Error::BufferFull`].
    pub buffer_size: usize,
    /// Reporter: reports written but not yet acknowledged, at most (default 1024). When
    /// this many are in flight the reporter waits for acknowledgements before writing
    /// more.
    pub max_in_flight: usize,
    /// Reporter: what happens to written but unacknowledged reports when the connection
    /// drops.
    pub delivery: Delivery,
    /// Receiver: events waiting to be taken from the stream (default 1024). When it is
    /// full the receiver stops reading the socket, and the server's slow-consumer policy
    /// applies to pushes beyond its own queue.
    pub event_queue: usize,
    /// Compress what this client sends, and ask for compressed replies and pushes.
    pub compress: bool,
    /// Do an X25519 key exchange on every connection and ask for encrypted replies and
    /// pushes (what the client sends stays plaintext in protocol v1).
    pub encrypt: bool,
    /// Largest frame accepted from the server (default [`DEFAULT_MAX_FRAME_LEN`]). Pushes
    /// are a report plus an envelope (and encryption), so this must be above the server's
    /// own `max_frame_len`.
    pub max_frame_len: u32,
    /// Largest body a compressed frame from the server may inflate to (default 16 MiB +
    /// 64 KiB).
    pub max_inflated_len: usize,
    /// Largest report frame the reporter sends (default 1 MiB, the server's default
    /// `max_frame_len`): larger reports fail with [`Error::ReportTooLarge`] instead of
    /// making the server close the connection.
    pub max_report_frame_len: u32,
}

impl ClientConfig {
    /// The defaults, for `server`, with a random uuid; TLS if `server` is `tls://`.
    pub fn new(server: Endpoint) -> ClientConfig {
        ClientConfig {
            server,
            tls: None,
            token: None,
            uuid: random_uuid(b'c'),
            heartbeat_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_attempts: None,
            buffer_size: 1024,
            max_in_flight: 1024,
            delivery: Delivery::AtLeastOnce,
            event_queue: 1024,
            compress: false,
            encrypt: false,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_inflated_len: DEFAULT_MAX_FRAME_LEN as usize,
            max_report_frame_len: DEFAULT_MAX_REPORT_FRAME_LEN,
        }
    }

    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        let durations = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("connect_timeout", self.connect_timeout),
            ("ack_timeout", self.ack_timeout),
            ("backoff_min", self.backoff_min),
            ("backoff_max", self.backoff_max),
        ];
        for (field, value) in durations {
            if value > MAX_DURATION {
                let reason = format!("must be at most one year ({} s)", MAX_DURATION.as_secs());
                return bad(field, &reason);
            }
        }
        // backoff_max may be zero only if backoff_min is, which is refused here.
        for (field, value) in &durations[..4] {
            if value.is_zero() {
                return bad(field, "must be more than zero");
            }
        }
        if self.backoff_max < self.backoff_min {
            return bad("backoff_max", "must be at least backoff_min");
        }
        if self.max_attempts == Some(0) {
            return bad(
                "max_attempts",
                "must be at least 1 (or None: never give up)",
            );
        }
        for (field, value) in [
            ("buffer_size", self.buffer_size),
            ("max_in_flight", self.max_in_flight),
            ("event_queue", self.event_queue),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1");
            }
        }
        let min_frame = monitor_proto::HEADER_LEN as u32 + 2;
        if self.max_frame_len < min_frame {
            return bad("max_frame_len", "must leave room for a header and a body");
        }
        if self.max_report_frame_len < min_frame {
            return bad(
                "max_report_frame_len",
                "must leave room for a header and a body",
            );
        }
        if self.max_inflated_len == 0 {
            return bad("max_inflated_len", "must be at least 1");
        }
        if self.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            return bad("token", "must not be empty");
        }
        self.validate_tls()
    }

    /// The TLS part of [`ClientConfig::validate`]: what can be checked without reading
    /// the files.
    fn validate_tls(&self) -> Result<()> {
        if !self.uses_tls() {
            return Ok(());
        }
        let bad = |field: &'static str, reason: &str| {
            Err(Error::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.server.host().is_none() {
            return bad(
                "tls",
                "TLS runs over TCP: the server must be host:port or tls://host:port, not a Unix socket",
            );
        }
        let settings = self.tls.as_ref();
        if settings.is_none_or(|t| t.ca_files.is_empty() && t.roots.is_empty()) {
            return bad(
                "tls.ca_files",
                "TLS needs a CA to trust (the one that signed the server's certificate): \
                 give a CA file or root certificates",
            );
        }
        if let Some(t) = settings {
            match (&t.cert_file, &t.key_file) {
                (Some(_), None) => {
                    return bad("tls.key_file", "a client certificate needs its key file")
                }
                (None, Some(_)) => {
                    return bad("tls.cert_file", "a client key needs its certificate file")
                }
                _ => {}
            }
        }
        self.tls_server_name().map(drop)
    }

    /// Whether connections run TLS: `tls` is set, or the server is `tls://`.
    pub(crate) fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.server.is_tls()
    }

    /// The name the server's certificate must be for: `tls.server_name`, or the host.
    pub(crate) fn tls_server_name(&self) -> Result<ServerName<'static>> {
        let set = self.tls.as_ref().and_then(|t| t.server_name.as_deref());
        let (field, name) = match (set, self.server.host()) {
            (Some(name), _) => ("tls.server_name", name),
            (None, Some(host)) => ("server", host),
            (None, None) => {
                return Err(Error::Config {
                    field: "tls",
                    reason: "TLS runs over TCP: the server must be host:port".into(),
                })
            }
        };
        server_name(name).map_err(|reason| Error::Config {
            field,
            reason: format!("{reason}: a certificate cannot be for it"),
        })
    }

    /// The client codec these limits imply, for what the server sends.
    pub(crate) fn codec(&self) -> ClientCodec {
        self.codec_limited_to(self.max_frame_len)
    }

    /// The codec for what this client sends. It refuses a frame over
    /// `max_report_frame_len` as encoded (after compression, which can grow a body that
    /// does not compress), so the server never gets a frame it would close the connection
    /// over.
    pub(crate) fn encoder(&self) -> ClientCodec {
        self.codec_limited_to(self.max_report_frame_len)
    }

    fn codec_limited_to(&self, max_frame_len: u32) -> ClientCodec {
        ClientCodec::builder()
            .max_frame_len(max_frame_len)
            .max_inflated_len(self.max_inflated_len)
            .new_codec()
    }
}

/// A random uuid shaped like the PHP clients': 32 lowercase hex characters and one letter.
pub fn random_uuid(letter: u8) -> Uuid {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    let mut bytes = [0u8; UUID_LEN];
    for b in &mut bytes[..UUID_LEN - 1] {
        *b = HEX[rng.gen_range(0..16)];
    }
    bytes[UUID_LEN - 1] = if letter.is_ascii_alphabetic() {
        letter
    } else {
        b'c'
    };
    Uuid(bytes)
}

/// Parses a uuid given as text: exactly 33 bytes, used as they are.
///
/// # Errors
/// [`Error::Config`] if `text` is not 33 bytes long.
pub fn parse_uuid(text: &str) -> Result<Uuid> {
    Uuid::from_slice(text.as_bytes()).ok_or_else(|| Error::Config {
        field: "uuid",
        reason: format!(
            "must be exactly {UUID_LEN} bytes (e.g. 32 hex characters and a letter), got {}",
            text.len()
        ),
    })
}

/// The name a server certificate must be valid for: `name`, as rustls takes it.
///
/// # Errors
/// What is wrong with it, for a config error.
fn server_name(name: &str) -> std::result::Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| format!("`{name}` is not a DNS name or an IP address"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uuids() {
        let u = random_uuid(b'r');
        assert!(u.0[..32].iter().all(u8::is_ascii_hexdigit));
        assert_eq!(u.0[32], b'r');
        assert_ne!(random_uuid(b'r'), u);
        assert!(parse_uuid("short").is_err());
        assert_eq!(
            parse_uuid("0123456789abcdef0123456789abcdef0").unwrap(),
            Uuid(*b"0123456789abcdef0123456789abcdef0")
        );
    }

    #[test]
    fn validation() {
        let base = ClientConfig::new("127.0.0.1:1".parse().unwrap());
        base.validate().unwrap();
        let mut c = base.clone();
        c.heartbeat_interval = Duration::ZERO;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "heartbeat_interval",
                ..
            })
        ));
        let mut c = base.clone();
        c.backoff_max = Duration::from_millis(1);
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.buffer_size = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn tls_and_token_validation_names_the_field() {
        let field = |c: &ClientConfig| match c.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        // tls:// alone: TLS, but nothing to trust.
        let mut c = ClientConfig::new("tls://monitor.example:9503".parse().unwrap());
        assert!(c.uses_tls());
        assert_eq!(field(&c), "tls.ca_files");
        c.tls = Some(TlsSettings::new().ca_file("/ca.pem"));
        c.validate().unwrap();
        // Settings make a plain address TLS.
        let mut plain = ClientConfig::new("monitor.example:9503".parse().unwrap());
        assert!(!plain.uses_tls());
        plain.tls = Some(TlsSettings::new().root(CertificateDer::from(vec![1, 2, 3])));
        assert!(plain.uses_tls());
        plain.validate().unwrap();
        // Half a client identity.
        let mut half = c.clone();
        half.tls.as_mut().unwrap().cert_file = Some("/c.pem".into());
        assert_eq!(field(&half), "tls.key_file");
        half.tls.as_mut().unwrap().cert_file = None;
        half.tls.as_mut().unwrap().key_file = Some("/k.pem".into());
        assert_eq!(field(&half), "tls.cert_file");
        // Names a certificate cannot be for.
        let mut named = c.clone();
        named.tls = named.tls.map(|t| t.server_name("not a name"));
        assert_eq!(field(&named), "tls.server_name");
        let mut ip = c.clone();
        ip.server = "tls://[::1]:1".parse().unwrap();
        ip.validate().unwrap();
        assert!(matches!(ip.tls_server_name(), Ok(ServerName::IpAddress(_))));
        // No TLS over a Unix socket.
        let mut unix = ClientConfig::new("unix:/run/m.sock".parse().unwrap());
        unix.tls = c.tls.clone();
        assert_eq!(field(&unix), "tls");
        // An empty token.
        let mut token = ClientConfig::new("127.0.0.1:1".parse().unwrap());
        token.token = Some(Token::new(""));
        assert_eq!(field(&token), "token");
    }

    #[test]
    fn debug_shows_no_token_and_no_certificate_bytes() {
        let mut c = ClientConfig::new("tls://localhost:1".parse().unwrap());
        c.token = Some(Token::new("s3cret-token"));
        c.tls = Some(
            TlsSettings::new()
                .root(CertificateDer::from(vec![0xAB; 4]))
                .client_cert("/agent.pem", "/agent.key"),
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("<1 certificates>"), "{shown}");
        assert!(shown.contains("/agent.key"), "files are named: {shown}");
    }

    /// `Duration::MAX` used to pass and then overflow `Instant + Duration` in the
    /// background task (the receiver's stream just ended).
    #[test]
    fn durations_are_bounded_at_one_year() {
        let base = ClientConfig::new("127.0.0.1:1".parse().unwrap());
        type Set = fn(&mut ClientConfig, Duration);
        let fields: [(&str, Set); 5] = [
            ("heartbeat_interval", |c, d| c.heartbeat_interval = d),
            ("connect_timeout", |c, d| c.connect_timeout = d),
            ("ack_timeout", |c, d| c.ack_timeout = d),
            ("backoff_min", |c, d| c.backoff_min = d),
            ("backoff_max", |c, d| c.backoff_max = d),
        ];
        for (name, set) in fields {
            for too_long in [Duration::MAX, MAX_DURATION + Duration::from_nanos(1)] {
                let mut c = base.clone();
                set(&mut c, too_long);
                match c.validate() {
                    Err(Error::Config { field, reason }) => {
                        assert_eq!(field, name);
                        assert!(reason.contains("one year"), "{reason}");
                    }
                    other => panic!("{name} = {too_long:?}: {other:?}"),
                }
            }
            // One year itself is accepted (backoff_min and backoff_max move together).
            let mut c = base.clone();
            c.backoff_max = MAX_DURATION;
            set(&mut c, MAX_DURATION);
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
