//! Every open connection, by id: what an operator lists, and the switch that closes one
//! on demand (a token removed at a reload, an operator's request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::auth::Grant;

/// How a connection reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The peer's address (`unix:/path` for a Unix socket).
    pub(crate) peer: Box<str>,
    /// The listener's name.
    pub(crate) listener: Arc<str>,
    /// `tcp`, `tls` or `unix`.
    pub(crate) kind: &'static str,
    /// Whether the peer presented a certificate its listener verified (mutual TLS).
    pub(crate) client_cert: bool,
}

/// One open connection, as the rest of the server sees it.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub(crate) id: u64,
    pub(crate) origin: Origin,
    pub(crate) since: SystemTime,
    kill: Notify,
    state: Mutex<EntryState>,
}

/// Why a connection was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server is shutting down: deliver what is queued, then close.
    Shutdown,
    /// Close now, for this reason (an operator, a reload that removed its token).
    Kill(Box<str>),
}

/// What changes in an entry after it is made (one lock, one allocation: an idle
/// connection's footprint counts).
#[derive(Debug, Default)]
struct EntryState {
    /// Why the connection was asked to stop, once it was.
    stop: Option<Stop>,
    /// The grant it authenticated with, if any.
    grant: Option<Arc<Grant>>,
}

impl ConnEntry {
    /// Resolves once the connection is asked to stop: the server's shutdown, or a kill.
    /// One switch for both, so that a connection's task waits on one future, not two.
    pub(crate) async fn stopped(&self) -> Stop {
        self.kill.notified().await;
        lock(&self.state).stop.clone().unwrap_or(Stop::Shutdown)
    }

    pub(crate) fn set_grant(&self, grant: Option<Arc<Grant>>) {
        lock(&self.state).grant = grant;
    }

    pub(crate) fn grant(&self) -> Option<Arc<Grant>> {
        lock(&self.state).grant.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one assignment or one clone.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the server knows of one open connection (see
/// [`ServerHandle::connections`](crate::ServerHandle::connections)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id (what the logs call it, and what closes it).
    pub id: u64,
    /// The peer's address.
    pub peer: String,
    /// The listener's name.
    pub listener: String,
    /// `tcp`, `tls` or `unix`.
    pub kind: &'static str,
    /// When it was accepted.
    pub connected_since: SystemTime,
    /// The token it authenticated with (its name), or `mtls`.
    pub authenticated_as: Option<String>,
}

impl ConnEntry {
    pub(crate) fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            peer: self.origin.peer.to_string(),
            listener: self.origin.listener.to_string(),
            kind: self.origin.kind,
            connected_since: self.since,
            authenticated_as: self.grant().map(|g| g.name.to_string()),
        }
    }
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

    /// Closes every connection whose grant `keep` rejects; how many.
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
    lock(&entry.state).stop.get_or_insert(why);
    // A permit if the connection is not waiting yet: it sees it at its next turn.
    entry.kill.notify_one();
}
