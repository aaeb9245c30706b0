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
//!
//! Under a storage budget (`GcOptions::max_size`, `budget`), step 1 also
//! evicts live runs and cache entries, least recently used first, until
//! what the rest hold fits, and step 5 rewrites more packs until the store
//! will fit once the grace period has passed.
//! 6. after deletions, one index object listing the surviving packs it saw
//!    replaces the index objects it saw (ones written meanwhile stay); in a
//!    format-2 store that is a snapshot, written on every run, and the
//!    packs deleted are named in a tombstone record first (docs/format.md).
//!
//! A persist that decided to reuse a chunk before its pack was condemned
//! commits within the grace period (persist refuses to commit later), so
//! the mark of any gc that deletes the pack sees its layer. This module
//! knows nothing about files on disk.

pub mod budget;
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
use crate::format::pack::FrameEntry;
use crate::format::records::{read_condemned, DropReason, ExpiredRecord, LayerRecord, Record};
use crate::id::{ChunkId, ManifestId, PackId, RunName};
use crate::ops::footprint::{Holder, HolderName, Usage};
use crate::ops::lease;
use crate::ops::lifecycle::run_life;
use crate::protocol::GcQuery;
use crate::repo::Store;
use commit::commit;

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
    /// A storage budget in bytes: evict least recently used runs and cache
    /// entries (never one used within the grace period) until the rest
    /// fit (docs/lifecycle.md, "Storage budget").
    pub max_size: Option<u64>,
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
    /// The storage budget it kept to, if any.
    #[serde(default)]
    pub budget: Option<u64>,
    /// Under a budget: stored bytes of every chunk a live run or cache
    /// entry references, after evictions.
    #[serde(default)]
    pub live_bytes: u64,
    /// Under a budget: what it evicted, least recently used first, with
    /// what each held alone.
    #[serde(default)]
    pub evicted: Vec<budget::Evicted>,
    /// Under a budget: by how much the runs and cache entries used within
    /// the grace period (which it never evicts) still exceed it.
    #[serde(default)]
    pub over_budget: u64,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// A pack as gc sees it.
struct PackInfo {
    id: PackId,
    size: u64,
    frames: Vec<FrameEntry>,
    /// Per chunk (in frame order): whether the index locates it here.
    located: Vec<bool>,
    live_raw: u64,
    total_raw: u64,
}

