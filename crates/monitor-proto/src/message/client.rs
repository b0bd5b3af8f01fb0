//! The client's end: [`ClientCodec`] sends [`ClientMessage`]s (requests) and receives
//! replies and pushes, decrypting them with the session key in its [`KeySlot`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::codec::BodyLen;
use crate::error::{BodyError, Error};
use crate::header::{Direction, Header, MsgType, Uuid};
use crate::layer::compress::deflate;
use crate::layer::crypto::SessionKey;
use crate::message::layers::{check_sends, need_key, Layers, Limits};
use crate::message::Received;

/// Where a client connection's session key lives, shared by every clone of its codec.
///
/// A codec that is split, whether cloned into a `FramedRead` and a `FramedWrite` or split
/// with [`StreamExt::split`][split] on a `Framed`, sees a key installed through any clone of
/// the codec or of this slot. Take a handle with [`ClientCodec::key_slot`] before splitting,
/// and install the key through it once the key exchange is done.
///
/// The key is read (under a read lock) only to decrypt an encrypted body. `Debug` says
/// whether a key is set, never the key.
///
/// [split]: https://docs.rs/futures/latest/futures/stream/trait.StreamExt.html#method.split
#[derive(Clone, Default)]
pub struct KeySlot(Arc<RwLock<Option<SessionKey>>>);

impl KeySlot {
    /// An empty slot.
    pub fn new() -> KeySlot {
        KeySlot::default()
    }

    /// Installs (or, with `None`, forgets) the session key, for every codec sharing the
    /// slot. A new key request replaces the connection's key.
    pub fn set(&self, key: Option<SessionKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// The session key, if one is installed (a clone: a reference count).
    pub fn get(&self) -> Option<SessionKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` with the installed key, without cloning it.
    fn with<T>(&self, f: impl FnOnce(Option<&SessionKey>) -> T) -> T {
        f(self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref())
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.with(|key| key.is_some());
        f.debug_struct("KeySlot").field("set", &set).finish()
    }
}

/// A request to send: its type, the client's uuid, and its plaintext JSON body.
///
/// A client's body is never encrypted; [`ClientMessage::ask_encrypted_replies`] sets the
/// header's cipher flag, which asks the server to encrypt what it sends back. `Debug`
/// shows the body's length, not its bytes.
///
/// ```
/// use monitor_proto::{ClientMessage, MsgType, Uuid};
/// let report = ClientMessage::new(MsgType::Report, Uuid([b'u'; 33]), r#"{"code":"a"}"#)
///     .compress(true)
///     .ask_encrypted_replies(true);
/// # let _ = report;
/// ```
#[derive(Clone)]
pub struct ClientMessage {
    msg_type: MsgType,
    uuid: Uuid,
    json: Bytes,
    compress: bool,
    ask_encrypted_replies: bool,
}

impl ClientMessage {
    /// A request of `msg_type` (a client-to-server type: the codec refuses others) from
    /// the client `uuid`, uncompressed, asking for plaintext replies.
    pub fn new(msg_type: MsgType, uuid: Uuid, json: impl Into<Bytes>) -> ClientMessage {
        ClientMessage {
            msg_type,
            uuid,
            json: json.into(),
            compress: false,
            ask_encrypted_replies: false,
        }
    }

    /// Compress the body (zlib), and set the compress flag, which also asks the server to
    /// compress its reply.
    #[must_use]
    pub fn compress(mut self, compress: bool) -> ClientMessage {
        self.compress = compress;
        self
    }

    /// Set the cipher flag: the server encrypts its reply (and, on a subscribe, every push)
    /// with the session key. This body itself stays plaintext.
    #[must_use]
    pub fn ask_encrypted_replies(mut self, ask: bool) -> ClientMessage {
        self.ask_encrypted_replies = ask;
        self
    }
}

impl fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMessage")
            .field("msg_type", &self.msg_type)
            .field("uuid", &self.uuid)
            .field("json", &BodyLen(self.json.len()))
            .field("compress", &self.compress)
            .field("ask_encrypted_replies", &self.ask_encrypted_replies)
            .finish()
    }
}

