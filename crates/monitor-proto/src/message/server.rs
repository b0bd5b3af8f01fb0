//! The server's end: [`ServerCodec`] receives requests and sends [`ServerMessage`]s
//! (replies and pushes), compressing by the protocol's rule and encrypting with the
//! connection's session key; a body sent to many recipients is a [`SharedBody`].

use std::fmt;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::codec::BodyLen;
use crate::error::Error;
use crate::header::{Direction, Header, MsgType, Uuid};
use crate::layer::compress::deflate;
use crate::layer::crypto::SessionKey;
use crate::message::layers::{check_sends, need_key, Layers, Limits};
use crate::message::{server_compresses, Received, DEFAULT_COMPRESS_THRESHOLD};

/// A reply or a push to send: its type, the recipient's uuid, and its plaintext JSON body.
///
/// The codec compresses the body when it asks to ([`ServerMessage::compress`]) and when
/// it is over the codec's `compress_threshold` (see [`server_compresses`]), and encrypts
/// it when it asks to ([`ServerMessage::encrypt`]), except key and heartbeat replies,
/// which the protocol never encrypts. `Debug` shows the body's length, not its bytes.
///
/// ```
/// use monitor_proto::message::reply;
/// use monitor_proto::{MsgType, ServerMessage, Uuid};
/// let ack = ServerMessage::new(MsgType::ReportAck, Uuid([b'u'; 33]), reply::report_ack(3))
///     .compress(false)
///     .encrypt(true);
/// # let _ = ack;
/// ```
#[derive(Clone)]
pub struct ServerMessage {
    msg_type: MsgType,
    uuid: Uuid,
    json: Bytes,
    compress: bool,
    encrypt: bool,
}

impl ServerMessage {
    /// A message of `msg_type` (a server-to-client type: the codec refuses others) to the
    /// client `uuid`, compressed only if over the threshold, and not encrypted.
    pub fn new(msg_type: MsgType, uuid: Uuid, json: impl Into<Bytes>) -> ServerMessage {
        ServerMessage {
            msg_type,
            uuid,
            json: json.into(),
            compress: false,
            encrypt: false,
        }
    }

    /// Compress the body whatever its size (a request with the compress flag asks for
    /// this). Bodies over the codec's `compress_threshold` are compressed anyway.
    #[must_use]
    pub fn compress(mut self, compress: bool) -> ServerMessage {
        self.compress = compress;
        self
    }

    /// Encrypt the body with the connection's session key (a request with the cipher flag
    /// asks for this). Key and heartbeat replies are never encrypted, whatever this says.
    #[must_use]
    pub fn encrypt(mut self, encrypt: bool) -> ServerMessage {
        self.encrypt = encrypt;
        self
    }
}

impl fmt::Debug for ServerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerMessage")
            .field("msg_type", &self.msg_type)
            .field("uuid", &self.uuid)
            .field("json", &BodyLen(self.json.len()))
            .field("compress", &self.compress)
            .field("encrypt", &self.encrypt)
            .finish()
    }
}

/// One JSON body sent to many recipients (a report's push): the plaintext, and its zlib
/// form, made at most once, by the first recipient that needs it (or by
/// [`SharedBody::compressed`] ahead of time). Share it behind an `Arc`; encode it with
/// [`ServerCodec::encode_shared`], which copies it once, into the write buffer.
///
/// `Debug` shows the lengths, not the bytes.
///
/// ```
/// use std::sync::Arc;
/// use monitor_proto::SharedBody;
/// let body = Arc::new(SharedBody::new(r#"{"errCode":0,"msg":"success","data":{}}"#));
/// assert!(!body.has_compressed());
/// let zlib = body.compressed().clone();
/// assert!(body.has_compressed());
/// assert_eq!(body.compressed().as_ptr(), zlib.as_ptr(), "made once");
/// ```
pub struct SharedBody {
    json: Bytes,
    compressed: OnceLock<Bytes>,
}

impl SharedBody {
    /// A body of `json` (a whole reply envelope), not compressed yet.
    pub fn new(json: impl Into<Bytes>) -> SharedBody {
        SharedBody {
            json: json.into(),
            compressed: OnceLock::new(),
        }
    }

    /// The plaintext body.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The zlib form of the body: made on the first call, then shared.
    pub fn compressed(&self) -> &Bytes {
        self.compressed.get_or_init(|| deflate(&self.json))
    }

