//! Runs and layer refs: the only objects that name things by the user's
//! words rather than by content.
//!
//! - `runs/<run>/run`: the run record (its graph, when it was created),
//!   written once by `run create`.
//! - `runs/<run>/layers/<job>/<seq>-<nonce>`: one layer ref per persist,
//!   pointing at a manifest. A job's persists run one after another on one
//!   machine, so `seq` (one more than the highest seen) orders them; the
//!   random `nonce` makes the key unique even if two writers race, so no
//!   key is ever written by two writers and no conditional write is needed.
//!
//! Both are immutable once written, so the local `sled` copies kept here are
//! plain caches: a key listed by the backend and found in sled is not read
//! again. This module knows nothing about manifests' contents or attach.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::format::graph::Graph;
use crate::format::keys::{
    layer_key, layer_prefix, layer_seq_of, run_key, run_of_record_key, RUNS_PREFIX,
};
use crate::format::records::{LayerRecord, Record, RunRecord};
use crate::id::{JobName, RunName};

/// Refuses `record` (of `run`) to a job of ref `ours` when the run was
/// created for another ref: a job of another branch or pull request
/// created a run of this name first. A run that records no ref (created by
/// hand), or a job that names none, is not checked.
pub fn require_ref(run: &RunName, record: &RunRecord, ours: Option<&str>) -> Result<()> {
    match (record.ref_scope.as_deref(), ours) {
        (Some(theirs), Some(ours)) if theirs != ours => Err(Error::RunOfAnotherRef {
            run: run.clone(),
            theirs: theirs.to_string(),
            ours: ours.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Drops from `layers` (one job's) every layer of a leg that a later try
/// of the same leg superseded: a layer of another attempt with a higher
/// `seq` that may be a retry. So a retried or rerun leg replaces its
/// earlier attempts' layers without deleting them (format.md, "Layer
/// refs"). Layers without a writer (persisted outside a CI) all stay.
fn supersede(layers: &mut Vec<LayerRef>) {
    let later: Vec<(String, String, u64)> = layers
        .iter()
        .filter_map(|l| Some((l.record.writer.as_ref()?, l.seq)))
        .filter(|(w, _)| w.may_supersede())
        .map(|(w, seq)| (w.leg.clone(), w.attempt.clone(), seq))
        .collect();
    layers.retain(|l| match &l.record.writer {
        Some(w) => !later
            .iter()
            .any(|(leg, attempt, seq)| *leg == w.leg && *attempt != w.attempt && *seq > l.seq),
        None => true,
    });
}

/// A layer of a job, as found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub job: JobName,
    /// The object key of the ref (unique per persist).
    pub key: String,
    pub seq: u64,
    pub record: LayerRecord,
}

/// The run and layer records, with a local cache.
#[derive(Debug, Clone)]
pub struct Catalog {
    runs: sled::Tree,
    layers: sled::Tree,
}

impl Catalog {
    pub fn open(db: &super::MetaDb) -> Result<Self> {
        let db = &db.0;
        Ok(Self {
            runs: db.open_tree("runs")?,
            layers: db.open_tree("layer-refs")?,
        })
    }

    /// Creates `run` with `graph`, recording `ref_scope` (the creating CI
    /// job's ref). Creating a run again with the same graph is a no-op
    /// (every job of a workflow may call it); with another graph it is
    /// `Error::RunExists`, and a run created for another ref is
    /// `Error::RunOfAnotherRef`. Returns whether the run was new.
    pub fn create_run(
        &self,
        backend: &dyn Backend,
        run: &RunName,
        graph: Graph,
        ref_scope: Option<String>,
        now: i64,
    ) -> Result<bool> {
        match self.run(backend, run) {
            Ok(existing) => {
                require_ref(run, &existing, ref_scope.as_deref())?;
                return match existing.graph == graph {
                    true => Ok(false),
                    false => Err(Error::RunExists { run: run.clone() }),
                };
            }
            Err(Error::UnknownRun { .. }) => {}
            Err(e) => return Err(e),
        }
        let record = RunRecord {
            created: now,
            graph,
            ref_scope,
        };
        let bytes = record.encode();
        backend.put(&run_key(run), &bytes)?;
        self.runs.insert(run.as_str(), bytes)?;
        Ok(true)
    }

    pub fn run(&self, backend: &dyn Backend, run: &RunName) -> Result<RunRecord> {
        let key = run_key(run);
        let bytes = match self.runs.get(run.as_str())? {
            Some(b) => b.to_vec(),
            None => {
                let b = backend.get(&key).map_err(|e| match e {
                    Error::NotFound { .. } => Error::UnknownRun { run: run.clone() },
                    e => e,
                })?;
                self.runs.insert(run.as_str(), b.as_slice())?;
                b
            }
        };
        RunRecord::decode(&key, &bytes)
    }

    /// The names of all runs in the store, sorted.
    pub fn run_names(&self, backend: &dyn Backend) -> Result<Vec<RunName>> {
        let mut names: Vec<RunName> = backend
            .list(RUNS_PREFIX)?
            .iter()
            .filter_map(|k| run_of_record_key(k))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The layers of `job` in `run`, in the order they were persisted.
    pub fn layers(
        &self,
        backend: &dyn Backend,
        run: &RunName,
        job: &JobName,
    ) -> Result<Vec<LayerRef>> {
        let keys = backend.list(&layer_prefix(run, job))?;
        let mut all = self.layers_among(backend, run, std::slice::from_ref(job), &keys)?;
        Ok(all.pop().unwrap_or_default())
    }

    /// The layers of each of `jobs`, in persist order, among `keys` (a
    /// listing of the run's keys, or of the jobs' layer prefixes). Refs not
    /// cached here are read at once (up to 32 in flight): one round trip
    /// however many jobs and layers.
    pub fn layers_among(
        &self,
        backend: &dyn Backend,
        run: &RunName,
        jobs: &[JobName],
        keys: &[String],
    ) -> Result<Vec<Vec<LayerRef>>> {
        let mut wanted: Vec<(usize, &String, u64, Option<Vec<u8>>)> = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let prefix = layer_prefix(run, job);
            for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
                let seq = layer_seq_of(key)
                    .ok_or_else(|| Error::corrupt(format!("layer ref {key}"), "malformed key"))?;
                let cached = self.layers.get(key.as_bytes())?.map(|b| b.to_vec());
                wanted.push((j, key, seq, cached));
            }
        }
        let unread: Vec<usize> = (0..wanted.len())
            .filter(|&i| wanted[i].3.is_none())
            .collect();
        for group in unread.chunks(32) {
            let read: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
                let handles: Vec<_> = group
                    .iter()
                    .map(|&i| {
                        let key = wanted[i].1;
                        s.spawn(move || backend.get(key))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("reading a layer ref panicked"))
                    .collect()
            });
            for (&i, bytes) in group.iter().zip(read) {
                let bytes = bytes?;
                self.layers
                    .insert(wanted[i].1.as_bytes(), bytes.as_slice())?;
                wanted[i].3 = Some(bytes);
            }
        }
        let mut out: Vec<Vec<LayerRef>> = vec![Vec::new(); jobs.len()];
        for (j, key, seq, bytes) in wanted {
            let record = LayerRecord::decode(key, &bytes.expect("read above"))?;
            out[j].push(LayerRef {
                job: jobs[j].clone(),
                key: key.clone(),
                seq,
                record,
            });
        }
        // Keys sort by zero-padded seq, then nonce: the persist order.
        for layers in &mut out {
            layers.sort_by(|a, b| (a.seq, &a.key).cmp(&(b.seq, &b.key)));
            supersede(layers);
        }
        Ok(out)
    }

    /// The sequence number a new layer of `job` takes: one more than the
    /// highest among `keys` (a listing of the run's keys).
    pub fn next_seq(run: &RunName, job: &JobName, keys: &[String]) -> u64 {
        let prefix = layer_prefix(run, job);
        keys.iter()
            .filter(|k| k.starts_with(&prefix))
            .filter_map(|k| layer_seq_of(k))
            .max()
            .map_or(1, |s| s + 1)
    }

    /// The key and bytes of a new layer ref for `job` with sequence number
    /// `seq` (from `next_seq`), for persist's commit to write (the moment
    /// a layer becomes visible) with the objects it names; then
    /// `layer_added`.
    pub fn layer_object(
        run: &RunName,
        job: &JobName,
        seq: u64,
        record: &LayerRecord,
    ) -> (String, Vec<u8>) {
        (layer_key(run, job, seq), record.encode())
    }

    /// Remembers a layer ref `layer_object` made, once it is stored.
    pub fn layer_added(
        &self,
        job: &JobName,
        (key, bytes): (String, Vec<u8>),
        seq: u64,
        record: &LayerRecord,
    ) -> Result<LayerRef> {
        self.layers.insert(key.as_bytes(), bytes)?;
        Ok(LayerRef {
            job: job.clone(),
            key,
            seq,
            record: record.clone(),
        })
    }

    /// Writes a layer ref for `job` with sequence number `seq` (a rerun
    /// copying a kept layer); returns the bytes written.
    pub fn put_layer(
        &self,
        backend: &dyn Backend,
        run: &RunName,
        job: &JobName,
        seq: u64,
        record: &LayerRecord,
    ) -> Result<usize> {
        let key = layer_key(run, job, seq);
        let bytes = record.encode();
        backend.put(&key, &bytes)?;
        let written = bytes.len();
        self.layers.insert(key.as_bytes(), bytes)?;
        Ok(written)
    }

    /// Forgets the cached records (they are re-read on demand).
    pub fn clear(&self) -> Result<()> {
        self.runs.clear()?;
        self.layers.clear()?;
        Ok(())
    }
}
