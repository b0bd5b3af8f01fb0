//! One connection over the binary protocol: a single task that owns the socket, its
//! buffers and its timers, decodes requests and hands each to its handler (`cmd`), encodes
//! the answers and the subscription's pushes, and enforces the connection's deadlines
//! (idle, incomplete frame, stalled write), all in one `select!` loop with one timer.
//!
//! Reads and writes never wait on each other: replies and pushes are encoded into a write
//! buffer that the loop flushes whenever the socket is writable. When the write buffer is
//! over [`WRITE_HIGH_WATER`] the loop stops reading requests and taking pushes, so a
//! client that does not read can only fill its own bounded push queue (then the
//! slow-consumer policy applies) and never makes the server buffer without bound; if its
//! socket takes nothing for `write_timeout_secs`, it is closed. A frame larger than
//! [`SMALL_FRAME_LEN`](crate::config::SMALL_FRAME_LEN) is read only once the connection
//! holds its length from the server-wide [`ByteBudget`](crate::budget::ByteBudget).

mod close;
mod outbuf;
mod read;
mod transport;
mod write;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use monitor_proto::ServerCodec;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

pub(crate) use close::Close;
use outbuf::OutBuf;
pub use transport::{ReadReady, Transport};
use write::write_now;

use crate::config::Settings;
use crate::hub::Wakes;
use crate::queue::{Batch, PushQueue};
use crate::registry::{ConnEntry, Origin, Stop};
use crate::session::Session;
use crate::state::{ConnSlot, Shared};
use crate::stats::{FrameTally, Stats};

/// Above this many buffered output bytes, stop reading requests and taking pushes until
/// the socket drains (the protocol crate's, which the client uses too).
use monitor_proto::codec::WRITE_HIGH_WATER;
/// Read-buffer space made available before each read.
const READ_CHUNK: usize = 16 * 1024;

struct Conn {
    shared: Arc<Shared>,
    /// This connection in the server's registry (its peer, its kill switch, its grant).
    entry: Arc<ConnEntry>,
    /// Its place under `max_connections`, given back when it is dropped.
    _slot: ConnSlot,
    settings: Arc<Settings>,
    settings_rx: watch::Receiver<Arc<Settings>>,
    codec: ServerCodec,
    rbuf: BytesMut,
    out: OutBuf,
    session: Session,
    /// Subscribers to wake once the reports of this read are all published; made at the
    /// first report (most connections never report).
    wakes: Option<Box<Wakes>>,
    frames_in: u64,
    bytes_in: u64,
    /// Frames received and not yet added to the shared stats, by type.
    in_tally: FrameTally,
    last_frame: Instant,
    /// When the incomplete frame in `rbuf` began arriving.
    partial_since: Option<Instant>,
    /// Pushes encoded, for sampling their latency (one in `LATENCY_SAMPLE`).
    pushes_encoded: u32,
    /// The arrival of a sampled push in the write buffer: observed once it is written.
    sampled: Option<Instant>,
    /// Bytes of the `max_buffered_bytes` budget this connection holds for the large frame
    /// it is reading.
    budget_held: usize,
    /// The length of a large frame this connection may not read until the budget has it
    /// (0: none; such frames are over 64 KiB).
    budget_wanted: usize,
    /// Why the loop is to stop, once it is (boxed: rare, and `Close` is large).
    closing: Option<Box<Close>>,
}

/// Serves one accepted connection until it closes; logs its close line.
///
/// The connection is set up (and registered) here, before its task starts, and the
/// returned future holds only the connection and its stream: what an async block
/// captures stays in its task for the task's life, and at 10,000 idle connections every
/// byte of a task counts.
pub(crate) fn serve<T: Transport>(
    mut stream: T,
    origin: Origin,
    shared: Arc<Shared>,
    slot: ConnSlot,
) -> impl std::future::Future<Output = ()> + Send {
    let mut conn = Conn::new(shared, origin, Instant::now(), slot);
    async move {
        debug!(peer = %conn.entry.origin.peer, id = conn.entry.id, "connection opened");
        let reason = conn.run(&mut stream).await;
        conn.closed(&reason);
    }
}

