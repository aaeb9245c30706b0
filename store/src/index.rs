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
use crate::codec;
use crate::error::{Error, Result};
use crate::id::{ChunkId, IndexId, PackId};
use crate::pack::{check_frames, Compression, FrameChunk, FrameEntry, FrameRef};

pub const INDEX_MAGIC: &[u8; 8] = b"STRAINDX";
pub const INDEX_VERSION: u32 = 1;

pub const PACK_PREFIX: &str = "packs/";
pub const INDEX_PREFIX: &str = "index/";

/// Reads a pack's trailer with two range reads (footer, then trailer), not
/// the whole pack.
pub fn read_pack_trailer(backend: &dyn Backend, key: &str) -> Result<Vec<FrameEntry>> {
    let size = backend.size(key)?;
    let tail = crate::pack::FOOTER_LEN as u64;
    if size < tail + codec::HEADER_LEN as u64 {
        return Err(Error::corrupt(key, "too short to be a pack"));
    }
    let footer = backend
        .get_ranges(key, std::slice::from_ref(&(size - tail..size)))?
        .remove(0);
    let tlen = crate::pack::footer_trailer_len(&footer, key)?;
    let start = size
        .checked_sub(tail + tlen)
        .filter(|s| *s >= codec::HEADER_LEN as u64)
        .ok_or_else(|| Error::corrupt(key, "trailer length out of range"))?;
    let trailer = backend
        .get_ranges(key, std::slice::from_ref(&(start..size - tail)))?
        .remove(0);
    crate::pack::decode_trailer(&trailer, start, key)
}

/// The pack id a `packs/hh/<id>` key names.
pub fn pack_id_of(key: &str) -> Option<PackId> {
    key.strip_prefix(PACK_PREFIX)?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

pub fn index_key(id: &IndexId) -> String {
    format!("index/{}", id.to_hex())
}

/// An index object: the frames and chunks of some packs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexObject {
    pub packs: Vec<IndexedPack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    pub pack: PackId,
    pub frames: Vec<FrameEntry>,
}

impl IndexObject {
    pub fn encode(&self) -> (IndexId, Vec<u8>) {
        let bytes = codec::encode(INDEX_MAGIC, INDEX_VERSION, self);
        (IndexId::of(&bytes), bytes)
    }

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

/// Where a chunk is stored: its pack, its frame there, its place inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub frame: FrameRef,
    pub chunk: FrameChunk,
}

pub const LOCATION_LEN: usize = 32 + 4 + 4 + 4 + 1 + 4 + 4;

