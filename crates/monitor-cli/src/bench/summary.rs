//! The figures of a run, [`BenchReport`]: summed up from the run's counters and latency
//! histograms, printed as JSON (`--json`) or as a few lines of text.

use std::sync::atomic::Ordering::SeqCst;

use serde::Serialize;

use super::config::BenchConfig;
use super::payload::{write_payload, write_topic_payload};
use super::shared::{latency_histogram, Shared};
use crate::error::Result;

/// The outcome, as printed by `monitor-client bench --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BenchReport {
    /// `"fan-out"` (every subscriber gets every report) or `"distinct-topics"` (each
    /// report reaches one subscriber).
    pub mode: &'static str,
    /// The layers every binary-protocol connection ran: `"plain"`, or some of `tls`,
    /// `encrypt`, `compress` joined by `+` (e.g. `"tls+compress"`). With WebSocket
    /// subscribers, those of the reporters only (`plain` or `tls`).
    pub layers: String,
    /// How the subscribers connected: `"tcp"` or `"unix"` (the binary protocol, over
    /// TLS too when `layers` says so), or `"ws"` (WebSocket, `--ws`).
    pub subscriber_transport: &'static str,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Reporter connections.
    pub reporters: usize,
    /// Report size actually used, bytes.
    pub size: usize,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// Target rate (0 = max).
    pub rate: u64,
    /// Flow-control window at max rate (0 = none or fixed rate).
    pub window: u64,
    /// Reports completely written, whole run.
    pub published: u64,
    /// Reports written inside the window, per second.
    pub pub_msgs_per_s: f64,
    /// Pushes read inside the window, all subscribers, per second.
    pub deliv_msgs_per_s: f64,
    /// `deliv_msgs_per_s × size`, 10⁶ bytes per second.
    pub deliv_mb_per_s: f64,
    /// Latency percentiles of reports sent inside the window, µs.
    pub lat_p50_us: f64,
    /// 99th percentile, µs.
    pub lat_p99_us: f64,
    /// 99.9th percentile, µs.
    pub lat_p999_us: f64,
    /// Largest, µs.
    pub lat_max_us: f64,
    /// Latency samples recorded.
    pub lat_samples: u64,
    /// `published × subscribers`; with distinct topics, `published`.
    pub expected: u64,
    /// Pushes read by the end of the drain; with distinct topics, those that reached
    /// their own subscriber.
    pub delivered: u64,
    /// With distinct topics: pushes that reached a subscriber other than their own
    /// (always 0 in fan-out mode).
    pub misrouted: u64,
    /// `expected − delivered`.
    pub lost: i64,
    /// Time from the last report until everything arrived (or the drain gave up).
    pub drain_s: f64,
    /// Acknowledgements the reporters read.
    pub report_acks: u64,
    /// Sum of their `delivered`.
    pub report_ack_delivered_sum: u64,
    /// Refusals among them.
    pub report_ack_errors: u64,
    /// Subscriber connections that ended before the run did.
    pub sub_disconnects: u64,
    /// Pushes without a readable timestamp.
    pub no_timestamp: u64,
    /// A max-rate reporter's last write was cut at the window's end.
    pub pub_truncated: bool,
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// The figures of a run that has drained: its counters, and its latency histograms
/// merged. `published` and `expected` are what the drain waited for, `drain_s` how long it
/// took.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) if the merged histogram cannot be made.
pub(super) fn sum_up(
    cfg: &BenchConfig,
    sh: &Shared,
    published: u64,
    expected: u64,
    drain_s: f64,
) -> Result<BenchReport> {
    let mut hist = latency_histogram()?;
    for h in &sh.hist {
        let h = h.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = hist.add(&*h);
    }
    let secs = cfg.duration.as_secs_f64();
    let mut sample = Vec::new();
    if cfg.distinct_topics {
        write_topic_payload(&mut sample, cfg.size, cfg.subscribers as u64 - 1, 0, 0);
    } else {
        write_payload(&mut sample, cfg.size, 0, 0);
    }
    let size = cfg.size.max(sample.len());
    let delivered = sh.delivered.load(SeqCst);
    let deliv_per_s = sh.delivered_in_window.load(SeqCst) as f64 / secs;
    Ok(BenchReport {
        mode: cfg.mode(),
        layers: cfg.layers().unwrap_or_else(|| "plain".into()),
        subscriber_transport: cfg.subscriber_transport(),
        subscribers: cfg.subscribers,
        reporters: cfg.reporters,
        size,
        duration_s: secs,
        warmup_s: cfg.warmup.as_secs_f64(),
        rate: cfg.rate,
        window: cfg.window(),
        published,
        pub_msgs_per_s: (sh.published_in_window.load(SeqCst) as f64 / secs).round(),
        deliv_msgs_per_s: deliv_per_s.round(),
        deliv_mb_per_s: (deliv_per_s * size as f64 / 1e4).round() / 100.0,
        lat_p50_us: us(hist.value_at_quantile(0.50)),
        lat_p99_us: us(hist.value_at_quantile(0.99)),
        lat_p999_us: us(hist.value_at_quantile(0.999)),
        lat_max_us: us(hist.max()),
        lat_samples: hist.len(),
        expected,
        delivered,
        misrouted: sh.misrouted.load(SeqCst),
        lost: i64::try_from(expected).unwrap_or(i64::MAX)
            - i64::try_from(delivered).unwrap_or(i64::MAX),
        drain_s: (drain_s * 100.0).round() / 100.0,
        report_acks: sh.acks.load(SeqCst),
        report_ack_delivered_sum: sh.ack_delivered.load(SeqCst),
        report_ack_errors: sh.ack_errors.load(SeqCst),
        sub_disconnects: sh.disconnects.load(SeqCst),
        no_timestamp: sh.no_ts.load(SeqCst),
        pub_truncated: sh.truncated.load(SeqCst),
    })
}

impl BenchReport {
    /// A few human-readable lines.
    pub fn summary(&self) -> String {
        let rate = if self.rate == 0 {
            format!("max rate (window {})", self.window)
        } else {
            format!("{} reports/s", self.rate)
        };
        let misrouted = if self.mode == "distinct-topics" {
            format!(", misrouted {}", self.misrouted)
        } else {
            String::new()
        };
        // Plain runs print as they always did.
        let layers = if self.layers == "plain" {
            String::new()
        } else {
            format!(" over {}", self.layers)
        };
        let transport = if self.subscriber_transport == "ws" {
            ", WebSocket subscribers"
        } else {
            ""
        };
        format!(
            "{}{layers}{transport}: {} subscribers, {} reporter(s), {}-byte reports, {:.1} s measured after {:.1} s warmup, {rate}\n\
             published   {:>12.0} reports/s\n\
             delivered   {:>12.0} pushes/s   ({:.2} MB/s of payload)\n\
             latency     p50 {} µs   p99 {} µs   p99.9 {} µs   max {} µs   ({} samples)\n\
             lost        {} of {} expected   (acks {}, refused {}, subscriber disconnects {}, drain {:.2} s{misrouted})",
            self.mode,
            self.subscribers,
            self.reporters,
            self.size,
            self.duration_s,
            self.warmup_s,
            self.pub_msgs_per_s,
            self.deliv_msgs_per_s,
            self.deliv_mb_per_s,
            self.lat_p50_us,
            self.lat_p99_us,
            self.lat_p999_us,
            self.lat_max_us,
            self.lat_samples,
            self.lost,
            self.expected,
            self.report_acks,
            self.report_ack_errors,
            self.sub_disconnects,
            self.drain_s,
        )
    }
}
