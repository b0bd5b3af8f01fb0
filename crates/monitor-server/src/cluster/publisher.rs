//! Publishing: the outgoing queue (bounded in bytes) and the task that empties it into
//! Redis, one pipeline of PUBLISH commands per round trip.
//!
//! A pipeline that fails is not sent again: Redis may have delivered part of it before
//! the connection broke, and sending it again could deliver those reports twice. Its
//! reports are counted in `cluster_publish_failed` instead. So delivery across nodes is
//! exactly once while Redis is up, and at most once when it fails.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{wire, Cluster, Link, RateLimited, BACKOFF_MAX, BACKOFF_MIN, OP_TIMEOUT};
use crate::stats::Stats;

/// Most messages in one pipeline.
pub(super) const PIPELINE_MESSAGES: usize = 1024;
/// Most bytes of messages in one pipeline (one larger message goes alone).
pub(super) const PIPELINE_BYTES: usize = 1024 * 1024;

/// The reports waiting to be published, in the order of their sequence numbers.
#[derive(Debug)]
pub(super) struct Outgoing {
    queue: Mutex<Queue>,
    /// Wakes the publisher when the queue was empty.
    ready: Notify,
    /// `max_outgoing_bytes`.
    pub(super) max_bytes: usize,
    /// "Queue full" warnings.
    pub(super) overflows: RateLimited,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Bytes>,
    bytes: usize,
    /// The last sequence number given out.
    seq: u64,
}

/// What became of an offered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    Queued,
    /// Redis is down: not published.
    Down,
    /// The queue is full: not published.
    Full,
}

