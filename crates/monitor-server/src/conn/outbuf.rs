//! A connection's output: encoded frames waiting for the socket, counted as they are
//! written, with the clock of how long the socket has taken none of them.

use bytes::{Buf, BytesMut};
use monitor_proto::MsgType;
use tokio::time::Instant;

use crate::stats::FrameTally;

/// Encoded frames not yet written. Frames are counted when their last byte is written,
/// not when they are encoded, so that a close log never counts a frame the drain deadline
/// discarded.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    buf: BytesMut,
    /// Bytes of the frame at the head of `buf` still to write, when a write ended inside
    /// it (0: `buf` starts at a frame boundary). A frame's length fits its header's 32
    /// bits; 32 bits here keep the connection's task 8 bytes smaller.
    head_rest: u32,
    /// That frame's type (its header may be written already).
    head_type: u8,
    /// Frames written whole and not yet added to the shared stats, by type.
    pub(crate) tally: FrameTally,
    /// Frames written whole.
    written: u64,
    /// Bytes written.
    bytes_written: u64,
    /// Since when output has been pending without the socket taking any of it.
    stalled_since: Option<Instant>,
}

impl OutBuf {
    /// The bytes to write.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffer to encode whole frames into.
    pub(crate) fn encoder(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Frames written whole so far.
    pub(crate) fn frames_written(&self) -> u64 {
        self.written
    }

    /// Bytes written so far.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Starts the stall clock if output is pending and it is not running.
    pub(crate) fn note_pending(&mut self) {
        if !self.buf.is_empty() && self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
    }

    /// Since when the socket has taken none of the pending output, if any is pending.
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.stalled_since.filter(|_| !self.buf.is_empty())
    }

    /// `n` bytes were written: counts the frames they completed, drops them, and restarts
    /// the stall clock. Once everything is written the buffer is released, so an idle
    /// connection holds none.
    pub(crate) fn advance(&mut self, n: usize) {
        // Walk the frame boundaries inside the written part: `buf` holds whole frames
        // after `head_rest`, each announcing its length at bytes 4..8.
        let (mut end, mut msg_type) = if self.head_rest > 0 {
            (self.head_rest as usize, self.head_type)
        } else {
            (frame_len_at(&self.buf, 0), type_at(&self.buf, 0))
        };
        while end <= n {
            self.written += 1;
            if let Some(t) = MsgType::from_u8(msg_type) {
                self.tally.note(t);
            }
            if end == n {
                break;
            }
            msg_type = type_at(&self.buf, end);
            end += frame_len_at(&self.buf, end);
        }
        self.head_rest = u32::try_from(end.saturating_sub(n)).unwrap_or(u32::MAX);
        self.head_type = msg_type;
        self.bytes_written += n as u64;
        self.buf.advance(n);
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.stalled_since = None;
        } else {
            self.stalled_since = Some(Instant::now());
        }
    }

    /// Frames encoded and not (entirely) written.
    pub(crate) fn unwritten_frames(&self) -> u64 {
        let mut count = 0;
        let mut at = self.head_rest as usize;
        if at > 0 {
            count += 1;
        }
        while at < self.buf.len() {
            count += 1;
            at += frame_len_at(&self.buf, at);
        }
        count
    }
}

/// The type byte of the frame that starts at `at` in an encode buffer (byte 1 of its
/// header; 0, no type, if the buffer ends first).
fn type_at(buf: &[u8], at: usize) -> u8 {
    buf.get(at + 1).copied().unwrap_or(0)
}

/// The length of the frame that starts at `at` in an encode buffer (bytes 4..8 of its
/// header), at least 1 so that a walk always moves on.
fn frame_len_at(buf: &[u8], at: usize) -> usize {
    buf.get(at + 4..at + 8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(buf.len().saturating_sub(at), |b| {
            u32::from_le_bytes(b) as usize
        })
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use monitor_proto::{Frame, FrameCodec, Header, MsgType, Uuid, HEADER_LEN};
    use tokio_util::codec::Encoder;

    /// Frames are counted when their last byte is written, whatever the write sizes; what
    /// is left at the close is counted as unsent (it used to be counted as sent).
    #[test]
    fn frames_are_counted_as_written_and_the_rest_as_unsent() {
        for chunk in [1usize, 7, 44, 45, 46, 90, 1000] {
            let mut out = OutBuf::default();
            let mut codec = FrameCodec::new();
            for _ in 0..20 {
                let header = Header::new(MsgType::HeartbeatReply, Uuid([b'h'; 33]));
                codec
                    .encode(Frame::new(header, Bytes::new()), out.encoder())
                    .unwrap();
            }
            let total = out.len();
            let mut written = 0;
            while written + chunk <= total / 2 {
                out.advance(chunk);
                written += chunk;
                assert_eq!(
                    out.frames_written() as usize,
                    written / HEADER_LEN,
                    "chunk {chunk}"
                );
            }
            assert_eq!(
                out.frames_written() + out.unwritten_frames(),
                20,
                "chunk {chunk}: written {written}"
            );
            out.advance(total - written);
            assert_eq!((out.frames_written(), out.unwritten_frames()), (20, 0));
            assert!(out.stalled_since().is_none());
        }
    }
}
