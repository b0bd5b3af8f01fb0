//! Messages: the body layers applied to frames according to this end's role, and the JSON
//! bodies of each message type.
//!
//! On the way in, a [`MessageCodec`] decodes a frame, then decrypts it (server → client
//! frames with `cipher = 1` only) and inflates it (`compress = 1`). On the way out it
//! compresses, then encrypts (server role only), then frames.

pub mod reply;
pub mod request;
pub mod topic;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{Builder, Frame, FrameCodec};
use crate::error::Error;
use crate::header::{Direction, Header, MsgType, Uuid};
use crate::layer::compress::{deflate, inflate};
use crate::layer::crypto::{SessionKey, OVERHEAD};

/// The protocol's compression rule for what a server sends (spec §4): a body goes out
/// compressed when the request (or the subscription) asked for it, and always when it is
/// larger than `threshold` (`compress_threshold`, compared before compression). The codec,
/// and a server that prepares one compressed body for many subscribers, both decide by
/// this one function.
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

/// Which end of a connection a [`MessageCodec`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends requests, receives replies and pushes.
    Client,
    /// Receives requests, sends replies and pushes.
    Server,
}

impl Role {
    /// The direction of the frames this role receives.
    pub const fn accepts(self) -> Direction {
        match self {
            Role::Client => Direction::ServerToClient,
            Role::Server => Direction::ClientToServer,
        }
    }
}

/// A frame received and passed through the body layers.
///
/// A body that fails its layers (bad zlib, failed decryption, no key) does not end the
/// stream: the error is here, next to the header that says which reply to send.
#[derive(Debug)]
pub struct Received {
    /// The header as received.
    pub header: Header,
    /// The plaintext body (JSON text, possibly empty), or why it could not be recovered.
    pub body: Result<Bytes, Error>,
}

/// A message to send: a plaintext JSON body and what should happen to it.
///
/// Build with [`Outgoing::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message type.
    pub msg_type: MsgType,
    /// The uuid to carry (a client's own; a server sends the recipient's).
    pub uuid: Uuid,
    /// The plaintext JSON body.
    pub json: Bytes,
    /// Compress the body (a server also compresses every body over its threshold).
    pub compress: bool,
    /// Server role: encrypt the body with the session key (ignored for key and heartbeat
    /// replies, which are never encrypted). Client role: set `cipher = 1` to ask for
    /// encrypted replies and pushes; the body itself stays plaintext.
    pub encrypt: bool,
    /// The zlib stream of `json`, if the caller already made it (a server makes a report's
    /// compressed push once and shares it between subscribers).
    pub compressed: Option<Bytes>,
}

impl Outgoing {
    /// A plaintext, uncompressed message.
    pub fn new(msg_type: MsgType, uuid: Uuid, json: impl Into<Bytes>) -> Outgoing {
        Outgoing {
            msg_type,
            uuid,
            json: json.into(),
            compress: false,
            encrypt: false,
            compressed: None,
        }
    }

    /// Asks for compression.
    #[must_use]
    pub fn with_compress(mut self, compress: bool) -> Outgoing {
        self.compress = compress;
        self
    }

    /// Asks for encryption (see [`Outgoing::encrypt`]).
    #[must_use]
    pub fn with_encrypt(mut self, encrypt: bool) -> Outgoing {
        self.encrypt = encrypt;
        self
    }

    /// Supplies the already compressed body, used if the codec decides to compress.
    #[must_use]
    pub fn with_compressed(mut self, zlib: Bytes) -> Outgoing {
        self.compressed = Some(zlib);
        self
    }
}

/// Frames plus body layers, for one end of one connection: holds its role, its limits and
/// the connection's session key.
///
/// A clone shares the session key, and with it the key's nonce counter (see
/// [`SessionKey`]): bodies encrypted by a codec and its clones never share a nonce.
///
/// # Example
/// ```
/// use bytes::BytesMut;
/// use monitor_proto::{MessageCodec, MsgType, Outgoing, Role, Uuid};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
/// let mut client = MessageCodec::new(Role::Client);
/// let mut server = MessageCodec::new(Role::Server);
/// let mut wire = BytesMut::new();
/// client
///     .encode(Outgoing::new(MsgType::Report, uuid, r#"{"code":"demo"}"#).with_compress(true), &mut wire)
///     .unwrap();
/// let received = server.decode(&mut wire).unwrap().unwrap();
/// assert!(received.header.compress);
/// assert_eq!(&received.body.unwrap()[..], br#"{"code":"demo"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct MessageCodec {
    frames: FrameCodec,
    role: Role,
    max_inflated_len: usize,
    compress_threshold: usize,
    key: Option<SessionKey>,
}

