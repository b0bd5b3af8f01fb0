//! Property tests: every encode/decode pair round-trips, arbitrary input never panics,
//! encrypted frames are authenticated, and subscribe bodies are held to their topic limits.

use bytes::{Bytes, BytesMut};
use monitor_proto::layer::compress::{deflate, inflate};
use monitor_proto::layer::crypto::SessionKey;
use monitor_proto::message::request::Subscribe;
use monitor_proto::message::topic::{TopicLimits, TopicPattern};
use monitor_proto::{
    BodyError, ClientCodec, ClientMessage, Frame, FrameCodec, Header, MsgType, Request,
    ServerCodec, ServerMessage, Uuid, HEADER_LEN,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn msg_type() -> impl Strategy<Value = MsgType> {
    prop::sample::select(MsgType::ALL.to_vec())
}

fn uuid() -> impl Strategy<Value = Uuid> {
    prop::array::uniform32(any::<u8>()).prop_flat_map(|head| {
        any::<u8>().prop_map(move |last| {
            let mut u = [0u8; 33];
            u[..32].copy_from_slice(&head);
            u[32] = last;
            Uuid(u)
        })
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        msg_type(),
        any::<bool>(),
        any::<bool>(),
        uuid(),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(t, cipher, compress, uuid, body)| {
            let header = Header::new(t, uuid)
                .with_cipher(cipher)
                .with_compress(compress);
            Frame::new(header, Bytes::from(body))
        })
}

/// Feeds `wire` to `codec` in chunks of the given sizes (cycled), collecting everything.
fn decode_chunked<D: Decoder>(
    codec: &mut D,
    wire: &[u8],
    chunks: &[usize],
) -> Result<Vec<D::Item>, D::Error> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = codec.decode(&mut buf)? {
            out.push(item);
        }
    }
    Ok(out)
}

fn key() -> SessionKey {
    SessionKey::from_bytes(&[0x5a; 32])
}

