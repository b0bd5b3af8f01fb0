//! AES-256-GCM bodies: `nonce (12 random bytes) || ciphertext || tag (16 bytes)`, with the
//! frame's 45-byte header as associated data.
//!
//! Because the header is authenticated, its `length` must already count the nonce and tag
//! when sealing: `length = 45 + 12 + n + 16`. [`SessionKey::seal_frame`] takes care of that.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use bytes::{BufMut, Bytes, BytesMut};
use rand::RngCore;

use crate::error::Error;
use crate::header::{Header, HEADER_LEN};

/// Length of the random nonce that opens an encrypted body.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag that closes an encrypted body.
pub const TAG_LEN: usize = 16;
/// Bytes an encrypted body adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Length of a legacy key: 32 characters of `[0-9A-Za-z]`, used as the raw key bytes.
pub const LEGACY_KEY_LEN: usize = 32;

/// A connection's AES-256-GCM session key, with its key schedule expanded once.
///
/// `Debug` never shows the key.
///
/// The expanded key is large (the AES round keys in both hardware and software layouts),
/// so it lives on the heap: a codec or connection without a key stays small.
#[derive(Clone)]
pub struct SessionKey {
    cipher: Box<Aes256Gcm>,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from its 32 raw bytes (e.g. the HKDF output of the X25519 exchange).
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> SessionKey {
        SessionKey {
            cipher: Box::new(Aes256Gcm::new(key.into())),
        }
    }

    /// A key from the legacy exchange: its 32 ASCII characters are the key bytes.
    ///
    /// # Errors
    /// [`Error::BadLegacyKey`] unless `key` is exactly 32 characters of `[0-9A-Za-z]`.
    pub fn from_legacy(key: &str) -> Result<SessionKey, Error> {
        let bytes: &[u8; KEY_LEN] = key.as_bytes().try_into().map_err(|_| Error::BadLegacyKey {
            reason: format!("{} characters, expected {LEGACY_KEY_LEN}", key.len()),
        })?;
        if !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(Error::BadLegacyKey {
                reason: "characters outside [0-9A-Za-z]".into(),
            });
        }
        Ok(SessionKey::from_bytes(bytes))
    }

    /// Encrypts `plaintext` under a fresh random nonce; returns the whole encrypted body.
    ///
    /// `header` is the associated data: the 45 bytes of the frame that will carry this
    /// body, with its length already counting the nonce and tag.
    pub fn seal(&self, header: &[u8; HEADER_LEN], plaintext: &[u8]) -> Bytes {
        self.seal_with_nonce(header, &random_nonce(), plaintext)
    }

    /// [`SessionKey::seal`] with a nonce of the caller's choosing. A nonce must never be
    /// reused under one key; this exists for test vectors.
    pub fn seal_with_nonce(
        &self,
        header: &[u8; HEADER_LEN],
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(plaintext.len() + OVERHEAD);
        if !self.seal_into(&mut out, header, nonce, plaintext) {
            // Fail closed: an empty body is refused by the peer as too short.
            out.clear();
        }
        out.freeze()
    }

    /// Writes a whole encrypted frame to `dst`: `header` with its length set to
    /// `45 + 12 + plaintext.len() + 16`, then the sealed body. Encrypts in place in `dst`,
    /// so the plaintext is copied once and nothing else is allocated.
    ///
    /// The caller checks the length against its `max_frame_len`.
    pub fn seal_frame(&self, header: &Header, plaintext: &[u8], dst: &mut BytesMut) {
        let mut header = *header;
        header.cipher = true;
        // The caller keeps frames under its max_frame_len (a u32); saturate rather than wrap.
        header.length = u32::try_from(HEADER_LEN + OVERHEAD + plaintext.len()).unwrap_or(u32::MAX);
        let aad = header.to_bytes();
        let frame_start = dst.len();
        dst.reserve(header.length as usize);
        dst.put_slice(&aad);
        if !self.seal_into(dst, &aad, &random_nonce(), plaintext) {
            // Fail closed: no frame rather than one with plaintext and no tag.
            dst.truncate(frame_start);
        }
    }

    /// Appends nonce, ciphertext and tag to `dst` (which the caller has sized); on failure
    /// returns `false`, and `dst` holds plaintext the caller must cut off.
    #[must_use]
    fn seal_into(
        &self,
        dst: &mut BytesMut,
        aad: &[u8; HEADER_LEN],
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> bool {
        dst.put_slice(nonce);
        let start = dst.len();
        dst.put_slice(plaintext);
        // AES-GCM has no failure mode for inputs under 64 GiB; frames are capped far below.
        match self.cipher.encrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            &mut dst[start..],
        ) {
            Ok(tag) => {
                dst.put_slice(&tag);
                true
            }
            Err(_) => false,
        }
    }

    /// Decrypts an encrypted body; `header` is the frame's 45-byte header as received.
    ///
    /// # Errors
    /// [`Error::EncryptedBodyTooShort`] under 28 bytes; [`Error::DecryptFailed`] if the tag
    /// does not verify (wrong key, or any header or body byte altered).
    pub fn open(&self, header: &[u8; HEADER_LEN], body: &[u8]) -> Result<Bytes, Error> {
        if body.len() < OVERHEAD {
            return Err(Error::EncryptedBodyTooShort { len: body.len() });
        }
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = BytesMut::from(ciphertext);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                header,
                &mut plain,
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::DecryptFailed)?;
        Ok(plain.freeze())
    }
}

