//! The crate's two error types: [`Error`], what ends a stream (or stops one message from
//! being sent), and [`BodyError`], what spoils one body and leaves the stream intact.
//!
//! Neither type prints its cause: a variant that wraps another error (an I/O error, a
//! `serde_json`, `flate2` or `base64` error) returns it from
//! [`source()`](std::error::Error::source) and leaves it out of its own message, so a
//! report that walks the chain prints each cause once. Keys and bodies never appear in a
//! message or a `Debug` output.

use std::fmt;
use std::io;

use crate::msg_type::{Direction, MsgType};

/// Which end of a connection caused an error (as h2's `Initiator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end: an encoder asked to write what it may not (a frame over the limit, a
    /// message of the other direction).
    Local,
    /// The peer: a decoder read it.
    Remote,
}

/// Whose fault an error was, which decides what a server or client does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The peer sent something wrong: log it with the peer, answer or close.
    Peer,
    /// This end misused the API or its configuration (e.g. encrypting without a key,
    /// encoding a frame over its own limit), or its key has sealed all it may.
    Local,
    /// The transport failed.
    Io,
}

/// What ends a stream, or stops one message from being sent.
///
/// A decoder returns it only for errors after which the byte stream cannot be trusted
/// (a bad header, the transport failing, the peer closing in the middle of a frame): log
/// it and close the connection. An encoder returns it when a message cannot be written
/// ([`Initiator::Local`] errors and [`Error::Body`]); nothing is written then, and the
/// stream can go on ([`Error::is_fatal`]). [`Error::fault`] says whose fault it was.
///
/// A body that fails its layers or its parse on the way in is not an `Error` but a
/// [`BodyError`], next to the header that says how to answer it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),

    /// A slice handed to [`Header::parse`](crate::Header::parse) was too short. The codecs
    /// never return this (they wait for more bytes instead).
    #[error("need {need} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes given.
        have: usize,
    },

    /// Header byte 0 is not 1.
    #[error("unsupported protocol version {version}")]
    BadVersion {
        /// The version byte received.
        version: u8,
    },

    /// Header byte 1 is not in 1..=8.
    #[error("unknown message type {msg_type}")]
    BadMsgType {
        /// The type byte received.
        msg_type: u8,
    },

    /// A frame travelling the wrong way: a push received by a server
    /// ([`Initiator::Remote`]), or a push handed to a client's encoder
    /// ([`Initiator::Local`]; nothing is written).
    #[error("{}", WrongDirectionText { msg_type: *.msg_type, expected: *.expected, initiator: *.initiator })]
    WrongDirection {
        /// The frame's type.
        msg_type: MsgType,
        /// The direction this end accepts (`Remote`) or sends (`Local`).
        expected: Direction,
        /// Who tried to move the frame the wrong way.
        initiator: Initiator,
    },

    /// A flag byte that is neither 0 nor 1.
    #[error("{field} flag is {value}, must be 0 or 1")]
    BadFlag {
        /// `"cipher"` or `"compress"`.
        field: &'static str,
        /// The byte received.
        value: u8,
    },

    /// The announced frame length is smaller than the header itself.
    #[error("frame length {length} is shorter than the 45-byte header")]
    FrameTooShort {
        /// The announced length.
        length: u32,
    },

    /// A frame over the limit: announced by the peer ([`Initiator::Remote`], refused after
    /// its first 12 bytes), or computed by this end's encoder ([`Initiator::Local`];
    /// nothing is written).
    #[error("frame length {length} exceeds max_frame_len {max}")]
    FrameTooLong {
        /// The frame's length.
        length: u64,
        /// The limit: the configured `max_frame_len`, or `u32::MAX` for a frame whose
        /// length does not fit the header's 32-bit field.
        max: u32,
        /// Whose frame it is.
        initiator: Initiator,
    },

    /// The header CRC does not match header bytes 0..8.
    #[error("header CRC mismatch: computed {computed:#010x}, frame says {frame_says:#010x}")]
    BadHeaderCrc {
        /// CRC-32 of the bytes received.
        computed: u32,
        /// CRC the frame carries.
        frame_says: u32,
    },

    /// The peer closed the stream in the middle of a frame (from
    /// [`Decoder::decode_eof`](tokio_util::codec::Decoder::decode_eof)).
    #[error("{}", ClosedMidFrameText { received: *.received, length: *.length })]
    ClosedMidFrame {
        /// Bytes of the unfinished frame received.
        received: usize,
        /// Its announced length, if its first 12 bytes arrived and were judged.
        length: Option<u32>,
    },

    /// An encoder could not prepare the body: no session key, or the key is exhausted.
    /// Nothing is written.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// What spoils one body, and only that body: the frame boundaries are intact, so the
