//! One run from start to end: every subscriber connected and subscribed, the reporters
//! through warmup and the measured window, the drain, and the figures summed up.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::BenchConfig;
use super::open_files::check_open_files;
use super::progress::progress_bar;
use super::reporter::reporter;
use super::shared::Shared;
use super::subscriber::subscriber;
use super::summary::{sum_up, BenchReport};
use super::ws;
use crate::error::{Error, Result};

/// Runs the benchmark: subscribe every subscriber, report for `warmup + duration`, drain,
/// and sum up.
///
/// # Errors
/// [`Error::Config`]; a connection error if any subscriber or reporter cannot connect
/// (after 3 attempts each).
pub async fn run(cfg: BenchConfig) -> Result<BenchReport> {
    cfg.validate()?;
    check_open_files(&cfg)?;
    let sh = Shared::new(cfg.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // 1. Every subscriber subscribed (acknowledged) before anything is reported.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    // The transport is chosen here, once: neither subscriber loop branches on it.
    let subscribers: Vec<JoinHandle<()>> = (0..cfg.subscribers)
        .map(|i| {
            let (sh, ready, stop) = (Arc::clone(&sh), ready_tx.clone(), stop_rx.clone());
            match &cfg.ws {
                None => tokio::spawn(subscriber(i, sh, ready, stop)),
                Some(url) => tokio::spawn(ws::subscriber(i, sh, url.clone(), ready, stop)),
            }
        })
        .collect();
    drop(ready_tx);
    let mut first_error = None;
    let mut ok = 0usize;
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let stop_all = |subs: Vec<JoinHandle<()>>| {
        let _ = stop_tx.send(true);
        async move {
            let all = futures::future::join_all(subs);
            let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
        }
    };
    if let Some(e) = first_error {
        stop_all(subscribers).await;
        return Err(Error::Bench {
            reason: format!(
                "{} of {} subscribers could not subscribe; first error: {e}",
                cfg.subscribers - ok,
                cfg.subscribers
            ),
        });
    }
    tracing::info!(
        subscribers = ok,
        secs = sh.t0.elapsed().as_secs_f64(),
        "all subscribers subscribed"
    );
    tokio::time::sleep(cfg.settle).await;

    // 2. Reporters, for warmup + duration.
    let start = sh.now_ns();
    let ws = start + u64::try_from(cfg.warmup.as_nanos()).unwrap_or(u64::MAX);
    let we = ws.saturating_add(u64::try_from(cfg.duration.as_nanos()).unwrap_or(u64::MAX));
    sh.window_start.store(ws, SeqCst);
    sh.window_end.store(we, SeqCst);
    let bar = progress_bar(&sh);
    let reporters: Vec<_> = (0..cfg.reporters)
        .map(|i| {
            let extra = u64::from((i as u64) < cfg.rate % cfg.reporters as u64);
            let share = cfg.rate / cfg.reporters as u64 + extra;
            tokio::spawn(reporter(Arc::clone(&sh), share))
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut reporter_error = None;
    for r in futures::future::join_all(reporters).await {
        match r {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => {
                reporter_error.get_or_insert(e);
            }
            Err(e) => {
                reporter_error.get_or_insert(Error::Bench {
                    reason: format!("reporter task failed: {e}"),
                });
            }
        }
    }
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    let pub_done = sh.now_ns();
    if let Some(e) = reporter_error {
        for (_, acks) in outcomes {
            acks.abort();
        }
        stop_all(subscribers).await;
        return Err(e);
    }

    // 3. Drain: deliveries and acks still in flight; give up after `drain`, or after 1 s
    //    without progress.
    // Fan-out: every subscriber expects every report; distinct topics: each report is
    // expected by one subscriber.
    let n = if cfg.distinct_topics {
        1
    } else {
        cfg.subscribers as u64
    };
    let published = sh.published.load(SeqCst);
    let expected = published * n;
    let drain_deadline = Instant::now() + cfg.drain;
    let mut last = (u64::MAX, u64::MAX);
    let mut last_change = Instant::now();
    loop {
        let d = sh.delivered.load(Relaxed);
        let acks = sh.acks.load(Relaxed);
        if (d >= expected && acks >= published) || Instant::now() >= drain_deadline {
            break;
        }
        if (d, acks) != last {
            last = (d, acks);
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = (sh.now_ns() - pub_done) as f64 / 1e9;
    stop_all(subscribers).await;
    for (writer, acks) in outcomes {
        acks.abort();
        drop(writer);
    }

    // 4. Sum up.
    sum_up(&cfg, &sh, published, expected, drain_s)
}
