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
//!
//! This module is the handles' side: [`Reporter`], [`AckFuture`], [`ReporterStats`], and
//! what they share with the task (the commands, the counters). `task` is the background
//! task: the connection, the in-flight queue, reconnection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use monitor_proto::message::reply::ReportAckData;
use monitor_proto::{Uuid, HEADER_LEN};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::ClientConfig;
use crate::connection::{connect_first, status_channel, Connection, Dialer, Handshake, Status};
use crate::error::{Error, Result};
use crate::supervise::{supervisor, TaskFailure};

mod task;

use task::{Body, Task};

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
    /// Reports written again after a reconnection ([`Delivery::AtLeastOnce`](crate::Delivery::AtLeastOnce)).
    pub resent: u64,
    /// Reports failed with [`Error::MaybeLost`] ([`Delivery::AtMostOnce`](crate::Delivery::AtMostOnce)).
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
    /// Why the reporter stopped for good, once it has (gave up, or was refused): `send`
    /// fails with a copy of it ([`Error::stop_copy`]).
    gave_up: Mutex<Option<Error>>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// A report waiting to be written.
struct Item {
    body: Bytes,
    ack: oneshot::Sender<Result<ReportAckData>>,
}

enum Cmd {
    Report(Item),
    /// Answer once every report taken before this one is resolved.
    Flush(oneshot::Sender<Result<()>>),
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Report(item) => write!(f, "Report({} bytes)", item.body.len()),
            Cmd::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// The outcome of one report: resolves to the acknowledgement's `delivered` (the number
/// of subscribers it was queued for), or why it failed.
///
/// It waits as long as the reporter keeps the report (across reconnections); wrap it in
/// `tokio::time::timeout` for a bound, or use [`Reporter::report`]. Dropping it does not
/// withdraw the report.
#[must_use = "an AckFuture does nothing unless awaited; drop it to fire and forget"]
pub struct AckFuture {
    rx: oneshot::Receiver<Result<ReportAckData>>,
    failure: Arc<TaskFailure>,
    /// Once the task dropped the report unanswered (only a failed task does): why.
    why: Option<BoxFuture<'static, Error>>,
}

impl std::fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckFuture").finish_non_exhaustive()
    }
}

impl AckFuture {
    /// The whole acknowledgement instead of its `delivered` count: with `cluster`, which
    /// a clustered server sets when it also published the report to its other nodes.
    pub fn acknowledgement(self) -> Acknowledgement {
        Acknowledgement(self)
    }

    fn poll_ack(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReportAckData>> {
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

impl Future for AckFuture {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        self.poll_ack(cx).map(|ack| ack.map(|data| data.delivered))
    }
}

/// An [`AckFuture`] that resolves to the whole acknowledgement
/// ([`AckFuture::acknowledgement`]).
#[must_use = "an Acknowledgement does nothing unless awaited"]
#[derive(Debug)]
pub struct Acknowledgement(AckFuture);

impl Future for Acknowledgement {
    type Output = Result<ReportAckData>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<ReportAckData>> {
        self.0.poll_ack(cx)
    }
}

/// Sends reports over a connection it keeps alive. Clones share the same connection and
/// buffer.
///
/// Reports go out in the order they were accepted, and each one's [`AckFuture`] resolves
/// with its own acknowledgement. While disconnected, up to `buffer_size` reports wait and
/// are sent, in order, once a new connection is up. Written reports whose
/// acknowledgement was lost with the connection follow the config's [`Delivery`](crate::Delivery)
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

impl Reporter {
    /// Connects (retrying per the config), exchanges keys if `config.encrypt`, checks the
    /// server answers a heartbeat, and starts the background task.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::TlsFile`] for a TLS file that cannot
    /// be used; [`Error::Unreachable`] when `max_attempts` attempts failed;
    /// [`Error::KeyExchange`], [`Error::Unauthorized`], [`Error::Tls`]: refusals, not
    /// retried.
    pub async fn connect(config: ClientConfig) -> Result<Reporter> {
        config.validate()?;
        let dialer = Dialer::new(&config)?;
        let (conn, status) = connect_first(&config, &dialer, &Handshake::Heartbeat).await?;
        Ok(Reporter::spawn(config, dialer, Some(conn), status))
    }

    /// Starts the reporter without waiting for a connection: reports are buffered until
    /// the first connection is up (an agent that may start before its server).
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::TlsFile`] for a TLS file that cannot
    /// be used (read now, so a typo fails here rather than in the background).
    pub fn start(config: ClientConfig) -> Result<Reporter> {
        config.validate()?;
        let dialer = Dialer::new(&config)?;
        Ok(Reporter::spawn(config, dialer, None, status_channel()))
    }

    fn spawn(
        config: ClientConfig,
        dialer: Dialer,
        conn: Option<Connection>,
        status: watch::Sender<Status>,
    ) -> Reporter {
        Reporter::spawn_with(config, dialer, conn, status, |task, conn| {
            Box::pin(task.run(conn))
        })
    }

    /// Spawns the task with `body` as its work, supervised ([`task::spawn`]).
    fn spawn_with(
        config: ClientConfig,
        dialer: Dialer,
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
        let task = Task::new(config, dialer, rx, counters, status, alive);
        task::spawn(task, supervisor, body, conn);
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

    /// [`Reporter::report_raw`], returning the whole acknowledgement: `delivered`, and
    /// `cluster` from a clustered server.
    ///
    /// # Errors
    /// As [`Reporter::report`].
    pub async fn report_acknowledged(&self, json: impl Into<Bytes>) -> Result<ReportAckData> {
        let ack = self.send_raw(json)?.acknowledgement();
        match tokio::time::timeout(self.ack_timeout, ack).await {
            Ok(result) => result,
            Err(_) => Err(Error::AckTimeout {
                after: self.ack_timeout,
            }),
        }
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
        self.counters
            .gave_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(Error::stop_copy)
            .unwrap_or(Error::Closed)
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
    use monitor_proto::BodyError;
    monitor_proto::message::request::Report::parse(body.clone())
        .map(drop)
        .map_err(|e| Error::NotAnObject {
            // The reasons without the server's "malformed body: " prefix, as before the
            // proto split its errors (the JSON or UTF-8 error is the source there).
            reason: match e {
                BodyError::Malformed { reason } => reason.to_owned(),
                BodyError::InvalidJson { source } => format!("invalid JSON: {source}"),
                BodyError::InvalidUtf8 { source } => format!("invalid UTF-8: {source}"),
                other => other.to_string(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