/// Settings of a [`ClientCodec`]: `Copy`, so one builder can make a codec per connection.
/// Each setter changes one limit of the codecs it builds.
///
/// ```
/// use monitor_proto::ClientCodec;
/// let codec = ClientCodec::builder()
///     .max_frame_len(64 << 20)
///     .max_inflated_len(64 << 20)
///     .new_codec();
/// assert_eq!(codec.max_inflated_len(), 64 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCodecBuilder {
    limits: Limits,
}

impl ClientCodecBuilder {
    /// The protocol's defaults: frames of up to
    /// [`DEFAULT_MAX_FRAME_LEN`](crate::codec::DEFAULT_MAX_FRAME_LEN), bodies inflating to
    /// up to [`DEFAULT_MAX_INFLATED_LEN`](crate::message::DEFAULT_MAX_INFLATED_LEN).
    pub const fn new() -> ClientCodecBuilder {
        ClientCodecBuilder {
            limits: Limits::new(),
        }
    }

    /// Largest whole frame (header included) decoded or encoded; inclusive. A frame
    /// announcing more is refused after its first 12 bytes, never buffered.
    ///
    /// ```
    /// # use monitor_proto::ClientCodec;
    /// let codec = ClientCodec::builder().max_frame_len(4096).new_codec();
    /// assert_eq!(codec.max_frame_len(), 4096);
    /// ```
    pub fn max_frame_len(&mut self, bytes: u32) -> &mut Self {
        self.limits.frames.max_frame_len(bytes);
        self
    }

    /// Room for a judged frame is reserved in one go up to this many bytes (see
    /// [`FrameCodecBuilder::max_reserve`](crate::codec::FrameCodecBuilder::max_reserve)).
    ///
    /// ```
    /// # use monitor_proto::ClientCodec;
    /// let codec = ClientCodec::builder().max_reserve(64 * 1024).new_codec();
    /// # let _ = codec;
    /// ```
    pub fn max_reserve(&mut self, bytes: usize) -> &mut Self {
        self.limits.frames.max_reserve(bytes);
        self
    }

    /// Largest body a compressed body may inflate to; inclusive. More is a
    /// [`BodyError::InflatedTooLarge`], not an allocation.
    ///
    /// ```
    /// # use monitor_proto::ClientCodec;
    /// let codec = ClientCodec::builder().max_inflated_len(1 << 20).new_codec();
    /// assert_eq!(codec.max_inflated_len(), 1 << 20);
    /// ```
    pub fn max_inflated_len(&mut self, bytes: usize) -> &mut Self {
        self.limits.max_inflated_len = bytes;
        self
    }

    /// A client codec with these settings, and a key slot of its own.
    pub fn new_codec(&self) -> ClientCodec {
        ClientCodec {
            layers: self.limits.build(Direction::ServerToClient),
            key: KeySlot::new(),
        }
    }

    /// `io` framed by a client codec with these settings.
    pub fn new_framed<T: AsyncRead + AsyncWrite>(&self, io: T) -> Framed<T, ClientCodec> {
        Framed::new(io, self.new_codec())
    }
}

