//! Where a monitor endpoint is: `host:port` over TCP, or `unix:/path` for a Unix socket.
//!
//! The server's listeners and the clients' `--server` use this one type, so an address
//! that one of them accepts the other accepts too. A host may be a name (`localhost`,
//! `monitor.example`), an IPv4 address, or an IPv6 address in brackets; names are
//! resolved when the address is used, not when it is parsed.

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
            return Err(bad(
                "expected host:port (e.g. 127.0.0.1:9503 or localhost:9503) or unix:/path",
            ));
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
