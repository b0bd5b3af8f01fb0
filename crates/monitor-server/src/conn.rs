//! One connection: a single task that reads and answers requests, writes queued pushes,
//! and enforces the idle timeout, all in one `select!` loop.
//!
//! Reads and writes never wait on each other: replies and pushes are encoded into a write
//! buffer that the loop flushes whenever the socket is writable. When the write buffer is
//! over [`WRITE_HIGH_WATER`] the loop stops reading requests and taking pushes, so a
//! client that does not read can only fill its own bounded push queue (then the
//! slow-consumer policy applies) and never makes the server buffer without bound.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use monitor_proto::layer::kex::{generate_legacy_key, ServerHandshake};
use monitor_proto::message::reply;
use monitor_proto::message::request::KeyRequest;
use monitor_proto::{
    Error as ProtoError, Header, MessageCodec, MsgType, Outgoing, Received, Report, Role,
    SessionKey, Subscribe, Uuid,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::hub::{Push, PushReceiver};
use crate::server::Shared;
use crate::stats::Stats;

/// Above this many buffered output bytes, stop reading requests and taking pushes until
/// the socket drains.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Read-buffer space made available before each read.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing connection may take to flush its last replies.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pushes taken from the queue per wake-up, so one busy subscriber cannot starve its
/// own requests.
const PUSH_BATCH: usize = 512;

/// A byte stream that can be split into borrowed read and write halves, so one task can
/// wait on both at once without locks.
pub trait Transport: Send + 'static {
    /// The read half.
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The write half.
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Splits the stream.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

impl Transport for tokio::net::TcpStream {
    type Reader<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Writer<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }
}

impl Transport for tokio::net::UnixStream {
    type Reader<'a> = tokio::net::unix::ReadHalf<'a>;
    type Writer<'a> = tokio::net::unix::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The client closed it.
    Eof,
    /// The client closed it in the middle of a frame.
    EofMidFrame(usize),
    /// No complete frame for `idle_timeout_secs`.
    Idle(u64),
    /// A header that breaks the protocol; the stream cannot go on.
    Protocol(ProtoError),
    /// A malformed subscribe (answered, then closed).
    MalformedSubscribe,
    /// Its push queue was full under `slow_consumer = "disconnect"`.
    SlowConsumer,
    /// Reading or writing failed.
    Io(io::Error),
    /// The server is shutting down.
    Shutdown,
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Eof => f.write_str("closed by peer"),
            Close::EofMidFrame(n) => {
                write!(f, "closed by peer with {n} bytes of an unfinished frame")
            }
            Close::Idle(secs) => write!(f, "idle timeout: no complete frame in {secs} s"),
            Close::Protocol(e) => write!(f, "protocol error: {e}"),
            Close::MalformedSubscribe => f.write_str("malformed subscribe"),
            Close::SlowConsumer => {
                f.write_str("slow consumer: push queue full (slow_consumer = \"disconnect\")")
            }
            Close::Io(e) => write!(f, "i/o error: {e}"),
            Close::Shutdown => f.write_str("server shutdown"),
        }
    }
}

/// What a subscription asked for: pushes carry its uuid and follow its flags.
#[derive(Debug, Clone, Copy)]
struct Subscription {
    uuid: Uuid,
    compress: bool,
    encrypt: bool,
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    peer: String,
    settings: Arc<Settings>,
    codec: MessageCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    subscription: Option<Subscription>,
    pushes: Option<PushReceiver>,
    /// The hub holds the only strong sender, so eviction closes the queue.
    push_sender: Option<mpsc::WeakSender<Arc<Push>>>,
    reported: bool,
    uuid: Option<Uuid>,
    frames_in: u64,
    frames_out: u64,
    /// The part of `frames_in` / `frames_out` already added to the shared stats.
    frames_in_counted: u64,
    frames_out_counted: u64,
    last_frame: Instant,
    closing: Option<Close>,
}

