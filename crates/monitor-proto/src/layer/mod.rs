//! Body layers: pure functions over bodies, applied after framing on the way in
//! (decrypt, then inflate) and before it on the way out (compress, then encrypt).

pub mod compress;
pub mod crypto;
pub mod kex;
