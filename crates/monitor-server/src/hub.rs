//! The broadcast hub: who is subscribed to what, and the fan-out of a report to them.
//!
//! A report's push body is built once and shared by every subscriber (`Arc<Push>`, whose
//! `Bytes` are never copied); its compressed form is made at most once: by the publisher
//! when the body is over the compress threshold (every subscriber then needs it), else by
//! the first subscriber that asks for it. Each subscriber has a bounded [`PushQueue`], filled with
//! [`PushQueue::try_push`]: publishing never waits for a subscriber, so a slow one costs
//! the others nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use monitor_proto::message::reply;
use monitor_proto::{Report, TopicPattern};

use crate::config::SlowConsumer;
pub use crate::queue::{Push, PushError, PushQueue};
use crate::stats::Stats;

/// One subscription, as publishers see it. Cloning it (into a snapshot) costs two
/// reference counts, not a copy of the topics.
#[derive(Clone)]
struct Subscriber {
    id: u64,
    topics: Arc<[TopicPattern]>,
    queue: Arc<PushQueue>,
}

/// The subscriptions, and the snapshot of them that publishers iterate.
#[derive(Default)]
struct Registry {
    by_id: HashMap<u64, Subscriber>,
    /// Every subscription as of the last change a publisher has seen. Rebuilt by the
    /// first publisher after a change, so a burst of (un)subscribes costs one rebuild,
    /// and subscribing costs O(1) however many subscribers there are.
    snapshot: Arc<[Subscriber]>,
    stale: bool,
}

