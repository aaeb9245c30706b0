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

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::codec;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::id::{JobName, ManifestId, RunName};
use crate::manifest::Totals;
use crate::util::nonce;

const RUN_MAGIC: &[u8; 8] = b"STRARUN1";
const RUN_VERSION: u32 = 1;
const LAYER_MAGIC: &[u8; 8] = b"STRALAYR";
const LAYER_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unix seconds.
    pub created: i64,
    pub graph: Graph,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub manifest: ManifestId,
    /// Unix seconds.
    pub created: i64,
    pub totals: Totals,
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

pub fn run_key(run: &RunName) -> String {
    format!("runs/{run}/run")
}

fn layer_prefix(run: &RunName, job: &JobName) -> String {
    format!("runs/{run}/layers/{job}/")
}

/// The run and layer records, with a local cache.
#[derive(Debug, Clone)]
pub struct Catalog {
    runs: sled::Tree,
    layers: sled::Tree,
}

impl Catalog {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            runs: db.open_tree("runs")?,
            layers: db.open_tree("layer-refs")?,
        })
    }

    /// Creates `run` with `graph`. Creating a run again with the same graph
    /// is a no-op (every job of a workflow may call it); with another graph
    /// it is `Error::RunExists`. Returns whether the run was new.
    pub fn create_run(
        &self,
        backend: &dyn Backend,
        run: &RunName,
        graph: Graph,
        now: i64,
    ) -> Result<bool> {
        match self.run(backend, run) {
            Ok(existing) if existing.graph == graph => return Ok(false),
            Ok(_) => return Err(Error::RunExists { run: run.clone() }),
            Err(Error::UnknownRun { .. }) => {}
            Err(e) => return Err(e),
        }
        let record = RunRecord {
            created: now,
            graph,
        };
        let bytes = codec::encode(RUN_MAGIC, RUN_VERSION, &record);
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
        codec::decode(RUN_MAGIC, RUN_VERSION, &key, &bytes)
    }

    /// The names of all runs in the store, sorted.
    pub fn run_names(&self, backend: &dyn Backend) -> Result<Vec<RunName>> {
        let mut names: Vec<RunName> = backend
            .list("runs/")?
            .iter()
            .filter_map(|k| k.strip_suffix("/run")?.strip_prefix("runs/"))
            .filter_map(|n| RunName::new(n).ok())
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
        let mut out = Vec::new();
        for key in backend.list(&layer_prefix(run, job))? {
            let name = key.rsplit('/').next().unwrap_or_default();
            let seq = name
                .split_once('-')
                .and_then(|(s, _)| s.parse::<u64>().ok())
                .ok_or_else(|| Error::corrupt(format!("layer ref {key}"), "malformed key"))?;
            let bytes = match self.layers.get(key.as_bytes())? {
                Some(b) => b.to_vec(),
                None => {
                    let b = backend.get(&key)?;
                    self.layers.insert(key.as_bytes(), b.as_slice())?;
                    b
                }
            };
            let record = codec::decode(
                LAYER_MAGIC,
                LAYER_VERSION,
                &format!("layer ref {key}"),
                &bytes,
            )?;
            out.push(LayerRef {
                job: job.clone(),
                key,
                seq,
                record,
            });
        }
        // Keys sort by zero-padded seq, then nonce: the persist order.
        out.sort_by(|a, b| (a.seq, &a.key).cmp(&(b.seq, &b.key)));
        Ok(out)
    }

    /// Writes a new layer ref for `job`: the moment a layer becomes visible.
    pub fn add_layer(
        &self,
        backend: &dyn Backend,
        run: &RunName,
        job: &JobName,
        record: &LayerRecord,
    ) -> Result<LayerRef> {
        let seq = self
            .layers(backend, run, job)?
            .last()
            .map_or(1, |l| l.seq + 1);
        let key = format!("{}{seq:010}-{}", layer_prefix(run, job), nonce());
        let bytes = codec::encode(LAYER_MAGIC, LAYER_VERSION, record);
        backend.put(&key, &bytes)?;
        self.layers.insert(key.as_bytes(), bytes)?;
        Ok(LayerRef {
            job: job.clone(),
            key,
            seq,
            record: record.clone(),
        })
    }

    /// Forgets the cached records (they are re-read on demand).
    pub fn clear(&self) -> Result<()> {
        self.runs.clear()?;
        self.layers.clear()?;
        Ok(())
    }
}

pub fn encode_run(record: &RunRecord) -> Vec<u8> {
    codec::encode(RUN_MAGIC, RUN_VERSION, record)
}

pub fn encode_layer(record: &LayerRecord) -> Vec<u8> {
    codec::encode(LAYER_MAGIC, LAYER_VERSION, record)
}

/// Decodes a run record (from an untrusted writer, say).
pub fn decode_run(key: &str, bytes: &[u8]) -> Result<RunRecord> {
    codec::decode(RUN_MAGIC, RUN_VERSION, key, bytes)
}

/// Decodes a layer record.
pub fn decode_layer(key: &str, bytes: &[u8]) -> Result<LayerRecord> {
    codec::decode(
        LAYER_MAGIC,
        LAYER_VERSION,
        &format!("layer ref {key}"),
        bytes,
    )
}
