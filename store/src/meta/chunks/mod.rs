//! The local chunk index: which pack holds each chunk, and where in it, as
//! `sled` trees that cache the packs' trailers and the index objects, and
//! `sync`, which keeps them in step with the store's objects.
//!
//! `chunk-entries` maps a chunk id to its frame's number and its place in
//! the frame, and `frames` a frame's number to its pack and where it lies
//! there: a pack's id and a frame's place, said once per frame rather than
//! once per chunk, would be two thirds of every entry. `loaded-indexes` and
//! `loaded-packs` record what has been merged in, so `sync` reads only new
//! objects; `index-sync` holds a format-2 store's log position and the
//! tombstones it has seen (what to read, from these, is
//! `format::index_log`'s rule; this module keeps the state and merges what
//! is read). A pack no index object lists (its persist died before writing
//! one, or a server indexed it on arrival) is read from its trailer, so a
//! retried persist never uploads it again. `condemned-packs` and
//! `deleted-packs` hold what gc decided (docs/lifecycle.md). Everything here
//! is rebuilt from the objects when lost. This module knows nothing about
//! files or manifests.

mod sync;

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index::{IndexObject, Location, LOCATION_LEN};
use crate::format::pack::{FrameChunk, FrameEntry};
use crate::id::{ChunkId, IndexId, PackId};
use crate::lookup::ChunkLookup;

/// The local chunk index over a store's packs and index objects.
#[derive(Debug, Clone)]
pub struct ChunkIndex {
    db: sled::Db,
    /// Chunk id -> `ENTRY_LEN` bytes: its frame's number, its place there.
    chunks: sled::Tree,
    /// Frame number -> `FRAME_LEN` bytes: the pack and the frame's place.
    frames: sled::Tree,
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
    /// Where the last sync of a format-2 store got to: its position in
    /// the index log, the newest tombstone record it applied.
    state: sled::Tree,
}

/// A frame record: a location record's first bytes, its pack and frame.
const FRAME_LEN: usize = LOCATION_LEN - 8;
/// A chunk entry: its frame's number (big-endian u64), then its offset and
/// length in the frame (the last 8 bytes of a location record).
const ENTRY_LEN: usize = 16;

/// The trees of the layout before frame records, dropped when found (the
/// cache is then rebuilt from the objects).
const OLD_TREES: &[&str] = &["chunks"];

/// How many ids one thread looks up at a time in `missing`.
const MISSING_PART: usize = 4096;

/// Frame records read during one call, by number: a call's chunks mostly
/// share a few frames.
#[derive(Default)]
struct FrameMemo(HashMap<u64, Option<sled::IVec>>);

