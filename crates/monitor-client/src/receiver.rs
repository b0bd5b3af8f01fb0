//! The push receiver: subscribes, then yields every matching report as a [`Stream`] of
//! [`Event`]s, and keeps the subscription alive (heartbeats, reconnection, re-subscription).
//!
//! One background task owns the connection. It forwards pushes and connection events
//! through a bounded channel; while the channel is full it stops reading the socket (so a
//! slow consumer meets the server's slow-consumer policy, never an unbounded buffer here),
//! but it keeps sending heartbeats.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use monitor_proto::message::reply::Reply;
use monitor_proto::message::request::Subscribe;
use monitor_proto::{MsgType, Received, Uuid};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::ClientConfig;
use crate::connection::{
    self, connect_first, connect_with_retry, describe_received, Connection, Dialer, Handshake,
    Status,
};
use crate::error::{with_causes, Error, Result};
use crate::supervise::{supervise, supervisor, TaskFailure};

/// What to subscribe to: a `code` (any non-empty name for this receiver) and topic patterns
/// matched against each report's `code` (`"host.*"`, `"db"`, `"*"`; none = every report).
///
/// ```
/// use monitor_client::Subscription;
/// let sub = Subscription::new("dashboard").topic("host.*").topic("db.slow");
/// assert_eq!(sub.topics, ["host.*", "db.slow"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The subscribe body's `code`.
    pub code: String,
    /// The topic patterns; empty means every report.
    pub topics: Vec<String>,
}

impl Subscription {
    /// A subscription to every report.
    pub fn new(code: impl Into<String>) -> Subscription {
        Subscription {
            code: code.into(),
            topics: Vec::new(),
        }
    }

    /// Adds a topic pattern.
    #[must_use]
    pub fn topic(mut self, pattern: impl Into<String>) -> Subscription {
        self.topics.push(pattern.into());
        self
    }

    /// The type-5 body: `{"code":…,"topics":[…]}`.
    pub fn body(&self) -> Bytes {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        Subscribe::body(&self.code, &topics)
    }

    /// Refuses what the server would: an empty `code`.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.code.is_empty() {
            return Err(Error::Config {
                field: "subscription.code",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

/// One pushed report.
#[derive(Debug, Clone)]
pub struct Push {
    /// The report, the JSON object exactly as its reporter sent it.
    pub report: Box<RawValue>,
    /// When this client read it.
    pub received_at: SystemTime,
    /// Whether the push was encrypted on the wire.
    pub encrypted: bool,
}

impl Push {
    /// The report's JSON text.
    pub fn as_str(&self) -> &str {
        self.report.get()
    }

    /// The report's string `code`, if it has one.
    pub fn code(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Code {
            code: Option<serde_json::Value>,
        }
        match serde_json::from_str::<Code>(self.report.get()) {
            Ok(Code {
                code: Some(serde_json::Value::String(code)),
            }) => Some(code),
            _ => None,
        }
    }

    /// Parses the report into `T`.
    ///
    /// # Errors
    /// The JSON error if the report does not fit `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.report.get())
    }
}

/// What a [`PushReceiver`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A report pushed by the server.
    Push(Push),
    /// The connection dropped. Reports published until [`Event::Reconnected`] are not
    /// delivered to this receiver: the server keeps no history.
    Disconnected {
        /// Why it dropped.
        reason: String,
    },
    /// A new connection is up and subscribed again (with a new key exchange when
    /// encrypting).
    Reconnected {
        /// Connection attempts it took.
        attempts: u32,
        /// Connections made since the receiver started (the first one counts).
        connections: u64,
    },
}

/// A subscription that survives disconnections: a [`Stream`] of
/// `Result<`[`Event`]`, `[`Error`]`>`.
///
/// The stream ends after an `Err`, which only happens when the receiver gives up
/// (`max_attempts` failed attempts in a row, or a subscription the server refuses), or
/// when its background task failed ([`Error::BackgroundTask`]: it panicked, or its Tokio
/// runtime shut down). Dropping the receiver closes its connection.
///
/// # Example
/// ```no_run
/// use futures::StreamExt;
/// use monitor_client::{ClientConfig, Event, PushReceiver, Subscription};
///
/// # async fn run() -> Result<(), monitor_client::Error> {
/// let config = ClientConfig::new("127.0.0.1:9503".parse()?);
/// let mut pushes = PushReceiver::connect(config, Subscription::new("me").topic("host.*")).await?;
/// while let Some(event) = pushes.next().await {
///     match event? {
///         Event::Push(push) => println!("{}", push.as_str()),
///         other => eprintln!("{other:?}"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PushReceiver {
    events: mpsc::Receiver<Result<Event>>,
    status: watch::Receiver<Status>,
    uuid: Uuid,
    task: JoinHandle<()>,
    /// Why the task stopped, if it failed: read when `events` closes.
    failure: Arc<TaskFailure>,
    /// The failure has been yielded (once; then the stream ends).
    failure_told: bool,
}

