//! Server-wide counters. Connections add their frame counts in batches, not per frame, so
//! the hot path does not contend on shared cache lines.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use monitor_proto::{BodyError, Error as ProtoError, MsgType};

/// A connection records the latency of one push in this many.
pub(crate) const LATENCY_SAMPLE: u32 = 64;

/// The histogram of the time from a report's arrival to its push being written, in
/// seconds: 50 µs to about 3 s. The one measure taken on the hot path, hence sampled.
pub(crate) fn push_latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16),
    )
}

/// Live counters, shared by every task of a server.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    /// By [`FrameTally`] slot: the four types each way, then WebSocket messages.
    pub(crate) frames_in_by_type: [AtomicU64; FRAME_SLOTS],
    pub(crate) frames_out_by_type: [AtomicU64; FRAME_SLOTS],
    /// By [`ProtocolErrorKind`].
    pub(crate) protocol_errors_by_kind: [AtomicU64; ProtocolErrorKind::COUNT],
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) reports_too_large: AtomicU64,
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
    /// `frames_in` by type (WebSocket messages apart); the parts add up to it.
    pub frames_in_by_type: FramesInByType,
    /// `frames_out` by type (WebSocket messages apart); the parts add up to it.
    pub frames_out_by_type: FramesOutByType,
    /// Reports fanned out (counted as each is published).
    pub reports: u64,
    /// Pushes queued for subscribers (the sum of every report's `delivered`).
    pub pushes_queued: u64,
    /// Pushes dropped because a subscriber's queue was full (`slow_consumer = "drop"`).
    pub pushes_dropped: u64,
    /// Subscribers disconnected because their queue was full (`slow_consumer = "disconnect"`).
    pub slow_consumers_disconnected: u64,
    /// Connections closed for breaking the protocol (bad header, wrong message type, ...):
    /// the sum of the frame kinds of `protocol_errors_by_kind`.
    pub protocol_errors: u64,
    /// Every protocol error by kind: the frames that closed their connection, and the
    /// bodies that were answered with an error reply (spec §3).
    pub protocol_errors_by_kind: ProtocolErrors,
    /// How often each limit was reached (several are also counted above, under the
    /// name of what they did).
    pub limits_hit: LimitsHit,
    /// Connections closed because a frame was incomplete `frame_timeout_secs` after its
    /// first bytes (a WebSocket subscriber: because it sent no subscribe in that time).
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
            frames_in_by_type: FramesInByType::read(&self.frames_in_by_type),
            frames_out_by_type: FramesOutByType::read(&self.frames_out_by_type),
            reports: self.reports.load(Relaxed),
            pushes_queued: self.pushes_queued.load(Relaxed),
            pushes_dropped: self.pushes_dropped.load(Relaxed),
            slow_consumers_disconnected: self.slow_consumers_disconnected.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            protocol_errors_by_kind: ProtocolErrors::read(&self.protocol_errors_by_kind),
            limits_hit: self.limits_hit(),
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

    /// The limits, each with the counter that says how often it was reached.
    fn limits_hit(&self) -> LimitsHit {
        let kind = |k: ProtocolErrorKind| self.protocol_errors_by_kind[k as usize].load(Relaxed);
        LimitsHit {
            max_connections: self.connections_refused.load(Relaxed),
            idle_timeout: self.idle_timeouts.load(Relaxed),
            frame_timeout: self.frame_timeouts.load(Relaxed),
            write_timeout: self.write_timeouts.load(Relaxed),
            max_buffered_bytes: self.budget_waits.load(Relaxed),
            max_frame_len: kind(ProtocolErrorKind::FrameTooLong),
            max_inflated_len: kind(ProtocolErrorKind::InflatedTooLarge),
            max_topics: kind(ProtocolErrorKind::TooManyTopics),
            max_topic_len: kind(ProtocolErrorKind::TopicTooLong),
            push_size: self.reports_too_large.load(Relaxed),
            subscriber_queue_drop: self.pushes_dropped.load(Relaxed),
            subscriber_queue_disconnect: self.slow_consumers_disconnected.load(Relaxed),
        }
    }

    /// Counts a protocol error of `kind`; a frame kind counts in `protocol_errors` too.
    pub(crate) fn protocol_error(&self, kind: ProtocolErrorKind) {
        self.protocol_errors_by_kind[kind as usize].fetch_add(1, Relaxed);
        if kind.closes() {
            self.protocol_errors.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// Slots of the frames-by-type counters: the four message types of a direction (requests
/// in, replies and pushes out), then WebSocket messages.
pub(crate) const FRAME_SLOTS: usize = 5;

/// The slot of WebSocket messages in the frames-by-type counters.
pub(crate) const WEBSOCKET_SLOT: usize = 4;

/// The frames-by-type slot of a message type: requests 1, 3, 5, 7 and replies 2, 4, 6, 8
/// each take slots 0 to 3.
fn frame_slot(msg_type: MsgType) -> usize {
    (msg_type as usize - 1) / 2
}

/// One connection's frames not yet added to the server's counters, by type: a few
/// plain integers on the hot path, added to the shared atomics in batches.
#[derive(Debug, Default)]
pub(crate) struct FrameTally {
    counts: [u32; 4],
}

impl FrameTally {
    /// One more frame of `msg_type`.
    pub(crate) fn note(&mut self, msg_type: MsgType) {
        let count = &mut self.counts[frame_slot(msg_type)];
        *count = count.saturating_add(1);
    }

    /// Frames noted since the last [`drain_into`](Self::drain_into).
    pub(crate) fn pending(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Adds the noted frames to `by_type` and to `total`, and starts again from zero.
    pub(crate) fn drain_into(&mut self, by_type: &[AtomicU64; FRAME_SLOTS], total: &AtomicU64) {
        Stats::add(total, self.pending());
        for (slot, count) in by_type.iter().zip(std::mem::take(&mut self.counts)) {
            Stats::add(slot, u64::from(count));
        }
    }
}

/// Frames received, by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FramesInByType {
    /// Key requests (type 1).
    pub key_request: u64,
    /// Heartbeats (type 3).
    pub heartbeat: u64,
    /// Subscribes (type 5).
    pub subscribe: u64,
    /// Reports (type 7).
    pub report: u64,
    /// Messages from WebSocket subscribers (their subscribes, pings and pongs).
    pub websocket: u64,
}

impl FramesInByType {
    fn read(slots: &[AtomicU64; FRAME_SLOTS]) -> FramesInByType {
        let [key_request, heartbeat, subscribe, report, websocket] =
            slots.each_ref().map(|a| a.load(Relaxed));
        FramesInByType {
            key_request,
            heartbeat,
            subscribe,
            report,
            websocket,
        }
    }
}

/// Frames written, by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FramesOutByType {
    /// Key replies (type 2).
    pub key_reply: u64,
    /// Heartbeat replies (type 4).
    pub heartbeat_reply: u64,
    /// Pushes (type 6): the reports fanned out, and the replies to subscribes, which
    /// share the type.
    pub push: u64,
    /// Report acknowledgements (type 8).
    pub report_ack: u64,
    /// Messages to WebSocket subscribers (replies to their subscribes, and reports).
    pub websocket: u64,
}

impl FramesOutByType {
    fn read(slots: &[AtomicU64; FRAME_SLOTS]) -> FramesOutByType {
        let [key_reply, heartbeat_reply, push, report_ack, websocket] =
            slots.each_ref().map(|a| a.load(Relaxed));
        FramesOutByType {
            key_reply,
            heartbeat_reply,
            push,
            report_ack,
            websocket,
        }
    }
}

/// What broke the protocol. The first kinds are a frame's header (the connection is
/// closed: the stream cannot go on); the others a body (answered with an error reply,
/// and the connection goes on, but for a subscribe, which is refused and closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtocolErrorKind {
    BadVersion,
    BadMsgType,
    WrongDirection,
    BadFlag,
    FrameTooShort,
    FrameTooLong,
    BadHeaderCrc,
    OtherFrame,
    BadCompression,
    InflatedTooLarge,
    DecryptFailed,
    NoSessionKey,
    MalformedBody,
    TooManyTopics,
    TopicTooLong,
    BadPublicKey,
}