/// Serves one accepted connection until it closes; logs its close line.
pub(crate) async fn serve<T: Transport>(
    mut stream: T,
    peer: String,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    let started = Instant::now();
    let id = shared.next_conn_id();
    let mut settings_rx = shared.settings_receiver();
    let settings = settings_rx.borrow_and_update().clone();
    let codec = settings.codec_builder().message_codec(Role::Server);
    info!(peer = %peer, id, "connection opened");
    let mut conn = Conn {
        shared,
        id,
        peer,
        settings,
        codec,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        subscription: None,
        pushes: None,
        push_sender: None,
        reported: false,
        uuid: None,
        frames_in: 0,
        frames_out: 0,
        frames_in_counted: 0,
        frames_out_counted: 0,
        last_frame: started,
        closing: None,
    };
    let reason = conn.run(&mut stream, &token, &mut settings_rx).await;
    conn.shared.hub.unsubscribe(id);
    conn.flush_stats();
    let role = match (conn.subscription.is_some(), conn.reported) {
        (true, true) => "subscriber+reporter",
        (true, false) => "subscriber",
        (false, true) => "reporter",
        (false, false) => "none",
    };
    let uuid = conn.uuid.map_or_else(|| "-".to_owned(), |u| u.to_string());
    let duration_ms = started.elapsed().as_millis() as u64;
    match &reason {
        Close::Protocol(_)
        | Close::MalformedSubscribe
        | Close::SlowConsumer
        | Close::Idle(_)
        | Close::EofMidFrame(_) => warn!(
            peer = %conn.peer, uuid = %uuid, role, duration_ms, frames_in = conn.frames_in,
            frames_out = conn.frames_out, reason = %reason, "connection closed"
        ),
        _ => info!(
            peer = %conn.peer, uuid = %uuid, role, duration_ms, frames_in = conn.frames_in,
            frames_out = conn.frames_out, reason = %reason, "connection closed"
        ),
    }
}

