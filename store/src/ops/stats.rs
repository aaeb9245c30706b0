//! What a store holds: runs, jobs, layers and caches for `ls`, and totals
//! for `stats` (with what gc could reclaim). Read-only; knows nothing about
//! how objects are written, nor HTTP: a `strata serve` store's stats come
//! from its server, one call of the store's transport (as gc runs there).

use serde::Serialize;

use crate::error::Result;
use crate::format::keys::{INDEX_PREFIX, MANIFEST_PREFIX, PACK_PREFIX};
use crate::id::{JobName, ManifestId, RunName};
use crate::meta::catalog::LayerRef;
use crate::repo::Store;

/// One layer, as `ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerListing {
    /// The layer ref's key.
    pub layer: String,
    /// Its sequence number in the job.
    pub seq: u64,
    /// The layer's manifest.
    pub manifest: ManifestId,
    /// When it was created (Unix seconds).
    pub created: i64,
    /// Regular files.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// One job of a run, as `ls RUN` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobListing {
    /// The job.
    pub job: JobName,
    /// The jobs it requires.
    pub requires: Vec<JobName>,
    /// Its layers, in persist order.
    pub layers: Vec<LayerListing>,
    /// The job's latest result, if it finished.
    pub status: Option<crate::format::records::JobStatus>,
    /// In a rerun: the layers were kept from the earlier run.
    pub reused_from: Option<RunName>,
}

/// One run in detail (`ls RUN`).
#[derive(Debug, Clone, Serialize)]
pub struct RunListing {
    /// The run.
    pub run: RunName,
    /// When it was created (Unix seconds).
    pub created: i64,
    /// Its retention.
    pub life: crate::ops::lifecycle::RunLife,
    /// Whether gc has dropped it.
    pub expired: bool,
    /// `YYYY-MM-DD` the workspace expires (or expired).
    pub expires_on: String,
    /// The run this one reruns, if any.
    pub rerun_of: Option<RunName>,
    /// Its jobs.
    pub jobs: Vec<JobListing>,
}

/// One line of `strata ls`: a run and when it expires.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run.
    pub run: RunName,
    /// When it was created (Unix seconds).
    pub created: i64,
    /// How many layers it has.
    pub layers: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Whether gc has dropped it.
    pub expired: bool,
    /// The date it expires (UTC).
    pub expires_on: String,
}

/// A cache entry for `strata ls`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheListing {
    /// The cache key.
    pub key: String,
    /// The date it was saved (UTC).
    pub saved_on: String,
    /// When it was last used (Unix seconds).
    pub last_use: i64,
    /// The date it expires (UTC).
    pub expires_on: String,
    /// Regular files.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Everything in a store, one line each (`ls`).
#[derive(Debug, Clone, Serialize)]
pub struct StoreListing {
    /// The runs.
    pub runs: Vec<RunSummary>,
    /// The cache entries.
    pub caches: Vec<CacheListing>,
}

/// Every run (with its size and expiry) and every cache entry.
pub fn list_store(store: &Store) -> Result<StoreListing> {
    let now = store.now();
    let mut runs = Vec::new();
    for run in store.run_names()? {
        let record = store.run(&run)?;
        let life = crate::ops::lifecycle::run_life(store, &run)?;
        let (mut layers, mut bytes) = (0, 0);
        for spec in record.graph.jobs() {
            for l in store.layers(&run, &spec.name)? {
                layers += 1;
                bytes += l.record.totals.bytes;
            }
        }
        runs.push(RunSummary {
            run,
            created: record.created,
            layers,
            bytes,
            expired: life.is_expired(now),
            expires_on: crate::ops::lifecycle::format_date(life.expires),
        });
    }
    let caches = crate::ops::caches::entries(store)?
        .into_iter()
        .map(|e| CacheListing {
            key: e.record.key.clone(),
            saved_on: crate::ops::lifecycle::format_date(e.record.created),
            last_use: e.last_use,
            expires_on: crate::ops::lifecycle::format_date(e.expires),
            files: e.record.totals.files,
            bytes: e.record.totals.bytes,
        })
        .collect();
    Ok(StoreListing { runs, caches })
}

fn listing(l: &LayerRef) -> LayerListing {
    LayerListing {
        layer: l.key.clone(),
        seq: l.seq,
        manifest: l.record.manifest,
        created: l.record.created,
        files: l.record.totals.files,
        bytes: l.record.totals.bytes,
    }
}

