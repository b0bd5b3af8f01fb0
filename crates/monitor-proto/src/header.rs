//! The 45-byte frame header.
//!
//! ```text
//!  0         1          2        3          4                 8                12                       45
//! +---------+----------+--------+----------+-----------------+-----------------+------------------------+
//! | version | msg_type | cipher | compress | length (u32 LE) | crc32 (u32 LE)  | uuid (33 opaque bytes) |
//! +---------+----------+--------+----------+-----------------+-----------------+------------------------+
//!  `length` counts the whole frame, header included; `crc32` covers bytes 0..8.
//! ```
//!
//! The first [`PREFIX_LEN`] bytes are enough to judge a frame, so a peer announcing a bad
//! or huge frame is refused by the codecs before anything else is buffered (see
//! [`FrameCodec::pending_frame_len`](crate::FrameCodec::pending_frame_len)).

use bytes::{BufMut, BytesMut};
use std::fmt;

use crate::error::{Error, Initiator};
pub use crate::msg_type::{Direction, MsgType};

/// Length of the header that opens every frame.
pub const HEADER_LEN: usize = 45;
/// Number of leading header bytes that carry everything needed to judge a frame:
/// version, type, flags, length and the CRC over them.
pub const PREFIX_LEN: usize = 12;
/// Length of the uuid field.
pub const UUID_LEN: usize = 33;
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// The 33-byte client id carried by every frame. Replies and pushes carry the recipient's.
///
/// The bytes are opaque: the PHP clients send 32 hex characters of an md5 and one letter,
/// but nothing here requires text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; UUID_LEN]);

impl Uuid {
    /// The uuid of all zero bytes.
    pub const ZERO: Uuid = Uuid([0; UUID_LEN]);

    /// Copies a uuid out of a slice of exactly [`UUID_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Uuid> {
        <[u8; UUID_LEN]>::try_from(bytes).ok().map(Uuid)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; UUID_LEN] {
        &self.0
    }
}

impl From<[u8; UUID_LEN]> for Uuid {
    fn from(bytes: [u8; UUID_LEN]) -> Self {
        Uuid(bytes)
    }
}

/// Printable ASCII uuids (the usual case) are shown as text, anything else as hex.
impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic()) {
            self.0
                .iter()
                .try_for_each(|&b| fmt::Write::write_char(f, b as char))
        } else {
            f.write_str("0x")?;
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// A parsed frame header.
///
/// `length` is the whole frame's length as it is (or will be) on the wire. The CRC is not
/// stored: it is derived from the first 8 bytes whenever the header is written.
///
/// Build one with [`Header::new`] and the `with_*` methods (the struct is
/// `#[non_exhaustive]`); its fields can be read and set.
///
/// ```
/// use monitor_proto::{Header, MsgType, Uuid};
/// let header = Header::new(MsgType::Report, Uuid([b'u'; 33])).with_compress(true);
/// assert_eq!((header.length, header.compress, header.cipher), (45, true, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Header {
    /// Header byte 1.
    pub msg_type: MsgType,
    /// Header byte 2. Server → client: the body is encrypted. Client → server: "encrypt
    /// your replies and pushes to me" (the client's body itself is plaintext).
    pub cipher: bool,
    /// Header byte 3: the body is zlib-compressed.
    pub compress: bool,
    /// Header bytes 4..8: the whole frame's length, header included.
    pub length: u32,
    /// Header bytes 12..45.
    pub uuid: Uuid,
}

impl Header {
    /// A header with both flags off and the length of an empty body.
    pub const fn new(msg_type: MsgType, uuid: Uuid) -> Header {
        Header {
            msg_type,
            cipher: false,
            compress: false,
            length: HEADER_LEN as u32,
            uuid,
        }
    }

    /// Sets the `cipher` flag.
    #[must_use]
    pub const fn with_cipher(mut self, cipher: bool) -> Header {
        self.cipher = cipher;
        self
    }

