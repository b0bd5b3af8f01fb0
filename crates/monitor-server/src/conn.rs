//! One connection: a single task that reads and answers requests, writes queued pushes,
//! and enforces its deadlines (idle, incomplete frame, stalled write), all in one
//! `select!` loop with one timer.
//!
//! Reads and writes never wait on each other: replies and pushes are encoded into a write
//! buffer that the loop flushes whenever the socket is writable. When the write buffer is
//! over [`WRITE_HIGH_WATER`] the loop stops reading requests and taking pushes, so a
//! client that does not read can only fill its own bounded push queue (then the
//! slow-consumer policy applies) and never makes the server buffer without bound; if its
//! socket takes nothing for `write_timeout_secs`, it is closed. A frame larger than
//! [`SMALL_FRAME_LEN`] is read only once the connection holds its length from the
//! server-wide [`ByteBudget`](crate::budget::ByteBudget).

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
use tokio::io::{AsyncWrite, AsyncWriteExt};

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Settings, SMALL_FRAME_LEN};
use crate::queue::{Batch, Push, PushQueue};
use crate::server::Shared;
use crate::stats::Stats;

/// Above this many buffered output bytes, stop reading requests and taking pushes until
/// the socket drains.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Read-buffer space made available before each read.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing connection may take to flush its last replies.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames counted locally before they are added to the shared stats (and at close).
const STATS_BATCH: u64 = 64;
/// A drained batch buffer larger than this many pushes is released rather than kept.
const BATCH_KEEP: usize = 64;
/// A drained wake list larger than this many wakers is released rather than kept.
const WAKES_KEEP: usize = 1024;

/// A byte stream that can be split into borrowed read and write halves, so one task can
/// wait on both at once without locks.
pub trait Transport: Send + 'static {
    /// The read half.
    type Reader<'a>: ReadReady + Send
    where
        Self: 'a;
    /// The write half.
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Splits the stream.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

/// A read half that can wait for data without a buffer, so an idle connection holds no
/// read buffer at all: it is allocated when bytes arrive and released once they are
/// decoded.
pub trait ReadReady {
    /// Ready when a read would not block (data, EOF or an error). It keeps one waker
    /// slot in the socket's registration: no waiter list to join on every turn.
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    /// Reads what is available into `buf`'s spare capacity, without waiting.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
}

macro_rules! transport {
    ($stream:ty, $module:ident) => {
        impl Transport for $stream {
            type Reader<'a> = tokio::net::$module::ReadHalf<'a>;
            type Writer<'a> = tokio::net::$module::WriteHalf<'a>;
            fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
                self.split()
            }
        }

        impl ReadReady for tokio::net::$module::ReadHalf<'_> {
            fn poll_read_ready(
                &self,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                self.as_ref().poll_read_ready(cx)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                tokio::net::$module::ReadHalf::try_read_buf(self, buf)
            }
        }
    };
}

