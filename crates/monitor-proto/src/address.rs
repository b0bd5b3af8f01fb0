//! Where a monitor endpoint is: `host:port` over TCP, or `unix:/path` for a Unix socket
//! ([`Address`]); and what a client dials, which may also be `tls://host:port`
//! ([`Endpoint`]).
//!
//! The server's listeners and the clients use the one [`Address`] type, so an address
//! that one of them accepts the other accepts too. A host may be a name (`localhost`,
//! `monitor.example`), an IPv4 address, or an IPv6 address in brackets; names are
//! resolved when the address is used, not when it is parsed.
//!
//! Whether a connection runs TLS is the client's choice of [`Endpoint`], not part of
//! [`Address`]: a listener is TLS when it is given certificate files, so `tls://` is
//! refused where an [`Address`] is parsed.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A TCP or Unix-socket address.
///
/// ```
/// use monitor_proto::Address;
/// let tcp: Address = "localhost:9503".parse().unwrap();
/// assert_eq!(tcp, Address::Tcp { host: "localhost".into(), port: 9503 });
/// assert_eq!("[::1]:9503".parse::<Address>().unwrap().to_string(), "[::1]:9503");
/// let unix: Address = "unix:/run/monitor.sock".parse().unwrap();
/// assert_eq!(unix.to_string(), "unix:/run/monitor.sock");
/// assert!("no-port".parse::<Address>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Address {
    /// A TCP address. `host` is a name or an IP address, without brackets.
    Tcp {
        /// Host name or IP address (IPv6 without its brackets).
        host: String,
        /// The port; 0 asks a listener for any free port.
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Why a text is not an [`Address`]; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an address: {reason}")]
#[non_exhaustive]
pub struct AddressError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Address {
    /// Whether the address stays on this host: a Unix socket, `localhost`, or a loopback
    /// IP address.
    ///
    /// ```
    /// use monitor_proto::Address;
    /// assert!("127.0.0.2:1".parse::<Address>().unwrap().is_local());
    /// assert!(!"10.0.0.1:1".parse::<Address>().unwrap().is_local());
    /// ```
    pub fn is_local(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Tcp { host, .. } => {
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        let bad = |reason| AddressError {
            text: s.to_owned(),
            reason,
        };
        if s.starts_with(TLS_SCHEME) {
            return Err(bad(
                "tls:// is a client's choice of TLS (an Endpoint), not accepted here; \
                 a listener is TLS when it is given certificate files",
            ));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad(
                    "unix: needs a socket path, e.g. unix:/run/monitor.sock",
                ));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("tcp://").unwrap_or(s);
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(bad(EXPECTED));
        };
        let host = match host.strip_prefix('[') {
            Some(inner) => match inner.strip_suffix(']') {
                Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
                _ => {
                    return Err(bad(
                        "a bracketed host must be an IPv6 address, e.g. [::1]:9503",
                    ))
                }
            },
            None if host.contains(':') => {
                return Err(bad("an IPv6 host goes in brackets, e.g. [::1]:9503"))
            }
            None => host,
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        if host.contains(['/', ' ', '@']) {
            return Err(bad("the host is not a host name or an IP address"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
        Ok(Address::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<std::net::SocketAddr> for Address {
    fn from(addr: std::net::SocketAddr) -> Address {
        Address::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;

    fn try_from(s: String) -> Result<Address, AddressError> {
        s.parse()
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.to_string()
    }
}

/// The prefix of an [`Endpoint`] that runs TLS.
const TLS_SCHEME: &str = "tls://";
/// Why a text without a port is not an [`Address`].
const EXPECTED: &str = "expected host:port (e.g. 127.0.0.1:9503 or localhost:9503) or unix:/path";
/// Why a text without a port is not an [`Endpoint`].
const EXPECTED_ENDPOINT: &str =
    "expected host:port (e.g. 127.0.0.1:9503), tls://host:port (TLS) or unix:/path";

/// What a client dials: an [`Address`], and whether the connection runs TLS over it.
///
/// Its text is an [`Address`]'s (`host:port`, `tcp://host:port`, `unix:/path`: plain), or
/// `tls://host:port` (TLS over TCP). `Display` writes it back in a form that parses to the
/// same endpoint. TLS runs over TCP only: `tls://unix:/path` is refused.
///
/// ```
/// use monitor_proto::{address::Endpoint, Address};
/// let tls: Endpoint = "tls://monitor.example:9503".parse().unwrap();
/// assert!(tls.is_tls());
/// assert_eq!(tls.address(), &Address::Tcp { host: "monitor.example".into(), port: 9503 });
/// assert_eq!(tls.to_string(), "tls://monitor.example:9503");
/// let plain: Endpoint = "127.0.0.1:9503".parse().unwrap();
/// assert!(!plain.is_tls());
/// assert_eq!(plain, Endpoint::from(plain.address().clone()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    address: Address,
    tls: bool,
}

impl Endpoint {
    /// A plain (not TLS) connection to `address`.
    pub fn plain(address: Address) -> Endpoint {
        Endpoint {
            address,
            tls: false,
        }
    }

    /// A TLS connection to `host:port` (`host` without brackets, as in
    /// [`Address::Tcp`]).
    pub fn tls(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            address: Address::Tcp {
                host: host.into(),
                port,
            },
            tls: true,
        }
    }

    /// The address dialled.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether the connection runs TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The TCP host (a name or an IP address, without brackets); `None` for a Unix socket.
    pub fn host(&self) -> Option<&str> {
        match &self.address {
            Address::Tcp { host, .. } => Some(host),
            Address::Unix(_) => None,
        }
    }

    /// Whether the endpoint stays on this host ([`Address::is_local`]).
    pub fn is_local(&self) -> bool {
        self.address.is_local()
    }
}

impl From<Address> for Endpoint {
    fn from(address: Address) -> Endpoint {
        Endpoint::plain(address)
    }
}

impl From<std::net::SocketAddr> for Endpoint {
    fn from(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint::plain(addr.into())
    }
}

impl FromStr for Endpoint {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Endpoint, AddressError> {
        let Some(hostport) = s.strip_prefix(TLS_SCHEME) else {
            return s.parse().map(Endpoint::plain).map_err(|e: AddressError| {
                if e.reason == EXPECTED {
                    AddressError {
                        reason: EXPECTED_ENDPOINT,
                        ..e
                    }
                } else {
                    e
                }
            });
        };
        let bad = |reason| AddressError {
            text: s.to_owned(),
            reason,
        };
        if hostport.starts_with("unix:") || hostport.starts_with("tcp://") {
            return Err(bad(
                "tls:// takes host:port (TLS runs over TCP), e.g. tls://monitor.example:9503",
            ));
        }
        match hostport.parse::<Address>() {
            Ok(Address::Tcp { host, port }) => Ok(Endpoint::tls(host, port)),
            Ok(Address::Unix(_)) => Err(bad("tls:// takes host:port (TLS runs over TCP)")),
            // The reason, with the whole text as given.
            Err(e) => Err(bad(e.reason)),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str(TLS_SCHEME)?;
        }
        self.address.fmt(f)
    }
}

impl TryFrom<String> for Endpoint {
    type Error = AddressError;

    fn try_from(s: String) -> Result<Endpoint, AddressError> {
        s.parse()
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms_print_back() {
        for (text, printed) in [
            ("127.0.0.1:9503", "127.0.0.1:9503"),
            ("localhost:9605", "localhost:9605"),
            ("monitor.example:0", "monitor.example:0"),
            ("[::1]:9503", "[::1]:9503"),
            ("tcp://localhost:1", "localhost:1"),
            ("unix:/run/m.sock", "unix:/run/m.sock"),
        ] {
            let a: Address = text.parse().unwrap();
            assert_eq!(a.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<Address>().unwrap(), a);
        }
        let v6: std::net::SocketAddr = "[::1]:7".parse().unwrap();
        assert_eq!(Address::from(v6).to_string(), "[::1]:7");
    }

    #[test]
    fn refusals_say_why() {
        for (text, why) in [
            ("", "expected host:port"),
            ("9503", "expected host:port"),
            ("host:", "the port"),
            (":9503", "the host is missing"),
            ("host:99999", "the port"),
            ("::1:9503", "in brackets"),
            ("[nope]:1", "IPv6"),
            ("unix:", "socket path"),
            ("a b:1", "host name"),
        ] {
            let err = text.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{err}");
        }
    }

    #[test]
    fn endpoints_print_back() {
        for (text, printed, tls) in [
            (
                "tls://monitor.example:9503",
                "tls://monitor.example:9503",
                true,
            ),
            ("tls://127.0.0.1:1", "tls://127.0.0.1:1", true),
            ("tls://[::1]:9503", "tls://[::1]:9503", true),
            ("localhost:9503", "localhost:9503", false),
            ("tcp://localhost:1", "localhost:1", false),
            ("unix:/run/m.sock", "unix:/run/m.sock", false),
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(e.is_tls(), tls, "{text}");
            assert_eq!(e.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<Endpoint>().unwrap(), e, "{text}");
        }
        let v6: Endpoint = "tls://[::1]:9503".parse().unwrap();
        assert_eq!(v6.host(), Some("::1"));
        assert_eq!(v6, Endpoint::tls("::1", 9503));
        let json = serde_json::to_string(&v6).unwrap();
        assert_eq!(json, r#""tls://[::1]:9503""#);
        assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), v6);
        let unix: Endpoint = "unix:/x".parse().unwrap();
        assert_eq!(unix.host(), None);
        assert!(unix.is_local());
    }

    #[test]
    fn endpoint_refusals_say_why() {
        for (text, why) in [
            ("tls://", "expected host:port"),
            ("tls://host", "expected host:port"),
            ("tls://host:x", "the port"),
            ("tls://unix:/x", "TLS runs over TCP"),
            ("tls://tcp://h:1", "TLS runs over TCP"),
            ("tls://::1:9503", "in brackets"),
            ("nope", "tls://host:port (TLS)"),
        ] {
            let err = text.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{err}");
        }
    }

    /// A listener's address has no TLS form: TLS there comes from certificate files.
    #[test]
    fn an_address_refuses_tls() {
        let err = "tls://localhost:9503".parse::<Address>().unwrap_err();
        assert!(err.reason.contains("certificate files"), "{err}");
    }

    #[test]
    fn locality() {
        for (text, local) in [
            ("127.0.0.2:1", true),
            ("[::1]:1", true),
            ("LOCALHOST:1", true),
            ("unix:/x", true),
            ("10.0.0.1:1", false),
            ("monitor.example:1", false),
        ] {
            assert_eq!(text.parse::<Address>().unwrap().is_local(), local, "{text}");
        }
    }
}