fn server_and_client() -> (ServerCodec, ClientCodec) {
    let mut server = ServerCodec::new();
    let client = ClientCodec::new();
    server.set_session_key(Some(key()));
    client.set_session_key(Some(key()));
    (server, client)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn frames_survive_encode_decode_split_anywhere(
        frames in prop::collection::vec(frame(), 1..8),
        chunks in prop::collection::vec(1usize..200, 1..16),
    ) {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut wire).unwrap();
        }
        let got = decode_chunked(&mut FrameCodec::new(), &wire, &chunks).unwrap();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn header_parse_write_round_trip(t in msg_type(), cipher: bool, compress: bool, uuid in uuid(), len in 45u32..=1_048_576) {
        let mut header = Header::new(t, uuid).with_cipher(cipher).with_compress(compress);
        header.length = len;
        let parsed = Header::parse(&header.to_bytes()).unwrap();
        prop_assert_eq!(parsed, header);
    }

    #[test]
    fn arbitrary_bytes_give_frames_or_an_error(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let (mut server, mut client) = server_and_client();
        if let Err(e) = decode_chunked(&mut server, &bytes, &chunks) {
            prop_assert!(e.is_fatal());
        }
        if let Err(e) = decode_chunked(&mut client, &bytes, &chunks) {
            prop_assert!(e.is_fatal());
        }
        let _ = decode_chunked(&mut FrameCodec::new(), &bytes, &chunks);
        monitor_proto::fuzz_harness::decode_stream(&bytes);
        monitor_proto::fuzz_harness::body_layers(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix(tail in prop::collection::vec(any::<u8>(), 0..300), t in msg_type()) {
        // A valid 12-byte prefix announcing up to 300 bytes, then noise: exercises bodies.
        let mut header = Header::new(t, Uuid::ZERO).with_compress(tail.first().is_some_and(|b| b & 1 == 1));
        header.length = (HEADER_LEN + tail.len().saturating_sub(33)) as u32;
        let mut wire = header.to_bytes()[..12].to_vec();
        wire.extend_from_slice(&tail);
        let _ = ServerCodec::new().decode(&mut BytesMut::from(&wire[..]));
        let _ = ClientCodec::new().decode(&mut BytesMut::from(&wire[..]));
    }

    #[test]
    fn compress_round_trip(data in prop::collection::vec(any::<u8>(), 0..5000)) {
        let packed = deflate(&data);
        prop_assert_eq!(&inflate(&packed, data.len()).unwrap()[..], &data[..]);
        if !data.is_empty() {
            let too_small = inflate(&packed, data.len() - 1);
            prop_assert!(matches!(too_small, Err(BodyError::InflatedTooLarge { .. })), "{:?}", too_small);
        }
    }

    #[test]
    fn inflate_of_arbitrary_bytes_is_bounded(data in prop::collection::vec(any::<u8>(), 0..2000), max in 0usize..4096) {
        if let Ok(out) = inflate(&data, max) {
            prop_assert!(out.len() <= max);
        }
    }

    #[test]
    fn encrypt_round_trip(plain in prop::collection::vec(any::<u8>(), 0..3000), uuid in uuid(), t in msg_type()) {
        let header = Header::new(t, uuid).with_cipher(true).with_length((HEADER_LEN + 28 + plain.len()) as u32);
        let aad = header.to_bytes();
        prop_assert_eq!(&key().open(&aad, &key().seal(&header, &plain).unwrap()).unwrap()[..], &plain[..]);
    }

    /// `seal_frame` then `open`, many frames under one key: every body opens to its
    /// plaintext, and no nonce repeats.
    #[test]
    fn sealed_frames_open_and_never_repeat_a_nonce(
        plains in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..40),
        types in prop::collection::vec(msg_type(), 1..40),
        uuid in uuid(),
    ) {
        let key = key();
        let mut nonces = std::collections::HashSet::new();
        for (plain, t) in plains.iter().zip(types.iter().cycle()) {
            let mut wire = BytesMut::new();
            key.seal_frame(&Header::new(*t, uuid), plain, &mut wire).unwrap();
            let frame = FrameCodec::new().decode(&mut wire).unwrap().unwrap();
            prop_assert!(frame.header.cipher);
            prop_assert!(nonces.insert(frame.body[..12].to_vec()));
            prop_assert_eq!(&key.open(&frame.header.to_bytes(), &frame.body).unwrap()[..], &plain[..]);
        }
    }

    #[test]
    fn message_layers_round_trip(
        json in prop::collection::vec(any::<u8>(), 0..3000),
        compress: bool,
        encrypt: bool,
        t in prop::sample::select(vec![MsgType::Push, MsgType::ReportAck, MsgType::KeyReply, MsgType::HeartbeatReply]),
        uuid in uuid(),
        chunks in prop::collection::vec(1usize..500, 1..4),
    ) {
        let (mut server, mut client) = server_and_client();
        let mut wire = BytesMut::new();
        let json = Bytes::from(json);
        server.encode(ServerMessage::new(t, uuid, json.clone()).compress(compress).encrypt(encrypt), &mut wire).unwrap();
        let got = decode_chunked(&mut client, &wire, &chunks).unwrap();
        prop_assert_eq!(got.len(), 1);
        let got = &got[0];
        prop_assert_eq!(got.header.msg_type, t);
        prop_assert_eq!(got.header.uuid, uuid);
        prop_assert_eq!(got.header.cipher, encrypt && !t.never_encrypted());
        prop_assert_eq!(got.body.as_ref().unwrap(), &json);
    }

    #[test]
    fn request_layers_round_trip(json in prop::collection::vec(any::<u8>(), 0..3000), compress: bool, encrypt: bool, uuid in uuid()) {
        let (mut server, mut client) = server_and_client();
        let mut wire = BytesMut::new();
        let json = Bytes::from(json);
        client.encode(ClientMessage::new(MsgType::Report, uuid, json.clone()).compress(compress).ask_encrypted_replies(encrypt), &mut wire).unwrap();
        let got = server.decode(&mut wire).unwrap().unwrap();
        prop_assert_eq!(got.header.cipher, encrypt);
        prop_assert_eq!(got.header.compress, compress);
        prop_assert_eq!(got.body.unwrap(), json);
    }

    /// Any change to an encrypted frame (header or body; with the header CRC recomputed,
    /// as an attacker would) is caught: the receiver never gets an "encrypted" message
    /// whose body differs from what was sent.
    #[test]
    fn tampering_with_an_encrypted_frame_is_detected(
        json in prop::collection::vec(any::<u8>(), 0..400),
        compress: bool,
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        fix_crc: bool,
    ) {
        let (mut server, mut client) = server_and_client();
        let mut wire = BytesMut::new();
        server.encode(ServerMessage::new(MsgType::Push, Uuid([b'u'; 33]), json.clone()).compress(compress).encrypt(true), &mut wire).unwrap();
        let i = position.index(wire.len());
        wire[i] ^= flip;
        if fix_crc && i < 8 {
            let crc = crc32fast::hash(&wire[..8]);
            wire[8..12].copy_from_slice(&crc.to_le_bytes());
        }
        match client.decode(&mut wire) {
            Err(e) => prop_assert!(e.is_fatal()),
            Ok(None) => {} // now announces more bytes than were sent: never completes
            Ok(Some(received)) => {
                let authentic = received.header.cipher && received.body.is_ok();
                // The only way through is stripping the cipher flag, which the receiver
                // sees (and the body is then ciphertext, not the message).
                prop_assert!(!authentic, "tampered byte {} accepted", i);
                if let Ok(body) = received.body {
                    prop_assert_ne!(&body[..], &json[..]);
                }
            }
        }
    }
}

