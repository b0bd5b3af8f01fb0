//! AES-256-GCM bodies: `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with the
//! frame's 45-byte header as associated data.
//!
//! Because the header is authenticated, its `length` must already count the nonce and tag
//! when sealing: `length = 45 + 12 + n + 16`. [`SessionKey::seal_frame`] takes care of that.
//!
//! # Nonces
//! The protocol only asks that a nonce never repeat under one key; a receiver reads it from
//! the body and assumes nothing else of it. Random nonces would cross the NIST collision
//! bound after 2^32 bodies under one key, which a long-lived push connection can reach, so
//! this implementation counts instead: a nonce is 4 bytes naming the direction of the
//! sealed frame, then the number of bodies sealed before it under this key
//! (64-bit big-endian). A frame's type fixes its direction, and each end only sends its
//! own direction, so the server's and the client's counts never meet, though both start
//! at 0 under the key they share.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::error::{BodyError, Error, Initiator};
use crate::header::{Direction, Header, HEADER_LEN};

/// Length of the nonce that opens an encrypted body.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag that closes an encrypted body.
pub const TAG_LEN: usize = 16;
/// Bytes an encrypted body adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Length of a legacy key: 32 characters of `[0-9A-Za-z]`, used as the raw key bytes.
pub const LEGACY_KEY_LEN: usize = 32;

/// A connection's AES-256-GCM session key, with its key schedule expanded once, and the
/// count of bodies sealed under it.
///
/// `Debug` never shows the key.
///
/// # Clones share one nonce counter
/// Sealing takes the next value of a counter that every clone of a key shares, so no two
/// clones (say, a connection's codec and a copy held by another task) can seal under the
/// same nonce. Two keys made separately from the same bytes count separately, and could:
/// make a key once per key exchange and clone it.
///
/// When the counter runs out (after 2^64 - 1 bodies), sealing fails with
/// [`BodyError::KeyExhausted`] instead of reusing a nonce: a new key request must replace the
/// key.
///
/// The cipher is `ring`'s AES-256-GCM (assembly with AES-NI and carry-less multiplication
/// where the CPU has them): a push is sealed once per encrypting subscriber, so its speed
/// is the encrypted fan-out's (`docs/performance.md`, "TLS and the in-band layer"). The
/// expanded key is large, so it lives on the heap: a codec or connection without a key
/// stays small, and a clone is a reference count.
#[derive(Clone)]
pub struct SessionKey {
    state: Arc<KeyState>,
}

struct KeyState {
    cipher: LessSafeKey,
    /// Bodies sealed under this key so far: the counter half of the next nonce.
    sealed: AtomicU64,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// The nonce of the body sealed `count`-th (from 0) under a key, for a frame travelling
/// `direction`: `[0, 0, 0, 1]` for server → client, `[0, 0, 0, 2]` for client → server,
/// then `count` as 8 big-endian bytes.
pub(crate) fn nonce_for(direction: Direction, count: u64) -> [u8; NONCE_LEN] {
    let tag: u32 = match direction {
        Direction::ServerToClient => 1,
        Direction::ClientToServer => 2,
    };
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(&tag.to_be_bytes());
    nonce[4..].copy_from_slice(&count.to_be_bytes());
    nonce
}

impl SessionKey {
    /// A key from its 32 raw bytes (e.g. the HKDF output of the X25519 exchange), with a
    /// nonce counter of its own starting at 0.
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> SessionKey {
        // `UnboundKey::new` fails only for a key of the wrong length; the type rules it out.
        let Ok(unbound) = UnboundKey::new(&AES_256_GCM, key) else {
            unreachable!("a {KEY_LEN}-byte key is AES-256's length")
        };
        SessionKey {
            state: Arc::new(KeyState {
                cipher: LessSafeKey::new(unbound),
                sealed: AtomicU64::new(0),
            }),
        }
    }