    /// Sets the `compress` flag.
    #[must_use]
    pub const fn with_compress(mut self, compress: bool) -> Header {
        self.compress = compress;
        self
    }

    /// Sets the whole frame's `length`, header included. (The codecs set it from the body
    /// when they encode; this is for a header used on its own, such as the associated
    /// data of [`SessionKey::seal`](crate::SessionKey::seal).)
    #[must_use]
    pub const fn with_length(mut self, length: u32) -> Header {
        self.length = length;
        self
    }

    /// Length of the body this header announces (0 for a length under 45, which
    /// [`Header::parse`] never lets through but a hand-built `Header` can hold).
    pub const fn body_len(&self) -> usize {
        (self.length as usize).saturating_sub(HEADER_LEN)
    }

    /// The CRC-32 (IEEE, as zlib and PHP's `crc32`) that this header carries.
    pub fn crc(&self) -> u32 {
        crc32_of_8(&self.prefix8())
    }

    fn prefix8(&self) -> [u8; 8] {
        let len = self.length.to_le_bytes();
        [
            VERSION,
            self.msg_type.as_u8(),
            u8::from(self.cipher),
            u8::from(self.compress),
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }

    /// The header's 45 wire bytes, CRC included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let prefix = self.prefix8();
        out[..8].copy_from_slice(&prefix);
        out[8..12].copy_from_slice(&crc32_of_8(&prefix).to_le_bytes());
        out[12..].copy_from_slice(&self.uuid.0);
        out
    }

    /// Appends the header's 45 wire bytes to `dst`.
    pub fn write(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// Parses the first [`HEADER_LEN`] bytes of `bytes` as a header, checking the rules of
    /// the protocol: version 1, a known type, flags of 0 or 1, a length of at least 45,
    /// and the CRC. Limits (`max_frame_len`, the accepted direction) are the codecs'.
    ///
    /// # Errors
    /// The first rule broken, in wire order ([`Error::BadVersion`],
    /// [`Error::BadMsgType`], [`Error::BadFlag`], [`Error::FrameTooShort`],
    /// [`Error::BadHeaderCrc`]), or [`Error::Truncated`] for fewer than [`HEADER_LEN`]
    /// bytes.
    ///
    /// # Example
    /// ```
    /// use monitor_proto::{Header, MsgType, Uuid};
    /// let bytes = Header::new(MsgType::Heartbeat, Uuid([b'u'; 33])).to_bytes();
    /// // The heartbeat of protocol-v1 §1.
    /// assert_eq!(bytes[..12], [1, 3, 0, 0, 0x2d, 0, 0, 0, 0x89, 0xb2, 0x38, 0xca]);
    /// assert_eq!(Header::parse(&bytes).unwrap().msg_type, MsgType::Heartbeat);
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Header, Error> {
        Header::parse_limited(bytes, &HeaderLimits::UNLIMITED)
    }

    /// [`Header::parse`] under a codec's limits.
    pub(crate) fn parse_limited(bytes: &[u8], limits: &HeaderLimits) -> Result<Header, Error> {
        let Some(raw) = bytes.get(..HEADER_LEN) else {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have: bytes.len(),
            });
        };
        let prefix = check_prefix(raw, limits)?;
        let mut uuid = [0u8; UUID_LEN];
        uuid.copy_from_slice(&raw[PREFIX_LEN..HEADER_LEN]);
        Ok(Header {
            msg_type: prefix.msg_type,
            cipher: prefix.cipher,
            compress: prefix.compress,
            length: prefix.length,
            uuid: Uuid(uuid),
        })
    }
}

/// What a frame's first 12 bytes say, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// Header byte 1.
    pub(crate) msg_type: MsgType,
    /// Header byte 2.
    pub(crate) cipher: bool,
    /// Header byte 3.
    pub(crate) compress: bool,
    /// The whole frame's length, within the limits.
    pub(crate) length: u32,
}