    /// Whether the zlib form has been made.
    pub fn has_compressed(&self) -> bool {
        self.compressed.get().is_some()
    }
}

impl fmt::Debug for SharedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBody")
            .field("json", &BodyLen(self.json.len()))
            .field(
                "compressed",
                &self.compressed.get().map(|z| BodyLen(z.len())),
            )
            .finish()
    }
}

/// Who a [`SharedBody`] goes to, and how: the uuid its frame carries, and whether that
/// recipient asked for compression and encryption (the flags of its subscribe).
///
/// ```
/// use monitor_proto::{Recipient, Uuid};
/// let to = Recipient::new(Uuid([b's'; 33])).compress(true).encrypt(false);
/// # let _ = to;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient {
    uuid: Uuid,
    compress: bool,
    encrypt: bool,
}

impl Recipient {
    /// The client `uuid`, which asked for neither compression nor encryption.
    pub const fn new(uuid: Uuid) -> Recipient {
        Recipient {
            uuid,
            compress: false,
            encrypt: false,
        }
    }

    /// The recipient asked for compressed bodies (as [`ServerMessage::compress`]).
    #[must_use]
    pub const fn compress(mut self, compress: bool) -> Recipient {
        self.compress = compress;
        self
    }

    /// The recipient asked for encrypted bodies (as [`ServerMessage::encrypt`]).
    #[must_use]
    pub const fn encrypt(mut self, encrypt: bool) -> Recipient {
        self.encrypt = encrypt;
        self
    }
}

/// Settings of a [`ServerCodec`]: `Copy`, so one builder can make a codec per connection.
/// Each setter changes one limit of the codecs it builds.
///
/// ```
/// use monitor_proto::ServerCodec;
/// let codec = ServerCodec::builder()
///     .max_frame_len(64 * 1024)
///     .compress_threshold(4096)
///     .new_codec();
/// assert_eq!(codec.max_frame_len(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCodecBuilder {
    limits: Limits,
    compress_threshold: usize,
}

impl Default for ServerCodecBuilder {
    fn default() -> Self {
        ServerCodecBuilder::new()
    }
}

impl ServerCodecBuilder {
    /// The protocol's defaults: frames of up to
    /// [`DEFAULT_MAX_FRAME_LEN`](crate::codec::DEFAULT_MAX_FRAME_LEN), bodies inflating to
    /// up to [`DEFAULT_MAX_INFLATED_LEN`](crate::message::DEFAULT_MAX_INFLATED_LEN),
    /// bodies over [`DEFAULT_COMPRESS_THRESHOLD`] bytes compressed.
    pub const fn new() -> ServerCodecBuilder {
        ServerCodecBuilder {
            limits: Limits::new(),
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
        }
    }

    /// Largest whole frame (header included) decoded or encoded; inclusive. A frame
    /// announcing more is refused after its first 12 bytes, never buffered.
    ///
    /// ```
    /// # use monitor_proto::ServerCodec;
    /// let codec = ServerCodec::builder().max_frame_len(4096).new_codec();
    /// assert_eq!(codec.max_frame_len(), 4096);
    /// ```
    pub fn max_frame_len(&mut self, bytes: u32) -> &mut Self {
        self.limits.frames.max_frame_len(bytes);
        self
    }

    /// Room for a judged frame is reserved in one go up to this many bytes; a larger
    /// frame's room grows as it arrives, so the server can first budget it (see
    /// [`ServerCodec::pending_frame_len`] and
    /// [`FrameCodecBuilder::max_reserve`](crate::codec::FrameCodecBuilder::max_reserve)).
    ///
    /// ```
    /// # use monitor_proto::ServerCodec;
    /// let codec = ServerCodec::builder().max_reserve(64 * 1024).new_codec();
    /// # let _ = codec;
    /// ```
    pub fn max_reserve(&mut self, bytes: usize) -> &mut Self {
        self.limits.frames.max_reserve(bytes);
        self
    }

    /// Largest body a compressed request may inflate to; inclusive. More is a
    /// [`BodyError::InflatedTooLarge`](crate::BodyError::InflatedTooLarge), not an allocation.
    ///
    /// ```
    /// # use monitor_proto::ServerCodec;
    /// let codec = ServerCodec::builder().max_inflated_len(1 << 20).new_codec();
    /// assert_eq!(codec.max_inflated_len(), 1 << 20);
    /// ```
    pub fn max_inflated_len(&mut self, bytes: usize) -> &mut Self {
        self.limits.max_inflated_len = bytes;
        self
    }