/// Runs gc (docs/lifecycle.md): expire, mark, survey the packs, sweep,
/// commit. A `strata serve` store runs it on the server.
pub fn gc(store: &Store, options: &GcOptions) -> Result<GcReport> {
    // A server runs gc on its namespace itself.
    if let Some(server) = store.server() {
        return server.call_json("POST", &query_of(options).path());
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
        budget: options.max_size,
        ..GcReport::default()
    };
    let holders = expire(store, now, dry, &mut report)?;
    // Marking reads every live manifest before the survey, as it always
    // has: a manifest the index cannot place syncs it with what other
    // processes wrote, so the survey then locates each chunk in the pack
    // it is in now (not in a condemned pack a writer has since replaced).
    let marked = mark(store, holders, options.max_size)?;
    // The index objects listed now are the ones the commit may replace:
    // any written from here on (by a concurrent persist) list packs this
    // gc does not know, and stay. A snapshot is as of this moment.
    let listed = Listed {
        at: store.now(),
        index: b.list(INDEX_PREFIX)?,
        snapshots: b.list(SNAPSHOT_PREFIX)?,
    };
    let (condemned, condemned_keys) = read_condemned(b)?;
    let mut packs = survey(store, &mut report)?;
    let (live, also_rewrite) = match marked {
        Marked::Budget(usage, max) => {
            let window = budget::Window { now, grace };
            budget::keep_to(store, usage, &mut packs, max, window, dry, &mut report)?
        }
        Marked::Chunks(marked) => {
            count_live(&mut packs, &marked);
            (marked, HashSet::new())
        }
    };
    report.live_chunks = live.len() as u64;
    let swept = sweep::Sweep {
        packs: &packs,
        condemned: &condemned,
        live: &live,
        also_rewrite: &also_rewrite,
        now,
        grace,
        dry,
    }
    .run(store, &mut report)?;
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

/// The request that asks a server to run gc with `options`.
fn query_of(options: &GcOptions) -> GcQuery {
    GcQuery {
        dry_run: options.dry_run,
        grace_secs: options.grace_secs,
        max_size: options.max_size,
    }
}

/// Step 1: Expires runs and caches past their retention; returns the runs
/// and cache entries that stay live, with the manifests of each.
fn expire(store: &Store, now: i64, dry: bool, report: &mut GcReport) -> Result<Vec<Holder>> {
    let b = store.backend();
    let mut holders = Vec::new();
    for run in store.run_names()? {
        let life = run_life(store, &run)?;
        if life.dropped {
            continue;
        }
        if life.is_expired(now) {
            report.runs_expired.push(run.clone());
            if !dry {
                let record = ExpiredRecord {
                    expired_on: life.expires,
                    last_use: life.last_use,
                    reason: DropReason::Expired,
                };
                drop_run(store, &run, &record)?;
            }
            continue;
        }
        // A layer written is a use too: a workflow that persists for
        // longer than the grace period is not evicted under it.
        let mut last_use = life.last_use;
        let mut manifests = Vec::new();
        for key in b.list(&format!("{}layers/", run_prefix(&run)))? {
            let layer = LayerRecord::decode(&key, &b.get(&key)?)?;
            last_use = last_use.max(layer.created);
            manifests.push(layer.manifest);
        }
        holders.push(Holder {
            name: HolderName::Run(run),
            last_use,
            manifests,
        });
    }
    for entry in crate::ops::caches::entries(store)? {
        if entry.expires <= now {
            report.caches_expired += 1;
            if !dry {
                crate::ops::caches::delete_entry(store, &entry)?;
            }
        } else {
            holders.push(Holder {
                name: HolderName::Cache {
                    key: entry.record.key.clone(),
                    object: entry.object.clone(),
                },
                last_use: entry.last_use,
                manifests: vec![entry.record.manifest],
            });
        }
    }
    let manifests: HashSet<&ManifestId> = holders.iter().flat_map(|h| &h.manifests).collect();
    report.live_manifests = manifests.len() as u64;
    Ok(holders)
}

/// Drops a run's layers, results and uses, leaving its run record, its
/// rerun record and `record` (why and when): what expiry, eviction and
/// `rm` do alike. Its chunks are reclaimed by later gcs, after the grace
/// period, like any others no live layer references.
pub(crate) fn drop_run(store: &Store, run: &RunName, record: &ExpiredRecord) -> Result<()> {
    let b = store.backend();
    b.put(&expired_key(run), &record.encode())?;
    for key in b.list(&run_prefix(run))? {
        let keep = key.ends_with("/run") || key.ends_with("/rerun") || key.ends_with("/expired");
        if !keep {
            b.delete(&key)?;
        }
    }
    Ok(())
}

/// What the mark found: the live chunks, or under a budget (its bytes),
/// which live run or cache entry references each.
enum Marked {
    Chunks(HashSet<ChunkId>),
    Budget(Usage, u64),
}

/// Step 2: Marks every chunk a live manifest names (its file chunks and the
/// chunks the manifest itself is stored in). Under a budget the mark is
/// the count of who references what, which reads each manifest once for
/// both.
fn mark(store: &Store, holders: Vec<Holder>, max_size: Option<u64>) -> Result<Marked> {
    if let Some(max) = max_size {
        return Ok(Marked::Budget(Usage::build(store, holders)?, max));
    }
    let manifests: HashSet<ManifestId> = holders
        .iter()
        .flat_map(|h| h.manifests.iter().copied())
        .collect();
    let mut live: HashSet<ChunkId> = HashSet::new();
    for id in &manifests {
        live.extend(crate::ops::footprint::manifest_chunks(store, id)?);
    }
    Ok(Marked::Chunks(live))
}

/// Step 3: Reads every pack's trailer, and where the index locates each
/// of its chunks (`count_live` then counts its live bytes).
fn survey(store: &Store, report: &mut GcReport) -> Result<Vec<PackInfo>> {
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
        let located = store
            .chunk_lookup()
            .locate(&all)?
            .into_iter()
            .map(|l: Option<Location>| l.is_some_and(|l| l.pack == id))
            .collect();
        report.bytes_before += size;
        packs.push(PackInfo {
            id,
            size,
            frames,
            located,
            live_raw: 0,
            total_raw: 0,
        });
    }
    report.packs = packs.len() as u64;

    Ok(packs)
}

/// Counts each pack's live bytes: its chunks in `live` that the index
/// locates in it.
fn count_live(packs: &mut [PackInfo], live: &HashSet<ChunkId>) {
    for p in packs {
        let (mut live_raw, mut total_raw, mut at) = (0, 0, 0);
        for f in &p.frames {
            for c in &f.chunks {
                total_raw += c.len as u64;
                if p.located[at] && live.contains(&c.id) {
                    live_raw += c.len as u64;
                }
                at += 1;
            }
        }
        p.live_raw = live_raw;
        p.total_raw = total_raw;
    }
}

/// The index objects and snapshots gc saw before it surveyed the packs, and
/// when: what its commit may replace (any written later list packs this gc
/// does not know, and stay).
struct Listed {
    at: i64,
    index: Vec<String>,
    snapshots: Vec<String>,
}
