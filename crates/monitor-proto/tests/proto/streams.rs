//! The codecs over a real `tokio::io::duplex` stream: a client codec split into halves
//! that share one session key, and a stream that ends in the middle of a frame.

use futures::{SinkExt, StreamExt};
use monitor_proto::layer::kex::{ClientHandshake, ServerHandshake};
use monitor_proto::message::reply::{self, KeyReplyData, Reply};
use monitor_proto::message::request::KeyRequest;
use monitor_proto::{
    ClientCodec, ClientMessage, Error, MsgType, Request, ServerCodec, ServerMessage, Uuid,
};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, FramedWrite};

const UUID: Uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");

/// The server's side of one key exchange and one encrypted push, over `io`.
async fn serve_key_then_push(io: tokio::io::DuplexStream) {
    let mut server = ServerCodec::builder().new_framed(io);
    let received = server.next().await.unwrap().unwrap();
    let limits = Default::default();
    let Ok(Request::Key(request)) =
        Request::parse(received.header.msg_type, received.body.unwrap(), &limits)
    else {
        panic!("a key request");
    };
    let KeyRequest { pubkey, .. } = request;
    let (server_pubkey, key) = ServerHandshake::new()
        .respond(&pubkey.unwrap(), &received.header.uuid)
        .unwrap();
    server
        .send(ServerMessage::new(
            MsgType::KeyReply,
            UUID,
            reply::key_pubkey(&server_pubkey),
        ))
        .await
        .unwrap();
    server.codec_mut().set_session_key(Some(key));
    let push = reply::push(br#"{"code":"secret","n":1}"#);
    server
        .send(ServerMessage::new(MsgType::Push, UUID, push).encrypt(true))
        .await
        .unwrap();
}

/// Both halves of `Framed::split()` share the codec's key slot: a key installed through a
/// handle taken before the split decrypts what the stream half reads.
#[tokio::test]
async fn a_key_set_after_framed_split_is_seen_by_both_halves() {
    let (client_io, server_io) = tokio::io::duplex(4096);
    let server = tokio::spawn(serve_key_then_push(server_io));

    let framed = ClientCodec::builder().new_framed(client_io);
    let slot = framed.codec().key_slot().clone();
    let (mut sink, mut stream) = framed.split();
    assert!(slot.get().is_none());

    let handshake = ClientHandshake::new();
    sink.send(ClientMessage::new(
        MsgType::KeyRequest,
        UUID,
        handshake.request_body(),
    ))
    .await
    .unwrap();
    let key_reply = stream.next().await.unwrap().unwrap();
    assert_eq!(key_reply.header.msg_type, MsgType::KeyReply);
    let data: KeyReplyData = Reply::parse(&key_reply.body.unwrap())
        .unwrap()
        .data_as()
        .unwrap();
    let key = handshake.finish(&data.pubkey.unwrap(), &UUID).unwrap();
    slot.set(Some(key));

    let push = stream.next().await.unwrap().unwrap();
    assert!(push.header.cipher);
    assert_eq!(
        push.body.unwrap(),
        reply::push(br#"{"code":"secret","n":1}"#)
    );
    server.await.unwrap();
}

/// A codec cloned into a `FramedRead` and a `FramedWrite`: a key set through the writer's
/// codec is the reader's too, and forgetting it there forgets it for both.
#[tokio::test]
async fn a_key_set_through_one_clone_is_seen_by_the_other() {
    let (client_io, server_io) = tokio::io::duplex(4096);
    let server = tokio::spawn(serve_key_then_push(server_io));

    let (read_half, write_half) = tokio::io::split(client_io);
    let codec = ClientCodec::new();
    let mut reader = FramedRead::new(read_half, codec.clone());
    let mut writer = FramedWrite::new(write_half, codec);

    let handshake = ClientHandshake::new();
    writer
        .send(ClientMessage::new(
            MsgType::KeyRequest,
            UUID,
            handshake.request_body(),
        ))
        .await
        .unwrap();
    let key_reply = reader.next().await.unwrap().unwrap();
    let data: KeyReplyData = Reply::parse(&key_reply.body.unwrap())
        .unwrap()
        .data_as()
        .unwrap();
    let key = handshake.finish(&data.pubkey.unwrap(), &UUID).unwrap();
    writer.encoder().set_session_key(Some(key));
    assert!(reader.decoder().key_slot().get().is_some());

    let push = reader.next().await.unwrap().unwrap();
    assert!(push.header.cipher);
    assert!(push.body.is_ok());
    server.await.unwrap();

    writer.encoder().set_session_key(None);
    assert!(reader.decoder().key_slot().get().is_none());
}

/// Separate codecs do not share a key: a second connection's codec starts without one.
#[test]
fn each_new_codec_has_its_own_slot() {
    let first = ClientCodec::new();
    first.set_session_key(Some(monitor_proto::SessionKey::from_bytes(&[1; 32])));
    assert!(ClientCodec::new().key_slot().get().is_none());
    assert!(ClientCodec::builder()
        .new_codec()
        .key_slot()
        .get()
        .is_none());
    assert_eq!(format!("{:?}", first.key_slot()), "KeySlot { set: true }");
}

/// A peer that closes in the middle of a frame ends the stream with `ClosedMidFrame`,
/// saying how far the frame got.
#[tokio::test]
async fn a_peer_closing_mid_frame_is_its_own_error() {
    let mut wire = bytes::BytesMut::new();
    let report = ClientMessage::new(MsgType::Report, UUID, r#"{"code":"cut"}"#);
    tokio_util::codec::Encoder::encode(&mut ClientCodec::new(), report, &mut wire).unwrap();
    for cut in [5, 30] {
        let (mut client_io, server_io) = tokio::io::duplex(4096);
        client_io.write_all(&wire[..cut]).await.unwrap();
        drop(client_io);
        let mut server = ServerCodec::builder().new_framed(server_io);
        let err = server.next().await.unwrap().unwrap_err();
        let length = (cut >= 12).then_some(wire.len() as u32);
        assert!(
            matches!(err, Error::ClosedMidFrame { received, length: l } if received == cut && l == length),
            "{err:?}"
        );
        assert_eq!(err.fault(), monitor_proto::Fault::Peer);
    }
    // A clean close is the end of the stream, not an error.
    let (client_io, server_io) = tokio::io::duplex(64);
    drop(client_io);
    assert!(ServerCodec::builder()
        .new_framed(server_io)
        .next()
        .await
        .is_none());
}
