//! Opening one bench connection the way the library's clients do, past its handshake, and
//! retrying as a run allows.

use std::time::Duration;

use bytes::BytesMut;
use monitor_client::config::random_uuid;
use monitor_client::{raw, Endpoint, Subscription};
use monitor_proto::{ClientCodec, Uuid};
use tokio::io::{AsyncRead, AsyncWrite};

use super::shared::Shared;
use crate::error::Result;

/// A connection's read half, as [`raw::connect`] hands it over.
pub(super) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A connection's write half, as [`raw::connect`] hands it over.
pub(super) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub(super) const CONNECT_ATTEMPTS: u32 = 3;

/// A connection past its handshake (subscribed, or its heartbeat answered), taken apart
/// for the bench's own reading and writing.
pub(super) struct Opened {
    pub(super) reader: BoxRead,
    pub(super) writer: BoxWrite,
    /// What arrived after the handshake's reply.
    pub(super) buf: BytesMut,
    pub(super) codec: ClientCodec,
    pub(super) uuid: Uuid,
}

/// Opens one connection the way the library's clients do ([`raw::connect`]), subscribed
/// with `subscription` or, with `None`, proven by a heartbeat; retrying as the bench
/// allows: a refused subscribe is final, anything else is tried again
/// [`CONNECT_ATTEMPTS`] times.
pub(super) async fn open_with_retry(
    sh: &Shared,
    server: &Endpoint,
    subscription: Option<&Subscription>,
    letter: u8,
) -> Result<Opened> {
    let mut cfg = sh.cfg.client_config();
    cfg.server = server.clone();
    cfg.uuid = random_uuid(letter);
    let mut last = None;
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match raw::connect(&cfg, subscription).await {
            Ok(conn) => {
                return Ok(Opened {
                    reader: conn.reader,
                    writer: conn.writer,
                    buf: conn.unread,
                    codec: conn.codec,
                    uuid: cfg.uuid,
                });
            }
            Err(e) if is_refusal(&e) => return Err(e.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(monitor_client::Error::Closed).into())
}

/// A connection error that trying again will not change: a refusal (subscription,
/// token, key exchange), TLS (certificates), or the config.
fn is_refusal(e: &monitor_client::Error) -> bool {
    use monitor_client::Error as E;
    matches!(
        e,
        E::SubscribeRefused { .. }
            | E::Unauthorized { .. }
            | E::KeyExchange { .. }
            | E::Tls { .. }
            | E::TlsFile { .. }
            | E::Config { .. }
    )
}
