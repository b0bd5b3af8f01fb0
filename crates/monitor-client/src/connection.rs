//! What the push receiver and the reporter share: opening a connection (TCP, TLS over TCP,
//! or Unix), authentication and the X25519 key exchange, the first handshake, the
//! reconnection loop with exponential backoff and jitter, and the [`Status`] they publish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use monitor_proto::layer::kex::ClientHandshake;
use monitor_proto::message::reply::{KeyReplyData, Reply};
use monitor_proto::message::request::KeyRequest;
use monitor_proto::{ClientCodec, ClientMessage, KeySlot, MsgType, Received, Uuid};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant, Interval, MissedTickBehavior, Sleep};
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, info, warn};

use crate::config::ClientConfig;
use crate::error::{with_causes, Error, Result};
use crate::tls::{self, Tls};
use monitor_proto::address::Endpoint;
use monitor_proto::Address;

/// The handshake steps, as errors name them (the TLS one is [`tls::TLS_HANDSHAKE`]).
const AUTHENTICATION: &str = "authentication";
const KEY_EXCHANGE: &str = "key exchange";
const SUBSCRIBE: &str = "subscribe";
const HEARTBEAT: &str = "heartbeat";

/// Above this many encoded but unwritten bytes in a [`Connection`]'s write buffer, a
/// session loop stops taking work that writes more (reports) until the socket drains
/// (the protocol crate's, which the server uses too).
pub(crate) use monitor_proto::codec::WRITE_HIGH_WATER;

/// The read half of a connection.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a client stands. Read it with `status()` on a
/// [`PushReceiver`](crate::PushReceiver) or a [`Reporter`](crate::Reporter), or watch it
/// change with `status_watch()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Trying to connect. `attempt` counts the attempts of this outage (1 = the first);
    /// `last_error` is why the previous one failed.
    Connecting {
        /// The attempt under way.
        attempt: u32,
        /// Why the previous attempt failed, if there was one.
        last_error: Option<String>,
    },
    /// Connected and handshaken (subscribed, for a receiver). `connections` counts the
    /// connections made so far: more than 1 means it has reconnected.
    Connected {
        /// Connections made since the client started.
        connections: u64,
    },
    /// The connection dropped; a new attempt follows after a backoff delay.
    Disconnected {
        /// Why it dropped.
        reason: String,
    },
    /// Stopped for good: closed by its owner, or it gave up (`max_attempts`).
    Stopped {
        /// Why.
        reason: String,
    },
}

