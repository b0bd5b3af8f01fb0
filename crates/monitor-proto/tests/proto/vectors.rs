//! Golden frames made by PHP's own `pack`/`crc32`/`gzcompress`, libsodium and OpenSSL
//! (`tests/data/php-frames.jsonl`): decoding each must give its fields, and encoding the
//! fields must give its bytes.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use monitor_proto::layer::compress::{deflate, inflate};
use monitor_proto::layer::kex::{derive_key_bytes, ClientHandshake, ServerHandshake};
use monitor_proto::message::reply::{self, KeyReplyData, Reply};
use monitor_proto::message::topic::TopicLimits;
use monitor_proto::{
    ClientCodec, Frame, FrameCodec, Header, MsgType, Request, ServerCodec, SessionKey, Uuid,
};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

struct Vector {
    name: String,
    wire: Vec<u8>,
    fields: Value,
}

impl Vector {
    fn hex(&self, key: &str) -> Vec<u8> {
        hex(self.fields[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no {key}", self.name)))
    }

    fn num(&self, key: &str) -> u64 {
        self.fields[key].as_u64().unwrap()
    }

    fn json_text(&self) -> &[u8] {
        self.fields["json_text"].as_str().unwrap().as_bytes()
    }

    fn uuid(&self) -> Uuid {
        Uuid::from_slice(self.fields["uuid"].as_str().unwrap().as_bytes()).unwrap()
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("../data/php-frames.jsonl");
    let all: Vec<Vector> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Vector {
                name: v["name"].as_str().unwrap().to_owned(),
                wire: hex(v["hex"].as_str().unwrap()),
                fields: v["fields"].clone(),
            }
        })
        .collect();
    assert_eq!(
        all.len(),
        16,
        "php-frames.jsonl changed: review these tests"
    );
    all
}

fn vector(name: &str) -> Vector {
    vectors().into_iter().find(|v| v.name == name).unwrap()
}

fn decode_one(wire: &[u8]) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "one frame, nothing left over");
    frame
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn every_vector_decodes_to_its_fields_and_encodes_back_byte_for_byte() {
    for v in vectors() {
        let frame = decode_one(&v.wire);
        let h = frame.header;
        assert_eq!(
            u64::from(h.msg_type.as_u8()),
            v.num("msg_type"),
            "{}",
            v.name
        );
        assert_eq!(v.num("version"), 1);
        assert_eq!(u64::from(h.cipher), v.num("cipher"), "{}", v.name);
        assert_eq!(u64::from(h.compress), v.num("compress"), "{}", v.name);
        assert_eq!(u64::from(h.length), v.num("length"), "{}", v.name);
        assert_eq!(u64::from(h.crc()), v.num("header_crc"), "{}", v.name);
        assert_eq!(h.uuid.as_bytes()[..], v.hex("uuid_hex")[..], "{}", v.name);
        assert_eq!(h.uuid, v.uuid());
        assert_eq!(frame.body.len() as u64, v.num("body_len"), "{}", v.name);
        assert_eq!(frame.body[..], v.hex("body_hex")[..], "{}", v.name);

        // From the fields alone (not the decoded frame) back to the same bytes.
        let fields_header =
            Header::new(MsgType::from_u8(v.num("msg_type") as u8).unwrap(), v.uuid())
                .with_cipher(v.num("cipher") == 1)
                .with_compress(v.num("compress") == 1);
        let mut out = BytesMut::new();
        FrameCodec::new()
            .encode(
                Frame::new(fields_header, Bytes::from(v.hex("body_hex"))),
                &mut out,
            )
            .unwrap();
        assert_eq!(out[..], v.wire[..], "{}: re-encoded bytes differ", v.name);
    }
}