/// Subscriptions, by connection id.
///
/// Publishers iterate a shared, immutable snapshot of the subscriptions, taken in one
/// short lock (a reference count), so no lock is held across the subscriber loop:
/// subscribing, unsubscribing and evicting never wait for a fan-out in progress, and
/// no one waits longer than one rebuild of the snapshot. A change marks the snapshot
/// stale; the next publisher rebuilds it (two reference counts per subscriber, a
/// fraction of the fan-out to them).
#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
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
    pub fn subscribe(&self, id: u64, topics: Vec<TopicPattern>, queue: Arc<PushQueue>) {
        let subscriber = Subscriber {
            id,
            topics: topics.into(),
            queue,
        };
        let mut registry = self.lock();
        registry.by_id.insert(id, subscriber);
        registry.stale = true;
    }

    /// Removes connection `id`'s subscription, if any, once the connection is done with
    /// its queue: the queue is closed and the pushes still in it are dropped.
    pub fn unsubscribe(&self, id: u64) {
        let removed = {
            let mut registry = self.lock();
            let removed = registry.by_id.remove(&id);
            registry.stale |= removed.is_some();
            removed
        };
        if let Some(sub) = removed {
            sub.queue.discard();
        }
    }

    /// What each subscriber's queue holds now, by connection id. Locks the registry only
    /// to copy the queues' references, then each queue in turn.
    pub fn queue_depths(&self) -> Vec<(u64, crate::queue::QueueDepth)> {
        let queues: Vec<_> = self
            .lock()
            .by_id
            .values()
            .map(|s| (s.id, Arc::clone(&s.queue)))
            .collect();
        queues.into_iter().map(|(id, q)| (id, q.depth())).collect()
    }

    /// Number of subscribed connections.
    pub fn subscriber_count(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Queues `report` for every matching subscriber; returns how many it was queued for.
    /// The wakers of subscribers that were waiting are added to `wakes`: wake them once
    /// the reports at hand are all published (see [`PushQueue::try_push`]).
    ///
    /// A push body over `compress_over` bytes is compressed here, before any subscriber
    /// sees it: every subscriber sends that form, and the first one to need it would
    /// otherwise compress it on its worker while the others block on it on theirs.
    ///
    /// A full queue is handled by `policy`: `Drop` skips that subscriber (counted in
    /// `stats.pushes_dropped`); `Disconnect` removes its subscription, which closes its
    /// queue, and its connection closes once it has written what was queued.
    pub fn publish(
        &self,
        report: &Report,
        compress_over: usize,
        policy: SlowConsumer,
        stats: &Stats,
        wakes: &mut Vec<Waker>,
    ) -> u64 {
        let subscribers = self.snapshot();
        // Built on the first match, so that a report nobody wants costs no copy. A large
        // one that somebody wants is built and compressed first.
        let code = report.code.as_deref();
        let mut push: Option<Arc<Push>> = None;
        if reply::push_len(report.raw.len()) > compress_over
            && subscribers
                .iter()
                .any(|sub| TopicPattern::any_matches(&sub.topics, code))
        {
            let large = Arc::new(Push::new(&report.raw));
            large.compressed();
            push = Some(large);
        }
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        let mut evict = Vec::new();
        for sub in subscribers.iter() {
            if !TopicPattern::any_matches(&sub.topics, code) {
                continue;
            }
            let push = push.get_or_insert_with(|| Arc::new(Push::new(&report.raw)));
            match sub.queue.try_push(push) {
                Ok(waker) => {
                    delivered += 1;
                    wakes.extend(waker);
                }
                Err(PushError::Full) => match policy {
                    SlowConsumer::Drop => dropped += 1,
                    SlowConsumer::Disconnect => evict.push(sub),
                },
                Err(PushError::Closed) => evict.push(sub),
            }
        }
        if !evict.is_empty() {
            self.evict(&evict, stats);
        }
        Stats::add(&stats.reports, 1);
        Stats::add(&stats.pushes_queued, delivered);
        Stats::add(&stats.pushes_dropped, dropped);
        delivered
    }

    /// The current snapshot, rebuilt first if a subscription changed since the last one.
    fn snapshot(&self) -> Arc<[Subscriber]> {
        let mut registry = self.lock();
        if !registry.stale {
            return Arc::clone(&registry.snapshot);
        }
        let fresh: Arc<[Subscriber]> = registry.by_id.values().cloned().collect();
        let replaced = std::mem::replace(&mut registry.snapshot, Arc::clone(&fresh));
        registry.stale = false;
        drop(registry);
        // If nobody else holds the old snapshot, dropping it releases a reference per
        // subscriber: not while other publishers wait for the lock.
        drop(replaced);
        fresh
    }

    /// Removes subscriptions whose queue was closed (the connection is gone), or full
    /// under the disconnect policy (closing it ends that connection).
    fn evict(&self, subscribers: &[&Subscriber], stats: &Stats) {
        {
            let mut registry = self.lock();
            for sub in subscribers {
                // The snapshot may be older than the registry: only the same subscription
                // (the same queue) is removed, not one the connection made since.
                let current = registry
                    .by_id
                    .get(&sub.id)
                    .is_some_and(|now| Arc::ptr_eq(&now.queue, &sub.queue));
                if current {
                    registry.by_id.remove(&sub.id);
                    registry.stale = true;
                }
            }
        }
        // Publishers holding the same snapshot may evict the same subscriber at once: the
        // one whose `close` shuts the queue counts the disconnection.
        let disconnected = subscribers.iter().filter(|sub| sub.queue.close()).count();
        Stats::add(&stats.slow_consumers_disconnected, disconnected as u64);
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Each critical section is one map update or one snapshot swap, which cannot
        // leave the registry half-updated if it panics, so a poisoned lock is still safe.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::VecDeque;

    /// A hub with one subscriber (id 1) to `topics`, whose queue holds `capacity` pushes.
    fn one_subscriber(topics: Vec<TopicPattern>, capacity: usize) -> (Hub, Stats, Arc<PushQueue>) {
        let hub = Hub::default();
        let q = PushQueue::new(capacity);
        hub.subscribe(1, topics, Arc::clone(&q));
        (hub, Stats::default(), q)
    }

    /// Publishes `json` and answers how many subscribers it reached.
    fn publish(hub: &Hub, stats: &Stats, json: &'static str, policy: SlowConsumer) -> u64 {
        let report = Report::parse(Bytes::from_static(json.as_bytes())).unwrap();
        hub.publish(&report, usize::MAX, policy, stats, &mut Vec::new())
    }

    #[test]
    fn the_publisher_compresses_a_body_over_the_threshold() {
        let (hub, stats, q) = one_subscriber(Vec::new(), 4);
        let json = r#"{"code":"a","pad":"xxxxxxxxxxxxxxxxxxxx"}"#;
        let len = reply::push_len(json.len());
        // At the threshold a subscriber's codec sends the body as it is; one byte over,
        // compressed: the publisher must decide the same way.
        for (threshold, made) in [
            (len, false),
            (len - 1, true),
            (0, true),
            (usize::MAX, false),
        ] {
            let report = Report::parse(Bytes::from_static(json.as_bytes())).unwrap();
            hub.publish(
                &report,
                threshold,
                SlowConsumer::Drop,
                &stats,
                &mut Vec::new(),
            );
            let push = take(&q).pop_front().unwrap();
            assert_eq!(push.json().len(), len);
            let codec = monitor_proto::Builder::new()
                .compress_threshold(threshold)
                .message_codec(monitor_proto::Role::Server);
            assert_eq!(codec.compresses(false, len), made, "threshold {threshold}");
            assert_eq!(push.has_compressed(), made, "threshold {threshold}");
        }
    }

    #[test]
    fn fan_out_shares_one_body() {
        let hub = Hub::default();
        let stats = Stats::default();
        let mut queues = Vec::new();
        for id in 0..3 {
            let q = PushQueue::new(4);
            hub.subscribe(id, Vec::new(), Arc::clone(&q));
            queues.push(q);
        }
        assert_eq!(
            publish(&hub, &stats, r#"{"code":"a"}"#, SlowConsumer::Drop),
            3
        );
        let pushes: Vec<_> = queues.iter().map(|q| take(q)[0].clone()).collect();
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
        let (hub, stats, q) = one_subscriber(vec![TopicPattern::parse("host.*")], 4);
        assert_eq!(
            publish(&hub, &stats, r#"{"code":"db.x"}"#, SlowConsumer::Drop),
            0
        );
        assert_eq!(
            publish(&hub, &stats, r#"{"code":"host.x"}"#, SlowConsumer::Drop),
            1
        );
        assert_eq!(take(&q).len(), 1);
    }

    #[test]
    fn full_queue_drop_and_disconnect() {
        let (hub, stats, q) = one_subscriber(Vec::new(), 1);
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 1);
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 0);
        assert_eq!(stats.snapshot().pushes_dropped, 1);
        assert_eq!(hub.subscriber_count(), 1);
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Disconnect), 0);
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(stats.snapshot().slow_consumers_disconnected, 1);
        assert!(q.is_closed());
    }

    #[test]
    fn closed_queues_are_removed() {
        let (hub, stats, q) = one_subscriber(Vec::new(), 1);
        q.close();
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 0);
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(stats.snapshot().slow_consumers_disconnected, 0);
    }

    #[test]
    fn subscription_changes_never_wait_for_a_fan_out_in_progress() {
        let hub = Arc::new(Hub::default());
        hub.subscribe(1, Vec::new(), PushQueue::new(4));
        // What a publisher holds while it loops over the subscribers.
        let in_progress = hub.snapshot();
        let (done, finished) = std::sync::mpsc::channel();
        let changer = Arc::clone(&hub);
        std::thread::spawn(move || {
            changer.subscribe(2, Vec::new(), PushQueue::new(4));
            changer.unsubscribe(1);
            let _ = done.send(changer.subscriber_count());
        });
        let count = finished.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(count, Ok(1), "subscribe and unsubscribe did not wait");
        assert_eq!(
            in_progress.len(),
            1,
            "the fan-out in progress keeps its view"
        );
        drop(in_progress);
    }

    #[test]
    fn steady_subscribers_get_every_report_while_others_come_and_go() {
        const STEADY: u64 = 20;
        const REPORTS: usize = 2000;
        let hub = Arc::new(Hub::default());
        let steady: Vec<_> = (0..STEADY)
            .map(|id| {
                let q = PushQueue::new(2 * REPORTS);
                hub.subscribe(id, Vec::new(), Arc::clone(&q));
                q
            })
            .collect();
        let publishers: Vec<_> = (0..2)
            .map(|_| {
                let hub = Arc::clone(&hub);
                std::thread::spawn(move || {
                    let stats = Stats::default();
                    for _ in 0..REPORTS {
                        let delivered = publish(&hub, &stats, "{}", SlowConsumer::Disconnect);
                        assert!(delivered >= STEADY, "reached {delivered}");
                    }
                })
            })
            .collect();
        let changers: Vec<_> = (0..2u64)
            .map(|n| {
                let hub = Arc::clone(&hub);
                std::thread::spawn(move || {
                    for round in 0..500u64 {
                        let id = 1000 + n * 1000 + round % 10;
                        hub.subscribe(id, Vec::new(), PushQueue::new(4));
                        hub.unsubscribe(id);
                    }
                })
            })
            .collect();
        for thread in publishers.into_iter().chain(changers) {
            thread.join().unwrap();
        }
        for q in &steady {
            assert_eq!(take(q).len(), 2 * REPORTS);
        }
        assert_eq!(hub.subscriber_count(), STEADY as usize);
    }

    #[test]
    fn the_report_after_a_change_reaches_the_new_set() {
        let (hub, stats, first) = one_subscriber(Vec::new(), 4);
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 1);
        let second = PushQueue::new(4);
        hub.subscribe(2, Vec::new(), Arc::clone(&second));
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 2);
        hub.unsubscribe(1);
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 1);
        assert_eq!((take(&first).len(), take(&second).len()), (0, 2));
    }

    #[test]
    fn unsubscribing_drops_the_unwritten_pushes() {
        let (hub, stats, q) = one_subscriber(Vec::new(), 4);
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 1);
        // A publisher's snapshot still holds the queue, as one in progress would.
        let snapshot = hub.snapshot();
        hub.unsubscribe(1);
        assert!(q.is_closed());
        assert!(take(&q).is_empty(), "queued pushes are freed at once");
        drop(snapshot);
    }

    #[test]
    fn an_eviction_from_an_older_snapshot_spares_a_newer_subscription() {
        let (hub, stats, old) = one_subscriber(Vec::new(), 4);
        let snapshot = hub.snapshot();
        // The same connection id subscribed again with a new queue since that snapshot.
        let new = PushQueue::new(4);
        hub.subscribe(1, Vec::new(), Arc::clone(&new));
        old.close();
        hub.evict(&[&snapshot[0]], &stats);
        assert_eq!(hub.subscriber_count(), 1);
        assert!(!new.is_closed());
        assert_eq!(publish(&hub, &stats, "{}", SlowConsumer::Drop), 1);
    }

    #[test]
    fn a_subscriber_evicted_by_two_publishers_counts_one_disconnection() {
        let (hub, stats, q) = one_subscriber(Vec::new(), 4);
        // Two publishers holding the same snapshot both found its queue full.
        let first = hub.snapshot();
        let second = hub.snapshot();
        hub.evict(&[&first[0]], &stats);
        hub.evict(&[&second[0]], &stats);
        assert!(q.is_closed());
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(stats.snapshot().slow_consumers_disconnected, 1);
    }

    fn take(q: &PushQueue) -> VecDeque<Arc<Push>> {
        let mut batch = crate::queue::Batch::default();
        q.take_now(&mut batch);
        std::iter::from_fn(|| batch.pop_front()).collect()
    }
}
