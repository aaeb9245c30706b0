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

mod commit;
mod sweep;

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::index::{read_pack_trailer, Location};
use crate::format::keys::{
    expired_key, pack_id_of, run_prefix, INDEX_PREFIX, PACK_PREFIX, SNAPSHOT_PREFIX,
};
use crate::format::manifest::EntryKind;
use crate::format::pack::FrameEntry;
use crate::format::records::{read_condemned, ExpiredRecord, LayerRecord, Record};
use crate::id::{ChunkId, ManifestId, PackId, RunName};
use crate::ops::lease;
use crate::ops::lifecycle::run_life;
use crate::protocol::GcQuery;
use crate::read::load_manifest;
use crate::repo::Store;
use commit::commit;
use sweep::sweep;

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
