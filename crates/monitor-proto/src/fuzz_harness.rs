//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable test that
//! replays their corpus, so both exercise the same code. Not part of the stable API.
//!
//! Each function must return normally for every input: a panic is a bug.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::codec::Builder;
use crate::header::{check_prefix, Header, HeaderLimits, HEADER_LEN};
use crate::layer::compress::inflate;
use crate::layer::crypto::SessionKey;
use crate::message::reply::Reply;
use crate::message::request::Request;
use crate::message::{MessageCodec, Role};
use crate::MsgType;

/// Limits small enough that the fuzzer reaches them.
const MAX_FRAME: u32 = 64 * 1024;
const MAX_INFLATED: usize = 64 * 1024;
const FUZZ_KEY: [u8; 32] = [0x42; 32];

fn codec(role: Role) -> MessageCodec {
    let mut codec = Builder::new()
        .max_frame_len(MAX_FRAME)
        .max_inflated_len(MAX_INFLATED)
        .message_codec(role);
    codec.set_session_key(Some(SessionKey::from_bytes(&FUZZ_KEY)));
    codec
}

/// Stream decoder: byte 0 seeds the read-chunk sizes, the rest is the stream. Feeds it
/// to a server- and a client-role codec, parsing every body that decodes.
pub fn decode_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    for role in [Role::Server, Role::Client] {
        let mut codec = codec(role);
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

fn parse_body(role: Role, msg_type: MsgType, body: Bytes) {
    match role {
        Role::Server => {
            let _ = Request::parse(msg_type, body, &crate::TopicLimits::default());
        }
        Role::Client => {
            let _ = Reply::parse(&body);
        }
    }
}

/// Header: checks and parses the input as a header; what parses must write back to the
/// same bytes.
pub fn header(data: &[u8]) {
    let limits = HeaderLimits::default();
    let prefix = check_prefix(data, &limits);
    match Header::parse(data, &limits) {
        Ok(header) => {
            assert!(prefix.is_ok());
            assert_eq!(&header.to_bytes()[..], &data[..HEADER_LEN]);
        }
        Err(_) if data.len() >= HEADER_LEN => assert!(prefix.is_err()),
        Err(_) => {}
    }
}

/// Body layers: byte 0 picks a message type; the rest goes through inflate, decrypt (as
/// the body of a frame with that header) and the request and reply parsers.
pub fn body_layers(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let _ = inflate(body, MAX_INFLATED);
    let msg_type = MsgType::ALL[usize::from(selector) % MsgType::ALL.len()];
    let header = Header::new(msg_type, crate::Uuid([selector; 33]));
    let key = SessionKey::from_bytes(&FUZZ_KEY);
    if let Ok(plain) = key.open(&header.to_bytes(), body) {
        parse_body(Role::Client, msg_type, plain);
    }
    let bytes = Bytes::copy_from_slice(body);
    parse_body(Role::Server, msg_type, bytes.clone());
    parse_body(Role::Client, msg_type, bytes);
}