transport!(tokio::net::TcpStream, tcp);
transport!(tokio::net::UnixStream, unix);

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The client closed it.
    Eof,
    /// The client closed it in the middle of a frame.
    EofMidFrame(usize),
    /// No complete frame for `idle_timeout_secs`.
    Idle(u64),
    /// A frame still incomplete `frame_timeout_secs` after its first bytes.
    FrameTimeout {
        /// The timeout.
        secs: u64,
        /// Bytes of the frame received.
        received: usize,
        /// Its announced length, once its first 12 bytes were judged.
        length: Option<usize>,
    },
    /// The socket took none of the pending output for `write_timeout_secs`.
    WriteTimeout {
        /// The timeout.
        secs: u64,
        /// Bytes waiting to be written.
        pending: usize,
    },
    /// A header that breaks the protocol; the stream cannot go on.
    Protocol(ProtoError),
    /// A malformed subscribe (answered, then closed).
    MalformedSubscribe,
    /// Its push queue was full under `slow_consumer = "disconnect"`.
    SlowConsumer,
    /// Its session key has sealed as many bodies as its nonces allow.
    KeyExhausted,
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
            Close::FrameTimeout {
                secs,
                received,
                length: Some(length),
            } => write!(
                f,
                "frame timeout: {received} of {length} bytes after {secs} s (frame_timeout_secs)"
            ),
            Close::FrameTimeout {
                secs,
                received,
                length: None,
            } => write!(
                f,
                "frame timeout: {received} bytes of a header after {secs} s (frame_timeout_secs)"
            ),
            Close::WriteTimeout { secs, pending } => write!(
                f,
                "write timeout: the socket took none of {pending} pending bytes in {secs} s \
                 (write_timeout_secs)"
            ),
            Close::Protocol(e) => write!(f, "protocol error: {e}"),
            Close::MalformedSubscribe => f.write_str("malformed subscribe"),
            Close::SlowConsumer => {
                f.write_str("slow consumer: push queue full (slow_consumer = \"disconnect\")")
            }
            Close::KeyExhausted => {
                f.write_str("session key exhausted: the client must exchange a new key")
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
    wants: monitor_proto::Wants,
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    peer: String,
    settings: Arc<Settings>,
    settings_rx: watch::Receiver<Arc<Settings>>,
    codec: MessageCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    subscription: Option<Subscription>,
    /// This connection's push queue, once it has subscribed; a new one per subscribe.
    queue: Option<Arc<PushQueue>>,
    /// Pushes taken from the queue and not yet encoded, oldest first.
    batch: Batch,
    /// Subscribers to wake once the reports of this read are all published.
    wakes: Vec<std::task::Waker>,
    reported: bool,
    uuid: Option<Uuid>,
    frames_in: u64,
    /// Frames written to the socket (not merely encoded).
    frames_out: u64,
    /// The part of `frames_in` / `frames_out` already added to the shared stats.
    frames_in_counted: u64,
    frames_out_counted: u64,
    /// Bytes of the frame at the head of `wbuf` still to write, when a write ended inside
    /// it (0: `wbuf` starts at a frame boundary). Frames are counted as they are written.
    wbuf_head_rest: usize,
    last_frame: Instant,
    /// When the incomplete frame in `rbuf` began arriving.
    partial_since: Option<Instant>,
    /// When the socket last took bytes while output was pending (or when output became
    /// pending).
    write_since: Option<Instant>,
    /// Bytes of the `max_buffered_bytes` budget this connection holds for the large frame
    /// it is reading.
    budget_held: usize,
    /// The length of a large frame this connection may not read until the budget has it.
    budget_wanted: Option<usize>,
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
    let mut conn = Conn::new(shared, peer, started);
    debug!(peer = %conn.peer, id = conn.id, "connection opened");
    let reason = conn.run(&mut stream, &token).await;
    conn.flush_stats();
    match &reason {
        Close::FrameTimeout { .. } => Stats::add(&conn.shared.stats.frame_timeouts, 1),
        Close::WriteTimeout { .. } => Stats::add(&conn.shared.stats.write_timeouts, 1),
        _ => {}
    }
    let role = match (conn.subscription.is_some(), conn.reported) {
        (true, true) => "subscriber+reporter",
        (true, false) => "subscriber",
        (false, true) => "reporter",
        (false, false) => "none",
    };
    let uuid = conn.uuid.map_or_else(|| "-".to_owned(), |u| u.to_string());
    let duration_ms = started.elapsed().as_millis() as u64;
    // Encoded but never written: the drain deadline passed, or the socket failed.
    let frames_unsent = conn.unwritten_frames();
    match &reason {
        Close::Protocol(_)
        | Close::MalformedSubscribe
        | Close::SlowConsumer
        | Close::Idle(_)
        | Close::FrameTimeout { .. }
        | Close::WriteTimeout { .. }
        | Close::EofMidFrame(_) => warn!(
            peer = %conn.peer, uuid = %uuid, role, duration_ms, frames_in = conn.frames_in,
            frames_out = conn.frames_out, frames_unsent, reason = %reason, "connection closed"
        ),
        _ => info!(
            peer = %conn.peer, uuid = %uuid, role, duration_ms, frames_in = conn.frames_in,
            frames_out = conn.frames_out, frames_unsent, reason = %reason, "connection closed"
        ),
    }
}