/// The client's codec: encodes [`ClientMessage`]s, decodes the server's frames into
/// [`Received`] messages, decrypting (with the session key) and inflating their bodies.
///
/// It refuses to receive client-to-server frames, and to send server-to-client ones
/// ([`Error::WrongDirection`]).
///
/// # The session key
/// The key lives in a [`KeySlot`] that every clone of the codec shares, so that a
/// connection whose codec is split between a reader and a writer has one key: install it
/// through [`ClientCodec::set_session_key`] on any clone, or through a handle taken with
/// [`ClientCodec::key_slot`] (which works after [`StreamExt::split`][split] too).
/// Build a new codec for each connection; clone one only to split its connection.
///
/// [split]: https://docs.rs/futures/latest/futures/stream/trait.StreamExt.html#method.split
///
/// # Example
/// ```
/// use bytes::BytesMut;
/// use monitor_proto::{ClientCodec, ClientMessage, MsgType, ServerCodec, Uuid};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
/// let mut client = ClientCodec::new();
/// let mut server = ServerCodec::new();
/// let mut wire = BytesMut::new();
/// let report = ClientMessage::new(MsgType::Report, uuid, r#"{"code":"demo"}"#).compress(true);
/// client.encode(report, &mut wire).unwrap();
/// let received = server.decode(&mut wire).unwrap().unwrap();
/// assert!(received.header.compress);
/// assert_eq!(&received.body.unwrap()[..], br#"{"code":"demo"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct ClientCodec {
    layers: Layers,
    key: KeySlot,
}

impl Default for ClientCodec {
    fn default() -> Self {
        ClientCodec::new()
    }
}

impl ClientCodec {
    /// A client codec with the default limits ([`ClientCodecBuilder::new`]).
    pub fn new() -> ClientCodec {
        ClientCodecBuilder::new().new_codec()
    }

    /// A builder for other limits.
    pub const fn builder() -> ClientCodecBuilder {
        ClientCodecBuilder::new()
    }

    /// The configured `max_frame_len`.
    pub fn max_frame_len(&self) -> u32 {
        self.layers.frames.max_frame_len()
    }

    /// The configured `max_inflated_len`.
    pub fn max_inflated_len(&self) -> usize {
        self.layers.max_inflated_len
    }

    /// The slot holding this codec's session key, shared with its clones: clone the
    /// handle to install a key after the codec has been split.
    pub fn key_slot(&self) -> &KeySlot {
        &self.key
    }

    /// Installs (or, with `None`, forgets) the session key, for this codec and every
    /// clone of it ([`KeySlot::set`]).
    pub fn set_session_key(&self, key: Option<SessionKey>) {
        self.key.set(key);
    }
}

impl Decoder for ClientCodec {
    type Item = Received;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Received>, Error> {
        let Self { layers, key } = self;
        let this = ClientOpen { key };
        layers.decode(src, |layers, header, body| this.open(layers, header, body))
    }

    /// As `decode`, then: bytes left that are not a whole frame are
    /// [`Error::ClosedMidFrame`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Received>, Error> {
        let Self { layers, key } = self;
        let this = ClientOpen { key };
        layers.decode_eof(src, |layers, header, body| this.open(layers, header, body))
    }
}

/// The decrypting half of a client codec, borrowed while its frame codec decodes.
struct ClientOpen<'a> {
    key: &'a KeySlot,
}

impl ClientOpen<'_> {
    /// The body layers of a server frame: decrypt (`cipher = 1`), then inflate.
    fn open(&self, layers: &Layers, header: &Header, body: Bytes) -> Result<Bytes, BodyError> {
        let body = if header.cipher {
            self.key
                .with(|key| need_key(key)?.open(&header.to_bytes(), &body))?
        } else {
            body
        };
        layers.inflate(header, body)
    }
}

impl Encoder<ClientMessage> for ClientCodec {
    type Error = Error;

    /// Writes `msg` as one frame, compressed if it asks to be.
    ///
    /// # Errors
    /// [`Error::WrongDirection`] for a server-to-client type; [`Error::FrameTooLong`] if
    /// the frame exceeds `max_frame_len`. Both are [`Initiator::Local`](crate::Initiator),
    /// and nothing is written.
    fn encode(&mut self, msg: ClientMessage, dst: &mut BytesMut) -> Result<(), Error> {
        check_sends(msg.msg_type, Direction::ClientToServer)?;
        let header = Header::new(msg.msg_type, msg.uuid)
            .with_compress(msg.compress)
            .with_cipher(msg.ask_encrypted_replies);
        if msg.compress {
            self.layers.write(&header, &deflate(&msg.json), None, dst)
        } else {
            self.layers.write(&header, &msg.json, None, dst)
        }
    }
}
