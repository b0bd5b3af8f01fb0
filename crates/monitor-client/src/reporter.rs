//! The reporter: sends reports (type 7), matches their acknowledgements (type 8) in FIFO
//! order, keeps reports in a bounded buffer while disconnected, and reconnects.
//!
//! One background task owns the connection; [`Reporter`] handles (cheap to clone) hand it
//! reports through a bounded channel, which *is* the buffer: [`Reporter::send`] never
//! waits, it fails with [`Error::BufferFull`] when `buffer_size` reports are waiting.
//! Written reports wait for their acknowledgement in an in-flight queue of at most
//! `max_in_flight`; the server answers reports in order, so the first acknowledgement is
//! always the oldest report's.
//!
//! ```text
//! send() ─try_send─► [ buffer: mpsc, buffer_size ] ─► task ─► write ─► server
//!                                                     │
//!                              [ in flight: VecDeque, max_in_flight ] ◄─ type-8 acks, FIFO
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use monitor_proto::message::reply::{Reply, ReportAckData};
use monitor_proto::{MsgType, Received, Uuid, HEADER_LEN};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::config::{ClientConfig, Delivery};
use crate::connection::{
    self, connect_with_retry, describe_received, Connection, Handshake, Status,
};
use crate::error::{Error, Result};
use crate::supervise::{supervise, supervisor, TaskFailure};

/// Above this many encoded but unwritten bytes, stop taking reports until the socket
/// drains.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Reports taken from the buffer per wake-up.
const TAKE_BATCH: usize = 256;

/// The reporter's counters (see [`Reporter::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReporterStats {
    /// Reports taken by `send`/`report`.
    pub accepted: u64,
    /// Report frames written, re-sends included.
    pub written: u64,
    /// Reports acknowledged with `errCode: 0`.
    pub acked: u64,
    /// Reports refused by the server (`errCode: -1`, or an unreadable acknowledgement).
    pub refused: u64,
    /// Reports written again after a reconnection ([`Delivery::AtLeastOnce`]).
    pub resent: u64,
    /// Reports failed with [`Error::MaybeLost`] ([`Delivery::AtMostOnce`]).
    pub maybe_lost: u64,
    /// Reports failed because the reporter gave up or was closed.
    pub failed: u64,
    /// `send` calls refused with [`Error::BufferFull`].
    pub rejected_buffer_full: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Reports waiting to be written now.
    pub buffered: usize,
    /// Reports written and waiting for their acknowledgement now.
    pub in_flight: usize,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    written: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    resent: AtomicU64,
    maybe_lost: AtomicU64,
    failed: AtomicU64,
    rejected_buffer_full: AtomicU64,
    reconnects: AtomicU64,
    in_flight: AtomicUsize,
    /// Why the reporter stopped for good, once it has: `send` fails with it.
    gave_up: Mutex<Option<(u32, String)>>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// A report waiting to be written.
struct Item {
    body: Bytes,
    ack: oneshot::Sender<Result<u64>>,
}

enum Cmd {
    Report(Item),
    /// Answer once every report taken before this one is resolved.
    Flush(oneshot::Sender<Result<()>>),
}

/// The outcome of one report: resolves to the acknowledgement's `delivered` (the number
/// of subscribers it was queued for), or why it failed.
///
/// It waits as long as the reporter keeps the report (across reconnections); wrap it in
/// `tokio::time::timeout` for a bound, or use [`Reporter::report`]. Dropping it does not
/// withdraw the report.
#[must_use = "an AckFuture does nothing unless awaited; drop it to fire and forget"]
pub struct AckFuture {
    rx: oneshot::Receiver<Result<u64>>,
    failure: Arc<TaskFailure>,
    /// Once the task dropped the report unanswered (only a failed task does): why.
    why: Option<BoxFuture<'static, Error>>,
}

impl std::fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckFuture").finish_non_exhaustive()
    }
}