impl Outgoing {
    pub(super) fn new(max_bytes: usize) -> Outgoing {
        Outgoing {
            queue: Mutex::default(),
            ready: Notify::new(),
            max_bytes,
            overflows: RateLimited::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Each critical section is a push or a pop; the queue is consistent after any.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the report the node's next sequence number and queues its message, unless
    /// the link is down or the queue is full. Every report takes a number, published or
    /// not, so that the other nodes see a gap for each one they miss.
    ///
    /// The number is taken, and the message queued, under one lock: the queue stays in
    /// sequence order whatever the number of reporters publishing at once.
    pub(super) fn offer(&self, node_id: &str, epoch: u64, report: &[u8], up: bool) -> Offered {
        let mut queue = self.lock();
        queue.seq += 1;
        if !up {
            return Offered::Down;
        }
        let len = wire::MAX_HEADER_LEN + report.len();
        if queue.bytes + len > self.max_bytes {
            return Offered::Full;
        }
        let message = wire::encode(node_id, epoch, queue.seq, report);
        queue.bytes += message.len();
        queue.messages.push_back(message);
        drop(queue);
        self.ready.notify_one();
        Offered::Queued
    }

    /// The next pipeline's messages, oldest first: up to [`PIPELINE_MESSAGES`] and
    /// [`PIPELINE_BYTES`].
    fn take_batch(&self, batch: &mut Vec<Bytes>) {
        let mut queue = self.lock();
        let mut bytes = 0;
        while batch.len() < PIPELINE_MESSAGES {
            let Some(next) = queue.messages.front() else {
                break;
            };
            if !batch.is_empty() && bytes + next.len() > PIPELINE_BYTES {
                break;
            }
            bytes += next.len();
            if let Some(message) = queue.messages.pop_front() {
                batch.push(message);
            }
        }
        queue.bytes -= bytes;
    }

    /// Empties the queue; how many messages it held.
    fn drain(&self) -> u64 {
        let mut queue = self.lock();
        let n = queue.messages.len() as u64;
        queue.messages.clear();
        queue.bytes = 0;
        n
    }

    fn is_empty(&self) -> bool {
        self.lock().messages.is_empty()
    }

    /// Bytes queued now.
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// The publisher: keeps the publishing link, sends what is queued, one pipeline at a
/// time (what arrives meanwhile goes in the next), and at shutdown sends what is left.
pub(super) async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut conn = cluster.publish_conn.clone();
    let mut backoff = BACKOFF_MIN;
    let mut batch = Vec::with_capacity(PIPELINE_MESSAGES);
    'serve: loop {
        if !cluster.link_up(Link::Publish) {
            // What was queued before the link went down is not published: counted.
            Stats::add(
                &cluster.stats.cluster_publish_failed,
                cluster.outgoing.drain(),
            );
            // A clone is a handle on the same connection.
            let again = || {
                let mut conn = conn.clone();
                async move { ping(&mut conn).await }
            };
            match retried(again).await {
                Ok(()) => {
                    cluster.set_link(Link::Publish, Ok(()));
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    cluster.set_link(Link::Publish, Err(e));
                    tokio::select! {
                        () = stop.cancelled() => break 'serve,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        if cluster.outgoing.is_empty() {
            tokio::select! {
                () = stop.cancelled() => break 'serve,
                () = cluster.outgoing.ready.notified() => {}
                () = tokio::time::sleep(super::HEALTH_INTERVAL) => {
                    // Idle: check the link, so that a lost Redis shows (and is logged)
                    // before the next report finds it.
                    if let Err(e) = ping(&mut conn).await {
                        cluster.set_link(Link::Publish, Err(e));
                    }
                    continue;
                }
            }
        }
        loop {
            cluster.outgoing.take_batch(&mut batch);
            if batch.is_empty() {
                break;
            }
            let sent = publish(&cluster, &mut conn, &batch).await;
            let n = batch.len() as u64;
            batch.clear();
            match sent {
                Ok(()) => Stats::add(&cluster.stats.cluster_published, n),
                Err(e) => {
                    Stats::add(&cluster.stats.cluster_publish_failed, n);
                    cluster.set_link(Link::Publish, Err(e));
                    break;
                }
            }
        }
    }
    flush(&cluster, &mut conn).await;
}

/// At shutdown: sends what is queued, within [`super::FLUSH_TIMEOUT`]; what is left
/// then is counted as not published.
async fn flush(cluster: &Cluster, conn: &mut redis::aio::ConnectionManager) {
    let mut batch = Vec::with_capacity(PIPELINE_MESSAGES);
    let sending = async {
        while cluster.link_up(Link::Publish) {
            cluster.outgoing.take_batch(&mut batch);
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            let sent = publish(cluster, conn, &batch).await;
            batch.clear();
            match sent {
                Ok(()) => Stats::add(&cluster.stats.cluster_published, n),
                Err(_) => {
                    Stats::add(&cluster.stats.cluster_publish_failed, n);
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(super::FLUSH_TIMEOUT, sending).await;
    // A batch cut off by the timeout, and whatever was still queued.
    let left = batch.len() as u64 + cluster.outgoing.drain();
    Stats::add(&cluster.stats.cluster_publish_failed, left);
}

/// One pipeline of PUBLISH commands, within [`OP_TIMEOUT`].
async fn publish(
    cluster: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    batch: &[Bytes],
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for message in batch {
        pipe.cmd("PUBLISH")
            .arg(&cluster.channel)
            .arg(&message[..])
            .ignore();
    }
    match tokio::time::timeout(OP_TIMEOUT, pipe.exec_async(conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {OP_TIMEOUT:?}")),
    }
}

/// `attempt`, and once more at once if it failed. After a failure, the connection manager
/// answers the next command with that same failure while it starts reconnecting in the
/// background; the second attempt waits for that reconnection. Without it, a Redis that
/// came back would be seen only a backoff later.
pub(super) async fn retried<F, Fut>(mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    match attempt().await {
        Ok(()) => Ok(()),
        Err(_) => attempt().await,
    }
}

/// PING, within [`OP_TIMEOUT`].
pub(super) async fn ping(conn: &mut redis::aio::ConnectionManager) -> Result<(), String> {
    let ping = redis::cmd("PING");
    match tokio::time::timeout(OP_TIMEOUT, ping.exec_async(conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {OP_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_keeps_sequence_order_and_its_byte_bound() {
        // Room for two 16-byte messages, judged at their longest header.
        let q = Outgoing::new(wire::MAX_HEADER_LEN + 7 + 16);
        assert_eq!(q.offer("a", 1, b"{}", false), Offered::Down);
        assert_eq!(q.offer("a", 1, b"{\"n\":1}", true), Offered::Queued);
        assert_eq!(q.offer("a", 1, b"{\"n\":2}", true), Offered::Queued);
        assert_eq!(q.offer("a", 1, b"{\"n\":3}", true), Offered::Full);
        let mut batch = Vec::new();
        q.take_batch(&mut batch);
        let seqs: Vec<u64> = batch
            .iter()
            .map(|m| wire::decode(m).unwrap().0.seq)
            .collect();
        assert_eq!(seqs, [2, 3], "every offer took a number, queued or not");
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.offer("a", 1, b"{}", true), Offered::Queued);
        assert_eq!(q.drain(), 1);
    }

    #[test]
    fn a_pipeline_is_bounded_in_messages_and_bytes() {
        let q = Outgoing::new(64 << 20);
        for _ in 0..PIPELINE_MESSAGES + 5 {
            assert_eq!(q.offer("a", 1, b"{}", true), Offered::Queued);
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch);
        assert_eq!(batch.len(), PIPELINE_MESSAGES);
        batch.clear();
        q.take_batch(&mut batch);
        assert_eq!(batch.len(), 5);
        let big = vec![b' '; PIPELINE_BYTES / 2];
        for _ in 0..3 {
            q.offer("a", 1, &big, true);
        }
        batch.clear();
        q.take_batch(&mut batch);
        assert_eq!(
            batch.len(),
            1,
            "two halves and their headers exceed the cap"
        );
        let huge = vec![b' '; PIPELINE_BYTES * 2];
        let q = Outgoing::new(64 << 20);
        q.offer("a", 1, &huge, true);
        batch.clear();
        q.take_batch(&mut batch);
        assert_eq!(batch.len(), 1, "a message over the cap goes alone");
    }
}
