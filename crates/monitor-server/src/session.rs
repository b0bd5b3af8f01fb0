//! What one connection has set up with the protocol, whatever carries it: who the client
//! is and what it subscribed to. The request handlers (`cmd`) read and change it; the
//! connection loop that owns it takes the subscription's pushes and writes them.

use std::sync::Arc;

use monitor_proto::Recipient;

use crate::auth::Grant;
use crate::queue::{Batch, PushQueue};

/// A subscription as the connection sends it: pushes go to its recipient (its uuid, and
/// the flags of its subscribe) and come from its queue (a new one per subscribe, which
/// makes a re-subscribe a barrier).
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) to: Recipient,
    pub(crate) queue: Arc<PushQueue>,
}

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) subscription: Option<Subscription>,
    /// Pushes taken from the subscription's queue and not yet encoded, oldest first.
    pub(crate) batch: Batch,
    /// Whether the connection has published a report.
    pub(crate) reported: bool,
    /// What it may do, once it has authenticated (a token, or a client certificate).
    pub(crate) grant: Option<Arc<Grant>>,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session {
            subscription: None,
            batch: Batch::default(),
            reported: false,
            grant: None,
        }
    }

    /// The connection's role, for the logs.
    pub(crate) fn role(&self) -> &'static str {
        match (self.subscription.is_some(), self.reported) {
            (true, true) => "subscriber+reporter",
            (true, false) => "subscriber",
            (false, true) => "reporter",
            (false, false) => "none",
        }
    }
}
