//! Integration tests of monitor-proto, in one binary: golden vectors made by PHP, property
//! tests, the allocation check, and codecs over real (in-memory) streams. The fuzz corpus
//! is replayed by the fuzz crate itself (`fuzz/tests/corpus.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alloc;
mod properties;
mod streams;
mod vectors;
