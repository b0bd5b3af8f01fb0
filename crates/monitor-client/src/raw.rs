//! A connection handed over raw, past its handshake, for a caller that reads and writes
//! the protocol's frames itself: the `monitor-client bench` load generator, which walks
//! its read buffer in place to spend nothing per push on allocation.
//!
//! [`connect`] opens the connection as a [`PushReceiver`](crate::PushReceiver) or a
//! [`Reporter`](crate::Reporter) opens each of theirs: TCP (without Nagle's delay, with
//! TLS when the config asks for it) or a Unix socket, authentication when the config has
//! a token, the X25519 key exchange when `encrypt` is set, then the subscribe or a first
//! heartbeat, all within `connect_timeout` and failing with the same errors. It makes one
//! attempt. From then on everything is the caller's: heartbeats (the server closes a
//! connection that sends nothing for its idle timeout), noticing a dead connection,
//! reconnecting.
//!
//! # Why this seam
//! The alternative was a load generator that opens its connections with monitor-proto
//! alone, and nothing public here. It would carry a second copy of the transport, the
//! handshakes and the way a timeout is told apart ([`Error::ConnectTimeout`] before the
//! connection is made, [`Error::HandshakeTimeout`] after), which would drift from the
//! clients'. One function and one struct are the least surface that avoids the copy: the
//! handshake is chosen by an `Option` rather than a public enum, and no connection type,
//! backoff or session state is exposed.
//!
//! ```no_run
//! use monitor_client::{raw, ClientConfig, Subscription};
//!
//! # async fn run() -> Result<(), monitor_client::Error> {
//! let config = ClientConfig::new("127.0.0.1:9503".parse()?);
//! let subscribed = raw::connect(&config, Some(&Subscription::new("me").topic("host.*"))).await?;
//! // Read pushes from `subscribed.unread`, then from `subscribed.reader`; decode each frame
//! // with `subscribed.codec` (or judge one left in place with a `FrameCodec` of the same
//! // `max_frame_len` and its `peek`).
//! # drop(subscribed);
//! # Ok(())
//! # }
//! ```
//!
//! [`Error::ConnectTimeout`]: crate::Error::ConnectTimeout
//! [`Error::HandshakeTimeout`]: crate::Error::HandshakeTimeout

use bytes::BytesMut;
use monitor_proto::ClientCodec;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::ClientConfig;
use crate::connection::{Connection, Dialer, Handshake};
use crate::error::Result;
use crate::receiver::Subscription;

/// A connection past its handshake, taken apart.
#[non_exhaustive]
pub struct RawConnection {
    /// The socket's read half. Read on after [`RawConnection::unread`].
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// What arrived after the handshake's reply and was already read from the socket: the
    /// start of the stream from here on (often empty; a push can follow a subscribe
    /// acknowledgement in the same read).
    pub unread: BytesMut,
    /// A client-role codec with the config's limits, holding the session key when the
    /// connection is encrypted, and between frames: decode with it from the start of
    /// [`RawConnection::unread`].
    pub codec: ClientCodec,
    /// The socket's write half, with nothing left to write.
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("unread", &self.unread.len())
            .finish_non_exhaustive()
    }
}

/// Connects to `config.server` (over TLS if the config asks), authenticates if
/// `config.token` is set, exchanges keys if `config.encrypt`, and subscribes with
/// `subscription` (as a push receiver does) or, with `None`, sends a heartbeat and waits
/// for its reply (as a reporter does before it writes a report). One attempt, bounded by
/// `connect_timeout`. The TLS files are read on each call.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) for a bad config or an empty subscription
/// code, [`Error::TlsFile`](crate::Error::TlsFile); otherwise as one connection attempt of
/// the clients: `Connect`, `ConnectTimeout`, `HandshakeTimeout`, `ClosedDuringHandshake`,
/// `Tls`, `Unauthorized`, `KeyExchange`, `SubscribeRefused`, `BadReply`, `Proto`.
pub async fn connect(
    config: &ClientConfig,
    subscription: Option<&Subscription>,
) -> Result<RawConnection> {
    config.validate()?;
    let handshake = match subscription {
        Some(subscription) => {
            subscription.validate()?;
            Handshake::Subscribe(subscription.body())
        }
        None => Handshake::Heartbeat,
    };
    let dialer = Dialer::new(config)?;
    let conn = Connection::establish(config, &dialer, &handshake).await?;
    // The reader's codec is between frames: the framed reader decodes only when polled,
    // and its last poll yielded the handshake's reply.
    let (reader, unread, codec, writer) = conn.into_parts();
    Ok(RawConnection {
        reader,
        unread,
        codec,
        writer,
    })
}
