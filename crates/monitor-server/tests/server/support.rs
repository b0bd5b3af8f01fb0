//! A server per test (monitor-test-support's) and a raw protocol client built on
//! monitor-proto's codec.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use monitor_proto::layer::kex::ClientHandshake;
use monitor_proto::message::reply::{KeyReplyData, Reply, ReportAckData};
use monitor_proto::{ClientCodec, ClientMessage, Header, MsgType, Received, Uuid};
use monitor_test_support::pki::localhost;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

// What every crate's tests share: the in-process server, and waiting within a deadline.
pub use monitor_test_support::{eventually, eventually_async, start, TestServer, WAIT};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Client {
    pub framed: Framed<Box<dyn Io>, ClientCodec>,
    pub uuid: Uuid,
}

pub fn uuid(tag: &str) -> Uuid {
    let mut u = [b'0'; 33];
    let n = tag.len().min(33);
    u[33 - n..].copy_from_slice(&tag.as_bytes()[..n]);
    Uuid(u)
}

impl Client {
    pub async fn connect(addr: SocketAddr, tag: &str) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client::over(Box::new(stream), tag)
    }

    /// A client over TLS; the handshake's error if it fails. Also returns the server's
    /// certificate (DER), as the client received it.
    pub async fn connect_tls(
        addr: SocketAddr,
        connector: &tokio_rustls::TlsConnector,
        tag: &str,
    ) -> std::io::Result<(Client, Vec<u8>)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let tls = tokio::time::timeout(WAIT, connector.connect(localhost(), stream))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        Ok((Client::over(Box::new(tls), tag), leaf))
    }

    pub async fn connect_unix(path: &Path, tag: &str) -> Client {
        let stream = tokio::net::UnixStream::connect(path).await.unwrap();
        Client::over(Box::new(stream), tag)
    }

    fn over(io: Box<dyn Io>, tag: &str) -> Client {
        // Pushes may exceed the server's request limit by the envelope; give room.
        let codec = ClientCodec::builder().max_frame_len(64 << 20).new_codec();
        Client {
            framed: Framed::new(io, codec),
            uuid: uuid(tag),
        }
    }

    pub async fn send(
        &mut self,
        msg_type: MsgType,
        body: impl Into<Bytes>,
        compress: bool,
        cipher: bool,
    ) {
        let out = ClientMessage::new(msg_type, self.uuid, body)
            .compress(compress)
            .ask_encrypted_replies(cipher);
        self.framed.send(out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.unwrap();
        self.framed.get_mut().flush().await.unwrap();
    }

    /// The next frame, within [`WAIT`].
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.framed.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("a valid frame")
    }

    /// The next frame, which must be of `msg_type`, with its body parsed as a reply.
    pub async fn reply(&mut self, msg_type: MsgType) -> (Header, Reply) {
        let r = self.recv().await;
        assert_eq!(
            r.header.msg_type, msg_type,
            "unexpected frame {:?}",
            r.header
        );
        assert_eq!(
            r.header.uuid, self.uuid,
            "replies carry the recipient's uuid"
        );
        let body = r.body.expect("body decodes");
        (r.header, Reply::parse(&body).unwrap())
    }

    /// Whether anything arrives within `within`.
    pub async fn nothing_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.framed.next())
            .await
            .is_err()
    }

    /// Asserts the server closes the connection (EOF or reset) within [`WAIT`].
    pub async fn expect_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) => panic!("connection still open after {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(frame))) => {
                    // Replies sent before the close are allowed; keep reading.
                    let _ = frame;
                }
            }
        }
    }

    pub async fn heartbeat(&mut self) -> u64 {
        self.send(MsgType::Heartbeat, Bytes::new(), false, false)
            .await;
        let (h, r) = self.reply(MsgType::HeartbeatReply).await;
        assert!(!h.cipher && r.is_success());
        r.data_as::<monitor_proto::message::reply::HeartbeatData>()
            .unwrap()
            .heartbeat
    }

    /// Subscribes and returns the acknowledgement.
    pub async fn subscribe_with(
        &mut self,
        body: &str,
        compress: bool,
        cipher: bool,
    ) -> (Header, Reply) {
        self.send(MsgType::Subscribe, body.to_owned(), compress, cipher)
            .await;
        self.reply(MsgType::Push).await
    }

    pub async fn subscribe(&mut self, code: &str, topics: &[&str]) {
        let body = monitor_proto::message::request::Subscribe::body(code, topics);
        let (_, ack) = self
            .subscribe_with(std::str::from_utf8(&body).unwrap(), false, false)
            .await;
        assert!(ack.is_success(), "subscribe refused: {}", ack.msg);
        assert_eq!(
            ack.data.get().as_bytes(),
            &body[..],
            "the ack's data is the body as sent"
        );
    }

    /// Reports and returns the ack's `delivered`.
    pub async fn report(&mut self, json: &str) -> u64 {
        self.send(MsgType::Report, json.to_owned(), false, false)
            .await;
        let (_, ack) = self.reply(MsgType::ReportAck).await;
        assert!(ack.is_success(), "report refused: {}", ack.msg);
        ack.data_as::<ReportAckData>().unwrap().delivered
    }

    /// The next push's report (the envelope's `data`, as raw JSON text).
    pub async fn push(&mut self) -> String {
        let (_, reply) = self.reply(MsgType::Push).await;
        assert!(reply.is_success());
        reply.data.get().to_owned()
    }

    /// X25519 key exchange; installs the session key in the codec.
    pub async fn key_exchange(&mut self) {
        let hs = ClientHandshake::new();
        self.send(MsgType::KeyRequest, hs.request_body(), false, false)
            .await;
        let (h, reply) = self.reply(MsgType::KeyReply).await;
        assert!(!h.cipher, "key replies are never encrypted");
        assert!(reply.is_success(), "{}", reply.msg);
        let data: KeyReplyData = reply.data_as().unwrap();
        let key = hs.finish(&data.pubkey.unwrap(), &self.uuid).unwrap();
        self.framed.codec_mut().set_session_key(Some(key));
    }
}