/// Topic limits small enough that generated bodies cross them.
fn topic_limits() -> impl Strategy<Value = TopicLimits> {
    (0usize..10, 0usize..12).prop_map(|(max_topics, max_topic_len)| {
        TopicLimits::new()
            .with_max_topics(max_topics)
            .with_max_topic_len(max_topic_len)
    })
}

/// One element of a `"topics"` array as JSON text: mostly strings (with characters that
/// need escaping, and multi-byte ones), sometimes another JSON value.
fn topic_element() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z.*é\"\\\\\u{1F600}]{0,14}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => prop::sample::select(vec!["1", "null", "true", "[\"a\"]", "{\"a\":\"b\"}", "-0.5e3"])
            .prop_map(str::to_owned),
    ]
}

/// What `Subscribe::parse` must say of `topics` under `limits`: the first pattern kept
/// (index under `max_topics`) that is too long, else too many, else all of them.
fn expected_topics(
    topics: &[String],
    limits: &TopicLimits,
) -> Result<Vec<TopicPattern>, BodyError> {
    let kept = &topics[..topics.len().min(limits.max_topics)];
    if let Some((index, t)) = kept
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > limits.max_topic_len)
    {
        return Err(BodyError::TopicTooLong {
            index,
            len: t.len(),
            max: limits.max_topic_len,
        });
    }
    if topics.len() > limits.max_topics {
        return Err(BodyError::TooManyTopics {
            count: topics.len(),
            max: limits.max_topics,
        });
    }
    Ok(topics.iter().map(|t| TopicPattern::parse(t)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `Subscribe::body` then `Subscribe::parse` under any limits: the patterns come back
    /// exactly when they are within the limits, and otherwise the error names the first
    /// pattern too long or the exact count.
    #[test]
    fn subscribe_body_round_trips_under_topic_limits(
        code in "[a-z]{1,8}",
        topics in prop::collection::vec("[a-z.*é\"\\\\\u{1F600}]{0,14}", 0..14),
        limits in topic_limits(),
    ) {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let body = Subscribe::body(&code, &refs);
        let got = Subscribe::parse(body.clone(), &limits);
        match (expected_topics(&topics, &limits), got) {
            (Ok(want), Ok(s)) => {
                prop_assert_eq!(s.code, code);
                prop_assert_eq!(s.topics, want);
                prop_assert_eq!(s.raw, body);
            }
            (Err(want), Err(got)) => prop_assert_eq!(want.to_string(), got.to_string()),
            (want, got) => prop_assert!(false, "want {:?}, got {:?}", want, got),
        }
    }

    /// Any subscribe body, well formed or not: it parses with at most `max_topics`
    /// patterns of at most `max_topic_len` bytes each, or it is a body error.
    #[test]
    fn any_subscribe_body_parses_within_topic_limits_or_errs(
        elements in prop::collection::vec(topic_element(), 0..14),
        cut in any::<prop::sample::Index>(),
        truncate: bool,
        limits in topic_limits(),
    ) {
        let mut body = format!(r#"{{"code":"c","topics":[{}]}}"#, elements.join(",")).into_bytes();
        if truncate {
            body.truncate(cut.index(body.len() + 1));
        }
        // The fuzz harness's own checks (small and default limits agree), on the body
        // as is (selector 4: a subscribe) and compressed.
        let mut selected = vec![4u8];
        selected.extend_from_slice(&body);
        monitor_proto::fuzz_harness::body_layers(&selected);
        selected.truncate(1);
        selected.extend_from_slice(&deflate(&body));
        monitor_proto::fuzz_harness::body_layers(&selected);
        for parsed in [
            Subscribe::parse(Bytes::from(body.clone()), &limits).map(Request::Subscribe),
            Request::parse(MsgType::Subscribe, Bytes::from(body), &limits),
        ] {
            match parsed {
                Ok(Request::Subscribe(s)) => {
                    prop_assert!(s.topics.len() <= limits.max_topics);
                    for p in &s.topics {
                        prop_assert!(p.to_string().len() <= limits.max_topic_len, "{}", p);
                    }
                }
                Ok(other) => prop_assert!(false, "not a subscribe: {:?}", other),
                Err(BodyError::TooManyTopics { count, max }) => {
                    prop_assert!(count > max && max == limits.max_topics);
                }
                Err(BodyError::TopicTooLong { index, len, max }) => {
                    prop_assert!(len > max && max == limits.max_topic_len);
                    prop_assert!(index < limits.max_topics);
                }
                // Not fatal (a `BodyError`), and malformed.
                Err(e) => prop_assert!(
                    matches!(e, BodyError::Malformed { .. } | BodyError::InvalidJson { .. } | BodyError::InvalidUtf8 { .. }),
                    "{}", e
                ),
            }
        }
    }
}
