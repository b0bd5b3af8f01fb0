//! Integration tests of monitor-client against an in-process monitor-server on 127.0.0.1
//! (and a few scripted servers). The `monitor-client` binary's tests are monitor-cli's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod receiver;
mod reporter;
mod security;
mod support;
