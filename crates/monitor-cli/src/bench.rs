//! The load generator behind `monitor-client bench`: R reporters → server → N subscribers.
//!
//! It measures the way `shared/tools/fanout-bench` does, so the two agree:
//!
//! ```text
//! connect+subscribe all N ─ settle ─ reporters start ─ warmup ─┬─ measured window ─┬─ drain
//!                                                            start              end
//! ```
//!
//! - Each report is `{"code":"bench","seq":<n>,"ts":<ns since the run's start>,"pad":"x…"}`,
//!   padded to exactly `size` bytes. `seq` is global over the reporters.
//! - A subscriber takes one clock reading per socket read and records `read time − ts` for
//!   each push in that read whose `ts` falls in the measured window.
//! - `pub_msgs_per_s`: reports completely written, stamped inside the window, ÷ window;
//!   `deliv_msgs_per_s`: pushes read inside the window (all subscribers) ÷ window;
//!   `deliv_mb_per_s` = `deliv_msgs_per_s × size / 10⁶` (payload only).
//! - `expected` = reports written (warmup included) × N; `delivered` = pushes read by the
//!   end of the drain; `lost` = the difference.
//! - `distinct_topics` (`--distinct-topics`): subscriber `i` subscribes to its own topic
//!   `bench.<i>`, and report `k` carries code `bench.<k mod N>`, so each report reaches
//!   exactly one subscriber (the per-device routing of a chat server). Then `expected` =
//!   reports written (each subscriber expects only its own: report `k` goes to subscriber
//!   `k mod N`), `delivered` counts pushes that reached their own subscriber, and one that
//!   reached another counts as `misrouted`. Delivered pushes per second then equal reports
//!   per second.
//! - `rate = 0`: the reporters write ~32 KiB batches back to back, but stay at most `window`
//!   reports ahead of the subscribers' average progress (highest `seq` seen); without a
//!   bound the loopback socket buffers fill with a backlog and the figures measure buffer
//!   filling. `rate > 0`: every 1 ms tick the reporters send what is due by then.
//! - `ws` (`--ws ws://…/ws`): the subscribers connect over WebSocket to the server's `/ws`
//!   endpoint instead of the binary protocol (the reporters keep to it). Each text
//!   message is a report as the reporter sent it, read with the same accounting as a
//!   push's `data`, so every figure means the same; see [`ws`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Buf;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use monitor_client::config::{random_uuid, DEFAULT_MAX_FRAME_LEN, MAX_DURATION};
use monitor_client::{raw, ClientConfig, Endpoint, Subscription, TlsSettings, Token};
use monitor_proto::header::Direction;
use monitor_proto::layer::compress::deflate;
use monitor_proto::message::reply::SUCCESS_PREFIX;
use monitor_proto::{ClientCodec, FrameCodec, Header, MsgType, Uuid, HEADER_LEN};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;

use crate::error::{Error, Result};

pub mod ws;
pub use ws::WsUrl;

/// A connection's read half, as [`raw::connect`] hands it over.
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A connection's write half, as [`raw::connect`] hands it over.
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The `code` of every bench report, and the subscribers' only topic.
pub const BENCH_CODE: &str = "bench";
/// Below this size a payload comes out larger than asked: its keys and numbers alone
/// take up to 64 bytes.
pub const MIN_SIZE: usize = 64;
/// Largest `size` accepted (the server's default `max_frame_len` is 1 MiB; raise it there
/// for larger payloads).
pub const MAX_SIZE: usize = 16 * 1024 * 1024;

const HIST_SHARDS: usize = 16;
/// Highest latency tracked (100 s, in ns); larger values are clamped.
const HIST_MAX_NS: u64 = 100_000_000_000;
/// Target size of one reporter write at max rate.
const PUB_BATCH_BYTES: usize = 32 * 1024;
/// Most one fixed-rate tick writes: a reporter that fell behind catches up over several
/// ticks instead of building its whole backlog into one buffer.
const FIXED_RATE_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most connections of either kind one run may open.
const MAX_CONNECTIONS: usize = 1_000_000;
const READ_CHUNK: usize = 64 * 1024;
const READ_MIN_FREE: usize = 16 * 1024;
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_CONCURRENCY: usize = 128;
/// Progress value of a subscriber that has gone away (ignored by the window).
const GONE: u64 = u64::MAX;

/// The length of a report frame of a `size`-byte report: the header and the body, which is
/// never shorter than its keys and numbers ([`MIN_SIZE`]).
pub fn report_frame_len(size: usize) -> usize {
    HEADER_LEN + size.max(MIN_SIZE)
}

/// The default window at max rate for `n` subscribers: up to 1000 reports ahead of the
/// average subscriber, and at most ~200k deliveries in flight in all.
pub fn default_window(n: usize) -> u64 {
    (200_000 / n.max(1) as u64).clamp(10, 1000)
}

/// The default window at max rate with distinct topics: each report is one delivery, so
/// 1000 reports ahead are 1000 deliveries in flight, whatever the number of subscribers.
pub const DISTINCT_WINDOW: u64 = 1000;

/// File descriptors a run needs beyond one per connection (the runtime, stdio, logging),
/// as a margin.
const SPARE_FDS: u64 = 64;

/// Open files a run of `cfg` needs: one per connection, and a margin.
fn fds_needed(cfg: &BenchConfig) -> u64 {
    (cfg.subscribers as u64)
        .saturating_add(cfg.reporters as u64)
        .saturating_add(SPARE_FDS)
}

