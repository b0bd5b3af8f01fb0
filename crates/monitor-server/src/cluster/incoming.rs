//! The incoming queue's sending side: what the subscribed Redis connection hands each
//! message to, bounded in messages and in bytes. It lives apart from the delivery task
//! (`subscriber`), which publishes into the hub, so that [`Cluster`](super::Cluster),
//! which owns it, does not depend on the server's state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::{Disconnected, RateLimited};
use crate::stats::Stats;

/// What the subscribed connection calls for each push message: it must never block, so
/// it only checks the size and hands the message to the delivery task's queue.
#[derive(Debug)]
pub(super) struct PushSender {
    pub(super) tx: mpsc::Sender<Bytes>,
    /// Bytes in the queue now, shared with the delivery task, which subtracts.
    pub(super) bytes: Arc<AtomicUsize>,
    pub(super) max_bytes: usize,
    pub(super) max_message_len: Arc<AtomicUsize>,
    pub(super) disconnected: Arc<Disconnected>,
    pub(super) stats: Arc<Stats>,
    pub(super) too_large: Arc<RateLimited>,
    pub(super) full: Arc<RateLimited>,
}

impl PushSender {
    /// Takes one push from the connection. Never fails: what cannot be taken is counted.
    pub(super) fn send(&self, info: PushInfo) -> Result<(), std::convert::Infallible> {
        match info.kind {
            PushKind::Message => {}
            PushKind::Disconnection => {
                self.disconnected.flag.store(true, Ordering::Release);
                self.disconnected.notify.notify_one();
                return Ok(());
            }
            // Subscription confirmations and the like.
            _ => return Ok(()),
        }
        // A message is [channel, payload].
        let Some(Value::BulkString(payload)) = info.data.into_iter().nth(1) else {
            Stats::add(&self.stats.cluster_rejected, 1);
            return Ok(());
        };
        let len = payload.len();
        let max = self.max_message_len.load(Ordering::Relaxed);
        if len > max {
            Stats::add(&self.stats.cluster_rejected, 1);
            self.too_large.note(|suppressed| {
                tracing::warn!(
                    len,
                    max,
                    suppressed,
                    "cluster: message on the channel rejected: larger than max_frame_len \
                     and a header line"
                );
            });
            return Ok(());
        }
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            self.dropped();
            return Ok(());
        }
        if self.tx.try_send(Bytes::from(payload)).is_err() {
            // Full (the message bound) or closed (the node is stopping).
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            self.dropped();
        }
        Ok(())
    }

    fn dropped(&self) {
        Stats::add(&self.stats.cluster_incoming_dropped, 1);
        self.full.note(|suppressed| {
            tracing::warn!(
                suppressed,
                "cluster: incoming queue full; messages from other nodes dropped"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(max_bytes: usize, capacity: usize) -> (PushSender, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        let s = PushSender {
            tx,
            bytes: Arc::default(),
            max_bytes,
            max_message_len: Arc::new(AtomicUsize::new(100)),
            disconnected: Arc::default(),
            stats: Arc::default(),
            too_large: Arc::default(),
            full: Arc::default(),
        };
        (s, rx)
    }

    fn message(payload: &[u8]) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"monitor:reports".to_vec()),
                Value::BulkString(payload.to_vec()),
            ],
        }
    }

    #[test]
    fn the_push_sender_is_bounded_and_never_fails() {
        let (s, mut rx) = sender(150, 2);
        s.send(message(&[b'x'; 60])).unwrap();
        s.send(message(&[b'x'; 101])).unwrap();
        assert_eq!(
            s.stats.snapshot().cluster_rejected,
            1,
            "over the size limit"
        );
        s.send(message(&[b'x'; 60])).unwrap();
        s.send(message(&[b'x'; 60])).unwrap();
        assert_eq!(
            s.stats.snapshot().cluster_incoming_dropped,
            1,
            "over the byte bound"
        );
        assert_eq!(s.bytes.load(Ordering::Relaxed), 120);
        s.send(message(&[b'x'; 10])).unwrap();
        assert_eq!(
            s.stats.snapshot().cluster_incoming_dropped,
            2,
            "over the message bound"
        );
        assert_eq!(s.bytes.load(Ordering::Relaxed), 120);
        s.send(PushInfo {
            kind: PushKind::Message,
            data: vec![Value::Int(1)],
        })
        .unwrap();
        assert_eq!(s.stats.snapshot().cluster_rejected, 2, "not a message");
        s.send(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert!(s.disconnected.flag.load(Ordering::Relaxed));
        assert_eq!(rx.try_recv().unwrap().len(), 60);
        drop(rx);
        s.send(message(b"{}")).unwrap();
    }
}
