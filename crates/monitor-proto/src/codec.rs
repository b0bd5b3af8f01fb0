//! Framing: bytes ⇄ [`Frame`]s, with the length limit. Knows nothing of JSON or keys.
//!
//! [`FrameCodec`] passes bodies through untouched; the message codecs
//! ([`ClientCodec`](crate::ClientCodec), [`ServerCodec`](crate::ServerCodec)) put a
//! `FrameCodec` under their body layers.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::error::{Error, Initiator};
use crate::header::{
    check_prefix, Direction, Header, HeaderLimits, Prefix, HEADER_LEN, PREFIX_LEN,
};

/// Default `max_frame_len`: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1024 * 1024;

/// How many encoded but unwritten bytes a connection's write buffer should hold before
/// the connection stops producing more output (reading requests, taking pushes,
/// queueing reports) until its socket drains: enough to keep a socket's send buffer full
/// between two writes, little enough to bound every connection. The server and the
/// client both apply it; an embedding service may too.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;

/// One frame: a header and its body, exactly as on the wire (possibly compressed and/or
/// encrypted).
///
/// A decoded frame's body is a zero-copy slice of the read buffer. `Debug` shows the
/// body's length, never its bytes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Frame {
    /// The header. Its `length` is `45 + body.len()` for a decoded frame, and is derived
    /// from the body again when encoding.
    pub header: Header,
    /// The body bytes.
    pub body: Bytes,
}

impl Frame {
    /// A frame with `header.length` set from the body.
    ///
    /// A body too long for the `u32` length field saturates it; encoding such a frame
    /// fails with [`Error::FrameTooLong`].
    pub fn new(mut header: Header, body: Bytes) -> Frame {
        header.length = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
        Frame { header, body }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .field("body", &BodyLen(self.body.len()))
            .finish()
    }
}

/// A body in a `Debug` output: its length only (bodies may carry secrets).
pub(crate) struct BodyLen(pub(crate) usize);

impl fmt::Debug for BodyLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// Settings of a [`FrameCodec`]: `Copy`, so one builder can make a codec per connection.
/// Each setter changes one limit of the codecs it builds (as tokio-util's
/// `length_delimited::Builder`).
///
/// # Example
/// ```
/// use monitor_proto::header::Direction;
/// use monitor_proto::FrameCodec;
///
/// let codec = FrameCodec::builder()
///     .max_frame_len(64 * 1024)
///     .accept(Direction::ClientToServer)
///     .new_codec();
/// assert_eq!(codec.max_frame_len(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodecBuilder {
    max_frame_len: u32,
    accept: Option<Direction>,
    max_reserve: usize,
}

impl Default for FrameCodecBuilder {
    fn default() -> Self {
        FrameCodecBuilder::new()
    }
}

impl FrameCodecBuilder {
    /// The protocol's defaults: frames of up to [`DEFAULT_MAX_FRAME_LEN`], both directions
    /// accepted, room for a whole frame reserved at once.
    pub const fn new() -> FrameCodecBuilder {
        FrameCodecBuilder {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            accept: None,
            max_reserve: usize::MAX,
        }
    }

    /// Largest whole frame (header included) decoded or encoded; inclusive. A frame
    /// announcing more is refused after its first 12 bytes, never buffered.
    ///
    /// ```
    /// # use monitor_proto::FrameCodec;
    /// let codec = FrameCodec::builder().max_frame_len(4096).new_codec();
    /// assert_eq!(codec.max_frame_len(), 4096);
    /// ```
    pub fn max_frame_len(&mut self, bytes: u32) -> &mut Self {
        self.max_frame_len = bytes;
        self
    }

    /// Refuse frames travelling the other way as soon as their type is read
    /// ([`Error::WrongDirection`]). By default both directions are accepted.
    ///
    /// ```
    /// # use monitor_proto::{header::Direction, FrameCodec};
    /// let codec = FrameCodec::builder().accept(Direction::ClientToServer).new_codec();
    /// # let _ = codec;
    /// ```
    pub fn accept(&mut self, direction: Direction) -> &mut Self {
        self.accept = Some(direction);
        self
    }