impl Future for AckFuture {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        if self.why.is_none() {
            match std::task::ready!(Pin::new(&mut self.rx).poll(cx)) {
                Ok(outcome) => return Poll::Ready(outcome),
                Err(_) => {
                    let failure = Arc::clone(&self.failure);
                    self.why = Some(Box::pin(async move { failure.why().await }));
                }
            }
        }
        match &mut self.why {
            Some(why) => why.as_mut().poll(cx).map(Err),
            None => Poll::Ready(Err(Error::Closed)),
        }
    }
}

/// Sends reports over a connection it keeps alive. Clones share the same connection and
/// buffer.
///
/// Reports go out in the order they were accepted, and each one's [`AckFuture`] resolves
/// with its own acknowledgement. While disconnected, up to `buffer_size` reports wait and
/// are sent, in order, once a new connection is up. Written reports whose
/// acknowledgement was lost with the connection follow the config's [`Delivery`]
/// (`docs/client.md` has the details).
///
/// Dropping every handle lets the task finish writing what is buffered while it is
/// connected; [`Reporter::close`] waits for that.
///
/// # Example
/// ```no_run
/// use monitor_client::{ClientConfig, Reporter};
///
/// # async fn run() -> Result<(), monitor_client::Error> {
/// let reporter = Reporter::connect(ClientConfig::new("127.0.0.1:9503".parse()?)).await?;
/// let delivered = reporter
///     .report(&serde_json::json!({"code": "host.health", "cpu": 12.5}))
///     .await?;
/// println!("queued for {delivered} subscribers");
/// // Pipelined: send now, await the acknowledgements later.
/// let acks: Vec<_> = (0..10)
///     .map(|i| reporter.send(&serde_json::json!({"code": "job.progress", "step": i})))
///     .collect::<Result<_, _>>()?;
/// for ack in acks {
///     ack.await?;
/// }
/// reporter.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Cmd>,
    counters: Arc<Counters>,
    status: watch::Receiver<Status>,
    uuid: Uuid,
    buffer_size: usize,
    ack_timeout: Duration,
    max_report_frame_len: u32,
    /// Why the task stopped, if it failed.
    failure: Arc<TaskFailure>,
    /// Cancels the task's reconnection once the last handle is gone.
    _alive: Arc<DropGuard>,
}