impl Location {
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

/// What persist and attach ask about chunks, in batches (a remote store
/// answers a whole batch in one round trip).
pub trait ChunkLookup: Send + Sync + std::fmt::Debug {
    /// For each id, whether the store lacks it.
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>>;
    /// For each id, where it is stored, if anywhere.
    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>>;
    /// Records a pack just written (before its index object exists).
    fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()>;
    /// Records an index object just written.
    fn add(&self, id: &IndexId, object: &IndexObject) -> Result<()>;
    /// How many chunks are indexed.
    fn count(&self) -> Result<u64>;
}

/// The local chunk index over a store's packs and index objects.
#[derive(Debug, Clone)]
pub struct ChunkIndex {
    chunks: sled::Tree,
    loaded: sled::Tree,
    packs: sled::Tree,
    /// Packs gc has condemned (pack id -> when): their chunks count as
    /// missing, so persists upload them again instead of reusing them.
    condemned: sled::Tree,
    /// Packs known to be deleted (by gc here, or found gone by `sync`): an
    /// index object written later that still lists one (a persist that
    /// stalled past the grace period writes its index object after gc
    /// deleted its packs) must not bring its chunks back.
    deleted: sled::Tree,
}

impl ChunkLookup for ChunkIndex {
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let none_condemned = self.condemned.is_empty();
        ids.iter()
            .map(|id| {
                if none_condemned {
                    return Ok(!self.contains(id)?);
                }
                Ok(match self.chunks.get(id.0)? {
                    None => true,
                    Some(v) => v.len() < 32 || self.condemned.contains_key(&v[..32])?,
                })
            })
            .collect()
    }
    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        ids.iter().map(|id| self.get(id)).collect()
    }
    fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        ChunkIndex::add_pack(self, pack, frames)
    }
    fn add(&self, id: &IndexId, object: &IndexObject) -> Result<()> {
        ChunkIndex::add(self, id, object)
    }
    fn count(&self) -> Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ChunkIndex {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            chunks: db.open_tree("chunks")?,
            loaded: db.open_tree("loaded-indexes")?,
            packs: db.open_tree("loaded-packs")?,
            condemned: db.open_tree("condemned-packs")?,
            deleted: db.open_tree("deleted-packs")?,
        })
    }

    pub fn get(&self, id: &ChunkId) -> Result<Option<Location>> {
        match self.chunks.get(id.0)? {
            Some(v) => Location::from_bytes(*id, &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.chunks.contains_key(id.0)?)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Merges an index object into the cache (from several threads: sled
    /// takes concurrent writers). A chunk listed twice keeps whichever
    /// location is written last: any copy is as good as another. The object
    /// is marked loaded only after all its entries, so an interrupted merge
    /// is simply redone by the next `sync`.
    pub fn add(&self, id: &IndexId, object: &IndexObject) -> Result<()> {
        for p in &object.packs {
            if !self.packs.contains_key(p.pack.0)? && !self.deleted.contains_key(p.pack.0)? {
                self.add_pack(&p.pack, &p.frames)?;
            }
        }
        self.loaded.insert(id.0, &[])?;
        Ok(())
    }

    /// Merges one pack's frames; marks the pack loaded after its entries.
    pub fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        use rayon::prelude::*;
        frames.par_iter().try_for_each(|f| {
            for c in &f.chunks {
                let loc = Location {
                    pack: *pack,
                    frame: f.frame_ref(),
                    chunk: *c,
                };
                self.chunks.insert(c.id.0, &loc.to_bytes()[..])?;
            }
            Ok::<(), Error>(())
        })?;
        // Written (again): present, whatever was deleted before.
        self.deleted.remove(pack.0)?;
        self.packs.insert(pack.0, &[])?;
        Ok(())
    }

    /// Forgets a pack (gc deleted it): its chunks' entries that point at it.
    pub fn remove_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        for f in frames {
            for c in &f.chunks {
                if let Some(v) = self.chunks.get(c.id.0)? {
                    if v.len() == LOCATION_LEN && v[..32] == pack.0 {
                        self.chunks.remove(c.id.0)?;
                    }
                }
            }
        }
        self.packs.remove(pack.0)?;
        self.deleted.insert(pack.0, &[])?;
        Ok(())
    }

    /// Replaces the set of condemned packs.
    pub fn set_condemned(&self, packs: &std::collections::BTreeMap<PackId, i64>) -> Result<()> {
        self.condemned.clear()?;
        for (p, t) in packs {
            self.condemned.insert(p.0, &t.to_le_bytes())?;
        }
        Ok(())
    }

    /// Forgets an index object (gc replaced it).
    pub fn forget_index(&self, id: &IndexId) -> Result<()> {
        self.loaded.remove(id.0)?;
        Ok(())
    }

    /// Reads the index objects this cache has not seen yet; returns how many.
    /// A corrupt index object is skipped (and stays unloaded), so one bad
    /// object costs the chunks it lists, not the whole store; `verify`
    /// reports it.
    pub fn sync(&self, backend: &dyn Backend) -> Result<usize> {
        let mut added = 0;
        for key in backend.list(INDEX_PREFIX)? {
            let Some(Ok(id)) = key.strip_prefix("index/").map(str::parse::<IndexId>) else {
                continue;
            };
            if self.loaded.contains_key(id.0)? {
                continue;
            }
            match IndexObject::decode(&id, &backend.get(&key)?) {
                Ok(object) => {
                    self.add(&id, &object)?;
                    added += 1;
                }
                Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Packs no index object lists: read their trailers.
        let pack_keys = backend.list(PACK_PREFIX)?;
        let present: std::collections::HashSet<PackId> =
            pack_keys.iter().filter_map(|k| pack_id_of(k)).collect();
        for key in pack_keys {
            let Some(id) = key
                .rsplit('/')
                .next()
                .and_then(|h| h.parse::<PackId>().ok())
            else {
                continue;
            };
            if self.packs.contains_key(id.0)? {
                continue;
            }
            match read_pack_trailer(backend, &key) {
                Ok(frames) => {
                    self.add_pack(&id, &frames)?;
                    added += 1;
                }
                // Corrupt, or deleted by gc meanwhile: its chunks stay
                // unindexed (and so are uploaded again when needed).
                Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => continue,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Packs another process's gc deleted: forget their chunks.
        let mut gone = Vec::new();
        for item in self.packs.iter() {
            let (k, _) = item?;
            if k.len() == 32 && !present.contains(&PackId(k[..].try_into().expect("32 bytes"))) {
                gone.push(k);
            }
        }
        if !gone.is_empty() {
            for item in self.chunks.iter() {
                let (k, v) = item?;
                if v.len() >= 32 && gone.iter().any(|g| g[..] == v[..32]) {
                    self.chunks.remove(k)?;
                }
            }
            for g in gone {
                self.packs.remove(&g)?;
                self.deleted.insert(g, &[])?;
            }
        }
        // What gc has condemned.
        let (condemned, _) = crate::gc::read_condemned(backend)?;
        self.set_condemned(&condemned.into_iter().collect())?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_round_trip_and_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let idx = ChunkIndex::open(&db).unwrap();
        let backend =
            crate::backend::LocalDir::new(dir.path().join("o"), dir.path().join("t")).unwrap();
        let chunk = FrameChunk {
            id: ChunkId::of(b"x"),
            offset: 3,
            len: 1,
        };
        let frame = FrameEntry {
            offset: 12,
            stored_len: 9,
            raw_len: 4,
            compression: Compression::Zstd,
            chunks: vec![chunk],
        };
        let obj = IndexObject {
            packs: vec![IndexedPack {
                pack: PackId::of(b"p"),
                frames: vec![frame.clone()],
            }],
        };
        let (id, bytes) = obj.encode();
        backend.put(&index_key(&id), &bytes).unwrap();
        // (The pack's bytes do not matter here, only that it exists: sync
        // forgets the chunks of packs that are gone.)
        backend.put(&pack_key(&PackId::of(b"p")), b"p").unwrap();
        assert_eq!(idx.sync(&backend).unwrap(), 1);
        assert_eq!(idx.sync(&backend).unwrap(), 0);
        let loc = idx.get(&chunk.id).unwrap().unwrap();
        assert_eq!((loc.frame, loc.chunk), (frame.frame_ref(), chunk));
        assert_eq!(loc.pack, PackId::of(b"p"));
        // A new, empty cache (another machine) rebuilds from the object.
        let fresh_db = sled::Config::new().temporary(true).open().unwrap();
        let fresh = ChunkIndex::open(&fresh_db).unwrap();
        assert!(fresh.get(&chunk.id).unwrap().is_none());
        assert_eq!(fresh.sync(&backend).unwrap(), 1);
        assert!(fresh.get(&chunk.id).unwrap().is_some());
        // Another process's gc deleted the pack: the next sync forgets it.
        backend.delete(&pack_key(&PackId::of(b"p"))).unwrap();
        fresh.sync(&backend).unwrap();
        assert!(fresh.get(&chunk.id).unwrap().is_none());
        assert_eq!(fresh.missing(&[chunk.id]).unwrap(), vec![true]);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(IndexObject::decode(&id, &bad).is_err());
    }
}
