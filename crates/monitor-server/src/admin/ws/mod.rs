//! WebSocket subscribers (`GET /ws` on the admin listener): browsers, and anything else
//! that speaks HTTP better than the binary protocol, subscribe the way a type-5 subscribe
//! does and get each matching report as one text message.
//!
//! A WebSocket subscriber is a connection like any other: a place under
//! `max_connections`, an entry in the registry (kind `ws`), and a subscription made by
//! the same handler as the binary protocol's (`cmd`), so with the same topic limits,
//! grants, byte-bounded queue and slow-consumer policy. Only the framing differs:
//!
//! - the first text message is the subscribe body, `{"code":…,"topics":[…],"token":…}`;
//!   it must come within `frame_timeout_secs` of the upgrade;
//! - the answer is the type-6 acknowledgement's envelope, as text; a refusal (malformed,
//!   unauthorized, forbidden) is followed by a close frame (1008) with the reason;
//! - each push is the report's JSON object as reported, byte for byte: a slice of the
//!   push body every subscriber shares, never a copy;
//! - a later text message subscribes again, with the barrier of a type-5 re-subscribe;
//! - the server pings once nothing has come for half of `idle_timeout_secs`, and closes
//!   (1001) once nothing has come for all of it;
//! - binary messages are refused (1003), messages over `max_frame_len` too (1009);
//! - a push that the socket takes nothing of for `write_timeout_secs` closes the
//!   connection.
//!
//! A browser page on any site can open a WebSocket to a loopback address, so a request
//! with an `Origin` header is served only when that origin is the admin listener's own
//! (the dashboard) or listed in `[admin] allowed_origins`: a page elsewhere cannot read
//! the reports through an operator's browser.

mod close;
mod upgrade;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use monitor_proto::{Header, MsgType, Uuid};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::{debug, info, warn};

use close::{read_error, refusal_text, WsClose};
pub(super) use upgrade::upgrade;

use crate::cmd::{self, Ctx};
use crate::config::Settings;
use crate::hub::Wakes;
use crate::queue::Push;
use crate::registry::{Activity, ConnEntry, Origin, Stop};
use crate::session::Session;
use crate::state::{ConnSlot, Shared};
use crate::stats::LATENCY_SAMPLE;
use crate::stats::{ProtocolErrorKind, Stats};

/// How long closing may take: the close frame, and the peer's answer to it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages counted locally before they are added to the shared stats.
const STATS_BATCH: u64 = 64;

/// What the connection reads and writes: one WebSocket, not split in two halves (a split
/// would take a lock for every message sent).
type Socket = WebSocket;

/// What woke the connection: a message from the peer, or pushes to send.
enum Woken {
    Message(Option<Result<Message, axum::Error>>),
    Pushes(bool),
}

/// One WebSocket subscriber's state.
struct WsConn {
    shared: Arc<Shared>,
    entry: Arc<ConnEntry>,
    _slot: ConnSlot,
    settings: Arc<Settings>,
    settings_rx: watch::Receiver<Arc<Settings>>,
    session: Session,
    /// The uuid its subscribes are made with (the protocol's handlers want one).
    uuid: Uuid,
    opened: Instant,
    /// When the last message (a pong included) arrived.
    last_seen: Instant,
    /// Whether a ping is out since then.
    pinged: bool,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    frames_in_counted: u64,
    frames_out_counted: u64,
    pushes_sent: u32,
}

async fn serve(socket: WebSocket, origin: Origin, shared: Arc<Shared>, slot: ConnSlot) {
    let mut conn = WsConn::new(shared, origin, slot);
    debug!(peer = %conn.entry.origin.peer, id = conn.entry.id, "WebSocket opened");
    let mut socket = socket;
    let reason = conn.run(&mut socket).await;
    conn.flush_stats();
    if let Some(frame) = reason.close_frame() {
        // The close frame, then the peer's answer to it (or its end), so that the frame
        // is read before the socket goes: closing with unread input would reset it.
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        if let Ok(Ok(())) = timeout_at(deadline, socket.send(Message::Close(Some(frame)))).await {
            let _ = timeout_at(deadline, async {
                while let Some(Ok(_)) = socket.next().await {}
            })
            .await;
        }
    }
    conn.closed(&reason);
}

impl Drop for WsConn {
    fn drop(&mut self) {
        if self.session.subscription.is_some() {
            self.shared.hub.unsubscribe(self.entry.id);
        }
        self.shared.registry.remove(self.entry.id);
    }
}

impl WsConn {
    fn new(shared: Arc<Shared>, origin: Origin, slot: ConnSlot) -> WsConn {
        let id = shared.next_conn_id();
        let mut settings_rx = shared.settings_receiver();
        let settings = settings_rx.borrow_and_update().clone();
        let entry = shared.registry.add(id, origin);
        let mut uuid = [b'0'; 33];
        let name = format!("ws{id:031}");
        uuid.copy_from_slice(&name.as_bytes()[name.len() - 33..]);
        let now = Instant::now();
        WsConn {
            shared,
            entry,
            _slot: slot,
            settings,
            settings_rx,
            session: Session::new(),
            uuid: Uuid(uuid),
            opened: now,
            last_seen: now,
            pinged: false,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            frames_in_counted: 0,
            frames_out_counted: 0,
            pushes_sent: 0,
        }
    }

