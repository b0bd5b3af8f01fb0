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

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use monitor_proto::message::reply;
use monitor_proto::message::request::Report;
use monitor_proto::message::topic::TopicPattern;

use crate::config::SlowConsumer;
pub use crate::queue::{Push, PushError, PushQueue};
use crate::stats::Stats;

/// One subscriber, as publishers see it in a bucket's snapshot: its connection id (to
/// evict it) and its queue. Cloning it (into a snapshot) costs one reference count.
#[derive(Clone)]
struct Subscriber {
    id: u64,
    queue: Arc<PushQueue>,
}

/// One connection's subscription: its canonical patterns (see [`canonical`]), which name
/// the buckets it is in, and its queue.
struct Registration {
    topics: Arc<[TopicPattern]>,
    queue: Arc<PushQueue>,
}

/// The subscribers of one pattern (an exact code, a prefix, or everything), and the
/// snapshot of them that publishers iterate.
#[derive(Default)]
struct Bucket {
    members: HashMap<u64, Arc<PushQueue>>,
    /// `members` as of the last change a publisher has seen. Rebuilt by the first
    /// publisher that needs this bucket after a change, so a burst of (un)subscribes costs
    /// one rebuild per bucket it touched, paid by a publisher that then delivers to every
    /// subscriber in it.
    snapshot: Arc<[Subscriber]>,
    stale: bool,
}

impl Bucket {
    fn add(&mut self, id: u64, queue: &Arc<PushQueue>) {
        self.members.insert(id, Arc::clone(queue));
        self.stale = true;
    }

    fn remove(&mut self, id: u64) {
        self.stale |= self.members.remove(&id).is_some();
    }

    /// The snapshot for a publisher, rebuilt first if stale (the replaced one goes to
    /// `garbage`, for the caller to drop once it has released the lock); `None` if the
    /// bucket is empty.
    #[inline]
    fn snapshot(&mut self, garbage: &mut Vec<Arc<[Subscriber]>>) -> Option<Arc<[Subscriber]>> {
        if self.stale {
            self.rebuild(garbage);
        }
        (!self.snapshot.is_empty()).then(|| Arc::clone(&self.snapshot))
    }

    #[cold]
    #[inline(never)]
    fn rebuild(&mut self, garbage: &mut Vec<Arc<[Subscriber]>>) {
        let fresh: Arc<[Subscriber]> = self
            .members
            .iter()
            .map(|(&id, queue)| Subscriber {
                id,
                queue: Arc::clone(queue),
            })
            .collect();
        garbage.push(std::mem::replace(&mut self.snapshot, fresh));
        self.stale = false;
    }
}

/// The buckets a report matched, as snapshots: whoever is in them gets the report. A
/// subscriber is in at most one of them (its patterns are canonical), so no one gets a
/// report twice.
#[derive(Default)]
struct Matched {
    all: Option<Arc<[Subscriber]>>,
    exact: Option<Arc<[Subscriber]>>,
    prefixes: Vec<Arc<[Subscriber]>>,
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

/// What `[]` (no topics: every report) means, as patterns: the catch-all bucket.
const EVERYTHING: &[TopicPattern] = &[TopicPattern::Any];

/// The subscriptions, by connection id and by topic.
#[derive(Default)]
struct Index {
    by_id: HashMap<u64, Registration>,
    /// `*` and topic-less subscribers. Never removed, unlike the others.
    all: Bucket,
    exact: HashMap<Box<str>, Bucket>,
    /// Prefix patterns: the root's bucket is `Prefix("")`'s (every report with a code).
    prefixes: Node,
}

/// A node of the prefix trie, path-compressed: the prefix of a node is the labels from
/// the root down to it, and only a node with a bucket, or where paths branch, exists.
///
/// A report's code is walked down from the root against the labels, and every bucket
/// passed on the way is one of its prefixes: each byte of the code is compared once at
/// most, and the walk ends at the longest subscribed prefix along it (at most
/// `max_topic_len` bytes), whatever the number of prefixes subscribed to. It is not a hash
/// map from prefix to bucket, looked up under `code[..len]` for each prefix length
/// subscribed to: that hashes each of those prefixes in full, a cost quadratic in the
/// code's length (with 256 distinct lengths and a 256-byte code, 7.3 µs per report
/// against this trie's 1.6 µs; the hub benchmark's `hub_topics/prefix_lengths/256`). Nor
/// is it a trie of one node per byte, whose 64 patterns of 256 bytes would take 16,384
/// nodes per connection: here a prefix costs at most two nodes (its own, and one where
/// it branches off), and the trie's depth is at most the longest prefix's length.
#[derive(Default)]
struct Node {
    /// The bytes from the parent to this node: never empty, but at the root.
    label: Box<[u8]>,
    /// Boxed, for a small node: a walk passes through nodes without one.
    bucket: Option<Box<Bucket>>,
    /// The first byte of each child's label, in order: a walk searches these bytes
    /// rather than the children's labels, each in a block of its own.
    firsts: Vec<u8>,
    /// By the first byte of their label, which is distinct among them.
    children: Vec<Node>,
}

impl Node {
    fn child(&self, first: u8) -> Result<usize, usize> {
        self.firsts.binary_search(&first)
    }

