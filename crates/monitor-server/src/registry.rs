//! Every open connection, by id: what an operator lists (`/api/clients`), and the switch
//! that stops one (the server's shutdown, an operator's request, a token removed at a
//! reload).
//!
//! A connection publishes what it does here in batches (at most every 64 frames, and at
//! each timer event), the way it publishes the server-wide counters: shared counters
//! touched by every frame would bounce between cores. So a listing may be a few frames
//! behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monitor_proto::message::topic::TopicPattern;
use monitor_proto::Uuid;
use serde::Serialize;
use tokio::sync::Notify;

use crate::auth::Grant;
use crate::queue::PushQueue;

/// How a connection reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The peer's address (`unix:/path` for a Unix socket).
    pub(crate) peer: Box<str>,
    /// The listener's name.
    pub(crate) listener: Arc<str>,
    /// What it arrived over.
    pub(crate) kind: Kind,
    /// Whether the peer presented a certificate its listener verified (mutual TLS).
    pub(crate) client_cert: bool,
}

/// What a connection arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Tls,
    Unix,
    /// A WebSocket subscriber on the admin listener (`GET /ws`).
    WebSocket,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Unix => "unix",
            Kind::WebSocket => "ws",
        }
    }
}

/// One open connection, as the rest of the server sees it.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub(crate) id: u64,
    pub(crate) origin: Origin,
    pub(crate) since: SystemTime,
    kill: Notify,
    state: Mutex<EntryState>,
    /// Frames and bytes in and out, and the time of the last frame received (unix ms).
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    last_frame_ms: AtomicU64,
}

/// Why a connection was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server is shutting down: deliver what is queued, then close.
    Shutdown,
    /// Close now, for this reason (an operator, a reload that removed its token).
    Kill(Box<str>),
}

/// What changes in an entry after it is made, now and then (one lock).
#[derive(Debug, Default)]
struct EntryState {
    /// Why the connection was asked to stop, once it was (boxed: rare).
    stop: Option<Box<Stop>>,
    /// The grant it authenticated with, if any.
    grant: Option<Arc<Grant>>,
    /// The uuid of its last frame.
    uuid: Option<Uuid>,
    /// Its subscription, once it has one.
    subscription: Option<SubscriptionInfo>,
    reported: bool,
}

/// A subscription as the registry shows it (its topics are the hub's).
#[derive(Debug)]
pub(crate) struct SubscriptionInfo {
    pub(crate) code: Box<str>,
    pub(crate) encrypted: bool,
    pub(crate) compressed: bool,
    pub(crate) queue: Arc<PushQueue>,
}

/// The counts a connection publishes to its entry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Activity {
    pub(crate) frames_in: u64,
    pub(crate) frames_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) last_frame: Option<SystemTime>,
}

impl ConnEntry {
    /// Resolves once the connection is asked to stop: the server's shutdown, or a kill.
    /// One switch for both, so that a connection's task waits on one future, not two.
    pub(crate) async fn stopped(&self) -> Stop {
        self.kill.notified().await;
        lock(&self.state)
            .stop
            .as_deref()
            .cloned()
            .unwrap_or(Stop::Shutdown)
    }

    pub(crate) fn set_grant(&self, grant: Option<Arc<Grant>>) {
        lock(&self.state).grant = grant;
    }

    pub(crate) fn grant(&self) -> Option<Arc<Grant>> {
        lock(&self.state).grant.clone()
    }

    /// The uuid of the connection's latest frame (set when it changes).
    pub(crate) fn set_uuid(&self, uuid: Uuid) {
        lock(&self.state).uuid = Some(uuid);
    }

    pub(crate) fn uuid(&self) -> Option<Uuid> {
        lock(&self.state).uuid
    }

    pub(crate) fn set_subscription(&self, subscription: SubscriptionInfo) {
        lock(&self.state).subscription = Some(subscription);
    }

    pub(crate) fn set_reported(&self) {
        lock(&self.state).reported = true;
    }

    /// Publishes the connection's counts (totals, not increments).
    pub(crate) fn publish(&self, activity: Activity) {
        self.frames_in.store(activity.frames_in, Relaxed);
        self.frames_out.store(activity.frames_out, Relaxed);
        self.bytes_in.store(activity.bytes_in, Relaxed);
        self.bytes_out.store(activity.bytes_out, Relaxed);
        if let Some(at) = activity.last_frame {
            self.last_frame_ms.store(unix_ms(at), Relaxed);
        }
    }

