//! Where a client stands, [`Status`], published on a watch channel that the
//! [`PushReceiver`](crate::PushReceiver) and the [`Reporter`](crate::Reporter) hand out.

use tokio::sync::watch;

/// Where a client stands. Read it with `status()` on a
/// [`PushReceiver`](crate::PushReceiver) or a [`Reporter`](crate::Reporter), or watch it
/// change with `status_watch()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Trying to connect. `attempt` counts the attempts of this outage (1 = the first);
    /// `last_error` is why the previous one failed.
    Connecting {
        /// The attempt under way.
        attempt: u32,
        /// Why the previous attempt failed, if there was one.
        last_error: Option<String>,
    },
    /// Connected and handshaken (subscribed, for a receiver). `connections` counts the
    /// connections made so far: more than 1 means it has reconnected.
    Connected {
        /// Connections made since the client started.
        connections: u64,
    },
    /// The connection dropped; a new attempt follows after a backoff delay.
    Disconnected {
        /// Why it dropped.
        reason: String,
    },
    /// Stopped for good: closed by its owner, or it gave up (`max_attempts`).
    Stopped {
        /// Why.
        reason: String,
    },
}

impl Status {
    /// Whether this is [`Status::Connected`].
    pub fn is_connected(&self) -> bool {
        matches!(self, Status::Connected { .. })
    }
}

/// A client's status channel before its first connection: the first attempt under way.
pub(crate) fn status_channel() -> watch::Sender<Status> {
    watch::channel(Status::Connecting {
        attempt: 1,
        last_error: None,
    })
    .0
}