    /// Once a frame is judged, room for all of it is reserved in the read buffer in one go
    /// if it is at most this many bytes (default: any size). A larger frame's room grows
    /// as its bytes arrive, so that the caller can first decide whether it may buffer it
    /// (see [`FrameCodec::pending_frame_len`]): a server budgeting memory for partial
    /// frames sets this.
    ///
    /// ```
    /// # use monitor_proto::FrameCodec;
    /// let codec = FrameCodec::builder().max_reserve(64 * 1024).new_codec();
    /// # let _ = codec;
    /// ```
    pub fn max_reserve(&mut self, bytes: usize) -> &mut Self {
        self.max_reserve = bytes;
        self
    }

    /// A frame codec with these settings.
    pub fn new_codec(&self) -> FrameCodec {
        FrameCodec {
            limits: HeaderLimits {
                max_frame_len: self.max_frame_len,
                accept: self.accept,
            },
            max_reserve: self.max_reserve,
            state: State::Prefix,
        }
    }

    /// `io` framed by a codec with these settings.
    pub fn new_framed<T: AsyncRead + AsyncWrite>(&self, io: T) -> Framed<T, FrameCodec> {
        Framed::new(io, self.new_codec())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 12 bytes that judge the next frame.
    Prefix,
    /// The prefix is judged; waiting for the whole frame.
    Rest(Prefix),
}

/// Decodes and encodes [`Frame`]s. Bodies are passed through untouched.
///
/// Decoding judges each frame from its first 12 bytes, then reserves room for the whole
/// frame once and hands out the body as a zero-copy slice of the read buffer. Any decoding
/// error is fatal ([`Error::is_fatal`]): the stream cannot be resynchronised. A stream that
/// ends in the middle of a frame ends with [`Error::ClosedMidFrame`].
///
/// # Example
/// ```
/// use bytes::BytesMut;
/// use monitor_proto::{Frame, FrameCodec, Header, MsgType, Uuid};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut wire = BytesMut::new();
/// let frame = Frame::new(Header::new(MsgType::Heartbeat, Uuid([b'u'; 33])), "".into());
/// codec.encode(&frame, &mut wire).unwrap();
/// assert_eq!(wire.len(), 45);
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(frame));
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    limits: HeaderLimits,
    max_reserve: usize,
    state: State,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the default settings ([`FrameCodecBuilder::new`]).
    pub fn new() -> FrameCodec {
        FrameCodecBuilder::new().new_codec()
    }

    /// A builder for other settings.
    pub const fn builder() -> FrameCodecBuilder {
        FrameCodecBuilder::new()
    }

    /// The configured `max_frame_len`.
    pub fn max_frame_len(&self) -> u32 {
        self.limits.max_frame_len
    }

    /// The whole length (header included) of the frame judged and waited for: `Some` once
    /// its first 12 bytes have been checked and until it is complete.
    pub fn pending_frame_len(&self) -> Option<usize> {
        match self.state {
            State::Prefix => None,
            State::Rest(prefix) => Some(prefix.length as usize),
        }
    }

    /// Changes `max_frame_len` on a live codec (e.g. on a configuration reload); a frame
    /// already judged keeps the limit it was judged with.
    pub fn set_max_frame_len(&mut self, bytes: u32) {
        self.limits.max_frame_len = bytes;
    }

    /// Writes one frame from borrowed parts: the header (its `length` is recomputed) and
    /// the body as it should appear on the wire. [`Encoder::encode`] does the same for a
    /// [`Frame`].
    ///
    /// # Errors
    /// [`Error::FrameTooLong`] ([`Initiator::Local`]) if `45 + body.len()` exceeds
    /// `max_frame_len`; nothing is written then.
    pub fn encode_parts(
        &self,
        header: &Header,
        body: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let header = self.sized_header(header, body.len())?;
        dst.reserve(HEADER_LEN + body.len());
        dst.put_slice(&header.to_bytes());
        dst.put_slice(body);
        Ok(())
    }

    /// `header` with its length set for a body of `body_len` bytes, if that fits the limit.
    #[inline]
    pub(crate) fn sized_header(&self, header: &Header, body_len: usize) -> Result<Header, Error> {
        match body_len.checked_add(HEADER_LEN) {
            // Fits in u32: max_frame_len is a u32.
            Some(length) if length <= self.limits.max_frame_len as usize => {
                let mut header = *header;
                header.length = length as u32;
                Ok(header)
            }
            _ => Err(self.too_long(body_len)),
        }
    }

    #[cold]
    fn too_long(&self, body_len: usize) -> Error {
        Error::FrameTooLong {
            length: HEADER_LEN as u64 + body_len as u64,
            max: self.limits.max_frame_len,
            initiator: Initiator::Local,
        }
    }

    /// The error for a stream that ended with `buffered` bytes of a frame.
    #[cold]
    pub(crate) fn closed_mid_frame(&self, buffered: usize) -> Error {
        Error::ClosedMidFrame {
            received: buffered,
            length: match self.state {
                State::Prefix => None,
                State::Rest(prefix) => Some(prefix.length),
            },
        }
    }
}