/// stream goes on and the peer can be answered.
///
/// A decoder hands it out in [`Received::body`](crate::Received::body); the body layers
/// and the request and reply parsers return it. Messages of the body-format variants
/// (`Malformed`, `InvalidJson`, `InvalidUtf8`) start with `"malformed body: "`; their
/// cause, if any, is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A compressed body inflates to more than the limit (a decompression bomb).
    #[error("compressed body inflates beyond max_inflated_len {max}")]
    InflatedTooLarge {
        /// The configured `max_inflated_len`.
        max: usize,
    },

    /// A compressed body that zlib refuses (bad header, data or checksum).
    #[error("bad compressed body")]
    BadZlib {
        /// What the inflater said.
        source: flate2::DecompressError,
    },

    /// A compressed body that ends before its zlib stream does.
    #[error("bad compressed body: truncated zlib stream")]
    TruncatedZlib,

    /// A compressed body with bytes after the end of its zlib stream.
    #[error("bad compressed body: {count} trailing bytes after the zlib stream")]
    ZlibTrailingBytes {
        /// How many bytes follow the stream.
        count: usize,
    },

    /// An encrypted body too short to hold the 12-byte nonce and 16-byte tag.
    #[error("encrypted body of {len} bytes is shorter than nonce + tag (28 bytes)")]
    EncryptedBodyTooShort {
        /// The body's length.
        len: usize,
    },

    /// AES-GCM authentication failed: wrong key, or the header or body was altered.
    #[error("decryption failed: wrong key, or the frame was altered")]
    DecryptFailed,

    /// Encryption or decryption was needed, but the connection has no session key yet.
    #[error("no session key: send a key request first")]
    NoSessionKey,

    /// The session key has sealed as many bodies as its nonce counter allows; sealing
    /// more would reuse a nonce, so it is refused. Nothing was written.
    #[error("session key exhausted ({sealed} bodies sealed under it): send a new key request")]
    KeyExhausted {
        /// Bodies sealed under the key (and its clones).
        sealed: u64,
    },

    /// Valid JSON that is not what its message type requires (e.g. a subscribe without a
    /// `code`).
    #[error("malformed body: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A body that is not valid JSON, or not the JSON shape a reply needs.
    #[error("malformed body: invalid JSON")]
    InvalidJson {
        /// What the JSON parser said.
        source: serde_json::Error,
    },

    /// A body that is not UTF-8.
    #[error("malformed body: invalid UTF-8")]
    InvalidUtf8 {
        /// Where the UTF-8 breaks.
        source: std::str::Utf8Error,
    },

    /// A subscribe whose `"topics"` lists more patterns than `max_topics`. The message
    /// reads well after the server's `"malformed body: "` prefix.
    #[error("topics: {count} patterns, more than max_topics {max}")]
    TooManyTopics {
        /// How many elements the array has (counted, not kept, past the limit).
        count: usize,
        /// The configured `max_topics`.
        max: usize,
    },

    /// A subscribe pattern longer than `max_topic_len` bytes (decoded UTF-8). The
    /// message reads well after the server's `"malformed body: "` prefix.
    #[error("topics[{index}]: {len} bytes, more than max_topic_len {max}")]
    TopicTooLong {
        /// The pattern's position in `"topics"`, from 0.
        index: usize,
        /// Its length in bytes.
        len: usize,
        /// The configured `max_topic_len`.
        max: usize,
    },

    /// A key-exchange public key that is not base64.
    #[error("bad public key: not base64")]
    PublicKeyNotBase64 {
        /// What the base64 decoder said.
        source: base64::DecodeError,
    },

    /// A key-exchange public key that is base64, but not of 32 bytes.
    #[error("bad public key: {len} bytes, expected 32")]
    PublicKeyLength {
        /// The decoded length.
        len: usize,
    },

    /// The peer's X25519 public key is a low-order point: the shared secret is all zeros.
    #[error("bad public key: the shared secret is all zeros")]
    NonContributoryKey,

    /// A legacy key that is not 32 characters long.
    #[error("bad legacy key: {len} characters, expected 32")]
    LegacyKeyLength {
        /// Its length in bytes.
        len: usize,
    },

    /// A legacy key with characters outside `[0-9A-Za-z]`.
    #[error("bad legacy key: characters outside [0-9A-Za-z]")]
    LegacyKeyCharset,

    /// [`Request::parse`](crate::Request::parse) was asked to parse a server-to-client type.
    #[error("{msg_type} is not a request")]
    NotARequest {
        /// The type given.
        msg_type: MsgType,
    },
}

