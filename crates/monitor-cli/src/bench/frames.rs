//! Frames as the bench writes and reads them: a report encoded under the run's layers, and
//! the frames of a read buffer walked in place.

use bytes::{Buf, BytesMut};
use monitor_client::config::DEFAULT_MAX_FRAME_LEN;
use monitor_proto::header::Direction;
use monitor_proto::layer::compress::deflate;
use monitor_proto::{ClientCodec, FrameCodec, Header, MsgType, Uuid};
use tokio_util::codec::Decoder;

use crate::error::Result;

pub(super) const READ_CHUNK: usize = 64 * 1024;
pub(super) const READ_MIN_FREE: usize = 16 * 1024;

pub(super) fn encode_frame(
    dst: &mut BytesMut,
    msg_type: MsgType,
    uuid: Uuid,
    body: &[u8],
) -> Result<()> {
    FrameCodec::builder()
        .max_frame_len(DEFAULT_MAX_FRAME_LEN)
        .new_codec()
        .encode_parts(&Header::new(msg_type, uuid), body, dst)?;
    Ok(())
}

/// Appends one report frame: `payload` under `header`, deflated first if the header has
/// the compress flag. A plain report is written as it is, at no extra cost.
#[inline]
pub(super) fn encode_report(
    frames: &FrameCodec,
    header: &Header,
    payload: &[u8],
    dst: &mut BytesMut,
) -> std::result::Result<(), monitor_proto::Error> {
    if header.compress {
        frames.encode_parts(header, &deflate(payload), dst)
    } else {
        frames.encode_parts(header, payload, dst)
    }
}

