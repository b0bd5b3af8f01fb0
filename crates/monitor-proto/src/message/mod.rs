//! Messages: the body layers applied to frames by each end of a connection, and the JSON
//! bodies of each message type.
//!
//! On the way in, a codec decodes a frame, then decrypts it (server → client frames with
//! `cipher = 1`: [`ClientCodec`] only) and inflates it (`compress = 1`), within
//! `max_inflated_len`. On the way out it compresses, then encrypts ([`ServerCodec`] only),
//! then frames.
//!
//! | end    | codec           | sends             | receives   | builder                |
//! |--------|-----------------|-------------------|------------|------------------------|
//! | client | [`ClientCodec`] | [`ClientMessage`] | [`Received`] | [`ClientCodecBuilder`] |
//! | server | [`ServerCodec`] | [`ServerMessage`], or [`SharedBody`] to a [`Recipient`] | [`Received`] | [`ServerCodecBuilder`] |
//!
//! [`request`] parses what a server receives and builds what a client sends; [`reply`]
//! does the same the other way; [`topic`] holds the subscription patterns.

pub mod reply;
pub mod request;
pub mod topic;

mod client;
mod layers;
mod server;

use std::fmt;

use bytes::Bytes;

pub use client::{ClientCodec, ClientCodecBuilder, ClientMessage, KeySlot};
pub use server::{Recipient, ServerCodec, ServerCodecBuilder, ServerMessage, SharedBody};

use crate::codec::BodyLen;
use crate::error::BodyError;
use crate::header::Header;

/// Default `max_inflated_len`: 8 MiB.
pub const DEFAULT_MAX_INFLATED_LEN: usize = 8 * 1024 * 1024;
/// Default `compress_threshold`: server bodies longer than this are compressed.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 81920;

/// The protocol's compression rule for what a server sends (spec §4): a body goes out
/// compressed when the request (or the subscription) asked for it, and always when it is
/// larger than `threshold` (`compress_threshold`, compared before compression). The
/// server codec, and a server that prepares one compressed body for many subscribers,
/// both decide by this one function.
///
/// ```
/// use monitor_proto::message::server_compresses;
/// assert!(!server_compresses(false, 100, 100));
/// assert!(server_compresses(false, 101, 100));
/// assert!(server_compresses(true, 1, 100));
/// ```
pub fn server_compresses(asked: bool, body_len: usize, threshold: usize) -> bool {
    asked || body_len > threshold
}

/// A frame received and passed through the body layers.
///
/// A body that fails its layers (bad zlib, failed decryption, no key) does not end the
/// stream: its [`BodyError`] is here, next to the header that says which reply to send.
/// `Debug` shows the body's length, not its bytes.
#[non_exhaustive]
pub struct Received {
    /// The header as received.
    pub header: Header,
    /// The plaintext body (JSON text, possibly empty), or why it could not be recovered.
    pub body: Result<Bytes, BodyError>,
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body: Result<BodyLen, &BodyError> = match &self.body {
            Ok(body) => Ok(BodyLen(body.len())),
            Err(e) => Err(e),
        };
        f.debug_struct("Received")
            .field("header", &self.header)
            .field("body", &body)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;
    use crate::error::{Error, Initiator};
    use crate::header::{MsgType, Uuid, HEADER_LEN};
    use crate::layer::compress::deflate;
    use crate::layer::crypto::{SessionKey, KEY_LEN};

    const UUID: Uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");

    fn pair() -> (ClientCodec, ServerCodec) {
        let key = SessionKey::from_bytes(&[3; KEY_LEN]);
        let client = ClientCodec::new();
        let mut server = ServerCodec::new();
        client.set_session_key(Some(key.clone()));
        server.set_session_key(Some(key));
        (client, server)
    }

    fn to_client(
        server: &mut ServerCodec,
        client: &mut ClientCodec,
        msg: ServerMessage,
    ) -> Received {
        let mut wire = BytesMut::new();
        server.encode(msg, &mut wire).unwrap();
        let got = client.decode(&mut wire).unwrap().unwrap();
        assert!(wire.is_empty());
        got
    }

