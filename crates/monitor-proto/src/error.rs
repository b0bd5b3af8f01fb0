//! The crate's one error type.

use std::io;

use crate::header::{Direction, MsgType};

/// Everything that can go wrong reading or writing the protocol.
///
/// Variants carry the offending values, never keys or bodies. Ask [`Error::is_fatal`]
/// whether the byte stream can go on, and [`Error::fault`] whose fault it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),

    /// A slice handed to a parsing function was too short. The codec never returns this
    /// (it waits for more bytes instead).
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

    /// A frame travelling the wrong way, e.g. a push sent by a client.
    #[error("{msg_type} is a {} message, only {accept} messages are accepted here", .msg_type.direction())]
    WrongDirection {
        /// The type received.
        msg_type: MsgType,
        /// The direction this end accepts.
        accept: Direction,
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

    /// The announced (or, when encoding, the computed) frame length is over the limit.
    #[error("frame length {length} exceeds max_frame_len {max}")]
    FrameTooLong {
        /// The frame's length.
        length: u64,
        /// The configured `max_frame_len`.
        max: u32,
    },

    /// The header CRC does not match header bytes 0..8.
    #[error("header CRC mismatch: computed {computed:#010x}, frame says {frame_says:#010x}")]
    BadHeaderCrc {
        /// CRC-32 of the bytes received.
        computed: u32,
        /// CRC the frame carries.
        frame_says: u32,
    },

    /// A compressed body inflates to more than the limit (a decompression bomb).
    #[error("compressed body inflates beyond max_inflated_len {max}")]
    InflatedTooLarge {
        /// The configured `max_inflated_len`.
        max: usize,
    },

    /// A compressed body is not a valid, complete zlib stream.
    #[error("bad compressed body: {reason}")]
    BadCompressedBody {
        /// What the inflater said.
        reason: String,
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

    /// Encryption was needed, but the connection has no session key yet.
    #[error("no session key: send a key request first")]
    NoSessionKey,

    /// The session key has sealed as many bodies as its nonce counter allows; sealing
    /// more would reuse a nonce, so it is refused. Nothing was written.
    #[error("session key exhausted ({sealed} bodies sealed under it): send a new key request")]
    KeyExhausted {
        /// Bodies sealed under the key (and its clones).
        sealed: u64,
    },

    /// A body that is not what its message type requires.
    #[error("malformed body: {reason}")]
    MalformedBody {
        /// What is wrong with it.
        reason: String,
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

    /// A key-exchange public key that is not 32 bytes of base64.
    #[error("bad public key: {reason}")]
    BadPublicKey {
        /// What is wrong with it.
        reason: String,
    },

    /// The peer's X25519 public key is a low-order point: the shared secret is all zeros.
    #[error("bad public key: the shared secret is all zeros")]
    NonContributoryKey,

    /// A legacy key that is not 32 characters of `[0-9A-Za-z]`.
    #[error("bad legacy key: {reason}")]
    BadLegacyKey {
        /// What is wrong with it.
        reason: String,
    },
}

/// Whose fault an [`Error`] was, which decides what a server or client does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The peer sent something wrong: log it with the peer, answer or close.
    Peer,
    /// This end misused the API or its configuration (e.g. encrypting without a key), or
    /// its key has sealed all it may.
    /// A body over the limit on encoding is reported as [`Error::FrameTooLong`], whose
    /// fault is [`Fault::Peer`]; the caller of an encoder knows it is its own.
    Local,
    /// The transport failed.
    Io,
}

impl Error {
    /// Whether the byte stream is lost after this error.
    ///
    /// Header errors are fatal: a frame's length cannot be trusted, so the stream cannot
    /// be resynchronised and the connection must be closed. Body errors (bad compression,
    /// failed decryption, malformed JSON, bad keys) leave the frame boundaries intact, so
    /// the stream can go on and the peer can be answered.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::Truncated { .. }
                | Error::BadVersion { .. }
                | Error::BadMsgType { .. }
                | Error::WrongDirection { .. }
                | Error::BadFlag { .. }
                | Error::FrameTooShort { .. }
                | Error::FrameTooLong { .. }
                | Error::BadHeaderCrc { .. }
        )
    }

    /// Whose fault the error was.
    ///
    /// [`Error::FrameTooLong`] is the peer's when decoding; the encoder reports a body over
    /// the limit as the same variant, which a caller of `encode` knows to be its own.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Io(_) => Fault::Io,
            Error::NoSessionKey | Error::KeyExhausted { .. } => Fault::Local,
            _ => Fault::Peer,
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Error {
        Error::MalformedBody {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                },
                "frame length 9000000 exceeds max_frame_len 1048576",
            ),
            (
                Error::WrongDirection {
                    msg_type: MsgType::Push,
                    accept: Direction::ClientToServer,
                },
                "push (6) is a server-to-client message, only client-to-server messages are accepted here",
            ),
            (
                Error::InflatedTooLarge { max: 8 },
                "compressed body inflates beyond max_inflated_len 8",
            ),
            (
                Error::NoSessionKey,
                "no session key: send a key request first",
            ),
            (
                Error::malformed("missing code"),
                "malformed body: missing code",
            ),
            (
                Error::TooManyTopics {
                    count: 1_000_000,
                    max: 64,
                },
                "topics: 1000000 patterns, more than max_topics 64",
            ),
            (
                Error::TopicTooLong {
                    index: 3,
                    len: 300,
                    max: 256,
                },
                "topics[3]: 300 bytes, more than max_topic_len 256",
            ),
            (
                Error::EncryptedBodyTooShort { len: 3 },
                "encrypted body of 3 bytes is shorter than nonce + tag (28 bytes)",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn header_errors_are_fatal_body_errors_are_not() {
        assert!(Error::BadVersion { version: 2 }.is_fatal());
        assert!(Error::FrameTooShort { length: 3 }.is_fatal());
        assert!(Error::Io(io::Error::other("x")).is_fatal());
        assert!(!Error::DecryptFailed.is_fatal());
        assert!(!Error::InflatedTooLarge { max: 1 }.is_fatal());
        assert!(!Error::malformed("x").is_fatal());
        assert!(!Error::NonContributoryKey.is_fatal());
        // A subscribe over the topic limits is a malformed body: the peer is answered.
        assert!(!Error::TooManyTopics { count: 2, max: 1 }.is_fatal());
        assert!(!Error::TopicTooLong {
            index: 0,
            len: 2,
            max: 1
        }
        .is_fatal());
    }

    #[test]
    fn faults() {
        assert_eq!(Error::NoSessionKey.fault(), Fault::Local);
        assert_eq!(Error::KeyExhausted { sealed: 1 }.fault(), Fault::Local);
        assert!(!Error::KeyExhausted { sealed: 1 }.is_fatal());
        assert_eq!(Error::Io(io::Error::other("x")).fault(), Fault::Io);
        assert_eq!(Error::DecryptFailed.fault(), Fault::Peer);
        assert_eq!(
            Error::TooManyTopics { count: 2, max: 1 }.fault(),
            Fault::Peer
        );
        assert_eq!(
            Error::TopicTooLong {
                index: 0,
                len: 2,
                max: 1
            }
            .fault(),
            Fault::Peer
        );
    }
}
