//! Integration tests of monitor-client against an in-process monitor-server on 127.0.0.1
//! (and a few scripted servers), plus the `monitor-client` binary end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod receiver;
mod reporter;
mod support;