/// The reporter task's work, given the task's state and its first connection. A function
/// pointer only so that a test can supervise a body that panics.
type Body = for<'a> fn(&'a mut Task, Option<Connection>) -> BoxFuture<'a, ()>;

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Report(item) => write!(f, "Report({} bytes)", item.body.len()),
            Cmd::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Reporter {
    /// Connects (retrying per the config), exchanges keys if `config.encrypt`, checks the
    /// server answers a heartbeat, and starts the background task.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::Unreachable`] when `max_attempts`
    /// attempts failed; [`Error::KeyExchange`].
    pub async fn connect(config: ClientConfig) -> Result<Reporter> {
        config.validate()?;
        let (status_tx, _) = watch::channel(Status::Connecting {
            attempt: 1,
            last_error: None,
        });
        let (conn, _) = connect_with_retry(
            &config,
            &Handshake::Heartbeat,
            &status_tx,
            false,
            std::future::pending(),
        )
        .await?;
        status_tx.send_replace(Status::Connected { connections: 1 });
        Ok(Reporter::spawn(config, Some(conn), status_tx))
    }

    /// Starts the reporter without waiting for a connection: reports are buffered until
    /// the first connection is up (an agent that may start before its server).
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config.
    pub fn start(config: ClientConfig) -> Result<Reporter> {
        config.validate()?;
        let (status_tx, _) = watch::channel(Status::Connecting {
            attempt: 1,
            last_error: None,
        });
        Ok(Reporter::spawn(config, None, status_tx))
    }

    fn spawn(
        config: ClientConfig,
        conn: Option<Connection>,
        status: watch::Sender<Status>,
    ) -> Reporter {
        Reporter::spawn_with(config, conn, status, |task, conn| Box::pin(task.run(conn)))
    }

    /// Spawns the task with `body` as its work, supervised: if `body` panics, everything
    /// the task holds (buffered and in-flight reports, flushes) fails with
    /// [`Error::BackgroundTask`], and so does every later call; if the task is dropped
    /// unfinished, the reason is recorded before the task's channels close.
    fn spawn_with(
        config: ClientConfig,
        conn: Option<Connection>,
        status: watch::Sender<Status>,
        body: Body,
    ) -> Reporter {
        let (tx, rx) = mpsc::channel(config.buffer_size);
        let counters = Arc::new(Counters::default());
        let (supervisor, failure) = supervisor("reporter");
        let alive = CancellationToken::new();
        let reporter = Reporter {
            tx,
            counters: Arc::clone(&counters),
            status: status.subscribe(),
            uuid: config.uuid,
            buffer_size: config.buffer_size,
            ack_timeout: config.ack_timeout,
            max_report_frame_len: config.max_report_frame_len,
            failure,
            _alive: Arc::new(alive.clone().drop_guard()),
        };
        let task = Task {
            cfg: config,
            rx,
            counters,
            status,
            alive,
            in_flight: VecDeque::new(),
            flushes: VecDeque::new(),
            next_seq: 0,
            rx_closed: false,
        };
        tokio::spawn(async move {
            // Owned out here, not by `body`: after a panic it still holds every waiting
            // report, to be failed with the panic's message. Declared before `supervise`
            // runs, so dropped after it has recorded a failure.
            let mut task = task;
            if let Err(e) = supervise(supervisor, body(&mut task, conn)).await {
                task.stop(e);
            }
        });
        reporter
    }

    /// Serialises `report` (it must serialise to a JSON object) and takes it for sending;
    /// returns at once. Await the [`AckFuture`] for the outcome, or drop it.
    ///
    /// # Errors
    /// [`Error::NotAnObject`], [`Error::ReportTooLarge`], [`Error::BufferFull`], or
    /// [`Error::Unreachable`] / [`Error::BackgroundTask`] / [`Error::Closed`] once the
    /// reporter has stopped.
    pub fn send<T: Serialize + ?Sized>(&self, report: &T) -> Result<AckFuture> {
        let body = serde_json::to_vec(report).map_err(|e| Error::NotAnObject {
            reason: e.to_string(),
        })?;
        if body.first() != Some(&b'{') {
            return Err(Error::NotAnObject {
                reason: "it serialises to something else".into(),
            });
        }
        self.enqueue(body.into())
    }

    /// Takes a report given as JSON text (checked to be one JSON object, sent as it is).
    ///
    /// # Errors
    /// As [`Reporter::send`].
    pub fn send_raw(&self, json: impl Into<Bytes>) -> Result<AckFuture> {
        let body = json.into();
        check_object(&body)?;
        self.enqueue(body)
    }

    /// Sends `report` and waits up to `ack_timeout` for its acknowledgement; returns its
    /// `delivered` count.
    ///
    /// # Errors
    /// As [`Reporter::send`], plus [`Error::ReportRefused`], and [`Error::AckTimeout`]
    /// (the report may still be delivered later: it stays buffered or in flight).
    pub async fn report<T: Serialize + ?Sized>(&self, report: &T) -> Result<u64> {
        let ack = self.send(report)?;
        self.wait(ack).await
    }

    /// [`Reporter::report`] for JSON text.
    ///
    /// # Errors
    /// As [`Reporter::report`].
    pub async fn report_raw(&self, json: impl Into<Bytes>) -> Result<u64> {
        let ack = self.send_raw(json)?;
        self.wait(ack).await
    }

    async fn wait(&self, ack: AckFuture) -> Result<u64> {
        match tokio::time::timeout(self.ack_timeout, ack).await {
            Ok(result) => result,
            Err(_) => Err(Error::AckTimeout {
                after: self.ack_timeout,
            }),
        }
    }

    fn enqueue(&self, body: Bytes) -> Result<AckFuture> {
        if HEADER_LEN + body.len() > self.max_report_frame_len as usize {
            return Err(Error::ReportTooLarge {
                len: body.len(),
                max: self.max_report_frame_len,
            });
        }
        let (ack, rx) = oneshot::channel();
        match self.tx.try_send(Cmd::Report(Item { body, ack })) {
            Ok(()) => {
                add(&self.counters.accepted, 1);
                Ok(AckFuture {
                    rx,
                    failure: Arc::clone(&self.failure),
                    why: None,
                })
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                add(&self.counters.rejected_buffer_full, 1);
                Err(Error::BufferFull {
                    capacity: self.buffer_size,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.stopped_error()),
        }
    }

    fn stopped_error(&self) -> Error {
        if let Some(failed) = self.failure.error() {
            return failed;
        }
        let gave_up = self
            .counters
            .gave_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match gave_up {
            Some((attempts, last_error)) => Error::Unreachable {
                attempts,
                last_error,
            },
            None => Error::Closed,
        }
    }

    /// Waits until every report taken before this call is resolved (acknowledged,
    /// refused or failed). Waits across reconnections, as long as the reporter keeps
    /// trying.
    ///
    /// # Errors
    /// [`Error::Unreachable`] or [`Error::Closed`] if the reporter stopped first.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).await.is_err() {
            return Err(self.stopped_error());
        }
        match rx.await {
            Ok(outcome) => outcome,
            // The task answers every flush it takes; only a failed one drops it.
            Err(_) => Err(self.failure.why().await),
        }
    }

    /// Flushes, then drops this handle (the connection closes when no other clone is
    /// left).
    ///
    /// # Errors
    /// As [`Reporter::flush`].
    pub async fn close(self) -> Result<()> {
        self.flush().await
    }

    /// Where the connection stands now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A watch on the status, to wait for changes.
    pub fn status_watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> ReporterStats {
        let c = &self.counters;
        ReporterStats {
            accepted: c.accepted.load(Relaxed),
            written: c.written.load(Relaxed),
            acked: c.acked.load(Relaxed),
            refused: c.refused.load(Relaxed),
            resent: c.resent.load(Relaxed),
            maybe_lost: c.maybe_lost.load(Relaxed),
            failed: c.failed.load(Relaxed),
            rejected_buffer_full: c.rejected_buffer_full.load(Relaxed),
            reconnects: c.reconnects.load(Relaxed),
            buffered: self.buffer_size.saturating_sub(self.tx.capacity()),
            in_flight: c.in_flight.load(Relaxed),
        }
    }

    /// This client's uuid.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
}

