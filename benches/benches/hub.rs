//! Criterion benchmarks of the server's fan-out hub, without sockets: one report published
//! to N in-memory subscribers, each of which then takes its push from its queue.
//!
//! | group | ours | baseline |
//! |---|---|---|
//! | `hub_fanout/{1,100,1000}` | `Hub::publish` (parse-free: the report is parsed once, outside the loop) + every subscriber's `PushQueue::take_now` | `tokio::sync::broadcast`: `send` of the same push body + every receiver's `try_recv` |
//! | `hub_churn/changing` | the same at 1000 subscribers, while another thread subscribes and unsubscribes one more connection every 50 µs | `hub_churn/steady`: the same with no changes |
//! | `hub_topics/distinct/100000` | `Hub::publish` of a report for one of 100,000 subscribers, each subscribed to its own code (`bench.<i>`; the reports rotate over the codes) + that subscriber's `take_now` | `hub_topics/distinct/10`: the same among 10 |
//! | `hub_topics/distinct_reports_10/100000` | the same among 100,000, the reports rotating over 10 of the codes (few cache misses) | `hub_topics/distinct/10` |
//! | `hub_topics/prefix_lengths/256` | the same to one subscriber of a 256-byte code, while 4 others hold 64 prefix patterns each, of every length from 1 to 256, none matching: 256 prefix lookups per report, the topic index's worst case under `max_topic_len = 256`; `prefix_lengths_code_11/256`: the same with an 11-byte code (11 lookups) | `hub_topics/prefix_lengths/0`: no such patterns |
//!
//! Both sides share one body per report and hand each subscriber a reference-counted
//! pointer to it. Throughput is in deliveries (elements): N per iteration (1 in
//! `hub_topics`).
//!
//! ```text
//! cargo bench -p monitor-benches --bench hub
//! cargo bench -p monitor-benches --bench hub -- hub_topics   # one group
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use monitor_proto::message::request::Report;
use monitor_proto::message::topic::TopicPattern;
use monitor_server::hub::{Hub, HubSettings, PushQueue, Wakes};
use monitor_server::queue::Batch;
use monitor_server::SlowConsumer;

const SUBSCRIBERS: [usize; 3] = [1, 100, 1000];

fn report() -> Report {
    report_for("host.health")
}

/// A 200-byte report (longer if the code needs it) with this code.
fn report_for(code: &str) -> Report {
    let mut json = format!(r#"{{"code":"{code}","host":"web-01","cpu":12.5,"pad":""#);
    json.push_str(&"x".repeat(200usize.saturating_sub(json.len() + 2)));
    json.push_str("\"}");
    Report::parse(Bytes::from(json)).unwrap()
}

/// A hub with `n` subscribers to every report, and what fanning out to them needs.
struct Fixture {
    hub: Arc<Hub>,
    queues: Vec<Arc<PushQueue>>,
    batch: Batch,
    wakes: Wakes,
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let hub = Arc::new(hub());
        let queues = (0..n)
            .map(|id| {
                let q = PushQueue::new(1024);
                hub.subscribe(id as u64, Vec::new(), Arc::clone(&q));
                q
            })
            .collect();
        Fixture {
            hub,
            queues,
            batch: Batch::default(),
            wakes: Wakes::default(),
        }
    }

    /// What one report costs the server in memory: publishing it, then every subscriber
    /// taking its push. Returns how many subscribers it reached.
    fn fan_out(&mut self, report: &Report) -> u64 {
        let delivered = self.hub.publish(report, None, &mut self.wakes);
        self.wakes.wake_all();
        for q in &self.queues {
            q.take_now(&mut self.batch);
            black_box(self.batch.pop_front());
        }
        delivered
    }
}

fn hub_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_fanout");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    let report = report();
    for &n in &SUBSCRIBERS {
        group.throughput(Throughput::Elements(n as u64));

        group.bench_function(BenchmarkId::new("monitor_hub", n), |b| {
            let mut fixture = Fixture::new(n);
            b.iter(|| assert_eq!(fixture.fan_out(black_box(&report)), n as u64));
        });

        group.bench_function(BenchmarkId::new("tokio_broadcast", n), |b| {
            let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(1024);
            let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
            b.iter(|| {
                // The same work per report as the hub: build the push body once.
                let body = monitor_proto::message::reply::push(black_box(&report.raw));
                assert_eq!(tx.send(body).unwrap(), n);
                for rx in &mut rxs {
                    black_box(rx.try_recv().unwrap());
                }
            });
        });
    }
    group.finish();
}

