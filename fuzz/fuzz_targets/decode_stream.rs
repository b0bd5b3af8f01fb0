//! Byte 0 seeds the read-chunk sizes; the rest is a byte stream fed to a server and a
//! client codec (`ServerCodec`, `ClientCodec`). See `monitor_proto::fuzz_harness::decode_stream`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor_proto::fuzz_harness::decode_stream(data));
