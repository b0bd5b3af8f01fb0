//! The topic index: which subscribers each report reaches. Subscriptions are kept by
//! connection id and, for publishers, in buckets by pattern: a hash map of exact codes, a
//! path-compressed trie of prefixes, and one catch-all bucket for `*` and topic-less
//! subscribers. Each bucket holds a snapshot of its subscribers that publishers clone
//! under the hub's lock and iterate without it (see [`Hub`](super::Hub)).

use std::collections::HashMap;
use std::sync::Arc;

use monitor_proto::message::topic::TopicPattern;

use crate::queue::PushQueue;

/// One subscriber, as publishers see it in a bucket's snapshot: its connection id (to
/// evict it) and its queue. Cloning it (into a snapshot) costs one reference count.
#[derive(Clone)]
pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) queue: Arc<PushQueue>,
}

/// One connection's subscription: its canonical patterns (see
/// [`canonical`](super::canonical::canonical)), which name the buckets it is in, and its
/// queue.
pub(super) struct Registration {
    pub(super) topics: Arc<[TopicPattern]>,
    pub(super) queue: Arc<PushQueue>,
}

/// The subscribers of one pattern (an exact code, a prefix, or everything), and the
/// snapshot of them that publishers iterate.
#[derive(Default)]
pub(super) struct Bucket {
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
pub(super) struct Matched {
    pub(super) all: Option<Arc<[Subscriber]>>,
    pub(super) exact: Option<Arc<[Subscriber]>>,
    pub(super) prefixes: Vec<Arc<[Subscriber]>>,
}

/// What `[]` (no topics: every report) means, as patterns: the catch-all bucket.
const EVERYTHING: &[TopicPattern] = &[TopicPattern::Any];

/// The subscriptions, by connection id and by topic.
#[derive(Default)]
pub(super) struct Index {
    pub(super) by_id: HashMap<u64, Registration>,
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
    pub(super) fn link(&mut self, id: u64, topics: &[TopicPattern], queue: &Arc<PushQueue>) {
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
    pub(super) fn unlink(&mut self, id: u64, topics: &[TopicPattern], garbage: &mut Vec<Bucket>) {
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
    pub(super) fn matching(
        &mut self,
        code: Option<&str>,
        garbage: &mut Vec<Arc<[Subscriber]>>,
    ) -> Matched {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::SlowConsumer;
    use crate::hub::tests::{patterns_of, publish, publish_code, take};
    use crate::hub::Hub;
    use crate::stats::Stats;

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
    pub(in crate::hub) fn check(hub: &Hub) -> (Vec<String>, usize) {
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
}
