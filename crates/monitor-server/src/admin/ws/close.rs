//! Why a WebSocket subscriber's connection ended ([`WsClose`]): how each reason reads in
//! the close log, and the close frame that tells the peer (its code, and the reason cut to
//! fit); also how a failed read or a refused subscribe becomes one.

use axum::extract::ws::{close_code, CloseFrame, Utf8Bytes};

/// The longest close reason a close frame can carry (RFC 6455 §5.5: 125 bytes of
/// payload, 2 of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// Why a WebSocket subscriber's connection ended.
#[derive(Debug)]
pub(super) enum WsClose {
    /// The peer sent a close frame, or its stream ended.
    PeerClosed,
    /// Reading or writing failed.
    Io(String),
    /// A message over `max_frame_len`.
    TooLarge(String),
    /// A binary message.
    Binary,
    /// No subscribe within `frame_timeout_secs` of the upgrade.
    NoSubscribe(u64),
    /// Nothing received for `idle_timeout_secs` (pings unanswered).
    Idle(u64),
    /// The socket took nothing for `write_timeout_secs`.
    WriteTimeout(u64),
    /// A subscribe refused: answered, then closed.
    Refused(String),
    /// The hub evicted it (slow-consumer policy `disconnect`).
    SlowConsumer,
    /// An operator, or a reload that removed its token.
    Killed(Box<str>),
    /// The server is shutting down (queued pushes were delivered first).
    Shutdown,
}

impl WsClose {
    /// The close frame to send, when the socket can still take one.
    pub(super) fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            WsClose::PeerClosed | WsClose::Io(_) | WsClose::WriteTimeout(_) => return None,
            WsClose::TooLarge(_) => (close_code::SIZE, self.to_string()),
            WsClose::Binary => (close_code::UNSUPPORTED, self.to_string()),
            WsClose::NoSubscribe(_) | WsClose::Idle(_) | WsClose::Shutdown => {
                (close_code::AWAY, self.to_string())
            }
            WsClose::Refused(msg) => (close_code::POLICY, msg.clone()),
            WsClose::SlowConsumer | WsClose::Killed(_) => (close_code::POLICY, self.to_string()),
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(truncate(&reason, MAX_CLOSE_REASON)),
        })
    }

    /// Whether the peer caused it (logged as a warning).
    pub(super) fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            WsClose::TooLarge(_)
                | WsClose::Binary
                | WsClose::NoSubscribe(_)
                | WsClose::Idle(_)
                | WsClose::WriteTimeout(_)
                | WsClose::Refused(..)
                | WsClose::SlowConsumer
        )
    }
}

impl std::fmt::Display for WsClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsClose::PeerClosed => f.write_str("closed by the peer"),
            WsClose::Io(e) => write!(f, "i/o error: {e}"),
            WsClose::TooLarge(e) => write!(f, "message too large: {e}"),
            WsClose::Binary => f.write_str("binary messages are not accepted"),
            WsClose::NoSubscribe(secs) => {
                write!(f, "no subscribe in {secs} s (frame_timeout_secs)")
            }
            WsClose::Idle(secs) => write!(f, "idle for {secs} s (idle_timeout_secs)"),
            WsClose::WriteTimeout(secs) => {
                write!(
                    f,
                    "the socket took nothing for {secs} s (write_timeout_secs)"
                )
            }
            WsClose::Refused(msg) => write!(f, "refused: {msg}"),
            WsClose::SlowConsumer => f.write_str("slow consumer: its queue was full"),
            WsClose::Killed(why) => write!(f, "closed: {why}"),
            WsClose::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `msg` of a refusal's envelope, for its close frame.
pub(super) fn refusal_text(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        msg: String,
    }
    serde_json::from_slice::<Envelope>(json).map_or_else(|_| "refused".to_owned(), |e| e.msg)
}

/// A failed read: a message over the limit is said so (1009); anything else is the
/// socket's end.
pub(super) fn read_error(e: axum::Error) -> WsClose {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(c)) => WsClose::TooLarge(c.to_string()),
        Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            WsClose::PeerClosed
        }
        _ => WsClose::Io(inner.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let frame = WsClose::Refused(long).close_frame().unwrap();
        assert!(frame.reason.len() <= MAX_CLOSE_REASON);
        assert!(frame.reason.len() >= MAX_CLOSE_REASON - 1);
        assert_eq!(frame.code, close_code::POLICY);
    }

    #[test]
    fn refusal_texts() {
        assert_eq!(
            refusal_text(br#"{"errCode":-1,"msg":"unauthorized","data":null}"#),
            "unauthorized"
        );
        assert_eq!(refusal_text(b"not json"), "refused");
    }
}
