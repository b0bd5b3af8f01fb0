//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable test that
//! replays their corpus (`fuzz/tests/corpus.rs`), so both exercise the same code. Built
//! only with the `fuzzing` feature; not part of the stable API.
//!
//! Each function must return normally for every input: a panic is a bug.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::BodyError;
use crate::header::{check_prefix, Header, HeaderLimits, HEADER_LEN};
use crate::layer::compress::inflate;
use crate::layer::crypto::SessionKey;
use crate::message::reply::Reply;
use crate::message::request::{Request, Subscribe};
use crate::message::topic::TopicLimits;
use crate::message::{ClientCodec, Received, ServerCodec};
use crate::{Error, MsgType};

/// Limits small enough that the fuzzer reaches them.
const MAX_FRAME: u32 = 64 * 1024;
const MAX_INFLATED: usize = 64 * 1024;
const FUZZ_KEY: [u8; 32] = [0x42; 32];
/// Topic limits small enough that the fuzzer crosses them: a subscribe is parsed under
/// these and under the defaults, and the two must agree.
pub const TOPIC_LIMITS: TopicLimits = TopicLimits::new().with_max_topics(8).with_max_topic_len(16);

/// Which end parses a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Server,
    Client,
}

/// A decoder for one end, with the small limits and the fuzz key.
enum Codec {
    Server(ServerCodec),
    Client(ClientCodec),
}

impl Codec {
    fn new(end: End) -> Codec {
        let key = Some(SessionKey::from_bytes(&FUZZ_KEY));
        match end {
            End::Server => {
                let mut codec = ServerCodec::builder()
                    .max_frame_len(MAX_FRAME)
                    .max_inflated_len(MAX_INFLATED)
                    .new_codec();
                codec.set_session_key(key);
                Codec::Server(codec)
            }
            End::Client => {
                let codec = ClientCodec::builder()
                    .max_frame_len(MAX_FRAME)
                    .max_inflated_len(MAX_INFLATED)
                    .new_codec();
                codec.set_session_key(key);
                Codec::Client(codec)
            }
        }
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Received>, Error> {
        match self {
            Codec::Server(codec) => codec.decode(buf),
            Codec::Client(codec) => codec.decode(buf),
        }
    }
}

/// Stream decoder: byte 0 seeds the read-chunk sizes, the rest is the stream. Feeds it
/// to a server's and a client's codec, parsing every body that decodes.
pub fn decode_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    for role in [End::Server, End::Client] {
        let mut codec = Codec::new(role);
        let mut buf = BytesMut::new();
        let mut rest = stream;
        let mut step = usize::from(seed) + 1;
        'feed: while !rest.is_empty() {
            let n = step.min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            step = step * 7 % 251 + 1;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(received)) => {
                        assert!(received.header.length as usize >= HEADER_LEN);
                        if let Ok(body) = received.body {
                            parse_body(role, received.header.msg_type, body);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.is_fatal(), "a decode error ends the stream: {e}");
                        break 'feed;
                    }
                }
            }
        }
    }
}

fn parse_body(role: End, msg_type: MsgType, body: Bytes) {
    match role {
        End::Server => {
            let small = Request::parse(msg_type, body.clone(), &TOPIC_LIMITS);
            match &small {
                // A reply type is refused as a request whatever its body.
                Err(BodyError::NotARequest { .. }) => assert!(!msg_type.is_request()),
                // A body error is not fatal (it is a `BodyError`), and is the peer's.
                Err(e) => assert_eq!(e.fault(), crate::Fault::Peer, "{e}"),
                Ok(_) => {}
            }
            if msg_type == MsgType::Subscribe {
                let small = small.map(|r| match r {
                    Request::Subscribe(s) => s,
                    other => panic!("a subscribe body parsed as {other:?}"),
                });
                check_subscribe(small, Subscribe::parse(body, &TopicLimits::default()));
            }
        }
        End::Client => {
            let _ = Reply::parse(&body);
        }
    }
}

/// The topic-limit invariants, for one body parsed under [`TOPIC_LIMITS`] (`small`) and
/// under the defaults (`wide`): what parses is within the limits, limit errors name the
/// limit and a value over it, and raising the limits refuses nothing more and keeps the
/// same patterns. When `wide` parses, it also checks the values the errors give.
fn check_subscribe(small: Result<Subscribe, BodyError>, wide: Result<Subscribe, BodyError>) {
    let TopicLimits {
        max_topics,
        max_topic_len,
        ..
    } = TOPIC_LIMITS;
    match small {
        Ok(s) => {
            assert!(
                s.topics.len() <= max_topics,
                "{} topics kept",
                s.topics.len()
            );
            for p in &s.topics {
                assert!(p.to_string().len() <= max_topic_len, "{p:?} kept");
            }
            let wide = match wide {
                Ok(wide) => wide,
                Err(e) => panic!("within the small limits, refused under the defaults: {e}"),
            };
            assert_eq!(wide.topics, s.topics);
            assert_eq!(wide.code, s.code);
        }
        Err(BodyError::TooManyTopics { count, max }) => {
            assert!(max == max_topics && count > max, "{count} > {max}");
            if let Ok(wide) = wide {
                assert_eq!(wide.topics.len(), count, "the count is exact");
            }
        }
        Err(BodyError::TopicTooLong { index, len, max }) => {
            assert!(max == max_topic_len && len > max && index < max_topics);
            if let Ok(wide) = wide {
                assert_eq!(wide.topics[index].to_string().len(), len);
            }
        }
        Err(e) => {
            // Malformed whatever the limits (not JSON, no code, a topic not a string).
            assert!(
                matches!(
                    e,
                    BodyError::Malformed { .. }
                        | BodyError::InvalidJson { .. }
                        | BodyError::InvalidUtf8 { .. }
                ),
                "{e}"
            );
            assert!(wide.is_err(), "refused under the small limits only: {e}");
        }
    }
}

/// Header: checks and parses the input as a header; what parses must write back to the
/// same bytes.
pub fn header(data: &[u8]) {
    let limits = HeaderLimits {
        max_frame_len: crate::codec::DEFAULT_MAX_FRAME_LEN,
        accept: None,
    };
    let prefix = check_prefix(data, &limits);
    match Header::parse_limited(data, &limits) {
        Ok(header) => {
            assert!(prefix.is_ok());
            assert_eq!(&header.to_bytes()[..], &data[..HEADER_LEN]);
        }
        Err(_) if data.len() >= HEADER_LEN => assert!(prefix.is_err()),
        Err(_) => {}
    }
}

/// Body layers: byte 0 picks a message type; the rest goes through inflate (and what
/// inflates, through the request parser: a small zlib body may list many topics), decrypt
/// (as the body of a frame with that header) and the request and reply parsers.
pub fn body_layers(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let inflated = inflate(body, MAX_INFLATED);
    if let Ok(inflated) = &inflated {
        assert!(inflated.len() <= MAX_INFLATED);
    }
    let msg_type = MsgType::ALL[usize::from(selector) % MsgType::ALL.len()];
    let header = Header::new(msg_type, crate::Uuid([selector; 33]));
    let key = SessionKey::from_bytes(&FUZZ_KEY);
    if let Ok(inflated) = inflated {
        parse_body(End::Server, msg_type, inflated);
    }
    if let Ok(plain) = key.open(&header.to_bytes(), body) {
        parse_body(End::Client, msg_type, plain);
    }
    let bytes = Bytes::copy_from_slice(body);
    parse_body(End::Server, msg_type, bytes.clone());
    parse_body(End::Client, msg_type, bytes);
}
