//! The message format on the cluster's Redis channel: one header line, then the report's
//! JSON exactly as it was reported.
//!
//! ```text
//! m1 <node_id> <epoch> <seq>\n<report JSON>
//! ```
//!
//! - `m1`: the format's version, so that a later format can share a channel with this
//!   one during an upgrade (a node drops, and counts, what it cannot read).
//! - `node_id`: the publishing node ([`crate::config::check_node_id`]: printable ASCII,
//!   no spaces). A node ignores its own messages, which Redis sends back to it.
//! - `epoch`: the publishing node's start time (unix milliseconds), so that a restarted
//!   node, whose `seq` starts again at 1, is not taken for a stream of duplicates.
//! - `seq`: the node's publish counter, from 1. Every report a node accepts takes the
//!   next number, including those it then fails to publish, so a receiver that sees a
//!   gap knows how many it missed. A reporter's reports all pass through its own node in
//!   order, so per-node order is per-reporter order.
//!
//! Plain text up to the newline, so `redis-cli SUBSCRIBE monitor:reports` shows who
//! published what; the body is binary-safe (Redis strings are bytes).

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::MAX_NODE_ID_LEN;

/// The first bytes of every message of this format.
pub(crate) const MAGIC: &[u8] = b"m1 ";
/// Longest header line, newline included: `m1 `, a node id, two numbers of at most 20
/// digits, two spaces and the newline.
pub(crate) const MAX_HEADER_LEN: usize = MAGIC.len() + MAX_NODE_ID_LEN + 1 + 20 + 1 + 20 + 1;

/// A message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    /// The node that published it.
    pub(crate) node_id: &'a str,
    /// That node's start time, unix milliseconds.
    pub(crate) epoch: u64,
    /// That node's publish counter.
    pub(crate) seq: u64,
}

/// Why a message on the channel cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// It does not start with `m1 `: another format, or not ours at all.
    #[error("not an m1 message")]
    NotM1,
    /// No newline within [`MAX_HEADER_LEN`] bytes.
    #[error("no header line within {MAX_HEADER_LEN} bytes")]
    NoHeaderLine,
    /// The header line is not `m1 <node_id> <epoch> <seq>`.
    #[error("malformed header: {0}")]
    BadHeader(&'static str),
}

/// The message for a report.
pub(crate) fn encode(node_id: &str, epoch: u64, seq: u64, report: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + report.len());
    out.put_slice(MAGIC);
    out.put_slice(node_id.as_bytes());
    // Writing to a BytesMut cannot fail: it grows.
    let _ = writeln!(out, " {epoch} {seq}");
    out.put_slice(report);
    out.freeze()
}

/// Reads a message: its header, and the report's bytes (a slice of `message`, no copy).
/// The report itself is checked by the report parser, as a type-7 report's is.
pub(crate) fn decode(message: &Bytes) -> Result<(Header<'_>, Bytes), WireError> {
    if !message.starts_with(MAGIC) {
        return Err(WireError::NotM1);
    }
    let head = &message[..message.len().min(MAX_HEADER_LEN)];
    let newline = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(WireError::NoHeaderLine)?;
    let line = std::str::from_utf8(&message[MAGIC.len()..newline])
        .map_err(|_| WireError::BadHeader("not ASCII"))?;
    let mut words = line.split(' ');
    let node_id = words.next().unwrap_or_default();
    if crate::config::check_node_id(node_id).is_err() {
        return Err(WireError::BadHeader("bad node id"));
    }
    let epoch = number(words.next()).ok_or(WireError::BadHeader("bad epoch"))?;
    let seq = number(words.next()).ok_or(WireError::BadHeader("bad seq"))?;
    if words.next().is_some() {
        return Err(WireError::BadHeader("extra fields"));
    }
    let header = Header {
        node_id,
        epoch,
        seq,
    };
    Ok((header, message.slice(newline + 1..)))
}

/// A decimal number: digits only (no sign, no spaces), at most 20 of them, within u64.
fn number(word: Option<&str>) -> Option<u64> {
    let word = word?;
    if word.is_empty() || word.len() > 20 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_reads_back() {
        let m = encode("web-1:9503", 1_796_000_000_000, 7, br#"{"code":"a"}"#);
        assert_eq!(&m[..], b"m1 web-1:9503 1796000000000 7\n{\"code\":\"a\"}");
        let (h, body) = decode(&m).unwrap();
        assert_eq!(
            h,
            Header {
                node_id: "web-1:9503",
                epoch: 1_796_000_000_000,
                seq: 7
            }
        );
        assert_eq!(&body[..], br#"{"code":"a"}"#);
    }

    #[test]
    fn the_longest_header_fits() {
        let id = "n".repeat(MAX_NODE_ID_LEN);
        let m = encode(&id, u64::MAX, u64::MAX, b"{}");
        assert_eq!(m.len(), MAX_HEADER_LEN + 2);
        assert_eq!(decode(&m).unwrap().0.seq, u64::MAX);
    }

    #[test]
    fn bad_messages_say_why() {
        for (bytes, why) in [
            (&b""[..], WireError::NotM1),
            (b"m2 a 1 2\n{}", WireError::NotM1),
            (b"{\"code\":\"a\"}", WireError::NotM1),
            (b"m1 a 1 2", WireError::NoHeaderLine),
            (b"m1 a 1\n{}", WireError::BadHeader("bad seq")),
            (b"m1 a 1 2 3\n{}", WireError::BadHeader("extra fields")),
            (b"m1 a -1 2\n{}", WireError::BadHeader("bad epoch")),
            (b"m1 a 1 +2\n{}", WireError::BadHeader("bad seq")),
            (
                b"m1 a 1 18446744073709551616\n{}",
                WireError::BadHeader("bad seq"),
            ),
            (b"m1  1 2\n{}", WireError::BadHeader("bad node id")),
            (b"m1 a\xff 1 2\n{}", WireError::BadHeader("not ASCII")),
            (b"m1 a\x01 1 2\n{}", WireError::BadHeader("bad node id")),
        ] {
            let m = Bytes::copy_from_slice(bytes);
            assert_eq!(decode(&m).unwrap_err(), why, "{:?}", m);
        }
        let mut long = b"m1 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEADER_LEN));
        long.extend_from_slice(b" 1 2\n{}");
        assert_eq!(
            decode(&Bytes::from(long)).unwrap_err(),
            WireError::NoHeaderLine
        );
    }

    fn node_id() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[!-~]{1,64}").unwrap()
    }

    proptest! {
        #[test]
        fn round_trip(
            id in node_id(),
            epoch in any::<u64>(),
            seq in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let m = encode(&id, epoch, seq, &body);
            let (h, b) = decode(&m).unwrap();
            prop_assert_eq!(h, Header { node_id: &id, epoch, seq });
            prop_assert_eq!(&b[..], &body[..]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&Bytes::from(bytes));
        }

        #[test]
        fn near_misses_never_panic(
            tail in proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\n'), Just(b'1'), Just(b'a'), any::<u8>()],
                0..200,
            )
        ) {
            let mut m = MAGIC.to_vec();
            m.extend(tail);
            let _ = decode(&Bytes::from(m));
        }
    }
}