impl ChunkLookup for ChunkIndex {
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        // A whole manifest's chunks (a server checking a layer ref) are
        // looked up on every core: each is a walk of sled's tree.
        if ids.len() > MISSING_PART {
            let parts: Vec<Vec<bool>> = ids
                .par_chunks(MISSING_PART)
                .map(|part| self.missing(part))
                .collect::<Result<_>>()?;
            return Ok(parts.concat());
        }
        let none_condemned = self.condemned.is_empty();
        let mut memo = FrameMemo::default();
        ids.iter()
            .map(|id| {
                if none_condemned {
                    return Ok(!self.contains(id)?);
                }
                Ok(match self.chunks.get(id.0)? {
                    None => true,
                    Some(v) => match self.pack_of(&v, &mut memo)? {
                        None => true,
                        Some(pack) => self.condemned.contains_key(pack)?,
                    },
                })
            })
            .collect()
    }
    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        let mut memo = FrameMemo::default();
        ids.iter().map(|id| self.get_with(id, &mut memo)).collect()
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
    pub fn open(db: &super::MetaDb) -> Result<Self> {
        let db = &db.0;
        let names = db.tree_names();
        let old = OLD_TREES
            .iter()
            .any(|t| names.iter().any(|n| n.as_ref() == t.as_bytes()));
        let index = Self {
            db: db.clone(),
            chunks: db.open_tree("chunk-entries")?,
            frames: db.open_tree("frames")?,
            loaded: db.open_tree("loaded-indexes")?,
            packs: db.open_tree("loaded-packs")?,
            condemned: db.open_tree("condemned-packs")?,
            deleted: db.open_tree("deleted-packs")?,
            state: db.open_tree("index-sync")?,
        };
        if old {
            // An index of the earlier layout: start over (sync rebuilds).
            for t in OLD_TREES {
                db.drop_tree(t)?;
            }
            index.reset()?;
        }
        Ok(index)
    }

    pub fn get(&self, id: &ChunkId) -> Result<Option<Location>> {
        self.get_with(id, &mut FrameMemo::default())
    }

    fn get_with(&self, id: &ChunkId, memo: &mut FrameMemo) -> Result<Option<Location>> {
        let Some(v) = self.chunks.get(id.0)? else {
            return Ok(None);
        };
        let bad = || Error::corrupt("local chunk index", format!("bad entry for chunk {id}"));
        let frame = self.frame(&v, memo)?.ok_or_else(bad)?;
        let mut record = [0u8; LOCATION_LEN];
        record[..FRAME_LEN].copy_from_slice(&frame);
        record[FRAME_LEN..].copy_from_slice(&v[8..]);
        Location::from_bytes(*id, &record).map(Some)
    }

    /// The frame record a chunk entry `v` names (`None`: none, or a
    /// malformed entry, which counts as no entry).
    fn frame(&self, v: &[u8], memo: &mut FrameMemo) -> Result<Option<sled::IVec>> {
        let Ok(entry) = <[u8; ENTRY_LEN]>::try_from(v) else {
            return Ok(None);
        };
        let n = u64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
        if let Some(f) = memo.0.get(&n) {
            return Ok(f.clone());
        }
        let f = self
            .frames
            .get(n.to_be_bytes())?
            .filter(|f| f.len() == FRAME_LEN);
        memo.0.insert(n, f.clone());
        Ok(f)
    }

    /// The pack of the frame a chunk entry `v` names.
    fn pack_of(&self, v: &[u8], memo: &mut FrameMemo) -> Result<Option<[u8; 32]>> {
        Ok(self
            .frame(v, memo)?
            .map(|f| f[..32].try_into().expect("32 bytes")))
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
    ///
    /// A chunk already located elsewhere keeps that location when this pack
    /// is condemned: gc copied a mostly-dead pack's live chunks out before
    /// condemning it, and both are listed until it is deleted; the copy must
    /// win, or the chunk would be forgotten with the pack.
    pub fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        let condemned = self.condemned.contains_key(pack.0)?;
        for f in frames {
            let n = self.db.generate_id()?;
            let record = Location {
                pack: *pack,
                frame: f.frame_ref(),
                chunk: FrameChunk {
                    id: ChunkId([0; 32]),
                    offset: 0,
                    len: 0,
                },
            }
            .to_bytes();
            // The frame before its chunks: an entry never names a number
            // that has no record.
            self.frames.insert(n.to_be_bytes(), &record[..FRAME_LEN])?;
            for c in &f.chunks {
                if condemned && self.chunks.contains_key(c.id.0)? {
                    continue;
                }
                let mut entry = [0u8; ENTRY_LEN];
                entry[..8].copy_from_slice(&n.to_be_bytes());
                entry[8..12].copy_from_slice(&c.offset.to_le_bytes());
                entry[12..].copy_from_slice(&c.len.to_le_bytes());
                self.chunks.insert(c.id.0, &entry[..])?;
            }
        }
        // Written (again): present, whatever was deleted before.
        self.deleted.remove(pack.0)?;
        self.packs.insert(pack.0, &[])?;
        Ok(())
    }

    /// Forgets packs gc deleted: their chunks' entries that point at them,
    /// then their frame records (one pass over those for all of them).
    pub fn remove_packs<'a>(
        &self,
        packs: impl IntoIterator<Item = (&'a PackId, &'a [FrameEntry])>,
    ) -> Result<()> {
        let mut memo = FrameMemo::default();
        let mut gone = HashSet::new();
        for (pack, frames) in packs {
            for c in frames.iter().flat_map(|f| &f.chunks) {
                if let Some(v) = self.chunks.get(c.id.0)? {
                    if self.pack_of(&v, &mut memo)? == Some(pack.0) {
                        self.chunks.remove(c.id.0)?;
                    }
                }
            }
            self.packs.remove(pack.0)?;
            self.deleted.insert(pack.0, &[])?;
            gone.insert(pack.0);
        }
        self.forget_frames(&gone)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::format::index::IndexedPack;
    use crate::format::keys::{index_key, pack_key};
    use crate::format::pack::{Compression, FrameChunk};

    #[test]
    fn location_round_trip_and_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::MetaDb::temporary().unwrap();
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
        assert_eq!(idx.sync(&backend, false, false).unwrap(), 1);
        assert_eq!(idx.sync(&backend, false, false).unwrap(), 0);
        let loc = idx.get(&chunk.id).unwrap().unwrap();
        assert_eq!((loc.frame, loc.chunk), (frame.frame_ref(), chunk));
        assert_eq!(loc.pack, PackId::of(b"p"));
        // A new, empty cache (another machine) rebuilds from the object.
        let fresh_db = super::super::MetaDb::temporary().unwrap();
        let fresh = ChunkIndex::open(&fresh_db).unwrap();
        assert!(fresh.get(&chunk.id).unwrap().is_none());
        assert_eq!(fresh.sync(&backend, false, false).unwrap(), 1);
        assert!(fresh.get(&chunk.id).unwrap().is_some());
        // Another process's gc deleted the pack: the next sync forgets it.
        backend.delete(&pack_key(&PackId::of(b"p"))).unwrap();
        fresh.sync(&backend, false, false).unwrap();
        assert!(fresh.get(&chunk.id).unwrap().is_none());
        assert_eq!(fresh.missing(&[chunk.id]).unwrap(), vec![true]);
        assert!(fresh.frames.is_empty(), "the gone pack's frames go too");
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(IndexObject::decode(&id, &bad).is_err());
    }

    // More ids than one thread looks up at once: answered in order, a
    // condemned pack's chunks missing, across the parts.
    #[test]
    fn many_ids_are_answered_in_order() {
        let db = super::super::MetaDb::temporary().unwrap();
        let idx = ChunkIndex::open(&db).unwrap();
        let id = |i: u32| ChunkId::of(&i.to_le_bytes());
        let frame = |from: u32| FrameEntry {
            offset: 12,
            stored_len: 10,
            raw_len: 10,
            compression: Compression::Raw,
            chunks: (from..from + 2 * MISSING_PART as u32)
                .step_by(2)
                .map(|i| FrameChunk {
                    id: id(i),
                    offset: 0,
                    len: 1,
                })
                .collect(),
        };
        let (kept, condemned) = (PackId::of(b"kept"), PackId::of(b"condemned"));
        let n = 4 * MISSING_PART as u32;
        idx.add_pack(&kept, &[frame(0)]).unwrap();
        idx.add_pack(&condemned, &[frame(n / 2)]).unwrap();
        let ids: Vec<ChunkId> = (0..n).map(id).collect();
        let expect: Vec<bool> = (0..n).map(|i| i % 2 == 1).collect();
        assert_eq!(idx.missing(&ids).unwrap(), expect);
        idx.set_condemned(&[(condemned, 1)].into_iter().collect())
            .unwrap();
        let expect: Vec<bool> = (0..n).map(|i| i % 2 == 1 || i >= n / 2).collect();
        assert_eq!(idx.missing(&ids).unwrap(), expect);
    }

    #[test]
    fn entries_name_their_frame_once_and_the_old_layout_starts_over() {
        let db = super::super::MetaDb::temporary().unwrap();
        // An index of the layout before frame records, marked loaded.
        db.0.open_tree("chunks")
            .unwrap()
            .insert(b"k", b"v")
            .unwrap();
        db.0.open_tree("loaded-packs")
            .unwrap()
            .insert(b"p", b"")
            .unwrap();
        let idx = ChunkIndex::open(&db).unwrap();
        assert!(!db.0.tree_names().iter().any(|n| n.as_ref() == b"chunks"));
        assert!(idx.packs.is_empty(), "what it loaded is loaded again");
        let chunks: Vec<FrameChunk> = (0..3u32)
            .map(|i| FrameChunk {
                id: ChunkId::of(&i.to_le_bytes()),
                offset: i * 10,
                len: 10,
            })
            .collect();
        let frame = FrameEntry {
            offset: 12,
            stored_len: 20,
            raw_len: 30,
            compression: Compression::Zstd,
            chunks,
        };
        let pack = PackId::of(b"q");
        idx.add_pack(&pack, std::slice::from_ref(&frame)).unwrap();
        assert_eq!(idx.frames.len(), 1);
        for c in &frame.chunks {
            let loc = idx.get(&c.id).unwrap().unwrap();
            assert_eq!(
                (loc.pack, loc.frame, loc.chunk),
                (pack, frame.frame_ref(), *c)
            );
            assert_eq!(idx.chunks.get(c.id.0).unwrap().unwrap().len(), ENTRY_LEN);
        }
        let mut condemned = std::collections::BTreeMap::new();
        condemned.insert(pack, 1);
        idx.set_condemned(&condemned).unwrap();
        assert_eq!(idx.missing(&[frame.chunks[0].id]).unwrap(), vec![true]);
        idx.remove_packs([(&pack, std::slice::from_ref(&frame))])
            .unwrap();
        assert!(idx.chunks.is_empty() && idx.frames.is_empty());
    }
}
