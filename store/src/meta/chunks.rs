//! The local chunk index: which pack holds each chunk, and where in it, as
//! `sled` trees that cache the packs' trailers and the index objects.
//!
//! `chunks` maps a chunk id to its location; `loaded-indexes` and
//! `loaded-packs` record what has been merged in, so `sync` reads only new
//! objects. A pack no index object lists (its persist died before writing
//! one, or a server indexed it on arrival) is read from its trailer, so a
//! retried persist never uploads it again. `condemned-packs` and
//! `deleted-packs` hold what gc decided (docs/lifecycle.md). Everything here
//! is rebuilt from the objects when lost. This module knows nothing about
//! files or manifests.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::format::index::{
    chunk_locations, read_pack_trailer, IndexObject, Location, LOCATION_LEN,
};

use crate::format::pack::FrameEntry;

use crate::format::keys::{index_id_of, pack_id_of, INDEX_PREFIX, PACK_PREFIX};
use crate::format::records::read_condemned;
use crate::id::{ChunkId, IndexId, PackId};
use crate::lookup::ChunkLookup;

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
    ///
    /// On the calling thread, never on rayon's pool: persist's upload
    /// threads call this while the pool's threads may be blocked handing
    /// them work, and waiting on the pool there would deadlock.
    pub fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        for loc in chunk_locations(*pack, frames) {
            self.chunks.insert(loc.chunk.id.0, &loc.to_bytes()[..])?;
        }
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
            let Some(id) = index_id_of(&key) else {
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
        let (condemned, _) = read_condemned(backend)?;
        self.set_condemned(&condemned.into_iter().collect())?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexedPack;
    use crate::format::keys::{index_key, pack_key};
    use crate::format::pack::{Compression, FrameChunk};

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