struct WrongDirectionText {
    msg_type: MsgType,
    expected: Direction,
    initiator: Initiator,
}

impl fmt::Display for WrongDirectionText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, dir, expected) = (self.msg_type, self.msg_type.direction(), self.expected);
        match self.initiator {
            Initiator::Remote => write!(
                f,
                "{t} is a {dir} message, only {expected} messages are accepted here"
            ),
            Initiator::Local => write!(
                f,
                "{t} is a {dir} message, only {expected} messages are sent from here"
            ),
        }
    }
}

struct ClosedMidFrameText {
    received: usize,
    length: Option<u32>,
}

impl fmt::Display for ClosedMidFrameText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.length {
            Some(length) => write!(
                f,
                "stream closed in the middle of a frame: {} of {length} bytes received",
                self.received
            ),
            None => write!(
                f,
                "stream closed in the middle of a frame: {} bytes of its header received",
                self.received
            ),
        }
    }
}

/// `e`'s message followed by each of its causes, joined by `": "`: what to show a person
/// or a peer. This crate's errors keep their cause (the JSON parser's, the inflater's) out
/// of their own message, as the `std::error::Error` convention asks, so that a chain
/// printed cause by cause says each thing once; this prints the whole chain.
///
/// ```
/// use monitor_proto::error::with_causes;
/// use monitor_proto::message::reply::Reply;
///
/// let e = Reply::parse(b"{\"errCode\":").unwrap_err();
/// assert!(with_causes(&e).starts_with("malformed body: invalid JSON: EOF while parsing"));
/// ```
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Error {
    /// Whether the byte stream is lost after this error.
    ///
    /// Every error a decoder returns is fatal: a frame's length cannot be trusted, so the
    /// stream cannot be resynchronised and the connection must be closed. An encoder's
    /// errors ([`Initiator::Local`] ones, and [`Error::Body`]) are not: nothing was
    /// written, and the stream can go on.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::FrameTooLong { initiator, .. } | Error::WrongDirection { initiator, .. } => {
                *initiator == Initiator::Remote
            }
            Error::Body(_) => false,
            _ => true,
        }
    }

    /// Whose fault the error was: [`Fault::Io`] for the transport, [`Fault::Local`] for
    /// what this end's encoder refused, [`Fault::Peer`] for what the peer sent.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Io(_) => Fault::Io,
            Error::FrameTooLong { initiator, .. } | Error::WrongDirection { initiator, .. } => {
                match initiator {
                    Initiator::Local => Fault::Local,
                    Initiator::Remote => Fault::Peer,
                }
            }
            Error::Body(body) => body.fault(),
            _ => Fault::Peer,
        }
    }
}

impl BodyError {
    /// Whose fault the error was: [`Fault::Local`] for a missing or exhausted session key
    /// and for asking to parse a reply as a request, [`Fault::Peer`] for the rest (a body
    /// the peer sent).
    pub fn fault(&self) -> Fault {
        match self {
            BodyError::NoSessionKey
            | BodyError::KeyExhausted { .. }
            | BodyError::NotARequest { .. } => Fault::Local,
            _ => Fault::Peer,
        }
    }

    pub(crate) fn malformed(reason: &'static str) -> BodyError {
        BodyError::Malformed { reason }
    }

    pub(crate) fn invalid_json(source: serde_json::Error) -> BodyError {
        BodyError::InvalidJson { source }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The message and every cause after it, as a log line or a server reply shows them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        text
    }