/// The jobs of `run` (or only `job`) with their layers.
pub fn list_run(store: &Store, run: &RunName, job: Option<&JobName>) -> Result<RunListing> {
    let record = match job {
        Some(j) => store.run_job(run, j)?.0,
        None => store.run(run)?,
    };
    let life = crate::ops::lifecycle::run_life(store, run)?;
    let results = crate::ops::lifecycle::job_results(store, run)?;
    let rerun = crate::ops::rerun::rerun_of(store, run)?;
    let jobs = record
        .graph
        .jobs()
        .iter()
        .filter(|spec| job.is_none_or(|j| *j == spec.name))
        .map(|spec| {
            Ok(JobListing {
                job: spec.name.clone(),
                requires: spec.requires.clone(),
                layers: store.layers(run, &spec.name)?.iter().map(listing).collect(),
                status: results.get(&spec.name).map(|r| r.status),
                reused_from: rerun
                    .as_ref()
                    .filter(|r| r.reused.contains(&spec.name))
                    .map(|r| r.from.clone()),
            })
        })
        .collect::<Result<_>>()?;
    Ok(RunListing {
        run: run.clone(),
        created: record.created,
        expired: life.is_expired(store.now()),
        expires_on: crate::ops::lifecycle::format_date(life.expires),
        life,
        rerun_of: rerun.map(|r| r.from),
        jobs,
    })
}

/// What a store holds (`stats`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Where the store is.
    pub location: String,
    /// The runs.
    pub runs: u64,
    /// Layers of live runs.
    pub layers: u64,
    /// Manifests stored.
    pub manifests: u64,
    /// Packs stored.
    pub packs: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Bytes of file content over every layer, as users see it.
    pub logical_bytes: u64,
    /// Bytes of packs, index objects and manifests on the backend.
    pub stored_bytes: u64,
    /// logical / stored.
    pub dedup_ratio: f64,
    /// Logical bytes of cache entries (also deduplicated with the rest).
    pub cache_bytes: u64,
    /// Cache entries.
    pub caches: u64,
    /// What `strata gc` would do now (a dry run).
    pub gc: crate::ops::gc::GcReport,
}

/// Counts what the store holds (a server counts its namespace).
pub fn store_stats(store: &Store) -> Result<StoreStats> {
    // A server computes its namespace's stats itself, in one request.
    if let Some(server) = store.server() {
        let mut s: StoreStats = server.call_json("GET", crate::protocol::route::STATS)?;
        s.location = store.backend().location();
        return Ok(s);
    }
    let b = store.backend();
    let mut s = StoreStats {
        location: b.location(),
        runs: 0,
        layers: 0,
        manifests: 0,
        packs: 0,
        chunks: store.chunk_lookup().count()?,
        logical_bytes: 0,
        stored_bytes: 0,
        dedup_ratio: 0.0,
        cache_bytes: 0,
        caches: 0,
        gc: crate::ops::gc::GcReport::default(),
    };
    for e in crate::ops::caches::entries(store)? {
        s.caches += 1;
        s.cache_bytes += e.record.totals.bytes;
    }
    for run in store.run_names()? {
        s.runs += 1;
        let record = store.run(&run)?;
        for spec in record.graph.jobs() {
            for l in store.layers(&run, &spec.name)? {
                s.layers += 1;
                s.logical_bytes += l.record.totals.bytes;
            }
        }
    }
    for prefix in [PACK_PREFIX, INDEX_PREFIX, MANIFEST_PREFIX] {
        let keys = b.list(prefix)?;
        if prefix == PACK_PREFIX {
            s.packs = keys.len() as u64;
        }
        if prefix == MANIFEST_PREFIX {
            s.manifests = keys.len() as u64;
        }
        for k in keys {
            s.stored_bytes += b.size(&k)?;
        }
    }
    if s.stored_bytes > 0 {
        s.dedup_ratio = (s.logical_bytes + s.cache_bytes) as f64 / s.stored_bytes as f64;
    }
    s.gc = crate::ops::gc::gc(
        store,
        &crate::ops::gc::GcOptions {
            dry_run: true,
            ..Default::default()
        },
    )?;
    Ok(s)
}