/// Fan-out to 1000 subscribers while another thread subscribes and unsubscribes one more
/// connection, pausing 50 µs after each change (up to 20,000 changes a second, a
/// reconnect storm), against the same fan-out with no changes, in the same run. The
/// ratio is what subscription changes cost publishers.
fn hub_churn(c: &mut Criterion) {
    const N: usize = 1000;
    let mut group = c.benchmark_group("hub_churn");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .throughput(Throughput::Elements(N as u64));
    let report = report();
    for changing in [false, true] {
        let label = if changing { "changing" } else { "steady" };
        group.bench_function(BenchmarkId::new("monitor_hub", label), |b| {
            let mut fixture = Fixture::new(N);
            let stop = Arc::new(AtomicBool::new(false));
            let changer = changing.then(|| {
                let (hub, stop) = (Arc::clone(&fixture.hub), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        hub.subscribe(u64::MAX, Vec::new(), PushQueue::new(1024));
                        std::thread::sleep(Duration::from_micros(50));
                        hub.unsubscribe(u64::MAX);
                        std::thread::sleep(Duration::from_micros(50));
                    }
                })
            });
            b.iter(|| assert!(fixture.fan_out(black_box(&report)) >= N as u64));
            stop.store(true, Relaxed);
            if let Some(changer) = changer {
                changer.join().unwrap();
            }
        });
    }
    group.finish();
}

/// Publishing to one subscriber among many that want other codes: what a report costs
/// should not grow with the number of subscriptions on the server, only with the
/// subscribers it matches.
fn hub_topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_topics");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .throughput(Throughput::Elements(1));
    // (subscribers, codes the reports rotate over): all of them, or 10 of the 100,000,
    // which tells the cost of the index's size from that of cache misses.
    for (n, reported) in [(10usize, 10usize), (100_000, 100_000), (100_000, 10)] {
        let name = if reported == n {
            "distinct".to_owned()
        } else {
            format!("distinct_reports_{reported}")
        };
        // Built on first use (not when filtered out), and once, not per sample.
        let mut fixture = None;
        group.bench_function(BenchmarkId::new(name, n), |b| {
            let targets = fixture.get_or_insert_with(|| {
                let mut targets = Targets::default();
                for i in 0..n {
                    let code = format!("bench.{i}");
                    let topics = vec![TopicPattern::parse(&code)];
                    targets.subscriber(i as u64, topics, (i < reported).then_some(&*code));
                }
                targets
            });
            b.iter(|| assert_eq!(targets.publish_next(), 1));
        });
    }
    // 256 distinct prefix lengths (4 subscribers of 64 patterns: the most a connection may
    // have with `max_topics = 64`), none a prefix of the code, and a code long enough to
    // be looked up under every one of them; then an 11-byte code, looked up under 11.
    for (lengths, code_len) in [(0usize, 256usize), (256, 256), (256, 11)] {
        let name = match code_len {
            256 => "prefix_lengths".to_owned(),
            _ => format!("prefix_lengths_code_{code_len}"),
        };
        let mut fixture = None;
        group.bench_function(BenchmarkId::new(name, lengths), |b| {
            let targets = fixture.get_or_insert_with(|| {
                let code = "c".repeat(code_len);
                let mut targets = Targets::default();
                let exact = vec![TopicPattern::Exact(code.as_str().into())];
                targets.subscriber(0, exact, Some(&code));
                for (id, chunk) in (1..=lengths).collect::<Vec<_>>().chunks(64).enumerate() {
                    let topics = chunk
                        .iter()
                        .map(|&len| TopicPattern::parse(&format!("{}d*", "c".repeat(len - 1))))
                        .collect();
                    targets.subscriber(id as u64 + 1, topics, None);
                }
                targets
            });
            b.iter(|| assert_eq!(targets.publish_next(), 1));
        });
    }
    group.finish();
}

/// A hub, and reports for one subscriber each (`reports[i]` for the subscriber of
/// `queues[i]`), published in turn.
struct Targets {
    hub: Hub,
    queues: Vec<Arc<PushQueue>>,
    reports: Vec<Report>,
    next: usize,
    batch: Batch,
    wakes: Wakes,
}

/// A hub as the server makes it, with compression out of the way (the reports are small
/// anyway).
fn hub() -> Hub {
    Hub::new(
        Arc::default(),
        HubSettings {
            compress_threshold: usize::MAX,
            slow_consumer: SlowConsumer::Drop,
        },
    )
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            hub: hub(),
            queues: Vec::new(),
            reports: Vec::new(),
            next: 0,
            batch: Batch::default(),
            wakes: Wakes::default(),
        }
    }
}

impl Targets {
    /// Subscribes `id` to `topics`; with `code`, a report with that code is one of those
    /// published in turn, and it is this subscriber's.
    fn subscriber(&mut self, id: u64, topics: Vec<TopicPattern>, code: Option<&str>) {
        let q = PushQueue::new(1024);
        self.hub.subscribe(id, topics, Arc::clone(&q));
        if let Some(code) = code {
            self.queues.push(q);
            self.reports.push(report_for(code));
        }
    }

    /// Publishes the next report, and its subscriber takes it.
    fn publish_next(&mut self) -> u64 {
        let i = self.next;
        self.next = (i + 1) % self.reports.len();
        let delivered = self
            .hub
            .publish(black_box(&self.reports[i]), None, &mut self.wakes);
        self.wakes.wake_all();
        self.queues[i].take_now(&mut self.batch);
        black_box(self.batch.pop_front());
        delivered
    }
}

criterion_group!(benches, hub_fanout, hub_churn, hub_topics);
criterion_main!(benches);
