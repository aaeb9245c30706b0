//! Persist: turns paths on disk into a new layer of a job.
//!
//! The steps, numbered as docs/architecture.md ("Persist, step by step")
//! numbers them:
//! 1. open the store (the caller's `Store`);
//! 2. read the run record and list the run's keys at once (one round
//!    trip): the job exists, the run has not expired, and the new layer's
//!    sequence number; the scan runs meanwhile;
//! 3. scan the paths (`tree::scan`);
//! 4. and 5. store the tree: its files chunked and their new chunks
//!    uploaded, the manifest, the index object and the manifest's root
//!    (`ops::store_tree`, which cache save calls too);
//! 6. write the layer ref, with step 5's objects where the store can (one
//!    round trip): only now does the layer become visible.
//!
//! A crash before step 6 leaves unreferenced packs (reclaimed by gc, never
//! seen by attach). This module knows nothing about attach, and nothing of
//! how a tree is chunked and stored.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::backend::Traffic;
use crate::error::Result;
use crate::format::manifest::Totals;
use crate::format::records::{LayerRecord, Writer};
use crate::id::{JobName, ManifestId, RunName};
use crate::meta::catalog::Catalog;
use crate::ops::store_tree::{commit, write_tree};
use crate::repo::Store;
use crate::tree::scan::scan;

/// What to persist: paths under a root, as a layer of a job.
#[derive(Debug, Clone)]
pub struct PersistRequest {
    /// The run.
    pub run: RunName,
    /// The job.
    pub job: JobName,
    /// Paths are resolved against this directory and must lie inside it.
    pub root: PathBuf,
    /// The paths to persist, relative to `root`: paths, globs
    /// (`dist/**/*.js`) and exclusions (`!dist/**/*.map`).
    pub paths: Vec<PathBuf>,
    /// Whether a glob that matches nothing is fine (else an error).
    pub allow_empty: bool,
    /// Inside a CI, which leg and attempt of the job writes (`ci`).
    pub writer: Option<Writer>,
}

/// What a persist did.
#[derive(Debug, Clone, Serialize)]
pub struct PersistReport {
    /// The run.
    pub run: RunName,
    /// The job.
    pub job: JobName,
    /// The layer ref's key.
    pub layer: String,
    /// The layer's manifest.
    pub manifest: ManifestId,
    /// What the tree holds.
    pub totals: Totals,
    /// Chunks referenced by the layer (with repeats within it).
    pub chunks: u64,
    /// Chunks the store did not have, and their uncompressed bytes.
    pub chunks_new: u64,
    /// Bytes of chunks the store did not have before.
    pub bytes_new: u64,
    /// Bytes of file content found already in the store.
    pub bytes_reused: u64,
    /// Bytes written to the store: packs, index and manifest.
    pub bytes_written: u64,
    /// Packs uploaded.
    pub packs_written: u64,
    /// Files read (chunked and hashed).
    pub files_read: u64,
    /// Files not read: their stat was what the runner's stat cache
    /// remembered, and the store still held their chunks.
    pub files_unchanged: u64,
    /// Bytes sent to and received from a networked store.
    pub network: Traffic,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// Persists `req.paths` as a new layer of `req.job`.
pub fn persist(store: &Store, req: &PersistRequest) -> Result<PersistReport> {
    let started = Instant::now();
    let traffic = store.traffic();
    // The run's checks wait a round trip on a networked store: scan the
    // tree meanwhile (it reads only the runner's disk). A bad run is still
    // reported before a bad path.
    let (checked, scanned) = std::thread::scope(|s| {
        let scanned = s.spawn(|| scan(&req.root, &req.paths, req.allow_empty));
        let checked = store.run_with_keys(&req.run);
        (checked, scanned.join().expect("scanning panicked"))
    });
    let (record, keys) = checked?;
    crate::repo::job_index(&req.run, &record, &req.job)?;
    crate::ops::lifecycle::check_live_among(store, &req.run, &record, &keys)?;
    // Two persists of one job run one after another, so the listing made
    // before this one's work still holds its highest layer; two racing
    // ones would take the same number, and their nonces order them.
    let seq = Catalog::next_seq(&req.run, &req.job, &keys);
    let tree = write_tree(store, scanned?, started)?;
    let record = LayerRecord {
        manifest: tree.manifest,
        created: store.now(),
        totals: tree.totals,
        writer: req.writer.clone(),
    };
    // The index object, the manifest's root and the ref in one round
    // trip where the store can (`store_tree::commit`).
    let object = Catalog::layer_object(&req.run, &req.job, seq, &record);
    commit(store, tree.pending, (&object.0, &object.1))?;
    let layer = store
        .catalog()
        .layer_added(&req.job, object, seq, &record)?;
    store.flush()?;
    Ok(PersistReport {
        run: req.run.clone(),
        job: req.job.clone(),
        layer: layer.key,
        manifest: tree.manifest,
        totals: tree.totals,
        chunks: tree.chunks,
        chunks_new: tree.chunks_new,
        bytes_new: tree.bytes_new,
        bytes_reused: tree.totals.bytes.saturating_sub(tree.bytes_new),
        bytes_written: tree.bytes_written,
        packs_written: tree.packs_written,
        files_read: tree.files_read,
        files_unchanged: tree.files_unchanged,
        network: store.traffic().since(traffic),
        seconds: started.elapsed().as_secs_f64(),
    })
}
