//! What a subscriber counts, whatever its transport: its subscription, which reports are
//! its own, and the tally of one read added to the run's totals.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use monitor_client::Subscription;

use super::config::BenchConfig;
use super::payload::BENCH_CODE;
use super::shared::Shared;

/// Subscriber `id`'s subscription: every bench report, or with distinct topics its own
/// topic `bench.<id>`. The same over either transport.
pub(super) fn subscription(cfg: &BenchConfig, id: usize) -> Subscription {
    if cfg.distinct_topics {
        let topic = format!("{BENCH_CODE}.{id}");
        Subscription::new(topic.clone()).topic(topic)
    } else {
        Subscription::new(format!("bench-subscriber-{id}")).topic(BENCH_CODE)
    }
}

/// Which reports are subscriber `id`'s own: all of them, or with distinct topics those
/// with `seq % n == id`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    distinct: bool,
    n_subs: u64,
    mine: u64,
}

impl Route {
    pub(super) fn of(cfg: &BenchConfig, id: usize) -> Route {
        Route {
            distinct: cfg.distinct_topics,
            n_subs: cfg.subscribers as u64,
            mine: id as u64,
        }
    }
}

/// What a subscriber read in one go (a socket read's pushes, a run of WebSocket
/// messages), counted locally and added to the run's totals at once by
/// [`Tally::commit`]: the same accounting whatever the transport.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Reports counted as delivered (their own, or without a readable `seq`).
    n: u64,
    /// Of those, read inside the measured window.
    in_window: u64,
    no_ts: u64,
    max_seq: Option<u64>,
    misrouted: u64,
}

impl Tally {
    /// Counts one report (`parsed` = its `(seq, ts)`, `None` if unreadable) that the
    /// subscriber had in hand at `now`; a latency sample goes to `samples` if it was sent
    /// inside the window `(ws, we)`.
    #[inline]
    pub(super) fn add(
        &mut self,
        parsed: Option<(u64, u64)>,
        now: u64,
        (ws, we): (u64, u64),
        route: Route,
        samples: &mut Vec<u64>,
    ) {
        match parsed {
            Some((seq, _)) if route.distinct && seq % route.n_subs != route.mine => {
                self.misrouted += 1;
            }
            Some((seq, ts)) => {
                self.n += 1;
                self.in_window += u64::from(now >= ws && now < we);
                if ts >= ws && ts < we {
                    samples.push(now.saturating_sub(ts));
                }
                self.max_seq = self.max_seq.max(Some(seq));
            }
            None => {
                self.n += 1;
                self.in_window += u64::from(now >= ws && now < we);
                self.no_ts += 1;
            }
        }
    }

    /// Adds this to the run's totals for subscriber `id`, moves its progress (and wakes
    /// the reporters waiting on it), records `samples` and clears them.
    pub(super) fn commit(
        self,
        sh: &Shared,
        id: usize,
        route: Route,
        next_seq: &mut u64,
        samples: &mut Vec<u64>,
    ) {
        if self.n > 0 {
            if route.distinct {
                // The reporters' window follows this count: ordered against their
                // `pub_waiting` as the fan-out progress is.
                sh.delivered.fetch_add(self.n, SeqCst);
                if sh.pub_waiting.load(SeqCst) {
                    sh.pub_wake.notify_waiters();
                }
            } else {
                sh.delivered.fetch_add(self.n, Relaxed);
            }
            if self.in_window > 0 {
                sh.delivered_in_window.fetch_add(self.in_window, Relaxed);
            }
        }
        if self.misrouted > 0 {
            sh.misrouted.fetch_add(self.misrouted, Relaxed);
        }
        if let Some(seq) = self.max_seq.filter(|_| !route.distinct) {
            // `seq` comes from the network: any reporter may send one.
            if seq.saturating_add(1) > *next_seq {
                *next_seq = seq.saturating_add(1);
                sh.progress[id].0.store(*next_seq, SeqCst);
                if sh.pub_waiting.load(SeqCst) {
                    sh.pub_wake.notify_waiters();
                }
            }
        }
        if self.no_ts > 0 {
            sh.no_ts.fetch_add(self.no_ts, Relaxed);
        }
        sh.record(id, samples);
        samples.clear();
    }
}