/// Checks that `body` is exactly one JSON object.
/// The server's own rule (exactly one JSON object, UTF-8), so that a report refused here
/// is one the server would refuse too.
fn check_object(body: &Bytes) -> Result<()> {
    monitor_proto::Report::parse(body.clone())
        .map(drop)
        .map_err(|e| Error::NotAnObject {
            reason: match e {
                monitor_proto::Error::MalformedBody { reason } => reason,
                other => other.to_string(),
            },
        })
}

/// A report written (or to be written again) and waiting for its acknowledgement.
struct InFlight {
    seq: u64,
    body: Bytes,
    ack: oneshot::Sender<Result<u64>>,
    written_at: Instant,
}

enum End {
    /// Every handle is gone and everything taken is resolved.
    Done,
    /// The connection is lost.
    Lost(String),
}

struct Task {
    cfg: ClientConfig,
    rx: mpsc::Receiver<Cmd>,
    counters: Arc<Counters>,
    status: watch::Sender<Status>,
    /// Cancelled when the last [`Reporter`] handle is dropped.
    alive: CancellationToken,
    in_flight: VecDeque<InFlight>,
    /// Flush requests, each waiting for every report before `seq` to be resolved.
    flushes: VecDeque<(u64, oneshot::Sender<Result<()>>)>,
    /// Sequence number of the next report taken from the buffer.
    next_seq: u64,
    /// Every handle is gone and the buffer is empty.
    rx_closed: bool,
}