    #[test]
    fn server_encrypts_and_compresses_pushes() {
        let (mut client, mut server) = pair();
        let json = br#"{"errCode":0,"msg":"success","data":{"code":"x"}}"#;
        for (compress, encrypt) in [(false, false), (true, false), (false, true), (true, true)] {
            let msg = ServerMessage::new(MsgType::Push, UUID, &json[..])
                .compress(compress)
                .encrypt(encrypt);
            let got = to_client(&mut server, &mut client, msg);
            assert_eq!(
                (got.header.compress, got.header.cipher),
                (compress, encrypt)
            );
            assert_eq!(&got.body.unwrap()[..], json);
        }
    }

    #[test]
    fn client_cipher_flag_only_asks() {
        let (mut client, mut server) = pair();
        let mut wire = BytesMut::new();
        client
            .encode(
                ClientMessage::new(MsgType::Subscribe, UUID, r#"{"code":"a"}"#)
                    .ask_encrypted_replies(true),
                &mut wire,
            )
            .unwrap();
        assert_eq!(
            &wire[45..],
            br#"{"code":"a"}"#,
            "client body stays plaintext"
        );
        let got = server.decode(&mut wire).unwrap().unwrap();
        assert!(got.header.cipher);
        assert_eq!(&got.body.unwrap()[..], br#"{"code":"a"}"#);
    }

    #[test]
    fn key_and_heartbeat_replies_are_never_encrypted() {
        let (mut client, mut server) = pair();
        for t in [MsgType::KeyReply, MsgType::HeartbeatReply] {
            let got = to_client(
                &mut server,
                &mut client,
                ServerMessage::new(t, UUID, "{}").encrypt(true),
            );
            assert!(!got.header.cipher);
        }
        // ... and so need no key.
        let mut keyless = ServerCodec::new();
        let mut wire = BytesMut::new();
        keyless
            .encode(
                ServerMessage::new(MsgType::HeartbeatReply, UUID, "{}").encrypt(true),
                &mut wire,
            )
            .unwrap();
        let err = keyless
            .encode(
                ServerMessage::new(MsgType::Push, UUID, "{}").encrypt(true),
                &mut wire,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Body(BodyError::NoSessionKey)));
        assert_eq!(err.fault(), crate::Fault::Local);
    }

    #[test]
    fn server_compresses_above_the_threshold() {
        let (mut client, _) = pair();
        let mut server = ServerCodec::builder().compress_threshold(100).new_codec();
        for (len, compressed) in [(100usize, false), (101, true)] {
            let json = format!("\"{}\"", "a".repeat(len - 2));
            let got = to_client(
                &mut server,
                &mut client,
                ServerMessage::new(MsgType::Push, UUID, json.clone()),
            );
            assert_eq!(got.header.compress, compressed, "len {len}");
            assert_eq!(&got.body.unwrap()[..], json.as_bytes());
        }
    }

    #[test]
    fn body_errors_do_not_end_the_stream() {
        let (_, mut server) = pair();
        let mut client = ClientCodec::new(); // no key
        let mut wire = BytesMut::new();
        server
            .encode(
                ServerMessage::new(MsgType::Push, UUID, "{}").encrypt(true),
                &mut wire,
            )
            .unwrap();
        server
            .encode(
                ServerMessage::new(MsgType::Push, UUID, "{\"n\":2}"),
                &mut wire,
            )
            .unwrap();
        let first = client.decode(&mut wire).unwrap().unwrap();
        assert!(matches!(first.body, Err(BodyError::NoSessionKey)));
        let second = client.decode(&mut wire).unwrap().unwrap();
        assert_eq!(&second.body.unwrap()[..], b"{\"n\":2}");
    }

    #[test]
    fn an_exhausted_key_fails_encoding_and_writes_nothing() {
        let (mut client, mut server) = pair();
        let twin = server.clone();
        server.session_key().unwrap().set_sealed(u64::MAX - 1);
        let mut wire = BytesMut::new();
        let push = || ServerMessage::new(MsgType::Push, UUID, "{}").encrypt(true);
        server.encode(push(), &mut wire).unwrap();
        let got = client.decode(&mut wire).unwrap().unwrap();
        assert_eq!(&got.body.unwrap()[..], b"{}");
        // The last nonce is spent, by this codec and by its clone alike.
        for codec in [&mut server, &mut twin.clone()] {
            let err = codec.encode(push(), &mut wire).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Body(BodyError::KeyExhausted { sealed: u64::MAX })
                ),
                "{err}"
            );
            assert!(!err.is_fatal());
            assert!(wire.is_empty(), "nothing written");
            let shared = SharedBody::new(json_of_len(200));
            let to = Recipient::new(UUID).compress(true).encrypt(true);
            let err = codec
                .encode_shared(MsgType::Push, &to, &shared, &mut wire)
                .unwrap_err();
            assert!(matches!(err, Error::Body(BodyError::KeyExhausted { .. })));
            assert!(wire.is_empty(), "nothing written");
        }
        // What needs no key still goes, and a new key works.
        server
            .encode(
                ServerMessage::new(MsgType::HeartbeatReply, UUID, "{}").encrypt(true),
                &mut wire,
            )
            .unwrap();
        server
            .encode(ServerMessage::new(MsgType::Push, UUID, "{}"), &mut wire)
            .unwrap();
        assert_eq!(
            client.decode(&mut wire).unwrap().unwrap().body.unwrap(),
            "{}"
        );
        assert_eq!(
            client.decode(&mut wire).unwrap().unwrap().body.unwrap(),
            "{}"
        );
        let new_key = SessionKey::from_bytes(&[4; KEY_LEN]);
        server.set_session_key(Some(new_key.clone()));
        client.set_session_key(Some(new_key));
        let got = to_client(&mut server, &mut client, push());
        assert!(got.header.cipher);
        assert_eq!(&got.body.unwrap()[..], b"{}");
    }

    #[test]
    fn cloned_codecs_never_share_a_nonce() {
        let (_, server) = pair();
        let mut codecs = [server.clone(), server.clone(), server];
        let mut nonces = std::collections::HashSet::new();
        for i in 0..300 {
            let mut wire = BytesMut::new();
            codecs[i % 3]
                .encode(
                    ServerMessage::new(MsgType::Push, UUID, "{}").encrypt(true),
                    &mut wire,
                )
                .unwrap();
            let nonce: [u8; 12] = wire[HEADER_LEN..HEADER_LEN + 12].try_into().unwrap();
            assert!(nonces.insert(nonce), "nonce {nonce:?} reused");
        }
    }

    fn json_of_len(len: usize) -> Vec<u8> {
        format!("\"{}\"", "a".repeat(len - 2)).into_bytes()
    }

    #[test]
    fn a_shared_body_is_compressed_once_and_used_as_is() {
        let (mut client, server) = pair();
        let json = Bytes::from_static(b"{\"a\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}");
        let shared = SharedBody::new(json.clone());
        let zlib = shared.compressed().clone();
        assert_eq!(zlib, deflate(&json));
        let mut wire = BytesMut::new();
        let to = Recipient::new(UUID).compress(true);
        server
            .encode_shared(MsgType::Push, &to, &shared, &mut wire)
            .unwrap();
        assert_eq!(&wire[45..], &zlib[..]);
        assert_eq!(shared.compressed().as_ptr(), zlib.as_ptr(), "made once");
        assert_eq!(
            client.decode(&mut wire).unwrap().unwrap().body.unwrap(),
            json
        );
    }

    #[test]
    fn a_shared_body_follows_each_recipient_and_the_rules() {
        let (mut client, server) = pair();
        let shared = SharedBody::new(json_of_len(300));
        for (compress, encrypt) in [(false, false), (true, false), (false, true), (true, true)] {
            let to = Recipient::new(UUID).compress(compress).encrypt(encrypt);
            let mut wire = BytesMut::new();
            server
                .encode_shared(MsgType::Push, &to, &shared, &mut wire)
                .unwrap();
            let got = client.decode(&mut wire).unwrap().unwrap();
            assert_eq!(
                (got.header.compress, got.header.cipher),
                (compress, encrypt)
            );
            assert_eq!(&got.body.unwrap()[..], &shared.json()[..]);
        }
        // Over the threshold it goes compressed to everyone; never encrypted as a
        // heartbeat reply.
        let small = ServerCodec::builder().compress_threshold(10).new_codec();
        let mut wire = BytesMut::new();
        let to = Recipient::new(UUID).encrypt(true);
        small
            .encode_shared(MsgType::HeartbeatReply, &to, &shared, &mut wire)
            .unwrap();
        let got = client.decode(&mut wire).unwrap().unwrap();
        assert!(got.header.compress && !got.header.cipher);
        // And a shared body is still a server's: a request type is refused.
        let err = server
            .encode_shared(MsgType::Report, &to, &shared, &mut wire)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::WrongDirection {
                msg_type: MsgType::Report,
                initiator: Initiator::Local,
                ..
            }
        ));
    }

    #[test]
    fn roles_refuse_the_wrong_direction() {
        let (mut client, mut server) = pair();
        let mut wire = BytesMut::new();
        server
            .encode(ServerMessage::new(MsgType::Push, UUID, "{}"), &mut wire)
            .unwrap();
        assert!(matches!(
            server.decode(&mut wire.clone()),
            Err(Error::WrongDirection { .. })
        ));
        wire.clear();
        client
            .encode(ClientMessage::new(MsgType::Report, UUID, "{}"), &mut wire)
            .unwrap();
        assert!(matches!(
            client.decode(&mut wire),
            Err(Error::WrongDirection { .. })
        ));
    }

    #[test]
    fn encoding_the_other_direction_is_a_local_error_and_writes_nothing() {
        let (mut client, mut server) = pair();
        let mut wire = BytesMut::new();
        let err = client
            .encode(ClientMessage::new(MsgType::Push, UUID, "{}"), &mut wire)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::WrongDirection {
                msg_type: MsgType::Push,
                expected: crate::header::Direction::ClientToServer,
                initiator: Initiator::Local,
            }
        ));
        assert_eq!(err.fault(), crate::Fault::Local);
        assert!(!err.is_fatal());
        let err = server
            .encode(ServerMessage::new(MsgType::Report, UUID, "{}"), &mut wire)
            .unwrap_err();
        assert_eq!(err.fault(), crate::Fault::Local);
        assert!(wire.is_empty(), "nothing written");
    }

    #[test]
    fn a_body_over_the_limit_is_the_encoders_fault() {
        let mut server = ServerCodec::builder().max_frame_len(100).new_codec();
        let mut wire = BytesMut::new();
        let err = server
            .encode(
                ServerMessage::new(MsgType::Push, UUID, vec![b' '; 56]),
                &mut wire,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Error::FrameTooLong {
                length: 101,
                max: 100,
                initiator: Initiator::Local
            }
        ));
        assert_eq!(err.fault(), crate::Fault::Local);
        assert!(wire.is_empty());
    }

    #[test]
    fn live_limits_apply_to_what_follows() {
        let mut server = ServerCodec::new();
        server.set_max_frame_len(100);
        server.set_max_inflated_len(10);
        server.set_compress_threshold(5);
        assert_eq!(
            (
                server.max_frame_len(),
                server.max_inflated_len(),
                server.compress_threshold()
            ),
            (100, 10, 5)
        );
        let mut client = ClientCodec::new();
        let mut wire = BytesMut::new();
        client
            .encode(
                ClientMessage::new(MsgType::Report, UUID, vec![b' '; 11]).compress(true),
                &mut wire,
            )
            .unwrap();
        let got = server.decode(&mut wire).unwrap().unwrap();
        assert!(matches!(
            got.body,
            Err(BodyError::InflatedTooLarge { max: 10 })
        ));
    }

    #[test]
    fn debug_shows_no_body_and_no_key() {
        let (client, server) = pair();
        let secret = "s3cret-body";
        let shown = [
            format!("{:?}", ClientMessage::new(MsgType::Report, UUID, secret)),
            format!("{:?}", ServerMessage::new(MsgType::Push, UUID, secret)),
            format!("{:?}", SharedBody::new(secret)),
            format!(
                "{:?}",
                Received {
                    header: crate::Header::new(MsgType::Push, UUID),
                    body: Ok(Bytes::from_static(secret.as_bytes())),
                }
            ),
            format!("{client:?}"),
            format!("{server:?}"),
        ];
        for text in shown {
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains("[3, 3"), "{text}");
        }
    }
}
