//! The `monitor-client` binary end to end, against an in-process monitor-server on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod commands;
mod dashboard;
// The test PKI of monitor-client's tests, shared rather than copied.
#[path = "../../../monitor-client/tests/client/pki.rs"]
mod pki;
mod security;
mod support;
