//! The chunk index: which pack holds each chunk, and where in it.
//!
//! The durable truth is the packs themselves (every pack's trailer lists its
//! frames and chunks) and the immutable index objects (`index/<id>`), one per
//! persist, that gather the trailers of the packs it wrote so a reader need
//! not open every pack. The `sled` trees here are a local, rebuildable cache
//! of both: `chunks` maps a chunk id to its location, `loaded-indexes` and
//! `loaded-packs` record what has been merged in, so `sync` reads only new
//! objects. A pack no index object lists (its persist died before writing
//! one, or a server indexed it on arrival) is read from its trailer, so a
//! retried persist never uploads it again.
//!
//! `ChunkLookup` is what persist and attach ask: which chunks are missing,
//! where they are. The local cache answers for directory and S3 stores; a
//! `strata serve` client asks the server (`backend::http`). This module knows
//! nothing about files or manifests.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::keys::index_key;
use crate::format::pack::{check_frames, Compression, FrameChunk, FrameEntry, FrameRef};
use crate::id::{ChunkId, IndexId, PackId};

/// The magic of index objects.
pub const INDEX_MAGIC: &[u8; 8] = b"STRAINDX";
/// The format version of index objects.
pub const INDEX_VERSION: u32 = 1;

/// Reads a pack's trailer with two range reads (footer, then trailer), not
/// the whole pack.
pub fn read_pack_trailer(backend: &dyn Backend, key: &str) -> Result<Vec<FrameEntry>> {
    let size = backend.size(key)?;
    let tail = crate::format::pack::FOOTER_LEN as u64;
    if size < tail + codec::HEADER_LEN as u64 {
        return Err(Error::corrupt(key, "too short to be a pack"));
    }
    let footer = backend
        .get_ranges(key, std::slice::from_ref(&(size - tail..size)))?
        .remove(0);
    let tlen = crate::format::pack::footer_trailer_len(&footer, key)?;
    let start = size
        .checked_sub(tail + tlen)
        .filter(|s| *s >= codec::HEADER_LEN as u64)
        .ok_or_else(|| Error::corrupt(key, "trailer length out of range"))?;
    let trailer = backend
        .get_ranges(key, std::slice::from_ref(&(start..size - tail)))?
        .remove(0);
    crate::format::pack::decode_trailer(&trailer, start, key)
}

/// An index object: the frames and chunks of some packs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexObject {
    /// The packs it lists.
    pub packs: Vec<IndexedPack>,
}

/// One pack and its frames, as an index object lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    /// The pack.
    pub pack: PackId,
    /// Its frames and their chunks.
    pub frames: Vec<FrameEntry>,
}

impl IndexObject {
    /// The object's id and bytes.
    pub fn encode(&self) -> (IndexId, Vec<u8>) {
        let bytes = codec::encode(INDEX_MAGIC, INDEX_VERSION, self);
        (IndexId::of(&bytes), bytes)
    }

    /// Reads and checks the object's bytes.
    pub fn decode(id: &IndexId, bytes: &[u8]) -> Result<Self> {
        let object = index_key(id);
        if IndexId::of(bytes) != *id {
            return Err(Error::corrupt(object, "content does not match its id"));
        }
        let obj: IndexObject = codec::decode(INDEX_MAGIC, INDEX_VERSION, &object, bytes)?;
        for p in &obj.packs {
            check_frames(&p.frames, u32::MAX as u64, &object)?;
        }
        Ok(obj)
    }
}

/// The location of every chunk in a pack's frames, in order.
pub fn chunk_locations(pack: PackId, frames: &[FrameEntry]) -> impl Iterator<Item = Location> + '_ {
    frames.iter().flat_map(move |f| {
        f.chunks.iter().map(move |c| Location {
            pack,
            frame: f.frame_ref(),
            chunk: *c,
        })
    })
}

/// Where a chunk is stored: its pack, its frame there, its place inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack.
    pub pack: PackId,
    /// The frame the chunk is in.
    pub frame: FrameRef,
    /// The chunk's place in the frame.
    pub chunk: FrameChunk,
}

/// Bytes of a location record (`to_bytes`).
pub const LOCATION_LEN: usize = 32 + 4 + 4 + 4 + 1 + 4 + 4;

impl Location {
    /// The fixed-size record (local index values, locate answers).
    pub fn to_bytes(self) -> [u8; LOCATION_LEN] {
        let mut b = [0u8; LOCATION_LEN];
        b[..32].copy_from_slice(&self.pack.0);
        b[32..36].copy_from_slice(&self.frame.offset.to_le_bytes());
        b[36..40].copy_from_slice(&self.frame.stored_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.frame.raw_len.to_le_bytes());
        b[44] = self.frame.compression as u8;
        b[45..49].copy_from_slice(&self.chunk.offset.to_le_bytes());
        b[49..53].copy_from_slice(&self.chunk.len.to_le_bytes());
        b
    }

    /// Reads a record `to_bytes` wrote, for chunk `id`.
    pub fn from_bytes(id: ChunkId, b: &[u8]) -> Result<Self> {
        let bad = || Error::Meta(format!("bad index entry for chunk {id}"));
        if b.len() != LOCATION_LEN {
            return Err(bad());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let compression = match b[44] {
            0 => Compression::Raw,
            1 => Compression::Zstd,
            _ => return Err(bad()),
        };
        Ok(Location {
            pack: PackId(b[..32].try_into().expect("32 bytes")),
            frame: FrameRef {
                offset: u32_at(32),
                stored_len: u32_at(36),
                raw_len: u32_at(40),
                compression,
            },
            chunk: FrameChunk {
                id,
                offset: u32_at(45),
                len: u32_at(49),
            },
        })
    }
}
