//! The local chunk index: which pack holds each chunk, and where in it, as
//! a cache of the packs' trailers and the index objects, and `sync`, which
//! keeps it in step with the store's objects.
//!
//! The chunk log (`log`, a file beside sled) maps a chunk id to its frame's
//! number and its place in the frame, and sled's `frames` tree a frame's
//! number to its pack and where it lies there: a pack's id and a frame's
//! place, said once per frame rather than once per chunk, would be two
//! thirds of every entry. A chunk whose frame has no record is not indexed
//! (its pack was deleted). `loaded-indexes` and
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

pub(crate) mod log;
mod sync;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::index::{IndexObject, Location, LOCATION_LEN};
use crate::format::pack::{FrameChunk, FrameEntry};
use crate::id::{ChunkId, IndexId, PackId};
use crate::lookup::ChunkLookup;

use log::{ChunkLog, Entry};

/// The local chunk index over a store's packs and index objects.
#[derive(Debug, Clone)]
pub struct ChunkIndex {
    /// Chunk id -> its frame's number, its place there (`log`).
    log: Arc<ChunkLog>,
    /// Reads of sled by `missing` and `locate` (frame records, condemned
    /// packs): a test bounds them per chunk.
    reads: Arc<AtomicU64>,
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

/// The trees of earlier layouts (chunk entries in sled, before frame
/// records and before the chunk log), dropped when found (the cache is
/// then rebuilt from the objects).
const OLD_TREES: &[&str] = &["chunks", "chunk-entries"];

/// Keys of the `index-sync` tree: the chunk log's id, and how many records
/// it held when a pack was last marked loaded (`log`, crash safety).
const LOG_ID: &[u8] = b"chunk-log-id";
const LOG_LEN: &[u8] = b"chunk-log-len";
/// The next frame's number (u32 in a log record; never reused, so a dead
/// record never names a frame added later).
const NEXT_FRAME: &[u8] = b"next-frame";

/// Frame records read during one call, by number: a call's chunks mostly
/// share a few frames.
#[derive(Default)]
struct FrameMemo(HashMap<u64, Option<sled::IVec>>);

impl ChunkLookup for ChunkIndex {
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        // One probe of the log's table each; sled only for the frame
        // records (a call's chunks share a few frames) and, while gc has
        // condemned packs, whether a chunk's pack is one of them.
        let none_condemned = self.condemned.is_empty();
        let mut memo = FrameMemo::default();
        let found = self.log.find_each(ids);
        found
            .into_iter()
            .map(|e| {
                let Some(e) = e else { return Ok(true) };
                Ok(match self.frame(e.frame, &mut memo)? {
                    None => true,
                    Some(_) if none_condemned => false,
                    Some(f) => {
                        self.reads.fetch_add(1, Relaxed);
                        self.condemned.contains_key(&f[..32])?
                    }
                })
            })
            .collect()
    }
    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        let mut memo = FrameMemo::default();
        let found = self.log.find_each(ids);
        ids.iter()
            .zip(found)
            .map(|(id, e)| match e {
                None => Ok(None),
                Some(e) => self.location(id, e, &mut memo),
            })
            .collect()
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

fn frames_exhausted() -> Error {
    Error::corrupt(
        "local chunk index",
        "2^32 frames numbered: delete the metadata directory (.local) to rebuild it",
    )
}

/// A fresh log's id: only needs to differ from the last one's (which is
/// what ties a log to its database), never 0.
fn new_log_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{now} {} {:p}", std::process::id(), &now);
    let h = blake3::hash(seed.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")).max(1)
}

impl ChunkIndex {
    pub fn open(meta: &super::MetaDb) -> Result<Self> {
        let db = &meta.0;
        let names = db.tree_names();
        let old = OLD_TREES
            .iter()
            .any(|t| names.iter().any(|n| n.as_ref() == t.as_bytes()));
        let index = Self {
            log: meta.1.clone(),
            reads: Arc::new(AtomicU64::new(0)),
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
        index.check_log()?;
        Ok(index)
    }

    /// Starts over (the objects are read again by the next `sync`) unless
    /// the chunk log is this database's and holds every record sled's
    /// marks need (`log`, crash safety).
    fn check_log(&self) -> Result<()> {
        let ours = self.state_u64(LOG_ID)?;
        let needed = self.state_u64(LOG_LEN)?.unwrap_or(0);
        let id = self.log.id();
        if id != 0 && ours == Some(id) && self.log.records() >= needed {
            // Frame numbers past every record's: a process killed after
            // appending records may have lost its count (sled saves it
            // only at flush), and a number given twice would send a dead
            // record to another frame.
            if let Some(max) = self.log.max_frame() {
                let past = max.checked_add(1).ok_or_else(frames_exhausted)?;
                self.state.fetch_and_update(NEXT_FRAME, |old| {
                    let old = old
                        .and_then(|v| <[u8; 4]>::try_from(v).ok())
                        .map_or(0, u32::from_le_bytes);
                    Some(old.max(past).to_le_bytes().to_vec())
                })?;
            }
            return self.compact_log();
        }
        self.reset()?;
        let id = new_log_id();
        self.log
            .start_over(id)
            .map_err(|e| Error::io("write", "chunk log", e))?;
        self.state.insert(LOG_ID, &id.to_le_bytes())?;
        self.state.insert(LOG_LEN, &0u64.to_le_bytes())?;
        Ok(())
    }

    /// Rewrites the chunk log without its dead records (a chunk stored
    /// again, a pack deleted) once they are a quarter of it: at open, so
    /// no other thread appends meanwhile. Sled's count of records follows
    /// the rename; a crash between leaves a count larger than the log,
    /// and the next open starts over.
    fn compact_log(&self) -> Result<()> {
        let records = self.log.records();
        if records < 1024 {
            return Ok(());
        }
        let frames = self.frame_numbers();
        let live = |f: u32| frames.contains(&f);
        if self.log.live(live) * 4 > records * 3 {
            return Ok(());
        }
        let kept = self
            .log
            .compact(live)
            .map_err(|e| Error::io("write", "chunk log", e))?;
        self.state.insert(LOG_LEN, &kept.to_le_bytes())?;
        Ok(())
    }

    fn state_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .state
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_le_bytes))
    }

    pub fn get(&self, id: &ChunkId) -> Result<Option<Location>> {
        match self.log.find(id) {
            None => Ok(None),
            Some(e) => self.location(id, e, &mut FrameMemo::default()),
        }
    }

    /// Where `id` lies, from its log entry `e`: `None` if its frame has no
    /// record (its pack was deleted).
    fn location(&self, id: &ChunkId, e: Entry, memo: &mut FrameMemo) -> Result<Option<Location>> {
        let Some(frame) = self.frame(e.frame, memo)? else {
            return Ok(None);
        };
        let mut record = [0u8; LOCATION_LEN];
        record[..FRAME_LEN].copy_from_slice(&frame);
        record[FRAME_LEN..FRAME_LEN + 4].copy_from_slice(&e.offset.to_le_bytes());
        record[FRAME_LEN + 4..].copy_from_slice(&e.len.to_le_bytes());
        Location::from_bytes(*id, &record).map(Some)
    }

    /// The record of frame `n` (`None`: none, or a malformed one, which
    /// counts as none).
    fn frame(&self, n: u32, memo: &mut FrameMemo) -> Result<Option<sled::IVec>> {
        let n = u64::from(n);
        if let Some(f) = memo.0.get(&n) {
            return Ok(f.clone());
        }
        self.reads.fetch_add(1, Relaxed);
        let f = self
            .frames
            .get(n.to_be_bytes())?
            .filter(|f| f.len() == FRAME_LEN);
        memo.0.insert(n, f.clone());
        Ok(f)
    }

    /// Whether `id` is indexed (in a pack not deleted).
    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        match self.log.find(id) {
            None => Ok(false),
            Some(e) => Ok(self.frame(e.frame, &mut FrameMemo::default())?.is_some()),
        }
    }

    /// The numbers of the frames the sled tree records (a chunk of the
    /// log whose frame is not among them is dead).
    fn frame_numbers(&self) -> HashSet<u32> {
        self.frames
            .iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| <[u8; 8]>::try_from(&k[..]).ok().map(u64::from_be_bytes))
            .filter_map(|n| u32::try_from(n).ok())
            .collect()
    }

    /// How many chunks are indexed (one pass over the log's table).
    pub fn len(&self) -> usize {
        let live = self.frame_numbers();
        self.log
            .newest()
            .iter()
            .filter(|e| live.contains(&e.frame))
            .count()
    }

    /// Numbers for `count` new frames: the first of them. Numbers are
    /// u32 (a log record's), counted in sled and never reused: at 2 MiB a
    /// frame, 2^32 of them are 8 PiB merged into one slot's index.
    fn take_frame_numbers(&self, count: usize) -> Result<u32> {
        let old = self.state.fetch_and_update(NEXT_FRAME, |old| {
            let old = old
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map_or(0, u32::from_le_bytes);
            Some(old.saturating_add(count as u32).to_le_bytes().to_vec())
        })?;
        let first = old
            .and_then(|v| <[u8; 4]>::try_from(&v[..]).ok())
            .map_or(0, u32::from_le_bytes);
        if first.checked_add(count as u32).is_none() {
            return Err(frames_exhausted());
        }
        Ok(first)
    }

    /// How many reads of sled lookups have made so far.
    #[cfg(test)]
    pub(crate) fn lookup_reads(&self) -> u64 {
        self.reads.load(Relaxed)
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
        let mut entries = Vec::new();
        let first = self.take_frame_numbers(frames.len())?;
        for (f, n) in frames.iter().zip(first..) {
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
            self.frames
                .insert(u64::from(n).to_be_bytes(), &record[..FRAME_LEN])?;
            for c in &f.chunks {
                if condemned && self.contains(&c.id)? {
                    continue;
                }
                let e = Entry {
                    frame: n,
                    offset: c.offset,
                    len: c.len,
                };
                entries.push((c.id, e));
            }
        }
        // The records, then how many there are, then the mark: a mark
        // that survives a crash finds its records (`log`).
        let records = self
            .log
            .append(&entries)
            .map_err(|e| Error::io("write", "chunk log", e))?;
        self.state.fetch_and_update(LOG_LEN, |old| {
            let old = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_le_bytes);
            Some(old.max(records).to_le_bytes().to_vec())
        })?;
        // Written (again): present, whatever was deleted before.
        self.deleted.remove(pack.0)?;
        self.packs.insert(pack.0, &[])?;
        Ok(())
    }

    /// Forgets packs gc deleted: their frame records (one pass over those
    /// for all of them), and with them every log entry that names them.
    pub fn remove_packs<'a>(
        &self,
        packs: impl IntoIterator<Item = (&'a PackId, &'a [FrameEntry])>,
    ) -> Result<()> {
        let mut gone = HashSet::new();
        for (pack, _) in packs {
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

    const MISSING_PART: usize = 4096;

    // Many ids: answered in order, a condemned pack's chunks missing.
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
        // An index of the layout before frame records (and before the
        // chunk log), marked loaded.
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
        }
        let mut condemned = std::collections::BTreeMap::new();
        condemned.insert(pack, 1);
        idx.set_condemned(&condemned).unwrap();
        assert_eq!(idx.missing(&[frame.chunks[0].id]).unwrap(), vec![true]);
        idx.remove_packs([(&pack, std::slice::from_ref(&frame))])
            .unwrap();
        assert!(idx.frames.is_empty());
        assert!(!idx.contains(&frame.chunks[0].id).unwrap());
        assert_eq!(idx.len(), 0);
    }

    fn one_chunk_pack(i: u32) -> (PackId, FrameEntry) {
        let chunk = FrameChunk {
            id: ChunkId::of(&i.to_le_bytes()),
            offset: 0,
            len: 1,
        };
        let frame = FrameEntry {
            offset: 12,
            stored_len: 1,
            raw_len: 1,
            compression: Compression::Raw,
            chunks: vec![chunk],
        };
        (PackId::of(&i.to_le_bytes()), frame)
    }

    // The chunk log is read back with its database; one that lost records
    // sled's marks need (cut short), or that belongs to another database,
    // is not trusted: the index starts over, so `sync` reads every object
    // again rather than trust marks whose chunks are gone.
    #[test]
    fn a_log_that_lost_records_or_is_not_ours_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        let log = dir.path().join("chunk-log");
        let (a, fa) = one_chunk_pack(1);
        let (b, fb) = one_chunk_pack(2);
        let open = || {
            // sled's background threads may hold the last handle's lock a
            // moment after it is dropped, and `MetaDb::open` takes a
            // database it cannot open for unreadable (and rebuilds it):
            // wait for the lock first.
            for _ in 0..500 {
                match sled::Config::new().path(&meta).open() {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            let db = super::super::MetaDb::open(&meta).unwrap();
            ChunkIndex::open(&db).unwrap()
        };
        {
            let idx = open();
            idx.add_pack(&a, std::slice::from_ref(&fa)).unwrap();
            idx.add_pack(&b, std::slice::from_ref(&fb)).unwrap();
            idx.state.flush().unwrap();
        }
        let idx = open();
        assert!(idx.contains(&fa.chunks[0].id).unwrap(), "read back");
        assert!(idx.packs.contains_key(b.0).unwrap());
        // A process killed after appending records, whose count of frame
        // numbers sled lost: the next one numbers past every record's, so
        // no record is sent to another pack's frame.
        idx.state.insert(NEXT_FRAME, &0u32.to_le_bytes()).unwrap();
        idx.state.flush().unwrap();
        drop(idx);
        let idx = open();
        let (c, fc) = one_chunk_pack(3);
        idx.add_pack(&c, std::slice::from_ref(&fc)).unwrap();
        assert_eq!(idx.get(&fa.chunks[0].id).unwrap().unwrap().pack, a);
        assert_eq!(idx.get(&fb.chunks[0].id).unwrap().unwrap().pack, b);
        assert_eq!(idx.get(&fc.chunks[0].id).unwrap().unwrap().pack, c);
        idx.state.flush().unwrap();
        drop(idx);
        // Cut short: the second record is gone, though its pack is marked.
        let bytes = std::fs::read(&log).unwrap();
        std::fs::write(&log, &bytes[..bytes.len() - log::RECORD_LEN]).unwrap();
        let idx = open();
        assert!(
            idx.packs.is_empty() && idx.frames.is_empty(),
            "started over"
        );
        assert!(!idx.contains(&fa.chunks[0].id).unwrap());
        idx.add_pack(&a, std::slice::from_ref(&fa)).unwrap();
        idx.state.flush().unwrap();
        drop(idx);
        // Another database's log (its id differs) is not read either.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        {
            let db = super::super::MetaDb::open(&other.join("meta")).unwrap();
            let idx = ChunkIndex::open(&db).unwrap();
            idx.add_pack(&b, std::slice::from_ref(&fb)).unwrap();
        }
        std::fs::copy(other.join("chunk-log"), &log).unwrap();
        let idx = open();
        assert!(idx.packs.is_empty(), "started over");
        assert!(!idx.contains(&fb.chunks[0].id).unwrap());
    }

    // gc deleted most packs: the next open rewrites the log without their
    // records, and the log it leaves is trusted by the one after.
    #[test]
    fn a_log_mostly_dead_is_compacted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        let packs: Vec<(PackId, FrameEntry)> = (0..1100).map(one_chunk_pack).collect();
        {
            let db = super::super::MetaDb::open(&meta).unwrap();
            let idx = ChunkIndex::open(&db).unwrap();
            for (p, f) in &packs {
                idx.add_pack(p, std::slice::from_ref(f)).unwrap();
            }
            let gone = packs[..600]
                .iter()
                .map(|(p, f)| (p, std::slice::from_ref(f)));
            idx.remove_packs(gone).unwrap();
            db.flush().unwrap();
            assert_eq!(db.1.records(), 1100);
        }
        for _ in 0..2 {
            while sled::Config::new().path(&meta).open().is_err() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let db = super::super::MetaDb::open(&meta).unwrap();
            let idx = ChunkIndex::open(&db).unwrap();
            assert_eq!(db.1.records(), 500, "compacted, and trusted after");
            assert!(!idx.packs.is_empty(), "not started over");
            for (i, (p, f)) in packs.iter().enumerate() {
                let loc = idx.get(&f.chunks[0].id).unwrap();
                assert_eq!(loc.map(|l| l.pack), (i >= 600).then_some(*p));
            }
            db.flush().unwrap();
        }
    }
}
