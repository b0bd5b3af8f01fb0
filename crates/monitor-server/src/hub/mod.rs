//! The broadcast hub: who is subscribed to what, and the fan-out of a report to them.
//!
//! A report's push body is built once and shared by every subscriber (`Arc<Push>`, whose
//! `Bytes` are never copied); its compressed form is made at most once: by the publisher
//! when the body is over the compress threshold (every subscriber then needs it), else by
//! the first subscriber that asks for it. Each subscriber has a bounded [`PushQueue`], filled with
//! [`PushQueue::try_push`]: publishing never waits for a subscriber, so a slow one costs
//! the others nothing.
//!
//! Subscriptions are indexed by topic: a report's `code` is looked up in a hash map of
//! exact codes and walked down a trie of prefixes, and publishing costs in proportion to
//! the subscribers it matches, not to every subscription on the server (see [`Hub`]).

mod canonical;
mod index;

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use monitor_proto::message::reply;
use monitor_proto::message::request::Report;
use monitor_proto::message::topic::TopicPattern;

use canonical::canonical;
use index::{Index, Matched, Registration, Subscriber};

use crate::config::SlowConsumer;
pub use crate::queue::{Push, PushError, PushQueue};
use crate::stats::Stats;

/// Subscriptions, by connection id and by topic.
///
/// The index has a bucket per subscribed exact code (a hash map by code), one per
/// subscribed prefix (in a trie, see `Node`), and one for `*` and topic-less
/// subscribers. A subscriber is in the bucket of each of its canonical patterns
/// (`canonical`), of which at most one matches any code, so a report reaches each
/// subscriber at most once. Publishing costs a lookup of the report's code and a walk of
/// the trie along it, then the deliveries to the subscribers in the matching buckets:
/// not a pass over every subscription.
///
/// Each bucket keeps a shared, immutable snapshot of its subscribers. A publisher takes
/// the index's lock only to clone the snapshots of the buckets it matched (a reference
/// count each) and loops over them with no lock held: subscribing, unsubscribing and
/// evicting never wait for a fan-out in progress, and cost O(the length of that
/// subscriber's topics).
/// A change marks the buckets it touched stale; the next publisher that needs one
/// rebuilds it (a reference count per subscriber in it, a fraction of the fan-out to
/// them), so no one waits longer than the rebuild of the buckets one report matches.
pub struct Hub {
    index: Mutex<Index>,
    /// The fan-out counters (`reports`, `pushes_queued`, `pushes_dropped`,
    /// `slow_consumers_disconnected`), shared with the rest of the server.
    stats: Arc<Stats>,
    /// Push bodies longer than this are compressed by the publisher (see
    /// [`Hub::publish`]); live, like `disconnect`.
    compress_over: AtomicUsize,
    /// The slow-consumer policy: `true` for [`SlowConsumer::Disconnect`].
    disconnect: AtomicBool,
}

/// What the hub needs of the server's settings. Both can change while it runs
/// ([`Hub::configure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSettings {
    /// `compress_threshold`: a push body longer than this goes out compressed, to every
    /// subscriber.
    pub compress_threshold: usize,
    /// What a full subscriber queue means.
    pub slow_consumer: SlowConsumer,
}

impl Default for Hub {
    fn default() -> Self {
        let defaults = crate::config::Settings::default();
        Hub::new(
            Arc::default(),
            HubSettings {
                compress_threshold: defaults.compress_threshold,
                slow_consumer: defaults.slow_consumer,
            },
        )
    }
}

/// Subscribers to wake once the reports at hand are all published: a reporter that read
/// several reports in one go wakes each subscriber once, so each writes them all in one
/// syscall instead of racing to write the first. Waking happens in
/// [`Wakes::wake_all`] (or when it is dropped).
#[derive(Debug, Default)]
pub struct Wakes(Vec<Waker>);