    /// Takes the place of its only child, for a node left with no bucket: no node without
    /// a bucket has a single child, so that a path has no more nodes than branchings and
    /// buckets.
    fn absorb_only_child(&mut self) {
        if let Some(mut child) = self.children.pop() {
            let mut label = std::mem::take(&mut self.label).into_vec();
            label.extend_from_slice(&child.label);
            self.label = label.into();
            self.bucket = child.bucket.take();
            self.firsts = std::mem::take(&mut child.firsts);
            self.children = std::mem::take(&mut child.children);
        }
    }
}

impl Drop for Node {
    /// A loop, not the recursion a derived drop would be: a trie as deep as the longest
    /// prefix would otherwise take as many stack frames to drop.
    fn drop(&mut self) {
        let mut below = std::mem::take(&mut self.children);
        while let Some(mut node) = below.pop() {
            below.append(&mut node.children);
        }
    }
}

impl Index {
    /// Adds `id` to the buckets of its canonical `topics`.
    fn link(&mut self, id: u64, topics: &[TopicPattern], queue: &Arc<PushQueue>) {
        for pattern in patterns(topics) {
            match pattern {
                TopicPattern::Any => self.all.add(id, queue),
                TopicPattern::Exact(code) => match self.exact.get_mut(&**code) {
                    Some(bucket) => bucket.add(id, queue),
                    None => {
                        let mut bucket = Bucket::default();
                        bucket.add(id, queue);
                        self.exact.insert(code.clone(), bucket);
                    }
                },
                TopicPattern::Prefix(prefix) => self.link_prefix(prefix.as_bytes(), id, queue),
            }
        }
    }

    /// Adds `id` to the bucket of `prefix` in the trie, making its node if need be. A loop,
    /// not a recursion: how deep the trie is is up to the subscribers.
    fn link_prefix(&mut self, prefix: &[u8], id: u64, queue: &Arc<PushQueue>) {
        let mut node = &mut self.prefixes;
        let mut rest = prefix;
        while let Some(&first) = rest.first() {
            let i = match node.child(first) {
                Ok(i) => i,
                Err(i) => {
                    let mut bucket = Bucket::default();
                    bucket.add(id, queue);
                    let leaf = Node {
                        label: rest.into(),
                        bucket: Some(Box::new(bucket)),
                        firsts: Vec::new(),
                        children: Vec::new(),
                    };
                    node.firsts.insert(i, first);
                    node.children.insert(i, leaf);
                    return;
                }
            };
            let child = &mut node.children[i];
            let common = child
                .label
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if common < child.label.len() {
                // The prefix ends or branches off inside the label: split it there.
                let tail = Node {
                    label: child.label[common..].into(),
                    bucket: child.bucket.take(),
                    firsts: std::mem::take(&mut child.firsts),
                    children: std::mem::take(&mut child.children),
                };
                child.label = child.label[..common].into();
                child.firsts.push(tail.label[0]);
                child.children.push(tail);
            }
            rest = &rest[common..];
            node = child;
        }
        node.bucket.get_or_insert_with(Box::default).add(id, queue);
    }

