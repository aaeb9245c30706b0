//! Pack files: immutable objects of a few MiB holding many chunks, because
//! one object per chunk is slow on disk and costly on object stores.
//!
//! Chunks are compressed in *frames*: a frame is a run of chunks (about
//! 2 MiB, from neighbouring files of one persist) compressed as one zstd
//! frame, so the small files that make up most of a `node_modules` compress
//! with their neighbours' context, as in a tarball, instead of alone. A
//! pack is `header | frame* | trailer | footer`; the trailer lists every
//! frame and the chunks inside it, so the index can always be rebuilt from
//! the packs alone. A pack is named by the BLAKE3 of its bytes.
//!
//! This module owns the pack encoding and frame (de)compression; it knows
//! nothing about which chunks a store already has or where packs are kept.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::codec;
use crate::id::{ChunkId, PackId};

/// The magic of packs.
pub const PACK_MAGIC: &[u8; 8] = b"STRAPACK";
/// The format version of packs.
pub const PACK_VERSION: u32 = 1;
const TRAILER_MAGIC: &[u8; 8] = b"STRAPTRL";
/// `trailer length: u32 LE` then `STRAPEND`.
pub const FOOTER_LEN: usize = 12;
const FOOTER_MAGIC: &[u8; 8] = b"STRAPEND";
/// No chunk is larger than FastCDC's maximum; anything claiming more is corrupt.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// A frame never decodes to more than this (a frame is closed once it
/// reaches its target, so it holds at most target + one chunk).
pub const MAX_FRAME_RAW: u32 = 64 << 20;

/// How a frame's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Compression {
    /// As is (compression would not have shrunk it).
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// A chunk's place inside its frame's decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameChunk {
    /// The chunk's id.
    pub id: ChunkId,
    /// Where the chunk starts in the decoded frame.
    pub offset: u32,
    /// The chunk's length in bytes.
    pub len: u32,
}

/// One frame of a pack, as listed in its trailer and in index objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameEntry {
    /// Byte offset of the frame within the pack.
    pub offset: u32,
    /// Length of the frame as stored.
    pub stored_len: u32,
    /// Length of the frame once decoded.
    pub raw_len: u32,
    /// How the frame is compressed.
    pub compression: Compression,
    /// Its chunks, in order.
    pub chunks: Vec<FrameChunk>,
}

/// The frame part of a chunk's location: enough to fetch and decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameRef {
    /// Where the frame starts in the pack.
    pub offset: u32,
    /// Bytes as stored.
    pub stored_len: u32,
    /// Bytes once decompressed.
    pub raw_len: u32,
    /// How the frame is compressed.
    pub compression: Compression,
}

impl FrameEntry {
    /// Where the frame is, without its chunk list.
    pub fn frame_ref(&self) -> FrameRef {
        FrameRef {
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            compression: self.compression,
        }
    }
}

/// Decodes a frame's stored bytes; `object` names the pack in errors. The
/// chunks inside are checked against their ids by `chunk_of`.
pub fn decode_frame(frame: &FrameRef, stored: &[u8], object: &str) -> Result<Vec<u8>> {
    let bad = |detail: String| {
        Error::corrupt(
            object.to_string(),
            format!("frame at offset {}: {detail}", frame.offset),
        )
    };
    if stored.len() != frame.stored_len as usize {
        return Err(bad(format!(
            "stored length {} but the index says {}",
            stored.len(),
            frame.stored_len
        )));
    }
    if frame.raw_len > MAX_FRAME_RAW {
        return Err(bad(format!("claims {} bytes", frame.raw_len)));
    }
    super::work::frame_decoded();
    let raw = match frame.compression {
        Compression::Raw => stored.to_vec(),
        // Decoding into a buffer of the claimed size caps what a hostile
        // frame can make us allocate.
        Compression::Zstd => zstd::bulk::decompress(stored, frame.raw_len as usize)
            .map_err(|e| bad(format!("zstd: {e}")))?,
    };
    if raw.len() != frame.raw_len as usize {
        return Err(bad(format!(
            "decodes to {} bytes, not {}",
            raw.len(),
            frame.raw_len
        )));
    }
    Ok(raw)
}

/// The bytes of chunk `c` in a decoded frame, checked against its id.
pub fn chunk_of<'a>(raw: &'a [u8], c: &FrameChunk, object: &str) -> Result<&'a [u8]> {
    let end = c.offset as u64 + c.len as u64;
    let bytes = raw
        .get(c.offset as usize..end as usize)
        .filter(|_| end <= raw.len() as u64)
        .ok_or_else(|| Error::CorruptChunk {
            chunk: c.id,
            object: object.to_string(),
            detail: "lies outside its frame".into(),
        })?;
    super::work::chunk_hashed();
    if ChunkId::of(bytes) != c.id {
        return Err(Error::CorruptChunk {
            chunk: c.id,
            object: object.to_string(),
            detail: "content does not match its id".into(),
        });
    }
    Ok(bytes)
}