impl Conn {
    /// The close log line, and the counters a close adds to.
    fn closed(&mut self, reason: &Close) {
        let conn = self;
        conn.flush_stats();
        match reason {
            Close::FrameTimeout { .. } => Stats::add(&conn.shared.stats.frame_timeouts, 1),
            Close::WriteTimeout { .. } => Stats::add(&conn.shared.stats.write_timeouts, 1),
            Close::Idle(_) => Stats::add(&conn.shared.stats.idle_timeouts, 1),
            _ => {}
        }
        let role = conn.session.role();
        let uuid = conn
            .entry
            .uuid()
            .map_or_else(|| "-".to_owned(), |u| u.to_string());
        let duration_ms = conn
            .entry
            .since
            .elapsed()
            .map_or(0, |d| d.as_millis() as u64);
        let frames_in = conn.frames_in;
        let frames_out = conn.out.frames_written();
        // Encoded but never written: the drain deadline passed, or the socket failed.
        let frames_unsent = conn.out.unwritten_frames();
        if reason.is_peer_fault() {
            warn!(
                peer = %conn.entry.origin.peer, uuid = %uuid, role, duration_ms, frames_in, frames_out,
                frames_unsent, reason = %reason, "connection closed"
            );
        } else {
            info!(
                peer = %conn.entry.origin.peer, uuid = %uuid, role, duration_ms, frames_in, frames_out,
                frames_unsent, reason = %reason, "connection closed"
            );
        }
    }
}

impl Drop for Conn {
    /// However the task ends (a panic included), the hub and the budget get back what
    /// this connection held.
    fn drop(&mut self) {
        // Only subscribers change the hub: connections that never subscribed come and go
        // without touching it.
        if self.session.subscription.is_some() {
            self.shared.hub.unsubscribe(self.entry.id);
        }
        self.shared.registry.remove(self.entry.id);
        self.shared
            .budget
            .give_back(std::mem::take(&mut self.budget_held));
    }
}

/// Waits until `batch` holds pushes (`true`) or the queue is closed and drained
/// (`false`); never, if this connection has not subscribed.
async fn take_pushes(queue: Option<&Arc<PushQueue>>, batch: &mut Batch) -> bool {
    match queue {
        Some(queue) => std::future::poll_fn(|cx| queue.poll_take(cx, batch)).await,
        None => std::future::pending().await,
    }
}

/// Waits for the budget future, if there is one (the select! branch is off otherwise).
async fn poll_budget(wait: &mut Option<Pin<Box<dyn Future<Output = usize> + Send>>>) -> usize {
    match wait {
        Some(wait) => wait.await,
        None => std::future::pending().await,
    }
}

impl Conn {
    fn new(shared: Arc<Shared>, origin: Origin, started: Instant, slot: ConnSlot) -> Conn {
        let id = shared.next_conn_id();
        let mut settings_rx = shared.settings_receiver();
        let settings = settings_rx.borrow_and_update().clone();
        let codec = settings.codec_builder().new_codec();
        let client_cert = origin.client_cert;
        let entry = shared.registry.add(id, origin);
        let mut session = Session::new();
        if client_cert {
            // A certificate the listener verified authenticates the connection by itself
            // (spec §6), with what `[auth.mtls]` grants.
            if let Some(grant) = shared.auth().mtls() {
                Stats::add(&shared.stats.auth_granted, 1);
                entry.set_grant(Some(Arc::clone(grant)));
                session.grant = Some(Arc::clone(grant));
            }
        }
        Conn {
            shared,
            entry,
            _slot: slot,
            settings,
            settings_rx,
            codec,
            rbuf: BytesMut::new(),
            out: OutBuf::default(),
            session,
            wakes: None,
            frames_in: 0,
            bytes_in: 0,
            in_tally: FrameTally::default(),
            last_frame: started,
            partial_since: None,
            pushes_encoded: 0,
            sampled: None,
            budget_held: 0,
            budget_wanted: 0,
            closing: None,
        }
    }

