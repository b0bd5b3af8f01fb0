//! Helpers shared by the integration tests of the monitor crates (monitor-server,
//! monitor-client and monitor-cli), **for tests only**: every crate takes it as a
//! `[dev-dependencies]` entry, never as a normal dependency, and it is not published.
//!
//! - [`TestServer`] and [`start`]: a monitor-server running in process on 127.0.0.1, on a
//!   free port, stopped when dropped.
//! - [`eventually`], [`eventually_async`] and [`WAIT`]: waiting on observable state within
//!   a deadline, rather than sleeping for a while and hoping.
//! - [`client`]: monitor-client configs with short timings, and the next event of a push
//!   receiver within the deadline.
//! - [`pki`]: certificates made by the tests with rcgen (a CA, server and client
//!   certificates), temporary directories, and a TLS connector that trusts the CA.
//!
//! The helpers panic on failure, as a test would: they are meant to fail the test that
//! calls them, with a message that says what did not happen.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

pub mod client;
pub mod pki;
mod server;
mod wait;

pub use server::{start, token, TestServer};
pub use wait::{eventually, eventually_async, WAIT};
