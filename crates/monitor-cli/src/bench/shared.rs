//! The state of one run, shared by every subscriber and reporter task: the measured
//! window, the counters the figures come from, each subscriber's progress (the
//! reporters' window follows it) and the latency histograms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Notify, Semaphore};

use super::config::BenchConfig;
use crate::error::{Error, Result};

const HIST_SHARDS: usize = 16;
/// Highest latency tracked (100 s, in ns); larger values are clamped.
const HIST_MAX_NS: u64 = 100_000_000_000;
const CONNECT_CONCURRENCY: usize = 128;
/// Progress value of a subscriber that has gone away (ignored by the window).
pub(super) const GONE: u64 = u64::MAX;

/// An empty histogram of latencies in ns, 1 ns to [`HIST_MAX_NS`], 3 significant digits.
pub(super) fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
        .map_err(|e| Error::config("histogram", e.to_string()))
}

/// One subscriber's progress on its own cache line.
#[repr(align(64))]
pub(super) struct Slot(pub(super) AtomicU64);

pub(super) struct Shared {
    pub(super) cfg: BenchConfig,
    pub(super) t0: Instant,
    pub(super) window_start: AtomicU64,
    pub(super) window_end: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) delivered_in_window: AtomicU64,
    pub(super) no_ts: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) hist: Vec<Mutex<Histogram<u64>>>,
    pub(super) progress: Vec<Slot>,
    pub(super) pub_waiting: AtomicBool,
    pub(super) pub_wake: Notify,
    /// Next sequence number, shared by the reporters.
    pub(super) seq: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) published_in_window: AtomicU64,
    pub(super) truncated: AtomicBool,
    pub(super) acks: AtomicU64,
    pub(super) ack_delivered: AtomicU64,
    pub(super) ack_errors: AtomicU64,
    pub(super) connect_gate: Semaphore,
    /// A reporter's connection was closed by the server while reports were being sent.
    pub(super) reporter_closed: AtomicBool,
    /// Subscribers gone (never connected, or disconnected).
    pub(super) gone: AtomicU64,
    /// Distinct topics: pushes that reached a subscriber other than their own.
    pub(super) misrouted: AtomicU64,
}

impl Shared {
    pub(super) fn new(cfg: BenchConfig) -> Result<Arc<Shared>> {
        let mut hist = Vec::with_capacity(HIST_SHARDS);
        for _ in 0..HIST_SHARDS {
            hist.push(Mutex::new(latency_histogram()?));
        }
        Ok(Arc::new(Shared {
            progress: (0..cfg.subscribers)
                .map(|_| Slot(AtomicU64::new(0)))
                .collect(),
            cfg,
            t0: Instant::now(),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            delivered: AtomicU64::new(0),
            delivered_in_window: AtomicU64::new(0),
            no_ts: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            hist,
            pub_waiting: AtomicBool::new(false),
            pub_wake: Notify::new(),
            seq: AtomicU64::new(0),
            published: AtomicU64::new(0),
            published_in_window: AtomicU64::new(0),
            truncated: AtomicBool::new(false),
            acks: AtomicU64::new(0),
            ack_delivered: AtomicU64::new(0),
            ack_errors: AtomicU64::new(0),
            connect_gate: Semaphore::new(CONNECT_CONCURRENCY),
            reporter_closed: AtomicBool::new(false),
            gone: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
        }))
    }

    /// Why the run stops when the server closed a reporter's connection: its log says
    /// why (the bench only sees the connection go), not a bare `Broken pipe`.
    pub(super) fn server_closed(&self, detail: &str) -> Error {
        Error::Bench {
            reason: format!(
                "the server closed a reporter's connection mid-run ({detail}); the server's log \
                 says why, e.g. a report frame over its max_frame_len (this bench assumed {}: \
                 --max-frame-len)",
                self.cfg.max_frame_len
            ),
        }
    }

    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn deadline(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.t0 + Duration::from_nanos(ns))
    }

    /// How far the subscribers have got, in reports, for the reporters' window (GONE if
    /// none is left). Fan-out: the average of their highest `seq`s. Distinct topics: the
    /// reports delivered, one delivery each, counting as delivered the share meant for
    /// subscribers that are gone (an average of highest `seq`s lags the reporters by
    /// N/2 there, more than the window once N is large).
    pub(super) fn progress(&self) -> u64 {
        if !self.cfg.distinct_topics {
            return self.avg_progress();
        }
        let n = self.cfg.subscribers as u128;
        let live = n.saturating_sub(u128::from(self.gone.load(SeqCst)));
        if live == 0 {
            return GONE;
        }
        let delivered = u128::from(self.delivered.load(SeqCst));
        u64::try_from(delivered * n / live).unwrap_or(GONE)
    }

    /// Tells the run that subscriber `id` is subscribed (`Some`, with its connection), or
    /// that it could not be, and is gone (`None`): the one report each subscriber makes,
    /// whatever its transport.
    pub(super) fn subscribed<T>(
        &self,
        id: usize,
        ready: mpsc::UnboundedSender<Result<()>>,
        opened: Result<T>,
    ) -> Option<T> {
        match opened {
            Ok(conn) => {
                let _ = ready.send(Ok(()));
                Some(conn)
            }
            Err(e) => {
                self.subscriber_gone(id);
                let _ = ready.send(Err(e));
                None
            }
        }
    }

    /// Marks subscriber `id` gone: it must not hold the reporters' window shut.
    pub(super) fn subscriber_gone(&self, id: usize) {
        self.progress[id].0.store(GONE, SeqCst);
        self.gone.fetch_add(1, SeqCst);
        self.pub_wake.notify_waiters();
    }

    /// Average progress of the subscribers still connected (GONE if none is).
    fn avg_progress(&self) -> u64 {
        let (mut sum, mut live) = (0u128, 0u128);
        for s in &self.progress {
            let p = s.0.load(SeqCst);
            if p != GONE {
                sum += u128::from(p);
                live += 1;
            }
        }
        sum.checked_div(live)
            .map_or(GONE, |v| u64::try_from(v).unwrap_or(GONE))
    }

    pub(super) fn record(&self, shard: usize, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.hist[shard % HIST_SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &v in samples {
            h.saturating_record(v.max(1));
        }
    }
}
