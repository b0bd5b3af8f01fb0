//! zlib (RFC 1950) bodies, as PHP's `gzcompress` writes them, with a bounded inflate.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::BodyError;

/// Compresses `data` into a zlib stream at zlib's default level (what `gzcompress` uses).
pub fn deflate(data: &[u8]) -> Bytes {
    let mut z = Compress::new(Compression::default(), true);
    // zlib's own worst-case bound: the data, 0.1% + 12 bytes, and the 6-byte wrapper.
    let mut out = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    loop {
        let consumed = z.total_in() as usize;
        match z.compress_vec(&data[consumed..], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return shrunk(out),
            // Finish with room left always makes progress: go round with more room.
            Ok(Status::Ok | Status::BufError) => out.reserve(out.capacity().max(256)),
            // Compressing an in-memory slice into a growing Vec has no failure mode; an
            // error would be a flate2 bug, and an empty stream is still safe to send.
            Err(_) => return shrunk(out),
        }
    }
}

/// The bytes without the spare capacity: compressed and inflated bodies are shared and
/// held in subscribers' queues, where a worst-case allocation would stay for their life.
fn shrunk(mut out: Vec<u8>) -> Bytes {
    out.shrink_to_fit();
    Bytes::from(out)
}

/// Inflates a zlib stream, refusing to produce more than `max` bytes.
///
/// A body that inflates to exactly `max` bytes is accepted; one byte more is
/// [`BodyError::InflatedTooLarge`], found without allocating beyond `max + 1` bytes.
///
/// # Errors
/// [`BodyError::InflatedTooLarge`] past `max`; for anything that is not exactly one
/// complete zlib stream, [`BodyError::BadZlib`] (bad header, data or checksum),
/// [`BodyError::TruncatedZlib`] or [`BodyError::ZlibTrailingBytes`].
///
/// # Example
/// ```
/// use monitor_proto::layer::compress::{deflate, inflate};
/// let packed = deflate(br#"{"code":"demo"}"#);
/// assert_eq!(&inflate(&packed, 1024).unwrap()[..], br#"{"code":"demo"}"#);
/// assert!(inflate(&deflate(&[b' '; 2000]), 1999).is_err());
/// ```
pub fn inflate(data: &[u8], max: usize) -> Result<Bytes, BodyError> {
    let mut z = Decompress::new(true);
    // Start from a guess (JSON compresses ~4x) and double, never past max + 1.
    let cap_limit = max.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).max(64).min(cap_limit));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= cap_limit {
                return Err(BodyError::InflatedTooLarge { max });
            }
            let grow = out.capacity().max(64).min(cap_limit - out.len());
            out.reserve_exact(grow);
        }
        let consumed = z.total_in() as usize;
        let produced = out.len();
        let status = z
            .decompress_vec(&data[consumed..], &mut out, FlushDecompress::None)
            .map_err(|source| BodyError::BadZlib { source })?;
        if out.len() > max {
            return Err(BodyError::InflatedTooLarge { max });
        }
        match status {
            Status::StreamEnd => {
                if (z.total_in() as usize) < data.len() {
                    return Err(BodyError::ZlibTrailingBytes {
                        count: data.len() - z.total_in() as usize,
                    });
                }
                return Ok(shrunk(out));
            }
            Status::Ok | Status::BufError => {
                let stalled = z.total_in() as usize == consumed && out.len() == produced;
                if stalled && out.len() < out.capacity() {
                    return Err(BodyError::TruncatedZlib);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for data in [&b""[..], b"{}", &[b'a'; 100_000][..]] {
            assert_eq!(&inflate(&deflate(data), data.len()).unwrap()[..], data);
        }
    }

    #[test]
    fn limit_is_inclusive() {
        let data = vec![b'x'; 10_000];
        let packed = deflate(&data);
        assert_eq!(inflate(&packed, 10_000).unwrap().len(), 10_000);
        assert!(matches!(
            inflate(&packed, 9_999),
            Err(BodyError::InflatedTooLarge { max: 9_999 })
        ));
    }

    #[test]
    fn bomb_is_refused_without_inflating_it() {
        // 64 MiB of zeros packs into ~64 KiB.
        let bomb = deflate(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100_000);
        let err = inflate(&bomb, 8 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "compressed body inflates beyond max_inflated_len 8388608"
        );
    }

    #[test]
    fn garbage_truncation_and_trailing_bytes() {
        let packed = deflate(br#"{"code":"demo","pad":"........"}"#);
        // Each of these was one `BadCompressedBody` before the causes got variants.
        let bad_zlib = |r: Result<Bytes, BodyError>| {
            matches!(
                r,
                Err(BodyError::BadZlib { .. }
                    | BodyError::TruncatedZlib
                    | BodyError::ZlibTrailingBytes { .. })
            )
        };
        assert!(matches!(
            inflate(b"not zlib at all", 100),
            Err(BodyError::BadZlib { .. })
        ));
        assert!(bad_zlib(inflate(b"", 100)));
        for cut in 0..packed.len() {
            assert!(bad_zlib(inflate(&packed[..cut], 100)), "cut at {cut}");
        }
        let mut trailing = packed.to_vec();
        trailing.extend_from_slice(b"xx");
        let err = inflate(&trailing, 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad compressed body: 2 trailing bytes after the zlib stream"
        );
        assert!(matches!(err, BodyError::ZlibTrailingBytes { count: 2 }));
        // A zlib error keeps the inflater's word as its source, out of its own message.
        let err = inflate(b"not zlib at all", 100).unwrap_err();
        assert_eq!(err.to_string(), "bad compressed body");
        let source = std::error::Error::source(&err).expect("the flate2 error");
        assert!(!source.to_string().is_empty());
        let mut bad_sum = packed.to_vec();
        let last = bad_sum.len() - 1;
        bad_sum[last] ^= 1;
        assert!(inflate(&bad_sum, 100).is_err());
    }
}