impl Wakes {
    /// Wakes everyone collected, once. A list grown by an unusual burst is released
    /// rather than kept.
    pub fn wake_all(&mut self) {
        self.0.drain(..).for_each(Waker::wake);
        if self.0.capacity() > 1024 {
            self.0 = Vec::new();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// One report's fan-out so far.
struct Fanout<'m> {
    /// Built on the first delivery, so that a report nobody wants costs no copy.
    push: Option<Arc<Push>>,
    delivered: u64,
    dropped: u64,
    evict: Vec<&'m Subscriber>,
}

impl<'m> Fanout<'m> {
    /// Queues the report for every subscriber of one matched bucket.
    fn deliver(
        &mut self,
        bucket: &'m [Subscriber],
        report: &Report,
        policy: SlowConsumer,
        wakes: &mut Wakes,
    ) {
        for sub in bucket {
            let push = self
                .push
                .get_or_insert_with(|| Arc::new(Push::new(&report.raw)));
            match sub.queue.try_push(push) {
                Ok(waker) => {
                    self.delivered += 1;
                    wakes.0.extend(waker);
                }
                Err(PushError::Full) => match policy {
                    SlowConsumer::Drop => self.dropped += 1,
                    SlowConsumer::Disconnect => self.evict.push(sub),
                },
                Err(PushError::Closed) => self.evict.push(sub),
            }
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Hub {
    /// A hub with no subscriptions, counting into `stats`.
    pub fn new(stats: Arc<Stats>, settings: HubSettings) -> Hub {
        let hub = Hub {
            index: Mutex::default(),
            stats,
            compress_over: AtomicUsize::new(0),
            disconnect: AtomicBool::new(false),
        };
        hub.configure(settings);
        hub
    }

    /// Applies reloaded settings to the reports published from now on.
    pub fn configure(&self, settings: HubSettings) {
        self.compress_over
            .store(settings.compress_threshold, Relaxed);
        self.disconnect
            .store(settings.slow_consumer == SlowConsumer::Disconnect, Relaxed);
    }

    /// Adds or replaces connection `id`'s subscription. Its patterns are kept in
    /// canonical form: those covered by another of its own are left out.
    ///
    /// A replaced subscription's queue, if it is not `queue`, is discarded (closed, its
    /// pushes dropped): nothing matched by the old subscription is delivered after this
    /// returns, even by a publisher that holds an older snapshot.
    pub fn subscribe(&self, id: u64, topics: Vec<TopicPattern>, queue: Arc<PushQueue>) {
        let topics = canonical(topics);
        let mut garbage = Vec::new();
        let replaced = {
            let mut guard = self.lock();
            let index = &mut *guard;
            let registration = Registration {
                topics: Arc::clone(&topics),
                queue: Arc::clone(&queue),
            };
            let replaced = index.by_id.insert(id, registration);
            if let Some(old) = &replaced {
                index.unlink(id, &old.topics, &mut garbage);
            }
            index.link(id, &topics, &queue);
            replaced
        };
        if let Some(old) = replaced {
            if !Arc::ptr_eq(&old.queue, &queue) {
                old.queue.discard();
            }
        }
        drop(garbage);
    }

    /// Removes connection `id`'s subscription, if any, once the connection is done with
    /// its queue: the queue is closed and the pushes still in it are dropped.
    pub fn unsubscribe(&self, id: u64) {
        let mut garbage = Vec::new();
        let removed = {
            let mut guard = self.lock();
            let index = &mut *guard;
            let removed = index.by_id.remove(&id);
            if let Some(sub) = &removed {
                index.unlink(id, &sub.topics, &mut garbage);
            }
            removed
        };
        if let Some(sub) = removed {
            sub.queue.discard();
        }
        drop(garbage);
    }

    /// What each subscriber's queue holds now, by connection id. Locks the registry only
    /// to copy the queues' references, then each queue in turn.
    pub fn queue_depths(&self) -> Vec<(u64, crate::queue::QueueDepth)> {
        let queues: Vec<_> = self
            .lock()
            .by_id
            .iter()
            .map(|(id, s)| (*id, Arc::clone(&s.queue)))
            .collect();
        queues.into_iter().map(|(id, q)| (id, q.depth())).collect()
    }

    /// Number of subscribed connections.
    pub fn subscriber_count(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Every subscription: its connection id and its patterns, in canonical form (see
    /// [`Hub::subscribe`]; `[]` means every report). The lock is held only to copy a
    /// reference to each.
    pub fn subscriptions(&self) -> Vec<(u64, Arc<[TopicPattern]>)> {
        self.lock()
            .by_id
            .iter()
            .map(|(&id, sub)| (id, Arc::clone(&sub.topics)))
            .collect()
    }

    /// Queues `report` for every matching subscriber; returns how many it was queued for.
    /// Subscribers that were waiting are added to `wakes`: wake them once the reports at
    /// hand are all published. `prepared` is the report's push if the caller already
    /// made it (with its compressed form, say); otherwise it is made on the first match,
    /// so that a report nobody wants costs no copy.
    ///
    /// A push body over `compress_threshold` bytes is compressed here, before any
    /// subscriber sees it: every subscriber sends that form (see
    /// [`monitor_proto::message::server_compresses`]), and the first one to need it would
    /// otherwise compress it on its worker while the others block on it on theirs.
    ///
    /// A full queue is handled by the slow-consumer policy: `drop` skips that subscriber
    /// (counted in `pushes_dropped`); `disconnect` removes its subscription, which closes
    /// its queue, and its connection closes once it has written what was queued.
    pub fn publish(&self, report: &Report, prepared: Option<Arc<Push>>, wakes: &mut Wakes) -> u64 {
        let stats = &*self.stats;
        let policy = if self.disconnect.load(Relaxed) {
            SlowConsumer::Disconnect
        } else {
            SlowConsumer::Drop
        };
        let compress_over = self.compress_over.load(Relaxed);
        let Matched {
            all,
            exact,
            prefixes,
        } = self.matching(report.code.as_deref());
        let mut fanout = Fanout {
            push: prepared,
            delivered: 0,
            dropped: 0,
            evict: Vec::new(),
        };
        // A large body that somebody wants is built and compressed first.
        let wanted = all.is_some() || exact.is_some() || !prefixes.is_empty();
        if wanted
            && monitor_proto::message::server_compresses(
                false,
                reply::push_len(report.raw.len()),
                compress_over,
            )
        {
            fanout
                .push
                .get_or_insert_with(|| Arc::new(Push::new(&report.raw)))
                .compressed();
        }
        // A subscriber is in one matched bucket at most (see `Matched`).
        if let Some(all) = &all {
            fanout.deliver(all, report, policy, wakes);
        }
        if let Some(exact) = &exact {
            fanout.deliver(exact, report, policy, wakes);
        }
        for prefix in &prefixes {
            fanout.deliver(prefix, report, policy, wakes);
        }
        let Fanout {
            delivered,
            dropped,
            evict,
            ..
        } = fanout;
        if !evict.is_empty() {
            self.evict(&evict);
        }
        Stats::add(&stats.reports, 1);
        Stats::add(&stats.pushes_queued, delivered);
        Stats::add(&stats.pushes_dropped, dropped);
        delivered
    }

    /// The snapshots of the buckets a report with `code` matches, rebuilt first where a
    /// subscription changed since the last ones.
    fn matching(&self, code: Option<&str>) -> Matched {
        let mut garbage = Vec::new();
        let matched = self.lock().matching(code, &mut garbage);
        // If nobody else holds a replaced snapshot, dropping it releases a reference per
        // subscriber: not while other publishers wait for the lock.
        drop(garbage);
        matched
    }

    /// Removes subscriptions whose queue was closed (the connection is gone), or full
    /// under the disconnect policy (closing it ends that connection).
    fn evict(&self, subscribers: &[&Subscriber]) {
        let stats = &*self.stats;
        let mut removed = Vec::new();
        let mut garbage = Vec::new();
        {
            let mut guard = self.lock();
            let index = &mut *guard;
            for sub in subscribers {
                // The snapshot may be older than the index: only the same subscription
                // (the same queue) is removed, not one the connection made since.
                if let Entry::Occupied(now) = index.by_id.entry(sub.id) {
                    if Arc::ptr_eq(&now.get().queue, &sub.queue) {
                        let registration = now.remove();
                        index.unlink(sub.id, &registration.topics, &mut garbage);
                        removed.push(registration);
                    }
                }
            }
        }
        drop((removed, garbage));
        // Publishers holding the same snapshot may evict the same subscriber at once: the
        // one whose `close` shuts the queue counts the disconnection.
        let disconnected = subscribers.iter().filter(|sub| sub.queue.close()).count();
        Stats::add(&stats.slow_consumers_disconnected, disconnected as u64);
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Nothing in a critical section panics short of a failed allocation, and the
        // index stays usable if one does (unlinking tolerates a missing bucket or
        // member), so a poisoned lock is still safe.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The catch-all bucket's snapshot, as a publisher of a report with no code holds
    /// it while it loops.
    #[cfg(test)]
    fn snapshot(&self) -> Arc<[Subscriber]> {
        self.matching(None).all.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::index::tests::check;
    use super::*;
    use bytes::Bytes;
    use std::collections::VecDeque;

    /// A hub with one subscriber (id 1) to `topics`, whose queue holds `capacity` pushes.
    fn one_subscriber(
        topics: Vec<TopicPattern>,
        capacity: usize,
    ) -> (Hub, Arc<Stats>, Arc<PushQueue>) {
        let stats = Arc::new(Stats::default());
        let hub = Hub::new(Arc::clone(&stats), settings(usize::MAX, SlowConsumer::Drop));
        let q = PushQueue::new(capacity);
        hub.subscribe(1, topics, Arc::clone(&q));
        (hub, stats, q)
    }

    fn settings(compress_threshold: usize, slow_consumer: SlowConsumer) -> HubSettings {
        HubSettings {
            compress_threshold,
            slow_consumer,
        }
    }

    /// Publishes `json` under `policy` and answers how many subscribers it reached (the
    /// hub counts into its own stats; `_stats` is the caller's view of them).
    pub(super) fn publish(
        hub: &Hub,
        _stats: &Stats,
        json: &'static str,
        policy: SlowConsumer,
    ) -> u64 {
        let report = Report::parse(Bytes::from_static(json.as_bytes())).unwrap();
        hub.configure(settings(usize::MAX, policy));
        hub.publish(&report, None, &mut Wakes::default())
    }

    #[test]
    fn the_publisher_compresses_a_body_over_the_threshold() {
        let (hub, _stats, q) = one_subscriber(Vec::new(), 4);
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
            hub.configure(settings(threshold, SlowConsumer::Drop));
            hub.publish(&report, None, &mut Wakes::default());
            let push = take(&q).pop_front().unwrap();
            assert_eq!(push.json().len(), len);
            assert_eq!(
                monitor_proto::message::server_compresses(false, len, threshold),
                made,
                "threshold {threshold}"
            );
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
        hub.evict(&[&snapshot[0]]);
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
        hub.evict(&[&first[0]]);
        hub.evict(&[&second[0]]);
        assert!(q.is_closed());
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(stats.snapshot().slow_consumers_disconnected, 1);
    }

    /// Publishes a report with this `code` (`None`: none) and answers how many
    /// subscribers it reached.
    pub(super) fn publish_code(hub: &Hub, _stats: &Stats, code: Option<&str>) -> u64 {
        let json = match code {
            Some(code) => format!(r#"{{"code":"{code}"}}"#),
            None => "{}".to_owned(),
        };
        let report = Report::parse(Bytes::from(json)).unwrap();
        hub.publish(&report, None, &mut Wakes::default())
    }

    pub(super) fn patterns_of(topics: &[&str]) -> Vec<TopicPattern> {
        topics.iter().map(|t| TopicPattern::parse(t)).collect()
    }

    #[test]
    fn resubscribing_with_a_new_queue_is_a_barrier() {
        let hub = Hub::default();
        let stats = Stats::default();
        let old = PushQueue::new(4);
        hub.subscribe(1, patterns_of(&["x"]), Arc::clone(&old));
        assert_eq!(publish_code(&hub, &stats, Some("x")), 1);
        // A publisher of "x" that took its snapshots before the re-subscribe.
        let in_progress = hub.matching(Some("x"));
        let new = PushQueue::new(4);
        hub.subscribe(1, patterns_of(&["y"]), Arc::clone(&new));
        check(&hub);
        assert!(old.is_closed());
        assert!(
            take(&old).is_empty(),
            "the old subscription's pushes are dropped"
        );
        let late = &in_progress.exact.as_ref().unwrap()[0];
        let push = Arc::new(Push::new(b"{}"));
        assert_eq!(late.queue.try_push(&push).err(), Some(PushError::Closed));
        hub.evict(&[late]);
        assert_eq!(hub.subscriber_count(), 1, "the new subscription stays");
        assert!(!new.is_closed());
        assert_eq!(publish_code(&hub, &stats, Some("x")), 0);
        assert_eq!(publish_code(&hub, &stats, Some("y")), 1);
        assert_eq!(take(&new).len(), 1);
        // With the same queue, the queue and what it holds stay.
        hub.subscribe(1, patterns_of(&["z"]), Arc::clone(&new));
        assert_eq!(publish_code(&hub, &stats, Some("z")), 1);
        hub.subscribe(1, patterns_of(&["y"]), Arc::clone(&new));
        assert!(!new.is_closed());
        assert_eq!(take(&new).len(), 1);
        assert_eq!(publish_code(&hub, &stats, Some("z")), 0);
        check(&hub);
    }

    pub(super) fn take(q: &PushQueue) -> VecDeque<Arc<Push>> {
        let mut batch = crate::queue::Batch::default();
        q.take_now(&mut batch);
        std::iter::from_fn(|| batch.pop_front()).collect()
    }
}
