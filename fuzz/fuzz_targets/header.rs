//! The input is checked and parsed as a 45-byte header; what parses must write back to the
//! same bytes. See `monitor_proto::fuzz_harness::header`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor_proto::fuzz_harness::header(data));
