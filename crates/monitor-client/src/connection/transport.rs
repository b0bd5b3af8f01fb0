//! The byte stream under a connection: TCP (without Nagle's delay), TLS over TCP, or a
//! Unix socket, opened by a [`Dialer`] that holds its client's TLS, prepared once.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::tls::{self, Tls};
use monitor_proto::address::Endpoint;
use monitor_proto::Address;

/// The read half of a connection.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How a client reaches its server: what the config says, with its TLS prepared once
/// (files read, rustls configuration built), so that every connection of the client,
/// reconnections included, shares it and its session cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dialer {
    tls: Option<Arc<Tls>>,
}

impl Dialer {
    /// The dialer `cfg` asks for. Call it once per client, after `cfg.validate()`.
    ///
    /// # Errors
    /// [`Error::TlsFile`] for a TLS file that is missing or unusable.
    pub(crate) fn new(cfg: &ClientConfig) -> Result<Dialer> {
        Ok(Dialer {
            tls: tls::prepare(cfg)?,
        })
    }

    /// `e` as a TLS failure, if it is one (an I/O error carrying rustls' error), so that
    /// a refusal that surfaces on the first read after the handshake (TLS 1.3 mutual TLS)
    /// says what it is rather than "protocol error".
    pub(super) fn tls_failure(&self, e: Error, address: &str) -> Error {
        let Some(tls) = &self.tls else { return e };
        let reason = match &e {
            Error::Proto(monitor_proto::Error::Io(io)) => tls.explain(io),
            _ => None,
        };
        match reason {
            Some(reason) => Error::Tls {
                address: address.to_owned(),
                reason,
            },
            None => e,
        }
    }
}

/// Opens a byte stream to `server`; `on_tls` is called as the TLS handshake starts, if
/// the dialer runs TLS.
pub(super) async fn open_transport(
    server: &Endpoint,
    dialer: &Dialer,
    on_tls: impl FnOnce(),
) -> Result<(BoxRead, BoxWrite)> {
    let connect_err = |source| Error::Connect {
        address: server.to_string(),
        source,
    };
    match server.address() {
        Address::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_err)?;
            // Reports and heartbeats are small: send them now, not after Nagle's delay.
            stream.set_nodelay(true).map_err(connect_err)?;
            match &dialer.tls {
                None => {
                    let (r, w) = stream.into_split();
                    Ok((Box::new(r), Box::new(w)))
                }
                Some(tls) => {
                    on_tls();
                    let stream = tls.handshake(stream, &server.to_string()).await?;
                    // One TLS session, read and written from both halves: tokio's split
                    // shares it behind a lock that each half takes for one call.
                    let (r, w) = tokio::io::split(stream);
                    Ok((Box::new(r), Box::new(w)))
                }
            }
        }
        Address::Unix(path) => {
            if dialer.tls.is_some() {
                // ClientConfig::validate refuses this; a raw caller may not have.
                return Err(Error::Config {
                    field: "tls",
                    reason: "TLS runs over TCP, not over a Unix socket".into(),
                });
            }
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect_err)?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
    }
}
