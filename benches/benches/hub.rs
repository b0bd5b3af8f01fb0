//! Criterion benchmarks of the server's fan-out hub, without sockets: one report published
//! to N in-memory subscribers, each of which then takes its push from its queue.
//!
//! | group | ours | baseline |
//! |---|---|---|
//! | `hub_fanout/{1,100,1000}` | `Hub::publish` (parse-free: the report is parsed once, outside the loop) + every subscriber's `PushQueue::take_now` | `tokio::sync::broadcast`: `send` of the same push body + every receiver's `try_recv` |
//! | `hub_churn/changing` | the same at 1000 subscribers, while another thread subscribes and unsubscribes one more connection every 50 µs | `hub_churn/steady`: the same with no changes |
//!
//! Both sides share one body per report and hand each subscriber a reference-counted
//! pointer to it. Throughput is in deliveries (elements): N per iteration.
//!
//! ```text
//! cargo bench -p monitor-benches --bench hub
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use monitor_proto::Report;
use monitor_server::hub::{Hub, PushQueue};
use monitor_server::queue::Batch;
use monitor_server::stats::Stats;
use monitor_server::SlowConsumer;

const SUBSCRIBERS: [usize; 3] = [1, 100, 1000];

fn report() -> Report {
    let mut json = String::from(r#"{"code":"host.health","host":"web-01","cpu":12.5,"pad":""#);
    json.push_str(&"x".repeat(200 - json.len() - 2));
    json.push_str("\"}");
    Report::parse(Bytes::from(json)).unwrap()
}

/// A hub with `n` subscribers to every report, and what fanning out to them needs.
struct Fixture {
    hub: Arc<Hub>,
    queues: Vec<Arc<PushQueue>>,
    stats: Stats,
    batch: Batch,
    wakes: Vec<Waker>,
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let hub = Arc::new(Hub::default());
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
            stats: Stats::default(),
            batch: Batch::default(),
            wakes: Vec::new(),
        }
    }

    /// What one report costs the server in memory: publishing it, then every subscriber
    /// taking its push. Returns how many subscribers it reached.
    fn fan_out(&mut self, report: &Report) -> u64 {
        let delivered = self.hub.publish(
            report,
            usize::MAX,
            SlowConsumer::Drop,
            &self.stats,
            &mut self.wakes,
        );
        self.wakes.clear();
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

criterion_group!(benches, hub_fanout, hub_churn);
criterion_main!(benches);