impl MessageCodec {
    /// A codec for `role` with the default limits.
    pub fn new(role: Role) -> MessageCodec {
        Builder::new().message_codec(role)
    }

    pub(crate) fn from_parts(frames: FrameCodec, role: Role, builder: &Builder) -> MessageCodec {
        MessageCodec {
            frames,
            role,
            max_inflated_len: builder.max_inflated_len,
            compress_threshold: builder.compress_threshold,
            key: None,
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configured `max_inflated_len`.
    pub fn max_inflated_len(&self) -> usize {
        self.max_inflated_len
    }

    /// The configured `compress_threshold`.
    pub fn compress_threshold(&self) -> usize {
        self.compress_threshold
    }

    /// The underlying frame codec.
    pub fn frames(&self) -> &FrameCodec {
        &self.frames
    }

    /// Changes the limits on a live codec (e.g. on a configuration reload).
    pub fn set_limits(
        &mut self,
        max_frame_len: u32,
        max_inflated_len: usize,
        compress_threshold: usize,
    ) {
        self.frames.set_max_frame_len(max_frame_len);
        self.max_inflated_len = max_inflated_len;
        self.compress_threshold = compress_threshold;
    }

    /// The connection's session key, if a key exchange has happened.
    pub fn session_key(&self) -> Option<&SessionKey> {
        self.key.as_ref()
    }

    /// Installs (or, with `None`, forgets) the session key. A new key request replaces
    /// the connection's key. The new key counts its nonces from 0, which is safe because
    /// its bytes are new.
    pub fn set_session_key(&mut self, key: Option<SessionKey>) {
        self.key = key;
    }

    /// Applies the inbound body layers to a decoded frame.
    pub fn open(&self, frame: Frame) -> Received {
        let body = self.open_body(&frame);
        Received {
            header: frame.header,
            body,
        }
    }

    fn open_body(&self, frame: &Frame) -> Result<Bytes, Error> {
        let mut body = frame.body.clone();
        // A client's cipher flag asks for encrypted replies; its own body is plaintext.
        if frame.header.cipher && self.role == Role::Client {
            let key = self.key.as_ref().ok_or(Error::NoSessionKey)?;
            body = key.open(&frame.header.to_bytes(), &body)?;
        }
        if frame.header.compress {
            body = inflate(&body, self.max_inflated_len)?;
        }
        Ok(body)
    }

    /// Whether [`MessageCodec::encode_message`] will compress `msg`: when it asks to, and
    /// in the server role when its body is over the compress threshold. A caller holding
    /// a shared compressed body supplies it ([`Outgoing::with_compressed`]) only then.
    pub fn will_compress(&self, msg: &Outgoing) -> bool {
        self.compresses(msg.compress, msg.json.len())
    }

    /// Whether a body of `json_len` bytes is compressed when the sender asks for
    /// compression (`asked`) or not: when asked, and in the server role when the body is
    /// over the compress threshold.
    pub fn compresses(&self, asked: bool, json_len: usize) -> bool {
        match self.role {
            Role::Server => server_compresses(asked, json_len, self.compress_threshold),
            Role::Client => asked,
        }
    }

    /// Writes `msg` as one frame, applying compression and encryption by the rules of
    /// this role.
    ///
    /// # Errors
    /// [`Error::NoSessionKey`] if encryption is due and there is no key;
    /// [`Error::KeyExhausted`] if it is due and the key has sealed all it may (a new key
    /// request must replace it); [`Error::FrameTooLong`] if the result exceeds
    /// `max_frame_len`. Nothing is written on error.
    pub fn encode_message(&self, msg: Outgoing, dst: &mut BytesMut) -> Result<(), Error> {
        let wants = Wants {
            compress: msg.compress,
            encrypt: msg.encrypt,
        };
        self.encode_body(
            msg.msg_type,
            msg.uuid,
            wants,
            &msg.json,
            msg.compressed.as_deref(),
            dst,
        )
    }

    /// [`MessageCodec::encode_message`] from borrowed parts: nothing is cloned, which
    /// matters when one shared body is encoded for many recipients.
    ///
    /// `compressed` is the zlib stream of `json` if the caller has it; it is used only if
    /// the codec compresses (see [`MessageCodec::compresses`]), and made here otherwise.
    ///
    /// # Errors
    /// As [`MessageCodec::encode_message`].
    pub fn encode_body(
        &self,
        msg_type: MsgType,
        uuid: Uuid,
        wants: Wants,
        json: &[u8],
        compressed: Option<&[u8]>,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let compress = self.compresses(wants.compress, json.len());
        let (encrypt, cipher_flag) = match self.role {
            Role::Server => {
                let encrypt = wants.encrypt && !msg_type.never_encrypted();
                (encrypt, encrypt)
            }
            Role::Client => (false, wants.encrypt),
        };
        let key = match (encrypt, &self.key) {
            (true, None) => return Err(Error::NoSessionKey),
            (true, Some(key)) => Some(key),
            (false, _) => None,
        };
        let deflated;
        let body: &[u8] = match (compress, compressed) {
            (false, _) => json,
            (true, Some(zlib)) => zlib,
            (true, None) => {
                deflated = deflate(json);
                &deflated
            }
        };
        let header = Header::new(msg_type, uuid)
            .with_compress(compress)
            .with_cipher(cipher_flag);
        match key {
            Some(key) => {
                self.frames.sized_header(&header, body.len() + OVERHEAD)?;
                key.seal_frame(&header, body, dst)
            }
            None => self.frames.encode_parts(&header, body, dst),
        }
    }
}

/// What the sender of a message asks for (see [`Outgoing::compress`] and
/// [`Outgoing::encrypt`]); the codec's role decides what that means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// Compress the body.
    pub compress: bool,
    /// Server: encrypt the body. Client: ask for encrypted replies.
    pub encrypt: bool,
}

impl Decoder for MessageCodec {
    type Item = Received;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Received>, Error> {
        Ok(self.frames.decode(src)?.map(|frame| self.open(frame)))
    }
}

impl Encoder<Outgoing> for MessageCodec {
    type Error = Error;