impl PushReceiver {
    /// Connects (retrying per the config), exchanges keys if `config.encrypt`, subscribes,
    /// and returns once the server has acknowledged the subscription: every report
    /// published after this returns is delivered (unless the connection drops).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config or subscription; [`Error::TlsFile`] for a TLS
    /// file that cannot be used; [`Error::SubscribeRefused`] (a `forbidden: …` one
    /// included), [`Error::Unauthorized`], [`Error::Tls`]: refusals, not retried;
    /// [`Error::Unreachable`] when `max_attempts` attempts failed.
    pub async fn connect(config: ClientConfig, subscription: Subscription) -> Result<PushReceiver> {
        config.validate()?;
        subscription.validate()?;
        let dialer = Dialer::new(&config)?;
        let handshake = Handshake::Subscribe(subscription.body());
        let (conn, status_tx) = connect_first(&config, &dialer, &handshake).await?;
        let (tx, rx) = mpsc::channel(config.event_queue);
        let uuid = config.uuid;
        let body = run(
            config,
            dialer,
            handshake,
            conn,
            tx.clone(),
            status_tx.clone(),
        );
        Ok(PushReceiver::start(rx, tx, status_tx, uuid, body))
    }

    /// Spawns `body`, the background task, supervised: if it panics or is dropped
    /// unfinished, the reason is recorded and the status set to `Stopped` while this
    /// function's copies of `tx` and `status` still hold the channels open, so the stream
    /// yields [`Error::BackgroundTask`] before it ends. (`body` is a parameter so that a
    /// test can supervise a body that panics.)
    fn start(
        events: mpsc::Receiver<Result<Event>>,
        tx: mpsc::Sender<Result<Event>>,
        status: watch::Sender<Status>,
        uuid: Uuid,
        body: impl Future<Output = ()> + Send + 'static,
    ) -> PushReceiver {
        let (supervisor, failure) = supervisor("push receiver");
        let status_rx = status.subscribe();
        let task = tokio::spawn({
            async move {
                // Declared before `supervise` runs, so dropped after it has recorded a
                // failure, even when this task is dropped unfinished.
                let (tx, status) = (tx, status);
                if let Err(e) = supervise(supervisor, body).await {
                    status.send_replace(Status::Stopped {
                        reason: e.to_string(),
                    });
                }
                drop((tx, status));
            }
        });
        PushReceiver {
            events,
            status: status_rx,
            uuid,
            task,
            failure,
            failure_told: false,
        }
    }

    /// The next event; `None` once the receiver has stopped.
    pub async fn recv(&mut self) -> Option<Result<Event>> {
        futures::StreamExt::next(self).await
    }

