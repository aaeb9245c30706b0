//! The envelope every stored object shares: an 8-byte magic naming the
//! object type, a little-endian `u32` format version, then a postcard body.
//!
//! Decoding is the one place untrusted bytes enter the store, so it checks
//! the magic and version before touching the body, and postcard's own bounds
//! checks (with serde's capped pre-allocation) keep a hostile length prefix
//! from allocating more than the input could hold.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Bytes of the envelope before the body: magic and version.
pub const HEADER_LEN: usize = 12;

/// Encodes `body` behind `magic` and `version`.
pub fn encode<T: Serialize>(magic: &[u8; 8], version: u32, body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    postcard::to_io(body, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Decodes an object written by `encode`, naming `object` in errors.
/// Versions above `supported` are refused rather than misread.
pub fn decode<T: DeserializeOwned>(
    magic: &[u8; 8],
    supported: u32,
    object: &str,
    bytes: &[u8],
) -> Result<T> {
    let (body, rest) = postcard::take_from_bytes(body(magic, supported, object, bytes)?)
        .map_err(|e| Error::corrupt(object, format!("cannot decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(
            object,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(body)
}

/// The postcard body of an object written by `encode`, once its magic and
/// version are checked (for a reader that decodes the body its own way).
pub fn body<'b>(
    magic: &[u8; 8],
    supported: u32,
    object: &str,
    bytes: &'b [u8],
) -> Result<&'b [u8]> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != magic {
        return Err(Error::corrupt(
            object,
            format!(
                "does not start with {:?}",
                String::from_utf8_lossy(magic).as_ref()
            ),
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version == 0 || version > supported {
        return Err(Error::UnsupportedVersion {
            object: object.to_string(),
            found: version,
            supported,
        });
    }
    Ok(&bytes[HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let bytes = encode(b"TESTOBJ1", 1, &(7u32, "x".to_string()));
        let back: (u32, String) = decode(b"TESTOBJ1", 1, "t", &bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        assert!(decode::<(u32, String)>(b"OTHEROBJ", 1, "t", &bytes).is_err());
        let mut newer = bytes.clone();
        newer[8] = 2;
        assert!(matches!(
            decode::<(u32, String)>(b"TESTOBJ1", 1, "t", &newer),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode::<(u32, String)>(b"TESTOBJ1", 1, "t", &long).is_err());
        // A length prefix claiming 2^32 elements in a 20-byte input.
        let mut hostile = b"TESTOBJ1\x01\x00\x00\x00".to_vec();
        hostile.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]);
        assert!(decode::<Vec<u64>>(b"TESTOBJ1", 1, "t", &hostile).is_err());
    }
}
