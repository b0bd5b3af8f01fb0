//! Why a connection ended, as its close log says.

use std::fmt;
use std::io;

use monitor_proto::Error as ProtoError;

use crate::cmd::Ending;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Close {
    /// The client closed it.
    Eof,
    /// The client closed it in the middle of a frame.
    EofMidFrame(usize),
    /// No complete frame for `idle_timeout_secs`.
    Idle(u64),
    /// A frame still incomplete `frame_timeout_secs` after its first bytes.
    FrameTimeout {
        /// The timeout.
        secs: u64,
        /// Bytes of the frame received.
        received: usize,
        /// Its announced length, once its first 12 bytes were judged.
        length: Option<usize>,
    },
    /// The socket took none of the pending output for `write_timeout_secs`.
    WriteTimeout {
        /// The timeout.
        secs: u64,
        /// Bytes waiting to be written.
        pending: usize,
    },
    /// A header that breaks the protocol; the stream cannot go on.
    Protocol(ProtoError),
    /// A handler answered and ended the connection (a malformed subscribe, ...).
    Refused(Ending),
    /// Its push queue was full under `slow_consumer = "disconnect"`.
    SlowConsumer,
    /// Its session key has sealed as many bodies as its nonces allow.
    KeyExhausted,
    /// Reading or writing failed.
    Io(io::Error),
    /// The server is shutting down.
    Shutdown,
    /// Someone asked the server to close it (a reload that removed its token, an
    /// operator), for this reason.
    Killed(String),
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Eof => f.write_str("closed by peer"),
            Close::EofMidFrame(n) => {
                write!(f, "closed by peer with {n} bytes of an unfinished frame")
            }
            Close::Idle(secs) => write!(f, "idle timeout: no complete frame in {secs} s"),
            Close::FrameTimeout {
                secs,
                received,
                length: Some(length),
            } => write!(
                f,
                "frame timeout: {received} of {length} bytes after {secs} s (frame_timeout_secs)"
            ),
            Close::FrameTimeout {
                secs,
                received,
                length: None,
            } => write!(
                f,
                "frame timeout: {received} bytes of a header after {secs} s (frame_timeout_secs)"
            ),
            Close::WriteTimeout { secs, pending } => write!(
                f,
                "write timeout: the socket took none of {pending} pending bytes in {secs} s \
                 (write_timeout_secs)"
            ),
            Close::Protocol(e) => write!(f, "protocol error: {e}"),
            Close::Refused(Ending::MalformedSubscribe) => f.write_str("malformed subscribe"),
            Close::Refused(Ending::Unauthorized) => f.write_str("unauthorized: wrong token"),
            Close::Refused(Ending::ForbiddenSubscribe) => f.write_str("forbidden subscribe"),
            Close::SlowConsumer => {
                f.write_str("slow consumer: push queue full (slow_consumer = \"disconnect\")")
            }
            Close::KeyExhausted => {
                f.write_str("session key exhausted: the client must exchange a new key")
            }
            Close::Io(e) => write!(f, "i/o error: {e}"),
            Close::Shutdown => f.write_str("server shutdown"),
            Close::Killed(why) => write!(f, "closed by the server: {why}"),
        }
    }
}

impl Close {
    /// Whether the peer (or its network) is to blame: such closes are logged as warnings.
    pub(crate) fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Close::Protocol(_)
                | Close::Refused(_)
                | Close::SlowConsumer
                | Close::Idle(_)
                | Close::FrameTimeout { .. }
                | Close::WriteTimeout { .. }
                | Close::EofMidFrame(_)
        )
    }
}