/// Nonces drawn per refill of the per-thread pool.
const POOLED_NONCES: usize = 64;

thread_local! {
    static NONCE_POOL: std::cell::RefCell<([u8; NONCE_LEN * POOLED_NONCES], usize)> =
        const { std::cell::RefCell::new(([0; NONCE_LEN * POOLED_NONCES], NONCE_LEN * POOLED_NONCES)) };
}

/// 12 fresh random bytes. They come from the thread-local CSPRNG (ChaCha, seeded from the
/// OS) in blocks of 64 nonces: a nonce is public and only has to be unpredictable and
/// unique, so drawing them ahead is as good as drawing them one by one, and it keeps the
/// per-frame cost to a copy (a `getrandom` call per frame would cost more than sealing
/// a small body).
fn random_nonce() -> [u8; NONCE_LEN] {
    NONCE_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used == bytes.len() {
            rand::thread_rng().fill_bytes(bytes);
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[*used..*used + NONCE_LEN]);
        *used += NONCE_LEN;
        nonce
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{MsgType, Uuid};

    fn key() -> SessionKey {
        SessionKey::from_bytes(&[7; KEY_LEN])
    }

    fn header_for(plain_len: usize) -> Header {
        let mut h = Header::new(MsgType::Push, Uuid([b'u'; 33])).with_cipher(true);
        h.length = (HEADER_LEN + OVERHEAD + plain_len) as u32;
        h
    }

    #[test]
    fn seal_open_round_trip() {
        let plain = br#"{"errCode":0,"msg":"success","data":{}}"#;
        let aad = header_for(plain.len()).to_bytes();
        let body = key().seal(&aad, plain);
        assert_eq!(body.len(), plain.len() + OVERHEAD);
        assert_eq!(&key().open(&aad, &body).unwrap()[..], plain);
    }

    #[test]
    fn nonces_differ() {
        let aad = header_for(2).to_bytes();
        assert_ne!(key().seal(&aad, b"{}"), key().seal(&aad, b"{}"));
        // Across pool refills too.
        let nonces: std::collections::HashSet<_> = (0..1000).map(|_| random_nonce()).collect();
        assert_eq!(nonces.len(), 1000);
    }

    #[test]
    fn seal_frame_writes_a_consistent_frame() {
        let plain = b"{\"a\":1}";
        let mut dst = BytesMut::new();
        let h = Header::new(MsgType::Push, Uuid([b'u'; 33]));
        key().seal_frame(&h, plain, &mut dst);
        assert_eq!(dst.len(), HEADER_LEN + OVERHEAD + plain.len());
        let parsed = Header::parse(&dst, &Default::default()).unwrap();
        assert!(parsed.cipher);
        assert_eq!(parsed.length as usize, dst.len());
        let aad: [u8; HEADER_LEN] = dst[..HEADER_LEN].try_into().unwrap();
        assert_eq!(&key().open(&aad, &dst[HEADER_LEN..]).unwrap()[..], plain);
    }

    #[test]
    fn wrong_key_header_or_body_is_detected() {
        let plain = b"{\"delivered\":1}";
        let aad = header_for(plain.len()).to_bytes();
        let body = key().seal(&aad, plain);
        let other = SessionKey::from_bytes(&[8; KEY_LEN]);
        assert!(matches!(other.open(&aad, &body), Err(Error::DecryptFailed)));
        let mut bad_aad = aad;
        bad_aad[40] ^= 1;
        assert!(matches!(
            key().open(&bad_aad, &body),
            Err(Error::DecryptFailed)
        ));
        let mut bad_body = body.to_vec();
        bad_body[NONCE_LEN] ^= 1;
        assert!(matches!(
            key().open(&aad, &bad_body),
            Err(Error::DecryptFailed)
        ));
        assert!(matches!(
            key().open(&aad, &body[..27]),
            Err(Error::EncryptedBodyTooShort { len: 27 })
        ));
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
