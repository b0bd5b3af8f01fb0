//! The `monitor-client` binary end to end, against an in-process monitor-server on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod commands;
mod dashboard;
mod security;
mod support;
