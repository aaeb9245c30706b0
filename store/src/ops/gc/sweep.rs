//! gc's sweep (steps 3 to 5 of `ops::gc`): deleting dead packs condemned
//! longer than the grace period (named in a tombstone first, in a format-2
//! store), condemning the newly dead, and rewriting mostly-dead packs.
//! Knows nothing of runs or of the index objects the commit writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::index::{chunk_locations, IndexedPack, Location};
use crate::format::index_log::TOMBSTONE_KEEP_SECS;
use crate::format::keys::{pack_key, timed_key, DELETED_PREFIX};
use crate::format::pack::{FrameBuilder, PackBuilder};
use crate::format::records::{read_deleted, Deleted, Record};
use crate::id::{ChunkId, PackId};
use crate::read::fetch_located;
use crate::repo::Store;

use super::{GcReport, PackInfo};

/// What the sweep decided.
pub(super) struct Swept {
    /// Packs condemned and not yet past the grace period, with since when.
    pub(super) pending: BTreeMap<PackId, i64>,
    /// Packs deleted.
    pub(super) deleted: HashSet<PackId>,
    /// Packs written by rewrites.
    pub(super) new_packs: Vec<IndexedPack>,
}

/// Step 4's inputs: the packs surveyed, and what gc decided before.
pub(super) struct Sweep<'a> {
    pub(super) packs: &'a [PackInfo],
    /// Packs condemned by earlier gcs, with since when.
    pub(super) condemned: &'a HashMap<PackId, i64>,
    pub(super) live: &'a HashSet<ChunkId>,
    /// Packs to rewrite though less than half dead (a storage budget's).
    pub(super) also_rewrite: &'a HashSet<PackId>,
    pub(super) now: i64,
    pub(super) grace: i64,
    pub(super) dry: bool,
}

impl Sweep<'_> {
    /// Step 4: Deletes dead packs condemned longer than the grace period,
    /// condemns the newly dead, and rewrites mostly-dead packs (and those a
    /// budget asks for).
    pub(super) fn run(&self, store: &Store, report: &mut GcReport) -> Result<Swept> {
        let (now, grace, dry) = (self.now, self.grace, self.dry);
        let mut pending: BTreeMap<PackId, i64> = BTreeMap::new();
        let mut deleted: HashSet<PackId> = HashSet::new();
        let mut new_packs: Vec<IndexedPack> = Vec::new();
        for p in self.packs {
            let since = self.condemned.get(&p.id).copied();
            let dead = p.live_raw == 0;
            let rewrite = p.live_raw * 2 < p.total_raw || self.also_rewrite.contains(&p.id);
            if dead {
                let at = since.unwrap_or(now);
                if since.is_none() {
                    report.packs_condemned += 1;
                }
                if at.saturating_add(grace) <= now {
                    report.packs_deleted += 1;
                    report.bytes_reclaimed += p.size;
                    deleted.insert(p.id);
                } else {
                    report.bytes_pending += p.size;
                    pending.insert(p.id, at);
                }
            } else if since.is_none() && rewrite {
                // Mostly garbage: move the live chunks, condemn the rest.
                report.packs_rewritten += 1;
                report.packs_condemned += 1;
                report.bytes_pending += p.size;
                pending.insert(p.id, now);
                if !dry {
                    let written = rewrite_pack(store, p, self.live)?;
                    report.bytes_rewritten += written.iter().map(|(_, n)| n).sum::<u64>();
                    new_packs.extend(written.into_iter().map(|(ix, _)| ix));
                }
            }
            // A live pack once condemned is pardoned: not carried over.
        }
        self.delete(store, report, pending, deleted, new_packs)
    }

    /// Deletes the packs sweep chose (tombstones first).
    fn delete(
        &self,
        store: &Store,
        report: &mut GcReport,
        pending: BTreeMap<PackId, i64>,
        deleted: HashSet<PackId>,
        new_packs: Vec<IndexedPack>,
    ) -> Result<Swept> {
        let (b, now, dry, packs) = (store.backend(), self.now, self.dry, self.packs);
        report.packs_pending = pending.len() as u64;
        if !dry && !deleted.is_empty() {
            // Tombstones first (format 2), so no reader that learns of a pack
            // from an older index object misses that it is gone.
            if store.config().has_index_log() {
                write_tombstones(store, &deleted, now)?;
            }
            let gone: Vec<_> = packs.iter().filter(|p| deleted.contains(&p.id)).collect();
            for p in &gone {
                b.delete(&pack_key(&p.id))?;
            }
            if let Some(ix) = store.local_index() {
                ix.remove_packs(gone.iter().map(|p| (&p.id, &p.frames[..])))?;
            }
        }
        Ok(Swept {
            pending,
            deleted,
            new_packs,
        })
    }
}