/// Raises this process's soft limit on open files (`ulimit -n`) to what a run of `cfg`
/// needs, as far as the hard limit allows (the `monitor-client bench` command does this
/// before a run; a program that embeds the bench decides for itself). Returns the soft
/// limit now in force, `None` for unlimited.
///
/// # Errors
/// The system's refusal to change the limit.
#[cfg(unix)]
pub fn raise_open_files_limit(cfg: &BenchConfig) -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let needed = fds_needed(cfg);
    match limit.current {
        Some(soft) if soft < needed => {
            let raised = limit.maximum.map_or(needed, |hard| needed.min(hard));
            if raised > soft {
                let mut new = limit;
                new.current = Some(raised);
                setrlimit(Resource::Nofile, new)?;
            }
            Ok(Some(raised.max(soft)))
        }
        current => Ok(current),
    }
}

/// Refuses, before any connection is made, a run that would run out of file descriptors
/// part way through setting up its subscribers.
#[cfg(unix)]
fn check_open_files(cfg: &BenchConfig) -> Result<()> {
    use rustix::process::{getrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let needed = fds_needed(cfg);
    match limit.current {
        Some(soft) if soft < needed => Err(Error::Bench {
            reason: format!(
                "{} subscribers and {} reporters need about {needed} open files, but this \
                 process may open {soft} (ulimit -n; hard limit {}); raise it, e.g. \
                 `ulimit -n {needed}`",
                cfg.subscribers,
                cfg.reporters,
                limit
                    .maximum
                    .map_or_else(|| "unlimited".to_owned(), |h| h.to_string()),
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn check_open_files(_: &BenchConfig) -> Result<()> {
    Ok(())
}

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchConfig {
    /// The server (`tls://host:port` for TLS).
    pub server: Endpoint,
    /// TLS settings of every connection (see [`ClientConfig::tls`]).
    pub tls: Option<TlsSettings>,
    /// Token every connection authenticates with.
    pub token: Option<Token>,
    /// Every connection exchanges keys and asks for encrypted acknowledgements and
    /// pushes (the in-band AES-GCM layer).
    pub encrypt: bool,
    /// Reports are compressed, and every connection asks for compressed acknowledgements
    /// and pushes.
    pub compress: bool,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Reporter connections.
    pub reporters: usize,
    /// Report size in bytes.
    pub size: usize,
    /// The measured window.
    pub duration: Duration,
    /// Reports per second over all reporters; 0 = as fast as the window allows.
    pub rate: u64,
    /// At rate 0: how far (in reports) the reporters may run ahead of the subscribers'
    /// average progress; `Some(0)` = no bound. `None` = [`default_window`].
    pub window: Option<u64>,
    /// Reporting before the measured window opens.
    pub warmup: Duration,
    /// Pause between "all subscribed" and the first report.
    pub settle: Duration,
    /// Longest wait for deliveries still in flight after the last report.
    pub drain: Duration,
    /// Limit on each connection's connect and handshake.
    pub connect_timeout: Duration,
    /// Heartbeat interval of every connection (the server closes idle ones).
    pub heartbeat_interval: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// The server's `max_frame_len` (default 1 MiB, the server's default): a `size` whose
    /// report frame would exceed it is refused up front, since the server would close the
    /// connection over it.
    pub max_frame_len: u32,
    /// Each subscriber subscribes to a topic of its own, `bench.<i>`, and the reports
    /// rotate over those topics, so each report reaches exactly one subscriber (see the
    /// module documentation). Default: every subscriber gets every report.
    pub distinct_topics: bool,
    /// The subscribers connect over WebSocket to this URL (the server's `/ws` endpoint,
    /// on its admin listener) instead of the binary protocol; the reporters still use
    /// [`server`](Self::server). `encrypt` and `compress` are the binary protocol's
    /// layers and are refused with it; TLS and the token still apply to the reporters,
    /// and the token rides in the subscribe body. Default: the binary protocol.
    pub ws: Option<WsUrl>,
    /// Where the subscribers connect, round-robin (subscriber `i` to entry
    /// `i mod len`); empty: `server`, like the reporters. For a cluster, reports go to
    /// `server` and pushes come from every node listed. Not with [`ws`](Self::ws), which
    /// says where WebSocket subscribers connect.
    pub subscribe_servers: Vec<Endpoint>,
}

impl BenchConfig {
    /// The defaults of `monitor-client bench` against `server`: 1 subscriber, 1 reporter,
    /// 200 bytes, 10 s measured after 2 s of warmup, max rate.
    pub fn new(server: Endpoint) -> BenchConfig {
        BenchConfig {
            server,
            tls: None,
            token: None,
            encrypt: false,
            compress: false,
            subscribers: 1,
            reporters: 1,
            size: 200,
            duration: Duration::from_secs(10),
            rate: 0,
            window: None,
            warmup: Duration::from_secs(2),
            settle: Duration::from_millis(500),
            drain: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            progress: true,
            max_frame_len: monitor_proto::codec::DEFAULT_MAX_FRAME_LEN,
            distinct_topics: false,
            ws: None,
            subscribe_servers: Vec::new(),
        }
    }

    /// The server subscriber `id` connects to (see [`BenchConfig::subscribe_servers`]).
    fn subscriber_server(&self, id: usize) -> &Endpoint {
        match self.subscribe_servers.len() {
            0 => &self.server,
            n => &self.subscribe_servers[id % n],
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| Err(Error::config(field, reason));
        if self.subscribers == 0 || self.subscribers > MAX_CONNECTIONS {
            return bad("subscribers", "must be from 1 to 1,000,000");
        }
        if self.reporters == 0 || self.reporters > MAX_CONNECTIONS {
            return bad("reporters", "must be from 1 to 1,000,000");
        }
        if self.size > MAX_SIZE {
            return bad("size", "must be at most 16 MiB");
        }
        let smallest = report_frame_len(0);
        if (self.max_frame_len as usize) < smallest {
            return bad(
                "max_frame_len",
                &format!("must be at least {smallest} (a header and the smallest report)"),
            );
        }
        let frame = report_frame_len(self.size);
        if frame > self.max_frame_len as usize {
            return bad(
                "size",
                &format!(
                    "a {}-byte report makes a {frame}-byte frame ({HEADER_LEN}-byte header + body), \
                     over max_frame_len ({}), the server's limit: it would close the connection. \
                     Raise max_frame_len here and in the server's config for larger reports",
                    self.size, self.max_frame_len
                ),
            );
        }
        if self.duration.is_zero() {
            return bad("duration", "must be more than zero");
        }
        let caps = [
            ("duration", self.duration, 3600),
            ("warmup", self.warmup, 600),
            ("settle", self.settle, 600),
            ("drain", self.drain, 600),
        ];
        for (field, value, cap) in caps {
            if value > Duration::from_secs(cap) {
                return bad(field, &format!("must be at most {cap} s"));
            }
        }
        for (field, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return bad(field, "must be more than zero");
            }
            if value > MAX_DURATION {
                return bad(field, "must be at most one year");
            }
        }
        if self.ws.is_some() && !self.subscribe_servers.is_empty() {
            return bad(
                "subscribe_servers",
                "WebSocket subscribers connect to the ws URL; leave subscribe_servers empty with ws",
            );
        }
        if self.ws.is_some() {
            for (on, layer) in [(self.encrypt, "encrypt"), (self.compress, "compress")] {
                if on {
                    return bad(
                        "ws",
                        &format!(
                            "WebSocket subscribers get plain JSON: {layer} is a layer of the \
                             binary protocol, which they do not speak; leave it off with ws"
                        ),
                    );
                }
            }
        }
        // The server, TLS and token, as each connection's client config checks them.
        self.client_config().validate()?;
        for server in &self.subscribe_servers {
            let mut cfg = self.client_config();
            cfg.server = server.clone();
            cfg.validate()?;
        }
        Ok(())
    }

    /// The client config each connection starts from (its uuid is drawn per connection).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.server.clone());
        cfg.tls = self.tls.clone();
        cfg.token = self.token.clone();
        cfg.encrypt = self.encrypt;
        cfg.compress = self.compress;
        cfg.connect_timeout = self.connect_timeout;
        cfg
    }

    /// The layers a run adds over plain TCP, for its report: `None` for none.
    fn layers(&self) -> Option<String> {
        let layers: Vec<&str> = [
            (self.server.is_tls() || self.tls.is_some(), "tls"),
            (self.encrypt, "encrypt"),
            (self.compress, "compress"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        (!layers.is_empty()).then(|| layers.join("+"))
    }

    fn window(&self) -> u64 {
        if self.rate > 0 {
            0
        } else if self.distinct_topics {
            self.window.unwrap_or(DISTINCT_WINDOW)
        } else {
            self.window
                .unwrap_or_else(|| default_window(self.subscribers))
        }
    }

    /// What the report calls the subscribers' transport.
    fn subscriber_transport(&self) -> &'static str {
        match (&self.ws, self.server.address()) {
            (Some(_), _) => "ws",
            (None, monitor_client::Address::Unix(_)) => "unix",
            (None, _) => "tcp",
        }
    }

    /// What the report calls this run's routing.
    fn mode(&self) -> &'static str {
        if self.distinct_topics {
            "distinct-topics"
        } else {
            "fan-out"
        }
    }
}

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

/// Appends the decimal form of `v`.
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

const PAYLOAD_HEAD: &[u8] = b"{\"code\":\"bench\",\"seq\":";
/// How a report with a topic of its own begins: `{"code":"bench.<topic>","seq":…`.
const TOPIC_HEAD: &[u8] = b"{\"code\":\"bench.";
const TOPIC_TAIL: &[u8] = b"\",\"seq\":";

/// Appends one report of exactly `size` bytes (or the minimum its numbers need).
pub fn write_payload(out: &mut Vec<u8>, size: usize, seq: u64, ts_ns: u64) {
    let start = out.len();
    out.extend_from_slice(PAYLOAD_HEAD);
    finish_payload(out, start, size, seq, ts_ns);
}

/// [`write_payload`] with code `bench.<topic>` (distinct topics).
pub fn write_topic_payload(out: &mut Vec<u8>, size: usize, topic: u64, seq: u64, ts_ns: u64) {
    let start = out.len();
    out.extend_from_slice(TOPIC_HEAD);
    push_u64(out, topic);
    out.extend_from_slice(TOPIC_TAIL);
    finish_payload(out, start, size, seq, ts_ns);
}

/// The rest of a payload that began at `start`: seq, timestamp, padding.
#[inline]
fn finish_payload(out: &mut Vec<u8>, start: usize, size: usize, seq: u64, ts_ns: u64) {
    push_u64(out, seq);
    out.extend_from_slice(b",\"ts\":");
    push_u64(out, ts_ns);
    out.extend_from_slice(b",\"pad\":\"");
    let used = out.len() - start + 2; // + the closing `"}`
    if size > used {
        out.resize(out.len() + (size - used), b'x');
    }
    out.extend_from_slice(b"\"}");
}

fn parse_digits(p: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut i = 0;
    while i < p.len() && p[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(p[i] - b'0'))?;
        i += 1;
    }
    (i > 0).then_some((v, i))
}

/// `(seq, ts)` of a push body that wraps a bench report (code `bench` or `bench.<topic>`).
/// The server forwards the report byte for byte, so both numbers sit at known places.
#[inline]
pub fn parse_push(body: &[u8]) -> Option<(u64, u64)> {
    parse_report(body.strip_prefix(SUCCESS_PREFIX)?)
}

/// `(seq, ts)` of a bench report as the reporter sent it: a push's `data`, or a
/// WebSocket subscriber's message, which is the report itself.
#[inline]
pub fn parse_report(report: &[u8]) -> Option<(u64, u64)> {
    let rest = match report.strip_prefix(PAYLOAD_HEAD) {
        Some(rest) => rest,
        None => {
            let rest = report.strip_prefix(TOPIC_HEAD)?;
            let (_, n) = parse_digits(rest)?;
            rest[n..].strip_prefix(TOPIC_TAIL)?
        }
    };
    let (seq, n) = parse_digits(rest)?;
    let rest = rest[n..].strip_prefix(b",\"ts\":")?;
    let (ts, _) = parse_digits(rest)?;
    Some((seq, ts))
}

/// An empty histogram of latencies in ns, 1 ns to [`HIST_MAX_NS`], 3 significant digits.
fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
        .map_err(|e| Error::config("histogram", e.to_string()))
}

/// One subscriber's progress on its own cache line.
#[repr(align(64))]
struct Slot(AtomicU64);

struct Shared {
    cfg: BenchConfig,
    t0: Instant,
    window_start: AtomicU64,
    window_end: AtomicU64,
    delivered: AtomicU64,
    delivered_in_window: AtomicU64,
    no_ts: AtomicU64,
    disconnects: AtomicU64,
    hist: Vec<Mutex<Histogram<u64>>>,
    progress: Vec<Slot>,
    pub_waiting: AtomicBool,
    pub_wake: Notify,
    /// Next sequence number, shared by the reporters.
    seq: AtomicU64,
    published: AtomicU64,
    published_in_window: AtomicU64,
    truncated: AtomicBool,
    acks: AtomicU64,
    ack_delivered: AtomicU64,
    ack_errors: AtomicU64,
    connect_gate: Semaphore,
    /// A reporter's connection was closed by the server while reports were being sent.
    reporter_closed: AtomicBool,
    /// Subscribers gone (never connected, or disconnected).
    gone: AtomicU64,
    /// Distinct topics: pushes that reached a subscriber other than their own.
    misrouted: AtomicU64,
}

impl Shared {
    fn new(cfg: BenchConfig) -> Result<Arc<Shared>> {
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
    fn server_closed(&self, detail: &str) -> Error {
        Error::Bench {
            reason: format!(
                "the server closed a reporter's connection mid-run ({detail}); the server's log \
                 says why, e.g. a report frame over its max_frame_len (this bench assumed {}: \
                 --max-frame-len)",
                self.cfg.max_frame_len
            ),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn deadline(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.t0 + Duration::from_nanos(ns))
    }

    /// How far the subscribers have got, in reports, for the reporters' window (GONE if
    /// none is left). Fan-out: the average of their highest `seq`s. Distinct topics: the
    /// reports delivered, one delivery each, counting as delivered the share meant for
    /// subscribers that are gone (an average of highest `seq`s lags the reporters by
    /// N/2 there, more than the window once N is large).
    fn progress(&self) -> u64 {
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
    fn subscribed<T>(
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
    fn subscriber_gone(&self, id: usize) {
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

    fn record(&self, shard: usize, samples: &[u64]) {
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

fn encode_frame(dst: &mut BytesMut, msg_type: MsgType, uuid: Uuid, body: &[u8]) -> Result<()> {
    FrameCodec::builder()
        .max_frame_len(DEFAULT_MAX_FRAME_LEN)
        .new_codec()
        .encode_parts(&Header::new(msg_type, uuid), body, dst)?;
    Ok(())
}

/// Appends one report frame: `payload` under `header`, deflated first if the header has
/// the compress flag. A plain report is written as it is, at no extra cost.
#[inline]
fn encode_report(
    frames: &FrameCodec,
    header: &Header,
    payload: &[u8],
    dst: &mut BytesMut,
) -> std::result::Result<(), monitor_proto::Error> {
    if header.compress {
        frames.encode_parts(header, &deflate(payload), dst)
    } else {
        frames.encode_parts(header, payload, dst)
    }
}

/// Hands each complete frame in `buf` to `on_frame`, with its plaintext body (`None` if
/// its body layers failed), and leaves a partial frame for the next read.
///
/// Plain frames (every push of a run whose reports are under the server's compress
/// threshold) are judged and read where they lie ([`FrameCodec::peek`]), with no
/// per-frame `Bytes`: a load generator that spends more per message than the server it
/// measures takes the CPU the server needs (this machine's 2 cores are shared), and
/// under-reports it. Compressed or encrypted frames go through the codec's body layers.
///
/// # Errors
/// A header that breaks the protocol's rules, which ends the stream.
fn for_each_frame(
    buf: &mut BytesMut,
    codec: &mut ClientCodec,
    mut on_frame: impl FnMut(MsgType, Option<&[u8]>),
) -> std::result::Result<(), monitor_proto::Error> {
    // `peek` judges a frame by the frame limits alone and keeps no state between frames:
    // a frame codec with the client codec's limits (a few words, made once per read)
    // leaves `codec` free for the frames that need its body layers.
    let mut frames = FrameCodec::builder()
        .max_frame_len(codec.max_frame_len())
        .accept(Direction::ServerToClient)
        .new_codec();
    while let Some(frame) = frames.peek(buf)? {
        let len = frame.len();
        if frame.header.cipher || frame.header.compress {
            let mut whole = buf.split_to(len);
            if let Some(received) = codec.decode(&mut whole)? {
                on_frame(received.header.msg_type, received.body.as_deref().ok());
            }
        } else {
            on_frame(frame.header.msg_type, Some(frame.body));
            buf.advance(len);
        }
    }
    Ok(())
}

/// A connection past its handshake (subscribed, or its heartbeat answered), taken apart
/// for the bench's own reading and writing.
struct Opened {
    reader: BoxRead,
    writer: BoxWrite,
    /// What arrived after the handshake's reply.
    buf: BytesMut,
    codec: ClientCodec,
    uuid: Uuid,
}

/// Opens one connection the way the library's clients do ([`raw::connect`]), subscribed
/// with `subscription` or, with `None`, proven by a heartbeat; retrying as the bench
/// allows: a refused subscribe is final, anything else is tried again
/// [`CONNECT_ATTEMPTS`] times.
async fn open_with_retry(
    sh: &Shared,
    server: &Endpoint,
    subscription: Option<&Subscription>,
    letter: u8,
) -> Result<Opened> {
    let mut cfg = sh.cfg.client_config();
    cfg.server = server.clone();
    cfg.uuid = random_uuid(letter);
    let mut last = None;
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match raw::connect(&cfg, subscription).await {
            Ok(conn) => {
                return Ok(Opened {
                    reader: conn.reader,
                    writer: conn.writer,
                    buf: conn.unread,
                    codec: conn.codec,
                    uuid: cfg.uuid,
                });
            }
            Err(e) if is_refusal(&e) => return Err(e.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(monitor_client::Error::Closed).into())
}

/// A connection error that trying again will not change: a refusal (subscription,
/// token, key exchange), TLS (certificates), or the config.
fn is_refusal(e: &monitor_client::Error) -> bool {
    use monitor_client::Error as E;
    matches!(
        e,
        E::SubscribeRefused { .. }
            | E::Unauthorized { .. }
            | E::KeyExchange { .. }
            | E::Tls { .. }
            | E::TlsFile { .. }
            | E::Config { .. }
    )
}

/// Subscriber `id`'s subscription: every bench report, or with distinct topics its own
/// topic `bench.<id>`. The same over either transport.
fn subscription(cfg: &BenchConfig, id: usize) -> Subscription {
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
struct Route {
    distinct: bool,
    n_subs: u64,
    mine: u64,
}

impl Route {
    fn of(cfg: &BenchConfig, id: usize) -> Route {
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
struct Tally {
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
    fn add(
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
    fn commit(
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

/// One subscriber over the binary protocol: subscribe, report readiness, then count and
/// time pushes until stopped.
async fn subscriber(
    id: usize,
    sh: Arc<Shared>,
    ready: mpsc::UnboundedSender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let hello = subscription(&sh.cfg, id);
    let opened = {
        let _permit = sh.connect_gate.acquire().await;
        open_with_retry(&sh, sh.cfg.subscriber_server(id), Some(&hello), b's').await
    };
    let Some(Opened {
        mut reader,
        mut writer,
        mut buf,
        mut codec,
        uuid,
    }) = sh.subscribed(id, ready, opened)
    else {
        return;
    };

    let mut heartbeat = BytesMut::new();
    let _ = encode_frame(&mut heartbeat, MsgType::Heartbeat, uuid, b"");
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + sh.cfg.heartbeat_interval,
        sh.cfg.heartbeat_interval,
    );
    let mut samples: Vec<u64> = Vec::with_capacity(512);
    let mut next_seq = 0u64;
    let route = Route::of(&sh.cfg, id);
    loop {
        if buf.capacity() - buf.len() < READ_MIN_FREE {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if writer.write_all(&heartbeat).await.is_err() {
                    sh.disconnects.fetch_add(1, Relaxed);
                    break;
                }
                continue;
            }
            read = reader.read_buf(&mut buf) => read,
        };
        if !matches!(read, Ok(n) if n > 0) {
            if !*stop.borrow() {
                sh.disconnects.fetch_add(1, Relaxed);
                tracing::warn!(subscriber = id, result = ?read, "bench subscriber lost its connection");
            }
            break;
        }
        // One clock reading per read: every push in this read had arrived by now.
        let now = sh.now_ns();
        let window = (sh.window_start.load(Relaxed), sh.window_end.load(Relaxed));
        let mut tally = Tally::default();
        let decoded = for_each_frame(&mut buf, &mut codec, |msg_type, body| {
            if msg_type == MsgType::Push {
                tally.add(body.and_then(parse_push), now, window, route, &mut samples);
            }
        });
        tally.commit(&sh, id, route, &mut next_seq, &mut samples);
        if let Err(e) = decoded {
            sh.disconnects.fetch_add(1, Relaxed);
            tracing::warn!(subscriber = id, error = %e, "bench subscriber: protocol error");
            break;
        }
    }
    sh.subscriber_gone(id);
}

/// Waits until a reporter about to claim `seq` may send more without running more than
/// `window` reports ahead of the subscribers' progress ([`Shared::progress`]). Once it has had to wait, it waits for
/// half the window, so it resumes with a sizeable batch. Returns how many it may send, or
/// 0 if `deadline` passed first.
async fn wait_for_window(sh: &Shared, window: u64, deadline: tokio::time::Instant) -> u64 {
    let seq = sh.seq.load(SeqCst);
    let limit = sh.progress().saturating_add(window);
    if seq < limit {
        return limit - seq;
    }
    let want = window.div_ceil(2);
    loop {
        let notified = sh.pub_wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        sh.pub_waiting.store(true, SeqCst);
        let seq = sh.seq.load(SeqCst);
        let limit = sh.progress().saturating_add(window);
        if seq.saturating_add(want) <= limit {
            sh.pub_waiting.store(false, SeqCst);
            return limit - seq;
        }
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_millis(5));
        let _ = tokio::time::timeout_at(until, notified).await;
        if tokio::time::Instant::now() >= deadline || sh.reporter_closed.load(Relaxed) {
            sh.pub_waiting.store(false, SeqCst);
            return 0;
        }
    }
}

/// Writes `buf` until done or until `deadline`; returns the bytes written.
///
/// # Errors
/// A failed write: the server closed the connection.
async fn write_until(
    sh: &Shared,
    wr: &mut BoxWrite,
    buf: &[u8],
    deadline: tokio::time::Instant,
) -> Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match tokio::time::timeout_at(deadline, wr.write(&buf[off..])).await {
            Ok(Ok(0)) => return Err(sh.server_closed("writes are refused")),
            Ok(Ok(n)) => off += n,
            Ok(Err(e)) => {
                use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
                // EPIPE and the like only say that the server closed it, as the message
                // says; anything else is worth showing.
                let detail = match e.kind() {
                    BrokenPipe | ConnectionReset | ConnectionAborted => "writes are refused".into(),
                    _ => format!("a write failed: {e}"),
                };
                return Err(sh.server_closed(&detail));
            }
            Err(_) => break,
        }
    }
    Ok(off)
}

/// Reads a reporter's acknowledgements until the connection closes.
async fn read_acks(
    sh: Arc<Shared>,
    mut reader: BoxRead,
    mut buf: BytesMut,
    mut codec: ClientCodec,
) {
    loop {
        let (mut acks, mut delivered_sum, mut errors) = (0, 0, 0);
        let decoded = for_each_frame(&mut buf, &mut codec, |msg_type, body| {
            if msg_type != MsgType::ReportAck {
                return;
            }
            acks += 1;
            let delivered = body.and_then(|b| {
                let data = b.strip_prefix(SUCCESS_PREFIX)?;
                let data = data.strip_prefix(b"{\"delivered\":")?;
                parse_digits(data).map(|(v, _)| v)
            });
            match delivered {
                Some(d) => delivered_sum += d,
                None => errors += 1,
            }
        });
        sh.acks.fetch_add(acks, Relaxed);
        sh.ack_delivered.fetch_add(delivered_sum, Relaxed);
        sh.ack_errors.fetch_add(errors, Relaxed);
        if let Err(e) = decoded {
            tracing::warn!(error = %e, "bench reporter: protocol error");
            break;
        }
        if buf.capacity() - buf.len() < READ_MIN_FREE {
            buf.reserve(READ_CHUNK);
        }
        match reader.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    // The bench closes its reporters' connections only after this task is aborted: the
    // server closed this one. A reporter waiting for the window must not wait it out.
    sh.reporter_closed.store(true, SeqCst);
    sh.pub_wake.notify_waiters();
}

/// One reporter: write reports until the window's end. Returns its connection's write
/// half (kept open through the drain) and its ack reader.
async fn reporter(sh: Arc<Shared>, rate_share: u64) -> Result<(BoxWrite, JoinHandle<()>)> {
    let Opened {
        reader,
        mut writer,
        buf,
        codec,
        uuid,
    } = open_with_retry(&sh, &sh.cfg.server, None, b'p').await?;
    let acks = tokio::spawn(read_acks(Arc::clone(&sh), reader, buf, codec));
    let cfg = &sh.cfg;
    let window = cfg.window();
    let start = sh
        .window_start
        .load(Relaxed)
        .saturating_sub(cfg.warmup.as_nanos() as u64);
    let (ws, we) = (sh.window_start.load(Relaxed), sh.window_end.load(Relaxed));
    let end = sh.deadline(we);
    let frames = FrameCodec::builder()
        .max_frame_len(DEFAULT_MAX_FRAME_LEN)
        .new_codec();
    // The compress flag also asks for a compressed acknowledgement, and the cipher flag
    // for an encrypted one (the report itself stays plaintext in protocol v1).
    let report_header = Header::new(MsgType::Report, uuid)
        .with_compress(cfg.compress)
        .with_cipher(cfg.encrypt);
    let subscribers = cfg.subscribers as u64;
    let heartbeat_header = Header::new(MsgType::Heartbeat, uuid);
    let mut payload = Vec::with_capacity(cfg.size + 64);
    let mut batch = BytesMut::with_capacity(PUB_BATCH_BYTES + cfg.size + 256);
    let mut ends: Vec<(usize, bool)> = Vec::with_capacity(PUB_BATCH_BYTES / 16);
    let mut sent = 0u64;
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if sh.reporter_closed.load(Relaxed) {
            return Err(sh.server_closed("its acknowledgements ended"));
        }
        let allowed = if cfg.rate == 0 {
            if sh.now_ns() >= we {
                break;
            }
            if window == 0 {
                u64::MAX
            } else {
                match wait_for_window(&sh, window, end).await {
                    0 => break,
                    n => n,
                }
            }
        } else {
            tick.tick().await;
            let now = sh.now_ns();
            if now >= we {
                break;
            }
            let due = u64::try_from(
                u128::from(now.saturating_sub(start)) * u128::from(rate_share) / 1_000_000_000,
            )
            .unwrap_or(u64::MAX)
            .saturating_add(1);
            due.saturating_sub(sent)
        };
        batch.clear();
        ends.clear();
        if last_heartbeat.elapsed() >= cfg.heartbeat_interval {
            frames.encode_parts(&heartbeat_header, b"", &mut batch)?;
            last_heartbeat = tokio::time::Instant::now();
        }
        let byte_goal = if cfg.rate == 0 {
            PUB_BATCH_BYTES
        } else {
            FIXED_RATE_BATCH_BYTES
        };
        while (ends.len() as u64) < allowed && batch.len() < byte_goal {
            let seq = sh.seq.fetch_add(1, SeqCst);
            let ts = sh.now_ns();
            payload.clear();
            if cfg.distinct_topics {
                write_topic_payload(&mut payload, cfg.size, seq % subscribers, seq, ts);
            } else {
                write_payload(&mut payload, cfg.size, seq, ts);
            }
            encode_report(&frames, &report_header, &payload, &mut batch)?;
            ends.push((batch.len(), ts >= ws && ts < we));
            sent += 1;
        }
        if batch.is_empty() {
            continue;
        }
        // Never block past the window's end: an open-loop reporter can face a full socket.
        let written = write_until(&sh, &mut writer, &batch, end).await?;
        let (mut published, mut in_window) = (0u64, 0u64);
        for &(e, w) in &ends {
            if e > written {
                break;
            }
            published += 1;
            in_window += u64::from(w);
        }
        sh.published.fetch_add(published, Relaxed);
        sh.published_in_window.fetch_add(in_window, Relaxed);
        if written < batch.len() {
            sh.truncated.store(true, Relaxed);
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.flush()).await;
    if sh.reporter_closed.load(SeqCst) {
        return Err(sh.server_closed("its acknowledgements ended"));
    }
    Ok((writer, acks))
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

fn progress_bar(sh: &Arc<Shared>) -> Option<(ProgressBar, JoinHandle<()>)> {
    if !sh.cfg.progress {
        return None;
    }
    let total = sh.cfg.warmup + sh.cfg.duration;
    let bar = ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}")
    {
        bar.set_style(style);
    }
    let task = {
        let (bar, sh) = (bar.clone(), Arc::clone(sh));
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut last = (started, 0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = tokio::time::Instant::now();
                let (p, d) = (sh.published.load(Relaxed), sh.delivered.load(Relaxed));
                let secs = (now - last.0).as_secs_f64().max(1e-3);
                let phase = if sh.now_ns() < sh.window_start.load(Relaxed) {
                    "warmup"
                } else {
                    "measuring"
                };
                bar.set_position(u64::try_from((now - started).as_millis()).unwrap_or(0));
                bar.set_message(format!(
                    "{phase}: {:.0} reports/s, {:.0} pushes/s",
                    (p - last.1) as f64 / secs,
                    (d - last.2) as f64 / secs
                ));
                last = (now, p, d);
            }
        })
    };
    Some((bar, task))
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use monitor_proto::message::reply;

    #[test]
    fn payload_is_exact_and_parses_back_through_a_push() {
        for size in [MIN_SIZE + 20, 200, 1000, 64 * 1024] {
            let mut v = Vec::new();
            write_payload(&mut v, size, 123_456, 9_876_543_210);
            assert_eq!(v.len(), size);
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(j["seq"], 123_456);
            assert_eq!(j["ts"], 9_876_543_210u64);
            assert_eq!(j["code"], BENCH_CODE);
            let push = reply::push(&v);
            assert_eq!(parse_push(&push), Some((123_456, 9_876_543_210)));
        }
        let mut v = Vec::new();
        write_payload(&mut v, 1, 0, 0);
        assert!(v.len() <= MIN_SIZE);
        assert_eq!(parse_push(&reply::push(&v)), Some((0, 0)));
        assert_eq!(parse_push(b"{}"), None);
        assert_eq!(
            parse_push(&reply::push(br#"{"code":"bench","seq":x}"#)),
            None
        );
    }

    #[test]
    fn topic_payload_is_exact_and_parses_back_through_a_push() {
        for (size, topic) in [(100, 0), (200, 9_999), (1000, 999_999)] {
            let mut v = Vec::new();
            write_topic_payload(&mut v, size, topic, 123_456, 9_876_543_210);
            assert_eq!(v.len(), size);
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(j["code"], format!("bench.{topic}"));
            assert_eq!(j["seq"], 123_456);
            assert_eq!(parse_push(&reply::push(&v)), Some((123_456, 9_876_543_210)));
        }
        for bad in [
            &br#"{"code":"bench.","seq":1,"ts":2}"#[..],
            br#"{"code":"bench.1x","seq":1,"ts":2}"#,
        ] {
            assert_eq!(parse_push(&reply::push(bad)), None);
        }
    }

    /// 10,000 subscribers are over many shells' `ulimit -n`: a run that cannot open its
    /// connections is refused before the first one, saying what to raise.
    #[cfg(unix)]
    #[test]
    fn too_few_open_files_is_refused_up_front() {
        use rustix::process::{getrlimit, Resource};
        let mut cfg = BenchConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.subscribers = MAX_CONNECTIONS;
        match getrlimit(Resource::Nofile).current {
            Some(soft) if soft < fds_needed(&cfg) => {
                let err = check_open_files(&cfg).unwrap_err().to_string();
                assert!(
                    err.contains(
                        "1000000 subscribers and 1 reporters need about 1000065 open files"
                    ),
                    "{err}"
                );
                assert!(
                    err.contains(&format!("may open {soft} (ulimit -n")),
                    "{err}"
                );
            }
            _ => check_open_files(&cfg).unwrap(),
        }
        cfg.subscribers = 1;
        check_open_files(&cfg).unwrap();
    }

    fn client_codec() -> ClientCodec {
        ClientCodec::builder()
            .max_frame_len(DEFAULT_MAX_FRAME_LEN)
            .max_inflated_len(DEFAULT_MAX_FRAME_LEN as usize)
            .new_codec()
    }

    #[test]
    fn frames_are_walked_in_place_and_through_the_layers() {
        use bytes::Bytes;
        use monitor_proto::{ServerCodec, ServerMessage};
        use tokio_util::codec::Encoder;
        let mut server = ServerCodec::new();
        let uuid = Uuid([b's'; 33]);
        let mut wire = Vec::new();
        for (msg_type, json, compress) in [
            (MsgType::Push, &br#"{"a":1}"#[..], false),
            (MsgType::ReportAck, br#"{"b":2}"#, false),
            (MsgType::Push, br#"{"c":3}"#, true),
            (MsgType::Push, br#"{"d":4}"#, false),
        ] {
            let out =
                ServerMessage::new(msg_type, uuid, Bytes::copy_from_slice(json)).compress(compress);
            let mut frame = BytesMut::new();
            server.encode(out, &mut frame).unwrap();
            wire.extend_from_slice(&frame);
        }
        let expected = [
            (MsgType::Push, r#"{"a":1}"#),
            (MsgType::ReportAck, r#"{"b":2}"#),
            (MsgType::Push, r#"{"c":3}"#),
            (MsgType::Push, r#"{"d":4}"#),
        ]
        .map(|(t, b)| (t, b.to_owned()))
        .to_vec();
        // The stream arrives in two reads, split at every byte: inside headers, plain and
        // compressed bodies.
        for split in 0..=wire.len() {
            let mut codec = client_codec();
            let mut seen = Vec::new();
            let mut walk = |buf: &mut BytesMut| {
                for_each_frame(buf, &mut codec, |t, body| {
                    seen.push((t, String::from_utf8(body.unwrap().to_vec()).unwrap()))
                })
            };
            let mut buf = BytesMut::from(&wire[..split]);
            walk(&mut buf).unwrap();
            buf.extend_from_slice(&wire[split..]);
            walk(&mut buf).unwrap();
            assert!(buf.is_empty(), "split at {split}");
            assert_eq!(seen, expected, "split at {split}");
        }

        // A broken header (version, CRC) ends the stream.
        for corrupt in [0, 8] {
            let mut bad = BytesMut::new();
            server
                .encode(
                    ServerMessage::new(MsgType::Push, uuid, Bytes::new()),
                    &mut bad,
                )
                .unwrap();
            bad[corrupt] ^= 2;
            assert!(for_each_frame(&mut bad, &mut client_codec(), |_, _| {}).is_err());
        }
    }

    #[test]
    fn encrypted_pushes_are_read_through_the_session_key() {
        use monitor_proto::layer::crypto::{SessionKey, KEY_LEN};
        use monitor_proto::{ServerCodec, ServerMessage};
        use tokio_util::codec::Encoder;
        let key = SessionKey::from_bytes(&[7; KEY_LEN]);
        let mut server = ServerCodec::new();
        server.set_session_key(Some(key.clone()));
        let uuid = Uuid([b's'; 33]);
        let mut buf = BytesMut::new();
        for (json, compress) in [(&br#"{"a":1}"#[..], false), (br#"{"b":2}"#, true)] {
            let push = ServerMessage::new(MsgType::Push, uuid, bytes::Bytes::copy_from_slice(json))
                .compress(compress)
                .encrypt(true);
            server.encode(push, &mut buf).unwrap();
        }
        let codec = client_codec();
        let mut seen = Vec::new();
        // Without the key the bodies are unreadable (None), with it they are the JSON.
        for key in [None, Some(key)] {
            codec.set_session_key(key);
            let mut wire = buf.clone();
            for_each_frame(&mut wire, &mut codec.clone(), |t, body| {
                seen.push((t, body.map(|b| String::from_utf8(b.to_vec()).unwrap())))
            })
            .unwrap();
        }
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            seen,
            [
                (MsgType::Push, None),
                (MsgType::Push, None),
                (MsgType::Push, some(r#"{"a":1}"#)),
                (MsgType::Push, some(r#"{"b":2}"#)),
            ]
        );
    }

    #[test]
    fn reports_carry_the_runs_layers() {
        use monitor_proto::ServerCodec;
        let frames = FrameCodec::new();
        let uuid = Uuid([b'p'; 33]);
        let payload = {
            let mut p = Vec::new();
            write_payload(&mut p, 300, 7, 9);
            p
        };
        for (compress, encrypt) in [(false, false), (true, false), (false, true), (true, true)] {
            let header = Header::new(MsgType::Report, uuid)
                .with_compress(compress)
                .with_cipher(encrypt);
            let mut wire = BytesMut::new();
            encode_report(&frames, &header, &payload, &mut wire).unwrap();
            assert_eq!(
                wire.len() < HEADER_LEN + payload.len(),
                compress,
                "a padded report shrinks when compressed"
            );
            let got = ServerCodec::new().decode(&mut wire).unwrap().unwrap();
            assert_eq!(
                (got.header.compress, got.header.cipher),
                (compress, encrypt)
            );
            assert_eq!(
                &got.body.unwrap()[..],
                &payload[..],
                "the report itself is plaintext"
            );
        }
        // The run's settings reach every connection's client config.
        let mut cfg = BenchConfig::new("tls://localhost:1".parse().unwrap());
        assert_eq!(cfg.layers().as_deref(), Some("tls"));
        cfg.server = "127.0.0.1:1".parse().unwrap();
        assert_eq!(cfg.layers(), None);
        cfg.encrypt = true;
        cfg.compress = true;
        cfg.token = Some(monitor_client::Token::new("t"));
        cfg.tls = Some(TlsSettings::new().ca_file("/ca.pem"));
        assert_eq!(cfg.layers().as_deref(), Some("tls+encrypt+compress"));
        let client = cfg.client_config();
        assert!(client.encrypt && client.compress);
        assert_eq!(client.token, cfg.token);
        assert_eq!(client.tls, cfg.tls);
        assert_eq!(client.connect_timeout, cfg.connect_timeout);
        cfg.validate().unwrap();
        cfg.tls = Some(TlsSettings::new());
        assert!(matches!(
            cfg.validate().unwrap_err().config_field(),
            Some(("tls.ca_files", _))
        ));
    }

    #[test]
    fn ranges_are_checked() {
        let base = BenchConfig::new("127.0.0.1:1".parse().unwrap());
        assert!(base.validate().is_ok());
        type Breaker = fn(&mut BenchConfig);
        let checks: [(&str, Breaker); 7] = [
            ("subscribers", |c| c.subscribers = MAX_CONNECTIONS + 1),
            ("reporters", |c| c.reporters = 0),
            ("settle", |c| c.settle = Duration::from_secs(601)),
            ("size", |c| c.size = MAX_SIZE + 1),
            // A frame over the server's limit, by one byte.
            ("size", |c| c.size = 1024 * 1024 - 44),
            ("max_frame_len", |c| c.max_frame_len = 100),
            ("heartbeat_interval", |c| {
                c.heartbeat_interval = Duration::MAX
            }),
        ];
        let mut fits = base.clone();
        fits.size = 1024 * 1024 - 45;
        assert_eq!(report_frame_len(fits.size), 1024 * 1024);
        assert!(fits.validate().is_ok());
        for (field, break_it) in checks {
            let mut cfg = base.clone();
            break_it(&mut cfg);
            match cfg.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn windows() {
        assert_eq!(default_window(1), 1000);
        assert_eq!(default_window(1000), 200);
        assert_eq!(default_window(100_000), 10);
    }
}