    /// Bodies longer than this (before compression) are always sent compressed (see
    /// [`server_compresses`]).
    ///
    /// ```
    /// # use monitor_proto::ServerCodec;
    /// let codec = ServerCodec::builder().compress_threshold(1024).new_codec();
    /// assert_eq!(codec.compress_threshold(), 1024);
    /// ```
    pub fn compress_threshold(&mut self, bytes: usize) -> &mut Self {
        self.compress_threshold = bytes;
        self
    }

    /// A server codec with these settings, and no session key.
    pub fn new_codec(&self) -> ServerCodec {
        ServerCodec {
            layers: self.limits.build(Direction::ClientToServer),
            compress_threshold: self.compress_threshold,
            key: None,
        }
    }

    /// `io` framed by a server codec with these settings.
    pub fn new_framed<T: AsyncRead + AsyncWrite>(&self, io: T) -> Framed<T, ServerCodec> {
        Framed::new(io, self.new_codec())
    }
}

/// The server's codec: decodes requests into [`Received`] messages (inflating their
/// bodies; a request's cipher flag only asks for encrypted replies), and encodes
/// [`ServerMessage`]s and [`SharedBody`]s, compressing and encrypting them.
///
/// It refuses to receive server-to-client frames, and to send client-to-server ones
/// ([`Error::WrongDirection`]).
///
/// It holds the connection's session key. A clone shares the key and its nonce counter
/// (see [`SessionKey`]): bodies encrypted by a codec and its clones never share a nonce.
///
/// # Example
/// ```
/// use bytes::BytesMut;
/// use monitor_proto::message::reply;
/// use monitor_proto::{ClientCodec, MsgType, ServerCodec, ServerMessage, SessionKey, Uuid};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
/// let key = SessionKey::from_bytes(&[7; 32]); // from a key exchange, in practice
/// let mut server = ServerCodec::new();
/// server.set_session_key(Some(key.clone()));
/// let mut client = ClientCodec::new();
/// client.set_session_key(Some(key));
///
/// let mut wire = BytesMut::new();
/// let ack = ServerMessage::new(MsgType::ReportAck, uuid, reply::report_ack(1)).encrypt(true);
/// server.encode(ack, &mut wire).unwrap();
/// let received = client.decode(&mut wire).unwrap().unwrap();
/// assert!(received.header.cipher);
/// assert_eq!(received.body.unwrap(), reply::report_ack(1));
/// ```
#[derive(Debug, Clone)]
pub struct ServerCodec {
    layers: Layers,
    compress_threshold: usize,
    key: Option<SessionKey>,
}

impl Default for ServerCodec {
    fn default() -> Self {
        ServerCodec::new()
    }
}

impl ServerCodec {
    /// A server codec with the default limits ([`ServerCodecBuilder::new`]).
    pub fn new() -> ServerCodec {
        ServerCodecBuilder::new().new_codec()
    }

    /// A builder for other limits.
    pub const fn builder() -> ServerCodecBuilder {
        ServerCodecBuilder::new()
    }

    /// The configured `max_frame_len`.
    pub fn max_frame_len(&self) -> u32 {
        self.layers.frames.max_frame_len()
    }

    /// The configured `max_inflated_len`.
    pub fn max_inflated_len(&self) -> usize {
        self.layers.max_inflated_len
    }

    /// The configured `compress_threshold`.
    pub fn compress_threshold(&self) -> usize {
        self.compress_threshold
    }

    /// The whole length of the request judged and waited for (see
    /// [`FrameCodec::pending_frame_len`](crate::FrameCodec::pending_frame_len)).
    pub fn pending_frame_len(&self) -> Option<usize> {
        self.layers.frames.pending_frame_len()
    }

    /// Changes `max_frame_len` on a live codec (a configuration reload); a frame already
    /// judged keeps the limit it was judged with.
    pub fn set_max_frame_len(&mut self, bytes: u32) {
        self.layers.frames.set_max_frame_len(bytes);
    }

    /// Changes `max_inflated_len` on a live codec (a configuration reload).
    pub fn set_max_inflated_len(&mut self, bytes: usize) {
        self.layers.max_inflated_len = bytes;
    }

