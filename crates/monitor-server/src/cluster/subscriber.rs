//! Receiving: the subscription to the channel, the bounded queue its messages land in,
//! and the task that delivers them to this node's subscribers.
//!
//! Redis sends each message whole, and the Redis client reads it whole before handing it
//! over, so the largest message this node ever holds is bounded by Redis itself (its
//! `client-output-buffer-limit pubsub`, 32 MiB by default, closes a subscriber that
//! would receive more). Here, a message over `max_frame_len` and a header line is
//! dropped as it arrives, and the queue between the connection and the delivery task is
//! bounded in messages and in bytes: when it is full, messages are dropped and counted,
//! never waited for (the connection's reader must not block).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use monitor_proto::message::request::Report;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{wire, Cluster, Link, BACKOFF_MAX, BACKOFF_MIN};
use crate::hub::Wakes;
use crate::state::Shared;
use crate::stats::Stats;

/// Messages delivered per wake-up of the subscribers: a burst costs each subscriber one
/// wake-up and one write, as a reporter's read of several reports does.
const DELIVER_BATCH: usize = 256;
/// Nodes whose sequence this node follows at most; beyond, the one heard from least
/// recently is forgotten (a bound against a channel flooded with made-up node ids).
const MAX_ORIGINS: usize = 1024;

/// Keeps the subscription: subscribes, checks the link every second (PING), and after a
/// disconnection subscribes again, with backoff while Redis is away. (The connection
/// manager also subscribes again by itself after it reconnects; SUBSCRIBE twice is
/// harmless, and this covers a reconnection that failed or a first subscribe that did.)
pub(super) async fn keep_subscribed(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut conn = cluster.subscribe_conn.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        if cluster.disconnected.flag.swap(false, Ordering::AcqRel) {
            cluster.set_link(Link::Subscribe, Err("connection closed".into()));
        }
        let attempt = if cluster.link_up(Link::Subscribe) {
            super::publisher::ping(&mut conn).await
        } else {
            // A clone is a handle on the same connection.
            let again = || {
                let mut conn = conn.clone();
                let cluster = Arc::clone(&cluster);
                async move { subscribe(&mut conn, &cluster.channel).await }
            };
            super::publisher::retried(again).await
        };
        let ok = attempt.is_ok();
        cluster.set_link(Link::Subscribe, attempt);
        let wait = if ok {
            backoff = BACKOFF_MIN;
            super::HEALTH_INTERVAL
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            wait
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
            () = cluster.disconnected.notify.notified(), if ok => {}
        }
    }
}

async fn subscribe(conn: &mut redis::aio::ConnectionManager, channel: &str) -> Result<(), String> {
    match tokio::time::timeout(super::OP_TIMEOUT, conn.subscribe(channel)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {:?}", super::OP_TIMEOUT)),
    }
}

/// Delivers what arrives, in order, to this node's subscribers, a batch at a time.
pub(super) async fn deliver(
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    let mut origins = Origins::default();
    let mut batch = Vec::with_capacity(DELIVER_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, DELIVER_BATCH) => n,
            () = stop.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        let settings = shared.settings.borrow().clone();
        let mut wakes = Wakes::default();
        for message in batch.drain(..) {
            cluster
                .incoming_bytes
                .fetch_sub(message.len(), Ordering::AcqRel);
            receive(
                &cluster,
                &shared,
                &settings,
                &mut origins,
                &message,
                &mut wakes,
            );
        }
        wakes.wake_all();
    }
}

/// One message from the channel: its header and place in its node's sequence, then the
/// report, published here as a type-7 report is (the same parser, the same size rule).
fn receive(
    cluster: &Cluster,
    shared: &Shared,
    settings: &crate::config::Settings,
    origins: &mut Origins,
    message: &Bytes,
    wakes: &mut Wakes,
) {
    let (header, body) = match wire::decode(message) {
        Ok(decoded) => decoded,
        Err(e) => return cluster.reject(&e),
    };
    if header.node_id == &*cluster.node_id {
        // Redis sends a node its own messages back: those were delivered here already.
        if header.epoch != cluster.epoch {
            cluster.reject(&format_args!(
                "another node publishes as {} (node ids must differ)",
                header.node_id
            ));
        }
        return;
    }
    let stats = &cluster.stats;
    match origins.check(&header, Instant::now()) {
        Verdict::Next { missed } => Stats::add(&stats.cluster_missed, missed),
        Verdict::Restarted { missed } => {
            tracing::info!(
                node = %cluster.node_id,
                origin = header.node_id,
                "cluster: node restarted (a new epoch)"
            );
            Stats::add(&stats.cluster_missed, missed);
        }
        Verdict::Stale => {
            Stats::add(&stats.cluster_out_of_order, 1);
            return;
        }
    }
    let report = match Report::parse(body) {
        Ok(report) => report,
        Err(e) => return cluster.reject(&crate::cmd::malformed(&e)),
    };
    match crate::cmd::publish_here(shared, settings, &report, wakes) {
        Ok(_) => Stats::add(&stats.cluster_received, 1),
        Err(too_large) => cluster.reject(&too_large),
    }
}

