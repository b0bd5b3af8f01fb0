//! Replays the committed seed corpus (`corpus/<target>/*`) through the same harness
//! functions the fuzz targets call (`monitor_proto::fuzz_harness`, feature `fuzzing`), on
//! stable Rust, with no libFuzzer, sanitizer or `RUSTC_BOOTSTRAP`:
//!
//! ```text
//! cargo test --manifest-path fuzz/Cargo.toml
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn corpus_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir().join(target);
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

/// What a subscribe body gives under the harness's small topic limits, in a word.
fn topic_outcome(body: bytes::Bytes) -> &'static str {
    use monitor_proto::message::request::Subscribe;
    use monitor_proto::{fuzz_harness::TOPIC_LIMITS, BodyError};
    match Subscribe::parse(body, &TOPIC_LIMITS) {
        Ok(s) if s.topics.is_empty() => "no topics",
        Ok(_) => "within",
        Err(BodyError::TooManyTopics { .. }) => "too many",
        Err(BodyError::TopicTooLong { .. }) => "too long",
        Err(_) => "malformed",
    }
}

/// The subscribe seeds reach what their names say under the harness's topic limits (8
/// patterns of 16 bytes), so the fuzzer starts from every outcome of the topics parser.
#[test]
fn subscribe_seeds_reach_every_topic_outcome() {
    use monitor_proto::layer::compress::inflate;
    use monitor_proto::{MsgType, ServerCodec};
    use tokio_util::codec::Decoder;

    let mut body_layers = Vec::new();
    for (path, data) in corpus("body_layers") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(kind) = name.strip_prefix("subscribe_topics_") else {
            continue;
        };
        assert_eq!(data[0] % 8, 4, "{name}: selector 4 picks subscribe");
        let mut body = bytes::Bytes::copy_from_slice(&data[1..]);
        if kind.starts_with("zlib") {
            body = inflate(&body, 64 * 1024).unwrap();
        }
        body_layers.push((kind.to_owned(), topic_outcome(body)));
    }
    body_layers.sort();
    let want = [
        ("at_limits", "within"),
        ("not_strings", "malformed"),
        ("too_long", "too long"),
        ("too_many", "too many"),
        ("within", "within"),
        ("zlib_many", "too many"),
    ];
    let want: Vec<_> = want.iter().map(|&(k, o)| (k.to_owned(), o)).collect();
    assert_eq!(body_layers, want);

    // The framed seeds: every frame decodes, and the subscribes cover the outcomes.
    let mut outcomes = Vec::new();
    for name in ["subscribe_topics", "subscribe_topics_compressed"] {
        let path = corpus_dir().join("decode_stream").join(name);
        let data = std::fs::read(&path).unwrap();
        let mut wire = bytes::BytesMut::from(&data[1..]);
        let mut codec = ServerCodec::new();
        while let Some(received) = codec.decode(&mut wire).unwrap() {
            if received.header.msg_type == MsgType::Subscribe {
                outcomes.push(topic_outcome(received.body.unwrap()));
            }
        }
        assert!(wire.is_empty(), "{name}: whole frames");
    }
    assert_eq!(
        outcomes,
        ["within", "too long", "too many", "within", "too many", "too many", "within"]
    );
}