    /// Changes `compress_threshold` on a live codec (a configuration reload).
    pub fn set_compress_threshold(&mut self, bytes: usize) {
        self.compress_threshold = bytes;
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

    /// Writes one frame of `msg_type` carrying `body` to `to`: compressed if `to` asks
    /// for it or the body is over the threshold (using, and if need be making, the body's
    /// shared zlib form), encrypted if `to` asks for it and the type allows it. Nothing
    /// is cloned or allocated but the frame in `dst` (and, once per body, its zlib form).
    ///
    /// This is how a server fans one report out: one [`SharedBody`] for the report, one
    /// [`Recipient`] per subscriber.
    ///
    /// # Errors
    /// As [`Encoder::encode`]: [`Error::WrongDirection`], [`Error::FrameTooLong`], or
    /// [`Error::Body`] for a missing or exhausted key. Nothing is written on error.
    ///
    /// # Example
    /// ```
    /// use bytes::BytesMut;
    /// use monitor_proto::message::reply;
    /// use monitor_proto::{MsgType, Recipient, ServerCodec, SharedBody, Uuid};
    ///
    /// let push = SharedBody::new(reply::push(br#"{"code":"host.health"}"#));
    /// let codec = ServerCodec::new();
    /// let mut wire = BytesMut::new();
    /// for id in [b'a', b'b'] {
    ///     let to = Recipient::new(Uuid([id; 33])).compress(id == b'b');
    ///     codec.encode_shared(MsgType::Push, &to, &push, &mut wire).unwrap();
    /// }
    /// assert_eq!(wire.len(), 45 + push.json().len() + 45 + push.compressed().len());
    /// ```
    pub fn encode_shared(
        &self,
        msg_type: MsgType,
        to: &Recipient,
        body: &SharedBody,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        check_sends(msg_type, Direction::ServerToClient)?;
        let key = self.key_for(msg_type, to.encrypt)?;
        let compress = server_compresses(to.compress, body.json.len(), self.compress_threshold);
        let header = Header::new(msg_type, to.uuid).with_compress(compress);
        let wire: &[u8] = if compress {
            body.compressed()
        } else {
            &body.json
        };
        self.layers.write(&header, wire, key, dst)
    }

    /// The key to encrypt a `msg_type` body with, if it is to be encrypted.
    #[inline]
    fn key_for(&self, msg_type: MsgType, encrypt: bool) -> Result<Option<&SessionKey>, Error> {
        if encrypt && !msg_type.never_encrypted() {
            Ok(Some(need_key(self.key.as_ref())?))
        } else {
            Ok(None)
        }
    }
}

impl Decoder for ServerCodec {
    type Item = Received;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Received>, Error> {
        // A request's body is never encrypted (its cipher flag asks for encrypted
        // replies): inflating is its only layer.
        self.layers
            .decode(src, |layers, header, body| layers.inflate(header, body))
    }

    /// As `decode`, then: bytes left that are not a whole frame are
    /// [`Error::ClosedMidFrame`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Received>, Error> {
        self.layers
            .decode_eof(src, |layers, header, body| layers.inflate(header, body))
    }
}

impl Encoder<ServerMessage> for ServerCodec {
    type Error = Error;

    /// Writes `msg` as one frame, compressed and encrypted as it and the protocol's rules
    /// say.
    ///
    /// # Errors
    /// [`Error::WrongDirection`] for a client-to-server type; [`Error::Body`] with
    /// [`BodyError::NoSessionKey`](crate::BodyError::NoSessionKey) if encryption is due
    /// and there is no key, or [`BodyError::KeyExhausted`](crate::BodyError::KeyExhausted) if the key has sealed all it may (a new key request
    /// must replace it); [`Error::FrameTooLong`] if the frame exceeds `max_frame_len`.
    /// Nothing is written on error.
    fn encode(&mut self, msg: ServerMessage, dst: &mut BytesMut) -> Result<(), Error> {
        check_sends(msg.msg_type, Direction::ServerToClient)?;
        let key = self.key_for(msg.msg_type, msg.encrypt)?;
        let compress = server_compresses(msg.compress, msg.json.len(), self.compress_threshold);
        let header = Header::new(msg.msg_type, msg.uuid).with_compress(compress);
        if compress {
            self.layers.write(&header, &deflate(&msg.json), key, dst)
        } else {
            self.layers.write(&header, &msg.json, key, dst)
        }
    }
}
