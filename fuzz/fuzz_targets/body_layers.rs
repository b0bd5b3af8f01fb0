//! Byte 0 picks a message type; the rest is a body put through inflate, decrypt and the
//! request and reply parsers. See `monitor_proto::fuzz_harness::body_layers`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor_proto::fuzz_harness::body_layers(data));