impl Drop for Conn {
    /// However the task ends (a panic included), the hub and the budget get back what
    /// this connection held.
    fn drop(&mut self) {
        // Only subscribers change the hub: connections that never subscribed come and go
        // without touching it.
        if self.queue.is_some() {
            self.shared.hub.unsubscribe(self.id);
        }
        self.shared
            .budget
            .give_back(std::mem::take(&mut self.budget_held));
    }
}

/// Waits until `batch` holds pushes (`true`) or the queue is closed and drained
/// (`false`); never, if this connection has not subscribed.
async fn take_pushes(queue: &Option<Arc<PushQueue>>, batch: &mut Batch) -> bool {
    match queue {
        Some(queue) => std::future::poll_fn(|cx| queue.poll_take(cx, batch)).await,
        None => std::future::pending().await,
    }
}

/// One write attempt that does not wait: `None` if the socket is not writable now. The
/// loop's next turn polls the write again with the task's own waker, so that the no-op
/// waker left here is never the one the task waits on.
fn write_now<W: AsyncWrite + Unpin>(writer: &mut W, buf: &[u8]) -> Option<io::Result<usize>> {
    if buf.is_empty() {
        return None;
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(writer).poll_write(&mut cx, buf) {
        std::task::Poll::Ready(result) => Some(result),
        std::task::Poll::Pending => None,
    }
}

/// The length of the frame that starts at `at` in an encode buffer (bytes 4..8 of its
/// header), at least 1 so that a walk always moves on.
fn frame_len_at(buf: &[u8], at: usize) -> usize {
    buf.get(at + 4..at + 8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(buf.len().saturating_sub(at), |b| {
            u32::from_le_bytes(b) as usize
        })
        .max(1)
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
    fn new(shared: Arc<Shared>, peer: String, started: Instant) -> Conn {
        let id = shared.next_conn_id();
        let mut settings_rx = shared.settings_receiver();
        let settings = settings_rx.borrow_and_update().clone();
        let codec = settings.codec_builder().message_codec(Role::Server);
        Conn {
            shared,
            id,
            peer,
            settings,
            settings_rx,
            codec,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            subscription: None,
            queue: None,
            batch: Batch::default(),
            wakes: Vec::new(),
            reported: false,
            uuid: None,
            frames_in: 0,
            frames_out: 0,
            frames_in_counted: 0,
            frames_out_counted: 0,
            wbuf_head_rest: 0,
            last_frame: started,
            partial_since: None,
            write_since: None,
            budget_held: 0,
            budget_wanted: None,
            closing: None,
        }
    }

    async fn run<T: Transport>(&mut self, stream: &mut T, token: &CancellationToken) -> Close {
        let (reader, mut writer) = stream.halves();
        // One timer for every deadline of the connection (idle, incomplete frame, stalled
        // write): armed at the earliest, and checked when it fires.
        let mut armed = self.next_deadline();
        let timer = sleep_until(armed);
        // Made once: every connection waits on the same token, and a fresh `cancelled()`
        // per turn would join (and leave) its shared waiter list each time.
        let cancelled = token.cancelled();
        let shared = Arc::clone(&self.shared);
        tokio::pin!(timer, cancelled);
        let reason = loop {
            if let Some(reason) = self.closing.take() {
                break reason;
            }
            self.refresh_settings();
            if self.budget_wanted.is_none()
                && self.wbuf.len() < WRITE_HIGH_WATER
                && self.rbuf.len() >= monitor_proto::HEADER_LEN
            {
                // Frames left undecoded while the write buffer was full (see `on_read`);
                // a partial frame is found incomplete at once.
                self.on_read();
                if self.closing.is_some() {
                    continue;
                }
            }
            if !self.wbuf.is_empty() && self.write_since.is_none() {
                self.write_since = Some(Instant::now());
            }
            let due = self.next_deadline();
            if due < armed {
                armed = due;
                timer.as_mut().reset(due);
            }
            // Reads only when every complete frame read so far has been handled, and
            // when a large frame in progress has its share of the budget.
            let room = self.wbuf.len() < WRITE_HIGH_WATER;
            let wanted = self.budget_wanted;
            tokio::select! {
                biased;
                () = &mut cancelled => {
                    // Boxed: shutdown-only state should not make every idle task bigger.
                    Box::pin(self.drain(&mut writer)).await;
                    return Close::Shutdown;
                }
                // `write`, not `write_buf`: the buffer is one slice, and plain write(2)
                // skips writev's iovec handling on every flush.
                written = tokio::io::AsyncWriteExt::write(&mut writer, &self.wbuf), if !self.wbuf.is_empty() => {
                    if let Some(reason) = self.wrote(written) {
                        break reason;
                    }
                }
                ready = std::future::poll_fn(|cx| reader.poll_read_ready(cx)), if room && wanted.is_none() => {
                    if let Err(e) = ready {
                        break Close::Io(e);
                    }
                    if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                    match reader.try_read_buf(&mut self.rbuf) {
                        Ok(0) if self.rbuf.is_empty() => break Close::Eof,
                        Ok(0) => break Close::EofMidFrame(self.rbuf.len()),
                        Ok(_) => self.on_read(),
                        // Readiness can be stale (a new socket reports it once): keep no
                        // buffer for a read that found nothing.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if self.rbuf.is_empty() {
                                self.rbuf = BytesMut::new();
                            }
                        }
                        Err(e) => break Close::Io(e),
                    }
                },
                () = shared.budget.take(wanted.unwrap_or(0)), if wanted.is_some() => {
                    self.budget_granted(wanted.unwrap_or(0));
                }
                more = take_pushes(&self.queue, &mut self.batch), if room => {
                    if !more {
                        break Close::SlowConsumer;
                    }
                    self.encode_batch();
                    // A batch almost always fits in the socket: writing it in this turn
                    // saves the loop a round of polling every other branch again.
                    if let Some(reason) = write_now(&mut writer, &self.wbuf).and_then(|w| self.wrote(w)) {
                        break reason;
                    }
                }
                () = &mut timer => {
                    self.flush_stats();
                    if let Some(reason) = self.expired(Instant::now()) {
                        break reason;
                    }
                    armed = self.next_deadline();
                    timer.as_mut().reset(armed);
                }
            }
        };
        Box::pin(self.finish(&mut writer, &reason)).await;
        reason
    }

    /// Last words (an error reply before a close) are worth a bounded wait.
    async fn finish<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, reason: &Close) {
        let deadline = Instant::now() + CLOSE_FLUSH_TIMEOUT;
        if !matches!(reason, Close::Io(_) | Close::WriteTimeout { .. }) {
            self.write_all_until(writer, deadline).await;
        }
        let _ = tokio::time::timeout_at(deadline, writer.shutdown()).await;
    }

    /// Writes `wbuf` until it is empty, the deadline passes or the socket fails, counting
    /// the frames written; whatever is left stays in `wbuf` (see
    /// [`Conn::unwritten_frames`]).
    async fn write_all_until<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, deadline: Instant) {
        while !self.wbuf.is_empty() {
            let written = tokio::time::timeout_at(deadline, writer.write(&self.wbuf)).await;
            match written {
                Ok(Ok(n)) if n > 0 => self.advance_written(n),
                _ => return,
            }
        }
    }

    /// The earliest of the connection's deadlines.
    fn next_deadline(&self) -> Instant {
        let s = &self.settings;
        let mut due = self.last_frame + Duration::from_secs(s.idle_timeout_secs);
        if let Some(since) = self.partial_since {
            due = due.min(since + Duration::from_secs(s.frame_timeout_secs));
        }
        if let Some(since) = self.write_since {
            due = due.min(since + Duration::from_secs(s.write_timeout_secs));
        }
        due
    }

    /// The deadline that has passed at `now`, if one has.
    fn expired(&self, now: Instant) -> Option<Close> {
        let s = &self.settings;
        if let Some(since) = self.write_since {
            if !self.wbuf.is_empty() && now >= since + Duration::from_secs(s.write_timeout_secs) {
                return Some(Close::WriteTimeout {
                    secs: s.write_timeout_secs,
                    pending: self.wbuf.len(),
                });
            }
        }
        if let Some(since) = self.partial_since {
            if now >= since + Duration::from_secs(s.frame_timeout_secs) {
                return Some(Close::FrameTimeout {
                    secs: s.frame_timeout_secs,
                    received: self.rbuf.len(),
                    length: self.codec.frames().pending_frame_len(),
                });
            }
        }
        if now >= self.last_frame + Duration::from_secs(s.idle_timeout_secs) {
            return Some(Close::Idle(s.idle_timeout_secs));
        }
        None
    }

    /// Applies a reloaded configuration, if there is one.
    ///
    /// A reload takes effect at this connection's next event: a frame (checked before it
    /// is handled), a push, or its timer. Checking is one atomic load, and an idle task
    /// carries no waiting future for it.
    fn refresh_settings(&mut self) {
        if !self.settings_rx.has_changed().unwrap_or(false) {
            return;
        }
        let settings = self.settings_rx.borrow_and_update().clone();
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
        if let Some(queue) = &self.queue {
            queue.close();
            queue.take_now(&mut self.batch);
        }
        while let Some(push) = self.batch.pop_front() {
            self.encode_push(&push);
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                self.write_all_until(writer, deadline).await;
                if !self.wbuf.is_empty() {
                    return;
                }
            }
        }
        self.write_all_until(writer, deadline).await;
        let _ = tokio::time::timeout_at(deadline, writer.shutdown()).await;
    }

    /// Decodes and handles the buffered frames, until the write buffer is over
    /// [`WRITE_HIGH_WATER`]: the rest wait in the read buffer until the peer has read
    /// enough (see the top of [`Conn::run`]), so one read full of requests cannot grow
    /// the replies past the bound. A large frame that is not complete asks for its share
    /// of the budget before more of it is read.
    fn on_read(&mut self) {
        self.refresh_settings();
        let before = self.frames_in;
        while self.closing.is_none() && self.wbuf.len() < WRITE_HIGH_WATER {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(received)) => {
                    self.frames_in += 1;
                    self.frame_done();
                    self.handle(received);
                }
                Ok(None) => {
                    self.frame_incomplete(before);
                    break;
                }
                Err(e) => {
                    Stats::add(&self.shared.stats.protocol_errors, 1);
                    self.closing = Some(Close::Protocol(e));
                    break;
                }
            }
        }
        if self.frames_in > before {
            self.last_frame = Instant::now();
        }
        // Each subscriber is woken once for all the reports of this read, and writes them
        // in one go.
        self.wakes.drain(..).for_each(std::task::Waker::wake);
        if self.wakes.capacity() > WAKES_KEEP {
            self.wakes = Vec::new();
        }
        // Between bursts a connection keeps no read buffer (see `ReadReady`).
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.partial_since = None;
        }
    }

    /// A frame was decoded: the budget it held goes back, and a large read buffer is not
    /// kept alive by the few bytes of the next frame it may hold.
    fn frame_done(&mut self) {
        self.partial_since = None;
        if self.budget_held > 0 {
            self.shared
                .budget
                .give_back(std::mem::take(&mut self.budget_held));
            if self.rbuf.capacity() > 2 * SMALL_FRAME_LEN {
                self.rbuf = BytesMut::from(&self.rbuf[..]);
            }
        }
    }

    /// The read buffer ends in an incomplete frame: start its clock, and if it is large,
    /// take its length from the budget (or wait for it, not reading meanwhile).
    fn frame_incomplete(&mut self, frames_before: u64) {
        if self.rbuf.is_empty() {
            return;
        }
        if self.partial_since.is_none() || self.frames_in > frames_before {
            self.partial_since = Some(Instant::now());
        }
        let Some(length) = self.codec.frames().pending_frame_len() else {
            return;
        };
        if length <= SMALL_FRAME_LEN || self.budget_held > 0 {
            return;
        }
        if self.shared.budget.try_take(length) {
            self.budget_granted(length);
        } else {
            debug!(peer = %self.peer, length, "frame waits for max_buffered_bytes");
            Stats::add(&self.shared.stats.budget_waits, 1);
            self.budget_wanted = Some(length);
        }
    }

    /// The budget gave this connection `length` bytes for the frame it is reading.
    fn budget_granted(&mut self, length: usize) {
        self.budget_wanted = None;
        self.budget_held = length;
        self.rbuf.reserve(length.saturating_sub(self.rbuf.len()));
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
        if let Err(e) = self.codec.encode_message(out, &mut self.wbuf) {
            // An oversized reply (the key was checked first), or a key with no nonce left:
            // say so, in a plaintext reply.
            warn!(peer = %self.peer, error = %e, "reply not sent");
            if let ProtoError::KeyExhausted { .. } = e {
                self.closing.get_or_insert(Close::KeyExhausted);
            }
            let out = Outgoing::new(
                msg_type,
                request.uuid,
                reply::error(&format!("reply not sent: {e}")),
            );
            let _ = self.codec.encode_message(out, &mut self.wbuf);
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
        let limits = self.settings.topic_limits();
        let parsed = body.and_then(|b| Subscribe::parse(b, &limits));
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
        // A new queue for the new subscription: the pushes the old one matched, queued or
        // taken and not yet encoded, are dropped here (and the hub discards the old queue
        // when it replaces it), so none of them follows this acknowledgement. Pushes
        // already encoded come before it. This is what makes a re-subscribe a barrier.
        self.batch = Batch::default();
        let queue = PushQueue::bounded(
            self.settings.subscriber_queue,
            self.settings.subscriber_queue_bytes,
        );
        self.queue = Some(Arc::clone(&queue));
        self.subscription = Some(Subscription {
            uuid: header.uuid,
            wants: monitor_proto::Wants {
                compress: header.compress,
                encrypt: header.cipher,
            },
        });
        // Ack first: this task writes it before any push it takes from the queue.
        self.send(
            MsgType::Push,
            header,
            reply::success_raw(&subscribe.raw),
            header.cipher,
        );
        self.shared.hub.subscribe(self.id, subscribe.topics, queue);
    }

    fn report(&mut self, header: &Header, body: Result<Bytes, ProtoError>) {
        let parsed = body.and_then(Report::parse);
        let json = match parsed.map(|report| (self.push_size_check(&report), report)) {
            Err(e) => reply::error(&malformed(&e)),
            Ok((Err(too_large), _)) => reply::error(&too_large),
            Ok((Ok(()), report)) => {
                self.reported = true;
                let delivered = self.shared.hub.publish(
                    &report,
                    self.settings.compress_threshold,
                    self.settings.slow_consumer,
                    &self.shared.stats,
                    &mut self.wakes,
                );
                reply::report_ack(delivered)
            }
        };
        self.send(MsgType::ReportAck, header, json, header.cipher);
    }

    /// Refuses a report whose push frame would exceed `max_frame_len` in the form it is
    /// sent in: every frame this server sends respects the limit its peers are configured
    /// with. A push body over `compress_threshold` always goes out compressed, so its
    /// compressed length is what counts; otherwise its plain length. Room for encryption
    /// is always allowed for, so that a report is refused the same way whoever is
    /// subscribed, rather than acknowledged and then dropped for an encrypting subscriber.
    ///
    /// Compressing costs, so it is done here only when the answer depends on it: when even
    /// zlib's worst-case expansion of the body would fit, the compressed form surely does.
    fn push_size_check(&self, report: &Report) -> Result<(), String> {
        let max = self.settings.max_frame_len as usize;
        let overhead = monitor_proto::HEADER_LEN + monitor_proto::layer::crypto::OVERHEAD;
        let json_len = reply::push_len(report.raw.len());
        if json_len <= self.settings.compress_threshold {
            return if json_len + overhead <= max {
                Ok(())
            } else {
                Err(format!(
                    "report too large: its push of {} bytes would exceed max_frame_len {max}",
                    json_len + overhead
                ))
            };
        }
        let worst_deflated = json_len + json_len / 1000 + 64;
        if worst_deflated + overhead <= max {
            return Ok(());
        }
        let compressed = monitor_proto::layer::compress::deflate(&reply::push(&report.raw));
        if compressed.len() + overhead <= max {
            Ok(())
        } else {
            Err(format!(
                "report too large: its compressed push of {} bytes would exceed max_frame_len \
                 {max}",
                compressed.len() + overhead
            ))
        }
    }

    /// Encodes taken pushes, oldest first, until the batch is empty or the write buffer
    /// is full; the rest wait in the batch, in order.
    fn encode_batch(&mut self) {
        if self.wbuf.capacity() == 0 {
            // One allocation for the batch instead of doubling up from nothing.
            let frame = self
                .batch
                .front()
                .map_or(0, |p| monitor_proto::HEADER_LEN + p.json().len());
            self.wbuf.reserve(
                self.batch
                    .len()
                    .saturating_mul(frame)
                    .clamp(4096, WRITE_HIGH_WATER),
            );
        }
        while self.wbuf.len() < WRITE_HIGH_WATER {
            let Some(push) = self.batch.pop_front() else {
                break;
            };
            self.encode_push(&push);
        }
        self.batch.shrink(BATCH_KEEP);
    }

    fn encode_push(&mut self, push: &Push) {
        let Some(sub) = self.subscription else { return };
        let json = push.json();
        // The shared compressed form, made once per report, only if this push needs it.
        let compressed = self
            .codec
            .compresses(sub.wants.compress, json.len())
            .then(|| &push.compressed()[..]);
        if let Err(e) = self.codec.encode_body(
            MsgType::Push,
            sub.uuid,
            sub.wants,
            json,
            compressed,
            &mut self.wbuf,
        ) {
            if let ProtoError::KeyExhausted { .. } = e {
                // No nonce is left under this key; the client reconnects and exchanges a
                // new one.
                self.closing.get_or_insert(Close::KeyExhausted);
            }
            Stats::add(&self.shared.stats.pushes_dropped, 1);
            debug!(peer = %self.peer, error = %e, "push not sent");
        }
    }

    /// Accounts for one write of the write buffer; the reason to close if it failed.
    fn wrote(&mut self, written: io::Result<usize>) -> Option<Close> {
        match written {
            Ok(0) => Some(Close::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.advance_written(n);
                None
            }
            Err(e) => Some(Close::Io(e)),
        }
    }

    /// `n` bytes of `wbuf` were written: counts the frames they completed, drops them, and
    /// restarts the write-stall clock.
    fn advance_written(&mut self, n: usize) {
        // Walk the frame boundaries inside the written part: `wbuf` holds whole frames
        // after `wbuf_head_rest`, each announcing its length at bytes 4..8.
        let mut end = if self.wbuf_head_rest > 0 {
            self.wbuf_head_rest
        } else {
            frame_len_at(&self.wbuf, 0)
        };
        while end <= n {
            self.frames_out += 1;
            if end == n {
                break;
            }
            end += frame_len_at(&self.wbuf, end);
        }
        self.wbuf_head_rest = end.saturating_sub(n);
        bytes::Buf::advance(&mut self.wbuf, n);
        self.write_since = (!self.wbuf.is_empty()).then(Instant::now);
        self.after_write();
    }

    /// Frames encoded and not (entirely) written.
    fn unwritten_frames(&self) -> u64 {
        let mut count = 0;
        let mut at = self.wbuf_head_rest;
        if at > 0 {
            count += 1;
        }
        while at < self.wbuf.len() {
            count += 1;
            at += frame_len_at(&self.wbuf, at);
        }
        count
    }

    /// Once everything is written, the write buffer is released (an idle connection holds
    /// no buffers), and the counts go to the shared stats every [`STATS_BATCH`] frames:
    /// shared counters touched by every write would bounce between cores.
    fn after_write(&mut self) {
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
            if self.frames_out - self.frames_out_counted >= STATS_BATCH
                || self.frames_in - self.frames_in_counted >= STATS_BATCH
            {
                self.flush_stats();
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_proto::{Frame, FrameCodec, Header, HEADER_LEN};
    use tokio_util::codec::{Decoder, Encoder};

    /// `count` heartbeats as one read would deliver them.
    fn heartbeats(count: usize) -> BytesMut {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for _ in 0..count {
            let header = Header::new(MsgType::Heartbeat, Uuid([b'h'; 33]));
            codec
                .encode(Frame::new(header, Bytes::new()), &mut wire)
                .unwrap();
        }
        wire
    }

    /// Frames are counted when their last byte is written, whatever the write sizes; what
    /// is left at the close is counted as unsent (it used to be counted as sent).
    #[test]
    fn frames_are_counted_as_written_and_the_rest_as_unsent() {
        let shared = Arc::new(Shared::new(Settings::default()));
        for chunk in [1usize, 7, 44, 45, 46, 90, 1000] {
            let mut conn = Conn::new(Arc::clone(&shared), "test".into(), Instant::now());
            conn.wbuf = heartbeats(20); // 20 frames of 45 bytes
            let total = conn.wbuf.len();
            let mut written = 0;
            while written + chunk <= total / 2 {
                conn.advance_written(chunk);
                written += chunk;
                assert_eq!(
                    conn.frames_out as usize,
                    written / HEADER_LEN,
                    "chunk {chunk}"
                );
            }
            assert_eq!(
                conn.frames_out + conn.unwritten_frames(),
                20,
                "chunk {chunk}: written {written}"
            );
            conn.advance_written(total - written);
            assert_eq!((conn.frames_out, conn.unwritten_frames()), (20, 0));
        }
    }

    #[test]
    fn decoding_stops_at_the_write_high_water_mark_and_resumes_once_written() {
        const COUNT: usize = 50_000; // 2.2 MB of requests, several MB of replies
        let shared = Arc::new(Shared::new(Settings::default()));
        let mut conn = Conn::new(shared, "test".into(), Instant::now());
        conn.rbuf = heartbeats(COUNT);
        let largest_reply = 512;

        conn.on_read();
        assert!(conn.closing.is_none());
        assert!(
            (WRITE_HIGH_WATER..WRITE_HIGH_WATER + largest_reply).contains(&conn.wbuf.len()),
            "write buffer {} bytes",
            conn.wbuf.len()
        );
        let first = conn.frames_in;
        assert!(
            first > 0 && (first as usize) < COUNT,
            "{first} decoded at once"
        );

        // The peer reads everything written so far: decoding carries on from there, and
        // every request is answered exactly once, in order.
        let mut replies = 0;
        let mut client = FrameCodec::new();
        let mut rounds = 0;
        while !conn.rbuf.is_empty() {
            rounds += 1;
            assert!(rounds <= COUNT, "no progress");
            while let Some(frame) = client.decode(&mut conn.wbuf).unwrap() {
                assert_eq!(frame.header.msg_type, MsgType::HeartbeatReply);
                replies += 1;
            }
            assert!(conn.wbuf.len() < HEADER_LEN);
            conn.on_read();
            assert!(conn.wbuf.len() < WRITE_HIGH_WATER + largest_reply);
        }
        while client.decode(&mut conn.wbuf).unwrap().is_some() {
            replies += 1;
        }
        assert_eq!((conn.frames_in as usize, replies), (COUNT, COUNT));
        assert!(rounds > 1);
    }
}