    /// Removes `id` from the buckets of its canonical `topics`. A bucket left empty is
    /// removed, and goes to `garbage` (its snapshot may hold many queues) for the caller
    /// to drop once it has released the lock.
    fn unlink(&mut self, id: u64, topics: &[TopicPattern], garbage: &mut Vec<Bucket>) {
        for pattern in patterns(topics) {
            match pattern {
                TopicPattern::Any => self.all.remove(id),
                TopicPattern::Exact(code) => {
                    if let Some(bucket) = self.exact.get_mut(&**code) {
                        bucket.remove(id);
                        if bucket.members.is_empty() {
                            garbage.extend(self.exact.remove(&**code));
                        }
                    }
                }
                TopicPattern::Prefix(prefix) => {
                    garbage.extend(self.unlink_prefix(prefix.as_bytes(), id));
                }
            }
        }
    }

    /// Removes `id` from the bucket of `prefix` in the trie; returns the bucket if that
    /// left it empty. Its node then goes if it has no children, and merges with its child
    /// if it has one; its parent, left with one child and no bucket, merges with it.
    /// Nothing above the parent changes. A loop, like [`Index::link_prefix`].
    fn unlink_prefix(&mut self, prefix: &[u8], id: u64) -> Option<Bucket> {
        fn emptied(bucket: &mut Option<Box<Bucket>>, id: u64) -> Option<Bucket> {
            let b = bucket.as_mut()?;
            b.remove(id);
            if b.members.is_empty() {
                bucket.take().map(|b| *b)
            } else {
                None
            }
        }
        let mut parent = &mut self.prefixes;
        let mut at_root = true;
        let mut rest = prefix;
        let Some(&first) = rest.first() else {
            // The root stays, with or without a bucket.
            return emptied(&mut parent.bucket, id);
        };
        let mut i = parent.child(first).ok()?;
        loop {
            let label_len = parent.children[i].label.len();
            if !rest.starts_with(&parent.children[i].label) {
                return None;
            }
            if rest.len() > label_len {
                rest = &rest[label_len..];
                let next = parent.children[i].child(rest[0]).ok()?;
                parent = &mut parent.children[i];
                at_root = false;
                i = next;
                continue;
            }
            let node = &mut parent.children[i];
            let removed = emptied(&mut node.bucket, id)?;
            match node.children.len() {
                0 => {
                    parent.firsts.remove(i);
                    parent.children.remove(i);
                    if !at_root && parent.bucket.is_none() && parent.children.len() == 1 {
                        parent.absorb_only_child();
                    }
                }
                1 => node.absorb_only_child(),
                _ => {}
            }
            return Some(removed);
        }
    }

