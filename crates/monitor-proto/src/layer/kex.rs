//! The key exchange (message types 1 → 2).
//!
//! - X25519: the client sends `{"pubkey": base64(32 bytes)}`, the server answers with its
//!   own ephemeral public key, and both derive
//!   `HKDF-SHA256(salt = the key request's 33 uuid bytes, ikm = shared secret,
//!   info = "monitor-proto v1 aes-256-gcm")` → 32-byte AES key.
//! - Legacy (what the PHP clients do, off unless a server enables it): the server sends
//!   32 random characters of `[0-9A-Za-z]` in the clear, and they are the key.
//!
//! # Example
//! ```
//! use monitor_proto::layer::kex::{ClientHandshake, ServerHandshake};
//! use monitor_proto::Uuid;
//!
//! let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
//! let client = ClientHandshake::new();
//! let (server_pubkey, server_key) = ServerHandshake::new()
//!     .respond(&client.public_key_base64(), &uuid)
//!     .unwrap();
//! let client_key = client.finish(&server_pubkey, &uuid).unwrap();
//! # let _ = (server_key, client_key);
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hkdf::Hkdf;
use rand::Rng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::error::BodyError;
use crate::header::Uuid;
use crate::layer::crypto::{SessionKey, KEY_LEN, LEGACY_KEY_LEN};

/// The HKDF `info` string of protocol v1.
pub const HKDF_INFO: &[u8] = b"monitor-proto v1 aes-256-gcm";

/// The session key both sides derive from an X25519 shared secret and the key request's uuid.
pub fn derive_key_bytes(shared_secret: &[u8; 32], uuid: &Uuid) -> [u8; KEY_LEN] {
    let hk = Hkdf::<Sha256>::new(Some(uuid.as_bytes()), shared_secret);
    let mut okm = [0u8; KEY_LEN];
    // 32 bytes is far under HKDF-SHA256's 8160-byte output limit.
    let _ = hk.expand(HKDF_INFO, &mut okm);
    okm
}

/// Decodes a base64 X25519 public key.
///
/// # Errors
/// [`BodyError::PublicKeyNotBase64`] or [`BodyError::PublicKeyLength`] unless `b64` is
/// standard base64 of exactly 32 bytes.
fn decode_public_key(b64: &str) -> Result<PublicKey, BodyError> {
    let raw = BASE64
        .decode(b64)
        .map_err(|source| BodyError::PublicKeyNotBase64 { source })?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| BodyError::PublicKeyLength { len: raw.len() })?;
    Ok(PublicKey::from(bytes))
}

fn agree(secret: &StaticSecret, peer: &PublicKey, uuid: &Uuid) -> Result<SessionKey, BodyError> {
    let shared = secret.diffie_hellman(peer);
    if !shared.was_contributory() {
        return Err(BodyError::NonContributoryKey);
    }
    Ok(SessionKey::from_bytes(&derive_key_bytes(
        shared.as_bytes(),
        uuid,
    )))
}

/// The client's half of an X25519 exchange: make one per key request.
pub struct ClientHandshake {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientHandshake {{ public: {} }}",
            self.public_key_base64()
        )
    }
}

impl Default for ClientHandshake {
    fn default() -> Self {
        ClientHandshake::new()
    }
}

impl ClientHandshake {
    /// A fresh random key pair.
    pub fn new() -> ClientHandshake {
        ClientHandshake::from_secret(StaticSecret::random_from_rng(rand::rngs::OsRng))
    }

    /// A key pair from a given secret scalar (for test vectors; use [`ClientHandshake::new`]
    /// otherwise).
    pub fn from_secret_bytes(secret: [u8; 32]) -> ClientHandshake {
        ClientHandshake::from_secret(StaticSecret::from(secret))
    }

    fn from_secret(secret: StaticSecret) -> ClientHandshake {
        let public = PublicKey::from(&secret);
        ClientHandshake { secret, public }
    }