impl ProtocolErrorKind {
    pub(crate) const COUNT: usize = 16;

    /// The kind of a decoding error, which closes its connection.
    pub(crate) fn of_frame(e: &ProtoError) -> ProtocolErrorKind {
        match e {
            ProtoError::BadVersion { .. } => ProtocolErrorKind::BadVersion,
            ProtoError::BadMsgType { .. } => ProtocolErrorKind::BadMsgType,
            ProtoError::WrongDirection { .. } => ProtocolErrorKind::WrongDirection,
            ProtoError::BadFlag { .. } => ProtocolErrorKind::BadFlag,
            ProtoError::FrameTooShort { .. } => ProtocolErrorKind::FrameTooShort,
            ProtoError::FrameTooLong { .. } => ProtocolErrorKind::FrameTooLong,
            ProtoError::BadHeaderCrc { .. } => ProtocolErrorKind::BadHeaderCrc,
            _ => ProtocolErrorKind::OtherFrame,
        }
    }

    /// The kind of a body's error, which is answered.
    pub(crate) fn of_body(e: &BodyError) -> ProtocolErrorKind {
        match e {
            BodyError::BadZlib { .. }
            | BodyError::TruncatedZlib
            | BodyError::ZlibTrailingBytes { .. } => ProtocolErrorKind::BadCompression,
            BodyError::InflatedTooLarge { .. } => ProtocolErrorKind::InflatedTooLarge,
            BodyError::EncryptedBodyTooShort { .. } | BodyError::DecryptFailed => {
                ProtocolErrorKind::DecryptFailed
            }
            BodyError::NoSessionKey => ProtocolErrorKind::NoSessionKey,
            BodyError::TooManyTopics { .. } => ProtocolErrorKind::TooManyTopics,
            BodyError::TopicTooLong { .. } => ProtocolErrorKind::TopicTooLong,
            BodyError::PublicKeyNotBase64 { .. } | BodyError::PublicKeyLength { .. } => {
                ProtocolErrorKind::BadPublicKey
            }
            _ => ProtocolErrorKind::MalformedBody,
        }
    }

