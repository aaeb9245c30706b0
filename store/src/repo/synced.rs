//! The chunk lookup of a store whose chunk index this process keeps (a
//! directory or an S3 store): the local `meta::chunks` index, kept in step
//! with what other processes write to the same objects, such as another
//! `strata serve` replica over the same bucket.
//!
//! Its two rules follow the lookup contract (`lookup`):
//! - `locate` never reports a chunk gone that the store holds: when any
//!   chunk asked for is not in the index, it syncs the index from the
//!   objects (once, however many threads miss at the same moment) and
//!   looks again; if still not found, it syncs in full (every pack listed:
//!   a pack no index object lists is found too) before answering;
//! - `missing` may be stale only towards "missing" (an upload again), and
//!   only for a bounded time: when the last sync is older than the resync
//!   interval it syncs before answering, so another writer's chunks are
//!   reused, and the packs another process's gc condemned are avoided,
//!   within that interval; `missing_now`, for checks that refuse a ref to
//!   a chunk the store lacks, syncs like `locate` before it says so.
//!
//! Knows nothing about files, manifests or commands.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::error::Result;
use crate::format::index::{IndexObject, Location};
use crate::format::pack::FrameEntry;
use crate::id::{ChunkId, IndexId, PackId};
use crate::lookup::ChunkLookup;
use crate::meta::chunks::ChunkIndex;
use crate::util::Clock;

/// How long an index may go unsynced before a `missing` query syncs it, by
/// default. (`Duration::MAX`: never; only misses sync.)
pub const DEFAULT_RESYNC_EVERY: Duration = Duration::from_secs(10);

/// The local chunk index over `backend`, synced on a miss and every
/// `every`.
#[derive(Debug)]
pub struct SyncedIndex {
    index: ChunkIndex,
    backend: Arc<dyn Backend>,
    every: Duration,
    /// Whether the store has an index log (format 2; `ChunkIndex::sync`).
    log: bool,
    /// When the last sync, and the last full sync, started, and the
    /// store's clock then. Held while a sync runs, so threads that miss
    /// together wait for one sync instead of each running their own.
    synced: Mutex<(Instant, Instant, i64)>,
    /// The store's clock: the interval is due by it too, so a test that
    /// moves the clock past gc's grace period sees the index synced as a
    /// process living that long would.
    clock: Clock,
    /// Syncs run since it was opened (`ChunkLookup::syncs`).
    syncs: std::sync::atomic::AtomicU64,
}

