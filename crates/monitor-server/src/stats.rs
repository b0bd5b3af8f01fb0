//! Server-wide counters. Connections add their frame counts in batches, not per frame, so
//! the hot path does not contend on shared cache lines.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared by every task of a server.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) reports: AtomicU64,
    pub(crate) pushes_queued: AtomicU64,
    pub(crate) pushes_dropped: AtomicU64,
    pub(crate) slow_consumers_disconnected: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) frame_timeouts: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) budget_waits: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) auth_granted: AtomicU64,
    pub(crate) auth_unauthorized: AtomicU64,
    pub(crate) auth_forbidden: AtomicU64,
    pub(crate) auth_closed_at_reload: AtomicU64,
    pub(crate) cluster_published: AtomicU64,
    pub(crate) cluster_publish_failed: AtomicU64,
    pub(crate) cluster_overflow: AtomicU64,
    pub(crate) cluster_received: AtomicU64,
    pub(crate) cluster_missed: AtomicU64,
    pub(crate) cluster_out_of_order: AtomicU64,
    pub(crate) cluster_rejected: AtomicU64,
    pub(crate) cluster_incoming_dropped: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_refused: u64,
    /// Complete frames received. Each connection adds its count every 64 frames and when
    /// it closes, so the last few frames of an open connection may not show yet.
    pub frames_in: u64,
    /// Frames written (replies and pushes), counted in batches like `frames_in`.
    pub frames_out: u64,
    /// Reports fanned out (counted as each is published).
    pub reports: u64,
    /// Pushes queued for subscribers (the sum of every report's `delivered`).
    pub pushes_queued: u64,
    /// Pushes dropped because a subscriber's queue was full (`slow_consumer = "drop"`).
    pub pushes_dropped: u64,
    /// Subscribers disconnected because their queue was full (`slow_consumer = "disconnect"`).
    pub slow_consumers_disconnected: u64,
    /// Connections closed for breaking the protocol (bad header, wrong message type, ...).
    pub protocol_errors: u64,
    /// Connections closed because a frame was incomplete `frame_timeout_secs` after its
    /// first bytes.
    pub frame_timeouts: u64,
    /// Connections closed because their socket took none of their pending output for
    /// `write_timeout_secs` (subscribers that stopped reading).
    pub write_timeouts: u64,
    /// Times a connection stopped reading because its large frame did not fit in what
    /// was left of `max_buffered_bytes`.
    pub budget_waits: u64,
    /// TLS handshakes that failed (wrong CA, no client certificate on a mutual-TLS
    /// listener, plaintext sent to a TLS port, a stalled handshake).
    pub tls_handshake_failures: u64,
    /// Tokens and client certificates accepted.
    pub auth_granted: u64,
    /// Wrong tokens (answered "unauthorized", then closed).
    pub auth_unauthorized: u64,
    /// Subscribes and reports refused as outside their grants, or before authenticating.
    pub auth_forbidden: u64,
    /// Connections closed because a reload removed or changed the grant they held.
    pub auth_closed_at_reload: u64,
    /// Reports this node published to the cluster's Redis channel (Redis acknowledged
    /// them). Always 0 without `[cluster]`, like the other `cluster_` counters.
    pub cluster_published: u64,
    /// Reports this node could not publish: Redis was unavailable, or the pipeline that
    /// carried them failed (never retried: Redis may have delivered part of it).
    pub cluster_publish_failed: u64,
    /// Reports not published because the outgoing queue (`max_outgoing_bytes`) was full;
    /// they were still delivered locally.
    pub cluster_overflow: u64,
    /// Reports received from other nodes through Redis.
    pub cluster_received: u64,
    /// Reports of other nodes that never arrived here: gaps in a node's sequence, whatever
    /// the cause (its publish failed or overflowed, Redis dropped them, or this node's
    /// incoming queue was full).
    pub cluster_missed: u64,
    /// Reports of another node that arrived again or out of order, and were dropped (0
    /// unless something duplicates messages on the channel).
    pub cluster_out_of_order: u64,
    /// Messages on the channel that were malformed, too large, or refused by the size
    /// rule here; dropped.
    pub cluster_rejected: u64,
    /// Messages dropped on arrival because the incoming queue was full.
    pub cluster_incoming_dropped: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            reports: self.reports.load(Relaxed),
            pushes_queued: self.pushes_queued.load(Relaxed),
            pushes_dropped: self.pushes_dropped.load(Relaxed),
            slow_consumers_disconnected: self.slow_consumers_disconnected.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            frame_timeouts: self.frame_timeouts.load(Relaxed),
            write_timeouts: self.write_timeouts.load(Relaxed),
            budget_waits: self.budget_waits.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            auth_granted: self.auth_granted.load(Relaxed),
            auth_unauthorized: self.auth_unauthorized.load(Relaxed),
            auth_forbidden: self.auth_forbidden.load(Relaxed),
            auth_closed_at_reload: self.auth_closed_at_reload.load(Relaxed),
            cluster_published: self.cluster_published.load(Relaxed),
            cluster_publish_failed: self.cluster_publish_failed.load(Relaxed),
            cluster_overflow: self.cluster_overflow.load(Relaxed),
            cluster_received: self.cluster_received.load(Relaxed),
            cluster_missed: self.cluster_missed.load(Relaxed),
            cluster_out_of_order: self.cluster_out_of_order.load(Relaxed),
            cluster_rejected: self.cluster_rejected.load(Relaxed),
            cluster_incoming_dropped: self.cluster_incoming_dropped.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}