/// Chunks gathered for one frame, not yet compressed.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    raw: Vec<u8>,
    chunks: Vec<FrameChunk>,
}

/// A compressed frame, ready to go into a pack.
#[derive(Debug)]
pub struct SealedFrame {
    /// The frame as stored.
    pub bytes: Vec<u8>,
    /// Bytes of its chunks, decompressed.
    pub raw_len: u32,
    /// How the frame is compressed.
    pub compression: Compression,
    /// Its chunks, in order.
    pub chunks: Vec<FrameChunk>,
}

impl FrameBuilder {
    /// Adds a chunk to the frame.
    pub fn push(&mut self, id: ChunkId, bytes: &[u8]) {
        self.chunks.push(FrameChunk {
            id,
            offset: self.raw.len() as u32,
            len: bytes.len() as u32,
        });
        self.raw.extend_from_slice(bytes);
    }

    /// Bytes of chunks added so far.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Compresses the gathered chunks (kept raw if that is not smaller) and
    /// empties the builder.
    pub fn seal(&mut self, compressor: &mut zstd::bulk::Compressor<'_>) -> SealedFrame {
        let chunks = std::mem::take(&mut self.chunks);
        let raw_len = self.raw.len() as u32;
        let mut bytes = Vec::new();
        let compression = compress_frame(&self.raw, compressor, &mut bytes);
        if compression == Compression::Raw {
            bytes = std::mem::take(&mut self.raw);
        }
        self.raw.clear();
        SealedFrame {
            bytes,
            raw_len,
            compression,
            chunks,
        }
    }
}

/// Compresses a frame's chunks (`raw`, back to back) into `out`, replacing
/// what it held but keeping its memory. Returns `Compression::Raw`, and
/// leaves `out` empty, when compressing does not make them smaller: the
/// frame is then stored as `raw`.
pub fn compress_frame(
    raw: &[u8],
    compressor: &mut zstd::bulk::Compressor<'_>,
    out: &mut Vec<u8>,
) -> Compression {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    match compressor.compress_to_buffer(raw, out) {
        Ok(n) if n < raw.len() => Compression::Zstd,
        _ => {
            out.clear();
            Compression::Raw
        }
    }
}

/// A pack being filled in memory.
#[derive(Debug)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    frames: Vec<FrameEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// An empty one.
    pub fn new() -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(PACK_MAGIC);
        bytes.extend_from_slice(&PACK_VERSION.to_le_bytes());
        Self {
            bytes,
            frames: Vec::new(),
        }
    }

    /// Bytes of the pack so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Adds a sealed frame to the pack.
    pub fn push(&mut self, frame: SealedFrame) {
        self.push_frame(&frame.bytes, frame.raw_len, frame.compression, frame.chunks);
    }

    /// Adds a frame stored as `stored` (compressed with `compression`, or
    /// the raw chunks themselves), holding `chunks` in `raw_len` bytes.
    pub fn push_frame(
        &mut self,
        stored: &[u8],
        raw_len: u32,
        compression: Compression,
        chunks: Vec<FrameChunk>,
    ) {
        self.frames.push(FrameEntry {
            offset: self.bytes.len() as u32,
            stored_len: stored.len() as u32,
            raw_len,
            compression,
            chunks,
        });
        self.bytes.extend_from_slice(stored);
    }

    /// Appends a salt frame, the trailer and the footer; returns the pack's
    /// id, bytes and frames.
    ///
    /// The salt (16 random bytes as one raw chunk no manifest names) makes
    /// every pack's name unique, even when two persists pack the same
    /// chunks the same way (a persist run again after a failure does). gc
    /// condemns and deletes packs by name, so without it a re-upload of a
    /// condemned pack would take the old pack's name, and its condemnation:
    /// gc would delete the new upload that a persist is about to commit.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<FrameEntry>) {
        let salt = &crate::util::random_bytes()[..16];
        self.frames.push(FrameEntry {
            offset: self.bytes.len() as u32,
            stored_len: salt.len() as u32,
            raw_len: salt.len() as u32,
            compression: Compression::Raw,
            chunks: vec![FrameChunk {
                id: ChunkId::of(salt),
                offset: 0,
                len: salt.len() as u32,
            }],
        });
        self.bytes.extend_from_slice(salt);
        let trailer = codec::encode(TRAILER_MAGIC, PACK_VERSION, &self.frames);
        self.bytes.extend_from_slice(&trailer);
        self.bytes
            .extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(FOOTER_MAGIC);
        (PackId::of(&self.bytes), self.bytes, self.frames)
    }
}

/// Checks that frames lie inside a pack's frame area (`12..end`) and chunks
/// inside their frames. Used on trailers and on index objects.
pub fn check_frames(frames: &[FrameEntry], end: u64, object: &str) -> Result<()> {
    for f in frames {
        let stop = f.offset as u64 + f.stored_len as u64;
        if (f.offset as usize) < codec::HEADER_LEN || stop > end || f.raw_len > MAX_FRAME_RAW {
            return Err(Error::corrupt(
                object,
                format!("frame at offset {} lies outside the pack", f.offset),
            ));
        }
        for c in &f.chunks {
            if c.len == 0
                || c.len > MAX_CHUNK_LEN
                || c.offset as u64 + c.len as u64 > f.raw_len as u64
            {
                return Err(Error::corrupt(
                    object,
                    format!("chunk {} lies outside its frame", c.id.short()),
                ));
            }
        }
    }
    Ok(())
}