    /// Whether it is a frame's (its connection closed), counted in `protocol_errors`.
    fn closes(self) -> bool {
        (self as usize) <= ProtocolErrorKind::OtherFrame as usize
    }
}

/// Protocol errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProtocolErrors {
    /// Header byte 0 was not 1 (closed).
    pub bad_version: u64,
    /// Header byte 1 was not a message type (closed).
    pub bad_msg_type: u64,
    /// A server-to-client type sent to the server (closed).
    pub wrong_direction: u64,
    /// A cipher or compress flag that was neither 0 nor 1 (closed).
    pub bad_flag: u64,
    /// A length shorter than the header (closed).
    pub frame_too_short: u64,
    /// A length over `max_frame_len` (closed).
    pub frame_too_long: u64,
    /// A header CRC that did not match (closed).
    pub bad_header_crc: u64,
    /// Any other header error (closed).
    pub other_frame: u64,
    /// A compressed body zlib refused (answered).
    pub bad_compression: u64,
    /// A compressed body that inflated past `max_inflated_len` (answered).
    pub inflated_too_large: u64,
    /// An encrypted body that failed to decrypt (answered).
    pub decrypt_failed: u64,
    /// An encrypted request before any key exchange (answered).
    pub no_session_key: u64,
    /// A body that is not the JSON its type needs (answered; a subscribe is closed).
    pub malformed_body: u64,
    /// A subscribe with more than `max_topics` topics (answered and closed).
    pub too_many_topics: u64,
    /// A subscribe topic over `max_topic_len` bytes (answered and closed).
    pub topic_too_long: u64,
    /// A key request whose public key is not 32 bytes of base64 (answered).
    pub bad_public_key: u64,
}

impl ProtocolErrors {
    fn read(slots: &[AtomicU64; ProtocolErrorKind::COUNT]) -> ProtocolErrors {
        let [bad_version, bad_msg_type, wrong_direction, bad_flag, frame_too_short, frame_too_long, bad_header_crc, other_frame, bad_compression, inflated_too_large, decrypt_failed, no_session_key, malformed_body, too_many_topics, topic_too_long, bad_public_key] =
            slots.each_ref().map(|a| a.load(Relaxed));
        ProtocolErrors {
            bad_version,
            bad_msg_type,
            wrong_direction,
            bad_flag,
            frame_too_short,
            frame_too_long,
            bad_header_crc,
            other_frame,
            bad_compression,
            inflated_too_large,
            decrypt_failed,
            no_session_key,
            malformed_body,
            too_many_topics,
            topic_too_long,
            bad_public_key,
        }
    }
}

/// How often each limit was reached, by the name of its setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LimitsHit {
    /// Connections refused at `max_connections` (also `connections_refused`).
    pub max_connections: u64,
    /// Connections closed after `idle_timeout_secs` without a complete frame (a
    /// WebSocket subscriber: without a message).
    pub idle_timeout: u64,
    /// Connections closed with a frame incomplete for `frame_timeout_secs` (also
    /// `frame_timeouts`).
    pub frame_timeout: u64,
    /// Connections closed when their socket took nothing for `write_timeout_secs` (also
    /// `write_timeouts`).
    pub write_timeout: u64,
    /// Large frames that waited for room in `max_buffered_bytes` (also `budget_waits`).
    pub max_buffered_bytes: u64,
    /// Frames announced over `max_frame_len` (closed; also a protocol error).
    pub max_frame_len: u64,
    /// Bodies that inflated past `max_inflated_len` (also a protocol error).
    pub max_inflated_len: u64,
    /// Subscribes over `max_topics` (also a protocol error).
    pub max_topics: u64,
    /// Subscribes with a topic over `max_topic_len` (also a protocol error).
    pub max_topic_len: u64,
    /// Reports refused because their push would exceed `max_frame_len` (the push-size
    /// rule, spec §6).
    pub push_size: u64,
    /// Pushes dropped at a full subscriber queue (`slow_consumer = "drop"`; also
    /// `pushes_dropped`).
    pub subscriber_queue_drop: u64,
    /// Subscribers disconnected at a full queue (`slow_consumer = "disconnect"`; also
    /// `slow_consumers_disconnected`).
    pub subscriber_queue_disconnect: u64,
}