    /// A key from the legacy exchange: its 32 ASCII characters are the key bytes.
    ///
    /// # Errors
    /// [`BodyError::LegacyKeyLength`] unless `key` is 32 characters long,
    /// [`BodyError::LegacyKeyCharset`] unless they are all `[0-9A-Za-z]`.
    pub fn from_legacy(key: &str) -> Result<SessionKey, BodyError> {
        let bytes: &[u8; KEY_LEN] = key
            .as_bytes()
            .try_into()
            .map_err(|_| BodyError::LegacyKeyLength { len: key.len() })?;
        if !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(BodyError::LegacyKeyCharset);
        }
        Ok(SessionKey::from_bytes(bytes))
    }

    /// Takes the next nonce for a frame travelling `direction`.
    ///
    /// # Errors
    /// [`BodyError::KeyExhausted`] once the counter has no value left: it stops at
    /// `u64::MAX` and never wraps, so no nonce is taken twice.
    fn next_nonce(&self, direction: Direction) -> Result<[u8; NONCE_LEN], BodyError> {
        // Relaxed is enough: uniqueness needs only that each update is atomic (all
        // updates of one atomic are totally ordered), and nothing else is published
        // through the counter.
        let count = self
            .state
            .sealed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|sealed| BodyError::KeyExhausted { sealed })?;
        Ok(nonce_for(direction, count))
    }

    /// Test seam: sets how many bodies this key (and its clones) have sealed.
    #[cfg(test)]
    pub(crate) fn set_sealed(&self, sealed: u64) {
        self.state.sealed.store(sealed, Ordering::Relaxed);
    }

    /// Encrypts `plaintext` for the frame `header` under the key's next nonce; returns the
    /// whole encrypted body.
    ///
    /// `header` is the associated data: the header of the frame that will carry this body
    /// (its type names the nonce's direction), with its length already counting the nonce
    /// and tag, and its `cipher` flag set.
    ///
    /// # Errors
    /// [`Error::Body`] ([`BodyError::KeyExhausted`]) when the key has no nonce left;
    /// [`Error::FrameTooLong`] ([`Initiator::Local`]) if the body could not fit a frame
    /// (over 4 GiB).
    ///
    /// # Example
    /// ```
    /// use monitor_proto::{Header, MsgType, SessionKey, Uuid};
    /// let key = SessionKey::from_bytes(&[7; 32]);
    /// let plain = br#"{"errCode":0,"msg":"success","data":{}}"#;
    /// // The header of the frame that carries the body: its length counts nonce and tag.
    /// let header = Header::new(MsgType::Push, Uuid([b'u'; 33]))
    ///     .with_cipher(true)
    ///     .with_length((45 + 12 + plain.len() + 16) as u32);
    /// let body = key.seal(&header, plain).unwrap();
    /// assert_eq!(&key.open(&header.to_bytes(), &body).unwrap()[..], plain);
    /// ```
    pub fn seal(&self, header: &Header, plaintext: &[u8]) -> Result<Bytes, Error> {
        frame_len(plaintext.len())?;
        let nonce = self.next_nonce(header.msg_type.direction())?;
        let mut out = BytesMut::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(&mut out, &header.to_bytes(), &nonce, plaintext)?;
        Ok(out.freeze())
    }

    /// Seals under a nonce of the caller's choosing, to check the golden test vectors: a
    /// nonce must never be reused under one key, and this neither takes nor advances the
    /// key's counter, so never use it on a key that seals anything else.
    ///
    /// Fails closed: on an encryption failure (an input over 64 GiB) the body is empty,
    /// which a receiver refuses as too short.
    pub fn seal_with_nonce(
        &self,
        header: &[u8; HEADER_LEN],
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(plaintext.len() + OVERHEAD);
        if self.seal_into(&mut out, header, nonce, plaintext).is_err() {
            out.clear();
        }
        out.freeze()
    }

    /// Writes a whole encrypted frame to `dst`: `header` with its `cipher` flag set and
    /// its length set to `45 + 12 + plaintext.len() + 16`, then the body sealed under the
    /// key's next nonce. Encrypts in place in `dst`, so the plaintext is copied once and
    /// nothing else is allocated.
    ///
    /// The caller checks the length against its `max_frame_len`.
    ///
    /// # Errors
    /// [`Error::Body`] ([`BodyError::KeyExhausted`]) when the key has no nonce left;
    /// [`Error::FrameTooLong`] ([`Initiator::Local`]) if the frame's length does not fit
    /// its `u32` field. Fails closed: on error nothing is written to `dst`.
    pub fn seal_frame(
        &self,
        header: &Header,
        plaintext: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let mut header = *header;
        header.cipher = true;
        header.length = frame_len(plaintext.len())?;
        let nonce = self.next_nonce(header.msg_type.direction())?;
        let aad = header.to_bytes();
        let frame_start = dst.len();
        dst.reserve(header.length as usize);
        dst.put_slice(&aad);
        if let Err(e) = self.seal_into(dst, &aad, &nonce, plaintext) {
            // No frame rather than one with plaintext and no tag.
            dst.truncate(frame_start);
            return Err(e);
        }
        Ok(())
    }

    /// Appends nonce, ciphertext and tag to `dst` (which the caller has sized); on error
    /// `dst` holds plaintext the caller must cut off.
    fn seal_into(
        &self,
        dst: &mut BytesMut,
        aad: &[u8; HEADER_LEN],
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<(), Error> {
        dst.put_slice(nonce);
        let start = dst.len();
        dst.put_slice(plaintext);
        // AES-GCM's only failure is an input over 64 GiB, which `frame_len` refuses
        // first; report it as what it would be, a body too long for a frame.
        let tag = self
            .state
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut dst[start..],
            )
            .map_err(|_| too_long(plaintext.len()))?;
        dst.put_slice(tag.as_ref());
        Ok(())
    }

    /// Decrypts an encrypted body; `header` is the frame's 45-byte header as received.
    /// The nonce is read from the body and is not judged: only the tag is.
    ///
    /// # Errors
    /// [`BodyError::EncryptedBodyTooShort`] under 28 bytes; [`BodyError::DecryptFailed`] if
    /// the tag does not verify (wrong key, or any header or body byte altered).
    pub fn open(&self, header: &[u8; HEADER_LEN], body: &[u8]) -> Result<Bytes, BodyError> {
        if body.len() < OVERHEAD {
            return Err(BodyError::EncryptedBodyTooShort { len: body.len() });
        }
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| BodyError::DecryptFailed)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| BodyError::DecryptFailed)?;
        let mut plain = BytesMut::from(ciphertext);
        self.state
            .cipher
            .open_in_place_separate_tag(nonce, Aad::from(header), tag.into(), &mut plain, 0..)
            .map_err(|_| BodyError::DecryptFailed)?;
        Ok(plain.freeze())
    }
}