impl Prefix {
    /// The whole header: this prefix, and the uuid at bytes 12..45 of `header`, which
    /// holds at least the 45 header bytes.
    #[inline]
    pub(crate) fn with_uuid(self, header: &[u8]) -> Header {
        let mut uuid = [0u8; UUID_LEN];
        uuid.copy_from_slice(&header[PREFIX_LEN..HEADER_LEN]);
        Header {
            msg_type: self.msg_type,
            cipher: self.cipher,
            compress: self.compress,
            length: self.length,
            uuid: Uuid(uuid),
        }
    }
}

/// What the header check enforces beyond the fixed rules (a codec's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderLimits {
    /// Largest whole frame accepted, inclusive.
    pub(crate) max_frame_len: u32,
    /// If set, frames travelling the other way are refused as soon as their type is read
    /// (a server accepts only client-to-server types).
    pub(crate) accept: Option<Direction>,
}

impl HeaderLimits {
    /// The fixed rules only.
    pub(crate) const UNLIMITED: HeaderLimits = HeaderLimits {
        max_frame_len: u32::MAX,
        accept: None,
    };
}

/// Judges a frame from its first [`PREFIX_LEN`] bytes: version, type (and direction, if
/// the limits ask for one), flag values, `45 <= length <= max_frame_len`, and the CRC.
///
/// Checks run in wire order, so the error names the first bad field.
///
/// # Errors
/// [`Error::Truncated`] if fewer than 12 bytes are given; otherwise the first broken
/// rule. Every error here is fatal to the stream ([`Error::is_fatal`]).
#[inline]
pub(crate) fn check_prefix(bytes: &[u8], limits: &HeaderLimits) -> Result<Prefix, Error> {
    let Some(raw) = bytes.first_chunk::<PREFIX_LEN>() else {
        return Err(Error::Truncated {
            need: PREFIX_LEN,
            have: bytes.len(),
        });
    };
    // Every frame passes here: test all rules at once, and work out which one failed (in
    // wire order, for the error) only when one did.
    let length = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
    let frame_says = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
    if let Some(msg_type) = MsgType::from_u8(raw[1]) {
        let valid = raw[0] == VERSION
            && limits.accept.is_none_or(|d| d == msg_type.direction())
            && raw[2] <= 1
            && raw[3] <= 1
            && length >= HEADER_LEN as u32
            && length <= limits.max_frame_len
            && crc32_of_8(&[
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]) == frame_says;
        if valid {
            return Ok(Prefix {
                msg_type,
                cipher: raw[2] == 1,
                compress: raw[3] == 1,
                length,
            });
        }
    }
    Err(prefix_error(raw, limits))
}

/// The first rule, in wire order, that a prefix rejected by [`check_prefix`] breaks.
#[cold]
#[inline(never)]
fn prefix_error(raw: &[u8; PREFIX_LEN], limits: &HeaderLimits) -> Error {
    if raw[0] != VERSION {
        return Error::BadVersion { version: raw[0] };
    }
    let Some(msg_type) = MsgType::from_u8(raw[1]) else {
        return Error::BadMsgType { msg_type: raw[1] };
    };
    if let Some(accept) = limits.accept {
        if msg_type.direction() != accept {
            return Error::WrongDirection {
                msg_type,
                expected: accept,
                initiator: Initiator::Remote,
            };
        }
    }
    for (field, value) in [("cipher", raw[2]), ("compress", raw[3])] {
        if value > 1 {
            return Error::BadFlag { field, value };
        }
    }
    let length = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
    if (length as usize) < HEADER_LEN {
        return Error::FrameTooShort { length };
    }
    if length > limits.max_frame_len {
        return Error::FrameTooLong {
            length: u64::from(length),
            max: limits.max_frame_len,
            initiator: Initiator::Remote,
        };
    }
    Error::BadHeaderCrc {
        computed: crc32_of_8(&[
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ]),
        frame_says: u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]),
    }
}