/// The next push, or never if this connection has not subscribed.
async fn next_push(pushes: &mut Option<PushReceiver>) -> Option<Arc<Push>> {
    match pushes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The reply text for a body that failed its layers or its parse.
fn malformed(e: &ProtoError) -> String {
    match e {
        ProtoError::MalformedBody { .. } => e.to_string(),
        other => format!("malformed body: {other}"),
    }
}

impl Conn {
    async fn run<T: Transport>(
        &mut self,
        stream: &mut T,
        token: &CancellationToken,
        settings_rx: &mut watch::Receiver<Arc<Settings>>,
    ) -> Close {
        let (mut reader, mut writer) = stream.halves();
        let idle = sleep_until(self.idle_deadline());
        tokio::pin!(idle);
        let mut settings_live = true;
        let reason = loop {
            if let Some(reason) = self.closing.take() {
                break reason;
            }
            let room = self.wbuf.len() < WRITE_HIGH_WATER;
            if room && self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                () = token.cancelled() => {
                    self.drain(&mut writer).await;
                    return Close::Shutdown;
                }
                written = writer.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => match written {
                    Ok(0) => break Close::Io(io::ErrorKind::WriteZero.into()),
                    Ok(_) => self.flush_stats_if_idle(),
                    Err(e) => break Close::Io(e),
                },
                read = tokio::io::AsyncReadExt::read_buf(&mut reader, &mut self.rbuf), if room => match read {
                    Ok(0) if self.rbuf.is_empty() => break Close::Eof,
                    Ok(0) => break Close::EofMidFrame(self.rbuf.len()),
                    Ok(_) => self.on_read(),
                    Err(e) => break Close::Io(e),
                },
                push = next_push(&mut self.pushes), if room => match push {
                    Some(push) => self.on_pushes(push),
                    None => break Close::SlowConsumer,
                },
                () = &mut idle => {
                    let deadline = self.idle_deadline();
                    if Instant::now() >= deadline {
                        break Close::Idle(self.settings.idle_timeout_secs);
                    }
                    idle.as_mut().reset(deadline);
                }
                changed = settings_rx.changed(), if settings_live => {
                    if changed.is_ok() {
                        let settings = settings_rx.borrow_and_update().clone();
                        self.apply(settings);
                        idle.as_mut().reset(self.idle_deadline());
                    } else {
                        settings_live = false;
                    }
                }
            }
        };
        // Last words (an error reply before a close) are worth a bounded wait.
        if !self.wbuf.is_empty() && !matches!(reason, Close::Io(_)) {
            let _ = timeout(CLOSE_FLUSH_TIMEOUT, writer.write_all_buf(&mut self.wbuf)).await;
        }
        let _ = timeout(CLOSE_FLUSH_TIMEOUT, writer.shutdown()).await;
        reason
    }

    fn idle_deadline(&self) -> Instant {
        self.last_frame + Duration::from_secs(self.settings.idle_timeout_secs)
    }

    fn apply(&mut self, settings: Arc<Settings>) {
        self.codec.set_limits(
            settings.max_frame_len,
            settings.max_inflated_len,
            settings.compress_threshold,
        );
        self.settings = settings;
    }

    /// Shutdown: stop reading, write what is already queued, bounded by the drain timeout.
    async fn drain<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) {
        let deadline = Instant::now() + Duration::from_secs(self.settings.drain_timeout_secs);
        if let Some(rx) = self.pushes.as_mut() {
            rx.close();
        }
        while let Some(Ok(push)) = self.pushes.as_mut().map(mpsc::Receiver::try_recv) {
            self.encode_push(&push);
            if self.wbuf.len() >= WRITE_HIGH_WATER
                && !matches!(
                    tokio::time::timeout_at(deadline, writer.write_all_buf(&mut self.wbuf)).await,
                    Ok(Ok(()))
                )
            {
                return;
            }
        }
        let _ = tokio::time::timeout_at(deadline, async {
            writer.write_all_buf(&mut self.wbuf).await?;
            writer.shutdown().await
        })
        .await;
    }

    fn on_read(&mut self) {
        let before = self.frames_in;
        while self.closing.is_none() {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(received)) => {
                    self.frames_in += 1;
                    self.handle(received);
                }
                Ok(None) => break,
                Err(e) => {
                    self.shared
                        .stats
                        .protocol_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.closing = Some(Close::Protocol(e));
                    break;
                }
            }
        }
        if self.frames_in > before {
            self.last_frame = Instant::now();
        }
        // A buffer grown for one large frame is given back once it is empty.
        if self.rbuf.is_empty() && self.rbuf.capacity() > READ_CHUNK {
            self.rbuf = BytesMut::new();
        }
    }

    fn handle(&mut self, received: Received) {
        let Received { header, body } = received;
        self.uuid = Some(header.uuid);
        let Some(reply_type) = header.msg_type.reply_type() else {
            // The codec refuses server-to-client types before their body arrives.
            self.closing = Some(Close::Protocol(ProtoError::WrongDirection {
                msg_type: header.msg_type,
                accept: monitor_proto::Direction::ClientToServer,
            }));
            return;
        };
        if header.cipher && self.codec.session_key().is_none() && !reply_type.never_encrypted() {
            let msg = ProtoError::NoSessionKey.to_string();
            self.send(reply_type, &header, reply::error(&msg), false);
            return;
        }
        match header.msg_type {
            MsgType::Heartbeat => {
                self.send(reply_type, &header, reply::heartbeat(unix_now()), false)
            }
            MsgType::KeyRequest => self.key_request(&header, body),
            MsgType::Subscribe => self.subscribe(&header, body),
            MsgType::Report => self.report(&header, body),
            _ => {}
        }
    }

    /// Encodes a reply: it mirrors the request's compress flag, and is encrypted when the
    /// request asked for it (`encrypt` is false for replies that must stay readable).
    fn send(&mut self, msg_type: MsgType, request: &Header, json: Bytes, encrypt: bool) {
        let out = Outgoing::new(msg_type, request.uuid, json)
            .with_compress(request.compress)
            .with_encrypt(encrypt);
        match self.codec.encode_message(out, &mut self.wbuf) {
            Ok(()) => self.frames_out += 1,
            Err(e) => {
                // Only an oversized reply gets here (the key was checked first): say so.
                warn!(peer = %self.peer, error = %e, "reply not sent");
                let out = Outgoing::new(
                    msg_type,
                    request.uuid,
                    reply::error(&format!("reply not sent: {e}")),
                );
                if self.codec.encode_message(out, &mut self.wbuf).is_ok() {
                    self.frames_out += 1;
                }
            }
        }
    }

    fn key_request(&mut self, header: &Header, body: Result<Bytes, ProtoError>) {
        let request = match body.and_then(|b| KeyRequest::parse(&b)) {
            Ok(r) => r,
            Err(e) => {
                return self.send(
                    MsgType::KeyReply,
                    header,
                    reply::error(&malformed(&e)),
                    false,
                )
            }
        };
        let (json, key) = if let Some(pubkey) = &request.pubkey {
            match ServerHandshake::new().respond(pubkey, &header.uuid) {
                Ok((server_pubkey, key)) => (reply::key_pubkey(&server_pubkey), Some(key)),
                Err(e) => {
                    debug!(peer = %self.peer, error = %e, "key request refused");
                    (reply::error(&e.to_string()), None)
                }
            }
        } else if request.token.is_some() {
            // Authentication is not configured on this server: every client may do anything.
            (reply::authenticated(), None)
        } else if self.settings.legacy_key_exchange {
            let cipher_key = generate_legacy_key();
            match SessionKey::from_legacy(&cipher_key) {
                Ok(key) => (reply::key_legacy(&cipher_key), Some(key)),
                Err(e) => (reply::error(&e.to_string()), None),
            }
        } else {
            (
                reply::error(
                    "legacy key exchange is disabled (the key would travel in the clear): send \
                     {\"pubkey\": \"<base64 X25519 public key>\"}, or set legacy_key_exchange = true \
                     in the server's [server] config",
                ),
                None,
            )
        };
        self.send(MsgType::KeyReply, header, json, false);
        if let Some(key) = key {
            self.codec.set_session_key(Some(key));
        }
    }

    fn subscribe(&mut self, header: &Header, body: Result<Bytes, ProtoError>) {
        let parsed = body.and_then(Subscribe::parse);
        let subscribe = match parsed {
            Ok(s) => s,
            Err(e) => {
                let msg = malformed(&e);
                debug!(peer = %self.peer, reason = %msg, "subscribe refused");
                self.send(MsgType::Push, header, reply::error(&msg), header.cipher);
                self.closing = Some(Close::MalformedSubscribe);
                return;
            }
        };
        let sender = self
            .push_sender
            .as_ref()
            .and_then(mpsc::WeakSender::upgrade);
        let sender = match sender {
            Some(tx) => tx,
            None => {
                let (tx, rx) = mpsc::channel(self.settings.subscriber_queue);
                self.push_sender = Some(tx.downgrade());
                self.pushes = Some(rx);
                tx
            }
        };
        self.subscription = Some(Subscription {
            uuid: header.uuid,
            compress: header.compress,
            encrypt: header.cipher,
        });
        // Ack first: this task writes it before any push it takes from the queue.
        self.send(
            MsgType::Push,
            header,
            reply::success_raw(&subscribe.raw),
            header.cipher,
        );
        self.shared.hub.subscribe(self.id, subscribe.topics, sender);
    }

    fn report(&mut self, header: &Header, body: Result<Bytes, ProtoError>) {
        let parsed = body.and_then(Report::parse);
        let json = match parsed {
            Err(e) => reply::error(&malformed(&e)),
            Ok(report) if self.push_too_large(&report) => reply::error(&format!(
                "report too large: its push would exceed max_frame_len {}",
                self.settings.max_frame_len
            )),
            Ok(report) => {
                self.reported = true;
                let delivered = self.shared.hub.publish(
                    &report,
                    self.settings.slow_consumer,
                    &self.shared.stats,
                );
                reply::report_ack(delivered)
            }
        };
        self.send(MsgType::ReportAck, header, json, header.cipher);
    }

    /// Whether the plain push frame of `report` would exceed `max_frame_len`: every frame
    /// this server sends respects the limit its peers are configured with.
    fn push_too_large(&self, report: &Report) -> bool {
        let push_len =
            monitor_proto::HEADER_LEN + reply::SUCCESS_PREFIX.len() + report.raw.len() + 1;
        push_len > self.settings.max_frame_len as usize
    }

    /// Encodes the push just received and whatever else is already queued, up to a batch.
    fn on_pushes(&mut self, first: Arc<Push>) {
        self.encode_push(&first);
        for _ in 1..PUSH_BATCH {
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                break;
            }
            let Some(Ok(push)) = self.pushes.as_mut().map(mpsc::Receiver::try_recv) else {
                break;
            };
            self.encode_push(&push);
        }
    }

    fn encode_push(&mut self, push: &Push) {
        let Some(sub) = self.subscription else { return };
        let mut out = Outgoing::new(MsgType::Push, sub.uuid, push.json().clone())
            .with_compress(sub.compress)
            .with_encrypt(sub.encrypt);
        if self.codec.will_compress(&out) {
            out = out.with_compressed(push.compressed().clone());
        }
        match self.codec.encode_message(out, &mut self.wbuf) {
            Ok(()) => self.frames_out += 1,
            Err(e) => {
                Stats::add(&self.shared.stats.pushes_dropped, 1);
                debug!(peer = %self.peer, error = %e, "push not sent");
            }
        }
    }

    fn flush_stats_if_idle(&mut self) {
        if self.wbuf.is_empty() {
            self.flush_stats();
        }
    }

    fn flush_stats(&mut self) {
        let stats = &self.shared.stats;
        Stats::add(&stats.frames_out, self.frames_out - self.frames_out_counted);
        Stats::add(&stats.frames_in, self.frames_in - self.frames_in_counted);
        self.frames_out_counted = self.frames_out;
        self.frames_in_counted = self.frames_in;
    }
}
