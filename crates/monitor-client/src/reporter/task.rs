//! The reporter's background task: it owns the connection, writes what the handles
//! send, matches acknowledgements against its in-flight queue (FIFO: the server answers
//! reports in order), and reconnects, re-sending or failing what was in flight per the
//! config's [`Delivery`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use monitor_proto::message::reply::{Reply, ReportAckData};
use monitor_proto::{MsgType, Received};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{add, Cmd, Counters};
use crate::config::{ClientConfig, Delivery};
use crate::connection::{
    self, connect_with_retry, describe_received, Connection, Dialer, Handshake, Status,
    WRITE_HIGH_WATER,
};
use crate::error::{with_causes, Error, Result};
use crate::supervise::{supervise, Supervisor};

/// Reports taken from the buffer per wake-up.
const TAKE_BATCH: usize = 256;

/// The reporter task's work, given the task's state and its first connection. A function
/// pointer only so that a test can supervise a body that panics.
pub(super) type Body = for<'a> fn(&'a mut Task, Option<Connection>) -> BoxFuture<'a, ()>;

/// Spawns `task` with `body` as its work, supervised: if `body` panics, everything the
/// task holds (buffered and in-flight reports, flushes) fails with
/// [`Error::BackgroundTask`], and so does every later call; if the task is dropped
/// unfinished, the reason is recorded before the task's channels close.
pub(super) fn spawn(task: Task, supervisor: Supervisor, body: Body, conn: Option<Connection>) {
    tokio::spawn(async move {
        // Owned out here, not by `body`: after a panic it still holds every waiting
        // report, to be failed with the panic's message. Declared before `supervise`
        // runs, so dropped after it has recorded a failure.
        let mut task = task;
        if let Err(e) = supervise(supervisor, body(&mut task, conn)).await {
            task.stop(e);
        }
    });
}

/// A report written (or to be written again) and waiting for its acknowledgement.
struct InFlight {
    seq: u64,
    body: Bytes,
    ack: oneshot::Sender<Result<ReportAckData>>,
    written_at: Instant,
}

/// Why a session (one connection's life) ended.
enum End {
    /// Every handle is gone and everything taken is resolved.
    Done,
    /// The connection is lost.
    Lost(String),
}

/// The task's state, across connections.
pub(super) struct Task {
    cfg: ClientConfig,
    /// How to reach the server (its TLS prepared once).
    dialer: Dialer,
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
    /// The state before the first connection: nothing in flight.
    pub(super) fn new(
        cfg: ClientConfig,
        dialer: Dialer,
        rx: mpsc::Receiver<Cmd>,
        counters: Arc<Counters>,
        status: watch::Sender<Status>,
        alive: CancellationToken,
    ) -> Task {
        Task {
            cfg,
            dialer,
            rx,
            counters,
            status,
            alive,
            in_flight: VecDeque::new(),
            flushes: VecDeque::new(),
            next_seq: 0,
            rx_closed: false,
        }
    }

    /// Sessions, and reconnections between them, until every handle is gone and all is
    /// resolved, or the reporter gives up.
    pub(super) async fn run(&mut self, mut conn: Option<Connection>) {
        let mut connections = u64::from(conn.is_some());
        loop {
            let mut current = match conn.take() {
                Some(c) => c,
                None => {
                    let stop = self.alive.clone().cancelled_owned();
                    let result = connect_with_retry(
                        &self.cfg,
                        &self.dialer,
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
        // Published before anything is failed: a handle whose report fails here must
        // find the status already `Stopped`.
        self.status.send_replace(Status::Stopped {
            reason: error.to_string(),
        });
        if !matches!(error, Error::BackgroundTask { .. }) {
            if let Ok(mut gave_up) = self.counters.gave_up.lock() {
                *gave_up = error.stop_copy();
            }
        }
        // Each report fails with why the reporter stopped (gave up, a refused token, TLS
        // that cannot work), not a bare "closed".
        let fail = |e: &Error| e.stop_copy().unwrap_or(Error::Closed);
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
                reason: format!("acknowledgement unreadable: {}", with_causes(&e)),
            }),
            Ok(body) => match Reply::parse(&body) {
                Err(e) => Err(Error::BadReply {
                    reason: with_causes(&e),
                }),
                Ok(reply) if reply.is_success() => {
                    reply
                        .data_as::<ReportAckData>()
                        .map_err(|e| Error::BadReply {
                            reason: with_causes(&e),
                        })
                }
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
    use crate::reporter::Reporter;

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
        let reporter = Reporter::spawn_with(cfg, Dialer::default(), None, status, |task, _| {
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
}
