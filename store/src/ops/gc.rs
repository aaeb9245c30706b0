//! Garbage collection: drop expired runs and caches, then keep every chunk
//! a live layer or cache entry references and reclaim the rest.
//!
//! It is safe while persists and attaches run, by a grace period rather
//! than a lock (docs/lifecycle.md, "Why it is safe while others persist", has the argument):
//! 1. expired runs get an `expired` record and lose their layer refs,
//!    results and uses; expired cache entries are deleted;
//! 2. mark: every chunk of every live manifest (files and the manifest's
//!    own encoding);
//! 3. a pack none of whose chunks is live (where the index locates them) is
//!    *condemned*: listed in a `gc/condemned/<time>-<nonce>` object. From
//!    then on no persist reuses its chunks (the chunk lookup answers
//!    "missing" for them, so they are uploaded again);
//! 4. a pack condemned at least the grace period ago and still dead at
//!    this mark is deleted; one that became live again is pardoned;
//! 5. a live pack that is mostly garbage has its live chunks copied into a
//!    new pack and is condemned;
//! 6. after deletions, one index object listing the surviving packs it saw
//!    replaces the index objects it saw (ones written meanwhile stay); in a
//!    format-2 store that is a snapshot, written on every run, and the
//!    packs deleted are named in a tombstone record first (docs/format.md).
//!
//! A persist that decided to reuse a chunk before its pack was condemned
//! commits within the grace period (persist refuses to commit later), so
//! the mark of any gc that deletes the pack sees its layer. This module
//! knows nothing about files on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::index::{
    chunk_locations, read_pack_trailer, IndexObject, IndexedPack, Location,
};
use crate::format::index_log::{LOG_KEEP_SECS, TOMBSTONE_KEEP_SECS};
use crate::format::keys::{
    expired_key, index_id_of, index_key, index_log_key, log_time_and_id, pack_id_of, pack_key,
    run_prefix, snapshot_key, timed_key, CONDEMNED_PREFIX, DELETED_PREFIX, INDEX_PREFIX,
    PACK_PREFIX, SNAPSHOT_PREFIX,
};
use crate::format::manifest::EntryKind;
use crate::format::pack::{FrameBuilder, FrameEntry, PackBuilder};
use crate::format::records::{
    read_condemned, read_deleted, Condemned, Deleted, ExpiredRecord, LayerRecord, Record,
};
use crate::id::{ChunkId, ManifestId, PackId, RunName};
use crate::ops::lease;
use crate::ops::lifecycle::run_life;
use crate::protocol::GcQuery;
use crate::read::{fetch_located, load_manifest};
use crate::repo::Store;

/// How to run gc.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Report what would be done; change nothing.
    pub dry_run: bool,
    /// Overrides the store's grace period (0: delete at once; only safe
    /// when nothing persists meanwhile).
    pub grace_secs: Option<u64>,
    /// On a store processes on other machines share (S3), how long to wait between
    /// writing this gc's lease and reading the others' (`ops::lease`);
    /// `None`: `lease::DEFAULT_SETTLE`.
    pub lease_settle: Option<std::time::Duration>,
}

/// What gc did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Runs expired by this gc.
    pub runs_expired: Vec<RunName>,
    /// Cache entries expired by this gc.
    pub caches_expired: u64,
    /// Manifests still referenced.
    pub live_manifests: u64,
    /// Chunks still referenced.
    pub live_chunks: u64,
    /// Packs looked at.
    pub packs: u64,
    /// Packs deleted (condemned longer than the grace period).
    pub packs_deleted: u64,
    /// Mostly-dead packs whose live chunks were copied out.
    pub packs_rewritten: u64,
    /// Packs newly condemned by this gc (deleted by a later one).
    pub packs_condemned: u64,
    /// Packs condemned and waiting for the grace period to pass.
    pub packs_pending: u64,
    /// Index objects replaced by one listing the survivors.
    pub index_objects_replaced: u64,
    /// Bytes of packs before, and of the packs deleted.
    pub bytes_before: u64,
    /// Bytes of the packs deleted.
    pub bytes_reclaimed: u64,
    /// Bytes in condemned packs still waiting (reclaimed by a later gc).
    pub bytes_pending: u64,
    /// Bytes of new packs written by rewrites.
    pub bytes_rewritten: u64,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// A pack as gc sees it.
