//! [`WsUrl`]: where WebSocket subscribers connect, checked when it is given, so that a
//! `wss://` or `http://` URL is refused before the run with what to write instead.

use std::fmt;
use std::str::FromStr;

use tokio_tungstenite::tungstenite::http::Uri;

use crate::error::{Error, Result};

/// The example URL in messages: the admin listener's default address.
const EXAMPLE: &str = "ws://127.0.0.1:9600/ws";

/// A `ws://host[:port]/path` URL: where WebSocket subscribers connect.
///
/// ```
/// use monitor_cli::bench::WsUrl;
/// let url: WsUrl = "ws://127.0.0.1:9600/ws".parse().unwrap();
/// assert_eq!((url.host(), url.port()), ("127.0.0.1", 9600));
/// assert!(url.is_local());
/// assert!("http://127.0.0.1:9600/ws".parse::<WsUrl>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    text: String,
    /// As in the URL (an IPv6 address in brackets).
    host: String,
    port: u16,
}

impl WsUrl {
    /// The host, as written in the URL (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 if the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the host is this one: `localhost` or a loopback address.
    pub fn is_local(&self) -> bool {
        let host = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for WsUrl {
    type Err = Error;

    /// # Errors
    /// [`Error::Config`] for the field `ws`: not a URL, a scheme other than `ws`
    /// (`wss` included), no host.
    fn from_str(s: &str) -> Result<WsUrl> {
        let bad = |reason: String| Err(Error::config("ws", reason));
        let uri: Uri = match s.parse() {
            Ok(uri) => uri,
            Err(e) => return bad(format!("`{s}` is not a URL ({e}); e.g. {EXAMPLE}")),
        };
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => {
                return bad(format!(
                    "`{s}`: wss:// is not supported: the server's admin listener, which \
                     serves /ws, speaks plain HTTP; use ws://, e.g. {EXAMPLE}"
                ))
            }
            Some(other) => {
                return bad(format!(
                    "`{s}`: the scheme must be ws://, not {other}://; e.g. {EXAMPLE}"
                ))
            }
            None => return bad(format!("`{s}` is not a ws:// URL; e.g. {EXAMPLE}")),
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return bad(format!("`{s}` names no host; e.g. {EXAMPLE}"));
        };
        Ok(WsUrl {
            text: s.to_owned(),
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(80),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url: WsUrl = "ws://localhost/ws".parse().unwrap();
        assert_eq!(
            (url.host(), url.port(), url.is_local()),
            ("localhost", 80, true)
        );
        let url: WsUrl = "ws://[::1]:9600/ws".parse().unwrap();
        assert_eq!(url.port(), 9600);
        assert!(url.is_local(), "{url:?}");
        assert_eq!(url.to_string(), "ws://[::1]:9600/ws");
        assert!(!"ws://10.0.0.5:9600/ws".parse::<WsUrl>().unwrap().is_local());
        for (bad, says) in [
            ("wss://127.0.0.1:9600/ws", "wss:// is not supported"),
            ("http://127.0.0.1:9600/ws", "must be ws://, not http://"),
            ("127.0.0.1:9600", "not a ws:// URL"),
            ("ws://", "not a URL"),
            ("ws:// x", "not a URL"),
        ] {
            let e = bad.parse::<WsUrl>().unwrap_err();
            let (field, reason) = e.config_field().unwrap();
            assert_eq!(field, "ws");
            assert!(reason.contains(says), "{bad}: {reason}");
        }
    }
}