impl Task {
    async fn run(&mut self, mut conn: Option<Connection>) {
        let mut connections = u64::from(conn.is_some());
        loop {
            let mut current = match conn.take() {
                Some(c) => c,
                None => {
                    let stop = self.alive.clone().cancelled_owned();
                    let result = connect_with_retry(
                        &self.cfg,
                        &Handshake::Heartbeat,
                        &self.status,
                        connections > 0,
                        stop,
                    )
                    .await;
                    match result {
                        Ok((c, attempts)) => {
                            connections += 1;
                            if connections > 1 {
                                add(&self.counters.reconnects, 1);
                                info!(server = %self.cfg.server, attempts, connections, "reporter reconnected");
                            }
                            self.status.send_replace(Status::Connected { connections });
                            c
                        }
                        Err(e) => {
                            self.stop(e);
                            return;
                        }
                    }
                }
            };
            match self.session(&mut current).await {
                End::Done => {
                    current.close().await;
                    self.status.send_replace(Status::Stopped {
                        reason: "closed".into(),
                    });
                    return;
                }
                End::Lost(reason) => {
                    warn!(server = %self.cfg.server, reason = %reason, in_flight = self.in_flight.len(), "reporter disconnected; reconnecting");
                    self.status.send_replace(Status::Disconnected {
                        reason: reason.clone(),
                    });
                    if self.cfg.delivery == Delivery::AtMostOnce {
                        let lost = self.in_flight.len() as u64;
                        add(&self.counters.maybe_lost, lost);
                        for item in self.in_flight.drain(..) {
                            let _ = item.ack.send(Err(Error::MaybeLost {
                                reason: reason.clone(),
                            }));
                        }
                        self.counters.in_flight.store(0, Relaxed);
                        self.check_flushes();
                    }
                    if self.rx_closed && self.in_flight.is_empty() {
                        self.status.send_replace(Status::Stopped {
                            reason: "closed".into(),
                        });
                        return;
                    }
                }
            }
        }
    }