/// Writes a tombstone record naming `deleted` (deleted now) and every
/// pack the records before it named within `TOMBSTONE_KEEP_SECS`, then
/// removes those older records (docs/format.md).
fn write_tombstones(store: &Store, deleted: &HashSet<PackId>, now: i64) -> Result<()> {
    let b = store.backend();
    let before = read_deleted(b, &|_| None)?;
    let since = now - TOMBSTONE_KEEP_SECS;
    let mut packs: Vec<(PackId, i64)> = before
        .packs
        .into_iter()
        .filter(|(_, t)| *t >= since)
        .chain(deleted.iter().map(|p| (*p, now)))
        .collect();
    packs.sort();
    packs.dedup_by_key(|(p, _)| *p);
    // A record covers from `since` only if the ones it replaces did:
    // otherwise from the oldest of theirs.
    let since = match before.newest {
        Some((older, _)) => since.max(older),
        None => since,
    };
    let record = Deleted { since, packs };
    b.put(&timed_key(DELETED_PREFIX, now), &record.encode())?;
    for key in before.keys {
        b.delete(&key)?;
    }
    Ok(())
}

/// Copies a pack's live chunks into new packs; returns them (indexed, so
/// the chunks' locations now point at the copies) and their sizes.
fn rewrite_pack(
    store: &Store,
    p: &PackInfo,
    live: &HashSet<ChunkId>,
) -> Result<Vec<(IndexedPack, u64)>> {
    let locations: HashMap<ChunkId, Location> = chunk_locations(p.id, &p.frames)
        .filter(|l| live.contains(&l.chunk.id))
        .map(|l| (l.chunk.id, l))
        .collect();
    let chunks = std::sync::Mutex::new(BTreeMap::new());
    fetch_located(
        store,
        &|ids| Ok(ids.iter().map(|id| locations.get(id).copied()).collect()),
        locations.keys().copied(),
        &|chunk| Error::MissingChunk {
            chunk,
            path: format!("gc rewrite of {}", pack_key(&p.id)),
        },
        &|id, bytes| {
            chunks.lock().expect("poisoned").insert(id, bytes.to_vec());
            Ok(())
        },
    )?;
    let config = &store.config();
    let mut compressor = zstd::bulk::Compressor::new(config.zstd_level)
        .map_err(|e| Error::corrupt("zstd", e.to_string()))?;
    let mut out = Vec::new();
    let mut pack = PackBuilder::new();
    let mut frame = FrameBuilder::default();
    let finish_pack = |pack: PackBuilder, out: &mut Vec<(IndexedPack, u64)>| -> Result<()> {
        let (id, bytes, frames) = pack.finish();
        store.backend().put(&pack_key(&id), &bytes)?;
        store.chunk_lookup().add_pack(&id, &frames)?;
        out.push((IndexedPack { pack: id, frames }, bytes.len() as u64));
        Ok(())
    };
    for (id, bytes) in chunks.into_inner().expect("poisoned") {
        frame.push(id, &bytes);
        if frame.raw_len() >= config.frame_target_bytes as usize {
            pack.push(frame.seal(&mut compressor));
            if pack.len() >= config.pack_target_bytes as usize {
                finish_pack(std::mem::take(&mut pack), &mut out)?;
            }
        }
    }
    if !frame.is_empty() {
        pack.push(frame.seal(&mut compressor));
    }
    if !pack.is_empty() {
        finish_pack(pack, &mut out)?;
    }
    Ok(out)
}