/// Where each other node's sequence stands, as seen here.
#[derive(Debug, Default)]
struct Origins {
    by_node: HashMap<Box<str>, Origin>,
}

#[derive(Debug, Clone, Copy)]
struct Origin {
    epoch: u64,
    last_seq: u64,
    seen: Instant,
}

/// What a message's place in its node's sequence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Later than the last one: deliver it; `missed` numbers were skipped.
    Next { missed: u64 },
    /// The first of a new epoch of a known node (it restarted): deliver it; the numbers
    /// before it in that epoch were missed.
    Restarted { missed: u64 },
    /// Not later than the last one, or of an older epoch: a duplicate, or out of order.
    Stale,
}

impl Origins {
    fn check(&mut self, header: &wire::Header<'_>, now: Instant) -> Verdict {
        if let Some(origin) = self.by_node.get_mut(header.node_id) {
            origin.seen = now;
            if header.epoch == origin.epoch {
                if header.seq <= origin.last_seq {
                    return Verdict::Stale;
                }
                let missed = header.seq - origin.last_seq - 1;
                origin.last_seq = header.seq;
                return Verdict::Next { missed };
            }
            if header.epoch < origin.epoch {
                return Verdict::Stale;
            }
            *origin = Origin {
                epoch: header.epoch,
                last_seq: header.seq,
                seen: now,
            };
            return Verdict::Restarted {
                missed: header.seq.saturating_sub(1),
            };
        }
        if self.by_node.len() >= MAX_ORIGINS {
            let oldest = self
                .by_node
                .iter()
                .min_by_key(|(_, o)| o.seen)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.by_node.remove(&id);
            }
        }
        // A node heard from for the first time: its sequence starts here (what it
        // published before this node subscribed is not a loss).
        self.by_node.insert(
            header.node_id.into(),
            Origin {
                epoch: header.epoch,
                last_seq: header.seq,
                seen: now,
            },
        );
        Verdict::Next { missed: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(node_id: &str, epoch: u64, seq: u64) -> wire::Header<'_> {
        wire::Header {
            node_id,
            epoch,
            seq,
        }
    }

    #[test]
    fn sequences_count_gaps_and_refuse_repeats() {
        let mut o = Origins::default();
        let now = Instant::now();
        assert_eq!(o.check(&h("a", 1, 5), now), Verdict::Next { missed: 0 });
        assert_eq!(o.check(&h("a", 1, 6), now), Verdict::Next { missed: 0 });
        assert_eq!(o.check(&h("a", 1, 9), now), Verdict::Next { missed: 2 });
        assert_eq!(o.check(&h("a", 1, 9), now), Verdict::Stale);
        assert_eq!(o.check(&h("a", 1, 7), now), Verdict::Stale);
        assert_eq!(o.check(&h("b", 7, 1), now), Verdict::Next { missed: 0 });
        assert_eq!(
            o.check(&h("a", 2, 3), now),
            Verdict::Restarted { missed: 2 }
        );
        assert_eq!(o.check(&h("a", 1, 10), now), Verdict::Stale, "an old epoch");
        assert_eq!(o.check(&h("a", 2, 4), now), Verdict::Next { missed: 0 });
    }

    #[test]
    fn the_nodes_followed_are_bounded() {
        let mut o = Origins::default();
        let start = Instant::now();
        let ids: Vec<String> = (0..MAX_ORIGINS + 10).map(|i| format!("n{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let at = start + std::time::Duration::from_millis(i as u64);
            o.check(&h(id, 1, 1), at);
        }
        assert_eq!(o.by_node.len(), MAX_ORIGINS);
        assert!(
            !o.by_node.contains_key("n0"),
            "the least recently seen went"
        );
        assert!(o
            .by_node
            .contains_key(format!("n{}", MAX_ORIGINS + 9).as_str()));
    }
}