    async fn run(&mut self, socket: &mut Socket) -> WsClose {
        let entry = Arc::clone(&self.entry);
        let stopped = entry.stopped();
        tokio::pin!(stopped);
        loop {
            if self.settings_rx.has_changed().unwrap_or(false) {
                self.settings = self.settings_rx.borrow_and_update().clone();
            }
            let deadline = self.next_deadline();
            let queue = self.session.subscription.as_ref().map(|s| &s.queue);
            let batch = &mut self.session.batch;
            // The peer's messages first (a close, a re-subscribe), then the pushes: one
            // future for both, so that the socket is not split.
            let woken = std::future::poll_fn(|cx| {
                if let std::task::Poll::Ready(message) = socket.poll_next_unpin(cx) {
                    return std::task::Poll::Ready(Woken::Message(message));
                }
                match queue {
                    Some(queue) => queue.poll_take(cx, batch).map(Woken::Pushes),
                    None => std::task::Poll::Pending,
                }
            });
            tokio::select! {
                biased;
                stop = &mut stopped => return match stop {
                    Stop::Shutdown => {
                        self.drain(socket).await;
                        WsClose::Shutdown
                    }
                    Stop::Kill(why) => WsClose::Killed(why),
                },
                woken = woken => match woken {
                    Woken::Message(None) => return WsClose::PeerClosed,
                    Woken::Message(Some(Err(e))) => return read_error(e),
                    Woken::Message(Some(Ok(message))) => {
                        if let Some(reason) = self.on_message(message, socket).await {
                            return reason;
                        }
                    }
                    Woken::Pushes(false) => return WsClose::SlowConsumer,
                    Woken::Pushes(true) => {
                        let deadline = Instant::now() + self.write_timeout();
                        if let Some(reason) = self.send_batch(socket, deadline).await {
                            return reason;
                        }
                    }
                },
                () = sleep_until(deadline) => {
                    self.flush_stats();
                    if let Some(reason) = self.expired(socket).await {
                        return reason;
                    }
                }
            }
        }
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.write_timeout_secs)
    }

    /// Before a subscribe: its deadline. After: the next ping, or the idle deadline once
    /// a ping is out.
    fn next_deadline(&self) -> Instant {
        let idle = Duration::from_secs(self.settings.idle_timeout_secs);
        let idle_at = self.last_seen + idle;
        if self.session.subscription.is_none() {
            let first = self.opened + Duration::from_secs(self.settings.frame_timeout_secs);
            return first.min(idle_at);
        }
        if self.pinged {
            idle_at
        } else {
            self.last_seen + idle / 2
        }
    }

    /// The deadline that passed: a reason to close, or a ping sent.
    async fn expired(&mut self, socket: &mut Socket) -> Option<WsClose> {
        let now = Instant::now();
        let s = &self.settings;
        if self.session.subscription.is_none()
            && now >= self.opened + Duration::from_secs(s.frame_timeout_secs)
        {
            return Some(WsClose::NoSubscribe(s.frame_timeout_secs));
        }
        if now >= self.last_seen + Duration::from_secs(s.idle_timeout_secs) {
            return Some(WsClose::Idle(s.idle_timeout_secs));
        }
        if self.session.subscription.is_some() && !self.pinged {
            self.pinged = true;
            let deadline = now + self.write_timeout();
            let sent = timeout_at(deadline, socket.send(Message::Ping(Bytes::new()))).await;
            return self.sent(sent);
        }
        None
    }

    /// One message from the peer; the reason to close, if it is one.
    async fn on_message(&mut self, message: Message, socket: &mut Socket) -> Option<WsClose> {
        self.frames_in += 1;
        self.last_seen = Instant::now();
        self.pinged = false;
        match message {
            Message::Text(text) => {
                self.bytes_in += text.len() as u64;
                let answer = self.subscribe(Bytes::from(text));
                let ack = Utf8Bytes::try_from(answer.json.clone()).unwrap_or_default();
                let deadline = Instant::now() + self.write_timeout();
                if let Some(reason) =
                    self.sent(timeout_at(deadline, socket.send(Message::Text(ack))).await)
                {
                    return Some(reason);
                }
                self.frames_out += 1;
                self.bytes_out += answer.json.len() as u64;
                answer
                    .ending
                    .map(|_| WsClose::Refused(refusal_text(&answer.json)))
            }
            Message::Binary(bytes) => {
                self.bytes_in += bytes.len() as u64;
                Some(WsClose::Binary)
            }
            // tungstenite answers pings itself; a pong is a sign of life.
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => Some(WsClose::PeerClosed),
        }
    }

    /// A subscribe body, handled as a type-5 subscribe without layers.
    fn subscribe(&mut self, body: Bytes) -> cmd::Answer {
        let header = Header::new(MsgType::Subscribe, self.uuid);
        // Subscribing publishes nothing: no subscriber is ever woken from here.
        let mut wakes = Wakes::default();
        let mut ctx = Ctx {
            shared: &self.shared,
            settings: &self.settings,
            session: &mut self.session,
            entry: &self.entry,
            wakes: &mut wakes,
            peer: &self.entry.origin.peer,
        };
        cmd::handle(&mut ctx, &header, Ok(body))
    }

    /// Sends the taken pushes, oldest first, and flushes them, all by `deadline`.
    async fn send_batch(&mut self, socket: &mut Socket, deadline: Instant) -> Option<WsClose> {
        let mut sampled = None;
        let sent = timeout_at(deadline, async {
            while let Some(push) = self.session.batch.pop_front() {
                let Some(text) = report_text(&push) else {
                    Stats::add(&self.shared.stats.pushes_dropped, 1);
                    continue;
                };
                self.pushes_sent = self.pushes_sent.wrapping_add(1);
                if self.pushes_sent.is_multiple_of(LATENCY_SAMPLE) {
                    sampled = Some(push.arrived());
                }
                self.bytes_out += text.len() as u64;
                self.frames_out += 1;
                socket.feed(Message::Text(text)).await?;
            }
            socket.flush().await
        })
        .await;
        let failed = self.sent(sent);
        if failed.is_none() {
            if let Some(arrived) = sampled {
                self.shared
                    .push_latency
                    .observe(arrived.elapsed().as_secs_f64());
            }
            if self.frames_out - self.frames_out_counted >= STATS_BATCH {
                self.flush_stats();
            }
        }
        failed
    }

    /// The outcome of a send bounded by a deadline: the reason to close if it failed.
    fn sent(
        &self,
        sent: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>,
    ) -> Option<WsClose> {
        match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(WsClose::Io(e.to_string())),
            Err(_) => Some(WsClose::WriteTimeout(self.settings.write_timeout_secs)),
        }
    }

    /// Shutdown: what is queued is sent, by the drain deadline.
    async fn drain(&mut self, socket: &mut Socket) {
        if let Some(sub) = &self.session.subscription {
            sub.queue.close();
            sub.queue.take_now(&mut self.session.batch);
        }
        let deadline = Instant::now() + Duration::from_secs(self.settings.drain_timeout_secs);
        let _ = self.send_batch(socket, deadline).await;
    }

    /// Adds this connection's messages to the server's counters and its registry entry.
    fn flush_stats(&mut self) {
        let stats = &self.shared.stats;
        let slot = crate::stats::WEBSOCKET_SLOT;
        for (count, counted, total, by_type) in [
            (
                self.frames_in,
                self.frames_in_counted,
                &stats.frames_in,
                &stats.frames_in_by_type,
            ),
            (
                self.frames_out,
                self.frames_out_counted,
                &stats.frames_out,
                &stats.frames_out_by_type,
            ),
        ] {
            Stats::add(total, count - counted);
            Stats::add(&by_type[slot], count - counted);
        }
        self.frames_in_counted = self.frames_in;
        self.frames_out_counted = self.frames_out;
        let last_frame = (self.frames_in > 0)
            .then(|| SystemTime::now().checked_sub(self.last_seen.elapsed()))
            .flatten();
        self.entry.publish(Activity {
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            last_frame,
        });
    }

    fn closed(&self, reason: &WsClose) {
        let stats = &self.shared.stats;
        match reason {
            WsClose::TooLarge(_) => stats.protocol_error(ProtocolErrorKind::FrameTooLong),
            WsClose::Binary => stats.protocol_error(ProtocolErrorKind::OtherFrame),
            WsClose::NoSubscribe(_) => Stats::add(&stats.frame_timeouts, 1),
            WsClose::Idle(_) => Stats::add(&stats.idle_timeouts, 1),
            WsClose::WriteTimeout(_) => Stats::add(&stats.write_timeouts, 1),
            _ => {}
        }
        let peer = &self.entry.origin.peer;
        let role = self.session.role();
        let duration_ms = self.opened.elapsed().as_millis() as u64;
        let (frames_in, frames_out) = (self.frames_in, self.frames_out);
        if reason.is_peer_fault() {
            warn!(peer = %peer, kind = "ws", role, duration_ms, frames_in, frames_out, reason = %reason, "connection closed");
        } else {
            info!(peer = %peer, kind = "ws", role, duration_ms, frames_in, frames_out, reason = %reason, "connection closed");
        }
    }
}

/// A push as a WebSocket subscriber gets it: the report, not its envelope.
fn report_text(push: &Push) -> Option<Utf8Bytes> {
    push.report_text().cloned()
}
