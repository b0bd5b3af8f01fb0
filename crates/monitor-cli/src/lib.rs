//! The `monitor-client` command line an operator runs on every host, built on the
//! [`monitor_client`] library: `push` prints pushed reports, `report` sends one or, with
//! `--health`, runs the host-health agent, `bench` is the fan-out load generator.
//!
//! A crate apart from the library so that a service embedding a
//! [`Reporter`](monitor_client::Reporter) does not build the argument parser, the
//! progress bar, the latency histogram and the system probe these need.
//!
//! # Layout
//! - [`cli`]: the command line (clap), its exit codes and its logging.
//! - [`health`]: this host's health as a `host.health` report (`sysinfo`).
//! - [`mod@bench`]: the fan-out load generator (`hdrhistogram`, `indicatif`; its
//!   WebSocket subscribers, `--ws`, `tokio-tungstenite`).
//! - [`error`]: this crate's [`Error`], which wraps the library's.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod cli;
pub mod error;
pub mod health;

pub use bench::{BenchConfig, BenchReport};
pub use error::{Error, Result};
pub use health::{HealthProbe, HealthReport};
