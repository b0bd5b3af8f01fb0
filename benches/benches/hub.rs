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

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use monitor_proto::Report;
use monitor_server::hub::{Hub, PushQueue};
use monitor_server::stats::Stats;
use monitor_server::SlowConsumer;

const SUBSCRIBERS: [usize; 3] = [1, 100, 1000];

fn report() -> Report {
    let mut json = String::from(r#"{"code":"host.health","host":"web-01","cpu":12.5,"pad":""#);
    json.push_str(&"x".repeat(200 - json.len() - 2));
    json.push_str("\"}");
    Report::parse(Bytes::from(json)).unwrap()
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
            let hub = Hub::default();
            let stats = Stats::default();
            let queues: Vec<_> = (0..n)
                .map(|id| {
                    let q = PushQueue::new(1024);
                    hub.subscribe(id as u64, Vec::new(), Arc::clone(&q));
                    q
                })
                .collect();
            let mut batch = VecDeque::new();
            let mut wakes = Vec::new();
            b.iter(|| {
                let delivered = hub.publish(
                    black_box(&report),
                    usize::MAX,
                    SlowConsumer::Drop,
                    &stats,
                    &mut wakes,
                );
                wakes.clear();
                assert_eq!(delivered, n as u64);
                for q in &queues {
                    q.take_now(&mut batch);
                    black_box(batch.pop_front());
                }
            });
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
            let hub = Arc::new(Hub::default());
            let stats = Stats::default();
            let queues: Vec<_> = (0..N)
                .map(|id| {
                    let q = PushQueue::new(1024);
                    hub.subscribe(id as u64, Vec::new(), Arc::clone(&q));
                    q
                })
                .collect();
            let stop = Arc::new(AtomicBool::new(false));
            let changer = changing.then(|| {
                let (hub, stop) = (Arc::clone(&hub), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        hub.subscribe(u64::MAX, Vec::new(), PushQueue::new(1024));
                        std::thread::sleep(Duration::from_micros(50));
                        hub.unsubscribe(u64::MAX);
                        std::thread::sleep(Duration::from_micros(50));
                    }
                })
            });
            let mut batch = VecDeque::new();
            let mut wakes = Vec::new();
            b.iter(|| {
                let delivered = hub.publish(
                    black_box(&report),
                    usize::MAX,
                    SlowConsumer::Drop,
                    &stats,
                    &mut wakes,
                );
                wakes.clear();
                assert!(delivered >= N as u64);
                for q in &queues {
                    q.take_now(&mut batch);
                    black_box(batch.pop_front());
                }
            });
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