/// The length of a frame sealing `plaintext_len` bytes, if it fits the `u32` field.
fn frame_len(plaintext_len: usize) -> Result<u32, Error> {
    HEADER_LEN
        .checked_add(OVERHEAD)
        .and_then(|n| n.checked_add(plaintext_len))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| too_long(plaintext_len))
}

fn too_long(plaintext_len: usize) -> Error {
    Error::FrameTooLong {
        length: u64::try_from(plaintext_len)
            .unwrap_or(u64::MAX)
            .saturating_add((HEADER_LEN + OVERHEAD) as u64),
        max: u32::MAX,
        initiator: Initiator::Local,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::header::{MsgType, Uuid};

    fn key() -> SessionKey {
        SessionKey::from_bytes(&[7; KEY_LEN])
    }

    fn header_for(msg_type: MsgType, plain_len: usize) -> Header {
        let mut h = Header::new(msg_type, Uuid([b'u'; 33])).with_cipher(true);
        h.length = (HEADER_LEN + OVERHEAD + plain_len) as u32;
        h
    }

    fn push_header(plain_len: usize) -> Header {
        header_for(MsgType::Push, plain_len)
    }

    /// The nonce a sealed body opens with, as (direction tag, counter).
    fn nonce_of(body: &[u8]) -> ([u8; 4], u64) {
        let tag = body[..4].try_into().unwrap();
        let count = u64::from_be_bytes(body[4..NONCE_LEN].try_into().unwrap());
        (tag, count)
    }

    const S2C: [u8; 4] = [0, 0, 0, 1];
    const C2S: [u8; 4] = [0, 0, 0, 2];

    #[test]
    fn seal_open_round_trip() {
        let plain = br#"{"errCode":0,"msg":"success","data":{}}"#;
        let header = push_header(plain.len());
        let body = key().seal(&header, plain).unwrap();
        assert_eq!(body.len(), plain.len() + OVERHEAD);
        assert_eq!(&key().open(&header.to_bytes(), &body).unwrap()[..], plain);
    }

    #[test]
    fn nonces_count_up_and_name_the_direction() {
        let key = key();
        let mut dst = BytesMut::new();
        let mut seen = Vec::new();
        for i in 0..5 {
            let plain = format!("{{\"n\":{i}}}");
            let body = key
                .seal(&push_header(plain.len()), plain.as_bytes())
                .unwrap();
            seen.push(nonce_of(&body));
            let start = dst.len();
            let h = Header::new(MsgType::ReportAck, Uuid([b'u'; 33]));
            key.seal_frame(&h, plain.as_bytes(), &mut dst).unwrap();
            seen.push(nonce_of(&dst[start + HEADER_LEN..]));
        }
        // One counter for seal and seal_frame, strictly increasing from 0.
        let want: Vec<_> = (0..10).map(|n| (S2C, n)).collect();
        assert_eq!(seen, want);
        // A client → server frame under the same key: the other tag, the same counter.
        let body = key.seal(&header_for(MsgType::Report, 2), b"{}").unwrap();
        assert_eq!(nonce_of(&body), (C2S, 10));
        let body = key.seal(&header_for(MsgType::Subscribe, 2), b"{}").unwrap();
        assert_eq!(nonce_of(&body), (C2S, 11));
        assert_eq!(nonce_for(Direction::ServerToClient, 0x0102), {
            let mut n = [0u8; NONCE_LEN];
            n[3] = 1;
            n[10..].copy_from_slice(&[1, 2]);
            n
        });
    }

    #[test]
    fn clones_share_the_counter_and_never_repeat_a_nonce() {
        let key = key();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let key = key.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .map(|_| {
                            let body = key.seal(&push_header(2), b"{}").unwrap();
                            nonce_of(&body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            let nonces = t.join().unwrap();
            // Each clone's own nonces still increase.
            assert!(nonces.windows(2).all(|w| w[0].1 < w[1].1));
            all.extend(nonces);
        }
        // 2000 seals from 4 clones: 2000 distinct nonces, exactly the counts 0..2000.
        assert_eq!(all.len(), 2000);
        assert!(all.iter().all(|&(tag, n)| tag == S2C && n < 2000));
        let next = key.seal(&push_header(2), b"{}").unwrap();
        assert_eq!(nonce_of(&next), (S2C, 2000));
    }

    #[test]
    fn an_exhausted_key_refuses_to_seal_and_never_wraps() {
        let key = key();
        let clone = key.clone();
        key.set_sealed(u64::MAX - 2);
        let h = Header::new(MsgType::Push, Uuid([b'u'; 33]));
        let mut dst = BytesMut::from(&b"earlier frames"[..]);
        key.seal_frame(&h, b"{}", &mut dst).unwrap();
        let last = clone.seal(&push_header(2), b"{}").unwrap();
        assert_eq!(nonce_of(&last), (S2C, u64::MAX - 1));
        let written = dst.clone();
        for _ in 0..3 {
            let err = key.seal_frame(&h, b"{}", &mut dst).unwrap_err();
            assert!(matches!(
                err,
                Error::Body(BodyError::KeyExhausted { sealed: u64::MAX })
            ));
            assert_eq!(dst, written, "nothing written");
            let err = clone.seal(&push_header(2), b"{}").unwrap_err();
            assert!(matches!(err, Error::Body(BodyError::KeyExhausted { .. })));
        }
        let err = key.seal(&push_header(2), b"{}").unwrap_err();
        assert_eq!(err.fault(), crate::Fault::Local);
        assert!(!err.is_fatal());
        assert_eq!(
            err.to_string(),
            "session key exhausted (18446744073709551615 bodies sealed under it): send a new key request"
        );
        // A key made anew (as a key request makes one) counts from 0 again.
        let fresh = SessionKey::from_bytes(&[7; KEY_LEN]);
        let body = fresh.seal(&push_header(2), b"{}").unwrap();
        assert_eq!(nonce_of(&body), (S2C, 0));
    }

    #[test]
    fn seal_frame_writes_a_consistent_frame() {
        let plain = b"{\"a\":1}";
        let mut dst = BytesMut::new();
        let h = Header::new(MsgType::Push, Uuid([b'u'; 33]));
        key().seal_frame(&h, plain, &mut dst).unwrap();
        assert_eq!(dst.len(), HEADER_LEN + OVERHEAD + plain.len());
        let parsed = Header::parse(&dst).unwrap();
        assert!(parsed.cipher);
        assert_eq!(parsed.length as usize, dst.len());
        let aad: [u8; HEADER_LEN] = dst[..HEADER_LEN].try_into().unwrap();
        assert_eq!(&key().open(&aad, &dst[HEADER_LEN..]).unwrap()[..], plain);
    }

    #[test]
    fn frame_lengths_that_do_not_fit_u32_are_refused() {
        assert_eq!(frame_len(0).unwrap(), 73);
        let max_plain = u32::MAX as usize - HEADER_LEN - OVERHEAD;
        assert_eq!(frame_len(max_plain).unwrap(), u32::MAX);
        assert!(matches!(
            frame_len(max_plain + 1),
            Err(Error::FrameTooLong { length, max: u32::MAX, initiator: Initiator::Local })
                if length == u64::from(u32::MAX) + 1
        ));
        assert!(frame_len(usize::MAX).is_err());
    }

    #[test]
    fn wrong_key_header_or_body_is_detected() {
        let plain = b"{\"delivered\":1}";
        let header = push_header(plain.len());
        let aad = header.to_bytes();
        let body = key().seal(&header, plain).unwrap();
        let other = SessionKey::from_bytes(&[8; KEY_LEN]);
        assert!(matches!(
            other.open(&aad, &body),
            Err(BodyError::DecryptFailed)
        ));
        let mut bad_aad = aad;
        bad_aad[40] ^= 1;
        assert!(matches!(
            key().open(&bad_aad, &body),
            Err(BodyError::DecryptFailed)
        ));
        let mut bad_body = body.to_vec();
        bad_body[NONCE_LEN] ^= 1;
        assert!(matches!(
            key().open(&aad, &bad_body),
            Err(BodyError::DecryptFailed)
        ));
        let mut bad_nonce = body.to_vec();
        bad_nonce[NONCE_LEN - 1] ^= 1;
        assert!(matches!(
            key().open(&aad, &bad_nonce),
            Err(BodyError::DecryptFailed)
        ));
        assert!(matches!(
            key().open(&aad, &body[..27]),
            Err(BodyError::EncryptedBodyTooShort { len: 27 })
        ));
    }

    #[test]
    fn any_nonce_opens() {
        // A receiver assumes nothing of the nonce: a random one (as PHP sends) opens too.
        let header = push_header(2);
        let body = key().seal_with_nonce(&header.to_bytes(), &[0xa5; NONCE_LEN], b"{}");
        assert_eq!(&key().open(&header.to_bytes(), &body).unwrap()[..], b"{}");
    }

    #[test]
    fn a_key_is_pointer_sized() {
        assert_eq!(
            std::mem::size_of::<Option<SessionKey>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn legacy_keys() {
        assert!(SessionKey::from_legacy("Ab3dEf6hIj9kLmN0pQrStUvWxYz12345").is_ok());
        let short = SessionKey::from_legacy("abc").unwrap_err();
        assert_eq!(
            short.to_string(),
            "bad legacy key: 3 characters, expected 32"
        );
        assert!(SessionKey::from_legacy("Ab3dEf6hIj9kLmN0pQrStUvWxYz1234!").is_err());
        assert_eq!(format!("{:?}", key()), "SessionKey(..)");
    }
}
