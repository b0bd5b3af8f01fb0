//! Integration tests of monitor-server over real sockets on 127.0.0.1 (and a Unix socket),
//! in one binary. Each test starts its own in-process server on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod behaviour;
mod cluster;
mod hardening;
mod lifecycle;
mod limits;
mod security;
mod websocket;