    /// Stops for good: fails everything still held, and every later `send`.
    fn stop(&mut self, error: Error) {
        // Stopped first: a caller whose report fails below finds the status saying why.
        self.status.send_replace(Status::Stopped {
            reason: error.to_string(),
        });
        if let Error::Unreachable {
            attempts,
            last_error,
        } = &error
        {
            if let Ok(mut gave_up) = self.counters.gave_up.lock() {
                *gave_up = Some((*attempts, last_error.clone()));
            }
        }
        let fail = |e: &Error| match e {
            Error::Unreachable {
                attempts,
                last_error,
            } => Error::Unreachable {
                attempts: *attempts,
                last_error: last_error.clone(),
            },
            Error::BackgroundTask { task, reason } => Error::BackgroundTask {
                task,
                reason: reason.clone(),
            },
            _ => Error::Closed,
        };
        self.rx.close();
        let mut failed = 0u64;
        for item in self.in_flight.drain(..) {
            let _ = item.ack.send(Err(fail(&error)));
            failed += 1;
        }
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Report(item) => {
                    let _ = item.ack.send(Err(fail(&error)));
                    failed += 1;
                }
                Cmd::Flush(tx) => {
                    let _ = tx.send(Err(fail(&error)));
                }
            }
        }
        for (_, tx) in self.flushes.drain(..) {
            let _ = tx.send(Err(fail(&error)));
        }
        add(&self.counters.failed, failed);
        self.counters.in_flight.store(0, Relaxed);
        if failed > 0 {
            warn!(failed, error = %error, "reporter stopped; reports not delivered");
        }
    }

    /// One connection's life.
    async fn session(&mut self, conn: &mut Connection) -> End {
        // Reports written to the previous connection and never acknowledged go first.
        let now = Instant::now();
        for item in &mut self.in_flight {
            if let Err(e) = conn.queue(MsgType::Report, item.body.clone()) {
                return End::Lost(format!("cannot re-send a report: {e}"));
            }
            item.written_at = now;
            add(&self.counters.resent, 1);
            add(&self.counters.written, 1);
        }
        if !self.in_flight.is_empty() {
            info!(
                count = self.in_flight.len(),
                "re-sending unacknowledged reports"
            );
        }
        let cfg = self.cfg.clone();
        let (mut heartbeat, mut silence) = conn.session_timers(&cfg);
        loop {
            if self.rx_closed && self.in_flight.is_empty() && conn.wbuf.is_empty() {
                return End::Done;
            }
            let can_take = !self.rx_closed
                && self.in_flight.len() < cfg.max_in_flight
                && conn.wbuf.len() < WRITE_HIGH_WATER;
            let ack_due = self
                .in_flight
                .front()
                .map(|f| f.written_at + cfg.ack_timeout);
            tokio::select! {
                biased;
                frame = conn.reader.next() => match conn.arrived(frame) {
                    Ok(received) => self.on_frame(received),
                    Err(reason) => return End::Lost(reason),
                },
                written = conn.writer.write_buf(&mut conn.wbuf), if !conn.wbuf.is_empty() => {
                    if let Err(reason) = connection::written(written) {
                        return End::Lost(reason);
                    }
                }
                cmd = self.rx.recv(), if can_take => {
                    let mut next = cmd;
                    let mut taken = 0;
                    loop {
                        match next.take() {
                            None => {
                                self.rx_closed = true;
                                break;
                            }
                            Some(cmd) => self.on_cmd(cmd, conn),
                        }
                        taken += 1;
                        // Only take another command if it will be handled in this round.
                        if taken >= TAKE_BATCH
                            || self.in_flight.len() >= cfg.max_in_flight
                            || conn.wbuf.len() >= WRITE_HIGH_WATER
                        {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(cmd) => next = Some(cmd),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
                        }
                    }
                },
                _ = heartbeat.tick() => conn.queue_heartbeat(),
                () = sleep_until(ack_due.unwrap_or_else(Instant::now)), if ack_due.is_some() => {
                    return End::Lost(format!("no acknowledgement within {:?}", cfg.ack_timeout));
                }
                () = &mut silence => {
                    if let Err(reason) = conn.check_silence(&cfg, silence.as_mut()) {
                        return End::Lost(reason);
                    }
                }
            }
        }
    }

    fn on_cmd(&mut self, cmd: Cmd, conn: &mut Connection) {
        match cmd {
            Cmd::Report(item) => {
                if let Err(e) = conn.queue(MsgType::Report, item.body.clone()) {
                    // A body under the limit that compression grew over it: this report
                    // fails alone, and the connection carries on.
                    let _ = item.ack.send(Err(e));
                    add(&self.counters.failed, 1);
                    return;
                }
                add(&self.counters.written, 1);
                self.in_flight.push_back(InFlight {
                    seq: self.next_seq,
                    body: item.body,
                    ack: item.ack,
                    written_at: Instant::now(),
                });
                self.next_seq += 1;
                self.counters.in_flight.store(self.in_flight.len(), Relaxed);
            }
            Cmd::Flush(tx) => {
                self.flushes.push_back((self.next_seq, tx));
                self.check_flushes();
            }
        }
    }

    fn on_frame(&mut self, received: Received) {
        match received.header.msg_type {
            MsgType::ReportAck => {}
            MsgType::HeartbeatReply => return,
            _ => {
                debug!(frame = %describe_received(&received), "ignored an unexpected frame");
                return;
            }
        }
        let Some(item) = self.in_flight.pop_front() else {
            warn!("an acknowledgement for no report in flight; ignored");
            return;
        };
        self.counters.in_flight.store(self.in_flight.len(), Relaxed);
        let outcome = match received.body {
            Err(e) => Err(Error::BadReply {
                reason: format!("acknowledgement unreadable: {e}"),
            }),
            Ok(body) => match Reply::parse(&body) {
                Err(e) => Err(Error::BadReply {
                    reason: e.to_string(),
                }),
                Ok(reply) if reply.is_success() => reply
                    .data_as::<ReportAckData>()
                    .map(|d| d.delivered)
                    .map_err(|e| Error::BadReply {
                        reason: e.to_string(),
                    }),
                Ok(reply) => Err(Error::ReportRefused { msg: reply.msg }),
            },
        };
        match &outcome {
            Ok(_) => add(&self.counters.acked, 1),
            Err(e) => {
                debug!(error = %e, "report not delivered");
                add(&self.counters.refused, 1);
            }
        }
        let _ = item.ack.send(outcome);
        self.check_flushes();
    }

    /// Answers the flushes whose reports are all resolved.
    fn check_flushes(&mut self) {
        let first_unresolved = self.in_flight.front().map_or(self.next_seq, |f| f.seq);
        while self
            .flushes
            .front()
            .is_some_and(|(seq, _)| *seq <= first_unresolved)
        {
            if let Some((_, tx)) = self.flushes.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The supervision of `Reporter::spawn_with` around a body that panics holding one
    /// report in flight (in the task's state) and one in its hands, with more buffered
    /// behind them: each report fails with the panic's message, and so does every later
    /// call. (Nothing known panics in the real body; this tests the mechanism, on two
    /// threads so that a handle may look while the panic is still unwinding.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_fails_every_report_with_an_error() {
        let cfg = ClientConfig::new("127.0.0.1:1".parse().unwrap());
        let (status, _) = watch::channel(Status::Connecting {
            attempt: 1,
            last_error: None,
        });
        let reporter = Reporter::spawn_with(cfg, None, status, |task, _| {
            Box::pin(async move {
                if let Some(Cmd::Report(item)) = task.rx.recv().await {
                    task.in_flight.push_back(InFlight {
                        seq: 0,
                        body: item.body,
                        ack: item.ack,
                        written_at: Instant::now(),
                    });
                }
                let _in_hand = task.rx.recv().await;
                panic!("boom in the reporter");
            })
        });
        // The first two are taken by the body; the others are buffered, or refused at
        // `send` if the panic came first.
        let outcomes: Vec<_> = (0..5)
            .map(|n| reporter.send(&serde_json::json!({ "n": n })))
            .collect();
        for (n, outcome) in outcomes.into_iter().enumerate() {
            let outcome = match outcome {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Err(Error::BackgroundTask { task, reason }) => {
                    assert_eq!(task, "reporter");
                    assert_eq!(reason, "it panicked: boom in the reporter", "report {n}");
                }
                other => panic!("report {n}: {other:?}"),
            }
        }
        for later in [
            reporter.send(&serde_json::json!({})).map(drop),
            reporter.flush().await,
        ] {
            assert!(
                matches!(&later, Err(Error::BackgroundTask { reason, .. }) if reason.contains("boom")),
                "{later:?}"
            );
        }
        match reporter.status() {
            Status::Stopped { reason } => assert!(reason.contains("boom"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn objects_only() {
        assert!(check_object(&Bytes::from_static(br#" {"code":"a","n":[1,2]} "#)).is_ok());
        for bad in [
            &b""[..],
            b"  ",
            b"[1]",
            b"\"s\"",
            b"{",
            b"{} {}",
            b"{\"a\":}",
        ] {
            assert!(
                matches!(
                    check_object(&Bytes::copy_from_slice(bad)),
                    Err(Error::NotAnObject { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