#[test]
fn plaintext_bodies_match_json_text() {
    for v in vectors() {
        let frame = decode_one(&v.wire);
        let mut plain = frame.body.clone();
        if frame.header.cipher {
            let key = SessionKey::from_bytes(&v.hex("key_hex").try_into().unwrap());
            plain = key.open(&frame.header.to_bytes(), &plain).unwrap();
        }
        if frame.header.compress {
            assert_eq!(plain.len() as u64, v.num("compressed_len"), "{}", v.name);
            plain = inflate(&plain, 8 << 20).unwrap();
        }
        assert_eq!(&plain[..], v.json_text(), "{}", v.name);
        if !plain.is_empty() {
            let parsed: Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(parsed, v.fields["json"], "{}", v.name);
        }
    }
}

#[test]
fn our_reply_bodies_are_the_php_bytes() {
    assert_eq!(
        &reply::heartbeat(1_700_000_000)[..],
        vector("reply_heartbeat").json_text()
    );
    assert_eq!(
        &reply::report_ack(3)[..],
        vector("reply_report_ack").json_text()
    );
    assert_eq!(
        &reply::report_ack(1)[..],
        vector("reply_ack_encrypted_legacy").json_text()
    );
    assert_eq!(
        &reply::error("malformed body: missing code")[..],
        vector("reply_error").json_text()
    );
    let subscribe = vector("subscribe_request");
    assert_eq!(
        &reply::success_raw(subscribe.json_text())[..],
        vector("reply_subscribe_ack").json_text()
    );
    let report = vector("report_request");
    assert_eq!(
        &reply::push(report.json_text())[..],
        vector("reply_push").json_text()
    );
    assert_eq!(
        &reply::push(report.json_text())[..],
        vector("reply_push_encrypted").json_text()
    );

    let legacy = vector("key_reply_legacy");
    let data: KeyReplyData = Reply::parse(legacy.json_text()).unwrap().data_as().unwrap();
    assert_eq!(
        &reply::key_legacy(data.cipher_key.as_deref().unwrap())[..],
        legacy.json_text()
    );
    let x = vector("key_reply_x25519");
    let data: KeyReplyData = Reply::parse(x.json_text()).unwrap().data_as().unwrap();
    assert_eq!(
        &reply::key_pubkey(data.pubkey.as_deref().unwrap())[..],
        x.json_text()
    );
}

#[test]
fn server_codec_reads_php_requests() {
    for name in [
        "heartbeat_request",
        "subscribe_request",
        "report_request",
        "report_request_compressed",
        "empty_body_key_request",
        "key_request_x25519",
    ] {
        let v = vector(name);
        let mut buf = BytesMut::from(&v.wire[..]);
        let received = ServerCodec::new().decode(&mut buf).unwrap().unwrap();
        let body = received.body.unwrap();
        assert_eq!(&body[..], v.json_text(), "{name}");
        let request =
            Request::parse(received.header.msg_type, body, &TopicLimits::default()).unwrap();
        match (name, request) {
            ("subscribe_request", Request::Subscribe(s)) => assert_eq!(s.code, "demo"),
            ("report_request" | "report_request_compressed", Request::Report(r)) => {
                assert_eq!(r.code.as_deref(), Some("demo"));
                assert_eq!(&r.raw[..], report_json());
            }
            ("empty_body_key_request", Request::Key(k)) => assert!(k.is_legacy()),
            ("key_request_x25519", Request::Key(k)) => assert!(k.pubkey.is_some()),
            ("heartbeat_request", Request::Heartbeat) => {}
            (name, other) => panic!("{name}: {other:?}"),
        }
    }
}

fn report_json() -> Vec<u8> {
    vector("report_request").json_text().to_vec()
}

#[test]
fn compressed_report_is_plain_zlib() {
    let v = vector("report_request_compressed");
    // Same zlib implementation family and level as gzcompress: our output inflates to the
    // same text, and theirs inflates with our inflater (checked above). Byte equality of
    // deflate output is not part of the protocol.
    let ours = deflate(v.json_text());
    assert_eq!(&inflate(&ours, 1 << 20).unwrap()[..], v.json_text());
    assert_eq!(
        &v.hex("body_hex")[..2],
        &[0x78, 0x9c],
        "zlib header, default level"
    );
    assert_eq!(&ours[..2], &[0x78, 0x9c]);
}