/// A frame seen where it lies in the read buffer (see [`FrameCodec::peek`]). `Debug` shows
/// the body's length, never its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameRef<'a> {
    /// The header.
    pub header: Header,
    /// The body bytes as on the wire, borrowed from the buffer.
    pub body: &'a [u8],
}

impl fmt::Debug for FrameRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameRef")
            .field("header", &self.header)
            .field("body", &BodyLen(self.body.len()))
            .finish()
    }
}

impl FrameRef<'_> {
    /// The whole frame's length: what the caller advances the buffer by once done.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Never true: a frame has at least its header. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FrameCodec {
    /// The next complete frame at the start of `src`, judged by the same checks as
    /// [`Decoder::decode`] but left in place: nothing is split off or allocated. For a
    /// reader that handles each frame before reading on and keeps no copy (a load
    /// generator, a relay). The caller advances `src` by [`FrameRef::len`] once done with
    /// it; `Ok(None)` means more bytes are needed (room for the frame is reserved as by
    /// `decode`).
    ///
    /// Do not mix with `decode` on a frame `decode` has started.
    ///
    /// # Errors
    /// As `decode`: the header is bad, or the frame is over `max_frame_len`.
    ///
    /// ```
    /// use bytes::{Buf, BytesMut};
    /// use monitor_proto::{Frame, FrameCodec, Header, MsgType, Uuid};
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut codec = FrameCodec::new();
    /// let mut buf = BytesMut::new();
    /// let header = Header::new(MsgType::Report, Uuid([b'u'; 33]));
    /// codec.encode(Frame::new(header, "{}".into()), &mut buf).unwrap();
    /// let frame = codec.peek(&mut buf).unwrap().expect("a whole frame");
    /// assert_eq!(frame.body, b"{}");
    /// let len = frame.len();
    /// buf.advance(len);
    /// assert!(buf.is_empty());
    /// ```
    #[inline]
    pub fn peek<'a>(&mut self, src: &'a mut BytesMut) -> Result<Option<FrameRef<'a>>, Error> {
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let prefix = check_prefix(&src[..PREFIX_LEN], &self.limits)?;
        let length = prefix.length as usize;
        if src.len() < length {
            if length <= self.max_reserve {
                src.reserve(length - src.len());
            }
            return Ok(None);
        }
        let header = prefix.with_uuid(src);
        Ok(Some(FrameRef {
            header,
            body: &src[HEADER_LEN..length],
        }))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let prefix = match self.state {
            State::Rest(prefix) => prefix,
            State::Prefix => {
                if src.len() < PREFIX_LEN {
                    return Ok(None);
                }
                // Judge the frame before buffering it: a bad or oversized header is refused
                // here, after 12 bytes, whatever it announces.
                check_prefix(&src[..PREFIX_LEN], &self.limits)?
            }
        };
        let length = prefix.length as usize;
        if src.len() < length {
            // Room for the whole frame, reserved once (unless the caller budgets it).
            if length <= self.max_reserve {
                src.reserve(length - src.len());
            }
            self.state = State::Rest(prefix);
            return Ok(None);
        }
        self.state = State::Prefix;
        let header = prefix.with_uuid(src);
        src.advance(HEADER_LEN);
        let body = src.split_to(length - HEADER_LEN).freeze();
        Ok(Some(Frame { header, body }))
    }

    /// As `decode`, then: bytes left that are not a whole frame are
    /// [`Error::ClosedMidFrame`] (tokio-util's default would be an `io::Error`).
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(self.closed_mid_frame(src.len())),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_parts(&frame.header, &frame.body, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_parts(&frame.header, &frame.body, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{MsgType, Uuid};

    const UUID: Uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new();
        let mut out = BytesMut::new();
        for f in frames {
            codec.encode(f, &mut out).unwrap();
        }
        out
    }

    fn sample() -> Vec<Frame> {
        vec![
            Frame::new(Header::new(MsgType::Heartbeat, UUID), Bytes::new()),
            Frame::new(
                Header::new(MsgType::Report, UUID).with_compress(false),
                Bytes::from_static(br#"{"code":"demo"}"#),
            ),
            Frame::new(
                Header::new(MsgType::Push, UUID).with_cipher(true),
                Bytes::from(vec![7u8; 300]),
            ),
        ]
    }

    #[test]
    fn decodes_back_to_back_frames_and_waits_for_more() {
        let frames = sample();
        let mut buf = encoded(&frames);
        buf.extend_from_slice(&[1, 3]); // the start of a next frame
        let mut codec = FrameCodec::new();
        for want in &frames {
            assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(want));
        }
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[1, 3]);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let frames = sample();
        let wire = encoded(&frames);
        for split in 0..=wire.len() {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split at {split}");
        }
    }

    #[test]
    fn body_is_a_slice_of_the_read_buffer() {
        let mut buf = encoded(&sample()[1..2]);
        let start = buf.as_ptr() as usize;
        let frame = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.body.as_ptr() as usize, start + HEADER_LEN);
    }

    #[test]
    fn oversized_frame_refused_after_twelve_bytes_without_buffering() {
        let mut raw = Header::new(MsgType::Report, UUID).to_bytes();
        raw[4..8].copy_from_slice(&2_000_000_000u32.to_le_bytes());
        let crc = crc32fast::hash(&raw[..8]);
        raw[8..12].copy_from_slice(&crc.to_le_bytes());
        let mut buf = BytesMut::from(&raw[..PREFIX_LEN]);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            Error::FrameTooLong {
                length: 2_000_000_000,
                max: DEFAULT_MAX_FRAME_LEN,
                initiator: Initiator::Remote,
            }
        ));
        assert!(buf.capacity() < 4096, "reserved {}", buf.capacity());
    }

    #[test]
    fn whole_frame_reserved_once_judged() {
        let frame = Frame::new(
            Header::new(MsgType::Report, UUID),
            Bytes::from(vec![b'x'; 10_000]),
        );
        let wire = encoded(&[frame]);
        let mut buf = BytesMut::from(&wire[..PREFIX_LEN]);
        let mut codec = FrameCodec::new();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= wire.len());
    }

    #[test]
    fn a_frame_over_max_reserve_is_not_reserved_but_still_decodes() {
        let frame = Frame::new(
            Header::new(MsgType::Report, UUID),
            Bytes::from(vec![b'x'; 100_000]),
        );
        let wire = encoded(std::slice::from_ref(&frame));
        let mut codec = FrameCodec::builder().max_reserve(65_536).new_codec();
        let mut buf = BytesMut::from(&wire[..PREFIX_LEN]);
        assert_eq!(codec.pending_frame_len(), None);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.pending_frame_len(), Some(wire.len()));
        assert!(buf.capacity() < 65_536, "reserved {}", buf.capacity());
        buf.extend_from_slice(&wire[PREFIX_LEN..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
        assert_eq!(codec.pending_frame_len(), None);
    }

    #[test]
    fn peek_sees_the_frames_decode_gives_without_taking_them() {
        let frames = sample();
        let wire = encoded(&frames);
        for split in [0, 5, PREFIX_LEN, 50, wire.len()] {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut rest = &wire[split..];
            let mut got = Vec::new();
            loop {
                match codec.peek(&mut buf).unwrap() {
                    Some(f) => {
                        got.push(Frame {
                            header: f.header,
                            body: Bytes::copy_from_slice(f.body),
                        });
                        let len = f.len();
                        buf.advance(len);
                    }
                    None if rest.is_empty() => break,
                    None => {
                        buf.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
            assert_eq!(got, frames, "split at {split}");
        }
        let mut bad = encoded(&frames[..1]);
        bad[0] = 9;
        assert!(FrameCodec::new().peek(&mut bad).is_err());
    }

    #[test]
    fn limit_is_inclusive_both_ways() {
        let mut builder = FrameCodec::builder();
        builder.max_frame_len(100);
        let mut codec = builder.new_codec();
        let fits = Frame::new(Header::new(MsgType::Report, UUID), vec![b' '; 55].into());
        let over = Frame::new(Header::new(MsgType::Report, UUID), vec![b' '; 56].into());
        let mut buf = BytesMut::new();
        codec.encode(&fits, &mut buf).unwrap();
        assert_eq!(buf.len(), 100);
        let err = codec.encode(&over, &mut buf).unwrap_err();
        assert!(matches!(
            err,
            Error::FrameTooLong {
                length: 101,
                max: 100,
                initiator: Initiator::Local,
            }
        ));
        assert_eq!(buf.len(), 100, "nothing written on error");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(fits));
    }

    #[test]
    fn header_length_is_derived_from_the_body() {
        let mut stale = Header::new(MsgType::Report, UUID);
        stale.length = 9999;
        let mut buf = BytesMut::new();
        FrameCodec::new()
            .encode(
                Frame {
                    header: stale,
                    body: Bytes::from_static(b"{}"),
                },
                &mut buf,
            )
            .unwrap();
        assert_eq!(&buf[4..8], &47u32.to_le_bytes());
    }

    #[test]
    fn direction_is_enforced_before_the_body() {
        let mut codec = FrameCodec::builder()
            .accept(Direction::ClientToServer)
            .new_codec();
        let wire = encoded(&[Frame::new(
            Header::new(MsgType::Push, UUID),
            Bytes::from(vec![0; 500]),
        )]);
        let mut buf = BytesMut::from(&wire[..PREFIX_LEN]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(Error::WrongDirection {
                msg_type: MsgType::Push,
                ..
            })
        ));
    }

    #[test]
    fn a_stream_closed_mid_frame_says_how_far_it_got() {
        let wire = encoded(&sample()[1..2]);
        let mut codec = FrameCodec::new();
        // Nothing left: a clean end.
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
        // A whole frame, then the end.
        let mut buf = wire.clone();
        assert!(codec.decode_eof(&mut buf).unwrap().is_some());
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        // Part of a header: no length judged yet.
        let mut buf = BytesMut::from(&wire[..5]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            Error::ClosedMidFrame {
                received: 5,
                length: None
            }
        ));
        assert!(err.is_fatal());
        assert_eq!(err.fault(), crate::Fault::Peer);
        // Part of a judged frame: its length is known.
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&wire[..20]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(
            matches!(err, Error::ClosedMidFrame { received: 20, length: Some(l) } if l as usize == wire.len()),
            "{err:?}"
        );
    }
}
