//! Identifiers: content ids (`ChunkId`, `PackId`, `IndexId`, `ManifestId`) and
//! validated names (`RunName`, `JobName`).
//!
//! Content ids are BLAKE3-256 hashes shown as lowercase hex. Names are the
//! user's words and become parts of object keys, so they are validated here,
//! once, and never passed around as bare strings. This module knows nothing
//! about where ids are stored.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not a valid id or name. The library's `Error` wraps
/// it (`Error::InvalidId`, `Error::InvalidName`); ids sit below errors, so
/// they have their own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not the hex of a 32-byte id.
    #[error("invalid {what} {value:?}")]
    InvalidId {
        /// What was expected ("chunk id").
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// Not a valid run or job name.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What was expected ("run name").
        what: &'static str,
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

type Result<T> = std::result::Result<T, IdError>;

macro_rules! content_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Serialized as its hex string in human-readable formats (JSON
        /// reports and answers) and as its 32 bytes in binary ones (the
        /// store's postcard objects, unchanged from format v1).
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    struct Bytes;
                    impl<'de> serde::de::Visitor<'de> for Bytes {
                        type Value = [u8; 32];
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            f.write_str(concat!("a ", $what))
                        }
                        fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                            self,
                            d: D,
                        ) -> std::result::Result<[u8; 32], D::Error> {
                            <[u8; 32]>::deserialize(d)
                        }
                    }
                    d.deserialize_newtype_struct(stringify!($name), Bytes).map(Self)
                }
            }
        }

        impl $name {
            /// The id of `bytes`: their BLAKE3 hash.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                to_hex(&self.0)
            }

            /// The first 8 hex characters, for messages.
            pub fn short(&self) -> String {
                to_hex(&self.0[..4])
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self> {
                from_hex(s).map(Self).ok_or_else(|| IdError::InvalidId {
                    what: $what,
                    value: s.to_string(),
                })
            }
        }
    };
}

content_id!(
    /// BLAKE3 of a chunk's uncompressed bytes.
    ChunkId,
    "chunk id"
);
content_id!(
    /// BLAKE3 of a whole pack file.
    PackId,
    "pack id"
);
content_id!(
    /// BLAKE3 of an encoded index object.
    IndexId,
    "index id"
);
content_id!(
    /// BLAKE3 of an encoded manifest.
    ManifestId,
    "manifest id"
);

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        if pair.iter().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The longest run or job name accepted.
pub const MAX_NAME_LEN: usize = 128;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as a name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`,
            /// not starting with `.` (names become parts of object keys).
            pub fn new(s: &str) -> Result<Self> {
                validate_name(s).map_err(|reason| IdError::InvalidName {
                    what: $what,
                    value: s.to_string(),
                    reason,
                })?;
                Ok(Self(s.to_string()))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self> {
                Self::new(&s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

name_type!(
    /// The name of a workflow run, unique within a store.
    RunName,
    "run name"
);
name_type!(
    /// The name of a job within a run's graph.
    JobName,
    "job name"
);

fn validate_name(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > MAX_NAME_LEN {
        return Err("it is longer than 128 characters");
    }
    if s.starts_with('.') {
        return Err("it starts with '.'");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!("zz".parse::<ChunkId>().is_err());
        assert!(id.to_hex().to_uppercase().parse::<ChunkId>().is_err());
    }

    #[test]
    fn ids_are_hex_in_json_and_32_bytes_in_postcard() {
        let id = ManifestId::of(b"m");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<ManifestId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ManifestId>("\"beef\"").is_err());
        // The binary form is exactly what format v1 wrote: the raw bytes.
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin, id.0.to_vec());
        assert_eq!(postcard::from_bytes::<ManifestId>(&bin).unwrap(), id);
    }

    #[test]
    fn names_are_validated() {
        assert!(JobName::new("compile-code_2.x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(129)] {
            let err = JobName::new(bad).unwrap_err().to_string();
            assert!(err.contains("job name"), "{err}");
        }
    }
}