    /// What `/api/clients` shows of it; `topics` are its subscription's, from the hub.
    pub(crate) fn info(&self, topics: Option<&[TopicPattern]>) -> ClientInfo {
        let state = lock(&self.state);
        let subscription = state.subscription.as_ref();
        let depth = subscription.map(|s| s.queue.depth()).unwrap_or_default();
        let last_frame_ms = self.last_frame_ms.load(Relaxed);
        ClientInfo {
            id: self.id,
            uuid: state.uuid.map(|u| u.to_string()),
            peer: self.origin.peer.to_string(),
            listener: self.origin.listener.to_string(),
            kind: self.origin.kind.as_str(),
            role: role(subscription.is_some(), state.reported),
            code: subscription.map(|s| s.code.to_string()),
            topics: topics
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
            encrypted: subscription.is_some_and(|s| s.encrypted),
            compressed: subscription.is_some_and(|s| s.compressed),
            authenticated_as: state.grant.as_ref().map(|g| g.name.to_string()),
            connected_since_ms: unix_ms(self.since),
            last_frame_ms: (last_frame_ms > 0).then_some(last_frame_ms),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            pushes_queued: depth.pushes as u64,
            pushes_dropped: depth.dropped,
        }
    }
}

fn role(subscribed: bool, reported: bool) -> &'static str {
    match (subscribed, reported) {
        (true, true) => "subscriber+reporter",
        (true, false) => "subscriber",
        (false, true) => "reporter",
        (false, false) => "none",
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one assignment or one clone.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the server knows of one open connection, as `GET /api/clients` lists it (see
/// [`ServerHandle::connections`](crate::ServerHandle::connections)). Counts may be a few
/// frames behind: connections publish them in batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The connection's id (what the logs call it, and what `DELETE` takes).
    pub id: u64,
    /// The uuid of its latest frame.
    pub uuid: Option<String>,
    /// The peer's address.
    pub peer: String,
    /// The listener's name.
    pub listener: String,
    /// `tcp`, `tls`, `unix` or `ws`.
    pub kind: &'static str,
    /// `subscriber`, `reporter`, `subscriber+reporter` or `none`.
    pub role: &'static str,
    /// Its subscription's `code`.
    pub code: Option<String>,
    /// Its subscription's topics, in canonical form (`[]`: every report).
    pub topics: Vec<String>,
    /// Whether its pushes are encrypted (the in-band layer).
    pub encrypted: bool,
    /// Whether its pushes are compressed.
    pub compressed: bool,
    /// The token it authenticated with (its name), or `mtls`.
    pub authenticated_as: Option<String>,
    /// When it was accepted, unix milliseconds.
    pub connected_since_ms: u64,
    /// When its last complete frame arrived, unix milliseconds.
    pub last_frame_ms: Option<u64>,
    /// Frames received.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Pushes queued for it and not yet written.
    pub pushes_queued: u64,
    /// Pushes dropped because its queue was full.
    pub pushes_dropped: u64,
}

/// The open connections.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: Mutex<Conns>,
}

#[derive(Debug, Default)]
struct Conns {
    by_id: HashMap<u64, Arc<ConnEntry>>,
    /// Set at shutdown: a connection registered after it stops at once.
    shut_down: bool,
}

impl Registry {
    /// Adds connection `id`; it stays until [`Registry::remove`].
    pub(crate) fn add(&self, id: u64, origin: Origin) -> Arc<ConnEntry> {
        let entry = Arc::new(ConnEntry {
            id,
            origin,
            since: SystemTime::now(),
            kill: Notify::new(),
            state: Mutex::default(),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_frame_ms: AtomicU64::new(0),
        });
        let mut conns = lock(&self.conns);
        if conns.shut_down {
            stop(&entry, Stop::Shutdown);
        }
        conns.by_id.insert(id, Arc::clone(&entry));
        entry
    }

    pub(crate) fn remove(&self, id: u64) {
        lock(&self.conns).by_id.remove(&id);
    }

    /// Tells every connection, and every one registered from now on, that the server is
    /// shutting down.
    pub(crate) fn shut_down(&self) {
        let entries: Vec<Arc<ConnEntry>> = {
            let mut conns = lock(&self.conns);
            conns.shut_down = true;
            conns.by_id.values().cloned().collect()
        };
        for entry in entries {
            stop(&entry, Stop::Shutdown);
        }
    }

    /// Asks connection `id` to close, saying why; whether it was open.
    pub(crate) fn kill(&self, id: u64, why: String) -> bool {
        let entry = lock(&self.conns).by_id.get(&id).cloned();
        match entry {
            Some(entry) => {
                stop(&entry, Stop::Kill(why.into()));
                true
            }
            None => false,
        }
    }

    /// Closes every connection whose grant `doomed` condemns; how many.
    pub(crate) fn kill_where(&self, mut doomed: impl FnMut(&Grant) -> bool, why: &str) -> usize {
        let mut killed = 0;
        for entry in self.snapshot() {
            if entry.grant().is_some_and(|g| doomed(&g)) {
                stop(&entry, Stop::Kill(why.into()));
                killed += 1;
            }
        }
        killed
    }

    /// Every open connection now. The registry is locked only to copy the references.
    pub(crate) fn snapshot(&self) -> Vec<Arc<ConnEntry>> {
        lock(&self.conns).by_id.values().cloned().collect()
    }
}

fn stop(entry: &ConnEntry, why: Stop) {
    // The first reason stands (a kill during the drain does not restart it).
    lock(&entry.state).stop.get_or_insert_with(|| Box::new(why));
    // A permit if the connection is not waiting yet: it sees it at its next turn.
    entry.kill.notify_one();
}
