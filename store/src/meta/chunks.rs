//! The local chunk index: which pack holds each chunk, and where in it, as
//! `sled` trees that cache the packs' trailers and the index objects, and
//! `sync`, which keeps them in step with the store's objects.
//!
//! `chunks` maps a chunk id to its location; `loaded-indexes` and
//! `loaded-packs` record what has been merged in, so `sync` reads only new
//! objects; `index-sync` holds a format-2 store's log position. A pack no index object lists (its persist died before writing
//! one, or a server indexed it on arrival) is read from its trailer, so a
//! retried persist never uploads it again. `condemned-packs` and
//! `deleted-packs` hold what gc decided (docs/lifecycle.md). Everything here
//! is rebuilt from the objects when lost. This module knows nothing about
//! files or manifests.

use std::collections::{HashMap, HashSet};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::format::index::{
    chunk_locations, read_pack_trailer, IndexObject, Location, LOCATION_LEN, LOG_KEEP_SECS,
    LOG_MARGIN_SECS, SNAPSHOT_AFTER_ENTRIES,
};
use crate::format::keys::{
    index_id_of, index_log_start, log_time_and_id, pack_id_of, snapshot_key, INDEX_PREFIX,
    PACK_PREFIX, SNAPSHOT_PREFIX,
};
use crate::format::pack::FrameEntry;
use crate::format::records::{read_condemned, read_deleted};
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
    /// Where the last sync of a format-2 store got to: its position in
    /// the index log, the newest tombstone record it applied.
    state: sled::Tree,
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
            state: db.open_tree("index-sync")?,
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
    ///
    /// A chunk already located elsewhere keeps that location when this pack
    /// is condemned: gc copied a mostly-dead pack's live chunks out before
    /// condemning it, and both are listed until it is deleted; the copy must
    /// win, or the chunk would be forgotten with the pack.
    pub fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        let condemned = self.condemned.contains_key(pack.0)?;
        for loc in chunk_locations(*pack, frames) {
            if condemned && self.chunks.contains_key(loc.chunk.id.0)? {
                continue;
            }
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

    /// Reads what other writers added since the last sync; returns how
    /// many index objects and packs it merged. A corrupt index object is
    /// skipped (and stays unloaded), so one bad object costs the chunks it
    /// lists, not the whole store; `verify` reports it.
    ///
    /// A format-1 store (`log` false) is read whole: every index object and
    /// every pack listed. A format-2 store is read from the index log's
    /// position on, after the newest snapshot when starting over, with gc's
    /// tombstones (docs/format.md): a number of requests that does not grow
    /// with the store. `full` also lists the whole log and every pack, to
    /// find packs no index object lists.
    pub fn sync(&self, backend: &dyn Backend, log: bool, full: bool) -> Result<usize> {
        // What gc condemned first: a condemned pack's chunks never take
        // the place of a live copy (`add_pack`).
        self.sync_condemned(backend)?;
        if !log {
            let (added, _) = self.read_log(backend, None, &mut None)?;
            return Ok(added + self.sync_packs(backend)?);
        }
        let mut full = full;
        let mut added = 0;
        let tombstones = read_deleted(backend, &|key| {
            let since = self.state.get(seen_key(key)).ok().flatten()?;
            Some(i64::from_le_bytes(since[..].try_into().ok()?))
        })?;
        let position = self.state_i64(POSITION)?;
        let seen_at = self.state_i64(TOMBSTONES_SEEN)?;
        let newest = backend
            .list(SNAPSHOT_PREFIX)?
            .into_iter()
            .filter_map(|k| log_time_and_id(&k).map(|(t, id)| (t, id, k)))
            .next_back();
        // Starting over: no state yet; deletions this cache may have
        // missed (tombstones newer than any it has seen); or log entries it
        // has not read that gc may have deleted, its snapshot holding them.
        let missed_deletions = match (tombstones.newest, seen_at) {
            (Some((since, _)), Some(seen)) => since > seen,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let behind_gc = match (position, &newest) {
            (Some(p), Some((t, ..))) => p - LOG_MARGIN_SECS < t - LOG_KEEP_SECS,
            _ => false,
        };
        let mut position = position;
        let starting_over = position.is_none() || missed_deletions || behind_gc;
        let mut snapshot = None;
        if starting_over && position.is_some() {
            self.reset()?;
        }
        // Before anything is read, so a listed pack gc deleted adds nothing.
        self.forget_deleted(&tombstones.packs)?;
        if starting_over {
            position = Some(0);
            if let Some((time, id, key)) = newest {
                // A snapshot the tombstones do not reach back to may list
                // packs deleted since, unmarked: not trusted.
                let covered = tombstones
                    .newest
                    .is_none_or(|(since, _)| since <= time - 2 * LOG_MARGIN_SECS);
                match covered.then(|| backend.get(&key)).transpose() {
                    Ok(Some(bytes)) => match IndexObject::decode(&id, &bytes) {
                        Ok(object) => {
                            self.add(&id, &object)?;
                            added += 1;
                            position = Some(time);
                            snapshot = Some(object);
                        }
                        Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => {
                            full = true
                        }
                        Err(e) => return Err(e),
                    },
                    // Not covered, or replaced by a newer one meanwhile.
                    Ok(None) | Err(Error::NotFound { .. }) => full = true,
                    Err(e) => return Err(e),
                }
            }
        }
        let from = if full { None } else { position };
        // Starting over, what is read is gathered, to write as a snapshot
        // of its own if there was much of it: without the packs known to
        // be deleted (a snapshot may outlive their tombstones).
        let mut read = match starting_over {
            true => {
                let mut base = snapshot.unwrap_or(IndexObject { packs: Vec::new() });
                base.packs
                    .retain(|p| !self.deleted.contains_key(p.pack.0).unwrap_or(true));
                Some((base, 0))
            }
            false => None,
        };
        let (read_now, newest_entry) = self.read_log(backend, from, &mut read)?;
        added += read_now;
        if full {
            added += self.sync_packs(backend)?;
        }
        // The position: the newest log entry read (or the snapshot's time).
        let position = position.into_iter().chain(newest_entry).max().unwrap_or(0);
        self.state.insert(POSITION, &position.to_le_bytes())?;
        if let Some((_, time)) = tombstones.newest {
            self.state.insert(TOMBSTONES_SEEN, &time.to_le_bytes())?;
        }
        for (key, since) in &tombstones.sinces {
            self.state.insert(seen_key(key), &since.to_le_bytes())?;
        }
        // Kept across processes (a process may end without flushing the
        // cache): without its position, the next would start over.
        self.state.flush()?;
        if let Some((object, entries)) = read {
            if entries >= SNAPSHOT_AFTER_ENTRIES {
                // Best effort: a reader that may not write (read-only
                // credentials) leaves it to the next one, or to gc.
                let (id, bytes) = object.encode();
                let _ = backend.put(&snapshot_key(&id, position), &bytes);
            }
        }
        Ok(added)
    }

    /// Reads the index objects not loaded yet: the whole `index/` prefix,
    /// or the log from `from - LOG_MARGIN_SECS` on. With `gather`, the
    /// packs read are added to its object and counted. Returns how many
    /// it read, and the newest log time it listed.
    fn read_log(
        &self,
        backend: &dyn Backend,
        from: Option<i64>,
        gather: &mut Option<(IndexObject, usize)>,
    ) -> Result<(usize, Option<i64>)> {
        let keys = match from {
            Some(p) => backend.list_after(INDEX_PREFIX, &index_log_start(p - LOG_MARGIN_SECS))?,
            None => backend.list(INDEX_PREFIX)?,
        };
        let mut added = 0;
        let mut newest = None;
        for key in keys {
            let Some(id) = index_id_of(&key) else {
                continue;
            };
            if let Some((time, _)) = log_time_and_id(&key) {
                newest = newest.max(Some(time));
            }
            if self.loaded.contains_key(id.0)? {
                continue;
            }
            let object = match backend.get(&key) {
                Ok(bytes) => IndexObject::decode(&id, &bytes),
                // Replaced by gc meanwhile: its snapshot holds it.
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            match object {
                Ok(object) => {
                    self.add(&id, &object)?;
                    added += 1;
                    if let Some((all, n)) = gather.as_mut() {
                        all.packs.extend(
                            object
                                .packs
                                .into_iter()
                                .filter(|p| !self.deleted.contains_key(p.pack.0).unwrap_or(true)),
                        );
                        *n += 1;
                    }
                }
                Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok((added, newest))
    }

    /// Lists every pack: reads the trailers of packs no index object
    /// listed, and forgets the packs that are gone.
    fn sync_packs(&self, backend: &dyn Backend) -> Result<usize> {
        let mut added = 0;
        let pack_keys = backend.list(PACK_PREFIX)?;
        let present: HashSet<PackId> = pack_keys.iter().filter_map(|k| pack_id_of(k)).collect();
        for key in pack_keys {
            let Some(id) = pack_id_of(&key) else {
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
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                if !present.contains(&PackId(id)) {
                    gone.push(PackId(id));
                }
            }
        }
        self.forget_packs(&gone)?;
        Ok(added)
    }

    /// Reads what gc has condemned.
    fn sync_condemned(&self, backend: &dyn Backend) -> Result<()> {
        let (condemned, _) = read_condemned(backend)?;
        self.set_condemned(&condemned.into_iter().collect())
    }

    /// Marks the packs gc's tombstones name as deleted, forgetting the
    /// chunks of those this cache holds.
    fn forget_deleted(&self, packs: &HashMap<PackId, i64>) -> Result<()> {
        let mut loaded = Vec::new();
        for p in packs.keys() {
            if self.packs.contains_key(p.0)? {
                loaded.push(*p);
            }
            self.deleted.insert(p.0, &[])?;
        }
        self.forget_packs(&loaded)
    }

    /// Forgets deleted packs: their chunks' entries that point at them.
    fn forget_packs(&self, gone: &[PackId]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let gone_set: HashSet<[u8; 32]> = gone.iter().map(|p| p.0).collect();
        for item in self.chunks.iter() {
            let (k, v) = item?;
            if v.len() >= 32 && gone_set.contains(&v[..32]) {
                self.chunks.remove(k)?;
            }
        }
        for g in gone {
            self.packs.remove(g.0)?;
            self.deleted.insert(g.0, &[])?;
        }
        Ok(())
    }

    /// Forgets every chunk, index object and pack (keeping what gc's
    /// tombstones said is deleted): the cache starts over.
    fn reset(&self) -> Result<()> {
        self.chunks.clear()?;
        self.loaded.clear()?;
        self.packs.clear()?;
        self.state.remove(POSITION)?;
        Ok(())
    }

    fn state_i64(&self, key: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .state
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(i64::from_le_bytes))
    }
}

/// Keys of the `index-sync` tree.
const POSITION: &[u8] = b"position";
const TOMBSTONES_SEEN: &[u8] = b"tombstones-seen";
fn seen_key(record: &str) -> Vec<u8> {
    [b"tombstone-record/", record.as_bytes()].concat()
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
        assert_eq!(idx.sync(&backend, false, false).unwrap(), 1);
        assert_eq!(idx.sync(&backend, false, false).unwrap(), 0);
        let loc = idx.get(&chunk.id).unwrap().unwrap();
        assert_eq!((loc.frame, loc.chunk), (frame.frame_ref(), chunk));
        assert_eq!(loc.pack, PackId::of(b"p"));
        // A new, empty cache (another machine) rebuilds from the object.
        let fresh_db = sled::Config::new().temporary(true).open().unwrap();
        let fresh = ChunkIndex::open(&fresh_db).unwrap();
        assert!(fresh.get(&chunk.id).unwrap().is_none());
        assert_eq!(fresh.sync(&backend, false, false).unwrap(), 1);
        assert!(fresh.get(&chunk.id).unwrap().is_some());
        // Another process's gc deleted the pack: the next sync forgets it.
        backend.delete(&pack_key(&PackId::of(b"p"))).unwrap();
        fresh.sync(&backend, false, false).unwrap();
        assert!(fresh.get(&chunk.id).unwrap().is_none());
        assert_eq!(fresh.missing(&[chunk.id]).unwrap(), vec![true]);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(IndexObject::decode(&id, &bad).is_err());
    }
}