    /// The next push, skipping connection events; `None` once the receiver has stopped.
    pub async fn next_push(&mut self) -> Option<Result<Push>> {
        loop {
            match self.recv().await? {
                Ok(Event::Push(push)) => return Some(Ok(push)),
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Where the connection stands now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A watch on the status, to wait for changes.
    pub fn status_watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// This client's uuid.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
}

impl Stream for PushReceiver {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        if let Some(event) = ready!(self.events.poll_recv(cx)) {
            return Poll::Ready(Some(event));
        }
        // The task is gone. If it failed, say so once before the stream ends: the
        // supervisor recorded why before the channel closed.
        if self.failure_told {
            return Poll::Ready(None);
        }
        let failed = self.failure.error();
        self.failure_told = failed.is_some();
        Poll::Ready(failed.map(Err))
    }
}

impl Drop for PushReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a session (one connection's life) ended.
enum End {
    /// The [`PushReceiver`] was dropped.
    ReceiverGone,
    /// The connection is lost; reconnect.
    Lost(String),
}

/// The background task: sessions, and reconnections between them.
async fn run(
    cfg: ClientConfig,
    dialer: Dialer,
    handshake: Handshake,
    mut conn: Connection,
    tx: mpsc::Sender<Result<Event>>,
    status: watch::Sender<Status>,
) {
    // `tx` and `status` are copies: the supervisor in `PushReceiver::start` holds the
    // originals.
    let mut connections = 1u64;
    loop {
        let reason = match session(&cfg, &mut conn, &tx).await {
            End::ReceiverGone => {
                conn.close().await;
                return;
            }
            End::Lost(reason) => reason,
        };
        warn!(server = %cfg.server, reason = %reason, "push receiver disconnected; reconnecting");
        status.send_replace(Status::Disconnected {
            reason: reason.clone(),
        });
        if tx.send(Ok(Event::Disconnected { reason })).await.is_err() {
            return;
        }
        match connect_with_retry(&cfg, &dialer, &handshake, &status, true, tx.closed()).await {
            Ok((new_conn, attempts)) => {
                conn = new_conn;
                connections += 1;
                info!(server = %cfg.server, attempts, connections, "push receiver reconnected and subscribed");
                status.send_replace(Status::Connected { connections });
                let event = Event::Reconnected {
                    attempts,
                    connections,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            Err(Error::Closed) => return,
            Err(e) => {
                status.send_replace(Status::Stopped {
                    reason: e.to_string(),
                });
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// One connection's life: read pushes, forward them, send heartbeats, watch for silence.
async fn session(
    cfg: &ClientConfig,
    conn: &mut Connection,
    tx: &mpsc::Sender<Result<Event>>,
) -> End {
    let (mut heartbeat, mut silence) = conn.session_timers(cfg);
    // A push read but not yet taken by the consumer; while there is one, reading stops.
    let mut pending: Option<Event> = None;
    loop {
        let reading = pending.is_none();
        tokio::select! {
            biased;
            () = tx.closed() => return End::ReceiverGone,
            permit = tx.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(permit), Some(event)) => {
                    permit.send(Ok(event));
                    // Time spent waiting for the consumer is not the server's silence.
                    conn.last_rx = Instant::now();
                }
                _ => return End::ReceiverGone,
            },
            written = conn.writer.write_buf(&mut conn.wbuf), if !conn.wbuf.is_empty() => {
                if let Err(reason) = connection::written(written) {
                    return End::Lost(reason);
                }
            }
            frame = futures::StreamExt::next(&mut conn.reader), if reading => match conn.arrived(frame) {
                Ok(received) => pending = on_frame(cfg, received),
                Err(reason) => return End::Lost(reason),
            },
            _ = heartbeat.tick() => conn.queue_heartbeat(),
            () = &mut silence, if reading => {
                if let Err(reason) = conn.check_silence(cfg, silence.as_mut()) {
                    return End::Lost(reason);
                }
            }
        }
    }
}

/// Turns one frame into an event, or logs why it is not one. Never fails: a bad push is
/// skipped, not a reason to drop the connection (the frame boundaries are intact).
fn on_frame(cfg: &ClientConfig, received: Received) -> Option<Event> {
    match received.header.msg_type {
        MsgType::Push => {}
        MsgType::HeartbeatReply => return None,
        _ => {
            debug!(frame = %describe_received(&received), "ignored an unexpected frame");
            return None;
        }
    }
    let encrypted = received.header.cipher;
    if cfg.encrypt && !encrypted {
        warn!(frame = %describe_received(&received), "dropped an unencrypted push on an encrypted subscription");
        return None;
    }
    let body = match received.body {
        Ok(body) => body,
        Err(e) => {
            warn!(error = %with_causes(&e), "dropped a push whose body could not be read");
            return None;
        }
    };
    match Reply::parse(&body) {
        Ok(reply) if reply.is_success() => Some(Event::Push(Push {
            report: reply.data,
            received_at: SystemTime::now(),
            encrypted,
        })),
        Ok(reply) => {
            warn!(msg = %reply.msg, "the server sent an error push");
            None
        }
        Err(e) => {
            warn!(error = %with_causes(&e), "dropped a push that is not a reply envelope");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The supervision of `PushReceiver::start` around a body that panics: the stream
    /// yields what the body sent, then the panic as an error, once, then ends. (Nothing
    /// known panics in the real body; this tests the mechanism.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_ends_the_stream_with_an_error() {
        let (tx, events) = mpsc::channel(4);
        let (status, _) = watch::channel(Status::Connected { connections: 1 });
        let body = {
            let tx = tx.clone();
            async move {
                let before = Event::Disconnected {
                    reason: "before".into(),
                };
                tx.send(Ok(before)).await.unwrap();
                panic!("boom in the receiver");
            }
        };
        let mut rx = PushReceiver::start(events, tx, status, Uuid([b'u'; 33]), body);
        assert!(matches!(
            rx.recv().await,
            Some(Ok(Event::Disconnected { reason })) if reason == "before"
        ));
        match rx.recv().await {
            Some(Err(Error::BackgroundTask { task, reason })) => {
                assert_eq!(task, "push receiver");
                assert_eq!(reason, "it panicked: boom in the receiver");
            }
            other => panic!("expected the panic as an error, got {other:?}"),
        }
        assert!(rx.recv().await.is_none());
        assert!(rx.next_push().await.is_none());
        match rx.status() {
            Status::Stopped { reason } => assert!(reason.contains("boom"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
