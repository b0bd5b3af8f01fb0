//! What the push receiver and the reporter share: opening a connection (TCP, TLS over TCP,
//! or Unix), authentication and the X25519 key exchange, the first handshake, the
//! reconnection loop with exponential backoff and jitter, and the [`Status`] they publish.
//!
//! # Layout
//! - `transport`: the byte stream (TCP, TLS over TCP, or Unix) and the [`Dialer`] that
//!   holds a client's prepared TLS.
//! - `status`: the [`Status`] a client publishes.
//! - Here: [`Connection`], one live connection as a client's session loop drives it:
//!   requests queued and flushed, heartbeats, the silence deadline, closing.
//! - `handshake`: what makes a new connection usable before it is handed over:
//!   authentication, the key exchange, the subscribe or the first heartbeat.
//! - `retry`: connecting until it works: backoff with jitter, and the errors no retry
//!   will fix.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monitor_proto::{ClientCodec, ClientMessage, KeySlot, MsgType, Received, Uuid};
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, Instant, Interval, MissedTickBehavior, Sleep};
use tokio_util::codec::{Encoder, FramedRead};

use crate::config::ClientConfig;
use crate::error::{with_causes, Error, Result};

mod handshake;
mod retry;
mod status;
mod transport;

pub(crate) use handshake::Handshake;
pub(crate) use retry::{connect_first, connect_with_retry};
pub(crate) use status::status_channel;
pub use status::Status;
pub(crate) use transport::Dialer;
use transport::{BoxRead, BoxWrite};

/// Above this many encoded but unwritten bytes in a [`Connection`]'s write buffer, a
/// session loop stops taking work that writes more (reports) until the socket drains
/// (the protocol crate's, which the server uses too).
pub(crate) use monitor_proto::codec::WRITE_HIGH_WATER;

/// For a session loop: what a write of the buffer means for the connection.
pub(crate) fn written(result: std::io::Result<usize>) -> std::result::Result<(), String> {
    match result {
        Ok(0) => Err("the connection refused more data".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("write failed: {e}")),
    }
}

/// One live connection: a framed reader (whose codec decrypts with the session key in
/// `key`) and a write buffer flushed by the owner's `select!` loop. The fields are separate
/// so that a loop can wait on reading and writing at once.
pub(crate) struct Connection {
    /// Frames from the server, through the body layers.
    pub(crate) reader: FramedRead<BoxRead, ClientCodec>,
    /// The socket's write half.
    pub(crate) writer: BoxWrite,
    /// Encoded frames not yet written.
    pub(crate) wbuf: BytesMut,
    encoder: ClientCodec,
    /// The reader's key slot: the key exchange installs the session key here.
    key: KeySlot,
    uuid: Uuid,
    compress: bool,
    encrypt: bool,
    /// When the last frame arrived (or the connection was made).
    pub(crate) last_rx: Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("uuid", &self.uuid)
            .field("unwritten", &self.wbuf.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The read half, what was read past the handshake, the reader's codec (holding the
    /// session key) and the write half: for a caller that reads and writes the stream
    /// itself from here on ([`crate::raw`]).
    pub(crate) fn into_parts(self) -> (BoxRead, BytesMut, ClientCodec, BoxWrite) {
        let parts = self.reader.into_parts();
        (parts.io, parts.read_buf, parts.codec, self.writer)
    }

    /// Encodes a request into the write buffer. Subscribes and reports carry this client's
    /// compress and encrypt flags; key requests and heartbeats ask for neither.
    ///
    /// # Errors
    /// [`Error::Proto`] if the frame exceeds the codec's `max_frame_len`.
    pub(crate) fn queue(&mut self, msg_type: MsgType, body: Bytes) -> Result<()> {
        let flags = matches!(msg_type, MsgType::Subscribe | MsgType::Report);
        let out = ClientMessage::new(msg_type, self.uuid, body)
            .compress(flags && self.compress)
            .ask_encrypted_replies(flags && self.encrypt);
        self.encoder.encode(out, &mut self.wbuf)?;
        Ok(())
    }

    /// Queues a heartbeat.
    pub(crate) fn queue_heartbeat(&mut self) {
        // A heartbeat has no body: it always fits.
        let _ = self.queue(MsgType::Heartbeat, Bytes::new());
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.writer
            .write_all_buf(&mut self.wbuf)
            .await
            .map_err(|e| Error::Proto(e.into()))
    }

    /// When the connection counts as dead if nothing more arrives: a heartbeat goes out
    /// every `heartbeat_interval`, and its reply is due within `ack_timeout`.
    pub(crate) fn silence_deadline(&self, cfg: &ClientConfig) -> Instant {
        self.last_rx + cfg.heartbeat_interval + cfg.ack_timeout
    }

    /// The two timers of a session loop: heartbeats every `heartbeat_interval` (the
    /// first one interval from now), and the silence deadline
    /// ([`Connection::silence_deadline`]).
    pub(crate) fn session_timers(&self, cfg: &ClientConfig) -> (Interval, Pin<Box<Sleep>>) {
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + cfg.heartbeat_interval,
            cfg.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        (heartbeat, Box::pin(sleep_until(self.silence_deadline(cfg))))
    }

    /// For a session loop whose silence timer fired: why the connection is dead, or, if a
    /// frame came meanwhile, the timer set again.
    pub(crate) fn check_silence(
        &self,
        cfg: &ClientConfig,
        silence: Pin<&mut Sleep>,
    ) -> std::result::Result<(), String> {
        let deadline = self.silence_deadline(cfg);
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing received for {:?} (heartbeat unanswered)",
                cfg.heartbeat_interval + cfg.ack_timeout
            ));
        }
        silence.reset(deadline);
        Ok(())
    }

    /// For a session loop: a frame from `reader`, or why the connection is lost. A frame
    /// that arrives moves the silence deadline back.
    pub(crate) fn arrived(
        &mut self,
        frame: Option<std::result::Result<Received, monitor_proto::Error>>,
    ) -> std::result::Result<Received, String> {
        match frame {
            None => Err("closed by the server".into()),
            Some(Err(e)) => Err(format!("protocol error: {}", with_causes(&e))),
            Some(Ok(received)) => {
                self.last_rx = Instant::now();
                Ok(received)
            }
        }
    }

    /// Closes the write side, bounded so a dead peer cannot hold the caller.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.writer.write_all_buf(&mut self.wbuf).await;
            let _ = self.writer.shutdown().await;
        })
        .await;
    }
}

/// Why a frame from the server is of no use, for a log line.
pub(crate) fn describe_received(received: &Received) -> String {
    format!(
        "{} (cipher {}, compress {}, {} bytes)",
        received.header.msg_type,
        u8::from(received.header.cipher),
        u8::from(received.header.compress),
        received.header.length
    )
}
