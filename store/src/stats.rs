//! What a store holds: runs, jobs and layers for `ls`, and totals for
//! `stats`. Read-only; knows nothing about how objects are written.

use serde::Serialize;

use crate::error::Result;
use crate::id::{JobName, RunName};
use crate::refs::LayerRef;
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct LayerListing {
    pub layer: String,
    pub seq: u64,
    pub manifest: String,
    pub created: i64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobListing {
    pub job: JobName,
    pub requires: Vec<JobName>,
    pub layers: Vec<LayerListing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunListing {
    pub run: RunName,
    pub created: i64,
    pub jobs: Vec<JobListing>,
}

fn listing(l: &LayerRef) -> LayerListing {
    LayerListing {
        layer: l.key.clone(),
        seq: l.seq,
        manifest: l.record.manifest.to_hex(),
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
            })
        })
        .collect::<Result<_>>()?;
    Ok(RunListing {
        run: run.clone(),
        created: record.created,
        jobs,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub location: String,
    pub runs: u64,
    pub layers: u64,
    pub manifests: u64,
    pub packs: u64,
    pub chunks: u64,
    /// Bytes of file content over every layer, as users see it.
    pub logical_bytes: u64,
    /// Bytes of packs, index objects and manifests on the backend.
    pub stored_bytes: u64,
    /// logical / stored.
    pub dedup_ratio: f64,
}

pub fn store_stats(store: &Store) -> Result<StoreStats> {
    let b = store.backend();
    let mut s = StoreStats {
        location: b.location(),
        runs: 0,
        layers: 0,
        manifests: 0,
        packs: 0,
        chunks: store.index.count()?,
        logical_bytes: 0,
        stored_bytes: 0,
        dedup_ratio: 0.0,
    };
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
    for prefix in ["packs/", "index/", "manifests/"] {
        let keys = b.list(prefix)?;
        if prefix == "packs/" {
            s.packs = keys.len() as u64;
        }
        if prefix == "manifests/" {
            s.manifests = keys.len() as u64;
        }
        for k in keys {
            s.stored_bytes += b.size(&k)?;
        }
    }
    if s.stored_bytes > 0 {
        s.dedup_ratio = s.logical_bytes as f64 / s.stored_bytes as f64;
    }
    Ok(s)
}