impl SyncedIndex {
    /// Syncs `index` with `backend` and keeps it in step from then on.
    pub fn new(
        index: ChunkIndex,
        backend: Arc<dyn Backend>,
        every: Duration,
        log: bool,
    ) -> Result<Self> {
        let started = Instant::now();
        index.sync(backend.as_ref(), log, false)?;
        Ok(Self {
            index,
            backend,
            every,
            log,
            synced: Mutex::new((started, started, Clock::System.now())),
            clock: Clock::System,
            syncs: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Measures the interval by `clock` too (the store's; tests move it).
    pub fn set_clock(&mut self, clock: Clock) {
        self.synced.get_mut().expect("poisoned").2 = clock.now();
        self.clock = clock;
    }

    /// The index itself (gc and verify work on it directly).
    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    /// Reads objects through `backend` from now on (a wrapped backend).
    pub fn set_backend(&mut self, backend: Arc<dyn Backend>) {
        self.backend = backend;
    }

    /// Syncs unless a sync (`full`: a full one) that started at or after
    /// `asked` has run: that one saw every object written before the
    /// question.
    fn sync_since(&self, asked: Instant, full: bool) -> Result<()> {
        let mut synced = self.synced.lock().expect("poisoned");
        let last = if full { synced.1 } else { synced.0 };
        if last >= asked {
            return Ok(());
        }
        let started = Instant::now();
        let clock = self.clock.now();
        self.index.sync(self.backend.as_ref(), self.log, full)?;
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        synced.0 = started;
        synced.2 = clock;
        if full || !self.log {
            synced.1 = started;
        }
        Ok(())
    }

    /// Syncs, then in full, while any of `ids` is not in the index.
    fn sync_until_found(&self, asked: Instant, ids: &[ChunkId]) -> Result<()> {
        for full in [false, true] {
            self.sync_since(asked, full)?;
            if ids
                .iter()
                .all(|id| self.index.contains(id).unwrap_or(false))
            {
                break;
            }
        }
        Ok(())
    }
}

impl ChunkLookup for SyncedIndex {
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        // Unless a sync started within the interval. Queries that arrive
        // while it runs wait for it: the interval bounds how stale any
        // answer is (gc's argument relies on it, docs/lifecycle.md), and a
        // persist's parallel queries all see what the sync found.
        let now = Instant::now();
        let by_clock = {
            let last = self.synced.lock().expect("poisoned").2;
            self.every != Duration::MAX
                && self.clock.now().saturating_sub(last) >= self.every.as_secs() as i64
        };
        if by_clock {
            self.sync_since(now, false)?;
        } else if let Some(due) = now.checked_sub(self.every) {
            self.sync_since(due, false)?;
        }
        self.index.missing(ids)
    }

    fn missing_now(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let asked = Instant::now();
        let missing = self.index.missing(ids)?;
        if !missing.contains(&true) {
            return Ok(missing);
        }
        let absent: Vec<ChunkId> = ids
            .iter()
            .zip(&missing)
            .filter(|(_, m)| **m)
            .map(|(id, _)| *id)
            .collect();
        self.sync_until_found(asked, &absent)?;
        self.index.missing(ids)
    }

    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        let asked = Instant::now();
        let mut found = self.index.locate(ids)?;
        if found.iter().any(Option::is_none) {
            let absent: Vec<ChunkId> = ids
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(id, _)| *id)
                .collect();
            self.sync_until_found(asked, &absent)?;
            for (id, f) in ids.iter().zip(found.iter_mut()) {
                if f.is_none() {
                    *f = self.index.get(id)?;
                }
            }
        }
        Ok(found)
    }

    fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()> {
        self.index.add_pack(pack, frames)
    }

    fn add(&self, id: &IndexId, object: &IndexObject) -> Result<()> {
        self.index.add(id, object)
    }

    fn count(&self) -> Result<u64> {
        self.index.count()
    }

    fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Memory;
    use crate::format::index::IndexedPack;
    use crate::format::keys::{index_key, pack_key};
    use crate::format::pack::{Compression, FrameChunk};

    /// An index object listing one pack with one chunk, written to `backend`
    /// as another process would.
    fn written_elsewhere(backend: &dyn Backend, seed: &[u8]) -> ChunkId {
        let chunk = FrameChunk {
            id: ChunkId::of(seed),
            offset: 0,
            len: 1,
        };
        let pack = PackId::of(seed);
        let object = IndexObject {
            packs: vec![IndexedPack {
                pack,
                frames: vec![FrameEntry {
                    offset: 12,
                    stored_len: 1,
                    raw_len: 1,
                    compression: Compression::Raw,
                    chunks: vec![chunk],
                }],
            }],
        };
        let (id, bytes) = object.encode();
        backend.put(&pack_key(&pack), b"p").unwrap();
        backend.put(&index_key(&id), &bytes).unwrap();
        chunk.id
    }

    fn opened(backend: &Arc<dyn Backend>, every: Duration) -> (crate::meta::MetaDb, SyncedIndex) {
        let db = crate::meta::MetaDb::temporary().unwrap();
        let index = ChunkIndex::open(&db).unwrap();
        let synced = SyncedIndex::new(index, backend.clone(), every, true).unwrap();
        (db, synced)
    }

    #[test]
    fn a_chunk_another_writer_stored_is_located_at_once() {
        let backend: Arc<dyn Backend> = Arc::new(Memory::default());
        let (_db, synced) = opened(&backend, Duration::from_secs(3600));
        let id = written_elsewhere(backend.as_ref(), b"other replica");
        // Not yet synced: "missing" may say so (harmless)...
        assert_eq!(synced.missing(&[id]).unwrap(), vec![true]);
        // ...but locate looks again before reporting it gone.
        let found = synced.locate(&[id, ChunkId::of(b"nowhere")]).unwrap();
        assert_eq!(found[0].map(|l| l.pack), Some(PackId::of(b"other replica")));
        assert!(found[1].is_none());
    }

    #[test]
    fn a_check_that_refuses_what_is_missing_looks_again_first() {
        let backend: Arc<dyn Backend> = Arc::new(Memory::default());
        let (_db, synced) = opened(&backend, Duration::from_secs(3600));
        let id = written_elsewhere(backend.as_ref(), b"other replica");
        let gone = ChunkId::of(b"nowhere");
        assert_eq!(synced.missing_now(&[id, gone]).unwrap(), vec![false, true]);
    }

    #[test]
    fn missing_syncs_once_the_interval_has_passed() {
        let backend: Arc<dyn Backend> = Arc::new(Memory::default());
        let (_db, synced) = opened(&backend, Duration::ZERO);
        let id = written_elsewhere(backend.as_ref(), b"other replica");
        assert_eq!(synced.missing(&[id]).unwrap(), vec![false]);
    }
}