    fn encode(&mut self, msg: Outgoing, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_message(msg, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::HEADER_LEN;
    use crate::layer::crypto::KEY_LEN;

    const UUID: Uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");

    fn pair() -> (MessageCodec, MessageCodec) {
        let key = SessionKey::from_bytes(&[3; KEY_LEN]);
        let mut client = MessageCodec::new(Role::Client);
        let mut server = MessageCodec::new(Role::Server);
        client.set_session_key(Some(key.clone()));
        server.set_session_key(Some(key));
        (client, server)
    }

    fn through(from: &mut MessageCodec, to: &mut MessageCodec, msg: Outgoing) -> Received {
        let mut wire = BytesMut::new();
        from.encode(msg, &mut wire).unwrap();
        let got = to.decode(&mut wire).unwrap().unwrap();
        assert!(wire.is_empty());
        got
    }

    #[test]
    fn server_encrypts_and_compresses_pushes() {
        let (mut client, mut server) = pair();
        let json = br#"{"errCode":0,"msg":"success","data":{"code":"x"}}"#;
        for (compress, encrypt) in [(false, false), (true, false), (false, true), (true, true)] {
            let msg = Outgoing::new(MsgType::Push, UUID, &json[..])
                .with_compress(compress)
                .with_encrypt(encrypt);
            let got = through(&mut server, &mut client, msg);
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
                Outgoing::new(MsgType::Subscribe, UUID, r#"{"code":"a"}"#).with_encrypt(true),
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
            let got = through(
                &mut server,
                &mut client,
                Outgoing::new(t, UUID, "{}").with_encrypt(true),
            );
            assert!(!got.header.cipher);
        }
        // ... and so need no key.
        let mut keyless = MessageCodec::new(Role::Server);
        let mut wire = BytesMut::new();
        keyless
            .encode(
                Outgoing::new(MsgType::HeartbeatReply, UUID, "{}").with_encrypt(true),
                &mut wire,
            )
            .unwrap();
        let err = keyless
            .encode(
                Outgoing::new(MsgType::Push, UUID, "{}").with_encrypt(true),
                &mut wire,
            )
            .unwrap_err();
        assert!(matches!(err, Error::NoSessionKey));
    }

    #[test]
    fn server_compresses_above_the_threshold() {
        let (mut client, _) = pair();
        let server = Builder::new()
            .compress_threshold(100)
            .message_codec(Role::Server);
        let mut server = server;
        for (len, compressed) in [(100usize, false), (101, true)] {
            let json = format!("\"{}\"", "a".repeat(len - 2));
            let got = through(
                &mut server,
                &mut client,
                Outgoing::new(MsgType::Push, UUID, json.clone()),
            );
            assert_eq!(got.header.compress, compressed, "len {len}");
            assert_eq!(&got.body.unwrap()[..], json.as_bytes());
        }
    }

    #[test]
    fn body_errors_do_not_end_the_stream() {
        let (_, mut server) = pair();
        let mut client = MessageCodec::new(Role::Client); // no key
        let mut wire = BytesMut::new();
        server
            .encode(
                Outgoing::new(MsgType::Push, UUID, "{}").with_encrypt(true),
                &mut wire,
            )
            .unwrap();
        server
            .encode(Outgoing::new(MsgType::Push, UUID, "{\"n\":2}"), &mut wire)
            .unwrap();
        let first = client.decode(&mut wire).unwrap().unwrap();
        assert!(matches!(first.body, Err(Error::NoSessionKey)));
        let second = client.decode(&mut wire).unwrap().unwrap();
        assert_eq!(&second.body.unwrap()[..], b"{\"n\":2}");
    }

    #[test]
    fn an_exhausted_key_fails_encoding_and_writes_nothing() {
        let (mut client, mut server) = pair();
        let twin = server.clone();
        server.session_key().unwrap().set_sealed(u64::MAX - 1);
        let mut wire = BytesMut::new();
        let push = || Outgoing::new(MsgType::Push, UUID, "{}").with_encrypt(true);
        server.encode(push(), &mut wire).unwrap();
        let got = client.decode(&mut wire).unwrap().unwrap();
        assert_eq!(&got.body.unwrap()[..], b"{}");
        // The last nonce is spent, by this codec and by its clone alike.
        for codec in [&mut server, &mut twin.clone()] {
            let err = codec.encode(push(), &mut wire).unwrap_err();
            assert!(
                matches!(err, Error::KeyExhausted { sealed: u64::MAX }),
                "{err}"
            );
            assert!(!err.is_fatal());
            assert!(wire.is_empty(), "nothing written");
            let shared = json_of_len(200);
            let err = codec
                .encode_body(
                    MsgType::Push,
                    UUID,
                    Wants {
                        compress: true,
                        encrypt: true,
                    },
                    &shared,
                    None,
                    &mut wire,
                )
                .unwrap_err();
            assert!(matches!(err, Error::KeyExhausted { .. }));
            assert!(wire.is_empty(), "nothing written");
        }
        // What needs no key still goes, and a new key works.
        server
            .encode(
                Outgoing::new(MsgType::HeartbeatReply, UUID, "{}").with_encrypt(true),
                &mut wire,
            )
            .unwrap();
        server
            .encode(Outgoing::new(MsgType::Push, UUID, "{}"), &mut wire)
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
        let got = through(&mut server, &mut client, push());
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
                    Outgoing::new(MsgType::Push, UUID, "{}").with_encrypt(true),
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
    fn precompressed_body_is_used_as_is() {
        let (mut client, mut server) = pair();
        let json = Bytes::from_static(b"{\"a\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}");
        let zlib = deflate(&json);
        let mut wire = BytesMut::new();
        server
            .encode(
                Outgoing::new(MsgType::Push, UUID, json.clone())
                    .with_compress(true)
                    .with_compressed(zlib.clone()),
                &mut wire,
            )
            .unwrap();
        assert_eq!(&wire[45..], &zlib[..]);
        assert_eq!(
            client.decode(&mut wire).unwrap().unwrap().body.unwrap(),
            json
        );
    }

    #[test]
    fn roles_refuse_the_wrong_direction() {
        let (mut client, mut server) = pair();
        let mut wire = BytesMut::new();
        server
            .encode(Outgoing::new(MsgType::Push, UUID, "{}"), &mut wire)
            .unwrap();
        assert!(matches!(
            server.decode(&mut wire.clone()),
            Err(Error::WrongDirection { .. })
        ));
        wire.clear();
        client
            .encode(Outgoing::new(MsgType::Report, UUID, "{}"), &mut wire)
            .unwrap();
        assert!(matches!(
            client.decode(&mut wire),
            Err(Error::WrongDirection { .. })
        ));
    }
}
