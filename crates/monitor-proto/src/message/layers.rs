//! What the client and server codecs share: a frame codec under the body layers, their
//! limits, and the rules for writing a frame. Private: each role's codec is the API.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::codec::{Frame, FrameCodec, FrameCodecBuilder};
use crate::error::{BodyError, Error, Initiator};
use crate::header::{Direction, Header, MsgType};
use crate::layer::compress::inflate;
use crate::layer::crypto::{SessionKey, OVERHEAD};
use crate::message::DEFAULT_MAX_INFLATED_LEN;

/// The settings both message codec builders have: the frame codec's, and the inflate
/// limit. `Copy`, as the builders are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) frames: FrameCodecBuilder,
    pub(crate) max_inflated_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new()
    }
}

impl Limits {
    pub(crate) const fn new() -> Limits {
        Limits {
            frames: FrameCodecBuilder::new(),
            max_inflated_len: DEFAULT_MAX_INFLATED_LEN,
        }
    }

    /// The layers of a codec that receives frames travelling `accept`.
    pub(crate) fn build(&self, accept: Direction) -> Layers {
        let mut frames = self.frames;
        frames.accept(accept);
        Layers {
            frames: frames.new_codec(),
            max_inflated_len: self.max_inflated_len,
        }
    }
}

/// A frame codec and the inflate limit: the part of a message codec that is not its key.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    pub(crate) frames: FrameCodec,
    pub(crate) max_inflated_len: usize,
}

impl Layers {
    /// The next frame, with `open` applied to it (the role's body layers).
    #[inline]
    pub(crate) fn decode(
        &mut self,
        src: &mut BytesMut,
        open: impl FnOnce(&Self, &Header, Bytes) -> Result<Bytes, BodyError>,
    ) -> Result<Option<super::Received>, Error> {
        let Some(Frame { header, body }) = self.frames.decode(src)? else {
            return Ok(None);
        };
        let body = open(self, &header, body);
        Ok(Some(super::Received { header, body }))
    }

    /// `decode`, and the end of the stream in the middle of a frame is
    /// [`Error::ClosedMidFrame`].
    pub(crate) fn decode_eof(
        &mut self,
        src: &mut BytesMut,
        open: impl FnOnce(&Self, &Header, Bytes) -> Result<Bytes, BodyError>,
    ) -> Result<Option<super::Received>, Error> {
        match self.decode(src, open)? {
            Some(received) => Ok(Some(received)),
            None if src.is_empty() => Ok(None),
            None => Err(self.frames.closed_mid_frame(src.len())),
        }
    }

    /// Inflates `body` if the header says it is compressed.
    #[inline]
    pub(crate) fn inflate(&self, header: &Header, body: Bytes) -> Result<Bytes, BodyError> {
        if header.compress {
            inflate(&body, self.max_inflated_len)
        } else {
            Ok(body)
        }
    }

    /// Writes one frame: `header` (its length set here) and `body` as it goes on the wire,
    /// sealed under `key` if there is one (which sets the cipher flag).
    ///
    /// # Errors
    /// [`Error::FrameTooLong`] ([`Initiator::Local`]) over `max_frame_len`; the key's
    /// errors. Nothing is written on error.
    #[inline]
    pub(crate) fn write(
        &self,
        header: &Header,
        body: &[u8],
        key: Option<&SessionKey>,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        match key {
            Some(key) => {
                self.frames.sized_header(header, body.len() + OVERHEAD)?;
                key.seal_frame(header, body, dst)
            }
            None => self.frames.encode_parts(header, body, dst),
        }
    }
}

/// Refuses to encode a message this end does not send.
///
/// # Errors
/// [`Error::WrongDirection`] ([`Initiator::Local`]) if `msg_type` does not travel `sends`.
#[inline]
pub(crate) fn check_sends(msg_type: MsgType, sends: Direction) -> Result<(), Error> {
    if msg_type.direction() == sends {
        Ok(())
    } else {
        Err(Error::WrongDirection {
            msg_type,
            expected: sends,
            initiator: Initiator::Local,
        })
    }
}

/// A session key needed to encrypt, or [`BodyError::NoSessionKey`].
#[inline]
pub(crate) fn need_key(key: Option<&SessionKey>) -> Result<&SessionKey, BodyError> {
    key.ok_or(BodyError::NoSessionKey)
}
