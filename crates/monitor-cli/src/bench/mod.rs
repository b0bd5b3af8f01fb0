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
//!
//! # Layout
//! From the ground up: each file builds on those listed before it.
//! - `payload`: the report a reporter writes, and its `seq` and `ts` read back.
//! - `ws_url`: [`WsUrl`], where WebSocket subscribers connect.
//! - `config`: [`BenchConfig`], its defaults and its ranges; `open_files`: the file
//!   descriptors a run needs.
//! - `shared`: what every task of a run shares: the window, the counters, the
//!   subscribers' progress, the latency histograms.
//! - `frames`: reports encoded, frames walked in a read buffer; `connect`: one connection
//!   opened past its handshake.
//! - `tally`: what a subscriber counts; `subscriber` and [`ws`]: the subscribers over the
//!   binary protocol and over WebSocket.
//! - `reporter`: the reporters, their rate and their window.
//! - `summary`: the figures, [`BenchReport`]; `progress`: the progress bar.
//! - `run`: one run: connect, settle, warmup, measure, drain, sum up.

mod config;
mod connect;
mod frames;
mod open_files;
mod payload;
mod progress;
mod reporter;
mod run;
mod shared;
mod subscriber;
mod summary;
mod tally;
pub mod ws;
mod ws_url;

pub use config::{default_window, BenchConfig, DISTINCT_WINDOW, MAX_SIZE};
#[cfg(unix)]
pub use open_files::raise_open_files_limit;
pub use payload::{
    parse_push, parse_report, report_frame_len, write_payload, write_topic_payload, BENCH_CODE,
    MIN_SIZE,
};
pub use run::run;
pub use summary::BenchReport;
pub use ws::WsUrl;
