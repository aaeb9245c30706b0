//! Pack files: many compressed chunks appended into one immutable object of
//! a few MiB, because one object per chunk is slow on disk and costly on
//! object stores.
//!
//! A pack is `header | blob* | trailer | footer`; the trailer lists every
//! blob, so the index can always be rebuilt from the packs alone. A pack is
//! named by the BLAKE3 of its bytes. This module owns the pack encoding and
//! blob (de)compression; it knows nothing about which chunks a store already
//! has or where packs are kept.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};

pub const PACK_MAGIC: &[u8; 8] = b"STRAPACK";
pub const PACK_VERSION: u32 = 1;
const TRAILER_MAGIC: &[u8; 8] = b"STRAPTRL";
/// `trailer length: u32 LE` then `STRAPEND`.
const FOOTER_LEN: usize = 12;
const FOOTER_MAGIC: &[u8; 8] = b"STRAPEND";
/// No chunk is larger than FastCDC's maximum; anything claiming more is corrupt.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

/// How a blob's bytes encode its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (compression would not have shrunk it).
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// One blob of a pack, as listed in its trailer and in index objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub chunk: ChunkId,
    /// Byte offset of the blob within the pack.
    pub offset: u32,
    /// Length of the blob as stored.
    pub stored_len: u32,
    /// Length of the chunk once decoded.
    pub raw_len: u32,
    pub compression: Compression,
}

/// Compresses `raw` with `compressor`, keeping it raw when that would not
/// make it smaller.
pub fn encode_blob(
    compressor: &mut zstd::bulk::Compressor<'_>,
    raw: &[u8],
) -> (Compression, Vec<u8>) {
    match compressor.compress(raw) {
        Ok(z) if z.len() < raw.len() => (Compression::Zstd, z),
        _ => (Compression::Raw, raw.to_vec()),
    }
}

/// Decodes one blob and checks it against its chunk id; `object` names the
/// pack in errors.
pub fn decode_blob(entry: &BlobEntry, stored: &[u8], object: &str) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::CorruptChunk {
        chunk: entry.chunk,
        object: object.to_string(),
        detail,
    };
    if stored.len() != entry.stored_len as usize {
        return Err(bad(format!(
            "stored length {} but the index says {}",
            stored.len(),
            entry.stored_len
        )));
    }
    if entry.raw_len > MAX_CHUNK_LEN {
        return Err(bad(format!("claims {} bytes", entry.raw_len)));
    }
    let raw = match entry.compression {
        Compression::Raw => stored.to_vec(),
        // Decoding into a buffer of the claimed size caps what a hostile
        // blob can make us allocate.
        Compression::Zstd => zstd::bulk::decompress(stored, entry.raw_len as usize)
            .map_err(|e| bad(format!("zstd: {e}")))?,
    };
    if raw.len() != entry.raw_len as usize || ChunkId::of(&raw) != entry.chunk {
        return Err(bad("content does not match its id".into()));
    }
    Ok(raw)
}

/// A pack being filled in memory.
#[derive(Debug)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(4 << 20);
        bytes.extend_from_slice(PACK_MAGIC);
        bytes.extend_from_slice(&PACK_VERSION.to_le_bytes());
        Self {
            bytes,
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, chunk: ChunkId, raw_len: u32, compression: Compression, blob: &[u8]) {
        self.entries.push(BlobEntry {
            chunk,
            offset: self.bytes.len() as u32,
            stored_len: blob.len() as u32,
            raw_len,
            compression,
        });
        self.bytes.extend_from_slice(blob);
    }

    /// Appends the trailer and footer; returns the pack's id, bytes and entries.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<BlobEntry>) {
        let trailer = codec::encode(TRAILER_MAGIC, PACK_VERSION, &self.entries);
        self.bytes.extend_from_slice(&trailer);
        self.bytes
            .extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(FOOTER_MAGIC);
        (PackId::of(&self.bytes), self.bytes, self.entries)
    }
}

/// Reads a whole pack's trailer: the list of its blobs. Used to rebuild the
/// index and by `verify`; checks every entry lies inside the blob area.
pub fn read_trailer(pack: &[u8], object: &str) -> Result<Vec<BlobEntry>> {
    let n = pack.len();
    if n < codec::HEADER_LEN + FOOTER_LEN || &pack[..8] != PACK_MAGIC {
        return Err(Error::corrupt(object, "not a pack"));
    }
    if &pack[n - 8..] != FOOTER_MAGIC {
        return Err(Error::corrupt(object, "no pack footer (truncated?)"));
    }
    let tlen = u32::from_le_bytes(pack[n - 12..n - 8].try_into().expect("4 bytes")) as usize;
    let blob_end = n
        .checked_sub(FOOTER_LEN + tlen)
        .filter(|e| *e >= codec::HEADER_LEN)
        .ok_or_else(|| Error::corrupt(object, "trailer length out of range"))?;
    let entries: Vec<BlobEntry> = codec::decode(
        TRAILER_MAGIC,
        PACK_VERSION,
        object,
        &pack[blob_end..n - FOOTER_LEN],
    )?;
    for e in &entries {
        let end = e.offset as u64 + e.stored_len as u64;
        if (e.offset as usize) < codec::HEADER_LEN || end > blob_end as u64 {
            return Err(Error::corrupt(
                object,
                format!("blob {} lies outside the pack", e.chunk.short()),
            ));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_read_decode() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let mut b = PackBuilder::new();
        let text = b"hello hello hello hello hello hello hello".repeat(10);
        let noise: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        for raw in [&text[..], &noise[..], b""] {
            let (comp, blob) = encode_blob(&mut c, raw);
            b.push(ChunkId::of(raw), raw.len() as u32, comp, &blob);
        }
        let (id, bytes, entries) = b.finish();
        assert_eq!(id, PackId::of(&bytes));
        assert_eq!(entries[0].compression, Compression::Zstd);
        assert_eq!(read_trailer(&bytes, "p").unwrap(), entries);
        for (e, raw) in entries.iter().zip([&text[..], &noise[..], b""]) {
            let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(decode_blob(e, s, "p").unwrap(), raw);
        }
        // A flipped byte inside a blob is caught by the id check.
        let e = entries[0];
        let mut s = bytes[e.offset as usize..(e.offset + e.stored_len) as usize].to_vec();
        s[3] ^= 1;
        assert!(decode_blob(&e, &s, "p").is_err());
        assert!(read_trailer(&bytes[..bytes.len() - 1], "p").is_err());
    }
}