    #[test]
    fn messages_name_the_values() {
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::BadHeaderCrc {
                    computed: 0xca38b289,
                    frame_says: 0x1,
                },
                "header CRC mismatch: computed 0xca38b289, frame says 0x00000001",
            ),
            (
                Error::FrameTooLong {
                    length: 9_000_000,
                    max: 1_048_576,
                    initiator: Initiator::Remote,
                },
                "frame length 9000000 exceeds max_frame_len 1048576",
            ),
            (
                Error::WrongDirection {
                    msg_type: MsgType::Push,
                    expected: Direction::ClientToServer,
                    initiator: Initiator::Remote,
                },
                "push (6) is a server-to-client message, only client-to-server messages are accepted here",
            ),
            (
                Error::WrongDirection {
                    msg_type: MsgType::Push,
                    expected: Direction::ClientToServer,
                    initiator: Initiator::Local,
                },
                "push (6) is a server-to-client message, only client-to-server messages are sent from here",
            ),
            (
                Error::ClosedMidFrame {
                    received: 20,
                    length: Some(100),
                },
                "stream closed in the middle of a frame: 20 of 100 bytes received",
            ),
            (
                Error::ClosedMidFrame {
                    received: 5,
                    length: None,
                },
                "stream closed in the middle of a frame: 5 bytes of its header received",
            ),
            (
                BodyError::NoSessionKey.into(),
                "no session key: send a key request first",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
        let cases: Vec<(BodyError, &str)> = vec![
            (
                BodyError::InflatedTooLarge { max: 8 },
                "compressed body inflates beyond max_inflated_len 8",
            ),
            (
                BodyError::NoSessionKey,
                "no session key: send a key request first",
            ),
            (
                BodyError::malformed("missing code"),
                "malformed body: missing code",
            ),
            (
                BodyError::TooManyTopics {
                    count: 1_000_000,
                    max: 64,
                },
                "topics: 1000000 patterns, more than max_topics 64",
            ),
            (
                BodyError::TopicTooLong {
                    index: 3,
                    len: 300,
                    max: 256,
                },
                "topics[3]: 300 bytes, more than max_topic_len 256",
            ),
            (
                BodyError::EncryptedBodyTooShort { len: 3 },
                "encrypted body of 3 bytes is shorter than nonce + tag (28 bytes)",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn causes_are_sources_printed_once() {
        let io = Error::Io(io::Error::other("connection reset"));
        assert_eq!(io.to_string(), "connection reset");
        assert!(
            io.source().is_none(),
            "transparent: the io error's own source"
        );

        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = BodyError::invalid_json(json);
        assert_eq!(err.to_string(), "malformed body: invalid JSON");
        assert_eq!(
            chain(&err),
            "malformed body: invalid JSON: EOF while parsing an object at line 1 column 1"
        );
        // Wrapped in a stream error (as an encoder returns it), still printed once.
        let wrapped = Error::from(BodyError::KeyExhausted { sealed: 1 });
        assert_eq!(chain(&wrapped), wrapped.to_string());
        let bad = vec![0xff_u8];
        let utf8 = std::str::from_utf8(&bad).unwrap_err();
        assert_eq!(
            chain(&BodyError::InvalidUtf8 { source: utf8 }),
            "malformed body: invalid UTF-8: invalid utf-8 sequence of 1 bytes from index 0"
        );
    }

    #[test]
    fn decoder_errors_are_fatal_encoder_errors_are_not() {
        assert!(Error::BadVersion { version: 2 }.is_fatal());
        assert!(Error::FrameTooShort { length: 3 }.is_fatal());
        assert!(Error::Io(io::Error::other("x")).is_fatal());
        assert!(Error::ClosedMidFrame {
            received: 1,
            length: None
        }
        .is_fatal());
        let too_long = |initiator| Error::FrameTooLong {
            length: 2,
            max: 1,
            initiator,
        };
        assert!(too_long(Initiator::Remote).is_fatal());
        assert!(!too_long(Initiator::Local).is_fatal());
        assert!(!Error::from(BodyError::NoSessionKey).is_fatal());
    }

    #[test]
    fn faults() {
        assert_eq!(BodyError::NoSessionKey.fault(), Fault::Local);
        assert_eq!(BodyError::KeyExhausted { sealed: 1 }.fault(), Fault::Local);
        assert_eq!(
            Error::from(BodyError::KeyExhausted { sealed: 1 }).fault(),
            Fault::Local
        );
        assert!(!Error::from(BodyError::KeyExhausted { sealed: 1 }).is_fatal());
        assert_eq!(Error::Io(io::Error::other("x")).fault(), Fault::Io);
        assert_eq!(BodyError::DecryptFailed.fault(), Fault::Peer);
        assert_eq!(
            BodyError::TooManyTopics { count: 2, max: 1 }.fault(),
            Fault::Peer
        );
        assert_eq!(
            BodyError::TopicTooLong {
                index: 0,
                len: 2,
                max: 1
            }
            .fault(),
            Fault::Peer
        );
        // The encoder's own frame over the limit is this end's fault; the peer's is the
        // peer's.
        let too_long = |initiator| Error::FrameTooLong {
            length: 2,
            max: 1,
            initiator,
        };
        assert_eq!(too_long(Initiator::Local).fault(), Fault::Local);
        assert_eq!(too_long(Initiator::Remote).fault(), Fault::Peer);
        assert_eq!(
            Error::ClosedMidFrame {
                received: 1,
                length: Some(50)
            }
            .fault(),
            Fault::Peer
        );
    }
}