impl Status {
    /// Whether this is [`Status::Connected`].
    pub fn is_connected(&self) -> bool {
        matches!(self, Status::Connected { .. })
    }
}

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
    fn tls_failure(&self, e: Error, address: &str) -> Error {
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
async fn open_transport(
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

/// For a session loop: what a write of the buffer means for the connection.
pub(crate) fn written(result: std::io::Result<usize>) -> std::result::Result<(), String> {
    match result {
        Ok(0) => Err("the connection refused more data".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("write failed: {e}")),
    }
}

/// The handshake that proves a new connection works before it is used.
#[derive(Debug, Clone)]
pub(crate) enum Handshake {
    /// Subscribe with this body and wait for the acknowledgement (a push receiver).
    Subscribe(Bytes),
    /// Send a heartbeat and wait for its reply (a reporter: a connection is not trusted
    /// with reports until the server has answered on it).
    Heartbeat,
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
    /// Connects (with TLS if the dialer says so), authenticates if the config has a token,
    /// exchanges keys if `encrypt` is set, and does `handshake`, all within
    /// `connect_timeout`.
    pub(crate) async fn establish(
        cfg: &ClientConfig,
        dialer: &Dialer,
        handshake: &Handshake,
    ) -> Result<Connection> {
        // The handshake step under way, to say which one got no answer if time runs out;
        // `None` while the connection is being opened. Behind a lock (uncontended) because
        // the transport's TLS callback sets it too, and the future must stay `Send`.
        let step = std::sync::Mutex::new(None::<&'static str>);
        let set_step = |s| {
            *step
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s)
        };
        let attempt = async {
            let (reader, writer) =
                open_transport(&cfg.server, dialer, || set_step(tls::TLS_HANDSHAKE)).await?;
            let codec = cfg.codec();
            let key = codec.key_slot().clone();
            let mut conn = Connection {
                reader: FramedRead::new(reader, codec),
                writer,
                wbuf: BytesMut::new(),
                encoder: cfg.encoder(),
                key,
                uuid: cfg.uuid,
                compress: cfg.compress,
                encrypt: cfg.encrypt,
                last_rx: Instant::now(),
            };
            // Authentication comes first (spec §6): an authenticating server takes only key
            // requests and heartbeats before it. With encryption, one key request does both.
            let token = cfg.token.as_ref().map(|t| t.expose());
            if cfg.encrypt {
                set_step(KEY_EXCHANGE);
                conn.key_exchange(token).await?;
            } else if let Some(token) = token {
                set_step(AUTHENTICATION);
                conn.authenticate(token).await?;
            }
            match handshake {
                Handshake::Subscribe(body) => {
                    set_step(SUBSCRIBE);
                    let ack = conn
                        .request(MsgType::Subscribe, body.clone(), SUBSCRIBE)
                        .await?;
                    if !ack.is_success() {
                        return Err(refusal(ack, SUBSCRIBE, |msg| Error::SubscribeRefused {
                            msg,
                        }));
                    }
                }
                Handshake::Heartbeat => {
                    set_step(HEARTBEAT);
                    let reply = conn
                        .request(MsgType::Heartbeat, Bytes::new(), HEARTBEAT)
                        .await?;
                    if !reply.is_success() {
                        return Err(Error::BadReply {
                            reason: format!("heartbeat refused: {}", reply.msg),
                        });
                    }
                }
            }
            conn.last_rx = Instant::now();
            Ok(conn)
        };
        let outcome = tokio::time::timeout(cfg.connect_timeout, attempt).await;
        let address = cfg.server.to_string();
        let after = cfg.connect_timeout;
        let step = *step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (outcome, step) {
            (Ok(result), _) => result.map_err(|e| dialer.tls_failure(e, &address)),
            (Err(_), None) => Err(Error::ConnectTimeout { address, after }),
            (Err(_), Some(step)) => Err(Error::HandshakeTimeout {
                address,
                step,
                after,
            }),
        }
    }

    /// The read half, what was read past the handshake, the reader's codec (holding the
    /// session key) and the write half: for a caller that reads and writes the stream
    /// itself from here on ([`crate::raw`]).
    pub(crate) fn into_parts(self) -> (BoxRead, BytesMut, ClientCodec, BoxWrite) {
        let parts = self.reader.into_parts();
        (parts.io, parts.read_buf, parts.codec, self.writer)
    }

    /// X25519: sends our public key (and the token, if any: one request authenticates
    /// too), derives the session key from the server's, and installs it in the reader's
    /// key slot so encrypted replies and pushes decrypt.
    async fn key_exchange(&mut self, token: Option<&str>) -> Result<()> {
        let handshake = ClientHandshake::new();
        let body = KeyRequest::body(Some(&handshake.public_key_base64()), token);
        let reply = self
            .request(MsgType::KeyRequest, body, KEY_EXCHANGE)
            .await?;
        if !reply.is_success() {
            return Err(refusal(reply, KEY_EXCHANGE, |reason| Error::KeyExchange {
                reason,
            }));
        }
        let data: KeyReplyData = reply.data_as().map_err(|e| Error::KeyExchange {
            reason: with_causes(&e),
        })?;
        let pubkey = data.pubkey.ok_or_else(|| Error::KeyExchange {
            reason: "the key reply has no pubkey".into(),
        })?;
        let key = handshake
            .finish(&pubkey, &self.uuid)
            .map_err(|e| Error::KeyExchange {
                reason: with_causes(&e),
            })?;
        self.key.set(Some(key));
        Ok(())
    }

    /// A key request with the token alone: it only authenticates (spec §6), and the
    /// server answers `{"authenticated": true}`.
    async fn authenticate(&mut self, token: &str) -> Result<()> {
        let body = KeyRequest::body(None, Some(token));
        let reply = self
            .request(MsgType::KeyRequest, body, AUTHENTICATION)
            .await?;
        if !reply.is_success() {
            return Err(refusal(reply, AUTHENTICATION, |msg| Error::KeyExchange {
                reason: format!("the server refused the authentication request: {msg}"),
            }));
        }
        // A server that knows no tokens may answer otherwise (a legacy key): what it
        // does not check, it does not refuse later either.
        let authenticated = reply
            .data_as::<KeyReplyData>()
            .is_ok_and(|d| d.authenticated == Some(true));
        if !authenticated {
            debug!("the server did not say `authenticated`; it may not check tokens");
        }
        Ok(())
    }

    /// Sends one request and reads until its reply type arrives (anything else is
    /// skipped); returns the parsed envelope.
    async fn request(
        &mut self,
        msg_type: MsgType,
        body: Bytes,
        during: &'static str,
    ) -> Result<Reply> {
        self.queue(msg_type, body)?;
        self.flush().await?;
        let want = msg_type.reply_type();
        loop {
            let received = match self.reader.next().await {
                None => return Err(Error::ClosedDuringHandshake { during }),
                Some(frame) => frame?,
            };
            if Some(received.header.msg_type) != want {
                debug!(msg_type = %received.header.msg_type, during, "skipped a frame during a handshake");
                continue;
            }
            let body = received.body.map_err(monitor_proto::Error::Body)?;
            return Reply::parse(&body).map_err(|e| Error::BadReply {
                reason: format!("{during} reply: {}", with_causes(&e)),
            });
        }
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

/// The error for a refused handshake request: [`Error::Unauthorized`] for the server's
/// "unauthorized" (a token it does not know), `other(msg)` for anything else.
fn refusal(reply: Reply, during: &'static str, other: impl FnOnce(String) -> Error) -> Error {
    if reply.msg == UNAUTHORIZED {
        Error::Unauthorized { during }
    } else {
        other(reply.msg)
    }
}

/// The `msg` of a reply refusing a token (spec §6).
const UNAUTHORIZED: &str = "unauthorized";

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

/// Reconnection delays: exponential from `backoff_min`, capped at `backoff_max`, each
/// drawn at random from the upper half of its range ("equal jitter").
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(cfg: &ClientConfig) -> Backoff {
        Backoff {
            min: cfg.backoff_min,
            max: cfg.backoff_max,
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let floor = ceiling / 2;
        if ceiling <= floor {
            return ceiling;
        }
        rand::thread_rng().gen_range(floor..=ceiling)
    }
}

/// Errors that no retry will fix: give up at once.
fn is_permanent(e: &Error) -> bool {
    matches!(
        e,
        Error::SubscribeRefused { .. }
            | Error::KeyExchange { .. }
            | Error::Unauthorized { .. }
            | Error::Tls { .. }
            | Error::TlsFile { .. }
            | Error::Config { .. }
            | Error::BadAddress(_)
    )
}

/// A client's status channel before its first connection: the first attempt under way.
pub(crate) fn status_channel() -> watch::Sender<Status> {
    watch::channel(Status::Connecting {
        attempt: 1,
        last_error: None,
    })
    .0
}

/// A client's first connection, waited for (retried per the config, with nothing to stop
/// it but `max_attempts`), and the status channel it then publishes on, already saying
/// `Connected { connections: 1 }`.
///
/// # Errors
/// As [`connect_with_retry`], never [`Error::Closed`].
pub(crate) async fn connect_first(
    cfg: &ClientConfig,
    dialer: &Dialer,
    handshake: &Handshake,
) -> Result<(Connection, watch::Sender<Status>)> {
    let status = status_channel();
    let (conn, _) = connect_with_retry(
        cfg,
        dialer,
        handshake,
        &status,
        false,
        std::future::pending(),
    )
    .await?;
    status.send_replace(Status::Connected { connections: 1 });
    Ok((conn, status))
}

/// Connects with retries: the first attempt at once unless `delay_first`, then after
/// backoff delays, until one succeeds, `max_attempts` fail in a row, a permanent error
/// occurs, or `stop` completes (then [`Error::Closed`]). Publishes `Connecting` on
/// `status`. Returns the connection and the attempts it took.
pub(crate) async fn connect_with_retry(
    cfg: &ClientConfig,
    dialer: &Dialer,
    handshake: &Handshake,
    status: &watch::Sender<Status>,
    delay_first: bool,
    stop: impl Future<Output = ()>,
) -> Result<(Connection, u32)> {
    tokio::pin!(stop);
    let mut backoff = Backoff::new(cfg);
    let mut last_error: Option<String> = None;
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        if attempt > 1 || delay_first {
            let delay = backoff.next_delay();
            debug!(
                ?delay,
                attempt, "waiting before the next connection attempt"
            );
            tokio::select! {
                () = &mut stop => return Err(Error::Closed),
                () = tokio::time::sleep(delay) => {}
            }
        }
        status.send_replace(Status::Connecting {
            attempt,
            last_error: last_error.clone(),
        });
        let result = tokio::select! {
            () = &mut stop => return Err(Error::Closed),
            result = Connection::establish(cfg, dialer, handshake) => result,
        };
        match result {
            Ok(conn) => {
                info!(server = %cfg.server, attempt, "connected");
                return Ok((conn, attempt));
            }
            Err(e) if is_permanent(&e) => {
                warn!(server = %cfg.server, error = %e, "giving up: this will not succeed on retry");
                return Err(e);
            }
            Err(e) => {
                if cfg.max_attempts.is_some_and(|max| attempt >= max) {
                    warn!(server = %cfg.server, attempt, error = %e, "giving up");
                    return Err(Error::Unreachable {
                        attempts: attempt,
                        last_error: e.to_string(),
                    });
                }
                warn!(server = %cfg.server, attempt, error = %e, "connection attempt failed; retrying");
                last_error = Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut cfg = ClientConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.backoff_min = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(1000);
        let mut b = Backoff::new(&cfg);
        let ceilings = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for ceiling in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(d <= ceiling && d >= ceiling / 2, "{d:?} vs {ceiling:?}");
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= cfg.backoff_max);
        }
    }
}
