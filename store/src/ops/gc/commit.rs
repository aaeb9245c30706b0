//! gc's commit (step 6 of `ops::gc`): the new condemned list, then one
//! index object (a snapshot, in a format-2 store) listing every surviving
//! pack in place of the index objects gc saw. Knows nothing of how packs
//! were judged.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::index_log::superseded;
use crate::format::keys::{
    index_id_of, index_key, index_log_key, snapshot_key, timed_key, CONDEMNED_PREFIX,
};
use crate::format::records::{Condemned, Record};
use crate::id::PackId;
use crate::repo::Store;

use super::sweep::Swept;
use super::{GcReport, Listed, PackInfo};

/// Step 5: Writes the new condemned list, then replaces the index objects that
/// list deleted packs by one listing every surviving pack.
pub(super) fn commit(
    store: &Store,
    packs: &[PackInfo],
    swept: Swept,
    condemned_keys: &[String],
    listed: Listed,
    now: i64,
    report: &mut GcReport,
) -> Result<()> {
    let b = store.backend();
    let Swept {
        pending,
        deleted,
        new_packs,
    } = swept;
    // New condemned list first, then the old ones go (union semantics
    // make a crash in between harmless).
    if !pending.is_empty() {
        let list = Condemned {
            packs: pending.iter().map(|(p, t)| (*p, *t)).collect(),
        };
        b.put(&timed_key(CONDEMNED_PREFIX, now), &list.encode())?;
    }
    for key in condemned_keys {
        b.delete(key)?;
    }
    if let Some(ix) = store.local_index() {
        ix.set_condemned(&pending)?;
    }
    if store.config().has_index_log() {
        return commit_snapshot(store, packs, &deleted, new_packs, listed, report);
    }
    // 6. Index objects that list deleted packs are replaced by one
    // listing every surviving pack (and the rewritten ones).
    if !deleted.is_empty() || !new_packs.is_empty() {
        let mut survivors: Vec<IndexedPack> = packs
            .iter()
            .filter(|p| !deleted.contains(&p.id))
            .map(|p| IndexedPack {
                pack: p.id,
                frames: p.frames.clone(),
            })
            .collect();
        survivors.extend(new_packs);
        survivors.sort_by_key(|p| p.pack);
        let object = IndexObject { packs: survivors };
        let (id, bytes) = object.encode();
        b.put(&index_key(&id), &bytes)?;
        store.chunk_lookup().add(&id, &object)?;
        for key in listed.index {
            if key != index_key(&id) {
                b.delete(&key)?;
                report.index_objects_replaced += 1;
                if let (Some(ix), Some(old)) = (store.local_index(), index_id_of(&key)) {
                    ix.forget_index(&old)?;
                }
            }
        }
    }
    Ok(())
}

/// Step 6 of a format-2 store (docs/format.md): a snapshot listing every
/// surviving pack, orphans included, as of when the index log was listed;
/// the rewritten packs also as a log entry, for readers that read on from
/// their position; then the log entries more than `LOG_KEEP_SECS` older
/// than the snapshot, and the older snapshots, go.
fn commit_snapshot(
    store: &Store,
    packs: &[PackInfo],
    deleted: &HashSet<PackId>,
    new_packs: Vec<IndexedPack>,
    listed: Listed,
    report: &mut GcReport,
) -> Result<()> {
    let b = store.backend();
    if !new_packs.is_empty() {
        let object = IndexObject {
            packs: new_packs.clone(),
        };
        let (id, bytes) = object.encode();
        b.put(&index_log_key(&id, store.now()), &bytes)?;
        store.chunk_lookup().add(&id, &object)?;
    }
    let mut survivors: Vec<IndexedPack> = packs
        .iter()
        .filter(|p| !deleted.contains(&p.id))
        .map(|p| IndexedPack {
            pack: p.id,
            frames: p.frames.clone(),
        })
        .chain(new_packs)
        .collect();
    survivors.sort_by_key(|p| p.pack);
    let (id, bytes) = IndexObject { packs: survivors }.encode();
    let written = snapshot_key(&id, listed.at);
    b.put(&written, &bytes)?;
    let (old_snapshots, old_entries) =
        superseded(&written, listed.at, &listed.snapshots, &listed.index);
    for key in old_snapshots {
        b.delete(key)?;
    }
    for key in old_entries {
        b.delete(key)?;
        report.index_objects_replaced += 1;
    }
    Ok(())
}