#[test]
fn x25519_exchange_matches_libsodium_and_hkdf() {
    let req = vector("key_request_x25519");
    let rep = vector("key_reply_x25519");
    let client_sk: [u8; 32] = req.hex("client_sk_hex").try_into().unwrap();
    let server_sk: [u8; 32] = req.hex("server_sk_hex").try_into().unwrap();
    let client = ClientHandshake::from_secret_bytes(client_sk);
    assert_eq!(client.public_key_base64(), b64(&req.hex("client_pk_hex")));
    assert_eq!(&client.request_body()[..], req.json_text());

    let uuid = req.uuid();
    let (server_pub, server_key) = ServerHandshake::from_secret_bytes(server_sk)
        .respond(&client.public_key_base64(), &uuid)
        .unwrap();
    assert_eq!(server_pub, b64(&req.hex("server_pk_hex")));
    assert_eq!(&reply::key_pubkey(&server_pub)[..], rep.json_text());

    let shared: [u8; 32] = req.hex("shared_hex").try_into().unwrap();
    assert_eq!(
        derive_key_bytes(&shared, &uuid)[..],
        req.hex("session_key_hex")[..]
    );
    let client_key = client.finish(&server_pub, &uuid).unwrap();

    // Both derived keys open PHP's encrypted pushes, through the client codec.
    for key in [client_key, server_key] {
        for name in ["reply_push_encrypted", "reply_push_encrypted_compressed"] {
            let v = vector(name);
            let mut codec = ClientCodec::new();
            codec.set_session_key(Some(key.clone()));
            let mut buf = BytesMut::from(&v.wire[..]);
            let got = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(&got.body.unwrap()[..], v.json_text(), "{name}");
        }
    }
}

#[test]
fn sealing_with_the_vector_nonce_gives_php_bytes() {
    for name in [
        "reply_push_encrypted",
        "reply_push_encrypted_compressed",
        "reply_ack_encrypted_legacy",
    ] {
        let v = vector(name);
        let frame = decode_one(&v.wire);
        let key = SessionKey::from_bytes(&v.hex("key_hex").try_into().unwrap());
        let aad = frame.header.to_bytes();
        let plain = key.open(&aad, &frame.body).unwrap();
        let nonce: [u8; 12] = v.hex("nonce_hex").try_into().unwrap();
        assert_eq!(
            key.seal_with_nonce(&aad, &nonce, &plain),
            frame.body,
            "{name}"
        );
    }
}

#[test]
fn legacy_key_opens_the_legacy_ack() {
    let rep = vector("key_reply_legacy");
    let data: KeyReplyData = Reply::parse(rep.json_text()).unwrap().data_as().unwrap();
    let cipher_key = data.cipher_key.unwrap();
    let ack = vector("reply_ack_encrypted_legacy");
    assert_eq!(cipher_key.as_bytes(), &ack.hex("key_hex")[..]);
    let mut codec = ClientCodec::new();
    codec.set_session_key(Some(SessionKey::from_legacy(&cipher_key).unwrap()));
    let mut buf = BytesMut::from(&ack.wire[..]);
    let got = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&got.body.unwrap()[..], ack.json_text());
}

#[test]
fn all_vectors_back_to_back_split_at_every_offset() {
    let all = vectors();
    let wire: Vec<u8> = all.iter().flat_map(|v| v.wire.clone()).collect();
    for split in 0..wire.len() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut n = 0;
        for part in [&wire[..split], &wire[split..]] {
            buf.extend_from_slice(part);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                assert_eq!(u64::from(frame.header.length), all[n].num("length"));
                n += 1;
            }
        }
        assert_eq!(n, all.len(), "split at {split}");
    }
}