    /// The public key, base64, for the key request's `pubkey`.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.public.as_bytes())
    }

    /// The key request body: `{"pubkey":"..."}`.
    pub fn request_body(&self) -> bytes::Bytes {
        format!("{{\"pubkey\":\"{}\"}}", self.public_key_base64()).into()
    }

    /// Derives the session key from the server's base64 public key and the uuid the key
    /// request was sent with.
    ///
    /// # Errors
    /// [`BodyError::PublicKeyNotBase64`], [`BodyError::PublicKeyLength`] or
    /// [`BodyError::NonContributoryKey`].
    pub fn finish(self, server_pubkey_b64: &str, uuid: &Uuid) -> Result<SessionKey, BodyError> {
        agree(&self.secret, &decode_public_key(server_pubkey_b64)?, uuid)
    }
}

/// The server's half of an X25519 exchange: one ephemeral key pair per key request.
pub struct ServerHandshake {
    secret: StaticSecret,
}

impl std::fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerHandshake(..)")
    }
}

impl Default for ServerHandshake {
    fn default() -> Self {
        ServerHandshake::new()
    }
}

impl ServerHandshake {
    /// A fresh random ephemeral key pair.
    pub fn new() -> ServerHandshake {
        ServerHandshake {
            secret: StaticSecret::random_from_rng(rand::rngs::OsRng),
        }
    }

    /// A key pair from a given secret scalar (for test vectors).
    pub fn from_secret_bytes(secret: [u8; 32]) -> ServerHandshake {
        ServerHandshake {
            secret: StaticSecret::from(secret),
        }
    }

    /// Answers a client's base64 public key: returns the server's base64 public key (the
    /// key reply's `data.pubkey`) and the session key.
    ///
    /// # Errors
    /// [`BodyError::PublicKeyNotBase64`], [`BodyError::PublicKeyLength`] or
    /// [`BodyError::NonContributoryKey`]; reply `errCode: -1`.
    pub fn respond(
        self,
        client_pubkey_b64: &str,
        uuid: &Uuid,
    ) -> Result<(String, SessionKey), BodyError> {
        let key = agree(&self.secret, &decode_public_key(client_pubkey_b64)?, uuid)?;
        let public = PublicKey::from(&self.secret);
        Ok((BASE64.encode(public.as_bytes()), key))
    }
}

/// A fresh legacy key: 32 random characters of `[0-9A-Za-z]` from the OS-seeded CSPRNG.
pub fn generate_legacy_key() -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(LEGACY_KEY_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: Uuid = Uuid(*b"437166dc723abc76897d38a901aaa07ac");

    #[test]
    fn both_sides_agree() {
        let client = ClientHandshake::new();
        let (server_pub, server_key) = ServerHandshake::new()
            .respond(&client.public_key_base64(), &UUID)
            .unwrap();
        let client_key = client.finish(&server_pub, &UUID).unwrap();
        let header = crate::Header::new(crate::MsgType::Push, UUID).with_cipher(true);
        let sealed = server_key.seal(&header, b"hello").unwrap();
        assert_eq!(
            &client_key.open(&header.to_bytes(), &sealed).unwrap()[..],
            b"hello"
        );
    }

    #[test]
    fn uuid_is_the_salt() {
        let a = derive_key_bytes(&[1; 32], &UUID);
        let b = derive_key_bytes(&[1; 32], &Uuid([b'x'; 33]));
        assert_ne!(a, b);
    }

    #[test]
    fn bad_public_keys() {
        let err = decode_public_key("!!!").unwrap_err();
        assert!(err.to_string().starts_with("bad public key: not base64"));
        assert!(matches!(err, BodyError::PublicKeyNotBase64 { .. }));
        let source = std::error::Error::source(&err).expect("the base64 error");
        assert!(
            !err.to_string().contains(&source.to_string()),
            "printed once"
        );
        let err = decode_public_key(&BASE64.encode([1u8; 31])).unwrap_err();
        assert_eq!(err.to_string(), "bad public key: 31 bytes, expected 32");
        // The all-zero point (and other low-order points) give an all-zero secret.
        let err = ServerHandshake::new()
            .respond(&BASE64.encode([0u8; 32]), &UUID)
            .unwrap_err();
        assert!(matches!(err, BodyError::NonContributoryKey));
    }

    #[test]
    fn legacy_key_shape() {
        let a = generate_legacy_key();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, generate_legacy_key());
        assert!(SessionKey::from_legacy(&a).is_ok());
    }
}
