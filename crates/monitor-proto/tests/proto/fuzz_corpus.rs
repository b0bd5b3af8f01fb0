//! Replays the committed cargo-fuzz seed corpus (`fuzz/corpus/<target>/*`) through the
//! same harness functions the fuzz targets call, on stable Rust.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: empty corpus", dir.display());
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, data) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
    }
}

#[test]
fn decode_stream_corpus() {
    replay("decode_stream", monitor_proto::fuzz_harness::decode_stream);
}

#[test]
fn header_corpus() {
    replay("header", monitor_proto::fuzz_harness::header);
}

#[test]
fn body_layers_corpus() {
    replay("body_layers", monitor_proto::fuzz_harness::body_layers);
}