/// Hands each complete frame in `buf` to `on_frame`, with its plaintext body (`None` if
/// its body layers failed), and leaves a partial frame for the next read.
///
/// Plain frames (every push of a run whose reports are under the server's compress
/// threshold) are judged and read where they lie ([`FrameCodec::peek`]), with no
/// per-frame `Bytes`: a load generator that spends more per message than the server it
/// measures takes the CPU the server needs (this machine's 2 cores are shared), and
/// under-reports it. Compressed or encrypted frames go through the codec's body layers.
///
/// # Errors
/// A header that breaks the protocol's rules, which ends the stream.
pub(super) fn for_each_frame(
    buf: &mut BytesMut,
    codec: &mut ClientCodec,
    mut on_frame: impl FnMut(MsgType, Option<&[u8]>),
) -> std::result::Result<(), monitor_proto::Error> {
    // `peek` judges a frame by the frame limits alone and keeps no state between frames:
    // a frame codec with the client codec's limits (a few words, made once per read)
    // leaves `codec` free for the frames that need its body layers.
    let mut frames = FrameCodec::builder()
        .max_frame_len(codec.max_frame_len())
        .accept(Direction::ServerToClient)
        .new_codec();
    while let Some(frame) = frames.peek(buf)? {
        let len = frame.len();
        if frame.header.cipher || frame.header.compress {
            let mut whole = buf.split_to(len);
            if let Some(received) = codec.decode(&mut whole)? {
                on_frame(received.header.msg_type, received.body.as_deref().ok());
            }
        } else {
            on_frame(frame.header.msg_type, Some(frame.body));
            buf.advance(len);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bench::config::BenchConfig;
    use crate::bench::payload::write_payload;
    use monitor_client::TlsSettings;
    use monitor_proto::HEADER_LEN;

    fn client_codec() -> ClientCodec {
        ClientCodec::builder()
            .max_frame_len(DEFAULT_MAX_FRAME_LEN)
            .max_inflated_len(DEFAULT_MAX_FRAME_LEN as usize)
            .new_codec()
    }

    #[test]
    fn frames_are_walked_in_place_and_through_the_layers() {
        use bytes::Bytes;
        use monitor_proto::{ServerCodec, ServerMessage};
        use tokio_util::codec::Encoder;
        let mut server = ServerCodec::new();
        let uuid = Uuid([b's'; 33]);
        let mut wire = Vec::new();
        for (msg_type, json, compress) in [
            (MsgType::Push, &br#"{"a":1}"#[..], false),
            (MsgType::ReportAck, br#"{"b":2}"#, false),
            (MsgType::Push, br#"{"c":3}"#, true),
            (MsgType::Push, br#"{"d":4}"#, false),
        ] {
            let out =
                ServerMessage::new(msg_type, uuid, Bytes::copy_from_slice(json)).compress(compress);
            let mut frame = BytesMut::new();
            server.encode(out, &mut frame).unwrap();
            wire.extend_from_slice(&frame);
        }
        let expected = [
            (MsgType::Push, r#"{"a":1}"#),
            (MsgType::ReportAck, r#"{"b":2}"#),
            (MsgType::Push, r#"{"c":3}"#),
            (MsgType::Push, r#"{"d":4}"#),
        ]
        .map(|(t, b)| (t, b.to_owned()))
        .to_vec();
        // The stream arrives in two reads, split at every byte: inside headers, plain and
        // compressed bodies.
        for split in 0..=wire.len() {
            let mut codec = client_codec();
            let mut seen = Vec::new();
            let mut walk = |buf: &mut BytesMut| {
                for_each_frame(buf, &mut codec, |t, body| {
                    seen.push((t, String::from_utf8(body.unwrap().to_vec()).unwrap()))
                })
            };
            let mut buf = BytesMut::from(&wire[..split]);
            walk(&mut buf).unwrap();
            buf.extend_from_slice(&wire[split..]);
            walk(&mut buf).unwrap();
            assert!(buf.is_empty(), "split at {split}");
            assert_eq!(seen, expected, "split at {split}");
        }

        // A broken header (version, CRC) ends the stream.
        for corrupt in [0, 8] {
            let mut bad = BytesMut::new();
            server
                .encode(
                    ServerMessage::new(MsgType::Push, uuid, Bytes::new()),
                    &mut bad,
                )
                .unwrap();
            bad[corrupt] ^= 2;
            assert!(for_each_frame(&mut bad, &mut client_codec(), |_, _| {}).is_err());
        }
    }

    #[test]
    fn encrypted_pushes_are_read_through_the_session_key() {
        use monitor_proto::layer::crypto::{SessionKey, KEY_LEN};
        use monitor_proto::{ServerCodec, ServerMessage};
        use tokio_util::codec::Encoder;
        let key = SessionKey::from_bytes(&[7; KEY_LEN]);
        let mut server = ServerCodec::new();
        server.set_session_key(Some(key.clone()));
        let uuid = Uuid([b's'; 33]);
        let mut buf = BytesMut::new();
        for (json, compress) in [(&br#"{"a":1}"#[..], false), (br#"{"b":2}"#, true)] {
            let push = ServerMessage::new(MsgType::Push, uuid, bytes::Bytes::copy_from_slice(json))
                .compress(compress)
                .encrypt(true);
            server.encode(push, &mut buf).unwrap();
        }
        let codec = client_codec();
        let mut seen = Vec::new();
        // Without the key the bodies are unreadable (None), with it they are the JSON.
        for key in [None, Some(key)] {
            codec.set_session_key(key);
            let mut wire = buf.clone();
            for_each_frame(&mut wire, &mut codec.clone(), |t, body| {
                seen.push((t, body.map(|b| String::from_utf8(b.to_vec()).unwrap())))
            })
            .unwrap();
        }
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            seen,
            [
                (MsgType::Push, None),
                (MsgType::Push, None),
                (MsgType::Push, some(r#"{"a":1}"#)),
                (MsgType::Push, some(r#"{"b":2}"#)),
            ]
        );
    }

    #[test]
    fn reports_carry_the_runs_layers() {
        use monitor_proto::ServerCodec;
        let frames = FrameCodec::new();
        let uuid = Uuid([b'p'; 33]);
        let payload = {
            let mut p = Vec::new();
            write_payload(&mut p, 300, 7, 9);
            p
        };
        for (compress, encrypt) in [(false, false), (true, false), (false, true), (true, true)] {
            let header = Header::new(MsgType::Report, uuid)
                .with_compress(compress)
                .with_cipher(encrypt);
            let mut wire = BytesMut::new();
            encode_report(&frames, &header, &payload, &mut wire).unwrap();
            assert_eq!(
                wire.len() < HEADER_LEN + payload.len(),
                compress,
                "a padded report shrinks when compressed"
            );
            let got = ServerCodec::new().decode(&mut wire).unwrap().unwrap();
            assert_eq!(
                (got.header.compress, got.header.cipher),
                (compress, encrypt)
            );
            assert_eq!(
                &got.body.unwrap()[..],
                &payload[..],
                "the report itself is plaintext"
            );
        }
        // The run's settings reach every connection's client config.
        let mut cfg = BenchConfig::new("tls://localhost:1".parse().unwrap());
        assert_eq!(cfg.layers().as_deref(), Some("tls"));
        cfg.server = "127.0.0.1:1".parse().unwrap();
        assert_eq!(cfg.layers(), None);
        cfg.encrypt = true;
        cfg.compress = true;
        cfg.token = Some(monitor_client::Token::new("t"));
        cfg.tls = Some(TlsSettings::new().ca_file("/ca.pem"));
        assert_eq!(cfg.layers().as_deref(), Some("tls+encrypt+compress"));
        let client = cfg.client_config();
        assert!(client.encrypt && client.compress);
        assert_eq!(client.token, cfg.token);
        assert_eq!(client.tls, cfg.tls);
        assert_eq!(client.connect_timeout, cfg.connect_timeout);
        cfg.validate().unwrap();
        cfg.tls = Some(TlsSettings::new());
        assert!(matches!(
            cfg.validate().unwrap_err().config_field(),
            Some(("tls.ca_files", _))
        ));
    }
}
