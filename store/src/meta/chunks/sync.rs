//! Keeping the chunk index in step with the store's objects: a format-1
//! store read whole, a format-2 store from its log position as
//! `format::index_log` decides (snapshots, tombstones), packs no index
//! object lists found from their trailers, and what gc condemned and
//! deleted. The sync state (`index-sync`) is kept here. Knows nothing of
//! how chunks are located for a query.

use std::collections::{HashMap, HashSet};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::format::index::{read_pack_trailer, IndexObject};
use crate::format::index_log::{plan_sync, snapshot_to_write, LogState, LOG_MARGIN_SECS};
use crate::format::keys::{
    index_id_of, index_log_start, log_time_and_id, pack_id_of, INDEX_PREFIX, PACK_PREFIX,
    SNAPSHOT_PREFIX,
};
use crate::format::records::{read_condemned, read_deleted, Tombstones};
use crate::id::{IndexId, PackId};

use super::ChunkIndex;

impl ChunkIndex {
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
        let tombstones = read_deleted(backend, &|key| {
            let since = self.state.get(seen_key(key)).ok().flatten()?;
            Some(i64::from_le_bytes(since[..].try_into().ok()?))
        })?;
        let state = LogState {
            position: self.state_i64(POSITION)?,
            tombstones_seen: self.state_i64(TOMBSTONES_SEEN)?,
        };
        let plan = plan_sync(state, tombstones.newest, &backend.list(SNAPSHOT_PREFIX)?);
        if plan.starting_over && state.position.is_some() {
            self.reset()?;
        }
        // Before anything is read, so a listed pack gc deleted adds nothing.
        self.forget_deleted(&tombstones.packs)?;
        let mut full = full || plan.distrusted_snapshot;
        let (mut added, mut position, mut read) = (0, state.position, None);
        if plan.starting_over {
            let tried = plan.snapshot.is_some();
            let snapshot = match plan.snapshot {
                Some(listed) => self.read_snapshot(backend, listed)?,
                None => None,
            };
            full |= tried && snapshot.is_none();
            added += snapshot.is_some() as usize;
            position = Some(snapshot.as_ref().map_or(0, |(time, _)| *time));
            // What is read is gathered, to write as a snapshot of its own
            // if there was much of it: without the packs known to be
            // deleted (a snapshot may outlive their tombstones).
            let mut base = snapshot.map_or_else(IndexObject::default, |(_, object)| object);
            base.packs
                .retain(|p| !self.deleted.contains_key(p.pack.0).unwrap_or(true));
            read = Some((base, 0));
        }
        let from = if full { None } else { position };
        let (read_now, newest_entry) = self.read_log(backend, from, &mut read)?;
        added += read_now;
        if full {
            added += self.sync_packs(backend)?;
        }
        // The position: the newest log entry read (or the snapshot's time).
        let position = position.into_iter().chain(newest_entry).max().unwrap_or(0);
        self.remember_position(position, &tombstones)?;
        if let Some((object, entries)) = read {
            if let Some((key, bytes)) = snapshot_to_write(&object, entries, position) {
                // Best effort: a reader that may not write (read-only
                // credentials) leaves it to the next one, or to gc.
                let _ = backend.put(&key, &bytes);
            }
        }
        Ok(added)
    }

    /// Reads and merges the snapshot `plan_sync` chose; `None` if it is
    /// corrupt, of another version, or gone (replaced by a newer one
    /// meanwhile): the caller then lists everything.
    pub(super) fn read_snapshot(
        &self,
        backend: &dyn Backend,
        (key, time, id): (String, i64, IndexId),
    ) -> Result<Option<(i64, IndexObject)>> {
        let bytes = match backend.get(&key) {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match IndexObject::decode(&id, &bytes) {
            Ok(object) => {
                self.add(&id, &object)?;
                Ok(Some((time, object)))
            }
            Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records the reader's position and the tombstones it has seen, kept
    /// across processes (a process may end without flushing the cache):
    /// without its position, the next would start over.
    pub(super) fn remember_position(&self, position: i64, tombstones: &Tombstones) -> Result<()> {
        self.state.insert(POSITION, &position.to_le_bytes())?;
        if let Some((_, time)) = tombstones.newest {
            self.state.insert(TOMBSTONES_SEEN, &time.to_le_bytes())?;
        }
        for (key, since) in &tombstones.sinces {
            self.state.insert(seen_key(key), &since.to_le_bytes())?;
        }
        self.state.flush()?;
        Ok(())
    }

    /// Reads the index objects not loaded yet: the whole `index/` prefix,
    /// or the log from `from - LOG_MARGIN_SECS` on. With `gather`, the
    /// packs read are added to its object and counted. Returns how many
    /// it read, and the newest log time it listed.
    pub(super) fn read_log(
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
    pub(super) fn sync_packs(&self, backend: &dyn Backend) -> Result<usize> {
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
    pub(super) fn sync_condemned(&self, backend: &dyn Backend) -> Result<()> {
        let (condemned, _) = read_condemned(backend)?;
        self.set_condemned(&condemned.into_iter().collect())
    }

    /// Marks the packs gc's tombstones name as deleted, forgetting the
    /// chunks of those this cache holds.
    pub(super) fn forget_deleted(&self, packs: &HashMap<PackId, i64>) -> Result<()> {
        let mut loaded = Vec::new();
        for p in packs.keys() {
            if self.packs.contains_key(p.0)? {
                loaded.push(*p);
            }
            self.deleted.insert(p.0, &[])?;
        }
        self.forget_packs(&loaded)
    }

    /// Forgets deleted packs: their frame records, and with them the log
    /// entries that name them.
    pub(super) fn forget_packs(&self, gone: &[PackId]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let gone_set: HashSet<[u8; 32]> = gone.iter().map(|p| p.0).collect();
        self.forget_frames(&gone_set)?;
        for g in gone {
            self.packs.remove(g.0)?;
            self.deleted.insert(g.0, &[])?;
        }
        Ok(())
    }

    /// Drops the frame records of `packs` (after their chunks' entries).
    /// Frame records are a few per MiB of packs: read them all.
    pub(super) fn forget_frames(&self, packs: &HashSet<[u8; 32]>) -> Result<()> {
        for item in self.frames.iter() {
            let (k, f) = item?;
            if f.len() < 32 || packs.contains(&f[..32]) {
                self.frames.remove(k)?;
            }
        }
        Ok(())
    }

    /// Forgets every chunk, index object and pack (keeping what gc's
    /// tombstones said is deleted): the cache starts over.
    pub(super) fn reset(&self) -> Result<()> {
        // The marks first: a log entry whose frame record is gone is dead,
        // and frame numbers are never reused, so the log can go last.
        self.loaded.clear()?;
        self.packs.clear()?;
        self.frames.clear()?;
        self.state.remove(POSITION)?;
        self.log
            .start_over(self.log.id())
            .map_err(|e| crate::error::Error::io("write", "chunk log", e))?;
        self.state.insert(super::LOG_LEN, &0u64.to_le_bytes())?;
        Ok(())
    }

    pub(super) fn state_i64(&self, key: &[u8]) -> Result<Option<i64>> {
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