/// Reads a whole pack's trailer: the list of its frames. Used to rebuild
/// the index and by `verify`.
pub fn read_trailer(pack: &[u8], object: &str) -> Result<Vec<FrameEntry>> {
    let n = pack.len();
    if n < codec::HEADER_LEN + FOOTER_LEN || &pack[..8] != PACK_MAGIC {
        return Err(Error::corrupt(object, "not a pack"));
    }
    if &pack[n - 8..] != FOOTER_MAGIC {
        return Err(Error::corrupt(object, "no pack footer (truncated?)"));
    }
    let tlen = u32::from_le_bytes(pack[n - 12..n - 8].try_into().expect("4 bytes")) as usize;
    let frames_end = n
        .checked_sub(FOOTER_LEN + tlen)
        .filter(|e| *e >= codec::HEADER_LEN)
        .ok_or_else(|| Error::corrupt(object, "trailer length out of range"))?;
    decode_trailer(&pack[frames_end..n - FOOTER_LEN], frames_end as u64, object)
}

/// Checks a whole pack as `id`: that it hashes to its name, that its
/// trailer decodes, that every frame decodes and every chunk in it hashes
/// to its id. Returns the frames. What a server checks before it accepts a
/// pack, and what `verify --read-data` checks of every stored one.
pub fn verify_pack(id: &PackId, bytes: &[u8], object: &str) -> Result<Vec<FrameEntry>> {
    if PackId::of(bytes) != *id {
        return Err(Error::corrupt(
            object,
            "content does not match its name (BLAKE3)",
        ));
    }
    let frames = read_trailer(bytes, object)?;
    for f in &frames {
        let start = f.offset as usize;
        let stored = bytes
            .get(start..start + f.stored_len as usize)
            .ok_or_else(|| Error::corrupt(object, "a frame lies outside the pack"))?;
        let raw = decode_frame(&f.frame_ref(), stored, object)?;
        for c in &f.chunks {
            chunk_of(&raw, c, object)?;
        }
    }
    Ok(frames)
}

/// Decodes a trailer (the bytes between the last frame and the footer) of
/// a pack whose frames end at `frames_end`.
pub fn decode_trailer(trailer: &[u8], frames_end: u64, object: &str) -> Result<Vec<FrameEntry>> {
    let frames: Vec<FrameEntry> = codec::decode(TRAILER_MAGIC, PACK_VERSION, object, trailer)?;
    check_frames(&frames, frames_end, object)?;
    Ok(frames)
}

/// Checks a footer (the last `FOOTER_LEN` bytes of a pack) and returns the
/// trailer's length.
pub fn footer_trailer_len(footer: &[u8], object: &str) -> Result<u64> {
    if footer.len() != FOOTER_LEN || &footer[4..] != FOOTER_MAGIC {
        return Err(Error::corrupt(object, "no pack footer (truncated?)"));
    }
    Ok(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_read_decode() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let text = b"hello hello hello hello hello hello hello".repeat(10);
        let noise: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut pack = PackBuilder::new();
        let mut fb = FrameBuilder::default();
        fb.push(ChunkId::of(&text), &text);
        fb.push(ChunkId::of(&noise), &noise);
        pack.push(fb.seal(&mut c));
        assert!(fb.is_empty());
        fb.push(ChunkId::of(&noise[..7]), &noise[..7]);
        pack.push(fb.seal(&mut c));
        let (id, bytes, frames) = pack.finish();
        assert_eq!(id, PackId::of(&bytes));
        assert_eq!(frames[0].compression, Compression::Zstd);
        assert_eq!(frames[1].compression, Compression::Raw);
        assert_eq!(read_trailer(&bytes, "p").unwrap(), frames);
        let f = &frames[0];
        let stored = &bytes[f.offset as usize..(f.offset + f.stored_len) as usize];
        let raw = decode_frame(&f.frame_ref(), stored, "p").unwrap();
        assert_eq!(chunk_of(&raw, &f.chunks[0], "p").unwrap(), &text[..]);
        assert_eq!(chunk_of(&raw, &f.chunks[1], "p").unwrap(), &noise[..]);
        // A flipped byte is caught: by zstd, or by the chunk's id.
        let mut bad = stored.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let caught = decode_frame(&f.frame_ref(), &bad, "p").and_then(|raw| {
            f.chunks
                .iter()
                .try_for_each(|c| chunk_of(&raw, c, "p").map(|_| ()))
        });
        assert!(caught.is_err());
        assert!(read_trailer(&bytes[..bytes.len() - 1], "p").is_err());
    }
}
