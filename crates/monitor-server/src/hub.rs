//! The broadcast hub: who is subscribed to what, and the fan-out of a report to them.
//!
//! A report's push body is built once and shared by every subscriber (`Arc<Push>`, whose
//! `Bytes` are never copied); its compressed form is made at most once, by the first
//! subscriber that wants it. Each subscriber has a bounded queue, filled with `try_send`:
//! publishing never waits for a subscriber, so a slow one costs the others nothing.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use monitor_proto::layer::compress::deflate;
use monitor_proto::message::reply;
use monitor_proto::{Report, TopicPattern};
use tokio::sync::mpsc;

use crate::config::SlowConsumer;
use crate::stats::Stats;

/// One report's push body, shared by all its recipients.
#[derive(Debug)]
pub struct Push {
    json: Bytes,
    compressed: OnceLock<Bytes>,
}

impl Push {
    /// The push body of `report`: `{"errCode":0,"msg":"success","data":<report as sent>}`.
    pub fn new(report: &[u8]) -> Push {
        Push {
            json: reply::push(report),
            compressed: OnceLock::new(),
        }
    }

    /// The plaintext push body.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The zlib form of the body, made on first use and then shared.
    pub fn compressed(&self) -> &Bytes {
        self.compressed.get_or_init(|| deflate(&self.json))
    }
}

/// The sending side of a subscriber's queue.
pub type PushSender = mpsc::Sender<Arc<Push>>;
/// The receiving side of a subscriber's queue, read by its connection's writer.
pub type PushReceiver = mpsc::Receiver<Arc<Push>>;

struct Subscriber {
    topics: Vec<TopicPattern>,
    tx: PushSender,
}

/// Subscriptions, by connection id.
#[derive(Default)]
pub struct Hub {
    subscribers: RwLock<HashMap<u64, Subscriber>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Hub {
    /// Adds or replaces connection `id`'s subscription.
    pub fn subscribe(&self, id: u64, topics: Vec<TopicPattern>, tx: PushSender) {
        self.write().insert(id, Subscriber { topics, tx });
    }

    /// Removes connection `id`'s subscription, if any.
    pub fn unsubscribe(&self, id: u64) {
        self.write().remove(&id);
    }

    /// Number of subscribed connections.
    pub fn subscriber_count(&self) -> usize {
        self.read().len()
    }

    /// Queues `report` for every matching subscriber; returns how many it was queued for.
    ///
    /// A full queue is handled by `policy`: `Drop` skips that subscriber (counted in
    /// `stats.pushes_dropped`); `Disconnect` removes its subscription, which closes its
    /// queue, and its connection closes once it has written what was queued.
    pub fn publish(&self, report: &Report, policy: SlowConsumer, stats: &Stats) -> u64 {
        let push = Arc::new(Push::new(&report.raw));
        let code = report.code.as_deref();
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        let mut evict = Vec::new();
        {
            let subscribers = self.read();
            for (&id, sub) in subscribers.iter() {
                if !TopicPattern::any_matches(&sub.topics, code) {
                    continue;
                }
                match sub.tx.try_send(Arc::clone(&push)) {
                    Ok(()) => delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => match policy {
                        SlowConsumer::Drop => dropped += 1,
                        SlowConsumer::Disconnect => evict.push(id),
                    },
                    Err(mpsc::error::TrySendError::Closed(_)) => evict.push(id),
                }
            }
        }
        if !evict.is_empty() {
            let mut subscribers = self.write();
            for id in &evict {
                if let Some(sub) = subscribers.get(id) {
                    // Only evict for fullness under the disconnect policy; a closed queue
                    // means the connection is already gone.
                    if sub.tx.is_closed() || policy == SlowConsumer::Disconnect {
                        if !sub.tx.is_closed() {
                            Stats::add(&stats.slow_consumers_disconnected, 1);
                        }
                        subscribers.remove(id);
                    }
                }
            }
        }
        Stats::add(&stats.reports, 1);
        Stats::add(&stats.pushes_queued, delivered);
        Stats::add(&stats.pushes_dropped, dropped);
        delivered
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Subscriber>> {
        // A panic while holding the lock cannot leave the map half-updated (each update
        // is one insert or remove), so a poisoned lock is still safe to use.
        self.subscribers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Subscriber>> {
        self.subscribers.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &'static str) -> Report {
        Report::parse(Bytes::from_static(json.as_bytes())).unwrap()
    }

    #[test]
    fn fan_out_shares_one_body() {
        let hub = Hub::default();
        let stats = Stats::default();
        let mut rxs = Vec::new();
        for id in 0..3 {
            let (tx, rx) = mpsc::channel(4);
            hub.subscribe(id, Vec::new(), tx);
            rxs.push(rx);
        }
        assert_eq!(
            hub.publish(&report(r#"{"code":"a"}"#), SlowConsumer::Drop, &stats),
            3
        );
        let pushes: Vec<_> = rxs.iter_mut().map(|rx| rx.try_recv().unwrap()).collect();
        assert_eq!(
            &pushes[0].json()[..],
            br#"{"errCode":0,"msg":"success","data":{"code":"a"}}"#
        );
        assert!(pushes.iter().all(|p| Arc::ptr_eq(p, &pushes[0])));
        assert_eq!(
            pushes[0].compressed().as_ptr(),
            pushes[2].compressed().as_ptr()
        );
    }

    #[test]
    fn topics_filter() {
        let hub = Hub::default();
        let stats = Stats::default();
        let (tx, mut rx) = mpsc::channel(4);
        hub.subscribe(1, vec![TopicPattern::parse("host.*")], tx);
        assert_eq!(
            hub.publish(&report(r#"{"code":"db.x"}"#), SlowConsumer::Drop, &stats),
            0
        );
        assert_eq!(
            hub.publish(&report(r#"{"code":"host.x"}"#), SlowConsumer::Drop, &stats),
            1
        );
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_err());
    }

    #[test]
    fn full_queue_drop_and_disconnect() {
        let hub = Hub::default();
        let stats = Stats::default();
        let (tx, _rx) = mpsc::channel(1);
        hub.subscribe(1, Vec::new(), tx);
        let r = report("{}");
        assert_eq!(hub.publish(&r, SlowConsumer::Drop, &stats), 1);
        assert_eq!(hub.publish(&r, SlowConsumer::Drop, &stats), 0);
        assert_eq!(stats.snapshot().pushes_dropped, 1);
        assert_eq!(hub.subscriber_count(), 1);
        assert_eq!(hub.publish(&r, SlowConsumer::Disconnect, &stats), 0);
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(stats.snapshot().slow_consumers_disconnected, 1);
    }

    #[test]
    fn closed_queues_are_removed() {
        let hub = Hub::default();
        let stats = Stats::default();
        let (tx, rx) = mpsc::channel(1);
        hub.subscribe(1, Vec::new(), tx);
        drop(rx);
        assert_eq!(hub.publish(&report("{}"), SlowConsumer::Drop, &stats), 0);
        assert_eq!(hub.subscriber_count(), 0);
    }
}