/// CRC-32 tables for slice-by-8, built at compile time: `TABLES[k][b]` is the CRC
/// contribution of byte `b` followed by `k` more bytes.
static CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// CRC-32 (IEEE) of exactly the 8 header bytes it covers.
///
/// Every frame in and out needs this, and general-purpose CRC code handles an 8-byte
/// input one byte at a time (a chain of 8 dependent lookups); slice-by-8 does 8
/// independent lookups instead. Checked against `crc32fast` by the tests.
#[inline(always)]
pub(crate) fn crc32_of_8(bytes: &[u8; 8]) -> u32 {
    let t = &CRC_TABLES;
    let lo = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) ^ 0xffff_ffff;
    let hi = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let crc = t[7][(lo & 0xff) as usize]
        ^ t[6][((lo >> 8) & 0xff) as usize]
        ^ t[5][((lo >> 16) & 0xff) as usize]
        ^ t[4][(lo >> 24) as usize]
        ^ t[3][(hi & 0xff) as usize]
        ^ t[2][((hi >> 8) & 0xff) as usize]
        ^ t[1][((hi >> 16) & 0xff) as usize]
        ^ t[0][(hi >> 24) as usize];
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: Uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");

    fn heartbeat() -> [u8; HEADER_LEN] {
        Header::new(MsgType::Heartbeat, UUID).to_bytes()
    }

    fn with_crc(mut raw: [u8; HEADER_LEN]) -> [u8; HEADER_LEN] {
        let crc = crc32fast::hash(&raw[..8]);
        raw[8..12].copy_from_slice(&crc.to_le_bytes());
        raw
    }

    /// The limits of a default codec (`codec::DEFAULT_MAX_FRAME_LEN`, written out: the
    /// header knows nothing of the codec above it).
    const DEFAULTS: HeaderLimits = HeaderLimits {
        max_frame_len: 1024 * 1024,
        accept: None,
    };

    fn check(raw: &[u8]) -> Result<Prefix, Error> {
        check_prefix(raw, &DEFAULTS)
    }

    #[test]
    fn crc_of_8_matches_crc32fast() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            assert_eq!(crc32_of_8(&bytes), crc32fast::hash(&bytes));
        }
        assert_eq!(crc32_of_8(&[0; 8]), crc32fast::hash(&[0; 8]));
        assert_eq!(crc32_of_8(&[0xff; 8]), crc32fast::hash(&[0xff; 8]));
    }

    #[test]
    fn spec_heartbeat_bytes() {
        let raw = heartbeat();
        assert_eq!(
            raw[..12],
            [0x01, 0x03, 0x00, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x89, 0xb2, 0x38, 0xca]
        );
        assert_eq!(&raw[12..], UUID.as_bytes());
        let header = Header::parse(&raw).unwrap();
        assert_eq!(header, Header::new(MsgType::Heartbeat, UUID));
        assert_eq!(header.crc(), 0xca38_b289);
    }

    #[test]
    fn every_type_round_trips_and_others_are_refused() {
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u8(t.as_u8()), Some(t));
        }
        for byte in [0u8, 9, 0x80, 0xff] {
            let mut raw = heartbeat();
            raw[1] = byte;
            let err = check(&with_crc(raw)).unwrap_err();
            assert!(
                matches!(err, Error::BadMsgType { msg_type } if msg_type == byte),
                "{err}"
            );
            assert!(err.is_fatal());
        }
    }

    #[test]
    fn requests_and_replies() {
        let requests: Vec<_> = MsgType::ALL.iter().filter(|t| t.is_request()).collect();
        assert_eq!(
            requests,
            [
                &MsgType::KeyRequest,
                &MsgType::Heartbeat,
                &MsgType::Subscribe,
                &MsgType::Report
            ]
        );
        assert_eq!(MsgType::Report.reply_type(), Some(MsgType::ReportAck));
        assert_eq!(MsgType::Push.reply_type(), None);
        assert!(MsgType::KeyReply.never_encrypted() && MsgType::HeartbeatReply.never_encrypted());
        assert!(!MsgType::Push.never_encrypted());
    }

    #[test]
    fn bad_version() {
        for v in [0u8, 2, 255] {
            let mut raw = heartbeat();
            raw[0] = v;
            let err = check(&with_crc(raw)).unwrap_err();
            assert!(matches!(err, Error::BadVersion { version } if version == v));
            assert_eq!(err.to_string(), format!("unsupported protocol version {v}"));
        }
    }

    #[test]
    fn bad_flags() {
        for (offset, name) in [(2, "cipher"), (3, "compress")] {
            let mut raw = heartbeat();
            raw[offset] = 2;
            let err = check(&with_crc(raw)).unwrap_err();
            assert!(matches!(err, Error::BadFlag { field, value: 2 } if field == name));
            assert_eq!(err.to_string(), format!("{name} flag is 2, must be 0 or 1"));
        }
        let mut raw = heartbeat();
        raw[2] = 1;
        raw[3] = 1;
        let prefix = check(&with_crc(raw)).unwrap();
        assert!(prefix.cipher && prefix.compress);
    }

    #[test]
    fn length_bounds_are_inclusive() {
        let limits = HeaderLimits {
            max_frame_len: 100,
            accept: None,
        };
        for (len, ok) in [
            (0u32, false),
            (44, false),
            (45, true),
            (100, true),
            (101, false),
        ] {
            let mut raw = heartbeat();
            raw[4..8].copy_from_slice(&len.to_le_bytes());
            let got = check_prefix(&with_crc(raw), &limits);
            assert_eq!(got.is_ok(), ok, "length {len}: {got:?}");
        }
        let mut raw = heartbeat();
        raw[4..8].copy_from_slice(&9_000_000u32.to_le_bytes());
        let err = check(&with_crc(raw)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame length 9000000 exceeds max_frame_len 1048576"
        );
        raw[4..8].copy_from_slice(&10u32.to_le_bytes());
        let err = check(&with_crc(raw)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame length 10 is shorter than the 45-byte header"
        );
    }

    #[test]
    fn crc_mismatch_names_both_values() {
        let mut raw = heartbeat();
        raw[8] ^= 0xff;
        let err = check(&raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header CRC mismatch: computed 0xca38b289, frame says 0xca38b276"
        );
        // A flipped length bit is caught by the CRC too.
        let mut raw = heartbeat();
        raw[5] ^= 0x01;
        assert!(matches!(check(&raw), Err(Error::BadHeaderCrc { .. })));
    }

    #[test]
    fn direction_filter() {
        let server_side = HeaderLimits {
            accept: Some(Direction::ClientToServer),
            ..DEFAULTS
        };
        for t in MsgType::ALL {
            let raw = Header::new(t, UUID).to_bytes();
            let got = check_prefix(&raw, &server_side);
            if t.is_request() {
                assert!(got.is_ok());
            } else {
                let err = got.unwrap_err();
                assert!(matches!(err, Error::WrongDirection { msg_type, .. } if msg_type == t));
                assert!(err.is_fatal());
            }
        }
    }

    #[test]
    fn truncated_input() {
        let raw = heartbeat();
        assert!(matches!(
            check(&raw[..11]),
            Err(Error::Truncated { need: 12, have: 11 })
        ));
        assert!(matches!(
            Header::parse(&raw[..44]),
            Err(Error::Truncated { need: 45, have: 44 })
        ));
    }

    #[test]
    fn uuid_display() {
        assert_eq!(UUID.to_string(), "0123456789abcdef0123456789abcdef0");
        let mut odd = [b'a'; UUID_LEN];
        odd[0] = 0;
        assert!(Uuid(odd).to_string().starts_with("0x0061"));
        assert_eq!(Uuid::from_slice(&[0; 32]), None);
    }
}
