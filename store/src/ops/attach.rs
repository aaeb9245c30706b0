//! Attach: gives a job the merged layers of all its upstream jobs.
//!
//! Steps (numbered as in docs/architecture.md):
//! 1. load the run's graph and find the job's ancestors;
//! 2. list their layers, in topological order and persist order;
//! 3. fetch and validate every manifest; 4. merge them into one tree,
//!    failing on conflicts, before any file is written or chunk read:
//!    read as streams and merged as they come (`merge_stream`), or, with
//!    `--only`, fetched whole, then merged and checked only at the paths
//!    it keeps (`plan`, `subset`);
//! 5. write the tree (`write`).
//!
//! A job never sees its own layers, a sibling's or a descendant's: only the
//! layers of jobs it transitively requires.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Traffic;
use serde::Serialize;

use crate::error::Result;
use crate::format::manifest::Totals;
use crate::id::{JobName, ManifestId, RunName};
use crate::read::manifests::open_manifest;
use crate::repo::Store;
use crate::tree::merge_stream::{merge_streams, StreamLayer};
use crate::tree::plan::{merge, Layer, Plan};
use crate::tree::subset::Only;
use crate::tree::write;
pub use crate::tree::write::{WriteOptions, WriteStats};

/// What to attach: the job whose upstream layers to merge, and where.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// The run.
    pub run: RunName,
    /// The job that attaches.
    pub job: JobName,
    /// The directory to write the tree into.
    pub at: PathBuf,
    /// Keep setuid and setgid bits (`--keep-setuid`); dropped by default.
    pub keep_setuid: bool,
    /// Only these paths and globs (`--only`, relative to the layers'
    /// roots); empty: the whole tree.
    pub only: Vec<PathBuf>,
}

/// One layer an attach merged.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// The job that persisted it.
    pub job: JobName,
    /// The layer ref's key.
    pub layer: String,
    /// The layer's manifest.
    pub manifest: ManifestId,
    /// What the tree holds.
    pub totals: Totals,
}

