//! Integration tests of monitor-proto, in one binary: golden vectors made by PHP, property
//! tests, the allocation check and the fuzz-corpus replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alloc;
mod fuzz_corpus;
mod properties;
mod vectors;