    async fn run<T: Transport>(&mut self, stream: &mut T) -> Close {
        let (mut reader, mut writer) = stream.halves();
        // One timer for every deadline of the connection (idle, incomplete frame, stalled
        // write): armed at the earliest, and checked when it fires.
        let mut armed = self.next_deadline();
        let timer = sleep_until(armed);
        // Made once: a fresh future per turn would join (and leave) a waiter list each
        // time. One switch stops the connection for a shutdown or a kill.
        let entry = Arc::clone(&self.entry);
        let stopped = entry.stopped();
        tokio::pin!(timer, stopped);
        // Made only while a large frame waits for the budget (rare), so that every
        // connection's task does not carry the waiting future's room.
        let mut budget_wait: Option<Pin<Box<dyn Future<Output = usize> + Send>>> = None;
        let reason = loop {
            if let Some(reason) = self.closing.take() {
                break *reason;
            }
            self.refresh_settings();
            if self.budget_wanted == 0
                && self.out.len() < WRITE_HIGH_WATER
                && self.rbuf.len() >= monitor_proto::HEADER_LEN
            {
                // Frames left undecoded while the write buffer was full (see `on_read`);
                // a partial frame is found incomplete at once.
                self.on_read();
                if self.closing.is_some() {
                    continue;
                }
            }
            self.out.note_pending();
            let due = self.next_deadline();
            if due < armed {
                armed = due;
                timer.as_mut().reset(due);
            }
            // Reads only when every complete frame read so far has been handled, and
            // when a large frame in progress has its share of the budget.
            let room = self.out.len() < WRITE_HIGH_WATER;
            let wanted = (self.budget_wanted > 0).then_some(self.budget_wanted);
            if let (Some(length), None) = (wanted, &budget_wait) {
                let shared = Arc::clone(&self.shared);
                budget_wait = Some(Box::pin(async move {
                    shared.budget.take(length).await;
                    length
                }));
            }
            tokio::select! {
                biased;
                stop = &mut stopped => match stop {
                    Stop::Shutdown => {
                        // Boxed: shutdown-only state should not make every idle task
                        // bigger.
                        Box::pin(self.drain(&mut writer)).await;
                        return Close::Shutdown;
                    }
                    Stop::Kill(why) => break Close::Killed(why.into()),
                },
                // `write`, not `write_buf`: the buffer is one slice, and plain write(2)
                // skips writev's iovec handling on every flush.
                written = writer.write(self.out.bytes()), if !self.out.is_empty() => {
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
                        Ok(n) => {
                            self.bytes_in += n as u64;
                            self.on_read();
                        }
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
                length = poll_budget(&mut budget_wait), if budget_wait.is_some() => {
                    budget_wait = None;
                    self.budget_granted(length);
                }
                more = take_pushes(self.session.subscription.as_ref().map(|s| &s.queue), &mut self.session.batch), if room => {
                    if !more {
                        break Close::SlowConsumer;
                    }
                    self.encode_batch();
                    // A batch almost always fits in the socket: writing it in this turn
                    // saves the loop a round of polling every other branch again.
                    if let Some(reason) = write_now(&mut writer, self.out.bytes()).and_then(|w| self.wrote(w)) {
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

    /// The earliest of the connection's deadlines.
    fn next_deadline(&self) -> Instant {
        let s = &self.settings;
        let mut due = self.last_frame + Duration::from_secs(s.idle_timeout_secs);
        if let Some(since) = self.partial_since {
            due = due.min(since + Duration::from_secs(s.frame_timeout_secs));
        }
        if let Some(since) = self.out.stalled_since() {
            due = due.min(since + Duration::from_secs(s.write_timeout_secs));
        }
        due
    }

    /// The deadline that has passed at `now`, if one has.
    fn expired(&self, now: Instant) -> Option<Close> {
        let s = &self.settings;
        if let Some(since) = self.out.stalled_since() {
            if now >= since + Duration::from_secs(s.write_timeout_secs) {
                return Some(Close::WriteTimeout {
                    secs: s.write_timeout_secs,
                    pending: self.out.len(),
                });
            }
        }
        if let Some(since) = self.partial_since {
            if now >= since + Duration::from_secs(s.frame_timeout_secs) {
                return Some(Close::FrameTimeout {
                    secs: s.frame_timeout_secs,
                    received: self.rbuf.len(),
                    length: self.codec.pending_frame_len(),
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
        self.codec.set_max_frame_len(settings.max_frame_len);
        self.codec.set_max_inflated_len(settings.max_inflated_len);
        self.codec
            .set_compress_threshold(settings.compress_threshold);
        self.settings = settings;
    }
}

#[cfg(test)]
mod footprint {
    use super::*;
    use crate::registry::Kind;

    /// An idle connection's task is most of what it costs (10,000 idle subscribers held
    /// 2209 B each, 2026-11-30, docs/server.md). A future grows silently when a field or a
    /// pinned future is added to the loop; this says so at once. Raise the bound only with
    /// a new measurement of the idle footprint, in docs/server.md.
    #[test]
    fn a_connection_task_stays_small() {
        let shared = Arc::new(Shared::new(
            Settings::default(),
            &crate::config::AuthConfig::default(),
            Vec::new(),
            Vec::new(),
            Arc::default(),
            None,
        ));
        let origin = Origin {
            peer: "x".into(),
            listener: "l".into(),
            kind: Kind::Tcp,
            client_cert: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let s = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let slot = ConnSlot::unlimited(&shared);
            let task = serve(s, origin, Arc::clone(&shared), slot);
            let size = std::mem::size_of_val(&task);
            assert!(size <= 1024, "a connection's task is {size} bytes");
        });
    }
}