    /// The snapshots of the non-empty buckets that a report with this `code` matches:
    /// the catch-all, the exact code, and the code's prefixes that are subscribed to.
    fn matching(&mut self, code: Option<&str>, garbage: &mut Vec<Arc<[Subscriber]>>) -> Matched {
        let mut matched = Matched {
            all: self.all.snapshot(garbage),
            ..Matched::default()
        };
        let Some(code) = code else {
            return matched;
        };
        // Both lookups are free when nobody subscribed to a code or a prefix: an empty
        // map is not hashed into, and the trie's root has no bucket and no children.
        matched.exact = self
            .exact
            .get_mut(code)
            .and_then(|bucket| bucket.snapshot(garbage));
        let mut node = &mut self.prefixes;
        let mut rest = code.as_bytes();
        loop {
            if let Some(bucket) = &mut node.bucket {
                matched.prefixes.extend(bucket.snapshot(garbage));
            }
            let Some(&first) = rest.first() else {
                break;
            };
            let Ok(i) = node.child(first) else {
                break;
            };
            let child = &mut node.children[i];
            let Some(tail) = rest.strip_prefix(&*child.label) else {
                break;
            };
            rest = tail;
            node = child;
        }
        matched
    }
}

/// The patterns a subscription with these (canonical) topics is in the buckets of.
fn patterns(topics: &[TopicPattern]) -> &[TopicPattern] {
    if topics.is_empty() {
        EVERYTHING
    } else {
        topics
    }
}

/// A subscriber's patterns without those covered by another of its own, so that for any
/// code at most one of them matches, and the index can deliver a report to each
/// subscriber in it without checking for duplicates:
/// - any list with `*` becomes `[*]` (an empty list stays empty: both mean everything);
/// - duplicates go;
/// - a prefix goes if another of its prefixes is a prefix of it (`a*` covers `ab*`), so
///   the prefixes left are such that none starts with another, and a code has at most
///   one of them as its prefix;
/// - an exact code goes if one of the prefixes left matches it (`host.*` covers
///   `host.cpu`).
///
/// O(n log n) for n patterns: sorted, each prefix is compared with the last one kept,
/// and each code with the one prefix before it in order (the only one left that can be
/// its prefix).
fn canonical(mut topics: Vec<TopicPattern>) -> Arc<[TopicPattern]> {
    if topics.iter().any(|p| matches!(p, TopicPattern::Any)) {
        return Arc::new([TopicPattern::Any]);
    }
    // Prefixes first, then exact codes; each part in byte order.
    topics.sort_unstable_by(|a, b| order(a).cmp(&order(b)));
    topics.dedup();
    let prefixes = topics.partition_point(|p| matches!(p, TopicPattern::Prefix(_)));
    // In order, a prefix's prefixes come before it, and whatever lies between them starts
    // with them too: a prefix is covered if and only if it starts with the last one kept.
    let mut kept = 0;
    for i in 0..prefixes {
        if kept == 0 || !text(&topics[i]).starts_with(text(&topics[kept - 1])) {
            topics.swap(kept, i);
            kept += 1;
        }
    }
    let prefixes = kept;
    for i in prefixes..topics.len() {
        let code = text(&topics[i]);
        // Of prefixes none of which starts with another, only the last one not after
        // `code` can be a prefix of it.
        let before = topics[..prefixes].partition_point(|p| text(p) <= code);
        if before == 0 || !code.starts_with(text(&topics[before - 1])) {
            topics.swap(kept, i);
            kept += 1;
        }
    }
    topics.truncate(kept);
    topics.into()
}

/// Sort key for [`canonical`]: prefixes before exact codes, then the text.
fn order(pattern: &TopicPattern) -> (u8, &str) {
    match pattern {
        TopicPattern::Prefix(prefix) => (0, prefix),
        TopicPattern::Exact(code) => (1, code),
        TopicPattern::Any => (2, ""),
    }
}

/// A prefix's or an exact code's text.
fn text(pattern: &TopicPattern) -> &str {
    order(pattern).1
}

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
    fn publish(hub: &Hub, _stats: &Stats, json: &'static str, policy: SlowConsumer) -> u64 {
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
    fn publish_code(hub: &Hub, _stats: &Stats, code: Option<&str>) -> u64 {
        let json = match code {
            Some(code) => format!(r#"{{"code":"{code}"}}"#),
            None => "{}".to_owned(),
        };
        let report = Report::parse(Bytes::from(json)).unwrap();
        hub.publish(&report, None, &mut Wakes::default())
    }

    fn patterns_of(topics: &[&str]) -> Vec<TopicPattern> {
        topics.iter().map(|t| TopicPattern::parse(t)).collect()
    }

    /// The ids whose queue got a push since the last call; none may have got two.
    fn reached(queues: &[(u64, Arc<PushQueue>)]) -> Vec<u64> {
        let mut ids = Vec::new();
        for (id, q) in queues {
            match take(q).len() {
                0 => {}
                1 => ids.push(*id),
                n => panic!("subscriber {id} got {n} pushes of one report"),
            }
        }
        ids
    }

    /// The index is consistent: every subscription is in exactly the buckets of its
    /// patterns, with its queue; no bucket but the catch-all is empty; the trie is
    /// path-compressed (no node without a bucket has fewer than two children, but the
    /// root) and its children are ordered by a distinct first byte. Answers the trie's
    /// prefixes with a bucket, and its number of nodes (the root included).
    fn check(hub: &Hub) -> (Vec<String>, usize) {
        let index = hub.lock();
        let mut prefixes = HashMap::new();
        let mut nodes = 0;
        let mut stack = vec![(Vec::new(), &index.prefixes)];
        while let Some((path, node)) = stack.pop() {
            nodes += 1;
            let at_root = nodes == 1;
            assert_eq!(node.label.is_empty(), at_root);
            let firsts: Vec<u8> = node.children.iter().map(|c| c.label[0]).collect();
            assert_eq!(firsts, node.firsts);
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "children order");
            match &node.bucket {
                Some(bucket) => {
                    assert!(!bucket.members.is_empty(), "empty bucket");
                    prefixes.insert(String::from_utf8(path.clone()).unwrap(), bucket);
                }
                None => assert!(at_root || node.children.len() >= 2, "{path:?}"),
            }
            for child in &node.children {
                let mut below = path.clone();
                below.extend_from_slice(&child.label);
                stack.push((below, child));
            }
        }
        let mut memberships = 0;
        for (id, sub) in &index.by_id {
            for pattern in patterns(&sub.topics) {
                let bucket = match pattern {
                    TopicPattern::Any => &index.all,
                    TopicPattern::Exact(code) => &index.exact[&**code],
                    TopicPattern::Prefix(prefix) => prefixes[&**prefix],
                };
                assert!(
                    Arc::ptr_eq(&bucket.members[id], &sub.queue),
                    "{id} {pattern}"
                );
                memberships += 1;
            }
        }
        assert!(
            index.exact.values().all(|b| !b.members.is_empty()),
            "empty bucket"
        );
        let members: usize = (index.exact.values().chain(prefixes.values().map(|b| &***b)))
            .map(|b| b.members.len())
            .sum();
        assert_eq!(members + index.all.members.len(), memberships);
        let mut listed: Vec<String> = prefixes.into_keys().collect();
        listed.sort();
        (listed, nodes)
    }

    #[test]
    fn reports_are_routed_by_exact_code_prefix_and_catch_all() {
        let hub = Hub::default();
        let stats = Stats::default();
        let subscriptions: [(u64, &[&str]); 5] = [
            (1, &["host.cpu"]),
            (2, &["host.*"]),
            (3, &["*"]),
            (4, &[]),
            (5, &["db.x", "db.y"]),
        ];
        let queues: Vec<_> = subscriptions
            .iter()
            .map(|&(id, topics)| {
                let q = PushQueue::new(4);
                hub.subscribe(id, patterns_of(topics), Arc::clone(&q));
                (id, q)
            })
            .collect();
        check(&hub);
        let cases: [(&str, &[u64]); 8] = [
            (r#"{"code":"host.cpu"}"#, &[1, 2, 3, 4]),
            (r#"{"code":"host.mem"}"#, &[2, 3, 4]),
            (r#"{"code":"host."}"#, &[2, 3, 4]),
            (r#"{"code":"host"}"#, &[3, 4]),
            (r#"{"code":"db.y"}"#, &[3, 4, 5]),
            (r#"{"code":"other"}"#, &[3, 4]),
            ("{}", &[3, 4]),
            (r#"{"code":7}"#, &[3, 4]),
        ];
        for (json, want) in cases {
            let delivered = publish(&hub, &stats, json, SlowConsumer::Drop);
            assert_eq!(reached(&queues), want, "{json}");
            assert_eq!(delivered, want.len() as u64, "{json}");
        }
    }

    #[test]
    fn overlapping_patterns_of_one_subscriber_deliver_once() {
        let hub = Hub::default();
        let stats = Stats::default();
        let subscriptions: [(u64, &[&str], &[&str]); 5] = [
            (1, &["host.*", "host.cpu", "host.cpu", "h*"], &["h*"]),
            (2, &["a", "*", "b*"], &["*"]),
            (3, &["abc*", "a*", "ab*", "abc", "b"], &["a*", "b"]),
            (4, &["ab", "ab", "ab*"], &["ab*"]),
            (5, &[], &[]),
        ];
        let queues: Vec<_> = subscriptions
            .iter()
            .map(|&(id, topics, _)| {
                let q = PushQueue::new(4);
                hub.subscribe(id, patterns_of(topics), Arc::clone(&q));
                (id, q)
            })
            .collect();
        check(&hub);
        let mut listed = hub.subscriptions();
        listed.sort_by_key(|&(id, _)| id);
        for ((id, topics), (want_id, _, canonical)) in listed.iter().zip(&subscriptions) {
            assert_eq!(id, want_id);
            assert_eq!(&**topics, patterns_of(canonical), "subscriber {id}");
        }
        for (code, want) in [
            ("host.cpu", &[1, 2, 5][..]),
            ("abc", &[2, 3, 4, 5]),
            ("ab", &[2, 3, 4, 5]),
            ("b", &[2, 3, 5]),
        ] {
            let delivered = publish_code(&hub, &stats, Some(code));
            assert_eq!(reached(&queues), want, "{code}");
            assert_eq!(delivered, want.len() as u64, "{code}");
        }
    }

    #[test]
    fn sixty_four_prefixes_of_distinct_lengths() {
        let hub = Hub::default();
        let stats = Stats::default();
        // "a*", "ba*", "bba*", ...: 64 lengths, none a prefix of another.
        let prefix = |n: usize| format!("{}a", "b".repeat(n));
        let topics = (0..64)
            .map(|n| TopicPattern::parse(&format!("{}*", prefix(n))))
            .collect();
        let q = PushQueue::new(4);
        hub.subscribe(1, topics, Arc::clone(&q));
        assert_eq!(hub.subscriptions()[0].1.len(), 64);
        // The root, a node per prefix, and one per branching: "b" to 62 b's (the last
        // prefix, 63 b's and "a", hangs from that one with the label "ba").
        let (prefixes, nodes) = check(&hub);
        assert_eq!((prefixes.len(), nodes), (64, 1 + 64 + 62));
        let queues = [(1, q)];
        for n in 0..64 {
            let code = format!("{}.tail", prefix(n));
            assert_eq!(publish_code(&hub, &stats, Some(&code)), 1, "{code}");
            assert_eq!(reached(&queues), [1], "{code}");
        }
        for code in ["b".repeat(64), "b".repeat(200), "c".into(), String::new()] {
            assert_eq!(publish_code(&hub, &stats, Some(&code)), 0, "{code}");
        }
        assert_eq!(reached(&queues), [0; 0]);
        // Nested ones are one pattern: the shortest.
        let nested = (1..=64)
            .map(|n| TopicPattern::parse(&format!("{}*", "a".repeat(n))))
            .collect();
        let nested_q = PushQueue::new(4);
        hub.subscribe(2, nested, Arc::clone(&nested_q));
        check(&hub);
        assert_eq!(publish_code(&hub, &stats, Some(&"a".repeat(80))), 2);
        assert_eq!(take(&nested_q).len(), 1);
        hub.unsubscribe(1);
        assert_eq!(check(&hub), (vec!["a".to_owned()], 2));
        hub.unsubscribe(2);
        assert_eq!(check(&hub), (Vec::new(), 1), "the trie is back to its root");
    }

    #[test]
    fn a_deep_trie_is_linked_walked_and_dropped_without_recursion() {
        const DEPTH: usize = 3000;
        // A small stack, which a recursion as deep as the trie would overflow.
        let thread = std::thread::Builder::new().stack_size(256 * 1024);
        let deep = thread.spawn(|| {
            let hub = Hub::default();
            let stats = Stats::default();
            let queues: Vec<_> = (1..=DEPTH)
                .map(|n| {
                    let q = PushQueue::new(4);
                    let nested = TopicPattern::Prefix("a".repeat(n).into());
                    hub.subscribe(n as u64, vec![nested], Arc::clone(&q));
                    q
                })
                .collect();
            let code = "a".repeat(DEPTH + 1);
            assert_eq!(publish_code(&hub, &stats, Some(&code)), DEPTH as u64);
            assert!(queues.iter().all(|q| take(q).len() == 1));
            // Unlinking one from the middle merges its node into its only child.
            hub.unsubscribe(DEPTH as u64 / 2);
            assert_eq!(publish_code(&hub, &stats, Some(&code)), DEPTH as u64 - 1);
            drop(hub);
        });
        deep.unwrap().join().unwrap();
    }

    #[test]
    fn a_report_nobody_wants_touches_no_queue() {
        let hub = Hub::default();
        let stats = Stats::default();
        // Every queue is closed: a publisher that tried one would evict its subscriber.
        for id in 0..1000u64 {
            let q = PushQueue::new(4);
            let topics = match id % 3 {
                0 => vec![TopicPattern::parse(&format!("bench.{id}"))],
                1 => vec![TopicPattern::parse(&format!("bench.{id}.*"))],
                _ => patterns_of(&["other.*", "bench.x"]),
            };
            hub.subscribe(id, topics, Arc::clone(&q));
            q.close();
        }
        for code in [
            Some("bench.2"),
            Some("bench.1"),
            Some("bench."),
            Some(""),
            None,
        ] {
            assert_eq!(publish_code(&hub, &stats, code), 0, "{code:?}");
            assert_eq!(hub.subscriber_count(), 1000, "{code:?} touched a queue");
        }
        // The same check sees a queue that is touched.
        assert_eq!(publish_code(&hub, &stats, Some("bench.4.x")), 0);
        assert_eq!(hub.subscriber_count(), 999);
        check(&hub);
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn pattern() -> impl Strategy<Value = TopicPattern> {
            // Short texts over two letters, so that patterns often overlap and match;
            // `Prefix("")` (every report with a code) too, though no topic parses as it.
            prop_oneof![
                1 => Just(TopicPattern::Any),
                4 => "[ab]{0,5}".prop_map(|p| TopicPattern::Prefix(p.into())),
                4 => "[ab]{0,5}".prop_map(|c| TopicPattern::Exact(c.into())),
            ]
        }

        #[derive(Debug, Clone)]
        enum Op {
            /// With a new queue, or (`true`) the id's current one.
            Subscribe(u64, Vec<TopicPattern>, bool),
            Unsubscribe(u64),
            Publish(Option<String>),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u64..8, prop::collection::vec(pattern(), 0..5), any::<bool>())
                    .prop_map(|(id, topics, reuse)| Op::Subscribe(id, topics, reuse)),
                2 => (0u64..8).prop_map(Op::Unsubscribe),
                4 => prop::option::of("[ab]{0,6}").prop_map(Op::Publish),
            ]
        }

        proptest! {
            /// Subscriptions change between reports, so that publishers use snapshots
            /// rebuilt after changes, and buckets come and go.
            #[test]
            fn the_index_delivers_what_the_naive_matcher_says_once(
                ops in prop::collection::vec(op(), 1..60),
            ) {
                let hub = Hub::default();
                let stats = Stats::default();
                let mut model: HashMap<u64, (Vec<TopicPattern>, Arc<PushQueue>)> =
                    HashMap::new();
                for op in ops {
                    match op {
                        Op::Subscribe(id, topics, reuse) => {
                            let queue = match model.get(&id) {
                                Some((_, q)) if reuse => Arc::clone(q),
                                _ => PushQueue::new(4),
                            };
                            hub.subscribe(id, topics.clone(), Arc::clone(&queue));
                            model.insert(id, (topics, queue));
                        }
                        Op::Unsubscribe(id) => {
                            hub.unsubscribe(id);
                            model.remove(&id);
                        }
                        Op::Publish(code) => {
                            let code = code.as_deref();
                            let listed: HashMap<_, _> =
                                hub.subscriptions().into_iter().collect();
                            let mut want = 0;
                            for (topics, _) in model.values() {
                                want += u64::from(TopicPattern::any_matches(topics, code));
                            }
                            let delivered = publish_code(&hub, &stats, code);
                            prop_assert_eq!(delivered, want, "{:?}", code);
                            for (id, (topics, queue)) in &model {
                                let naive = TopicPattern::any_matches(topics, code);
                                prop_assert_eq!(
                                    take(queue).len(), usize::from(naive), "{} {:?}", id, code
                                );
                                prop_assert!(!queue.is_closed());
                                // The canonical patterns match the same, one at most.
                                let canonical = &listed[id];
                                prop_assert_eq!(
                                    TopicPattern::any_matches(canonical, code), naive
                                );
                                let matching =
                                    canonical.iter().filter(|p| p.matches(code)).count();
                                prop_assert!(
                                    matching <= 1, "{:?} matches {:?} twice", canonical, code
                                );
                            }
                        }
                    }
                    check(&hub);
                }
                prop_assert_eq!(hub.subscriber_count(), model.len());
            }
        }
    }

    fn take(q: &PushQueue) -> VecDeque<Arc<Push>> {
        let mut batch = crate::queue::Batch::default();
        q.take_now(&mut batch);
        std::iter::from_fn(|| batch.pop_front()).collect()
    }
}