struct PackInfo {
    id: PackId,
    size: u64,
    frames: Vec<FrameEntry>,
    live_raw: u64,
    total_raw: u64,
}

/// Runs gc (docs/lifecycle.md): expire, mark, survey the packs, sweep,
/// commit. A `strata serve` store runs it on the server.
pub fn gc(store: &Store, options: &GcOptions) -> Result<GcReport> {
    // A server runs gc on its namespace itself.
    if let Some(server) = store.server() {
        let query = GcQuery {
            dry_run: options.dry_run,
            grace_secs: options.grace_secs,
        };
        return server.call_json("POST", &query.path());
    }
    let started = Instant::now();
    // One gc at a time (a dry run changes nothing, so it needs no turn).
    let _guard = match options.dry_run {
        false => lease::guard(store, options.lease_settle.unwrap_or(lease::DEFAULT_SETTLE))?,
        true => None,
    };
    let now = store.now();
    // u64::MAX is "never", not -1.
    let grace = i64::try_from(options.grace_secs.unwrap_or(store.config().gc_grace_secs))
        .unwrap_or(i64::MAX);
    let dry = options.dry_run;
    let b = store.backend();
    let mut report = GcReport {
        dry_run: dry,
        ..GcReport::default()
    };
    let live_manifests = expire(store, now, dry, &mut report)?;
    let live = mark(store, &live_manifests)?;
    report.live_chunks = live.len() as u64;
    // The index objects listed now are the ones the commit may replace:
    // any written from here on (by a concurrent persist) list packs this
    // gc does not know, and stay. A snapshot is as of this moment.
    let listed = Listed {
        at: store.now(),
        index: b.list(INDEX_PREFIX)?,
        snapshots: b.list(SNAPSHOT_PREFIX)?,
    };
    let (condemned, condemned_keys) = read_condemned(b)?;
    let packs = survey(store, &live, &mut report)?;
    let swept = sweep(
        store,
        &packs,
        &condemned,
        &live,
        now,
        grace,
        dry,
        &mut report,
    )?;
    if !dry {
        commit(
            store,
            &packs,
            swept,
            &condemned_keys,
            listed,
            now,
            &mut report,
        )?;
        store.flush()?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Step 1: Expires runs and caches past their retention; returns the manifests
/// of what stays live.
fn expire(
    store: &Store,
    now: i64,
    dry: bool,
    report: &mut GcReport,
) -> Result<HashSet<ManifestId>> {
    let b = store.backend();
    let mut live_manifests: HashSet<ManifestId> = HashSet::new();
    for run in store.run_names()? {
        let life = run_life(store, &run)?;
        if life.dropped {
            continue;
        }
        let prefix = run_prefix(&run);
        if life.is_expired(now) {
            report.runs_expired.push(run.clone());
            if !dry {
                let record = ExpiredRecord {
                    expired_on: life.expires,
                    last_use: life.last_use,
                };
                b.put(&expired_key(&run), &record.encode())?;
                for key in b.list(&prefix)? {
                    let keep = key.ends_with("/run")
                        || key.ends_with("/rerun")
                        || key.ends_with("/expired");
                    if !keep {
                        b.delete(&key)?;
                    }
                }
            }
            continue;
        }
        for key in b.list(&format!("{prefix}layers/"))? {
            let bytes = b.get(&key)?;
            live_manifests.insert(LayerRecord::decode(&key, &bytes)?.manifest);
        }
    }
    for entry in crate::ops::caches::entries(store)? {
        if entry.expires <= now {
            report.caches_expired += 1;
            if !dry {
                crate::ops::caches::delete_entry(store, &entry)?;
            }
        } else {
            live_manifests.insert(entry.record.manifest);
        }
    }
    report.live_manifests = live_manifests.len() as u64;

    Ok(live_manifests)
}

/// Step 2: Marks every chunk a live manifest names (its file chunks and the
/// chunks the manifest itself is stored in).
fn mark(store: &Store, live_manifests: &HashSet<ManifestId>) -> Result<HashSet<ChunkId>> {
    let b = store.backend();
    let mut live: HashSet<ChunkId> = HashSet::new();
    for id in live_manifests {
        let root_key = crate::format::keys::manifest_key(id);
        let root = crate::format::manifest::ManifestRoot::decode(id, &b.get(&root_key)?)?;
        live.extend(root.chunks.iter().map(|c| c.id));
        let (manifest, _) = load_manifest(store, id)?;
        for e in &manifest.entries {
            if let EntryKind::File { chunks, .. } = &e.kind {
                live.extend(chunks.iter().map(|c| c.id));
            }
        }
    }

    Ok(live)
}

/// Step 3: Reads every pack's trailer and counts its live bytes.
fn survey(store: &Store, live: &HashSet<ChunkId>, report: &mut GcReport) -> Result<Vec<PackInfo>> {
    let b = store.backend();
    let mut packs = Vec::new();
    for key in b.list(PACK_PREFIX)? {
        let Some(id) = pack_id_of(&key) else {
            continue;
        };
        let size = match b.size(&key) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let frames = match read_pack_trailer(b, &key) {
            Ok(f) => f,
            // A damaged pack is verify's to report, not gc's to delete.
            Err(Error::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        };
        let all: Vec<ChunkId> = frames
            .iter()
            .flat_map(|f| f.chunks.iter().map(|c| c.id))
            .collect();
        let located = store.chunk_lookup().locate(&all)?;
        let mut live_raw = 0;
        let mut total_raw = 0;
        let mut at = 0;
        for f in &frames {
            for c in &f.chunks {
                total_raw += c.len as u64;
                let here = located[at].is_some_and(|l: Location| l.pack == id);
                if here && live.contains(&c.id) {
                    live_raw += c.len as u64;
                }
                at += 1;
            }
        }
        report.bytes_before += size;
        packs.push(PackInfo {
            id,
            size,
            frames,
            live_raw,
            total_raw,
        });
    }
    report.packs = packs.len() as u64;

    Ok(packs)
}

/// The index objects and snapshots gc saw before it surveyed the packs, and
/// when: what its commit may replace (any written later list packs this gc
/// does not know, and stay).
struct Listed {
    at: i64,
    index: Vec<String>,
    snapshots: Vec<String>,
}

/// What the sweep decided.
struct Swept {
    /// Packs condemned and not yet past the grace period, with since when.
    pending: BTreeMap<PackId, i64>,
    /// Packs deleted.
    deleted: HashSet<PackId>,
    /// Packs written by rewrites.
    new_packs: Vec<IndexedPack>,
}

/// Step 4: Deletes dead packs condemned longer than the grace period, condemns
/// the newly dead, and rewrites mostly-dead packs.
#[allow(clippy::too_many_arguments)]
fn sweep(
    store: &Store,
    packs: &[PackInfo],
    condemned: &HashMap<PackId, i64>,
    live: &HashSet<ChunkId>,
    now: i64,
    grace: i64,
    dry: bool,
    report: &mut GcReport,
) -> Result<Swept> {
    let b = store.backend();
    let mut pending: BTreeMap<PackId, i64> = BTreeMap::new();
    let mut deleted: HashSet<PackId> = HashSet::new();
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    for p in packs {
        let since = condemned.get(&p.id).copied();
        let dead = p.live_raw == 0;
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
        } else if since.is_none() && p.live_raw * 2 < p.total_raw {
            // Mostly garbage: move the live chunks, condemn the rest.
            report.packs_rewritten += 1;
            report.packs_condemned += 1;
            report.bytes_pending += p.size;
            pending.insert(p.id, now);
            if !dry {
                let written = rewrite(store, p, live)?;
                report.bytes_rewritten += written.iter().map(|(_, n)| n).sum::<u64>();
                new_packs.extend(written.into_iter().map(|(ix, _)| ix));
            }
        }
        // A live pack once condemned is pardoned: not carried over.
    }
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

/// Step 5: Writes the new condemned list, then replaces the index objects that
/// list deleted packs by one listing every surviving pack.
fn commit(
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
    for key in listed.snapshots.iter().filter(|k| **k < written) {
        b.delete(key)?;
    }
    for key in &listed.index {
        let old = log_time_and_id(key).is_none_or(|(t, _)| t < listed.at - LOG_KEEP_SECS);
        if old {
            b.delete(key)?;
            report.index_objects_replaced += 1;
        }
    }
    Ok(())
}

/// Copies a pack's live chunks into new packs; returns them (indexed, so
/// the chunks' locations now point at the copies) and their sizes.
fn rewrite(
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