/// What an attach did.
#[derive(Debug, Clone, Serialize)]
pub struct AttachReport {
    /// The run.
    pub run: RunName,
    /// The job that attached.
    pub job: JobName,
    /// The layers applied, in order.
    pub layers: Vec<LayerSummary>,
    /// The merged tree.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Extra names of hardlinked files.
    pub hardlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// The `--only` paths and globs, as given (empty: the whole tree).
    pub only: Vec<String>,
    /// What the layers hold outside `only`, left alone (each path once).
    pub skipped: Totals,
    /// Bytes of manifests read from the store (file content is in `write`).
    pub manifest_bytes_from_store: u64,
    /// What writing the tree did.
    #[serde(flatten)]
    pub write: WriteStats,
    /// Bytes sent to and received from a networked store.
    pub network: Traffic,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// Plans the attach of `job`'s workspace (only what `only` keeps, if
/// given): steps 1 to 4, no file touched.
pub fn plan(store: &Store, run: &RunName, job: &JobName, only: Option<&Only>) -> Result<Plan> {
    // The run record and one listing of the run's keys (its layer refs,
    // uses and results) at once: one round trip however many upstream
    // jobs; then the refs not cached here, all at once.
    let (record, keys) = store.run_with_keys(run)?;
    let graph = &record.graph;
    let me = crate::repo::job_index(run, &record, job)?;
    crate::ops::lifecycle::check_live_among(store, run, &record, &keys)?;
    let ancestors: Vec<usize> = graph
        .topo_order()
        .iter()
        .copied()
        .filter(|&j| graph.is_ancestor(j, me))
        .collect();
    let names: Vec<JobName> = ancestors
        .iter()
        .map(|&j| graph.jobs()[j].name.clone())
        .collect();
    // The refs and their manifests in one round trip where the server
    // answers `layers` (`ops::layers`).
    let listed = crate::ops::layers::upstream(store, run, &names, &keys)?;
    let mut refs = Vec::new();
    for (&j, layers) in ancestors.iter().zip(listed) {
        refs.extend(layers.into_iter().map(|(l, body)| (j, l, body)));
    }
    let manifest_bytes = AtomicU64::new(0);
    // Without `--only`, the layers are merged as their manifests stream
    // in (issue 29): the merged tree is held, not every manifest beside it.
    if only.is_none() {
        let opened = in_groups(refs, |(j, l, body)| {
            Ok(StreamLayer {
                entries: open_manifest(store, &l.record.manifest, body, &manifest_bytes)?,
                manifest_id: l.record.manifest,
                job: l.job,
                leg: l.record.writer.map(|w| w.leg),
                job_index: j,
                key: l.key,
            })
        })?;
        let mut plan = merge_streams(graph, opened)?;
        plan.manifest_bytes = manifest_bytes.into_inner();
        return Ok(plan);
    }
    let layers = in_groups(refs, |(j, l, body)| {
        let (manifest, read) = crate::ops::layers::manifest_of(store, &l.record.manifest, body)?;
        manifest_bytes.fetch_add(read, Relaxed);
        Ok(Layer {
            manifest: Arc::new(manifest),
            manifest_id: l.record.manifest,
            job: l.job,
            leg: l.record.writer.map(|w| w.leg),
            job_index: j,
            key: l.key,
        })
    })?;
    let selection = match only {
        Some(only) => {
            let mut jobs: Vec<&str> = layers.iter().map(|l| l.job.as_str()).collect();
            jobs.dedup();
            let among = match jobs.is_empty() {
                true => format!("the layers {job} attaches (it has none)"),
                false => format!("the layers of {}", jobs.join(", ")),
            };
            Some(only.select(layers.iter().map(|l| &*l.manifest), &among)?)
        }
        None => None,
    };
    let mut plan = merge(graph, layers, selection.as_ref())?;
    plan.manifest_bytes = manifest_bytes.into_inner();
    Ok(plan)
}

/// `open` of every layer ref, up to 32 at once, each in a thread of its
/// own (a manifest's first fetch is a few requests in sequence): the
/// round trips do not grow with the number of layers. In ref order.
fn in_groups<R: Send, T: Send>(
    refs: Vec<R>,
    open: impl Fn(R) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(refs.len());
    let mut refs = refs.into_iter().peekable();
    while refs.peek().is_some() {
        let group: Vec<R> = refs.by_ref().take(32).collect();
        let opened: Vec<Result<T>> = std::thread::scope(|s| {
            let open = &open;
            let handles: Vec<_> = group
                .into_iter()
                .map(|r| s.spawn(move || open(r)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("loading a manifest panicked"))
                .collect()
        });
        for t in opened {
            out.push(t?);
        }
    }
    Ok(out)
}

/// Attaches the merged layers of `req.job`'s upstream jobs at `req.at`.
pub fn attach(store: &Store, req: &AttachRequest) -> Result<AttachReport> {
    let started = Instant::now();
    let traffic = store.traffic();
    // A bad pattern is refused before anything is fetched.
    let only = Only::new(&req.only)?;
    let plan = plan(store, &req.run, &req.job, only.as_ref())?;
    let options = write::WriteOptions {
        keep_setuid: req.keep_setuid,
    };
    // The report is counted first: writing takes the plan's entries.
    let mut planned = Totals::default();
    for e in &plan.entries {
        planned.count(&e.target);
    }
    let mut report = AttachReport {
        run: req.run.clone(),
        job: req.job.clone(),
        layers: plan
            .layers
            .iter()
            .map(|l| LayerSummary {
                job: l.job.clone(),
                layer: l.key.clone(),
                manifest: l.manifest_id,
                totals: l.totals,
            })
            .collect(),
        files: planned.files,
        dirs: planned.dirs,
        symlinks: planned.symlinks,
        hardlinks: planned.hardlinks,
        bytes: planned.bytes,
        only: req
            .only
            .iter()
            .map(|p| p.to_string_lossy().into())
            .collect(),
        skipped: plan.skipped,
        manifest_bytes_from_store: plan.manifest_bytes,
        write: Default::default(),
        network: Traffic::default(),
        seconds: 0.0,
    };
    // The workspace is used: its retention restarts. The record is
    // written while the files are fetched, once the target has passed its
    // checks, so it costs no round trip of its own (an attach that then
    // fails mid-fetch has still used the run: it is kept a little longer).
    let write = write::execute_with(store, plan.entries, &req.at, options, || {
        crate::ops::lifecycle::record_use(store, &req.run)
    })?;
    if let Some(cache) = &store.frame_cache() {
        cache.trim_if_grown()?;
    }
    report.write = write;
    report.network = store.traffic().since(traffic);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
